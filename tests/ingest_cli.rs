//! `edgeseg inspect` and `edgeseg convert` on generated studies: the JSON
//! contract scripts rely on, QIBA SUV for each vendor style against the
//! generator's own factor, PET/CT pairing, exit codes, and no patient data in
//! anything printed.

use serde_json::Value;

use crate::util::{edgeseg, phantom, s, text, truth};

fn inspect_json(dir: &std::path::Path) -> (Value, i32) {
    let o = edgeseg(&["inspect", s(dir), "--json"]);
    let (out, err) = text(&o);
    let v: Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("inspect --json is not JSON ({e}):\n{out}\n{err}"));
    (v, o.status.code().expect("exit code"))
}

fn series<'a>(v: &'a Value, uid: &str) -> &'a Value {
    v["studies"]
        .as_array()
        .expect("studies")
        .iter()
        .flat_map(|st| st["series"].as_array().expect("series"))
        .find(|se| se["series_uid"] == uid)
        .unwrap_or_else(|| panic!("series {uid} not listed"))
}

fn check_suv(flags: &[&str]) {
    let p = phantom(flags);
    let t = truth(&p);
    let (v, code) = inspect_json(&p.join("dicom"));
    assert_eq!(code, 0, "clean study should exit 0: {v}");
    let pt = &t["series"]["PT"];
    let se = series(&v, pt["series_instance_uid"].as_str().expect("uid"));
    assert_eq!(se["modality"], "PT");
    assert_eq!(se["suv"]["status"], "available", "{flags:?}: {}", se["suv"]);
    assert_eq!(se["suv"]["method"], pt["suv_method"], "{flags:?}");
    let ours = se["suv"]["factor"].as_f64().expect("factor");
    let want = pt["suv_factor"].as_f64().expect("truth factor");
    assert!((ours - want).abs() / want < 1e-9, "{flags:?}: SUV factor {ours} vs truth {want}");
    assert_eq!(se["unit"], "SUVbw");
    let dims = [pt["columns"].as_u64(), pt["rows"].as_u64(), pt["slices"].as_u64()];
    for (k, d) in dims.iter().enumerate() {
        assert_eq!(se["dims"][k].as_u64(), *d, "{flags:?}: dims");
    }
    // PET and CT share a frame of reference: one pair, nothing unpaired.
    let study = &v["studies"][0];
    assert_eq!(study["pairing"]["pairs"].as_array().expect("pairs").len(), 1);
    assert_eq!(study["pairing"]["pairs"][0]["ct_series_uid"], t["series"]["CT"]["series_instance_uid"]);
    assert!(study["pairing"]["unpaired"].as_array().expect("unpaired").is_empty());
}

#[test]
fn suv_siemens_bqml_cu64() {
    check_suv(&["--vendor", "siemens", "--nuclide", "cu64"]);
}

#[test]
fn suv_siemens_bqml_ga68() {
    check_suv(&["--vendor", "siemens", "--nuclide", "ga68"]);
}

#[test]
fn suv_philips_cnts_private_scale_factor() {
    check_suv(&["--vendor", "philips", "--nuclide", "ga68"]);
}

#[test]
fn suv_ge_private_scan_time() {
    check_suv(&["--vendor", "ge", "--nuclide", "cu64"]);
}

#[test]
fn suv_injection_before_midnight() {
    check_suv(&["--vendor", "siemens", "--nuclide", "ga68", "--midnight"]);
}

#[test]
fn unpaired_pet_is_reported() {
    let p = phantom(&["--no-ct", "--vendor", "siemens"]);
    let (v, _) = inspect_json(&p.join("dicom"));
    let pairing = &v["studies"][0]["pairing"];
    assert!(pairing["pairs"].as_array().expect("pairs").is_empty());
    assert_eq!(pairing["unpaired"][0]["modality"], "PT");
    assert!(pairing["unpaired"][0]["reason"].as_str().expect("reason").contains("no CT series"));
}

#[test]
fn no_patient_data_in_output_or_logs() {
    let p = phantom(&["--vendor", "ge", "--nuclide", "cu64"]);
    let t = truth(&p);
    let out = tempfile::tempdir().expect("tempdir");
    let runs = [
        edgeseg(&["inspect", s(&p.join("dicom"))]),
        edgeseg(&["inspect", s(&p.join("dicom")), "--json"]),
        edgeseg(&["convert", s(&p.join("dicom")), "--out", s(out.path())]),
    ];
    let seed = t["seed"].as_i64().expect("seed");
    let forbidden = [format!("Phantom^Test^{seed}"), format!("PHANTOM-{seed}"), "19500101".to_string()];
    let mut everything = String::new();
    for o in &runs {
        let (a, b) = text(o);
        everything.push_str(&a);
        everything.push_str(&b);
    }
    for e in std::fs::read_dir(out.path()).expect("out") {
        let e = e.expect("entry");
        everything.push_str(&e.file_name().to_string_lossy());
        if e.path().extension().is_some_and(|x| x == "json") {
            everything.push_str(&std::fs::read_to_string(e.path()).expect("json"));
        }
    }
    for f in &forbidden {
        assert!(!everything.contains(f.as_str()), "patient data {f:?} leaked into output");
    }
    assert!(everything.contains(t["series"]["PT"]["series_instance_uid"].as_str().expect("uid")));
}

#[test]
fn convert_writes_one_nifti_and_sidecar_per_series() {
    let p = phantom(&["--vendor", "siemens", "--nuclide", "cu64"]);
    let t = truth(&p);
    let out = tempfile::tempdir().expect("tempdir");
    let o = edgeseg(&["convert", s(&p.join("dicom")), "--out", s(out.path())]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    for m in ["PT", "CT"] {
        let uid = t["series"][m]["series_instance_uid"].as_str().expect("uid");
        let nii = out.path().join(format!("{uid}.nii.gz"));
        let bytes = std::fs::read(&nii).expect("nifti written");
        assert_eq!(&bytes[..2], &[0x1f, 0x8b], "gzip magic");
        let side: Value =
            serde_json::from_str(&std::fs::read_to_string(out.path().join(format!("{uid}.json"))).expect("sidecar"))
                .expect("json");
        assert_eq!(side["series"]["modality"], m);
        assert_eq!(side["nifti"], format!("{uid}.nii.gz"));
        assert!(side["affine_ras"].is_array());
    }
    // Nothing half-written left behind.
    let leftovers: Vec<_> = std::fs::read_dir(out.path())
        .expect("out")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn missing_folder_is_a_clear_error() {
    let o = edgeseg(&["inspect", "/nonexistent/edgeseg-test"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("/nonexistent/edgeseg-test: not a folder"));
}

#[test]
fn dicomdir_and_other_files_are_not_series() {
    let p = phantom(&["--vendor", "siemens", "--nuclide", "cu64"]);
    let dir = tempfile::tempdir().expect("tempdir");
    // A copy of the PET series plus a DICOMDIR and a text file.
    for e in std::fs::read_dir(p.join("dicom/PT")).expect("PT") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), dir.path().join(e.file_name())).expect("copy");
    }
    std::fs::write(dir.path().join("DICOMDIR"), b"not really").expect("write");
    std::fs::write(dir.path().join("README.txt"), b"hello").expect("write");
    let (v, code) = inspect_json(dir.path());
    assert_eq!(code, 2, "the text file is reported");
    assert_eq!(v["skipped"][0]["reason"], "DICOMDIR (media directory) ignored");
    assert_eq!(v["errors"].as_array().expect("errors").len(), 1);
    assert!(v["errors"][0]["error"].as_str().expect("error").contains("README.txt: not a DICOM file"));
    assert_eq!(v["studies"][0]["series"].as_array().expect("series").len(), 1);
}

/// A vendor export folder (variants.py `export-clutter`): the series in a
/// DICOMDIR file set, Philips-style DIRFILEs, an RGB secondary capture, an
/// SR, a presentation state, raw data, a sagittal single-slice localizer and
/// a CT scout. `convert` writes the one volume, names every other file on an
/// info line with its reason and exits 0; `inspect --json` lists them as
/// skipped, none as an error.
#[test]
fn an_export_folders_clutter_is_skipped_with_reasons_and_exit_0() {
    let base = crate::ingest_formats::variants("CT");
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(base.join("variants.json")).expect("manifest")).expect("json");
    let entry =
        manifest.as_array().expect("list").iter().find(|e| e["kind"] == "export-clutter").expect("clutter kind");
    let dir = base.join("export-clutter");
    let skip: Vec<String> = entry["skip"]
        .as_array()
        .expect("skip")
        .iter()
        .map(|v| s(&dir.join(v.as_str().expect("path"))).to_string())
        .collect();
    assert!(skip.len() >= 10, "{skip:?}");
    let out = tempfile::tempdir().expect("tempdir");
    let o = edgeseg(&["convert", s(&dir), "--out", s(out.path())]);
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    assert_eq!(stdout.lines().filter(|l| l.ends_with(".nii.gz")).count(), 1, "{stdout}");
    let series_uid = entry["series_instance_uid"].as_str().expect("uid");
    assert!(stdout.contains(series_uid), "the axial series is the volume written: {stdout}");
    for f in &skip {
        let lines: Vec<&str> = stderr.lines().filter(|l| l.contains(&format!(" {f}: "))).collect();
        assert_eq!(lines.len(), 1, "{f}: one line each:\n{stderr}");
        assert!(lines[0].starts_with("edgeseg: info: skipped "), "{}", lines[0]);
    }
    for (file, why) in [
        ("screenshot.dcm", "secondary capture"),
        ("report.dcm", "structured report"),
        ("presentation.dcm", "presentation state"),
        ("raw.dcm", "raw data"),
        ("localizer-sagittal.dcm", "single-slice localizer (its plane is 90°"),
        ("scout.dcm", "localizer (ImageType ORIGINAL\\PRIMARY\\LOCALIZER)"),
        ("dicomdir-copy.dcm", "media storage directory"),
        ("DIRFILE", "Philips export directory file"),
    ] {
        assert!(stderr.lines().any(|l| l.contains(file) && l.contains(why)), "{file}: no line with {why:?}:\n{stderr}");
    }
    assert_eq!(stderr.lines().count(), skip.len(), "nothing but the info lines:\n{stderr}");
    let (v, code) = inspect_json(&dir);
    assert_eq!(code, 0, "{v}");
    assert!(v["errors"].as_array().expect("errors").is_empty(), "{}", v["errors"]);
    let listed: Vec<&str> =
        v["skipped"].as_array().expect("skipped").iter().map(|k| k["path"].as_str().expect("path")).collect();
    for f in &skip {
        assert!(listed.contains(&f.as_str()), "{f} not in inspect's skipped list {listed:?}");
    }
}

//! The study folder's files beyond the NIfTI volumes (lesions.csv, mip.png,
//! the 4D probabilities.nii.gz, report.json's provenance) and its atomicity:
//! a writer killed between files (the `EDGESEG_TEST_ABORT_AFTER_FILE` hook)
//! leaves no study folder, or the previous one untouched, and the next run
//! writes it complete and clears the leftovers.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::util::{cached_fixture, fixture_script, ort_lib, phantom, s, text, truth};

fn petct_package() -> PathBuf {
    cached_fixture("pointwise-petct", |d| {
        fixture_script("onnx_package.py", &["--out", s(d), "--petct", "--patch", "32"])
    })
    .join("model")
}

fn study() -> PathBuf {
    phantom(&["--size", "small", "--vendor", "siemens", "--nuclide", "cu64", "--seed", "11"])
}

/// `edgeseg process` with extra arguments and environment.
fn process(out: &Path, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let model = petct_package();
    let lib = ort_lib();
    let input = study().join("dicom");
    // A separate working folder: an aborted run may leave a core file there.
    let cwd = tempfile::tempdir().expect("tempdir");
    let mut c = Command::new(env!("CARGO_BIN_EXE_edgeseg"));
    c.current_dir(cwd.path());
    c.args(["process", s(&input), "--model", s(&model), "--out", s(out), "--onnxruntime", s(&lib)]).args(extra);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("edgeseg runs")
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

const PETCT_FILES: [&str; 6] =
    ["labels.nii.gz", "lesions.csv", "lesions.nii.gz", "mip.png", "report.json", "suv.nii.gz"];

/// A CSV record split into fields (the writer's numeric fields need no quotes).
fn fields(line: &str) -> Vec<&str> {
    line.split(',').collect()
}

#[test]
fn csv_mip_probabilities_and_provenance() {
    let t = truth(&study());
    let out = tempfile::tempdir().expect("tempdir");
    let o = process(out.path(), &["--save-probabilities"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    let dir = out.path().join(t["study_instance_uid"].as_str().expect("uid"));
    let mut want: Vec<&str> = PETCT_FILES.to_vec();
    want.push("probabilities.nii.gz");
    want.sort();
    let have = names(&dir);
    for f in want {
        assert!(have.iter().any(|n| n == f), "{f} missing from {have:?}");
    }
    assert!(!have.iter().any(|n| n.starts_with("probabilities_class")), "one 4D file, not one per class");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).expect("report")).expect("json");

    // report.json: provenance and the fields the issue lists.
    assert_eq!(report["model"]["providers"][0]["precision"], "fp32");
    assert!(report["verdict"].is_null(), "the PET/CT profile has no verdict");
    assert_eq!(report["suv"]["status"], "available");
    assert_eq!(report["suv"]["series_instance_uid"], t["series"]["PT"]["series_instance_uid"]);
    assert_eq!(report["suv"]["method"], report["inputs"][0]["suv"]["method"]);
    assert!(report["patient"]["total_tumour_volume_ml"].as_f64().is_some());

    // lesions.csv: header, then the report's lesion table row by row.
    let bytes = std::fs::read(dir.join("lesions.csv")).expect("csv");
    assert!(!bytes.starts_with(&[0xef, 0xbb, 0xbf]), "no BOM");
    let csv = String::from_utf8(bytes).expect("utf-8");
    assert!(csv.ends_with("\r\n"));
    let lines: Vec<&str> = csv.trim_end_matches("\r\n").split("\r\n").collect();
    let header = fields(lines[0]);
    assert_eq!(header[..4], ["number", "volume_ml", "suv_max", "suv_mean"]);
    let lesions = report["lesions"].as_array().expect("lesions");
    assert!(!lesions.is_empty());
    assert_eq!(lines.len(), lesions.len() + 2, "header, lesions, the patient-level total");
    let total: std::collections::HashMap<&str, &str> =
        header.iter().copied().zip(fields(lines[lines.len() - 1])).collect();
    assert_eq!(total["number"], "total");
    let tv: f64 = total["volume_ml"].parse().expect("number");
    assert!((tv - report["patient"]["total_tumour_volume_ml"].as_f64().expect("f64")).abs() <= 5e-4);
    let tt: f64 = total["tlg"].parse().expect("number");
    assert!((tt - report["patient"]["total_tlg_g"].as_f64().expect("f64")).abs() <= 5e-4);
    assert_eq!(report["units"]["tlg"], "g");
    for (line, l) in lines[1..lines.len() - 1].iter().zip(lesions) {
        let row: std::collections::HashMap<&str, &str> = header.iter().copied().zip(fields(line)).collect();
        assert_eq!(row["number"], l["number"].to_string());
        assert_eq!(row["voxels"], l["voxels"].to_string());
        for (col, key, tol) in [
            ("volume_ml", "volume_ml", 5e-4),
            ("suv_max", "suv_max", 5e-4),
            ("suv_mean", "suv_mean", 5e-4),
            ("suv_peak", "suv_peak", 5e-4),
            ("tlg", "tlg", 5e-4),
        ] {
            let v: f64 = row[col].parse().expect("number");
            assert!((v - l[key].as_f64().expect("f64")).abs() <= tol + 1e-12, "{col}: {v} vs {}", l[key]);
        }
        for (a, col) in ["centroid_lps_x_mm", "centroid_lps_y_mm", "centroid_lps_z_mm"].iter().enumerate() {
            let v: f64 = row[col].parse().expect("number");
            assert!((v - l["centroid_lps_mm"][a].as_f64().expect("f64")).abs() <= 5e-3 + 1e-12);
        }
    }

    // mip.png: a PNG of the size the PET grid gives, white background.
    let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(dir.join("mip.png")).expect("png")));
    let mut r = dec.read_info().expect("png header");
    let mut buf = vec![0; r.output_buffer_size().expect("size")];
    let info = r.next_frame(&mut buf).expect("png data");
    let pt = &t["series"]["PT"];
    let (cols, slices) = (pt["columns"].as_f64().expect("c"), pt["slices"].as_f64().expect("s"));
    let labels = edgeseg::export::nifti::read_f32(&dir.join("labels.nii.gz")).expect("labels");
    let sp = labels.geometry.spacing;
    let base = sp[0].min(sp[2]);
    let h0 = (slices * sp[2] / base).round();
    let scale = (512.0 / h0).ceil().clamp(1.0, 8.0);
    // The MIP, then the panel (96 px per font scale, floor(height / 256) in 1..=4) to its right.
    let height = (slices * sp[2] / (base / scale)).round();
    let font = (height / 256.0).floor().clamp(1.0, 4.0);
    assert_eq!(info.width as f64, (cols * sp[0] / (base / scale)).round() + 96.0 * font);
    assert!(info.height as f64 >= height);
    assert_eq!(&buf[..3], &[255, 255, 255], "corner outside the body is white");

    // probabilities.nii.gz: one 4D float file, classes along the 4th axis, summing to 1.
    let obj = nifti::ReaderOptions::new().read_file(dir.join("probabilities.nii.gz")).expect("read 4D");
    let h = nifti::NiftiObject::header(&obj).clone();
    let d = labels.geometry.dims;
    assert_eq!(h.dim[..5], [4, d[0] as u16, d[1] as u16, d[2] as u16, 2]);
    let arr = nifti::IntoNdArray::into_ndarray::<f32>(nifti::NiftiObject::into_volume(obj)).expect("array");
    for idx in [[0, 0, 0], [d[0] / 2, d[1] / 2, d[2] / 2], [d[0] - 1, d[1] - 1, d[2] - 1]] {
        let sum = arr[[idx[0], idx[1], idx[2], 0]] + arr[[idx[0], idx[1], idx[2], 1]];
        assert!((sum - 1.0).abs() < 1e-4, "probabilities at {idx:?} sum to {sum}");
    }
}

fn leftovers(out: &Path) -> Vec<String> {
    names(out).into_iter().filter(|n| n.starts_with(".staging-") || n.starts_with(".replaced-")).collect()
}

#[test]
fn killed_writer_leaves_no_study_folder_and_the_next_run_completes_it() {
    let t = truth(&study());
    let uid = t["study_instance_uid"].as_str().expect("uid");
    let out = tempfile::tempdir().expect("tempdir");
    let dir = out.path().join(uid);

    // Killed after the 2nd file: nothing under the study's name.
    let o = process(out.path(), &[], &[("EDGESEG_TEST_ABORT_AFTER_FILE", "2")]);
    assert_eq!(o.status.signal(), Some(libc::SIGABRT), "the hook aborts: {:?} {}", o.status, text(&o).1);
    assert!(!dir.exists(), "a killed writer left a study folder");
    let left = leftovers(out.path());
    assert_eq!(left.len(), 1, "one staging folder left by the crash: {left:?}");
    assert!(left[0].starts_with(&format!(".staging-{uid}-")));
    assert_eq!(names(&out.path().join(&left[0])).len(), 2, "the hook fired after the 2nd file");

    // The next run writes the folder complete and clears the leftover.
    let o = process(out.path(), &[], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    let complete = names(&dir);
    for f in PETCT_FILES {
        assert!(complete.iter().any(|n| n == f), "{f} missing from {complete:?}");
    }
    assert!(leftovers(out.path()).is_empty(), "the crashed writer's staging folder is removed");
    let first = std::fs::read(dir.join("report.json")).expect("report");

    // Killed while reprocessing (after the last file, before the swap; every
    // file write_study writes counts for the hook): the previous folder stays
    // as it was, complete.
    std::fs::write(dir.join("planted.txt"), b"from an earlier run").expect("plant");
    // (The hook counts the study's files, not edgeseg's own `.edgeseg/` folder.)
    let last = complete.iter().filter(|n| !n.starts_with('.')).count().to_string();
    let o = process(out.path(), &[], &[("EDGESEG_TEST_ABORT_AFTER_FILE", &last)]);
    assert_eq!(o.status.signal(), Some(libc::SIGABRT), "{:?} {}", o.status, text(&o).1);
    assert_eq!(std::fs::read(dir.join("report.json")).expect("report"), first, "the old folder is untouched");
    assert!(dir.join("planted.txt").exists());
    assert_eq!(leftovers(out.path()).len(), 1);

    // Reprocessing replaces the folder whole: the planted file is gone.
    let o = process(out.path(), &[], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    assert_eq!(names(&dir), complete, "reprocessing replaces the folder whole");
    assert!(leftovers(out.path()).is_empty());
}

//! `edgeseg process`: a generated PET/CT study (DICOM, pydicom) through the
//! whole pipeline with ONNX Runtime and a PET/CT point-wise model package:
//! outputs on the PET grid, lesion map consistent with the class map, the
//! report's provenance, atomic and repeatable output, and a study the model
//! cannot take reported without any output. The tests where the network is
//! incidental run the simulated twin of the package (no ONNX Runtime), and one
//! test requires the twin to give the ONNX network's outputs.

use edgeseg::export::nifti;
use serde_json::Value;

use crate::daemon_util::{NO_ONNX_RUNTIME, simulated_petct_model};
use crate::util::{cached_fixture, edgeseg, fixture_script, ort_lib, phantom, s, text, truth};

fn petct_package() -> std::path::PathBuf {
    cached_fixture("pointwise-petct", |d| {
        fixture_script("onnx_package.py", &["--out", s(d), "--petct", "--patch", "32"])
    })
    .join("model")
}

fn process(input: &std::path::Path, out: &std::path::Path) -> std::process::Output {
    let model = petct_package();
    let lib = ort_lib();
    edgeseg(&["process", s(input), "--model", s(&model), "--out", s(out), "--onnxruntime", s(&lib)])
}

/// `edgeseg process` with the simulated package, pointed at no ONNX Runtime.
fn process_simulated(input: &std::path::Path, out: &std::path::Path) -> std::process::Output {
    let model = simulated_petct_model(None);
    edgeseg(&["process", s(input), "--model", s(&model), "--out", s(out), "--onnxruntime", NO_ONNX_RUNTIME])
}

/// The simulated package is the ONNX one's twin: the same study gives the
/// same class and lesion maps, and report.json names the provider `simulated`.
#[test]
fn simulated_network_gives_the_onnx_outputs_without_onnx_runtime() {
    let p = phantom(&["--size", "small", "--vendor", "siemens", "--nuclide", "cu64", "--seed", "11"]);
    let study = truth(&p)["study_instance_uid"].as_str().expect("uid").to_string();
    let (onnx, sim) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let o = process(&p.join("dicom"), onnx.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    let o = process_simulated(&p.join("dicom"), sim.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    let (a, b) = (onnx.path().join(&study), sim.path().join(&study));
    for name in ["labels.nii.gz", "lesions.nii.gz"] {
        let (x, y) = (nifti::read_f32(&a.join(name)).expect(name), nifti::read_f32(&b.join(name)).expect(name));
        assert_eq!(x.geometry.dims, y.geometry.dims, "{name}");
        assert!(x.data.iter().any(|&v| v > 0.0), "{name}: something found");
        assert!(x.data == y.data, "{name}: the simulated network gives the ONNX network's map");
    }
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(b.join("report.json")).expect("report")).expect("json");
    assert_eq!(report["model"]["providers"][0]["provider"], "simulated");
    assert_eq!(report["model"]["providers"][0]["precision"], "fp32");
}

#[test]
fn petct_study_gives_labels_lesions_and_report() {
    let p = phantom(&["--size", "small", "--vendor", "siemens", "--nuclide", "cu64", "--seed", "11"]);
    let t = truth(&p);
    let out = tempfile::tempdir().expect("tempdir");
    let o = process(&p.join("dicom"), out.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    let study = t["study_instance_uid"].as_str().expect("uid");
    let dir = out.path().join(study);
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).expect("report")).expect("json");
    assert_eq!(report["schema"], "edgeseg-report/1");
    assert_eq!(report["study_instance_uid"], study);
    assert_eq!(report["reference_series_uid"], t["series"]["PT"]["series_instance_uid"]);
    assert_eq!(report["inputs"][0]["series_instance_uid"], t["series"]["PT"]["series_instance_uid"]);
    assert_eq!(report["inputs"][1]["series_instance_uid"], t["series"]["CT"]["series_instance_uid"]);
    assert_eq!(report["inputs"][1]["resampled"], true, "CT brought onto the PET grid");
    assert_eq!(report["model"]["name"], "pointwise-petct-test");
    assert_eq!(report["model"]["sha256"].as_str().expect("sha").len(), 64);
    assert_eq!(report["model"]["providers"][0]["provider"], "cpu");
    for stage in ["load", "preprocess", "inference", "export", "postprocess", "write"] {
        assert!(report["timings_s"][stage].as_f64().is_some(), "timing {stage}");
    }
    // Labels on the PET grid; lesion map agrees with the lesion class.
    let labels = nifti::read_f32(&dir.join("labels.nii.gz")).expect("labels");
    let lesions = nifti::read_f32(&dir.join("lesions.nii.gz")).expect("lesions");
    let pt = &t["series"]["PT"];
    assert_eq!(
        labels.geometry.dims,
        [
            pt["columns"].as_u64().expect("c") as usize,
            pt["rows"].as_u64().expect("r") as usize,
            pt["slices"].as_u64().expect("s") as usize
        ]
    );
    for (l, m) in labels.data.iter().zip(&lesions.data) {
        assert_eq!(*l == 1.0, *m > 0.0, "lesion class and lesion map disagree");
    }
    let n = report["lesions"].as_array().expect("lesions").len();
    assert!(n > 0, "the point-wise model marks hot spots");
    assert_eq!(lesions.data.iter().cloned().fold(0f32, f32::max) as usize, n);
    assert_eq!(report["patient"]["lesion_count"].as_u64(), Some(n as u64));
    // mip.png goes to the PACS too, as a Secondary Capture.
    assert_eq!(report["dicom_outputs"], serde_json::json!(["seg.dcm", "rtstruct.dcm", "mip.dcm"]));
    assert!(["seg.dcm", "rtstruct.dcm", "mip.dcm"].iter().all(|f| dir.join(f).exists()));
    // No staging left; a second run replaces the folder whole.
    let names: Vec<String> = std::fs::read_dir(out.path())
        .expect("out")
        .map(|e| e.expect("e").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec![study.to_string()]);
    std::fs::write(dir.join("stale.txt"), b"from a previous run").expect("write");
    let o = process(&p.join("dicom"), out.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    assert!(!dir.join("stale.txt").exists(), "reprocessing replaces the study folder whole");
}

#[test]
fn study_without_ct_is_reported_and_writes_nothing() {
    let p = phantom(&["--no-ct", "--vendor", "siemens"]);
    let out = tempfile::tempdir().expect("tempdir");
    let o = process_simulated(&p.join("dicom"), out.path());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o).1);
    assert!(text(&o).1.contains("needs a PET/CT pair"), "{}", text(&o).1);
    // The error's class in words (issue 13, item 19: no Rust debug text).
    assert!(text(&o).1.contains("study 1 of 1 failed (bad input)"), "{}", text(&o).1);
    assert_eq!(std::fs::read_dir(out.path()).expect("out").count(), 0);
    // Progress: a plain line per study off a terminal, a bar on one (a
    // pseudo-terminal from Python's pty module), the failure on its own line.
    assert!(text(&o).1.contains("edgeseg: study 1 of 1\n"), "{}", text(&o).1);
    assert!(!text(&o).1.contains('\r'), "{}", text(&o).1);
    let (model, lib) = (petct_package(), ort_lib());
    let o = std::process::Command::new(crate::util::python())
        .args(["-c", "import pty, sys; sys.exit(pty.spawn(sys.argv[1:]) >> 8)", env!("CARGO_BIN_EXE_edgeseg")])
        .args(["process", s(&p.join("dicom")), "--model", s(&model), "--out", s(out.path()), "--onnxruntime", s(&lib)])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("python runs");
    let tty = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(2), "{tty}");
    assert!(tty.contains("\r\x1b[2K[") && tty.contains("] 1/1 study"), "{tty:?}");
    assert!(tty.contains("\r\x1b[2Kedgeseg: study 1 of 1 failed (bad input)"), "{tty:?}");
}

#[test]
fn add_lesion_from_a_seed_point_rewrites_the_study() {
    let p = phantom(&["--size", "small", "--vendor", "siemens", "--nuclide", "cu64", "--seed", "11"]);
    let t = truth(&p);
    let out = tempfile::tempdir().expect("tempdir");
    let o = process_simulated(&p.join("dicom"), out.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    let dir = out.path().join(t["study_instance_uid"].as_str().expect("uid"));
    assert!(dir.join("suv.nii.gz").exists(), "the PET SUV is kept for add-lesion");
    // Seed at the centre of the largest placed lesion.
    let lesion = t["lesions"]
        .as_array()
        .expect("lesions")
        .iter()
        .max_by_key(|l| l["voxels_pet"].as_u64().expect("v"))
        .expect("a lesion");
    let c: Vec<String> =
        lesion["centre_lps_mm"].as_array().expect("c").iter().map(|v| format!("{}", v.as_f64().expect("f"))).collect();
    let at = c.join(",");
    // The model found that lesion: a seed inside it is refused (issue 13), so it goes first.
    let found = nifti::read_f32(&dir.join("lesions.nii.gz")).expect("lesions");
    let v = found.geometry.lps_to_voxel([0, 1, 2].map(|a| lesion["centre_lps_mm"][a].as_f64().expect("f")));
    let n = found.data[found.geometry.index(v[0].round() as usize, v[1].round() as usize, v[2].round() as usize)];
    let o = edgeseg(&["remove-lesion", s(&dir), &format!("{n}")]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    // A threshold above the seed's SUV: the reason once (it was printed twice,
    // "the seed's SUV ...: invalid input: the seed's SUV ...").
    let o = edgeseg(&["add-lesion", s(&dir), "--at", &at, "--threshold", "10000"]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o).1;
    assert_eq!(err.matches("the seed's SUV").count(), 1, "{err}");
    let o = edgeseg(&["add-lesion", s(&dir), "--at", &at, "--threshold", "40%"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).expect("report")).expect("json");
    let edit = &report["edits"][1];
    assert_eq!(edit["action"], "add-lesion");
    assert!(edit["voxels"].as_u64().expect("voxels") > 0);
    let lesions = nifti::read_f32(&dir.join("lesions.nii.gz")).expect("lesions");
    let ijk: Vec<usize> =
        edit["seed_ijk"].as_array().expect("ijk").iter().map(|v| v.as_u64().expect("u") as usize).collect();
    assert!(lesions.data[lesions.geometry.index(ijk[0], ijk[1], ijk[2])] > 0.0, "the seed voxel is in a lesion now");
    assert_eq!(report["patient"]["lesion_count"], edit["lesions_after"]);
    let csv = std::fs::read_to_string(dir.join("lesions.csv")).expect("lesions.csv");
    assert_eq!(
        csv.matches("\r\n").count() as u64,
        1 + edit["lesions_after"].as_u64().expect("n") + 1,
        "lesions.csv rewritten (header, lesions, total)"
    );
    assert!(dir.join("mip.png").exists());
    // The DICOM outputs are written again for the new lesions (tests/post_edits.rs).
    assert_eq!(report["dicom_outputs"], serde_json::json!(["seg.dcm", "rtstruct.dcm", "mip.dcm"]));
    // A seed outside the PET volume is a clear error and changes nothing.
    let o = edgeseg(&["add-lesion", s(&dir), "--at", "9999,0,0"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("outside the PET volume"), "{}", text(&o).1);
    let again: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).expect("report")).expect("json");
    assert_eq!(again["edits"].as_array().expect("edits").len(), 2);
}

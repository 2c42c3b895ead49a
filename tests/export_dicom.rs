//! `seg.dcm` and `rtstruct.dcm` from `edgeseg process` judged by dicom3tools'
//! `dciodvfy` (no line starting with "Error"; warnings printed) and parsed by
//! dcmtk's `dcmdump`, for axial, oblique, feet-first and hollow-lesion
//! phantom studies; a study without findings gets neither file.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::util::{cached_fixture, edgeseg, fixture_script, ort_lib, phantom, s, text, truth};

fn petct_package() -> PathBuf {
    cached_fixture("pointwise-petct", |d| {
        fixture_script("onnx_package.py", &["--out", s(d), "--petct", "--patch", "32"])
    })
    .join("model")
}

/// Runs `edgeseg process` on `dicom` and returns the study folder and its report.
fn process(dicom: &Path, study_uid: &str) -> (tempfile::TempDir, PathBuf, Value) {
    let out = tempfile::tempdir().expect("tempdir");
    let o = edgeseg(&[
        "process",
        s(dicom),
        "--model",
        s(&petct_package()),
        "--out",
        s(out.path()),
        "--onnxruntime",
        s(&ort_lib()),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    let dir = out.path().join(study_uid);
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).expect("report")).expect("json");
    (out, dir, report)
}

/// dciodvfy's verdict: the error lines and the warning lines.
fn dciodvfy(file: &Path) -> (Vec<String>, Vec<String>) {
    let o = Command::new("dciodvfy").arg(file).output().expect("dciodvfy (Debian dicom3tools) installed");
    let all = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    let errors = all.lines().filter(|l| l.starts_with("Error")).map(str::to_string).collect();
    let warnings = all.lines().filter(|l| l.starts_with("Warning")).map(str::to_string).collect();
    (errors, warnings)
}

fn dcmdump(file: &Path) -> String {
    let o = Command::new("dcmdump").arg("+P").arg("0008,0060").arg(file).output().expect("dcmdump (dcmtk) installed");
    assert!(o.status.success(), "dcmdump cannot parse {}: {}", file.display(), String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Processes a study and checks both DICOM files; returns the output folder
/// (kept alive) and the study folder.
fn check_study(name: &str, dicom: &Path, study_uid: &str) -> (tempfile::TempDir, PathBuf) {
    let (out, dir, report) = process(dicom, study_uid);
    let written: Vec<&str> =
        report["dicom_outputs"].as_array().expect("dicom_outputs").iter().filter_map(|v| v.as_str()).collect();
    assert_eq!(written, ["seg.dcm", "rtstruct.dcm"], "{name}");
    for (file, modality) in [("seg.dcm", "SEG"), ("rtstruct.dcm", "RTSTRUCT")] {
        let p = dir.join(file);
        let (errors, warnings) = dciodvfy(&p);
        for w in &warnings {
            println!("{name} {file}: {w}");
        }
        assert!(errors.is_empty(), "{name} {file}: dciodvfy errors:\n{}", errors.join("\n"));
        assert!(dcmdump(&p).contains(&format!("[{modality}]")), "{name} {file}: Modality {modality}");
    }
    (out, dir)
}

#[test]
fn seg_and_rtstruct_pass_dciodvfy_axial() {
    let p = phantom(&["--size", "small", "--vendor", "siemens", "--nuclide", "cu64", "--seed", "11"]);
    check_study("axial", &p.join("dicom"), truth(&p)["study_instance_uid"].as_str().expect("uid"));
}

#[test]
fn seg_and_rtstruct_pass_dciodvfy_oblique() {
    let p = phantom(&["--size", "small", "--seed", "5", "--oblique"]);
    check_study("oblique", &p.join("dicom"), truth(&p)["study_instance_uid"].as_str().expect("uid"));
}

#[test]
fn seg_and_rtstruct_pass_dciodvfy_feet_first() {
    let p = phantom(&["--size", "small", "--seed", "7", "--feet-first"]);
    check_study("feet-first", &p.join("dicom"), truth(&p)["study_instance_uid"].as_str().expect("uid"));
}

#[test]
fn seg_and_rtstruct_pass_dciodvfy_lesion_with_holes() {
    let p = phantom(&["--size", "small", "--vendor", "siemens", "--nuclide", "cu64", "--seed", "11"]);
    let hollow = cached_fixture("hollow-seed11", |d| fixture_script("hollow.py", &["--phantom", s(&p), "--out", s(d)]));
    check_study("hollow", &hollow.join("dicom"), truth(&hollow)["study_instance_uid"].as_str().expect("uid"));
}

#[test]
fn study_without_findings_gets_no_dicom_outputs() {
    // The tiny phantom with every PET pixel set to zero (hollow.py --cold,
    // pydicom): nothing above the model's threshold, no lesion, no class voxel.
    let p = phantom(&["--vendor", "siemens"]);
    let cold =
        cached_fixture("cold-pet", |d| fixture_script("hollow.py", &["--phantom", s(&p), "--out", s(d), "--cold"]));
    let (_out, dir, report) = process(&cold.join("dicom"), truth(&p)["study_instance_uid"].as_str().expect("uid"));
    assert_eq!(report["lesions"].as_array().map(Vec::len), Some(0));
    assert_eq!(report["dicom_outputs"], serde_json::json!([]));
    assert!(!dir.join("seg.dcm").exists() && !dir.join("rtstruct.dcm").exists());
    assert!(dir.join("labels.nii.gz").exists(), "the NIfTI outputs are still written");
}

#[test]
fn seg_and_rtstruct_pass_dciodvfy_multiframe_source() {
    // The PET as one Enhanced PET object (variants.py, pydicom) beside the CT:
    // frames are referenced by ReferencedFrameNumber.
    let p = phantom(&["--size", "small", "--vendor", "siemens", "--nuclide", "cu64", "--seed", "11"]);
    let study = cached_fixture("enhanced-pet-study", |d| {
        let v = d.join("variants");
        fixture_script(
            "variants.py",
            &["--series", s(&p.join("dicom/PT")), "--out", s(&v), "--kind", "enhanced-multiframe", "--no-dciodvfy"],
        );
        let dicom = d.join("dicom");
        std::fs::create_dir_all(dicom.join("PT")).expect("mkdir");
        std::fs::rename(v.join("enhanced-multiframe"), dicom.join("PT/enhanced")).expect("move");
        copy_dir(&p.join("dicom/CT"), &dicom.join("CT"));
    });
    let uid = truth(&p)["study_instance_uid"].as_str().expect("uid").to_string();
    let (_out, dir) = check_study("enhanced-pet", &study.join("dicom"), &uid);
    let dump = Command::new("dcmdump").arg(dir.join("seg.dcm")).output().expect("dcmdump");
    assert!(String::from_utf8_lossy(&dump.stdout).contains("ReferencedFrameNumber"), "frames referenced by number");
}

/// Copies a folder tree (the scan follows no directory symlink).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
        }
    }
}

//! Siemens mosaic images (issue 11, item 8): one stored image holding the N
//! slices of an MR volume as tiles is read as those N slices, with the
//! geometry dcm2niix and nibabel give it and the values pydicom decodes.
//!
//! - Generated mosaics (tests/fixtures/mosaic.py tiles a known volume and
//!   checks its file with nibabel's MosaicWrapper) load voxel for voxel and
//!   position for position as the same volume written as ordinary slices;
//!   dcm2niix and nibabel judge our NIfTI of them too.
//! - Mosaics that cannot be taken apart are refused with the reason.
//! - The public Siemens TrioTim mosaic in every transfer syntax of
//!   `../shared/conformance/dcmqa_ts_siemens_mr_*` converts to 64×64×35 with
//!   dcm2niix's and nibabel's affine (1e-3 mm) and their values
//!   (tests/peers/mosaic_judge.py).

use std::path::{Path, PathBuf};
use std::process::Command;

use edgeseg::ingest::{self, SeriesVolume};
use serde_json::Value;

use crate::util::{cached_fixture, edgeseg, fixture_script, python, root, s, text};

/// The cases written by tests/fixtures/mosaic.py, and their truth.
fn fixtures() -> (PathBuf, Value) {
    let dir = cached_fixture("mosaic", |d| fixture_script("mosaic.py", &["--out", s(d)]));
    let truth = serde_json::from_str(&std::fs::read_to_string(dir.join("truth.json")).expect("truth.json"))
        .expect("truth.json parses");
    (dir, truth)
}

fn load_one(dir: &Path) -> SeriesVolume {
    let index = ingest::index(dir);
    assert!(index.errors.is_empty(), "{}: file errors: {:?}", dir.display(), index.errors);
    assert_eq!(index.series.len(), 1, "{}: expected one series", dir.display());
    index.series[0].plan().and_then(|p| p.load()).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

/// Our NIfTI of `dicom_dir` judged by dcm2niix and nibabel; returns the report.
fn judge_with_peers(dicom_dir: &Path, dicom_file: &Path) -> Value {
    let out = tempfile::tempdir().expect("tempdir");
    let o = edgeseg(&["convert", s(dicom_dir), "--out", s(out.path())]);
    assert_eq!(o.status.code(), Some(0), "convert {}: {}", dicom_dir.display(), text(&o).1);
    let nii: Vec<PathBuf> = std::fs::read_dir(out.path())
        .expect("out")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".nii.gz"))
        .collect();
    assert_eq!(nii.len(), 1, "{}: one volume expected, got {nii:?}", dicom_dir.display());
    let j = Command::new(python())
        .arg(root().join("tests/peers/mosaic_judge.py"))
        .args(["--dicom", s(dicom_file), "--nifti", s(&nii[0])])
        .output()
        .expect("python runs");
    let (stdout, stderr) = text(&j);
    let report: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|_| panic!("{}: judge printed no report: {stdout}\n{stderr}", dicom_file.display()));
    assert!(j.status.success(), "{}: peers disagree: {}", dicom_file.display(), report["problems"]);
    report
}

#[test]
fn generated_mosaics_equal_the_same_volume_as_slices() {
    let (dir, truth) = fixtures();
    let mut checked = 0;
    for (case, t) in truth.as_object().expect("object") {
        if t.get("refused").is_some() {
            continue;
        }
        let m = load_one(&dir.join(t["mosaic"].as_str().expect("path")));
        let r = load_one(&dir.join(t["slices"].as_str().expect("path")));
        let (gm, gr) = (&m.volume.geometry, &r.volume.geometry);
        let dims: Vec<usize> =
            t["dims"].as_array().expect("dims").iter().map(|v| v.as_u64().unwrap() as usize).collect();
        assert_eq!(gm.dims.to_vec(), dims, "{case}: dims");
        assert_eq!(gr.dims, gm.dims, "{case}: dims of the slices");
        for a in 0..3 {
            let want = t["origin_lps"][a].as_f64().expect("origin");
            assert!((gm.origin[a] - want).abs() < 1e-6, "{case}: origin {:?}, truth {}", gm.origin, t["origin_lps"]);
            let sp = t["spacing"][a].as_f64().expect("spacing");
            assert!((gm.spacing[a] - sp).abs() < 1e-6, "{case}: spacing {:?}, truth {}", gm.spacing, t["spacing"]);
            for b in 0..3 {
                assert!((gm.direction[a][b] - gr.direction[a][b]).abs() < 1e-9, "{case}: direction");
            }
        }
        let differing = m.volume.data.iter().zip(&r.volume.data).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        assert_eq!(differing, 0, "{case}: {differing} voxels differ from the volume written as slices");
        let (lo, hi) = m.volume.data.iter().fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
        assert!(hi > lo + 100.0, "{case}: flat volume");
        // Tiles of one single-frame image: no frame numbers to reference.
        assert!(!m.info.multi_frame, "{case}: a mosaic is not a multi-frame object");
        assert!(m.info.slices.iter().all(|s| s.frame.is_none()), "{case}: frame numbers");
        let report = judge_with_peers(
            &dir.join(t["mosaic"].as_str().expect("path")),
            &dir.join(t["mosaic"].as_str().expect("path")).join("mosaic.dcm"),
        );
        println!("{case}: {report}");
        checked += 1;
    }
    assert_eq!(checked, 2, "both readable cases checked");
}

#[test]
fn mosaics_that_cannot_be_taken_apart_are_refused_with_the_reason() {
    let (dir, truth) = fixtures();
    let mut checked = 0;
    for (case, t) in truth.as_object().expect("object") {
        let Some(why) = t.get("refused").and_then(|v| v.as_str()) else { continue };
        let index = ingest::index(&dir.join(t["mosaic"].as_str().expect("path")));
        assert!(index.series.is_empty(), "{case}: read as a series");
        assert_eq!(index.errors.len(), 1, "{case}: {:?}", index.errors);
        let msg = index.errors[0].to_string();
        assert!(msg.contains("mosaic.dcm") && msg.contains(why), "{case}: {msg}");
        assert_eq!(index.errors[0].class(), ingest::ErrorClass::BadInput, "{case}");
        checked += 1;
    }
    assert_eq!(checked, 5, "every refused case checked");
}

#[test]
fn public_siemens_mosaic_equals_dcm2niix_and_nibabel_in_every_transfer_syntax() {
    let set = root().join("../shared/conformance");
    if !set.is_dir() {
        println!("skipped: {} absent (the public conformance set is not here)", set.display());
        return;
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&set)
        .expect("conformance set")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("dcmqa_ts_siemens_mr_")))
        .collect();
    dirs.sort();
    assert_eq!(dirs.len(), 9, "the nine dcm_qa_ts files");
    let mut checked = 0;
    for dir in &dirs {
        let index = ingest::index(dir);
        if let [e] = index.errors.as_slice()
            && e.to_string().contains("unsupported transfer syntax 1.2.840.10008.1.2.2 ")
        {
            // Explicit VR Big Endian is issue 11 item 4; checked here once read.
            println!("{}: skipped: Explicit VR Big Endian not read yet", dir.display());
            continue;
        }
        assert!(index.errors.is_empty(), "{}: {:?}", dir.display(), index.errors);
        let file = std::fs::read_dir(dir).expect("dir").filter_map(|e| e.ok().map(|e| e.path())).next().expect("file");
        let report = judge_with_peers(dir, &file);
        assert_eq!(report["dims"], serde_json::json!([64, 64, 35]), "{}", dir.display());
        println!("{}: {report}", dir.display());
        checked += 1;
    }
    assert!(checked >= 8, "only {checked} of the 9 files checked");
}

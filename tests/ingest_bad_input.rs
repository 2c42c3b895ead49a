//! Bad input (ingest issue): each kind gets a clear error naming the file (or
//! the series) and the reason, never a panic, and the rest of the folder still
//! loads. The corpus is written by tests/fixtures/badinputs.py next to a good
//! PET series from tests/fixtures/phantom.py.

use std::path::PathBuf;

use serde_json::Value;

use crate::util::{cached_fixture, edgeseg, fixture_script, phantom, s, text};

/// The corpus folder and its manifest.
fn corpus() -> (PathBuf, Value) {
    let template = phantom(&["--no-ct", "--vendor", "siemens"]).join("dicom/PT");
    let dir = cached_fixture("bad-inputs", |d| {
        fixture_script("badinputs.py", &["--template", s(&template), "--out", s(&d.join("corpus"))]);
    })
    .join("corpus");
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).expect("manifest")).expect("json");
    (dir, manifest)
}

/// Runs `edgeseg convert` on the kind's folder and checks the contract.
fn check(kind: &str) {
    let (dir, manifest) = corpus();
    let entry = manifest["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["kind"] == kind)
        .unwrap_or_else(|| panic!("kind {kind} not in the manifest"))
        .clone();
    let folder = dir.join(entry["folder"].as_str().expect("folder"));
    let out = tempfile::tempdir().expect("tempdir");
    let o = edgeseg(&["convert", s(&folder), "--out", s(out.path())]);
    let (_, stderr) = text(&o);
    let code = o.status.code().expect("exit code (no signal)");
    assert_ne!(code, 101, "{kind}: edgeseg panicked:\n{stderr}");

    // The line that names the bad file or series must carry the reason.
    let names: Vec<String> = match (&entry["scope"], &entry["bad_path"]) {
        (Value::String(scope), _) if scope == "series" => {
            vec![entry["bad_series_uid"].as_str().expect("bad_series_uid").to_string()]
        }
        (_, Value::Array(a)) => a.iter().map(|v| v.as_str().expect("name").to_string()).collect(),
        (_, Value::String(p)) => vec![p.clone()],
        other => panic!("unexpected manifest entry {other:?}"),
    };
    let expect: Vec<&str> = entry["expect"].as_array().expect("expect").iter().filter_map(Value::as_str).collect();
    let expect_any: Vec<&str> =
        entry["expect_any"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    for name in &names {
        let line = stderr
            .lines()
            .find(|l| l.contains(name.as_str()))
            .unwrap_or_else(|| panic!("{kind}: no message names {name}:\n{stderr}"));
        let lower = line.to_lowercase();
        for k in &expect {
            assert!(lower.contains(k), "{kind}: message for {name} lacks {k:?}: {line}");
        }
        if !expect_any.is_empty() {
            assert!(
                expect_any.iter().any(|k| lower.contains(k)),
                "{kind}: message for {name} lacks any of {expect_any:?}: {line}"
            );
        }
    }

    // The good series still converts, whole.
    let good = manifest["good_series_uid"].as_str().expect("good_series_uid");
    let nii = out.path().join(format!("{good}.nii.gz"));
    assert!(nii.exists(), "{kind}: the good series {good} was not converted:\n{stderr}");
    let side: Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join(format!("{good}.json"))).expect("sidecar"))
            .expect("json");
    assert_eq!(side["geometry"]["dims"][2], manifest["good_series_files"], "{kind}: good series incomplete");

    // A refused file makes the exit code say so; a dropped duplicate copy does not.
    if kind == "duplicate-sop" {
        assert_eq!(code, 0, "{kind}: a duplicate copy is not an error:\n{stderr}");
    } else {
        assert_eq!(code, 2, "{kind}: expected exit code 2 (some input refused):\n{stderr}");
    }
}

macro_rules! kinds {
    ($($name:ident => $kind:literal),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                check($kind);
            }
        )*
    };
}

kinds! {
    zero_byte_file => "zero-byte",
    truncated_file => "truncated",
    non_dicom_files => "non-dicom",
    dicom_without_pixel_data => "no-pixel-data",
    missing_image_position => "missing-ipp",
    missing_image_orientation => "missing-iop",
    mixed_orientations => "mixed-orientation",
    non_uniform_spacing => "nonuniform-spacing",
    frame_count_disagrees_with_pixel_data => "frame-count-mismatch",
    unsupported_transfer_syntax => "unsupported-ts",
    symlink_outside_folder_not_followed => "symlink-outside",
    duplicate_position_different_uids => "duplicate-position",
    duplicate_sop_instance_kept_once => "duplicate-sop",
}

/// Every kind the manifest lists has a test above (the corpus cannot grow silently).
#[test]
fn every_manifest_kind_is_tested() {
    let (_, manifest) = corpus();
    let tested = [
        "zero-byte",
        "truncated",
        "non-dicom",
        "no-pixel-data",
        "missing-ipp",
        "missing-iop",
        "mixed-orientation",
        "nonuniform-spacing",
        "frame-count-mismatch",
        "unsupported-ts",
        "symlink-outside",
        "duplicate-position",
        "duplicate-sop",
    ];
    for e in manifest["entries"].as_array().expect("entries") {
        let k = e["kind"].as_str().expect("kind");
        assert!(tested.contains(&k), "manifest kind {k} has no test");
    }
}

//! Bad input (ingest issue): each kind gets a clear error naming the file (or
//! the series) and the reason, never a panic, and the rest of the folder still
//! loads. The corpus is written by tests/bad-inputs/make.py's `beside` form
//! next to a good PET series from tests/fixtures/phantom.py (the manifest
//! format of every bad-input corpus: `crate::bad_inputs::Manifest`).

use crate::bad_inputs::{Kind, Manifest, Outcome, beside_corpus};
use crate::util::{edgeseg, s, text};

/// Runs `edgeseg convert` on the kind's folder and checks the contract.
fn check(kind: &str) {
    let dir = beside_corpus();
    let manifest = Manifest::read(&dir);
    assert!(manifest.beside_template);
    let k = manifest.kind(kind);
    let folder = dir.join(&k.folder);
    let out = tempfile::tempdir().expect("tempdir");
    let o = edgeseg(&["convert", s(&folder), "--out", s(out.path())]);
    let (_, stderr) = text(&o);
    let code = o.status.code().expect("exit code (no signal)");
    assert_ne!(code, 101, "{kind}: edgeseg panicked:\n{stderr}");

    // The line that names the bad file or series must carry the reasons.
    for name in &k.names {
        let needle = Kind::needle(name);
        let line = stderr
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{kind}: no message names {needle}:\n{stderr}"));
        assert!(k.reasons_in(line), "{kind}: message for {needle} lacks the reasons ({}): {line}", k.reasons());
    }

    // The good series still converts, whole.
    let good = &manifest.template_series_uid;
    let nii = out.path().join(format!("{good}.nii.gz"));
    assert!(nii.exists(), "{kind}: the good series {good} was not converted:\n{stderr}");
    let side: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join(format!("{good}.json"))).expect("sidecar"))
            .expect("json");
    assert_eq!(side["geometry"]["dims"][2], manifest.template_files, "{kind}: good series incomplete");

    // A refused file makes the exit code say so; a dropped duplicate copy does not.
    match k.outcome {
        Outcome::Quarantine => assert_eq!(code, 2, "{kind}: expected exit code 2 (some input refused):\n{stderr}"),
        Outcome::Processed => assert_eq!(code, 0, "{kind}: nothing refused, exit code 0:\n{stderr}"),
        Outcome::Ignored => panic!("{kind}: no ignored kinds beside the template"),
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
    let manifest = Manifest::read(&beside_corpus());
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
    for k in &manifest.kinds {
        assert!(tested.contains(&k.kind.as_str()), "manifest kind {} has no test", k.kind);
    }
}

//! Transfer syntaxes and multi-frame objects (ingest issue): every lossless
//! encoding of a series, and its enhanced and legacy-converted multi-frame
//! forms, load to the same volume, voxel for voxel and with the same geometry,
//! as the uncompressed single-frame original. JPEG baseline is lossy: it is
//! compared with the 8-bit original it was compressed from, within the error
//! JPEG quality 95 allows. Variants are written by tests/fixtures/variants.py
//! (dcmtk, pydicom, highdicom), among them Explicit VR Big Endian, an Enhanced
//! object in each JPEG and JPEG-LS syntax with every frame in several
//! fragments and an empty Basic Offset Table, and one with an Extended Offset
//! Table; the lossy ones are held to the tolerance variants.json gives (the
//! pydicom decode's error against the same reference, plus two levels).

use std::path::{Path, PathBuf};

use edgeseg::ingest::{self, SeriesVolume};

use crate::util::{cached_fixture, fixture_script, phantom, s};

/// Variants of the tiny phantom's CT (GE: unsigned, intercept −1024) and PET
/// (Siemens: a rescale slope per slice, SUV).
pub(crate) fn variants(modality: &str) -> PathBuf {
    let (flags, sub): (&[&str], &str) = match modality {
        "CT" => (&["--vendor", "ge", "--seed", "5"], "dicom/CT"),
        _ => (&["--vendor", "siemens", "--seed", "5"], "dicom/PT"),
    };
    let series = phantom(flags).join(sub);
    cached_fixture(&format!("variants-{modality}"), |d| {
        fixture_script("variants.py", &["--series", s(&series), "--out", s(d), "--kind", "all", "--no-dciodvfy"]);
    })
}

/// Loads the one series in `dir` with the library.
fn load_one(dir: &Path) -> SeriesVolume {
    let index = ingest::index(dir);
    assert!(index.errors.is_empty(), "{}: file errors: {:?}", dir.display(), index.errors);
    assert_eq!(index.series.len(), 1, "{}: expected one series", dir.display());
    index.series[0].plan().and_then(|p| p.load()).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

fn assert_same_geometry(a: &SeriesVolume, b: &SeriesVolume, what: &str) {
    let (ga, gb) = (&a.volume.geometry, &b.volume.geometry);
    assert_eq!(ga.dims, gb.dims, "{what}: dims");
    for i in 0..3 {
        assert!((ga.spacing[i] - gb.spacing[i]).abs() < 1e-6, "{what}: spacing {:?} vs {:?}", ga.spacing, gb.spacing);
        assert!((ga.origin[i] - gb.origin[i]).abs() < 1e-6, "{what}: origin {:?} vs {:?}", ga.origin, gb.origin);
        for j in 0..3 {
            assert!((ga.direction[i][j] - gb.direction[i][j]).abs() < 1e-9, "{what}: direction");
        }
    }
    assert_eq!(a.info.series_uid, b.info.series_uid, "{what}: series UID");
    assert_eq!(a.info.unit, b.info.unit, "{what}: unit");
}

fn check_lossless(modality: &str, kind: &str) {
    let base = variants(modality);
    let reference = load_one(&base.join("explicit"));
    let v = load_one(&base.join(kind));
    assert_same_geometry(&reference, &v, kind);
    let differing =
        reference.volume.data.iter().zip(&v.volume.data).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
    assert_eq!(differing, 0, "{modality} {kind}: {differing} voxels differ from the uncompressed series");
    if kind.contains("multiframe") {
        assert!(v.info.multi_frame, "{kind} should be reported as multi-frame");
        assert!(v.info.slices.iter().all(|r| r.frame.is_some()), "{kind}: slices reference frame numbers");
    } else {
        assert!(!v.info.multi_frame);
    }
    // A non-trivial volume: the comparison above cannot pass on zeros.
    let max = reference.volume.data.iter().cloned().fold(f32::MIN, f32::max);
    let min = reference.volume.data.iter().cloned().fold(f32::MAX, f32::min);
    assert!(max > min + 10.0 * f32::EPSILON, "{modality}: flat reference volume");
}

fn check_baseline(modality: &str) {
    let base = variants(modality);
    let reference = load_one(&base.join("jpeg-baseline-reference"));
    let v = load_one(&base.join("jpeg-baseline"));
    assert_same_geometry(&reference, &v, "jpeg-baseline");
    let range = reference.volume.data.iter().cloned().fold(f32::MIN, f32::max)
        - reference.volume.data.iter().cloned().fold(f32::MAX, f32::min);
    let n = reference.volume.data.len() as f64;
    let mut max_err = 0f32;
    let mut sum_err = 0f64;
    for (a, b) in reference.volume.data.iter().zip(&v.volume.data) {
        let e = (a - b).abs();
        max_err = max_err.max(e);
        sum_err += f64::from(e);
    }
    let mean = sum_err / n;
    // Quality 95 on 8-bit samples: a mean error within two grey levels (of 255
    // over the range) and no voxel off by more than 16 (dcmtk's encoder gave at
    // most 11 on these phantoms, pydicom's decoder agrees).
    let level = f64::from(range) / 255.0;
    assert!(mean < 2.0 * level, "{modality} baseline mean error {mean} (grey level {level})");
    assert!(f64::from(max_err) <= 16.0 * level, "{modality} baseline max error {max_err} (grey level {level})");
}

macro_rules! lossless {
    ($($name:ident => ($m:literal, $kind:literal)),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                check_lossless($m, $kind);
            }
        )*
    };
}

lossless! {
    ct_implicit_vr_little_endian => ("CT", "implicit"),
    ct_deflated => ("CT", "deflated"),
    ct_jpeg_lossless => ("CT", "jpeg-lossless"),
    ct_jpeg_ls => ("CT", "jpegls"),
    ct_jpeg_2000 => ("CT", "jpeg2000"),
    ct_rle => ("CT", "rle"),
    ct_legacy_converted_multiframe => ("CT", "legacy-multiframe"),
    ct_legacy_converted_multiframe_reversed_frames => ("CT", "legacy-multiframe-reversed"),
    ct_enhanced_multiframe => ("CT", "enhanced-multiframe"),
    ct_shuffled_single_frames => ("CT", "frames-shuffled"),
    ct_explicit_vr_big_endian => ("CT", "explicit-big-endian"),
    ct_fragmented_multiframe_jpeg_lossless_p14 => ("CT", "fragmented-multiframe-jpeg-lossless-p14"),
    ct_fragmented_multiframe_jpeg_lossless => ("CT", "fragmented-multiframe-jpeg-lossless"),
    ct_fragmented_multiframe_jpeg_ls => ("CT", "fragmented-multiframe-jpegls"),
    ct_extended_offset_table_multiframe => ("CT", "eot-multiframe"),
    pet_implicit_vr_little_endian => ("PT", "implicit"),
    pet_deflated => ("PT", "deflated"),
    pet_jpeg_lossless => ("PT", "jpeg-lossless"),
    pet_jpeg_ls => ("PT", "jpegls"),
    pet_jpeg_2000 => ("PT", "jpeg2000"),
    pet_rle => ("PT", "rle"),
    pet_legacy_converted_multiframe => ("PT", "legacy-multiframe"),
    pet_legacy_converted_multiframe_reversed_frames => ("PT", "legacy-multiframe-reversed"),
    pet_enhanced_multiframe => ("PT", "enhanced-multiframe"),
    pet_explicit_vr_big_endian => ("PT", "explicit-big-endian"),
    pet_fragmented_multiframe_jpeg_lossless_p14 => ("PT", "fragmented-multiframe-jpeg-lossless-p14"),
    pet_fragmented_multiframe_jpeg_lossless => ("PT", "fragmented-multiframe-jpeg-lossless"),
    pet_fragmented_multiframe_jpeg_ls => ("PT", "fragmented-multiframe-jpegls"),
    pet_extended_offset_table_multiframe => ("PT", "eot-multiframe"),
}

/// A lossy variant against the folder it encodes, within the manifest's
/// `tolerance_rescaled` (what pydicom's decode needs, plus two levels).
fn check_lossy_within_manifest(modality: &str, kind: &str) {
    let base = variants(modality);
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(base.join("variants.json")).expect("variants.json"))
            .expect("variants.json parses");
    let entry = manifest
        .as_array()
        .expect("a list")
        .iter()
        .find(|e| e["kind"] == kind)
        .unwrap_or_else(|| panic!("{kind} not in variants.json"));
    assert_eq!(entry["pydicom_within_tolerance"], true, "{kind}: the fixture itself is out of tolerance: {entry}");
    // In the unit the volume loads in: PET loads in SUV, the rescaled value
    // times the series' SUV factor.
    let tolerance_rescaled = entry["tolerance_rescaled"].as_f64().expect("tolerance_rescaled");
    let compare_to = match entry["compare_to"].as_str().expect("compare_to") {
        "source" => "explicit",
        other => other,
    };
    let reference = load_one(&base.join(compare_to));
    let v = load_one(&base.join(kind));
    assert_same_geometry(&reference, &v, kind);
    assert!(v.info.multi_frame, "{kind} is one multi-frame object");
    let tolerance = match (&reference.info.suv, &v.info.suv) {
        (ingest::SuvStatus::Available(a), ingest::SuvStatus::Available(b)) => {
            assert!(
                (a.factor - b.factor).abs() <= 1e-12 * a.factor.abs(),
                "{kind}: SUV factor {} vs {}",
                b.factor,
                a.factor
            );
            tolerance_rescaled * a.factor
        }
        _ => tolerance_rescaled,
    };
    // Plus the rounding of the two volumes' values to f32.
    let magnitude = reference.volume.data.iter().map(|x| f64::from(x.abs())).fold(0.0, f64::max);
    let tolerance = tolerance + 2.0 * f64::from(f32::EPSILON) * magnitude;
    let worst =
        reference.volume.data.iter().zip(&v.volume.data).map(|(a, b)| f64::from((a - b).abs())).fold(0.0, f64::max);
    assert!(worst <= tolerance, "{modality} {kind}: max |difference| {worst} over the tolerance {tolerance}");
    let range = reference.volume.data.iter().cloned().fold(f32::MIN, f32::max)
        - reference.volume.data.iter().cloned().fold(f32::MAX, f32::min);
    assert!(
        f64::from(range) > 10.0 * tolerance,
        "{modality} {kind}: a reference too flat for the comparison to mean much"
    );
}

macro_rules! lossy {
    ($($name:ident => ($m:literal, $kind:literal)),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                check_lossy_within_manifest($m, $kind);
            }
        )*
    };
}

lossy! {
    ct_fragmented_multiframe_jpeg_baseline => ("CT", "fragmented-multiframe-jpeg-baseline"),
    ct_fragmented_multiframe_jpeg_extended_12_bit => ("CT", "fragmented-multiframe-jpeg-extended"),
    ct_fragmented_multiframe_jpeg_ls_near_lossless => ("CT", "fragmented-multiframe-jpegls-near"),
    pet_fragmented_multiframe_jpeg_baseline => ("PT", "fragmented-multiframe-jpeg-baseline"),
    pet_fragmented_multiframe_jpeg_extended_12_bit => ("PT", "fragmented-multiframe-jpeg-extended"),
    pet_fragmented_multiframe_jpeg_ls_near_lossless => ("PT", "fragmented-multiframe-jpegls-near"),
}

#[test]
fn ct_jpeg_baseline_within_lossy_error() {
    check_baseline("CT");
}

#[test]
fn pet_jpeg_baseline_within_lossy_error() {
    check_baseline("PT");
}

/// The PET multi-frame forms keep the SUV: the per-frame rescale and the
/// radiopharmaceutical data live in functional groups there.
#[test]
fn pet_multiframe_keeps_suv() {
    let base = variants("PT");
    for kind in ["legacy-multiframe", "enhanced-multiframe"] {
        let v = load_one(&base.join(kind));
        assert!(matches!(v.info.suv, ingest::SuvStatus::Available(_)), "{kind}: SUV unavailable: {:?}", v.info.suv);
    }
}

//! IHE AI Results (AIR) attributes on seg.dcm and rtstruct.dcm, added to the
//! written files in the staging folder (the study folder appears only by
//! rename, so the files are never seen without them):
//!
//! - Contributing Equipment Sequence: Purpose of Reference (Newcode1, 99IHE,
//!   "Processing Algorithm"), Manufacturer `edgeseg`, Manufacturer's Model
//!   Name (the model package's name), Software Versions (edgeseg's version,
//!   the model's version), a Device UID derived from the model package's
//!   sha256 (a new package, a new device), the contribution time.
//! - SEG only: each segment's Tracking ID (its label, "Lesion 3") and
//!   Tracking UID (lesions keep the ones seg.rs gives them, from the lesion's
//!   stable number; other segments get them here), derived from the StudyInstanceUID, the model's sha256 and
//!   the label, so the same study run again by the same model gives the same
//!   lesion the same UID. A label map's background segment (0) gets none.

use std::path::Path;

use dicom_core::VR;
use dicom_dictionary_std::tags;
use dicom_object::OpenFileOptions;
use sha2::{Digest, Sha256};

use super::dicom_refs::{Code, DicomExportError, item, now_utc, seq, text, texts, write_part10};
use super::seg::Algorithm;

/// IHE's Purpose of Reference for the equipment that ran the algorithm.
pub const PROCESSING_ALGORITHM: Code = Code { value: "Newcode1", scheme: "99IHE", meaning: "Processing Algorithm" };

/// A `2.25.` UID from a hash of `parts` (the first 128 bits, as a decimal).
pub fn derived_uid(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    format!("2.25.{}", u128::from_be_bytes(b))
}

/// The Device UID of edgeseg running a model package.
pub fn device_uid(model_sha256: &str) -> String {
    derived_uid(&["edgeseg device", model_sha256])
}

/// The Tracking UID of a segment of a study.
pub fn tracking_uid(study_uid: &str, model_sha256: &str, label: &str) -> String {
    derived_uid(&["edgeseg tracking", study_uid, model_sha256, label])
}

/// Adds the AIR attributes to the written file at `path` (rewritten by rename).
pub fn add(path: &Path, study_uid: &str, algo: &Algorithm) -> Result<(), DicomExportError> {
    let source =
        |e: &dyn std::fmt::Display| DicomExportError::Source { path: path.to_path_buf(), reason: e.to_string() };
    let file = OpenFileOptions::new().open_file(path).map_err(|e| source(&e))?;
    let mut obj = file.into_inner();
    let (date, time) = now_utc();
    let equipment = item(vec![
        text(tags::MANUFACTURER, VR::LO, "edgeseg"),
        text(tags::MANUFACTURER_MODEL_NAME, VR::LO, &algo.model_name),
        texts(tags::SOFTWARE_VERSIONS, VR::LO, vec![crate::version().to_string(), algo.model_version.clone()]),
        text(tags::DEVICE_UID, VR::UI, &device_uid(&algo.model_sha256)),
        seq(tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE, vec![PROCESSING_ALGORITHM.item()]),
        text(tags::CONTRIBUTION_DATE_TIME, VR::DT, &format!("{date}{time}")),
        text(tags::CONTRIBUTION_DESCRIPTION, VR::ST, "Automatic segmentation by edgeseg"),
    ]);
    obj.put(seq(tags::CONTRIBUTING_EQUIPMENT_SEQUENCE, vec![equipment]));
    if let Ok(segments) = obj.element(tags::SEGMENT_SEQUENCE).map(|e| e.items().map(|i| i.to_vec()).unwrap_or_default())
    {
        let tracked: Vec<_> = segments
            .into_iter()
            .map(|mut s| {
                let label = s
                    .element(tags::SEGMENT_LABEL)
                    .ok()
                    .and_then(|e| e.to_str().ok())
                    .map(|l| l.trim_end_matches(['\0', ' ']).to_string())
                    .unwrap_or_default();
                // Lesions carry seg.rs's Tracking ID/UID (the lesion's own
                // number, kept across edits); other segments get one here,
                // but a label map's background (segment 0) tracks nothing.
                let background = s.element(tags::SEGMENT_NUMBER).ok().and_then(|e| e.to_int::<u16>().ok()) == Some(0);
                if s.element(tags::TRACKING_UID).is_err() && !background {
                    s.put(text(tags::TRACKING_ID, VR::UT, &label));
                    s.put(text(tags::TRACKING_UID, VR::UI, &tracking_uid(study_uid, &algo.model_sha256, &label)));
                }
                s
            })
            .collect();
        obj.put(seq(tags::SEGMENT_SEQUENCE, tracked));
    }
    write_part10(path, obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_uids_are_valid_stable_and_distinct() {
        let a = tracking_uid("1.2.3", "abc", "Lesion 1");
        assert_eq!(a, tracking_uid("1.2.3", "abc", "Lesion 1"));
        assert_ne!(a, tracking_uid("1.2.3", "abc", "Lesion 2"));
        assert_ne!(a, tracking_uid("1.2.4", "abc", "Lesion 1"));
        assert_ne!(device_uid("abc"), device_uid("abd"));
        for u in [a, device_uid("abc")] {
            assert!(u.len() <= 64 && u.starts_with("2.25.") && u[5..].bytes().all(|b| b.is_ascii_digit()), "{u}");
            assert!(!u[5..].starts_with('0') || u.len() == 6, "{u}");
        }
    }
}

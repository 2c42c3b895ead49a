//! `.edgeseg/dicom-source.json`: what the DICOM outputs reference (the
//! reference series' UIDs, slices and orientation, the model's classes and
//! identity), kept in the study folder when they are first written so that
//! an edit (`edgeseg add-lesion`, `remove-lesion`, `edits undo`) writes them
//! again without the source DICOM. It holds no patient data: the patient and
//! study attributes come back from the previous DICOM outputs of the folder
//! (`seg.dcm`, `rtstruct.dcm` or `mip.dcm`), which carry them anyway.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::dicom_refs::{DicomExportError, PatientStudy, SourceGrid, SourceRefs, SourceSlice};
use super::{DicomInputs, STATE_DIR, seg::Algorithm};

/// The file's schema name.
pub const SCHEMA: &str = "edgeseg-dicom-source/1";
/// The file's name inside [`STATE_DIR`].
pub const FILE_NAME: &str = "dicom-source.json";

/// One source slice, in grid order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Slice {
    /// SOPClassUID.
    pub sop_class_uid: String,
    /// SOPInstanceUID.
    pub sop_instance_uid: String,
    /// 1-based frame of a multi-frame instance.
    pub frame: Option<u32>,
    /// ImagePositionPatient, LPS mm, exactly as read.
    pub position: [f64; 3],
}

/// The file's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DicomSource {
    /// [`SCHEMA`].
    pub schema: String,
    /// StudyInstanceUID.
    pub study_uid: String,
    /// SeriesInstanceUID of the reference series.
    pub series_uid: String,
    /// FrameOfReferenceUID.
    pub frame_of_reference_uid: String,
    /// ImageOrientationPatient.
    pub orientation: [f64; 6],
    /// Slices in grid order (see [`SourceRefs::slices`]).
    pub slices: Vec<Slice>,
    /// Source pixel grid (columns, rows) where the volume was resampled.
    pub resampled: Option<[usize; 2]>,
    /// Model classes (value, name).
    pub classes: Vec<(u8, String)>,
    /// The lesion class, where there is a lesion instance map.
    pub lesion_label: Option<u8>,
    /// Model name.
    pub model_name: String,
    /// Model version.
    pub model_version: String,
    /// Model package sha256.
    pub model_sha256: String,
    /// How seg.dcm was written (`[output] seg_kind`), so an edit writes it
    /// the same way; `binary` in files written before the key existed.
    #[serde(default)]
    pub seg_kind: super::seg::SegKind,
}

/// The file's path in a study folder.
pub fn path(study_dir: &Path) -> PathBuf {
    study_dir.join(STATE_DIR).join(FILE_NAME)
}

impl DicomSource {
    /// What `inputs` reference, without the patient.
    pub fn of(inputs: &DicomInputs) -> Self {
        let s = &inputs.source;
        DicomSource {
            schema: SCHEMA.into(),
            study_uid: s.study_uid.clone(),
            series_uid: s.series_uid.clone(),
            frame_of_reference_uid: s.frame_of_reference_uid.clone(),
            orientation: s.orientation,
            slices: s
                .slices
                .iter()
                .map(|x| Slice {
                    sop_class_uid: x.sop_class_uid.clone(),
                    sop_instance_uid: x.sop_instance_uid.clone(),
                    frame: x.frame,
                    position: x.position,
                })
                .collect(),
            resampled: s.resampled.as_ref().map(|g| [g.columns, g.rows]),
            classes: inputs.classes.clone(),
            lesion_label: inputs.lesion_label,
            model_name: inputs.algorithm.model_name.clone(),
            model_version: inputs.algorithm.model_version.clone(),
            model_sha256: inputs.algorithm.model_sha256.clone(),
            seg_kind: super::seg::SegKind::default(),
        }
    }

    /// The DICOM inputs again, with the patient and study attributes given.
    pub fn into_inputs(self, patient: PatientStudy) -> DicomInputs {
        DicomInputs {
            source: SourceRefs {
                study_uid: self.study_uid,
                series_uid: self.series_uid,
                frame_of_reference_uid: self.frame_of_reference_uid,
                orientation: self.orientation,
                slices: self
                    .slices
                    .into_iter()
                    .map(|x| SourceSlice {
                        sop_class_uid: x.sop_class_uid,
                        sop_instance_uid: x.sop_instance_uid,
                        frame: x.frame,
                        position: x.position,
                    })
                    .collect(),
                resampled: self.resampled.map(|[columns, rows]| SourceGrid { columns, rows }),
                patient,
            },
            classes: self.classes,
            lesion_label: self.lesion_label,
            algorithm: Algorithm {
                model_name: self.model_name,
                model_version: self.model_version,
                model_sha256: self.model_sha256,
            },
        }
    }

    /// Writes the file into `study_dir/.edgeseg/` (temporary file, fsync, rename).
    pub fn write(&self, study_dir: &Path) -> Result<(), DicomExportError> {
        let p = path(study_dir);
        let err = |reason: String| DicomExportError::Write { path: p.clone(), reason };
        super::create_output_dir(&study_dir.join(STATE_DIR)).map_err(|e| err(e.to_string()))?;
        let text = serde_json::to_vec_pretty(self).map_err(|e| err(e.to_string()))?;
        super::write_atomic(&p, |f| std::io::Write::write_all(f, &text)).map_err(|e| err(e.to_string()))
    }

    /// Reads the file of a study folder; `None` where there is none (a study
    /// without DICOM outputs, or written by an edgeseg before this file).
    pub fn read(study_dir: &Path) -> Result<Option<Self>, DicomExportError> {
        let p = path(study_dir);
        let text = match std::fs::read(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(DicomExportError::Source { path: p, reason: e.to_string() }),
        };
        let s: DicomSource = serde_json::from_slice(&text)
            .map_err(|e| DicomExportError::Source { path: p.clone(), reason: e.to_string() })?;
        if s.schema != SCHEMA {
            return Err(DicomExportError::Source {
                path: p,
                reason: format!("schema {:?}, this edgeseg reads {SCHEMA:?}", s.schema),
            });
        }
        Ok(Some(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_without_patient_data() {
        let inputs = DicomInputs {
            source: SourceRefs {
                study_uid: "1.2.3".into(),
                series_uid: "1.2.3.4".into(),
                frame_of_reference_uid: "1.2.3.5".into(),
                orientation: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
                slices: vec![SourceSlice {
                    sop_class_uid: "1.2.840.10008.5.1.4.1.1.128".into(),
                    sop_instance_uid: "1.2.3.6".into(),
                    frame: Some(2),
                    position: [-197.916668, 0.1 + 0.2, -1e-300],
                }],
                resampled: Some(SourceGrid { columns: 7, rows: 9 }),
                patient: PatientStudy {
                    patient_name: "Doe^Jane".into(),
                    patient_id: "ID-42".into(),
                    ..Default::default()
                },
            },
            classes: vec![(0, "background".into()), (1, "lesion".into())],
            lesion_label: Some(1),
            algorithm: Algorithm { model_name: "m".into(), model_version: "1".into(), model_sha256: "ab".into() },
        };
        let d = tempfile::tempdir().expect("tempdir");
        DicomSource::of(&inputs).write(d.path()).expect("write");
        let text = std::fs::read_to_string(path(d.path())).expect("read");
        assert!(!text.contains("Doe") && !text.contains("ID-42"), "no patient data: {text}");
        let back = DicomSource::read(d.path()).expect("read").expect("present");
        let again = back.into_inputs(inputs.source.patient.clone());
        assert_eq!(again, inputs, "positions come back bit for bit");
        assert_eq!(DicomSource::read(&d.path().join("none")).expect("absent"), None);
    }
}

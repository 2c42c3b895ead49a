//! report.json's schema: the one place it is defined (docs/report.md
//! describes it). The pipeline fills a `Report`; `edgeseg add-lesion`
//! edits a written one.

use serde::Serialize;

use crate::infer::Predictor;
use crate::ingest::suv::{SuvKind, SuvMethod};
use crate::ingest::{self, SuvStatus, ValueUnit};
use crate::post::pet::{Lesion, PatientFigures, PetRules};
use crate::post::screening::{ScreeningRules, StudyVerdict};

/// One input channel as it went in.
#[derive(Debug, Clone, Serialize)]
pub struct InputSeries {
    /// Model channel.
    pub channel: usize,
    /// Modality.
    pub modality: String,
    /// SeriesInstanceUID.
    pub series_instance_uid: String,
    /// Unit of the values fed to the network.
    pub unit: ValueUnit,
    /// SUV conversion (PET).
    pub suv: SuvStatus,
    /// Resampled onto the reference grid.
    pub resampled: bool,
    /// The series' own slice grid: largest deviation from a uniform grid
    /// and, where its stack was resampled (irregular spacing, gantry tilt),
    /// the method and largest displacement.
    pub slice_grid: ingest::SliceGrid,
    /// The contrast phase (`arterial`, `venous`) for the CT screening
    /// profile, which runs the model on each phase; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<&'static str>,
}

/// A profile's rules as applied (report.json `rules`).
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum ProfileRules {
    /// The PET/CT total-tumour profile.
    Pet(PetRules),
    /// The CT screening profile.
    Screening(ScreeningRules),
}

/// The model as it ran.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Package sha256.
    pub sha256: String,
    /// Configuration.
    pub configuration: String,
    /// Task profile.
    pub profile: String,
    /// Cleared for clinical use by its owner.
    pub clinical_use: bool,
    /// Provider per fold.
    pub providers: Vec<FoldProvider>,
}

impl ModelInfo {
    /// The model as the predictor runs it.
    pub fn of(predictor: &Predictor) -> Self {
        let pkg = &predictor.package;
        ModelInfo {
            name: pkg.meta.name.clone(),
            version: pkg.meta.version.clone(),
            sha256: pkg.sha256.clone(),
            configuration: pkg.meta.configuration.clone(),
            profile: pkg.meta.profile.to_string(),
            clinical_use: pkg.meta.clinical_use,
            providers: predictor.providers().into_iter().map(|(fold, e)| FoldProvider::new(fold, e)).collect(),
        }
    }
}

/// Which provider a fold ran on.
#[derive(Debug, Clone, Serialize)]
pub struct FoldProvider {
    /// Fold.
    pub fold: u32,
    /// cpu, cuda, tensorrt, tensorrt-fp16, openvino, openvino-bf16.
    pub provider: String,
    /// Arithmetic the fold ran in: `fp16` (a TensorRT FP16 engine that agreed
    /// with FP32 on the probe tile), `bf16` (an OpenVINO BF16 one that did)
    /// or `fp32`.
    pub precision: &'static str,
}

impl FoldProvider {
    /// A fold on the engine it got.
    pub fn new(fold: u32, engine: crate::infer::onnx::Engine) -> Self {
        FoldProvider { fold, provider: engine.label().to_string(), precision: engine.precision.as_str() }
    }
}

/// The SUV conversion behind the figures, or why there is none.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SuvSummary {
    /// `available`, `unavailable` or `not-applicable` (the model takes no PET).
    pub status: &'static str,
    /// The PET series, where the model takes one.
    pub series_instance_uid: Option<String>,
    /// How the factor was found, when available.
    pub method: Option<SuvMethod>,
    /// The kind of SUV (`SUVbw`; another kind only where stored SUV could
    /// not be converted), when available.
    pub kind: Option<SuvKind>,
    /// Why there is none, when there is none.
    pub reason: Option<String>,
}

impl SuvSummary {
    /// The summary of the first PET input (or not-applicable without one).
    pub fn of(inputs: &[InputSeries]) -> Self {
        let Some(pet) = inputs.iter().find(|i| i.modality == "PT") else {
            return SuvSummary {
                status: "not-applicable",
                series_instance_uid: None,
                method: None,
                kind: None,
                reason: Some("the model takes no PET series".into()),
            };
        };
        let uid = Some(pet.series_instance_uid.clone());
        match &pet.suv {
            SuvStatus::Available(s) => SuvSummary {
                status: "available",
                series_instance_uid: uid,
                method: Some(s.method),
                kind: Some(s.kind),
                reason: None,
            },
            SuvStatus::Unavailable { reason } => SuvSummary {
                status: "unavailable",
                series_instance_uid: uid,
                method: None,
                kind: None,
                reason: Some(reason.clone()),
            },
            SuvStatus::NotApplicable => SuvSummary {
                status: "unavailable",
                series_instance_uid: uid,
                method: None,
                kind: None,
                reason: Some("the PET series has no SUV conversion".into()),
            },
        }
    }
}

/// Seconds per stage.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StageTimings {
    /// Reading the series.
    pub load: f64,
    /// nnU-Net preprocessing.
    pub preprocess: f64,
    /// Sliding-window inference, all folds.
    pub inference: f64,
    /// Back to the reference grid.
    pub export: f64,
    /// Lesions and figures.
    pub postprocess: f64,
    /// Writing the files.
    pub write: f64,
}

impl StageTimings {
    /// Each stage by its name (the metric's `stage` label), in pipeline order.
    pub fn by_stage(&self) -> [(&'static str, f64); 6] {
        [
            ("load", self.load),
            ("preprocess", self.preprocess),
            ("inference", self.inference),
            ("export", self.export),
            ("postprocess", self.postprocess),
            ("write", self.write),
        ]
    }
}

/// report.json's `units` block: the unit of each kind of figure
/// (docs/report.md). SUV is body-weight SUV, g/mL; TLG = SUVmean × volume
/// (mL) is in g.
pub fn units() -> serde_json::Value {
    serde_json::json!({
        "suv": "g/mL",
        "volume": "mL",
        "tlg": "g",
        "position": "mm",
        "timings": "s",
        "fields": {
            "g/mL": ["suv_max", "suv_mean", "suv_sd", "suv_peak", "lowest_lesion_suv_mean", "highest_suv_max",
                     "reference.suv_mean", "reference.suv_sd", "reference.threshold", "threshold_suv"],
            "mL": ["volume_ml", "total_tumour_volume_ml", "min_lesion_ml", "suv_peak_ml"],
            "g": ["tlg", "total_tlg_g", "total_lesion_uptake"],
            "mm": ["centroid_lps_mm", "max_lps_mm", "seed_lps_mm"],
            "s": ["timings_s"]
        }
    })
}

/// report.json's `patient` object: the figures with `total_tlg_g` (Σ TLG,
/// g) added; `total_lesion_uptake` stays as a deprecated alias of it.
pub fn patient_json(p: &PatientFigures) -> serde_json::Value {
    let mut v = serde_json::to_value(p).unwrap_or(serde_json::Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.insert("total_tlg_g".into(), serde_json::json!(p.total_lesion_uptake));
    }
    v
}

/// Serialises `patient` ([`patient_json`], or null) and the `units` block
/// into the report's map (the field is flattened).
fn patient_and_units<S: serde::Serializer>(p: &Option<PatientFigures>, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(2))?;
    m.serialize_entry("patient", &p.as_ref().map(patient_json))?;
    m.serialize_entry("units", &units())?;
    m.end()
}

/// report.json (schema in docs/report.md).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Schema name and version.
    pub schema: &'static str,
    /// edgeseg version.
    pub edgeseg_version: &'static str,
    /// StudyInstanceUID.
    pub study_instance_uid: String,
    /// The series the labels are on.
    pub reference_series_uid: String,
    /// Inputs per channel.
    pub inputs: Vec<InputSeries>,
    /// The model.
    pub model: ModelInfo,
    /// Where post-processing ran (cpu or cuda): the backend the results come
    /// from, `cpu` when a CUDA step failed and the CPU twins did it.
    pub postprocessing_backend: String,
    /// The CUDA error that sent post-processing to the CPU twins for this
    /// study; absent when it ran where it was meant to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postprocessing_fallback: Option<String>,
    /// The profile's rules, as applied.
    pub rules: Option<ProfileRules>,
    /// Lesion table (PET/CT profile).
    pub lesions: Vec<Lesion>,
    /// Patient figures (PET/CT profile). Serialised as `patient` (with
    /// `total_tlg_g` beside the deprecated `total_lesion_uptake`) followed by
    /// the `units` block ([`patient_and_units`]), so every report carries
    /// its units whoever builds it.
    #[serde(flatten, serialize_with = "patient_and_units")]
    pub patient: Option<PatientFigures>,
    /// The profile's verdict (CT screening); null for profiles without one.
    pub verdict: Option<StudyVerdict>,
    /// The SUV conversion of the PET input, or why there is none.
    pub suv: SuvSummary,
    /// Seconds per stage.
    pub timings_s: StageTimings,
    /// DICOM files written into the study folder (`seg.dcm`, `rtstruct.dcm`;
    /// empty when the study has no segment).
    pub dicom_outputs: Vec<String>,
    /// Radiomics (docs/radiomics.md): settings, every ROI's features, the
    /// perturbations' ICC(1,1); absent where the profile extracts none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub radiomics: Option<serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patient() -> PatientFigures {
        PatientFigures {
            lesion_count: 2,
            total_tumour_volume_ml: 3.5,
            total_lesion_uptake: 12.25,
            lowest_lesion_suv_mean: Some(2.0),
            lowest_suv_mean_lesion: Some(1),
            highest_suv_max: Some(9.0),
            reference: None,
            body_voxels: 10,
            removed_outside_body_voxels: 0,
            removed_small_components: 0,
        }
    }

    /// Issue 13 item 18: a units block, and total TLG named as what it is
    /// (the old key kept as an alias).
    #[test]
    fn report_has_units_and_total_tlg_g() {
        let report = Report {
            schema: "edgeseg-report/1",
            edgeseg_version: "test",
            study_instance_uid: "1.2.3".into(),
            reference_series_uid: "1.2.3.4".into(),
            inputs: Vec::new(),
            model: ModelInfo {
                name: "m".into(),
                version: "1".into(),
                sha256: "0".into(),
                configuration: "3d_fullres".into(),
                profile: "petct-total-tumour".into(),
                clinical_use: false,
                providers: Vec::new(),
            },
            postprocessing_backend: "cpu".into(),
            postprocessing_fallback: None,
            rules: None,
            lesions: Vec::new(),
            patient: Some(patient()),
            verdict: None,
            suv: SuvSummary::of(&[]),
            timings_s: StageTimings::default(),
            dicom_outputs: Vec::new(),
            radiomics: None,
        };
        let v = serde_json::to_value(&report).expect("json");
        assert_eq!(v["units"]["suv"], "g/mL");
        assert_eq!(v["units"]["volume"], "mL");
        assert_eq!(v["units"]["tlg"], "g");
        assert_eq!(v["patient"]["total_tlg_g"], 12.25);
        assert_eq!(v["patient"]["total_lesion_uptake"], 12.25, "the deprecated alias stays");
        assert_eq!(v["patient"]["lesion_count"], 2);
        assert_eq!(v["study_instance_uid"], "1.2.3");
        let none = Report { patient: None, ..report };
        let v = serde_json::to_value(&none).expect("json");
        assert!(v["patient"].is_null() && v.as_object().expect("map").contains_key("patient"));
        assert_eq!(v["units"]["tlg"], "g");
    }
}

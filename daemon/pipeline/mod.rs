//! The one study path: a study's series through its profile's load half,
//! inference, its profile's post half and the files of its folder.
//! `edgeseg process` calls [`process_study`] ([`run_study`], then
//! [`write_study`]); the daemon calls the same functions split where one
//! study's loading overlaps the previous one's inference: [`load_study`] on
//! its loader thread, [`infer_study`] and [`write_study`] on its GPU worker.
//! The daemon only adds watching, queueing and reporting.

pub mod load;
pub mod profiles;
pub mod select;
pub mod stage;
mod write;

use std::path::{Path, PathBuf};
use std::time::Instant;

pub use self::load::{Case, LoadedStudy, Phase, load_study, planned_cases};
pub use self::profiles::{Profile, UnknownProfile, ct_phases};
pub use self::select::{select_for_channels, select_series};
pub use self::stage::{Progress, Stage};
pub use self::write::write_study;
pub use crate::edit::{LesionEdit, add_lesion};
pub use crate::export::report::{FoldProvider, InputSeries, ModelInfo, ProfileRules, Report, StageTimings, SuvSummary};
use crate::export::study_dir::FolderError;
pub(crate) use crate::export::study_dir::swap_into_place;
use crate::export::{DicomInputs, dicom_refs};
use crate::gpu::GpuError;
use crate::gpu::select::PostBackend;
use crate::infer::model::ModelPackage;
use crate::infer::{InferError, Prediction, Predictor};
use crate::ingest::{ErrorClass, FolderIndex, SeriesError};
use crate::volume::Volume;

/// Errors of one study.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// The study lacks a series the model needs.
    #[error("study {study_uid}: {reason}")]
    NoInput {
        /// StudyInstanceUID.
        study_uid: String,
        /// What is missing.
        reason: String,
    },
    /// A series could not be loaded.
    #[error(transparent)]
    Series(#[from] SeriesError),
    /// Inference failed.
    #[error(transparent)]
    Infer(#[from] InferError),
    /// Post-processing failed.
    #[error("post-processing: {0}")]
    Post(#[from] GpuError),
    /// Writing a DICOM output (or reading its source attributes) failed.
    #[error(transparent)]
    Dicom(#[from] dicom_refs::DicomExportError),
    /// Writing the outputs failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl PipelineError {
    /// Quarantine (bad input) or retry (transient).
    pub fn class(&self) -> ErrorClass {
        match self {
            PipelineError::Series(e) => e.class(),
            PipelineError::NoInput { .. } => ErrorClass::BadInput,
            PipelineError::Infer(InferError::Input(_)) => ErrorClass::BadInput,
            _ => ErrorClass::Transient,
        }
    }

    /// The `map_err` of an I/O step on `path`: `.map_err(PipelineError::io(&p))`.
    pub fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PipelineError {
        move |source| PipelineError::Io { path: path.to_path_buf(), source }
    }
}

impl From<FolderError> for PipelineError {
    fn from(e: FolderError) -> Self {
        PipelineError::Io { path: e.path, source: e.source }
    }
}

/// A study's results, before they are written.
pub struct StudyResult {
    /// Class map on the reference grid.
    pub labels: Volume<u8>,
    /// Lesion instance map, where the profile makes one.
    pub lesions: Option<Volume<u32>>,
    /// Class probabilities, when asked for.
    pub probabilities: Option<Vec<Volume<f32>>>,
    /// The PET in SUV on the reference grid (PET/CT profile), kept so a lesion
    /// can be added from a seed point later without the DICOM.
    pub suv: Option<Volume<f32>>,
    /// The CT on the reference grid for profiles without a PET, kept for the
    /// axial picture in mip.png.
    pub ct: Option<Volume<f32>>,
    /// The class the axial slices of mip.png go through first (the
    /// screening profile's tumour); None: the largest finding of any class.
    pub focus_class: Option<u8>,
    /// What seg.dcm and rtstruct.dcm reference and copy (None when the
    /// reference series has no FrameOfReferenceUID: no DICOM outputs then).
    pub dicom: Option<DicomInputs>,
    /// report.json.
    pub report: Report,
    /// Radiomics (ROIs, features, ICCs), where the profile extracts them:
    /// rois/*.nii.gz, ct.nii.gz and radiomics.csv.
    pub radiomics: Option<crate::radiomics::study::StudyRadiomics>,
}

/// Runs one study through load, inference and post-processing.
pub fn run_study(
    predictor: &Predictor,
    backend: &PostBackend,
    index: &FolderIndex,
    study_uid: &str,
    probabilities: bool,
    mut progress: impl FnMut(Progress),
) -> Result<StudyResult, PipelineError> {
    progress(Progress::new(Stage::Load, None));
    let loaded = load_study(&predictor.package, index, study_uid, &mut progress)?;
    infer_study(predictor, backend, loaded, probabilities, progress)
}

/// `run_study` then `write_study`: one study of an index to its output
/// folder (`edgeseg process`), seg.dcm as `seg_kind` says.
#[allow(clippy::too_many_arguments)]
pub fn process_study(
    predictor: &Predictor,
    backend: &PostBackend,
    index: &FolderIndex,
    study_uid: &str,
    out: &Path,
    probabilities: bool,
    seg_kind: crate::export::seg::SegKind,
    progress: impl FnMut(Progress),
) -> Result<(PathBuf, StudyResult), PipelineError> {
    let mut r = run_study(predictor, backend, index, study_uid, probabilities, progress)?;
    let dir = write_study(out, &mut r, seg_kind)?;
    Ok((dir, r))
}

/// Inference of each case of a loaded study, then its profile's
/// post-processing, to the study's results.
pub fn infer_study(
    predictor: &Predictor,
    backend: &PostBackend,
    loaded: LoadedStudy,
    probabilities: bool,
    mut progress: impl FnMut(Progress),
) -> Result<StudyResult, PipelineError> {
    let LoadedStudy { study_uid, cases, load_seconds } = loaded;
    let pkg = &predictor.package;
    let mut timings = StageTimings { load: load_seconds, ..StageTimings::default() };
    let inputs: Vec<InputSeries> = cases.iter().flat_map(|c| c.inputs.iter().cloned()).collect();
    let mut runs = Vec::with_capacity(cases.len());
    for mut case in cases {
        let prediction = predict_case(predictor, &study_uid, &mut case, probabilities, &mut progress)?;
        timings.preprocess += prediction.timings.preprocess_s;
        timings.inference += prediction.timings.inference_s;
        timings.export += prediction.timings.export_s;
        runs.push(profiles::Run { case, labels: prediction.labels, probabilities: prediction.probabilities });
    }

    progress(Progress::new(Stage::Postprocess, None));
    let t = Instant::now();
    let post = pkg.meta.profile.post(pkg, backend, &study_uid, runs)?;
    timings.postprocess = t.elapsed().as_secs_f64();
    Ok(study_result(predictor, study_uid, inputs, timings, post))
}

/// A study's results from its profile's post half: report.json filled, the
/// CT kept for mip.png where the profile keeps no PET, and what the DICOM
/// outputs need.
fn study_result(
    predictor: &Predictor,
    study_uid: String,
    inputs: Vec<InputSeries>,
    timings: StageTimings,
    post: profiles::Post,
) -> StudyResult {
    let pkg = &predictor.package;
    let profiles::Post {
        reference,
        lesions,
        lesion_label,
        suv,
        focus_class,
        rules,
        lesion_table,
        patient,
        verdict,
        ran,
        radiomics,
    } = post;
    let profiles::Run { case: mut reference_case, labels, probabilities } = reference;
    let ct = match suv {
        Some(_) => None,
        None => pkg
            .meta
            .channels
            .iter()
            .position(|c| c.modality == "CT")
            .and_then(|i| (i < reference_case.volumes.len()).then(|| reference_case.volumes.swap_remove(i))),
    };
    let suv_summary = SuvSummary::of(&inputs);
    let report = Report {
        schema: "edgeseg-report/1",
        edgeseg_version: crate::version(),
        study_instance_uid: study_uid,
        reference_series_uid: reference_case.reference_series_uid,
        inputs,
        model: ModelInfo::of(predictor),
        postprocessing_backend: ran.backend.into(),
        postprocessing_fallback: ran.fallback,
        rules,
        lesions: lesion_table,
        patient,
        verdict,
        suv: suv_summary,
        timings_s: timings,
        dicom_outputs: Vec::new(),
        radiomics: radiomics.as_ref().map(|r| r.report()),
    };
    let dicom = reference_case.source.map(|source| dicom_inputs(pkg, source, lesion_label));
    StudyResult { labels, lesions, probabilities, suv, ct, focus_class, dicom, report, radiomics }
}

/// The network on one case: from its preprocessing done on the loader
/// thread for this very package, or from its volumes.
fn predict_case(
    predictor: &Predictor,
    study_uid: &str,
    case: &mut Case,
    probabilities: bool,
    progress: &mut impl FnMut(Progress),
) -> Result<Prediction, PipelineError> {
    let channels = &predictor.package.meta.channels;
    if case.volumes.len() != channels.len() {
        return Err(PipelineError::NoInput {
            study_uid: study_uid.to_string(),
            reason: format!("{} volumes for a model of {} channels", case.volumes.len(), channels.len()),
        });
    }
    let phase = case.phase;
    progress(Progress::new(Stage::Inference, phase));
    // Progress in tenths ("inference 40%"), for status lines.
    let mut last_tenth = 0;
    let on_tiles = |done: usize, total: usize| {
        let tenth = done * 10 / total.max(1);
        if tenth > last_tenth && tenth < 10 {
            last_tenth = tenth;
            progress(Progress { stage: Stage::Inference, phase, percent: Some(tenth as u8 * 10) });
        }
    };
    let prediction = match case.prepared.take().filter(|c| c.package_sha256() == predictor.package.sha256) {
        Some(prepared) => predictor.predict_prepared(prepared, probabilities, on_tiles)?,
        None => {
            let refs: Vec<&Volume<f32>> = case.volumes.iter().collect();
            predictor.predict(&refs, probabilities, on_tiles)?
        }
    };
    Ok(prediction)
}

/// What seg.dcm and rtstruct.dcm need besides the masks.
fn dicom_inputs(pkg: &ModelPackage, source: dicom_refs::SourceRefs, lesion_label: Option<u8>) -> DicomInputs {
    DicomInputs {
        source,
        classes: pkg
            .dataset
            .labels
            .iter()
            .filter_map(|(n, v)| Some((u8::try_from(v.as_u64()?).ok()?, n.clone())))
            .collect(),
        lesion_label,
        algorithm: crate::export::seg::Algorithm {
            model_name: pkg.meta.name.clone(),
            model_version: pkg.meta.version.clone(),
            model_sha256: pkg.sha256.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_comes_from_the_engine() {
        use crate::infer::onnx::{Engine, Precision, Provider};
        let fp16 = FoldProvider::new(0, Engine { provider: Provider::Tensorrt, precision: Precision::Fp16 });
        assert_eq!((fp16.provider.as_str(), fp16.precision), ("tensorrt-fp16", "fp16"));
        let trt = FoldProvider::new(1, Engine::fp32(Provider::Tensorrt));
        assert_eq!((trt.provider.as_str(), trt.precision), ("tensorrt", "fp32"));
        assert_eq!(FoldProvider::new(2, Engine::fp32(Provider::Cpu)).precision, "fp32");
    }
}

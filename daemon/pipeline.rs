//! The one pipeline: a study's series through preprocess, infer and
//! post-process to the files written for it. `edgeseg process` and the daemon
//! both call `run_study` and `write_study`; the daemon only adds watching,
//! queueing and reporting.

use std::path::{Path, PathBuf};
use std::time::Instant;

pub use crate::edit::{LesionEdit, add_lesion};
pub use crate::export::report::{FoldProvider, InputSeries, ModelInfo, ProfileRules, Report, StageTimings, SuvSummary};
use crate::export::{DicomInputs, csv, dicom_refs, mip, nifti, uid_file_stem};
use crate::gpu::GpuError;
use crate::gpu::select::PostBackend;
use crate::infer::{InferError, Predictor};
use crate::ingest::{self, ErrorClass, FolderIndex, SeriesError, SeriesIndex, SeriesVolume, SuvStatus, ValueUnit};
use crate::post::pet::{self, PetRules};
use crate::post::screening::{self, ScreeningRules};
use crate::volume::{Volume, resample_linear};

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
    /// What seg.dcm and rtstruct.dcm reference and copy (None when the
    /// reference series has no FrameOfReferenceUID: no DICOM outputs then).
    pub dicom: Option<DicomInputs>,
    /// report.json.
    pub report: Report,
}

/// Picks, for each model channel, the study's series of that modality; PET
/// and CT come from one frame of reference (a PET/CT pair).
pub fn select_series<'a>(
    index: &'a FolderIndex,
    study_uid: &str,
    predictor: &Predictor,
) -> Result<Vec<&'a SeriesIndex>, PipelineError> {
    select_for_channels(index, study_uid, &predictor.package.meta.channels)
}

/// [`select_series`] for a list of model channels.
pub fn select_for_channels<'a>(
    index: &'a FolderIndex,
    study_uid: &str,
    channels: &[crate::infer::model::Channel],
) -> Result<Vec<&'a SeriesIndex>, PipelineError> {
    let series: Vec<&SeriesIndex> = index.series.iter().filter(|s| s.study_uid == study_uid).collect();
    let mods: Vec<&str> = channels.iter().map(|c| c.modality.as_str()).collect();
    let no = |reason: String| PipelineError::NoInput { study_uid: study_uid.to_string(), reason };
    if mods.contains(&"PT") && mods.contains(&"CT") {
        let pairing = ingest::pair(&series);
        let p = pairing.pairs.first().ok_or_else(|| {
            let found: Vec<String> = pairing.unpaired.iter().map(ToString::to_string).collect();
            let found = if found.is_empty() { "no PET or CT series".to_string() } else { found.join("; ") };
            no(format!("the model needs a PET/CT pair (PET and CT in one frame of reference); found {found}"))
        })?;
        return channels
            .iter()
            .map(|c| {
                let uid = if c.modality == "PT" { &p.pet_series_uid } else { &p.ct_series_uid };
                series
                    .iter()
                    .copied()
                    .find(|s| &s.series_uid == uid)
                    .ok_or_else(|| no(format!("series {uid} vanished")))
            })
            .collect();
    }
    channels
        .iter()
        .map(|c| {
            series
                .iter()
                .copied()
                .filter(|s| s.modality == c.modality)
                .max_by_key(|s| s.instances.iter().map(|h| h.frames.len()).sum::<usize>())
                .ok_or_else(|| no(format!("no {} series for channel {} ({})", c.modality, c.index, c.name)))
        })
        .collect()
}

/// A study's input channels, loaded and on the reference grid: what
/// [`load_study`] gives and [`infer_study`] takes. The daemon loads the next
/// study on a CPU thread while the current one is on the GPU.
pub struct LoadedStudy {
    /// StudyInstanceUID.
    pub study_uid: String,
    /// One volume per model channel, on the reference (first channel's) grid.
    pub volumes: Vec<Volume<f32>>,
    /// Inputs per channel, as they went in.
    pub inputs: Vec<InputSeries>,
    /// The reference series.
    pub reference_series_uid: String,
    /// Seconds spent loading.
    pub load_seconds: f64,
    /// What seg.dcm and rtstruct.dcm reference (None without a
    /// FrameOfReferenceUID).
    pub source: Option<dicom_refs::SourceRefs>,
    /// For profiles that load their own series: the study's index.
    pub phases: Option<FolderIndex>,
    /// nnU-Net's preprocessing already done (the daemon's loader thread does
    /// it while the previous study is on the GPU); None: done in `infer_study`.
    pub prepared: Option<crate::infer::PreparedCase>,
}

/// Picks and loads a study's series for the model's channels, on the grid of
/// the first channel.
pub fn load_study(
    index: &FolderIndex,
    study_uid: &str,
    channels: &[crate::infer::model::Channel],
) -> Result<LoadedStudy, PipelineError> {
    let t = Instant::now();
    let chosen = select_for_channels(index, study_uid, channels)?;
    let loaded: Vec<SeriesVolume> = chosen.iter().map(|s| s.plan().and_then(|p| p.load())).collect::<Result<_, _>>()?;
    for (c, sv) in channels.iter().zip(&loaded) {
        if c.modality == "PT" && sv.info.unit != ValueUnit::Suv {
            let reason = match &sv.info.suv {
                SuvStatus::Unavailable { reason } => reason.clone(),
                SuvStatus::Available(s) => format!(
                    "its values are {}, not SUVbw: {}",
                    s.kind.name(),
                    s.not_converted.as_deref().unwrap_or("not converted")
                ),
                _ => "not in SUV".into(),
            };
            return Err(PipelineError::NoInput {
                study_uid: study_uid.to_string(),
                reason: format!("PET series {} has no SUV ({reason}); the model takes SUV", sv.info.series_uid),
            });
        }
    }
    let (Some(reference), Some(first)) = (loaded.first(), chosen.first()) else {
        return Err(PipelineError::NoInput {
            study_uid: study_uid.to_string(),
            reason: "the model has no channels".into(),
        });
    };
    let source = source_refs(first, &reference.info)?;
    let target = reference.volume.geometry.clone();
    let mut inputs = Vec::new();
    let mut volumes: Vec<Volume<f32>> = Vec::new();
    for (c, sv) in channels.iter().zip(&loaded) {
        let same = sv.volume.geometry == target;
        let fill = if c.modality == "CT" { -1024.0 } else { 0.0 };
        volumes.push(if same { sv.volume.clone() } else { resample_linear(&sv.volume, &target, fill) });
        inputs.push(InputSeries {
            channel: c.index,
            modality: c.modality.clone(),
            series_instance_uid: sv.info.series_uid.clone(),
            unit: sv.info.unit,
            suv: sv.info.suv.clone(),
            resampled: !same,
            slice_grid: sv.info.slice_grid.clone(),
            phase: None,
        });
    }
    Ok(LoadedStudy {
        study_uid: study_uid.to_string(),
        volumes,
        inputs,
        reference_series_uid: reference.info.series_uid.clone(),
        load_seconds: t.elapsed().as_secs_f64(),
        source,
        phases: None,
        prepared: None,
    })
}

/// nnU-Net's preprocessing of a loaded study for `pkg`, ahead of
/// [`infer_study`] (which then goes straight to the sliding window).
pub fn prepare_study(pkg: &crate::infer::model::ModelPackage, loaded: &mut LoadedStudy) -> Result<(), PipelineError> {
    if loaded.phases.is_none() {
        let refs: Vec<&Volume<f32>> = loaded.volumes.iter().collect();
        loaded.prepared = Some(crate::infer::prepare(pkg, &refs)?);
    }
    Ok(())
}

impl LoadedStudy {
    /// A study for a profile that picks its own series (the `ct-screening`
    /// profile runs the model on each contrast phase): the index travels to
    /// [`infer_study`], which loads the phases there.
    pub fn deferred(study_uid: &str, index: FolderIndex) -> Self {
        LoadedStudy {
            study_uid: study_uid.to_string(),
            volumes: Vec::new(),
            inputs: Vec::new(),
            reference_series_uid: String::new(),
            load_seconds: 0.0,
            source: None,
            phases: Some(index),
            prepared: None,
        }
    }
}

/// Runs one study through load, inference and post-processing.
pub fn run_study(
    predictor: &Predictor,
    backend: &PostBackend,
    index: &FolderIndex,
    study_uid: &str,
    probabilities: bool,
    mut progress: impl FnMut(&str),
) -> Result<StudyResult, PipelineError> {
    if predictor.package.meta.profile == SCREENING_PROFILE {
        return run_screening(predictor, backend, index, study_uid, probabilities, progress);
    }
    progress("loading series");
    let loaded = load_study(index, study_uid, &predictor.package.meta.channels)?;
    infer_study(predictor, backend, loaded, probabilities, progress)
}

/// `run_study` then `write_study`: one study of an index to its output
/// folder. `edgeseg process` and the daemon both call this.
pub fn process_study(
    predictor: &Predictor,
    backend: &PostBackend,
    index: &FolderIndex,
    study_uid: &str,
    out: &Path,
    probabilities: bool,
    progress: impl FnMut(&str),
) -> Result<(PathBuf, StudyResult), PipelineError> {
    let mut r = run_study(predictor, backend, index, study_uid, probabilities, progress)?;
    let dir = write_study(out, &mut r)?;
    Ok((dir, r))
}

/// Inference and post-processing of a loaded study.
pub fn infer_study(
    predictor: &Predictor,
    backend: &PostBackend,
    loaded: LoadedStudy,
    probabilities: bool,
    mut progress: impl FnMut(&str),
) -> Result<StudyResult, PipelineError> {
    if let Some(index) = &loaded.phases {
        return run_screening(predictor, backend, index, &loaded.study_uid, probabilities, progress);
    }
    let LoadedStudy { study_uid, mut volumes, inputs, reference_series_uid, load_seconds, source, phases: _, prepared } =
        loaded;
    let study_uid = study_uid.as_str();
    let mut timings = StageTimings { load: load_seconds, ..StageTimings::default() };
    let channels = &predictor.package.meta.channels;
    if volumes.len() != channels.len() {
        return Err(PipelineError::NoInput {
            study_uid: study_uid.to_string(),
            reason: format!("{} volumes for a model of {} channels", volumes.len(), channels.len()),
        });
    }
    let Some(target) = volumes.first().map(|v| v.geometry.clone()) else {
        return Err(PipelineError::NoInput { study_uid: study_uid.to_string(), reason: "no input volumes".into() });
    };
    progress("inference");
    let refs: Vec<&Volume<f32>> = volumes.iter().collect();
    // Progress in tenths ("inference 40%"), for status lines.
    let mut last_tenth = 0;
    let on_tiles = |done: usize, total: usize| {
        let tenth = done * 10 / total.max(1);
        if tenth > last_tenth && tenth < 10 {
            last_tenth = tenth;
            progress(&format!("inference {}%", tenth * 10));
        }
    };
    // Prepared on the loader thread for this very package, or done here.
    let prediction = match prepared.filter(|c| c.package_sha256() == predictor.package.sha256) {
        Some(case) => predictor.predict_prepared(case, probabilities, on_tiles)?,
        None => predictor.predict(&refs, probabilities, on_tiles)?,
    };
    timings.preprocess = prediction.timings.preprocess_s;
    timings.inference = prediction.timings.inference_s;
    timings.export = prediction.timings.export_s;

    progress("post-processing");
    let t = Instant::now();
    let pkg = &predictor.package;
    let mut labels = prediction.labels;
    let (mut lesions, mut table, mut patient, mut rules, mut suv) = (None, Vec::new(), None, None, None);
    let mut post_run = crate::gpu::select::PostRun { backend: backend.name(), fallback: None };
    if pkg.meta.profile == "petct-total-tumour" {
        let pet_index = channels.iter().position(|c| c.modality == "PT").ok_or_else(|| PipelineError::NoInput {
            study_uid: study_uid.to_string(),
            reason: "the PET/CT profile needs a PT channel".into(),
        })?;
        let r = PetRules::default();
        let (result, ran) =
            backend.run("lesion post-processing", |b| pet::total_tumour(b, &labels, &volumes[pet_index], &r))?;
        post_run = ran;
        labels = result.classes;
        lesions = Some(Volume { geometry: target.clone(), data: result.lesions.data });
        table = result.table;
        patient = Some(result.patient);
        rules = Some(ProfileRules::Pet(r));
        suv = Some(volumes[pet_index].clone());
    }
    timings.postprocess = t.elapsed().as_secs_f64();
    let ct_index = channels.iter().position(|c| c.modality == "CT").filter(|_| suv.is_none());
    let ct = ct_index.map(|i| volumes.swap_remove(i));
    let suv_summary = SuvSummary::of(&inputs);
    let report = Report {
        schema: "edgeseg-report/1",
        edgeseg_version: crate::version(),
        study_instance_uid: study_uid.to_string(),
        reference_series_uid,
        inputs,
        model: ModelInfo::of(predictor),
        postprocessing_backend: post_run.backend.into(),
        postprocessing_fallback: post_run.fallback,
        rules,
        lesions: table,
        patient,
        verdict: None,
        suv: suv_summary,
        timings_s: timings,
        dicom_outputs: Vec::new(),
    };
    let dicom = source.map(|source| {
        dicom_inputs(
            pkg,
            source,
            match &report.rules {
                Some(ProfileRules::Pet(r)) => Some(r.lesion_label),
                _ => None,
            },
        )
    });
    Ok(StudyResult { labels, lesions, probabilities: prediction.probabilities, suv, ct, dicom, report })
}

/// What seg.dcm and rtstruct.dcm need besides the masks.
fn dicom_inputs(
    pkg: &crate::infer::model::ModelPackage,
    source: dicom_refs::SourceRefs,
    lesion_label: Option<u8>,
) -> DicomInputs {
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

/// The reference series as the DICOM outputs reference it: UIDs, slices in
/// grid order, and the patient/study attributes of its first file.
fn source_refs(
    index: &SeriesIndex,
    info: &ingest::SeriesInfo,
) -> Result<Option<dicom_refs::SourceRefs>, PipelineError> {
    let first = index.instances.first().ok_or_else(|| PipelineError::NoInput {
        study_uid: index.study_uid.clone(),
        reason: format!("series {} has no instances", index.series_uid),
    })?;
    let Some(frame_of_reference_uid) = info.frame_of_reference_uid.clone() else {
        let series = crate::queue::uid_hash(&index.series_uid);
        tracing::warn!(series = %series, "series {series}: no FrameOfReferenceUID: no seg.dcm or rtstruct.dcm");
        return Ok(None);
    };
    Ok(Some(dicom_refs::SourceRefs {
        study_uid: info.study_uid.clone(),
        series_uid: info.series_uid.clone(),
        frame_of_reference_uid,
        orientation: info.orientation,
        slices: info
            .slices
            .iter()
            .map(|s| dicom_refs::SourceSlice {
                sop_class_uid: s.sop_class_uid.clone(),
                sop_instance_uid: s.sop_instance_uid.clone(),
                frame: s.frame,
                position: s.position,
            })
            .collect(),
        resampled: (info.slice_grid.method != ingest::ResamplingMethod::None)
            .then_some(dicom_refs::SourceGrid { columns: first.columns as usize, rows: first.rows as usize }),
        patient: dicom_refs::PatientStudy::read(&first.path)?,
    }))
}

/// Writes a study's files into `out/<StudyInstanceUID>/`, atomically: a
/// staging folder beside it, every file fsynced, then one rename. A study's
/// folder is complete or absent; reprocessing replaces it whole.
pub fn write_study(out: &Path, result: &mut StudyResult) -> Result<PathBuf, PipelineError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PipelineError::Io { path, source }
    };
    std::fs::create_dir_all(out).map_err(io(out))?;
    let stem = uid_file_stem(&result.report.study_instance_uid);
    let final_dir = out.join(&stem);
    remove_stale(out, &stem);
    let mut hook = AbortHook::from_env();
    let staging = out.join(format!(".staging-{stem}-{}", std::process::id()));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io(&staging))?;
    }
    let written = write_staging(&staging, result, &mut hook);
    if let Err(e) = written {
        // A failed write (a full disk) leaves nothing behind.
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    if let Err(e) = swap_into_place(out, &stem, &staging) {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    Ok(final_dir)
}

/// Writes every file of a study into its staging folder.
fn write_staging(staging: &Path, result: &mut StudyResult, hook: &mut AbortHook) -> Result<(), PipelineError> {
    let t = Instant::now();
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PipelineError::Io { path, source }
    };
    crate::export::create_output_dir(staging).map_err(io(staging))?;
    let desc = format!("edgeseg {}", result.report.model.name);
    let p = staging.join("labels.nii.gz");
    nifti::write(&p, &result.labels, &desc).map_err(io(&p))?;
    hook.file_done();
    if let Some(l) = &result.lesions {
        let p = staging.join("lesions.nii.gz");
        let count = l.data.iter().copied().max().unwrap_or(0);
        if count <= u32::from(u16::MAX) {
            let v =
                Volume { geometry: l.geometry.clone(), data: l.data.iter().map(|&x| x as u16).collect::<Vec<u16>>() };
            nifti::write(&p, &v, &desc)
        } else {
            nifti::write(&p, l, &desc)
        }
        .map_err(io(&p))?;
        hook.file_done();
    }
    if let Some(v) = &result.suv {
        let p = staging.join("suv.nii.gz");
        nifti::write(&p, v, "edgeseg PET SUVbw").map_err(io(&p))?;
        hook.file_done();
    }
    if let Some(probs) = &result.probabilities {
        let p = staging.join("probabilities.nii.gz");
        nifti::write_4d(&p, probs, &format!("{desc} class probabilities")).map_err(io(&p))?;
        hook.file_done();
    }
    let p = staging.join("lesions.csv");
    csv::write(&p, &result.report.lesions).map_err(io(&p))?;
    hook.file_done();
    let picture = match (&result.suv, &result.ct) {
        (Some(suv), _) => Some(mip::coronal(suv, result.lesions.as_ref())),
        (None, Some(ct)) => {
            let focus = match &result.report.rules {
                Some(ProfileRules::Screening(r)) => Some(r.tumour_label),
                _ => None,
            };
            Some(mip::axial(ct, &result.labels, focus))
        }
        (None, None) => None,
    };
    if let Some(pic) = picture {
        let p = staging.join("mip.png");
        mip::write(&p, &pic).map_err(io(&p))?;
        hook.file_done();
    }
    if let Some(d) = &result.dicom {
        result.report.dicom_outputs = crate::export::write_dicom(staging, d, &result.labels, result.lesions.as_ref())?;
        for _ in &result.report.dicom_outputs {
            hook.file_done();
        }
    }
    result.report.timings_s.write = t.elapsed().as_secs_f64();
    let p = staging.join("report.json");
    let text = serde_json::to_vec_pretty(&result.report)
        .map_err(|e| PipelineError::Io { path: p.clone(), source: e.into() })?;
    crate::export::write_atomic(&p, |f| std::io::Write::write_all(f, &text)).map_err(io(&p))?;
    hook.file_done();
    Ok(())
}

/// The crash-test hook: with `EDGESEG_TEST_ABORT_AFTER_FILE=N` in the
/// environment, `write_study` aborts the process (`std::process::abort`, no
/// clean-up, as a crash or `kill -9` would) right after the N-th file of the
/// staging folder is written. Read only here; for tests of atomicity
/// (docs/report.md).
struct AbortHook {
    after: Option<usize>,
    written: usize,
}

impl AbortHook {
    fn from_env() -> Self {
        let after = std::env::var("EDGESEG_TEST_ABORT_AFTER_FILE").ok().and_then(|v| v.trim().parse().ok());
        AbortHook { after, written: 0 }
    }

    /// One more file is in the staging folder.
    fn file_done(&mut self) {
        self.written += 1;
        if self.after == Some(self.written) {
            tracing::warn!("EDGESEG_TEST_ABORT_AFTER_FILE={}: aborting as a crash would", self.written);
            std::process::abort();
        }
    }
}

/// Removes what a crashed writer of this study left in `out`: staging
/// folders (`.staging-<stem>-<pid>`) and replaced folders
/// (`.replaced-<stem>-<pid>`) of processes no longer running (or of this
/// one). A live writer's folders are left alone. Failures are logged, not
/// fatal: they cost disk space, never correctness.
fn remove_stale(out: &Path, stem: &str) {
    let Ok(entries) = std::fs::read_dir(out) else { return };
    let me = std::process::id();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let pid = [".staging-", ".replaced-"].iter().find_map(|prefix| {
            name.strip_prefix(prefix)
                .and_then(|rest| rest.strip_prefix(stem))
                .and_then(|rest| rest.strip_prefix('-'))
                .and_then(|pid| pid.parse::<u32>().ok())
        });
        let Some(pid) = pid else { continue };
        if pid == me || !Path::new("/proc").join(pid.to_string()).exists() {
            match std::fs::remove_dir_all(e.path()) {
                Ok(()) => tracing::info!(
                    "removed a crashed writer's leftover folder (study {})",
                    crate::queue::uid_hash(stem)
                ),
                Err(err) => {
                    tracing::warn!(
                        "cannot remove a crashed writer's leftover folder (study {}): {err}",
                        crate::queue::uid_hash(stem)
                    )
                }
            }
        }
    }
}

/// fsyncs a complete staging folder and renames it to `out/<stem>`,
/// replacing a previous folder whole.
pub(crate) fn swap_into_place(out: &Path, stem: &str, staging: &Path) -> Result<(), PipelineError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PipelineError::Io { path, source }
    };
    let final_dir = out.join(stem);
    std::fs::File::open(staging).and_then(|d| d.sync_all()).map_err(io(staging))?;
    if final_dir.exists() {
        let old = out.join(format!(".replaced-{stem}-{}", std::process::id()));
        std::fs::rename(&final_dir, &old).map_err(io(&final_dir))?;
        std::fs::rename(staging, &final_dir).map_err(io(&final_dir))?;
        std::fs::remove_dir_all(&old).map_err(io(&old))?;
    } else {
        std::fs::rename(staging, &final_dir).map_err(io(&final_dir))?;
    }
    std::fs::File::open(out).and_then(|d| d.sync_all()).map_err(io(out))?;
    Ok(())
}

/// model.toml `profile` of the CT screening profile (seed 002).
pub const SCREENING_PROFILE: &str = "ct-screening";

/// The phase a CT series' SeriesDescription names: arterial ("arterial",
/// "art", "ap") or venous ("venous", "portal", "pv", "ven", "vp").
fn named_phase(description: &str) -> Option<&'static str> {
    let d = description.to_lowercase();
    let words: Vec<&str> = d.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()).collect();
    if d.contains("arter") || words.iter().any(|w| matches!(*w, "art" | "ap")) {
        Some("arterial")
    } else if d.contains("venous") || d.contains("portal") || words.iter().any(|w| matches!(*w, "pv" | "ven" | "vp")) {
        Some("venous")
    } else {
        None
    }
}

/// The arterial and venous CT series of a study. A series is placed by its
/// SeriesDescription ([`named_phase`]; of several, the one with most
/// frames); series it names no phase for fill the empty places in
/// SeriesNumber order (the earlier series is the arterial one); a lone
/// unnamed series is taken as the venous phase.
pub fn ct_phases<'a>(
    index: &'a FolderIndex,
    study_uid: &str,
) -> Result<(Option<&'a SeriesIndex>, Option<&'a SeriesIndex>), PipelineError> {
    let frames = |s: &SeriesIndex| s.instances.iter().map(|h| h.frames.len()).sum::<usize>();
    let cts: Vec<&SeriesIndex> =
        index.series.iter().filter(|s| s.study_uid == study_uid && s.modality == "CT" && frames(s) > 0).collect();
    if cts.is_empty() {
        return Err(PipelineError::NoInput {
            study_uid: study_uid.to_string(),
            reason: "the CT screening profile needs a CT series".into(),
        });
    }
    let description = |s: &SeriesIndex| s.instances.first().and_then(|h| h.series_description.clone());
    let named = |phase: &str| {
        cts.iter()
            .copied()
            .filter(|s| description(s).as_deref().and_then(named_phase) == Some(phase))
            .max_by_key(|s| frames(s))
    };
    let (mut arterial, mut venous) = (named("arterial"), named("venous"));
    let mut unnamed: Vec<&SeriesIndex> =
        cts.iter().copied().filter(|s| description(s).as_deref().and_then(named_phase).is_none()).collect();
    unnamed
        .sort_by_key(|s| (s.instances.first().and_then(|h| h.series_number).unwrap_or(i64::MAX), s.series_uid.clone()));
    let mut rest = unnamed.into_iter();
    match (arterial.is_some(), venous.is_some()) {
        (false, false) => {
            let (a, b) = (rest.next(), rest.next());
            if b.is_some() {
                (arterial, venous) = (a, b);
            } else {
                venous = a;
            }
        }
        (true, false) => venous = rest.next(),
        (false, true) => arterial = rest.next(),
        (true, true) => {}
    }
    Ok((arterial, venous))
}

/// The CT screening profile (seed 002, S4C): the model on each contrast
/// phase, the component rule and voxel-count verdict per phase, arterial OR
/// venous. labels.nii.gz, probabilities.nii.gz and mip.png are on the phase
/// that shows the finding (the arterial one when it is abnormal with more
/// tumour voxels than the venous one, else the venous one, else the one
/// there is); report.json `reference_series_uid` names it and `verdict`
/// holds both phases.
fn run_screening(
    predictor: &Predictor,
    backend: &PostBackend,
    index: &FolderIndex,
    study_uid: &str,
    probabilities: bool,
    mut progress: impl FnMut(&str),
) -> Result<StudyResult, PipelineError> {
    let pkg = &predictor.package;
    if pkg.meta.channels.len() != 1 || pkg.meta.channels[0].modality != "CT" {
        return Err(PipelineError::NoInput {
            study_uid: study_uid.to_string(),
            reason: format!("the {SCREENING_PROFILE} profile takes a one-channel CT model"),
        });
    }
    let (arterial, venous) = ct_phases(index, study_uid)?;
    let rules = ScreeningRules::default();
    let mut timings = StageTimings::default();
    let mut inputs = Vec::new();
    let mut verdicts = [None, None];
    let mut runs = [None, None];
    let mut post_run = crate::gpu::select::PostRun { backend: backend.name(), fallback: None };
    for (slot, (name, series)) in [("arterial", arterial), ("venous", venous)].into_iter().enumerate() {
        let Some(series) = series else { continue };
        progress(&format!("{name} phase: loading"));
        let t = Instant::now();
        let sv = series.plan().and_then(|p| p.load())?;
        timings.load += t.elapsed().as_secs_f64();
        progress(&format!("{name} phase: inference"));
        let prediction = predictor.predict(&[&sv.volume], probabilities, |_, _| {})?;
        timings.preprocess += prediction.timings.preprocess_s;
        timings.inference += prediction.timings.inference_s;
        timings.export += prediction.timings.export_s;
        let t = Instant::now();
        let (verdict, ran) = backend.run("screening post-processing", |b| {
            // On a copy: a step that fails half-way must leave the labels as the network gave them.
            let mut labels = prediction.labels.clone();
            screening::screen_phase(b, &mut labels, &rules).map(|v| (v, labels))
        })?;
        let (verdict, labels) = verdict;
        if ran.fallback.is_some() || post_run.fallback.is_none() {
            post_run = ran;
        }
        verdicts[slot] = Some(verdict);
        timings.postprocess += t.elapsed().as_secs_f64();
        inputs.push(InputSeries {
            channel: 0,
            modality: sv.info.modality.clone(),
            series_instance_uid: sv.info.series_uid.clone(),
            unit: sv.info.unit,
            suv: sv.info.suv.clone(),
            resampled: false,
            slice_grid: sv.info.slice_grid.clone(),
            phase: Some(name),
        });
        runs[slot] = Some((series, sv, labels, prediction.probabilities));
    }
    // The reference is the phase that shows the finding: the arterial one
    // when it has more tumour voxels and is abnormal, else the venous one.
    let tumour = |v: &Option<screening::PhaseVerdict>| v.as_ref().map(|v| (v.abnormal, v.tumour_voxels));
    let arterial_shows = match (tumour(&verdicts[0]), tumour(&verdicts[1])) {
        (Some((true, a)), Some((_, v))) => a > v,
        (Some(_), None) => true,
        _ => false,
    };
    let [art_run, ven_run] = runs;
    let reference = if arterial_shows { art_run } else { ven_run.or(art_run) };
    let [art, ven] = verdicts;
    let verdict = screening::fuse(art, ven);
    let Some((series, sv, labels, probabilities)) = reference else {
        return Err(PipelineError::NoInput { study_uid: study_uid.to_string(), reason: "no CT phase".into() });
    };
    let suv_summary = SuvSummary::of(&inputs);
    let report = Report {
        schema: "edgeseg-report/1",
        edgeseg_version: crate::version(),
        study_instance_uid: study_uid.to_string(),
        reference_series_uid: sv.info.series_uid.clone(),
        inputs,
        model: ModelInfo::of(predictor),
        postprocessing_backend: post_run.backend.into(),
        postprocessing_fallback: post_run.fallback,
        rules: Some(ProfileRules::Screening(rules)),
        lesions: Vec::new(),
        patient: None,
        verdict: Some(verdict),
        suv: suv_summary,
        timings_s: timings,
        dicom_outputs: Vec::new(),
    };
    let dicom = source_refs(series, &sv.info)?.map(|source| dicom_inputs(pkg, source, None));
    Ok(StudyResult { labels, lesions: None, probabilities, suv: None, ct: Some(sv.volume), dicom, report })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_names_from_series_descriptions() {
        for (d, want) in [
            ("Pancreas arterial phase 1.5 mm", Some("arterial")),
            ("ART 1.0 B30f", Some("arterial")),
            ("Abdomen AP", Some("arterial")),
            ("Portal venous 3mm", Some("venous")),
            ("PV phase", Some("venous")),
            ("abd_ven_1mm", Some("venous")),
            ("Abdomen 5.0 B30f", None),
            ("Cardiac", None),
            ("Event", None),
        ] {
            assert_eq!(named_phase(d), want, "{d}");
        }
    }

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

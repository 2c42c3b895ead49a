//! The one pipeline: a study's series through preprocess, infer and
//! post-process to the files written for it. `edgeseg process` and the daemon
//! both call `run_study` and `write_study`; the daemon only adds watching,
//! queueing and reporting.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::export::{nifti, uid_file_stem};
use crate::gpu::{Backend, GpuError};
use crate::infer::{InferError, Predictor};
use crate::ingest::{self, ErrorClass, FolderIndex, SeriesError, SeriesIndex, SeriesVolume, SuvStatus, ValueUnit};
use crate::post::pet::{self, Lesion, PatientFigures, PetRules};
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

/// Which provider a fold ran on.
#[derive(Debug, Clone, Serialize)]
pub struct FoldProvider {
    /// Fold.
    pub fold: u32,
    /// cpu, cuda, tensorrt, tensorrt-fp16.
    pub provider: String,
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
    /// Where post-processing ran (cpu or cuda).
    pub postprocessing_backend: String,
    /// The profile's rules, as applied.
    pub rules: Option<PetRules>,
    /// Lesion table (PET/CT profile).
    pub lesions: Vec<Lesion>,
    /// Patient figures (PET/CT profile).
    pub patient: Option<PatientFigures>,
    /// Seconds per stage.
    pub timings_s: StageTimings,
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
    let series: Vec<&SeriesIndex> = index.series.iter().filter(|s| s.study_uid == study_uid).collect();
    let channels = &predictor.package.meta.channels;
    let mods: Vec<&str> = channels.iter().map(|c| c.modality.as_str()).collect();
    let no = |reason: String| PipelineError::NoInput { study_uid: study_uid.to_string(), reason };
    if mods.contains(&"PT") && mods.contains(&"CT") {
        let pairing = ingest::pair(&series);
        let p = pairing.pairs.first().ok_or_else(|| {
            no(format!("the model needs a PET/CT pair (one frame of reference); unpaired: {:?}", pairing.unpaired))
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

/// Runs one study through load, inference and post-processing.
pub fn run_study(
    predictor: &Predictor,
    backend: &Backend,
    index: &FolderIndex,
    study_uid: &str,
    probabilities: bool,
    mut progress: impl FnMut(&str),
) -> Result<StudyResult, PipelineError> {
    let mut timings = StageTimings::default();
    let t = Instant::now();
    let chosen = select_series(index, study_uid, predictor)?;
    progress("loading series");
    let loaded: Vec<SeriesVolume> = chosen.iter().map(|s| s.plan().and_then(|p| p.load())).collect::<Result<_, _>>()?;
    let channels = &predictor.package.meta.channels;
    for (c, sv) in channels.iter().zip(&loaded) {
        if c.modality == "PT" && sv.info.unit != ValueUnit::Suv {
            let reason = match &sv.info.suv {
                SuvStatus::Unavailable { reason } => reason.clone(),
                _ => "not in SUV".into(),
            };
            return Err(PipelineError::NoInput {
                study_uid: study_uid.to_string(),
                reason: format!("PET series {} has no SUV ({reason}); the model takes SUV", sv.info.series_uid),
            });
        }
    }
    let reference = &loaded[0];
    let target = reference.volume.geometry.clone();
    let mut inputs = Vec::new();
    let mut volumes = Vec::new();
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
        });
    }
    timings.load = t.elapsed().as_secs_f64();
    progress("inference");
    let refs: Vec<&Volume<f32>> = volumes.iter().collect();
    let prediction = predictor.predict(&refs, probabilities, |_, _| {})?;
    timings.preprocess = prediction.timings.preprocess_s;
    timings.inference = prediction.timings.inference_s;
    timings.export = prediction.timings.export_s;

    progress("post-processing");
    let t = Instant::now();
    let pkg = &predictor.package;
    let mut labels = prediction.labels;
    let (mut lesions, mut table, mut patient, mut rules, mut suv) = (None, Vec::new(), None, None, None);
    if pkg.meta.profile == "petct-total-tumour" {
        let pet_index = channels.iter().position(|c| c.modality == "PT").ok_or_else(|| PipelineError::NoInput {
            study_uid: study_uid.to_string(),
            reason: "the PET/CT profile needs a PT channel".into(),
        })?;
        let r = PetRules::default();
        let result = pet::total_tumour(backend, &labels, &volumes[pet_index], &r)?;
        labels = result.classes;
        lesions = Some(Volume { geometry: target.clone(), data: result.lesions.data });
        table = result.table;
        patient = Some(result.patient);
        rules = Some(r);
        suv = Some(volumes[pet_index].clone());
    }
    timings.postprocess = t.elapsed().as_secs_f64();
    let report = Report {
        schema: "edgeseg-report/1",
        edgeseg_version: crate::version(),
        study_instance_uid: study_uid.to_string(),
        reference_series_uid: reference.info.series_uid.clone(),
        inputs,
        model: ModelInfo {
            name: pkg.meta.name.clone(),
            version: pkg.meta.version.clone(),
            sha256: pkg.sha256.clone(),
            configuration: pkg.meta.configuration.clone(),
            profile: pkg.meta.profile.clone(),
            clinical_use: pkg.meta.clinical_use,
            providers: predictor
                .providers()
                .into_iter()
                .map(|(fold, p)| FoldProvider { fold, provider: p.into() })
                .collect(),
        },
        postprocessing_backend: backend.name().into(),
        rules,
        lesions: table,
        patient,
        timings_s: timings,
    };
    Ok(StudyResult { labels, lesions, probabilities: prediction.probabilities, suv, report })
}

/// Writes a study's files into `out/<StudyInstanceUID>/`, atomically: a
/// staging folder beside it, every file fsynced, then one rename. A study's
/// folder is complete or absent; reprocessing replaces it whole.
pub fn write_study(out: &Path, result: &mut StudyResult) -> Result<PathBuf, PipelineError> {
    let t = Instant::now();
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PipelineError::Io { path, source }
    };
    std::fs::create_dir_all(out).map_err(io(out))?;
    let stem = uid_file_stem(&result.report.study_instance_uid);
    let final_dir = out.join(&stem);
    let staging = out.join(format!(".staging-{stem}-{}", std::process::id()));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io(&staging))?;
    }
    crate::export::create_output_dir(&staging).map_err(io(&staging))?;
    let desc = format!("edgeseg {}", result.report.model.name);
    let p = staging.join("labels.nii.gz");
    nifti::write(&p, &result.labels, &desc).map_err(io(&p))?;
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
    }
    if let Some(v) = &result.suv {
        let p = staging.join("suv.nii.gz");
        nifti::write(&p, v, "edgeseg PET SUVbw").map_err(io(&p))?;
    }
    if let Some(probs) = &result.probabilities {
        for (k, v) in probs.iter().enumerate() {
            let p = staging.join(format!("probabilities_class{k}.nii.gz"));
            nifti::write(&p, v, &desc).map_err(io(&p))?;
        }
    }
    result.report.timings_s.write = t.elapsed().as_secs_f64();
    let p = staging.join("report.json");
    let text = serde_json::to_vec_pretty(&result.report)
        .map_err(|e| PipelineError::Io { path: p.clone(), source: e.into() })?;
    crate::export::write_atomic(&p, |f| std::io::Write::write_all(f, &text)).map_err(io(&p))?;
    swap_into_place(out, &stem, &staging)?;
    Ok(final_dir)
}

/// fsyncs a complete staging folder and renames it to `out/<stem>`,
/// replacing a previous folder whole.
fn swap_into_place(out: &Path, stem: &str, staging: &Path) -> Result<(), PipelineError> {
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

/// What `add_lesion` did.
#[derive(Debug, Clone, Serialize)]
pub struct LesionEdit {
    /// "add-lesion".
    pub action: &'static str,
    /// The seed, LPS mm.
    pub seed_lps_mm: [f64; 3],
    /// The seed voxel.
    pub seed_ijk: [usize; 3],
    /// How the threshold was chosen.
    pub method: pet::SeedThreshold,
    /// The SUV threshold used.
    pub threshold_suv: f64,
    /// Voxels grown.
    pub voxels: u64,
    /// Lesions before and after.
    pub lesions_before: usize,
    /// See `lesions_before`.
    pub lesions_after: usize,
}

/// Adds a lesion grown from a seed point to a finished PET/CT study folder
/// (`edgeseg add-lesion`): the region connected to the seed above the
/// threshold joins the lesion class, the profile recomputes lesions and
/// figures, and the folder is rewritten atomically with the edit recorded in
/// report.json.
pub fn add_lesion(
    backend: &Backend,
    study_dir: &Path,
    seed_lps_mm: [f64; 3],
    method: pet::SeedThreshold,
) -> Result<LesionEdit, PipelineError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PipelineError::Io { path, source }
    };
    let read = |name: &str| {
        let p = study_dir.join(name);
        nifti::read_f32(&p)
            .map_err(|e| PipelineError::Io { path: p.clone(), source: std::io::Error::other(e.to_string()) })
    };
    let report_path = study_dir.join("report.json");
    let text = std::fs::read_to_string(&report_path).map_err(io(&report_path))?;
    let mut report: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| PipelineError::Io { path: report_path.clone(), source: std::io::Error::other(e.to_string()) })?;
    let rules: PetRules = serde_json::from_value(report["rules"].clone()).map_err(|_| PipelineError::NoInput {
        study_uid: report["study_instance_uid"].as_str().unwrap_or("?").to_string(),
        reason: "the study was not processed with the PET/CT profile (no rules in report.json)".into(),
    })?;
    let suv = read("suv.nii.gz")?;
    let labels = read("labels.nii.gz")?;
    let mut classes =
        Volume { geometry: labels.geometry.clone(), data: labels.data.iter().map(|&v| v as u8).collect() };
    let g = &suv.geometry;
    let c = g.lps_to_voxel(seed_lps_mm);
    let seed = [0, 1, 2].map(|a| c[a].round());
    if (0..3).any(|a| seed[a] < 0.0 || seed[a] >= g.dims[a] as f64) {
        return Err(PipelineError::Post(GpuError::Invalid(format!(
            "the seed {seed_lps_mm:?} mm (voxel {c:.1?}) lies outside the PET volume {:?}",
            g.dims
        ))));
    }
    let seed = seed.map(|v| v as usize);
    let before = pet::total_tumour(backend, &classes, &suv, &rules)?;
    let (grown, thr) = pet::grow_from_seed(backend, &suv, seed, method, before.patient.reference.as_ref(), 60.0)?;
    let voxels = grown.iter().filter(|&&m| m != 0).count() as u64;
    for (cl, &m) in classes.data.iter_mut().zip(&grown) {
        if m != 0 {
            *cl = rules.lesion_label;
        }
    }
    let after = pet::total_tumour(backend, &classes, &suv, &rules)?;
    let edit = LesionEdit {
        action: "add-lesion",
        seed_lps_mm,
        seed_ijk: seed,
        method,
        threshold_suv: thr,
        voxels,
        lesions_before: before.table.len(),
        lesions_after: after.table.len(),
    };
    // Rewrite the folder: a staging copy with the new files, then the swap.
    let out = study_dir.parent().unwrap_or(Path::new("."));
    let stem = study_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let staging = out.join(format!(".staging-{stem}-{}", std::process::id()));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io(&staging))?;
    }
    crate::export::create_output_dir(&staging).map_err(io(&staging))?;
    for e in std::fs::read_dir(study_dir).map_err(io(study_dir))? {
        let e = e.map_err(io(study_dir))?;
        std::fs::copy(e.path(), staging.join(e.file_name())).map_err(io(&e.path()))?;
    }
    let desc = "edgeseg add-lesion";
    let p = staging.join("labels.nii.gz");
    nifti::write(&p, &after.classes, desc).map_err(io(&p))?;
    let p = staging.join("lesions.nii.gz");
    let lesions =
        Volume { geometry: g.clone(), data: after.lesions.data.iter().map(|&x| x as u16).collect::<Vec<u16>>() };
    if after.lesions.count <= u32::from(u16::MAX) {
        nifti::write(&p, &lesions, desc)
    } else {
        nifti::write(&p, &Volume { geometry: g.clone(), data: after.lesions.data.clone() }, desc)
    }
    .map_err(io(&p))?;
    report["lesions"] = to_value(&after.table);
    report["patient"] = to_value(&after.patient);
    let edits = report.as_object_mut().map(|o| o.entry("edits").or_insert_with(|| serde_json::json!([])));
    if let Some(serde_json::Value::Array(list)) = edits {
        list.push(to_value(&edit));
    }
    let p = staging.join("report.json");
    let text =
        serde_json::to_vec_pretty(&report).map_err(|e| PipelineError::Io { path: p.clone(), source: e.into() })?;
    crate::export::write_atomic(&p, |f| std::io::Write::write_all(f, &text)).map_err(io(&p))?;
    swap_into_place(out, &stem, &staging)?;
    Ok(edit)
}

/// A serialisable value as JSON (null if it cannot be serialised).
fn to_value<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

//! The load half of a study, before any network runs: its profile's series
//! loaded into cases (the channels on one grid, what the network runs on
//! once) and nnU-Net's preprocessing of each. The daemon runs it on its
//! loader thread while the previous study is on the GPU.

use std::time::Instant;

use super::profiles::Profile;
use super::select::select_for_channels;
use super::stage::{Progress, Stage};
use super::{InputSeries, PipelineError};
use crate::export::dicom_refs;
use crate::infer::PreparedCase;
use crate::infer::memory::SeriesShape;
use crate::infer::model::ModelPackage;
use crate::ingest::{self, FolderIndex, SeriesIndex, SeriesPlan, SuvStatus, ValueUnit};
use crate::volume::Volume;

/// A CT series' contrast phase, for a profile that runs the model on each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Arterial.
    Arterial,
    /// Portal venous.
    Venous,
}

impl Phase {
    /// As report.json (`inputs[].phase`) and status lines name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Arterial => "arterial",
            Phase::Venous => "venous",
        }
    }
}

/// One run of the network: the model's channels loaded on one grid.
pub struct Case {
    /// One volume per model channel, on the reference (first channel's) grid.
    pub volumes: Vec<Volume<f32>>,
    /// Inputs per channel, as they went in.
    pub inputs: Vec<InputSeries>,
    /// The series whose grid it is on.
    pub reference_series_uid: String,
    /// What seg.dcm and rtstruct.dcm reference (None without a
    /// FrameOfReferenceUID).
    pub source: Option<dicom_refs::SourceRefs>,
    /// The contrast phase, for a profile that runs the model on each.
    pub phase: Option<Phase>,
    /// nnU-Net's preprocessing of `volumes`, done by [`load_study`].
    pub prepared: Option<PreparedCase>,
}

/// A study loaded by its profile's load half: what [`load_study`] gives and
/// [`super::infer_study`] takes.
pub struct LoadedStudy {
    /// StudyInstanceUID.
    pub study_uid: String,
    /// The network's runs, in the profile's order (the screening profile:
    /// arterial, then venous).
    pub cases: Vec<Case>,
    /// Seconds spent loading (preprocessing not included: it is timed in the
    /// prepared cases).
    pub load_seconds: f64,
}

/// The load half of a study: the package's profile picks and loads its
/// series into cases, then each case gets nnU-Net's preprocessing for `pkg`.
pub fn load_study(
    pkg: &ModelPackage,
    index: &FolderIndex,
    study_uid: &str,
    mut progress: impl FnMut(Progress),
) -> Result<LoadedStudy, PipelineError> {
    let t = Instant::now();
    let profile: Profile = pkg.meta.profile;
    let mut cases = profile.load(pkg, index, study_uid, &mut progress)?;
    let load_seconds = t.elapsed().as_secs_f64();
    for case in &mut cases {
        progress(Progress::new(Stage::Preprocess, case.phase));
        let refs: Vec<&Volume<f32>> = case.volumes.iter().collect();
        case.prepared = Some(crate::infer::prepare(pkg, &refs)?);
    }
    Ok(LoadedStudy { study_uid: study_uid.to_string(), cases, load_seconds })
}

/// The series each of the profile's runs will load, as their headers
/// describe them (no pixel read): for the memory estimate before loading
/// ([`crate::infer::memory::study_peak`]). The same selection as the load
/// half; its errors are the load half's.
pub fn planned_cases(
    pkg: &ModelPackage,
    index: &FolderIndex,
    study_uid: &str,
) -> Result<Vec<Vec<SeriesShape>>, PipelineError> {
    let shape = |s: &SeriesIndex| -> Result<SeriesShape, PipelineError> {
        let g = s.plan()?.geometry;
        Ok(SeriesShape { dims: g.dims, spacing: g.spacing })
    };
    if pkg.meta.profile == Profile::CtScreening {
        let (arterial, venous) = super::profiles::ct_phases(index, study_uid)?;
        return [arterial, venous].into_iter().flatten().map(|s| Ok(vec![shape(s)?])).collect();
    }
    let chosen = select_for_channels(index, study_uid, &pkg.meta.channels)?;
    Ok(vec![chosen.into_iter().map(shape).collect::<Result<_, _>>()?])
}

/// The common load half: the series [`select_for_channels`] picks, loaded
/// and put on the grid of the first channel (PET in SUV, else refused).
pub fn load_channels(pkg: &ModelPackage, index: &FolderIndex, study_uid: &str) -> Result<Case, PipelineError> {
    let channels = &pkg.meta.channels;
    let chosen = select_for_channels(index, study_uid, channels)?;
    let plans: Vec<SeriesPlan> = chosen.iter().map(|s| s.plan()).collect::<Result<_, _>>()?;
    for (c, sv) in channels.iter().zip(&plans) {
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
    let (Some(reference), Some(first)) = (plans.first(), chosen.first()) else {
        return Err(PipelineError::NoInput {
            study_uid: study_uid.to_string(),
            reason: "the model has no channels".into(),
        });
    };
    let source = source_refs(first, &reference.info)?;
    let target = reference.geometry.clone();
    let reference_series_uid = reference.info.series_uid.clone();
    let mut inputs = Vec::new();
    let mut volumes: Vec<Volume<f32>> = Vec::new();
    // A series already on the reference grid is read as it is; the others
    // are read slab by slab straight onto it (`load_onto`): the CT of a
    // whole-body PET/CT is never held at its own resolution.
    for (c, plan) in channels.iter().zip(&plans) {
        let same = plan.geometry == target;
        let fill = if c.modality == "CT" { -1024.0 } else { 0.0 };
        let sv = if same { plan.load()? } else { plan.load_onto(&target, fill)? };
        let info = sv.info;
        volumes.push(sv.volume);
        inputs.push(InputSeries {
            channel: c.index,
            modality: c.modality.clone(),
            series_instance_uid: info.series_uid,
            unit: info.unit,
            suv: info.suv,
            resampled: !same,
            slice_grid: info.slice_grid,
            phase: None,
        });
    }
    Ok(Case { volumes, inputs, reference_series_uid, source, phase: None, prepared: None })
}

/// A case of one series on its own grid, in contrast phase `phase` (the
/// screening profile's runs): channel 0.
pub fn load_series(series: &SeriesIndex, phase: Phase) -> Result<Case, PipelineError> {
    let sv = series.plan().and_then(|p| p.load())?;
    let source = source_refs(series, &sv.info)?;
    let input = InputSeries {
        channel: 0,
        modality: sv.info.modality.clone(),
        series_instance_uid: sv.info.series_uid.clone(),
        unit: sv.info.unit,
        suv: sv.info.suv.clone(),
        resampled: false,
        slice_grid: sv.info.slice_grid.clone(),
        phase: Some(phase.as_str()),
    };
    Ok(Case {
        reference_series_uid: sv.info.series_uid.clone(),
        volumes: vec![sv.volume],
        inputs: vec![input],
        source,
        phase: Some(phase),
        prepared: None,
    })
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

//! A serialisable description of a scanned folder: what `edgeseg inspect`
//! prints, and what scripts read from `--json`. Holds no patient name, ID or
//! birth date: studies and series are named by UID.

use std::path::PathBuf;

use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use serde::Serialize;

use super::{ErrorClass, FolderIndex, Pairing, SeriesIndex, SliceGrid, SuvStatus, ValueUnit, pair};

/// One transfer syntax, by UID and name.
#[derive(Debug, Clone, Serialize)]
pub struct TransferSyntaxName {
    /// UID.
    pub uid: String,
    /// Name, where the registry knows it.
    pub name: String,
}

/// A series as `inspect` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesSummary {
    /// SeriesInstanceUID.
    pub series_uid: String,
    /// Modality.
    pub modality: String,
    /// SeriesNumber.
    pub series_number: Option<i64>,
    /// SeriesDescription.
    pub series_description: Option<String>,
    /// Manufacturer.
    pub manufacturer: Option<String>,
    /// FrameOfReferenceUID.
    pub frame_of_reference_uid: Option<String>,
    /// DICOM instances (files).
    pub instances: usize,
    /// Columns × rows × slices, when the series assembles.
    pub dims: Option<[usize; 3]>,
    /// Voxel spacing in mm (column, row, slice), when the series assembles.
    pub spacing_mm: Option<[f64; 3]>,
    /// ImageOrientationPatient.
    pub orientation: Option<[f64; 6]>,
    /// LPS position of the first voxel.
    pub origin_lps_mm: Option<[f64; 3]>,
    /// The slice grid: largest deviation from a uniform grid and, where the
    /// stack is resampled (irregular spacing, gantry tilt), how.
    pub slice_grid: Option<SliceGrid>,
    /// Transfer syntaxes of its files.
    pub transfer_syntaxes: Vec<TransferSyntaxName>,
    /// From multi-frame objects.
    pub multi_frame: bool,
    /// SUV (PET), or why none.
    pub suv: Option<SuvStatus>,
    /// Unit the volume loads in.
    pub unit: Option<ValueUnit>,
    /// What was read although not as the standard wants it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Why the series cannot be assembled, if it cannot.
    pub error: Option<String>,
}

/// A study as `inspect` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct StudySummary {
    /// StudyInstanceUID.
    pub study_uid: String,
    /// Its series.
    pub series: Vec<SeriesSummary>,
    /// PET/CT pairs and unpaired series.
    pub pairing: Pairing,
}

/// A file that could not be read.
#[derive(Debug, Clone, Serialize)]
pub struct FileProblem {
    /// The file.
    pub path: PathBuf,
    /// The whole message.
    pub error: String,
    /// Quarantine or retry.
    pub class: ErrorClass,
}

/// The whole folder.
#[derive(Debug, Clone, Serialize)]
pub struct FolderSummary {
    /// The folder scanned.
    pub root: PathBuf,
    /// Studies found.
    pub studies: Vec<StudySummary>,
    /// Unreadable files.
    pub errors: Vec<FileProblem>,
    /// Files passed over on purpose.
    pub skipped: Vec<SkippedFile>,
}

/// A file passed over on purpose (DICOMDIR, a non-image object).
#[derive(Debug, Clone, Serialize)]
pub struct SkippedFile {
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub reason: String,
}

fn ts_name(uid: &str) -> TransferSyntaxName {
    TransferSyntaxName {
        uid: uid.to_string(),
        name: TransferSyntaxRegistry.get(uid).map(|t| t.name().to_string()).unwrap_or_else(|| "unknown".into()),
    }
}

/// Describes one series (plans it, without reading pixels).
pub fn describe_series(s: &SeriesIndex) -> SeriesSummary {
    let first = s.instances.first();
    let mut out = SeriesSummary {
        series_uid: s.series_uid.clone(),
        modality: s.modality.clone(),
        series_number: first.and_then(|h| h.series_number),
        series_description: first.and_then(|h| h.series_description.clone()),
        manufacturer: first.and_then(|h| h.manufacturer.clone()),
        frame_of_reference_uid: first.and_then(|h| h.frame_of_reference_uid.clone()),
        instances: s.instances.len(),
        dims: None,
        spacing_mm: None,
        orientation: None,
        origin_lps_mm: None,
        slice_grid: None,
        transfer_syntaxes: {
            let mut v: Vec<&str> = s.instances.iter().map(|h| h.transfer_syntax.as_str()).collect();
            v.sort_unstable();
            v.dedup();
            v.into_iter().map(ts_name).collect()
        },
        multi_frame: s.instances.iter().any(|h| h.frames.len() > 1 && h.mosaic.is_none()),
        suv: None,
        unit: None,
        warnings: Vec::new(),
        error: None,
    };
    match s.plan() {
        Ok(p) => {
            out.dims = Some(p.geometry.dims);
            out.spacing_mm = Some(p.geometry.spacing);
            out.orientation = Some(p.info.orientation);
            out.origin_lps_mm = Some(p.geometry.origin);
            out.slice_grid = Some(p.info.slice_grid.clone());
            out.suv = Some(p.info.suv.clone());
            out.unit = Some(p.info.unit);
            out.warnings = p.info.warnings.clone();
        }
        Err(e) => out.error = Some(e.to_string()),
    }
    out
}

/// Describes a scanned folder.
pub fn describe(index: &FolderIndex) -> FolderSummary {
    let studies = index
        .studies()
        .into_iter()
        .map(|(study_uid, series)| StudySummary {
            study_uid: study_uid.to_string(),
            series: series.iter().map(|s| describe_series(s)).collect(),
            pairing: pair(&series),
        })
        .collect();
    FolderSummary {
        root: index.root.clone(),
        studies,
        errors: index
            .errors
            .iter()
            .map(|e| FileProblem { path: e.path().to_path_buf(), error: e.to_string(), class: e.class() })
            .collect(),
        skipped: index.skipped.iter().map(|(p, why)| SkippedFile { path: p.clone(), reason: why.clone() }).collect(),
    }
}

//! Ingest stage: a folder of DICOM files to series, volumes and PET/CT pairs.
//!
//! `index` reads headers only (fast, parallel); `SeriesIndex::plan` checks a
//! series and works out its geometry and SUV; `SeriesPlan::load` decodes the
//! pixels into one volume. This module knows nothing of GPUs, queues or HTTP.

pub mod csa;
pub mod encapsulated;
pub mod error;
pub mod geometry;
pub mod header;
pub mod jpeg12;
pub mod mosaic;
pub mod part10;
pub mod pixels;
pub mod scan;
pub mod series;
pub mod structure;
pub mod summary;
pub mod suv;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

pub use error::{ErrorClass, FileError, SeriesError};
pub use geometry::{ResamplingMethod, SliceGrid};
pub use series::{SeriesIndex, SeriesInfo, SeriesPlan, SeriesVolume, SliceRef, SuvStatus, ValueUnit};

/// A scanned folder: its series and what could not be read.
#[derive(Debug)]
pub struct FolderIndex {
    /// The folder.
    pub root: PathBuf,
    /// Series found, grouped by study then series UID.
    pub series: Vec<SeriesIndex>,
    /// Files that could not be read.
    pub errors: Vec<FileError>,
    /// Files passed over on purpose, with why.
    pub skipped: Vec<(PathBuf, String)>,
}

/// Scans `root` recursively and groups what it finds by series.
pub fn index(root: &Path) -> FolderIndex {
    let report = scan::scan(root);
    FolderIndex::assemble(root.to_path_buf(), report.instances, report.errors, report.skipped)
}

/// A single slice whose normal is more than this far (degrees) from the
/// normal of every stack of its study is a localizer, not a volume.
pub const LOCALIZER_MIN_ANGLE_DEGREES: f64 = 45.0;

impl FolderIndex {
    /// Makes every series refuse stacks that would need resampling
    /// (`--strict-geometry`, `[ingest] strict_geometry`).
    pub fn with_strict_geometry(mut self, strict: bool) -> Self {
        for s in &mut self.series {
            s.strict_geometry = strict;
        }
        self
    }

    /// Groups headers by series and passes over single-slice localizers:
    /// a series of one slice whose plane is at another orientation (more than
    /// [`LOCALIZER_MIN_ANGLE_DEGREES`]) than every stack of two or more slices
    /// in its study. Its file goes to `skipped`, with why.
    pub fn assemble(
        root: PathBuf,
        instances: Vec<header::InstanceHeader>,
        errors: Vec<FileError>,
        mut skipped: Vec<(PathBuf, String)>,
    ) -> FolderIndex {
        let all = series::group(instances);
        let verdicts: Vec<Option<String>> = all.iter().map(|s| localizer(s, &all)).collect();
        let mut kept = Vec::with_capacity(all.len());
        for (s, verdict) in all.into_iter().zip(verdicts) {
            match verdict {
                Some(why) => skipped.extend(s.instances.into_iter().map(|h| (h.path, why.clone()))),
                None => kept.push(s),
            }
        }
        FolderIndex { root, series: kept, errors, skipped }
    }

    /// The series with this UID.
    pub fn find(&self, series_uid: &str) -> Option<&SeriesIndex> {
        self.series.iter().find(|s| s.series_uid == series_uid)
    }

    /// Study UIDs in order, each with its series.
    pub fn studies(&self) -> BTreeMap<&str, Vec<&SeriesIndex>> {
        let mut m: BTreeMap<&str, Vec<&SeriesIndex>> = BTreeMap::new();
        for s in &self.series {
            m.entry(s.study_uid.as_str()).or_default().push(s);
        }
        m
    }
}

/// The unit normal of a series' first slice.
fn normal_of(s: &SeriesIndex) -> Option<[f64; 3]> {
    let o = s.instances.first()?.frames.first()?.orientation;
    let n = crate::volume::cross([o[0], o[1], o[2]], [o[3], o[4], o[5]]);
    let len = crate::volume::norm(n);
    (len > 0.0).then(|| [n[0] / len, n[1] / len, n[2] / len])
}

/// Why `s` is a single-slice localizer (see [`FolderIndex::assemble`]), if it is.
fn localizer(s: &SeriesIndex, all: &[SeriesIndex]) -> Option<String> {
    if s.frame_count() != 1 {
        return None;
    }
    let n = normal_of(s)?;
    let cos_limit = LOCALIZER_MIN_ANGLE_DEGREES.to_radians().cos();
    // The stack of the study nearest in orientation.
    let (stack, cos) = all
        .iter()
        .filter(|o| o.study_uid == s.study_uid && o.frame_count() >= 2)
        .filter_map(|o| Some((o, crate::volume::dot(n, normal_of(o)?).abs().min(1.0))))
        .max_by(|a, b| a.1.total_cmp(&b.1))?;
    (cos < cos_limit).then(|| {
        format!(
            "not an image volume: a single-slice localizer (its plane is {:.0}° from the {}-slice series {}); SOP Instance UID {}",
            cos.acos().to_degrees(),
            stack.frame_count(),
            // By hash, as logs name studies and series (a UID is quasi-identifying).
            crate::queue::uid_hash(&stack.series_uid),
            s.instances.first().map(|h| h.sop_instance_uid.as_str()).unwrap_or("unknown")
        )
    })
}

/// A PET series and the CT that shares its frame of reference.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PetCtPair {
    /// StudyInstanceUID.
    pub study_uid: String,
    /// The shared FrameOfReferenceUID.
    pub frame_of_reference_uid: String,
    /// PET SeriesInstanceUID.
    pub pet_series_uid: String,
    /// CT SeriesInstanceUID.
    pub ct_series_uid: String,
}

/// A PET or CT series without a partner, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Unpaired {
    /// StudyInstanceUID.
    pub study_uid: String,
    /// SeriesInstanceUID.
    pub series_uid: String,
    /// Modality.
    pub modality: String,
    /// Why it has no partner.
    pub reason: String,
}

impl std::fmt::Display for Unpaired {
    /// `a PT series with no CT series in its frame of reference` (no UID).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let other = if self.modality == "PT" { "CT" } else { "PET" };
        if self.reason == "no FrameOfReferenceUID" {
            write!(f, "a {} series without a FrameOfReferenceUID", self.modality)
        } else {
            write!(f, "a {} series with no {other} series in its frame of reference", self.modality)
        }
    }
}

/// PET/CT pairing of a study's series.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Pairing {
    /// Pairs found.
    pub pairs: Vec<PetCtPair>,
    /// PT and CT series left without a partner.
    pub unpaired: Vec<Unpaired>,
}

/// Pairs PT and CT series of the same study that share a FrameOfReferenceUID.
/// Where several CTs share a PET's frame of reference, the one with the most
/// instances (the attenuation/diagnostic CT rather than a scout) is taken.
pub fn pair(series: &[&SeriesIndex]) -> Pairing {
    let mut out = Pairing::default();
    let for_of = |s: &SeriesIndex| s.instances.first().and_then(|h| h.frame_of_reference_uid.clone());
    let mut used_ct = std::collections::BTreeSet::new();
    for pet in series.iter().filter(|s| s.modality == "PT") {
        let Some(fr) = for_of(pet) else {
            out.unpaired.push(Unpaired {
                study_uid: pet.study_uid.clone(),
                series_uid: pet.series_uid.clone(),
                modality: "PT".into(),
                reason: "no FrameOfReferenceUID".into(),
            });
            continue;
        };
        let ct = series
            .iter()
            .filter(|s| {
                s.modality == "CT"
                    && s.study_uid == pet.study_uid
                    && for_of(s).as_deref() == Some(fr.as_str())
                    && !used_ct.contains(&s.series_uid)
            })
            .max_by_key(|s| s.frame_count());
        match ct {
            Some(ct) => {
                used_ct.insert(ct.series_uid.clone());
                out.pairs.push(PetCtPair {
                    study_uid: pet.study_uid.clone(),
                    frame_of_reference_uid: fr,
                    pet_series_uid: pet.series_uid.clone(),
                    ct_series_uid: ct.series_uid.clone(),
                });
            }
            None => out.unpaired.push(Unpaired {
                study_uid: pet.study_uid.clone(),
                series_uid: pet.series_uid.clone(),
                modality: "PT".into(),
                reason: format!("no CT series with FrameOfReferenceUID {fr}"),
            }),
        }
    }
    for ct in series.iter().filter(|s| s.modality == "CT" && !used_ct.contains(&s.series_uid)) {
        out.unpaired.push(Unpaired {
            study_uid: ct.study_uid.clone(),
            series_uid: ct.series_uid.clone(),
            modality: "CT".into(),
            reason: match for_of(ct) {
                Some(fr) => format!("no PET series with FrameOfReferenceUID {fr}"),
                None => "no FrameOfReferenceUID".into(),
            },
        });
    }
    out
}

//! Series assembly: groups instance headers by series, orders slices along the
//! slice normal (never by InstanceNumber or file name), checks orientation and
//! duplicates, works out the geometry and the SUV, then fills one f32 volume
//! from the pixel data in parallel.
//!
//! A stack is judged by each slice's distance from one uniform grid along the
//! normal (first-to-last spacing, as SimpleITK and dcm2niix place it), not by
//! neighbouring gaps: within [`GRID_TOLERANCE`] of the spacing it is one
//! regular volume (whole-body PET whose bed junctions sit a few hundredths of
//! a millimetre off). Stacks beyond it (variable spacing, gantry tilt) are
//! resampled onto a regular orthogonal grid (`geometry.rs` plans it), unless
//! the index is strict, which refuses them with the messages of old.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use rayon::prelude::*;
use serde::Serialize;

use super::error::SeriesError;
use super::geometry::{self, SliceGrid, StackPlan};
use super::header::{FrameHeader, InstanceHeader};
use super::pixels::{self, FrameTask, SampleFormat};
use super::suv::{self, PerSlice, Suv, SuvKind};
use crate::volume::{Geometry, Volume, cross, dot, norm};

/// Tolerance on direction cosines between slices of one series.
const ORIENTATION_TOLERANCE: f64 = 1e-4;
/// A slice may lie this fraction of the slice spacing away from the uniform
/// grid (along the normal and in-plane together) in a regular volume.
pub const GRID_TOLERANCE: f64 = 0.10;
/// Two slices closer than this (mm) along the normal share a position.
const SAME_POSITION_MM: f64 = 1e-3;
/// Largest number of voxels a series may declare (2^31: 8 GiB of f32).
pub const MAX_VOXELS: u64 = 1 << 31;
/// Target planes made at a time by [`SeriesPlan::load_onto`].
const ONTO_SLAB: usize = 8;

/// The unit of the voxel values of a loaded volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ValueUnit {
    /// Hounsfield units (CT).
    #[serde(rename = "HU")]
    Hounsfield,
    /// Body-weight SUV (g/ml).
    #[serde(rename = "SUVbw")]
    Suv,
    /// Lean-body-mass SUV after James (g/ml), stored so and not convertible to SUVbw.
    #[serde(rename = "SUVlbm-James")]
    SuvLbmJames,
    /// Lean-body-mass SUV after Janmahasatian (g/ml), stored so and not convertible.
    #[serde(rename = "SUVlbm-Janmahasatian")]
    SuvLbmJanmahasatian,
    /// Ideal-body-weight SUV (g/ml), stored so and not convertible to SUVbw.
    #[serde(rename = "SUVibw")]
    SuvIbw,
    /// Body-surface-area SUV (cm²/ml), stored so and not convertible to SUVbw.
    #[serde(rename = "SUVbsa")]
    SuvBsa,
    /// Activity concentration, Bq/ml.
    #[serde(rename = "Bq/ml")]
    BqPerMl,
    /// The rescaled stored value in the series' own Units.
    #[serde(rename = "rescaled")]
    Rescaled,
}

impl ValueUnit {
    /// The unit of SUV of this kind.
    pub fn of_suv(kind: SuvKind) -> Self {
        match kind {
            SuvKind::Bw => ValueUnit::Suv,
            SuvKind::LbmJames => ValueUnit::SuvLbmJames,
            SuvKind::LbmJanmahasatian => ValueUnit::SuvLbmJanmahasatian,
            SuvKind::Ibw => ValueUnit::SuvIbw,
            SuvKind::Bsa => ValueUnit::SuvBsa,
        }
    }
}

/// SUV conversion of a PET series, or why there is none.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum SuvStatus {
    /// Computed.
    Available(Box<Suv>),
    /// Not computable from the headers.
    Unavailable {
        /// Why not.
        reason: String,
    },
    /// Not a PET series.
    NotApplicable,
}

/// Which instance and frame a slice came from (for SEG/RTSTRUCT references).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SliceRef {
    /// SOPInstanceUID.
    pub sop_instance_uid: String,
    /// SOPClassUID.
    pub sop_class_uid: String,
    /// 1-based frame number for multi-frame objects.
    pub frame: Option<u32>,
    /// ImagePositionPatient of the slice (LPS mm) as the file gives it.
    pub position: [f64; 3],
}

/// What is known of a series besides its voxels.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesInfo {
    /// StudyInstanceUID.
    pub study_uid: String,
    /// SeriesInstanceUID.
    pub series_uid: String,
    /// FrameOfReferenceUID.
    pub frame_of_reference_uid: Option<String>,
    /// Modality.
    pub modality: String,
    /// Manufacturer.
    pub manufacturer: Option<String>,
    /// SeriesNumber.
    pub series_number: Option<i64>,
    /// SeriesDescription.
    pub series_description: Option<String>,
    /// Transfer syntaxes of its files.
    pub transfer_syntaxes: Vec<String>,
    /// True when the frames came from multi-frame objects.
    pub multi_frame: bool,
    /// Images expected from the headers (NumberOfSlices, ImagesInAcquisition).
    pub expected_images: Option<u32>,
    /// Number of DICOM instances.
    pub instances: usize,
    /// ImageOrientationPatient of the series.
    pub orientation: [f64; 6],
    /// The source slices, ordered along the normal. Slice k of the volume
    /// when `resampling.method` is `none`; otherwise the volume was
    /// resampled from them and outputs are mapped back onto them.
    pub slices: Vec<SliceRef>,
    /// How the stack became a regular grid: its largest deviation from a
    /// uniform grid and, where resampled, the method and displacement.
    pub slice_grid: SliceGrid,
    /// PET SUV conversion.
    pub suv: SuvStatus,
    /// Unit of the loaded voxel values.
    pub unit: ValueUnit,
    /// SOP instances present more than once (same UID; one copy kept).
    pub duplicates_dropped: Vec<PathBuf>,
    /// What was read although not as the standard wants it (files without
    /// (0002,0000), ...), one line each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// A series ready to load: geometry checked, slices ordered.
#[derive(Debug, Clone)]
pub struct SeriesPlan {
    /// Metadata.
    pub info: SeriesInfo,
    /// Voxel grid.
    pub geometry: Geometry,
    /// Pixel format.
    pub format: SampleFormat,
    /// Per slice k: (instance index into `instances`, frame index, header, SUV scale).
    slices: Vec<PlannedSlice>,
    /// The instances, after duplicate removal.
    instances: Vec<InstanceHeader>,
    /// How the source slices map onto the grid (None: slice k is grid slice k).
    stack: Option<StackPlan>,
}

#[derive(Debug, Clone)]
struct PlannedSlice {
    instance: usize,
    frame: u32,
    header: FrameHeader,
    scale: f64,
}

/// A loaded series: voxels, geometry and metadata.
#[derive(Debug, Clone)]
pub struct SeriesVolume {
    /// Metadata.
    pub info: SeriesInfo,
    /// Voxels (HU for CT; SUV for PET where available, else Bq/ml or rescaled).
    pub volume: Volume<f32>,
}

/// The instances of one series, as found by the scan.
#[derive(Debug, Clone)]
pub struct SeriesIndex {
    /// StudyInstanceUID.
    pub study_uid: String,
    /// SeriesInstanceUID.
    pub series_uid: String,
    /// Modality of its first instance.
    pub modality: String,
    /// Its instances.
    pub instances: Vec<InstanceHeader>,
    /// Refuse stacks that would need resampling (irregular spacing, gantry
    /// tilt) with the messages of old, instead of resampling them.
    pub strict_geometry: bool,
}

impl SeriesIndex {
    /// The series' frames (slices) over all its instances: a multi-frame
    /// object or a mosaic counts each of its frames.
    pub fn frame_count(&self) -> usize {
        self.instances.iter().map(|h| h.frames.len()).sum()
    }
}

/// Groups instances by (study, series), in UID order.
pub fn group(instances: Vec<InstanceHeader>) -> Vec<SeriesIndex> {
    let mut map: BTreeMap<(String, String), Vec<InstanceHeader>> = BTreeMap::new();
    for h in instances {
        map.entry((h.study_uid.clone(), h.series_uid.clone())).or_default().push(h);
    }
    map.into_iter()
        .map(|((study_uid, series_uid), mut instances)| {
            instances.sort_by(|a, b| a.path.cmp(&b.path));
            SeriesIndex {
                modality: instances.first().map(|h| h.modality.clone()).unwrap_or_default(),
                study_uid,
                series_uid,
                instances,
                strict_geometry: false,
            }
        })
        .collect()
}

/// The `what` of the refusal of positions off the normal (strict mode, and
/// positions that no shear explains).
const TILT_WHAT: &str = "slice positions (not along the slice normal: gantry tilt or shear)";

fn same_orientation(a: &[f64; 6], b: &[f64; 6]) -> bool {
    a.iter().zip(b).all(|(x, y)| (x - y).abs() <= ORIENTATION_TOLERANCE)
}

fn file_name(p: &std::path::Path) -> String {
    p.display().to_string()
}

impl SeriesIndex {
    /// Checks the series and works out its geometry, order and SUV.
    pub fn plan(&self) -> Result<SeriesPlan, SeriesError> {
        let uid = || self.series_uid.clone();
        // Same SOP Instance UID twice: keep the first (by path), report the rest.
        let mut seen = BTreeSet::new();
        let mut duplicates_dropped = Vec::new();
        let mut instances = Vec::new();
        for h in &self.instances {
            if seen.insert(h.sop_instance_uid.clone()) {
                instances.push(h.clone());
            } else {
                duplicates_dropped.push(h.path.clone());
            }
        }
        let first = instances.first().ok_or_else(|| SeriesError::Empty { series_uid: uid() })?;
        let format = SampleFormat {
            rows: first.rows,
            columns: first.columns,
            bits_allocated: first.bits_allocated,
            bits_stored: first.bits_stored,
            signed: first.signed,
        };
        for h in &instances {
            let f = SampleFormat {
                rows: h.rows,
                columns: h.columns,
                bits_allocated: h.bits_allocated,
                bits_stored: h.bits_stored,
                signed: h.signed,
            };
            if (f.rows, f.columns) != (format.rows, format.columns) {
                return Err(SeriesError::Inconsistent {
                    series_uid: uid(),
                    what: "Rows/Columns",
                    path: h.path.clone(),
                });
            }
        }
        // Flatten frames.
        let mut slices: Vec<PlannedSlice> = instances
            .iter()
            .enumerate()
            .flat_map(|(i, h)| {
                h.frames.iter().enumerate().map(move |(f, fh)| PlannedSlice {
                    instance: i,
                    frame: f as u32,
                    header: fh.clone(),
                    scale: 1.0,
                })
            })
            .collect();
        let orientation = slices[0].header.orientation;
        let spacing_ij = slices[0].header.pixel_spacing;
        for s in &slices {
            if !same_orientation(&s.header.orientation, &orientation) {
                return Err(SeriesError::MixedOrientation {
                    series_uid: uid(),
                    path: instances[s.instance].path.clone(),
                    found: s.header.orientation.to_vec(),
                    expected: orientation.to_vec(),
                });
            }
            if s.header.pixel_spacing.iter().zip(&spacing_ij).any(|(a, b)| (a - b).abs() > 1e-4 * b.abs().max(1.0)) {
                return Err(SeriesError::Inconsistent {
                    series_uid: uid(),
                    what: "PixelSpacing",
                    path: instances[s.instance].path.clone(),
                });
            }
        }
        let row = [orientation[0], orientation[1], orientation[2]];
        let col = [orientation[3], orientation[4], orientation[5]];
        let n = cross(row, col);
        let nn = norm(n);
        let normal = [n[0] / nn, n[1] / nn, n[2] / nn];
        let pos = |s: &PlannedSlice| dot(s.header.position, normal);
        slices.sort_by(|a, b| pos(a).total_cmp(&pos(b)));

        for w in slices.windows(2) {
            if (pos(&w[1]) - pos(&w[0])).abs() < SAME_POSITION_MM {
                return Err(SeriesError::DuplicatePosition {
                    series_uid: uid(),
                    position_mm: pos(&w[0]),
                    first: file_name(&instances[w[0].instance].path),
                    second: file_name(&instances[w[1].instance].path),
                });
            }
        }
        let count = slices.len();
        let voxels = u64::from(format.rows) * u64::from(format.columns) * count as u64;
        if voxels > MAX_VOXELS {
            return Err(SeriesError::TooLarge {
                series_uid: uid(),
                what: "voxel count",
                value: voxels,
                limit: MAX_VOXELS,
            });
        }
        let positions: Vec<[f64; 3]> = slices.iter().map(|s| s.header.position).collect();
        let shape = geometry::analyse(&positions, row, col, normal);
        let name = |k: usize| file_name(&instances[slices[k].instance].path);
        if let Some(needs) = shape.needs_resampling()
            && self.strict_geometry
        {
            return Err(match needs {
                geometry::Needs::Spacing { worst_gap } => SeriesError::NonUniformSpacing {
                    series_uid: uid(),
                    gap: shape.gaps[worst_gap],
                    expected: shape.median_gap,
                    before: name(worst_gap),
                    after: name(worst_gap + 1),
                },
                geometry::Needs::Tilt { first_off } => SeriesError::Inconsistent {
                    series_uid: uid(),
                    what: TILT_WHAT,
                    path: instances[slices[first_off].instance].path.clone(),
                },
            });
        }
        if let Some(gap) = shape.missing_slices() {
            return Err(SeriesError::NonUniformSpacing {
                series_uid: uid(),
                gap: shape.gaps[gap],
                expected: shape.median_gap,
                before: name(gap),
                after: name(gap + 1),
            });
        }
        if let Some(k) = shape.wandering() {
            // In-plane offsets that no shear explains: not a tilt, refused.
            return Err(SeriesError::Inconsistent {
                series_uid: uid(),
                what: TILT_WHAT,
                path: instances[slices[k].instance].path.clone(),
            });
        }
        let fill = if first.modality == "CT" { -1024.0 } else { 0.0 };
        let (grid, slice_grid, stack) = shape.plan(
            [format.columns as usize, format.rows as usize],
            [spacing_ij[1], spacing_ij[0]],
            [row, col, normal],
            fill,
        );
        let out_voxels = grid.dims.iter().map(|&d| d as u64).product::<u64>();
        if out_voxels > MAX_VOXELS {
            return Err(SeriesError::TooLarge {
                series_uid: uid(),
                what: "voxel count after resampling",
                value: out_voxels,
                limit: MAX_VOXELS,
            });
        }
        if stack.is_some() {
            let series = crate::queue::uid_hash(&self.series_uid);
            tracing::info!(
                series = %series,
                method = slice_grid.method.name(),
                max_displacement_mm = slice_grid.max_displacement_mm,
                "series {series}: slice stack resampled onto a regular grid ({}, at most {:.2} mm moved)",
                slice_grid.method.name(),
                slice_grid.max_displacement_mm
            );
        }

        // SUV for PET.
        let is_pet = first.modality == "PT";
        let (suv_status, unit) = if is_pet {
            self.suv(&instances, &mut slices)
        } else if first.modality == "CT" {
            (SuvStatus::NotApplicable, ValueUnit::Hounsfield)
        } else {
            (SuvStatus::NotApplicable, ValueUnit::Rescaled)
        };

        let geometry = grid;
        // A mosaic's slices are tiles of one single-frame image, not frames.
        let multi_frame =
            instances.iter().any(|h| h.number_of_frames > 1 || (h.frames.len() > 1 && h.mosaic.is_none()));
        let mut warnings = Vec::new();
        let no_group_length = instances.iter().filter(|h| h.meta_group_length_missing).count();
        if no_group_length > 0 {
            let w = format!(
                "{no_group_length} of {} files lack (0002,0000) File Meta Information Group Length; read all the same",
                instances.len()
            );
            let series = crate::queue::uid_hash(&self.series_uid);
            tracing::warn!(series = %series, "series {series}: {w}");
            warnings.push(w);
        }
        let info = SeriesInfo {
            study_uid: self.study_uid.clone(),
            series_uid: self.series_uid.clone(),
            frame_of_reference_uid: first.frame_of_reference_uid.clone(),
            modality: first.modality.clone(),
            manufacturer: first.manufacturer.clone(),
            series_number: first.series_number,
            series_description: first.series_description.clone(),
            transfer_syntaxes: instances
                .iter()
                .map(|h| h.transfer_syntax.clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
            multi_frame,
            expected_images: first.expected_images,
            instances: instances.len(),
            orientation,
            slices: slices
                .iter()
                .map(|s| {
                    let h = &instances[s.instance];
                    SliceRef {
                        sop_instance_uid: h.sop_instance_uid.clone(),
                        sop_class_uid: h.sop_class_uid.clone(),
                        frame: multi_frame.then_some(s.frame + 1),
                        position: s.header.position,
                    }
                })
                .collect(),
            slice_grid,
            suv: suv_status,
            unit,
            duplicates_dropped,
            warnings,
        };
        Ok(SeriesPlan { info, geometry, format, slices, instances, stack })
    }

    /// Computes each slice's SUV factor (QIBA, the SUV manual) and stores it as
    /// the slice's scale. Slices may differ: Philips factors are per instance,
    /// and back-computed scan starts and DecayCorrection NONE are per slice.
    fn suv(&self, instances: &[InstanceHeader], slices: &mut [PlannedSlice]) -> (SuvStatus, ValueUnit) {
        let earliest = instances
            .iter()
            .flat_map(|h| h.frames.iter())
            .filter_map(|f| f.acquisition.as_deref())
            .filter_map(|t| suv::parse_dt(t).map(|p| (p, t)))
            .min_by_key(|(p, _)| *p)
            .map(|(_, t)| t.to_string());
        let mut per_slice = Vec::with_capacity(slices.len());
        for s in slices.iter() {
            let h = &instances[s.instance];
            let Some(pet) = &h.pet else {
                return (SuvStatus::Unavailable { reason: "not a PET instance".into() }, ValueUnit::Rescaled);
            };
            match suv::compute(pet, earliest.as_deref(), s.header.acquisition.as_deref()) {
                Ok(v) => per_slice.push(v),
                Err(reason) => {
                    // No SUV: fall back to Bq/ml where the units allow it.
                    let (unit, to_bqml) = match (pet.units.as_deref(), pet.philips_activity_scale) {
                        (Some("BQML"), _) => (ValueUnit::BqPerMl, Some(1.0)),
                        (Some("CNTS"), Some(a)) if a > 0.0 => (ValueUnit::BqPerMl, Some(a)),
                        _ => (ValueUnit::Rescaled, None),
                    };
                    if let Some(a) = to_bqml {
                        for s in slices.iter_mut() {
                            s.scale = a;
                        }
                    }
                    return (SuvStatus::Unavailable { reason }, unit);
                }
            }
        }
        let kind = per_slice[0].kind;
        if let Some(other) = per_slice.iter().find(|v| v.kind != kind) {
            return (
                SuvStatus::Unavailable { reason: format!("slices mix {} and {}", kind.name(), other.kind.name()) },
                ValueUnit::Rescaled,
            );
        }
        for (s, v) in slices.iter_mut().zip(&per_slice) {
            s.scale = v.factor;
        }
        // The series reports the factor of its first slice, and the range when
        // slices differ.
        let mut first = per_slice[0].clone();
        let (lo, hi) = per_slice.iter().fold((f64::INFINITY, 0f64), |(lo, hi), v| (lo.min(v.factor), hi.max(v.factor)));
        if hi - lo > 1e-12 * hi {
            let decays: Vec<f64> = per_slice.iter().filter_map(|v| v.decay_seconds).collect();
            first.per_slice = Some(PerSlice {
                min_factor: lo,
                max_factor: hi,
                min_decay_seconds: decays.iter().copied().reduce(f64::min),
                max_decay_seconds: decays.iter().copied().reduce(f64::max),
            });
        }
        (SuvStatus::Available(Box::new(first)), ValueUnit::of_suv(kind))
    }
}

impl SeriesPlan {
    /// Reads every slice's pixels into one volume. Decoding runs in parallel,
    /// one file at a time per thread, writing straight into the volume, so peak
    /// memory is the volume plus one file per thread.
    pub fn load(&self) -> Result<SeriesVolume, SeriesError> {
        self.warn_duplicates();
        let plane = self.format.columns as usize * self.format.rows as usize;
        // Resampled stacks are read into a stack of the source slices first.
        let mut data = vec![0f32; plane * self.slices.len()];
        crate::sys::advise_huge_pages(&mut data);
        // Group slice buffers by instance.
        let mut per_instance: Vec<Vec<FrameTask<'_>>> = (0..self.instances.len()).map(|_| Vec::new()).collect();
        for (s, out) in self.slices.iter().zip(data.chunks_mut(plane)) {
            per_instance[s.instance].push(FrameTask {
                frame: s.frame,
                out,
                slope: s.header.slope,
                intercept: s.header.intercept,
                scale: s.scale,
            });
        }
        per_instance.into_par_iter().enumerate().try_for_each(|(i, mut tasks)| {
            let h = &self.instances[i];
            match &h.mosaic {
                Some(m) => super::mosaic::decode(&h.path, &h.transfer_syntax, self.format_of(h), m, &mut tasks),
                None => pixels::decode_frames(
                    &h.path,
                    &h.transfer_syntax,
                    self.format_of(h),
                    h.number_of_frames,
                    &mut tasks,
                ),
            }
            .map_err(|source| SeriesError::File { series_uid: self.info.series_uid.clone(), source })
        })?;
        let data = match &self.stack {
            Some(stack) => stack.resample(&data, &self.geometry),
            None => data,
        };
        Ok(SeriesVolume { info: self.info.clone(), volume: Volume { geometry: self.geometry.clone(), data } })
    }

    /// One line per series as it is read (not at planning: the daemon plans
    /// a study from its headers before loading it), not one per duplicate (a
    /// re-sent study has dozens); no path, no UID: they may name the patient.
    fn warn_duplicates(&self) {
        if !self.info.duplicates_dropped.is_empty() {
            let series = crate::queue::uid_hash(&self.info.series_uid);
            tracing::warn!(
                series = %series,
                "series {series}: {} duplicate SOP instance(s) ignored (the same image sent again)",
                self.info.duplicates_dropped.len()
            );
        }
    }

    /// The series resampled onto `target` (trilinear, `fill` outside), as
    /// [`crate::volume::resample_linear`] on [`Self::load`]'s volume gives it,
    /// bit for bit, without ever holding the series whole: the target is
    /// made [`ONTO_SLAB`] planes at a time from the source slices those
    /// planes read, each slice decoded once and dropped when no later slab
    /// reads it. A CT of 512×512×1000 brought onto its PET's grid costs a few
    /// dozen of its slices instead of 1 GiB. A stack that is itself
    /// resampled (irregular spacing, gantry tilt) or kept in multi-frame or
    /// mosaic files is loaded whole and resampled as before.
    pub fn load_onto(&self, target: &Geometry, fill: f32) -> Result<SeriesVolume, SeriesError> {
        let one_frame_each = self.instances.len() == self.slices.len()
            && self.instances.iter().all(|h| h.mosaic.is_none() && h.number_of_frames <= 1);
        if self.stack.is_some() || !one_frame_each {
            let sv = self.load()?;
            let volume = crate::volume::resample_linear(&sv.volume, target, fill);
            return Ok(SeriesVolume { info: sv.info, volume });
        }
        self.warn_duplicates();
        let plane = self.format.columns as usize * self.format.rows as usize;
        let tplane = target.dims[0] * target.dims[1];
        let mut data = vec![fill; target.voxel_count()];
        let mut held: BTreeMap<usize, Vec<f32>> = BTreeMap::new();
        for (n, out) in data.chunks_mut((tplane * ONTO_SLAB).max(1)).enumerate() {
            let k0 = n * ONTO_SLAB;
            let ks = k0..k0 + out.len() / tplane.max(1);
            let Some(zs) = crate::volume::source_planes(&self.geometry, target, ks) else {
                continue;
            };
            held.retain(|z, _| zs.contains(z));
            let missing: Vec<usize> = zs.clone().filter(|z| !held.contains_key(z)).collect();
            let decoded: Vec<(usize, Vec<f32>)> = missing
                .into_par_iter()
                .map(|z| {
                    let s = &self.slices[z];
                    let h = &self.instances[s.instance];
                    let mut buf = vec![0f32; plane];
                    let mut tasks = [FrameTask {
                        frame: s.frame,
                        out: &mut buf,
                        slope: s.header.slope,
                        intercept: s.header.intercept,
                        scale: s.scale,
                    }];
                    pixels::decode_frames(
                        &h.path,
                        &h.transfer_syntax,
                        self.format_of(h),
                        h.number_of_frames,
                        &mut tasks,
                    )
                    .map_err(|source| SeriesError::File { series_uid: self.info.series_uid.clone(), source })?;
                    Ok((z, buf))
                })
                .collect::<Result<_, SeriesError>>()?;
            held.extend(decoded);
            let planes: Vec<&[f32]> = zs.clone().map(|z| held.get(&z).map_or(&[][..], |v| &v[..])).collect();
            let z0 = zs.start;
            crate::volume::resample_linear_planes(&self.geometry, |z| planes[z - z0], target, k0, out);
        }
        Ok(SeriesVolume { info: self.info.clone(), volume: Volume { geometry: target.clone(), data } })
    }

    fn format_of(&self, h: &InstanceHeader) -> SampleFormat {
        SampleFormat {
            rows: h.rows,
            columns: h.columns,
            bits_allocated: h.bits_allocated,
            bits_stored: h.bits_stored,
            signed: h.signed,
        }
    }
}

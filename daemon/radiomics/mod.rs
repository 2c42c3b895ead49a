//! Radiomics features exact to PyRadiomics 3.0.1: its parameter files, its
//! pre-processing (mask checks, normalisation, resegmentation, pre-crop), its
//! image types and feature classes, and its output names
//! (`original_firstorder_Mean`, `wavelet-LLH_glcm_Idmn`, ...). Each module
//! mirrors one PyRadiomics module; `extract` is `RadiomicsFeatureExtractor.execute`.

pub mod discretise;
pub mod filters;
pub mod firstorder;
pub mod glcm;
pub mod gldm;
pub mod glrlm;
pub mod glszm;
pub mod lbp;
pub mod ngtdm;
pub mod output;
pub mod params;
pub mod perturb;
pub mod resample;
pub mod roi;
pub mod shape;
pub mod shape2d;
pub mod study;

use serde_json::{Value as Json, json};

use crate::export::nifti::StoredScalar;
use crate::volume::Volume;
use params::{FeatureClass, ImageType, Params, ResegmentMode, Settings};
pub use resample::PixelType;

/// Extraction that cannot go ahead, as PyRadiomics would refuse it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RadiomicsError {
    /// The mask holds only background.
    #[error("no labels found in the mask (nothing is segmented)")]
    EmptyMask,
    /// The requested label is not in the mask.
    #[error("label {label} is not present in the mask (labels present: {present})")]
    LabelAbsent {
        /// The label asked for.
        label: i64,
        /// The labels found.
        present: String,
    },
    /// Image and mask grids differ and correctMask is off.
    #[error("image and mask geometry differ ({what}); set correctMask: true to resample the mask onto the image")]
    GeometryMismatch {
        /// What differs.
        what: String,
    },
    /// The ROI bounding box extends past the image.
    #[error("the ROI's bounding box lies outside the image")]
    RoiOutsideImage,
    /// The ROI is a single voxel.
    #[error("the ROI holds a single voxel; features cannot be extracted from one voxel")]
    SingleVoxel,
    /// Fewer dimensions than minimumROIDimensions.
    #[error("the ROI spans {found} dimension(s), minimumROIDimensions asks for {required}")]
    TooFewDimensions {
        /// Dimensions with more than one voxel.
        found: usize,
        /// The setting.
        required: i64,
    },
    /// Fewer voxels than minimumROISize.
    #[error("the ROI holds {found} voxels, minimumROISize asks for more than {required}")]
    TooSmall {
        /// Voxels in the ROI.
        found: usize,
        /// The setting.
        required: i64,
    },
    /// resegmentRange left at most one voxel.
    #[error("resegmentation left {kept} voxel(s) with label {label}")]
    ResegmentedAway {
        /// The label.
        label: i64,
        /// Voxels left.
        kept: usize,
    },
    /// shape2D on a ROI more than one voxel thick along force2Ddimension.
    #[error(
        "shape2D needs a ROI one voxel thick along force2Ddimension {axis}; this one is thicker (PyRadiomics refuses it too)"
    )]
    Shape2DNotFlat {
        /// force2Ddimension.
        axis: i64,
    },
    /// A setting or image type edgeseg does not implement.
    #[error("{0} is not supported by edgeseg's radiomics")]
    Unsupported(String),
    /// A parameter override for an image type is invalid.
    #[error(transparent)]
    Params(#[from] params::ParamsError),
}

/// Feature values of one class, in PyRadiomics' order, without prefix.
#[derive(Debug, Default, Clone)]
pub struct Features {
    /// (name, value) pairs.
    pub items: Vec<(String, f64)>,
}

impl Features {
    /// Adds one value.
    pub fn push(&mut self, name: String, value: f64) {
        self.items.push((name, value));
    }
}

/// One extraction result: every output name and its value (numbers for
/// features, strings / lists / objects for diagnostics), in PyRadiomics' order.
pub type Output = Vec<(String, Json)>;

/// A grey-value image on a grid (x fastest), with its geometry.
#[derive(Debug, Clone)]
pub struct Image {
    /// Voxel counts x, y, z.
    pub dims: [usize; 3],
    /// Spacing x, y, z (mm).
    pub spacing: [f64; 3],
    /// Grey values.
    pub data: Vec<f64>,
}

impl Image {
    fn crop(&self, lo: [usize; 3], hi: [usize; 3]) -> Image {
        Image {
            dims: [hi[0] - lo[0] + 1, hi[1] - lo[1] + 1, hi[2] - lo[2] + 1],
            spacing: self.spacing,
            data: crop(&self.data, self.dims, lo, hi),
        }
    }
}

fn crop<T: Copy>(data: &[T], dims: [usize; 3], lo: [usize; 3], hi: [usize; 3]) -> Vec<T> {
    crop_map(data, dims, lo, hi, |v| v)
}

/// [`crop`] with each voxel valued by `value` on the way (no copy of the
/// box in the source type).
fn crop_map<T: Copy, O>(
    data: &[T],
    dims: [usize; 3],
    lo: [usize; 3],
    hi: [usize; 3],
    value: impl Fn(T) -> O,
) -> Vec<O> {
    let mut out = Vec::with_capacity((hi[0] - lo[0] + 1) * (hi[1] - lo[1] + 1) * (hi[2] - lo[2] + 1));
    for z in lo[2]..=hi[2] {
        for y in lo[1]..=hi[1] {
            let row = (z * dims[1] + y) * dims[0];
            out.extend(data[row + lo[0]..=row + hi[0]].iter().map(|&v| value(v)));
        }
    }
    out
}

/// A discretised ROI, cropped to its bounding box: what the texture classes read.
pub struct Roi {
    /// Voxel counts x, y, z.
    pub dims: [usize; 3],
    /// Spacing x, y, z (mm).
    pub spacing: [f64; 3],
    /// Discretised level per voxel, 0 outside the ROI.
    pub levels: Vec<u32>,
    /// Levels present, ascending.
    pub grey_levels: Vec<u32>,
    /// Highest level (PyRadiomics' Ng).
    pub ng: u32,
    /// Level → index into `grey_levels`.
    pub level_index: Vec<usize>,
}

impl Roi {
    fn new(image: &[f64], mask: &[bool], dims: [usize; 3], spacing: [f64; 3], s: &Settings) -> Roi {
        let b = discretise::bin_image(image, mask, s);
        let mut level_index = vec![0; b.ng as usize + 1];
        for (k, &l) in b.grey_levels.iter().enumerate() {
            level_index[l as usize] = k;
        }
        Roi { dims, spacing, levels: b.levels, grey_levels: b.grey_levels, ng: b.ng, level_index }
    }

    /// Linear index of (x, y, z).
    pub fn index(&self, x: usize, y: usize, z: usize) -> usize {
        x + self.dims[0] * (y + self.dims[1] * z)
    }

    /// Size in z, y, x order (PyRadiomics' array shape).
    pub fn size_zyx(&self) -> [usize; 3] {
        [self.dims[2], self.dims[1], self.dims[0]]
    }

    /// Spacing in z, y, x order.
    pub fn spacing_zyx(&self) -> [f64; 3] {
        [self.spacing[2], self.spacing[1], self.spacing[0]]
    }

    /// The axis (z, y, x order) left out by force2D.
    pub fn force2d(&self, s: &Settings) -> Option<usize> {
        s.force_2d.then_some(s.force_2d_dimension as usize)
    }

    /// Calls `f(v, u)` for every pair of ROI voxels with u = v + off (z, y, x).
    pub fn for_each_pair_index(&self, off: [i64; 3], mut f: impl FnMut(usize, usize)) {
        let [nx, ny, nz] = self.dims.map(|d| d as i64);
        let (dz, dy, dx) = (off[0], off[1], off[2]);
        for z in 0.max(-dz)..nz.min(nz - dz) {
            for y in 0.max(-dy)..ny.min(ny - dy) {
                let row = ((z * ny + y) * nx) as usize;
                let nrow = (((z + dz) * ny + y + dy) * nx) as usize;
                for x in 0.max(-dx)..nx.min(nx - dx) {
                    let v = row + x as usize;
                    if self.levels[v] == 0 {
                        continue;
                    }
                    let u = (nrow as i64 + x + dx) as usize;
                    if self.levels[u] != 0 {
                        f(v, u);
                    }
                }
            }
        }
    }

    /// Calls `f(i, j)` with the level indices of every pair u = v + off.
    pub fn for_each_pair(&self, off: [i64; 3], mut f: impl FnMut(usize, usize)) {
        self.for_each_pair_index(off, |v, u| {
            f(self.level_index[self.levels[v] as usize], self.level_index[self.levels[u] as usize])
        });
    }
}

/// PyRadiomics' `generate_angles`: offsets (z, y, x) whose Chebyshev length is
/// one of `distances`, each shorter than the ROI along its axis, none along
/// the force2D axis; one of each ± pair unless `bidirectional`.
pub fn generate_angles(
    size: [usize; 3],
    distances: &[i64],
    bidirectional: bool,
    force2d: Option<usize>,
) -> Vec<[i64; 3]> {
    let maxd = distances.iter().copied().max().unwrap_or(1).max(1);
    let n = 2 * maxd + 1;
    let total = n * n * n;
    let mut out = Vec::new();
    for a in 0..total {
        if !bidirectional && a >= total / 2 {
            break;
        }
        if a == total / 2 {
            continue;
        }
        let off = [maxd - a / (n * n), maxd - (a / n) % n, maxd - a % n];
        if (0..3).any(|d| off[d].unsigned_abs() as usize >= size[d]) {
            continue;
        }
        if force2d.is_some_and(|d| d < 3 && off[d] != 0) {
            continue;
        }
        let cheb = off.iter().map(|v| v.abs()).max().unwrap_or(0);
        if distances.contains(&cheb) {
            out.push(off);
        }
    }
    out
}

/// numpy.nanmean.
pub fn nanmean(v: &[f64]) -> f64 {
    let kept: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
    if kept.is_empty() { f64::NAN } else { kept.iter().sum::<f64>() / kept.len() as f64 }
}

/// Names of the features to compute for one class: the named ones, or all
/// non-deprecated ones, in PyRadiomics' order (sorted as its method names).
fn enabled_features(class: FeatureClass, named: &[String]) -> Vec<&'static str> {
    let mut all: Vec<&'static str> = class
        .features()
        .iter()
        .filter(|(name, dep)| if named.is_empty() { !dep } else { named.iter().any(|n| n == name) })
        .map(|(n, _)| *n)
        .collect();
    all.sort_by_key(|n| format!("get{n}FeatureValue"));
    all
}

/// Bounding box (inclusive, x y z) and voxel count of a mask.
fn bounding_box(mask: &[bool], dims: [usize; 3]) -> Option<([usize; 3], [usize; 3], usize)> {
    let mut lo = [usize::MAX; 3];
    let mut hi = [0usize; 3];
    let mut n = 0;
    for z in 0..dims[2] {
        for y in 0..dims[1] {
            for x in 0..dims[0] {
                if mask[x + dims[0] * (y + dims[1] * z)] {
                    n += 1;
                    for (d, v) in [x, y, z].into_iter().enumerate() {
                        lo[d] = lo[d].min(v);
                        hi[d] = hi[d].max(v);
                    }
                }
            }
        }
    }
    (n > 0).then_some((lo, hi, n))
}

/// PyRadiomics' checkMask on a box: at least two voxels, enough dimensions, enough voxels.
fn check_box(lo: [usize; 3], hi: [usize; 3], n: usize, s: &Settings) -> Result<(), RadiomicsError> {
    let nd = (0..3).filter(|&d| hi[d] > lo[d]).count();
    if nd == 0 {
        return Err(RadiomicsError::SingleVoxel);
    }
    if (nd as i64) < s.minimum_roi_dimensions {
        return Err(RadiomicsError::TooFewDimensions { found: nd, required: s.minimum_roi_dimensions });
    }
    if let Some(min) = s.minimum_roi_size
        && n as i64 <= min
    {
        return Err(RadiomicsError::TooSmall { found: n, required: min });
    }
    Ok(())
}

/// The voxels of one label, cropped to their bounding box: the box (inclusive,
/// x y z, on the mask's grid), the voxel count and the cropped mask.
#[derive(Clone)]
struct RoiBox {
    lo: [usize; 3],
    hi: [usize; 3],
    count: usize,
    mask: Vec<bool>,
}

impl RoiBox {
    fn dims(&self) -> [usize; 3] {
        [self.hi[0] - self.lo[0] + 1, self.hi[1] - self.lo[1] + 1, self.hi[2] - self.lo[2] + 1]
    }
}

/// The voxels of `data` (x fastest, `dims`) whose value cast to an integer is
/// `label`, cropped to their bounding box; None when there are none. One scan
/// of each row for the box, then a copy of the box only.
fn roi_box(data: &[f32], dims: [usize; 3], label: u32) -> Option<RoiBox> {
    roi_box_by(data, dims, |v: &f32| *v as u32 == label, |_| false)
}

/// `roi_box` with the test of a voxel given, and a test of a row that
/// tells it holds no such voxel (without looking at each).
fn roi_box_by<T: Copy + Sync>(
    data: &[T],
    dims: [usize; 3],
    hit: impl Fn(&T) -> bool + Sync,
    skip_row: impl Fn(&[T]) -> bool + Sync,
) -> Option<RoiBox> {
    use rayon::prelude::*;
    let (hit, skip_row) = (&hit, &skip_row);
    // Rows in parallel: (lo, hi) of the rows holding the label.
    let none = ([usize::MAX; 3], [0usize; 3]);
    let (lo, hi) = data
        .par_chunks_exact(dims[0].max(1))
        .enumerate()
        .with_min_len(64)
        .fold(
            || none,
            |(lo, hi), (r, row)| {
                if skip_row(row) {
                    return (lo, hi);
                }
                let Some(first) = row.iter().position(hit) else { return (lo, hi) };
                let last = row.iter().rposition(hit).unwrap_or(first);
                let (y, z) = (r % dims[1], r / dims[1]);
                ([lo[0].min(first), lo[1].min(y), lo[2].min(z)], [hi[0].max(last), hi[1].max(y), hi[2].max(z)])
            },
        )
        .reduce(|| none, |(a, b), (c, d)| ([0, 1, 2].map(|i| a[i].min(c[i])), [0, 1, 2].map(|i| b[i].max(d[i]))));
    if lo[0] == usize::MAX {
        return None;
    }
    let mut mask = Vec::with_capacity((hi[0] - lo[0] + 1) * (hi[1] - lo[1] + 1) * (hi[2] - lo[2] + 1));
    for z in lo[2]..=hi[2] {
        for y in lo[1]..=hi[1] {
            let row = (z * dims[1] + y) * dims[0];
            mask.extend(data[row + lo[0]..=row + hi[0]].iter().map(hit));
        }
    }
    let count = mask.iter().filter(|m| **m).count();
    Some(RoiBox { lo, hi, count, mask })
}

/// Nearest-neighbour resampling of a label volume onto another grid (correctMask).
fn resample_nearest(src: &Volume<f32>, target: &crate::volume::Geometry) -> Vec<f32> {
    let mut out = vec![0.0f32; target.voxel_count()];
    let g = &src.geometry;
    for k in 0..target.dims[2] {
        for j in 0..target.dims[1] {
            for i in 0..target.dims[0] {
                let p = target.voxel_to_lps([i as f64, j as f64, k as f64]);
                let c = g.lps_to_voxel(p);
                let r: Vec<i64> = c.iter().map(|v| (v + 0.5).floor() as i64).collect();
                if (0..3).all(|d| r[d] >= 0 && (r[d] as usize) < g.dims[d]) {
                    out[target.index(i, j, k)] = src.data[g.index(r[0] as usize, r[1] as usize, r[2] as usize)];
                }
            }
        }
    }
    out
}

fn geometry_difference(a: &crate::volume::Geometry, b: &crate::volume::Geometry, tol: Option<f64>) -> Option<String> {
    if a.dims != b.dims {
        return Some(format!("size {:?} against {:?}", a.dims, b.dims));
    }
    let coord = tol.unwrap_or(1e-6) * a.spacing[0];
    let dir = tol.unwrap_or(1e-6);
    if (0..3).any(|d| (a.spacing[d] - b.spacing[d]).abs() > coord) {
        return Some("spacing".into());
    }
    if (0..3).any(|d| (a.origin[d] - b.origin[d]).abs() > coord) {
        return Some("origin".into());
    }
    if (0..3).any(|r| (0..3).any(|c| (a.direction[r][c] - b.direction[r][c]).abs() > dir)) {
        return Some("direction".into());
    }
    None
}

fn settings_json(s: &Settings) -> Json {
    let mut m = serde_json::Map::new();
    m.insert("minimumROIDimensions".into(), json!(s.minimum_roi_dimensions));
    m.insert("minimumROISize".into(), json!(s.minimum_roi_size));
    m.insert("normalize".into(), json!(s.normalize));
    m.insert("normalizeScale".into(), json!(s.normalize_scale));
    m.insert("removeOutliers".into(), json!(s.remove_outliers));
    m.insert("resampledPixelSpacing".into(), json!(s.resampled_pixel_spacing));
    m.insert("interpolator".into(), json!(s.interpolator));
    m.insert("preCrop".into(), json!(s.pre_crop));
    m.insert("padDistance".into(), json!(s.pad_distance));
    m.insert("distances".into(), json!(s.distances));
    m.insert("force2D".into(), json!(s.force_2d));
    m.insert("force2Ddimension".into(), json!(s.force_2d_dimension));
    m.insert("resegmentRange".into(), json!(s.resegment_range));
    m.insert("label".into(), json!(s.label));
    m.insert("additionalInfo".into(), json!(s.additional_info));
    for k in &s.explicit {
        let v = match k.as_str() {
            "binWidth" => json!(s.bin_width),
            "binCount" => json!(s.bin_count),
            "correctMask" => json!(s.correct_mask),
            "geometryTolerance" => json!(s.geometry_tolerance),
            "sigma" => json!(s.sigma),
            "symmetricalGLCM" => json!(s.symmetrical_glcm),
            "weightingNorm" => json!(s.weighting_norm.map(|w| w.name())),
            "gldm_a" => json!(s.gldm_a),
            "voxelArrayShift" => json!(s.voxel_array_shift),
            "resegmentShape" => json!(s.resegment_shape),
            "start_level" => json!(s.start_level),
            "level" => json!(s.level),
            "wavelet" => json!(s.wavelet),
            "gradientUseSpacing" => json!(s.gradient_use_spacing),
            "lbp2DRadius" => json!(s.lbp2d_radius),
            "lbp2DSamples" => json!(s.lbp2d_samples),
            "lbp2DMethod" => json!(s.lbp2d_method.name()),
            "lbp3DLevels" => json!(s.lbp3d_levels),
            "lbp3DIcosphereRadius" => json!(s.lbp3d_icosphere_radius),
            "lbp3DIcosphereSubdivision" => json!(s.lbp3d_icosphere_subdivision),
            _ => continue,
        };
        m.insert(k.clone(), v);
    }
    Json::Object(m)
}

/// Connected components (26-connectivity) of a mask.
fn component_count(mask: &[bool], dims: [usize; 3]) -> usize {
    let mut seen = vec![false; mask.len()];
    let mut count = 0;
    let mut stack = Vec::new();
    for s in 0..mask.len() {
        if !mask[s] || seen[s] {
            continue;
        }
        count += 1;
        seen[s] = true;
        stack.push(s);
        while let Some(v) = stack.pop() {
            let (x, y, z) = ((v % dims[0]) as i64, ((v / dims[0]) % dims[1]) as i64, (v / (dims[0] * dims[1])) as i64);
            for dz in -1..=1 {
                for dy in -1..=1 {
                    for dx in -1..=1 {
                        let (xx, yy, zz) = (x + dx, y + dy, z + dz);
                        if xx < 0
                            || yy < 0
                            || zz < 0
                            || xx >= dims[0] as i64
                            || yy >= dims[1] as i64
                            || zz >= dims[2] as i64
                        {
                            continue;
                        }
                        let u = (xx + dims[0] as i64 * (yy + dims[1] as i64 * zz)) as usize;
                        if mask[u] && !seen[u] {
                            seen[u] = true;
                            stack.push(u);
                        }
                    }
                }
            }
        }
    }
    count
}

fn tuple3<T: serde::Serialize>(v: [T; 3]) -> Json {
    json!(v)
}

/// A voxel type an image is held in: f32, or f64 where the file holds values
/// float32 would round (float64, 32- and 64-bit integers), so that the
/// features see what PyRadiomics sees (SimpleITK keeps the file's type,
/// numpy reads it as it is).
pub trait Voxel: Copy + Into<f64> + Send + Sync {}
impl Voxel for f32 {}
impl Voxel for f64 {}

/// Labels present in a label volume (values cast to integers, as
/// PyRadiomics' getMask): one scan, a set insert only where the stored
/// value changes (equal stored values have equal labels).
fn labels_present_by<T: Copy + PartialEq + Sync>(
    data: &[T],
    label: impl Fn(T) -> u32 + Sync,
    uniform: impl Fn(&[T]) -> Option<T> + Sync,
) -> std::collections::BTreeSet<u32> {
    use rayon::prelude::*;
    let (label, uniform) = (&label, &uniform);
    data.par_chunks(1 << 12)
        .with_min_len(64)
        .fold(std::collections::BTreeSet::new, |mut set, part| {
            if let Some(v) = uniform(part) {
                set.insert(label(v));
                return set;
            }
            let mut last = None;
            for &v in part {
                if last != Some(v) {
                    set.insert(label(v));
                    last = Some(v);
                }
            }
            set
        })
        .reduce(std::collections::BTreeSet::new, |mut a, b| {
            a.extend(b);
            a
        })
}

/// A label map the extraction reads: the labels (a voxel's value cast to an
/// integer, as PyRadiomics' getMask), and its values as f32 for the paths
/// that resample it.
trait LabelVoxels: Sync {
    fn geometry(&self) -> &crate::volume::Geometry;
    fn labels_present(&self) -> std::collections::BTreeSet<u32>;
    fn roi_box(&self, label: u32) -> Option<RoiBox>;
    fn values_f32(&self) -> std::borrow::Cow<'_, [f32]>;
    /// Shape features worked out already for exactly these arguments
    /// (`shape::compute`'s), if any.
    fn shape_ready(
        &self,
        _mask: &[bool],
        _dims: [usize; 3],
        _spacing: [f64; 3],
        _enabled: &[&str],
    ) -> Option<Features> {
        None
    }
}

impl LabelVoxels for Volume<f32> {
    fn geometry(&self) -> &crate::volume::Geometry {
        &self.geometry
    }
    fn labels_present(&self) -> std::collections::BTreeSet<u32> {
        labels_present_by(&self.data, |v| v as u32, |_| None)
    }
    fn roi_box(&self, label: u32) -> Option<RoiBox> {
        roi_box(&self.data, self.geometry.dims, label)
    }
    fn values_f32(&self) -> std::borrow::Cow<'_, [f32]> {
        std::borrow::Cow::Borrowed(&self.data)
    }
}

/// A mask file's voxels in their stored type: a voxel's label is its value
/// read as f32 (`read_f32`'s), cast to an integer.
impl LabelVoxels for crate::export::nifti::Stored {
    fn geometry(&self) -> &crate::volume::Geometry {
        &self.geometry
    }
    fn labels_present(&self) -> std::collections::BTreeSet<u32> {
        let sc = self.scaling;
        crate::with_voxels!(&self.voxels, d => {
            // A run of one stored value has one label (any type); runs are
            // found by the smallest and largest value of a chunk.
            labels_present_by(d, |v| sc.f32(v) as u32, |part| {
                let (lo, hi) = StoredScalar::min_max(part);
                (lo == hi).then_some(lo)
            })
        })
    }
    fn roi_box(&self, label: u32) -> Option<RoiBox> {
        let sc = self.scaling;
        let dims = self.geometry.dims;
        crate::with_voxels!(&self.voxels, d => {
            let lab = move |v| sc.f32(v) as u32;
            // Integers of at most 16 bits unscaled: the label is monotonic in
            // the stored value, so a row whose extremes' labels both miss
            // on one side holds none.
            let ints = small_exact_ints(d, sc);
            roi_box_by(d, dims, |v| lab(*v) == label, |row| {
                ints && {
                    let (lo, hi) = StoredScalar::min_max(row);
                    lab(hi) < label || lab(lo) > label
                }
            })
        })
    }
    fn values_f32(&self) -> std::borrow::Cow<'_, [f32]> {
        std::borrow::Cow::Owned(self.to_f32().data)
    }
}

/// Whether the stored type is an integer of at most 16 bits and the scaling
/// leaves it as it is (its values are exact in f32 and f64, and in i64 sums).
fn small_exact_ints<T: StoredScalar>(_: &[T], sc: crate::export::nifti::Scaling) -> bool {
    T::SMALL_INT && T::SIZE <= 2 && sc.is_identity()
}

/// A mask's labels and one label's ROI box, found once (beside the image's
/// reading) and handed to the extraction.
pub struct MaskScan {
    labels: std::collections::BTreeSet<u32>,
    label: u32,
    roi: Option<RoiBox>,
    /// The ROI's shape features on the mask's own grid and the names asked
    /// for, when `params` would take the shape from that ROI as it is.
    shape: Option<(Vec<&'static str>, [f64; 3], Features)>,
}

impl MaskScan {
    /// Scans `mask` for its labels and the box of `label` (the label the
    /// extraction will ask for; another is scanned for again); with the
    /// shape class enabled and no resampling or resegmentation in `params`,
    /// the ROI's shape features too (the extraction takes them when its
    /// shape arguments turn out the same, else works them out itself).
    pub fn of(mask: &crate::export::nifti::Stored, label: i64, params: &Params) -> MaskScan {
        let label = label as u32;
        let (labels, roi) = rayon::join(|| mask.labels_present(), || mask.roi_box(label));
        let s = &params.settings;
        let plain = s.resampled_pixel_spacing.is_none() && s.resegment_range.is_none();
        let shape = params
            .feature_classes
            .iter()
            .find(|(c, _)| *c == FeatureClass::Shape)
            .zip(roi.as_ref())
            .filter(|_| plain)
            .map(|((_, named), r)| {
                let enabled = enabled_features(FeatureClass::Shape, named);
                let mut f = Features::default();
                shape::compute(&r.mask, r.dims(), mask.geometry.spacing, &enabled, &mut f);
                (enabled, mask.geometry.spacing, f)
            });
        MaskScan { labels, label, roi, shape }
    }
}

/// A stored mask with its scan.
struct Scanned<'a> {
    mask: &'a crate::export::nifti::Stored,
    scan: &'a MaskScan,
}

impl LabelVoxels for Scanned<'_> {
    fn geometry(&self) -> &crate::volume::Geometry {
        &self.mask.geometry
    }
    fn labels_present(&self) -> std::collections::BTreeSet<u32> {
        self.scan.labels.clone()
    }
    fn roi_box(&self, label: u32) -> Option<RoiBox> {
        if label == self.scan.label { self.scan.roi.clone() } else { self.mask.roi_box(label) }
    }
    fn values_f32(&self) -> std::borrow::Cow<'_, [f32]> {
        self.mask.values_f32()
    }
    fn shape_ready(&self, mask: &[bool], dims: [usize; 3], spacing: [f64; 3], enabled: &[&str]) -> Option<Features> {
        let (names, sp, f) = self.scan.shape.as_ref()?;
        let roi = self.scan.roi.as_ref()?;
        (names.as_slice() == enabled && *sp == spacing && roi.dims() == dims && roi.mask == mask).then(|| f.clone())
    }
}

/// An image the extraction reads: its grid, the whole-image figures, and
/// its values as f64 over a box (what depends on the whole image comes from
/// one scan; only boxes are converted).
trait ImageVoxels: Sync {
    fn geometry(&self) -> &crate::volume::Geometry;
    fn whole(&self) -> WholeImage;
    /// The sum of (v - mean)² over every voxel, in voxel order.
    fn sum_sq_dev(&self, mean: f64) -> f64;
    /// The values over the box lo..=hi (x y z).
    fn region(&self, lo: [usize; 3], hi: [usize; 3]) -> Vec<f64>;
}

impl<T: Voxel> ImageVoxels for Volume<T> {
    fn geometry(&self) -> &crate::volume::Geometry {
        &self.geometry
    }
    fn whole(&self) -> WholeImage {
        WholeImage::of(&self.data)
    }
    fn sum_sq_dev(&self, mean: f64) -> f64 {
        sum_sq_dev(&self.data, |v| v.into(), mean)
    }
    fn region(&self, lo: [usize; 3], hi: [usize; 3]) -> Vec<f64> {
        crop_map(&self.data, self.geometry.dims, lo, hi, Into::into)
    }
}

fn sum_sq_dev<T: Copy>(data: &[T], value: impl Fn(T) -> f64, mean: f64) -> f64 {
    data.iter()
        .map(|&v| {
            let d = value(v) - mean;
            d * d
        })
        .sum::<f64>()
}

/// An image file's voxels in their stored type, valued as `read_f64` (wide)
/// or `read_f32` would give them.
pub struct StoredImage<'a> {
    /// The file's voxels.
    pub stored: &'a crate::export::nifti::Stored,
    /// Valued as f64 (types float32 would round) rather than f32.
    pub wide: bool,
}

impl StoredImage<'_> {
    /// The value of one stored voxel.
    #[inline]
    fn value<T: crate::export::nifti::StoredScalar>(
        sc: crate::export::nifti::Scaling,
        wide: bool,
    ) -> impl Fn(T) -> f64 + Copy + Sync {
        move |v: T| if wide { sc.f64(v) } else { f64::from(sc.f32(v)) }
    }
}

/// WholeImage of unscaled integers of at most 16 bits (every value the
/// stored integer itself): minimum, maximum and sum in integers, in
/// parallel; the sum equals the f64 sum voxel by voxel while every partial
/// sum stays below 2^53 (then each f64 addition is exact). None for other
/// types or scalings.
fn whole_ints<T: crate::export::nifti::StoredScalar>(
    data: &[T],
    sc: crate::export::nifti::Scaling,
) -> Option<WholeImage> {
    use rayon::prelude::*;
    if !small_exact_ints(data, sc) || data.is_empty() || (data.len() as u128) * 65536 > (1u128 << 53) {
        return None;
    }
    let (min, max, sum) = data
        .par_chunks(1 << 16)
        .map(|part| {
            // In the stored type, and sums of 2^15 values each below 2^16 in
            // magnitude in i32: loops the compiler turns into vector code.
            let (min, max) = T::min_max(part);
            let sum: i64 =
                part.chunks(1 << 15).map(|c| i64::from(c.iter().map(|&v| v.as_i64() as i32).sum::<i32>())).sum();
            (min.as_i64(), max.as_i64(), sum)
        })
        .reduce(|| (i64::MAX, i64::MIN, 0), |a, b| (a.0.min(b.0), a.1.max(b.1), a.2 + b.2));
    Some(WholeImage { n: data.len() as f64, sum: sum as f64, min: min as f64, max: max as f64 })
}

impl ImageVoxels for StoredImage<'_> {
    fn geometry(&self) -> &crate::volume::Geometry {
        &self.stored.geometry
    }
    fn whole(&self) -> WholeImage {
        let (sc, wide) = (self.stored.scaling, self.wide);
        crate::with_voxels!(&self.stored.voxels, d => {
            whole_ints(d, sc).unwrap_or_else(|| WholeImage::of_by(d, Self::value(sc, wide)))
        })
    }
    fn sum_sq_dev(&self, mean: f64) -> f64 {
        let (sc, wide) = (self.stored.scaling, self.wide);
        crate::with_voxels!(&self.stored.voxels, d => sum_sq_dev(d, Self::value(sc, wide), mean))
    }
    fn region(&self, lo: [usize; 3], hi: [usize; 3]) -> Vec<f64> {
        let (sc, wide) = (self.stored.scaling, self.wide);
        let dims = self.stored.geometry.dims;
        crate::with_voxels!(&self.stored.voxels, d => crop_map(d, dims, lo, hi, Self::value(sc, wide)))
    }
}

/// Whole-image figures from one scan: voxel count, sum, minimum and maximum
/// (the diagnostics' mean and range, normalize's mean, the intensity maps'
/// scale).
struct WholeImage {
    n: f64,
    sum: f64,
    min: f64,
    max: f64,
}

impl WholeImage {
    fn of<T: Voxel>(data: &[T]) -> WholeImage {
        WholeImage::of_by(data, |v| v.into())
    }

    /// One scan in voxel order, each voxel valued by `value`.
    fn of_by<T: Copy>(data: &[T], value: impl Fn(T) -> f64) -> WholeImage {
        let mut sum = 0.0f64;
        let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
        for &v in data {
            let v = value(v);
            sum += v;
            min = min.min(v);
            max = max.max(v);
        }
        WholeImage { n: data.len() as f64, sum, min, max }
    }
}

/// sitk.Normalize over the whole image (z-score with the sample standard
/// deviation; SimpleITK shifts, then multiplies by the reciprocal), then
/// removeOutliers clamping, then normalizeScale: `filters::normalize` for
/// one voxel at a time.
#[derive(Clone, Copy)]
struct Norm {
    mean: f64,
    inv: f64,
    scale: f64,
    outliers: Option<f64>,
}

impl Norm {
    fn of(image: &dyn ImageVoxels, whole: &WholeImage, s: &Settings) -> Norm {
        let mean = whole.sum / whole.n;
        let var = image.sum_sq_dev(mean) / (whole.n - 1.0);
        Norm { mean, inv: 1.0 / var.sqrt(), scale: s.normalize_scale, outliers: s.remove_outliers }
    }

    fn apply(&self, v: f64) -> f64 {
        let mut z = (v - self.mean) * self.inv;
        if let Some(o) = self.outliers {
            z = z.clamp(-o, o);
        }
        z * self.scale
    }
}

/// The image the filters see, before any box is cut from it: the file's
/// volume (normalised voxel by voxel when asked, never copied whole), or the
/// image resampledPixelSpacing made (already normalised, on its new grid).
enum Source<'a> {
    File { v: &'a dyn ImageVoxels, norm: Option<Norm> },
    Resampled(Image),
}

impl Source<'_> {
    fn spacing(&self) -> [f64; 3] {
        match self {
            Source::File { v, .. } => v.geometry().spacing,
            Source::Resampled(img) => img.spacing,
        }
    }

    /// The image over the box lo..=hi (x y z) as f64, normalised when asked.
    fn region(&self, lo: [usize; 3], hi: [usize; 3]) -> Image {
        match self {
            Source::File { v, norm } => {
                let mut data = v.region(lo, hi);
                if let Some(n) = norm {
                    for x in &mut data {
                        *x = n.apply(*x);
                    }
                }
                Image {
                    dims: [hi[0] - lo[0] + 1, hi[1] - lo[1] + 1, hi[2] - lo[2] + 1],
                    spacing: v.geometry().spacing,
                    data,
                }
            }
            Source::Resampled(img) => img.crop(lo, hi),
        }
    }

    /// Minimum and maximum over the box lo..=hi (`whole` when it is the whole file image).
    fn extremes(&self, lo: [usize; 3], hi: [usize; 3], whole: &WholeImage) -> (f64, f64) {
        match self {
            Source::File { v, norm } => {
                let (min, max) = if lo == [0; 3] && hi == v.geometry().dims.map(|d| d - 1) {
                    (whole.min, whole.max)
                } else {
                    let w = WholeImage::of(&v.region(lo, hi));
                    (w.min, w.max)
                };
                match norm {
                    // Normalisation is monotonic: the extremes stay the extremes.
                    Some(n) => {
                        let (a, b) = (n.apply(min), n.apply(max));
                        (a.min(b), a.max(b))
                    }
                    None => (min, max),
                }
            }
            Source::Resampled(img) => {
                let w = WholeImage::of(&img.crop(lo, hi).data);
                (w.min, w.max)
            }
        }
    }
}

fn sub3(a: [usize; 3], b: [usize; 3]) -> [usize; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

/// Extracts every enabled feature of `image` inside the voxels of `mask`
/// labelled `label` (the parameter file's label unless given), as
/// PyRadiomics' `RadiomicsFeatureExtractor.execute`.
pub fn extract(
    image: &Volume<f32>,
    mask: &Volume<f32>,
    params: &Params,
    label: Option<i64>,
) -> Result<Output, RadiomicsError> {
    extract_typed(image, PixelType::infer(&image.data), mask, params, label)
}

/// `extract`, told the voxel type the image file holds (`resampledPixelSpacing`
/// writes the interpolated image back in it, as SimpleITK does; `extract`
/// guesses it from the values), on an image held as f32 or f64 (`Voxel`).
///
/// As PyRadiomics' loadImage, the image is normalised and resampled first
/// (resampling crops image and mask to the ROI plus padDistance). The values
/// are then PyRadiomics', computed on the ROI's bounding box only: what
/// depends on the whole image (the diagnostics, normalize's mean and standard
/// deviation, the intensity maps' scale) is taken from one scan of it; the
/// filters that read neighbours (Gradient, Wavelet) get the box plus the
/// margin they read (the whole axis where a wavelet would wrap around);
/// image types without such a rule (LoG) get the whole image.
pub fn extract_typed<T: Voxel>(
    image: &Volume<T>,
    pixel: PixelType,
    mask: &Volume<f32>,
    params: &Params,
    label: Option<i64>,
) -> Result<Output, RadiomicsError> {
    extract_from(image, pixel, mask, params, label)
}

/// A mask for [`extract_stored`]: a file's voxels in their stored type, or
/// a volume of f32 labels (a perturbed ROI).
pub enum MaskVoxels<'a> {
    /// A NIfTI file's voxels.
    Stored(&'a crate::export::nifti::Stored),
    /// A NIfTI file's voxels with their scan.
    Scanned(&'a crate::export::nifti::Stored, &'a MaskScan),
    /// Labels as f32.
    F32(&'a Volume<f32>),
}

/// `extract_typed` on an image file's voxels in their stored type (valued
/// as `read_f64` gives them when `image.wide`, else as `read_f32`): the
/// same values, with only the ROI's box (plus what the filters read)
/// converted, and the whole-image figures from one scan of the stored type.
pub fn extract_stored(
    image: &StoredImage<'_>,
    pixel: PixelType,
    mask: MaskVoxels<'_>,
    params: &Params,
    label: Option<i64>,
) -> Result<Output, RadiomicsError> {
    match mask {
        MaskVoxels::Stored(m) => extract_from(image, pixel, m, params, label),
        MaskVoxels::Scanned(mask, scan) => extract_from(image, pixel, &Scanned { mask, scan }, params, label),
        MaskVoxels::F32(m) => extract_from(image, pixel, m, params, label),
    }
}

fn extract_from(
    image: &dyn ImageVoxels,
    pixel: PixelType,
    mask: &dyn LabelVoxels,
    params: &Params,
    label: Option<i64>,
) -> Result<Output, RadiomicsError> {
    let mut s = params.settings.clone();
    if let Some(l) = label {
        s.label = l;
    }
    let resampling = match (&s.resampled_pixel_spacing, &s.interpolator) {
        (Some(sp), Some(name)) => Some((sp.clone(), resample::Interpolator::from_name(name)?)),
        _ => None,
    };
    let mut out: Output = Vec::new();
    // getMask: labels present.
    let labels = mask.labels_present();
    if labels.len() <= 1 {
        return Err(RadiomicsError::EmptyMask);
    }
    if !labels.contains(&(s.label as u32)) {
        let present: Vec<String> = labels.iter().filter(|&&l| l != 0).map(|l| l.to_string()).collect();
        return Err(RadiomicsError::LabelAbsent { label: s.label, present: present.join(", ") });
    }
    let label_u = s.label as u32;
    let whole = image.whole();
    if s.additional_info {
        out.push(("diagnostics_Versions_edgeseg".into(), json!(crate::version())));
        out.push(("diagnostics_Versions_PyRadiomicsReference".into(), json!("3.0.1")));
        out.push(("diagnostics_Configuration_Settings".into(), settings_json(&s)));
        let types: serde_json::Map<String, Json> = params
            .image_types
            .iter()
            .map(|(t, custom)| {
                let m: serde_json::Map<String, Json> = custom.iter().map(|(k, n)| (k.clone(), node_json(n))).collect();
                (t.name().to_string(), Json::Object(m))
            })
            .collect();
        out.push(("diagnostics_Configuration_EnabledImageTypes".into(), Json::Object(types)));
        out.push(("diagnostics_Image-original_Dimensionality".into(), json!("3D")));
        out.push(("diagnostics_Image-original_Spacing".into(), tuple3(image.geometry().spacing)));
        out.push(("diagnostics_Image-original_Size".into(), tuple3(image.geometry().dims)));
        out.push(("diagnostics_Image-original_Mean".into(), json!(whole.sum / whole.n)));
        out.push(("diagnostics_Image-original_Minimum".into(), json!(whole.min)));
        out.push(("diagnostics_Image-original_Maximum".into(), json!(whole.max)));
    }
    // The ROI on the mask's own grid (the image's too, unless they differ).
    let mut own = mask.roi_box(label_u);
    if s.additional_info {
        mask_diagnostics(&mut out, "original", own.as_ref(), mask.geometry());
    }
    let norm = s.normalize.then(|| Norm::of(image, &whole, &s));
    // The voxel type the filters see: sitk.Normalize returns a float64 image.
    let pixel = if s.normalize { PixelType::F64 } else { pixel };
    let mut image_geometry = image.geometry().clone();
    let mut mask_geometry = mask.geometry().clone();
    // The mask's values as f32, made only where resampling reads them.
    let mut mask_vals: Option<std::borrow::Cow<'_, [f32]>> = None;
    // resampleImage (before checkMask, as PyRadiomics' loadImage does it), on
    // the normalised image; it crops image and mask to the ROI plus padDistance.
    let (source, cropped_by_resampling) = if let Some((spacing, interp)) = &resampling {
        let g = image.geometry();
        let mut img = Image { dims: g.dims, spacing: g.spacing, data: image.region([0; 3], g.dims.map(|d| d - 1)) };
        let mask_vals = mask_vals.get_or_insert_with(|| mask.values_f32());
        if let Some(n) = &norm {
            for x in &mut img.data {
                *x = n.apply(*x);
            }
        }
        let nn = resample::Interpolator::NearestNeighbor;
        let m: Vec<f64> = mask_vals.iter().map(|&v| f64::from(v)).collect();
        match resample::plan(&image_geometry, &mask_geometry, mask_vals, label_u, spacing, s.pad_distance)? {
            resample::Plan::SameSpacing => {
                // The mask onto the image grid, then both cropped to the ROI plus padDistance.
                let on_grid: Vec<f32> = resample::resample(&m, &mask_geometry, &image_geometry, nn, PixelType::U32)
                    .iter()
                    .map(|&v| v as f32)
                    .collect();
                let Some((lo, size)) = resample::label_box(&on_grid, image_geometry.dims, label_u) else {
                    return Err(RadiomicsError::RoiOutsideImage);
                };
                let pad = s.pad_distance.max(0) as usize;
                let plo = [0, 1, 2].map(|d| lo[d].saturating_sub(pad));
                let phi = [0, 1, 2].map(|d| (lo[d] + size[d] - 1 + pad).min(img.dims[d] - 1));
                *mask_vals = crop(&on_grid, img.dims, plo, phi).into();
                img = img.crop(plo, phi);
                image_geometry = crate::volume::Geometry {
                    dims: img.dims,
                    origin: image_geometry.voxel_to_lps(plo.map(|v| v as f64)),
                    ..image_geometry
                };
            }
            resample::Plan::Grid(g) => {
                img.data = resample::resample(&img.data, &image_geometry, &g, *interp, pixel);
                *mask_vals = resample::resample(&m, &mask_geometry, &g, nn, PixelType::U32)
                    .iter()
                    .map(|&v| v as f32)
                    .collect::<Vec<f32>>()
                    .into();
                img.dims = g.dims;
                img.spacing = g.spacing;
                image_geometry = g;
            }
        }
        mask_geometry = image_geometry.clone();
        own = roi_box(mask_vals, image_geometry.dims, label_u);
        if s.additional_info {
            image_diagnostics(&mut out, "interpolated", &img);
            mask_diagnostics(&mut out, "interpolated", own.as_ref(), &image_geometry);
            let m: Vec<bool> = mask_vals.iter().map(|&v| v as u32 == label_u).collect();
            mask_value_diagnostics(&mut out, "interpolated", &m, &img);
        }
        (Source::Resampled(img), true)
    } else {
        (Source::File { v: image, norm }, false)
    };
    let dims = image_geometry.dims;
    let spacing = source.spacing();
    // checkMask: the mask must lie on the image grid, or be resampled onto it.
    let roi = if let Some(what) = geometry_difference(&image_geometry, &mask_geometry, s.geometry_tolerance) {
        if !s.correct_mask {
            return Err(RadiomicsError::GeometryMismatch { what });
        }
        let data = mask_vals.unwrap_or_else(|| mask.values_f32()).into_owned();
        let src = Volume { geometry: mask_geometry.clone(), data };
        let resampled = resample_nearest(&src, &image_geometry);
        drop(src);
        let roi = roi_box(&resampled, dims, label_u).ok_or(RadiomicsError::RoiOutsideImage)?;
        if s.additional_info {
            mask_diagnostics(&mut out, "corrected", Some(&roi), &image_geometry);
        }
        roi
    } else {
        drop(mask_vals);
        own.ok_or_else(|| RadiomicsError::LabelAbsent { label: s.label, present: "none".into() })?
    };
    check_box(roi.lo, roi.hi, roi.count, &s)?;
    // The image the filters see: the whole image, or with preCrop the ROI's
    // box padded by padDistance (resampling cropped it so already).
    let (base_lo, base_hi) = if s.pre_crop && !cropped_by_resampling {
        let pad = s.pad_distance.max(0) as usize;
        (roi.lo.map(|v| v.saturating_sub(pad)), [0, 1, 2].map(|d| (roi.hi[d] + pad).min(dims[d] - 1)))
    } else {
        ([0; 3], dims.map(|d| d - 1))
    };
    let bdims = roi.dims();
    let img_box = source.region(roi.lo, roi.hi);
    // Resegmentation, within the box (f: the final box, in box coordinates).
    let mut roi_mask = roi.mask;
    let (mut flo, mut fhi) = ([0; 3], bdims.map(|d| d - 1));
    let mut shape_mask = None;
    if let Some(range) = &s.resegment_range {
        let vals: Vec<f64> = img_box.data.iter().zip(&roi_mask).filter(|(_, m)| **m).map(|(v, _)| *v).collect();
        let mut th = range.clone();
        th.sort_by(f64::total_cmp);
        match s.resegment_mode {
            ResegmentMode::Absolute => {}
            ResegmentMode::Relative => {
                let max = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                th = th.iter().map(|t| max * t).collect();
            }
            ResegmentMode::Sigma => {
                let n = vals.len() as f64;
                let mean = vals.iter().sum::<f64>() / n;
                let sd = (vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
                th = th.iter().map(|t| mean + sd * t).collect();
            }
        }
        let reseg: Vec<bool> = img_box
            .data
            .iter()
            .zip(&roi_mask)
            .map(|(v, m)| *m && *v >= th[0] && (th.len() < 2 || *v <= th[1]))
            .collect();
        let kept = reseg.iter().filter(|m| **m).count();
        if kept <= 1 {
            return Err(RadiomicsError::ResegmentedAway { label: s.label, kept });
        }
        let Some((lo, hi, n)) = bounding_box(&reseg, bdims) else {
            return Err(RadiomicsError::ResegmentedAway { label: s.label, kept });
        };
        check_box(lo, hi, n, &s)?;
        (flo, fhi) = (lo, hi);
        if !s.resegment_shape {
            shape_mask = Some(std::mem::take(&mut roi_mask));
        }
        roi_mask = reseg;
    }
    let fdims = [0, 1, 2].map(|d| fhi[d] - flo[d] + 1);
    let fmask = crop(&roi_mask, bdims, flo, fhi);
    // Shape, on the (possibly resegmented) mask cropped to the final box.
    let shape_names = params.feature_classes.iter().find(|(c, _)| *c == FeatureClass::Shape);
    if let Some((_, named)) = shape_names {
        let cm = match &shape_mask {
            Some(m) => crop(m, bdims, flo, fhi),
            None => fmask.clone(),
        };
        let mut f = Features::default();
        let enabled = enabled_features(FeatureClass::Shape, named);
        match mask.shape_ready(&cm, fdims, spacing, &enabled) {
            Some(ready) => f = ready,
            None => shape::compute(&cm, fdims, spacing, &enabled, &mut f),
        }
        out.extend(f.items.into_iter().map(|(n, v)| (format!("original_shape_{n}"), json_num(v))));
    }
    if let Some((_, named)) = params.feature_classes.iter().find(|(c, _)| *c == FeatureClass::Shape2D) {
        let sm = shape_mask.as_deref().unwrap_or(&roi_mask);
        out.extend(shape2d_features(sm, bdims, spacing, flo, fhi, &s, named)?);
    }
    drop(shape_mask);
    // The final box on the image grid and in the filters' image.
    let glo = [0, 1, 2].map(|d| roi.lo[d] + flo[d]);
    let ghi = [0, 1, 2].map(|d| roi.lo[d] + fhi[d]);
    let img_f = img_box.crop(flo, fhi);
    drop(img_box);
    let mut extremes = None;
    for (itype, custom) in &params.image_types {
        let ts = params.settings_for(custom)?;
        let ts = Settings { label: s.label, ..ts };
        let mut emit = |name: &str, fimg: &Image| out.extend(compute_classes(fimg, &fmask, params, &ts, name));
        match itype {
            ImageType::Original => emit("original", &img_f),
            ImageType::Square | ImageType::SquareRoot | ImageType::Logarithm | ImageType::Exponential => {
                // Scaled by the extremes of the image the filter sees.
                let (bmin, bmax) = *extremes.get_or_insert_with(|| source.extremes(base_lo, base_hi, &whole));
                if let Some((name, f)) = filters::pointwise(*itype, &img_f, bmin, bmax) {
                    emit(&name, &f);
                }
            }
            ImageType::Gradient => {
                // Central differences read one voxel on each side; the image's
                // edge voxels repeat, so a halo clipped to the image is exact.
                let hlo = [0, 1, 2].map(|d| glo[d].saturating_sub(1).max(base_lo[d]));
                let hhi = [0, 1, 2].map(|d| (ghi[d] + 1).min(base_hi[d]));
                let g = filters::gradient(&source.region(hlo, hhi), ts.gradient_use_spacing);
                emit("gradient", &g.crop(sub3(glo, hlo), sub3(ghi, hlo)));
            }
            ImageType::Wavelet => {
                // Each level reads 2 voxels before and 3 after along each axis;
                // an axis where that leaves the image wraps around, and is
                // taken whole.
                let passes = ts.start_level.max(0) as usize + ts.level.max(1) as usize;
                let mut hlo = base_lo;
                let mut hhi = base_hi;
                let mut whole_axis = [true; 3];
                let mut want_lo = sub3(glo, base_lo);
                for d in 0..3 {
                    if glo[d] >= base_lo[d] + 2 * passes && ghi[d] + 3 * passes <= base_hi[d] {
                        hlo[d] = glo[d] - 2 * passes;
                        hhi[d] = ghi[d] + 3 * passes;
                        whole_axis[d] = false;
                        want_lo[d] = 0;
                    }
                }
                let h = source.region(hlo, hhi);
                filters::wavelet_bands(&h, &ts, whole_axis, want_lo, fdims, |name, band| emit(&name, &band));
            }
            ImageType::Lbp2D | ImageType::Lbp3D => {
                let b = source.region(base_lo, base_hi);
                let images = if *itype == ImageType::Lbp2D {
                    vec![("lbp-2D".to_string(), lbp::lbp2d(&b, &ts, pixel))]
                } else {
                    // The (resegmented) ROI mask on the base image's grid.
                    let bd = [0, 1, 2].map(|d| base_hi[d] - base_lo[d] + 1);
                    let off = sub3(roi.lo, base_lo);
                    let mut m = vec![false; bd[0] * bd[1] * bd[2]];
                    for (i, _) in roi_mask.iter().enumerate().filter(|(_, v)| **v) {
                        let (x, y, z) = (i % bdims[0], (i / bdims[0]) % bdims[1], i / (bdims[0] * bdims[1]));
                        m[(off[0] + x) + bd[0] * ((off[1] + y) + bd[1] * (off[2] + z))] = true;
                    }
                    lbp::lbp3d(&b, &m, &ts, pixel)
                };
                for (name, f) in images {
                    emit(&name, &f.crop(sub3(glo, base_lo), sub3(ghi, base_lo)));
                }
            }
            _ => {
                let b = source.region(base_lo, base_hi);
                for (name, f) in filters::apply(*itype, &b, &ts)? {
                    emit(&name, &f.crop(sub3(glo, base_lo), sub3(ghi, base_lo)));
                }
            }
        }
    }
    Ok(out)
}

/// PyRadiomics' computeShape for shape2D: computed under force2D when the
/// bounding box spans more than one voxel along force2Ddimension read as an
/// x, y, z index (PyRadiomics' check), and refused by the class when the ROI
/// is thicker than one voxel along force2Ddimension read as a z, y, x axis.
fn shape2d_features(
    shape_mask: &[bool],
    dims: [usize; 3],
    spacing: [f64; 3],
    lo: [usize; 3],
    hi: [usize; 3],
    s: &Settings,
    named: &[String],
) -> Result<Output, RadiomicsError> {
    let d = s.force_2d_dimension.clamp(0, 2) as usize;
    if !s.force_2d || hi[d] - lo[d] < 1 {
        return Ok(Vec::new());
    }
    let size = [hi[0] - lo[0] + 1, hi[1] - lo[1] + 1, hi[2] - lo[2] + 1];
    // The slice's axes: the two z, y, x axes other than d, in that order.
    let zyx = [2usize, 1, 0];
    if size[zyx[d]] > 1 {
        return Err(RadiomicsError::Shape2DNotFlat { axis: s.force_2d_dimension });
    }
    let axes: Vec<usize> = (0..3).filter(|&a| a != d).map(|a| zyx[a]).collect();
    let (ra, ca) = (axes[0], axes[1]);
    let cm = crop(shape_mask, dims, lo, hi);
    let mut m2 = Vec::with_capacity(size[ra] * size[ca]);
    for r in 0..size[ra] {
        for c in 0..size[ca] {
            let mut p = [0usize; 3];
            p[ra] = r;
            p[ca] = c;
            m2.push(cm[p[0] + size[0] * (p[1] + size[1] * p[2])]);
        }
    }
    let mut f = Features::default();
    let enabled = enabled_features(FeatureClass::Shape2D, named);
    shape2d::compute(&m2, [size[ra], size[ca]], [spacing[ra], spacing[ca]], &enabled, &mut f);
    Ok(f.items.into_iter().map(|(n, v)| (format!("original_shape2D_{n}"), json_num(v))).collect())
}

fn node_json(n: &params::Node) -> Json {
    match &n.value {
        params::Value::Null => Json::Null,
        params::Value::Bool(b) => json!(b),
        params::Value::Int(i) => json!(i),
        params::Value::Float(f) => json!(f),
        params::Value::Str(s) => json!(s),
        params::Value::Seq(v) => Json::Array(v.iter().map(node_json).collect()),
        params::Value::Map(m) => Json::Object(m.iter().map(|(k, _, v)| (k.clone(), node_json(v))).collect()),
    }
}

/// A feature value as JSON (NaN and infinities, which JSON lacks, as strings
/// the way Python's json writes them would not parse; PyRadiomics' CSV writes
/// `nan`).
pub fn json_num(v: f64) -> Json {
    serde_json::Number::from_f64(v).map_or_else(|| json!(format!("{v}").to_lowercase()), Json::Number)
}

/// `diagnostics_Image-<prefix>_{Spacing,Size,Mean,Minimum,Maximum}`.
fn image_diagnostics(out: &mut Output, prefix: &str, img: &Image) {
    let p = format!("diagnostics_Image-{prefix}_");
    out.push((format!("{p}Spacing"), tuple3(img.spacing)));
    out.push((format!("{p}Size"), tuple3(img.dims)));
    let n = img.data.len() as f64;
    out.push((format!("{p}Mean"), json!(img.data.iter().sum::<f64>() / n)));
    out.push((format!("{p}Minimum"), json!(img.data.iter().copied().fold(f64::INFINITY, f64::min))));
    out.push((format!("{p}Maximum"), json!(img.data.iter().copied().fold(f64::NEG_INFINITY, f64::max))));
}

/// `diagnostics_Mask-<prefix>_{Mean,Minimum,Maximum}`: the image inside the mask.
fn mask_value_diagnostics(out: &mut Output, prefix: &str, m: &[bool], img: &Image) {
    let v: Vec<f64> = img.data.iter().zip(m).filter(|(_, k)| **k).map(|(v, _)| *v).collect();
    if v.is_empty() {
        return;
    }
    let p = format!("diagnostics_Mask-{prefix}_");
    out.push((format!("{p}Mean"), json!(v.iter().sum::<f64>() / v.len() as f64)));
    out.push((format!("{p}Minimum"), json!(v.iter().copied().fold(f64::INFINITY, f64::min))));
    out.push((format!("{p}Maximum"), json!(v.iter().copied().fold(f64::NEG_INFINITY, f64::max))));
}

fn mask_diagnostics(out: &mut Output, prefix: &str, roi: Option<&RoiBox>, g: &crate::volume::Geometry) {
    let p = format!("diagnostics_Mask-{prefix}_");
    out.push((format!("{p}Spacing"), tuple3(g.spacing)));
    out.push((format!("{p}Size"), tuple3(g.dims)));
    if let Some(r) = roi {
        let (lo, hi, n) = (r.lo, r.hi, r.count);
        out.push((
            format!("{p}BoundingBox"),
            json!([lo[0], lo[1], lo[2], hi[0] - lo[0] + 1, hi[1] - lo[1] + 1, hi[2] - lo[2] + 1]),
        ));
        out.push((format!("{p}VoxelNum"), json!(n)));
        let bd = r.dims();
        out.push((format!("{p}VolumeNum"), json!(component_count(&r.mask, bd))));
        let mut c = [0.0; 3];
        for (i, _) in r.mask.iter().enumerate().filter(|(_, v)| **v) {
            c[0] += (lo[0] + i % bd[0]) as f64;
            c[1] += (lo[1] + (i / bd[0]) % bd[1]) as f64;
            c[2] += (lo[2] + i / (bd[0] * bd[1])) as f64;
        }
        let c = c.map(|v| v / n as f64);
        out.push((format!("{p}CenterOfMassIndex"), tuple3(c)));
        out.push((format!("{p}CenterOfMass"), tuple3(g.voxel_to_lps(c))));
    }
}

/// The texture and first-order classes on one (filtered, cropped) image,
/// one class per task on rayon's pool, in the parameter file's order.
fn compute_classes(img: &Image, mask: &[bool], params: &Params, s: &Settings, prefix: &str) -> Output {
    use rayon::prelude::*;
    let roi = Roi::new(&img.data, mask, img.dims, img.spacing, s);
    let per: Vec<Features> = params
        .feature_classes
        .par_iter()
        .map(|(class, named)| {
            let enabled = enabled_features(*class, named);
            let mut f = Features::default();
            match class {
                FeatureClass::Shape | FeatureClass::Shape2D => {}
                FeatureClass::FirstOrder => {
                    let vals: Vec<f64> = img.data.iter().zip(mask).filter(|(_, m)| **m).map(|(v, _)| *v).collect();
                    let lv: Vec<u32> = roi.levels.iter().zip(mask).filter(|(_, m)| **m).map(|(v, _)| *v).collect();
                    let vox = img.spacing[0] * img.spacing[1] * img.spacing[2];
                    firstorder::compute(&vals, &lv, vox, s.voxel_array_shift as f64, &enabled, &mut f);
                }
                FeatureClass::Glcm => glcm::compute(&roi, s, &enabled, &mut f),
                FeatureClass::Gldm => gldm::compute(&roi, s, &enabled, &mut f),
                FeatureClass::Glrlm => glrlm::compute(&roi, s, &enabled, &mut f),
                FeatureClass::Glszm => glszm::compute(&roi, s, &enabled, &mut f),
                FeatureClass::Ngtdm => ngtdm::compute(&roi, s, &enabled, &mut f),
            }
            f
        })
        .collect();
    let mut out = Vec::new();
    for ((class, _), f) in params.feature_classes.iter().zip(per) {
        out.extend(f.items.into_iter().map(|(n, v)| (format!("{prefix}_{}_{n}", class.name()), json_num(v))));
    }
    out
}

/// The image types an extraction will produce names for (used by docs/tests).
pub fn image_type_names() -> Vec<&'static str> {
    ImageType::ALL.iter().map(|(_, n)| *n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outputs_equal(a: &Result<Output, RadiomicsError>, b: &Result<Output, RadiomicsError>) -> bool {
        match (a, b) {
            (Ok(a), Ok(b)) => a == b,
            (Err(a), Err(b)) => a.to_string() == b.to_string(),
            _ => false,
        }
    }

    /// The stored-type path (image and mask in their file types, only boxes
    /// converted) gives the f32/f64 path's output exactly, diagnostics
    /// included, on SimpleITK's int16 image and uint8 mask, nibabel's scaled
    /// int16 and int32 images, under settings that read the whole image
    /// (normalize, filters, resampling, resegmentation).
    #[test]
    fn stored_voxels_give_the_f32_and_f64_paths_output() {
        use crate::export::nifti;
        let dir = tempfile::tempdir().expect("tempdir");
        nifti::tests::nifti_type_fixtures(dir.path());
        let settings = [
            "",
            "setting:\n  normalize: true\n  removeOutliers: 3\n",
            "setting:\n  resampledPixelSpacing: [1, 1, 1]\n",
            "setting:\n  binCount: 16\n  resegmentRange: [-100, 400]\n",
            "imageType:\n  Original: {}\n  LoG:\n    sigma: [1.0]\n  Wavelet: {}\n  Square: {}\n  Gradient: {}\n",
        ];
        let params: Vec<Params> = settings
            .iter()
            .map(|t| if t.is_empty() { Params::default() } else { Params::from_text(t).expect(t) })
            .collect();
        let mut compared = 0;
        for ext in ["nii", "nii.gz"] {
            let (ip, mp) = (dir.path().join(format!("sitk_ct.{ext}")), dir.path().join(format!("sitk_mask.{ext}")));
            let (image, mask) = (nifti::read_stored(&ip).expect("image"), nifti::read_stored(&mp).expect("mask"));
            let (image32, mask32) = (nifti::read_f32(&ip).expect("image"), nifti::read_f32(&mp).expect("mask"));
            let stored = StoredImage { stored: &image, wide: false };
            for p in &params {
                for label in [1, 2, 3] {
                    let want = extract_typed(&image32, PixelType::I16, &mask32, p, Some(label));
                    let got = extract_stored(&stored, PixelType::I16, MaskVoxels::Stored(&mask), p, Some(label));
                    assert!(outputs_equal(&want, &got), "label {label}, {ext}: {want:?} against {got:?}");
                    let mut scan = MaskScan::of(&mask, label, p);
                    let got =
                        extract_stored(&stored, PixelType::I16, MaskVoxels::Scanned(&mask, &scan), p, Some(label));
                    assert!(outputs_equal(&want, &got), "label {label}, {ext}, scanned");
                    // The shape worked out beside the reading is the one
                    // reported (a changed value shows), where settings allow.
                    let plain = p.settings.resampled_pixel_spacing.is_none() && p.settings.resegment_range.is_none();
                    assert_eq!(scan.shape.is_some(), plain && want.is_ok(), "label {label}, {ext}: shape scanned");
                    if let Some((_, _, f)) = scan.shape.as_mut() {
                        f.items[0].1 += 1.0;
                        let name = format!("original_shape_{}", f.items[0].0);
                        let moved =
                            extract_stored(&stored, PixelType::I16, MaskVoxels::Scanned(&mask, &scan), p, Some(label))
                                .expect("extraction");
                        let value = |o: &Output| o.iter().find(|(n, _)| *n == name).and_then(|(_, v)| v.as_f64());
                        let want = want.as_ref().expect("extraction");
                        assert_eq!(value(&moved), value(want).map(|v| v + 1.0), "{name}");
                    }
                    compared += usize::from(want.is_ok());
                }
            }
        }
        // Scaled int16 (valued in f32) and int32 (valued in f64, values up
        // to 2^31: binned by count), with a mask of the voxels above the median.
        let by_count: Vec<Params> = [
            "setting:\n  binCount: 32\n",
            "setting:\n  binCount: 32\n  normalize: true\n",
            "setting:\n  binCount: 32\n  resampledPixelSpacing: [1, 1, 1]\n",
        ]
        .iter()
        .map(|t| Params::from_text(t).expect(t))
        .collect();
        for (file, wide, pixel) in [("scaled_int16.nii.gz", false, PixelType::F32), ("int32.nii", true, PixelType::I32)]
        {
            let p = dir.path().join(file);
            let image = nifti::read_stored(&p).expect("image");
            let mut sorted = image.to_f64().data;
            sorted.sort_by(f64::total_cmp);
            let median = sorted[sorted.len() / 2];
            let values = image.to_f64();
            let mask = Volume {
                geometry: values.geometry.clone(),
                data: values.data.iter().map(|&v| if v > median { 1.0 } else { 0.0 }).collect(),
            };
            for p in &by_count {
                let want = if wide {
                    extract_typed(&nifti::read_f64(&dir.path().join(file)).expect("f64"), pixel, &mask, p, None)
                } else {
                    extract_typed(&image.to_f32(), pixel, &mask, p, None)
                };
                let got = extract_stored(&StoredImage { stored: &image, wide }, pixel, MaskVoxels::F32(&mask), p, None);
                assert!(outputs_equal(&want, &got), "{file}: {want:?} against {got:?}");
                compared += usize::from(want.is_ok());
            }
        }
        assert_eq!(compared, 26, "extractions that succeeded and were compared");
    }

    #[test]
    fn thirteen_directions_by_default() {
        let a = generate_angles([5, 5, 5], &[1], false, None);
        assert_eq!(a.len(), 13);
        assert_eq!(a[0], [1, 1, 1]);
        assert_eq!(a[12], [0, 0, 1]);
        assert_eq!(generate_angles([1, 5, 5], &[1], false, None).len(), 4);
        assert_eq!(generate_angles([2, 5, 5], &[2], false, None).len(), 24);
        assert_eq!(generate_angles([5, 5, 5], &[1], true, None).len(), 26);
    }
}

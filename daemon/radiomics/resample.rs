//! PyRadiomics' `imageoperations.resampleImage` (`resampledPixelSpacing`,
//! `interpolator`, `padDistance`) with SimpleITK's ResampleImageFilter under
//! it: the new grid aligned to the mask's origin and cropped to the ROI's
//! bounding box plus padding, the image interpolated with sitkBSpline (ITK's
//! BSplineInterpolateImageFunction: cubic B-spline coefficients by
//! BSplineDecompositionImageFilter's mirror-boundary prefilter, in double),
//! sitkLinear or sitkNearestNeighbor and written back in its own voxel type
//! (integers truncated and clamped as ITK casts them), the mask with nearest
//! neighbour.

use crate::volume::Geometry;

use super::RadiomicsError;

/// The interpolators edgeseg implements (PyRadiomics' `interpolator`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interpolator {
    /// sitkNearestNeighbor.
    NearestNeighbor,
    /// sitkLinear.
    Linear,
    /// sitkBSpline (cubic, prefiltered).
    BSpline,
}

impl Interpolator {
    /// From the parameter-file name.
    pub fn from_name(name: &str) -> Result<Interpolator, RadiomicsError> {
        match name {
            "sitkNearestNeighbor" => Ok(Interpolator::NearestNeighbor),
            "sitkLinear" => Ok(Interpolator::Linear),
            "sitkBSpline" => Ok(Interpolator::BSpline),
            other => Err(RadiomicsError::Unsupported(format!("the interpolator {other}"))),
        }
    }
}

/// The voxel type an image was stored with: SimpleITK resamples into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelType {
    /// uint8.
    U8,
    /// int8.
    I8,
    /// uint16.
    U16,
    /// int16.
    I16,
    /// uint32.
    U32,
    /// int32.
    I32,
    /// uint64.
    U64,
    /// int64.
    I64,
    /// float32.
    F32,
    /// float64.
    F64,
}

impl PixelType {
    /// From a NIfTI header's `datatype` with its scaling: SimpleITK reads a
    /// scaled integer file as float32.
    pub fn from_nifti(datatype: i16, scaled: bool) -> PixelType {
        if scaled {
            return PixelType::F32;
        }
        match datatype {
            2 => PixelType::U8,
            4 => PixelType::I16,
            8 => PixelType::I32,
            64 => PixelType::F64,
            256 => PixelType::I8,
            512 => PixelType::U16,
            768 => PixelType::U32,
            1024 => PixelType::I64,
            1280 => PixelType::U64,
            _ => PixelType::F32,
        }
    }

    /// The type a volume of unknown origin most likely had: int16 when every
    /// value is a whole number in int16's range (CT), else float32.
    pub fn infer(data: &[f32]) -> PixelType {
        let int16 = data.iter().all(|&v| v.fract() == 0.0 && (-32768.0..=32767.0).contains(&v));
        if int16 { PixelType::I16 } else { PixelType::F32 }
    }

    /// Whether float32 would round some of this type's values (float64, 32-
    /// and 64-bit integers): such an image is held as f64.
    pub fn rounds_in_f32(self) -> bool {
        matches!(self, PixelType::F64 | PixelType::I32 | PixelType::U32 | PixelType::I64 | PixelType::U64)
    }

    /// ResampleImageFilter's CastPixelWithBoundsChecking: clamp to the type's
    /// range, then C++'s conversion (truncation towards zero for integers).
    pub fn cast(self, v: f64) -> f64 {
        let int = |lo: f64, hi: f64| {
            if v < lo {
                lo
            } else if v > hi {
                hi
            } else {
                v.trunc()
            }
        };
        match self {
            PixelType::U8 => int(0.0, 255.0),
            PixelType::I8 => int(-128.0, 127.0),
            PixelType::U16 => int(0.0, 65535.0),
            PixelType::I16 => int(-32768.0, 32767.0),
            PixelType::U32 => int(0.0, 4294967295.0),
            PixelType::I32 => int(-2147483648.0, 2147483647.0),
            PixelType::U64 => int(0.0, u64::MAX as f64),
            PixelType::I64 => int(i64::MIN as f64, i64::MAX as f64),
            PixelType::F32 => f64::from(v as f32),
            PixelType::F64 => v,
        }
    }
}

/// Index ↔ physical point of one grid, as ITK's ImageBase computes them.
struct Frame {
    origin: [f64; 3],
    /// Direction · diag(spacing), row-major (physical = origin + m · index).
    m: [[f64; 3]; 3],
    /// Its inverse.
    inv: [[f64; 3]; 3],
}

impl Frame {
    fn new(g: &Geometry) -> Frame {
        let mut m = [[0.0; 3]; 3];
        for (r, row) in m.iter_mut().enumerate() {
            for (c, v) in row.iter_mut().enumerate() {
                // direction[c] is axis c's unit vector: column c of the matrix.
                *v = g.direction[c][r] * g.spacing[c];
            }
        }
        Frame { origin: g.origin, m, inv: inverse(&m) }
    }

    /// TransformContinuousIndexToPhysicalPoint.
    fn to_physical(&self, idx: [f64; 3]) -> [f64; 3] {
        let mut p = [0.0; 3];
        for r in 0..3 {
            let mut sum = 0.0;
            for c in 0..3 {
                sum += self.m[r][c] * idx[c];
            }
            p[r] = sum + self.origin[r];
        }
        p
    }

    /// TransformPhysicalPointToContinuousIndex.
    fn to_index(&self, p: [f64; 3]) -> [f64; 3] {
        let d = [p[0] - self.origin[0], p[1] - self.origin[1], p[2] - self.origin[2]];
        let mut out = [0.0; 3];
        for r in 0..3 {
            let mut sum = 0.0;
            for c in 0..3 {
                sum += self.inv[r][c] * d[c];
            }
            out[r] = sum;
        }
        out
    }
}

/// 3×3 inverse; a diagonal matrix inverts to exact reciprocals, as ITK's does.
fn inverse(m: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let diagonal = (0..3).all(|r| (0..3).all(|c| r == c || m[r][c] == 0.0));
    if diagonal {
        let mut out = [[0.0; 3]; 3];
        for d in 0..3 {
            out[d][d] = 1.0 / m[d][d];
        }
        return out;
    }
    let det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
    let mut out = [[0.0; 3]; 3];
    for r in 0..3 {
        for c in 0..3 {
            let (r1, r2) = ((c + 1) % 3, (c + 2) % 3);
            let (c1, c2) = ((r + 1) % 3, (r + 2) % 3);
            out[r][c] = (m[r1][c1] * m[r2][c2] - m[r1][c2] * m[r2][c1]) / det;
        }
    }
    out
}

/// The cubic B-spline pole.
fn pole() -> f64 {
    3f64.sqrt() - 2.0
}

/// BSplineDecompositionImageFilter::DataToCoefficients1D for order 3 (mirror
/// boundaries, tolerance 1e-10).
fn decompose_line(c: &mut [f64]) {
    let n = c.len();
    if n == 1 {
        return;
    }
    let z = pole();
    let gain = 1.0 * (1.0 - z) * (1.0 - 1.0 / z);
    for v in c.iter_mut() {
        *v *= gain;
    }
    // Causal initialisation.
    let horizon = ((1e-10f64).ln() / z.abs().ln()).ceil() as usize;
    let mut zn = z;
    if horizon < n {
        let mut sum = c[0];
        for v in c.iter().take(horizon).skip(1) {
            sum += zn * v;
            zn *= z;
        }
        c[0] = sum;
    } else {
        let iz = 1.0 / z;
        let mut z2n = z.powf((n - 1) as f64);
        let mut sum = c[0] + z2n * c[n - 1];
        // ITK's `z2n *= z2n * iz`.
        z2n = z2n * (z2n * iz);
        for v in c.iter().take(n - 1).skip(1) {
            sum += (zn + z2n) * v;
            zn *= z;
            z2n *= iz;
        }
        c[0] = sum / (1.0 - zn * zn);
    }
    for k in 1..n {
        c[k] += z * c[k - 1];
    }
    c[n - 1] = (z / (z * z - 1.0)) * (z * c[n - 2] + c[n - 1]);
    for k in (0..n - 1).rev() {
        c[k] = z * (c[k + 1] - c[k]);
    }
}

/// The B-spline coefficients of a whole image, x then y then z.
fn coefficients(data: &[f64], dims: [usize; 3]) -> Vec<f64> {
    let mut c = data.to_vec();
    for axis in 0..3 {
        let n = dims[axis];
        let stride = [1, dims[0], dims[0] * dims[1]][axis];
        let mut line = vec![0.0; n];
        for start in 0..c.len() {
            if !(start / stride).is_multiple_of(n) {
                continue;
            }
            for (k, l) in line.iter_mut().enumerate() {
                *l = c[start + k * stride];
            }
            decompose_line(&mut line);
            for (k, l) in line.iter().enumerate() {
                c[start + k * stride] = *l;
            }
        }
    }
    c
}

/// ITK's RoundHalfIntegerUp.
fn round_half_up(x: f64) -> i64 {
    ((2.0 * x + 0.5).round_ties_even() as i64) >> 1
}

/// BSplineInterpolateImageFunction::EvaluateAtContinuousIndex, order 3.
fn bspline_at(coef: &[f64], dims: [usize; 3], x: [f64; 3]) -> f64 {
    let mut idx = [[0usize; 4]; 3];
    let mut w = [[0.0f64; 4]; 3];
    for d in 0..3 {
        // DetermineRegionOfSupport floors the index as float32.
        let base = (x[d] as f32).floor() as i64 - 1;
        let t = x[d] - (base + 1) as f64;
        let w3 = (1.0 / 6.0) * t * t * t;
        let w0 = (1.0 / 6.0) + 0.5 * t * (t - 1.0) - w3;
        let w2 = t + w0 - 2.0 * w3;
        let w1 = 1.0 - w0 - w2 - w3;
        w[d] = [w0, w1, w2, w3];
        let end = dims[d] as i64 - 1;
        for k in 0..4 {
            let mut i = base + k as i64;
            if end == 0 {
                i = 0;
            } else {
                if i < 0 {
                    i = -i;
                }
                if i >= end {
                    i = end - (i - end);
                }
            }
            idx[d][k] = i.clamp(0, end) as usize;
        }
    }
    let mut sum = 0.0;
    for p in 0..64 {
        let (i2, i1, i0) = (p / 16, (p % 16) / 4, p % 4);
        let mut wt = 1.0;
        wt *= w[0][i0];
        wt *= w[1][i1];
        wt *= w[2][i2];
        sum += wt * coef[idx[0][i0] + dims[0] * (idx[1][i1] + dims[1] * idx[2][i2])];
    }
    sum
}

/// LinearInterpolateImageFunction (3D): x, then y, then z interpolation; an
/// axis at or past the last voxel, or with no fractional part, is not
/// interpolated (as ITK's branches do).
fn linear_at(data: &[f64], dims: [usize; 3], x: [f64; 3]) -> f64 {
    let mut base = [0usize; 3];
    let mut dist = [0.0; 3];
    let mut next = [0usize; 3];
    for d in 0..3 {
        let b = (x[d].floor() as i64).max(0) as usize;
        base[d] = b;
        let t = x[d] - b as f64;
        if t <= 0.0 || b + 1 > dims[d] - 1 {
            dist[d] = 0.0;
            next[d] = b;
        } else {
            dist[d] = t;
            next[d] = b + 1;
        }
    }
    let at = |i: usize, j: usize, k: usize| data[i + dims[0] * (j + dims[1] * k)];
    let lerp = |a: f64, b: f64, t: f64| if t <= 0.0 { a } else { a + (b - a) * t };
    let plane = |k: usize| {
        let x0 = lerp(at(base[0], base[1], k), at(next[0], base[1], k), dist[0]);
        if dist[1] <= 0.0 {
            return x0;
        }
        let x1 = lerp(at(base[0], next[1], k), at(next[0], next[1], k), dist[0]);
        lerp(x0, x1, dist[1])
    };
    let p0 = plane(base[2]);
    if dist[2] <= 0.0 {
        return p0;
    }
    lerp(p0, plane(next[2]), dist[2])
}

/// ResampleImageFilter with an identity transform (its linear fast path):
/// for each output line, the continuous indices in the source of its first
/// voxel and of one voxel past its end, and in between
/// `start + (end - start) · i / size`; interpolated there when inside
/// [-0.5, size - 0.5) along every axis, 0 elsewhere; cast to `pixel`.
pub fn resample(data: &[f64], src: &Geometry, target: &Geometry, interp: Interpolator, pixel: PixelType) -> Vec<f64> {
    let (sf, tf) = (Frame::new(src), Frame::new(target));
    let coef = (interp == Interpolator::BSpline).then(|| coefficients(data, src.dims));
    let mut out = vec![0.0; target.voxel_count()];
    let [nx, ny, nz] = target.dims;
    for k in 0..nz {
        for j in 0..ny {
            let start = sf.to_index(tf.to_physical([0.0, j as f64, k as f64]));
            let end = sf.to_index(tf.to_physical([nx as f64, j as f64, k as f64]));
            for i in 0..nx {
                let alpha = i as f64 / nx as f64;
                let c = [0, 1, 2].map(|d| start[d] + (end[d] - start[d]) * alpha);
                if !(0..3).all(|d| c[d] >= -0.5 && c[d] < src.dims[d] as f64 - 0.5) {
                    continue;
                }
                let v = match (&coef, interp) {
                    (Some(coef), _) => bspline_at(coef, src.dims, c),
                    (None, Interpolator::Linear) => linear_at(data, src.dims, c),
                    _ => {
                        let r = c.map(round_half_up);
                        let r = [0, 1, 2].map(|d| r[d].clamp(0, src.dims[d] as i64 - 1) as usize);
                        data[r[0] + src.dims[0] * (r[1] + src.dims[1] * r[2])]
                    }
                };
                out[i + nx * (j + ny * k)] = pixel.cast(v);
            }
        }
    }
    out
}

/// Bounding box of a label (lower corner and size, x y z), as
/// LabelShapeStatisticsImageFilter::GetBoundingBox.
pub fn label_box(mask: &[f32], dims: [usize; 3], label: u32) -> Option<([usize; 3], [usize; 3])> {
    let mut lo = [usize::MAX; 3];
    let mut hi = [0usize; 3];
    let mut any = false;
    for (n, &v) in mask.iter().enumerate() {
        if v as u32 != label {
            continue;
        }
        any = true;
        let p = [n % dims[0], (n / dims[0]) % dims[1], n / (dims[0] * dims[1])];
        for d in 0..3 {
            lo[d] = lo[d].min(p[d]);
            hi[d] = hi[d].max(p[d]);
        }
    }
    any.then(|| (lo, [hi[0] - lo[0] + 1, hi[1] - lo[1] + 1, hi[2] - lo[2] + 1]))
}

/// What `resampleImage` decided.
pub enum Plan {
    /// The image already has the requested spacing: the mask goes onto the
    /// image grid (nearest neighbour) and both are cropped to the ROI plus
    /// `padDistance`.
    SameSpacing,
    /// A new grid (the mask's direction, the requested spacing, aligned to the
    /// mask's origin, the ROI's box plus `padDistance`).
    Grid(Geometry),
}

/// PyRadiomics' resampleImage up to the grid: `_checkROI` (label present, the
/// ROI's box inside the image's physical extent within 1e-3 voxel), zero
/// spacings and axes the ROI spans one voxel along kept at the mask's
/// spacing, numpy.allclose against the image's spacing, then the new grid.
pub fn plan(
    image: &Geometry,
    mask: &Geometry,
    mask_data: &[f32],
    label: u32,
    spacing: &[f64],
    pad: i64,
) -> Result<Plan, RadiomicsError> {
    if spacing.len() != 3 {
        return Err(RadiomicsError::Unsupported(format!(
            "resampledPixelSpacing with {} values (a 3D image needs 3)",
            spacing.len()
        )));
    }
    let Some((lo, size)) = label_box(mask_data, mask.dims, label) else {
        return Err(RadiomicsError::RoiOutsideImage);
    };
    // _checkROI: the box's corners in the image's continuous index space.
    let (mf, imf) = (Frame::new(mask), Frame::new(image));
    let c0 = imf.to_index(mf.to_physical([0, 1, 2].map(|d| lo[d] as f64 - 0.5)));
    let c1 = imf.to_index(mf.to_physical([0, 1, 2].map(|d| (lo[d] + size[d]) as f64 - 0.5)));
    let tol = 1e-3;
    if (0..3).any(|d| c0[d].min(c1[d]) < -0.5 - tol || c0[d].max(c1[d]) > image.dims[d] as f64 - 0.5 + tol) {
        return Err(RadiomicsError::RoiOutsideImage);
    }
    let mut new = [0.0; 3];
    for d in 0..3 {
        new[d] = if spacing[d] == 0.0 || size[d] == 1 { mask.spacing[d] } else { spacing[d] };
    }
    // numpy.allclose(imageSpacing, resampledPixelSpacing): |a - b| <= 1e-8 + 1e-5 |b|.
    if (0..3).all(|d| (image.spacing[d] - new[d]).abs() <= 1e-8 + 1e-5 * new[d].abs()) {
        return Ok(Plan::SameSpacing);
    }
    let pad = pad as f64;
    let mut dims = [0usize; 3];
    let mut origin_index = [0.0; 3];
    for d in 0..3 {
        let ratio = mask.spacing[d] / new[d];
        let mut lb = ((lo[d] as f64 - 0.5) * ratio - pad).floor();
        let mut ub = (((lo[d] + size[d]) as f64 - 0.5) * ratio + pad).ceil();
        let max_ub = (mask.dims[d] as f64 * ratio).ceil() - 1.0;
        if lb < 0.0 {
            lb = 0.0;
        }
        if ub > max_ub {
            ub = max_ub;
        }
        dims[d] = (ub - lb + 1.0) as usize;
        let new_origin_index = 0.5 * (new[d] - mask.spacing[d]) / mask.spacing[d];
        origin_index[d] = new_origin_index + lb / ratio;
    }
    Ok(Plan::Grid(Geometry { dims, spacing: new, origin: mf.to_physical(origin_index), direction: mask.direction }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefilter_then_interpolation_reproduces_the_samples() {
        // A cubic B-spline through prefiltered coefficients interpolates: at
        // the voxel centres it returns the data.
        let dims = [7, 5, 4];
        let data: Vec<f64> = (0..140).map(|i| ((i * 37) % 23) as f64 - 7.0).collect();
        let c = coefficients(&data, dims);
        for k in 0..4 {
            for j in 0..5 {
                for i in 0..7 {
                    let v = bspline_at(&c, dims, [i as f64, j as f64, k as f64]);
                    assert!((v - data[i + 7 * (j + 5 * k)]).abs() < 1e-9);
                }
            }
        }
    }

    #[test]
    fn integer_casts_truncate_and_clamp() {
        assert_eq!(PixelType::I16.cast(-3.7), -3.0);
        assert_eq!(PixelType::I16.cast(40000.0), 32767.0);
        assert_eq!(PixelType::U8.cast(-0.5), 0.0);
        assert_eq!(PixelType::F64.cast(0.1), 0.1);
        assert_eq!(round_half_up(2.5), 3);
        assert_eq!(round_half_up(-0.5), 0);
        assert_eq!(round_half_up(-0.51), -1);
    }
}

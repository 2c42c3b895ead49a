//! Image types as PyRadiomics' `imageoperations.get<Type>Image`: Original,
//! the simple intensity maps (Square, SquareRoot, Logarithm, Exponential),
//! Gradient (SimpleITK's gradient magnitude: central differences, edge voxels
//! repeated, written as float32) and Wavelet (PyWavelets' `swtn` with coif1,
//! one level at a time on the approximation, odd axes padded by wrapping one
//! voxel), LoG (SimpleITK's LaplacianRecursiveGaussianImageFilter: Deriche's
//! recursive Gaussian, its float32 intermediate images reproduced) and
//! `normalize` (SimpleITK's Normalize: z-score with the sample standard
//! deviation).

use super::params::{ImageType, Settings};
use super::{Image, RadiomicsError};

/// sitk.Normalize, then removeOutliers clamping, then normalizeScale.
pub fn normalize(data: &mut [f64], scale: f64, outliers: Option<f64>) {
    let n = data.len() as f64;
    let mean = data.iter().sum::<f64>() / n;
    let var = data.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1.0);
    // SimpleITK shifts, then multiplies by the reciprocal.
    let inv = 1.0 / var.sqrt();
    for v in data.iter_mut() {
        let mut z = (*v - mean) * inv;
        if let Some(o) = outliers {
            z = z.clamp(-o, o);
        }
        *v = z * scale;
    }
}

fn map(img: &Image, f: impl Fn(f64) -> f64) -> Image {
    Image { dims: img.dims, spacing: img.spacing, data: img.data.iter().map(|&v| f(v)).collect() }
}

/// The images (with their name prefixes) one image type yields.
pub fn apply(t: ImageType, img: &Image, s: &Settings) -> Result<Vec<(String, Image)>, RadiomicsError> {
    Ok(match t {
        ImageType::Original => vec![("original".into(), img.clone())],
        ImageType::Square | ImageType::SquareRoot | ImageType::Logarithm | ImageType::Exponential => {
            let (min, max) =
                img.data.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
            pointwise(t, img, min, max).into_iter().collect()
        }
        ImageType::Gradient => vec![("gradient".into(), gradient(img, s.gradient_use_spacing))],
        ImageType::Wavelet => wavelet(img, s),
        ImageType::LoG => log_images(img, s),
        ImageType::Lbp2D | ImageType::Lbp3D => {
            return Err(RadiomicsError::Unsupported("the LBP image types".into()));
        }
    })
}

fn log_map(v: f64) -> f64 {
    if v > 0.0 {
        (v + 1.0).ln()
    } else if v < 0.0 {
        -(-(v - 1.0)).ln()
    } else {
        v
    }
}

/// The intensity maps (Square, SquareRoot, Logarithm, Exponential) of `img`,
/// scaled as PyRadiomics scales them by the extremes (`min`, `max`) of the
/// whole image the filter sees, which may be larger than `img`: the
/// largest absolute value is at an extreme, and so is the largest absolute
/// logarithm (the map is monotonic). None for other image types.
pub fn pointwise(t: ImageType, img: &Image, min: f64, max: f64) -> Option<(String, Image)> {
    let m = 0.0f64.max(min.abs()).max(max.abs());
    Some(match t {
        ImageType::Original => ("original".into(), img.clone()),
        ImageType::Square => {
            let c = 1.0 / m.sqrt();
            ("square".into(), map(img, |v| (c * v) * (c * v)))
        }
        ImageType::SquareRoot => (
            "squareroot".into(),
            map(img, |v| {
                if v > 0.0 {
                    (v * m).sqrt()
                } else if v < 0.0 {
                    -(-v * m).sqrt()
                } else {
                    v
                }
            }),
        ),
        ImageType::Logarithm => {
            let lm = 0.0f64.max(log_map(min).abs()).max(log_map(max).abs());
            ("logarithm".into(), map(img, |v| log_map(v) * (m / lm)))
        }
        ImageType::Exponential => {
            let c = m.ln() / m;
            ("exponential".into(), map(img, |v| (c * v).exp()))
        }
        _ => return None,
    })
}

/// Gradient magnitude with central differences (zero-flux edges), as float32.
pub fn gradient(img: &Image, use_spacing: bool) -> Image {
    let [nx, ny, nz] = img.dims;
    let at = |x: usize, y: usize, z: usize| img.data[x + nx * (y + ny * z)];
    let mut out = vec![0.0; img.data.len()];
    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                let mut sum = 0.0;
                let pos = [x, y, z];
                for d in 0..3 {
                    let n = img.dims[d];
                    let mut lo = pos;
                    let mut hi = pos;
                    lo[d] = pos[d].saturating_sub(1);
                    hi[d] = (pos[d] + 1).min(n - 1);
                    let sp = if use_spacing { img.spacing[d] } else { 1.0 };
                    let g = 0.5 * (at(hi[0], hi[1], hi[2]) - at(lo[0], lo[1], lo[2])) / sp;
                    sum += g * g;
                }
                out[x + nx * (y + ny * z)] = f64::from(sum.sqrt() as f32);
            }
        }
    }
    Image { dims: img.dims, spacing: img.spacing, data: out }
}

const COIF1_LO: [f64; 6] = [
    -0.015655728135791993,
    -0.07273261951252645,
    0.3848648468648578,
    0.8525720202116004,
    0.3378976624574818,
    -0.07273261951252645,
];
const COIF1_HI: [f64; 6] = [
    0.07273261951252645,
    0.3378976624574818,
    -0.8525720202116004,
    0.3848648468648578,
    0.07273261951252645,
    -0.015655728135791993,
];

/// One undecimated level along `axis` (0 = x) with both filters: PyWavelets'
/// periodised SWT, output o reads input o + F/2 - j (F = 6 taps), so o reads
/// o - 2 ..= o + 3. With `whole` the axis is the whole (even) period and the
/// convolution circular; otherwise the axis is a window and the output the
/// part of it whose inputs all lie inside (5 voxels shorter). Each output is
/// summed over the taps in order, as PyWavelets does.
fn swt_pass(data: &[f64], dims: [usize; 3], axis: usize, whole: bool) -> ([Vec<f64>; 2], [usize; 3]) {
    let n = dims[axis];
    let m = if whole { n } else { n.saturating_sub(5) };
    let mut od = dims;
    od[axis] = m;
    let inner: usize = dims[..axis].iter().product();
    let outer: usize = dims[axis + 1..].iter().product();
    let len = od[0] * od[1] * od[2];
    let mut out = [vec![0.0; len], vec![0.0; len]];
    // Input index (along the axis) tap j of output o reads.
    let src = |o: usize, j: usize| if whole { (o + n + 3 - j) % n } else { o + 5 - j };
    if inner == 1 {
        let mut ext = vec![0.0; n + 5];
        for b in 0..outer {
            let line = &data[b * n..(b + 1) * n];
            for (k, e) in ext.iter_mut().enumerate().take(m + 5) {
                *e = if whole { line[(k + n - 2) % n] } else { line[k] };
            }
            for (f, o) in [&COIF1_LO, &COIF1_HI].into_iter().zip(out.iter_mut()) {
                let dst = &mut o[b * m..(b + 1) * m];
                for (i, d) in dst.iter_mut().enumerate() {
                    let mut sum = 0.0;
                    for (j, c) in f.iter().enumerate() {
                        sum += c * ext[i + 5 - j];
                    }
                    *d = sum;
                }
            }
        }
    } else {
        for b in 0..outer {
            let block = &data[b * n * inner..(b + 1) * n * inner];
            for (f, o) in [&COIF1_LO, &COIF1_HI].into_iter().zip(out.iter_mut()) {
                let oblock = &mut o[b * m * inner..(b + 1) * m * inner];
                for (i, dst) in oblock.chunks_exact_mut(inner).enumerate() {
                    for (j, c) in f.iter().enumerate() {
                        let row = &block[src(i, j) * inner..(src(i, j) + 1) * inner];
                        for (d, v) in dst.iter_mut().zip(row) {
                            *d += c * v;
                        }
                    }
                }
            }
        }
    }
    (out, od)
}

fn wavelet(img: &Image, s: &Settings) -> Vec<(String, Image)> {
    let mut out = Vec::new();
    wavelet_bands(img, s, [true; 3], [0; 3], img.dims, |name, band| out.push((name, band)));
    out
}

/// PyRadiomics' `getLoGImage`: one image per sigma (mm), named
/// `log-sigma-<str(sigma) with . as ->-mm-3D`. An image smaller than 4 voxels
/// along an axis yields none, a sigma with `size < ceil(sigma / spacing) + 1`
/// along an axis is skipped; both with a warning, as PyRadiomics logs them.
fn log_images(img: &Image, s: &Settings) -> Vec<(String, Image)> {
    let mut out = Vec::new();
    if img.dims.iter().any(|&d| d < 4) {
        tracing::warn!(size = ?img.dims, "image too small to apply the LoG filter (fewer than 4 voxels along an axis)");
        return out;
    }
    for (k, &sigma) in s.sigma.iter().enumerate() {
        let fits = (0..3).all(|d| img.dims[d] as f64 >= (sigma / img.spacing[d]).ceil() + 1.0);
        if sigma.is_nan() || sigma <= 0.0 {
            tracing::warn!(sigma, "LoG sigma must be greater than 0; skipped");
            continue;
        }
        if !fits {
            tracing::warn!(sigma, size = ?img.dims, "LoG sigma / spacing + 1 exceeds the image size; skipped");
            continue;
        }
        let text = s.sigma_text.get(k).cloned().unwrap_or_else(|| super::params::python_float_str(sigma));
        out.push((format!("log-sigma-{}-mm-3D", text.replace('.', "-")), laplacian_of_gaussian(img, sigma)));
    }
    out
}

/// Coefficients of ITK's RecursiveSeparableImageFilter (Deriche's 4th-order
/// recursive approximation of the Gaussian and its derivatives).
#[derive(Debug, Clone, Copy)]
struct Recursive {
    n: [f64; 4],
    d: [f64; 4],
    m: [f64; 4],
    bn: [f64; 4],
    bm: [f64; 4],
}

impl Recursive {
    /// itk::RecursiveGaussianImageFilter::SetUp for order 0 (smoothing) or 2
    /// (second derivative, normalised across scale by sigma²).
    fn new(sigma: f64, spacing: f64, second: bool) -> Recursive {
        let sigmad = sigma / spacing;
        let (a1, b1, w1, l1) = ([1.3530, -0.6724, -1.3563], [1.8151, -3.4327, 5.2318], 0.6681, -1.3932);
        let (a2, b2, w2, l2) = ([-0.3531, 0.6724, 0.3446], [0.0902, 0.6100, -2.2355], 2.0787, -1.3732);
        let (cos1, cos2) = ((w1 / sigmad).cos(), (w2 / sigmad).cos());
        let (sin1, sin2) = ((w1 / sigmad).sin(), (w2 / sigmad).sin());
        let (exp1, exp2) = ((l1 / sigmad).exp(), (l2 / sigmad).exp());
        let d4 = exp1 * exp1 * exp2 * exp2;
        let mut d3 = -2.0 * cos1 * exp1 * exp2 * exp2;
        d3 += -2.0 * cos2 * exp2 * exp1 * exp1;
        let mut d2 = 4.0 * cos2 * cos1 * exp1 * exp2;
        d2 += exp1 * exp1 + exp2 * exp2;
        let d1 = -2.0 * (exp2 * cos2 + exp1 * cos1);
        let sd = 1.0 + d1 + d2 + d3 + d4;
        let dd = d1 + 2.0 * d2 + 3.0 * d3 + 4.0 * d4;
        let ed = d1 + 4.0 * d2 + 9.0 * d3 + 16.0 * d4;
        // ComputeNCoefficients: N0..N3, SN, DN, EN.
        let ncoef = |a1: f64, b1: f64, a2: f64, b2: f64| -> [f64; 7] {
            let n0 = a1 + a2;
            let mut n1 = exp2 * (b2 * sin2 - (a2 + 2.0 * a1) * cos2);
            n1 += exp1 * (b1 * sin1 - (a1 + 2.0 * a2) * cos1);
            let mut n2 = (a1 + a2) * cos2 * cos1;
            n2 -= b1 * cos2 * sin1 + b2 * cos1 * sin2;
            n2 *= 2.0 * exp1 * exp2;
            n2 += a2 * exp1 * exp1 + a1 * exp2 * exp2;
            let mut n3 = exp2 * exp1 * exp1 * (b2 * sin2 - a2 * cos2);
            n3 += exp1 * exp2 * exp2 * (b1 * sin1 - a1 * cos1);
            [n0, n1, n2, n3, n0 + n1 + n2 + n3, n1 + 2.0 * n2 + 3.0 * n3, n1 + 4.0 * n2 + 9.0 * n3]
        };
        let mut n;
        if second {
            let c0 = ncoef(a1[0], b1[0], a2[0], b2[0]);
            let c2 = ncoef(a1[2], b1[2], a2[2], b2[2]);
            let beta = -(2.0 * c2[4] - sd * c2[0]) / (2.0 * c0[4] - sd * c0[0]);
            n = [c2[0] + beta * c0[0], c2[1] + beta * c0[1], c2[2] + beta * c0[2], c2[3] + beta * c0[3]];
            let sn = c2[4] + beta * c0[4];
            let dn = c2[5] + beta * c0[5];
            let en = c2[6] + beta * c0[6];
            let mut alpha2 = en * sd * sd - ed * sn * sd - 2.0 * dn * dd * sd + 2.0 * dd * dd * sn;
            alpha2 /= sd * sd * sd;
            let across = sigma * sigma;
            for v in &mut n {
                *v *= across / alpha2;
            }
        } else {
            let c = ncoef(a1[0], b1[0], a2[0], b2[0]);
            n = [c[0], c[1], c[2], c[3]];
            let alpha0 = 2.0 * c[4] / sd - n[0];
            for v in &mut n {
                *v *= 1.0 / alpha0;
            }
        }
        let d = [d1, d2, d3, d4];
        // ComputeRemainingCoefficients(symmetric = true).
        let m = [n[1] - d1 * n[0], n[2] - d2 * n[0], n[3] - d3 * n[0], -d4 * n[0]];
        let sn = n[0] + n[1] + n[2] + n[3];
        let sm = m[0] + m[1] + m[2] + m[3];
        let sd = 1.0 + d1 + d2 + d3 + d4;
        let bn = [d1 * sn / sd, d2 * sn / sd, d3 * sn / sd, d4 * sn / sd];
        let bm = [d1 * sm / sd, d2 * sm / sd, d3 * sm / sd, d4 * sm / sd];
        Recursive { n, d, m, bn, bm }
    }

    /// RecursiveSeparableImageFilter::FilterDataArray on one line (at least
    /// 4 samples): causal and anti-causal passes with edge extension.
    fn filter_line(&self, data: &[f64], outs: &mut [f64], scratch: &mut [f64]) {
        let ln = data.len();
        let [n0, n1, n2, n3] = self.n;
        let [d1, d2, d3, d4] = self.d;
        let [m1, m2, m3, m4] = self.m;
        let [bn1, bn2, bn3, bn4] = self.bn;
        let [bm1, bm2, bm3, bm4] = self.bm;
        let s1 = outs;
        let v = data[0];
        s1[0] = v * n0 + v * n1 + v * n2 + v * n3;
        s1[1] = data[1] * n0 + v * n1 + v * n2 + v * n3;
        s1[2] = data[2] * n0 + data[1] * n1 + v * n2 + v * n3;
        s1[3] = data[3] * n0 + data[2] * n1 + data[1] * n2 + v * n3;
        s1[0] -= v * bn1 + v * bn2 + v * bn3 + v * bn4;
        s1[1] -= s1[0] * d1 + v * bn2 + v * bn3 + v * bn4;
        s1[2] -= s1[1] * d1 + s1[0] * d2 + v * bn3 + v * bn4;
        s1[3] -= s1[2] * d1 + s1[1] * d2 + s1[0] * d3 + v * bn4;
        for i in 4..ln {
            s1[i] = data[i] * n0 + data[i - 1] * n1 + data[i - 2] * n2 + data[i - 3] * n3;
            s1[i] -= s1[i - 1] * d1 + s1[i - 2] * d2 + s1[i - 3] * d3 + s1[i - 4] * d4;
        }
        let s2 = scratch;
        let v = data[ln - 1];
        s2[ln - 1] = v * m1 + v * m2 + v * m3 + v * m4;
        s2[ln - 2] = data[ln - 1] * m1 + v * m2 + v * m3 + v * m4;
        s2[ln - 3] = data[ln - 2] * m1 + data[ln - 1] * m2 + v * m3 + v * m4;
        s2[ln - 4] = data[ln - 3] * m1 + data[ln - 2] * m2 + data[ln - 1] * m3 + v * m4;
        s2[ln - 1] -= v * bm1 + v * bm2 + v * bm3 + v * bm4;
        s2[ln - 2] -= s2[ln - 1] * d1 + v * bm2 + v * bm3 + v * bm4;
        s2[ln - 3] -= s2[ln - 2] * d1 + s2[ln - 1] * d2 + v * bm3 + v * bm4;
        s2[ln - 4] -= s2[ln - 3] * d1 + s2[ln - 2] * d2 + s2[ln - 1] * d3 + v * bm4;
        for i in (1..=ln - 4).rev() {
            s2[i - 1] = data[i] * m1 + data[i + 1] * m2 + data[i + 2] * m3 + data[i + 3] * m4;
            s2[i - 1] -= s2[i] * d1 + s2[i + 1] * d2 + s2[i + 2] * d3 + s2[i + 3] * d4;
        }
        for i in 0..ln {
            s1[i] += s2[i];
        }
    }
}

/// One recursive pass along `axis` (0 = x), every line; the result is
/// stored as float32 as ITK's internal image is.
fn recursive_axis(data: &[f64], dims: [usize; 3], axis: usize, f: &Recursive) -> Vec<f64> {
    let n = dims[axis];
    let stride = [1, dims[0], dims[0] * dims[1]][axis];
    let mut out = vec![0.0; data.len()];
    let (mut line, mut res, mut scratch) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
    for start in 0..data.len() {
        if !(start / stride).is_multiple_of(n) {
            continue;
        }
        for (k, l) in line.iter_mut().enumerate() {
            *l = data[start + k * stride];
        }
        f.filter_line(&line, &mut res, &mut scratch);
        for (k, r) in res.iter().enumerate() {
            out[start + k * stride] = f64::from(*r as f32);
        }
    }
    out
}

/// SimpleITK's LaplacianRecursiveGaussianImageFilter with
/// NormalizeAcrossScale on: for each axis the second derivative along it and
/// Gaussian smoothing along the other two (in axis order), each pass kept as
/// float32, accumulated as float32 with `a + b * (1 / spacing²)`.
pub fn laplacian_of_gaussian(img: &Image, sigma: f64) -> Image {
    let mut cum = vec![0.0f64; img.data.len()];
    for dim in 0..3 {
        let mut t = recursive_axis(&img.data, img.dims, dim, &Recursive::new(sigma, img.spacing[dim], true));
        for other in (0..3).filter(|&o| o != dim) {
            t = recursive_axis(&t, img.dims, other, &Recursive::new(sigma, img.spacing[other], false));
        }
        let inv = 1.0 / (img.spacing[dim] * img.spacing[dim]);
        for (c, v) in cum.iter_mut().zip(&t) {
            *c = f64::from((*c + v * inv) as f32);
        }
    }
    Image { dims: img.dims, spacing: img.spacing, data: cum }
}

/// PyRadiomics' wavelet images of `img`, each cropped to `want_dims` voxels
/// and handed to `emit` in PyRadiomics' order (LLH … HHH per level, then the
/// last LLL). Along an axis marked `whole`, `img` holds the whole image axis
/// (padded to even length by wrapping, as numpy.pad 'wrap'; the SWT is
/// periodic) and the crop starts at `want_lo`; along the others `img` holds
/// the wanted range plus 2 voxels before and 3 after for each level computed
/// (start_level + level), which is all the convolutions read.
pub fn wavelet_bands(
    img: &Image,
    s: &Settings,
    whole: [bool; 3],
    want_lo: [usize; 3],
    want_dims: [usize; 3],
    mut emit: impl FnMut(String, Image),
) {
    let levels = s.level.max(1) as usize;
    let passes = s.start_level.max(0) as usize + levels;
    let pd: [usize; 3] = [0, 1, 2].map(|a| if whole[a] { img.dims[a] + img.dims[a] % 2 } else { img.dims[a] });
    let mut data = if pd == img.dims {
        img.data.clone()
    } else {
        let mut data = Vec::with_capacity(pd[0] * pd[1] * pd[2]);
        for z in 0..pd[2] {
            for y in 0..pd[1] {
                let row = img.dims[0] * ((y % img.dims[1]) + img.dims[1] * (z % img.dims[2]));
                data.extend((0..pd[0]).map(|x| img.data[row + x % img.dims[0]]));
            }
        }
        data
    };
    let mut dims = pd;
    let crop = |v: &[f64], d: [usize; 3], done: usize| -> Image {
        let lo: [usize; 3] = [0, 1, 2].map(|a| if whole[a] { want_lo[a] } else { 2 * (passes - done) });
        let mut out = Vec::with_capacity(want_dims[0] * want_dims[1] * want_dims[2]);
        for z in lo[2]..lo[2] + want_dims[2] {
            for y in lo[1]..lo[1] + want_dims[1] {
                let row = d[0] * (y + d[1] * z) + lo[0];
                out.extend_from_slice(&v[row..row + want_dims[0]]);
            }
        }
        Image { dims: want_dims, spacing: img.spacing, data: out }
    };
    // One level, depth first (x, then y, then z), so that at most one band
    // per axis is held besides the approximation: the detail bands go to
    // `emit` (when asked) in PyRadiomics' order, the approximation (LLL) is
    // returned.
    let one_level = |d: Vec<f64>, dm: [usize; 3], done: usize, mut band: Option<&mut dyn FnMut(String, Image)>| {
        let ([xl, xh], dx) = swt_pass(&d, dm, 0, whole[0]);
        drop(d);
        let mut approx = (Vec::new(), dx);
        for (nx, bx) in [("L", xl), ("H", xh)] {
            let ([yl, yh], dy) = swt_pass(&bx, dx, 1, whole[1]);
            drop(bx);
            for (ny, by) in [("L", yl), ("H", yh)] {
                let ([zl, zh], dz) = swt_pass(&by, dy, 2, whole[2]);
                drop(by);
                for (nz, bz) in [("L", zl), ("H", zh)] {
                    let name = format!("{nx}{ny}{nz}");
                    if name == "LLL" {
                        approx = (bz, dz);
                    } else if let Some(e) = band.as_mut() {
                        e(name, crop(&bz, dz, done));
                    }
                }
            }
        }
        approx
    };
    let mut done = 0;
    for _ in 0..s.start_level.max(0) {
        done += 1;
        (data, dims) = one_level(data, dims, done, None);
    }
    for idx in 1..=levels {
        done += 1;
        let mut named = |name: String, band: Image| {
            let prefix = if idx == 1 { format!("wavelet-{name}") } else { format!("wavelet{idx}-{name}") };
            emit(prefix, band);
        };
        (data, dims) = one_level(data, dims, done, Some(&mut named));
    }
    let prefix = if levels == 1 { "wavelet-LLL".to_string() } else { format!("wavelet{levels}-LLL") };
    emit(prefix, crop(&data, dims, done));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(n: usize) -> Vec<f64> {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        (0..n)
            .map(|_| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((seed >> 11) % 4000) as f64 - 1000.0
            })
            .collect()
    }

    fn crop(img: &Image, lo: [usize; 3], dims: [usize; 3]) -> Vec<f64> {
        let mut out = Vec::new();
        for z in lo[2]..lo[2] + dims[2] {
            for y in lo[1]..lo[1] + dims[1] {
                let row = img.dims[0] * (y + img.dims[1] * z);
                out.extend_from_slice(&img.data[row + lo[0]..row + lo[0] + dims[0]]);
            }
        }
        out
    }

    /// The wavelet of a box plus its margin (one axis taken whole, odd, so
    /// that it wraps) is the whole image's wavelet cropped to the box, to
    /// the bit, for one level and for a start level with two levels.
    #[test]
    fn wavelet_of_a_window_is_the_whole_wavelet_cropped() {
        let dims = [24, 13, 26];
        let img = Image { dims, spacing: [0.8, 0.9, 2.0], data: noise(dims[0] * dims[1] * dims[2]) };
        for (start_level, level) in [(0, 1), (1, 2)] {
            let s = Settings { start_level, level, ..Settings::default() };
            let p = (start_level + level) as usize;
            let whole = wavelet(&img, &s);
            assert_eq!(whole.len(), 7 * level as usize + 1);
            let (lo, want) = ([7, 5, 8], [3, 2, 4]);
            let hlo = [lo[0] - 2 * p, 0, lo[2] - 2 * p];
            let hdims = [want[0] + 5 * p, dims[1], want[2] + 5 * p];
            let halo = Image { dims: hdims, spacing: img.spacing, data: crop(&img, hlo, hdims) };
            let mut got = Vec::new();
            wavelet_bands(&halo, &s, [false, true, false], [0, lo[1], 0], want, |n, b| got.push((n, b)));
            assert_eq!(got.len(), whole.len());
            for ((gn, gb), (wn, wb)) in got.iter().zip(&whole) {
                assert_eq!(gn, wn);
                assert_eq!(gb.dims, want);
                assert_eq!(gb.data, crop(wb, lo, want), "{gn}");
            }
        }
    }
}

//! Image types as PyRadiomics' `imageoperations.get<Type>Image`: Original,
//! the simple intensity maps (Square, SquareRoot, Logarithm, Exponential),
//! Gradient (SimpleITK's gradient magnitude: central differences, edge voxels
//! repeated, written as float32) and Wavelet (PyWavelets' `swtn` with coif1,
//! one level at a time on the approximation, odd axes padded by wrapping one
//! voxel). Also `normalize` (SimpleITK's Normalize: z-score with the sample
//! standard deviation).

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

fn max_abs(img: &Image) -> f64 {
    img.data.iter().fold(0.0f64, |m, v| m.max(v.abs()))
}

/// The images (with their name prefixes) one image type yields.
pub fn apply(t: ImageType, img: &Image, s: &Settings) -> Result<Vec<(String, Image)>, RadiomicsError> {
    Ok(match t {
        ImageType::Original => vec![("original".into(), img.clone())],
        ImageType::Square => {
            let c = 1.0 / max_abs(img).sqrt();
            vec![("square".into(), map(img, |v| (c * v) * (c * v)))]
        }
        ImageType::SquareRoot => {
            let c = max_abs(img);
            vec![(
                "squareroot".into(),
                map(img, |v| {
                    if v > 0.0 {
                        (v * c).sqrt()
                    } else if v < 0.0 {
                        -(-v * c).sqrt()
                    } else {
                        v
                    }
                }),
            )]
        }
        ImageType::Logarithm => {
            let m = max_abs(img);
            let l = map(img, |v| {
                if v > 0.0 {
                    (v + 1.0).ln()
                } else if v < 0.0 {
                    -(-(v - 1.0)).ln()
                } else {
                    v
                }
            });
            let lm = max_abs(&l);
            vec![("logarithm".into(), map(&l, |v| v * (m / lm)))]
        }
        ImageType::Exponential => {
            let m = max_abs(img);
            let c = m.ln() / m;
            vec![("exponential".into(), map(img, |v| (c * v).exp()))]
        }
        ImageType::Gradient => vec![("gradient".into(), gradient(img, s.gradient_use_spacing))],
        ImageType::Wavelet => wavelet(img, s),
        ImageType::LoG => return Err(RadiomicsError::Unsupported("the LoG image type".into())),
        ImageType::Lbp2D | ImageType::Lbp3D => {
            return Err(RadiomicsError::Unsupported("the LBP image types".into()));
        }
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

/// One undecimated level along `axis` (0 = x): circular convolution aligned
/// as PyWavelets' periodised SWT (output o reads input o + F/2 - j).
fn swt_axis(data: &[f64], dims: [usize; 3], axis: usize, filter: &[f64; 6]) -> Vec<f64> {
    let n = dims[axis];
    let stride = match axis {
        0 => 1,
        1 => dims[0],
        _ => dims[0] * dims[1],
    };
    let mut out = vec![0.0; data.len()];
    let half = filter.len() / 2;
    for start in 0..data.len() {
        let coord = (start / stride) % n;
        if coord != 0 {
            continue;
        }
        for o in 0..n {
            let mut sum = 0.0;
            for (j, f) in filter.iter().enumerate() {
                let k = (o + half + n * filter.len() - j) % n;
                sum += f * data[start + k * stride];
            }
            out[start + o * stride] = sum;
        }
    }
    out
}

fn wavelet(img: &Image, s: &Settings) -> Vec<(String, Image)> {
    // Pad odd axes by one voxel, wrapping (numpy.pad 'wrap').
    let pd = img.dims.map(|d| d + d % 2);
    let mut data = vec![0.0; pd[0] * pd[1] * pd[2]];
    for z in 0..pd[2] {
        for y in 0..pd[1] {
            for x in 0..pd[0] {
                let src = (x % img.dims[0]) + img.dims[0] * ((y % img.dims[1]) + img.dims[1] * (z % img.dims[2]));
                data[x + pd[0] * (y + pd[1] * z)] = img.data[src];
            }
        }
    }
    let unpad = |v: &[f64]| -> Image {
        let mut out = Vec::with_capacity(img.data.len());
        for z in 0..img.dims[2] {
            for y in 0..img.dims[1] {
                let row = pd[0] * (y + pd[1] * z);
                out.extend_from_slice(&v[row..row + img.dims[0]]);
            }
        }
        Image { dims: img.dims, spacing: img.spacing, data: out }
    };
    let one_level = |d: &[f64]| -> Vec<(String, Vec<f64>)> {
        let mut bands = vec![(String::new(), d.to_vec())];
        for axis in 0..3 {
            let mut next = Vec::new();
            for (name, b) in &bands {
                next.push((format!("{name}L"), swt_axis(b, pd, axis, &COIF1_LO)));
                next.push((format!("{name}H"), swt_axis(b, pd, axis, &COIF1_HI)));
            }
            bands = next;
        }
        bands
    };
    for _ in 0..s.start_level {
        data = one_level(&data).swap_remove(0).1;
    }
    let mut out = Vec::new();
    let levels = s.level.max(1) as usize;
    for idx in 1..=levels {
        let mut bands = one_level(&data);
        let approx = bands.remove(0).1;
        for (name, b) in bands {
            let prefix = if idx == 1 { format!("wavelet-{name}") } else { format!("wavelet{idx}-{name}") };
            out.push((prefix, unpad(&b)));
        }
        data = approx;
    }
    let prefix = if levels == 1 { "wavelet-LLL".to_string() } else { format!("wavelet{levels}-LLL") };
    out.push((prefix, unpad(&data)));
    out
}

//! Local binary pattern image types as PyRadiomics' `getLBP2DImage`:
//! scikit-image's `local_binary_pattern` slice by slice across
//! force2Ddimension (samples on a circle at positions rounded to 5 decimals,
//! bilinear interpolation with zeros outside the slice, the methods
//! `default`, `ror`, `uniform` and `var`), the result written back in the
//! image's own voxel type as numpy assigns it.

use super::Image;
use super::params::{Lbp2DMethod, Settings};
use super::resample::PixelType;

/// numpy.round(x, 5).
fn round5(x: f64) -> f64 {
    (x * 1e5).round_ties_even() / 1e5
}

/// The sample offsets (row, column) of scikit-image's circle.
fn circle(p: usize, r: f64) -> Vec<[f64; 2]> {
    (0..p)
        .map(|i| {
            let a = 2.0 * std::f64::consts::PI * i as f64 / p as f64;
            [round5(-r * a.sin()), round5(r * a.cos())]
        })
        .collect()
}

/// scikit-image's bilinear interpolation, constant 0 outside.
fn bilinear(img: &[f64], rows: usize, cols: usize, r: f64, c: f64) -> f64 {
    let get = |y: i64, x: i64| -> f64 {
        if y < 0 || x < 0 || y >= rows as i64 || x >= cols as i64 { 0.0 } else { img[y as usize * cols + x as usize] }
    };
    let (minr, minc, maxr, maxc) = (r.floor() as i64, c.floor() as i64, r.ceil() as i64, c.ceil() as i64);
    let dr = r - minr as f64;
    let dc = c - minc as f64;
    let top = (1.0 - dc) * get(minr, minc) + dc * get(minr, maxc);
    let bottom = (1.0 - dc) * get(maxr, minc) + dc * get(maxr, maxc);
    (1.0 - dr) * top + dr * bottom
}

/// scikit-image's `local_binary_pattern` on one 2D slice (rows × cols, columns fastest).
pub fn local_binary_pattern(
    img: &[f64],
    rows: usize,
    cols: usize,
    p: usize,
    radius: f64,
    method: Lbp2DMethod,
) -> Vec<f64> {
    let offs = circle(p, radius);
    let mut out = vec![0.0; rows * cols];
    let mut texture = vec![0.0; p];
    let mut signed = vec![0i32; p];
    for r in 0..rows {
        for c in 0..cols {
            let centre = img[r * cols + c];
            for (i, o) in offs.iter().enumerate() {
                texture[i] = bilinear(img, rows, cols, r as f64 + o[0], c as f64 + o[1]);
                signed[i] = i32::from(texture[i] - centre >= 0.0);
            }
            let v = match method {
                Lbp2DMethod::Uniform | Lbp2DMethod::Var => {
                    let changes: i32 = signed.windows(2).map(|w| (w[0] - w[1]).abs()).sum();
                    let uniform = if changes <= 2 { signed.iter().sum::<i32>() as f64 } else { (p + 1) as f64 };
                    if method == Lbp2DMethod::Var {
                        let (mut s, mut s2) = (0.0, 0.0);
                        for &t in &texture {
                            s += t;
                            s2 += t * t;
                        }
                        let var = (s2 - s * s / p as f64) / p as f64;
                        if var != 0.0 { var } else { f64::NAN }
                    } else {
                        uniform
                    }
                }
                Lbp2DMethod::Default | Lbp2DMethod::Ror => {
                    let mut code: u64 = 0;
                    for (i, &s) in signed.iter().enumerate() {
                        if s != 0 {
                            code |= 1u64 << i;
                        }
                    }
                    if method == Lbp2DMethod::Ror {
                        let mut best = code;
                        let mut cur = code;
                        for _ in 1..p {
                            cur = (cur >> 1) | ((cur & 1) << (p - 1));
                            best = best.min(cur);
                        }
                        code = best;
                    }
                    code as f64
                }
            };
            out[r * cols + c] = v;
        }
    }
    out
}

/// numpy's assignment of a float64 into an array of the image's type:
/// integers truncated and wrapped (NaN becomes 0), float32 rounded.
fn numpy_assign(pixel: PixelType, v: f64) -> f64 {
    let t = if v.is_nan() { 0 } else { v.trunc() as i64 };
    match pixel {
        PixelType::U8 => f64::from(t as u8),
        PixelType::I8 => f64::from(t as i8),
        PixelType::U16 => f64::from(t as u16),
        PixelType::I16 => f64::from(t as i16),
        PixelType::U32 => f64::from(t as u32),
        PixelType::I32 => f64::from(t as i32),
        PixelType::U64 => t as u64 as f64,
        PixelType::I64 => t as f64,
        PixelType::F32 => f64::from(v as f32),
        PixelType::F64 => v,
    }
}

/// The `lbp-2D` image: every slice across force2Ddimension (0 = z, numpy's
/// axis order) filtered, the values cast to the image's voxel type.
pub fn lbp2d(img: &Image, s: &Settings, pixel: PixelType) -> Image {
    let [nx, ny, nz] = img.dims;
    let idx = |x: usize, y: usize, z: usize| x + nx * (y + ny * z);
    let p = s.lbp2d_samples.max(1) as usize;
    let mut out = vec![0.0; img.data.len()];
    // numpy's swapaxes(0, d): the slice's rows and columns are the other two
    // axes in z, y, x order, except for d = 2 where they are y, z.
    let (n_slices, rows, cols) = match s.force_2d_dimension {
        1 => (ny, nz, nx),
        2 => (nx, ny, nz),
        _ => (nz, ny, nx),
    };
    let at = |k: usize, r: usize, c: usize| match s.force_2d_dimension {
        1 => idx(c, k, r),
        2 => idx(k, r, c),
        _ => idx(c, r, k),
    };
    let mut slice = vec![0.0; rows * cols];
    for k in 0..n_slices {
        for r in 0..rows {
            for c in 0..cols {
                slice[r * cols + c] = img.data[at(k, r, c)];
            }
        }
        let l = local_binary_pattern(&slice, rows, cols, p, s.lbp2d_radius, s.lbp2d_method);
        for r in 0..rows {
            for c in 0..cols {
                out[at(k, r, c)] = numpy_assign(pixel, l[r * cols + c]);
            }
        }
    }
    Image { dims: img.dims, spacing: img.spacing, data: out }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_patterns_of_a_ramp() {
        // A ramp along the columns: half the circle is above the centre.
        let img: Vec<f64> = (0..25).map(|i| (i % 5) as f64).collect();
        let l = local_binary_pattern(&img, 5, 5, 8, 1.0, Lbp2DMethod::Uniform);
        // Samples 7, 0, 1 (columns +1) and 2, 6 (same column) are >= the centre: 5 ones, uniform.
        assert_eq!(l[2 * 5 + 2], 5.0);
        let d = local_binary_pattern(&img, 5, 5, 8, 1.0, Lbp2DMethod::Default);
        assert_eq!(d[2 * 5 + 2], f64::from(0b1100_0111u8));
        let ror = local_binary_pattern(&img, 5, 5, 8, 1.0, Lbp2DMethod::Ror);
        assert_eq!(ror[2 * 5 + 2], 31.0);
    }
}

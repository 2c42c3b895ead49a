//! Local binary pattern image types. LBP3D as PyRadiomics' `getLBP3DImage`
//! (see `lbp3d`); LBP2D as its `getLBP2DImage`:
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

/// trimesh's `icosphere(subdivisions, radius)` vertices (x, y, z): the unit
/// icosahedron, each subdivision adding its edges' midpoints and moving every
/// vertex onto the radius (`v + v/|v| · (radius − |v|)`).
pub fn icosphere(subdivisions: i64, radius: f64) -> Vec<[f64; 3]> {
    let t = (1.0 + 5.0f64.sqrt()) / 2.0;
    let raw: [[f64; 3]; 12] = [
        [-1.0, t, 0.0],
        [1.0, t, 0.0],
        [-1.0, -t, 0.0],
        [1.0, -t, 0.0],
        [0.0, -1.0, t],
        [0.0, 1.0, t],
        [0.0, -1.0, -t],
        [0.0, 1.0, -t],
        [t, 0.0, -1.0],
        [t, 0.0, 1.0],
        [-t, 0.0, -1.0],
        [-t, 0.0, 1.0],
    ];
    let mut v: Vec<[f64; 3]> = raw
        .iter()
        .map(|p| {
            let n = (p[0] * p[0] + p[1] * p[1] + p[2] * p[2]).sqrt();
            p.map(|c| c / n)
        })
        .collect();
    let mut faces: Vec<[usize; 3]> = vec![
        [0, 11, 5],
        [0, 5, 1],
        [0, 1, 7],
        [0, 7, 10],
        [0, 10, 11],
        [1, 5, 9],
        [5, 11, 4],
        [11, 10, 2],
        [10, 7, 6],
        [7, 1, 8],
        [3, 9, 4],
        [3, 4, 2],
        [3, 2, 6],
        [3, 6, 8],
        [3, 8, 9],
        [4, 9, 5],
        [2, 4, 11],
        [6, 2, 10],
        [8, 6, 7],
        [9, 8, 1],
    ];
    let project = |v: &mut Vec<[f64; 3]>| {
        for p in v.iter_mut() {
            let s = (p[0] * p[0] + p[1] * p[1] + p[2] * p[2]).sqrt();
            let unit = p.map(|c| c / s);
            for d in 0..3 {
                p[d] += unit[d] * (radius - s);
            }
        }
    };
    for _ in 0..subdivisions {
        let mut mids: std::collections::HashMap<(usize, usize), usize> = std::collections::HashMap::new();
        let mut next = Vec::with_capacity(faces.len() * 4);
        for f in &faces {
            let mut m = [0usize; 3];
            for k in 0..3 {
                let (a, b) = (f[k], f[(k + 1) % 3]);
                let key = (a.min(b), a.max(b));
                m[k] = *mids.entry(key).or_insert_with(|| {
                    let (pa, pb) = (v[key.0], v[key.1]);
                    v.push([(pa[0] + pb[0]) / 2.0, (pa[1] + pb[1]) / 2.0, (pa[2] + pb[2]) / 2.0]);
                    v.len() - 1
                });
            }
            next.push([f[0], m[0], m[2]]);
            next.push([m[0], f[1], m[1]]);
            next.push([m[2], m[1], f[2]]);
            next.push([m[0], m[1], m[2]]);
        }
        faces = next;
        project(&mut v);
    }
    if subdivisions <= 0 {
        project(&mut v);
    }
    v
}

fn factorial(n: i64) -> f64 {
    (1..=n).map(|k| k as f64).product()
}

/// scipy's `sph_harm(m, n, theta, phi)` (theta azimuthal, phi polar;
/// associated Legendre function with the Condon–Shortley phase).
fn sph_harm(m: i64, n: i64, theta: f64, phi: f64) -> (f64, f64) {
    let x = phi.cos();
    let am = m.abs();
    let s = (1.0 - x * x).max(0.0).sqrt();
    let mut p = 1.0;
    for k in 1..=am {
        p *= -((2 * k - 1) as f64) * s;
    }
    let mut legendre = p;
    if n > am {
        let mut p0 = p;
        let mut p1 = x * (2 * am + 1) as f64 * p;
        for l in am + 2..=n {
            let p2 = ((2 * l - 1) as f64 * x * p1 - (l + am - 1) as f64 * p0) / (l - am) as f64;
            p0 = p1;
            p1 = p2;
        }
        legendre = p1;
    }
    if m < 0 {
        let sign = if am % 2 == 1 { -1.0 } else { 1.0 };
        legendre *= sign * factorial(n - am) / factorial(n + am);
    }
    let norm = ((2 * n + 1) as f64 / (4.0 * std::f64::consts::PI) * factorial(n - m) / factorial(n + m)).sqrt();
    let a = m as f64 * theta;
    (norm * legendre * a.cos(), norm * legendre * a.sin())
}

/// scipy.ndimage's cubic spline coefficients along every axis (mirror boundary).
fn spline_coefficients(data: &[f64], dims: [usize; 3]) -> Vec<f64> {
    let z = 3.0f64.sqrt() - 2.0;
    let gain = (1.0 - z) * (1.0 - 1.0 / z);
    let mut c = data.to_vec();
    let strides = [1usize, dims[0], dims[0] * dims[1]];
    let mut line = Vec::new();
    // numpy axes 0, 1, 2 are z, y, x.
    for axis in [2usize, 1, 0] {
        let n = dims[axis];
        if n < 2 {
            continue;
        }
        let st = strides[axis];
        let others: Vec<usize> = (0..3).filter(|&a| a != axis).collect();
        for i in 0..dims[others[1]] {
            for j in 0..dims[others[0]] {
                let base = i * strides[others[1]] + j * strides[others[0]];
                line.clear();
                line.extend((0..n).map(|k| c[base + k * st] * gain));
                // Causal initialisation, mirror boundary (the full sum).
                let zn1 = z.powi(n as i32 - 1);
                let mut zi = z;
                let mut c0 = line[0] + zn1 * line[n - 1];
                for k in 1..n - 1 {
                    c0 += zi * (line[k] + zn1 * line[n - 1 - k]);
                    zi *= z;
                }
                line[0] = c0 / (1.0 - zn1 * zn1);
                for k in 1..n {
                    line[k] += z * line[k - 1];
                }
                line[n - 1] = (z * line[n - 2] + line[n - 1]) * z / (z * z - 1.0);
                for k in (0..n - 1).rev() {
                    line[k] = z * (line[k + 1] - line[k]);
                }
                for k in 0..n {
                    c[base + k * st] = line[k];
                }
            }
        }
    }
    c
}

fn mirror(i: i64, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let p = 2 * (n as i64 - 1);
    let i = i.abs() % p;
    (if i >= n as i64 { p - i } else { i }) as usize
}

fn cubic_weights(t: f64) -> [f64; 4] {
    let u = 1.0 - t;
    [u * u * u / 6.0, 2.0 / 3.0 - t * t + t * t * t / 2.0, 2.0 / 3.0 - u * u + u * u * u / 2.0, t * t * t / 6.0]
}

/// scipy.ndimage.map_coordinates(order=3, mode='constant') at (z, y, x):
/// 0 outside [0, n − 1] along any axis.
fn spline_at(c: &[f64], dims: [usize; 3], p: [f64; 3]) -> f64 {
    let n = [dims[2], dims[1], dims[0]];
    let mut w = [[0.0; 4]; 3];
    let mut idx = [[0usize; 4]; 3];
    for d in 0..3 {
        if !(p[d] >= 0.0 && p[d] <= (n[d] - 1) as f64) {
            return 0.0;
        }
        let f = p[d].floor();
        w[d] = cubic_weights(p[d] - f);
        for k in 0..4 {
            idx[d][k] = mirror(f as i64 - 1 + k as i64, n[d]);
        }
    }
    let mut sum = 0.0;
    for a in 0..4 {
        for b in 0..4 {
            let mut row = 0.0;
            for e in 0..4 {
                row += w[2][e] * c[idx[2][e] + dims[0] * (idx[1][b] + dims[1] * idx[0][a])];
            }
            sum += w[0][a] * w[1][b] * row;
        }
    }
    sum
}

/// The LBP3D images (`lbp-3D-m1` … `lbp-3D-m<levels>`, `lbp-3D-k`) on the ROI
/// voxels, 0 elsewhere (PyRadiomics leaves them undefined; no class reads them).
pub fn lbp3d(img: &Image, mask: &[bool], s: &Settings, pixel: PixelType) -> Vec<(String, Image)> {
    let levels = s.lbp3d_levels.max(1);
    let radius = s.lbp3d_icosphere_radius;
    let verts = icosphere(s.lbp3d_icosphere_subdivision, radius);
    let nv = verts.len();
    // Y per vertex for (n, m) in PyRadiomics' order, with the level of each.
    let mut harmonics: Vec<(i64, Vec<(f64, f64)>)> = Vec::new();
    for n in 0..levels {
        for m in -n..=n {
            let y = verts.iter().map(|v| sph_harm(m, n, (v[2] / radius).acos(), v[1].atan2(v[0]))).collect();
            harmonics.push((n, y));
        }
    }
    let coef = spline_coefficients(&img.data, img.dims);
    let [nx, ny, _] = img.dims;
    let mut out: Vec<Vec<f64>> = vec![vec![0.0; img.data.len()]; levels as usize + 1];
    let mut f = vec![0.0; nv];
    for (vi, _) in mask.iter().enumerate().filter(|(_, m)| **m) {
        let (x, y, z) = (vi % nx, (vi / nx) % ny, vi / (nx * ny));
        for (k, v) in verts.iter().enumerate() {
            let val = spline_at(&coef, img.dims, [z as f64 + v[0], y as f64 + v[1], x as f64 + v[2]]);
            f[k] = match pixel {
                PixelType::F64 => val,
                PixelType::F32 => f64::from(val as f32),
                _ => numpy_assign(pixel, val.round()),
            };
        }
        // scipy.stats.kurtosis (Fisher, biased).
        let mean = f.iter().sum::<f64>() / nv as f64;
        let m2 = f.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / nv as f64;
        let m4 = f.iter().map(|v| (v - mean).powi(4)).sum::<f64>() / nv as f64;
        let k = if m2 <= (1e-15 * mean).powi(2) { f64::NAN } else { m4 / (m2 * m2) - 3.0 };
        out[levels as usize][vi] = k;
        let centre = img.data[vi];
        let signs: Vec<f64> = f.iter().map(|&v| if v >= centre { 1.0 } else { 0.0 }).collect();
        for level in 0..levels {
            // Per vertex: Σ_m c_{n,m} Y_{n,m}(v), then sqrt(Σ_v value²) (complex), real part.
            let mut acc = vec![(0.0, 0.0); nv];
            for (_, y) in harmonics.iter().filter(|(n, _)| *n == level) {
                let (mut cr, mut ci) = (0.0, 0.0);
                for (sgn, yv) in signs.iter().zip(y) {
                    cr += sgn * yv.0;
                    ci += sgn * yv.1;
                }
                for (a, yv) in acc.iter_mut().zip(y) {
                    a.0 += cr * yv.0 - ci * yv.1;
                    a.1 += cr * yv.1 + ci * yv.0;
                }
            }
            let (mut sr, mut si) = (0.0, 0.0);
            for a in &acc {
                sr += a.0 * a.0 - a.1 * a.1;
                si += 2.0 * a.0 * a.1;
            }
            // Principal square root's real part.
            let modulus = sr.hypot(si);
            out[level as usize][vi] = ((modulus + sr) / 2.0).max(0.0).sqrt();
        }
    }
    let mut images = Vec::new();
    for (l, data) in out.into_iter().enumerate() {
        let name = if l as i64 == levels { "lbp-3D-k".to_string() } else { format!("lbp-3D-m{}", l + 1) };
        images.push((name, Image { dims: img.dims, spacing: img.spacing, data }));
    }
    images
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

    #[test]
    fn icospheres_have_trimesh_vertex_counts_on_the_radius() {
        for (sub, count) in [(0, 12), (1, 42), (2, 162)] {
            let v = icosphere(sub, 1.5);
            assert_eq!(v.len(), count);
            for p in &v {
                assert!(((p[0] * p[0] + p[1] * p[1] + p[2] * p[2]).sqrt() - 1.5).abs() < 1e-12);
            }
        }
    }
}

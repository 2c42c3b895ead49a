//! Surface distances by DeepMind's `surface-distance` definition
//! (`compute_surface_distances`): the surface of a mask is made of the corners
//! of the voxel grid whose 2×2×2 neighbourhood is neither empty nor full, each
//! corner carrying the area of its surface elements (marching-cubes normals,
//! scaled by the spacing); distances are exact Euclidean distances in mm from
//! each surface corner of one mask to the nearest surface corner of the other.
//! HD95, the average surface distance and the surface Dice at a tolerance are
//! area-weighted over those corners, as in the reference code.

use super::normals::NORMALS;

/// Each corner of one surface: its distance to the other surface (mm; +∞
/// when the other mask has no surface) and its area (mm²), sorted by
/// (distance, area) as the reference sorts them.
#[derive(Debug, Clone, Default)]
pub struct Directed {
    /// Distance of each surface corner to the other surface (mm).
    pub distances: Vec<f64>,
    /// Area of each surface corner's surface elements (mm²).
    pub areas: Vec<f64>,
}

/// Both directions: truth → prediction and prediction → truth.
#[derive(Debug, Clone, Default)]
pub struct SurfaceDistances {
    /// From the true surface to the predicted one.
    pub truth_to_pred: Directed,
    /// From the predicted surface to the true one.
    pub pred_to_truth: Directed,
}

/// Area of the surface elements of each of the 256 neighbourhood codes for a
/// spacing (array axes 0, 1, 2 = i, j, k).
fn area_table(spacing: [f64; 3]) -> [f64; 256] {
    let mut t = [0.0; 256];
    for (code, normals) in NORMALS.iter().enumerate() {
        t[code] = normals
            .iter()
            .map(|n| {
                let v =
                    [n[0] * spacing[1] * spacing[2], n[1] * spacing[0] * spacing[2], n[2] * spacing[0] * spacing[1]];
                (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt()
            })
            .sum();
    }
    t
}

/// The reference's `_compute_bounding_box` of `a | b`: (min, max) per axis.
fn bounding_box(a: &[bool], b: &[bool], dims: [usize; 3]) -> Option<([usize; 3], [usize; 3])> {
    let mut lo = [usize::MAX; 3];
    let mut hi = [0usize; 3];
    let mut any = false;
    for k in 0..dims[2] {
        for j in 0..dims[1] {
            let row = dims[0] * (j + dims[1] * k);
            for i in 0..dims[0] {
                if a[row + i] || b[row + i] {
                    any = true;
                    for (axis, c) in [i, j, k].into_iter().enumerate() {
                        lo[axis] = lo[axis].min(c);
                        hi[axis] = hi[axis].max(c);
                    }
                }
            }
        }
    }
    any.then_some((lo, hi))
}

/// Neighbourhood codes of every corner of the cropped grid: corner (x, y, z)
/// of the crop sees voxels x-1..=x, y-1..=y, z-1..=z (scipy's `correlate`
/// with the 2×2×2 kernel [[[128, 64], [32, 16]], [[8, 4], [2, 1]]], outside = 0).
fn codes(mask: &[bool], dims: [usize; 3], lo: [usize; 3], cdims: [usize; 3]) -> Vec<u8> {
    let [cx, cy, cz] = cdims;
    let inside = |x: usize, y: usize, z: usize| -> bool {
        // Crop coordinates x ∈ 1..=extent map to voxels lo + x - 1; the rest is padding.
        if x == 0 || y == 0 || z == 0 || x >= cx || y >= cy || z >= cz {
            return false;
        }
        mask[(lo[0] + x - 1) + dims[0] * ((lo[1] + y - 1) + dims[1] * (lo[2] + z - 1))]
    };
    let mut out = vec![0u8; cx * cy * cz];
    for z in 0..cz {
        for y in 0..cy {
            for x in 0..cx {
                let mut code = 0u8;
                for (a, b, c) in (0..8).map(|n| (n >> 2, (n >> 1) & 1, n & 1)) {
                    // Kernel weight of offset (a, b, c) is 1 << (7 - (4a + 2b + c)); the
                    // offsets are relative to the corner, whose voxels are at -1 and 0.
                    if inside(x + a, y + b, z + c) {
                        code |= 1 << (7 - (4 * a + 2 * b + c));
                    }
                }
                out[x + cx * (y + cy * z)] = code;
            }
        }
    }
    out
}

/// Exact squared Euclidean distance transform with anisotropic spacing
/// (Felzenszwalb & Huttenlocher), in mm²: distance of each point to the
/// nearest seed; `None` when there is no seed.
fn squared_edt_mm(seed: &[bool], dims: [usize; 3], spacing: [f64; 3]) -> Option<Vec<f64>> {
    if !seed.iter().any(|&s| s) {
        return None;
    }
    let mut d: Vec<f64> = seed.iter().map(|&s| if s { 0.0 } else { f64::INFINITY }).collect();
    let [nx, ny, nz] = dims;
    let stride = [1, nx, nx * ny];
    let n_max = nx.max(ny).max(nz);
    let mut f = vec![0.0; n_max];
    let mut out = vec![0.0; n_max];
    let mut v = vec![0usize; n_max];
    let mut zb = vec![0.0; n_max + 1];
    for axis in 0..3 {
        let n = dims[axis];
        let s2 = spacing[axis] * spacing[axis];
        let (a, b) = match axis {
            0 => (1, 2),
            1 => (0, 2),
            _ => (0, 1),
        };
        for q in 0..dims[b] {
            for p in 0..dims[a] {
                let base = p * stride[a] + q * stride[b];
                for (t, fv) in f.iter_mut().enumerate().take(n) {
                    *fv = d[base + t * stride[axis]];
                }
                dt1(&f[..n], s2, &mut v, &mut zb, &mut out[..n]);
                for (t, o) in out.iter().enumerate().take(n) {
                    d[base + t * stride[axis]] = *o;
                }
            }
        }
    }
    Some(d)
}

/// 1D squared distance transform with squared spacing `s2`: out[q] =
/// min_p f[p] + s2·(q − p)², over the finite f[p].
fn dt1(f: &[f64], s2: f64, v: &mut [usize], z: &mut [f64], out: &mut [f64]) {
    let n = f.len();
    let finite: Vec<usize> = (0..n).filter(|&p| f[p].is_finite()).collect();
    if finite.is_empty() {
        out.iter_mut().for_each(|o| *o = f64::INFINITY);
        return;
    }
    let inter = |q: usize, p: usize| {
        let (qf, pf) = (q as f64, p as f64);
        ((f[q] + s2 * qf * qf) - (f[p] + s2 * pf * pf)) / (2.0 * s2 * (qf - pf))
    };
    let mut k = 0usize;
    v[0] = finite[0];
    z[0] = f64::NEG_INFINITY;
    z[1] = f64::INFINITY;
    for &q in &finite[1..] {
        let mut s = inter(q, v[k]);
        while s <= z[k] {
            k -= 1;
            s = inter(q, v[k]);
        }
        k += 1;
        v[k] = q;
        z[k] = s;
        z[k + 1] = f64::INFINITY;
    }
    k = 0;
    for (q, o) in out.iter_mut().enumerate() {
        while z[k + 1] < q as f64 {
            k += 1;
        }
        let p = v[k];
        let dq = q as f64 - p as f64;
        *o = f[p] + s2 * dq * dq;
    }
}

/// The reference's `compute_surface_distances(truth, pred, spacing)` on two
/// masks of one grid (i fastest; spacing along i, j, k).
pub fn surface_distances(truth: &[bool], pred: &[bool], dims: [usize; 3], spacing: [f64; 3]) -> SurfaceDistances {
    let Some((lo, hi)) = bounding_box(truth, pred, dims) else {
        return SurfaceDistances::default();
    };
    let cdims = [hi[0] - lo[0] + 2, hi[1] - lo[1] + 2, hi[2] - lo[2] + 2];
    let table = area_table(spacing);
    let code_t = codes(truth, dims, lo, cdims);
    let code_p = codes(pred, dims, lo, cdims);
    let border = |c: &u8| *c != 0 && *c != 255;
    let border_t: Vec<bool> = code_t.iter().map(border).collect();
    let border_p: Vec<bool> = code_p.iter().map(border).collect();
    let dist_to_t = squared_edt_mm(&border_t, cdims, spacing);
    let dist_to_p = squared_edt_mm(&border_p, cdims, spacing);
    let directed = |from: &[bool], codes: &[u8], to: &Option<Vec<f64>>| {
        let mut pairs: Vec<(f64, f64)> = from
            .iter()
            .enumerate()
            .filter(|(_, b)| **b)
            .map(|(n, _)| {
                let d = to.as_ref().map_or(f64::INFINITY, |d| d[n].sqrt());
                (d, table[codes[n] as usize])
            })
            .collect();
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
        Directed { distances: pairs.iter().map(|p| p.0).collect(), areas: pairs.iter().map(|p| p.1).collect() }
    };
    SurfaceDistances {
        truth_to_pred: directed(&border_t, &code_t, &dist_to_p),
        pred_to_truth: directed(&border_p, &code_p, &dist_to_t),
    }
}

impl Directed {
    fn total_area(&self) -> f64 {
        self.areas.iter().sum()
    }

    /// The area-weighted `percent` percentile (the reference's searchsorted on
    /// the cumulative area fraction); `None` without surface.
    fn percentile(&self, percent: f64) -> Option<f64> {
        if self.distances.is_empty() {
            return None;
        }
        let total = self.total_area();
        let mut cum = 0.0;
        let target = percent / 100.0;
        for (n, a) in self.areas.iter().enumerate() {
            cum += a;
            if cum / total >= target {
                return Some(self.distances[n]);
            }
        }
        self.distances.last().copied()
    }

    /// Area-weighted mean distance.
    fn mean(&self) -> Option<f64> {
        if self.distances.is_empty() {
            return None;
        }
        let s: f64 = self.distances.iter().zip(&self.areas).map(|(d, a)| d * a).sum();
        Some(s / self.total_area())
    }

    /// Area within `tolerance` mm of the other surface.
    fn area_within(&self, tolerance: f64) -> f64 {
        self.distances.iter().zip(&self.areas).filter(|(d, _)| **d <= tolerance).map(|(_, a)| a).sum()
    }
}

impl SurfaceDistances {
    /// `compute_robust_hausdorff(…, 95)`; `None` when either mask is empty
    /// (the reference's +∞).
    pub fn hd95(&self) -> Option<f64> {
        let a = self.truth_to_pred.percentile(95.0)?;
        let b = self.pred_to_truth.percentile(95.0)?;
        let m = a.max(b);
        m.is_finite().then_some(m)
    }

    /// Mean of the two directed average surface distances of
    /// `compute_average_surface_distance`; `None` when either mask is empty.
    pub fn assd(&self) -> Option<f64> {
        let a = self.truth_to_pred.mean()?;
        let b = self.pred_to_truth.mean()?;
        let m = (a + b) / 2.0;
        m.is_finite().then_some(m)
    }

    /// `compute_surface_dice_at_tolerance`; `None` when both masks are empty.
    pub fn surface_dice(&self, tolerance: f64) -> Option<f64> {
        let total = self.truth_to_pred.total_area() + self.pred_to_truth.total_area();
        if self.truth_to_pred.distances.is_empty() && self.pred_to_truth.distances.is_empty() {
            return None;
        }
        if total <= 0.0 {
            return None;
        }
        Some((self.truth_to_pred.area_within(tolerance) + self.pred_to_truth.area_within(tolerance)) / total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cube(dims: [usize; 3], lo: [usize; 3], hi: [usize; 3]) -> Vec<bool> {
        let mut m = vec![false; dims[0] * dims[1] * dims[2]];
        for k in lo[2]..hi[2] {
            for j in lo[1]..hi[1] {
                for i in lo[0]..hi[0] {
                    m[i + dims[0] * (j + dims[1] * k)] = true;
                }
            }
        }
        m
    }

    #[test]
    fn identical_masks_have_zero_distance_and_full_surface_dice() {
        let d = [8, 8, 8];
        let m = cube(d, [2, 2, 2], [5, 6, 7]);
        let s = surface_distances(&m, &m, d, [1.0, 2.0, 3.0]);
        assert_eq!(s.hd95(), Some(0.0));
        assert_eq!(s.assd(), Some(0.0));
        assert_eq!(s.surface_dice(0.0), Some(1.0));
    }

    #[test]
    fn shifted_cube_is_one_spacing_away() {
        let d = [10, 10, 10];
        let a = cube(d, [2, 2, 2], [6, 6, 6]);
        let b = cube(d, [3, 2, 2], [7, 6, 6]);
        let s = surface_distances(&a, &b, d, [2.5, 1.0, 1.0]);
        // The two faces normal to i move by 2.5 mm; the side faces stay within 2.5 mm.
        assert_eq!(s.hd95(), Some(2.5));
        let sd = s.surface_dice(1.0).unwrap_or(f64::NAN);
        assert!(sd > 0.0 && sd < 1.0, "{sd}");
    }

    #[test]
    fn empty_masks_have_no_distances() {
        let d = [4, 4, 4];
        let e = vec![false; 64];
        let s = surface_distances(&e, &e, d, [1.0; 3]);
        assert_eq!(s.hd95(), None);
        assert_eq!(s.surface_dice(1.0), None);
        let one = cube(d, [1, 1, 1], [2, 2, 2]);
        let s = surface_distances(&one, &e, d, [1.0; 3]);
        assert_eq!(s.hd95(), None);
        assert_eq!(s.assd(), None);
        assert_eq!(s.surface_dice(1.0), Some(0.0));
    }

    #[test]
    fn edt_matches_brute_force_with_anisotropic_spacing() {
        let dims = [5, 4, 3];
        let mut seed = vec![false; 60];
        seed[7] = true;
        seed[44] = true;
        let sp = [0.7, 1.3, 2.9];
        let d = squared_edt_mm(&seed, dims, sp).unwrap_or_default();
        for n in 0..60 {
            let (i, j, k) = (n % 5, (n / 5) % 4, n / 20);
            let brute = [7usize, 44]
                .iter()
                .map(|&s| {
                    let (a, b, c) = (s % 5, (s / 5) % 4, s / 20);
                    let dx = (i as f64 - a as f64) * sp[0];
                    let dy = (j as f64 - b as f64) * sp[1];
                    let dz = (k as f64 - c as f64) * sp[2];
                    dx * dx + dy * dy + dz * dz
                })
                .fold(f64::INFINITY, f64::min);
            assert!((d[n] - brute).abs() < 1e-9, "{n}: {} vs {brute}", d[n]);
        }
    }
}

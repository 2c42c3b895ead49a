//! Volumes and their geometry: the plain data handed from stage to stage.
//!
//! Voxel order is i (image column) fastest, then j (image row), then k (slice),
//! the order DICOM stores a frame in and NIfTI stores a volume in. Positions are
//! patient coordinates in DICOM's LPS convention, in millimetres.

use serde::{Deserialize, Serialize};

/// Where a voxel grid sits in the patient.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Geometry {
    /// Voxel counts along i (columns), j (rows) and k (slices).
    pub dims: [usize; 3],
    /// Distance between voxel centres along i, j and k, in mm.
    pub spacing: [f64; 3],
    /// LPS position (mm) of the centre of voxel (0, 0, 0).
    pub origin: [f64; 3],
    /// Unit direction of each voxel axis in LPS: `direction[0]` is the i axis
    /// (DICOM row direction), `[1]` the j axis (column direction), `[2]` the
    /// slice axis (the normal, pointing towards increasing k).
    pub direction: [[f64; 3]; 3],
}

impl Geometry {
    /// Number of voxels.
    pub fn voxel_count(&self) -> usize {
        self.dims[0] * self.dims[1] * self.dims[2]
    }

    /// Volume of one voxel in millilitres.
    pub fn voxel_volume_ml(&self) -> f64 {
        self.spacing[0] * self.spacing[1] * self.spacing[2] / 1000.0
    }

    /// Linear index of voxel (i, j, k).
    pub fn index(&self, i: usize, j: usize, k: usize) -> usize {
        i + self.dims[0] * (j + self.dims[1] * k)
    }

    /// LPS position (mm) of a continuous voxel coordinate.
    pub fn voxel_to_lps(&self, ijk: [f64; 3]) -> [f64; 3] {
        let mut p = self.origin;
        for (axis, &c) in ijk.iter().enumerate() {
            for (row, v) in p.iter_mut().enumerate() {
                *v += self.direction[axis][row] * self.spacing[axis] * c;
            }
        }
        p
    }

    /// 4×4 voxel-to-LPS affine (row-major).
    pub fn affine_lps(&self) -> [[f64; 4]; 4] {
        let mut a = [[0.0; 4]; 4];
        for (row, line) in a.iter_mut().take(3).enumerate() {
            for axis in 0..3 {
                line[axis] = self.direction[axis][row] * self.spacing[axis];
            }
            line[3] = self.origin[row];
        }
        a[3][3] = 1.0;
        a
    }

    /// 4×4 voxel-to-RAS affine (row-major): the LPS affine with the first two
    /// world axes negated, as ITK/SimpleITK, dicom2nifti and nibabel write it.
    pub fn affine_ras(&self) -> [[f64; 4]; 4] {
        let mut a = self.affine_lps();
        for line in a.iter_mut().take(2) {
            for v in line.iter_mut() {
                *v = -*v;
            }
        }
        a
    }
}

/// A voxel grid with its geometry.
#[derive(Debug, Clone, PartialEq)]
pub struct Volume<T = f32> {
    /// Where the grid sits.
    pub geometry: Geometry,
    /// Voxel values, `geometry.voxel_count()` of them, i fastest.
    pub data: Vec<T>,
}

impl<T: Copy> Volume<T> {
    /// A volume filled with one value.
    pub fn filled(geometry: Geometry, value: T) -> Self {
        let n = geometry.voxel_count();
        Self { geometry, data: vec![value; n] }
    }

    /// The voxels of slice k, i fastest.
    pub fn slice(&self, k: usize) -> &[T] {
        let n = self.geometry.dims[0] * self.geometry.dims[1];
        &self.data[k * n..(k + 1) * n]
    }
}

impl Geometry {
    /// Continuous voxel coordinate of an LPS point (the inverse of
    /// `voxel_to_lps`; directions are orthonormal).
    pub fn lps_to_voxel(&self, p: [f64; 3]) -> [f64; 3] {
        let d = [p[0] - self.origin[0], p[1] - self.origin[1], p[2] - self.origin[2]];
        [0, 1, 2].map(|a| dot(d, self.direction[a]) / self.spacing[a])
    }
}

/// Resamples `src` onto the grid `target` in patient space (trilinear; points
/// outside `src` take `fill`), as when a CT is brought onto its PET's grid.
pub fn resample_linear(src: &Volume<f32>, target: &Geometry, fill: f32) -> Volume<f32> {
    let plane = src.geometry.dims[0] * src.geometry.dims[1];
    let mut data = vec![fill; target.voxel_count()];
    resample_linear_planes(&src.geometry, |z| &src.data[z * plane..(z + 1) * plane], target, 0, &mut data);
    Volume { geometry: target.clone(), data }
}

/// The target planes `k_start..` that `out` holds (whole planes, already
/// filled with the fill value) resampled from a source of geometry `g` whose
/// plane `z` is `plane_of(z)`: [`resample_linear`]'s arithmetic, so a volume
/// resampled slab by slab is bit for bit the volume resampled at once.
/// `plane_of` is asked only for the planes [`source_planes`] names for the
/// slab.
pub fn resample_linear_planes<'a>(
    g: &Geometry,
    plane_of: impl Fn(usize) -> &'a [f32] + Sync,
    target: &Geometry,
    k_start: usize,
    out: &mut [f32],
) {
    use rayon::prelude::*;
    let [nx, ny, nz] = g.dims;
    let plane = target.dims[0] * target.dims[1];
    out.par_chunks_mut(plane.max(1)).enumerate().for_each(|(dk, slice)| {
        let k = k_start + dk;
        for j in 0..target.dims[1] {
            for i in 0..target.dims[0] {
                let p = target.voxel_to_lps([i as f64, j as f64, k as f64]);
                let c = g.lps_to_voxel(p);
                // Outside by more than half a voxel: fill.
                if (0..3).any(|a| c[a] < -0.5 || c[a] > g.dims[a] as f64 - 0.5) {
                    continue;
                }
                let f = c.map(|v| v.floor());
                let t = [c[0] - f[0], c[1] - f[1], c[2] - f[2]];
                let mut acc = 0f64;
                for dz in 0..2 {
                    let zi = (f[2] as i64 + dz).clamp(0, nz as i64 - 1) as usize;
                    let src = plane_of(zi);
                    for dy in 0..2 {
                        for dx in 0..2 {
                            let xi = (f[0] as i64 + dx).clamp(0, nx as i64 - 1) as usize;
                            let yi = (f[1] as i64 + dy).clamp(0, ny as i64 - 1) as usize;
                            let w = (if dx == 1 { t[0] } else { 1.0 - t[0] })
                                * (if dy == 1 { t[1] } else { 1.0 - t[1] })
                                * (if dz == 1 { t[2] } else { 1.0 - t[2] });
                            acc += w * f64::from(src[xi + nx * yi]);
                        }
                    }
                }
                slice[i + target.dims[0] * j] = acc as f32;
            }
        }
    });
}

/// The source planes (a range of `g`'s axis-2 indices) that
/// [`resample_linear_planes`] reads for the target planes `ks`; `None` when
/// every voxel of those planes lies outside the source (all fill). The map
/// from target to source voxel coordinates is affine, so its extremes over
/// the slab are at the slab's corners; one plane of margin on each side
/// absorbs rounding.
pub fn source_planes(g: &Geometry, target: &Geometry, ks: std::ops::Range<usize>) -> Option<std::ops::Range<usize>> {
    if ks.is_empty() || g.dims[2] == 0 {
        return None;
    }
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    let last = |n: usize| n.saturating_sub(1) as f64;
    for i in [0.0, last(target.dims[0])] {
        for j in [0.0, last(target.dims[1])] {
            for k in [ks.start as f64, (ks.end - 1) as f64] {
                let z = g.lps_to_voxel(target.voxel_to_lps([i, j, k]))[2];
                lo = lo.min(z);
                hi = hi.max(z);
            }
        }
    }
    let nz = g.dims[2] as f64;
    if !(lo.is_finite() && hi.is_finite()) || hi < -1.5 || lo > nz + 0.5 {
        return None;
    }
    let start = (lo.floor() - 1.0).max(0.0) as usize;
    let end = ((hi.floor() + 3.0).min(nz)) as usize;
    (start < end).then_some(start..end)
}

/// Cross product of two 3-vectors.
pub fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]
}

/// Dot product of two 3-vectors.
pub fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

/// Euclidean norm of a 3-vector.
pub fn norm(a: [f64; 3]) -> f64 {
    dot(a, a).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oblique() -> Geometry {
        let c = 5f64.to_radians().cos();
        let s = 5f64.to_radians().sin();
        let r = [c, s, 0.0];
        let cdir = [-s, c, 0.0];
        Geometry {
            dims: [4, 5, 6],
            spacing: [0.5, 0.7, 3.0],
            origin: [10.0, -20.0, 30.0],
            direction: [r, cdir, cross(r, cdir)],
        }
    }

    #[test]
    fn affine_maps_like_voxel_to_lps() {
        let g = oblique();
        let a = g.affine_lps();
        let ijk = [1.5, 2.0, 3.0];
        let p = g.voxel_to_lps(ijk);
        for (row, line) in a.iter().take(3).enumerate() {
            let v = line[0] * ijk[0] + line[1] * ijk[1] + line[2] * ijk[2] + line[3];
            assert!((v - p[row]).abs() < 1e-12);
        }
        let ras = g.affine_ras();
        assert_eq!(ras[0][3], -10.0);
        assert_eq!(ras[1][3], 20.0);
        assert_eq!(ras[2][3], 30.0);
    }

    #[test]
    fn lps_round_trip_and_identity_resampling() {
        let g = oblique();
        let c = [1.25, 3.5, 2.0];
        let back = g.lps_to_voxel(g.voxel_to_lps(c));
        for a in 0..3 {
            assert!((back[a] - c[a]).abs() < 1e-9);
        }
        let v = Volume { geometry: g.clone(), data: (0..g.voxel_count()).map(|i| i as f32).collect() };
        let r = resample_linear(&v, &g, -1.0);
        for (a, b) in r.data.iter().zip(&v.data) {
            assert!((a - b).abs() < 1e-3);
        }
    }

    #[test]
    fn voxel_volume_and_index() {
        let g = oblique();
        assert!((g.voxel_volume_ml() - 0.5 * 0.7 * 3.0 / 1000.0).abs() < 1e-15);
        assert_eq!(g.index(3, 4, 5), g.voxel_count() - 1);
        assert_eq!(g.index(1, 0, 0), 1);
        assert_eq!(g.index(0, 1, 0), 4);
    }
}

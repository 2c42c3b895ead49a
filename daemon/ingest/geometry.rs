//! Slice-stack geometry: how far a series' slices lie from one uniform grid
//! along the normal, and, for stacks beyond the tolerance (variable spacing,
//! gantry tilt), the regular orthogonal grid they are resampled onto.
//!
//! Judged from ImagePositionPatient only: position k along the normal, t_k,
//! against the uniform grid t_0 + k·d with d = (t_last − t_0)/(n − 1) (the
//! first-to-last spacing SimpleITK and dcm2niix give such a volume), and the
//! in-plane offset of slice k from slice 0's normal line. Within
//! [`GRID_TOLERANCE`] of d both ways the stack is regular as it is.
//! Otherwise:
//! - spacing beyond it: linear interpolation along the normal onto a grid
//!   from the first to the last slice whose spacing is the smallest gap (no
//!   source detail lost), with at most twice the source slices (as
//!   dcm2niix's equidistant copy);
//! - in-plane offsets growing linearly with t (a shear: gantry tilt, whether
//!   written as GE does, axial orientation and shifted positions, or as
//!   Philips does, tilted orientation and positions along the table): each
//!   slice shifted in-plane onto the orthogonal grid (row, column, normal)
//!   with bilinear interpolation, the grid widened to hold every shifted
//!   slice on slice 0's pixel lattice (dcm2niix's tilt correction);
//! - in-plane offsets that no shear explains: refused;
//! - a regular stack with slices missing (every gap a whole multiple of the
//!   median, some two or more): refused, an incomplete export is a defect.

use rayon::prelude::*;
use serde::Serialize;

use super::series::GRID_TOLERANCE;
use crate::volume::{Geometry, dot};

/// How a stack became a regular grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ResamplingMethod {
    /// Regular as it is: slice k is grid slice k.
    #[serde(rename = "none")]
    None,
    /// Variable spacing: linear along the normal.
    #[serde(rename = "linear-along-normal")]
    LinearAlongNormal,
    /// Gantry tilt: each slice shifted in-plane (bilinear).
    #[serde(rename = "gantry-tilt-shear")]
    GantryTiltShear,
    /// Both.
    #[serde(rename = "gantry-tilt-shear+linear-along-normal")]
    GantryTiltShearAndLinear,
}

impl ResamplingMethod {
    /// The name written in the sidecar and report.json.
    pub fn name(self) -> &'static str {
        match self {
            ResamplingMethod::None => "none",
            ResamplingMethod::LinearAlongNormal => "linear-along-normal",
            ResamplingMethod::GantryTiltShear => "gantry-tilt-shear",
            ResamplingMethod::GantryTiltShearAndLinear => "gantry-tilt-shear+linear-along-normal",
        }
    }
}

/// The geometry record of a series (sidecar, `inspect --json`, report.json).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SliceGrid {
    /// none, linear-along-normal, gantry-tilt-shear or both.
    pub method: ResamplingMethod,
    /// Largest distance (mm) of a slice's ImagePositionPatient from the
    /// uniform grid along slice 0's normal (first-to-last spacing).
    pub max_deviation_mm: f64,
    /// Largest distance (mm) a source slice was moved to reach the grid: its
    /// in-plane offset from slice 0's normal line and its distance along the
    /// normal to the nearest grid slice (equal to the deviation for `none`).
    pub max_displacement_mm: f64,
    /// The tolerance the deviation was judged by (10 % of the spacing).
    pub tolerance_mm: f64,
    /// Slices in the source.
    pub source_slices: usize,
    /// Slices of the volume.
    pub output_slices: usize,
    /// The shear angle of a tilted stack, in degrees.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tilt_degrees: Option<f64>,
}

/// Why a stack needs resampling (the first-found reason; strict mode's refusal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// Positions along the normal beyond the tolerance: the gap most off the median.
    Spacing {
        /// Index of the gap (between slices k and k + 1).
        worst_gap: usize,
    },
    /// In-plane offsets beyond the tolerance: the first such slice.
    Tilt {
        /// Index of the slice.
        first_off: usize,
    },
}

/// The measured shape of a stack sorted along the normal.
#[derive(Debug, Clone)]
pub struct StackShape {
    /// Gaps along the normal between neighbouring slices (mm).
    pub gaps: Vec<f64>,
    /// Their median.
    pub median_gap: f64,
    p0: [f64; 3],
    /// Along-normal position of each slice relative to slice 0 (mm).
    t: Vec<f64>,
    /// In-plane offset of each slice from slice 0's normal line (row, column; mm).
    off: Vec<[f64; 2]>,
    spacing: f64,
    tol: f64,
    along_dev: f64,
    inplane_max: f64,
    max_deviation: f64,
    shear: [f64; 2],
}

/// Measures a stack (positions sorted along `normal`, distinct).
pub fn analyse(positions: &[[f64; 3]], row: [f64; 3], col: [f64; 3], normal: [f64; 3]) -> StackShape {
    let n = positions.len();
    let p0 = positions.first().copied().unwrap_or_default();
    let rel: Vec<[f64; 3]> = positions.iter().map(|p| [p[0] - p0[0], p[1] - p0[1], p[2] - p0[2]]).collect();
    let t: Vec<f64> = rel.iter().map(|d| dot(*d, normal)).collect();
    let off: Vec<[f64; 2]> = rel.iter().map(|d| [dot(*d, row), dot(*d, col)]).collect();
    let gaps: Vec<f64> = t.windows(2).map(|w| w[1] - w[0]).collect();
    let mut sorted = gaps.clone();
    sorted.sort_by(f64::total_cmp);
    let median_gap = sorted.get(sorted.len() / 2).copied().unwrap_or(1.0);
    let spacing = if n >= 2 { t[n - 1] / (n - 1) as f64 } else { 1.0 };
    let tol = GRID_TOLERANCE * spacing;
    let along: Vec<f64> = t.iter().enumerate().map(|(k, &tk)| tk - k as f64 * spacing).collect();
    let along_dev = along.iter().fold(0f64, |m, a| m.max(a.abs()));
    let inplane_max = off.iter().fold(0f64, |m, o| m.max(o[0].hypot(o[1])));
    let max_deviation =
        along.iter().zip(&off).fold(0f64, |m, (a, o)| m.max((a * a + o[0] * o[0] + o[1] * o[1]).sqrt()));
    // Least-squares shear through slice 0: off ≈ shear · t.
    let tt: f64 = t.iter().map(|x| x * x).sum();
    let shear =
        if tt > 0.0 { [0, 1].map(|a| t.iter().zip(&off).map(|(x, o)| x * o[a]).sum::<f64>() / tt) } else { [0.0, 0.0] };
    StackShape { gaps, median_gap, p0, t, off, spacing, tol, along_dev, inplane_max, max_deviation, shear }
}

impl StackShape {
    fn irregular(&self) -> bool {
        self.along_dev > self.tol
    }

    fn tilted(&self) -> bool {
        self.inplane_max > self.tol
    }

    /// Why the stack needs resampling, or None when it is regular as it is.
    pub fn needs_resampling(&self) -> Option<Needs> {
        if self.irregular() {
            let worst_gap = (0..self.gaps.len())
                .max_by(|&a, &b| {
                    (self.gaps[a] - self.median_gap)
                        .abs()
                        .total_cmp(&(self.gaps[b] - self.median_gap).abs())
                        .then(b.cmp(&a))
                })
                .unwrap_or(0);
            return Some(Needs::Spacing { worst_gap });
        }
        if self.tilted() {
            let first_off = self.off.iter().position(|o| o[0].hypot(o[1]) > self.tol).unwrap_or(0);
            return Some(Needs::Tilt { first_off });
        }
        None
    }

    /// A regular stack with slices missing: every gap a whole multiple of
    /// the median gap (within the tolerance) and at least one of two or
    /// more. Refused, not interpolated: a hole in an export is a defect to
    /// report, not variable spacing. The first such gap.
    pub fn missing_slices(&self) -> Option<usize> {
        if !self.irregular() || self.median_gap <= 0.0 {
            return None;
        }
        let tol = GRID_TOLERANCE * self.median_gap;
        let multiple = |g: f64| {
            let k = (g / self.median_gap).round();
            k >= 1.0 && (g - k * self.median_gap).abs() <= tol
        };
        if !self.gaps.iter().all(|&g| multiple(g)) {
            return None;
        }
        self.gaps.iter().position(|&g| (g / self.median_gap).round() >= 2.0)
    }

    /// For a tilted stack, the first slice whose in-plane offset no shear
    /// explains (off the fitted shear by more than the tolerance).
    pub fn wandering(&self) -> Option<usize> {
        if !self.tilted() {
            return None;
        }
        self.t.iter().zip(&self.off).position(|(x, o)| {
            let r = [o[0] - self.shear[0] * x, o[1] - self.shear[1] * x];
            r[0].hypot(r[1]) > self.tol
        })
    }

    /// The grid of the volume, its record and, where resampled, how.
    /// `dims` and `pixel` are (columns, rows) and their spacings (i, j);
    /// `dirs` the row, column and normal directions.
    pub fn plan(
        &self,
        dims: [usize; 2],
        pixel: [f64; 2],
        dirs: [[f64; 3]; 3],
        fill: f32,
    ) -> (Geometry, SliceGrid, Option<StackPlan>) {
        let n = self.t.len();
        let (irregular, tilted) = (self.irregular(), self.tilted());
        let method = match (irregular, tilted) {
            (false, false) => ResamplingMethod::None,
            (true, false) => ResamplingMethod::LinearAlongNormal,
            (false, true) => ResamplingMethod::GantryTiltShear,
            (true, true) => ResamplingMethod::GantryTiltShearAndLinear,
        };
        let mut record = SliceGrid {
            method,
            max_deviation_mm: self.max_deviation,
            max_displacement_mm: self.max_deviation,
            tolerance_mm: self.tol,
            source_slices: n,
            output_slices: n,
            tilt_degrees: None,
        };
        if method == ResamplingMethod::None {
            let g = Geometry {
                dims: [dims[0], dims[1], n],
                spacing: [pixel[0], pixel[1], if n >= 2 { self.spacing } else { 1.0 }],
                origin: self.p0,
                direction: dirs,
            };
            return (g, record, None);
        }
        // Along the normal: the smallest gap, from the first slice to the last
        // exactly, at most twice the source slices.
        let span = self.t[n - 1];
        let (nz, dz) = if irregular {
            let min_gap = self.gaps.iter().copied().fold(f64::INFINITY, f64::min);
            let steps = ((span / min_gap - 1e-9).ceil() as usize).clamp(1, 2 * n - 1);
            (steps + 1, span / steps as f64)
        } else {
            (n, self.spacing)
        };
        // In-plane: each slice's offset in pixels; the grid on slice 0's
        // lattice, widened to hold them all.
        let px: Vec<[f64; 2]> = if tilted {
            self.off.iter().map(|o| [o[0] / pixel[0], o[1] / pixel[1]]).collect()
        } else {
            vec![[0.0, 0.0]; n]
        };
        let lo = [0, 1].map(|a| px.iter().map(|p| p[a]).fold(0f64, f64::min) + 1e-6).map(f64::floor);
        let hi = [0, 1].map(|a| px.iter().map(|p| p[a]).fold(0f64, f64::max) - 1e-6).map(f64::ceil);
        let out_dims = [0, 1].map(|a| dims[a] + (hi[a] - lo[a]).max(0.0) as usize);
        let [row, col, _] = dirs;
        let origin = [0, 1, 2].map(|c| self.p0[c] + lo[0] * pixel[0] * row[c] + lo[1] * pixel[1] * col[c]);
        let shifts: Vec<[f64; 2]> = px.iter().map(|p| [lo[0] - p[0], lo[1] - p[1]]).collect();
        record.output_slices = nz;
        record.max_displacement_mm = self.t.iter().zip(&self.off).fold(0f64, |m, (&x, o)| {
            let along = x - (x / dz).round() * dz;
            m.max((along * along + o[0] * o[0] + o[1] * o[1]).sqrt())
        });
        if tilted {
            record.tilt_degrees = Some(self.shear[0].hypot(self.shear[1]).atan().to_degrees());
        }
        let g = Geometry {
            dims: [out_dims[0], out_dims[1], nz],
            spacing: [pixel[0], pixel[1], dz],
            origin,
            direction: dirs,
        };
        let plan = StackPlan { src_dims: dims, t: self.t.clone(), shifts, dz, fill };
        (g, record, Some(plan))
    }
}

/// How the source slices are resampled onto the grid.
#[derive(Debug, Clone)]
pub struct StackPlan {
    /// Columns and rows of a source slice.
    src_dims: [usize; 2],
    /// Along-normal position of each source slice relative to grid slice 0.
    t: Vec<f64>,
    /// Per source slice: grid pixel (i, j) is source pixel (i + s0, j + s1).
    shifts: Vec<[f64; 2]>,
    /// Grid spacing along the normal.
    dz: f64,
    /// Value outside every source slice.
    fill: f32,
}

impl StackPlan {
    /// Resamples the source stack (`src`: slices in order, i fastest) onto `grid`.
    pub fn resample(&self, src: &[f32], grid: &Geometry) -> Vec<f32> {
        let [nx, ny, _] = grid.dims;
        let plane = nx * ny;
        let mut out = vec![self.fill; grid.voxel_count()];
        let n = self.t.len();
        out.par_chunks_mut(plane.max(1)).enumerate().for_each(|(k, slice)| {
            let z = k as f64 * self.dz;
            let eps = 1e-6 * self.dz;
            let s0 = self.t.partition_point(|&x| x <= z + eps).saturating_sub(1).min(n.saturating_sub(2));
            let s1 = (s0 + 1).min(n - 1);
            let w = if s1 == s0 { 0.0 } else { ((z - self.t[s0]) / (self.t[s1] - self.t[s0])).clamp(0.0, 1.0) };
            let parts: Vec<(usize, f64)> = if w <= 1e-6 {
                vec![(s0, 1.0)]
            } else if w >= 1.0 - 1e-6 {
                vec![(s1, 1.0)]
            } else {
                vec![(s0, 1.0 - w), (s1, w)]
            };
            for j in 0..ny {
                for i in 0..nx {
                    let mut acc = 0f64;
                    let mut inside = true;
                    for &(s, weight) in &parts {
                        match self.sample(src, s, i as f64 + self.shifts[s][0], j as f64 + self.shifts[s][1]) {
                            Some(v) => acc += weight * v,
                            None => inside = false,
                        }
                    }
                    if inside {
                        slice[i + nx * j] = acc as f32;
                    }
                }
            }
        });
        out
    }

    /// Bilinear sample of source slice `s` at pixel (u, v); None beyond half
    /// a pixel outside it.
    fn sample(&self, src: &[f32], s: usize, u: f64, v: f64) -> Option<f64> {
        let [w, h] = self.src_dims;
        if u < -0.5 || v < -0.5 || u > w as f64 - 0.5 || v > h as f64 - 0.5 {
            return None;
        }
        let base = s * w * h;
        let (fu, fv) = (u.floor(), v.floor());
        let (tu, tv) = (u - fu, v - fv);
        let at = |x: f64, y: f64| {
            let xi = (x as i64).clamp(0, w as i64 - 1) as usize;
            let yi = (y as i64).clamp(0, h as i64 - 1) as usize;
            f64::from(src[base + xi + w * yi])
        };
        let mut acc = 0.0;
        for (dy, wy) in [(0.0, 1.0 - tv), (1.0, tv)] {
            for (dx, wx) in [(0.0, 1.0 - tu), (1.0, tu)] {
                let wgt = wx * wy;
                if wgt > 0.0 {
                    acc += wgt * at(fu + dx, fv + dy);
                }
            }
        }
        Some(acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROW: [f64; 3] = [1.0, 0.0, 0.0];
    const COL: [f64; 3] = [0.0, 1.0, 0.0];
    const NRM: [f64; 3] = [0.0, 0.0, 1.0];

    fn stack(z: &[f64], y_per_z: f64) -> Vec<[f64; 3]> {
        z.iter().map(|&z| [0.0, y_per_z * z, z]).collect()
    }

    #[test]
    fn issue_11_overlapping_beds_are_one_regular_volume() {
        // Six beds of a 3.27 mm PET, offsets up to 0.04 mm: junction gaps 3.19 and 3.29 mm.
        let offsets = [0.0, 0.02, 0.04, -0.04, -0.02, 0.0];
        let n = 267;
        let z: Vec<f64> = (0..n).map(|k| k as f64 * 3.27 + offsets[(k * 6 / n).min(5)]).collect();
        let shape = analyse(&stack(&z, 0.0), ROW, COL, NRM);
        assert_eq!(shape.needs_resampling(), None);
        let (g, r, plan) = shape.plan([8, 8], [4.0, 4.0], [ROW, COL, NRM], 0.0);
        assert!(plan.is_none());
        assert_eq!(r.method, ResamplingMethod::None);
        assert!((r.max_deviation_mm - 0.04).abs() < 1e-9, "{r:?}");
        assert_eq!(g.dims, [8, 8, n]);
        assert!((g.spacing[2] - 3.27).abs() < 1e-12);
    }

    #[test]
    fn a_stack_off_the_grid_by_more_than_ten_percent_is_resampled() {
        let z = [0.0, 1.08, 4.08, 11.07, 13.07];
        let shape = analyse(&stack(&z, 0.0), ROW, COL, NRM);
        assert_eq!(shape.needs_resampling(), Some(Needs::Spacing { worst_gap: 2 }));
        let (g, r, plan) = shape.plan([2, 2], [1.0, 1.0], [ROW, COL, NRM], -1024.0);
        assert_eq!(r.method, ResamplingMethod::LinearAlongNormal);
        // Smallest gap 1.08 mm would give 13 steps; at most twice the slices: 9.
        assert_eq!(g.dims[2], 10);
        assert!((g.spacing[2] * 9.0 - 13.07).abs() < 1e-9);
        // A field linear along the normal comes out exact.
        let src: Vec<f32> = z.iter().flat_map(|&z| [z as f32 * 10.0; 4]).collect();
        let out = plan.expect("resampled").resample(&src, &g);
        for k in 0..10 {
            let want = k as f64 * g.spacing[2] * 10.0;
            assert!((f64::from(out[k * 4]) - want).abs() < 1e-3, "slice {k}: {} vs {want}", out[k * 4]);
        }
    }

    #[test]
    fn a_regular_stack_with_a_slice_missing_is_not_variable_spacing() {
        let z = [0.0, 2.0, 4.0, 6.0, 10.0, 12.0, 14.0];
        let shape = analyse(&stack(&z, 0.0), ROW, COL, NRM);
        assert_eq!(shape.missing_slices(), Some(3));
        let varied = analyse(&stack(&[0.0, 1.08, 4.08, 11.07, 13.07], 0.0), ROW, COL, NRM);
        assert_eq!(varied.missing_slices(), None);
    }

    #[test]
    fn gantry_tilt_is_a_shear_corrected_in_plane() {
        let tan = 18.5f64.to_radians().tan();
        let z: Vec<f64> = (0..6).map(|k| k as f64 * 2.0).collect();
        let shape = analyse(&stack(&z, -tan), ROW, COL, NRM);
        assert_eq!(shape.needs_resampling(), Some(Needs::Tilt { first_off: 1 }));
        assert_eq!(shape.wandering(), None);
        let (g, r, plan) = shape.plan([4, 4], [1.0, 1.0], [ROW, COL, NRM], -1024.0);
        assert_eq!(r.method, ResamplingMethod::GantryTiltShear);
        assert!((r.tilt_degrees.expect("tilt") - 18.5).abs() < 1e-9);
        // 10 mm · tan 18.5° = 3.35 mm of shift: four more rows, origin four rows back.
        assert_eq!(g.dims, [4, 8, 6]);
        assert!((g.origin[1] + 4.0).abs() < 1e-12);
        assert!((r.max_displacement_mm - 10.0 * tan).abs() < 1e-9);
        // A field linear in y is exact where the source covers the grid.
        let field = |y: f64| 100.0 + 7.0 * y;
        let src: Vec<f32> =
            z.iter().flat_map(|&zz| (0..16).map(move |p| field((p / 4) as f64 - tan * zz) as f32)).collect();
        let out = plan.expect("resampled").resample(&src, &g);
        for k in 0..6 {
            for j in 0..8 {
                let y = g.origin[1] + j as f64;
                let v = out[g.index(1, j, k)];
                let start = -tan * z[k];
                if y >= start - 1e-9 && y <= start + 3.0 + 1e-9 {
                    assert!((f64::from(v) - field(y)).abs() < 1e-3, "k {k} j {j}: {v} vs {}", field(y));
                } else if y < start - 0.5 || y > start + 3.5 {
                    assert_eq!(v, -1024.0, "k {k} j {j}");
                } else {
                    assert_ne!(v, -1024.0, "k {k} j {j}: half a pixel out is the edge value");
                }
            }
        }
    }

    #[test]
    fn offsets_that_no_shear_explains_are_refused() {
        let mut p = stack(&[0.0, 2.0, 4.0, 6.0, 8.0], 0.0);
        p[2][0] = 3.0;
        let shape = analyse(&p, ROW, COL, NRM);
        assert_eq!(shape.needs_resampling(), Some(Needs::Tilt { first_off: 2 }));
        assert!(shape.wandering().is_some());
    }
}

//! Grey level size zone matrix features as PyRadiomics' `glszm` class: zones
//! are 26-connected groups of ROI voxels with the same discretised level
//! (in-plane connectivity only with force2D).

use super::{Features, Roi, generate_angles};
use crate::radiomics::params::Settings;

/// GLSZM features (none deprecated).
pub const FEATURES: &[(&str, bool)] = &[
    ("GrayLevelNonUniformity", false),
    ("GrayLevelNonUniformityNormalized", false),
    ("GrayLevelVariance", false),
    ("HighGrayLevelZoneEmphasis", false),
    ("LargeAreaEmphasis", false),
    ("LargeAreaHighGrayLevelEmphasis", false),
    ("LargeAreaLowGrayLevelEmphasis", false),
    ("LowGrayLevelZoneEmphasis", false),
    ("SizeZoneNonUniformity", false),
    ("SizeZoneNonUniformityNormalized", false),
    ("SmallAreaEmphasis", false),
    ("SmallAreaHighGrayLevelEmphasis", false),
    ("SmallAreaLowGrayLevelEmphasis", false),
    ("ZoneEntropy", false),
    ("ZonePercentage", false),
    ("ZoneVariance", false),
];

/// Zones as (level index, size). The levels are copied with a border of
/// zeros (outside the ROI), so that a neighbour is one offset away and never
/// outside the array; a voxel is set to 0 once it joins a zone.
fn zones(roi: &Roi, s: &Settings) -> Vec<(usize, usize)> {
    let half = generate_angles(roi.size_zyx(), &[1], false, roi.force2d(s));
    let [nx, ny, nz] = roi.dims;
    let (px, py) = (nx + 2, ny + 2);
    let mut lv = vec![0u32; px * py * (nz + 2)];
    for z in 0..nz {
        for y in 0..ny {
            let src = roi.index(0, y, z);
            let dst = ((z + 1) * py + y + 1) * px + 1;
            lv[dst..dst + nx].copy_from_slice(&roi.levels[src..src + nx]);
        }
    }
    let mut deltas: Vec<isize> = Vec::with_capacity(2 * half.len());
    for o in &half {
        let d = o[2] as isize + (o[1] as isize + o[0] as isize * py as isize) * px as isize;
        deltas.push(d);
        deltas.push(-d);
    }
    let mut out = Vec::new();
    let mut stack = Vec::new();
    for start in 0..lv.len() {
        let l = lv[start];
        if l == 0 {
            continue;
        }
        lv[start] = 0;
        stack.push(start);
        let mut size = 0;
        while let Some(v) = stack.pop() {
            size += 1;
            for &d in &deltas {
                let u = v.wrapping_add_signed(d);
                if lv[u] == l {
                    lv[u] = 0;
                    stack.push(u);
                }
            }
        }
        out.push((roi.level_index[l as usize], size));
    }
    out
}

/// GLSZM features of the ROI.
pub fn compute(roi: &Roi, s: &Settings, enabled: &[&str], out: &mut Features) {
    let g = roi.grey_levels.len();
    let zs = zones(roi, s);
    let ns = zs.iter().map(|z| z.1).max().unwrap_or(1);
    let mut m = vec![0.0; g * ns];
    for &(gl, size) in &zs {
        m[gl * ns + size - 1] += 1.0;
    }
    let iv: Vec<f64> = roi.grey_levels.iter().map(|&l| l as f64).collect();
    let ps: Vec<f64> = (0..ns).map(|r| (0..g).map(|i| m[i * ns + r]).sum()).collect();
    let pg: Vec<f64> = (0..g).map(|i| m[i * ns..(i + 1) * ns].iter().sum()).collect();
    let j = |r: usize| (r + 1) as f64;
    let nz = {
        let t: f64 = m.iter().sum();
        if t == 0.0 { 1.0 } else { t }
    };
    let np = {
        let t: f64 = ps.iter().enumerate().map(|(r, v)| v * j(r)).sum();
        if t == 0.0 { 1.0 } else { t }
    };
    let sum_ij = |f: &dyn Fn(f64, f64) -> f64| -> f64 {
        let mut t = 0.0;
        for i in 0..g {
            for r in 0..ns {
                let v = m[i * ns + r];
                if v != 0.0 {
                    t += v * f(iv[i], j(r));
                }
            }
        }
        t / nz
    };
    for &name in enabled {
        let v = match name {
            "SmallAreaEmphasis" => ps.iter().enumerate().map(|(r, v)| v / (j(r) * j(r))).sum::<f64>() / nz,
            "LargeAreaEmphasis" => ps.iter().enumerate().map(|(r, v)| v * j(r) * j(r)).sum::<f64>() / nz,
            "GrayLevelNonUniformity" => pg.iter().map(|v| v * v).sum::<f64>() / nz,
            "GrayLevelNonUniformityNormalized" => pg.iter().map(|v| v * v).sum::<f64>() / (nz * nz),
            "SizeZoneNonUniformity" => ps.iter().map(|v| v * v).sum::<f64>() / nz,
            "SizeZoneNonUniformityNormalized" => ps.iter().map(|v| v * v).sum::<f64>() / (nz * nz),
            "ZonePercentage" => nz / np,
            "GrayLevelVariance" => {
                let u: f64 = (0..g).map(|i| pg[i] / nz * iv[i]).sum();
                (0..g).map(|i| pg[i] / nz * (iv[i] - u).powi(2)).sum()
            }
            "ZoneVariance" => {
                let u: f64 = (0..ns).map(|r| ps[r] / nz * j(r)).sum();
                (0..ns).map(|r| ps[r] / nz * (j(r) - u).powi(2)).sum()
            }
            "ZoneEntropy" => -m.iter().map(|v| v / nz * (v / nz + f64::EPSILON).log2()).sum::<f64>(),
            "LowGrayLevelZoneEmphasis" => (0..g).map(|i| pg[i] / (iv[i] * iv[i])).sum::<f64>() / nz,
            "HighGrayLevelZoneEmphasis" => (0..g).map(|i| pg[i] * iv[i] * iv[i]).sum::<f64>() / nz,
            "SmallAreaLowGrayLevelEmphasis" => sum_ij(&|i, r| 1.0 / (i * i * r * r)),
            "SmallAreaHighGrayLevelEmphasis" => sum_ij(&|i, r| i * i / (r * r)),
            "LargeAreaLowGrayLevelEmphasis" => sum_ij(&|i, r| r * r / (i * i)),
            "LargeAreaHighGrayLevelEmphasis" => sum_ij(&|i, r| r * r * i * i),
            _ => continue,
        };
        out.push(name.to_string(), v);
    }
}

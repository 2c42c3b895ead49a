//! Grey level dependence matrix features as PyRadiomics' `gldm` class: for
//! each ROI voxel, the number of ROI neighbours (26 per distance) whose level
//! differs by at most `gldm_a`.

use super::{Features, Roi, generate_angles};
use crate::radiomics::params::Settings;

/// GLDM features, with whether each is deprecated (never computed).
pub const FEATURES: &[(&str, bool)] = &[
    ("DependenceEntropy", false),
    ("DependenceNonUniformity", false),
    ("DependenceNonUniformityNormalized", false),
    ("DependencePercentage", true),
    ("DependenceVariance", false),
    ("GrayLevelNonUniformity", false),
    ("GrayLevelNonUniformityNormalized", true),
    ("GrayLevelVariance", false),
    ("HighGrayLevelEmphasis", false),
    ("LargeDependenceEmphasis", false),
    ("LargeDependenceHighGrayLevelEmphasis", false),
    ("LargeDependenceLowGrayLevelEmphasis", false),
    ("LowGrayLevelEmphasis", false),
    ("SmallDependenceEmphasis", false),
    ("SmallDependenceHighGrayLevelEmphasis", false),
    ("SmallDependenceLowGrayLevelEmphasis", false),
];

/// GLDM features of the ROI.
pub fn compute(roi: &Roi, s: &Settings, enabled: &[&str], out: &mut Features) {
    let g = roi.grey_levels.len();
    let half = generate_angles(roi.size_zyx(), &s.distances, false, roi.force2d(s));
    let nd = 2 * half.len() + 1;
    let mut dep = vec![0usize; roi.levels.len()];
    let alpha = s.gldm_a;
    for off in &half {
        roi.for_each_pair_index(*off, |v, u| {
            let d = (roi.levels[v] as i64 - roi.levels[u] as i64).abs();
            if d <= alpha {
                dep[v] += 1;
                dep[u] += 1;
            }
        });
    }
    let mut m = vec![0.0; g * nd];
    for (v, &l) in roi.levels.iter().enumerate() {
        if l != 0 {
            m[roi.level_index[l as usize] * nd + dep[v]] += 1.0;
        }
    }
    let iv: Vec<f64> = roi.grey_levels.iter().map(|&l| l as f64).collect();
    let pd: Vec<f64> = (0..nd).map(|r| (0..g).map(|i| m[i * nd + r]).sum()).collect();
    let pg: Vec<f64> = (0..g).map(|i| m[i * nd..(i + 1) * nd].iter().sum()).collect();
    let j = |r: usize| (r + 1) as f64;
    let nz = {
        let t: f64 = pd.iter().sum();
        if t == 0.0 { 1.0 } else { t }
    };
    let sum_ij = |f: &dyn Fn(f64, f64) -> f64| -> f64 {
        let mut t = 0.0;
        for i in 0..g {
            for r in 0..nd {
                let v = m[i * nd + r];
                if v != 0.0 {
                    t += v * f(iv[i], j(r));
                }
            }
        }
        t / nz
    };
    for &name in enabled {
        let v = match name {
            "SmallDependenceEmphasis" => pd.iter().enumerate().map(|(r, v)| v / (j(r) * j(r))).sum::<f64>() / nz,
            "LargeDependenceEmphasis" => pd.iter().enumerate().map(|(r, v)| v * j(r) * j(r)).sum::<f64>() / nz,
            "GrayLevelNonUniformity" => pg.iter().map(|v| v * v).sum::<f64>() / nz,
            "DependenceNonUniformity" => pd.iter().map(|v| v * v).sum::<f64>() / nz,
            "DependenceNonUniformityNormalized" => pd.iter().map(|v| v * v).sum::<f64>() / (nz * nz),
            "GrayLevelVariance" => {
                let u: f64 = (0..g).map(|i| pg[i] / nz * iv[i]).sum();
                (0..g).map(|i| pg[i] / nz * (iv[i] - u).powi(2)).sum()
            }
            "DependenceVariance" => {
                let u: f64 = (0..nd).map(|r| pd[r] / nz * j(r)).sum();
                (0..nd).map(|r| pd[r] / nz * (j(r) - u).powi(2)).sum()
            }
            "DependenceEntropy" => -m.iter().map(|v| v / nz * (v / nz + f64::EPSILON).log2()).sum::<f64>(),
            "LowGrayLevelEmphasis" => (0..g).map(|i| pg[i] / (iv[i] * iv[i])).sum::<f64>() / nz,
            "HighGrayLevelEmphasis" => (0..g).map(|i| pg[i] * iv[i] * iv[i]).sum::<f64>() / nz,
            "SmallDependenceLowGrayLevelEmphasis" => sum_ij(&|i, r| 1.0 / (i * i * r * r)),
            "SmallDependenceHighGrayLevelEmphasis" => sum_ij(&|i, r| i * i / (r * r)),
            "LargeDependenceLowGrayLevelEmphasis" => sum_ij(&|i, r| r * r / (i * i)),
            "LargeDependenceHighGrayLevelEmphasis" => sum_ij(&|i, r| r * r * i * i),
            _ => continue,
        };
        out.push(name.to_string(), v);
    }
}

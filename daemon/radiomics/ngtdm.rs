//! Neighbouring grey tone difference matrix features as PyRadiomics' `ngtdm`
//! class: for each ROI voxel the absolute difference between its level and the
//! mean level of its ROI neighbours (26 per distance; 0 without neighbours).

use super::{Features, Roi, generate_angles};
use crate::radiomics::params::Settings;

/// NGTDM features (none deprecated).
pub const FEATURES: &[(&str, bool)] =
    &[("Busyness", false), ("Coarseness", false), ("Complexity", false), ("Contrast", false), ("Strength", false)];

/// NGTDM features of the ROI.
pub fn compute(roi: &Roi, s: &Settings, enabled: &[&str], out: &mut Features) {
    let g = roi.grey_levels.len();
    let half = generate_angles(roi.size_zyx(), &s.distances, false, roi.force2d(s));
    let mut count = vec![0u32; roi.levels.len()];
    let mut sum = vec![0.0f64; roi.levels.len()];
    for off in &half {
        roi.for_each_pair_index(*off, |v, u| {
            count[v] += 1;
            sum[v] += roi.levels[u] as f64;
            count[u] += 1;
            sum[u] += roi.levels[v] as f64;
        });
    }
    let mut n = vec![0.0; g];
    let mut si = vec![0.0; g];
    for (v, &l) in roi.levels.iter().enumerate() {
        if l == 0 {
            continue;
        }
        let diff = if count[v] == 0 { 0.0 } else { (l as f64 - sum[v] / count[v] as f64).abs() };
        let k = roi.level_index[l as usize];
        n[k] += 1.0;
        si[k] += diff;
    }
    let iv: Vec<f64> = roi.grey_levels.iter().map(|&l| l as f64).collect();
    let nvp: f64 = n.iter().sum();
    let p: Vec<f64> = n.iter().map(|c| c / nvp).collect();
    let ngp = n.iter().filter(|c| **c > 0.0).count() as f64;
    let sum_s: f64 = si.iter().sum();
    let sum_ps: f64 = (0..g).map(|i| p[i] * si[i]).sum();
    for &name in enabled {
        let v = match name {
            "Coarseness" => {
                if sum_ps != 0.0 {
                    1.0 / sum_ps
                } else {
                    1_000_000.0
                }
            }
            "Contrast" => {
                let div = ngp * (ngp - 1.0);
                if div == 0.0 {
                    0.0
                } else {
                    let mut t = 0.0;
                    for i in 0..g {
                        for j in 0..g {
                            t += p[i] * p[j] * (iv[i] - iv[j]).powi(2);
                        }
                    }
                    t * sum_s / nvp / div
                }
            }
            "Busyness" => {
                let mut absdiff = 0.0;
                for i in 0..g {
                    for j in 0..g {
                        absdiff += (iv[i] * p[i] - iv[j] * p[j]).abs();
                    }
                }
                if absdiff != 0.0 { sum_ps / absdiff } else { 0.0 }
            }
            "Complexity" => {
                let mut t = 0.0;
                for i in 0..g {
                    for j in 0..g {
                        let div = p[i] + p[j];
                        let div = if div == 0.0 { 1.0 } else { div };
                        t += (iv[i] - iv[j]).abs() * (p[i] * si[i] + p[j] * si[j]) / div;
                    }
                }
                t / nvp
            }
            "Strength" => {
                if sum_s == 0.0 {
                    0.0
                } else {
                    let mut t = 0.0;
                    for i in 0..g {
                        for j in 0..g {
                            t += (p[i] + p[j]) * (iv[i] - iv[j]).powi(2);
                        }
                    }
                    t / sum_s
                }
            }
            _ => continue,
        };
        out.push(name.to_string(), v);
    }
}

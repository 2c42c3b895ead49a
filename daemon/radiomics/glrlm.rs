//! Grey level run length matrix features as PyRadiomics' `glrlm` class: runs
//! of equal discretised level along each of the 13 directions (voxels outside
//! the ROI end a run; a direction where no line holds two ROI voxels is
//! dropped), optionally weighted into one matrix; features per angle, averaged.

use super::{Features, Roi, generate_angles, nanmean};
use crate::radiomics::params::{Settings, WeightingNorm};

/// GLRLM features (none deprecated).
pub const FEATURES: &[(&str, bool)] = &[
    ("GrayLevelNonUniformity", false),
    ("GrayLevelNonUniformityNormalized", false),
    ("GrayLevelVariance", false),
    ("HighGrayLevelRunEmphasis", false),
    ("LongRunEmphasis", false),
    ("LongRunHighGrayLevelEmphasis", false),
    ("LongRunLowGrayLevelEmphasis", false),
    ("LowGrayLevelRunEmphasis", false),
    ("RunEntropy", false),
    ("RunLengthNonUniformity", false),
    ("RunLengthNonUniformityNormalized", false),
    ("RunPercentage", false),
    ("RunVariance", false),
    ("ShortRunEmphasis", false),
    ("ShortRunHighGrayLevelEmphasis", false),
    ("ShortRunLowGrayLevelEmphasis", false),
];

/// Run-length matrix of one direction: [level index][run length - 1], and
/// whether any line held more than one ROI voxel.
fn runs(roi: &Roi, off: [i64; 3], nr: usize) -> (Vec<f64>, bool) {
    let g = roi.grey_levels.len();
    let mut m = vec![0.0; g * nr];
    let mut multi = false;
    let [nx, ny, nz] = roi.dims;
    let step = [off[2], off[1], off[0]];
    let inside =
        |p: [i64; 3]| p[0] >= 0 && p[1] >= 0 && p[2] >= 0 && p[0] < nx as i64 && p[1] < ny as i64 && p[2] < nz as i64;
    for z in 0..nz as i64 {
        for y in 0..ny as i64 {
            for x in 0..nx as i64 {
                // Start lines only at voxels whose predecessor is outside the image.
                if inside([x - step[0], y - step[1], z - step[2]]) {
                    continue;
                }
                let mut p = [x, y, z];
                let mut elements = 0;
                let mut cur: Option<(usize, usize)> = None;
                while inside(p) {
                    let l = roi.levels[roi.index(p[0] as usize, p[1] as usize, p[2] as usize)];
                    if l != 0 {
                        elements += 1;
                        let li = roi.level_index[l as usize];
                        cur = match cur {
                            Some((gl, rl)) if gl == li => Some((gl, rl + 1)),
                            Some((gl, rl)) => {
                                m[gl * nr + rl - 1] += 1.0;
                                Some((li, 1))
                            }
                            None => Some((li, 1)),
                        };
                    } else if let Some((gl, rl)) = cur.take() {
                        m[gl * nr + rl - 1] += 1.0;
                    }
                    p = [p[0] + step[0], p[1] + step[1], p[2] + step[2]];
                }
                if let Some((gl, rl)) = cur {
                    m[gl * nr + rl - 1] += 1.0;
                }
                if elements > 1 {
                    multi = true;
                }
            }
        }
    }
    (m, multi)
}

/// GLRLM features of the ROI.
pub fn compute(roi: &Roi, s: &Settings, enabled: &[&str], out: &mut Features) {
    let g = roi.grey_levels.len();
    let nr = roi.dims.iter().copied().max().unwrap_or(1);
    let angles = generate_angles(roi.size_zyx(), &[1], false, roi.force2d(s));
    let mut mats: Vec<Vec<f64>> = angles
        .iter()
        .map(|off| {
            let (m, multi) = runs(roi, *off, nr);
            if multi { m } else { vec![0.0; g * nr] }
        })
        .collect();
    if let Some(norm) = s.weighting_norm {
        let sp = roi.spacing_zyx();
        let mut sum = vec![0.0; g * nr];
        for (a, off) in angles.iter().enumerate() {
            let d: Vec<f64> = (0..3).map(|k| off[k].abs() as f64 * sp[k]).collect();
            let w = match norm {
                WeightingNorm::Infinity => d.iter().fold(0.0f64, |m, v| m.max(*v)),
                WeightingNorm::Euclidean => d.iter().map(|v| v * v).sum::<f64>().sqrt(),
                WeightingNorm::Manhattan => d.iter().sum::<f64>(),
                WeightingNorm::NoWeighting => 1.0,
            };
            for (t, v) in sum.iter_mut().zip(&mats[a]) {
                *t += v * w;
            }
        }
        mats = vec![sum];
    }
    if mats.len() > 1 {
        mats.retain(|m| m.iter().sum::<f64>() != 0.0);
    }
    let iv: Vec<f64> = roi.grey_levels.iter().map(|&l| l as f64).collect();
    let mut per: std::collections::BTreeMap<&str, Vec<f64>> = std::collections::BTreeMap::new();
    for m in &mats {
        let total: f64 = m.iter().sum();
        let nruns = if total == 0.0 { f64::NAN } else { total };
        let pr: Vec<f64> = (0..nr).map(|r| (0..g).map(|i| m[i * nr + r]).sum()).collect();
        let pg: Vec<f64> = (0..g).map(|i| m[i * nr..(i + 1) * nr].iter().sum()).collect();
        let j = |r: usize| (r + 1) as f64;
        let np: f64 = pr.iter().enumerate().map(|(r, v)| v * j(r)).sum();
        let sum_ij = |f: &dyn Fn(f64, f64) -> f64| -> f64 {
            let mut t = 0.0;
            for i in 0..g {
                for r in 0..nr {
                    let v = m[i * nr + r];
                    if v != 0.0 {
                        t += v * f(iv[i], j(r));
                    }
                }
            }
            t / nruns
        };
        for &name in enabled {
            let v = match name {
                "ShortRunEmphasis" => pr.iter().enumerate().map(|(r, v)| v / (j(r) * j(r))).sum::<f64>() / nruns,
                "LongRunEmphasis" => pr.iter().enumerate().map(|(r, v)| v * j(r) * j(r)).sum::<f64>() / nruns,
                "GrayLevelNonUniformity" => pg.iter().map(|v| v * v).sum::<f64>() / nruns,
                "GrayLevelNonUniformityNormalized" => pg.iter().map(|v| v * v).sum::<f64>() / (nruns * nruns),
                "RunLengthNonUniformity" => pr.iter().map(|v| v * v).sum::<f64>() / nruns,
                "RunLengthNonUniformityNormalized" => pr.iter().map(|v| v * v).sum::<f64>() / (nruns * nruns),
                "RunPercentage" => nruns / np,
                "GrayLevelVariance" => {
                    let u: f64 = (0..g).map(|i| pg[i] / nruns * iv[i]).sum();
                    (0..g).map(|i| pg[i] / nruns * (iv[i] - u).powi(2)).sum()
                }
                "RunVariance" => {
                    let u: f64 = (0..nr).map(|r| pr[r] / nruns * j(r)).sum();
                    (0..nr).map(|r| pr[r] / nruns * (j(r) - u).powi(2)).sum()
                }
                "RunEntropy" => -m.iter().map(|v| v / nruns * (v / nruns + f64::EPSILON).log2()).sum::<f64>(),
                "LowGrayLevelRunEmphasis" => (0..g).map(|i| pg[i] / (iv[i] * iv[i])).sum::<f64>() / nruns,
                "HighGrayLevelRunEmphasis" => (0..g).map(|i| pg[i] * iv[i] * iv[i]).sum::<f64>() / nruns,
                "ShortRunLowGrayLevelEmphasis" => sum_ij(&|i, r| 1.0 / (i * i * r * r)),
                "ShortRunHighGrayLevelEmphasis" => sum_ij(&|i, r| i * i / (r * r)),
                "LongRunLowGrayLevelEmphasis" => sum_ij(&|i, r| r * r / (i * i)),
                "LongRunHighGrayLevelEmphasis" => sum_ij(&|i, r| r * r * i * i),
                _ => continue,
            };
            per.entry(name).or_default().push(v);
        }
    }
    for &name in enabled {
        out.push(name.to_string(), per.get(name).map_or(f64::NAN, |v| nanmean(v)));
    }
}

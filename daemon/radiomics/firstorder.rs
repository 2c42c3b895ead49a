//! First-order statistics as PyRadiomics' `firstorder` class: on the ROI's
//! grey values (Energy and RootMeanSquared after `voxelArrayShift`), Entropy
//! and Uniformity on the discretised levels, percentiles as numpy's linear
//! method.

use super::Features;

/// First-order features, with whether each is deprecated.
pub const FEATURES: &[(&str, bool)] = &[
    ("10Percentile", false),
    ("90Percentile", false),
    ("Energy", false),
    ("Entropy", false),
    ("InterquartileRange", false),
    ("Kurtosis", false),
    ("Maximum", false),
    ("MeanAbsoluteDeviation", false),
    ("Mean", false),
    ("Median", false),
    ("Minimum", false),
    ("Range", false),
    ("RobustMeanAbsoluteDeviation", false),
    ("RootMeanSquared", false),
    ("Skewness", false),
    ("StandardDeviation", true),
    ("TotalEnergy", false),
    ("Uniformity", false),
    ("Variance", false),
];

/// numpy.percentile (linear) of sorted values.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return f64::NAN;
    }
    let q = q / 100.0;
    // numpy's virtual index for the linear method: (n - 1) · q.
    let vi = (n - 1) as f64 * q;
    let prev = vi.floor();
    let gamma = vi - prev;
    let clamp = |i: f64| (i.max(0.0) as usize).min(n - 1);
    let a = sorted[clamp(prev)];
    let b = sorted[clamp(prev + 1.0)];
    let d = b - a;
    if gamma >= 0.5 { b - d * (1.0 - gamma) } else { a + d * gamma }
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// First-order features of the ROI values `x`, their discretised `levels`
/// (same order) and the voxel volume (mm³).
pub fn compute(x: &[f64], levels: &[u32], voxel_mm3: f64, shift: f64, enabled: &[&str], out: &mut Features) {
    let n = x.len() as f64;
    let mut sorted = x.to_vec();
    sorted.sort_unstable_by(f64::total_cmp);
    let mu = mean(x);
    let moment = |k: i32| x.iter().map(|v| (v - mu).powi(k)).sum::<f64>() / n;
    let mut counts = std::collections::BTreeMap::<u32, f64>::new();
    for &l in levels {
        *counts.entry(l).or_default() += 1.0;
    }
    let p: Vec<f64> = counts.values().map(|c| c / n).collect();
    let energy = x.iter().map(|v| (v + shift) * (v + shift)).sum::<f64>();
    let p10 = percentile(&sorted, 10.0);
    let p90 = percentile(&sorted, 90.0);
    for &name in enabled {
        let v = match name {
            "Energy" => energy,
            "TotalEnergy" => energy * voxel_mm3,
            "Entropy" => -p.iter().map(|pi| pi * (pi + f64::EPSILON).log2()).sum::<f64>(),
            "Minimum" => sorted[0],
            "Maximum" => sorted[sorted.len() - 1],
            "10Percentile" => p10,
            "90Percentile" => p90,
            "Mean" => mu,
            "Median" => percentile(&sorted, 50.0),
            "InterquartileRange" => percentile(&sorted, 75.0) - percentile(&sorted, 25.0),
            "Range" => sorted[sorted.len() - 1] - sorted[0],
            "MeanAbsoluteDeviation" => x.iter().map(|v| (v - mu).abs()).sum::<f64>() / n,
            "RobustMeanAbsoluteDeviation" => {
                let kept: Vec<f64> = x.iter().copied().filter(|v| *v >= p10 && *v <= p90).collect();
                let m = mean(&kept);
                kept.iter().map(|v| (v - m).abs()).sum::<f64>() / kept.len() as f64
            }
            "RootMeanSquared" => (energy / n).sqrt(),
            "StandardDeviation" => moment(2).sqrt(),
            "Skewness" => {
                let m2 = moment(2);
                if m2 == 0.0 { moment(3) } else { moment(3) / m2.powf(1.5) }
            }
            "Kurtosis" => {
                let m2 = moment(2);
                if m2 == 0.0 { moment(4) } else { moment(4) / (m2 * m2) }
            }
            "Variance" => moment(2),
            "Uniformity" => p.iter().map(|pi| pi * pi).sum(),
            _ => continue,
        };
        out.push(name.to_string(), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_match_numpy_linear() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 5.5);
        assert!((percentile(&v, 10.0) - 1.9).abs() < 1e-12);
        assert!((percentile(&v, 90.0) - 9.1).abs() < 1e-12);
    }
}

//! Summaries over cases (mean, median, SD, pooled) and the screening
//! verdicts' sensitivity and specificity with Wilson 95 % intervals.

use std::collections::BTreeMap;

use serde::Serialize;

use super::metrics::{COLUMNS, Detection, LabelMetrics, ratio};

/// Mean, median and sample SD of one figure over the cases where it is defined.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Stats {
    /// Cases where the figure is defined.
    pub n: usize,
    /// Mean.
    pub mean: Option<f64>,
    /// Median.
    pub median: Option<f64>,
    /// Sample standard deviation (n − 1); null under two cases.
    pub sd: Option<f64>,
}

impl Stats {
    /// The statistics of these values.
    pub fn of(values: &[f64]) -> Stats {
        let n = values.len();
        if n == 0 {
            return Stats { n, mean: None, median: None, sd: None };
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
        let sd = (n > 1).then(|| (values.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt());
        Stats { n, mean: Some(mean), median: Some(median), sd }
    }
}

/// Figures of one label over all cases together: voxel and lesion counts summed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Pooled {
    /// Dice: 2|P∩T| / (|P| + |T|).
    pub dice: Option<f64>,
    /// Jaccard: |P∩T| / |P∪T|.
    pub jaccard: Option<f64>,
    /// Predicted volume (mL).
    pub volume_pred_ml: f64,
    /// True volume (mL).
    pub volume_truth_ml: f64,
    /// Abnormal cases called abnormal (screening) or matched lesions (pooled).
    pub tp: u64,
    /// False positives.
    pub fp: u64,
    /// False negatives.
    #[serde(rename = "fn")]
    pub fn_: u64,
    /// TP / (TP + FN).
    pub sensitivity: Option<f64>,
    /// TP / (TP + FP).
    pub precision: Option<f64>,
    /// 2·precision·sensitivity / (precision + sensitivity).
    pub f1: Option<f64>,
    /// Seed 003's lesion-wise Dice: 2·TP / (2·TP + FP + FN).
    pub lesion_dice: Option<f64>,
    /// autoPET's false-positive volume (mL).
    pub fp_volume_ml: f64,
    /// autoPET's false-negative volume (mL).
    pub fn_volume_ml: f64,
}

/// The summary of one label.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LabelSummary {
    /// Cases evaluated for this label.
    pub cases: usize,
    /// Per figure: mean, median, SD over the cases where it is defined.
    pub per_case: BTreeMap<&'static str, Stats>,
    /// Over all cases together.
    pub pooled: Pooled,
}

/// Summarises one label's per-case figures.
pub fn summarise(cases: &[&LabelMetrics]) -> LabelSummary {
    let mut per_case = BTreeMap::new();
    for c in COLUMNS {
        let v: Vec<f64> = cases.iter().filter_map(|m| m.get(c)).collect();
        per_case.insert(c, Stats::of(&v));
    }
    let sum = |f: fn(&LabelMetrics) -> u64| cases.iter().map(|m| f(m)).sum::<u64>();
    let sumf = |f: fn(&LabelMetrics) -> f64| cases.iter().map(|m| f(m)).sum::<f64>();
    let (np, nt, both) =
        (sum(|m| m.voxels_pred) as f64, sum(|m| m.voxels_truth) as f64, sum(|m| m.voxels_overlap) as f64);
    let det = Detection { tp: sum(|m| m.tp), fp: sum(|m| m.fp), fn_: sum(|m| m.fn_) };
    let (sensitivity, precision, f1, lesion_dice) = det.rates();
    LabelSummary {
        cases: cases.len(),
        per_case,
        pooled: Pooled {
            dice: ratio(2.0 * both, np + nt),
            jaccard: ratio(both, np + nt - both),
            volume_pred_ml: sumf(|m| m.volume_pred_ml),
            volume_truth_ml: sumf(|m| m.volume_truth_ml),
            tp: det.tp,
            fp: det.fp,
            fn_: det.fn_,
            sensitivity,
            precision,
            f1,
            lesion_dice,
            fp_volume_ml: sumf(|m| m.fp_volume_ml),
            fn_volume_ml: sumf(|m| m.fn_volume_ml),
        },
    }
}

/// z of a two-sided 95 % interval.
const Z95: f64 = 1.959_963_984_540_054;

/// Wilson score interval of `x` successes in `n` trials at 95 %.
pub fn wilson(x: u64, n: u64) -> Option<[f64; 2]> {
    if n == 0 {
        return None;
    }
    let (x, n) = (x as f64, n as f64);
    let p = x / n;
    let z2 = Z95 * Z95;
    let denom = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denom;
    let half = Z95 / denom * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    Some([(centre - half).max(0.0), (centre + half).min(1.0)])
}

/// Per-case verdicts against the truth: counts, sensitivity, specificity.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Screening {
    /// Cases.
    pub cases: u64,
    /// Abnormal cases called abnormal (screening) or matched lesions (pooled).
    pub tp: u64,
    /// False positives.
    pub fp: u64,
    /// Normal cases called normal.
    pub tn: u64,
    /// False negatives.
    #[serde(rename = "fn")]
    pub fn_: u64,
    /// TP / (TP + FN).
    pub sensitivity: Option<f64>,
    /// Wilson 95 % interval of the sensitivity.
    pub sensitivity_ci95: Option<[f64; 2]>,
    /// TN / (TN + FP).
    pub specificity: Option<f64>,
    /// Wilson 95 % interval of the specificity.
    pub specificity_ci95: Option<[f64; 2]>,
}

impl Screening {
    /// From (predicted abnormal, truly abnormal) pairs.
    pub fn of(verdicts: impl IntoIterator<Item = (bool, bool)>) -> Screening {
        let mut s = Screening::default();
        for (pred, truth) in verdicts {
            s.cases += 1;
            match (pred, truth) {
                (true, true) => s.tp += 1,
                (true, false) => s.fp += 1,
                (false, false) => s.tn += 1,
                (false, true) => s.fn_ += 1,
            }
        }
        s.sensitivity = ratio(s.tp as f64, (s.tp + s.fn_) as f64);
        s.sensitivity_ci95 = wilson(s.tp, s.tp + s.fn_);
        s.specificity = ratio(s.tn as f64, (s.tn + s.fp) as f64);
        s.specificity_ci95 = wilson(s.tn, s.tn + s.fp);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_matches_a_worked_value() {
        // 8 of 10: Wilson 95 % interval 0.4902 to 0.9433 (Newcombe 1998, method 3).
        let [lo, hi] = wilson(8, 10).unwrap_or([0.0, 0.0]);
        assert!((lo - 0.4902).abs() < 1e-4 && (hi - 0.9433).abs() < 1e-4, "{lo} {hi}");
        assert_eq!(wilson(0, 0), None);
        let [lo, hi] = wilson(0, 5).unwrap_or([1.0, 1.0]);
        assert!(lo == 0.0 && hi > 0.4 && hi < 0.5, "{hi}");
    }

    #[test]
    fn stats_and_screening() {
        let s = Stats::of(&[1.0, 2.0, 4.0]);
        assert_eq!((s.mean, s.median), (Some(7.0 / 3.0), Some(2.0)));
        assert!((s.sd.unwrap_or(0.0) - 1.527_525_231_651_947).abs() < 1e-12);
        assert_eq!(Stats::of(&[3.0]).sd, None);
        let sc = Screening::of([(true, true), (false, true), (false, false), (true, false), (false, false)]);
        assert_eq!((sc.tp, sc.fn_, sc.tn, sc.fp), (1, 1, 2, 1));
        assert_eq!(sc.sensitivity, Some(0.5));
        assert_eq!(sc.specificity, Some(2.0 / 3.0));
    }
}

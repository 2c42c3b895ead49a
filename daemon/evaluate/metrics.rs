//! The per-case, per-label figures: overlap (Dice, Jaccard, volumes),
//! surface distances (HD95, ASSD, surface Dice; surface.rs), lesion-wise
//! detection (components matched one to one) and autoPET's false-positive and
//! false-negative volumes. docs/evaluate.md defines each one.

use std::collections::HashMap;

use serde::Serialize;

use super::surface::surface_distances;
use crate::gpu::{Connectivity, cpu};
use crate::volume::Geometry;

/// How a predicted lesion and a true lesion are paired.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Matching {
    /// Their intersection over union is at least this fraction.
    Overlap(f64),
    /// The predicted lesion's centre of mass (rounded to a voxel) lies inside
    /// the true lesion.
    Centroid,
}

/// What the figures of one label are computed with.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Connectivity of lesions (components).
    pub connectivity: Connectivity,
    /// The matching rule of lesion-wise detection.
    pub matching: Matching,
    /// Tolerance of the surface Dice, in mm.
    pub tolerance_mm: f64,
}

/// autoPET's evaluation labels components with 18-connectivity
/// (lab-midas/autoPET val_script.py, `con_comp`).
pub const AUTOPET_CONNECTIVITY: Connectivity = Connectivity::Eighteen;

/// The figures of one label in one case. Names are the output contract of
/// `edgeseg evaluate` (JSON keys and CSV columns); `None` is null: undefined
/// (e.g. HD95 with an empty mask, Dice with both masks empty).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct LabelMetrics {
    /// Dice: 2|P∩T| / (|P| + |T|).
    pub dice: Option<f64>,
    /// Jaccard: |P∩T| / |P∪T|.
    pub jaccard: Option<f64>,
    /// Predicted volume (mL).
    pub volume_pred_ml: f64,
    /// True volume (mL).
    pub volume_truth_ml: f64,
    /// Predicted minus true volume.
    pub volume_diff_ml: f64,
    /// 95th percentile Hausdorff distance (mm), DeepMind's robust Hausdorff.
    pub hd95_mm: Option<f64>,
    /// Average symmetric surface distance (mm): mean of the two directed averages.
    pub assd_mm: Option<f64>,
    /// Normalised surface Dice at the tolerance.
    pub surface_dice: Option<f64>,
    /// Matched lesion pairs (true positives).
    pub tp: u64,
    /// Unmatched predicted lesions (false positives).
    pub fp: u64,
    /// Unmatched true lesions (false negatives).
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
    /// Predicted voxels (behind the pooled figures).
    pub voxels_pred: u64,
    /// True voxels.
    pub voxels_truth: u64,
    /// Voxels both predicted and true.
    pub voxels_overlap: u64,
}

/// Column order of the CSV (after `case` and `label`): the contract's sixteen
/// names in its order, then the volume difference and the voxel counts.
pub const COLUMNS: [&str; 20] = [
    "dice",
    "jaccard",
    "volume_pred_ml",
    "volume_truth_ml",
    "hd95_mm",
    "assd_mm",
    "surface_dice",
    "tp",
    "fp",
    "fn",
    "sensitivity",
    "precision",
    "f1",
    "lesion_dice",
    "fp_volume_ml",
    "fn_volume_ml",
    "volume_diff_ml",
    "voxels_pred",
    "voxels_truth",
    "voxels_overlap",
];

impl LabelMetrics {
    /// The value of a column of `COLUMNS` (None: null).
    pub fn get(&self, column: &str) -> Option<f64> {
        match column {
            "dice" => self.dice,
            "jaccard" => self.jaccard,
            "volume_pred_ml" => Some(self.volume_pred_ml),
            "volume_truth_ml" => Some(self.volume_truth_ml),
            "volume_diff_ml" => Some(self.volume_diff_ml),
            "hd95_mm" => self.hd95_mm,
            "assd_mm" => self.assd_mm,
            "surface_dice" => self.surface_dice,
            "tp" => Some(self.tp as f64),
            "fp" => Some(self.fp as f64),
            "fn" => Some(self.fn_ as f64),
            "sensitivity" => self.sensitivity,
            "precision" => self.precision,
            "f1" => self.f1,
            "lesion_dice" => self.lesion_dice,
            "fp_volume_ml" => Some(self.fp_volume_ml),
            "fn_volume_ml" => Some(self.fn_volume_ml),
            "voxels_pred" => Some(self.voxels_pred as f64),
            "voxels_truth" => Some(self.voxels_truth as f64),
            "voxels_overlap" => Some(self.voxels_overlap as f64),
            _ => None,
        }
    }
}

/// a / b, undefined when b is 0.
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    (b != 0.0).then(|| a / b)
}

/// Lesion-wise counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Detection {
    /// Matched lesion pairs (true positives).
    pub tp: u64,
    /// Unmatched predicted lesions (false positives).
    pub fp: u64,
    /// Unmatched true lesions (false negatives).
    pub fn_: u64,
}

impl Detection {
    /// (sensitivity, precision, F1, lesion Dice) of these counts.
    pub fn rates(&self) -> (Option<f64>, Option<f64>, Option<f64>, Option<f64>) {
        let (tp, fp, fn_) = (self.tp as f64, self.fp as f64, self.fn_ as f64);
        let sens = ratio(tp, tp + fn_);
        let prec = ratio(tp, tp + fp);
        let f1 = match (sens, prec) {
            (Some(s), Some(p)) => Some(if s + p > 0.0 { 2.0 * s * p / (s + p) } else { 0.0 }),
            _ => None,
        };
        let lesion_dice = ratio(2.0 * tp, 2.0 * tp + fp + fn_);
        (sens, prec, f1, lesion_dice)
    }
}

/// Components of a mask: (labels, count).
fn components(mask: &[u8], dims: [usize; 3], conn: Connectivity) -> (Vec<u32>, usize) {
    let l = cpu::label(mask, dims, conn);
    let data = if l.data.is_empty() { vec![0; mask.len()] } else { l.data };
    (data, l.count as usize)
}

/// Lesion-wise detection: components of each mask, candidate pairs by the
/// rule, then greedy one-to-one matching by decreasing intersection over union
/// (ties: lower true, then lower predicted component number, both numbered in
/// raster order). TP = matched pairs, FP = unmatched predicted lesions, FN =
/// unmatched true lesions.
pub fn detect(truth: &[u8], pred: &[u8], dims: [usize; 3], conn: Connectivity, matching: Matching) -> Detection {
    let (lt, nt) = components(truth, dims, conn);
    let (lp, np) = components(pred, dims, conn);
    let mut size_t = vec![0u64; nt + 1];
    let mut size_p = vec![0u64; np + 1];
    let mut inter: HashMap<(u32, u32), u64> = HashMap::new();
    for (&t, &p) in lt.iter().zip(&lp) {
        size_t[t as usize] += 1;
        size_p[p as usize] += 1;
        if t != 0 && p != 0 {
            *inter.entry((t, p)).or_default() += 1;
        }
    }
    let iou = |t: u32, p: u32| {
        let i = inter.get(&(t, p)).copied().unwrap_or(0) as f64;
        i / (size_t[t as usize] as f64 + size_p[p as usize] as f64 - i)
    };
    let mut candidates: Vec<(f64, u32, u32)> = match matching {
        Matching::Overlap(f) => inter.keys().map(|&(t, p)| (iou(t, p), t, p)).filter(|(s, _, _)| *s >= f).collect(),
        Matching::Centroid => {
            let mut sum = vec![[0f64; 3]; np + 1];
            for k in 0..dims[2] {
                for j in 0..dims[1] {
                    for i in 0..dims[0] {
                        let p = lp[i + dims[0] * (j + dims[1] * k)] as usize;
                        if p != 0 {
                            sum[p][0] += i as f64;
                            sum[p][1] += j as f64;
                            sum[p][2] += k as f64;
                        }
                    }
                }
            }
            (1..=np)
                .filter_map(|p| {
                    let n = size_p[p] as f64;
                    let c = [0, 1, 2].map(|a| (sum[p][a] / n + 0.5).floor());
                    if c.iter().zip(dims).any(|(&v, d)| v < 0.0 || v >= d as f64) {
                        return None;
                    }
                    let [i, j, k] = c.map(|v| v as usize);
                    let t = lt[i + dims[0] * (j + dims[1] * k)];
                    (t != 0).then(|| (iou(t, p as u32), t, p as u32))
                })
                .collect()
        }
    };
    candidates.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let mut used_t = vec![false; nt + 1];
    let mut used_p = vec![false; np + 1];
    let mut tp = 0u64;
    for (_, t, p) in candidates {
        if !used_t[t as usize] && !used_p[p as usize] {
            used_t[t as usize] = true;
            used_p[p as usize] = true;
            tp += 1;
        }
    }
    Detection { tp, fp: np as u64 - tp, fn_: nt as u64 - tp }
}

/// autoPET's false-positive and false-negative voxel counts: voxels of the
/// predicted components (18-connected) that touch no true voxel, and of the
/// true components that touch no predicted voxel.
pub fn autopet_fp_fn_voxels(truth: &[u8], pred: &[u8], dims: [usize; 3]) -> (u64, u64) {
    let missed = |a: &[u8], other: &[u8]| -> u64 {
        let (l, n) = components(a, dims, AUTOPET_CONNECTIVITY);
        let mut size = vec![0u64; n + 1];
        let mut touches = vec![false; n + 1];
        for (&c, &o) in l.iter().zip(other) {
            size[c as usize] += 1;
            if o != 0 {
                touches[c as usize] = true;
            }
        }
        (1..=n).filter(|&c| !touches[c]).map(|c| size[c]).sum()
    };
    (missed(pred, truth), missed(truth, pred))
}

/// Every figure of one label: `truth` and `pred` are 0/1 masks on `geometry`.
pub fn label_metrics(truth: &[u8], pred: &[u8], geometry: &Geometry, opts: &Options) -> LabelMetrics {
    let dims = geometry.dims;
    let ml = geometry.voxel_volume_ml();
    let (mut np, mut nt, mut both) = (0u64, 0u64, 0u64);
    for (&t, &p) in truth.iter().zip(pred) {
        np += u64::from(p);
        nt += u64::from(t);
        both += u64::from(p & t);
    }
    let (npf, ntf, bf) = (np as f64, nt as f64, both as f64);
    let t_bool: Vec<bool> = truth.iter().map(|&v| v != 0).collect();
    let p_bool: Vec<bool> = pred.iter().map(|&v| v != 0).collect();
    let sd = surface_distances(&t_bool, &p_bool, dims, geometry.spacing);
    let det = detect(truth, pred, dims, opts.connectivity, opts.matching);
    let (sensitivity, precision, f1, lesion_dice) = det.rates();
    let (fp_vox, fn_vox) = autopet_fp_fn_voxels(truth, pred, dims);
    LabelMetrics {
        dice: ratio(2.0 * bf, npf + ntf),
        jaccard: ratio(bf, npf + ntf - bf),
        volume_pred_ml: npf * ml,
        volume_truth_ml: ntf * ml,
        volume_diff_ml: (npf - ntf) * ml,
        hd95_mm: sd.hd95(),
        assd_mm: sd.assd(),
        surface_dice: sd.surface_dice(opts.tolerance_mm),
        tp: det.tp,
        fp: det.fp,
        fn_: det.fn_,
        sensitivity,
        precision,
        f1,
        lesion_dice,
        fp_volume_ml: fp_vox as f64 * ml,
        fn_volume_ml: fn_vox as f64 * ml,
        voxels_pred: np,
        voxels_truth: nt,
        voxels_overlap: both,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(dims: [usize; 3], voxels: &[[usize; 3]]) -> Vec<u8> {
        let mut m = vec![0u8; dims[0] * dims[1] * dims[2]];
        for v in voxels {
            m[v[0] + dims[0] * (v[1] + dims[1] * v[2])] = 1;
        }
        m
    }

    #[test]
    fn split_prediction_counts_one_match_and_one_false_positive() {
        let d = [8, 3, 1];
        let t = mask(d, &[[1, 1, 0], [2, 1, 0], [3, 1, 0], [4, 1, 0]]);
        let p = mask(d, &[[1, 1, 0], [2, 1, 0], [4, 1, 0]]);
        let det = detect(&t, &p, d, Connectivity::Six, Matching::Overlap(0.1));
        assert_eq!(det, Detection { tp: 1, fp: 1, fn_: 0 });
        // Neither prediction reaches an IoU of 0.6.
        let det = detect(&t, &p, d, Connectivity::Six, Matching::Overlap(0.6));
        assert_eq!(det, Detection { tp: 0, fp: 2, fn_: 1 });
        // autoPET: both predicted components touch the truth, which is found.
        assert_eq!(autopet_fp_fn_voxels(&t, &p, d), (0, 0));
    }

    #[test]
    fn centroid_rule_matches_a_ring_around_nothing_only_when_inside() {
        let d = [5, 5, 1];
        let t = mask(d, &[[2, 2, 0]]);
        let ring: Vec<[usize; 3]> =
            (1..4).flat_map(|i| (1..4).map(move |j| [i, j, 0])).filter(|v| *v != [2, 2, 0]).collect();
        let p = mask(d, &ring);
        // The ring's centre of mass is the true voxel it does not overlap.
        assert_eq!(detect(&t, &p, d, Connectivity::TwentySix, Matching::Centroid), Detection { tp: 1, fp: 0, fn_: 0 });
        assert_eq!(
            detect(&t, &p, d, Connectivity::TwentySix, Matching::Overlap(0.0)),
            Detection { tp: 0, fp: 1, fn_: 1 }
        );
        assert_eq!(autopet_fp_fn_voxels(&t, &p, d), (8, 1));
    }

    #[test]
    fn rates_of_empty_cases() {
        assert_eq!(Detection::default().rates(), (None, None, None, None));
        let missed = Detection { tp: 0, fp: 0, fn_: 2 };
        assert_eq!(missed.rates(), (Some(0.0), None, None, Some(0.0)));
    }
}

//! Site acceptance: predictions against known answers, in the figures the
//! seeds report (docs/evaluate.md). `edgeseg evaluate` (cli.rs) pairs cases,
//! this module reads and checks their grids, metrics.rs computes the figures
//! of each label, summary.rs summarises them over cases.
//!
//! Inputs: NIfTI label maps (nnU-Net's `CASE.nii.gz` in a folder, or single
//! files), study output folders (`labels.nii.gz`, and `report.json` for a
//! screening verdict), or a DICOM folder run through a model first (cli.rs).

pub mod cli;
pub mod metrics;
mod normals;
pub mod summary;
pub mod surface;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Serialize;

pub use metrics::{LabelMetrics, Matching, Options};
use summary::{LabelSummary, Screening};

use crate::export::nifti;
use crate::volume::{Geometry, Volume};

/// Why an evaluation could not be done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EvaluateError {
    /// A file or folder could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The system's reason.
        source: std::io::Error,
    },
    /// A NIfTI file could not be read.
    #[error(transparent)]
    Nifti(#[from] nifti::ReadError),
    /// Prediction and truth are on different grids.
    #[error(
        "case {case}: the prediction's grid ({pred}) differs from the truth's ({truth}); --resample-truth puts the truth on the prediction's grid"
    )]
    Grid {
        /// The case.
        case: String,
        /// The prediction's geometry, in words.
        pred: String,
        /// The truth's geometry, in words.
        truth: String,
    },
    /// Cases on one side without their counterpart.
    #[error("{what}: {}", cases.join(", "))]
    Unpaired {
        /// What is missing ("no truth for", "no prediction for").
        what: &'static str,
        /// The cases.
        cases: Vec<String>,
    },
    /// Nothing to evaluate was found.
    #[error("{}: {reason}", path.display())]
    NoCases {
        /// Where it looked.
        path: PathBuf,
        /// What it looked for.
        reason: String,
    },
    /// The verdicts CSV or a report.json is malformed.
    #[error("{}: {reason}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A bad combination of options.
    #[error("{0}")]
    Usage(String),
    /// The evaluation could not be written as JSON.
    #[error("cannot encode the evaluation as JSON: {0}")]
    Encode(#[from] serde_json::Error),
    /// The model could not be run (DICOM input).
    #[error("model: {0}")]
    Model(String),
}

impl EvaluateError {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> EvaluateError + '_ {
        move |source| EvaluateError::Io { path: path.to_path_buf(), source }
    }
}

/// One case: its prediction, its truth and (study folders) the predicted verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    /// Case name (nnU-Net's CASE, or the study folder's name).
    pub name: String,
    /// The predicted label map.
    pub pred: PathBuf,
    /// The true label map (absent: verdict only).
    pub truth: Option<PathBuf>,
    /// The predicted screening verdict (report.json's `verdict.abnormal`).
    pub verdict: Option<bool>,
}

/// The name of a NIfTI file without its ending, or None for other files.
fn nifti_stem(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    name.strip_suffix(".nii.gz").or_else(|| name.strip_suffix(".nii")).filter(|s| !s.is_empty()).map(str::to_string)
}

/// The predicted verdict of a study folder (report.json's `verdict.abnormal`;
/// None when the profile gives none).
fn study_verdict(dir: &Path) -> Result<Option<bool>, EvaluateError> {
    let p = dir.join("report.json");
    if !p.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&p).map_err(EvaluateError::io(&p))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| EvaluateError::Malformed { path: p.clone(), reason: format!("not JSON ({e})") })?;
    Ok(v.get("verdict").and_then(|x| x.get("abnormal")).and_then(serde_json::Value::as_bool))
}

/// Predictions of PRED: a NIfTI file, a study output folder, or a folder of
/// either (`CASE.nii.gz` files, study folders). (name, label map, verdict).
fn predictions(pred: &Path) -> Result<Vec<(String, PathBuf, Option<bool>)>, EvaluateError> {
    if pred.is_file() {
        let name = nifti_stem(pred).ok_or_else(|| EvaluateError::NoCases {
            path: pred.to_path_buf(),
            reason: "not a NIfTI file (.nii or .nii.gz)".into(),
        })?;
        return Ok(vec![(name, pred.to_path_buf(), None)]);
    }
    let study = |dir: &Path| -> Result<Option<(String, PathBuf, Option<bool>)>, EvaluateError> {
        let labels = dir.join("labels.nii.gz");
        if !labels.is_file() {
            return Ok(None);
        }
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "study".into());
        Ok(Some((name, labels, study_verdict(dir)?)))
    };
    if let Some(s) = study(pred)? {
        return Ok(vec![s]);
    }
    let mut out = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(pred)
        .map_err(EvaluateError::io(pred))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(EvaluateError::io(pred))?;
    entries.sort();
    for p in entries {
        let hidden = p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if hidden {
            continue;
        }
        if p.is_dir() {
            if let Some(s) = study(&p)? {
                out.push(s);
            }
        } else if let Some(name) = nifti_stem(&p) {
            out.push((name, p, None));
        }
    }
    if out.is_empty() {
        return Err(EvaluateError::NoCases {
            path: pred.to_path_buf(),
            reason: "no CASE.nii.gz predictions and no study folders (labels.nii.gz)".into(),
        });
    }
    Ok(out)
}

/// Pairs predictions with truths by case name. TRUTH is a NIfTI file (one
/// prediction) or a folder of `CASE.nii.gz`. Without TRUTH (verdicts only)
/// every case has no truth map.
pub fn pair_cases(pred: &Path, truth: Option<&Path>) -> Result<Vec<Case>, EvaluateError> {
    let preds = predictions(pred)?;
    let Some(truth) = truth else {
        return Ok(preds.into_iter().map(|(name, pred, verdict)| Case { name, pred, truth: None, verdict }).collect());
    };
    if truth.is_file() {
        if preds.len() != 1 {
            return Err(EvaluateError::Usage(format!(
                "{}: one truth file for {} predictions; give a folder of CASE.nii.gz truths",
                truth.display(),
                preds.len()
            )));
        }
        return Ok(preds
            .into_iter()
            .map(|(name, pred, verdict)| Case { name, pred, truth: Some(truth.to_path_buf()), verdict })
            .collect());
    }
    let mut truths: BTreeMap<String, PathBuf> = BTreeMap::new();
    for e in std::fs::read_dir(truth).map_err(EvaluateError::io(truth))? {
        let p = e.map_err(EvaluateError::io(truth))?.path();
        if let Some(name) = nifti_stem(&p).filter(|_| p.is_file()) {
            truths.insert(name, p);
        }
    }
    let missing: Vec<String> = preds.iter().filter(|p| !truths.contains_key(&p.0)).map(|p| p.0.clone()).collect();
    if !missing.is_empty() {
        return Err(EvaluateError::Unpaired { what: "no truth for", cases: missing });
    }
    let names: BTreeSet<&String> = preds.iter().map(|p| &p.0).collect();
    let extra: Vec<String> = truths.keys().filter(|t| !names.contains(t)).cloned().collect();
    if !extra.is_empty() {
        return Err(EvaluateError::Unpaired { what: "no prediction for", cases: extra });
    }
    Ok(preds
        .into_iter()
        .map(|(name, pred, verdict)| {
            let t = truths.get(&name).cloned();
            Case { name, pred, truth: t, verdict }
        })
        .collect())
}

/// A label map: NIfTI values rounded to labels (negative and NaN as 0).
pub fn read_labels(path: &Path) -> Result<Volume<u32>, EvaluateError> {
    let v = nifti::read_f32(path)?;
    Ok(Volume {
        geometry: v.geometry,
        data: v.data.iter().map(|&x| if x.is_finite() && x > 0.0 { x.round() as u32 } else { 0 }).collect(),
    })
}

/// A geometry in words, for the grid-mismatch message.
pub fn describe(g: &Geometry) -> String {
    let v = |a: [f64; 3]| format!("{:.3}, {:.3}, {:.3}", a[0], a[1], a[2]);
    format!(
        "{}×{}×{} voxels of {:.3}×{:.3}×{:.3} mm, origin ({}) mm, axes ({}) ({}) ({})",
        g.dims[0],
        g.dims[1],
        g.dims[2],
        g.spacing[0],
        g.spacing[1],
        g.spacing[2],
        v(g.origin),
        v(g.direction[0]),
        v(g.direction[1]),
        v(g.direction[2])
    )
}

/// The same grid, within what a NIfTI header's float32 fields keep.
pub fn same_grid(a: &Geometry, b: &Geometry) -> bool {
    let close = |x: &[f64], y: &[f64], tol: f64| x.iter().zip(y).all(|(p, q)| (p - q).abs() <= tol);
    a.dims == b.dims
        && close(&a.spacing, &b.spacing, 1e-3)
        && close(&a.origin, &b.origin, 1e-2)
        && (0..3).all(|n| close(&a.direction[n], &b.direction[n], 1e-4))
}

/// `src` on the grid `target`, nearest neighbour in patient space (0 outside;
/// a coordinate half-way between voxels takes the higher one, as ITK's
/// `NearestNeighborInterpolateImageFunction` does).
pub fn resample_nearest(src: &Volume<u32>, target: &Geometry) -> Volume<u32> {
    let g = &src.geometry;
    let mut data = vec![0u32; target.voxel_count()];
    for k in 0..target.dims[2] {
        for j in 0..target.dims[1] {
            for i in 0..target.dims[0] {
                let c = g.lps_to_voxel(target.voxel_to_lps([i as f64, j as f64, k as f64]));
                // Half-way rounds up, as ITK's nearest-neighbour interpolator does.
                let r = c.map(|x| (x + 0.5).floor());
                if r.iter().zip(g.dims).all(|(&x, d)| x >= 0.0 && x < d as f64) {
                    let [a, b, cc] = r.map(|x| x as usize);
                    data[target.index(i, j, k)] = src.data[g.index(a, b, cc)];
                }
            }
        }
    }
    Volume { geometry: target.clone(), data }
}

/// A case's verdicts.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CaseVerdict {
    /// The prediction's verdict (report.json).
    pub predicted_abnormal: bool,
    /// The truth CSV's.
    pub truth_abnormal: bool,
}

/// The figures of one case.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CaseResult {
    /// Case name.
    pub case: String,
    /// Per label number.
    pub labels: BTreeMap<u32, LabelMetrics>,
    /// The screening verdicts (with --verdicts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<CaseVerdict>,
}

/// Evaluates one case's label maps: `labels` empty = every label found in
/// either map.
pub fn evaluate_maps(
    name: &str,
    pred: &Volume<u32>,
    truth: &Volume<u32>,
    labels: &[u32],
    opts: &Options,
    resample_truth: bool,
) -> Result<BTreeMap<u32, LabelMetrics>, EvaluateError> {
    let resampled;
    let truth = if same_grid(&pred.geometry, &truth.geometry) {
        truth
    } else if resample_truth {
        resampled = resample_nearest(truth, &pred.geometry);
        &resampled
    } else {
        return Err(EvaluateError::Grid {
            case: name.to_string(),
            pred: describe(&pred.geometry),
            truth: describe(&truth.geometry),
        });
    };
    let wanted: Vec<u32> = if labels.is_empty() {
        let found: BTreeSet<u32> = pred.data.iter().chain(&truth.data).copied().filter(|&l| l != 0).collect();
        found.into_iter().collect()
    } else {
        labels.to_vec()
    };
    let mut out = BTreeMap::new();
    for l in wanted {
        let t: Vec<u8> = truth.data.iter().map(|&v| u8::from(v == l)).collect();
        let p: Vec<u8> = pred.data.iter().map(|&v| u8::from(v == l)).collect();
        out.insert(l, metrics::label_metrics(&t, &p, &pred.geometry, opts));
    }
    Ok(out)
}

/// Reads and evaluates one case.
pub fn evaluate_case(
    case: &Case,
    labels: &[u32],
    opts: &Options,
    resample_truth: bool,
    truth_verdicts: Option<&BTreeMap<String, bool>>,
) -> Result<CaseResult, EvaluateError> {
    let maps = match &case.truth {
        Some(t) => {
            let pred = read_labels(&case.pred)?;
            let truth = read_labels(t)?;
            evaluate_maps(&case.name, &pred, &truth, labels, opts, resample_truth)?
        }
        None => BTreeMap::new(),
    };
    let verdict = match truth_verdicts {
        Some(tv) => {
            let truth_abnormal = *tv.get(&case.name).ok_or_else(|| EvaluateError::Unpaired {
                what: "no true verdict in the verdicts CSV for",
                cases: vec![case.name.clone()],
            })?;
            let predicted_abnormal = case.verdict.ok_or_else(|| EvaluateError::Unpaired {
                what: "no predicted verdict (report.json with a verdict) for",
                cases: vec![case.name.clone()],
            })?;
            Some(CaseVerdict { predicted_abnormal, truth_abnormal })
        }
        None => None,
    };
    Ok(CaseResult { case: case.name.clone(), labels: maps, verdict })
}

/// True verdicts: a CSV with a header naming `case` and `abnormal` columns
/// (abnormal: 1/0, true/false, yes/no, abnormal/normal).
pub fn read_verdicts(path: &Path) -> Result<BTreeMap<String, bool>, EvaluateError> {
    let text = std::fs::read_to_string(path).map_err(EvaluateError::io(path))?;
    let bad = |reason: String| EvaluateError::Malformed { path: path.to_path_buf(), reason };
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines.next().ok_or_else(|| bad("empty".into()))?;
    let cols: Vec<String> = header.split(',').map(|c| c.trim().to_ascii_lowercase()).collect();
    let find = |name: &str| cols.iter().position(|c| c == name).ok_or_else(|| bad(format!("no '{name}' column")));
    let (ci, ai) = (find("case")?, find("abnormal")?);
    let mut out = BTreeMap::new();
    for (n, line) in lines {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let (Some(case), Some(v)) = (f.get(ci), f.get(ai)) else {
            return Err(bad(format!("line {}: fewer columns than the header", n + 1)));
        };
        let abnormal = match v.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "abnormal" => true,
            "0" | "false" | "no" | "normal" => false,
            other => return Err(bad(format!("line {}: abnormal '{other}' is not 1/0, true/false or yes/no", n + 1))),
        };
        out.insert((*case).to_string(), abnormal);
    }
    Ok(out)
}

/// The summary over cases.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    /// Number of cases.
    pub cases: usize,
    /// Per label number.
    pub labels: BTreeMap<u32, LabelSummary>,
    /// Screening verdicts against the truth (with --verdicts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub screening: Option<Screening>,
}

/// Every case and the summary: `--json`'s document.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Evaluation {
    /// Number of cases.
    pub cases: Vec<CaseResult>,
    /// The summary over cases.
    pub summary: Summary,
}

impl Evaluation {
    /// Summarises the cases.
    pub fn new(cases: Vec<CaseResult>) -> Evaluation {
        let label_ids: BTreeSet<u32> = cases.iter().flat_map(|c| c.labels.keys().copied()).collect();
        let labels = label_ids
            .into_iter()
            .map(|l| {
                let per: Vec<&LabelMetrics> = cases.iter().filter_map(|c| c.labels.get(&l)).collect();
                (l, summary::summarise(&per))
            })
            .collect();
        let verdicts: Vec<(bool, bool)> =
            cases.iter().filter_map(|c| c.verdict.as_ref().map(|v| (v.predicted_abnormal, v.truth_abnormal))).collect();
        let screening = (!verdicts.is_empty()).then(|| Screening::of(verdicts));
        Evaluation { summary: Summary { cases: cases.len(), labels, screening }, cases }
    }

    /// The CSV: one row per case and label, `COLUMNS` after `case,label`.
    pub fn csv(&self) -> String {
        let mut s = String::from("case,label");
        for c in metrics::COLUMNS {
            s.push(',');
            s.push_str(c);
        }
        s.push('\n');
        for case in &self.cases {
            for (l, m) in &case.labels {
                s.push_str(&crate::export::csv::quote(&case.case));
                s.push_str(&format!(",{l}"));
                for c in metrics::COLUMNS {
                    s.push(',');
                    if let Some(v) = m.get(c) {
                        s.push_str(&format_number(v));
                    }
                }
                s.push('\n');
            }
        }
        s
    }
}

/// A number as the CSV writes it: integers without a fraction, others with
/// the shortest text that reads back to the same f64.
pub fn format_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 { format!("{}", v as i64) } else { format!("{v}") }
}

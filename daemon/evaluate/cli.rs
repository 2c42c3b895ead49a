//! `edgeseg evaluate`: its arguments and its run. With `--model`, PRED is a
//! DICOM folder segmented first the way `edgeseg process` does it
//! (pipeline::process_study, CPU post-processing) into OUT/studies/, whose
//! study folders are then evaluated.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use super::{Case, EvaluateError, Evaluation, Matching, Options, format_number};
use crate::gpu::Connectivity;
use crate::infer::onnx::ProviderRequest;

/// Predictions against known answers: Dice, surface distances, lesion-wise
/// detection, autoPET volumes, screening verdicts (docs/evaluate.md).
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Predictions: a NIfTI label map, a folder of CASE.nii.gz (nnU-Net's
    /// layout), a study output folder (labels.nii.gz) or a folder of them;
    /// with --model, a DICOM folder to segment first.
    #[arg(long)]
    pub pred: PathBuf,
    /// Truths: a NIfTI label map, or a folder of CASE.nii.gz named like the
    /// predictions (study folders: the folder's name).
    #[arg(long)]
    pub truth: Option<PathBuf>,
    /// Labels to evaluate (default: every label found in either map).
    #[arg(long = "label", num_args = 1..)]
    pub labels: Vec<u32>,
    /// Connectivity of lesions: 6, 18 or 26.
    #[arg(long, default_value_t = 26)]
    pub connectivity: u32,
    /// Lesions match when their intersection over union is at least this.
    #[arg(long, default_value_t = 0.1, conflicts_with = "centroid")]
    pub overlap: f64,
    /// Lesions match when the predicted lesion's centre of mass lies inside the true one.
    #[arg(long)]
    pub centroid: bool,
    /// Tolerance of the surface Dice, in mm.
    #[arg(long, default_value_t = 1.0)]
    pub tolerance_mm: f64,
    /// Print every case and the summary as JSON.
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// Print one CSV row per case and label.
    #[arg(long)]
    pub csv: bool,
    /// Also write OUT/evaluation.json and OUT/cases.csv (with --model:
    /// the segmented studies go to OUT/studies/).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Put the truth on the prediction's grid (nearest neighbour) when the grids differ.
    #[arg(long)]
    pub resample_truth: bool,
    /// True screening verdicts: a CSV with `case` and `abnormal` columns,
    /// against the study folders' report.json verdicts.
    #[arg(long)]
    pub verdicts: Option<PathBuf>,
    /// Segment PRED (a DICOM folder) with this model package first.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// libonnxruntime.so for --model (ORT_DYLIB_PATH overrides).
    #[arg(long, requires = "model")]
    pub onnxruntime: Option<PathBuf>,
    /// Execution provider for --model: auto, cpu, cuda, tensorrt or openvino.
    #[arg(long, default_value = "cpu", requires = "model")]
    pub provider: ProviderRequest,
    /// Folds to ensemble for --model (default: all in the package).
    #[arg(short = 'f', long = "folds", num_args = 1.., requires = "model")]
    pub folds: Vec<u32>,
    /// Turn off mirroring test-time augmentation for --model.
    #[arg(long, requires = "model")]
    pub disable_tta: bool,
}

impl Args {
    /// The metric options these arguments ask for.
    pub fn options(&self) -> Result<Options, EvaluateError> {
        let connectivity = Connectivity::from_number(self.connectivity)
            .ok_or_else(|| EvaluateError::Usage(format!("--connectivity {}: use 6, 18 or 26", self.connectivity)))?;
        if !(0.0..=1.0).contains(&self.overlap) {
            return Err(EvaluateError::Usage(format!("--overlap {}: a fraction from 0 to 1", self.overlap)));
        }
        if !(self.tolerance_mm >= 0.0 && self.tolerance_mm.is_finite()) {
            return Err(EvaluateError::Usage(format!("--tolerance-mm {}: a distance of 0 or more", self.tolerance_mm)));
        }
        let matching = if self.centroid { Matching::Centroid } else { Matching::Overlap(self.overlap) };
        Ok(Options { connectivity, matching, tolerance_mm: self.tolerance_mm })
    }
}

/// Segments every study of the DICOM folder `dicom` into `out` as `edgeseg
/// process` does; returns the number of studies.
fn segment(a: &Args, model: &Path, dicom: &Path, out: &Path) -> Result<usize, EvaluateError> {
    use crate::gpu::select::{PostBackend, PostprocessChoice};
    use crate::infer::onnx::{EngineOptions, library_path};
    use crate::infer::{PredictOptions, Predictor};
    let model_err = |e: &dyn std::fmt::Display| EvaluateError::Model(e.to_string());
    let lib = library_path(a.onnxruntime.as_deref()).map_err(|e| model_err(&e))?;
    let engine = EngineOptions { provider: a.provider, ..EngineOptions::default() };
    let opts = PredictOptions { folds: a.folds.clone(), tta: !a.disable_tta, engine, ..PredictOptions::default() };
    let predictor =
        Predictor::new(model, &lib, opts).map_err(|e| model_err(&format!("{}: cannot load: {e}", model.display())))?;
    if !dicom.is_dir() {
        return Err(EvaluateError::Usage(format!("{}: not a DICOM folder", dicom.display())));
    }
    let backend = PostBackend::select(PostprocessChoice::Cpu).map_err(|e| model_err(&e))?;
    let index = crate::ingest::index(dicom);
    for e in &index.errors {
        eprintln!("edgeseg: skipped {e}");
    }
    let studies: Vec<String> = index.studies().keys().map(|s| s.to_string()).collect();
    if studies.is_empty() {
        return Err(EvaluateError::NoCases { path: dicom.to_path_buf(), reason: "no DICOM study found".into() });
    }
    for (n, study) in studies.iter().enumerate() {
        let binary = crate::export::seg::SegKind::Binary;
        let (dir, r) =
            crate::pipeline::process_study(&predictor, &backend, &index, study, out, false, binary, |stage| {
                tracing::info!("study {} of {}: {stage}", n + 1, studies.len());
            })
            .map_err(|e| model_err(&format!("study {} of {}: {e}", n + 1, studies.len())))?;
        eprintln!("{} ({} lesions)", dir.display(), r.report.lesions.len());
    }
    Ok(studies.len())
}

/// `edgeseg evaluate`. Ok(true): every case evaluated.
pub fn run(a: &Args) -> Result<bool, EvaluateError> {
    let opts = a.options()?;
    if a.truth.is_none() && a.verdicts.is_none() {
        return Err(EvaluateError::Usage("give --truth (label maps), --verdicts (screening verdicts) or both".into()));
    }
    let pred = match &a.model {
        Some(model) => {
            let out = a.out.as_ref().ok_or_else(|| {
                EvaluateError::Usage("--model needs --out (the segmented studies go to OUT/studies/)".into())
            })?;
            let studies = out.join("studies");
            segment(a, model, &a.pred, &studies)?;
            studies
        }
        None => a.pred.clone(),
    };
    let cases: Vec<Case> = super::pair_cases(&pred, a.truth.as_deref())?;
    let truth_verdicts = a.verdicts.as_deref().map(super::read_verdicts).transpose()?;
    let tty = std::io::stderr().is_terminal();
    let mut results = Vec::with_capacity(cases.len());
    for (n, case) in cases.iter().enumerate() {
        if tty {
            progress(n, cases.len(), &case.name);
        }
        results.push(super::evaluate_case(case, &a.labels, &opts, a.resample_truth, truth_verdicts.as_ref())?);
    }
    if tty {
        progress(cases.len(), cases.len(), "");
        eprintln!();
    }
    let ev = Evaluation::new(results);
    let json = serde_json::to_string_pretty(&ev)? + "\n";
    let csv = ev.csv();
    if let Some(out) = &a.out {
        crate::export::create_output_dir(out).map_err(EvaluateError::io(out))?;
        for (name, text) in [("evaluation.json", &json), ("cases.csv", &csv)] {
            let p = out.join(name);
            crate::export::write_atomic(&p, |f| f.write_all(text.as_bytes())).map_err(EvaluateError::io(&p))?;
        }
    }
    let text = if a.json {
        json
    } else if a.csv {
        csv
    } else {
        human(&ev, &opts)
    };
    let stdout = Path::new("stdout");
    std::io::stdout().lock().write_all(text.as_bytes()).map_err(EvaluateError::io(stdout))?;
    Ok(true)
}

/// A progress bar on stderr.
fn progress(done: usize, total: usize, name: &str) {
    let width = 30;
    let filled = done * width / total.max(1);
    eprint!("\r\x1b[2Kevaluate [{}{}] {done}/{total} {name}", "#".repeat(filled), " ".repeat(width - filled));
}

fn num(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "—".to_string(), |x| format!("{x:.digits$}"))
}

/// The figures for a person: one block per case and label, then the summary.
pub fn human(ev: &Evaluation, opts: &Options) -> String {
    let rule = match opts.matching {
        Matching::Overlap(f) => format!("overlap (IoU) ≥ {f}"),
        Matching::Centroid => "centroid inside".to_string(),
    };
    let mut s = String::new();
    for c in &ev.cases {
        for (l, m) in &c.labels {
            s += &format!(
                "{} label {l}: Dice {}, Jaccard {}, volume {:.2} mL (truth {:.2} mL), HD95 {} mm, ASSD {} mm, surface Dice {} at {} mm\n",
                c.case,
                num(m.dice, 4),
                num(m.jaccard, 4),
                m.volume_pred_ml,
                m.volume_truth_ml,
                num(m.hd95_mm, 2),
                num(m.assd_mm, 2),
                num(m.surface_dice, 4),
                opts.tolerance_mm,
            );
            s += &format!(
                "  lesions: TP {} FP {} FN {}, sensitivity {}, precision {}, F1 {}, lesion Dice {}; autoPET FP {:.2} mL, FN {:.2} mL\n",
                m.tp,
                m.fp,
                m.fn_,
                num(m.sensitivity, 3),
                num(m.precision, 3),
                num(m.f1, 3),
                num(m.lesion_dice, 3),
                m.fp_volume_ml,
                m.fn_volume_ml
            );
        }
        if let Some(v) = &c.verdict {
            let w = |b: bool| if b { "abnormal" } else { "normal" };
            s += &format!("{} verdict: {} (truth {})\n", c.case, w(v.predicted_abnormal), w(v.truth_abnormal));
        }
    }
    s += &format!("summary over {} case(s); lesions matched by {rule}:\n", ev.summary.cases);
    for (l, sum) in &ev.summary.labels {
        let st = |k: &str| sum.per_case.get(k);
        let line = |k: &str, name: &str, pooled: Option<f64>| {
            let Some(x) = st(k) else { return String::new() };
            format!(
                "  label {l} {name}: mean {} (SD {}, median {}, n {}){}\n",
                num(x.mean, 4),
                num(x.sd, 4),
                num(x.median, 4),
                x.n,
                pooled.map(|p| format!(", pooled {p:.4}")).unwrap_or_default()
            )
        };
        s += &line("dice", "Dice", sum.pooled.dice);
        s += &line("lesion_dice", "lesion Dice", sum.pooled.lesion_dice);
        s += &line("sensitivity", "lesion sensitivity", sum.pooled.sensitivity);
        s += &line("precision", "lesion precision", sum.pooled.precision);
        s += &line("hd95_mm", "HD95 (mm)", None);
        s += &line("surface_dice", "surface Dice", None);
        s += &format!(
            "  label {l} lesions: TP {} FP {} FN {}; autoPET FP {} mL, FN {} mL\n",
            sum.pooled.tp,
            sum.pooled.fp,
            sum.pooled.fn_,
            format_number((sum.pooled.fp_volume_ml * 100.0).round() / 100.0),
            format_number((sum.pooled.fn_volume_ml * 100.0).round() / 100.0)
        );
    }
    if let Some(sc) = &ev.summary.screening {
        let ci = |c: Option<[f64; 2]>| c.map_or_else(|| "—".to_string(), |[a, b]| format!("{a:.3}–{b:.3}"));
        s += &format!(
            "  screening: {} case(s), TP {} FP {} TN {} FN {}; sensitivity {} (95 % CI {}), specificity {} (95 % CI {})\n",
            sc.cases,
            sc.tp,
            sc.fp,
            sc.tn,
            sc.fn_,
            num(sc.sensitivity, 3),
            ci(sc.sensitivity_ci95),
            num(sc.specificity, 3),
            ci(sc.specificity_ci95)
        );
    }
    s
}

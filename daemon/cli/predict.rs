//! `edgeseg predict`: nnUNetv2_predict's command line (its flags accepted in
//! their own spelling), the model found and checked against what the flags
//! name, then the cases predicted by `crate::predict`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use edgeseg::infer::model::ModelToml;
use edgeseg::infer::onnx::ProviderRequest;

use crate::predict;

/// nnUNetv2_predict's interface: segment nnU-Net-named NIfTI inputs
/// (CASE_0000.nii.gz, CASE_0001.nii.gz ...) into OUT/CASE.nii.gz.
///
/// nnUNetv2_predict's flags are accepted as written for it (-d, -c, -tr, -p,
/// -f all, -step_size, --disable_tta, --save_probabilities, -chk, -npp, -nps,
/// -device, ...): -d, -c, -tr, -p and -chk are checked against the model
/// package; without -m the package is looked for in nnU-Net's results folder
/// ($nnUNet_results/DATASET/TRAINER__PLANS__CONFIGURATION).
#[derive(clap::Args)]
pub struct Args {
    /// Folder of input images.
    #[arg(short = 'i')]
    input: PathBuf,
    /// Output folder.
    #[arg(short = 'o')]
    output: PathBuf,
    /// Model package folder (default: the one -d, -tr, -p and -c name in $nnUNet_results).
    #[arg(short = 'm')]
    model: Option<PathBuf>,
    /// Folds to ensemble, or `all` (default: all in the package).
    #[arg(short = 'f', num_args = 1.., value_parser = parse_fold)]
    folds: Vec<Fold>,
    /// Turn off mirroring test-time augmentation.
    #[arg(long, alias = "disable_tta")]
    disable_tta: bool,
    /// Sliding-window step as a fraction of the patch size (nnU-Net: -step_size).
    #[arg(long, alias = "step_size", default_value_t = 0.5)]
    step_size: f64,
    /// Also write CASE.npz with the class probabilities (nnU-Net's layout).
    #[arg(long, alias = "save_probabilities")]
    save_probabilities: bool,
    #[command(flatten)]
    engine: predict::EngineArgs,
    /// Tiles per network call.
    #[arg(long, default_value_t = 2)]
    batch_size: usize,
    /// nnU-Net dataset, by name or number: must be the package's.
    #[arg(short = 'd', long = "dataset")]
    dataset: Option<String>,
    /// nnU-Net configuration (3d_fullres ...): must be the package's.
    #[arg(short = 'c', long = "configuration")]
    configuration: Option<String>,
    /// nnU-Net trainer class (nnU-Net: -tr): must be the package's.
    #[arg(long = "trainer")]
    trainer: Option<String>,
    /// nnU-Net plans identifier: must be the package's.
    #[arg(short = 'p', long = "plans")]
    plans: Option<String>,
    /// Checkpoint the package was exported from (nnU-Net: -chk): checked where the package records it.
    #[arg(long = "checkpoint")]
    checkpoint: Option<String>,
    /// Where the networks run (nnU-Net: -device): cpu or cuda (as --provider).
    #[arg(long, value_parser = ["cpu", "cuda", "mps"], conflicts_with = "provider")]
    device: Option<String>,
    /// Keep outputs that already exist (continue an interrupted run).
    #[arg(long, alias = "continue_prediction")]
    continue_prediction: bool,
    /// Plain lines on stderr instead of a progress bar on a terminal.
    #[arg(long, alias = "disable_progress_bar")]
    disable_progress_bar: bool,
    /// Log each step (info level).
    #[arg(long)]
    verbose: bool,
    /// Split the cases into this many parts (with --part-id; nnU-Net: -num_parts).
    #[arg(long, default_value_t = 1)]
    num_parts: usize,
    /// Which part this run predicts, from 0 (nnU-Net: -part_id).
    #[arg(long, default_value_t = 0)]
    part_id: usize,
    /// nnUNetv2_predict's preprocessing processes (-npp): accepted, no effect.
    #[arg(long, value_name = "N")]
    npp: Option<u32>,
    /// nnUNetv2_predict's export processes (-nps): accepted, no effect.
    #[arg(long, value_name = "N")]
    nps: Option<u32>,
    /// nnUNetv2_predict's --not_on_device: accepted, no effect.
    #[arg(long, alias = "not_on_device")]
    not_on_device: bool,
    /// Cascade input (nnU-Net: -prev_stage_predictions): refused, packages hold one stage.
    #[arg(long, value_name = "DIR")]
    prev_stage_predictions: Option<PathBuf>,
}

impl Args {
    /// `--verbose`: the log level goes to info.
    pub fn verbose(&self) -> bool {
        self.verbose
    }
}

/// One `-f` value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fold {
    /// `all`: every fold of the package.
    All,
    /// One fold.
    Number(u32),
}

fn parse_fold(s: &str) -> Result<Fold, String> {
    match s {
        "all" => Ok(Fold::All),
        n => n.parse().map(Fold::Number).map_err(|_| format!("{n}: a fold is a number or `all`")),
    }
}

/// nnUNetv2_predict's single-dash long flags and their clap spellings.
const SINGLE_DASH: [(&str, &str); 9] = [
    ("-step_size", "--step-size"),
    ("-tr", "--trainer"),
    ("-chk", "--checkpoint"),
    ("-npp", "--npp"),
    ("-nps", "--nps"),
    ("-device", "--device"),
    ("-prev_stage_predictions", "--prev-stage-predictions"),
    ("-num_parts", "--num-parts"),
    ("-part_id", "--part-id"),
];

/// The command line with nnUNetv2_predict's single-dash long flags
/// (`-step_size 0.5`, `-chk=x`) respelled for clap, which would read them as
/// bundles of short flags (`-device` as `-d evice`). Only after `predict`.
pub fn nnunet_spellings(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut args: Vec<OsString> = args.into_iter().collect();
    if args.get(1).and_then(|a| a.to_str()) != Some("predict") {
        return args;
    }
    for a in args.iter_mut().skip(2) {
        let Some(s) = a.to_str() else { continue };
        let (flag, value) = match s.split_once('=') {
            Some((f, v)) => (f, Some(v)),
            None => (s, None),
        };
        if let Some((_, long)) = SINGLE_DASH.iter().find(|(short, _)| *short == flag) {
            *a = match value {
                Some(v) => format!("{long}={v}").into(),
                None => (*long).into(),
            };
        }
    }
    args
}

pub fn run(a: Args) -> Result<bool> {
    if let Some(p) = &a.prev_stage_predictions {
        bail!(
            "-prev_stage_predictions {}: cascaded models are not supported (a package holds one configuration)",
            p.display()
        );
    }
    if a.part_id >= a.num_parts {
        bail!("-part_id {} must be below -num_parts {}", a.part_id, a.num_parts);
    }
    let folds = folds(&a.folds)?;
    let model = match &a.model {
        Some(m) => m.clone(),
        None => results_folder_package(&a)?,
    };
    check_package(&model, &a, &folds)?;
    let mut engine = a.engine;
    match a.device.as_deref() {
        Some("cpu") => engine.provider = ProviderRequest::Cpu,
        Some("cuda") => engine.provider = ProviderRequest::Cuda,
        Some(other) => bail!("-device {other}: not supported (cpu or cuda)"),
        None => {}
    }
    predict::run(&predict::Args {
        input: a.input,
        output: a.output,
        model,
        folds,
        tta: !a.disable_tta,
        step_size: a.step_size,
        save_probabilities: a.save_probabilities,
        engine,
        batch_size: a.batch_size,
        continue_prediction: a.continue_prediction,
        part: (a.part_id, a.num_parts),
        progress_bar: !a.disable_progress_bar,
    })
}

/// `-f 0 1` or `-f all` as the fold list the predictor takes (empty: all).
fn folds(f: &[Fold]) -> Result<Vec<u32>> {
    if f.contains(&Fold::All) {
        if f.len() > 1 {
            bail!("-f all stands alone (it means every fold of the package)");
        }
        return Ok(Vec::new());
    }
    Ok(f.iter().filter_map(|f| if let Fold::Number(n) = f { Some(*n) } else { None }).collect())
}

/// The package in nnU-Net's results folder that -d, -tr, -p and -c name, as
/// nnUNetv2_predict finds its model folder.
fn results_folder_package(a: &Args) -> Result<PathBuf> {
    let (Some(dataset), Some(configuration)) = (&a.dataset, &a.configuration) else {
        bail!("no model: give -m MODEL_DIR (an edgeseg model package), or -d and -c with nnUNet_results set");
    };
    let Some(results) = std::env::var_os("nnUNet_results").map(PathBuf::from) else {
        bail!(
            "no model: -m MODEL_DIR not given and nnUNet_results not set (where -d {dataset} -c {configuration} would be)"
        );
    };
    let name = match dataset.parse::<u32>() {
        Ok(id) => {
            let prefix = format!("Dataset{id:03}_");
            let found = std::fs::read_dir(&results).ok().and_then(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .find(|n| n.starts_with(&prefix))
            });
            match found {
                Some(n) => n,
                None => bail!("-d {dataset}: no {prefix}* folder in nnUNet_results ({})", results.display()),
            }
        }
        Err(_) => dataset.clone(),
    };
    let trainer = a.trainer.as_deref().unwrap_or("nnUNetTrainer");
    let plans = a.plans.as_deref().unwrap_or("nnUNetPlans");
    Ok(results.join(name).join(format!("{trainer}__{plans}__{configuration}")))
}

/// The package's model.toml and plans.json against -d, -c, -tr, -p and
/// -chk; a folder without model.toml gets the export command line.
fn check_package(dir: &Path, a: &Args, folds: &[u32]) -> Result<()> {
    require_package(dir, folds, a.checkpoint.as_deref())?;
    let toml_path = dir.join("model.toml");
    // Unreadable or malformed: the package loader says so with its reasons.
    let Ok(meta) = std::fs::read_to_string(&toml_path)
        .map_err(|_| ())
        .and_then(|t| toml::from_str::<ModelToml>(&t).map_err(|_| ()))
    else {
        return Ok(());
    };
    let contradicts = |flag: &str, given: &str, what: &str, has: &str| {
        anyhow::anyhow!("{flag} {given} contradicts the model package {}: it holds {what} {has}", dir.display())
    };
    if let Some(c) = &a.configuration
        && *c != meta.configuration
    {
        return Err(contradicts("-c", c, "configuration", &meta.configuration));
    }
    for (flag, given, what, has) in
        [("-tr", &a.trainer, "trainer", &meta.trainer), ("-p", &a.plans, "plans", &meta.plans_identifier)]
    {
        match (given, has) {
            (Some(g), Some(h)) if g != h => return Err(contradicts(flag, g, what, h)),
            (Some(g), None) => tracing::warn!("{flag} {g}: the package does not record its {what}; not checked"),
            _ => {}
        }
    }
    if let Some(d) = &a.dataset {
        let plans = std::fs::read_to_string(dir.join("plans.json")).ok();
        let name = plans
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v.get("dataset_name").and_then(|n| n.as_str()).map(str::to_string));
        match name {
            Some(n) if !dataset_matches(d, &n) => return Err(contradicts("-d", d, "dataset", &n)),
            Some(_) => {}
            None => tracing::warn!("-d {d}: the package's plans.json names no dataset; not checked"),
        }
    }
    if let Some(chk) = &a.checkpoint {
        match exported_checkpoint(meta.note.as_deref()) {
            Some(has) if has != *chk => return Err(contradicts("-chk", chk, "checkpoint", &has)),
            Some(_) => {}
            None => tracing::warn!("-chk {chk}: the package does not record its checkpoint; not checked"),
        }
    }
    Ok(())
}

/// nnU-Net's -d: a dataset name, or its number (`5`, `005`).
fn dataset_matches(given: &str, name: &str) -> bool {
    match given.parse::<u32>() {
        Ok(id) => name.starts_with(&format!("Dataset{id:03}_")),
        Err(_) => given == name,
    }
}

/// The checkpoint tools/nnunet_export.py names in its default note
/// ("Exported by tools/nnunet_export.py from D/T__P__C (checkpoint_final.pth).").
fn exported_checkpoint(note: Option<&str>) -> Option<String> {
    let note = note?.strip_prefix("Exported by tools/nnunet_export.py from ")?;
    let inner = note.strip_suffix(").")?;
    let (_, chk) = inner.rsplit_once(" (")?;
    Some(chk.to_string())
}

/// A model folder that exists and has a model.toml; a folder without one
/// (an nnU-Net results folder, say) gets the tools/nnunet_export.py command
/// line that makes a package of it (predict, process, compile).
pub fn require_package(dir: &Path, folds: &[u32], checkpoint: Option<&str>) -> Result<()> {
    if !dir.is_dir() {
        bail!("{}: no such model folder", dir.display());
    }
    if !dir.join("model.toml").exists() {
        bail!("{}", export_hint(dir, folds, checkpoint));
    }
    Ok(())
}

/// What to say for a folder without model.toml: export it first, with the
/// command line for this folder.
fn export_hint(dir: &Path, folds: &[u32], checkpoint: Option<&str>) -> String {
    let nnunet = dir.join("plans.json").exists() && dir.join("dataset.json").exists();
    let fold_list = if folds.is_empty() {
        let mut found: Vec<u32> = std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().to_str()?.strip_prefix("fold_")?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        found.sort_unstable();
        if found.is_empty() { vec![0, 1, 2, 3, 4] } else { found }
    } else {
        folds.to_vec()
    };
    let folds: Vec<String> = fold_list.iter().map(u32::to_string).collect();
    let chk = checkpoint.unwrap_or("checkpoint_final.pth");
    let source = if nnunet { dir.display().to_string() } else { "NNUNET_RESULTS_FOLDER".into() };
    let what =
        if nnunet { "an nnU-Net results folder, not an edgeseg model package" } else { "not an edgeseg model package" };
    format!(
        "{}: no model.toml: {what}; export the trained model first with\n  \
         python3 tools/nnunet_export.py --trained-model {source} --folds {} --checkpoint {chk} --out MODEL_DIR\n\
         then give MODEL_DIR as the model package (-m, --model; docs/model-package.md)",
        dir.display(),
        folds.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn single_dash_flags_are_respelled_after_predict_only() {
        let got = nnunet_spellings(os(&[
            "edgeseg",
            "predict",
            "-device",
            "cpu",
            "-chk=a.pth",
            "-step_size",
            "0.3",
            "-d",
            "5",
        ]));
        assert_eq!(
            got,
            os(&["edgeseg", "predict", "--device", "cpu", "--checkpoint=a.pth", "--step-size", "0.3", "-d", "5"])
        );
        let other = os(&["edgeseg", "process", "-tr"]);
        assert_eq!(nnunet_spellings(other.clone()), other);
    }

    #[test]
    fn dataset_by_number_or_name() {
        assert!(dataset_matches("900", "Dataset900_Pointwise"));
        assert!(dataset_matches("5", "Dataset005_Prostate"));
        assert!(dataset_matches("Dataset900_Pointwise", "Dataset900_Pointwise"));
        assert!(!dataset_matches("901", "Dataset900_Pointwise"));
        assert!(!dataset_matches("Dataset900", "Dataset900_Pointwise"));
    }

    #[test]
    fn checkpoint_from_the_exporter_s_note() {
        let n = "Exported by tools/nnunet_export.py from Dataset1_A/nnUNetTrainer__nnUNetPlans__3d_fullres (checkpoint_best.pth).";
        assert_eq!(exported_checkpoint(Some(n)).as_deref(), Some("checkpoint_best.pth"));
        assert_eq!(exported_checkpoint(Some("test fixture")), None);
        assert_eq!(exported_checkpoint(None), None);
    }

    #[test]
    fn fold_all_stands_alone() {
        assert_eq!(folds(&[Fold::All]).ok(), Some(vec![]));
        assert_eq!(folds(&[Fold::Number(0), Fold::Number(1)]).ok(), Some(vec![0, 1]));
        assert!(folds(&[Fold::All, Fold::Number(1)]).is_err());
    }
}

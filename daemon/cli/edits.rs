//! `edgeseg edits`: a study folder's edits listed, or the last one undone.

use std::path::PathBuf;

use anyhow::Result;

/// `edgeseg edits` actions.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum EditsAction {
    /// The edits, oldest first.
    List,
    /// Take the last edit back.
    Undo,
}

/// List a study folder's edits, or undo the last one.
#[derive(clap::Args)]
pub struct Args {
    /// The study's output folder (OUT/<StudyInstanceUID>).
    study_out: PathBuf,
    /// list, or undo (restores the folder as it was before the last edit).
    #[arg(value_enum, default_value = "list")]
    action: EditsAction,
    /// JSON output (list).
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<bool> {
    let study = a.study_out.as_path();
    match a.action {
        EditsAction::List => {
            let list = edgeseg::edit::list_edits(study)?;
            if a.json {
                outln!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(true);
            }
            if list.is_empty() {
                outln!("{}: no edits", study.display());
            }
            for e in &list {
                let r = &e.record;
                let what = match r["action"].as_str() {
                    Some("add-lesion") => format!(
                        "add-lesion: lesion {} ({:.2} mL, SUV >= {:.2}) at {}",
                        r["lesion"],
                        r["volume_ml"].as_f64().unwrap_or(f64::NAN),
                        r["threshold_suv"].as_f64().unwrap_or(f64::NAN),
                        r["seed_lps_mm"]
                    ),
                    Some("remove-lesion") => {
                        format!(
                            "remove-lesion: lesion {} ({:.2} mL)",
                            r["lesion"],
                            r["volume_ml"].as_f64().unwrap_or(f64::NAN)
                        )
                    }
                    other => other.unwrap_or("?").to_string(),
                };
                let when = r["when"].as_str().unwrap_or("-");
                let undo = if e.undoable { "" } else { " (no history: cannot be undone)" };
                outln!("{:>3}  {when}  {what}{undo}", e.index);
            }
        }
        EditsAction::Undo => {
            let u = edgeseg::edit::undo(study)?;
            outln!(
                "{}: undone: {} of lesion {} (history entry {:04})",
                study.display(),
                u.action.as_str().unwrap_or("?"),
                u.lesion,
                u.entry
            );
        }
    }
    Ok(true)
}

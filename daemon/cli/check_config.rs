//! `edgeseg check-config`: a daemon configuration file checked, every error
//! placed at its line and column, then the files it names on this machine.

use std::path::PathBuf;

use anyhow::{Context, Result};

/// Check a daemon configuration file: every error with its line and
/// column, then (unless --offline) the model package (its files against
/// model.toml's sha256s), the ONNX Runtime library and the folders on
/// this machine; exit 0 when valid, 2 when not, 1 when unreadable.
#[derive(clap::Args)]
pub struct Args {
    /// Configuration file (TOML).
    file: PathBuf,
    /// Syntax and values only, for a file meant for another machine: no
    /// model, library or folder is looked at.
    #[arg(long)]
    offline: bool,
}

pub fn run(a: Args) -> Result<bool> {
    let (file, offline) = (a.file.as_path(), a.offline);
    let text = std::fs::read_to_string(file).with_context(|| format!("{}: cannot read", file.display()))?;
    let (config, mut diags) = edgeseg::config::check(file, &text);
    let mut warnings = Vec::new();
    // The machine's files only for a file without errors of its own (a
    // relative path would be looked up in the wrong place).
    if let (Some(c), true, false) = (&config, diags.is_empty(), offline) {
        let found = edgeseg::config::check_files(file, &text, c);
        diags.extend(found.errors);
        warnings = found.warnings;
    }
    for d in &diags {
        eprintln!("{d}");
    }
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    // What seg.dcm will be: a PACS must accept that SOP class.
    if let (Some(c), true) = (&config, diags.is_empty()) {
        let k = c.output.seg_kind;
        outln!("[output] seg_kind = \"{}\": seg.dcm is {} {}", k.as_str(), k.sop_class_name(), k.sop_class_uid());
    }
    // The memory budget the daemon would plan studies within on this machine.
    if let (Some(c), false) = (&config, offline) {
        outln!("memory limit: {}", c.limits.budget(&edgeseg::sys::MemoryLimits::read()));
    }
    let scope = if offline { " (offline: syntax and values only)" } else { "" };
    match (diags.len(), warnings.len()) {
        (0, 0) => outln!("{}: valid{scope}", file.display()),
        (0, w) => outln!("{}: valid, {w} warning(s)", file.display()),
        (n, _) => eprintln!("edgeseg: {}: {n} error(s)", file.display()),
    }
    Ok(diags.is_empty())
}

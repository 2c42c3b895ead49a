//! The subcommands, one file each holding its clap arguments (`Args`, whose
//! doc comment is the command's help) and its `run`, which returns Ok(true)
//! when all was done, Ok(false) when some inputs were refused (each named on
//! stderr; exit 2) and an error when nothing could be done (exit 1).
//! Adding a subcommand is adding its file and one line to `commands!` below.

use std::path::Path;

use anyhow::{Result, bail};
use edgeseg::ingest;
use edgeseg::observe::BusKind;

/// `println!` that returns an error instead of panicking (a closed pipe, as in
/// `edgeseg inspect DIR | head`, ends the command quietly).
macro_rules! outln {
    ($($arg:tt)*) => {
        std::io::Write::write_fmt(&mut std::io::stdout().lock(), format_args!("{}\n", format_args!($($arg)*)))?
    };
}

mod add_lesion;
mod check_config;
mod compile;
mod components;
mod convert;
mod daemon;
mod edits;
mod evaluate;
mod gpu_check;
mod inspect;
mod load;
pub mod predict;
mod process;
mod quarantine;
mod radiomics;
mod remove_lesion;
mod status;

/// The `Command` enum (one variant per subcommand, holding its `Args`) and
/// its dispatch to each module's `run`.
macro_rules! commands {
    ($($variant:ident => $module:ident,)*) => {
        /// The subcommands, in the order `edgeseg --help` lists them.
        // Parsed once per process: boxing the larger arguments buys nothing.
        #[allow(clippy::large_enum_variant)]
        #[derive(clap::Subcommand)]
        pub enum Command {
            $($variant($module::Args),)*
        }

        impl Command {
            /// Runs the subcommand.
            pub fn run(self) -> Result<bool> {
                match self {
                    $(Command::$variant(a) => $module::run(a),)*
                }
            }
        }
    };
}

commands! {
    Inspect => inspect,
    Convert => convert,
    Load => load,
    Predict => predict,
    Process => process,
    Compile => compile,
    Evaluate => evaluate,
    GpuCheck => gpu_check,
    AddLesion => add_lesion,
    Radiomics => radiomics,
    RemoveLesion => remove_lesion,
    Edits => edits,
    Daemon => daemon,
    CheckConfig => check_config,
    Components => components,
    Status => status,
    Quarantine => quarantine,
}

impl Command {
    /// The log level when EDGESEG_LOG says nothing: info for the daemon
    /// (and `predict --verbose`), warnings only for the other commands.
    pub fn default_log_level(&self) -> &'static str {
        match self {
            Command::Daemon(_) => "info",
            Command::Predict(a) if a.verbose() => "info",
            _ => "warn",
        }
    }
}

/// A DICOM folder's index (inspect, convert, load).
fn dicom_index(dir: &Path, strict_geometry: bool) -> Result<ingest::FolderIndex> {
    if !dir.is_dir() {
        bail!("{}: not a folder", dir.display());
    }
    Ok(ingest::index(dir).with_strict_geometry(strict_geometry))
}

/// The files an index skipped or refused, one line each on stderr.
fn report_file_errors(index: &ingest::FolderIndex) {
    for (path, why) in &index.skipped {
        eprintln!("edgeseg: info: skipped {}: {why}", path.display());
    }
    for e in &index.errors {
        eprintln!("edgeseg: skipped {e}");
    }
}

/// The bus `--session` / `--address` name (status, quarantine).
fn bus(session: bool, address: Option<String>) -> BusKind {
    match (session, address) {
        (_, Some(a)) => BusKind::Address(a),
        (true, None) => BusKind::Session,
        (false, None) => BusKind::System,
    }
}

//! The `edgeseg` command line: the binary edge, where errors become messages
//! and exit codes. Exit 0: all done; 1: nothing could be done (bad arguments,
//! unreadable folder, unwritable output); 2: done, but some files or series
//! were refused (each named on stderr). Files that are no image volume
//! (DICOMDIR, DIRFILE, reports, presentation states, screen shots, colour
//! images, localizers) are listed on stderr as `info: skipped` and leave the
//! exit status alone. Each subcommand is a file in `cli/`; this file only
//! parses, starts logging and maps the result to an exit code.

use std::process::ExitCode;

use clap::Parser;

mod cli;
mod predict;
mod progress;

#[derive(Parser)]
#[command(name = "edgeseg", version = edgeseg::version(), about = "Scanner-side PET/CT and CT segmentation")]
struct Cli {
    #[command(subcommand)]
    command: cli::Command,
}

fn main() -> ExitCode {
    // Before any thread exists: ONNX Runtime must not record telemetry (nor
    // create its device id and event database under ~/.cache) in any command.
    edgeseg::sys::disable_onnxruntime_telemetry();
    // nnUNetv2_predict's single-dash long flags (-step_size, -chk, ...) in
    // the spelling clap reads.
    let cli = Cli::parse_from(cli::predict::nnunet_spellings(std::env::args_os()));
    // The journal under systemd (JOURNAL_STREAM on stderr), stderr otherwise;
    // EDGESEG_LOG filters (default: info for the daemon, warn otherwise).
    edgeseg::observe::logging::init(cli.command.default_log_level());
    match cli.command.run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) if e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) => {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("edgeseg: error: {}", edgeseg::observe::logging::error_chain(e.chain()));
            ExitCode::from(1)
        }
    }
}

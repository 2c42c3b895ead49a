//! `edgeseg evaluate`: predictions against known answers. The arguments and
//! the run live in the library (`edgeseg::evaluate::cli`), which
//! `evaluate --model` shares with the pipeline.

use anyhow::Result;

pub use edgeseg::evaluate::cli::Args;

pub fn run(a: Args) -> Result<bool> {
    Ok(edgeseg::evaluate::cli::run(&a)?)
}

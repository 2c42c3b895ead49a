//! edgeseg: scanner-side segmentation of PET/CT and CT studies.
//!
//! The library holds the pipeline stages as plain modules with plain data types
//! between them; the `edgeseg` binary and (later) the daemon call them. See
//! ARCHITECTURE.md for the stages and their invariants.

pub mod config;
pub mod dicom_node;
pub mod edit;
pub mod evaluate;
pub mod export;
pub mod gpu;
pub mod infer;
pub mod ingest;
pub mod observe;
pub mod pipeline;
pub mod post;
pub mod quarantine;
pub mod queue;
pub mod radiomics;
pub mod redact;
pub mod service;
pub mod sys;
pub mod volume;
pub mod watch;

/// The edgeseg version and git revision, as `--version` prints it.
pub fn version() -> &'static str {
    concat!(env!("CARGO_PKG_VERSION"), " (", env!("EDGESEG_GIT_REV"), ")")
}

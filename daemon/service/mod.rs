//! `edgeseg daemon`: the service that ties watching, the journal and the
//! pipeline together, and reports through one small trait, [`Reporter`].
//! This file only wires the parts together ([`run_with_package`]); each
//! file of the folder owns one concept.
//!
//! Threads:
//! - main: signals and [`Command`]s, the intake, the journal, the disk
//!   guard, retention, every report (watchdog pings too, so a long inference
//!   never starves the watchdog) — [`main_loop`];
//! - loader (CPU): reads the next ready study's headers and series into
//!   volumes on the reference grid ([`crate::pipeline::load_study`]) and runs
//!   nnU-Net's preprocessing on them ([`crate::pipeline::prepare_study`])
//!   while the current study is on the GPU, at most one study ahead
//!   ([`workers::loader`]);
//! - GPU worker: loads the model once and runs
//!   [`crate::pipeline::infer_study`] and [`crate::pipeline::write_study`],
//!   one study at a time (the same functions as `edgeseg process`)
//!   ([`workers::gpu`]).
//!
//! Every state change is committed to the journal before it has effects: a
//! study is `running` before the loader gets it, and `done` only after its
//! output folder was renamed into place. A crash at any moment leaves a
//! journal to resume from (see [`crate::queue`]).

mod control;
mod finish;
mod guard;
mod intake;
mod main_loop;
mod memory;
mod reporter;
mod retention;
mod schedule;
mod startup;
mod status;
mod workers;

use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use crate::config::{Config, ConfigError};
use crate::infer::InferError;
use crate::infer::model::ModelPackage;
use crate::queue::{Journal, QueueError};

pub use control::Control;
pub use intake::index_files;
pub use reporter::Reporter;
pub use retention::retention_pass;
pub use startup::clean_output_folder;
pub use workers::ModelSummary;
pub use workers::loader::unreadable_first;

/// A command from D-Bus or a signal (the observe module's type).
pub use crate::observe::Command;
/// The daemon's state (the observe module's type).
pub use crate::observe::DaemonState;
/// Typed values the service reports (the observe module's types).
pub use crate::observe::{FileResult, FolderRole, Readiness, StudyOutcome};

/// Errors that stop the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The journal.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The model.
    #[error("model {path}: {source}")]
    Model {
        /// The model package.
        path: PathBuf,
        /// Why.
        source: InferError,
    },
    /// `[gpu] postprocess = "cuda"` on a machine where CUDA cannot run.
    #[error("[gpu] {0}")]
    Gpu(#[from] crate::gpu::select::SelectError),
    /// A folder the daemon needs.
    #[error("{path}: {source}")]
    Io {
        /// The folder or file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The DICOM node (SCP, outbox).
    #[error(transparent)]
    Node(#[from] crate::dicom_node::NodeError),
    /// A thread of the daemon ended unexpectedly.
    #[error("internal: {0}")]
    Internal(String),
}

/// Seconds the daemon waits at shutdown for the current study before it
/// abandons it (the journal keeps it `running`, so it restarts next time);
/// below the unit's TimeoutStopSec.
pub const STOP_GRACE_SECONDS: f64 = 60.0;

/// Main loop period.
const TICK: Duration = Duration::from_millis(200);

/// The main loop's state: what every part shares (configuration, journal,
/// reporter), then one part per concept.
struct Daemon<'a> {
    config_path: PathBuf,
    config: Config,
    reporter: &'a dyn Reporter,
    journal: Journal,
    /// Watch events into the journal ([`intake`]).
    intake: intake::Intake,
    /// The studies in flight on the workers ([`schedule`]).
    work: schedule::Work,
    /// Readiness and the disk guard ([`guard`]).
    guard: guard::Guard,
    /// What was last reported: state, counts, status page ([`status`]).
    status: status::Status,
    /// When retention last ran ([`retention`]).
    retention: retention::Retention,
    /// Paused by a command ([`control`]).
    paused: bool,
}

/// Runs the daemon until `control.stop` is set. `commands` may be disconnected
/// (no D-Bus): the daemon then runs on signals alone.
pub fn run(
    config_path: &Path,
    reporter: &dyn Reporter,
    control: &Control,
    commands: &Receiver<Command>,
) -> Result<(), ServiceError> {
    run_with_package(config_path, None, reporter, control, commands)
}

/// The memory budget of this start (`[limits] memory_mb`, or from the
/// machine and the service's cgroup), logged and reported, and what each
/// study is asked, for the loader's estimates.
fn memory_plan(config: &Config, package: &ModelPackage, reporter: &dyn Reporter) -> workers::loader::MemoryPlan {
    let budget = config.limits.budget(&crate::sys::MemoryLimits::read());
    tracing::info!("memory budget for studies: {budget}");
    reporter.memory_limit(budget.bytes);
    workers::loader::MemoryPlan {
        budget: memory::Budget::new(budget.bytes),
        text: budget.to_string(),
        ask: crate::infer::memory::Ask {
            folds: package.meta.folds.len(),
            batch_size: config.model.batch_size,
            tta: config.model.tta,
            probabilities: false,
        },
    }
}

/// [`run`] with the model package already read (and its files checked
/// against their sha256s) by the caller, as `edgeseg daemon` does for the
/// observer's model identity: the package is read and hashed once per start.
/// `None`: read here, from the configuration's `[model] path`.
pub fn run_with_package(
    config_path: &Path,
    package: Option<ModelPackage>,
    reporter: &dyn Reporter,
    control: &Control,
    commands: &Receiver<Command>,
) -> Result<(), ServiceError> {
    let started = startup::start(config_path, package, reporter)?;
    // The DICOM node (receiver and delivery), when configured; it stops when dropped.
    let _node = crate::dicom_node::start(&started.config, reporter.delivery_sink())?;
    let (msg_tx, msgs) = std::sync::mpsc::channel::<workers::Msg>();
    let (gpu_thread, gpu_jobs) = workers::gpu::spawn(&started.config, started.package.clone(), msg_tx.clone())?;
    let Some(model) = workers::wait_for_model(&msgs, reporter, control)? else { return Ok(()) };
    let plan = memory_plan(&started.config, &started.package, reporter);
    let (loader_thread, loads) = workers::loader::spawn(started.package, plan, gpu_jobs, msg_tx)?;
    let required = intake::required_series(&model.channels);
    let Some(watcher) = intake::folders::arm(&started.config.watch, &required, reporter, control) else {
        return Ok(());
    };
    let mut d = Daemon {
        config_path: config_path.to_path_buf(),
        config: started.config,
        reporter,
        journal: started.journal,
        intake: intake::Intake::new(watcher, required),
        work: schedule::Work::new(loads),
        guard: guard::Guard::default(),
        status: status::Status::default(),
        retention: retention::Retention::default(),
        paused: false,
    };
    d.serve(control, commands, &msgs)?;
    // Close the queues; threads still busy with an abandoned study end with the process.
    d.work.loads = None;
    if d.work.in_flight.is_empty() {
        let _ = loader_thread.join();
        let _ = gpu_thread.join();
    }
    tracing::info!("stopped");
    drop(started.lock);
    Ok(())
}

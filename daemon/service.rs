//! `edgeseg daemon`: the main loop that ties watching, the journal and the
//! pipeline together, and reports through one small trait, [`Reporter`].
//!
//! Threads:
//! - main: signals and [`Command`]s, the watcher, the journal, the disk guard,
//!   retention, every report (watchdog pings too, so a long inference never
//!   starves the watchdog);
//! - loader (CPU): reads the next ready study's headers and series into
//!   volumes on the reference grid ([`pipeline::load_study`]) and runs
//!   nnU-Net's preprocessing on them ([`pipeline::prepare_study`]) while the
//!   current study is on the GPU, at most one study ahead (screening studies,
//!   which pick their phases themselves, go to the GPU worker whole);
//! - GPU worker: loads the model once and runs [`pipeline::infer_study`] and
//!   [`pipeline::write_study`], one study at a time (the same functions as
//!   `edgeseg process`).
//!
//! Every state change is committed to the journal before it has effects: a
//! study is `running` before the loader gets it, and `done` only after its
//! output folder was renamed into place. A crash at any moment leaves a
//! journal to resume from (see [`crate::queue`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender};
use std::time::{Duration, Instant};

use rayon::prelude::*;

use crate::config::{self, Config, ConfigError, RetentionAction, UnpairedAction};
use crate::gpu::select::PostBackend;
use crate::infer::model::{Channel, ModelPackage};
use crate::infer::onnx::{Engine, EngineOptions, ProviderRequest, library_path};
use crate::infer::{InferError, PredictOptions, Predictor};
use crate::ingest::scan::{HeaderRead, read_header};
use crate::ingest::{ErrorClass, FileError, FolderIndex};
use crate::observe::{QueueItem, ResultItem};
use crate::pipeline::{self, LoadedStudy, PipelineError, StageTimings};
use crate::quarantine;
use crate::queue::{self, Journal, QueueError, StudyState, uid_hash};
use crate::redact::{Redactor, file_label};
use crate::watch::{StudyEvent, WatchSettings, Watcher};

/// The daemon's state (the observe module's type).
pub use crate::observe::DaemonState;

/// A command from D-Bus or a signal (the observe module's type).
pub use crate::observe::Command;

/// Where the daemon reports to (metrics, sd_notify, D-Bus). Every call is
/// made from the main loop's thread.
pub trait Reporter {
    /// The daemon's state changed.
    fn set_state(&self, state: DaemonState);
    /// A one-line status ("idle", "study 3 of 5: inference").
    fn set_status_line(&self, line: &str);
    /// A study ended: outcome `done`, `failed` or `quarantined`.
    fn study_finished(&self, study_uid: &str, outcome: &str, output_dir: Option<&Path>);
    /// Seconds a pipeline stage took.
    fn observe_stage(&self, stage: &str, seconds: f64);
    /// Studies waiting (seen or ready).
    fn set_queue_depth(&self, depth: u64);
    /// Studies in quarantine.
    fn set_quarantined(&self, count: u64);
    /// The study being processed.
    fn set_current_study(&self, study_uid: Option<&str>);
    /// Readiness parts.
    fn set_ready(&self, model_loaded: bool, watch_armed: bool, disk_ok: bool);
    /// Free bytes of a folder (`output`, `state`).
    fn disk_free(&self, folder_role: &str, path: &Path, bytes: u64);
    /// Startup is complete (model loaded, watcher armed).
    fn notify_ready(&self);
    /// The main loop is alive.
    fn notify_watchdog(&self);
    /// Shutdown has begun.
    fn notify_stopping(&self);
    /// The model is loaded (name, sha256, the engine each fold got, where
    /// post-processing runs: D-Bus properties, the `_info` metrics). Default: nothing.
    fn model_loaded(&self, _model: &ModelSummary) {}
    /// A CUDA post-processing step failed and the CPU twins did it for one
    /// study. Default: nothing.
    fn postprocess_fallback(&self) {}
    /// When the last study was done (Unix seconds), from the journal at
    /// start, so "no success in 24 h" survives a restart. Default: nothing.
    fn last_success(&self, _unix_seconds: f64) {}
    /// How many times the daemon has started, from the journal (survives
    /// restarts, so a crash loop shows). Default: nothing.
    fn starts(&self, _total: u64) {}
    /// Ages in seconds of the oldest waiting study and of the running one
    /// (None: none). Default: nothing.
    fn study_ages(&self, _oldest_waiting: Option<f64>, _running: Option<f64>) {}
    /// A configuration reload was applied (`true`) or refused. Default: nothing.
    fn config_reloaded(&self, _ok: bool) {}
    /// A failed attempt was scheduled to run again. Default: nothing.
    fn retried(&self) {}
    /// Input files that went into a result (`ingested`) or were refused
    /// (`refused`). Default: nothing.
    fn files(&self, _result: &str, _count: u64) {}
    /// Seconds from a study's first file seen to its outputs written. Default: nothing.
    fn study_latency(&self, _seconds: f64) {}
    /// The studies waiting or running, by hash, for the status page. Default: nothing.
    fn queue_items(&self, _items: Vec<QueueItem>) {}
    /// A study finished (by hash, with its stage timings), for the status
    /// page. Default: nothing.
    fn study_result(&self, _item: ResultItem) {}
    /// The quarantine records now (status page, D-Bus ListQuarantine). Default: nothing.
    fn quarantine_records(&self, _records: Vec<quarantine::Record>) {}
    /// Where the DICOM node reports delivery figures (None: nowhere).
    fn delivery_sink(&self) -> Option<Arc<dyn crate::dicom_node::DeliverySink>> {
        None
    }
}

impl Reporter for crate::observe::Observer {
    fn set_state(&self, state: DaemonState) {
        crate::observe::Observer::set_state(self, state);
    }
    fn set_status_line(&self, line: &str) {
        crate::observe::Observer::set_status_line(self, line);
    }
    fn study_finished(&self, study_uid: &str, outcome: &str, output_dir: Option<&Path>) {
        crate::observe::Observer::study_finished(self, study_uid, outcome, output_dir);
    }
    fn observe_stage(&self, stage: &str, seconds: f64) {
        crate::observe::Observer::observe_stage(self, stage, seconds);
    }
    fn set_queue_depth(&self, depth: u64) {
        crate::observe::Observer::set_queue_depth(self, depth);
    }
    fn set_quarantined(&self, count: u64) {
        crate::observe::Observer::set_quarantined(self, count);
    }
    fn set_current_study(&self, study_uid: Option<&str>) {
        crate::observe::Observer::set_current_study(self, study_uid);
    }
    fn set_ready(&self, model_loaded: bool, watch_armed: bool, disk_ok: bool) {
        crate::observe::Observer::set_ready(self, model_loaded, watch_armed, disk_ok);
    }
    fn disk_free(&self, folder_role: &str, path: &Path, bytes: u64) {
        crate::observe::Observer::disk_free(self, folder_role, path, bytes);
    }
    fn notify_ready(&self) {
        crate::observe::Observer::notify_ready(self);
    }
    fn notify_watchdog(&self) {
        crate::observe::Observer::notify_watchdog(self);
    }
    fn notify_stopping(&self) {
        crate::observe::Observer::notify_stopping(self);
    }
    fn last_success(&self, unix_seconds: f64) {
        crate::observe::Observer::set_last_success(self, unix_seconds);
    }
    fn starts(&self, total: u64) {
        crate::observe::Observer::set_starts(self, total);
    }
    fn study_ages(&self, oldest_waiting: Option<f64>, running: Option<f64>) {
        crate::observe::Observer::set_study_ages(self, oldest_waiting, running);
    }
    fn config_reloaded(&self, ok: bool) {
        crate::observe::Observer::config_reloaded(self, ok);
    }
    fn retried(&self) {
        crate::observe::Observer::retried(self);
    }
    fn files(&self, result: &str, count: u64) {
        crate::observe::Observer::files(self, result, count);
    }
    fn study_latency(&self, seconds: f64) {
        crate::observe::Observer::study_latency(self, seconds);
    }
    fn model_loaded(&self, m: &ModelSummary) {
        let folds: Vec<(u32, &str, &str)> =
            m.engines.iter().map(|(f, e)| (*f, e.provider.as_str(), e.precision.as_str())).collect();
        crate::observe::Observer::set_engines(self, &folds, m.postprocess_backend);
    }
    fn postprocess_fallback(&self) {
        crate::observe::Observer::postprocess_fallback(self);
    }
    fn queue_items(&self, items: Vec<QueueItem>) {
        crate::observe::Observer::set_queue_items(self, items);
    }
    fn study_result(&self, item: ResultItem) {
        crate::observe::Observer::add_result(self, item);
    }
    fn quarantine_records(&self, records: Vec<quarantine::Record>) {
        crate::observe::Observer::set_quarantine_records(self, records);
    }
    fn delivery_sink(&self) -> Option<Arc<dyn crate::dicom_node::DeliverySink>> {
        Some(Arc::new(self.clone()))
    }
}

/// A [`Reporter`] that only logs (until the observability module reports).
pub struct LogReporter;

impl Reporter for LogReporter {
    fn set_state(&self, state: DaemonState) {
        tracing::info!(state = state.as_str(), "daemon state: {}", state.as_str());
    }
    fn set_status_line(&self, line: &str) {
        tracing::debug!("status: {line}");
    }
    fn study_finished(&self, _: &str, _: &str, _: Option<&Path>) {}
    fn observe_stage(&self, _: &str, _: f64) {}
    fn set_queue_depth(&self, _: u64) {}
    fn set_quarantined(&self, _: u64) {}
    fn set_current_study(&self, _: Option<&str>) {}
    fn set_ready(&self, _: bool, _: bool, _: bool) {}
    fn disk_free(&self, _: &str, _: &Path, _: u64) {}
    fn notify_ready(&self) {
        tracing::info!("ready");
    }
    fn notify_watchdog(&self) {}
    fn notify_stopping(&self) {
        tracing::info!("stopping");
    }
}

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

/// How the daemon is told to stop or reload, besides [`Command`]s.
#[derive(Clone, Default)]
pub struct Control {
    /// Set to stop (SIGTERM, SIGINT).
    pub stop: Arc<AtomicBool>,
    /// Set to reload the configuration (SIGHUP).
    pub reload: Arc<AtomicBool>,
}

impl Control {
    /// Routes SIGTERM and SIGINT to `stop` and SIGHUP to `reload`.
    pub fn install_signal_handlers(&self) -> std::io::Result<()> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        signal_hook::flag::register(SIGTERM, Arc::clone(&self.stop))?;
        signal_hook::flag::register(SIGINT, Arc::clone(&self.stop))?;
        signal_hook::flag::register(SIGHUP, Arc::clone(&self.reload))?;
        Ok(())
    }
}

/// Seconds the daemon waits at shutdown for the current study before it
/// abandons it (the journal keeps it `running`, so it restarts next time);
/// below the unit's TimeoutStopSec.
pub const STOP_GRACE_SECONDS: f64 = 60.0;

/// Main loop period.
const TICK: Duration = Duration::from_millis(200);

/// Work for the GPU worker.
struct GpuJob {
    loaded: LoadedStudy,
    out: PathBuf,
    force_cpu: bool,
}

/// Work for the loader.
struct LoadJob {
    uid: String,
    files: Vec<PathBuf>,
    out: PathBuf,
    force_cpu: bool,
    /// `[ingest] strict_geometry`.
    strict_geometry: bool,
    /// The watch folders (files are named relative to them in logs).
    roots: Vec<PathBuf>,
}

/// What the model is, as the worker loaded it.
#[derive(Debug, Clone)]
pub struct ModelSummary {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Package sha256.
    pub sha256: String,
    /// Channels.
    pub channels: Vec<Channel>,
    /// Task profile (model.toml).
    pub profile: String,
    /// Provider per fold, as report.json names it (`tensorrt-fp16` for an FP16 engine).
    pub providers: Vec<(u32, String)>,
    /// The engine (provider and precision) each fold got.
    pub engines: Vec<(u32, Engine)>,
    /// Where post-processing runs: `cpu` or `cuda`.
    pub postprocess_backend: &'static str,
}

/// A study's end, as reported to the main loop.
struct Outcome {
    uid: String,
    result: Result<(PathBuf, StageTimings), (ErrorClass, String)>,
}

enum Msg {
    Model(Result<ModelSummary, ServiceError>),
    Stage {
        uid: String,
        stage: String,
    },
    /// A CUDA post-processing step of this study ran on the CPU twins.
    PostFallback,
    Finished(Outcome),
}

fn err_outcome(uid: &str, e: &PipelineError) -> Outcome {
    Outcome { uid: uid.to_string(), result: Err((e.class(), e.to_string())) }
}

/// Headers of a study's files, grouped by series, as `ingest::index` would give.
pub fn index_files(files: &[PathBuf]) -> FolderIndex {
    let results: Vec<_> = files.par_iter().map(|p| (p, read_header(p, p))).collect();
    let mut instances = Vec::new();
    let mut errors: Vec<FileError> = Vec::new();
    let mut skipped = Vec::new();
    for (p, r) in results {
        match r {
            Ok(HeaderRead::Image(h)) => instances.push(*h),
            Ok(HeaderRead::Skipped(why)) => skipped.push((p.clone(), why)),
            Err(e) => errors.push(e),
        }
    }
    let root = files.first().and_then(|p| p.parent()).map(Path::to_path_buf).unwrap_or_default();
    FolderIndex::assemble(root, instances, errors, skipped)
}

fn engine_options(c: &config::ModelConfig, force_cpu: bool) -> EngineOptions {
    let provider = if force_cpu { ProviderRequest::Cpu } else { c.provider };
    EngineOptions { provider, require_gpu: c.require_gpu && !force_cpu, threads: c.threads, ..EngineOptions::default() }
}

fn predict_options(c: &config::ModelConfig, state: &Path, force_cpu: bool) -> PredictOptions {
    let mut engine = engine_options(c, force_cpu);
    engine.trt_cache_dir = Some(state.join("engine-cache"));
    PredictOptions { batch_size: c.batch_size, tta: c.tta, engine, ..PredictOptions::default() }
}

/// The GPU worker: builds the engines of the package the service read, then
/// runs jobs until its channel closes.
fn gpu_worker(
    model: config::ModelConfig,
    gpu: config::GpuConfig,
    package: ModelPackage,
    state: PathBuf,
    jobs: Receiver<GpuJob>,
    msgs: Sender<Msg>,
) {
    let model_err = |source: InferError| ServiceError::Model { path: model.path.clone(), source };
    let lib = match library_path(Some(&model.onnxruntime)) {
        Ok(l) => l,
        Err(e) => {
            let _ = msgs.send(Msg::Model(Err(model_err(e))));
            return;
        }
    };
    // The CPU predictor of an out-of-memory retry is built from this copy,
    // so the package is never read again.
    let spare = package.clone();
    let predictor = match Predictor::from_package(package, &lib, predict_options(&model, &state, false)) {
        Ok(p) => p,
        Err(e) => {
            let _ = msgs.send(Msg::Model(Err(model_err(e))));
            return;
        }
    };
    let backend = match PostBackend::select(gpu.postprocess) {
        Ok(b) => b,
        Err(e) => {
            let _ = msgs.send(Msg::Model(Err(e.into())));
            return;
        }
    };
    let engines = predictor.providers();
    let summary = ModelSummary {
        name: predictor.package.meta.name.clone(),
        version: predictor.package.meta.version.clone(),
        sha256: predictor.package.sha256.clone(),
        channels: predictor.package.meta.channels.clone(),
        profile: predictor.package.meta.profile.clone(),
        providers: engines.iter().map(|(f, e)| (*f, e.label().to_string())).collect(),
        engines,
        postprocess_backend: backend.name(),
    };
    if msgs.send(Msg::Model(Ok(summary))).is_err() {
        return;
    }
    let mut cpu_predictor: Option<Predictor> = None;
    while let Ok(job) = jobs.recv() {
        let uid = job.loaded.study_uid.clone();
        let p = if job.force_cpu {
            if cpu_predictor.is_none() {
                match Predictor::from_package(spare.clone(), &lib, predict_options(&model, &state, true)) {
                    Ok(p) => cpu_predictor = Some(p),
                    Err(e) => {
                        let _ = msgs.send(Msg::Finished(err_outcome(&uid, &PipelineError::Infer(e))));
                        continue;
                    }
                }
            }
            cpu_predictor.as_ref().unwrap_or(&predictor)
        } else {
            &predictor
        };
        let r = pipeline::infer_study(p, &backend, job.loaded, false, |stage| {
            let _ = msgs.send(Msg::Stage { uid: uid.clone(), stage: stage.to_string() });
        })
        .and_then(|mut r| {
            if r.report.postprocessing_fallback.is_some() {
                let _ = msgs.send(Msg::PostFallback);
            }
            let _ = msgs.send(Msg::Stage { uid: uid.clone(), stage: "writing".into() });
            pipeline::write_study(&job.out, &mut r).map(|d| (d, r))
        });
        let outcome = match r {
            Ok((dir, r)) => Outcome { uid, result: Ok((dir, r.report.timings_s)) },
            Err(e) => err_outcome(&uid, &e),
        };
        if msgs.send(Msg::Finished(outcome)).is_err() {
            return;
        }
    }
}

/// The loader: headers and series of the next study and nnU-Net's
/// preprocessing of them, on the CPU while the GPU worker runs the current
/// study; then hands it over (a rendezvous channel: at most one study waits).
fn loader(
    package: ModelPackage,
    summary: ModelSummary,
    jobs: Receiver<LoadJob>,
    gpu: SyncSender<GpuJob>,
    msgs: Sender<Msg>,
) {
    // The plans (the package the service read once, no networks): for
    // preprocessing, as the GPU worker's predictor would do it.
    let screening = summary.profile == pipeline::SCREENING_PROFILE;
    while let Ok(job) = jobs.recv() {
        let _ = msgs.send(Msg::Stage { uid: job.uid.clone(), stage: "loading series".into() });
        let index = index_files(&job.files).with_strict_geometry(job.strict_geometry);
        // The watcher logged the files it passed over; these are the ones
        // passed over as a series (single-slice localizers).
        for (path, why) in &index.skipped {
            tracing::info!("{}: skipped, {why}", file_label(path, &job.roots));
        }
        let unreadable_count = index.errors.len();
        let unreadable: Vec<String> = index.errors.iter().take(5).map(|e| e.to_string()).collect();
        let loaded = if screening {
            // The screening profile picks its contrast phases itself.
            Ok(LoadedStudy::deferred(&job.uid, index))
        } else {
            pipeline::load_study(&index, &job.uid, &summary.channels).and_then(|mut l| {
                let _ = msgs.send(Msg::Stage { uid: job.uid.clone(), stage: "preprocessing".into() });
                pipeline::prepare_study(&package, &mut l)?;
                Ok(l)
            })
        };
        match loaded {
            Ok(loaded) => {
                if gpu.send(GpuJob { loaded, out: job.out, force_cpu: job.force_cpu }).is_err() {
                    return;
                }
            }
            Err(e) => {
                let mut o = err_outcome(&job.uid, &e);
                if let (Err((_, msg)), false) = (&mut o.result, unreadable.is_empty()) {
                    // The unreadable files come first: they are the cause, the
                    // error (a gap in the spacing, a missing series) the effect.
                    *msg = unreadable_first(unreadable_count, &unreadable, msg);
                }
                if msgs.send(Msg::Finished(o)).is_err() {
                    return;
                }
            }
        }
    }
}

/// A study's failure reason with its unreadable files first: `3 files could
/// not be read (first ones: ...); without them: <error>`.
pub fn unreadable_first(count: usize, first: &[String], error: &str) -> String {
    let files =
        if count == 1 { "1 file could not be read".to_string() } else { format!("{count} files could not be read") };
    let shown = if first.len() < count { format!("first {}: ", first.len()) } else { String::new() };
    format!("{files} ({shown}{}); without them: {error}", first.join("; "))
}

/// Removes what a crashed run left in the output folder: staging folders of
/// processes that are gone, and a replaced folder whose swap was cut short
/// (put back when the new one never arrived).
pub fn clean_output_folder(out: &Path) {
    let Ok(entries) = std::fs::read_dir(out) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let (kind, rest) = if let Some(r) = name.strip_prefix(".staging-") {
            ("staging", r)
        } else if let Some(r) = name.strip_prefix(".replaced-") {
            ("replaced", r)
        } else {
            continue;
        };
        let Some((stem, pid)) = rest.rsplit_once('-') else { continue };
        if pid.parse::<u32>().is_ok_and(|p| Path::new(&format!("/proc/{p}")).exists() && p != std::process::id()) {
            continue;
        }
        let path = e.path();
        let final_dir = out.join(stem);
        let r = if kind == "replaced" && !final_dir.exists() {
            std::fs::rename(&path, &final_dir)
        } else {
            std::fs::remove_dir_all(&path)
        };
        match r {
            Ok(()) => {
                tracing::info!("{kind} folder of study {} left by an interrupted run, cleaned up", uid_hash(stem))
            }
            Err(e) => tracing::warn!("{kind} folder of study {}: cannot clean up: {e}", uid_hash(stem)),
        }
    }
}

/// Writes `<quarantine>/<hash>/reason.txt` and `files.txt` (the input stays where it is).
fn write_quarantine(dir: &Path, uid: &str, reason: &str, files: &[PathBuf]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let text = format!(
        "study_instance_uid: {uid}\nstudy_hash: {}\nquarantined_at: {}\nreason: {reason}\n\
         The input files were left in place; they are listed in files.txt.\n\
         Run the study again with D-Bus Reprocess(study_uid) once the cause is fixed.\n",
        uid_hash(uid),
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    );
    crate::export::write_atomic(&dir.join("reason.txt"), |f| std::io::Write::write_all(f, text.as_bytes()))?;
    let list: String = files.iter().map(|p| format!("{}\n", p.display())).collect();
    write_private(&dir.join("files.txt"), &list)
}

/// Writes a file only its owner can read (mode 0600): the full input paths,
/// which may name the patient.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    // Mode 0600 before the paths are written.
    crate::export::write_atomic(path, |f| {
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        std::io::Write::write_all(f, text.as_bytes())
    })
}

/// The daemon's mutable state in the main loop.
struct Daemon<'a> {
    config_path: PathBuf,
    config: Config,
    reporter: &'a dyn Reporter,
    journal: Journal,
    watcher: Watcher,
    required: BTreeMap<String, usize>,
    loads: Option<Sender<LoadJob>>,
    in_flight: Vec<String>,
    paused: bool,
    disk_ok: bool,
    armed: bool,
    state: DaemonState,
    current: Option<String>,
    stage: String,
    batch_started: usize,
    last_disk_check: Option<Instant>,
    last_retention: Option<Instant>,
    last_counts: Option<(u64, u64)>,
    /// Studies whose arrival was logged since they were last complete: while
    /// an export goes on, "files changed" is logged once, not at every scan.
    arriving: std::collections::BTreeSet<String>,
    /// What each study in flight is doing (status page).
    stages: BTreeMap<String, String>,
    /// When the status page's queue was last refreshed.
    last_page: Option<Instant>,
    /// When the quarantine folder was last read; None: read it at the next tick.
    last_quarantine_scan: Option<Instant>,
}

fn required_series(channels: &[Channel]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for c in channels {
        *m.entry(c.modality.clone()).or_insert(0) += 1;
    }
    m
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
    reporter.set_state(DaemonState::Starting);
    reporter.set_status_line("starting: loading the model");
    let config = crate::dicom_node::with_spool(config::load(config_path)?);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ServiceError::Io { path, source }
    };
    for d in [&config.state.folder, &config.output.folder, &config.state.quarantine()] {
        std::fs::create_dir_all(d).map_err(io(d))?;
    }
    // One daemon per state folder: two would run the same studies.
    let lock_path = config.state.folder.join("daemon.lock");
    let lock = std::fs::File::create(&lock_path).map_err(io(&lock_path))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(ServiceError::Io {
                path: lock_path,
                source: std::io::Error::other("another edgeseg daemon is running on this state folder"),
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(ServiceError::Io { path: lock_path, source: e }),
    }
    clean_output_folder(&config.output.folder);
    let (journal, recovered) = Journal::open(&config.state.journal())?;
    if recovered > 0 {
        tracing::warn!("{recovered} studies were running when the daemon stopped; they start again from the beginning");
    }
    match journal.record_start() {
        Ok(n) => reporter.starts(n),
        Err(e) => tracing::error!("cannot record this start in the journal: {e}"),
    }
    let _node = crate::dicom_node::start(&config, reporter.delivery_sink())?;
    if let Ok(all) = journal.all() {
        let last = all.iter().filter(|e| e.state == StudyState::Done).map(|e| e.updated).fold(0.0, f64::max);
        if last > 0.0 {
            reporter.last_success(last);
        }
    }

    let package = match package {
        Some(p) => p,
        None => ModelPackage::load(&config.model.path)
            .map_err(|e| ServiceError::Model { path: config.model.path.clone(), source: e.into() })?,
    };
    let loader_package = package.clone();
    let (msg_tx, msg_rx) = std::sync::mpsc::channel::<Msg>();
    let (gpu_tx, gpu_rx) = std::sync::mpsc::sync_channel::<GpuJob>(0);
    let (model_cfg, gpu_cfg, state_dir) = (config.model.clone(), config.gpu.clone(), config.state.folder.clone());
    let worker_msgs = msg_tx.clone();
    let worker = std::thread::Builder::new()
        .name("edgeseg-gpu".into())
        .spawn(move || gpu_worker(model_cfg, gpu_cfg, package, state_dir, gpu_rx, worker_msgs))
        .map_err(|e| ServiceError::Internal(format!("cannot start the GPU worker: {e}")))?;
    // Wait for the model (watchdog pings meanwhile: engine builds take minutes).
    let summary = loop {
        reporter.notify_watchdog();
        if control.stop.load(Ordering::SeqCst) {
            reporter.notify_stopping();
            return Ok(());
        }
        match msg_rx.recv_timeout(TICK) {
            Ok(Msg::Model(Ok(s))) => break s,
            Ok(Msg::Model(Err(e))) => return Err(e),
            Ok(_) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                return Err(ServiceError::Internal("the GPU worker ended while loading the model".into()));
            }
        }
    };
    reporter.model_loaded(&summary);
    let folds: Vec<String> = summary.providers.iter().map(|(f, p)| format!("fold {f} {p}")).collect();
    tracing::info!(
        model = %summary.name,
        sha256 = %summary.sha256,
        postprocess = summary.postprocess_backend,
        "model loaded: {} {} sha256 {} ({}; post-processing on {})",
        summary.name,
        summary.version,
        summary.sha256,
        folds.join(", "),
        summary.postprocess_backend
    );
    let (load_tx, load_rx) = std::sync::mpsc::channel::<LoadJob>();
    let loader_summary = summary.clone();
    let loader_msgs = msg_tx.clone();
    let loader_thread = std::thread::Builder::new()
        .name("edgeseg-loader".into())
        .spawn(move || loader(loader_package, loader_summary, load_rx, gpu_tx, loader_msgs))
        .map_err(|e| ServiceError::Internal(format!("cannot start the loader: {e}")))?;
    drop(msg_tx);

    let required = required_series(&summary.channels);
    // READY=1 only once the export folders can be read (a network share may
    // be mounted after the daemon starts); the watchdog is pinged meanwhile.
    let mut waiting_since: Option<Instant> = None;
    while !config.watch.folders.iter().all(|f| std::fs::read_dir(f).is_ok()) {
        reporter.notify_watchdog();
        if control.stop.load(Ordering::SeqCst) {
            reporter.notify_stopping();
            return Ok(());
        }
        if waiting_since.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
            waiting_since = Some(Instant::now());
            let missing: Vec<String> = config
                .watch
                .folders
                .iter()
                .filter(|f| std::fs::read_dir(f).is_err())
                .map(|f| f.display().to_string())
                .collect();
            tracing::warn!("waiting for the export folder(s) {} to become readable", missing.join(", "));
            reporter.set_status_line(&format!("starting: waiting for {}", missing.join(", ")));
            reporter.set_ready(true, false, true);
        }
        std::thread::sleep(TICK);
    }
    let watcher = Watcher::new(WatchSettings { config: config.watch.clone(), required: required.clone() });
    let mut d = Daemon {
        config_path: config_path.to_path_buf(),
        config,
        reporter,
        journal,
        watcher,
        required,
        loads: Some(load_tx),
        in_flight: Vec::new(),
        paused: false,
        disk_ok: true,
        armed: true,
        state: DaemonState::Starting,
        current: None,
        stage: String::new(),
        batch_started: 0,
        last_disk_check: None,
        last_retention: None,
        last_counts: None,
        arriving: Default::default(),
        stages: BTreeMap::new(),
        last_page: None,
        last_quarantine_scan: None,
    };
    d.check_disk();
    d.handle_events();
    reporter.set_ready(true, d.watcher.armed(), d.disk_ok);
    reporter.notify_ready();
    let folders: Vec<String> = d.config.watch.folders.iter().map(|f| f.display().to_string()).collect();
    tracing::info!(
        inotify = d.watcher.uses_inotify(),
        "watching {} ({})",
        folders.join(", "),
        if d.watcher.uses_inotify() { "inotify" } else { "polling" }
    );

    let mut stop_since: Option<Instant> = None;
    let mut finish_first: Option<String> = None;
    loop {
        reporter.notify_watchdog();
        if control.stop.load(Ordering::SeqCst) && stop_since.is_none() {
            stop_since = Some(Instant::now());
            reporter.notify_stopping();
            d.set_state(DaemonState::Stopping);
            // The study on the GPU may finish; one loaded ahead is abandoned
            // (still `running` in the journal, it restarts next time).
            finish_first = d.current.clone();
            tracing::info!(in_flight = d.in_flight.len(), "stopping: no new studies ({} in flight)", d.in_flight.len());
        }
        if let Some(t) = stop_since {
            if finish_first.as_ref().is_none_or(|u| !d.in_flight.contains(u)) {
                if !d.in_flight.is_empty() {
                    tracing::info!("{} study loaded ahead abandoned; it restarts next time", d.in_flight.len());
                }
                break;
            }
            if t.elapsed().as_secs_f64() > STOP_GRACE_SECONDS {
                tracing::warn!(
                    "stopping with {} studies unfinished; they restart from the beginning next time",
                    d.in_flight.len()
                );
                break;
            }
        }
        if control.reload.swap(false, Ordering::SeqCst) {
            d.reload();
        }
        while let Ok(c) = commands.try_recv() {
            d.command(c);
        }
        if stop_since.is_none() {
            d.handle_events();
            d.check_disk();
            d.retention();
            d.schedule()?;
        }
        d.update_state(stop_since.is_some());
        match msg_rx.recv_timeout(TICK) {
            Ok(m) => {
                d.message(m)?;
                while let Ok(m) = msg_rx.try_recv() {
                    d.message(m)?;
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                return Err(ServiceError::Internal("the GPU worker and loader ended".into()));
            }
        }
    }
    // Close the queues; threads still busy with an abandoned study end with the process.
    d.loads = None;
    if d.in_flight.is_empty() {
        let _ = loader_thread.join();
        let _ = worker.join();
    }
    tracing::info!("stopped");
    drop(lock);
    Ok(())
}

impl Daemon<'_> {
    /// Replaces the paths of `files` (and of anything under the watch
    /// folders) and the study's UID in a text bound for logs, the journal,
    /// D-Bus or reason.txt.
    fn redact(&self, uid: &str, files: &[PathBuf], text: &str) -> String {
        let roots: Vec<PathBuf> = self.config.watch.folders.iter().cloned().collect();
        let t = Redactor::new(&roots).with_files(files.iter().map(PathBuf::as_path)).redact(text);
        let t = if uid.is_empty() { t } else { t.replace(uid, &uid_hash(uid)) };
        crate::redact::hash_uids(&t)
    }

    fn watch_roots(&self) -> Vec<PathBuf> {
        self.config.watch.folders.iter().cloned().collect()
    }

    fn set_state(&mut self, s: DaemonState) {
        if s != self.state {
            self.state = s;
            self.reporter.set_state(s);
        }
    }

    fn update_state(&mut self, stopping: bool) {
        let s = if stopping {
            DaemonState::Stopping
        } else if !self.in_flight.is_empty() {
            DaemonState::Running
        } else if self.paused {
            DaemonState::Paused
        } else if !self.disk_ok {
            DaemonState::DiskLow
        } else {
            DaemonState::Idle
        };
        let changed = s != self.state;
        self.set_state(s);
        if changed && s != DaemonState::Running {
            self.reporter.set_status_line(match s {
                DaemonState::Idle => "idle",
                DaemonState::Paused => "paused",
                DaemonState::DiskLow => "disk low: intake paused",
                DaemonState::Stopping => "stopping",
                _ => "",
            });
        }
        if let (Ok(depth), Ok(q)) = (self.journal.depth(), self.journal.count(StudyState::Quarantined))
            && self.last_counts != Some((depth, q))
        {
            self.last_counts = Some((depth, q));
            self.reporter.set_queue_depth(depth);
            self.reporter.set_quarantined(q);
        }
        if let Ok((waiting, running)) = self.journal.waiting_and_running_since() {
            let now = queue::now();
            self.reporter.study_ages(waiting.map(|t| now - t), running.map(|t| now - t));
        }
        if self.in_flight.is_empty() {
            self.batch_started = 0;
        }
        self.refresh_page();
    }

    /// The status page's queue (every second) and quarantine (every 30 s,
    /// or at once after a change; stale file records are removed then).
    fn refresh_page(&mut self) {
        if self.last_page.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            self.last_page = Some(Instant::now());
            let now = queue::now();
            if let Ok(active) = self.journal.active() {
                let items = active
                    .into_iter()
                    .map(|e| {
                        let stage = match e.state {
                            StudyState::Running => {
                                self.stages.get(&e.uid).cloned().unwrap_or_else(|| "starting".to_string())
                            }
                            StudyState::Ready if e.not_before > now => "waiting to retry".to_string(),
                            StudyState::Ready => "waiting".to_string(),
                            _ => "receiving files".to_string(),
                        };
                        QueueItem { hash: e.hash, state: e.state.as_str().to_string(), since: e.created, stage }
                    })
                    .collect();
                self.reporter.queue_items(items);
            }
        }
        if self.last_quarantine_scan.is_none_or(|t| t.elapsed() >= Duration::from_secs(30)) {
            self.last_quarantine_scan = Some(Instant::now());
            let folder = self.config.state.quarantine();
            for name in quarantine::remove_stale_file_records(&folder, &std::collections::BTreeSet::new()) {
                tracing::info!(record = %name, "quarantine record removed: its file is gone");
            }
            self.reporter.quarantine_records(quarantine::list(&folder));
        }
    }

    /// The quarantine records of a study that was done: its own, and those of
    /// files that went into it or are gone.
    fn clear_quarantine_of_done(&mut self, uid: &str, files: &[PathBuf]) {
        let folder = self.config.state.quarantine();
        let hash = uid_hash(uid);
        match quarantine::remove(&folder, &hash) {
            Ok(true) => tracing::info!(study = %hash, "quarantine record of study {hash} removed: the study is done"),
            Ok(false) => {}
            Err(e) => tracing::warn!(study = %hash, "cannot remove the quarantine record of study {hash}: {e}"),
        }
        let done: std::collections::BTreeSet<PathBuf> = files.iter().cloned().collect();
        let removed = quarantine::remove_stale_file_records(&folder, &done);
        if !removed.is_empty() {
            tracing::info!(
                study = %hash,
                "{} quarantine record(s) of files removed: the files went into study {hash} or are gone ({})",
                removed.len(),
                removed.join(", ")
            );
        }
        self.last_quarantine_scan = None;
    }

    /// A bad-input reason with the files quarantined on their own from the
    /// study's folders named first: unreadable files a study lacks are the
    /// cause of the gap or missing series the pipeline reports.
    fn with_unreadable_neighbours(&self, files: &[PathBuf], reason: String) -> String {
        if reason.contains(" could not be read (") {
            return reason;
        }
        let folders: std::collections::BTreeSet<&Path> = files.iter().filter_map(|f| f.parent()).collect();
        let related: Vec<String> = quarantine::list(&self.config.state.quarantine())
            .into_iter()
            .filter(|r| {
                r.kind == quarantine::RecordKind::File
                    && r.files.iter().any(|f| f.parent().is_some_and(|p| folders.contains(p)))
            })
            .map(|r| format!("{}: {}", r.name, r.reason))
            .collect();
        if related.is_empty() {
            return reason;
        }
        let shown: Vec<String> = related.iter().take(5).cloned().collect();
        unreadable_first(related.len(), &shown, &reason)
    }

    fn result(&self, uid: &str, outcome: &str, created: Option<f64>, t: Option<&StageTimings>) {
        let now = queue::now();
        let stages = t.map(|t| t.by_stage().into_iter().map(|(s, v)| (s.to_string(), v)).collect()).unwrap_or_default();
        self.reporter.study_result(ResultItem {
            hash: uid_hash(uid),
            outcome: outcome.to_string(),
            finished_at: now,
            latency: created.map(|c| now - c),
            stages,
        });
    }

    fn log_state(&self, uid: &str, state: StudyState, detail: &str) {
        let hash = uid_hash(uid);
        // Never the full UID in a log line: the hash names the study.
        let detail = if uid.is_empty() { detail.to_string() } else { detail.replace(uid, &hash) };
        let detail = crate::redact::hash_uids(&detail);
        match state {
            StudyState::Failed | StudyState::Quarantined => {
                tracing::warn!(study = %hash, state = state.as_str(), "study {hash} {}: {detail}", state.as_str());
            }
            _ if detail.is_empty() => {
                tracing::info!(study = %hash, state = state.as_str(), "study {hash} {}", state.as_str())
            }
            _ => tracing::info!(study = %hash, state = state.as_str(), "study {hash} {}: {detail}", state.as_str()),
        }
    }

    fn handle_events(&mut self) {
        for ev in self.watcher.poll() {
            let r = match ev {
                StudyEvent::Changed { uid, files, fingerprint } => {
                    match self.journal.observe(&uid, &files, &fingerprint) {
                        Ok(queue::Observed::New) => {
                            self.log_state(&uid, StudyState::Seen, "new study");
                            self.arriving.insert(uid);
                            Ok(())
                        }
                        Ok(queue::Observed::Changed) => {
                            if !self.arriving.contains(&uid) {
                                self.log_state(&uid, StudyState::Seen, "files changed (more may follow)");
                                self.arriving.insert(uid);
                            }
                            Ok(())
                        }
                        Ok(queue::Observed::Unchanged) => Ok(()),
                        Err(e) => Err(e),
                    }
                }
                StudyEvent::Ready { uid, files, fingerprint, paired } => {
                    self.study_complete(&uid, &files, &fingerprint, paired)
                }
                StudyEvent::Unreadable { path, reason } => {
                    self.quarantine_file(&path, &reason);
                    self.last_quarantine_scan = None;
                    Ok(())
                }
            };
            if let Err(e) = r {
                tracing::error!("{e}");
            }
        }
    }

    fn study_complete(
        &mut self,
        uid: &str,
        files: &[queue::FileSig],
        fingerprint: &str,
        paired: bool,
    ) -> Result<(), QueueError> {
        let was = self.journal.get(uid)?.map(|e| e.state);
        self.arriving.remove(uid);
        if was != Some(StudyState::Seen) && was != Some(StudyState::Running) {
            return Ok(());
        }
        if !paired && self.config.watch.unpaired == UnpairedAction::Quarantine && was == Some(StudyState::Seen) {
            let need: Vec<String> = self.required.iter().map(|(m, n)| format!("{n} {m}")).collect();
            let reason = format!(
                "the model needs {} series; they did not all arrive within pair_wait_seconds = {}",
                need.join(" + "),
                self.config.watch.pair_wait_seconds
            );
            let paths: Vec<PathBuf> = files.iter().map(|f| f.path.clone()).collect();
            self.journal.observe(uid, files, fingerprint)?;
            return self.quarantine(uid, &reason, &paths);
        }
        if self.journal.mark_ready(uid, files, fingerprint)? {
            let detail = if was == Some(StudyState::Running) {
                "complete again (new files while running): queued after this run"
            } else if paired {
                "complete"
            } else {
                "complete without its pair (pair_wait_seconds passed): runs with what it has"
            };
            self.log_state(uid, StudyState::Ready, detail);
        }
        Ok(())
    }

    fn quarantine(&mut self, uid: &str, reason: &str, files: &[PathBuf]) -> Result<(), QueueError> {
        let dir = self.config.state.quarantine().join(uid_hash(uid));
        if let Err(e) = write_quarantine(&dir, uid, reason, files) {
            tracing::error!("{}: cannot write the quarantine record: {e}", dir.display());
        }
        let state = self.journal.quarantine(uid, reason, &dir)?;
        self.log_state(uid, state, reason);
        if state == StudyState::Quarantined {
            self.reporter.study_finished(uid, "quarantined", Some(&dir));
            self.reporter.files("refused", files.len() as u64);
            let created = self.journal.get(uid).ok().flatten().map(|e| e.created);
            self.result(uid, "quarantined", created, None);
        }
        self.last_quarantine_scan = None;
        Ok(())
    }

    /// A file no study can be named from: a quarantine record of its own,
    /// `quarantine/file-<hash of path, size and time>/reason.txt`; the file
    /// is left where it is (nothing of the input is lost).
    fn quarantine_file(&mut self, path: &Path, reason: &str) {
        let roots = self.watch_roots();
        let label = file_label(path, &roots);
        let reason = self.redact("", &[path.to_path_buf()], reason);
        let meta = std::fs::symlink_metadata(path).ok();
        let stamp = meta.as_ref().and_then(|m| m.modified().ok()).map(|t| format!("{t:?}")).unwrap_or_default();
        let key = format!("{}\0{}\0{stamp}", path.display(), meta.map(|m| m.len()).unwrap_or(0));
        let dir = self.config.state.quarantine().join(format!("file-{}", uid_hash(&key)));
        if dir.exists() {
            return;
        }
        self.reporter.files("refused", 1);
        let text = format!(
            "file: {label}\nquarantined_at: {}\nreason: {reason}\n\
             No study could be named from this file (its header cannot be read); it was left in place.\n\
             Its full path is in files.txt (readable by root only).\n",
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        );
        let written = std::fs::create_dir_all(&dir).and_then(|()| {
            crate::export::write_atomic(&dir.join("reason.txt"), |f| std::io::Write::write_all(f, text.as_bytes()))?;
            write_private(&dir.join("files.txt"), &format!("{}\n", path.display()))
        });
        match written {
            Ok(()) => {
                tracing::warn!(record = %dir.display(), "unreadable file quarantined in {}: {reason}", dir.display())
            }
            Err(e) => tracing::error!("{}: cannot write the quarantine record: {e}", dir.display()),
        }
    }

    fn check_disk(&mut self) {
        if self.last_disk_check.is_some_and(|t| t.elapsed() < Duration::from_secs(2)) {
            return;
        }
        self.last_disk_check = Some(Instant::now());
        let min = self.config.disk.min_free_mb.saturating_mul(1024 * 1024);
        let mut ok = true;
        for (role, path) in [("output", &self.config.output.folder), ("state", &self.config.state.folder)] {
            match crate::sys::free_bytes(path) {
                Ok(b) => {
                    self.reporter.disk_free(role, path, b);
                    if b < min {
                        ok = false;
                    }
                }
                Err(e) => tracing::warn!("{}: cannot read free space: {e}", path.display()),
            }
        }
        // The export folders fill too (the scanner writes there; retention may
        // empty them): reported, not part of the intake guard.
        for path in &self.config.watch.folders {
            if let Ok(b) = crate::sys::free_bytes(path) {
                self.reporter.disk_free("export", path, b);
            }
        }
        if ok != self.disk_ok {
            if ok {
                tracing::info!("free space is above {} MiB again: intake resumes", self.config.disk.min_free_mb);
            } else {
                tracing::warn!(
                    "free space under {} MiB on the output or state folder: no new study is started",
                    self.config.disk.min_free_mb
                );
            }
            self.disk_ok = ok;
            self.reporter.set_ready(true, self.armed, ok);
        }
        let armed = self.watcher.armed();
        if armed != self.armed {
            if armed {
                tracing::info!("the export folders are readable again");
            } else {
                tracing::warn!("an export folder is not readable (unmounted share?)");
            }
            self.armed = armed;
            self.reporter.set_ready(true, armed, self.disk_ok);
        }
    }

    fn retention(&mut self) {
        let r = self.config.retention.clone();
        if r.days == 0 || self.last_retention.is_some_and(|t| t.elapsed() < Duration::from_secs(600)) {
            return;
        }
        self.last_retention = Some(Instant::now());
        if let Err(e) = retention_pass(&self.journal, &r, queue::now()) {
            tracing::error!("retention: {e}");
        }
    }

    /// Starts ready studies: one on the GPU and one loading ahead.
    fn schedule(&mut self) -> Result<(), ServiceError> {
        if self.paused || !self.disk_ok {
            return Ok(());
        }
        while self.in_flight.len() < 1 + self.config.queue.gpu_jobs as usize {
            let Some(e) = self.journal.next_ready(queue::now(), &self.in_flight)? else { break };
            let force_cpu =
                self.config.model.cpu_fallback_on_oom && e.last_error.as_deref().is_some_and(is_out_of_memory);
            let entry = self.journal.start(&e.uid)?;
            self.log_state(&e.uid, StudyState::Running, &format!("attempt {}", entry.attempts));
            let job = LoadJob {
                uid: e.uid.clone(),
                files: entry.files.iter().map(|f| f.path.clone()).collect(),
                out: self.config.output.folder.clone(),
                force_cpu,
                strict_geometry: self.config.ingest.strict_geometry,
                roots: self.watch_roots(),
            };
            let sent = self.loads.as_ref().is_some_and(|tx| tx.send(job).is_ok());
            if !sent {
                return Err(ServiceError::Internal("the loader ended".into()));
            }
            self.in_flight.push(e.uid.clone());
            self.batch_started += 1;
            if self.current.is_none() {
                self.set_current(Some(e.uid.clone()));
            }
        }
        Ok(())
    }

    fn set_current(&mut self, uid: Option<String>) {
        self.reporter.set_current_study(uid.as_deref());
        self.current = uid;
        self.stage.clear();
    }

    fn status_line(&self) {
        if let Some(uid) = &self.current {
            let waiting = self.journal.count(StudyState::Ready).unwrap_or(0) as usize;
            let started = self.batch_started.max(1);
            let position = started.saturating_sub(self.in_flight.len().saturating_sub(1)).max(1);
            let stage = if self.stage.is_empty() { "starting" } else { &self.stage };
            self.reporter.set_status_line(&format!(
                "study {position} of {} ({}): {stage}",
                started + waiting,
                uid_hash(uid)
            ));
        }
    }

    fn message(&mut self, m: Msg) -> Result<(), ServiceError> {
        match m {
            Msg::Model(_) => {}
            Msg::PostFallback => self.reporter.postprocess_fallback(),
            Msg::Stage { uid, stage } => {
                self.stages.insert(uid.clone(), stage.clone());
                // The loader reports the study it reads ahead; the status names the GPU's.
                if self.current.as_deref() == Some(uid.as_str()) {
                    self.stage = stage;
                    self.status_line();
                }
            }
            Msg::Finished(o) => self.finished(o)?,
        }
        Ok(())
    }

    fn finished(&mut self, o: Outcome) -> Result<(), ServiceError> {
        self.in_flight.retain(|u| u != &o.uid);
        self.stages.remove(&o.uid);
        self.last_page = None;
        let uid = o.uid;
        match o.result {
            Ok((dir, t)) => {
                for (stage, s) in t.by_stage() {
                    self.reporter.observe_stage(stage, s);
                }
                let entry = self.journal.get(&uid)?;
                let state = self.journal.done(&uid, &dir)?;
                self.log_state(&uid, state, &format!("outputs in {}", self.config.output.folder.display()));
                self.reporter.study_finished(&uid, "done", Some(&dir));
                self.result(&uid, "done", entry.as_ref().map(|e| e.created), Some(&t));
                if let Some(e) = entry {
                    self.reporter.files("ingested", e.files.len() as u64);
                    self.reporter.study_latency(queue::now() - e.created);
                    let files: Vec<PathBuf> = e.files.into_iter().map(|f| f.path).collect();
                    self.clear_quarantine_of_done(&uid, &files);
                } else {
                    self.clear_quarantine_of_done(&uid, &[]);
                }
            }
            Err((ErrorClass::BadInput, reason)) => {
                let files: Vec<PathBuf> =
                    self.journal.get(&uid)?.map(|e| e.files.into_iter().map(|f| f.path).collect()).unwrap_or_default();
                let reason = self.with_unreadable_neighbours(&files, reason);
                let reason = self.redact(&uid, &files, &reason);
                self.quarantine(&uid, &reason, &files)?;
            }
            Err((_, reason)) => {
                let files: Vec<PathBuf> =
                    self.journal.get(&uid)?.map(|e| e.files.into_iter().map(|f| f.path).collect()).unwrap_or_default();
                let reason = self.redact(&uid, &files, &reason);
                let attempts = self.journal.get(&uid)?.map(|e| e.attempts).unwrap_or(1);
                let q = &self.config.queue;
                let retry = (attempts < q.max_attempts)
                    .then(|| q.backoff_seconds * 2f64.powi(attempts.saturating_sub(1).min(20) as i32));
                let state = self.journal.failed(&uid, &reason, retry)?;
                match retry {
                    Some(s) if state == StudyState::Ready => {
                        self.reporter.retried();
                        self.log_state(&uid, state, &format!("attempt {attempts} failed, retry in {s:.0} s: {reason}"))
                    }
                    _ => {
                        self.log_state(&uid, state, &reason);
                        if state == StudyState::Failed {
                            self.reporter.study_finished(&uid, "failed", None);
                            let created = self.journal.get(&uid).ok().flatten().map(|e| e.created);
                            self.result(&uid, "failed", created, None);
                        }
                    }
                }
            }
        }
        if self.current.as_deref() == Some(uid.as_str()) {
            let next = self.in_flight.first().cloned();
            self.set_current(next);
            self.status_line();
        }
        Ok(())
    }

    fn command(&mut self, c: Command) {
        let what = match &c {
            Command::Pause => "pause".to_string(),
            Command::Resume => "resume".to_string(),
            Command::Reprocess(uid) => format!("reprocess study {}", uid_hash(uid)),
            Command::Resend(uid) => format!("resend the results of study {}", uid_hash(uid)),
            Command::Enqueue(p) => {
                format!("enqueue {}", file_label(p, &self.watch_roots()).replacen("file", "folder", 1))
            }
            Command::ReloadConfig => "reload".to_string(),
            // Record names are hashes, never paths (anything else is not shown).
            Command::RetryQuarantine(name) | Command::ClearQuarantine(name) => {
                let verb = if matches!(c, Command::RetryQuarantine(_)) { "retry" } else { "clear" };
                let name = if quarantine::is_record_name(name) { name.as_str() } else { "(not a record name)" };
                format!("{verb} quarantine record {name}")
            }
        };
        tracing::info!("command: {what}");
        match c {
            Command::Pause => self.paused = true,
            Command::Resume => self.paused = false,
            Command::Reprocess(uid) => match self.journal.reprocess(&uid) {
                Ok(true) => self.log_state(&uid, StudyState::Ready, "reprocess requested"),
                Ok(false) => {
                    let hash = uid_hash(&uid);
                    tracing::warn!(study = %hash, "reprocess of study {hash}: unknown or running study")
                }
                Err(e) => tracing::error!("{e}"),
            },
            Command::Enqueue(p) => {
                if p.is_absolute() && p.is_dir() {
                    self.watcher.enqueue(&p);
                } else {
                    let label = file_label(&p, &self.watch_roots()).replacen("file", "folder", 1);
                    tracing::warn!("enqueue {label}: not an absolute path to a folder");
                }
            }
            Command::ReloadConfig => self.reload(),
            Command::RetryQuarantine(name) => self.retry_quarantine(&name),
            Command::ClearQuarantine(name) => self.clear_quarantine(&name),
            Command::Resend(uid) => crate::dicom_node::resend_logged(&self.config, &uid),
        }
        self.last_quarantine_scan = None;
        self.last_page = None;
    }

    /// D-Bus RetryQuarantine: a study runs again (its record goes once it is
    /// done); a file's record goes and its folder is looked at again.
    fn retry_quarantine(&mut self, name: &str) {
        let folder = self.config.state.quarantine();
        let Some(record) = quarantine::read_record(&folder.join(name)).filter(|_| folder.join(name).is_dir()) else {
            tracing::warn!(record = %name, "quarantine retry: no record {name}");
            return;
        };
        match record.kind {
            quarantine::RecordKind::Study => match self.journal.by_hash(name) {
                Ok(Some(e)) => match self.journal.reprocess(&e.uid) {
                    Ok(true) => self.log_state(&e.uid, StudyState::Ready, "retry from quarantine requested"),
                    Ok(false) => {
                        tracing::warn!(record = %name, "quarantine retry: study {name} is running or has no files")
                    }
                    Err(e) => tracing::error!("{e}"),
                },
                Ok(None) => tracing::warn!(record = %name, "quarantine retry: study {name} is not in the journal"),
                Err(e) => tracing::error!("{e}"),
            },
            quarantine::RecordKind::File => {
                if let Err(e) = quarantine::remove(&folder, name) {
                    tracing::error!(record = %name, "quarantine retry: cannot remove record {name}: {e}");
                    return;
                }
                let parents: std::collections::BTreeSet<PathBuf> =
                    record.files.iter().filter_map(|f| f.parent().map(Path::to_path_buf)).collect();
                for p in parents.iter().filter(|p| p.is_dir()) {
                    self.watcher.enqueue(p);
                }
                tracing::info!(record = %name, "quarantine record {name} removed: its file is read again");
            }
        }
    }

    /// D-Bus ClearQuarantine: the record goes; a study leaves the quarantine
    /// count as failed (Reprocess still runs it).
    fn clear_quarantine(&mut self, name: &str) {
        let folder = self.config.state.quarantine();
        if !name.starts_with("file-")
            && let Ok(Some(e)) = self.journal.by_hash(name)
        {
            match self.journal.dismiss(&e.uid, "quarantine cleared by an operator") {
                Ok(true) => self.log_state(&e.uid, StudyState::Failed, "quarantine cleared by an operator"),
                Ok(false) => {}
                Err(e) => tracing::error!("{e}"),
            }
        }
        match quarantine::remove(&folder, name) {
            Ok(true) => tracing::info!(record = %name, "quarantine record {name} cleared by an operator"),
            Ok(false) => tracing::warn!(record = %name, "quarantine clear: no record {name}"),
            Err(e) => tracing::error!(record = %name, "quarantine clear: cannot remove record {name}: {e}"),
        }
    }

    fn reload(&mut self) {
        let new = match config::load(&self.config_path).map(crate::dicom_node::with_spool) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("reload: the configuration has errors, keeping the running one:\n{e}");
                self.reporter.config_reloaded(false);
                return;
            }
        };
        let old = &self.config;
        if new.model != old.model || new.state != old.state || new.gpu != old.gpu {
            tracing::warn!("reload: [model], [state] and [gpu] changes take effect at the next restart");
        }
        if new.metrics != old.metrics || new.dbus != old.dbus {
            tracing::warn!("reload: [metrics] and [dbus] changes take effect at the next restart");
        }
        if new.dicom != old.dicom || new.destination != old.destination {
            tracing::warn!("reload: [dicom] and [[destination]] changes take effect at the next restart");
        }
        let mut applied = new.clone();
        applied.model = old.model.clone();
        applied.state = old.state.clone();
        applied.gpu = old.gpu.clone();
        applied.metrics = old.metrics.clone();
        applied.dbus = old.dbus.clone();
        applied.dicom = old.dicom.clone();
        applied.destination = old.destination.clone();
        if applied.watch != old.watch {
            self.watcher =
                Watcher::new(WatchSettings { config: applied.watch.clone(), required: self.required.clone() });
        }
        if applied.output != old.output
            && let Err(e) = std::fs::create_dir_all(&applied.output.folder)
        {
            tracing::error!("reload: {}: {e}; keeping the previous output folder", applied.output.folder.display());
            applied.output = old.output.clone();
        }
        self.config = applied;
        self.last_disk_check = None;
        self.last_retention = None;
        self.check_disk();
        self.reporter.config_reloaded(true);
        tracing::info!("configuration reloaded");
    }
}

/// Deletes or moves the inputs of studies done more than `r.days` before
/// `now` (moved ones to `move_to/<study hash>/`); returns how many studies were handled.
pub fn retention_pass(journal: &Journal, r: &config::RetentionConfig, now: f64) -> Result<usize, QueueError> {
    if r.days == 0 {
        return Ok(0);
    }
    let due = journal.due_for_retention(now - f64::from(r.days) * 86400.0)?;
    let mut handled = 0;
    for e in due {
        let mut all_ok = true;
        for f in &e.files {
            let res = match (r.action, &r.move_to) {
                (RetentionAction::Move, Some(to)) => {
                    let dir = to.join(&e.hash);
                    let dest = dir.join(f.path.file_name().unwrap_or_default());
                    std::fs::create_dir_all(&dir)
                        .and_then(|_| std::fs::rename(&f.path, &dest).or_else(|_| move_by_copy(&f.path, &dest)))
                }
                _ => std::fs::remove_file(&f.path),
            };
            match res {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => {
                    all_ok = false;
                    tracing::warn!("study {}: retention of one input file failed: {err}", e.hash);
                }
            }
        }
        if all_ok {
            journal.mark_retained(&e.uid)?;
            handled += 1;
            let what = match r.action {
                RetentionAction::Delete => "deleted",
                RetentionAction::Move => "moved",
            };
            tracing::info!(study = %e.hash, "study {}: inputs {what} after {} days", e.hash, r.days);
        }
    }
    Ok(handled)
}

/// Whether an error message is a GPU (or host) out-of-memory: CUDA's
/// "out of memory", ONNX Runtime's arena "Failed to allocate memory".
pub fn is_out_of_memory(message: &str) -> bool {
    let m = message.to_lowercase();
    m.contains("out of memory") || m.contains("failed to allocate memory") || m.contains("cudaerrormemoryallocation")
}

/// Copies a file then removes the original (a move across file systems).
fn move_by_copy(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::copy(from, to)?;
    std::fs::File::open(to)?.sync_all()?;
    std::fs::remove_file(from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::FileSig;

    fn done_study(j: &Journal, dir: &Path, uid: &str) -> Vec<PathBuf> {
        let paths: Vec<PathBuf> = (0..3).map(|i| dir.join(format!("{uid}-{i}.dcm"))).collect();
        for p in &paths {
            std::fs::write(p, b"x").unwrap();
        }
        let sigs: Vec<FileSig> = paths.iter().map(|p| FileSig { path: p.clone(), size: 1, mtime_ns: 1 }).collect();
        j.observe(uid, &sigs, uid).unwrap();
        j.mark_ready(uid, &sigs, uid).unwrap();
        j.start(uid).unwrap();
        j.done(uid, Path::new("/out")).unwrap();
        paths
    }

    #[test]
    fn unreadable_files_are_named_before_the_error_they_caused() {
        let r =
            unreadable_first(3, &["a: truncated".into(), "b: truncated".into(), "c: truncated".into()], "spacing gap");
        assert_eq!(
            r,
            "3 files could not be read (a: truncated; b: truncated; c: truncated); without them: spacing gap"
        );
        let r = unreadable_first(7, &["a".into()], "no PET series");
        assert!(r.starts_with("7 files could not be read (first 1: a); without them: "), "{r}");
    }

    #[test]
    fn retention_deletes_or_moves_after_the_days() {
        let d = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(&d.path().join("j.sqlite")).unwrap();
        let a = done_study(&j, d.path(), "1.1");
        let mut r = config::RetentionConfig { days: 2, ..Default::default() };
        assert_eq!(retention_pass(&j, &r, queue::now() + 86400.0).unwrap(), 0, "not yet");
        assert!(a.iter().all(|p| p.exists()));
        assert_eq!(retention_pass(&j, &r, queue::now() + 3.0 * 86400.0).unwrap(), 1);
        assert!(a.iter().all(|p| !p.exists()));
        assert!(j.get("1.1").unwrap().unwrap().retained);
        // Handled once; files gone from a done study do not make it run again.
        assert_eq!(retention_pass(&j, &r, queue::now() + 3.0 * 86400.0).unwrap(), 0);
        let b = done_study(&j, d.path(), "2.2");
        r.action = RetentionAction::Move;
        r.move_to = Some(d.path().join("archive"));
        assert_eq!(retention_pass(&j, &r, queue::now() + 3.0 * 86400.0).unwrap(), 1);
        let moved = d.path().join("archive").join(uid_hash("2.2"));
        for p in &b {
            assert!(!p.exists());
            assert!(moved.join(p.file_name().unwrap()).exists());
        }
        r.days = 0;
        assert_eq!(retention_pass(&j, &r, f64::INFINITY).unwrap(), 0, "off");
    }

    #[test]
    fn cleanup_restores_an_interrupted_swap_and_removes_dead_staging() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path();
        // A process id that is not running (pid_max is below 2^22).
        let dead = 4_194_999u32;
        std::fs::create_dir_all(out.join(format!(".staging-1.2-{dead}"))).unwrap();
        std::fs::create_dir_all(out.join(format!(".replaced-3.4-{dead}"))).unwrap();
        std::fs::write(out.join(format!(".replaced-3.4-{dead}")).join("report.json"), b"{}").unwrap();
        std::fs::create_dir_all(out.join("5.6")).unwrap();
        std::fs::create_dir_all(out.join(format!(".replaced-5.6-{dead}"))).unwrap();
        clean_output_folder(out);
        let mut names: Vec<String> =
            std::fs::read_dir(out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        assert_eq!(names, vec!["3.4".to_string(), "5.6".to_string()]);
        assert!(out.join("3.4/report.json").exists(), "the previous output is put back");
    }
}

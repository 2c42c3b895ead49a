//! Observability of the daemon: Prometheus metrics (`/metrics`, `/healthz`,
//! `/readyz`), systemd notifications (READY, STATUS, WATCHDOG, STOPPING), the
//! D-Bus interface `org.edgeseg.Daemon1` and `edgeseg status`.
//!
//! The service loop owns one [`Observer`] (cheap to clone) and tells it what
//! happens; the HTTP server ([`serve_http`]) and the D-Bus service
//! ([`start_dbus`]) read from it on their own threads.
//!
//! Invariants:
//! - No patient data in any metric label, not even a study UID (a UID is
//!   quasi-identifying): metrics are counts, durations and sizes. The D-Bus
//!   properties and the StudyFinished signal do carry the study UID: the bus
//!   policy restricts them to the `edgeseg` group on the box itself.
//! - Observing never blocks the pipeline: every [`Observer`] method takes a
//!   short lock or an atomic, D-Bus events go through a bounded queue that
//!   drops (and counts) rather than waits, NVML is read on scrape on the HTTP
//!   thread, and an sd_notify datagram has a one-second send timeout.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

mod dbus;
mod gpu;
pub mod http;
pub mod logging;
mod metrics;
pub mod notify;
pub mod page;
pub mod status;

pub use dbus::{BusKind, DbusHandle, is_dicom_uid, start_dbus};
pub use http::{HttpServer, serve_http};
pub use notify::{Notifier, watchdog_interval};
pub use page::{QueueItem, ResultItem};

/// The D-Bus well-known name of the daemon.
pub const DBUS_NAME: &str = "org.edgeseg.Daemon1";
/// The D-Bus object path of the daemon.
pub const DBUS_PATH: &str = "/org/edgeseg/Daemon1";
/// The D-Bus interface of the daemon.
pub const DBUS_INTERFACE: &str = "org.edgeseg.Daemon1";

/// The pipeline stages a duration is observed for (the `stage` label).
pub const STAGES: [&str; 6] = ["load", "preprocess", "inference", "export", "postprocess", "write"];
/// The outcomes of a study (the `outcome` label of `edgeseg_studies_total`).
pub const OUTCOMES: [&str; 3] =
    [StudyOutcome::Done.as_str(), StudyOutcome::Failed.as_str(), StudyOutcome::Quarantined.as_str()];
/// The folder roles disk space is reported for (the `folder` label).
pub const FOLDER_ROLES: [&str; 4] =
    [FolderRole::Export.as_str(), FolderRole::Output.as_str(), FolderRole::State.as_str(), FolderRole::Work.as_str()];

/// How a study ended (one of [`OUTCOMES`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StudyOutcome {
    /// Its outputs were written.
    Done,
    /// It failed for good (its retries spent).
    Failed,
    /// Its input was refused (a quarantine record says why).
    Quarantined,
}

impl StudyOutcome {
    /// `done`, `failed` or `quarantined`: the metric label, the D-Bus
    /// `StudyFinished` outcome and the status page's word.
    pub const fn as_str(self) -> &'static str {
        match self {
            StudyOutcome::Done => "done",
            StudyOutcome::Failed => "failed",
            StudyOutcome::Quarantined => "quarantined",
        }
    }
}

/// What became of input files (one of [`metrics::FILE_RESULTS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileResult {
    /// They went into a study's result.
    Ingested,
    /// They were refused (quarantined).
    Refused,
}

impl FileResult {
    /// `ingested` or `refused`.
    pub const fn as_str(self) -> &'static str {
        match self {
            FileResult::Ingested => "ingested",
            FileResult::Refused => "refused",
        }
    }
}

/// A folder whose free space is reported (one of [`FOLDER_ROLES`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FolderRole {
    /// A watched export folder.
    Export,
    /// The output folder.
    Output,
    /// The state folder (journal, quarantine).
    State,
    /// A work folder.
    Work,
}

impl FolderRole {
    /// `export`, `output`, `state` or `work`.
    pub const fn as_str(self) -> &'static str {
        match self {
            FolderRole::Export => "export",
            FolderRole::Output => "output",
            FolderRole::State => "state",
            FolderRole::Work => "work",
        }
    }
}

/// Errors of the observability services.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    /// The metrics HTTP server could not listen.
    #[error("metrics server cannot listen on {addr}: {reason}")]
    HttpBind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// Why (address in use, permission ...).
        reason: String,
    },
    /// A D-Bus connection, name request or call failed.
    #[error("D-Bus, {context}")]
    Dbus {
        /// What was being done.
        context: String,
        /// The zbus error.
        #[source]
        source: zbus::Error,
    },
    /// The daemon is not on the bus (`edgeseg status` when it is not running).
    #[error("the edgeseg daemon is not running on the {bus} (no owner of the name {DBUS_NAME})")]
    NotRunning {
        /// Which bus was asked.
        bus: String,
    },
    /// A property read back from the daemon has an unexpected type.
    #[error("D-Bus property {name} of {DBUS_NAME}: {reason}")]
    BadProperty {
        /// The property name.
        name: String,
        /// What was wrong.
        reason: String,
    },
    /// The bus policy refused the call (the caller is not root or in the group it needs).
    #[error("{method}: access denied by the D-Bus policy: this needs root or membership in the {group} group")]
    AccessDenied {
        /// The method called.
        method: String,
        /// The group that may call it.
        group: &'static str,
    },
    /// The daemon refused the call's arguments.
    #[error("{method}: {reason}")]
    Refused {
        /// The method called.
        method: String,
        /// The daemon's answer.
        reason: String,
    },
    /// A thread of the observability services could not be started.
    #[error("cannot start the {what} thread: {source}")]
    Thread {
        /// Which thread.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `NOTIFY_SOCKET` names an address this implementation cannot reach.
    #[error("sd_notify: {0}")]
    Notify(String),
}

/// The daemon's state, as the `edgeseg_daemon_state` state-set gauge, the
/// D-Bus `State` property and `edgeseg status` show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DaemonState {
    /// Loading the model, building engines, arming the watcher.
    Starting,
    /// Waiting for studies.
    Idle,
    /// Processing a study.
    Running,
    /// Paused by an operator (D-Bus Pause()).
    Paused,
    /// Intake stopped: free disk space under the threshold.
    DiskLow,
    /// Shutting down.
    Stopping,
}

impl DaemonState {
    /// All states, in the order the state-set gauge lists them.
    pub const ALL: [DaemonState; 6] = [
        DaemonState::Starting,
        DaemonState::Idle,
        DaemonState::Running,
        DaemonState::Paused,
        DaemonState::DiskLow,
        DaemonState::Stopping,
    ];

    /// The state's name: `starting`, `idle`, `running`, `paused`, `disk_low`, `stopping`.
    pub fn as_str(self) -> &'static str {
        match self {
            DaemonState::Starting => "starting",
            DaemonState::Idle => "idle",
            DaemonState::Running => "running",
            DaemonState::Paused => "paused",
            DaemonState::DiskLow => "disk_low",
            DaemonState::Stopping => "stopping",
        }
    }
}

impl std::fmt::Display for DaemonState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the daemon runs: its build and its model, for `edgeseg_build_info`,
/// `edgeseg_model_info` and the D-Bus properties.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildAndModelInfo {
    /// edgeseg version (`CARGO_PKG_VERSION`).
    pub edgeseg_version: String,
    /// Git revision the binary was built from.
    pub git_rev: String,
    /// Model package name.
    pub model_name: String,
    /// Model package version.
    pub model_version: String,
    /// sha256 of the model package (its manifest).
    pub model_sha256: String,
    /// Execution provider in use: cpu, cuda or tensorrt.
    pub provider: String,
}

impl BuildAndModelInfo {
    /// This binary's version and git revision with the given model.
    pub fn this_build(model_name: &str, model_version: &str, model_sha256: &str, provider: &str) -> Self {
        BuildAndModelInfo {
            edgeseg_version: env!("CARGO_PKG_VERSION").to_string(),
            git_rev: env!("EDGESEG_GIT_REV").to_string(),
            model_name: model_name.to_string(),
            model_version: model_version.to_string(),
            model_sha256: model_sha256.to_string(),
            provider: provider.to_string(),
        }
    }
}

/// What the model's engines and the post-processing kernels run on, as
/// built (not as configured): the D-Bus `Provider`, `Folds` and
/// `PostprocessBackend` properties and the `_info` metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineSummary {
    /// The execution provider: one name (`cpu`, `cuda`, `tensorrt`) when
    /// every fold got it, else the folds' distinct providers in fold order
    /// joined by `+` (`tensorrt+cpu`).
    pub provider: String,
    /// Per fold: (fold, provider, precision `fp32`, `fp16` or `bf16`); empty until
    /// the model is loaded.
    pub folds: Vec<(u32, String, String)>,
    /// Where post-processing runs: `cpu` or `cuda`; empty until the model is loaded.
    pub postprocess_backend: String,
}

impl EngineSummary {
    /// The summary of these folds' engines and this post-processing backend.
    pub fn of(folds: &[(u32, &str, &str)], postprocess_backend: &str) -> Self {
        let mut distinct: Vec<&str> = Vec::new();
        for (_, p, _) in folds {
            if !distinct.contains(p) {
                distinct.push(p);
            }
        }
        EngineSummary {
            provider: distinct.join("+"),
            folds: folds.iter().map(|(f, p, q)| (*f, p.to_string(), q.to_string())).collect(),
            postprocess_backend: postprocess_backend.to_string(),
        }
    }
}

/// A command from an operator over D-Bus, for the service loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Stop taking new studies (the current one finishes).
    Pause,
    /// Take new studies again.
    Resume,
    /// Run a study again from its input (by StudyInstanceUID).
    Reprocess(String),
    /// Queue a folder of DICOM files (an absolute path).
    Enqueue(PathBuf),
    /// Read the configuration file again.
    ReloadConfig,
    /// Run a quarantined study again, or look at a quarantined file again
    /// (by record name: study hash or `file-<hash>`).
    RetryQuarantine(String),
    /// Remove a quarantine record (a study's leaves the quarantine count as
    /// failed; Reprocess still runs it).
    ClearQuarantine(String),
    /// Queue a done study's results again for every destination (by StudyInstanceUID).
    Resend(String),
}

/// What `/readyz` checks. The daemon is ready when all hold and it is not
/// stopping.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Readiness {
    /// The model package is loaded and every fold's engine is built.
    pub model_loaded: bool,
    /// The export folders are readable and the watcher is armed.
    pub watch_armed: bool,
    /// Free space on the output and state folders is above the threshold.
    pub disk_ok: bool,
}

impl Readiness {
    /// What is missing, one short line each (empty when ready).
    pub fn missing(&self, state: DaemonState) -> Vec<&'static str> {
        let mut m = Vec::new();
        if !self.model_loaded {
            m.push("model not loaded (engines not built)");
        }
        if !self.watch_armed {
            m.push("watch folder not armed");
        }
        if !self.disk_ok {
            m.push("disk free space below threshold");
        }
        if state == DaemonState::Stopping {
            m.push("daemon stopping");
        }
        m
    }
}

/// The values the D-Bus properties and `/readyz` read.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    pub state: DaemonState,
    pub status: String,
    pub current_study: Option<String>,
    pub queue_depth: u64,
    pub quarantined: u64,
    pub ready: Readiness,
    /// The memory budget, bytes (0 until the daemon has set it).
    pub memory_limit: u64,
}

/// An event for the D-Bus thread.
#[derive(Debug)]
pub(crate) enum DbusEvent {
    State,
    Status,
    QueueDepth,
    Quarantined,
    CurrentStudy,
    Engines,
    MemoryLimit,
    StudyFinished { study_uid: String, outcome: String, output_dir: String },
    Shutdown,
}

struct Inner {
    info: BuildAndModelInfo,
    engines: Mutex<EngineSummary>,
    metrics: metrics::Metrics,
    snap: Mutex<Snapshot>,
    notifier: Notifier,
    gpu: Mutex<gpu::GpuProbe>,
    dbus: Mutex<Option<SyncSender<DbusEvent>>>,
    page: Mutex<page::PageState>,
    delivery: Mutex<Vec<crate::dicom_node::outbox::DestinationCounts>>,
}

/// The daemon's observability state: metrics, readiness, systemd and D-Bus
/// notifications. Clone it freely (an `Arc` inside); every method is quick and
/// never waits on a scrape, the bus or systemd for long.
#[derive(Clone)]
pub struct Observer {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn now_seconds() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

impl Observer {
    /// An observer for this build and model; sd_notify goes to `NOTIFY_SOCKET`
    /// when set (under systemd), nowhere otherwise.
    pub fn new(info: BuildAndModelInfo) -> Self {
        Self::with_notifier(info, Notifier::from_env())
    }

    /// An observer whose sd_notify messages go through `notifier` (tests, or a
    /// caller that read `NOTIFY_SOCKET` itself).
    pub fn with_notifier(info: BuildAndModelInfo, notifier: Notifier) -> Self {
        let metrics = metrics::Metrics::new(&info, now_seconds());
        let snap = Snapshot {
            state: DaemonState::Starting,
            status: "starting".to_string(),
            current_study: None,
            queue_depth: 0,
            quarantined: 0,
            ready: Readiness::default(),
            memory_limit: 0,
        };
        metrics.set_state(snap.state);
        metrics.set_ready(&snap.ready, snap.state);
        Observer {
            inner: Arc::new(Inner {
                engines: Mutex::new(EngineSummary { provider: info.provider.clone(), ..EngineSummary::default() }),
                info,
                metrics,
                snap: Mutex::new(snap),
                notifier,
                gpu: Mutex::new(gpu::GpuProbe::new()),
                dbus: Mutex::new(None),
                page: Mutex::new(page::PageState::default()),
                delivery: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The build and model this observer reports.
    pub fn info(&self) -> &BuildAndModelInfo {
        &self.inner.info
    }

    /// What the engines run on (the provider given at creation until
    /// [`Observer::set_engines`] is called).
    pub fn engines(&self) -> EngineSummary {
        lock(&self.inner.engines).clone()
    }

    /// The model is loaded: the engine each fold actually got (fold,
    /// provider, precision) and where post-processing runs. Updates the D-Bus
    /// `Provider`, `Folds` and `PostprocessBackend` properties and the
    /// `edgeseg_model_info`, `edgeseg_fold_engine_info` and
    /// `edgeseg_postprocess_backend_info` metrics.
    pub fn set_engines(&self, folds: &[(u32, &str, &str)], postprocess_backend: &str) {
        let summary = EngineSummary::of(folds, postprocess_backend);
        self.inner.metrics.set_engines(&self.inner.info, &summary);
        let changed = {
            let mut e = lock(&self.inner.engines);
            let changed = *e != summary;
            *e = summary;
            changed
        };
        if changed {
            self.dbus_event(DbusEvent::Engines);
        }
    }

    /// A CUDA post-processing step failed and the CPU twins did it for one
    /// study (`edgeseg_postprocess_cpu_fallbacks_total`).
    pub fn postprocess_fallback(&self) {
        self.inner.metrics.postprocess_fallback();
    }

    /// The DICOM node's outbox per destination (`edgeseg_delivery_*`, D-Bus `Delivery`).
    pub fn delivery(&self, d: &[crate::dicom_node::outbox::DestinationCounts]) {
        self.inner.metrics.delivery(d);
        *lock(&self.inner.delivery) = d.to_vec();
    }

    /// The outbox figures last reported.
    pub fn delivery_counts(&self) -> Vec<crate::dicom_node::outbox::DestinationCounts> {
        lock(&self.inner.delivery).clone()
    }

    /// The daemon's state (gauge, D-Bus `State`, readiness when stopping).
    pub fn set_state(&self, s: DaemonState) {
        let changed = {
            let mut snap = lock(&self.inner.snap);
            let changed = snap.state != s;
            snap.state = s;
            self.inner.metrics.set_state(s);
            self.inner.metrics.set_ready(&snap.ready, s);
            changed
        };
        if changed {
            tracing::info!(state = s.as_str(), "daemon state: {}", s.as_str());
            self.dbus_event(DbusEvent::State);
        }
    }

    /// The human status line: sent to systemd as `STATUS=` (when it changed)
    /// and shown as the D-Bus `Status` property ("idle", "study 3 of 5:
    /// inference fold 2/5"). The service loop calls it on each state change
    /// ([`Observer::set_state`] does not write STATUS= itself). Never put
    /// patient data in it.
    pub fn set_status_line(&self, line: &str) {
        let line = notify::sanitize_status(line);
        let changed = {
            let mut snap = lock(&self.inner.snap);
            let changed = snap.status != line;
            snap.status.clone_from(&line);
            changed
        };
        if changed {
            self.inner.notifier.status(&line);
            self.dbus_event(DbusEvent::Status);
        }
    }

    /// A study left the pipeline: counts it by outcome (`done`, `failed`,
    /// `quarantined`; anything else is counted as `failed` and logged), sets
    /// the last-success time on `done`, and emits the D-Bus StudyFinished signal.
    pub fn study_finished(&self, study_uid: &str, outcome: &str, output_dir: Option<&Path>) {
        let label = if OUTCOMES.contains(&outcome) {
            outcome
        } else {
            tracing::warn!(outcome, "unknown study outcome counted as failed");
            "failed"
        };
        self.inner.metrics.study_finished(label, now_seconds());
        self.dbus_event(DbusEvent::StudyFinished {
            study_uid: study_uid.to_string(),
            outcome: label.to_string(),
            output_dir: output_dir.map(|p| p.to_string_lossy().into_owned()).unwrap_or_default(),
        });
    }

    /// How long a stage of one study took. `stage` is one of [`STAGES`];
    /// others are ignored (logged), so the label set stays fixed.
    pub fn observe_stage(&self, stage: &str, seconds: f64) {
        if !STAGES.contains(&stage) {
            tracing::warn!(stage, "unknown stage not observed");
            return;
        }
        if !seconds.is_finite() || seconds < 0.0 {
            tracing::warn!(stage, seconds, "invalid stage duration not observed");
            return;
        }
        self.inner.metrics.observe_stage(stage, seconds);
    }

    /// The time of the last study done (seconds since the Unix epoch), for the
    /// service loop to carry it over a restart from its journal; later
    /// `study_finished(.., "done", ..)` calls move it on.
    pub fn set_last_success(&self, unix_seconds: f64) {
        if unix_seconds.is_finite() && unix_seconds >= 0.0 {
            self.inner.metrics.set_last_success(unix_seconds);
        }
    }

    /// Every metric family this observer exports, by name, the per-GPU ones
    /// included (absent from a scrape while no GPU is seen).
    pub fn metric_names(&self) -> Vec<String> {
        self.inner.metrics.names()
    }

    /// Studies waiting in the queue (seen or ready, not running).
    pub fn set_queue_depth(&self, n: u64) {
        let changed = {
            let mut snap = lock(&self.inner.snap);
            let changed = snap.queue_depth != n;
            snap.queue_depth = n;
            changed
        };
        self.inner.metrics.set_queue_depth(n);
        if changed {
            self.dbus_event(DbusEvent::QueueDepth);
        }
    }

    /// Studies in quarantine now.
    pub fn set_quarantined(&self, n: u64) {
        let changed = {
            let mut snap = lock(&self.inner.snap);
            let changed = snap.quarantined != n;
            snap.quarantined = n;
            changed
        };
        self.inner.metrics.set_quarantined(n);
        if changed {
            self.dbus_event(DbusEvent::Quarantined);
        }
    }

    /// The study being processed (its UID), for the D-Bus `CurrentStudy`
    /// property only: never a metric label.
    pub fn set_current_study(&self, study: Option<&str>) {
        let changed = {
            let mut snap = lock(&self.inner.snap);
            let new = study.map(str::to_string);
            let changed = snap.current_study != new;
            snap.current_study = new;
            changed
        };
        self.inner.metrics.set_busy(study.is_some());
        if changed {
            self.dbus_event(DbusEvent::CurrentStudy);
        }
    }

    /// The readiness conditions `/readyz` reports.
    pub fn set_ready(&self, model_loaded: bool, watch_armed: bool, disk_ok: bool) {
        let mut snap = lock(&self.inner.snap);
        snap.ready = Readiness { model_loaded, watch_armed, disk_ok };
        self.inner.metrics.set_ready(&snap.ready, snap.state);
    }

    /// Free bytes on a folder's file system. `folder_role` is one of
    /// [`FOLDER_ROLES`] (others are ignored, logged); the path is a label too,
    /// so several export folders stay apart (a configured path, no patient data).
    pub fn disk_free(&self, folder_role: &str, path: &Path, bytes: u64) {
        if !FOLDER_ROLES.contains(&folder_role) {
            tracing::warn!(folder_role, "unknown folder role: disk space not reported");
            return;
        }
        self.inner.metrics.disk_free(folder_role, &path.to_string_lossy(), bytes);
        lock(&self.inner.page).disk.insert((folder_role.to_string(), path.display().to_string()), bytes);
    }

    /// The studies waiting or running, for the status page (by hash, never by UID).
    pub fn set_queue_items(&self, items: Vec<QueueItem>) {
        lock(&self.inner.page).queue = items;
    }

    /// A study finished, for the status page's last results (the newest
    /// [`page::RESULTS_KEPT`] are kept).
    pub fn add_result(&self, item: ResultItem) {
        lock(&self.inner.page).push_result(item);
    }

    /// The quarantine records now: the status page shows their names,
    /// kinds, times and reasons; D-Bus `ShowQuarantine` (admin only) the rest.
    pub fn set_quarantine_records(&self, records: Vec<crate::quarantine::Record>) {
        lock(&self.inner.page).quarantine = records;
    }

    /// The quarantine records as last set.
    pub fn quarantine_records(&self) -> Vec<crate::quarantine::Record> {
        lock(&self.inner.page).quarantine.clone()
    }

    /// The status page (`/`) as HTML: no patient data, studies by hash.
    pub fn render_page(&self) -> String {
        let snap = self.snapshot();
        let engines = self.engines();
        let page = lock(&self.inner.page).clone();
        let info = &self.inner.info;
        let model = format!("{} {} (sha256 {})", info.model_name, info.model_version, info.model_sha256);
        let version = format!("{} ({})", info.edgeseg_version, info.git_rev);
        page::render(&page::PageInput {
            state: snap.state,
            status: &snap.status,
            ready: snap.ready,
            queue_depth: snap.queue_depth,
            quarantined: snap.quarantined,
            model: &model,
            version: &version,
            engines: &engines,
            page: &page,
            now: now_seconds(),
        })
    }

    /// Starts of the daemon recorded in its journal (`edgeseg_starts_total`).
    pub fn set_starts(&self, total: u64) {
        self.inner.metrics.set_starts(total);
    }

    /// Ages (seconds) of the oldest waiting study and of the running one.
    pub fn set_study_ages(&self, oldest_waiting: Option<f64>, running: Option<f64>) {
        self.inner.metrics.set_ages(oldest_waiting.unwrap_or(0.0), running.unwrap_or(0.0));
    }

    /// The memory budget studies are planned within (`edgeseg_memory_limit_bytes`,
    /// the D-Bus `MemoryLimit` property, `edgeseg status`).
    pub fn set_memory_limit(&self, bytes: u64) {
        self.inner.metrics.set_memory(Some(bytes), None);
        lock(&self.inner.snap).memory_limit = bytes;
        self.dbus_event(DbusEvent::MemoryLimit);
    }

    /// The estimated peak of the study being loaded (`edgeseg_study_memory_estimate_bytes`).
    pub fn set_study_memory_estimate(&self, bytes: u64) {
        self.inner.metrics.set_memory(None, Some(bytes));
    }

    /// A configuration reload was applied (`true`) or refused.
    pub fn config_reloaded(&self, ok: bool) {
        self.inner.metrics.config_reloaded(ok, now_seconds());
    }

    /// The execution provider the configuration asks for (`auto`, `cpu`,
    /// `cuda`, `tensorrt`): with `edgeseg_fold_engine_info` it tells a box
    /// meant for the GPU that runs on the CPU.
    pub fn set_provider_requested(&self, provider: &str) {
        self.inner.metrics.set_provider_requested(provider);
    }

    /// A failed attempt will run again.
    pub fn retried(&self) {
        self.inner.metrics.retried();
    }

    /// Input files by result, one of [`metrics::FILE_RESULTS`] (others ignored, logged).
    pub fn files(&self, result: &str, count: u64) {
        if !metrics::FILE_RESULTS.contains(&result) {
            tracing::warn!(result, "unknown file result: not counted");
            return;
        }
        self.inner.metrics.files(result, count);
    }

    /// Seconds from a study's first file seen to its outputs written.
    pub fn study_latency(&self, seconds: f64) {
        self.inner.metrics.study_latency(seconds);
    }

    /// Tells systemd the daemon is ready (`READY=1`). Call it once the model is
    /// loaded, the bus name owned and the watcher armed.
    pub fn notify_ready(&self) {
        let status = lock(&self.inner.snap).status.clone();
        self.inner.notifier.send(&format!("READY=1\nSTATUS={status}"));
    }

    /// Pets the systemd watchdog (`WATCHDOG=1`); call it from the main loop at
    /// half of [`watchdog_interval`].
    pub fn notify_watchdog(&self) {
        self.inner.notifier.send("WATCHDOG=1");
    }

    /// Tells systemd the daemon is shutting down (`STOPPING=1`) and sets the
    /// state to stopping.
    pub fn notify_stopping(&self) {
        self.set_state(DaemonState::Stopping);
        self.inner.notifier.send("STOPPING=1\nSTATUS=stopping");
    }

    /// The readiness conditions and the state (what `/readyz` answers from).
    pub fn readiness(&self) -> (Readiness, DaemonState) {
        let snap = lock(&self.inner.snap);
        (snap.ready, snap.state)
    }

    /// The daemon's state now.
    pub fn state(&self) -> DaemonState {
        lock(&self.inner.snap).state
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        lock(&self.inner.snap).clone()
    }

    /// The metrics in the Prometheus text exposition format (0.0.4). Reads
    /// the GPU through NVML first, when there is one.
    pub fn render(&self) -> String {
        {
            let mut gpu = lock(&self.inner.gpu);
            gpu.refresh(&self.inner.metrics.gpu);
        }
        self.inner.metrics.render()
    }

    /// Connects the D-Bus thread's queue (by [`start_dbus`]).
    pub(crate) fn attach_dbus(&self, tx: Option<SyncSender<DbusEvent>>) {
        *lock(&self.inner.dbus) = tx;
    }

    fn dbus_event(&self, ev: DbusEvent) {
        let guard = lock(&self.inner.dbus);
        if let Some(tx) = guard.as_ref() {
            match tx.try_send(ev) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    self.inner.metrics.dropped_event();
                    tracing::warn!("D-Bus event queue full: event dropped");
                }
                Err(TrySendError::Disconnected(_)) => {}
            }
        }
    }
}

//! The D-Bus service `org.edgeseg.Daemon1` (zbus 6 on its own runtime,
//! zruntime): object `/org/edgeseg/Daemon1`, interface `org.edgeseg.Daemon1`.
//!
//! - Properties: `State` (s), `Status` (s, the STATUS= line), `QueueDepth` (t),
//!   `Quarantined` (t), `CurrentStudy` (s, empty when idle), `ModelName`,
//!   `ModelVersion`, `ModelSha256`, `Version` (s, constant), `Provider` (s),
//!   `Folds` (a(uss): fold, provider, precision) and `PostprocessBackend` (s),
//!   as built once the model is loaded; `MemoryLimit` (t, bytes); `Delivery` (a(stttd): per destination
//!   name, queued, sent, failed, oldest unsent age in seconds; no change signal),
//!   `DeliveryCommitment` (a(stt): per storage commitment destination name,
//!   committed, awaiting commitment; no change signal). PropertiesChanged is emitted when
//!   State, Status, QueueDepth, Quarantined, CurrentStudy or the engines change. docs/dbus.md is the operator's reference.
//! - Methods: `Pause()`, `Resume()`, `Reprocess(s study_uid)`, `Resend(s
//!   study_uid)` (the results again to every `[[destination]]`), `Enqueue(s
//!   path)`, `ReloadConfig()`, `ListQuarantine()`, `ShowQuarantine(s name)`,
//!   `RetryQuarantine(s name)`, `ClearQuarantine(s name)`: each checks its
//!   argument and (those that change something) sends a
//!   [`Command`] to the service loop; `org.freedesktop.DBus.Error.InvalidArgs`
//!   for a malformed UID or a path that is not absolute or does not exist,
//!   `org.freedesktop.DBus.Error.Failed` when the service loop is gone.
//! - Signal: `StudyFinished(s study_uid, s outcome, s output_dir)`.
//!
//! zbus's API is async and zbus 6 has no blocking module: one thread
//! (`edgeseg-dbus`) builds the connection inside `zbus::block_on`, then waits
//! on a bounded queue of [`DbusEvent`]s and emits each inside `zbus::block_on`;
//! in between, zruntime's helper thread serves the method calls. The name is
//! requested without replacement: a second daemon fails to start rather than
//! steal it.

use std::path::Path;
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, Sender, SyncSender, sync_channel};
use std::thread::JoinHandle;

use zbus::connection::Builder;
use zbus::object_server::SignalEmitter;
use zbus::{Connection, interface};

use super::{Command, DBUS_NAME, DBUS_PATH, DbusEvent, ObserveError, Observer, lock};

/// Capacity of the event queue to the D-Bus thread (events beyond it are
/// dropped and counted, never waited for).
const EVENT_QUEUE: usize = 256;

/// Which bus the daemon serves on (config key `dbus.bus`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusKind {
    /// The system bus (the appliance).
    System,
    /// The user's session bus (development).
    Session,
    /// No D-Bus at all.
    Off,
    /// A bus at this address (`unix:path=...`; tests with a private dbus-daemon).
    Address(String),
}

impl BusKind {
    /// Parses the config value: `system`, `session`, `off`, or a D-Bus address
    /// (`unix:path=...`).
    pub fn parse(s: &str) -> Option<BusKind> {
        match s {
            "system" => Some(BusKind::System),
            "session" => Some(BusKind::Session),
            "off" => Some(BusKind::Off),
            a if a.contains(':') => Some(BusKind::Address(a.to_string())),
            _ => None,
        }
    }

    pub(crate) fn builder(&self) -> Option<Builder<'static>> {
        match self {
            BusKind::System => Some(Builder::system()),
            BusKind::Session => Some(Builder::session()),
            BusKind::Off => None,
            BusKind::Address(a) => Some(Builder::address(a.as_str())),
        }
    }
}

impl std::fmt::Display for BusKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BusKind::System => f.write_str("system bus"),
            BusKind::Session => f.write_str("session bus"),
            BusKind::Off => f.write_str("no bus"),
            BusKind::Address(a) => write!(f, "bus at {a}"),
        }
    }
}

/// The running D-Bus service; dropping it releases the name and stops the
/// thread.
pub struct DbusHandle {
    tx: SyncSender<DbusEvent>,
    thread: Option<JoinHandle<()>>,
    obs: Observer,
    unique_name: String,
}

impl DbusHandle {
    /// The connection's unique name on the bus (`:1.42`).
    pub fn unique_name(&self) -> &str {
        &self.unique_name
    }
}

impl Drop for DbusHandle {
    fn drop(&mut self) {
        self.obs.attach_dbus(None);
        if self.tx.send(DbusEvent::Shutdown).is_err() {
            tracing::debug!("D-Bus thread already gone");
        }
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("D-Bus thread panicked");
        }
    }
}

/// Serves `org.edgeseg.Daemon1` on `bus`; method calls become [`Command`]s on
/// `commands`. `Ok(None)` for [`BusKind::Off`]. Fails when the bus cannot be
/// reached or the name is already owned (another daemon runs).
pub fn start_dbus(bus: BusKind, obs: Observer, commands: Sender<Command>) -> Result<Option<DbusHandle>, ObserveError> {
    let Some(builder) = bus.builder() else {
        return Ok(None);
    };
    let (tx, rx) = sync_channel(EVENT_QUEUE);
    let (started_tx, started_rx) = std::sync::mpsc::channel::<Result<String, ObserveError>>();
    let iface = Daemon1 { obs: obs.clone(), commands: Mutex::new(commands) };
    let bus_text = bus.to_string();
    let thread = std::thread::Builder::new()
        .name("edgeseg-dbus".to_string())
        .spawn(move || {
            let built = zbus::block_on(
                builder
                    .name(DBUS_NAME)
                    .allow_name_replacements(false)
                    .replace_existing_names(false)
                    .serve_at(DBUS_PATH, iface)
                    .build(),
            );
            let conn = match built {
                Ok(c) => c,
                Err(source) => {
                    let _ = started_tx.send(Err(ObserveError::Dbus {
                        context: format!("owning {DBUS_NAME} on the {bus_text}"),
                        source,
                    }));
                    return;
                }
            };
            let unique = conn.unique_name().map(|n| n.to_string()).unwrap_or_default();
            if started_tx.send(Ok(unique)).is_err() {
                return;
            }
            event_loop(&conn, &rx);
            if let Err(e) = zbus::block_on(conn.release_name(DBUS_NAME)) {
                tracing::debug!(error = %e, "D-Bus name release failed: {e}");
            }
        })
        .map_err(|source| ObserveError::Thread { what: "D-Bus", source })?;
    let unique_name = match started_rx.recv() {
        Ok(Ok(u)) => u,
        Ok(Err(e)) => {
            let _ = thread.join();
            return Err(e);
        }
        Err(_) => {
            let _ = thread.join();
            return Err(ObserveError::Thread {
                what: "D-Bus",
                source: std::io::Error::other("the D-Bus thread ended before connecting"),
            });
        }
    };
    obs.attach_dbus(Some(tx.clone()));
    tracing::info!(bus = %bus, name = DBUS_NAME, unique = %unique_name, "D-Bus service up: {DBUS_NAME} on the {bus} bus ({unique_name})");
    Ok(Some(DbusHandle { tx, thread: Some(thread), obs, unique_name }))
}

fn event_loop(conn: &Connection, rx: &Receiver<DbusEvent>) {
    let iface = match zbus::block_on(conn.object_server().interface::<_, Daemon1>(DBUS_PATH)) {
        Ok(i) => i,
        Err(e) => {
            tracing::error!(error = %e, "D-Bus interface missing: no signals ({e})");
            return;
        }
    };
    while let Ok(ev) = rx.recv() {
        if matches!(ev, DbusEvent::Shutdown) {
            return;
        }
        let result = zbus::block_on(async {
            let emitter = iface.signal_emitter();
            let d = iface.get().await;
            match &ev {
                DbusEvent::State => d.state_changed(emitter).await,
                DbusEvent::Status => d.status_changed(emitter).await,
                DbusEvent::QueueDepth => d.queue_depth_changed(emitter).await,
                DbusEvent::Quarantined => d.quarantined_changed(emitter).await,
                DbusEvent::CurrentStudy => d.current_study_changed(emitter).await,
                DbusEvent::MemoryLimit => d.memory_limit_changed(emitter).await,
                DbusEvent::Engines => {
                    d.provider_changed(emitter).await?;
                    d.folds_changed(emitter).await?;
                    d.postprocess_backend_changed(emitter).await
                }
                DbusEvent::StudyFinished { study_uid, outcome, output_dir } => {
                    Daemon1::study_finished(emitter, study_uid, outcome, output_dir).await
                }
                DbusEvent::Shutdown => Ok(()),
            }
        });
        if let Err(e) = result {
            tracing::warn!(error = %e, "D-Bus emission failed: {e}");
        }
    }
}

/// Whether `uid` is a well-formed DICOM UID: 1 to 64 characters, digits in
/// dot-separated components, no empty component.
pub fn is_dicom_uid(uid: &str) -> bool {
    !uid.is_empty() && uid.len() <= 64 && uid.split('.').all(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()))
}

struct Daemon1 {
    obs: Observer,
    commands: Mutex<Sender<Command>>,
}

impl Daemon1 {
    fn record(&self, name: &str) -> zbus::fdo::Result<crate::quarantine::Record> {
        if !crate::quarantine::is_record_name(name) {
            return Err(zbus::fdo::Error::InvalidArgs(format!(
                "not a quarantine record name (12 hex digits, or file- and 12 hex digits): {name}"
            )));
        }
        self.obs
            .quarantine_records()
            .into_iter()
            .find(|r| r.name == name)
            .ok_or_else(|| zbus::fdo::Error::InvalidArgs(format!("no quarantine record {name}")))
    }

    fn send(&self, c: Command) -> zbus::fdo::Result<()> {
        match &c {
            // Not the path: scanners may name export folders after the patient.
            // Nor the full UID: studies are named by their hash in logs.
            Command::Enqueue(_) => tracing::info!(command = "Enqueue", "D-Bus command: Enqueue"),
            Command::Reprocess(uid) => {
                let study = crate::queue::uid_hash(uid);
                tracing::info!(command = "Reprocess", study = %study, "D-Bus command: Reprocess study {study}")
            }
            Command::Resend(uid) => {
                let study = crate::queue::uid_hash(uid);
                tracing::info!(command = "Resend", study = %study, "D-Bus command: Resend study {study}")
            }
            other => {
                let name = match other {
                    Command::Pause => "Pause",
                    Command::Resume => "Resume",
                    Command::ReloadConfig => "ReloadConfig",
                    Command::RetryQuarantine(_) => "RetryQuarantine",
                    Command::ClearQuarantine(_) => "ClearQuarantine",
                    Command::Enqueue(_) | Command::Reprocess(_) | Command::Resend(_) => "",
                };
                tracing::info!(command = name, "D-Bus command: {name}")
            }
        }
        lock(&self.commands)
            .send(c)
            .map_err(|_| zbus::fdo::Error::Failed("the daemon is stopping: command not taken".to_string()))
    }
}

#[interface(name = "org.edgeseg.Daemon1")]
impl Daemon1 {
    /// Stop taking new studies; the current one finishes.
    fn pause(&self) -> zbus::fdo::Result<()> {
        self.send(Command::Pause)
    }

    /// Take new studies again.
    fn resume(&self) -> zbus::fdo::Result<()> {
        self.send(Command::Resume)
    }

    /// Run a study again from its input, by StudyInstanceUID.
    fn reprocess(&self, study_uid: &str) -> zbus::fdo::Result<()> {
        if !is_dicom_uid(study_uid) {
            return Err(zbus::fdo::Error::InvalidArgs(format!("not a DICOM UID: {study_uid:?}")));
        }
        self.send(Command::Reprocess(study_uid.to_string()))
    }

    /// Deliver a done study's results again to every destination, by StudyInstanceUID.
    fn resend(&self, study_uid: &str) -> zbus::fdo::Result<()> {
        if !is_dicom_uid(study_uid) {
            return Err(zbus::fdo::Error::InvalidArgs(format!("not a DICOM UID: {study_uid:?}")));
        }
        self.send(Command::Resend(study_uid.to_string()))
    }

    /// Queue a folder (or file) of DICOM files, by absolute path.
    fn enqueue(&self, path: &str) -> zbus::fdo::Result<()> {
        let p = Path::new(path);
        if !p.is_absolute() {
            return Err(zbus::fdo::Error::InvalidArgs(format!("not an absolute path: {path:?}")));
        }
        if !p.exists() {
            return Err(zbus::fdo::Error::InvalidArgs(format!("{path}: no such file or folder")));
        }
        self.send(Command::Enqueue(p.to_path_buf()))
    }

    /// Read the configuration file again (as SIGHUP does).
    fn reload_config(&self) -> zbus::fdo::Result<()> {
        self.send(Command::ReloadConfig)
    }

    /// The quarantine records: (name, kind `study` or `file`, quarantined
    /// at, reason), by name. Root and edgeseg-admin only (bus policy).
    fn list_quarantine(&self) -> Vec<(String, String, String, String)> {
        self.obs
            .quarantine_records()
            .into_iter()
            .map(|r| (r.name, r.kind.as_str().to_string(), r.since, r.reason))
            .collect()
    }

    /// One record: (kind, quarantined at, reason, StudyInstanceUID or empty,
    /// input files). Root and edgeseg-admin only (bus policy): it names the
    /// study and its files.
    fn show_quarantine(&self, name: &str) -> zbus::fdo::Result<(String, String, String, String, Vec<String>)> {
        let r = self.record(name)?;
        let files = r.files.iter().map(|f| f.display().to_string()).collect();
        Ok((r.kind.as_str().to_string(), r.since, r.reason, r.study_uid.unwrap_or_default(), files))
    }

    /// Run a quarantined study again (its record goes once it is done), or
    /// read a quarantined file again (its record goes now).
    fn retry_quarantine(&self, name: &str) -> zbus::fdo::Result<()> {
        self.record(name)?;
        self.send(Command::RetryQuarantine(name.to_string()))
    }

    /// Remove a quarantine record; a study's counts as failed from then on
    /// (Reprocess still runs it). The input files stay where they are.
    fn clear_quarantine(&self, name: &str) -> zbus::fdo::Result<()> {
        self.record(name)?;
        self.send(Command::ClearQuarantine(name.to_string()))
    }

    /// starting, idle, running, paused, disk_low or stopping.
    #[zbus(property)]
    fn state(&self) -> String {
        self.obs.state().as_str().to_string()
    }

    /// The status line (as systemd's STATUS=).
    #[zbus(property)]
    fn status(&self) -> String {
        self.obs.snapshot().status
    }

    /// Studies waiting in the queue.
    #[zbus(property)]
    fn queue_depth(&self) -> u64 {
        self.obs.snapshot().queue_depth
    }

    /// Studies in quarantine.
    #[zbus(property)]
    fn quarantined(&self) -> u64 {
        self.obs.snapshot().quarantined
    }

    /// The StudyInstanceUID being processed, empty when none.
    #[zbus(property)]
    fn current_study(&self) -> String {
        self.obs.snapshot().current_study.unwrap_or_default()
    }

    /// The model package's name.
    #[zbus(property(emits_changed_signal = "const"))]
    fn model_name(&self) -> String {
        self.obs.info().model_name.clone()
    }

    /// The model package's version.
    #[zbus(property(emits_changed_signal = "const"))]
    fn model_version(&self) -> String {
        self.obs.info().model_version.clone()
    }

    /// The model package's sha256.
    #[zbus(property(emits_changed_signal = "const"))]
    fn model_sha256(&self) -> String {
        self.obs.info().model_sha256.clone()
    }

    /// The execution provider the folds got: cpu, cuda or tensorrt, or the
    /// distinct ones joined by `+` when folds differ.
    #[zbus(property)]
    fn provider(&self) -> String {
        self.obs.engines().provider
    }

    /// Per fold: (fold, provider, precision fp32, fp16 or bf16), as built.
    #[zbus(property)]
    fn folds(&self) -> Vec<(u32, String, String)> {
        self.obs.engines().folds
    }

    /// Where post-processing runs: cuda or cpu (empty until the model is loaded).
    #[zbus(property)]
    fn postprocess_backend(&self) -> String {
        self.obs.engines().postprocess_backend
    }

    /// The memory budget studies are planned within, bytes (`[limits]
    /// memory_mb`, or from the machine's memory and the service's
    /// MemoryMax); 0 until the daemon has set it.
    #[zbus(property)]
    fn memory_limit(&self) -> u64 {
        self.obs.snapshot().memory_limit
    }

    /// Per `[[destination]]`: (name, queued, sent, failed, oldest unsent age in
    /// seconds), as the DICOM node's outbox last reported (read on demand; no
    /// change signal).
    #[zbus(property(emits_changed_signal = "false"))]
    fn delivery(&self) -> Vec<(String, u64, u64, u64, f64)> {
        self.obs
            .delivery_counts()
            .into_iter()
            .map(|c| (c.name, c.queued, c.sent, c.failed, c.oldest_unsent_seconds))
            .collect()
    }

    /// Per `[[destination]]` with `storage_commitment`: (name, committed,
    /// awaiting commitment), as the outbox last reported (read on demand; no
    /// change signal).
    #[zbus(property(emits_changed_signal = "false"))]
    fn delivery_commitment(&self) -> Vec<(String, u64, u64)> {
        self.obs
            .delivery_counts()
            .into_iter()
            .filter(|c| c.storage_commitment)
            .map(|c| (c.name, c.committed, c.awaiting_commitment))
            .collect()
    }

    /// The edgeseg version and git revision.
    #[zbus(property(emits_changed_signal = "const"))]
    fn version(&self) -> String {
        format!("{} ({})", self.obs.info().edgeseg_version, self.obs.info().git_rev)
    }

    /// A study left the pipeline: outcome done, failed or quarantined;
    /// output_dir is empty when nothing was written.
    #[zbus(signal)]
    async fn study_finished(
        emitter: &SignalEmitter<'_>,
        study_uid: &str,
        outcome: &str,
        output_dir: &str,
    ) -> zbus::Result<()>;
}

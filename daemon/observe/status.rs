//! `edgeseg status [--json]`: reads the daemon's D-Bus properties (system bus
//! by default) and prints them for a person or, with `--json`, for a script.

use std::collections::HashMap;

use serde::Serialize;
use zbus::OwnedVariant;
use zbus::fdo::{DBusProxy, PropertiesProxy};
use zbus::names::{BusName, InterfaceName};

use super::{BusKind, DBUS_INTERFACE, DBUS_NAME, DBUS_PATH, ObserveError};

/// The daemon's properties, as `edgeseg status --json` prints them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DaemonStatus {
    /// starting, idle, running, paused, disk_low or stopping.
    pub state: String,
    /// The status line (systemd's STATUS=).
    pub status: String,
    /// Studies waiting in the queue.
    pub queue_depth: u64,
    /// Studies in quarantine.
    pub quarantined: u64,
    /// The StudyInstanceUID being processed, empty when none.
    pub current_study: String,
    /// Model package name.
    pub model_name: String,
    /// Model package version.
    pub model_version: String,
    /// Model package sha256.
    pub model_sha256: String,
    /// Execution provider the folds got.
    pub provider: String,
    /// Per fold, as built: fold, provider and precision.
    pub folds: Vec<FoldStatus>,
    /// Where post-processing runs: cuda or cpu.
    pub postprocess_backend: String,
    /// The daemon's edgeseg version and revision.
    pub version: String,
    /// The memory budget studies are planned within, bytes (0: not reported,
    /// a daemon from before `[limits] memory_mb`).
    pub memory_limit_bytes: u64,
    /// The DICOM node's outbox per destination (none without `[[destination]]`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub delivery: Vec<DeliveryStatus>,
}

/// One destination's outbox, as `edgeseg status` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryStatus {
    /// The destination's name.
    pub destination: String,
    /// Results waiting or being sent.
    pub queued: u64,
    /// Results stored by the destination.
    pub sent: u64,
    /// Results given up.
    pub failed: u64,
    /// Age of the oldest unsent result, whole seconds (0: none).
    pub oldest_unsent_seconds: u64,
    /// Results the destination committed (storage_commitment destinations only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub committed: Option<u64>,
    /// Results waiting for the destination's commitment (storage_commitment destinations only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub awaiting_commitment: Option<u64>,
}

/// One fold's engine, as `edgeseg status --json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FoldStatus {
    /// The fold.
    pub fold: u32,
    /// cpu, cuda or tensorrt.
    pub provider: String,
    /// fp32, fp16 or bf16.
    pub precision: String,
}

impl DaemonStatus {
    /// The human form: one `Name: value` line each.
    pub fn to_text(&self) -> String {
        let current = if self.current_study.is_empty() { "-" } else { self.current_study.as_str() };
        let folds: Vec<String> =
            self.folds.iter().map(|f| format!("{} {} {}", f.fold, f.provider, f.precision)).collect();
        let folds = if folds.is_empty() { "-".to_string() } else { folds.join(", ") };
        let post = if self.postprocess_backend.is_empty() { "-" } else { self.postprocess_backend.as_str() };
        let mut delivery = String::new();
        for d in &self.delivery {
            let commitment = match (d.committed, d.awaiting_commitment) {
                (Some(c), Some(a)) => format!(", {c} committed, {a} awaiting commitment"),
                _ => String::new(),
            };
            delivery.push_str(&format!(
                "Delivery:      {}: {} queued, {} sent, {} failed{commitment}{}\n",
                d.destination,
                d.queued,
                d.sent,
                d.failed,
                if d.queued > 0 { format!(" (oldest waiting {} s)", d.oldest_unsent_seconds) } else { String::new() }
            ));
        }
        let memory = match self.memory_limit_bytes {
            0 => "-".to_string(),
            b => format!("{} MB", b.div_ceil(1 << 20)),
        };
        format!(
            "State:         {}\nStatus:        {}\nQueue depth:   {}\nQuarantined:   {}\nCurrent study: {}\nModel:         {} {} (sha256 {})\nProvider:      {}\nFolds:         {folds}\nPost-process:  {post}\nMemory limit:  {memory}\nVersion:       {}\n{delivery}",
            self.state,
            self.status,
            self.queue_depth,
            self.quarantined,
            current,
            self.model_name,
            self.model_version,
            self.model_sha256,
            self.provider,
            self.version
        )
    }
}

fn dbus_err(context: &str, source: zbus::Error) -> ObserveError {
    ObserveError::Dbus { context: context.to_string(), source }
}

fn take_string(props: &mut HashMap<String, OwnedVariant>, name: &str) -> Result<String, ObserveError> {
    let v = props
        .remove(name)
        .ok_or_else(|| ObserveError::BadProperty { name: name.to_string(), reason: "missing".to_string() })?;
    String::try_from(v).map_err(|e| ObserveError::BadProperty { name: name.to_string(), reason: e.to_string() })
}

fn take_u64(props: &mut HashMap<String, OwnedVariant>, name: &str) -> Result<u64, ObserveError> {
    let v = props
        .remove(name)
        .ok_or_else(|| ObserveError::BadProperty { name: name.to_string(), reason: "missing".to_string() })?;
    u64::try_from(v).map_err(|e| ObserveError::BadProperty { name: name.to_string(), reason: e.to_string() })
}

fn take_folds(props: &mut HashMap<String, OwnedVariant>) -> Result<Vec<FoldStatus>, ObserveError> {
    let name = "Folds";
    let v = props
        .remove(name)
        .ok_or_else(|| ObserveError::BadProperty { name: name.to_string(), reason: "missing".to_string() })?;
    let folds = <Vec<(u32, String, String)>>::try_from(v)
        .map_err(|e| ObserveError::BadProperty { name: name.to_string(), reason: e.to_string() })?;
    Ok(folds.into_iter().map(|(fold, provider, precision)| FoldStatus { fold, provider, precision }).collect())
}

/// Connects with `builder` to the bus named `bus_text` and checks that the
/// daemon owns `org.edgeseg.Daemon1` there ([`ObserveError::NotRunning`] if not).
async fn connect_to_daemon(
    builder: zbus::connection::Builder<'static>,
    bus_text: String,
) -> Result<zbus::Connection, ObserveError> {
    let conn = builder.build().await.map_err(|e| dbus_err(&format!("connecting to the {bus_text}"), e))?;
    let name = BusName::try_from(DBUS_NAME).map_err(|e| dbus_err("bus name", e))?;
    let dbus = DBusProxy::new(&conn).await.map_err(|e| dbus_err("org.freedesktop.DBus proxy", e))?;
    let owned = dbus.name_has_owner(name).await.map_err(|e| dbus_err("NameHasOwner", e.into()))?;
    if !owned {
        return Err(ObserveError::NotRunning { bus: bus_text });
    }
    Ok(conn)
}

/// Reads the daemon's properties from `bus`. [`ObserveError::NotRunning`]
/// when nobody owns `org.edgeseg.Daemon1` there.
pub fn read_status(bus: &BusKind) -> Result<DaemonStatus, ObserveError> {
    let Some(builder) = bus.builder() else {
        return Err(ObserveError::NotRunning { bus: bus.to_string() });
    };
    let bus_text = bus.to_string();
    tracing::debug!(bus = %bus_text, "reading the daemon's properties");
    zbus::block_on(async move {
        let conn = connect_to_daemon(builder, bus_text).await?;
        let props = PropertiesProxy::builder(&conn)
            .destination(DBUS_NAME)
            .path(DBUS_PATH)
            .build()
            .await
            .map_err(|e| dbus_err("properties proxy", e))?;
        let iface = InterfaceName::try_from(DBUS_INTERFACE).map_err(|e| dbus_err("interface name", e))?;
        let mut all = props.get_all(iface).await.map_err(|e| match call_err("GetAll", e.into()) {
            ObserveError::AccessDenied { method, .. } => ObserveError::AccessDenied { method, group: "edgeseg" },
            other => other,
        })?;
        let queue_depth = take_u64(&mut all, "QueueDepth")?;
        let commitment: Vec<(String, u64, u64)> = all
            .remove("DeliveryCommitment")
            .and_then(|v| <Vec<(String, u64, u64)>>::try_from(v).ok())
            .unwrap_or_default();
        let quarantined = take_u64(&mut all, "Quarantined")?;
        Ok(DaemonStatus {
            state: take_string(&mut all, "State")?,
            status: take_string(&mut all, "Status")?,
            queue_depth,
            quarantined,
            current_study: take_string(&mut all, "CurrentStudy")?,
            model_name: take_string(&mut all, "ModelName")?,
            model_version: take_string(&mut all, "ModelVersion")?,
            model_sha256: take_string(&mut all, "ModelSha256")?,
            provider: take_string(&mut all, "Provider")?,
            folds: take_folds(&mut all)?,
            postprocess_backend: take_string(&mut all, "PostprocessBackend")?,
            version: take_string(&mut all, "Version")?,
            memory_limit_bytes: all.remove("MemoryLimit").and_then(|v| u64::try_from(v).ok()).unwrap_or(0),
            delivery: all
                .remove("Delivery")
                .and_then(|v| <Vec<(String, u64, u64, u64, f64)>>::try_from(v).ok())
                .unwrap_or_default()
                .into_iter()
                .map(|(destination, queued, sent, failed, oldest_unsent_seconds)| {
                    let c = commitment.iter().find(|c| c.0 == destination);
                    DeliveryStatus {
                        committed: c.map(|c| c.1),
                        awaiting_commitment: c.map(|c| c.2),
                        destination,
                        queued,
                        sent,
                        failed,
                        oldest_unsent_seconds: oldest_unsent_seconds.max(0.0).round() as u64,
                    }
                })
                .collect(),
        })
    })
}

/// One quarantine record as `edgeseg quarantine list|show --json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuarantineEntry {
    /// The record's name: the study hash or `file-<hash>`.
    pub name: String,
    /// `study` or `file`.
    pub kind: String,
    /// When it was quarantined (RFC 3339).
    pub since: String,
    /// Why.
    pub reason: String,
    /// The StudyInstanceUID (`show` of a study record only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub study_uid: Option<String>,
    /// The input files (`show` only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
}

impl QuarantineEntry {
    /// The human form of one record (`show`).
    pub fn to_text(&self) -> String {
        let mut t = format!(
            "Record:  {}\nKind:    {}\nSince:   {}\nReason:  {}\n",
            self.name, self.kind, self.since, self.reason
        );
        if let Some(u) = &self.study_uid {
            t.push_str(&format!("Study:   {u}\n"));
        }
        for f in &self.files {
            t.push_str(&format!("File:    {f}\n"));
        }
        t
    }
}

/// Calls `method` of the daemon's interface on `bus` with `args` and reads
/// the reply's body as `R`.
fn call<A, R>(bus: &BusKind, method: &'static str, args: &A) -> Result<R, ObserveError>
where
    A: serde::Serialize + zbus::zvariant::DynamicType,
    R: for<'d> serde::Deserialize<'d> + zbus::zvariant::Type,
{
    let Some(builder) = bus.builder() else {
        return Err(ObserveError::NotRunning { bus: bus.to_string() });
    };
    let bus_text = bus.to_string();
    zbus::block_on(async move {
        let conn = connect_to_daemon(builder, bus_text).await?;
        let proxy = zbus::Proxy::new(&conn, DBUS_NAME, DBUS_PATH, DBUS_INTERFACE)
            .await
            .map_err(|e| dbus_err("daemon proxy", e))?;
        proxy.call(method, args).await.map_err(|e| call_err(method, e))
    })
}

/// A refused call as what it means: access denied, bad arguments (the
/// daemon's sentence), else the D-Bus error.
fn call_err(method: &str, e: zbus::Error) -> ObserveError {
    const DENIED: &str = "org.freedesktop.DBus.Error.AccessDenied";
    const INVALID: &str = "org.freedesktop.DBus.Error.InvalidArgs";
    let (name, detail) = match &e {
        zbus::Error::FDO(f) => match f.as_ref() {
            zbus::fdo::Error::AccessDenied(d) => (DENIED.to_string(), d.clone()),
            zbus::fdo::Error::InvalidArgs(d) => (INVALID.to_string(), d.clone()),
            _ => (String::new(), String::new()),
        },
        zbus::Error::MethodError(n, d, _) => (n.as_str().to_string(), d.clone().unwrap_or_default()),
        _ => (String::new(), String::new()),
    };
    match name.as_str() {
        DENIED => ObserveError::AccessDenied { method: method.to_string(), group: "edgeseg-admin" },
        INVALID => ObserveError::Refused { method: method.to_string(), reason: detail },
        _ => dbus_err(method, e),
    }
}

/// `ListQuarantine()`: every record, by name.
pub fn quarantine_list(bus: &BusKind) -> Result<Vec<QuarantineEntry>, ObserveError> {
    let rows: Vec<(String, String, String, String)> = call(bus, "ListQuarantine", &())?;
    Ok(rows
        .into_iter()
        .map(|(name, kind, since, reason)| QuarantineEntry {
            name,
            kind,
            since,
            reason,
            study_uid: None,
            files: vec![],
        })
        .collect())
}

/// `ShowQuarantine(name)`: one record with its study UID and files.
pub fn quarantine_show(bus: &BusKind, name: &str) -> Result<QuarantineEntry, ObserveError> {
    let (kind, since, reason, uid, files): (String, String, String, String, Vec<String>) =
        call(bus, "ShowQuarantine", &(name,))?;
    Ok(QuarantineEntry {
        name: name.to_string(),
        kind,
        since,
        reason,
        study_uid: (!uid.is_empty()).then_some(uid),
        files,
    })
}

/// `RetryQuarantine(name)`.
pub fn quarantine_retry(bus: &BusKind, name: &str) -> Result<(), ObserveError> {
    call(bus, "RetryQuarantine", &(name,))
}

/// `ClearQuarantine(name)`.
pub fn quarantine_clear(bus: &BusKind, name: &str) -> Result<(), ObserveError> {
    call(bus, "ClearQuarantine", &(name,))
}

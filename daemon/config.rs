//! The daemon's TOML configuration (`/etc/edgeseg/edgeseg.toml`).
//!
//! The keys of the issue (`[watch] folders, settle_seconds`, `[model] path,
//! onnxruntime`, `[output] folder`, `[state] folder`, `[metrics] listen`,
//! `[dbus] bus`) are a stable contract; the other keys are documented in
//! `systemd/edgeseg.toml`, which lists every key with its default. Unknown keys
//! are errors. Collections have fixed capacities ([`MAX_WATCH_FOLDERS`],
//! [`MAX_TEMP_PATTERNS`], [`MAX_PATTERN_LEN`]), so no configuration can make
//! the daemon grow without bound.
//!
//! [`check`] reports every error of a file with its line and column: TOML
//! syntax (the parser stops at the first), then unknown keys and wrong types
//! (each offending entry is blanked and the file parsed again, so later errors
//! are found too), then the semantic checks (absolute folders, a socket
//! address, positive durations ...).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

use crate::infer::onnx::ProviderRequest;

/// Most export folders watched at once.
pub const MAX_WATCH_FOLDERS: usize = 8;
/// Most temporary-file patterns.
pub const MAX_TEMP_PATTERNS: usize = 16;
/// Longest temporary-file pattern, in bytes.
pub const MAX_PATTERN_LEN: usize = 64;

/// A temporary-file pattern: `*` any run of characters, `?` one character.
pub type Pattern = heapless::String<MAX_PATTERN_LEN>;

/// Errors of loading a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file has errors (each with its place).
    #[error("{}", .0.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Diagnostic>),
}

/// One error of a configuration file, with its place when known.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    /// The file.
    pub file: PathBuf,
    /// 1-based line, when the error has a place in the file.
    pub line: Option<usize>,
    /// 1-based column (characters), with `line`.
    pub column: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "{}:{l}:{c}: {}", self.file.display(), self.message),
            _ => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[watch]`: the export folders and when a study is complete.
    pub watch: WatchConfig,
    /// `[model]`: the model package and ONNX Runtime.
    pub model: ModelConfig,
    /// `[output]`: where results go.
    pub output: OutputConfig,
    /// `[state]`: journal, staging, quarantine.
    pub state: StateConfig,
    /// `[metrics]`: the Prometheus endpoint.
    pub metrics: MetricsConfig,
    /// `[dbus]`: the control interface.
    pub dbus: DbusConfig,
    /// `[queue]`: retries.
    pub queue: QueueConfig,
    /// `[disk]`: the free-space guard.
    pub disk: DiskConfig,
    /// `[retention]`: what happens to inputs of done studies.
    pub retention: RetentionConfig,
    /// `[gpu]`: where post-processing runs.
    pub gpu: GpuConfig,
    /// `[ingest]`: how series are read.
    pub ingest: IngestConfig,
    /// `[dicom]`: the DICOM node's Storage SCP (off without `listen`).
    pub dicom: DicomConfig,
    /// `[limits]`: the memory studies are planned within.
    pub limits: LimitsConfig,
    /// `[[destination]]`: where results are delivered.
    #[serde(deserialize_with = "bounded_destinations")]
    pub destination: Vec<Destination>,
}

/// `[gpu]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GpuConfig {
    /// Connected components and SUV thresholding: `auto` (CUDA when a device
    /// is there and the kernels load, else the CPU), `cuda` (refuse to start
    /// without it) or `cpu`.
    pub postprocess: crate::gpu::select::PostprocessChoice,
}

/// `[ingest]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Refuse slice stacks that would need resampling (irregular spacing,
    /// gantry tilt) instead of resampling them (`--strict-geometry`).
    pub strict_geometry: bool,
}

/// How the export folders are watched.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WatchMode {
    /// inotify (falls back to polling when it cannot be set up).
    #[default]
    Inotify,
    /// Rescan every `poll_interval_seconds` (network shares).
    Poll,
}

/// What to do with a study whose pair did not arrive within `pair_wait_seconds`.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum UnpairedAction {
    /// Run it with what it has (the pipeline quarantines it if the model cannot).
    #[default]
    Run,
    /// Quarantine it without running.
    Quarantine,
}

/// `[watch]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WatchConfig {
    /// Export folders (absolute, at most [`MAX_WATCH_FOLDERS`]).
    #[serde(deserialize_with = "bounded_folders")]
    pub folders: heapless::Vec<PathBuf, MAX_WATCH_FOLDERS>,
    /// A series is complete when none of its files appeared or changed for this long.
    pub settle_seconds: f64,
    /// inotify or poll.
    pub mode: WatchMode,
    /// Rescan period in poll mode (and inotify's safety rescan is 10 times this).
    pub poll_interval_seconds: f64,
    /// File names ignored until renamed (at most [`MAX_TEMP_PATTERNS`]).
    #[serde(deserialize_with = "bounded_patterns")]
    pub temp_patterns: heapless::Vec<Pattern, MAX_TEMP_PATTERNS>,
    /// How long a study waits for the other half of a pair the model needs.
    pub pair_wait_seconds: f64,
    /// What happens when the pair did not come.
    pub unpaired: UnpairedAction,
}

impl Default for WatchConfig {
    fn default() -> Self {
        let mut folders = heapless::Vec::new();
        let _ = folders.push(PathBuf::from("/srv/scanner-export"));
        let mut temp_patterns = heapless::Vec::new();
        for p in ["*.tmp", "*.part", ".*"] {
            let mut s = Pattern::new();
            let _ = s.push_str(p);
            let _ = temp_patterns.push(s);
        }
        Self {
            folders,
            settle_seconds: 30.0,
            mode: WatchMode::Inotify,
            poll_interval_seconds: 10.0,
            temp_patterns,
            pair_wait_seconds: 600.0,
            unpaired: UnpairedAction::Run,
        }
    }
}

/// `[model]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// The model package folder.
    pub path: PathBuf,
    /// libonnxruntime.so (ORT_DYLIB_PATH overrides).
    pub onnxruntime: PathBuf,
    /// auto, cpu, cuda, tensorrt or openvino (parsed here, once).
    pub provider: ProviderRequest,
    /// Refuse to start without the GPU provider.
    pub require_gpu: bool,
    /// Allow OpenVINO to infer in BF16 (provider openvino only; kept only if
    /// it agrees with FP32 on a probe tile).
    pub bf16: bool,
    /// ONNX Runtime intra-op threads (0: its default).
    pub threads: usize,
    /// Tiles per network call.
    pub batch_size: usize,
    /// Mirroring test-time augmentation (nnU-Net's default; off is up to 8× faster).
    pub tta: bool,
    /// Retry a study on the CPU when the GPU runs out of memory.
    pub cpu_fallback_on_oom: bool,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("/usr/share/edgeseg/models/demo-petct"),
            onnxruntime: PathBuf::from("/usr/lib/edgeseg/libonnxruntime.so"),
            provider: ProviderRequest::Auto,
            require_gpu: false,
            bf16: false,
            threads: 0,
            batch_size: 2,
            tta: true,
            cpu_fallback_on_oom: true,
        }
    }
}

/// `[output]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// Results: `<folder>/<StudyInstanceUID>/`.
    pub folder: PathBuf,
    /// seg.dcm as `binary` (Segmentation Storage) or `labelmap` (Label Map
    /// Segmentation Storage, DICOM 2024).
    pub seg_kind: crate::export::seg::SegKind,
}

impl Default for OutputConfig {
    fn default() -> Self {
        Self { folder: PathBuf::from("/var/lib/edgeseg/results"), seg_kind: Default::default() }
    }
}

/// `[state]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// Journal (`journal.sqlite`), quarantine (`quarantine/`), engine cache.
    pub folder: PathBuf,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self { folder: PathBuf::from("/var/lib/edgeseg") }
    }
}

impl StateConfig {
    /// The SQLite journal.
    pub fn journal(&self) -> PathBuf {
        self.folder.join("journal.sqlite")
    }
    /// The quarantine folder.
    pub fn quarantine(&self) -> PathBuf {
        self.folder.join("quarantine")
    }
}

/// `[metrics]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address of /metrics, /healthz, /readyz (port 0: any free port): an
    /// IP address or a host name, with a port (`localhost:9464`, `[::1]:9464`).
    pub listen: ListenAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { listen: ListenAddr { host: "127.0.0.1".into(), port: 9464 } }
    }
}

/// `host:port` of a listening socket: an IP address (IPv6 in brackets) or a
/// host name, resolved when the server starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenAddr {
    /// The IP address or host name (IPv6 without its brackets).
    pub host: String,
    /// The port (0: any free port).
    pub port: u16,
}

impl ListenAddr {
    /// Parses `host:port`, `[v6]:port` or `v4:port`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Ok(a) = text.parse::<SocketAddr>() {
            return Ok(Self { host: a.ip().to_string(), port: a.port() });
        }
        let bad = || format!("{text:?}: expected host:port (an IP address or a host name, and a port)");
        let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if host.is_empty() || host.len() > 253 || !host.trim_end_matches('.').split('.').all(label_ok) {
            return Err(bad());
        }
        Ok(Self { host: host.to_string(), port })
    }

    /// The socket address to bind: the host resolved (its first IPv4
    /// address when it has one, else its first address).
    pub fn resolve(&self) -> std::io::Result<SocketAddr> {
        use std::net::ToSocketAddrs;
        let all: Vec<SocketAddr> = (self.host.as_str(), self.port).to_socket_addrs()?.collect();
        all.iter().find(|a| a.is_ipv4()).or(all.first()).copied().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, format!("{}: the host name has no address", self.host))
        })
    }
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl Serialize for ListenAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Which D-Bus bus the control interface is on.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Bus {
    /// The system bus.
    #[default]
    System,
    /// The session bus (tests, desktop use).
    Session,
    /// No D-Bus interface.
    Off,
}

/// `[dbus]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DbusConfig {
    /// system, session or off.
    pub bus: Bus,
}

/// `[queue]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Attempts of a study with transient errors before it is marked failed.
    pub max_attempts: u32,
    /// Wait before the second attempt; doubled for each further one.
    pub backoff_seconds: f64,
    /// Studies on the GPU at once (1 is the only supported value).
    pub gpu_jobs: u32,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self { max_attempts: 3, backoff_seconds: 60.0, gpu_jobs: 1 }
    }
}

/// `[disk]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DiskConfig {
    /// No new study is started while the output or state folder has less free space (MiB).
    pub min_free_mb: u64,
}

impl Default for DiskConfig {
    fn default() -> Self {
        Self { min_free_mb: 2048 }
    }
}

/// `[limits]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Memory (MiB) the daemon keeps its studies within: the next study is
    /// read and prepared while one infers only when both fit together, else
    /// one after the other; a study that cannot fit alone is quarantined.
    /// 0: 80 % of the smaller of the machine's memory (MemTotal) and the
    /// service's cgroup limit (MemoryMax).
    pub memory_mb: u64,
}

/// The memory budget in force and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryBudget {
    /// Bytes.
    pub bytes: u64,
    /// What it was taken from.
    pub source: BudgetSource,
}

/// Where the memory budget came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetSource {
    /// `[limits] memory_mb`.
    Configured,
    /// 80 % of the service's cgroup limit (below the machine's memory).
    Cgroup,
    /// 80 % of the machine's memory.
    Machine,
    /// Neither could be read: 8 GiB assumed.
    Assumed,
}

impl LimitsConfig {
    /// The budget: `memory_mb`, or 80 % of what `limits` allows.
    pub fn budget(&self, limits: &crate::sys::MemoryLimits) -> MemoryBudget {
        if self.memory_mb > 0 {
            return MemoryBudget { bytes: self.memory_mb.saturating_mul(1 << 20), source: BudgetSource::Configured };
        }
        let source = match (limits.total, limits.cgroup) {
            (Some(t), Some(c)) if c < t => BudgetSource::Cgroup,
            (None, Some(_)) => BudgetSource::Cgroup,
            (Some(_), _) => BudgetSource::Machine,
            (None, None) => BudgetSource::Assumed,
        };
        MemoryBudget { bytes: limits.smaller().unwrap_or(8 << 30) / 5 * 4, source }
    }
}

impl std::fmt::Display for MemoryBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mb = crate::infer::memory::mib(self.bytes);
        match self.source {
            BudgetSource::Configured => write!(f, "{mb} MB ([limits] memory_mb)"),
            BudgetSource::Cgroup => write!(f, "{mb} MB (80 % of the service's MemoryMax)"),
            BudgetSource::Machine => write!(f, "{mb} MB (80 % of the machine's memory)"),
            BudgetSource::Assumed => write!(f, "{mb} MB (80 % of 8 GB assumed: the machine's memory is unknown)"),
        }
    }
}

/// What retention does with the inputs of a done study.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RetentionAction {
    /// Delete the input files.
    #[default]
    Delete,
    /// Move them under `move_to/<study hash>/`.
    Move,
}

/// `[retention]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Days after a study is done before its inputs are deleted or moved (0: never).
    pub days: u32,
    /// delete or move.
    pub action: RetentionAction,
    /// Folder for `action = "move"`.
    pub move_to: Option<PathBuf>,
}

// ---- The DICOM node: `[dicom]` and `[[destination]]` (daemon/dicom_node/) ----

/// Most `[dicom] allowed_callers`.
pub const MAX_ALLOWED_CALLERS: usize = 64;
/// Most `[[destination]]` entries.
pub const MAX_DESTINATIONS: usize = 8;

/// `[dicom]`: the Storage SCP. Off unless `listen` is set.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DicomConfig {
    /// Address the Storage SCP listens on (`0.0.0.0:11112`); none: no SCP.
    pub listen: Option<ListenAddr>,
    /// This node's AE title (the called AE title callers must use).
    pub ae_title: String,
    /// Who may associate: calling AE title and, optionally, source address.
    pub allowed_callers: Vec<AllowedCaller>,
    /// Associations served at once; more are rejected (transient, local limit).
    pub max_associations: u32,
    /// Largest PDU this node receives, in bytes.
    pub max_pdu_length: u32,
    /// An association silent this long (seconds) is aborted.
    pub timeout_seconds: f64,
}

impl Default for DicomConfig {
    fn default() -> Self {
        Self {
            listen: None,
            ae_title: "EDGESEG".into(),
            allowed_callers: Vec::new(),
            max_associations: 8,
            max_pdu_length: 65536,
            timeout_seconds: 60.0,
        }
    }
}

/// One `allowed_callers` entry.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AllowedCaller {
    /// The calling AE title.
    pub ae_title: String,
    /// The caller's IP address (any address when absent).
    #[serde(default)]
    pub host: Option<std::net::IpAddr>,
}

/// How results reach a destination.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DestinationKind {
    /// C-STORE to a DICOM node.
    #[default]
    Dicom,
    /// STOW-RS to a DICOMweb service.
    Dicomweb,
}

/// A result object a destination is sent.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum SendObject {
    /// seg.dcm.
    Seg,
    /// rtstruct.dcm.
    Rtstruct,
    /// mip.dcm (the MIP as a Secondary Capture).
    Sc,
}

impl SendObject {
    /// The file of the study folder.
    pub fn file_name(self) -> &'static str {
        match self {
            Self::Seg => "seg.dcm",
            Self::Rtstruct => "rtstruct.dcm",
            Self::Sc => "mip.dcm",
        }
    }
    /// The name in the configuration and the outbox.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Seg => "seg",
            Self::Rtstruct => "rtstruct",
            Self::Sc => "sc",
        }
    }
}

/// One `[[destination]]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    /// Name in logs, metrics and the outbox.
    pub name: String,
    /// `dicom` (C-STORE) or `dicomweb` (STOW-RS).
    #[serde(default)]
    pub kind: DestinationKind,
    /// The PACS's host (kind = "dicom").
    #[serde(default)]
    pub host: Option<String>,
    /// The PACS's port (kind = "dicom").
    #[serde(default)]
    pub port: Option<u16>,
    /// The PACS's AE title (kind = "dicom").
    #[serde(default)]
    pub called_ae: Option<String>,
    /// This node's AE title towards the PACS (default: `[dicom] ae_title`).
    #[serde(default)]
    pub calling_ae: Option<String>,
    /// The DICOMweb service root, `http://host:port/dicom-web` (kind = "dicomweb").
    #[serde(default)]
    pub url: Option<String>,
    /// A file holding a bearer token (kind = "dicomweb").
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// PEM certificates of the certificate authorities trusted besides the
    /// system trust store (kind = "dicomweb", https:// url).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM certificate chain of this node for mutual TLS (with client_key_file).
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of client_cert_file (unencrypted PKCS#8, PKCS#1 or SEC1).
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    /// Which results are sent.
    #[serde(default = "default_send")]
    pub send: Vec<SendObject>,
    /// Ask for Storage Commitment, push model (kind = "dicom"): a result is
    /// `committed` only once the PACS confirms it (docs/dicom-network.md).
    #[serde(default)]
    pub storage_commitment: bool,
    /// A result sent but not committed this long (seconds) is sent again.
    #[serde(default = "default_commitment_timeout_seconds")]
    pub commitment_timeout_seconds: f64,
    /// Attempts before a result is marked failed.
    #[serde(default = "default_delivery_attempts")]
    pub max_attempts: u32,
    /// Wait after the first failed attempt, doubled for each further one (at most an hour).
    #[serde(default = "default_retry_seconds")]
    pub retry_seconds: f64,
}

fn default_send() -> Vec<SendObject> {
    vec![SendObject::Seg, SendObject::Rtstruct]
}
fn default_delivery_attempts() -> u32 {
    10
}
fn default_retry_seconds() -> f64 {
    30.0
}
fn default_commitment_timeout_seconds() -> f64 {
    3600.0
}

fn bounded_destinations<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Destination>, D::Error> {
    let v: Vec<Destination> = Vec::deserialize(d)?;
    if v.len() > MAX_DESTINATIONS {
        return Err(serde::de::Error::custom(format!(
            "{} destinations: at most {MAX_DESTINATIONS} are allowed",
            v.len()
        )));
    }
    Ok(v)
}

fn dicom_errors(c: &Config, out: &mut Vec<(&'static str, &'static str, String)>) {
    let d = &c.dicom;
    let ae_ok = |t: &str| {
        !t.trim().is_empty()
            && t.len() <= 16
            && t.chars().all(|c| c.is_ascii_graphic() || c == ' ')
            && !t.contains('\\')
    };
    if !ae_ok(&d.ae_title) {
        out.push(("dicom", "ae_title", format!("{:?}: 1 to 16 printable ASCII characters", d.ae_title)));
    }
    if d.listen.is_some() {
        if d.allowed_callers.is_empty() {
            out.push((
                "dicom",
                "allowed_callers",
                "at least one caller is needed: no one else may send studies".into(),
            ));
        }
        if c.watch.folders.len() >= MAX_WATCH_FOLDERS {
            out.push((
                "watch",
                "folders",
                format!(
                    "at most {} export folders with [dicom] listen (the spool is watched too)",
                    MAX_WATCH_FOLDERS - 1
                ),
            ));
        }
    }
    if d.allowed_callers.len() > MAX_ALLOWED_CALLERS {
        out.push((
            "dicom",
            "allowed_callers",
            format!("{} callers: at most {MAX_ALLOWED_CALLERS}", d.allowed_callers.len()),
        ));
    }
    for a in &d.allowed_callers {
        if !ae_ok(&a.ae_title) {
            out.push(("dicom", "allowed_callers", format!("{:?}: 1 to 16 printable ASCII characters", a.ae_title)));
        }
    }
    if d.max_associations == 0 || d.max_associations > 256 {
        out.push(("dicom", "max_associations", format!("{}: must be 1 to 256", d.max_associations)));
    }
    if !(4096..=16_777_216).contains(&d.max_pdu_length) {
        out.push(("dicom", "max_pdu_length", format!("{}: must be 4096 to 16777216", d.max_pdu_length)));
    }
    if !(d.timeout_seconds.is_finite() && d.timeout_seconds >= 1.0) {
        out.push(("dicom", "timeout_seconds", format!("{}: must be 1 or more", d.timeout_seconds)));
    }
    for (i, t) in c.destination.iter().enumerate() {
        let mut need = |key: &'static str, ok: bool, what: &str| {
            if !ok {
                out.push(("destination", key, format!("{:?}: {what}", t.name)));
            }
        };
        need(
            "name",
            !t.name.is_empty() && t.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            "a name of letters, digits, '-', '_' or '.'",
        );
        need("name", !c.destination.iter().skip(i + 1).any(|o| o.name == t.name), "the name is used twice");
        match t.kind {
            DestinationKind::Dicom => {
                need("host", t.host.as_deref().is_some_and(|h| !h.is_empty()), "kind = \"dicom\" needs host");
                need("port", t.port.is_some_and(|p| p > 0), "kind = \"dicom\" needs port");
                need(
                    "called_ae",
                    t.called_ae.as_deref().is_some_and(ae_ok),
                    "kind = \"dicom\" needs called_ae (1 to 16 characters)",
                );
                need("calling_ae", t.calling_ae.as_deref().is_none_or(ae_ok), "1 to 16 printable ASCII characters");
            }
            DestinationKind::Dicomweb => {
                need(
                    "url",
                    t.url.as_deref().is_some_and(|u| {
                        (u.starts_with("http://") || u.starts_with("https://"))
                            && crate::dicom_node::stow::url_host(u).is_some_and(|h| !h.is_empty())
                    }),
                    "kind = \"dicomweb\" needs url (http://host[:port]/path or https://host[:port]/path)",
                );
            }
        }
        need(
            "storage_commitment",
            !t.storage_commitment || t.kind == DestinationKind::Dicom,
            "storage_commitment needs kind = \"dicom\"",
        );
        need(
            "storage_commitment",
            !t.storage_commitment || d.listen.is_some(),
            "storage_commitment needs [dicom] listen: the PACS sends its report on an association to this node",
        );
        need(
            "commitment_timeout_seconds",
            t.commitment_timeout_seconds.is_finite() && t.commitment_timeout_seconds >= 1.0,
            "commitment_timeout_seconds must be 1 or more",
        );
        if let Some(f) = &t.token_file {
            need("token_file", f.is_absolute(), "token_file must be an absolute path");
        }
        let https = t.kind == DestinationKind::Dicomweb && t.url.as_deref().is_some_and(|u| u.starts_with("https://"));
        for (key, f) in [
            ("ca_file", &t.ca_file),
            ("client_cert_file", &t.client_cert_file),
            ("client_key_file", &t.client_key_file),
        ] {
            if let Some(f) = f {
                need(key, f.is_absolute(), &format!("{key} must be an absolute path"));
                need(key, https, &format!("{key} applies to kind = \"dicomweb\" with an https:// url only"));
            }
        }
        need(
            "client_key_file",
            t.client_cert_file.is_some() == t.client_key_file.is_some(),
            "client_cert_file and client_key_file go together",
        );
        need("send", !t.send.is_empty(), "send lists at least one of \"seg\", \"rtstruct\", \"sc\"");
        need("max_attempts", (1..=1000).contains(&t.max_attempts), "max_attempts must be 1 to 1000");
        need("retry_seconds", t.retry_seconds.is_finite() && t.retry_seconds >= 0.0, "retry_seconds must be 0 or more");
    }
}
// ---- end of the DICOM node's configuration ----

fn bounded_folders<'de, D: Deserializer<'de>>(d: D) -> Result<heapless::Vec<PathBuf, MAX_WATCH_FOLDERS>, D::Error> {
    let v: Vec<PathBuf> = Vec::deserialize(d)?;
    let n = v.len();
    heapless::Vec::from_iter_checked(v).ok_or_else(|| {
        serde::de::Error::custom(format!("{n} folders: at most {MAX_WATCH_FOLDERS} watch folders are allowed"))
    })
}

fn bounded_patterns<'de, D: Deserializer<'de>>(d: D) -> Result<heapless::Vec<Pattern, MAX_TEMP_PATTERNS>, D::Error> {
    let v: Vec<String> = Vec::deserialize(d)?;
    if v.len() > MAX_TEMP_PATTERNS {
        return Err(serde::de::Error::custom(format!(
            "{} patterns: at most {MAX_TEMP_PATTERNS} temporary-file patterns are allowed",
            v.len()
        )));
    }
    let mut out = heapless::Vec::new();
    for p in v {
        let mut s = Pattern::new();
        s.push_str(&p)
            .map_err(|_| serde::de::Error::custom(format!("pattern {p:?}: longer than {MAX_PATTERN_LEN} bytes")))?;
        out.push(s).map_err(|_| serde::de::Error::custom("too many patterns"))?;
    }
    Ok(out)
}

/// `heapless::Vec` from an iterator, `None` when it does not fit.
trait FromIterChecked<T>: Sized {
    fn from_iter_checked(it: impl IntoIterator<Item = T>) -> Option<Self>;
}

impl<T, const N: usize> FromIterChecked<T> for heapless::Vec<T, N> {
    fn from_iter_checked(it: impl IntoIterator<Item = T>) -> Option<Self> {
        let mut v = heapless::Vec::new();
        for x in it {
            v.push(x).ok()?;
        }
        Some(v)
    }
}

/// Whether `name` matches a pattern of `*` (any run) and `?` (one character).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
    (line, col)
}

/// Parses and checks a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io { path: path.to_path_buf(), source })?;
    let (config, diags) = check(path, &text);
    match config {
        Some(c) if diags.is_empty() => Ok(c),
        _ => Err(ConfigError::Invalid(diags)),
    }
}

/// Every error of a configuration text; the configuration when it has none
/// of syntax or type (semantic errors still return it, with their diagnostics).
pub fn check(file: &Path, text: &str) -> (Option<Config>, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    let diag = |text: &str, span: Option<std::ops::Range<usize>>, message: String| {
        let place = span.map(|s| line_col(text, s.start));
        Diagnostic { file: file.to_path_buf(), line: place.map(|p| p.0), column: place.map(|p| p.1), message }
    };
    // Syntax first: the parser stops at the first syntax error.
    if let Err(e) = text.parse::<toml::Table>() {
        diags.push(diag(text, e.span(), e.message().trim().to_string()));
        return (None, diags);
    }
    // Types and unknown keys: blank each offending entry and parse again, so
    // the places of later errors stay where they are in the file.
    let mut work = text.to_string();
    let mut config = None;
    for _ in 0..64 {
        match toml::from_str::<Config>(&work) {
            Ok(c) => {
                config = Some(c);
                break;
            }
            Err(e) => {
                let mut message = e.message().trim().to_string();
                if let Some((section, key)) = e.span().and_then(|s| key_at(text, s.start))
                    && !message.starts_with("unknown field")
                {
                    message = format!("[{section}] {key}: {message}");
                }
                diags.push(diag(text, e.span(), message));
                let Some(span) = e.span() else { break };
                let before = work.clone();
                blank_entry(&mut work, span);
                if work == before || work.parse::<toml::Table>().is_err() {
                    break;
                }
            }
        }
    }
    let by_place = |d: &Diagnostic| (d.line.unwrap_or(usize::MAX), d.column.unwrap_or(0));
    let Some(config) = config else {
        diags.sort_by_key(by_place);
        return (None, diags);
    };
    for (section, key, message) in semantic_errors(&config) {
        let offset = locate(text, section, key);
        diags.push(diag(text, offset.map(|o| o..o), format!("[{section}] {key}: {message}")));
    }
    diags.sort_by_key(by_place);
    (Some(config), diags)
}

/// Replaces the lines of the entry around `span` with spaces (newlines kept).
/// A table header (`[name]`) is blanked with its whole table.
fn blank_entry(text: &mut String, span: std::ops::Range<usize>) {
    let start = text.get(..span.start.min(text.len())).and_then(|s| s.rfind('\n')).map(|i| i + 1).unwrap_or(0);
    let line_end = |from: usize, t: &str| t.get(from..).and_then(|s| s.find('\n')).map(|i| from + i).unwrap_or(t.len());
    let mut end = line_end(span.end.saturating_sub(1).max(start), text);
    let first_line = text.get(start..line_end(start, text)).unwrap_or("").trim_start().to_string();
    if first_line.starts_with('[') {
        // The whole table: up to the next header.
        let mut pos = end;
        while pos < text.len() {
            let next = line_end(pos + 1, text);
            let line = text.get(pos + 1..next).unwrap_or("").trim_start();
            if line.starts_with('[') {
                break;
            }
            pos = next;
        }
        end = pos;
    }
    let blanked: String =
        text.get(start..end).unwrap_or("").chars().map(|c| if c == '\n' { '\n' } else { ' ' }).collect();
    text.replace_range(start..end, &blanked);
}

/// The `[section]` and key of the `key = value` line holding byte `offset`.
fn key_at(text: &str, offset: usize) -> Option<(String, String)> {
    let mut section = String::new();
    let mut start = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix('[') {
            section = rest.split(']').next().unwrap_or("").trim().to_string();
        }
        if offset >= start && offset < start + line.len() {
            let (key, _) = t.split_once('=')?;
            let key = key.trim();
            let plain = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            return plain.then(|| (section, key.to_string()));
        }
        start += line.len();
    }
    None
}

/// Byte offset of `key = ...` in `[section]`, when the file sets it.
fn locate(text: &str, section: &str, key: &str) -> Option<usize> {
    let mut current = String::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim_start();
        let indent = line.len() - t.len();
        if let Some(rest) = t.strip_prefix('[') {
            current = rest.split(']').next().unwrap_or("").trim().to_string();
        } else if current == section
            && let Some(after) = t.strip_prefix(key)
            && after.trim_start().starts_with('=')
        {
            return Some(offset + indent);
        }
        offset += line.len();
    }
    None
}

/// What [`check_files`] found: errors (the daemon would not start) and
/// warnings (it starts and waits).
#[derive(Debug, Default)]
pub struct FileChecks {
    /// The daemon would fail with these.
    pub errors: Vec<Diagnostic>,
    /// The daemon starts but waits (an export folder not mounted yet).
    pub warnings: Vec<Diagnostic>,
}

/// The checks of a configuration against this machine (what `check-config`
/// does unless `--offline`): the model package is there and its files match
/// model.toml's sha256s, the ONNX Runtime library (`ORT_DYLIB_PATH` when set)
/// is a readable file, each export folder exists and can be listed (a
/// warning: the daemon waits for a share mounted after it starts), and the
/// output, state and move_to folders exist or can be made (their nearest
/// existing parent is a folder).
pub fn check_files(file: &Path, text: &str, c: &Config) -> FileChecks {
    let mut out = FileChecks::default();
    let place = |section: &str, key: &str, message: String| {
        let at = locate(text, section, key).map(|o| line_col(text, o));
        Diagnostic {
            file: file.to_path_buf(),
            line: at.map(|p| p.0),
            column: at.map(|p| p.1),
            message: format!("[{section}] {key}: {message}"),
        }
    };
    // The model package, checksums included.
    let package = if !c.model.path.is_dir() {
        out.errors.push(place("model", "path", format!("{}: no such folder", c.model.path.display())));
        None
    } else {
        crate::infer::model::ModelPackage::load(&c.model.path)
            .map_err(|e| out.errors.push(place("model", "path", e.to_string())))
            .ok()
    };
    // ONNX Runtime, which a simulated package (a test device) never loads.
    let simulated = package.is_some_and(|p| p.meta.network == crate::infer::model::NetworkFormat::Simulated);
    let from_env = std::env::var_os("ORT_DYLIB_PATH").filter(|v| !v.is_empty()).map(PathBuf::from);
    let (lib, origin) = match &from_env {
        Some(p) => (p.clone(), " (from ORT_DYLIB_PATH)"),
        None => (c.model.onnxruntime.clone(), ""),
    };
    let lib_problem = match std::fs::metadata(&lib) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some("no such file".to_string()),
        Err(e) => Some(e.to_string()),
        Ok(m) if !m.is_file() => Some("not a file".to_string()),
        Ok(_) => std::fs::File::open(&lib).err().map(|e| format!("cannot be read: {e}")),
    };
    if let Some(why) = lib_problem.filter(|_| !simulated) {
        out.errors.push(place(
            "model",
            "onnxruntime",
            format!("{}{origin}: ONNX Runtime library: {why}", lib.display()),
        ));
    }
    // Export folders: the daemon waits for them, so a warning.
    for f in &c.watch.folders {
        let problem = match std::fs::metadata(f) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some("no such folder".to_string()),
            Err(e) => Some(e.to_string()),
            Ok(m) if !m.is_dir() => Some("not a folder".to_string()),
            Ok(_) => std::fs::read_dir(f).err().map(|e| format!("cannot be listed: {e}")),
        };
        if let Some(why) = problem {
            out.warnings.push(place(
                "watch",
                "folders",
                format!("{}: {why} (the daemon starts and waits until it can read it)", f.display()),
            ));
        }
    }
    // Folders the daemon writes: there, or their nearest existing parent is a folder.
    let mut writable = vec![("output", "folder", c.output.folder.clone()), ("state", "folder", c.state.folder.clone())];
    if let Some(m) = &c.retention.move_to {
        writable.push(("retention", "move_to", m.clone()));
    }
    for (section, key, dir) in writable {
        let existing = dir.ancestors().find(|a| a.exists());
        match existing {
            Some(a) if a == dir && !a.is_dir() => {
                out.errors.push(place(section, key, format!("{}: not a folder", dir.display())));
            }
            Some(a) if !a.is_dir() => {
                out.errors.push(place(
                    section,
                    key,
                    format!("{}: cannot be made ({} is not a folder)", dir.display(), a.display()),
                ));
            }
            _ => {}
        }
    }
    // DICOMweb destinations: the TLS files are there and parse; a token in clear text.
    for t in c.destination.iter().filter(|t| t.kind == DestinationKind::Dicomweb) {
        if let Err(e) = crate::dicom_node::stow::check_tls_files(t) {
            out.errors.push(place("destination", e.key(), format!("{:?}: {e}", t.name)));
        }
        if let Some(w) = crate::dicom_node::stow::clear_text_token_warning(t) {
            out.warnings.push(place("destination", "token_file", w));
        }
    }
    out
}

/// Semantic errors as (section, key, message).
fn semantic_errors(c: &Config) -> Vec<(&'static str, &'static str, String)> {
    let mut out = Vec::new();
    let mut abs = |section: &'static str, key: &'static str, p: &Path| {
        if !p.is_absolute() {
            out.push((section, key, format!("{}: must be an absolute path", p.display())));
        }
    };
    for f in &c.watch.folders {
        abs("watch", "folders", f);
    }
    abs("model", "path", &c.model.path);
    abs("model", "onnxruntime", &c.model.onnxruntime);
    abs("output", "folder", &c.output.folder);
    abs("state", "folder", &c.state.folder);
    if let Some(m) = &c.retention.move_to {
        abs("retention", "move_to", m);
    }
    let w = &c.watch;
    if w.folders.is_empty() && c.dicom.listen.is_none() {
        out.push(("watch", "folders", "at least one export folder is needed (or [dicom] listen)".into()));
    }
    for (i, a) in w.folders.iter().enumerate() {
        if w.folders.iter().skip(i + 1).any(|b| a.starts_with(b) || b.starts_with(a)) {
            out.push(("watch", "folders", format!("{}: listed twice or nested in another folder", a.display())));
        }
    }
    dicom_errors(c, &mut out);
    let positive = |v: f64| v.is_finite() && v > 0.0;
    if !positive(w.settle_seconds) {
        out.push(("watch", "settle_seconds", format!("{}: must be greater than 0", w.settle_seconds)));
    }
    if !positive(w.poll_interval_seconds) {
        out.push(("watch", "poll_interval_seconds", format!("{}: must be greater than 0", w.poll_interval_seconds)));
    }
    if !(w.pair_wait_seconds.is_finite() && w.pair_wait_seconds >= 0.0) {
        out.push(("watch", "pair_wait_seconds", format!("{}: must be 0 or more", w.pair_wait_seconds)));
    }
    for p in &w.temp_patterns {
        if p.is_empty() || p.contains('/') {
            out.push(("watch", "temp_patterns", format!("{:?}: a file-name pattern, non-empty and without '/'", p)));
        }
    }
    let m = &c.model;
    if m.batch_size == 0 || m.batch_size > 64 {
        out.push(("model", "batch_size", format!("{}: must be 1 to 64", m.batch_size)));
    }
    if m.threads > 1024 {
        out.push(("model", "threads", format!("{}: must be 0 (ONNX Runtime's default) to 1024", m.threads)));
    }
    if m.bf16 && m.provider != ProviderRequest::Openvino {
        out.push(("model", "bf16", format!("needs provider = \"openvino\", not {:?}", m.provider.as_str())));
    }
    let q = &c.queue;
    if q.max_attempts == 0 || q.max_attempts > 100 {
        out.push(("queue", "max_attempts", format!("{}: must be 1 to 100", q.max_attempts)));
    }
    if !(q.backoff_seconds.is_finite() && q.backoff_seconds >= 0.0) {
        out.push(("queue", "backoff_seconds", format!("{}: must be 0 or more", q.backoff_seconds)));
    }
    if q.gpu_jobs != 1 {
        out.push(("queue", "gpu_jobs", format!("{}: only 1 GPU job at a time is supported", q.gpu_jobs)));
    }
    if c.retention.action == RetentionAction::Move && c.retention.move_to.is_none() {
        out.push(("retention", "move_to", "action = \"move\" needs move_to".into()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errs(text: &str) -> Vec<String> {
        check(Path::new("c.toml"), text).1.iter().map(|d| d.to_string()).collect()
    }

    #[test]
    fn dicom_node_sections_parse_and_each_mistake_is_placed() {
        let good = "[watch]\nfolders = []\n[dicom]\nlisten = \"0.0.0.0:11112\"\nallowed_callers = [{ ae_title = \"CT01\", host = \"10.0.0.5\" }]\n\
                    [[destination]]\nname = \"pacs\"\nhost = \"10.0.0.20\"\nport = 104\ncalled_ae = \"PACS\"\n\
                    [[destination]]\nname = \"web\"\nkind = \"dicomweb\"\nurl = \"http://pacs:8042/dicom-web\"\nsend = [\"seg\", \"sc\"]\n";
        let (c, d) = check(Path::new("c.toml"), good);
        assert!(d.is_empty(), "{d:?}");
        let c = c.expect("parses");
        assert_eq!(c.destination.len(), 2);
        assert_eq!(c.destination[0].kind, DestinationKind::Dicom);
        assert_eq!(c.destination[0].send, vec![SendObject::Seg, SendObject::Rtstruct]);
        assert_eq!(c.destination[1].send, vec![SendObject::Seg, SendObject::Sc]);
        assert_eq!(c.dicom.allowed_callers[0].host, Some("10.0.0.5".parse().expect("ip")));
        assert_eq!(c.dicom.max_associations, 8);

        let e =
            errs("[dicom]\nlisten = \"0.0.0.0:11112\"\nae_title = \"A_VERY_LONG_AE_TITLE\"\nmax_associations = 0\n");
        assert!(e.iter().any(|m| m.contains("[dicom] allowed_callers: at least one caller")), "{e:?}");
        assert!(e.iter().any(|m| m.starts_with("c.toml:3:1:") && m.contains("ae_title")), "{e:?}");
        assert!(e.iter().any(|m| m.starts_with("c.toml:4:1:") && m.contains("max_associations")), "{e:?}");
        let e = errs("[[destination]]\nname = \"pacs\"\n[[destination]]\nname = \"pacs\"\nkind = \"dicomweb\"\n");
        assert!(e.iter().any(|m| m.contains("needs host")), "{e:?}");
        assert!(e.iter().any(|m| m.contains("needs called_ae")), "{e:?}");
        assert!(e.iter().any(|m| m.contains("needs url")), "{e:?}");
        assert!(e.iter().any(|m| m.contains("used twice")), "{e:?}");
        let e =
            errs("[[destination]]\nname = \"p\"\nhost = \"h\"\nport = 104\ncalled_ae = \"P\"\nsend = [\"nifti\"]\n");
        assert!(e.iter().any(|m| m.contains("nifti")), "{e:?}");
        let many: String = (0..9)
            .map(|i| format!("[[destination]]\nname = \"d{i}\"\nkind = \"dicomweb\"\nurl = \"http://h\"\n"))
            .collect();
        assert!(errs(&many).iter().any(|m| m.contains("at most 8")), "{:?}", errs(&many));
        // No export folder is fine with the SCP, not without it.
        assert!(errs("[watch]\nfolders = []\n").iter().any(|m| m.contains("at least one export folder")));
    }

    #[test]
    fn storage_commitment_needs_a_dicom_destination_and_the_scp() {
        let dest = "[[destination]]\nname = \"pacs\"\nhost = \"10.0.0.20\"\nport = 104\ncalled_ae = \"PACS\"\nstorage_commitment = true\n";
        let scp = "[dicom]\nlisten = \"0.0.0.0:11112\"\nallowed_callers = [{ ae_title = \"CT01\" }]\n";
        let (c, d) = check(Path::new("c.toml"), &format!("{scp}{dest}"));
        assert!(d.is_empty(), "{d:?}");
        let c = c.expect("parses");
        assert!(c.destination[0].storage_commitment);
        assert_eq!(c.destination[0].commitment_timeout_seconds, 3600.0);
        assert!(errs(dest).iter().any(|m| m.contains("storage_commitment needs [dicom] listen")), "{:?}", errs(dest));
        let web = "[[destination]]\nname = \"w\"\nkind = \"dicomweb\"\nurl = \"http://h\"\nstorage_commitment = true\n";
        assert!(errs(&format!("{scp}{web}")).iter().any(|m| m.contains("needs kind = \"dicom\"")));
        let e = errs(&format!("{scp}{dest}commitment_timeout_seconds = 0\n"));
        assert!(e.iter().any(|m| m.contains("commitment_timeout_seconds must be 1 or more")), "{e:?}");
    }

    #[test]
    fn dicomweb_https_and_its_tls_keys_are_checked() {
        let web = |url: &str, more: &str| {
            format!(
                "[watch]\nfolders = [\"/x\"]\n[[destination]]\nname = \"web\"\nkind = \"dicomweb\"\nurl = \"{url}\"\n{more}"
            )
        };
        let pair = "client_cert_file = \"/etc/edgeseg/c.pem\"\nclient_key_file = \"/etc/edgeseg/c.key\"\n";
        let ok = web("https://pacs.example:8443/dicom-web", &format!("ca_file = \"/etc/edgeseg/ca.pem\"\n{pair}"));
        let (c, d) = check(Path::new("c.toml"), &ok);
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(c.and_then(|c| c.destination[0].ca_file.clone()), Some(PathBuf::from("/etc/edgeseg/ca.pem")));
        for (text, words) in [
            (web("ftp://pacs/dicom-web", ""), "needs url"),
            (web("https://", ""), "needs url"),
            (web("http://pacs:8042/dicom-web", "ca_file = \"/etc/edgeseg/ca.pem\"\n"), "https:// url only"),
            (web("https://pacs", "ca_file = \"ca.pem\"\n"), "ca_file must be an absolute path"),
            (web("https://pacs", "client_cert_file = \"/etc/edgeseg/c.pem\"\n"), "go together"),
            (web("https://pacs", "client_key_file = \"/etc/edgeseg/c.key\"\n"), "go together"),
        ] {
            let e = errs(&text);
            assert!(e.iter().any(|m| m.contains(words)), "{text}: {e:?}");
        }
    }

    #[test]
    fn defaults_parse_from_empty() {
        let (c, d) = check(Path::new("c.toml"), "");
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(c, Some(Config::default()));
    }

    #[test]
    fn every_error_with_place() {
        let text = "[watch]\nsettle_seconds = \"x\"\nfoo = 1\n\n[model]\npath = \"rel\"\nbar = true\n[nope]\na = 1\n";
        let e = errs(text);
        assert!(e.iter().any(|m| m.starts_with("c.toml:2:18:")), "{e:?}");
        assert!(e.iter().any(|m| m.starts_with("c.toml:3:1:") && m.contains("foo")), "{e:?}");
        assert!(e.iter().any(|m| m.starts_with("c.toml:7:1:") && m.contains("bar")), "{e:?}");
        assert!(e.iter().any(|m| m.starts_with("c.toml:8:") && m.contains("nope")), "{e:?}");
        assert!(e.iter().any(|m| m.starts_with("c.toml:6:1: [model] path: rel")), "{e:?}");
        assert_eq!(e.len(), 5, "{e:?}");
        assert!(e[0].starts_with("c.toml:2:18:"), "sorted by place: {e:?}");
        let e = errs("[model]\npath = \"rel\"\n[metrics]\nlisten = \"localhost\"\n");
        assert!(e.iter().any(|m| m.starts_with("c.toml:4:10:")), "{e:?}");
        for ok in ["localhost:9464", "edge-box.example.org:0", "[::1]:9464", "0.0.0.0:9464", "127.0.0.1:9464"] {
            assert!(errs(&format!("[metrics]\nlisten = \"{ok}\"\n")).is_empty(), "{ok}");
        }
        for bad in ["localhost", "localhost:port", "a b:1", ":9464", "host:70000", "-x:1"] {
            let e = errs(&format!("[metrics]\nlisten = \"{bad}\"\n"));
            assert!(e.len() == 1 && e[0].starts_with("c.toml:2:10: [metrics] listen:"), "{bad}: {e:?}");
        }
        let l = ListenAddr::parse("localhost:0").expect("host name");
        assert!(l.resolve().expect("localhost resolves").ip().is_loopback());
        assert_eq!(ListenAddr::parse("[::1]:9").expect("v6").to_string(), "[::1]:9");
        let e = errs("[model]\npath = \"rel\"\n");
        assert_eq!(e, vec!["c.toml:2:1: [model] path: rel: must be an absolute path".to_string()]);
    }

    #[test]
    fn bf16_is_off_by_default_and_needs_the_openvino_provider() {
        assert!(!Config::default().model.bf16, "FP32 is the default");
        let (c, d) = check(Path::new("c.toml"), "[model]\nprovider = \"openvino\"\nbf16 = true\n");
        assert!(d.is_empty(), "{d:?}");
        assert!(c.expect("config").model.bf16);
        let e = errs("[model]\nprovider = \"cpu\"\nbf16 = true\n");
        assert_eq!(e, vec!["c.toml:3:1: [model] bf16: needs provider = \"openvino\", not \"cpu\"".to_string()]);
        let e = errs("[model]\nbf16 = \"yes\"\n");
        assert!(e.iter().any(|m| m.starts_with("c.toml:2:") && m.contains("bf16")), "{e:?}");
    }

    #[test]
    fn gpu_postprocess_and_provider_are_parsed_once_into_their_choices() {
        use crate::gpu::select::PostprocessChoice;
        let (c, d) = check(Path::new("c.toml"), "[gpu]\npostprocess = \"cuda\"\n[model]\nprovider = \"tensorrt\"\n");
        assert!(d.is_empty(), "{d:?}");
        let c = c.expect("config");
        assert_eq!(c.gpu.postprocess, PostprocessChoice::Cuda);
        assert_eq!(c.model.provider, ProviderRequest::Tensorrt);
        assert_eq!(Config::default().gpu.postprocess, PostprocessChoice::Auto);
        // The key, its place and the allowed values, in the words of the one
        // parser the command line's --postprocess and --provider use too.
        let e = errs("[gpu]\npostprocess = \"gpu\"\n[model]\nprovider = \"npu\"\n");
        let (post, provider) = ("gpu".parse::<PostprocessChoice>(), "npu".parse::<ProviderRequest>());
        assert_eq!(post, Err("\"gpu\": expected auto, cuda or cpu".to_string()));
        assert_eq!(provider, Err("\"npu\": expected auto, cpu, cuda, tensorrt or openvino".to_string()));
        assert_eq!(
            e,
            vec![
                format!("c.toml:2:15: [gpu] postprocess: {}", post.unwrap_err()),
                format!("c.toml:4:12: [model] provider: {}", provider.unwrap_err()),
            ]
        );
    }

    #[test]
    fn capacities_are_enforced() {
        let folders: Vec<String> = (0..9).map(|i| format!("\"/e{i}\"")).collect();
        let e = errs(&format!("[watch]\nfolders = [{}]\n", folders.join(", ")));
        assert!(e.len() == 1 && e[0].contains("at most 8"), "{e:?}");
        let long = "x".repeat(65);
        let e = errs(&format!("[watch]\ntemp_patterns = [\"{long}\"]\n"));
        assert!(e.len() == 1 && e[0].contains("longer than 64"), "{e:?}");
    }

    proptest::proptest! {
        /// No text makes the checker panic or loop; every place lies in the file.
        #[test]
        fn check_never_panics(lines in proptest::collection::vec(
            proptest::sample::select(vec![
                "[watch]", "[model]", "[nope]", "folders = [\"/a\", \"rel\"]", "settle_seconds = -1",
                "settle_seconds = \"x\"", "mode = \"poll\"", "mode = 3", "x = 1", "[metrics]",
                "listen = \"::\"", "temp_patterns = [\"é*\", \"\"]", "bus = \"off\"", "[dbus]",
                "folders = [", "\"/b\",", "]", "ünïcödé = \"ö\"", "a.b = 1", "[[arr]]", "= =", "",
            ]),
            0..24,
        )) {
            let text = lines.join("\n");
            let (_, diags) = check(Path::new("p.toml"), &text);
            let n_lines = text.lines().count().max(1);
            for d in diags {
                if let Some(l) = d.line {
                    proptest::prop_assert!(l <= n_lines + 1, "{d} in\n{text}");
                }
            }
        }
    }

    #[test]
    fn glob() {
        assert!(glob_match("*.tmp", "a.tmp"));
        assert!(!glob_match("*.tmp", "a.tmpx"));
        assert!(glob_match(".*", ".hidden"));
        assert!(!glob_match(".*", "visible"));
        assert!(glob_match("a?c*", "abcdef"));
        assert!(glob_match("*", ""));
    }

    /// `[limits] memory_mb` wins; 0 takes 80 % of the smaller of the
    /// machine's memory and the cgroup's limit, and says which.
    #[test]
    fn memory_budget_from_the_key_or_the_machine() {
        use crate::sys::MemoryLimits;
        let (c, d) = check(Path::new("c.toml"), "[watch]\nfolders = [\"/x\"]\n[limits]\nmemory_mb = 3000\n");
        assert!(d.is_empty(), "{d:?}");
        let c = c.expect("parses");
        let machine = MemoryLimits { total: Some(16 << 30), cgroup: Some(4 << 30) };
        let b = c.limits.budget(&machine);
        assert_eq!((b.bytes, b.source), (3000 << 20, BudgetSource::Configured));
        assert_eq!(b.to_string(), "3000 MB ([limits] memory_mb)");
        let auto = LimitsConfig::default();
        let b = auto.budget(&machine);
        assert_eq!((b.bytes, b.source), ((4u64 << 30) / 5 * 4, BudgetSource::Cgroup));
        assert_eq!(b.to_string(), "3277 MB (80 % of the service's MemoryMax)");
        let b = auto.budget(&MemoryLimits { total: Some(16 << 30), cgroup: None });
        assert_eq!((b.bytes, b.source), ((16u64 << 30) / 5 * 4, BudgetSource::Machine));
        assert_eq!(auto.budget(&MemoryLimits::default()).source, BudgetSource::Assumed);
        let e = errs("[limits]\nmemory_gb = 3\n");
        assert!(e.iter().any(|m| m.contains("memory_gb")), "{e:?}");
    }
}

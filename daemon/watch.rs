//! Watch stage: the export folder trees to complete studies.
//!
//! Files are found by inotify (crate `notify`, recursive, symlinks not
//! followed) with a full rescan every 10 polling periods as a safety net, or
//! by rescanning every `poll_interval_seconds` (mode `poll`, network shares;
//! also chosen by itself when inotify cannot be set up). Names matching a
//! temporary pattern (any component below the watched folder) are ignored
//! until renamed; a symlink is taken only when it resolves inside the watched
//! folder. Each new or changed file has its header read (ingest's reader: it
//! stops before the pixel data) and is grouped by StudyInstanceUID and
//! SeriesInstanceUID.
//!
//! A series is complete when none of its files appeared or changed for
//! `settle_seconds` and, where its headers give an expected count
//! (NumberOfSlices × NumberOfTimeSlices, ImagesInAcquisition), that many
//! images are there; a series still short of its count after
//! `pair_wait_seconds` without change counts as complete (the pipeline then
//! decides, quarantining it if it cannot be used). A study
//! is ready when all its series are complete, no unreadable file changed
//! within the settle time (a file still being written), and it has the series
//! the model's channels need (PET+CT; two CTs for arterial+venous) or
//! `pair_wait_seconds` has passed since it was first seen.
//!
//! The daemon processes a study's files in place from the export folder: the
//! watcher hands over the list of paths (recorded in the journal), and nothing
//! here moves or changes the input.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Component, Path, PathBuf};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{SystemTime, UNIX_EPOCH};

use notify::Watcher as _;
use sha2::{Digest, Sha256};

use crate::config::{WatchConfig, WatchMode, glob_match};
use crate::ingest::scan::{HeaderRead, read_header};
use crate::queue::FileSig;

/// Most extra folders handed in by Enqueue that are kept watched.
pub const MAX_EXTRA_FOLDERS: usize = 8;

/// Most new or changed files whose header one poll reads; the rest wait for
/// the next poll, so a large folder found at start never stalls the main
/// loop (and its watchdog). No study becomes ready while files wait.
pub const MAX_READS_PER_POLL: usize = 2000;

/// What the watcher needs to know.
#[derive(Debug, Clone)]
pub struct WatchSettings {
    /// The `[watch]` section.
    pub config: WatchConfig,
    /// Series per modality the model needs (e.g. PT:1, CT:1).
    pub required: BTreeMap<String, usize>,
}

/// A change the daemon acts on.
#[derive(Debug, Clone, PartialEq)]
pub enum StudyEvent {
    /// Files of a study appeared, changed or went away.
    Changed {
        /// StudyInstanceUID.
        uid: String,
        /// Its files now.
        files: Vec<FileSig>,
        /// Their fingerprint.
        fingerprint: String,
    },
    /// A study is complete.
    Ready {
        /// StudyInstanceUID.
        uid: String,
        /// Its files.
        files: Vec<FileSig>,
        /// Their fingerprint.
        fingerprint: String,
        /// The series the model needs are all there (false: `pair_wait_seconds` passed).
        paired: bool,
    },
    /// A file whose header cannot be read (not DICOM, truncated, sizes
    /// beyond the limits ...) stayed unchanged for the settle time: no study
    /// can be named from it, so it is reported on its own, once per version
    /// of the file.
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why it cannot be read.
        reason: String,
    },
}

#[derive(Debug, Clone)]
struct FileInfo {
    study: String,
    series: String,
    modality: String,
    expected: Option<u32>,
    frames: usize,
}

#[derive(Debug, Clone)]
struct FileState {
    size: u64,
    mtime_ns: u128,
    changed_at: f64,
    info: Option<FileInfo>,
    /// Why the header could not be read (None: read, or not an image object).
    error: Option<String>,
    /// The error was reported (`StudyEvent::Unreadable`).
    reported: bool,
}

#[derive(Debug, Clone)]
struct Track {
    first_seen: f64,
    ready_sent: bool,
}

/// The watcher.
pub struct Watcher {
    settings: WatchSettings,
    files: HashMap<PathBuf, FileState>,
    studies: HashMap<String, Track>,
    extra: Vec<PathBuf>,
    events: Option<Receiver<notify::Result<notify::Event>>>,
    inotify: Option<notify::RecommendedWatcher>,
    last_full_scan: f64,
    warned: BTreeSet<PathBuf>,
    backlog: Vec<PathBuf>,
}

/// Seconds since the epoch.
fn epoch() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

impl Watcher {
    /// Sets up watching (inotify, or polling by configuration or when inotify
    /// cannot be set up). The first [`Watcher::poll`] scans every folder.
    pub fn new(settings: WatchSettings) -> Self {
        let mut w = Self {
            settings,
            files: HashMap::new(),
            studies: HashMap::new(),
            extra: Vec::new(),
            events: None,
            inotify: None,
            last_full_scan: f64::NEG_INFINITY,
            warned: BTreeSet::new(),
            backlog: Vec::new(),
        };
        if w.settings.config.mode == WatchMode::Inotify {
            w.arm_inotify();
        }
        w
    }

    fn arm_inotify(&mut self) {
        let (tx, rx) = std::sync::mpsc::channel();
        let cfg = notify::Config::default().with_follow_symlinks(false);
        let mut watcher = match notify::RecommendedWatcher::new(tx, cfg) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(
                    "inotify unavailable ({e}); polling every {} s",
                    self.settings.config.poll_interval_seconds
                );
                return;
            }
        };
        for f in &self.settings.config.folders {
            if let Err(e) = watcher.watch(f, notify::RecursiveMode::Recursive) {
                tracing::warn!(
                    "{}: inotify watch failed ({e}); polling every {} s",
                    f.display(),
                    self.settings.config.poll_interval_seconds
                );
                return;
            }
        }
        self.events = Some(rx);
        self.inotify = Some(watcher);
    }

    /// Whether inotify is in use (else polling).
    pub fn uses_inotify(&self) -> bool {
        self.inotify.is_some()
    }

    /// Whether every watched folder is a readable folder.
    pub fn armed(&self) -> bool {
        self.settings.config.folders.iter().all(|f| std::fs::read_dir(f).is_ok())
    }

    /// Studies currently tracked.
    pub fn study_count(&self) -> usize {
        self.studies.len()
    }

    /// Adds a folder (D-Bus Enqueue) to be scanned like an export folder.
    pub fn enqueue(&mut self, path: &Path) {
        if !self.extra.iter().any(|p| p == path) {
            if self.extra.len() >= MAX_EXTRA_FOLDERS {
                self.extra.remove(0);
            }
            self.extra.push(path.to_path_buf());
        }
        self.last_full_scan = f64::NEG_INFINITY;
    }

    fn roots(&self) -> Vec<PathBuf> {
        self.settings.config.folders.iter().cloned().chain(self.extra.iter().cloned()).collect()
    }

    fn is_temp(&self, root: &Path, path: &Path) -> bool {
        let rel = path.strip_prefix(root).unwrap_or(path);
        rel.components().any(|c| match c {
            Component::Normal(n) => {
                let n = n.to_string_lossy();
                self.settings.config.temp_patterns.iter().any(|p| glob_match(p, &n))
            }
            _ => false,
        })
    }

    fn root_of(&self, path: &Path) -> Option<PathBuf> {
        self.roots().into_iter().find(|r| path.starts_with(r))
    }

    /// Lists the files under a root (symlinks resolving outside it refused).
    fn walk(&mut self, root: &Path, out: &mut Vec<PathBuf>) {
        let canonical = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
        for entry in walkdir::WalkDir::new(root).follow_links(false) {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    let p = e.path().map(Path::to_path_buf).unwrap_or_else(|| root.to_path_buf());
                    if self.warned.insert(p.clone()) {
                        let roots = self.roots();
                        let label = crate::redact::file_label(&p, &roots);
                        let why = crate::redact::Redactor::new(&roots).with_files([p.as_path()]).redact(&e.to_string());
                        tracing::warn!("{label}: cannot read ({why})");
                    }
                    continue;
                }
            };
            let p = entry.path();
            if entry.file_type().is_dir() || self.is_temp(root, p) {
                continue;
            }
            if entry.file_type().is_symlink() {
                match std::fs::canonicalize(p) {
                    Ok(real) if real.starts_with(&canonical) && real.is_file() => out.push(p.to_path_buf()),
                    _ => {
                        if self.warned.insert(p.to_path_buf()) {
                            let label = crate::redact::file_label(p, &self.roots());
                            tracing::warn!("{label}: symlink leading outside the watched folder, ignored");
                        }
                    }
                }
                continue;
            }
            if entry.file_type().is_file() {
                out.push(p.to_path_buf());
            }
        }
    }

    /// Reads what changed and returns the studies that changed or became ready.
    pub fn poll(&mut self) -> Vec<StudyEvent> {
        let now = epoch();
        let cfg = &self.settings.config;
        let rescan_every =
            if self.inotify.is_some() { cfg.poll_interval_seconds * 10.0 } else { cfg.poll_interval_seconds };
        let mut candidates: Vec<PathBuf> = Vec::new();
        let mut full = false;
        if let Some(rx) = &self.events {
            loop {
                match rx.try_recv() {
                    Ok(Ok(ev)) => {
                        // Reads (our own header reads and folder walks among
                        // them) are not changes; a write being closed is.
                        use notify::EventKind::Access;
                        use notify::event::{AccessKind, AccessMode};
                        let relevant = match ev.kind {
                            Access(AccessKind::Close(AccessMode::Write)) => true,
                            Access(_) => false,
                            _ => true,
                        };
                        if relevant {
                            candidates.extend(ev.paths);
                        }
                    }
                    Ok(Err(e)) => {
                        tracing::warn!("inotify: {e}; rescanning");
                        full = true;
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        full = true;
                        break;
                    }
                }
            }
        }
        if full || now - self.last_full_scan >= rescan_every {
            self.last_full_scan = now;
            candidates.clear();
            for root in self.roots() {
                self.walk(&root, &mut candidates);
            }
            let present: BTreeSet<&PathBuf> = candidates.iter().collect();
            let gone: Vec<PathBuf> = self.files.keys().filter(|p| !present.contains(p)).cloned().collect();
            candidates.extend(gone);
        } else {
            // Event paths: directories are walked (a folder moved in), temp names skipped.
            candidates.sort();
            candidates.dedup();
            let mut expanded = Vec::new();
            for p in std::mem::take(&mut candidates) {
                let Some(root) = self.root_of(&p) else { continue };
                if self.is_temp(&root, &p) {
                    continue;
                }
                match std::fs::symlink_metadata(&p) {
                    Ok(m) if m.is_dir() => {
                        self.walk(&p, &mut expanded);
                        let gone: Vec<PathBuf> =
                            self.files.keys().filter(|f| f.starts_with(&p) && !f.exists()).cloned().collect();
                        expanded.extend(gone);
                    }
                    Ok(m) if m.file_type().is_symlink() => {
                        let mut one = Vec::new();
                        self.walk(&p, &mut one);
                        expanded.extend(one);
                    }
                    Ok(_) => expanded.push(p),
                    Err(_) => {
                        // Gone: the file, or a folder of files.
                        let gone: Vec<PathBuf> = self.files.keys().filter(|f| f.starts_with(&p)).cloned().collect();
                        expanded.extend(gone);
                    }
                }
            }
            candidates = expanded;
        }
        candidates.append(&mut self.backlog);
        candidates.sort();
        candidates.dedup();
        let mut touched: BTreeSet<String> = BTreeSet::new();
        let mut reads = 0;
        for p in candidates {
            if reads >= MAX_READS_PER_POLL {
                self.backlog.push(p);
                continue;
            }
            if self.update_file(&p, now, &mut touched) {
                reads += 1;
            }
        }
        let mut out = Vec::new();
        for uid in &touched {
            let (files, fingerprint) = self.study_files(uid);
            if files.is_empty() {
                self.studies.remove(uid);
                continue;
            }
            let t = self.studies.entry(uid.clone()).or_insert(Track { first_seen: now, ready_sent: false });
            t.ready_sent = false;
            out.push(StudyEvent::Changed { uid: uid.clone(), files, fingerprint });
        }
        if self.backlog.is_empty() {
            out.extend(self.ready_studies(now));
        }
        let settle = self.settings.config.settle_seconds;
        for (path, f) in self.files.iter_mut() {
            if let Some(reason) = &f.error
                && !f.reported
                && now - f.changed_at >= settle
            {
                f.reported = true;
                out.push(StudyEvent::Unreadable { path: path.clone(), reason: reason.clone() });
            }
        }
        out
    }

    /// Updates one file; true when its header was read.
    fn update_file(&mut self, p: &Path, now: f64, touched: &mut BTreeSet<String>) -> bool {
        let meta = match std::fs::metadata(p) {
            Ok(m) if m.is_file() => m,
            _ => {
                if let Some(old) = self.files.remove(p)
                    && let Some(i) = old.info
                {
                    touched.insert(i.study);
                }
                return false;
            }
        };
        let mtime_ns = meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_nanos());
        let mtime_ns = mtime_ns.unwrap_or(0);
        let size = meta.len();
        let previous = self.files.get(p);
        if previous.is_some_and(|f| f.size == size && f.mtime_ns == mtime_ns) {
            return false;
        }
        // A new file found by a scan counts from its modification time (files
        // that waited while the daemon was down are settled at once); a change
        // seen later counts from now.
        let changed_at = if previous.is_none() { (mtime_ns as f64 / 1e9).min(now) } else { now };
        let (info, error) = match read_header(p, p) {
            Ok(HeaderRead::Image(h)) => (
                Some(FileInfo {
                    study: h.study_uid.clone(),
                    series: h.series_uid.clone(),
                    modality: h.modality.clone(),
                    expected: h.expected_images,
                    frames: h.frames.len().max(1),
                }),
                None,
            ),
            Ok(HeaderRead::Skipped(why)) => {
                // Not an error and no quarantine record: the file is no
                // image volume (a directory file, a report, a screen shot ...).
                tracing::info!("{}: skipped, {why}", crate::redact::file_label(p, &self.roots()));
                (None, None)
            }
            Err(e) => (None, Some(e.to_string())),
        };
        if let Some(old) = previous.and_then(|f| f.info.as_ref())
            && info.as_ref().is_none_or(|i| i.study != old.study)
        {
            touched.insert(old.study.clone());
        }
        if let Some(i) = &info {
            touched.insert(i.study.clone());
        }
        self.files.insert(p.to_path_buf(), FileState { size, mtime_ns, changed_at, info, error, reported: false });
        true
    }

    fn study_files(&self, uid: &str) -> (Vec<FileSig>, String) {
        let mut list: Vec<(&PathBuf, &FileState)> =
            self.files.iter().filter(|(_, f)| f.info.as_ref().is_some_and(|i| i.study == uid)).collect();
        list.sort_by(|a, b| a.0.cmp(b.0));
        let mut h = Sha256::new();
        for (p, f) in &list {
            h.update(p.to_string_lossy().as_bytes());
            h.update([0]);
            h.update(f.size.to_le_bytes());
            h.update(f.mtime_ns.to_le_bytes());
        }
        let fp: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        (list.into_iter().map(|(p, f)| FileSig { path: p.clone(), size: f.size, mtime_ns: f.mtime_ns }).collect(), fp)
    }

    fn ready_studies(&mut self, now: f64) -> Vec<StudyEvent> {
        let settle = self.settings.config.settle_seconds;
        // A file being written may not have a readable header yet.
        let unsettled_unreadable = self.files.values().any(|f| f.info.is_none() && now - f.changed_at < settle);
        if unsettled_unreadable {
            return Vec::new();
        }
        struct Series {
            modality: String,
            last: f64,
            frames: usize,
            expected: Option<u32>,
        }
        let mut per_study: BTreeMap<&str, BTreeMap<&str, Series>> = BTreeMap::new();
        for f in self.files.values() {
            let Some(i) = &f.info else { continue };
            let s = per_study.entry(&i.study).or_default().entry(&i.series).or_insert(Series {
                modality: i.modality.clone(),
                last: f.changed_at,
                frames: 0,
                expected: None,
            });
            s.last = s.last.max(f.changed_at);
            s.frames += i.frames;
            s.expected = s.expected.max(i.expected);
        }
        let mut ready = Vec::new();
        for (uid, series) in per_study {
            let Some(track) = self.studies.get(uid) else { continue };
            if track.ready_sent {
                continue;
            }
            // A series short of its expected count waits, but not forever: after
            // pair_wait_seconds without change it counts as complete (a file the
            // scanner never sent must not hold the study back for good).
            let wait = self.settings.config.pair_wait_seconds.max(settle);
            let complete = series.values().all(|s| {
                now - s.last >= settle && (s.expected.is_none_or(|n| s.frames >= n as usize) || now - s.last >= wait)
            });
            if !complete {
                continue;
            }
            let mut have: BTreeMap<&str, usize> = BTreeMap::new();
            for s in series.values() {
                *have.entry(&s.modality).or_default() += 1;
            }
            let paired = self.settings.required.iter().all(|(m, n)| have.get(m.as_str()).copied().unwrap_or(0) >= *n);
            if paired || now - track.first_seen >= self.settings.config.pair_wait_seconds {
                ready.push((uid.to_string(), paired));
            }
        }
        ready
            .into_iter()
            .map(|(uid, paired)| {
                if let Some(t) = self.studies.get_mut(&uid) {
                    t.ready_sent = true;
                }
                let (files, fingerprint) = self.study_files(&uid);
                StudyEvent::Ready { uid, files, fingerprint, paired }
            })
            .collect()
    }
}

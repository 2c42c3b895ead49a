//! What the service says about itself between the events that change it:
//! the daemon state and STATUS line, queue depth and study ages, the status
//! page's queue, results and quarantine list, and each study's state change
//! as one log line (by hash, paths and UIDs redacted).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::Daemon;
use crate::observe::{DaemonState, QueueItem, ResultItem, StudyOutcome};
use crate::pipeline::StageTimings;
use crate::quarantine;
use crate::queue::{self, StudyState, uid_hash};
use crate::redact::Redactor;

/// What was last reported, so only changes are reported again.
pub(crate) struct Status {
    state: DaemonState,
    last_counts: Option<(u64, u64)>,
    /// When the status page's queue was last refreshed.
    last_page: Option<Instant>,
    /// When the quarantine folder was last read; None: read it at the next tick.
    last_quarantine_scan: Option<Instant>,
}

impl Default for Status {
    fn default() -> Self {
        Status { state: DaemonState::Starting, last_counts: None, last_page: None, last_quarantine_scan: None }
    }
}

impl Status {
    /// The quarantine folder changed: read it at the next tick.
    pub(crate) fn quarantine_changed(&mut self) {
        self.last_quarantine_scan = None;
    }

    /// The queue changed: refresh the status page's at the next tick.
    pub(crate) fn page_changed(&mut self) {
        self.last_page = None;
    }
}

impl Daemon<'_> {
    /// Replaces the paths of `files` (and of anything under the watch
    /// folders) and the study's UID in a text bound for logs, the journal,
    /// D-Bus or reason.txt.
    pub(super) fn redact(&self, uid: &str, files: &[PathBuf], text: &str) -> String {
        let t = Redactor::new(&self.watch_roots()).with_files(files.iter().map(PathBuf::as_path)).redact(text);
        let t = if uid.is_empty() { t } else { t.replace(uid, &uid_hash(uid)) };
        crate::redact::hash_uids(&t)
    }

    pub(super) fn watch_roots(&self) -> Vec<PathBuf> {
        self.config.watch.folders.iter().cloned().collect()
    }

    pub(super) fn set_state(&mut self, s: DaemonState) {
        if s != self.status.state {
            self.status.state = s;
            self.reporter.set_state(s);
        }
    }

    pub(super) fn update_state(&mut self, stopping: bool) {
        let s = if stopping {
            DaemonState::Stopping
        } else if !self.work.in_flight.is_empty() {
            DaemonState::Running
        } else if self.paused {
            DaemonState::Paused
        } else if !self.guard.ready.disk_ok {
            DaemonState::DiskLow
        } else {
            DaemonState::Idle
        };
        let changed = s != self.status.state;
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
            && self.status.last_counts != Some((depth, q))
        {
            self.status.last_counts = Some((depth, q));
            self.reporter.set_queue_depth(depth);
            self.reporter.set_quarantined(q);
        }
        if let Ok((waiting, running)) = self.journal.waiting_and_running_since() {
            let now = queue::now();
            self.reporter.study_ages(waiting.map(|t| now - t), running.map(|t| now - t));
        }
        if self.work.in_flight.is_empty() {
            self.work.batch_started = 0;
        }
        self.refresh_page();
    }

    /// The status page's queue (every second) and quarantine (every 30 s,
    /// or at once after a change; stale file records are removed then).
    fn refresh_page(&mut self) {
        if self.status.last_page.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            self.status.last_page = Some(Instant::now());
            let now = queue::now();
            if let Ok(active) = self.journal.active() {
                let items = active
                    .into_iter()
                    .map(|e| {
                        let stage = match e.state {
                            StudyState::Running => {
                                self.work.stages.get(&e.uid).cloned().unwrap_or_else(|| "starting".to_string())
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
        if self.status.last_quarantine_scan.is_none_or(|t| t.elapsed() >= Duration::from_secs(30)) {
            self.status.last_quarantine_scan = Some(Instant::now());
            let folder = self.config.state.quarantine();
            for name in quarantine::remove_stale_file_records(&folder, &BTreeSet::new()) {
                tracing::info!(record = %name, "quarantine record removed: its file is gone");
            }
            self.reporter.quarantine_records(quarantine::list(&folder));
        }
    }

    /// The STATUS line while a study runs: its position in the batch, its
    /// hash and its stage.
    pub(super) fn status_line(&self) {
        if let Some(uid) = &self.work.current {
            let waiting = self.journal.count(StudyState::Ready).unwrap_or(0) as usize;
            let started = self.work.batch_started.max(1);
            let position = started.saturating_sub(self.work.in_flight.len().saturating_sub(1)).max(1);
            let stage = if self.work.stage.is_empty() { "starting" } else { &self.work.stage };
            self.reporter.set_status_line(&format!(
                "study {position} of {} ({}): {stage}",
                started + waiting,
                uid_hash(uid)
            ));
        }
    }

    /// A finished study for the status page's results.
    pub(super) fn result(&self, uid: &str, outcome: StudyOutcome, created: Option<f64>, t: Option<&StageTimings>) {
        let now = queue::now();
        let stages = t.map(|t| t.by_stage().into_iter().map(|(s, v)| (s.to_string(), v)).collect()).unwrap_or_default();
        self.reporter.study_result(ResultItem {
            hash: uid_hash(uid),
            outcome: outcome.as_str().to_string(),
            finished_at: now,
            latency: created.map(|c| now - c),
            stages,
        });
    }

    /// Logs a study's state change, by hash (never the full UID).
    pub(super) fn log_state(&self, uid: &str, state: StudyState, detail: &str) {
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
}

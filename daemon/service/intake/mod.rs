//! Intake: study events (files changed, a study complete, a file that
//! cannot be read) into the journal: `seen`, then `ready` once complete (or
//! quarantined when its pair never came). The export-folder watcher is one
//! source ([`folders`]); another intake is a file here that gives
//! [`StudyEvent`]s and one line in [`Intake::poll`].

pub(crate) mod folders;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::Daemon;
use crate::config::UnpairedAction;
use crate::infer::model::Channel;
use crate::ingest::scan::{HeaderRead, read_header};
use crate::ingest::{FileError, FolderIndex};
use crate::observe::FileResult;
use crate::quarantine;
use crate::queue::{self, QueueError, StudyState};
use crate::redact::file_label;
use crate::watch::{StudyEvent, Watcher};

/// The intake's state in the main loop.
pub(crate) struct Intake {
    /// The export-folder watcher.
    pub(crate) watcher: Watcher,
    /// Series the model needs, by modality (a study is complete with them).
    pub(crate) required: BTreeMap<String, usize>,
    /// Studies whose arrival was logged since they were last complete: while
    /// an export goes on, "files changed" is logged once, not at every scan.
    arriving: BTreeSet<String>,
}

impl Intake {
    pub(crate) fn new(watcher: Watcher, required: BTreeMap<String, usize>) -> Self {
        Intake { watcher, required, arriving: BTreeSet::new() }
    }

    /// The events of every source since the last tick.
    fn poll(&mut self) -> Vec<StudyEvent> {
        self.watcher.poll()
    }
}

/// The series a study needs, by modality, from the model's channels.
pub(crate) fn required_series(channels: &[Channel]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for c in channels {
        *m.entry(c.modality.clone()).or_insert(0) += 1;
    }
    m
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

impl Daemon<'_> {
    pub(super) fn handle_events(&mut self) {
        for ev in self.intake.poll() {
            let r = match ev {
                StudyEvent::Changed { uid, files, fingerprint } => {
                    match self.journal.observe(&uid, &files, &fingerprint) {
                        Ok(queue::Observed::New) => {
                            self.log_state(&uid, StudyState::Seen, "new study");
                            self.intake.arriving.insert(uid);
                            Ok(())
                        }
                        Ok(queue::Observed::Changed) => {
                            if !self.intake.arriving.contains(&uid) {
                                self.log_state(&uid, StudyState::Seen, "files changed (more may follow)");
                                self.intake.arriving.insert(uid);
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
                    self.status.quarantine_changed();
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
        self.intake.arriving.remove(uid);
        if was != Some(StudyState::Seen) && was != Some(StudyState::Running) {
            return Ok(());
        }
        if !paired && self.config.watch.unpaired == UnpairedAction::Quarantine && was == Some(StudyState::Seen) {
            let need: Vec<String> = self.intake.required.iter().map(|(m, n)| format!("{n} {m}")).collect();
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

    /// A file no study can be named from: a quarantine record of its own
    /// ([`quarantine::file_record_dir`]); the file is left where it is
    /// (nothing of the input is lost).
    fn quarantine_file(&mut self, path: &Path, reason: &str) {
        let label = file_label(path, &self.watch_roots());
        let reason = self.redact("", &[path.to_path_buf()], reason);
        let dir = quarantine::file_record_dir(&self.config.state.quarantine(), path);
        if dir.exists() {
            return;
        }
        self.reporter.files(FileResult::Refused, 1);
        match quarantine::write_file_record(&dir, &label, &reason, path) {
            Ok(()) => {
                tracing::warn!(record = %dir.display(), "unreadable file quarantined in {}: {reason}", dir.display())
            }
            Err(e) => tracing::error!("{}: cannot write the quarantine record: {e}", dir.display()),
        }
    }
}

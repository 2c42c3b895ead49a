//! A study's end, from the worker's outcome: done (outputs in place, its
//! quarantine records cleared), quarantined (bad input: a record written,
//! the input left in place), retried after a backoff, or failed for good.
//! The journal is written first, then the reporter is told.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::Daemon;
use super::ServiceError;
use super::workers::Outcome;
use super::workers::loader::unreadable_first;
use crate::ingest::ErrorClass;
use crate::observe::{FileResult, StudyOutcome};
use crate::quarantine;
use crate::queue::{self, QueueError, StudyState, uid_hash};

impl Daemon<'_> {
    pub(super) fn finished(&mut self, o: Outcome) -> Result<(), ServiceError> {
        // The study's memory is given back once its end is recorded (at
        // return, also on an error), so the next study loads after that.
        let _reservation = o.reservation;
        self.work.in_flight.retain(|u| u != &o.uid);
        if o.out_of_memory {
            self.work.out_of_memory.insert(o.uid.clone());
        }
        self.work.stages.remove(&o.uid);
        self.status.page_changed();
        let uid = o.uid;
        match o.result {
            Ok((dir, t)) => {
                for (stage, s) in t.by_stage() {
                    self.reporter.observe_stage(stage, s);
                }
                let entry = self.journal.get(&uid)?;
                let state = self.journal.done(&uid, &dir)?;
                self.log_state(&uid, state, &format!("outputs in {}", self.config.output.folder.display()));
                self.reporter.study_finished(&uid, StudyOutcome::Done, Some(&dir));
                self.result(&uid, StudyOutcome::Done, entry.as_ref().map(|e| e.created), Some(&t));
                if let Some(e) = entry {
                    self.reporter.files(FileResult::Ingested, e.files.len() as u64);
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
                self.failed(&uid, &reason)?;
            }
        }
        if self.work.current.as_deref() == Some(uid.as_str()) {
            let next = self.work.in_flight.first().cloned();
            self.set_current(next);
            self.status_line();
        }
        Ok(())
    }

    /// A failed attempt: run again after a backoff, or failed for good once
    /// `[queue] max_attempts` are spent.
    fn failed(&mut self, uid: &str, reason: &str) -> Result<(), ServiceError> {
        let attempts = self.journal.get(uid)?.map(|e| e.attempts).unwrap_or(1);
        let q = &self.config.queue;
        let retry = (attempts < q.max_attempts)
            .then(|| q.backoff_seconds * 2f64.powi(attempts.saturating_sub(1).min(20) as i32));
        let state = self.journal.failed(uid, reason, retry)?;
        match retry {
            Some(s) if state == StudyState::Ready => {
                self.reporter.retried();
                self.log_state(uid, state, &format!("attempt {attempts} failed, retry in {s:.0} s: {reason}"))
            }
            _ => {
                self.log_state(uid, state, reason);
                if state == StudyState::Failed {
                    self.reporter.study_finished(uid, StudyOutcome::Failed, None);
                    let created = self.journal.get(uid).ok().flatten().map(|e| e.created);
                    self.result(uid, StudyOutcome::Failed, created, None);
                }
            }
        }
        Ok(())
    }

    /// Quarantines a study: its record written, the journal told, the input
    /// left where it is.
    pub(super) fn quarantine(&mut self, uid: &str, reason: &str, files: &[PathBuf]) -> Result<(), QueueError> {
        let dir = self.config.state.quarantine().join(uid_hash(uid));
        if let Err(e) = quarantine::write_study_record(&dir, uid, reason, files) {
            tracing::error!("{}: cannot write the quarantine record: {e}", dir.display());
        }
        let state = self.journal.quarantine(uid, reason, &dir)?;
        self.log_state(uid, state, reason);
        if state == StudyState::Quarantined {
            self.reporter.study_finished(uid, StudyOutcome::Quarantined, Some(&dir));
            self.reporter.files(FileResult::Refused, files.len() as u64);
            let created = self.journal.get(uid).ok().flatten().map(|e| e.created);
            self.result(uid, StudyOutcome::Quarantined, created, None);
        }
        self.status.quarantine_changed();
        Ok(())
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
        let done: BTreeSet<PathBuf> = files.iter().cloned().collect();
        let removed = quarantine::remove_stale_file_records(&folder, &done);
        if !removed.is_empty() {
            tracing::info!(
                study = %hash,
                "{} quarantine record(s) of files removed: the files went into study {hash} or are gone ({})",
                removed.len(),
                removed.join(", ")
            );
        }
        self.status.quarantine_changed();
    }

    /// A bad-input reason with the files quarantined on their own from the
    /// study's folders named first: unreadable files a study lacks are the
    /// cause of the gap or missing series the pipeline reports.
    fn with_unreadable_neighbours(&self, files: &[PathBuf], reason: String) -> String {
        if reason.contains(" could not be read (") {
            return reason;
        }
        let folders: BTreeSet<&Path> = files.iter().filter_map(|f| f.parent()).collect();
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
}

//! Which studies are in flight: ready studies from the journal to the
//! loader (one on the GPU worker and `[queue] gpu_jobs` loaded ahead, none
//! while paused or short of disk), the current study and its stage.

use std::collections::BTreeMap;
use std::sync::mpsc::Sender;

use super::workers::loader::LoadJob;
use super::{Daemon, ServiceError};
use crate::queue::{self, StudyState};

/// The studies on the workers.
pub(crate) struct Work {
    /// The loader's queue (None once the daemon stops).
    pub(crate) loads: Option<Sender<LoadJob>>,
    /// Studies sent to the loader and not finished, oldest first.
    pub(crate) in_flight: Vec<String>,
    /// The study on the GPU worker (the one the status line names).
    pub(crate) current: Option<String>,
    /// The current study's stage.
    pub(crate) stage: String,
    /// Studies started since the queue was last empty ("study 3 of 5").
    pub(crate) batch_started: usize,
    /// What each study in flight is doing (status page).
    pub(crate) stages: BTreeMap<String, String>,
    /// Studies whose last attempt ran out of memory: their retry runs on
    /// the CPU when `[model] cpu_fallback_on_oom` (held in memory: after a
    /// restart the first retry tries the GPU again).
    pub(crate) out_of_memory: std::collections::BTreeSet<String>,
}

impl Work {
    pub(crate) fn new(loads: Sender<LoadJob>) -> Self {
        Work {
            loads: Some(loads),
            in_flight: Vec::new(),
            current: None,
            stage: String::new(),
            batch_started: 0,
            stages: BTreeMap::new(),
            out_of_memory: std::collections::BTreeSet::new(),
        }
    }
}

impl Daemon<'_> {
    /// Starts ready studies: one on the GPU and one loading ahead.
    pub(super) fn schedule(&mut self) -> Result<(), ServiceError> {
        if self.paused || !self.guard.ready.disk_ok {
            return Ok(());
        }
        while self.work.in_flight.len() < 1 + self.config.queue.gpu_jobs as usize {
            let Some(e) = self.journal.next_ready(queue::now(), &self.work.in_flight)? else { break };
            let force_cpu = self.work.out_of_memory.remove(&e.uid) && self.config.model.cpu_fallback_on_oom;
            let entry = self.journal.start(&e.uid)?;
            self.log_state(&e.uid, StudyState::Running, &format!("attempt {}", entry.attempts));
            let job = LoadJob {
                uid: e.uid.clone(),
                files: entry.files.iter().map(|f| f.path.clone()).collect(),
                out: self.config.output.folder.clone(),
                seg_kind: self.config.output.seg_kind,
                force_cpu,
                strict_geometry: self.config.ingest.strict_geometry,
                roots: self.watch_roots(),
            };
            let sent = self.work.loads.as_ref().is_some_and(|tx| tx.send(job).is_ok());
            if !sent {
                return Err(ServiceError::Internal("the loader ended".into()));
            }
            self.work.in_flight.push(e.uid.clone());
            self.work.batch_started += 1;
            if self.work.current.is_none() {
                self.set_current(Some(e.uid.clone()));
            }
        }
        Ok(())
    }

    pub(super) fn set_current(&mut self, uid: Option<String>) {
        self.reporter.set_current_study(uid.as_deref());
        self.work.current = uid;
        self.work.stage.clear();
    }

    /// A worker's stage of a study in flight (status page; the STATUS line
    /// when it is the current study).
    pub(super) fn stage(&mut self, uid: String, stage: String) {
        self.work.stages.insert(uid.clone(), stage.clone());
        // The loader reports the study it reads ahead; the status names the GPU's.
        if self.work.current.as_deref() == Some(uid.as_str()) {
            self.work.stage = stage;
            self.status_line();
        }
    }
}

//! [`Reporter`]: what the service tells the outside world (metrics,
//! sd_notify, D-Bus, the status page), and its implementation by the
//! [`Observer`]. Every call is made from the main loop's thread.

use std::path::Path;

use super::workers::ModelSummary;
use crate::observe::{DaemonState, FileResult, FolderRole, Observer, QueueItem, Readiness, ResultItem, StudyOutcome};
use crate::quarantine;

/// Where the daemon reports to (metrics, sd_notify, D-Bus). Every call is
/// made from the main loop's thread.
pub trait Reporter {
    /// The daemon's state changed.
    fn set_state(&self, state: DaemonState);
    /// A one-line status ("idle", "study 3 of 5: inference").
    fn set_status_line(&self, line: &str);
    /// A study ended: done, failed or quarantined.
    fn study_finished(&self, study_uid: &str, outcome: StudyOutcome, output_dir: Option<&Path>);
    /// Seconds a pipeline stage took.
    fn observe_stage(&self, stage: &str, seconds: f64);
    /// Studies waiting (seen or ready).
    fn set_queue_depth(&self, depth: u64);
    /// Studies in quarantine.
    fn set_quarantined(&self, count: u64);
    /// The study being processed.
    fn set_current_study(&self, study_uid: Option<&str>);
    /// Readiness parts.
    fn set_ready(&self, ready: Readiness);
    /// Free bytes of a folder (output, state, export).
    fn disk_free(&self, folder_role: FolderRole, path: &Path, bytes: u64);
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
    /// Input files that went into a result or were refused. Default: nothing.
    fn files(&self, _result: FileResult, _count: u64) {}
    /// Seconds from a study's first file seen to its outputs written. Default: nothing.
    fn study_latency(&self, _seconds: f64) {}
    /// The memory budget studies are planned within, bytes.
    fn memory_limit(&self, _bytes: u64) {}
    /// The estimated peak memory of the study being loaded, bytes.
    fn study_memory_estimate(&self, _bytes: u64) {}
    /// The studies waiting or running, by hash, for the status page. Default: nothing.
    fn queue_items(&self, _items: Vec<QueueItem>) {}
    /// A study finished (by hash, with its stage timings), for the status
    /// page. Default: nothing.
    fn study_result(&self, _item: ResultItem) {}
    /// The quarantine records now (status page, D-Bus ListQuarantine). Default: nothing.
    fn quarantine_records(&self, _records: Vec<quarantine::Record>) {}
    /// Where the DICOM node reports delivery figures (None: nowhere).
    fn delivery_sink(&self) -> Option<std::sync::Arc<dyn crate::dicom_node::DeliverySink>> {
        None
    }
}

impl Reporter for Observer {
    fn set_state(&self, state: DaemonState) {
        Observer::set_state(self, state);
    }
    fn set_status_line(&self, line: &str) {
        Observer::set_status_line(self, line);
    }
    fn study_finished(&self, study_uid: &str, outcome: StudyOutcome, output_dir: Option<&Path>) {
        Observer::study_finished(self, study_uid, outcome.as_str(), output_dir);
    }
    fn observe_stage(&self, stage: &str, seconds: f64) {
        Observer::observe_stage(self, stage, seconds);
    }
    fn set_queue_depth(&self, depth: u64) {
        Observer::set_queue_depth(self, depth);
    }
    fn set_quarantined(&self, count: u64) {
        Observer::set_quarantined(self, count);
    }
    fn set_current_study(&self, study_uid: Option<&str>) {
        Observer::set_current_study(self, study_uid);
    }
    fn set_ready(&self, r: Readiness) {
        Observer::set_ready(self, r.model_loaded, r.watch_armed, r.disk_ok);
    }
    fn disk_free(&self, folder_role: FolderRole, path: &Path, bytes: u64) {
        Observer::disk_free(self, folder_role.as_str(), path, bytes);
    }
    fn notify_ready(&self) {
        Observer::notify_ready(self);
    }
    fn notify_watchdog(&self) {
        Observer::notify_watchdog(self);
    }
    fn notify_stopping(&self) {
        Observer::notify_stopping(self);
    }
    fn last_success(&self, unix_seconds: f64) {
        Observer::set_last_success(self, unix_seconds);
    }
    fn starts(&self, total: u64) {
        Observer::set_starts(self, total);
    }
    fn study_ages(&self, oldest_waiting: Option<f64>, running: Option<f64>) {
        Observer::set_study_ages(self, oldest_waiting, running);
    }
    fn config_reloaded(&self, ok: bool) {
        Observer::config_reloaded(self, ok);
    }
    fn retried(&self) {
        Observer::retried(self);
    }
    fn files(&self, result: FileResult, count: u64) {
        Observer::files(self, result.as_str(), count);
    }
    fn study_latency(&self, seconds: f64) {
        Observer::study_latency(self, seconds);
    }
    fn memory_limit(&self, bytes: u64) {
        Observer::set_memory_limit(self, bytes);
    }
    fn study_memory_estimate(&self, bytes: u64) {
        Observer::set_study_memory_estimate(self, bytes);
    }
    fn model_loaded(&self, m: &ModelSummary) {
        let folds: Vec<(u32, &str, &str)> =
            m.engines.iter().map(|(f, e)| (*f, e.provider.as_str(), e.precision.as_str())).collect();
        Observer::set_engines(self, &folds, m.postprocess_backend);
    }
    fn postprocess_fallback(&self) {
        Observer::postprocess_fallback(self);
    }
    fn queue_items(&self, items: Vec<QueueItem>) {
        Observer::set_queue_items(self, items);
    }
    fn study_result(&self, item: ResultItem) {
        Observer::add_result(self, item);
    }
    fn quarantine_records(&self, records: Vec<quarantine::Record>) {
        Observer::set_quarantine_records(self, records);
    }
    fn delivery_sink(&self) -> Option<std::sync::Arc<dyn crate::dicom_node::DeliverySink>> {
        Some(std::sync::Arc::new(self.clone()))
    }
}

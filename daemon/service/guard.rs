//! Readiness after startup: the disk guard (no new study while the output
//! or state folder has less than `[disk] min_free_mb`; the export folders'
//! free space reported too) and whether the export folders are readable,
//! told to the reporter as one [`Readiness`] when either changes.

use std::time::{Duration, Instant};

use super::Daemon;
use crate::observe::{FolderRole, Readiness};

/// The readiness last reported and when the disks were last read.
pub(crate) struct Guard {
    pub(crate) ready: Readiness,
    last_check: Option<Instant>,
}

impl Default for Guard {
    /// Ready: the model is loaded (the guard exists only after it is) and
    /// nothing is known to be wrong yet.
    fn default() -> Self {
        Guard { ready: Readiness { model_loaded: true, watch_armed: true, disk_ok: true }, last_check: None }
    }
}

impl Guard {
    /// Read the disks at the next check (the configuration changed).
    pub(crate) fn recheck(&mut self) {
        self.last_check = None;
    }
}

impl Daemon<'_> {
    /// Free space (every 2 s at most) and the export folders' readability.
    pub(super) fn check_disk(&mut self) {
        if self.guard.last_check.is_some_and(|t| t.elapsed() < Duration::from_secs(2)) {
            return;
        }
        self.guard.last_check = Some(Instant::now());
        let min = self.config.disk.min_free_mb.saturating_mul(1024 * 1024);
        let mut ok = true;
        for (role, path) in
            [(FolderRole::Output, &self.config.output.folder), (FolderRole::State, &self.config.state.folder)]
        {
            match crate::sys::free_bytes(path) {
                Ok(b) => {
                    self.reporter.disk_free(role, path, b);
                    if b < min {
                        ok = false;
                    }
                }
                Err(e) => tracing::warn!("{}: cannot read free space: {e}", path.display()),
            }
        }
        // The export folders fill too (the scanner writes there; retention may
        // empty them): reported, not part of the intake guard.
        for path in &self.config.watch.folders {
            if let Ok(b) = crate::sys::free_bytes(path) {
                self.reporter.disk_free(FolderRole::Export, path, b);
            }
        }
        self.set_disk_ok(ok);
        self.check_armed();
    }

    /// The disk guard's verdict, logged and reported when it changes.
    fn set_disk_ok(&mut self, ok: bool) {
        if ok != self.guard.ready.disk_ok {
            if ok {
                tracing::info!("free space is above {} MiB again: intake resumes", self.config.disk.min_free_mb);
            } else {
                tracing::warn!(
                    "free space under {} MiB on the output or state folder: no new study is started",
                    self.config.disk.min_free_mb
                );
            }
            self.guard.ready.disk_ok = ok;
            self.reporter.set_ready(self.guard.ready);
        }
    }

    /// Whether the export folders are readable, logged and reported when it changes.
    fn check_armed(&mut self) {
        let armed = self.intake.watcher.armed();
        if armed != self.guard.ready.watch_armed {
            if armed {
                tracing::info!("the export folders are readable again");
            } else {
                tracing::warn!("an export folder is not readable (unmounted share?)");
            }
            self.guard.ready.watch_armed = armed;
            self.reporter.set_ready(self.guard.ready);
        }
    }
}

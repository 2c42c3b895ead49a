//! The main loop: once armed, READY=1; then a tick every 200 ms (watchdog
//! ping, stop and reload flags, commands, intake, disk guard, retention,
//! scheduling, state, the workers' messages) until told to stop, and the
//! stop itself: no new study, the one on the GPU worker finishes within
//! [`STOP_GRACE_SECONDS`], one loaded ahead is abandoned (it restarts next time).

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Instant;

use super::intake::folders;
use super::workers::Msg;
use super::{Command, Control, Daemon, DaemonState, Readiness, STOP_GRACE_SECONDS, ServiceError, TICK};

/// A stop in progress.
struct Stopping {
    since: Instant,
    /// The study on the GPU worker when the stop began: it may finish.
    finish_first: Option<String>,
}

impl Daemon<'_> {
    /// Reports ready, then runs ticks until stopped (Ok) or a worker is gone.
    pub(super) fn serve(
        &mut self,
        control: &Control,
        commands: &Receiver<Command>,
        msgs: &Receiver<Msg>,
    ) -> Result<(), ServiceError> {
        self.check_disk();
        self.handle_events();
        self.reporter.set_ready(Readiness { watch_armed: self.intake.watcher.armed(), ..self.guard.ready });
        self.reporter.notify_ready();
        folders::log_watching(&self.config.watch, &self.intake.watcher);

        let mut stopping: Option<Stopping> = None;
        loop {
            self.reporter.notify_watchdog();
            if control.stop.load(Ordering::SeqCst) && stopping.is_none() {
                stopping = Some(self.begin_stop());
            }
            if stopping.as_ref().is_some_and(|s| self.stop_complete(s)) {
                return Ok(());
            }
            if control.reload.swap(false, Ordering::SeqCst) {
                self.reload();
            }
            while let Ok(c) = commands.try_recv() {
                self.command(c);
            }
            if stopping.is_none() {
                self.handle_events();
                self.check_disk();
                self.retention();
                self.schedule()?;
            }
            self.update_state(stopping.is_some());
            match msgs.recv_timeout(TICK) {
                Ok(m) => {
                    self.message(m)?;
                    while let Ok(m) = msgs.try_recv() {
                        self.message(m)?;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(ServiceError::Internal("the GPU worker and loader ended".into()));
                }
            }
        }
    }

    /// No new studies from now on.
    fn begin_stop(&mut self) -> Stopping {
        self.reporter.notify_stopping();
        self.set_state(DaemonState::Stopping);
        // The study on the GPU may finish; one loaded ahead is abandoned
        // (still `running` in the journal, it restarts next time).
        let n = self.work.in_flight.len();
        tracing::info!(in_flight = n, "stopping: no new studies ({n} in flight)");
        Stopping { since: Instant::now(), finish_first: self.work.current.clone() }
    }

    /// Whether the stop may end: the study on the GPU finished, or the grace ran out.
    fn stop_complete(&self, s: &Stopping) -> bool {
        let in_flight = self.work.in_flight.len();
        if s.finish_first.as_ref().is_none_or(|u| !self.work.in_flight.contains(u)) {
            if in_flight > 0 {
                tracing::info!("{in_flight} study loaded ahead abandoned; it restarts next time");
            }
            return true;
        }
        if s.since.elapsed().as_secs_f64() > STOP_GRACE_SECONDS {
            tracing::warn!("stopping with {in_flight} studies unfinished; they restart from the beginning next time");
            return true;
        }
        false
    }

    fn message(&mut self, m: Msg) -> Result<(), ServiceError> {
        match m {
            Msg::Model(_) => {}
            Msg::PostFallback => self.reporter.postprocess_fallback(),
            Msg::MemoryEstimate(bytes) => self.reporter.study_memory_estimate(bytes),
            Msg::Stage { uid, stage } => self.stage(uid, stage),
            Msg::Finished(o) => self.finished(o)?,
        }
        Ok(())
    }
}

//! Control from outside: [`Control`] (SIGTERM/SIGINT stop, SIGHUP
//! reloads) and the [`Command`]s from D-Bus (Pause, Resume, Reprocess,
//! Enqueue, ReloadConfig, RetryQuarantine, ClearQuarantine), each logged
//! and applied between ticks of the main loop.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::intake::folders;
use super::{Command, Daemon};
use crate::config;
use crate::quarantine;
use crate::queue::{StudyState, uid_hash};
use crate::redact::file_label;

/// How the daemon is told to stop or reload, besides [`Command`]s.
#[derive(Clone, Default)]
pub struct Control {
    /// Set to stop (SIGTERM, SIGINT).
    pub stop: Arc<AtomicBool>,
    /// Set to reload the configuration (SIGHUP).
    pub reload: Arc<AtomicBool>,
}

impl Control {
    /// Routes SIGTERM and SIGINT to `stop` and SIGHUP to `reload`.
    pub fn install_signal_handlers(&self) -> std::io::Result<()> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        signal_hook::flag::register(SIGTERM, Arc::clone(&self.stop))?;
        signal_hook::flag::register(SIGINT, Arc::clone(&self.stop))?;
        signal_hook::flag::register(SIGHUP, Arc::clone(&self.reload))?;
        Ok(())
    }
}

impl Daemon<'_> {
    pub(super) fn command(&mut self, c: Command) {
        tracing::info!("command: {}", self.describe(&c));
        match c {
            Command::Pause => self.paused = true,
            Command::Resume => self.paused = false,
            Command::Reprocess(uid) => match self.journal.reprocess(&uid) {
                Ok(true) => self.log_state(&uid, StudyState::Ready, "reprocess requested"),
                Ok(false) => {
                    let hash = uid_hash(&uid);
                    tracing::warn!(study = %hash, "reprocess of study {hash}: unknown or running study")
                }
                Err(e) => tracing::error!("{e}"),
            },
            Command::Enqueue(p) => {
                if p.is_absolute() && p.is_dir() {
                    self.intake.watcher.enqueue(&p);
                } else {
                    let label = file_label(&p, &self.watch_roots()).replacen("file", "folder", 1);
                    tracing::warn!("enqueue {label}: not an absolute path to a folder");
                }
            }
            Command::ReloadConfig => self.reload(),
            Command::RetryQuarantine(name) => self.retry_quarantine(&name),
            Command::ClearQuarantine(name) => self.clear_quarantine(&name),
            Command::Resend(uid) => crate::dicom_node::resend_logged(&self.config, &uid),
        }
        self.status.quarantine_changed();
        self.status.page_changed();
    }

    /// A command as its log line names it: studies by hash, folders by
    /// label, record names only when they are record names.
    fn describe(&self, c: &Command) -> String {
        match c {
            Command::Pause => "pause".to_string(),
            Command::Resume => "resume".to_string(),
            Command::Reprocess(uid) => format!("reprocess study {}", uid_hash(uid)),
            Command::Resend(uid) => format!("resend the results of study {}", uid_hash(uid)),
            Command::Enqueue(p) => {
                format!("enqueue {}", file_label(p, &self.watch_roots()).replacen("file", "folder", 1))
            }
            Command::ReloadConfig => "reload".to_string(),
            // Record names are hashes, never paths (anything else is not shown).
            Command::RetryQuarantine(name) | Command::ClearQuarantine(name) => {
                let verb = if matches!(c, Command::RetryQuarantine(_)) { "retry" } else { "clear" };
                let name = if quarantine::is_record_name(name) { name.as_str() } else { "(not a record name)" };
                format!("{verb} quarantine record {name}")
            }
        }
    }

    /// D-Bus RetryQuarantine: a study runs again (its record goes once it is
    /// done); a file's record goes and its folder is looked at again.
    fn retry_quarantine(&mut self, name: &str) {
        let folder = self.config.state.quarantine();
        let Some(record) = quarantine::read_record(&folder.join(name)).filter(|_| folder.join(name).is_dir()) else {
            tracing::warn!(record = %name, "quarantine retry: no record {name}");
            return;
        };
        match record.kind {
            quarantine::RecordKind::Study => match self.journal.by_hash(name) {
                Ok(Some(e)) => match self.journal.reprocess(&e.uid) {
                    Ok(true) => self.log_state(&e.uid, StudyState::Ready, "retry from quarantine requested"),
                    Ok(false) => {
                        tracing::warn!(record = %name, "quarantine retry: study {name} is running or has no files")
                    }
                    Err(e) => tracing::error!("{e}"),
                },
                Ok(None) => tracing::warn!(record = %name, "quarantine retry: study {name} is not in the journal"),
                Err(e) => tracing::error!("{e}"),
            },
            quarantine::RecordKind::File => {
                if let Err(e) = quarantine::remove(&folder, name) {
                    tracing::error!(record = %name, "quarantine retry: cannot remove record {name}: {e}");
                    return;
                }
                let parents: BTreeSet<PathBuf> =
                    record.files.iter().filter_map(|f| f.parent().map(Path::to_path_buf)).collect();
                for p in parents.iter().filter(|p| p.is_dir()) {
                    self.intake.watcher.enqueue(p);
                }
                tracing::info!(record = %name, "quarantine record {name} removed: its file is read again");
            }
        }
    }

    /// D-Bus ClearQuarantine: the record goes; a study leaves the quarantine
    /// count as failed (Reprocess still runs it).
    fn clear_quarantine(&mut self, name: &str) {
        let folder = self.config.state.quarantine();
        if !name.starts_with("file-")
            && let Ok(Some(e)) = self.journal.by_hash(name)
        {
            match self.journal.dismiss(&e.uid, "quarantine cleared by an operator") {
                Ok(true) => self.log_state(&e.uid, StudyState::Failed, "quarantine cleared by an operator"),
                Ok(false) => {}
                Err(e) => tracing::error!("{e}"),
            }
        }
        match quarantine::remove(&folder, name) {
            Ok(true) => tracing::info!(record = %name, "quarantine record {name} cleared by an operator"),
            Ok(false) => tracing::warn!(record = %name, "quarantine clear: no record {name}"),
            Err(e) => tracing::error!(record = %name, "quarantine clear: cannot remove record {name}: {e}"),
        }
    }

    pub(super) fn reload(&mut self) {
        let new = match config::load(&self.config_path).map(crate::dicom_node::with_spool) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("reload: the configuration has errors, keeping the running one:\n{e}");
                self.reporter.config_reloaded(false);
                return;
            }
        };
        let old = &self.config;
        if new.model != old.model || new.state != old.state || new.gpu != old.gpu {
            tracing::warn!("reload: [model], [state] and [gpu] changes take effect at the next restart");
        }
        if new.metrics != old.metrics || new.dbus != old.dbus {
            tracing::warn!("reload: [metrics] and [dbus] changes take effect at the next restart");
        }
        if new.dicom != old.dicom || new.destination != old.destination {
            tracing::warn!("reload: [dicom] and [[destination]] changes take effect at the next restart");
        }
        let mut applied = new.clone();
        applied.model = old.model.clone();
        applied.state = old.state.clone();
        applied.gpu = old.gpu.clone();
        applied.metrics = old.metrics.clone();
        applied.dbus = old.dbus.clone();
        applied.dicom = old.dicom.clone();
        applied.destination = old.destination.clone();
        if applied.watch != old.watch {
            self.intake.watcher = folders::watcher(&applied.watch, &self.intake.required);
        }
        if applied.output != old.output
            && let Err(e) = std::fs::create_dir_all(&applied.output.folder)
        {
            tracing::error!("reload: {}: {e}; keeping the previous output folder", applied.output.folder.display());
            applied.output = old.output.clone();
        }
        self.config = applied;
        self.guard.recheck();
        self.retention.rerun();
        self.check_disk();
        self.reporter.config_reloaded(true);
        tracing::info!("configuration reloaded");
    }
}

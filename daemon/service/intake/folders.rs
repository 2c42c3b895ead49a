//! The export folders as an intake: armed once they can be read (a network
//! share may be mounted after the daemon starts), watched by
//! [`crate::watch::Watcher`], rebuilt when a reload changes `[watch]`.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::super::{Control, Readiness, Reporter, TICK};
use crate::config::WatchConfig;
use crate::watch::{WatchSettings, Watcher};

/// Waits until every export folder can be read (the watchdog is pinged
/// meanwhile; READY=1 comes only after), then starts the watcher. `None`:
/// told to stop meanwhile.
pub(crate) fn arm(
    config: &WatchConfig,
    required: &BTreeMap<String, usize>,
    reporter: &dyn Reporter,
    control: &Control,
) -> Option<Watcher> {
    let mut waiting_since: Option<Instant> = None;
    while !config.folders.iter().all(|f| std::fs::read_dir(f).is_ok()) {
        reporter.notify_watchdog();
        if control.stop.load(Ordering::SeqCst) {
            reporter.notify_stopping();
            return None;
        }
        if waiting_since.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
            waiting_since = Some(Instant::now());
            let missing: Vec<String> = config
                .folders
                .iter()
                .filter(|f| std::fs::read_dir(f).is_err())
                .map(|f| f.display().to_string())
                .collect();
            tracing::warn!("waiting for the export folder(s) {} to become readable", missing.join(", "));
            reporter.set_status_line(&format!("starting: waiting for {}", missing.join(", ")));
            reporter.set_ready(Readiness { model_loaded: true, watch_armed: false, disk_ok: true });
        }
        std::thread::sleep(TICK);
    }
    Some(watcher(config, required))
}

/// The watcher of `config`'s folders.
pub(crate) fn watcher(config: &WatchConfig, required: &BTreeMap<String, usize>) -> Watcher {
    Watcher::new(WatchSettings { config: config.clone(), required: required.clone() })
}

/// Logs what is watched and how.
pub(crate) fn log_watching(config: &WatchConfig, watcher: &Watcher) {
    let folders: Vec<String> = config.folders.iter().map(|f| f.display().to_string()).collect();
    tracing::info!(
        inotify = watcher.uses_inotify(),
        "watching {} ({})",
        folders.join(", "),
        if watcher.uses_inotify() { "inotify" } else { "polling" }
    );
}

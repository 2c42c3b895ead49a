//! Startup, before any thread: the configuration read, the state, output
//! and quarantine folders made, the state folder locked (one daemon per
//! state folder), the output folder cleaned of what a crashed run left, the
//! journal opened (studies that were running go back to ready), and the
//! model package read (unless the caller read it).

use std::path::Path;

use super::{DaemonState, Reporter, ServiceError};
use crate::config::{self, Config};
use crate::infer::model::ModelPackage;
use crate::queue::{Journal, StudyState};

/// What startup gives the rest of the service.
pub(crate) struct Started {
    pub(crate) config: Config,
    /// The state folder's lock, held until the daemon stops.
    pub(crate) lock: std::fs::File,
    pub(crate) journal: Journal,
    pub(crate) package: ModelPackage,
}

/// Reads the configuration, prepares and locks the folders, recovers the
/// journal and reads the model package (`package`: already read by the caller).
pub(crate) fn start(
    config_path: &Path,
    package: Option<ModelPackage>,
    reporter: &dyn Reporter,
) -> Result<Started, ServiceError> {
    reporter.set_state(DaemonState::Starting);
    reporter.set_status_line("starting: loading the model");
    // A DICOM node's spool is one more watched folder (`[dicom] listen`).
    let config = crate::dicom_node::with_spool(config::load(config_path)?);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ServiceError::Io { path, source }
    };
    for d in [&config.state.folder, &config.output.folder, &config.state.quarantine()] {
        std::fs::create_dir_all(d).map_err(io(d))?;
    }
    // One daemon per state folder: two would run the same studies.
    let lock_path = config.state.folder.join("daemon.lock");
    let lock = std::fs::File::create(&lock_path).map_err(io(&lock_path))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(ServiceError::Io {
                path: lock_path,
                source: std::io::Error::other("another edgeseg daemon is running on this state folder"),
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(ServiceError::Io { path: lock_path, source: e }),
    }
    clean_output_folder(&config.output.folder);
    let journal = open_journal(&config, reporter)?;
    let package = match package {
        Some(p) => p,
        None => ModelPackage::load(&config.model.path)
            .map_err(|e| ServiceError::Model { path: config.model.path.clone(), source: e.into() })?,
    };
    Ok(Started { config, lock, journal, package })
}

/// Opens the journal (running studies go back to ready), counts this start
/// and reports when the last study was done.
fn open_journal(config: &Config, reporter: &dyn Reporter) -> Result<Journal, ServiceError> {
    let (journal, recovered) = Journal::open(&config.state.journal())?;
    if recovered > 0 {
        tracing::warn!("{recovered} studies were running when the daemon stopped; they start again from the beginning");
    }
    match journal.record_start() {
        Ok(n) => reporter.starts(n),
        Err(e) => tracing::error!("cannot record this start in the journal: {e}"),
    }
    if let Ok(all) = journal.all() {
        let last = all.iter().filter(|e| e.state == StudyState::Done).map(|e| e.updated).fold(0.0, f64::max);
        if last > 0.0 {
            reporter.last_success(last);
        }
    }
    Ok(journal)
}

pub use crate::export::study_dir::clean_output_folder;

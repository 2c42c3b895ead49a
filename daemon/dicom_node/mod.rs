//! The DICOM node: a Storage SCP feeding the spool the watcher reads
//! (`scp.rs`, `spool.rs`), and the delivery of results to PACS and DICOMweb
//! destinations through a durable outbox in the journal (`outbox.rs`,
//! `scu.rs`, `stow.rs`). See docs/dicom-network.md.
//!
//! The service knows three things of it: [`with_spool`] (the spool is one
//! more watched folder, so received studies take the watched studies' path
//! through the journal and the pipeline), [`start`] (the threads, stopped
//! when the returned [`Node`] is dropped) and [`resend`] (D-Bus `Resend`).
//! The node learns that a study is done by reading the journal, so a crash
//! between the journal's `done` and the outbox loses nothing.

pub mod commit;
pub mod dimse;
pub mod outbox;
pub mod scp;
pub mod scu;
pub mod spool;
pub mod stow;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crate::config::Config;

/// Errors starting the node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The listening socket.
    #[error("[dicom] listen = {addr}: {source}")]
    Listen {
        /// The configured address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The spool.
    #[error(transparent)]
    Spool(#[from] spool::SpoolError),
    /// The outbox.
    #[error(transparent)]
    Outbox(#[from] outbox::OutboxError),
    /// A thread could not be started.
    #[error("cannot start the {what} thread: {source}")]
    Thread {
        /// Which.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
}

/// Where delivery figures go (the observer: metrics, D-Bus, status page).
pub trait DeliverySink: Send + Sync {
    /// The outbox now, per destination.
    fn delivery(&self, destinations: &[outbox::DestinationCounts]);
}

/// The configuration with the spool added to the watched folders when the
/// SCP is on (the spool so takes the export folders' path to the journal).
pub fn with_spool(mut config: Config) -> Config {
    if config.dicom.listen.is_some() {
        let dir = spool::spool_dir(&config.state.folder);
        if !config.watch.folders.contains(&dir) {
            // config::check refuses a full list when listen is set.
            let _ = config.watch.folders.push(dir);
        }
    }
    config
}

/// The running node; dropping it stops its threads.
pub struct Node {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// The SCP's address (None when `[dicom] listen` is unset).
    pub local_addr: Option<SocketAddr>,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Starts the SCP (when `[dicom] listen` is set) and the delivery threads
/// (housekeeping always: it also empties the spool of done studies).
pub fn start(config: &Config, sink: Option<Arc<dyn DeliverySink>>) -> Result<Node, NodeError> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut node = Node { stop: stop.clone(), threads: Vec::new(), local_addr: None };
    let spawn = |what: &'static str, f: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name(format!("edgeseg-{what}"))
            .spawn(f)
            .map_err(|source| NodeError::Thread { what, source })
    };
    let state = config.state.folder.clone();
    if let Some(listen) = &config.dicom.listen {
        let addr = listen.resolve().map_err(|source| NodeError::Listen { addr: listen.to_string(), source })?;
        let listener = std::net::TcpListener::bind(addr)
            .map_err(|source| NodeError::Listen { addr: listen.to_string(), source })?;
        let local = listener.local_addr().map_err(|source| NodeError::Listen { addr: listen.to_string(), source })?;
        node.local_addr = Some(local);
        let d = &config.dicom;
        let settings = Arc::new(scp::ScpSettings {
            ae_title: d.ae_title.clone(),
            allowed: d.allowed_callers.clone(),
            max_associations: d.max_associations as usize,
            max_pdu_length: d.max_pdu_length,
            timeout: std::time::Duration::from_secs_f64(d.timeout_seconds),
            spool: spool::Spool::open(&state, config.disk.min_free_mb)?,
            commitment: commitment_reports(config),
        });
        let counters = Arc::new(scp::ScpCounters::default());
        let st = stop.clone();
        node.threads.push(spawn("dicom-scp", Box::new(move || scp::serve(listener, settings, counters, st)))?);
        tracing::info!("DICOM Storage SCP {} listening on {local}", d.ae_title);
    }
    let journal = config.state.journal();
    let ob = outbox::Outbox::open(&journal, &state, &config.destination)?;
    let spool = spool::spool_dir(&state);
    let destinations = config.destination.clone();
    let st = stop.clone();
    let sink2 = sink.clone();
    node.threads.push(spawn("outbox", Box::new(move || outbox::housekeeping(ob, &spool, &destinations, sink2, &st)))?);
    for dest in &config.destination {
        stow::log_at_start(dest);
        let ob = outbox::Outbox::open(&journal, &state, std::slice::from_ref(dest))?;
        let (dest, st, ae) = (dest.clone(), stop.clone(), config.dicom.ae_title.clone());
        node.threads.push(spawn("deliver", Box::new(move || outbox::deliver(ob, &dest, &ae, &st)))?);
    }
    Ok(node)
}

/// What the SCP needs to take storage commitment reports, when a destination asks for commitment.
fn commitment_reports(config: &Config) -> Option<scp::CommitmentReports> {
    let dests: Vec<_> = config.destination.iter().filter(|d| d.storage_commitment).cloned().collect();
    if dests.is_empty() {
        return None;
    }
    let callers = dests
        .iter()
        .filter_map(|d| {
            Some(crate::config::AllowedCaller {
                ae_title: d.called_ae.clone()?,
                host: d.host.as_deref().and_then(|h| h.parse().ok()),
            })
        })
        .collect();
    Some(scp::CommitmentReports {
        journal: config.state.journal(),
        state: config.state.folder.clone(),
        destinations: dests,
        callers,
    })
}

/// Queues a study's results again for every destination (D-Bus `Resend`):
/// returns how many results were queued.
pub fn resend(config: &Config, study_uid: &str) -> Result<usize, NodeError> {
    // connect, not open: the delivery threads are running, and open would
    // put their rows being sent back to queued.
    let ob = outbox::Outbox::connect(&config.state.journal(), &config.state.folder, &config.destination)?;
    Ok(ob.resend(study_uid)?)
}

/// The state folder's outbox store (copies of the results being delivered).
pub fn outbox_dir(state: &Path) -> std::path::PathBuf {
    state.join("outbox")
}

/// [`resend`] with its outcome logged (the service loop's `Command::Resend`).
pub fn resend_logged(config: &Config, study_uid: &str) {
    let study = crate::queue::uid_hash(study_uid);
    match resend(config, study_uid) {
        Ok(0) => tracing::warn!("resend of study {study}: no done study with results for a destination"),
        Ok(n) => tracing::info!("resend of study {study}: {n} result(s) queued"),
        Err(e) => tracing::error!("resend of study {study}: {e}"),
    }
}

impl DeliverySink for crate::observe::Observer {
    fn delivery(&self, destinations: &[outbox::DestinationCounts]) {
        crate::observe::Observer::delivery(self, destinations);
    }
}

//! The loader: headers and series of the next study into volumes and
//! nnU-Net's preprocessing of them ([`pipeline::load_study`], every
//! profile's load half) on the CPU while the GPU worker runs the current
//! study, at most one study ahead.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, Sender, SyncSender};
use std::thread::JoinHandle;

use super::gpu::GpuJob;
use super::{Msg, err_outcome};
use crate::infer::model::ModelPackage;
use crate::pipeline;
use crate::redact::file_label;
use crate::service::ServiceError;
use crate::service::intake::index_files;

/// Work for the loader.
pub(crate) struct LoadJob {
    pub(crate) uid: String,
    pub(crate) files: Vec<PathBuf>,
    pub(crate) out: PathBuf,
    /// `[output] seg_kind` when the study was started.
    pub(crate) seg_kind: crate::export::seg::SegKind,
    pub(crate) force_cpu: bool,
    /// `[ingest] strict_geometry`.
    pub(crate) strict_geometry: bool,
    /// The watch folders (files are named relative to them in logs).
    pub(crate) roots: Vec<PathBuf>,
}

/// Starts the loader; it hands loaded studies to the GPU worker through
/// `gpu` and takes its jobs from the returned channel.
pub(crate) fn spawn(
    package: ModelPackage,
    gpu: SyncSender<GpuJob>,
    msgs: Sender<Msg>,
) -> Result<(JoinHandle<()>, Sender<LoadJob>), ServiceError> {
    let (load_tx, load_rx) = std::sync::mpsc::channel::<LoadJob>();
    let thread = std::thread::Builder::new()
        .name("edgeseg-loader".into())
        .spawn(move || loader(package, load_rx, gpu, msgs))
        .map_err(|e| ServiceError::Internal(format!("cannot start the loader: {e}")))?;
    Ok((thread, load_tx))
}

/// The loader: headers and series of the next study and nnU-Net's
/// preprocessing of them, on the CPU while the GPU worker runs the current
/// study; then hands it over (a rendezvous channel: at most one study waits).
fn loader(package: ModelPackage, jobs: Receiver<LoadJob>, gpu: SyncSender<GpuJob>, msgs: Sender<Msg>) {
    // The plans (the package the service read once, no networks): for
    // preprocessing, as the GPU worker's predictor would do it.
    while let Ok(job) = jobs.recv() {
        let _ = msgs.send(Msg::Stage { uid: job.uid.clone(), stage: "loading series".into() });
        let index = index_files(&job.files).with_strict_geometry(job.strict_geometry);
        // The watcher logged the files it passed over; these are the ones
        // passed over as a series (single-slice localizers).
        for (path, why) in &index.skipped {
            tracing::info!("{}: skipped, {why}", file_label(path, &job.roots));
        }
        let unreadable_count = index.errors.len();
        let unreadable: Vec<String> = index.errors.iter().take(5).map(|e| e.to_string()).collect();
        let loaded = pipeline::load_study(&package, &index, &job.uid, |stage| {
            let _ = msgs.send(Msg::Stage { uid: job.uid.clone(), stage: stage.to_string() });
        });
        match loaded {
            Ok(loaded) => {
                if gpu.send(GpuJob { loaded, out: job.out, seg_kind: job.seg_kind, force_cpu: job.force_cpu }).is_err()
                {
                    return;
                }
            }
            Err(e) => {
                let mut o = err_outcome(&job.uid, &e);
                if let (Err((_, msg)), false) = (&mut o.result, unreadable.is_empty()) {
                    // The unreadable files come first: they are the cause, the
                    // error (a gap in the spacing, a missing series) the effect.
                    *msg = unreadable_first(unreadable_count, &unreadable, msg);
                }
                if msgs.send(Msg::Finished(o)).is_err() {
                    return;
                }
            }
        }
    }
}

/// A study's failure reason with its unreadable files first: `3 files could
/// not be read (first ones: ...); without them: <error>`.
pub fn unreadable_first(count: usize, first: &[String], error: &str) -> String {
    let files =
        if count == 1 { "1 file could not be read".to_string() } else { format!("{count} files could not be read") };
    let shown = if first.len() < count { format!("first {}: ", first.len()) } else { String::new() };
    format!("{files} ({shown}{}); without them: {error}", first.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_files_are_named_before_the_error_they_caused() {
        let r =
            unreadable_first(3, &["a: truncated".into(), "b: truncated".into(), "c: truncated".into()], "spacing gap");
        assert_eq!(
            r,
            "3 files could not be read (a: truncated; b: truncated; c: truncated); without them: spacing gap"
        );
        let r = unreadable_first(7, &["a".into()], "no PET series");
        assert!(r.starts_with("7 files could not be read (first 1: a); without them: "), "{r}");
    }
}

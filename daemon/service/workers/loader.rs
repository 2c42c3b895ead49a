//! The loader: headers and series of the next study into volumes and
//! nnU-Net's preprocessing of them ([`pipeline::load_study`], every
//! profile's load half) on the CPU while the GPU worker runs the current
//! study, at most one study ahead.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, SyncSender};
use std::thread::JoinHandle;

use super::gpu::GpuJob;
use super::{Msg, Outcome, err_outcome};
use crate::infer::memory::{self, Ask, ModelShape, mib};
use crate::infer::model::ModelPackage;
use crate::ingest::ErrorClass;
use crate::pipeline;
use crate::queue::uid_hash;
use crate::redact::{file_label, path_hash};
use crate::service::ServiceError;
use crate::service::intake::index_files;
use crate::service::memory::{Budget, Reservation};

/// What the loader plans memory with: the budget, its description for
/// messages, and what each study is asked (folds, batch, mirroring).
pub(crate) struct MemoryPlan {
    pub(crate) budget: Arc<Budget>,
    /// The budget as check-config and the logs say it ("3000 MB ([limits] memory_mb)").
    pub(crate) text: String,
    pub(crate) ask: Ask,
}

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
    plan: MemoryPlan,
    gpu: SyncSender<GpuJob>,
    msgs: Sender<Msg>,
) -> Result<(JoinHandle<()>, Sender<LoadJob>), ServiceError> {
    let (load_tx, load_rx) = std::sync::mpsc::channel::<LoadJob>();
    let thread = std::thread::Builder::new()
        .name("edgeseg-loader".into())
        .spawn(move || loader(package, plan, load_rx, gpu, msgs))
        .map_err(|e| ServiceError::Internal(format!("cannot start the loader: {e}")))?;
    Ok((thread, load_tx))
}

/// The loader: headers and series of the next study and nnU-Net's
/// preprocessing of them, on the CPU while the GPU worker runs the current
/// study; then hands it over (a rendezvous channel: at most one study waits).
fn loader(
    package: ModelPackage,
    plan: MemoryPlan,
    jobs: Receiver<LoadJob>,
    gpu: SyncSender<GpuJob>,
    msgs: Sender<Msg>,
) {
    // The plans (the package the service read once, no networks): for
    // preprocessing, as the GPU worker's predictor would do it.
    let model = ModelShape::of(&package);
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
        // The study's peak from its headers, before a pixel is read (a study
        // whose series cannot be planned reserves nothing: its load fails
        // and says why).
        let need = pipeline::planned_cases(&package, &index, &job.uid)
            .map(|cases| memory::study_peak(&model, &cases, plan.ask))
            .ok();
        let reservation = match need {
            Some(need) => {
                let _ = msgs.send(Msg::MemoryEstimate(need));
                match reserve(&plan, &job, need, &msgs) {
                    Ok(r) => Some(r),
                    Err(o) => {
                        if msgs.send(Msg::Finished(*o)).is_err() {
                            return;
                        }
                        continue;
                    }
                }
            }
            None => None,
        };
        let loaded = pipeline::load_study(&package, &index, &job.uid, |stage| {
            let _ = msgs.send(Msg::Stage { uid: job.uid.clone(), stage: stage.to_string() });
        });
        match loaded {
            Ok(loaded) => {
                if gpu
                    .send(GpuJob {
                        loaded,
                        out: job.out,
                        seg_kind: job.seg_kind,
                        force_cpu: job.force_cpu,
                        reservation,
                    })
                    .is_err()
                {
                    return;
                }
            }
            Err(e) => {
                let mut o = err_outcome(&job.uid, &e);
                o.reservation = reservation;
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

/// Reserves a study's estimated peak: at once when it fits beside the study
/// on the GPU worker, after that one's end when not (logged, and the
/// study's stage says so); a study that cannot fit alone is refused as bad
/// input (quarantined), naming its folder by hash and both figures.
fn reserve(plan: &MemoryPlan, job: &LoadJob, need: u64, msgs: &Sender<Msg>) -> Result<Reservation, Box<Outcome>> {
    let study = uid_hash(&job.uid);
    let limit = plan.budget.limit();
    if need > limit {
        let reason = format!(
            "{}: the study needs about {} MB of memory at its peak, more than the {} the daemon may use; \
             raise [limits] memory_mb or the service's MemoryMax, or process it on a larger machine",
            study_folder(&job.files, &job.roots),
            mib(need),
            plan.text
        );
        return Err(Box::new(Outcome {
            uid: job.uid.clone(),
            result: Err((ErrorClass::BadInput, reason)),
            out_of_memory: false,
            reservation: None,
        }));
    }
    let r = match plan.budget.try_reserve(need) {
        Some(r) => r,
        None => {
            tracing::info!(
                study = %study,
                "study {study}: waits for memory: needs about {} MB, {} MB held by the study in flight, budget {}",
                mib(need),
                mib(plan.budget.in_use()),
                plan.text
            );
            let _ = msgs.send(Msg::Stage { uid: job.uid.clone(), stage: "waiting for memory".into() });
            plan.budget.reserve(need)
        }
    };
    tracing::info!(study = %study, "study {study}: loading, estimated peak {} MB", mib(need));
    Ok(r)
}

/// A study's folder as logs may name it: `folder <hash>` of the deepest
/// folder holding all its files (relative to the watch folder, as the
/// redaction of paths names folders), never the path itself.
fn study_folder(files: &[PathBuf], roots: &[PathBuf]) -> String {
    let mut common: Option<&Path> = files.first().and_then(|f| f.parent());
    for f in files.iter().skip(1) {
        while let Some(c) = common {
            if f.starts_with(c) {
                break;
            }
            common = c.parent();
        }
    }
    match common {
        Some(c) => format!("folder {}", path_hash(c, roots)),
        None => "the study's folder".to_string(),
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

    /// The folder holding every file, by the hash the redaction uses for it.
    #[test]
    fn a_study_folder_is_named_by_its_hash() {
        let roots = vec![PathBuf::from("/export")];
        let files = vec![PathBuf::from("/export/Doe^John/ct/1.dcm"), PathBuf::from("/export/Doe^John/pet/2.dcm")];
        let name = study_folder(&files, &roots);
        assert_eq!(name, format!("folder {}", path_hash(Path::new("/export/Doe^John"), &roots)));
        assert!(!name.contains("Doe"));
        let redacted = crate::redact::Redactor::new(&roots)
            .with_files(files.iter().map(PathBuf::as_path))
            .redact("/export/Doe^John: x");
        assert!(redacted.starts_with(&name), "the same name as the redaction gives: {redacted}");
        assert_eq!(study_folder(&[], &roots), "the study's folder");
    }

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

//! The GPU worker: builds the engines of the model package once per start
//! (with the configuration's provider, and a CPU predictor on demand for
//! out-of-memory retries), then infers, post-processes and writes one study
//! at a time ([`pipeline::infer_study`], [`pipeline::write_study`], as
//! `edgeseg process` does).

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender, SyncSender};
use std::thread::JoinHandle;

use super::{ModelSummary, Msg, Outcome, err_outcome};
use crate::config::{self, Config};
use crate::gpu::select::PostBackend;
use crate::infer::model::ModelPackage;
use crate::infer::onnx::{EngineOptions, ProviderRequest, library_path};
use crate::infer::{InferError, PredictOptions, Predictor};
use crate::pipeline::{self, LoadedStudy, PipelineError};
use crate::service::ServiceError;

/// Work for the GPU worker.
pub(crate) struct GpuJob {
    pub(crate) loaded: LoadedStudy,
    pub(crate) out: PathBuf,
    /// `[output] seg_kind` when the study was started.
    pub(crate) seg_kind: crate::export::seg::SegKind,
    pub(crate) force_cpu: bool,
    /// Its share of the memory budget (back to the main loop with the outcome).
    pub(crate) reservation: Option<super::super::memory::Reservation>,
}

/// Starts the GPU worker on `package` (the copy the service read); its jobs
/// come through the returned rendezvous channel (the loader holds it: at
/// most one study waits).
pub(crate) fn spawn(
    config: &Config,
    package: ModelPackage,
    msgs: Sender<Msg>,
) -> Result<(JoinHandle<()>, SyncSender<GpuJob>), ServiceError> {
    let (gpu_tx, gpu_rx) = std::sync::mpsc::sync_channel::<GpuJob>(0);
    let (model_cfg, gpu_cfg, state_dir) = (config.model.clone(), config.gpu.clone(), config.state.folder.clone());
    let worker = std::thread::Builder::new()
        .name("edgeseg-gpu".into())
        .spawn(move || gpu_worker(model_cfg, gpu_cfg, package, state_dir, gpu_rx, msgs))
        .map_err(|e| ServiceError::Internal(format!("cannot start the GPU worker: {e}")))?;
    Ok((worker, gpu_tx))
}

fn engine_options(c: &config::ModelConfig, force_cpu: bool) -> EngineOptions {
    let provider = if force_cpu { ProviderRequest::Cpu } else { c.provider };
    EngineOptions {
        provider,
        require_gpu: c.require_gpu && !force_cpu,
        bf16: c.bf16 && !force_cpu,
        threads: c.threads,
        ..EngineOptions::default()
    }
}

fn predict_options(c: &config::ModelConfig, state: &Path, force_cpu: bool) -> PredictOptions {
    let mut engine = engine_options(c, force_cpu);
    engine.trt_cache_dir = Some(state.join("engine-cache"));
    PredictOptions { batch_size: c.batch_size, tta: c.tta, engine, ..PredictOptions::default() }
}

/// The GPU worker: builds the engines of the package the service read, then
/// runs jobs until its channel closes.
fn gpu_worker(
    model: config::ModelConfig,
    gpu: config::GpuConfig,
    package: ModelPackage,
    state: PathBuf,
    jobs: Receiver<GpuJob>,
    msgs: Sender<Msg>,
) {
    let model_err = |source: InferError| ServiceError::Model { path: model.path.clone(), source };
    let lib = match library_path(Some(&model.onnxruntime)) {
        Ok(l) => l,
        Err(e) => {
            let _ = msgs.send(Msg::Model(Err(model_err(e))));
            return;
        }
    };
    // The CPU predictor of an out-of-memory retry is built from this copy,
    // so the package is never read again.
    let spare = package.clone();
    let predictor = match Predictor::from_package(package, &lib, predict_options(&model, &state, false)) {
        Ok(p) => p,
        Err(e) => {
            let _ = msgs.send(Msg::Model(Err(model_err(e))));
            return;
        }
    };
    let backend = match PostBackend::select(gpu.postprocess) {
        Ok(b) => b,
        Err(e) => {
            let _ = msgs.send(Msg::Model(Err(e.into())));
            return;
        }
    };
    let engines = predictor.providers();
    let summary = ModelSummary {
        name: predictor.package.meta.name.clone(),
        version: predictor.package.meta.version.clone(),
        sha256: predictor.package.sha256.clone(),
        channels: predictor.package.meta.channels.clone(),
        profile: predictor.package.meta.profile,
        providers: engines.iter().map(|(f, e)| (*f, e.label().to_string())).collect(),
        engines,
        postprocess_backend: backend.name(),
    };
    if msgs.send(Msg::Model(Ok(summary))).is_err() {
        return;
    }
    let mut cpu_predictor: Option<Predictor> = None;
    while let Ok(job) = jobs.recv() {
        let uid = job.loaded.study_uid.clone();
        let p = if job.force_cpu {
            if cpu_predictor.is_none() {
                match Predictor::from_package(spare.clone(), &lib, predict_options(&model, &state, true)) {
                    Ok(p) => cpu_predictor = Some(p),
                    Err(e) => {
                        let _ = msgs.send(Msg::Finished(err_outcome(&uid, &PipelineError::Infer(e))));
                        continue;
                    }
                }
            }
            cpu_predictor.as_ref().unwrap_or(&predictor)
        } else {
            &predictor
        };
        let r = pipeline::infer_study(p, &backend, job.loaded, false, |stage| {
            let _ = msgs.send(Msg::Stage { uid: uid.clone(), stage: stage.to_string() });
        })
        .and_then(|mut r| {
            if r.report.postprocessing_fallback.is_some() {
                let _ = msgs.send(Msg::PostFallback);
            }
            let _ = msgs.send(Msg::Stage { uid: uid.clone(), stage: "writing".into() });
            pipeline::write_study(&job.out, &mut r, job.seg_kind).map(|d| (d, r))
        });
        let mut outcome = match r {
            Ok((dir, r)) => {
                Outcome { uid, result: Ok((dir, r.report.timings_s)), out_of_memory: false, reservation: None }
            }
            Err(e) => err_outcome(&uid, &e),
        };
        outcome.reservation = job.reservation;
        if msgs.send(Msg::Finished(outcome)).is_err() {
            return;
        }
    }
}

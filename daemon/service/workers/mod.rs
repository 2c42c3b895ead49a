//! The worker threads and the messages they send the main loop: the
//! loader ([`loader`]) reads and prepares the next study on the CPU, the GPU
//! worker ([`gpu`]) loads the model once and infers and writes one study at
//! a time. Another worker is a file here with its `spawn` and its job type,
//! one line in [`super::run_with_package`], and a [`Msg`] variant if the main
//! loop must hear from it.

pub(crate) mod gpu;
pub(crate) mod loader;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};

use super::{Control, Reporter, ServiceError, TICK};
use crate::infer::model::Channel;
use crate::infer::onnx::Engine;
use crate::ingest::ErrorClass;
use crate::pipeline::{PipelineError, StageTimings};

/// What the model is, as the worker loaded it.
#[derive(Debug, Clone)]
pub struct ModelSummary {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Package sha256.
    pub sha256: String,
    /// Channels.
    pub channels: Vec<Channel>,
    /// Task profile (model.toml).
    pub profile: crate::pipeline::Profile,
    /// Provider per fold, as report.json names it (`tensorrt-fp16` for an FP16 engine, `openvino-bf16` for a BF16 one).
    pub providers: Vec<(u32, String)>,
    /// The engine (provider and precision) each fold got.
    pub engines: Vec<(u32, Engine)>,
    /// Where post-processing runs: `cpu` or `cuda`.
    pub postprocess_backend: &'static str,
}

/// A study's end, as reported to the main loop.
pub(crate) struct Outcome {
    pub(crate) uid: String,
    pub(crate) result: Result<(PathBuf, StageTimings), (ErrorClass, String)>,
    /// The failure was the engine running out of memory (typed by
    /// `InferError::is_out_of_memory`, where ONNX Runtime's error arrives).
    pub(crate) out_of_memory: bool,
    /// The study's share of the memory budget, given back once the main
    /// loop has recorded its end (so the next study loads after that).
    pub(crate) reservation: Option<super::memory::Reservation>,
}

/// What the workers tell the main loop.
pub(crate) enum Msg {
    Model(Result<ModelSummary, ServiceError>),
    Stage {
        uid: String,
        stage: String,
    },
    /// A CUDA post-processing step of this study ran on the CPU twins.
    PostFallback,
    /// The loader's estimate of a study's peak memory, bytes.
    MemoryEstimate(u64),
    Finished(Outcome),
}

pub(crate) fn err_outcome(uid: &str, e: &PipelineError) -> Outcome {
    let out_of_memory = matches!(e, PipelineError::Infer(ie) if ie.is_out_of_memory());
    Outcome { uid: uid.to_string(), result: Err((e.class(), e.to_string())), out_of_memory, reservation: None }
}

/// Waits for the GPU worker's model (watchdog pings meanwhile: engine builds
/// take minutes), then reports and logs it. `None`: told to stop meanwhile.
pub(crate) fn wait_for_model(
    msgs: &Receiver<Msg>,
    reporter: &dyn Reporter,
    control: &Control,
) -> Result<Option<ModelSummary>, ServiceError> {
    let summary = loop {
        reporter.notify_watchdog();
        if control.stop.load(Ordering::SeqCst) {
            reporter.notify_stopping();
            return Ok(None);
        }
        match msgs.recv_timeout(TICK) {
            Ok(Msg::Model(Ok(s))) => break s,
            Ok(Msg::Model(Err(e))) => return Err(e),
            Ok(_) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                return Err(ServiceError::Internal("the GPU worker ended while loading the model".into()));
            }
        }
    };
    reporter.model_loaded(&summary);
    let folds: Vec<String> = summary.providers.iter().map(|(f, p)| format!("fold {f} {p}")).collect();
    tracing::info!(
        model = %summary.name,
        sha256 = %summary.sha256,
        postprocess = summary.postprocess_backend,
        "model loaded: {} {} sha256 {} ({}; post-processing on {})",
        summary.name,
        summary.version,
        summary.sha256,
        folds.join(", "),
        summary.postprocess_backend
    );
    Ok(Some(summary))
}

//! `edgeseg compile`: every fold's engine built ahead of the first study,
//! and the provider each fold got.

use std::path::PathBuf;

use anyhow::Result;

/// Build every fold's engine ahead of the first study (TensorRT engines are
/// cached) and report which provider each fold got.
#[derive(clap::Args)]
pub struct Args {
    /// Model package folder.
    #[arg(long)]
    model: PathBuf,
    /// libonnxruntime.so (ORT_DYLIB_PATH overrides).
    #[arg(long)]
    onnxruntime: Option<PathBuf>,
    /// Execution provider: auto, cpu, cuda, tensorrt or openvino.
    #[arg(long, default_value = "auto")]
    provider: edgeseg::infer::onnx::ProviderRequest,
    /// Fail instead of falling back to the CPU when the GPU provider is unavailable.
    #[arg(long)]
    require_gpu: bool,
    /// Allow TensorRT FP16 engines (kept only if they agree with FP32 on a probe tile).
    #[arg(long)]
    fp16: bool,
    /// Allow OpenVINO BF16 engines (with --provider openvino; kept only if they agree with FP32 on a probe tile).
    #[arg(long)]
    bf16: bool,
    /// TensorRT engine and timing cache folder.
    #[arg(long)]
    trt_cache: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<bool> {
    super::predict::require_package(&a.model, &[], None)?;
    crate::predict::compile(&a.model, a.onnxruntime.as_deref(), a.provider, a.require_gpu, a.fp16, a.bf16, a.trt_cache)
}

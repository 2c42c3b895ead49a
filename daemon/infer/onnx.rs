//! ONNX Runtime engines through the `ort` crate, with the library loaded at
//! run time (`ort::init_from`: a clear error when it is missing, instead of
//! the environment route's panic). Execution providers: CPU always; CUDA and
//! TensorRT behind the `cuda` / `tensorrt` features, registered in order with
//! a logged fallback, or an error when the configuration requires the GPU;
//! OpenVINO (CPU, FP32, or BF16 when allowed and the probe tile agrees) when
//! asked for by name, from a library built with it (the
//! `onnxruntime-openvino` wheel's), an error otherwise.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;
use ort::session::Session;
use ort::value::Tensor;
use serde::Serialize;

use super::InferError;
use super::sliding::Network;

/// Which execution provider to ask for: parsed once, where the
/// configuration is read (`[model] provider`) or the command line
/// (`--provider`), both through [`FromStr`](std::str::FromStr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum ProviderRequest {
    /// TensorRT, then CUDA, then CPU (whatever this build and library offer).
    Auto,
    /// ONNX Runtime's CPU provider.
    Cpu,
    /// CUDA.
    Cuda,
    /// TensorRT.
    Tensorrt,
    /// OpenVINO on the CPU, FP32 (the `onnxruntime-openvino` wheel's library).
    Openvino,
}

impl ProviderRequest {
    /// `auto`, `cpu`, `cuda`, `tensorrt` or `openvino`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderRequest::Auto => "auto",
            ProviderRequest::Cpu => "cpu",
            ProviderRequest::Cuda => "cuda",
            ProviderRequest::Tensorrt => "tensorrt",
            ProviderRequest::Openvino => "openvino",
        }
    }
}

/// The one parser of a provider name: the `--provider` flags (clap) and
/// the configuration's `[model] provider` (serde, through `TryFrom<String>`).
impl std::str::FromStr for ProviderRequest {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(ProviderRequest::Auto),
            "cpu" => Ok(ProviderRequest::Cpu),
            "cuda" => Ok(ProviderRequest::Cuda),
            "tensorrt" => Ok(ProviderRequest::Tensorrt),
            "openvino" => Ok(ProviderRequest::Openvino),
            other => Err(format!("{other:?}: expected auto, cpu, cuda, tensorrt or openvino")),
        }
    }
}

impl TryFrom<String> for ProviderRequest {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl std::fmt::Display for ProviderRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The execution provider a session actually got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// ONNX Runtime's CPU provider.
    Cpu,
    /// CUDA.
    Cuda,
    /// TensorRT.
    Tensorrt,
    /// OpenVINO on the CPU.
    Openvino,
    /// No ONNX Runtime: a simulated network's rule (a test device, see
    /// [`super::simulated`]).
    Simulated,
}

impl Provider {
    /// `cpu`, `cuda`, `tensorrt`, `openvino` or `simulated`.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Cpu => "cpu",
            Provider::Cuda => "cuda",
            Provider::Tensorrt => "tensorrt",
            Provider::Openvino => "openvino",
            Provider::Simulated => "simulated",
        }
    }
}

/// The arithmetic a session runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 32-bit floats.
    Fp32,
    /// 16-bit floats (a TensorRT FP16 engine that agreed with FP32 on the probe tile).
    Fp16,
    /// bfloat16 (OpenVINO's CPU plugin on AMX / AVX-512 BF16, allowed by
    /// `[model] bf16` or `--bf16`, that agreed with FP32 on the probe tile).
    Bf16,
}

impl Precision {
    /// `fp32`, `fp16` or `bf16`.
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Fp16 => "fp16",
            Precision::Bf16 => "bf16",
        }
    }
}

/// What one fold's session runs on: provider and precision, as built (not as asked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Engine {
    /// The provider.
    pub provider: Provider,
    /// The precision.
    pub precision: Precision,
}

impl Engine {
    /// FP32 on `provider`.
    pub fn fp32(provider: Provider) -> Self {
        Engine { provider, precision: Precision::Fp32 }
    }

    /// The name report.json and `edgeseg compile` show: `cpu`, `cuda`,
    /// `tensorrt`, `openvino`, or `tensorrt-fp16` for an FP16 TensorRT
    /// engine, `openvino-bf16` for a BF16 OpenVINO one.
    pub fn label(self) -> &'static str {
        match (self.provider, self.precision) {
            (Provider::Tensorrt, Precision::Fp16) => "tensorrt-fp16",
            (Provider::Openvino, Precision::Bf16) => "openvino-bf16",
            (p, _) => p.as_str(),
        }
    }
}

/// Options for building engines.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Provider wanted.
    pub provider: ProviderRequest,
    /// Fail instead of falling back to the CPU.
    pub require_gpu: bool,
    /// Intra-op threads (0: ONNX Runtime's default).
    pub threads: usize,
    /// TensorRT engine and timing caches.
    pub trt_cache_dir: Option<PathBuf>,
    /// Allow a TensorRT FP16 engine (after the probe agrees with FP32).
    pub fp16: bool,
    /// Allow OpenVINO to infer in BF16 on a CPU with AMX or AVX-512 BF16
    /// (after the probe agrees with FP32); `provider` must be `openvino`.
    pub bf16: bool,
    /// GPU index.
    pub device_id: i32,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            provider: ProviderRequest::Cpu,
            require_gpu: false,
            threads: 0,
            trt_cache_dir: None,
            fp16: false,
            bf16: false,
            device_id: 0,
        }
    }
}

static ENV: OnceLock<Result<(PathBuf, Environment), String>> = OnceLock::new();

/// Where libonnxruntime.so is: `ORT_DYLIB_PATH` when set, else the given path.
pub fn library_path(configured: Option<&Path>) -> Result<PathBuf, InferError> {
    match std::env::var_os("ORT_DYLIB_PATH") {
        Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
        _ => configured.map(Path::to_path_buf).ok_or_else(|| {
            InferError::Runtime(
                "no ONNX Runtime library: set ORT_DYLIB_PATH, [model] onnxruntime in the config, or --onnxruntime PATH"
                    .into(),
            )
        }),
    }
}

/// Loads ONNX Runtime once per process.
pub fn environment(lib: &Path) -> Result<&'static Environment, InferError> {
    let r = ENV.get_or_init(|| {
        if !lib.is_file() {
            return Err(format!("{}: ONNX Runtime library not found", lib.display()));
        }
        let builder = ort::init_from(lib).map_err(|e| format!("{}: cannot load ONNX Runtime: {e}", lib.display()))?;
        // Telemetry off: ONNX Runtime would record events (and a device id in
        // ~/.cache/Microsoft/DeveloperTools/.onnxruntime/) otherwise. The
        // binary also sets ORT_DISABLE_TELEMETRY before any thread starts
        // (`sys::disable_onnxruntime_telemetry`), which keeps the library from
        // creating that folder when the environment is created, before this
        // call could switch the events off.
        builder
            .with_name("edgeseg")
            .with_telemetry(false)
            .build()
            .map(|env| {
                // ONNX Runtime's own INFO lines (graph optimisation, memory
                // arenas: over a hundred per start) below the daemon's:
                // warnings and errors, unless EDGESEG_LOG names `ort`.
                let asked = std::env::var("EDGESEG_LOG").is_ok_and(|f| crate::observe::logging::mentions_ort(&f));
                if !asked {
                    env.set_log_level(ort::logging::LogLevel::Warning);
                }
                // One CPU arena for every session (the folds run one after
                // the other): without it each fold's session keeps an arena
                // as large as its own peak.
                if let Err(e) = crate::sys::share_cpu_arena(&env) {
                    tracing::warn!("ONNX Runtime: no shared CPU arena ({e}); each session keeps its own");
                }
                (lib.to_path_buf(), env)
            })
            .map_err(|e| e.to_string())
    });
    match r {
        Ok((loaded, env)) if loaded == lib => Ok(env),
        Ok((loaded, _)) => Err(InferError::Runtime(format!(
            "ONNX Runtime already loaded from {}, cannot switch to {}",
            loaded.display(),
            lib.display()
        ))),
        Err(e) => Err(InferError::Runtime(e.clone())),
    }
}

/// One fold's network in an ONNX Runtime session.
pub struct OrtNetwork {
    session: Mutex<Session>,
    input: String,
    output: String,
    shape_tail: Vec<i64>,
    /// The provider and precision the session got.
    pub engine: Engine,
}

impl OrtNetwork {
    /// Builds a session for `model` with the requested provider.
    pub fn load(
        lib: &Path,
        model: &Path,
        channels: usize,
        patch: [usize; 3],
        classes: usize,
        opts: &EngineOptions,
    ) -> Result<Self, InferError> {
        let env = environment(lib)?;
        let err = |what: &str, e: ort::Error| InferError::Runtime(format!("{}: {what}: {e}", model.display()));
        let mut builder = Session::builder(env).map_err(|e| err("session builder", e))?;
        if opts.threads > 0 {
            builder = builder.with_intra_threads(opts.threads).map_err(|e| err("threads", e.into()))?;
        }
        let (builder, engine) = register_providers(builder, opts, model)?;
        // CPU sessions take the environment's shared arena (`environment`).
        let mut builder = if engine.provider == Provider::Cpu {
            builder.with_env_allocators().map_err(|e| err("shared CPU arena", e.into()))?
        } else {
            builder
        };
        let session = builder.commit_from_file(model).map_err(|e| err("cannot load the network", e))?;
        let input = session.inputs().first().map(|o| o.name().to_string()).unwrap_or_else(|| "input".into());
        let output = session.outputs().first().map(|o| o.name().to_string()).unwrap_or_else(|| "logits".into());
        let mut shape_tail = vec![channels as i64];
        shape_tail.extend(patch.iter().map(|&p| p as i64));
        let net = Self { session: Mutex::new(session), input, output, shape_tail, engine };
        if matches!(engine.precision, Precision::Fp16 | Precision::Bf16) {
            // Trust FP16 or BF16 only where it agrees with FP32 on a probe tile.
            let what = engine.precision.as_str().to_ascii_uppercase();
            let fp32 = Self::load(
                lib,
                model,
                channels,
                patch,
                classes,
                &EngineOptions { fp16: false, bf16: false, ..opts.clone() },
            )?;
            let d = super::probe_disagreement(&net, &fp32, channels, patch, classes)?;
            let max = if engine.precision == Precision::Bf16 {
                super::BF16_MAX_DISAGREEMENT
            } else {
                super::FP16_MAX_DISAGREEMENT
            };
            if d > max {
                tracing::warn!(
                    "{}: {what} engine refused: its argmax differs from FP32 on {:.2}% of the probe tile",
                    model.display(),
                    d * 100.0
                );
                return Ok(fp32);
            }
            tracing::info!(
                "{}: {what} engine agrees with FP32 on the probe ({:.3}% differ)",
                model.display(),
                d * 100.0
            );
        }
        Ok(net)
    }
}

impl Network for OrtNetwork {
    fn run(&self, input: &[f32], n: usize) -> Result<Vec<f32>, InferError> {
        let mut shape = vec![n as i64];
        shape.extend_from_slice(&self.shape_tail);
        let tensor = Tensor::from_array((shape, input.to_vec())).map_err(|e| InferError::Engine(e.to_string()))?;
        let mut session = self.session.lock().map_err(|_| InferError::Engine("session lock poisoned".into()))?;
        let outputs = session.run(ort::inputs![self.input.as_str() => tensor]).map_err(|e| {
            let message = format!("inference failed: {e}");
            if is_out_of_memory(e.code(), e.message()) {
                InferError::OutOfMemory(message)
            } else {
                InferError::Engine(message)
            }
        })?;
        let (_, data) = outputs[self.output.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(|e| InferError::Engine(format!("output: {e}")))?;
        Ok(data.to_vec())
    }
}

/// Whether a failed run's status is an out-of-memory. ONNX Runtime has no
/// status code of its own for it (`OrtErrorCode` in ort-sys 2.0.0-rc.15:
/// OK, FAIL, INVALID_ARGUMENT, …, EP_FAIL, DEVICE_RESET): the CUDA
/// provider's `cudaErrorMemoryAllocation` ("CUDA failure 2: out of memory")
/// and the BFC arena's "Failed to allocate memory" both come back as FAIL or
/// RUNTIME_EXCEPTION (EP_FAIL from a provider). So the code decides which
/// statuses can be one (never an invalid argument, a missing file or a bad
/// graph), and the runtime's own message, read here once where the status
/// arrives, decides among those; everything downstream uses
/// [`InferError::OutOfMemory`].
pub fn is_out_of_memory(code: ort::error::ErrorCode, message: &str) -> bool {
    use ort::error::ErrorCode;
    let may_be =
        matches!(code, ErrorCode::GenericFailure | ErrorCode::RuntimeException | ErrorCode::ExecutionProviderFailure);
    let m = message.to_ascii_lowercase();
    may_be
        && (m.contains("out of memory")
            || m.contains("failed to allocate memory")
            || m.contains("cudaerrormemoryallocation")
            || m.contains("bad_alloc"))
}

type Builder = ort::session::builder::SessionBuilder;

/// The TensorRT cache folder of one network: `<cache>/<sha256 of the ONNX
/// file, 16 hex>-<fp16|fp32>`. ONNX Runtime's TensorRT provider names the
/// engine files inside by GPU compute capability and TensorRT version, so the
/// full key is model × precision × GPU × TensorRT.
pub fn engine_cache_dir(cache: &Path, model: &Path, fp16: bool) -> PathBuf {
    use sha2::{Digest, Sha256};
    let hash = std::fs::read(model).map(|b| Sha256::digest(&b)).ok();
    let hex: String =
        hash.map(|h| h.iter().take(8).map(|b| format!("{b:02x}")).collect()).unwrap_or_else(|| "unknown".into());
    cache.join(format!("{hex}-{}", if fp16 { "fp16" } else { "fp32" }))
}

/// Registers the providers the request and this build allow; returns the
/// builder and the engine the session will run on.
fn register_providers(builder: Builder, opts: &EngineOptions, model: &Path) -> Result<(Builder, Engine), InferError> {
    check_bf16(opts)?;
    match opts.provider {
        ProviderRequest::Cpu => return Ok((builder, Engine::fp32(Provider::Cpu))),
        ProviderRequest::Openvino => return register_openvino(builder, opts, model),
        ProviderRequest::Auto | ProviderRequest::Cuda | ProviderRequest::Tensorrt => {}
    }
    match gpu::register(builder, opts, model) {
        Ok(r) => Ok(r),
        Err(e) => {
            let (builder, reason) = *e;
            if opts.require_gpu {
                Err(InferError::Runtime(format!("GPU provider not available: {reason}")))
            } else {
                tracing::warn!("GPU provider not available ({reason}); falling back to the CPU");
                Ok((builder, Engine::fp32(Provider::Cpu)))
            }
        }
    }
}

/// BF16 is OpenVINO's only: asked for with another provider it is an error
/// (not an FP32 run that looks like the one asked for).
pub fn check_bf16(opts: &EngineOptions) -> Result<(), InferError> {
    if opts.bf16 && opts.provider != ProviderRequest::Openvino {
        return Err(InferError::Runtime(format!(
            "bf16 needs the openvino provider, not {} (set [model] provider = \"openvino\" or --provider openvino)",
            opts.provider
        )));
    }
    Ok(())
}

/// Whether this CPU computes in bfloat16 natively (AVX-512 BF16, which
/// every CPU with AMX-BF16 also has): where it does not, OpenVINO's CPU
/// plugin ignores the BF16 hint, so edgeseg asks for FP32 and says so.
pub fn cpu_has_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The OpenVINO CPU plugin's `load_config` (the provider option, JSON keyed
/// by device) that sets its inference precision: `bf16`, or `f32`.
pub fn openvino_load_config(bf16: bool) -> String {
    format!(r#"{{"CPU":{{"INFERENCE_PRECISION_HINT":"{}"}}}}"#, if bf16 { "bf16" } else { "f32" })
}

/// OpenVINO's CPU device in FP32 (OpenVINO's CPU plugin defaults to bf16 on
/// processors with AMX or AVX-512 BF16, and the labels would drift from
/// nnU-Net's: ONNX Runtime's provider asks for FP32 already, and the hint
/// `f32` pins it), or in BF16 when `opts.bf16` allows it and the CPU has it
/// (the probe against FP32 follows in [`OrtNetwork::load`]), with the
/// session's thread count. Asked for by name, so a library without it is an
/// error, not a fallback.
fn register_openvino(
    mut builder: Builder,
    opts: &EngineOptions,
    model: &Path,
) -> Result<(Builder, Engine), InferError> {
    use ort::ep::{ArbitrarilyConfigurableExecutionProvider, ExecutionProvider};
    if !ort::ep::OpenVINO::is_available().unwrap_or(false) {
        return Err(InferError::Runtime(
            "the loaded ONNX Runtime library has no OpenVINO provider (use the onnxruntime-openvino wheel's library, requirements/openvino.txt)"
                .into(),
        ));
    }
    let bf16 = opts.bf16 && cpu_has_bf16();
    if opts.bf16 && !bf16 {
        tracing::warn!(
            "{}: bf16 allowed, but this CPU has no AVX-512 BF16 or AMX: OpenVINO runs FP32",
            model.display()
        );
    }
    let mut ov = ort::ep::OpenVINO::default()
        .with_device_type("CPU")
        .with_precision("FP32")
        .with_arbitrary_config("load_config", openvino_load_config(bf16));
    if opts.threads > 0 {
        ov = ov.with_num_threads(opts.threads);
    }
    ov.register(&mut builder)
        .map_err(|e| InferError::Runtime(format!("{}: OpenVINO failed to register: {e}", model.display())))?;
    let precision = if bf16 { Precision::Bf16 } else { Precision::Fp32 };
    Ok((builder, Engine { provider: Provider::Openvino, precision }))
}

#[cfg(not(feature = "cuda"))]
mod gpu {
    use super::*;

    /// Without the `cuda` feature there is nothing to register.
    pub(super) fn register(
        builder: Builder,
        opts: &EngineOptions,
        _model: &Path,
    ) -> Result<(Builder, Engine), Box<(Builder, String)>> {
        let what = if opts.provider == ProviderRequest::Tensorrt { "tensorrt" } else { "cuda" };
        Err(Box::new((
            builder,
            format!("edgeseg was built without the `{what}` feature (rebuild with --features {what})"),
        )))
    }
}

#[cfg(feature = "cuda")]
mod gpu {
    use ort::ep::ExecutionProvider;

    use super::*;

    /// Registers TensorRT (feature `tensorrt`) and/or CUDA, as asked.
    pub(super) fn register(
        mut builder: Builder,
        opts: &EngineOptions,
        model: &Path,
    ) -> Result<(Builder, Engine), Box<(Builder, String)>> {
        #[cfg(feature = "tensorrt")]
        if matches!(opts.provider, ProviderRequest::Tensorrt | ProviderRequest::Auto) {
            match ort::ep::TensorRT::is_available() {
                Ok(true) => {
                    let cache = engine_cache_dir(
                        &opts.trt_cache_dir.clone().unwrap_or_else(|| PathBuf::from("/var/lib/edgeseg/trt-cache")),
                        model,
                        opts.fp16,
                    );
                    let _ = std::fs::create_dir_all(&cache);
                    let trt = ort::ep::TensorRT::default()
                        .with_device_id(opts.device_id)
                        .with_fp16(opts.fp16)
                        .with_engine_cache(true)
                        .with_engine_cache_path(cache.display().to_string())
                        .with_timing_cache(true)
                        .with_timing_cache_path(cache.display().to_string());
                    match trt.register(&mut builder) {
                        Ok(()) => {
                            let precision = if opts.fp16 { Precision::Fp16 } else { Precision::Fp32 };
                            return Ok((builder, Engine { provider: Provider::Tensorrt, precision }));
                        }
                        Err(e) if opts.provider == ProviderRequest::Tensorrt => {
                            return Err(Box::new((
                                builder,
                                format!("TensorRT failed to register for {}: {e}", model.display()),
                            )));
                        }
                        Err(e) => tracing::warn!("TensorRT failed to register ({e}); trying CUDA"),
                    }
                }
                _ if opts.provider == ProviderRequest::Tensorrt => {
                    return Err(Box::new((
                        builder,
                        "the loaded ONNX Runtime library has no TensorRT provider (install onnxruntime-gpu built with TensorRT)"
                            .into(),
                    )));
                }
                _ => {}
            }
        }
        #[cfg(not(feature = "tensorrt"))]
        if opts.provider == ProviderRequest::Tensorrt {
            return Err(Box::new((
                builder,
                "edgeseg was built without the `tensorrt` feature (rebuild with --features tensorrt)".into(),
            )));
        }
        match ort::ep::CUDA::is_available() {
            Ok(true) => {
                let cuda = ort::ep::CUDA::default().with_device_id(opts.device_id);
                match cuda.register(&mut builder) {
                    Ok(()) => Ok((builder, Engine::fp32(Provider::Cuda))),
                    Err(e) => Err(Box::new((builder, format!("CUDA failed to register for {}: {e}", model.display())))),
                }
            }
            _ => Err(Box::new((
                builder,
                "the loaded ONNX Runtime library has no CUDA provider (install the onnxruntime-gpu wheel's library)"
                    .into(),
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use ort::error::ErrorCode;

    use super::*;

    #[test]
    fn out_of_memory_is_a_failure_status_whose_runtime_message_says_so() {
        let cuda = "Non-zero status code returned while running Conv node. Name:'c1' Status Message: \
                    CUDA failure 2: out of memory ; GPU=0 ; hostname=h ; expr=cudaMalloc";
        let arena = "/onnxruntime_src/onnxruntime/core/framework/bfc_arena.cc:376 \
                     Failed to allocate memory for requested buffer of size 1073741824";
        assert!(is_out_of_memory(ErrorCode::GenericFailure, cuda));
        assert!(is_out_of_memory(ErrorCode::RuntimeException, arena));
        assert!(is_out_of_memory(ErrorCode::ExecutionProviderFailure, cuda));
        // The same words under a status that cannot be an allocation failure.
        assert!(!is_out_of_memory(ErrorCode::InvalidArgument, "input 'out of memory' has the wrong shape"));
        assert!(!is_out_of_memory(ErrorCode::NoSuchFile, arena));
        // A failure status about something else.
        assert!(!is_out_of_memory(ErrorCode::GenericFailure, "Got invalid dimensions for input: input"));
    }

    #[test]
    fn provider_names_round_trip_and_openvino_is_one() {
        for p in [
            ProviderRequest::Auto,
            ProviderRequest::Cpu,
            ProviderRequest::Cuda,
            ProviderRequest::Tensorrt,
            ProviderRequest::Openvino,
        ] {
            assert_eq!(p.as_str().parse::<ProviderRequest>(), Ok(p));
        }
        assert_eq!("openvino".parse::<ProviderRequest>(), Ok(ProviderRequest::Openvino));
        assert_eq!(Engine::fp32(Provider::Openvino).label(), "openvino");
        assert!("OpenVINO".parse::<ProviderRequest>().is_err());
    }

    #[test]
    fn bf16_is_labelled_and_allowed_with_openvino_only() {
        let bf16 = Engine { provider: Provider::Openvino, precision: Precision::Bf16 };
        assert_eq!((bf16.label(), bf16.precision.as_str()), ("openvino-bf16", "bf16"));
        assert_eq!(Engine::fp32(Provider::Openvino).label(), "openvino");
        // BF16 is OpenVINO's label only: another provider keeps its own name.
        assert_eq!(Engine { provider: Provider::Cpu, precision: Precision::Bf16 }.label(), "cpu");
        assert_eq!(Engine { provider: Provider::Tensorrt, precision: Precision::Fp16 }.label(), "tensorrt-fp16");
        let ov = EngineOptions { provider: ProviderRequest::Openvino, bf16: true, ..EngineOptions::default() };
        assert!(check_bf16(&ov).is_ok());
        assert!(check_bf16(&EngineOptions::default()).is_ok(), "FP32 is the default");
        for provider in [ProviderRequest::Cpu, ProviderRequest::Auto, ProviderRequest::Tensorrt] {
            let e = check_bf16(&EngineOptions { provider, bf16: true, ..EngineOptions::default() }).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!(
                    "bf16 needs the openvino provider, not {provider} (set [model] provider = \"openvino\" or --provider openvino)"
                )
            );
        }
    }

    #[test]
    fn openvino_load_config_is_json_with_the_cpu_precision_hint() {
        for (bf16, hint) in [(true, "bf16"), (false, "f32")] {
            let v: serde_json::Value = serde_json::from_str(&openvino_load_config(bf16)).expect("json");
            assert_eq!(v["CPU"]["INFERENCE_PRECISION_HINT"], hint);
            assert_eq!(v.as_object().map(|o| o.len()), Some(1));
        }
    }

    #[test]
    fn engine_cache_is_keyed_by_model_and_precision() {
        let d = tempfile::tempdir().expect("tempdir");
        let (a, b) = (d.path().join("a.onnx"), d.path().join("b.onnx"));
        std::fs::write(&a, b"model a").expect("write");
        std::fs::write(&b, b"model b").expect("write");
        let cache = Path::new("/var/cache/x");
        assert_ne!(engine_cache_dir(cache, &a, false), engine_cache_dir(cache, &b, false));
        assert_ne!(engine_cache_dir(cache, &a, false), engine_cache_dir(cache, &a, true));
        assert!(engine_cache_dir(cache, &a, true).to_string_lossy().ends_with("-fp16"));
        assert!(engine_cache_dir(cache, &a, true).starts_with(cache));
    }
}

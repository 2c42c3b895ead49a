//! Where post-processing runs: the choice of `[gpu] postprocess` and of
//! `edgeseg process --postprocess` (`auto`, `cuda`, `cpu`), made once at
//! start, and the fall-back to the CPU twins when a CUDA kernel fails in the
//! middle of a study (the twins give bit-identical results, only slower).

use serde::{Deserialize, Serialize};

use super::{Backend, GpuError};

/// The test hook: with `EDGESEG_TEST_CUDA_POST_FAILS=1` in the environment,
/// a choice other than `cpu` gets a simulated CUDA backend whose every step
/// fails, so the fall-back is testable on a machine without a GPU. For tests
/// only (docs/install.md says so); it never makes a result differ, since the
/// CPU twins then do the work.
pub const TEST_FAIL_ENV: &str = "EDGESEG_TEST_CUDA_POST_FAILS";

/// Where post-processing should run: parsed once, by [`FromStr`](std::str::FromStr),
/// for `[gpu] postprocess` (serde, through `TryFrom<String>`) and
/// `--postprocess` (clap) alike.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum PostprocessChoice {
    /// CUDA when a device is there and the kernels load, else the CPU (one log line).
    #[default]
    Auto,
    /// CUDA or nothing: no device or no kernels is an error at start.
    Cuda,
    /// The CPU twins.
    Cpu,
}

impl PostprocessChoice {
    /// `auto`, `cuda` or `cpu`.
    pub fn as_str(self) -> &'static str {
        match self {
            PostprocessChoice::Auto => "auto",
            PostprocessChoice::Cuda => "cuda",
            PostprocessChoice::Cpu => "cpu",
        }
    }
}

impl std::str::FromStr for PostprocessChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(PostprocessChoice::Auto),
            "cuda" => Ok(PostprocessChoice::Cuda),
            "cpu" => Ok(PostprocessChoice::Cpu),
            other => Err(format!("{other:?}: expected auto, cuda or cpu")),
        }
    }
}

impl TryFrom<String> for PostprocessChoice {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

/// Errors of choosing the backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SelectError {
    /// `cuda` was asked for and CUDA cannot be used here.
    #[error(
        "post-processing on CUDA was asked for (postprocess = \"cuda\") but cannot run here: {0}; \
         use \"auto\" to run on the CPU when there is no GPU"
    )]
    CudaUnavailable(GpuError),
}

/// The post-processing backend of a run, as chosen; [`PostBackend::run`]
/// falls back to the CPU twins when a CUDA step fails.
pub struct PostBackend {
    backend: Backend,
    /// The test hook's simulated CUDA backend (see [`TEST_FAIL_ENV`]).
    simulated_failure: bool,
}

/// What a post-processing step ran on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostRun {
    /// `cpu` or `cuda`: where the step's results come from.
    pub backend: &'static str,
    /// Why it ran on the CPU twins after all (the CUDA error), when it did.
    pub fallback: Option<String>,
}

impl PostBackend {
    /// The CPU twins.
    pub fn cpu() -> Self {
        PostBackend { backend: Backend::Cpu, simulated_failure: false }
    }

    /// The backend for `choice`: `cpu` the twins; `cuda` the GPU or an error;
    /// `auto` the GPU when it works here, else the twins with one log line.
    pub fn select(choice: PostprocessChoice) -> Result<Self, SelectError> {
        if choice != PostprocessChoice::Cpu && std::env::var_os(TEST_FAIL_ENV).is_some_and(|v| v == "1") {
            tracing::warn!("{TEST_FAIL_ENV}=1: post-processing on a simulated CUDA backend that always fails");
            return Ok(PostBackend { backend: Backend::Cpu, simulated_failure: true });
        }
        match choice {
            PostprocessChoice::Cpu => Ok(Self::cpu()),
            PostprocessChoice::Cuda => Backend::cuda()
                .map(|backend| PostBackend { backend, simulated_failure: false })
                .map_err(SelectError::CudaUnavailable),
            PostprocessChoice::Auto => match Backend::cuda() {
                Ok(backend) => Ok(PostBackend { backend, simulated_failure: false }),
                Err(e) => {
                    tracing::info!("post-processing on the CPU: {e}");
                    Ok(Self::cpu())
                }
            },
        }
    }

    /// `cpu` or `cuda`: the backend chosen (a study may still fall back).
    pub fn name(&self) -> &'static str {
        if self.simulated_failure { "cuda" } else { self.backend.name() }
    }

    /// Runs one post-processing step on the chosen backend. A CUDA failure
    /// (any error but invalid input, which the twins would refuse too) is
    /// logged and the step runs again on the CPU twins; the returned
    /// [`PostRun`] says where the results come from and why.
    pub fn run<T>(&self, what: &str, step: impl Fn(&Backend) -> Result<T, GpuError>) -> Result<(T, PostRun), GpuError> {
        let first = if self.simulated_failure {
            Err(GpuError::Cuda(format!("simulated failure ({TEST_FAIL_ENV}=1)")))
        } else {
            step(&self.backend)
        };
        match first {
            Ok(v) => Ok((v, PostRun { backend: self.backend.name(), fallback: None })),
            Err(e) if self.name() == "cpu" || matches!(e, GpuError::Invalid(_)) => Err(e),
            Err(e) => {
                tracing::warn!("{what} failed on CUDA ({e}); running it on the CPU twins for this study");
                let v = step(&Backend::Cpu)?;
                Ok((v, PostRun { backend: "cpu", fallback: Some(e.to_string()) }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choice_parses_and_cpu_never_fails_over() {
        assert_eq!("auto".parse::<PostprocessChoice>(), Ok(PostprocessChoice::Auto));
        assert_eq!("cuda".parse::<PostprocessChoice>(), Ok(PostprocessChoice::Cuda));
        assert!("gpu".parse::<PostprocessChoice>().is_err());
        let cpu = PostBackend::cpu();
        let (n, run) = cpu.run("step", |b| Ok(b.name())).expect("cpu");
        assert_eq!((n, run.backend, run.fallback), ("cpu", "cpu", None));
        let e = cpu.run("step", |_| Err::<(), _>(GpuError::Cuda("boom".into()))).expect_err("no twin of a twin");
        assert!(e.to_string().contains("boom"));
    }

    #[test]
    fn a_failing_cuda_step_runs_again_on_the_twins() {
        let b = PostBackend { backend: Backend::Cpu, simulated_failure: true };
        assert_eq!(b.name(), "cuda");
        let (n, run) = b.run("labelling", |b| Ok(b.name())).expect("fell back");
        assert_eq!(n, "cpu");
        assert_eq!(run.backend, "cpu");
        assert!(run.fallback.as_deref().is_some_and(|r| r.contains("simulated")), "{run:?}");
    }
}

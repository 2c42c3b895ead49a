//! Simulated networks: the fold files of a `network = "simulated"` package
//! (`fold_K.sim.toml`) each name a fixed, deterministic rule that stands in
//! for a trained network, so that the daemon's and the pipeline's tests about
//! queueing, crashes, failures and outputs run without ONNX Runtime or a
//! Python-made ONNX file (as stratisd's simulated engine stands in for
//! devices). A test device: the package refuses `clinical_use = true`
//! ([`super::model::ModelPackage::load`]) and report.json, D-Bus and the
//! metrics name the provider `simulated`.
//!
//! ```toml
//! rule = "pointwise"  # logits [-scale (x - offset), scale (x - offset)] of input channel `channel`
//! channel = 0
//! scale = 1.0
//! offset = 3.0
//! fail = "never"      # or "out-of-memory-on-gpu", "always"
//! ```
//!
//! or `rule = "nearest"` with `centres = [c0, c1, …]` (one per class):
//! logits `-4 (x - c_k)²`, the nearest centre wins. `x` is the network's
//! input, after nnU-Net's normalisation.

use std::path::Path;

use serde::Deserialize;

use super::InferError;
use super::model::ModelError;
use super::onnx::{Engine, EngineOptions, Provider, ProviderRequest};
use super::sliding::Network;

/// The rule of a simulated fold.
#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    /// Two classes: logits `[-scale (x - offset), scale (x - offset)]`, so
    /// class 1 where input channel `channel` is above `offset`.
    Pointwise {
        /// Input channel read.
        channel: usize,
        /// Logit scale (> 0).
        scale: f32,
        /// Threshold, in normalised units.
        offset: f32,
    },
    /// One class per centre: logits `-4 (x - centre)²`.
    Nearest {
        /// Input channel read.
        channel: usize,
        /// Centre of each class, in normalised units.
        centres: Vec<f32>,
    },
}

/// When a simulated fold fails on purpose.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Failure {
    /// Every run succeeds.
    #[default]
    Never,
    /// Every run fails with [`InferError::OutOfMemory`] unless the engine
    /// was asked for the CPU provider (the daemon's `cpu_fallback_on_oom`
    /// retry asks for it).
    OutOfMemoryOnGpu,
    /// Every run fails with [`InferError::Engine`].
    Always,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RuleName {
    Pointwise,
    Nearest,
}

/// `fold_K.sim.toml` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SimToml {
    rule: RuleName,
    #[serde(default)]
    channel: usize,
    scale: Option<f32>,
    offset: Option<f32>,
    centres: Option<Vec<f32>>,
    #[serde(default)]
    fail: Failure,
}

/// One simulated fold.
#[derive(Debug, Clone)]
pub struct SimulatedNetwork {
    rule: Rule,
    fail: Failure,
    /// Whether the engine was asked for the CPU provider.
    on_cpu: bool,
    fold: u32,
    channels: usize,
    voxels: usize,
}

impl SimulatedNetwork {
    /// Reads `fold_K.sim.toml` (already checked against its sha256) for a
    /// model of `channels` inputs, `classes` outputs and `patch`.
    pub fn load(
        path: &Path,
        fold: u32,
        channels: usize,
        patch: [usize; 3],
        classes: usize,
        opts: &EngineOptions,
    ) -> Result<Self, InferError> {
        let bad = |reason: String| InferError::Package(ModelError::Parse { path: path.to_path_buf(), reason });
        let text = std::fs::read_to_string(path)
            .map_err(|source| InferError::Package(ModelError::Io { path: path.to_path_buf(), source }))?;
        let raw: SimToml = toml::from_str(&text).map_err(|e| bad(e.message().to_string()))?;
        if raw.channel >= channels {
            return Err(bad(format!("channel {} but the model takes {channels} channel(s)", raw.channel)));
        }
        let rule = match raw.rule {
            RuleName::Pointwise => {
                if raw.centres.is_some() {
                    return Err(bad("centres belongs to rule \"nearest\", not \"pointwise\"".into()));
                }
                if classes != 2 {
                    return Err(bad(format!("rule \"pointwise\" gives 2 classes, dataset.json has {classes}")));
                }
                let scale = raw.scale.unwrap_or(1.0);
                if !(scale.is_finite() && scale > 0.0) {
                    return Err(bad(format!("scale {scale} must be a positive number")));
                }
                let offset = raw.offset.unwrap_or(0.0);
                if !offset.is_finite() {
                    return Err(bad("offset must be a finite number".into()));
                }
                Rule::Pointwise { channel: raw.channel, scale, offset }
            }
            RuleName::Nearest => {
                if raw.scale.is_some() || raw.offset.is_some() {
                    return Err(bad("scale and offset belong to rule \"pointwise\", not \"nearest\"".into()));
                }
                let Some(centres) = raw.centres else {
                    return Err(bad("rule \"nearest\" needs centres (one per class)".into()));
                };
                if centres.len() != classes {
                    return Err(bad(format!("{} centre(s), dataset.json has {classes} classes", centres.len())));
                }
                if centres.iter().any(|c| !c.is_finite()) {
                    return Err(bad("centres must be finite numbers".into()));
                }
                Rule::Nearest { channel: raw.channel, centres }
            }
        };
        Ok(Self {
            rule,
            fail: raw.fail,
            on_cpu: opts.provider == ProviderRequest::Cpu,
            fold,
            channels,
            voxels: patch.iter().product(),
        })
    }

    /// The rule.
    pub fn rule(&self) -> &Rule {
        &self.rule
    }

    /// What report.json and the observers show: provider `simulated`, FP32.
    pub fn engine(&self) -> Engine {
        Engine::fp32(Provider::Simulated)
    }
}

impl Network for SimulatedNetwork {
    fn run(&self, input: &[f32], n: usize) -> Result<Vec<f32>, InferError> {
        match self.fail {
            Failure::Never => {}
            Failure::OutOfMemoryOnGpu if self.on_cpu => {}
            Failure::OutOfMemoryOnGpu => {
                return Err(InferError::OutOfMemory(format!(
                    "simulated fold {}: out of memory (fail = \"out-of-memory-on-gpu\")",
                    self.fold
                )));
            }
            Failure::Always => {
                return Err(InferError::Engine(format!("simulated fold {}: failed (fail = \"always\")", self.fold)));
            }
        }
        let v = self.voxels;
        let tile = self.channels * v;
        if input.len() != n * tile {
            return Err(InferError::Engine(format!(
                "simulated fold {}: {} input values for {n} tile(s) of {tile}",
                self.fold,
                input.len()
            )));
        }
        let mut out = Vec::new();
        for item in input.chunks_exact(tile) {
            match &self.rule {
                Rule::Pointwise { channel, scale, offset } => {
                    let x = &item[channel * v..(channel + 1) * v];
                    out.extend(x.iter().map(|&x| -scale * (x - offset)));
                    out.extend(x.iter().map(|&x| scale * (x - offset)));
                }
                Rule::Nearest { channel, centres } => {
                    let x = &item[channel * v..(channel + 1) * v];
                    for &c in centres {
                        out.extend(x.iter().map(|&x| -4.0 * (x - c) * (x - c)));
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, classes: usize, provider: ProviderRequest) -> Result<SimulatedNetwork, InferError> {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("fold_0.sim.toml");
        std::fs::write(&p, text).expect("write");
        let opts = EngineOptions { provider, ..EngineOptions::default() };
        SimulatedNetwork::load(&p, 0, 2, [2, 2, 1], classes, &opts)
    }

    #[test]
    fn pointwise_and_nearest_rules_give_their_logits() {
        let net = load("rule = \"pointwise\"\nchannel = 1\nscale = 2.0\noffset = 0.5\n", 2, ProviderRequest::Cpu)
            .expect("loads");
        // One tile: channel 0 ignored, channel 1 = [0, 1, 0.5, -1].
        let input = [9.0, 9.0, 9.0, 9.0, 0.0, 1.0, 0.5, -1.0];
        assert_eq!(net.run(&input, 1).expect("runs"), vec![1.0, -1.0, -0.0, 3.0, -1.0, 1.0, 0.0, -3.0]);
        let net = load("rule = \"nearest\"\ncentres = [0.0, 2.0, -2.0]\n", 3, ProviderRequest::Auto).expect("loads");
        let out = net.run(&input, 1).expect("runs");
        // Channel 0 is 9 everywhere: centre 2 (class 1) is the nearest.
        let argmax = |i: usize| (0..3).max_by(|&a, &b| out[a * 4 + i].total_cmp(&out[b * 4 + i])).expect("classes");
        assert_eq!((0..4).map(argmax).collect::<Vec<_>>(), vec![1, 1, 1, 1]);
        assert_eq!(net.engine().label(), "simulated");
    }

    #[test]
    fn out_of_memory_on_gpu_fails_typed_except_on_the_cpu() {
        let text = "rule = \"pointwise\"\nfail = \"out-of-memory-on-gpu\"\n";
        let input = [0f32; 8];
        let e = load(text, 2, ProviderRequest::Auto).expect("loads").run(&input, 1).expect_err("fails");
        assert!(e.is_out_of_memory(), "{e}");
        assert!(e.to_string().contains("out of memory"), "{e}");
        assert!(load(text, 2, ProviderRequest::Cpu).expect("loads").run(&input, 1).is_ok());
        let e = load("rule = \"pointwise\"\nfail = \"always\"\n", 2, ProviderRequest::Cpu)
            .expect("loads")
            .run(&input, 1)
            .expect_err("fails");
        assert!(!e.is_out_of_memory(), "{e}");
    }

    #[test]
    fn a_rule_that_does_not_fit_the_model_is_refused_with_the_file() {
        for (text, classes, says) in [
            ("rule = \"pointwise\"\n", 3, "gives 2 classes, dataset.json has 3"),
            ("rule = \"pointwise\"\nchannel = 2\n", 2, "channel 2 but the model takes 2"),
            ("rule = \"nearest\"\ncentres = [0.0]\n", 2, "1 centre(s), dataset.json has 2 classes"),
            ("rule = \"nearest\"\n", 2, "needs centres"),
            ("rule = \"pointwise\"\nscale = -1.0\n", 2, "positive"),
            ("rule = \"unet\"\n", 2, "unknown variant"),
            ("rule = \"pointwise\"\nfail = \"sometimes\"\n", 2, "unknown variant"),
        ] {
            let e = load(text, classes, ProviderRequest::Cpu).expect_err(text).to_string();
            assert!(e.contains("fold_0.sim.toml: ") && e.contains(says), "{text}: {e}");
        }
    }
}

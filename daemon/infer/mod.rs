//! Preprocess and infer stages: nnU-Net v2 model packages run through ONNX
//! Runtime (or a simulated network, a test device) with nnU-Net's own
//! preprocessing, sliding window, mirroring and fold ensembling, and the way
//! back to the input grid. Knows nothing of DICOM, queues or services:
//! volumes in, a label map out.

pub mod memory;
pub mod model;
pub mod onnx;
pub mod preprocess;
pub mod resample;
pub mod simulated;
pub mod sliding;

use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use crate::volume::{Geometry, Volume};
use model::{ModelPackage, NetworkFormat};
use onnx::{Engine, EngineOptions, OrtNetwork};
use preprocess::transpose;
use resample::{resample_channel, resample_channel_planes};
use simulated::SimulatedNetwork;
use sliding::{Network, WindowSettings};

/// Errors of the inference stages.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InferError {
    /// The model package.
    #[error(transparent)]
    Package(#[from] model::ModelError),
    /// The model's contents are unusable here.
    #[error("model: {0}")]
    Model(String),
    /// ONNX Runtime could not be loaded or a session not built.
    #[error("{0}")]
    Runtime(String),
    /// A network call failed.
    #[error("engine: {0}")]
    Engine(String),
    /// A network call ran out of device (or host) memory: the same study may
    /// pass on the CPU (`[model] cpu_fallback_on_oom`). Decided where the
    /// engine's error is first seen ([`onnx::is_out_of_memory`]), never from
    /// this message later.
    #[error("engine: {0}")]
    OutOfMemory(String),
    /// The inputs do not fit the model.
    #[error("input: {0}")]
    Input(String),
}

impl InferError {
    /// Whether the device (or host) ran out of memory, so that a retry on the
    /// CPU may succeed.
    pub fn is_out_of_memory(&self) -> bool {
        matches!(self, InferError::OutOfMemory(_))
    }
}

/// Options of one prediction.
#[derive(Debug, Clone)]
pub struct PredictOptions {
    /// Folds to use (empty: all of the package's).
    pub folds: Vec<u32>,
    /// Mirroring test-time augmentation.
    pub tta: bool,
    /// Sliding-window step as a fraction of the patch.
    pub step_size: f64,
    /// Tiles per network call.
    pub batch_size: usize,
    /// Engine options.
    pub engine: EngineOptions,
}

impl Default for PredictOptions {
    fn default() -> Self {
        Self { folds: Vec::new(), tta: true, step_size: 0.5, batch_size: 2, engine: EngineOptions::default() }
    }
}

/// Seconds per stage of one prediction.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    /// Preprocessing.
    pub preprocess_s: f64,
    /// Sliding window (all folds).
    pub inference_s: f64,
    /// Resampling back, argmax, uncropping.
    pub export_s: f64,
}

/// A model package with its engines, ready to predict.
pub struct Predictor {
    /// The package.
    pub package: ModelPackage,
    nets: Vec<Fold>,
    opts: PredictOptions,
}

/// One fold's network and the engine it runs on.
struct Fold {
    fold: u32,
    net: Box<dyn Network>,
    engine: Engine,
}

/// What one prediction gives.
pub struct Prediction {
    /// Class per voxel, on the input grid.
    pub labels: Volume<u8>,
    /// Class probabilities (softmax) on the input grid, when asked for.
    pub probabilities: Option<Vec<Volume<f32>>>,
    /// Seconds per stage.
    pub timings: Timings,
}

impl Predictor {
    /// Loads the package and builds one engine per fold.
    pub fn new(model_dir: &Path, ort_lib: &Path, opts: PredictOptions) -> Result<Self, InferError> {
        Self::from_package(ModelPackage::load(model_dir)?, ort_lib, opts)
    }

    /// Builds one engine per fold of a package already read (and checked
    /// against its sha256s), so a caller that needs the package too reads it
    /// once. ONNX Runtime (`ort_lib`) is loaded for an ONNX package only.
    pub fn from_package(package: ModelPackage, ort_lib: &Path, opts: PredictOptions) -> Result<Self, InferError> {
        let folds = if opts.folds.is_empty() { package.meta.folds.clone() } else { opts.folds.clone() };
        let channels = package.meta.channels.len();
        let p = &package.config.patch_size;
        let patch = [p[0], p[1], p[2]];
        let mut nets = Vec::new();
        for f in folds {
            if !package.meta.folds.contains(&f) {
                return Err(InferError::Model(format!(
                    "fold {f} is not in the package (folds {:?})",
                    package.meta.folds
                )));
            }
            let (path, classes) = (package.fold_path(f), package.num_classes());
            let fold = match package.meta.network {
                NetworkFormat::Onnx => {
                    let net = OrtNetwork::load(ort_lib, &path, channels, patch, classes, &opts.engine)?;
                    Fold { fold: f, engine: net.engine, net: Box::new(net) }
                }
                NetworkFormat::Simulated => {
                    let net = SimulatedNetwork::load(&path, f, channels, patch, classes, &opts.engine)?;
                    Fold { fold: f, engine: net.engine(), net: Box::new(net) }
                }
            };
            nets.push(fold);
        }
        Ok(Self { package, nets, opts })
    }

    /// Runs one batch of zeros through every fold, so engines (TensorRT) are
    /// built and cached now rather than at the first study.
    pub fn warm_up(&self) -> Result<(), InferError> {
        let p = &self.package.config.patch_size;
        let n = self.package.meta.channels.len() * p.iter().product::<usize>();
        for f in &self.nets {
            f.net.run(&vec![0f32; n], 1)?;
        }
        Ok(())
    }

    /// The engine (provider and precision) each fold got.
    pub fn providers(&self) -> Vec<(u32, Engine)> {
        self.nets.iter().map(|f| (f.fold, f.engine)).collect()
    }

    /// Predicts one case; `channels[c]` are the input volumes in channel order,
    /// all on the same grid.
    pub fn predict(
        &self,
        channels: &[&Volume<f32>],
        probabilities: bool,
        progress: impl FnMut(usize, usize),
    ) -> Result<Prediction, InferError> {
        let case = prepare(&self.package, channels)?;
        self.predict_prepared(case, probabilities, progress)
    }

    /// Sliding window, fold ensemble and the way back for a case [`prepare`]d
    /// for this model package (by another thread, say).
    pub fn predict_prepared(
        &self,
        case: PreparedCase,
        probabilities: bool,
        progress: impl FnMut(usize, usize),
    ) -> Result<Prediction, InferError> {
        let pkg = &self.package;
        if case.package_sha256 != pkg.sha256 {
            return Err(InferError::Model(format!(
                "the case was prepared for model package {}, this one is {}",
                case.package_sha256, pkg.sha256
            )));
        }
        let PreparedCase { mut pre, geometry: g, preprocess_s, .. } = case;
        let t = Instant::now();
        let p = &pkg.config.patch_size;
        let settings = WindowSettings {
            patch: [p[0], p[1], p[2]],
            step_size: self.opts.step_size,
            mirror_axes: if self.opts.tta { pkg.meta.inference.allowed_mirroring_axes.clone() } else { Vec::new() },
            batch_size: self.opts.batch_size,
            classes: pkg.num_classes(),
        };
        let nets: Vec<&dyn Network> = self.nets.iter().map(|f| f.net.as_ref()).collect();
        let cshape = pre.props.shape_after_cropping;
        let (labels, probs, inference_s, export_s) = if !probabilities && pre.shape == cshape {
            // At the input's own spacing without probabilities: each finished
            // slab of logits goes straight to the label map (argmax, first
            // class wins ties as numpy), so no volume-sized logits exist.
            let k = settings.classes;
            let row = cshape[1] * cshape[2];
            let mut arg = vec![0u8; cshape.iter().product()];
            sliding::predict_streaming(&nets, &pre.data, pre.channels, pre.shape, &settings, progress, |slab| {
                let n = slab.rows.len() * row;
                let out = &mut arg[slab.rows.start * row..slab.rows.start * row + n];
                for (i, o) in out.iter_mut().enumerate() {
                    let mut best = f32::NEG_INFINITY;
                    for c in 0..k {
                        let v = sliding::from_half(slab.half[c * n + i]);
                        if v > best {
                            best = v;
                            *o = c as u8;
                        }
                    }
                }
                Ok(())
            })?;
            pre.data = Vec::new();
            let inference_s = t.elapsed().as_secs_f64();
            let t = Instant::now();
            let labels = uncrop_labels(pkg, &pre, &arg);
            (labels, None, inference_s, t.elapsed().as_secs_f64())
        } else {
            let logits = sliding::predict(&nets, &pre.data, pre.channels, pre.shape, &settings, progress)?;
            // The normalised input is not needed on the way back.
            pre.data = Vec::new();
            let inference_s = t.elapsed().as_secs_f64();
            let t = Instant::now();
            let (labels, probs) = export(pkg, logits, &pre, probabilities)?;
            (labels, probs, inference_s, t.elapsed().as_secs_f64())
        };
        let to_volume = |data| Volume { geometry: g.clone(), data };
        Ok(Prediction {
            labels: to_volume(labels),
            probabilities: probs.map(|ps| ps.into_iter().map(|d| Volume { geometry: g.clone(), data: d }).collect()),
            timings: Timings { preprocess_s, inference_s, export_s },
        })
    }
}

/// A case after nnU-Net's preprocessing (transpose, crop, normalisation,
/// resampling) for one model package, ready for the sliding window. The
/// daemon's loader thread prepares the next study on the CPU while the
/// current one is on the GPU.
pub struct PreparedCase {
    pre: preprocess::Preprocessed,
    geometry: Geometry,
    preprocess_s: f64,
    package_sha256: String,
}

impl PreparedCase {
    /// The model package it was prepared for (sha256).
    pub fn package_sha256(&self) -> &str {
        &self.package_sha256
    }

    /// Bytes held (the network input).
    pub fn bytes(&self) -> usize {
        self.pre.data.len() * std::mem::size_of::<f32>()
    }
}

/// The channels' grid: as many channels as the model takes, all on the
/// first one's grid.
fn one_grid<'a>(
    pkg: &ModelPackage,
    geometries: impl ExactSizeIterator<Item = &'a Geometry>,
) -> Result<&'a Geometry, InferError> {
    if geometries.len() != pkg.meta.channels.len() {
        return Err(InferError::Input(format!(
            "{} channels given, the model takes {}",
            geometries.len(),
            pkg.meta.channels.len()
        )));
    }
    let mut geometries = geometries;
    let Some(g) = geometries.next() else {
        return Err(InferError::Input("no input channels".into()));
    };
    if geometries.any(|c| c.dims != g.dims) {
        return Err(InferError::Input("the channels are on different grids".into()));
    }
    Ok(g)
}

/// nnU-Net's preprocessing of one case for `pkg`; `channels[c]` are the
/// input volumes in channel order, all on the same grid. Needs the package
/// only (plans), no network.
pub fn prepare(pkg: &ModelPackage, channels: &[&Volume<f32>]) -> Result<PreparedCase, InferError> {
    let g = one_grid(pkg, channels.iter().map(|c| &c.geometry))?;
    // nnU-Net's axes: (k, j, i) of our x-fastest volumes, same memory order.
    let shape = [g.dims[2], g.dims[1], g.dims[0]];
    let spacing = [g.spacing[2], g.spacing[1], g.spacing[0]];
    let t = Instant::now();
    let data: Vec<&[f32]> = channels.iter().map(|c| c.data.as_slice()).collect();
    let pre = preprocess::preprocess(pkg, &data, shape, spacing)?;
    tracing::debug!(shape = ?pre.shape, props = ?pre.props, "preprocessed");
    Ok(PreparedCase {
        pre,
        geometry: g.clone(),
        preprocess_s: t.elapsed().as_secs_f64(),
        package_sha256: pkg.sha256.clone(),
    })
}

/// [`prepare`] of volumes the caller gives up (`edgeseg predict`): a
/// single-channel case is cropped and normalised in its own buffer
/// ([`preprocess::preprocess_owned`]), so the input and the network input
/// are not both held. The same case as [`prepare`] gives.
pub fn prepare_owned(pkg: &ModelPackage, channels: Vec<Volume<f32>>) -> Result<PreparedCase, InferError> {
    let g = one_grid(pkg, channels.iter().map(|c| &c.geometry))?.clone();
    let shape = [g.dims[2], g.dims[1], g.dims[0]];
    let spacing = [g.spacing[2], g.spacing[1], g.spacing[0]];
    let t = Instant::now();
    let data: Vec<Vec<f32>> = channels.into_iter().map(|c| c.data).collect();
    let pre = preprocess::preprocess_owned(pkg, data, shape, spacing)?;
    tracing::debug!(shape = ?pre.shape, props = ?pre.props, "preprocessed");
    Ok(PreparedCase { pre, geometry: g, preprocess_s: t.elapsed().as_secs_f64(), package_sha256: pkg.sha256.clone() })
}

/// Fraction of probe-tile voxels whose argmax differs between two networks
/// of the same model (the TensorRT FP16 check against FP32: nnU-Net issue
/// #2874, an FP16 engine that returned empty output). The probe is a fixed
/// pseudo-random tile with the statistics of normalised input (mean 0, SD 1).
pub fn probe_disagreement(
    a: &dyn Network,
    b: &dyn Network,
    channels: usize,
    patch: [usize; 3],
    classes: usize,
) -> Result<f64, InferError> {
    let n = patch.iter().product::<usize>();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut uniform = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    // Sum of 4 uniforms: close to normal, mean 2, variance 1/3.
    let probe: Vec<f32> = (0..channels * n)
        .map(|_| (((uniform() + uniform() + uniform() + uniform()) - 2.0) * 3f64.sqrt()) as f32)
        .collect();
    let (x, y) = (a.run(&probe, 1)?, b.run(&probe, 1)?);
    // First class with the highest logit (numpy's argmax; −0 equals +0).
    let argmax = |v: &[f32], i: usize| {
        let mut best = 0;
        for c in 1..classes {
            if v[c * n + i] > v[best * n + i] {
                best = c;
            }
        }
        best
    };
    let differ = (0..n).filter(|&i| argmax(&x, i) != argmax(&y, i)).count();
    Ok(differ as f64 / n as f64)
}

/// Largest probe disagreement at which an FP16 (TensorRT) engine is still trusted.
pub const FP16_MAX_DISAGREEMENT: f64 = 0.005;

/// Largest probe disagreement at which a BF16 (OpenVINO) engine is still
/// trusted. bfloat16 keeps 8 bits of mantissa to FP16's 11: on the random
/// probe tile, whose voxels sit near a decision boundary far more often than
/// an image's, a correct BF16 engine differs from FP32 on 0.03–0.8 % of the
/// voxels (demo-petct and the parity models; PyTorch's own bf16 autocast
/// differs as much, BENCHMARKS.md), so FP16's 0.5 % would refuse it; a broken
/// engine (zeros, NaN) differs on about half. The labels' parity with
/// nnU-Net is what scripts/test-nnunet-parity.sh measures.
pub const BF16_MAX_DISAGREEMENT: f64 = 0.02;

/// A cropped label map at the cropped shape back to the input grid: pasted
/// into the uncropped shape (background outside the crop), transpose_backward.
fn uncrop_labels(pkg: &ModelPackage, pre: &preprocess::Preprocessed, arg: &[u8]) -> Vec<u8> {
    let cshape = pre.props.shape_after_cropping;
    let bshape = pre.props.shape_before_cropping;
    let bbox = pre.props.bbox;
    let mut full = vec![0u8; bshape.iter().product()];
    let mut i = 0;
    for a in bbox[0][0]..bbox[0][1] {
        for b in bbox[1][0]..bbox[1][1] {
            let row = (a * bshape[1] + b) * bshape[2];
            full[row + bbox[2][0]..row + bbox[2][1]].copy_from_slice(&arg[i..i + cshape[2]]);
            i += cshape[2];
        }
    }
    let tb = &pkg.plans.transpose_backward;
    if *tb == [0, 1, 2] {
        return full;
    }
    transpose(&full, bshape, [tb[0], tb[1], tb[2]]).0
}

/// Class `c`'s values from voxel `offset` on into the running maximum and
/// its argmax (first class wins ties, as numpy).
fn merge_max(best: &mut [f32], arg: &mut [u8], offset: usize, values: &[f32], c: usize) {
    let end = offset + values.len();
    for ((b, a), &v) in best[offset..end].iter_mut().zip(&mut arg[offset..end]).zip(values) {
        if v > *b {
            *b = v;
            *a = c as u8;
        }
    }
}

/// A label map and, when asked for, per-class probabilities (C order).
type Exported = (Vec<u8>, Option<Vec<Vec<f32>>>);

/// Logits at the working resolution back to a label map on the input grid:
/// per class, resample to the cropped shape (the plans' probability
/// resampling), keep a running argmax (first class wins ties, as numpy), paste
/// into the uncropped shape, transpose_backward. Memory: the cropped label map
/// plus one resampled class at a time (two with probabilities).
fn export(
    pkg: &ModelPackage,
    logits: sliding::Logits,
    pre: &preprocess::Preprocessed,
    probabilities: bool,
) -> Result<Exported, InferError> {
    let k = pkg.num_classes();
    let cshape = pre.props.shape_after_cropping;
    let cn = cshape.iter().product::<usize>();
    let target = [pkg.config.spacing[0], pkg.config.spacing[1], pkg.config.spacing[2]];
    let kw = &pkg.config.resampling_fn_probabilities_kwargs;
    let mut best = vec![f32::NEG_INFINITY; cn];
    let mut arg = vec![0u8; cn];
    let mut resampled_all = Vec::new();
    let plane = cshape[1] * cshape[2];
    for c in 0..k {
        if probabilities {
            // At the cropped shape already (working spacing = input spacing):
            // nnU-Net's resampling returns the data unchanged.
            let r: Vec<f32> = if pre.shape == cshape {
                logits.class(c)
            } else {
                resample_channel(&logits.class(c), pre.shape, cshape, target, pre.props.original_spacing, kw)
            };
            merge_max(&mut best, &mut arg, 0, &r, c);
            resampled_all.push(r);
        } else {
            // Without probabilities the resampled class goes to the running
            // maximum block of planes by block: never a whole class in f32.
            let class = logits.class(c);
            resample_channel_planes(
                &class,
                pre.shape,
                cshape,
                target,
                pre.props.original_spacing,
                kw,
                |first, block| merge_max(&mut best, &mut arg, first * plane, block, c),
            );
        }
    }
    drop(logits);
    let bshape = pre.props.shape_before_cropping;
    let bbox = pre.props.bbox;
    let tb = &pkg.plans.transpose_backward;
    let perm = [tb[0], tb[1], tb[2]];
    let labels = uncrop_labels(pkg, pre, &arg);
    drop(arg);
    let probs = if probabilities {
        // Softmax per voxel, then each class uncropped (background 1 outside).
        let mut out = Vec::with_capacity(k);
        for c in 0..k {
            let mut full = vec![if c == 0 { 1f32 } else { 0f32 }; bshape.iter().product()];
            let mut i = 0;
            for a in bbox[0][0]..bbox[0][1] {
                for b in bbox[1][0]..bbox[1][1] {
                    let row = (a * bshape[1] + b) * bshape[2];
                    for x in 0..cshape[2] {
                        let m = best[i + x];
                        let denom: f32 = resampled_all.iter().map(|r: &Vec<f32>| (r[i + x] - m).exp()).sum();
                        full[row + bbox[2][0] + x] = (resampled_all[c][i + x] - m).exp() / denom;
                    }
                    i += cshape[2];
                }
            }
            out.push(transpose(&full, bshape, perm).0);
        }
        Some(out)
    } else {
        None
    };
    Ok((labels, probs))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// logits = [−s·x, s·x] on channel 0.
    struct Scaled(f32, usize);

    impl Network for Scaled {
        fn run(&self, input: &[f32], n: usize) -> Result<Vec<f32>, InferError> {
            let t = self.1;
            let mut out = Vec::new();
            for i in 0..n {
                let x = &input[i * t..(i + 1) * t];
                out.extend(x.iter().map(|v| -self.0 * v));
                out.extend(x.iter().map(|v| self.0 * v));
            }
            Ok(out)
        }
    }

    #[test]
    fn probe_agrees_for_equivalent_networks_and_not_for_a_broken_one() {
        let patch = [8, 8, 8];
        let t = 512;
        let d = probe_disagreement(&Scaled(1.0, t), &Scaled(2.0, t), 1, patch, 2).expect("runs");
        assert_eq!(d, 0.0);
        // An "FP16 engine" that outputs zeros everywhere (issue #2874): argmax 0
        // everywhere, about half the probe disagrees.
        let d = probe_disagreement(&Scaled(1.0, t), &Scaled(0.0, t), 1, patch, 2).expect("runs");
        assert!(d > FP16_MAX_DISAGREEMENT, "{d}");
        assert!(d > BF16_MAX_DISAGREEMENT, "{d}");
    }
}

//! How much memory one prediction needs: an upper estimate from the model's
//! plans and the input's size, before anything is read, so the daemon can
//! decide whether the next study may load while the current one infers
//! (`[limits] memory_mb`) and `predict` can say what a case will cost.
//! The terms follow the buffers of `preprocess`, `sliding` and the way back
//! in this module's siblings; `bench/memory.sh` prints measured peaks beside
//! them (BENCHMARKS.md).

use super::model::ModelPackage;
use super::resample::compute_new_shape;

/// Bytes one prediction holds at its peak besides the input volumes (which
/// the caller holds: 4 bytes a voxel and channel) and the network's own
/// working memory (ONNX Runtime's arena, a few tiles).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    /// The network input (normalised, cropped, resampled), C × working voxels.
    pub network_input: u64,
    /// Sliding window: per fold its open planes, the weight map's, one slab
    /// of the folds' sum, and volume-sized logits when they are not streamed.
    pub window: u64,
    /// The way back: label maps, resampled logits, probabilities.
    pub export: u64,
}

impl Estimate {
    /// The peak: the network input lives through the window, the window's
    /// logits into the way back.
    pub fn peak(&self) -> u64 {
        (self.network_input + self.window).max(self.window + self.export)
    }
}

/// The estimate for `pkg` with `folds` folds on an input of `dims` voxels
/// (x, y, z) at `spacing` mm (x, y, z), with or without probabilities.
pub fn estimate(
    pkg: &ModelPackage,
    folds: usize,
    dims: [usize; 3],
    spacing: [f64; 3],
    probabilities: bool,
) -> Estimate {
    let channels = pkg.meta.channels.len() as u64;
    let k = pkg.num_classes() as u64;
    // nnU-Net axis order (z, y, x), then transpose_forward.
    let zyx = [dims[2], dims[1], dims[0]];
    let szyx = [spacing[2], spacing[1], spacing[0]];
    let tf = &pkg.plans.transpose_forward;
    let perm = if tf.len() == 3 { [tf[0], tf[1], tf[2]] } else { [0, 1, 2] };
    let shape = [zyx[perm[0]], zyx[perm[1]], zyx[perm[2]]];
    let sp = [szyx[perm[0]], szyx[perm[1]], szyx[perm[2]]];
    let c = &pkg.config;
    let target = if c.spacing.len() == 3 { [c.spacing[0], c.spacing[1], c.spacing[2]] } else { sp };
    let work = compute_new_shape(shape, sp, target);
    let n_in = shape.iter().map(|&v| v as u64).product::<u64>();
    let n_w = work.iter().map(|&v| v as u64).product::<u64>();
    let patch = if c.patch_size.len() == 3 { [c.patch_size[0], c.patch_size[1], c.patch_size[2]] } else { work };
    let padded = [0, 1, 2].map(|a| work[a].max(patch[a]) as u64);
    let plane = padded[1] * padded[2];
    let depth = patch[0] as u64;
    let resampled = work != shape;
    let streamed = !resampled && !probabilities;
    // Each fold keeps K planes for a patch's depth at most, one fold grows a
    // second patch depth while it runs a row; weight map and sum likewise.
    let rings = (folds.max(1) as u64 + 1) * k * depth * plane * 2 + depth * plane * 2 + k * depth * plane * 2;
    let padding = if padded.iter().zip(&work).any(|(&p, &w)| p != w as u64) {
        channels * padded.iter().product::<u64>() * 4
    } else {
        0
    };
    let network_input = channels * n_w * 4 + if resampled { 12 * n_in.max(n_w) } else { 0 };
    let window = rings + padding + if streamed { n_w } else { k * n_w * 2 };
    // The way back: the cropped label map, the uncropped one and its
    // transposed copy; with resampling one class at a time in f32 plus the
    // running maximum; with probabilities every class in f32 and the output.
    let export = if streamed {
        3 * n_in
    } else {
        let per_class = if resampled { n_in * 4 + 8 * n_in.max(n_w) } else { n_in * 4 };
        let probs = if probabilities { 2 * k * n_in * 4 } else { 0 };
        per_class + n_in * 4 + 3 * n_in + probs
    };
    Estimate { network_input, window, export }
}

//! How much memory one prediction (and one study) needs at its peak: an
//! upper estimate from the model's plans and the input's geometry, before
//! any pixel is read, so the daemon can decide whether the next study may
//! load while the current one infers, or whether a study can run at all
//! (`[limits] memory_mb`). The terms follow the buffers of this module's
//! siblings (`preprocess`, `sliding`, the way back in `mod.rs`) and of the
//! pipeline's load half; `bench/memory.sh` prints the measured peaks beside
//! them (BENCHMARKS.md). ONNX Runtime's own working memory is counted as the
//! tensors it is given and returns: a network's intermediate activations
//! depend on its architecture, which the plans do not describe.

use super::model::ModelPackage;
use super::resample::{compute_new_shape, separate_z};

/// What a prediction is asked to do, besides its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ask {
    /// Folds run (summed one after the other).
    pub folds: usize,
    /// Tiles per network call.
    pub batch_size: usize,
    /// Mirroring test-time augmentation.
    pub tta: bool,
    /// Class probabilities kept and written (`--save-probabilities`).
    pub probabilities: bool,
}

/// The model's side of the estimate, in nnU-Net axis order (after
/// `transpose_forward`).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelShape {
    /// Input channels.
    pub channels: usize,
    /// Output classes (background included).
    pub classes: usize,
    /// Patch size.
    pub patch: [usize; 3],
    /// The configuration's spacing (mm).
    pub spacing: [f64; 3],
    /// `transpose_forward`.
    pub transpose: [usize; 3],
    /// Whether some channel's normalisation uses the hole-filled mask.
    pub uses_mask: bool,
    /// `force_separate_z` of the data's and of the probabilities' resampling.
    pub force_separate_z: [Option<bool>; 2],
}

impl ModelShape {
    /// The shape of a model package's configuration.
    pub fn of(pkg: &ModelPackage) -> Self {
        let c = &pkg.config;
        let three = |v: &[usize], d: [usize; 3]| if v.len() == 3 { [v[0], v[1], v[2]] } else { d };
        let spacing = if c.spacing.len() == 3 { [c.spacing[0], c.spacing[1], c.spacing[2]] } else { [1.0; 3] };
        let channels = pkg.meta.channels.len();
        ModelShape {
            channels,
            classes: pkg.num_classes(),
            patch: three(&c.patch_size, [1, 1, 1]),
            spacing,
            transpose: three(&pkg.plans.transpose_forward, [0, 1, 2]),
            uses_mask: c.use_mask_for_norm.iter().take(channels).any(|&m| m),
            force_separate_z: [
                c.resampling_fn_data_kwargs.force_separate_z,
                c.resampling_fn_probabilities_kwargs.force_separate_z,
            ],
        }
    }
}

/// Bytes one prediction holds at its peak, by part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Estimate {
    /// The input volumes on the reference grid (f32, every channel), which
    /// the caller holds through the prediction.
    pub inputs: u64,
    /// Preprocessing's transient buffers (transposed copies, the crop being
    /// resampled, the normalisation mask) beside the network input.
    pub preprocess: u64,
    /// The network input (normalised, cropped, resampled), C × working grid.
    pub network_input: u64,
    /// The sliding window: padding copy, per fold its open planes, the
    /// weight map's and the folds' sum's, batches and their results, and
    /// the volume-sized half logits or the label map it streams into.
    pub window: u64,
    /// The way back: the window's result (logits or label map), resampled
    /// classes, label maps, probabilities.
    pub export: u64,
}

impl Estimate {
    /// The peak: the inputs throughout; the network input from
    /// preprocessing through the window; the window's result into the way back.
    pub fn peak(&self) -> u64 {
        let during = (self.preprocess + self.network_input).max(self.network_input + self.window);
        self.inputs + during.max(self.export)
    }
}

/// The estimate for a case of `dims` voxels (x, y, z: the reference grid)
/// at `spacing` mm (x, y, z), `model`, asked `ask`, as the daemon runs it
/// (the input volumes held, preprocessing on copies). The crop is taken as
/// the whole image (an upper bound: most CTs crop little).
pub fn estimate(model: &ModelShape, dims: [usize; 3], spacing: [f64; 3], ask: Ask) -> Estimate {
    let (ch, k) = (model.channels as u64, model.classes as u64);
    // nnU-Net axis order (z, y, x), then transpose_forward.
    let zyx = [dims[2], dims[1], dims[0]];
    let szyx = [spacing[2], spacing[1], spacing[0]];
    let p = model.transpose;
    let shape = [zyx[p[0]], zyx[p[1]], zyx[p[2]]];
    let sp = [szyx[p[0]], szyx[p[1]], szyx[p[2]]];
    let work = compute_new_shape(shape, sp, model.spacing);
    let n_in = voxels(shape);
    let n_w = voxels(work);
    let resampled = work != shape;
    let streamed = !resampled && !ask.probabilities;
    let transposed = p != [0, 1, 2];

    let inputs = ch * n_in * 4;
    let network_input = ch * n_w * 4;
    // Transposed copies of every channel; with resampling the crop of one
    // channel (f32), the resampling's f64 intermediates and, with several
    // channels, one channel's result before it joins the others; the mask
    // (any non-zero, its filled copy, the labeller's u32 labels and seeds).
    let preprocess = if transposed { ch * n_in * 4 } else { 0 }
        + if resampled {
            n_in * 4
                + resampling(shape, work, sp, model.spacing, model.force_separate_z[0])
                + if ch > 1 { n_w * 4 } else { 0 }
        } else {
            0
        }
        + if model.uses_mask { n_in * 7 } else { 0 };

    let patch = model.patch;
    let padded = [0, 1, 2].map(|a| work[a].max(patch[a]));
    let pp = (padded[1] * padded[2]) as u64;
    let sp_out = (work[1] * work[2]) as u64;
    let depth = patch[0] as u64;
    let tile = voxels(patch);
    let folds = ask.folds.max(1) as u64;
    let batch = ask.batch_size.max(1) as u64;
    // Per fold its accumulator for the planes its open tiles cover: the fold
    // running a row up to two patch depths (a batch may reach into the next
    // row), the others the overlap, below one patch depth; the weight map
    // for the same planes; the folds' sum for the same planes.
    let planes = (folds + 1) * k * depth * pp * 2 + 2 * depth * pp * 2 + 2 * k * depth * sp_out * 2;
    let padding = if padded != work { ch * voxels(padded) * 4 } else { 0 };
    // A batch in and out (the session's tensors and edgeseg's copies), and
    // the mirror sums of tiles under way.
    let calls = 2 * batch * (ch + k) * tile * 4 + (batch + 1) * k * tile * 4;
    let result = if streamed { n_w } else { k * n_w * 2 };
    let window = planes + padding + calls + result;

    // The way back: streamed, the cropped label map, the uncropped one and
    // its transposed copy. Otherwise the logits, one class at a time in f32
    // and resampled block of planes by block into the running maximum (f32)
    // and argmax, then the label maps; with probabilities every class
    // resampled whole (f32), and per class its softmax uncropped and
    // transposed (the outputs themselves).
    let back = resampling(work, shape, model.spacing, sp, model.force_separate_z[1]);
    let export = if streamed {
        3 * n_in
    } else if ask.probabilities {
        result + k * n_in * 4 + 5 * n_in + (n_w * 4 + back).max((k + 2) * n_in * 4)
    } else {
        result + n_w * 4 + back + 5 * n_in
    };
    Estimate { inputs, preprocess, network_input, window, export }
}

/// Bytes the resampling of one channel from `from` to `to` holds besides
/// its input and output: with separate z the in-plane-resized slices
/// (f64); otherwise the pass along axis 0 (f64, when it and an in-plane
/// axis change) and a block of planes through the in-plane passes.
fn resampling(from: [usize; 3], to: [usize; 3], from_sp: [f64; 3], to_sp: [f64; 3], force: Option<bool>) -> u64 {
    if from == to {
        return 0;
    }
    match separate_z(from_sp, to_sp, force) {
        Some(axis) => {
            let mut stacked = to;
            stacked[axis] = from[axis];
            voxels(stacked) * 8
        }
        None => {
            let in_plane = from[1] != to[1] || from[2] != to[2];
            let first = if from[0] != to[0] && in_plane { voxels([to[0], from[1], from[2]]) * 8 } else { 0 };
            let plane = (from[1] * from[2]).max(to[1] * to[2]) as u64;
            first + 2 * 16 * plane * 8
        }
    }
}

fn voxels(s: [usize; 3]) -> u64 {
    s.iter().map(|&v| v as u64).product()
}

/// One series of a study as its headers describe it, before it is read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SeriesShape {
    /// Voxels (x, y, z): columns, rows, slices.
    pub dims: [usize; 3],
    /// Spacing (mm), x, y, z.
    pub spacing: [f64; 3],
}

/// The peak of one study in the daemon (or `edgeseg process`): the first
/// channel's series decoded (f32), each other series read onto its grid
/// (whole, when it has the same shape; else slab by slab,
/// `SeriesPlan::load_onto`: the grid's volume plus the source slices a slab
/// of target planes reads), then
/// the prediction on that grid, then post-processing (an instance map and
/// its labeller's working copy, 8 bytes a voxel). `cases`: the network's
/// runs, each a list of the channels' series (reference first).
pub fn study_peak(model: &ModelShape, cases: &[Vec<SeriesShape>], ask: Ask) -> u64 {
    let mut held = 0u64;
    let mut peak = 0u64;
    for series in cases {
        let Some(reference) = series.first() else { continue };
        let n_ref = voxels(reference.dims);
        let loading: u64 =
            n_ref * 4
                + series[1..]
                    .iter()
                    .map(|s| {
                        if s.dims == reference.dims {
                            voxels(s.dims) * 4
                        } else {
                            n_ref * 4 + onto_window(reference, s)
                        }
                    })
                    .sum::<u64>();
        peak = peak.max(held + loading);
        let e = estimate(model, reference.dims, reference.spacing, ask);
        let post = n_ref * 8 + n_ref;
        // Earlier cases' volumes are held while this one runs (the screening
        // profile's two phases are prepared before either is inferred).
        peak = peak.max(held + e.peak()).max(held + e.inputs + post);
        held += e.inputs + n_ref;
    }
    peak
}

/// The source slices `SeriesPlan::load_onto` holds for one slab of 8
/// target planes: the slab's depth in source slices, the interpolation's
/// neighbour and a plane of margin on each side, doubled for an oblique
/// target whose slab crosses more source slices.
fn onto_window(target: &SeriesShape, source: &SeriesShape) -> u64 {
    let ratio = if source.spacing[2] > 0.0 { target.spacing[2] / source.spacing[2] } else { 1.0 };
    let slices = ((8.0 * ratio).ceil() as u64 + 4) * 2;
    slices.min(source.dims[2] as u64) * (source.dims[0] * source.dims[1]) as u64 * 4
}

/// Bytes as whole MiB, rounded up.
pub fn mib(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ct(classes: usize, spacing: [f64; 3], patch: usize) -> ModelShape {
        ModelShape {
            channels: 1,
            classes,
            patch: [patch; 3],
            spacing,
            transpose: [0, 1, 2],
            uses_mask: false,
            force_separate_z: [None, None],
        }
    }

    const ONE: Ask = Ask { folds: 1, batch_size: 2, tta: false, probabilities: false };

    /// At the input's own spacing, 3 classes, one fold, a 512×512×1000 CT:
    /// each term as the buffers add up by hand.
    #[test]
    fn own_spacing_terms_add_up() {
        let m = ct(3, [1.0, 0.8, 0.8], 128);
        let e = estimate(&m, [512, 512, 1000], [0.8, 0.8, 1.0], ONE);
        let n = 512 * 512 * 1000u64;
        assert_eq!(e.inputs, 4 * n);
        assert_eq!(e.network_input, 4 * n);
        assert_eq!(e.preprocess, 0);
        let pp = 512 * 512u64;
        let tile = 128u64.pow(3);
        let planes = 2 * 3 * 128 * pp * 2 + 2 * 128 * pp * 2 + 2 * 3 * 128 * pp * 2;
        let calls = 2 * 2 * 4 * tile * 4 + 3 * 3 * tile * 4;
        assert_eq!(e.window, planes + calls + n);
        assert_eq!(e.export, 3 * n);
        // The peak: inputs + network input + window (the way back is smaller).
        assert_eq!(e.peak(), 8 * n + e.window);
    }

    /// Each fold adds its open planes only; probabilities, resampling, a
    /// transposition and the mask each add their buffers.
    #[test]
    fn each_option_adds_its_buffers() {
        let m = ct(3, [1.0, 0.8, 0.8], 128);
        let dims = [512, 512, 200];
        let sp = [0.8, 0.8, 1.0];
        let one = estimate(&m, dims, sp, ONE);
        let five = estimate(&m, dims, sp, Ask { folds: 5, ..ONE });
        assert_eq!(five.window - one.window, 4 * 3 * 128 * 512 * 512 * 2);
        assert_eq!(five.export, one.export);
        let probs = estimate(&m, dims, sp, Ask { probabilities: true, ..ONE });
        let n = 512 * 512 * 200u64;
        // Logits instead of a streamed label map, and the way back in f32.
        assert_eq!(probs.window - one.window, 3 * n * 2 - n);
        assert_eq!(probs.export, 3 * n * 2 + 3 * n * 4 + 5 * n + (4 * n).max(5 * n * 4));
        assert!(probs.peak() > one.peak());

        // 1.5 mm: the working grid is 133×273×273 (numpy's rounding); the
        // pass along axis 0 gives 133×512×512 in f64, blocks of 16 planes
        // of 512×512 go through the in-plane passes.
        let coarse = ct(3, [1.5, 1.5, 1.5], 128);
        let r = estimate(&coarse, dims, sp, ONE);
        let nw = 273 * 273 * 133u64;
        let blocks = 2 * 16 * 512 * 512 * 8;
        assert_eq!(r.network_input, 4 * nw);
        assert_eq!(r.preprocess, 4 * n + 133 * 512 * 512 * 8 + blocks);
        // Back: 200×273×273 in f64 after the axis-0 pass.
        assert_eq!(r.export, 3 * nw * 2 + 4 * nw + 200 * 273 * 273 * 8 + blocks + 5 * n);

        // Separate z (5 mm slices to 1.5 mm): the in-plane-resized slices in f64.
        let thick = estimate(&coarse, [512, 512, 40], [0.8, 0.8, 5.0], ONE);
        let nw = 133 * 273 * 273u64;
        assert_eq!(thick.network_input, 4 * nw);
        assert_eq!(thick.preprocess, 4 * 512 * 512 * 40 + 40 * 273 * 273 * 8);

        // A transposition copies the input; the mask adds 7 bytes a voxel.
        let t = ModelShape { transpose: [2, 1, 0], uses_mask: true, spacing: [0.8, 0.8, 1.0], ..m.clone() };
        let e = estimate(&t, dims, sp, ONE);
        assert_eq!(e.network_input, 4 * n, "no resampling");
        assert_eq!(e.preprocess, 4 * n + 7 * n);
    }

    /// A small image is padded to the patch: the padded copy is counted,
    /// and the planes are the padded ones.
    #[test]
    fn padding_to_the_patch_is_counted() {
        let m = ct(2, [1.0, 1.0, 1.0], 64);
        let e = estimate(&m, [40, 40, 40], [1.0, 1.0, 1.0], ONE);
        let (pp, sp, tile) = (64 * 64u64, 40 * 40u64, 64u64.pow(3));
        let planes = 2 * 2 * 64 * pp * 2 + 2 * 64 * pp * 2 + 2 * 2 * 64 * sp * 2;
        let calls = 2 * 2 * 3 * tile * 4 + 3 * 2 * tile * 4;
        assert_eq!(e.window, planes + tile * 4 + calls + 40 * 40 * 40);
    }

    /// A study: loading holds the reference series, the other series on its
    /// grid and the CT slices one slab reads (PET 3 mm over CT 1 mm: 8 × 3
    /// + 4, doubled: 56 slices); a PET-first model works on the PET's grid.
    #[test]
    fn study_counts_the_load_and_the_prediction() {
        let m = ModelShape { channels: 2, ..ct(2, [3.0, 2.0, 2.0], 64) };
        let pet = SeriesShape { dims: [200, 200, 500], spacing: [2.0, 2.0, 3.0] };
        let ctv = SeriesShape { dims: [512, 512, 1000], spacing: [0.8, 0.8, 1.0] };
        let peak = study_peak(&m, &[vec![pet, ctv]], ONE);
        let load = 2 * 200 * 200 * 500 * 4 + 56 * 512 * 512 * 4;
        assert!(peak >= load);
        let e = estimate(&m, pet.dims, pet.spacing, ONE);
        assert_eq!(peak, load.max(e.peak()).max(e.inputs + 9 * 200 * 200 * 500));
        // Two cases (two phases): the first one's volumes are held.
        let two = study_peak(&m, &[vec![pet, ctv], vec![pet, ctv]], ONE);
        assert_eq!(two, peak + e.inputs + 200 * 200 * 500);
        assert_eq!(study_peak(&m, &[], ONE), 0);
    }

    #[test]
    fn mib_rounds_up() {
        assert_eq!(mib(0), 0);
        assert_eq!(mib(1), 1);
        assert_eq!(mib(1 << 20), 1);
        assert_eq!(mib((1 << 20) + 1), 2);
    }
}

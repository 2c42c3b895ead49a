//! nnU-Net's sliding-window inference, reproduced: zero padding to the patch
//! size, tile positions, the Gaussian importance map, mirroring test-time
//! augmentation and fold averaging. Folds run one after the other into one
//! tile accumulator and one running sum of fold logits, so memory is two
//! K × volume buffers at the working resolution whatever the number of folds
//! (no per-fold copies are kept). Like nnU-Net, the
//! Gaussian map and the accumulators hold half-precision values (rounded after
//! every addition): where tiles overlap near the volume's corners the Gaussian
//! underflows and nnU-Net's result is dominated by that rounding, and parity
//! with it needs the same arithmetic. Since every accumulated value is a half,
//! the weight sum, the accumulator and the fold sum are stored as IEEE half
//! bits (2 bytes a voxel, exact), and the input is used in place when it needs
//! no padding: for a 512×512×1000 CT at its own resolution with two classes
//! that is 2.5 GB of working buffers instead of 8.

use std::borrow::Cow;

use half::f16;

use super::InferError;

/// Half-precision bits of `x` (which must already be a half value for the
/// round trip to be exact; ties to even otherwise).
#[inline]
fn to_half(x: f32) -> u16 {
    f16::from_f32(x).to_bits()
}

/// The f32 value of half-precision bits (exact).
#[inline]
pub fn from_half(h: u16) -> f32 {
    f16::from_bits(h).to_f32()
}

/// Sliding-window logits, K × shape, each value an IEEE half (nnU-Net's
/// accumulator precision) stored as its bits.
pub struct Logits {
    /// Half bits, class-major, C order within a class.
    pub half: Vec<u16>,
    /// Classes.
    pub classes: usize,
    /// Voxels per class.
    pub plane: usize,
}

impl Logits {
    /// Logit of class `c` at voxel `i`.
    #[inline]
    pub fn get(&self, c: usize, i: usize) -> f32 {
        from_half(self.half[c * self.plane + i])
    }

    /// Class `c`'s logits as f32 (one class's worth of memory).
    pub fn class(&self, c: usize) -> Vec<f32> {
        self.half[c * self.plane..(c + 1) * self.plane].iter().map(|&h| from_half(h)).collect()
    }
}

/// A network: N × C × patch in, N × K × patch out (C-ordered).
pub trait Network: Send + Sync {
    /// Runs a batch of `n` tiles.
    fn run(&self, input: &[f32], n: usize) -> Result<Vec<f32>, InferError>;
}

/// Tile starts along one axis (nnU-Net's compute_steps_for_sliding_window).
pub fn steps(image: usize, tile: usize, step_size: f64) -> Vec<usize> {
    if image <= tile {
        return vec![0];
    }
    let target = tile as f64 * step_size;
    let n = ((image - tile) as f64 / target).ceil() as usize + 1;
    let actual = (image - tile) as f64 / (n - 1) as f64;
    (0..n).map(|i| (actual * i as f64).round_ties_even() as usize).collect()
}

/// `x` rounded to the nearest IEEE half-precision value (ties to even,
/// subnormals kept, overflow to infinity), as torch's `.to(torch.float16)`
/// and its half-precision in-place arithmetic.
#[inline]
pub fn f16_round(x: f32) -> f32 {
    let bits = x.to_bits();
    let sign = bits & 0x8000_0000;
    let abs = f32::from_bits(bits & 0x7fff_ffff);
    if abs.is_nan() {
        return x;
    }
    let r = if abs >= 65520.0 {
        f32::INFINITY
    } else if abs < 6.103_515_6e-5 {
        // Subnormal halves: a step of 2^-24 (scaling by powers of two is exact).
        (abs * 16_777_216.0).round_ties_even() / 16_777_216.0
    } else {
        // Normal halves keep 10 of f32's 23 fraction bits: round to nearest even.
        let b = abs.to_bits();
        let lsb = (b >> 13) & 1;
        f32::from_bits((b + 0x0FFF + lsb) & !0x1FFF)
    };
    f32::from_bits(r.to_bits() | sign)
}

/// The Gaussian importance map: a delta at patch/2 blurred with σ = patch/8
/// (scipy's gaussian_filter, truncate 4, constant mode), scaled to max 10,
/// stored in half precision as nnU-Net does (so values far from the centre
/// underflow), zeros then replaced by the smallest non-zero value. Keeping
/// nnU-Net's half-precision map matters where tiles overlap near the volume's
/// corners: there both tiles' weights are that same smallest value.
pub fn gaussian(patch: [usize; 3]) -> Vec<f32> {
    let kernels: Vec<Vec<f64>> = patch
        .iter()
        .map(|&t| {
            let sigma = t as f64 / 8.0;
            let radius = (4.0 * sigma + 0.5) as i64;
            let c = (t / 2) as i64;
            let norm: f64 = (-radius..=radius).map(|d| (-0.5 * (d as f64 / sigma).powi(2)).exp()).sum();
            (0..t as i64)
                .map(|i| {
                    let d = i - c;
                    if d.abs() > radius { 0.0 } else { (-0.5 * (d as f64 / sigma).powi(2)).exp() / norm }
                })
                .collect()
        })
        .collect();
    let mut g = Vec::with_capacity(patch.iter().product());
    for a in 0..patch[0] {
        for b in 0..patch[1] {
            for c in 0..patch[2] {
                g.push(kernels[0][a] * kernels[1][b] * kernels[2][c]);
            }
        }
    }
    let max = g.iter().cloned().fold(0.0, f64::max);
    let mut out: Vec<f32> = g.iter().map(|&v| f16_round((v / (max / 10.0)) as f32)).collect();
    let min_nonzero = out.iter().cloned().filter(|&v| v > 0.0).fold(f32::MAX, f32::min);
    for v in out.iter_mut() {
        if *v == 0.0 {
            *v = min_nonzero;
        }
    }
    out
}

/// Flips a C-ordered `[c, d0, d1, d2]` block along the given spatial axes.
fn flip(block: &[f32], channels: usize, shape: [usize; 3], axes: &[usize]) -> Vec<f32> {
    let mut out = vec![0f32; block.len()];
    let plane = shape[0] * shape[1] * shape[2];
    for ch in 0..channels {
        for a in 0..shape[0] {
            let fa = if axes.contains(&0) { shape[0] - 1 - a } else { a };
            for b in 0..shape[1] {
                let fb = if axes.contains(&1) { shape[1] - 1 - b } else { b };
                for c in 0..shape[2] {
                    let fc = if axes.contains(&2) { shape[2] - 1 - c } else { c };
                    out[ch * plane + (a * shape[1] + b) * shape[2] + c] =
                        block[ch * plane + (fa * shape[1] + fb) * shape[2] + fc];
                }
            }
        }
    }
    out
}

/// All non-empty subsets of the mirror axes, in itertools.combinations order.
pub fn mirror_combinations(axes: &[usize]) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    for size in 1..=axes.len() {
        let mut idx: Vec<usize> = (0..size).collect();
        loop {
            out.push(idx.iter().map(|&i| axes[i]).collect());
            // next combination
            let mut i = size;
            while i > 0 && idx[i - 1] == axes.len() - size + i - 1 {
                i -= 1;
            }
            if i == 0 {
                break;
            }
            idx[i - 1] += 1;
            for j in i..size {
                idx[j] = idx[j - 1] + 1;
            }
        }
    }
    out
}

/// Settings of one sliding-window run.
#[derive(Debug, Clone)]
pub struct WindowSettings {
    /// Patch size.
    pub patch: [usize; 3],
    /// Step as a fraction of the patch (0.5).
    pub step_size: f64,
    /// Mirroring axes (empty: no TTA).
    pub mirror_axes: Vec<usize>,
    /// Tiles per network call.
    pub batch_size: usize,
    /// Output classes.
    pub classes: usize,
}

/// Sliding-window logits of a preprocessed case (C × shape) averaged over the
/// networks (folds): K × shape. The whole volume's logits at once, from
/// [`predict_streaming`] (the same arithmetic).
pub fn predict(
    nets: &[&dyn Network],
    data: &[f32],
    channels: usize,
    shape: [usize; 3],
    s: &WindowSettings,
    progress: impl FnMut(usize, usize),
) -> Result<Logits, InferError> {
    let k = s.classes;
    let plane = shape[0] * shape[1] * shape[2];
    let row = shape[1] * shape[2];
    let mut logits = vec![0u16; k * plane];
    predict_streaming(nets, data, channels, shape, s, progress, |slab| {
        let n = slab.rows.len() * row;
        for ch in 0..k {
            let dst = ch * plane + slab.rows.start * row;
            logits[dst..dst + n].copy_from_slice(&slab.half[ch * n..(ch + 1) * n]);
        }
        Ok(())
    })?;
    Ok(Logits { half: logits, classes: k, plane })
}

/// Finished rows of the ensemble's logits: `rows` of axis 0 (of the
/// unpadded shape), K × rows × shape[1] × shape[2] half bits, class-major.
pub struct Slab {
    /// Rows of axis 0.
    pub rows: std::ops::Range<usize>,
    /// Half bits, class-major, C order within a class.
    pub half: Vec<u16>,
}

/// Planes of axis 0 from `start` on, each `width` half values, added at the
/// back as tiles reach them and taken from the front once final.
struct Planes {
    start: usize,
    width: usize,
    planes: std::collections::VecDeque<Vec<u16>>,
}

impl Planes {
    fn new(width: usize) -> Self {
        Planes { start: 0, width, planes: std::collections::VecDeque::new() }
    }

    /// Holds planes up to `end` (exclusive), new ones zero.
    fn ensure(&mut self, end: usize) {
        while self.start + self.planes.len() < end {
            self.planes.push_back(vec![0u16; self.width]);
        }
    }

    /// Plane `p` (which `ensure` made and `pop` has not taken).
    fn get_mut(&mut self, p: usize) -> &mut [u16] {
        &mut self.planes[p - self.start]
    }

    fn get(&self, p: usize) -> &[u16] {
        &self.planes[p - self.start]
    }

    /// Takes the first plane.
    fn pop(&mut self) -> Vec<u16> {
        self.start += 1;
        self.planes.pop_front().unwrap_or_else(|| vec![0u16; self.width])
    }
}

/// One network's (fold's) progress through the tiles.
struct FoldState {
    /// Its tile accumulator, K planes of the padded plane size per row.
    acc: Planes,
    /// Mirror variants summed so far per tile (f32, as nnU-Net).
    sums: Vec<Option<(Vec<f32>, usize)>>,
    /// Next work item.
    next: usize,
}

/// The geometry of one sliding-window run: padding, tiles, mirrors, the
/// Gaussian map.
struct Window {
    shape: [usize; 3],
    padded: [usize; 3],
    below: [usize; 3],
    patch: [usize; 3],
    channels: usize,
    classes: usize,
    /// Tile starts, axis 0 outermost (nnU-Net's order).
    tiles: Vec<[usize; 3]>,
    /// Tile starts along axis 0 (the rows).
    rows: Vec<usize>,
    combos: Vec<Vec<usize>>,
    gaussian: Vec<f32>,
}

impl Window {
    fn new(shape: [usize; 3], channels: usize, s: &WindowSettings) -> Self {
        let patch = s.patch;
        // Pad to at least the patch size (below = diff/2, above = the rest).
        let padded: [usize; 3] = [0, 1, 2].map(|a| shape[a].max(patch[a]));
        let below: [usize; 3] = [0, 1, 2].map(|a| (padded[a] - shape[a]) / 2);
        let st: Vec<Vec<usize>> = (0..3).map(|a| steps(padded[a], patch[a], s.step_size)).collect();
        let mut tiles = Vec::new();
        for &a in &st[0] {
            for &b in &st[1] {
                for &c in &st[2] {
                    tiles.push([a, b, c]);
                }
            }
        }
        Window {
            shape,
            padded,
            below,
            patch,
            channels,
            classes: s.classes,
            tiles,
            rows: st[0].clone(),
            combos: mirror_combinations(&s.mirror_axes),
            gaussian: gaussian(patch),
        }
    }

    fn tile_n(&self) -> usize {
        self.patch.iter().product()
    }

    /// Values in a padded plane of axis 0, and in an output one.
    fn planes(&self) -> (usize, usize) {
        (self.padded[1] * self.padded[2], self.shape[1] * self.shape[2])
    }

    /// The input padded with zeros to at least the patch (borrowed as is
    /// when it needs none).
    fn pad<'a>(&self, data: &'a [f32]) -> Cow<'a, [f32]> {
        let (shape, padded, below) = (self.shape, self.padded, self.below);
        if padded == shape {
            return Cow::Borrowed(data);
        }
        let plane = shape.iter().product::<usize>();
        let pplane = padded.iter().product::<usize>();
        let mut input = vec![0f32; self.channels * pplane];
        for ch in 0..self.channels {
            for a in 0..shape[0] {
                for b in 0..shape[1] {
                    let src = ch * plane + (a * shape[1] + b) * shape[2];
                    let dst = ch * pplane + ((a + below[0]) * padded[1] + b + below[1]) * padded[2] + below[2];
                    input[dst..dst + shape[2]].copy_from_slice(&data[src..src + shape[2]]);
                }
            }
        }
        Cow::Owned(input)
    }

    /// The network input of a chunk of (tile, mirror variant) items.
    fn batch(&self, input: &[f32], chunk: &[(usize, usize)]) -> Vec<f32> {
        let (patch, padded) = (self.patch, self.padded);
        let pplane = padded.iter().product::<usize>();
        let tile_n = self.tile_n();
        let mut batch = Vec::with_capacity(chunk.len() * self.channels * tile_n);
        for &(t, v) in chunk {
            let [a0, b0, c0] = self.tiles[t];
            let mut tile = Vec::with_capacity(self.channels * tile_n);
            for ch in 0..self.channels {
                for a in 0..patch[0] {
                    for b in 0..patch[1] {
                        let src = ch * pplane + ((a0 + a) * padded[1] + b0 + b) * padded[2] + c0;
                        tile.extend_from_slice(&input[src..src + patch[2]]);
                    }
                }
            }
            if v > 0 {
                tile = flip(&tile, self.channels, patch, &self.combos[v - 1]);
            }
            batch.extend_from_slice(&tile);
        }
        batch
    }

    /// A complete tile (its mirror variants summed, `n` of them) weighted by
    /// the Gaussian into a fold's accumulator, in half precision as nnU-Net
    /// does; the first fold also adds the Gaussian to the weight map.
    fn add_tile(&self, acc: &mut Planes, weight: Option<&mut Planes>, t: usize, sum: &[f32], n: usize) {
        let (patch, padded, k) = (self.patch, self.padded, self.classes);
        let (pp, _) = self.planes();
        let tile_n = self.tile_n();
        let g = &self.gaussian;
        let [a0, b0, c0] = self.tiles[t];
        acc.ensure(a0 + patch[0]);
        let mut weight = weight;
        if let Some(w) = weight.as_deref_mut() {
            w.ensure(a0 + patch[0]);
        }
        let inv = n as f32;
        for a in 0..patch[0] {
            if let Some(w) = weight.as_deref_mut() {
                let w = w.get_mut(a0 + a);
                for b in 0..patch[1] {
                    let dst = (b0 + b) * padded[2] + c0;
                    let src = (a * patch[1] + b) * patch[2];
                    for c in 0..patch[2] {
                        w[dst + c] = to_half(f16_round(from_half(w[dst + c]) + g[src + c]));
                    }
                }
            }
            let accp = acc.get_mut(a0 + a);
            for ch in 0..k {
                for b in 0..patch[1] {
                    let dst = ch * pp + (b0 + b) * padded[2] + c0;
                    let src = ch * tile_n + (a * patch[1] + b) * patch[2];
                    let gsrc = (a * patch[1] + b) * patch[2];
                    for c in 0..patch[2] {
                        let v = from_half(accp[dst + c]) + sum[src + c] / inv * g[gsrc + c];
                        accp[dst + c] = to_half(f16_round(v));
                    }
                }
            }
        }
    }

    /// A fold's planes below `bound` are final: its logits (accumulator over
    /// weight, half) added to the folds' sum (half), fold after fold.
    fn finish_fold(&self, acc: &mut Planes, weight: &Planes, sum: &mut Planes, bound: usize, fold: usize) {
        let (shape, padded, below, k) = (self.shape, self.padded, self.below, self.classes);
        let (pp, sp) = self.planes();
        acc.ensure(bound);
        sum.ensure(bound);
        while acc.start < bound {
            let p = acc.start;
            let accp = acc.pop();
            if p < below[0] || p >= below[0] + shape[0] {
                continue;
            }
            let w = weight.get(p);
            let o = sum.get_mut(p);
            for ch in 0..k {
                for b in 0..shape[1] {
                    for c in 0..shape[2] {
                        let q = (b + below[1]) * padded[2] + c + below[2];
                        let v = f16_round(from_half(accp[ch * pp + q]) / from_half(w[q]));
                        let o = &mut o[ch * sp + b * shape[2] + c];
                        *o = to_half(if fold == 0 { v } else { f16_round(from_half(*o) + v) });
                    }
                }
            }
        }
    }

    /// The rows below `bound` that every fold has finished, divided by the
    /// number of folds, as one slab (None when they are all padding).
    fn emit(&self, sum: &mut Planes, weight: &mut Planes, bound: usize, folds: usize) -> Option<Slab> {
        let (shape, below, k) = (self.shape, self.below, self.classes);
        let (_, sp) = self.planes();
        let first = sum.start.max(below[0]);
        let last = bound.min(below[0] + shape[0]);
        let rows = if last > first { first - below[0]..last - below[0] } else { 0..0 };
        let nr = rows.len() * sp;
        let mut half = vec![0u16; k * nr];
        while sum.start < bound {
            let p = sum.start;
            let mut o = sum.pop();
            weight.ensure(p + 1);
            weight.pop();
            if p < first || p >= last {
                continue;
            }
            if folds > 1 {
                let n = folds as f32;
                o.iter_mut().for_each(|v| *v = to_half(f16_round(from_half(*v) / n)));
            }
            let r = p - first;
            for ch in 0..k {
                half[ch * nr + r * sp..ch * nr + (r + 1) * sp].copy_from_slice(&o[ch * sp..(ch + 1) * sp]);
            }
        }
        (!rows.is_empty()).then_some(Slab { rows, half })
    }
}

/// Sliding-window inference streamed along axis 0 (nnU-Net's slowest tile
/// axis): tile rows are visited in nnU-Net's order, every fold runs each row
/// in turn, and the rows no later tile touches go to `sink` as soon as every
/// fold has finished them. Per voxel the additions are nnU-Net's, in its
/// order (tiles in order within a fold, then folds in order, half precision
/// after each), so the logits equal [`predict`]'s bit for bit; the batches of
/// tiles are the same too. Memory: per fold the planes its open tiles cover
/// (about one patch depth of K planes), the weight map for those planes and
/// one slab of the folds' sum, instead of volume-sized buffers.
pub fn predict_streaming(
    nets: &[&dyn Network],
    data: &[f32],
    channels: usize,
    shape: [usize; 3],
    s: &WindowSettings,
    mut progress: impl FnMut(usize, usize),
    mut sink: impl FnMut(Slab) -> Result<(), InferError>,
) -> Result<(), InferError> {
    if nets.is_empty() {
        return Err(InferError::Model("no network (fold) to run".into()));
    }
    let w = Window::new(shape, channels, s);
    let input = w.pad(data);
    let k = w.classes;
    let tile_n = w.tile_n();
    let variants = 1 + w.combos.len();
    let per_call = s.batch_size.max(1);
    // Work items: (tile, mirror variant), batched across both.
    let items: Vec<(usize, usize)> = (0..w.tiles.len()).flat_map(|t| (0..variants).map(move |v| (t, v))).collect();
    let per_row = w.tiles.len() / w.rows.len() * variants;
    let total_tiles = w.tiles.len() * nets.len();
    let mut done_tiles = 0;
    let (pp, sp) = w.planes();
    let mut folds: Vec<FoldState> =
        nets.iter().map(|_| FoldState { acc: Planes::new(k * pp), sums: vec![None; w.tiles.len()], next: 0 }).collect();
    // The Gaussian weight sum (the same for every fold) and the folds' sum.
    let mut weight = Planes::new(pp);
    let mut sum = Planes::new(k * sp);
    for row in 0..w.rows.len() {
        let row_end = ((row + 1) * per_row).min(items.len());
        // Planes below `bound` are touched by no later tile row.
        let bound = w.rows.get(row + 1).copied().unwrap_or(w.padded[0]);
        for (fold, net) in nets.iter().enumerate() {
            let fs = &mut folds[fold];
            while fs.next < row_end {
                let chunk = &items[fs.next..(fs.next + per_call).min(items.len())];
                fs.next += chunk.len();
                let out = net.run(&w.batch(&input, chunk), chunk.len())?;
                if out.len() != chunk.len() * k * tile_n {
                    return Err(InferError::Engine(format!(
                        "network returned {} values, {} expected ({} tiles × {k} classes × {tile_n})",
                        out.len(),
                        chunk.len() * k * tile_n,
                        chunk.len()
                    )));
                }
                for (i, &(t, v)) in chunk.iter().enumerate() {
                    let mut pred = out[i * k * tile_n..(i + 1) * k * tile_n].to_vec();
                    if v > 0 {
                        pred = flip(&pred, k, w.patch, &w.combos[v - 1]);
                    }
                    let slot = &mut fs.sums[t];
                    match slot {
                        Some((sum, n)) => {
                            for (x, y) in sum.iter_mut().zip(&pred) {
                                *x += *y;
                            }
                            *n += 1;
                        }
                        None => *slot = Some((pred, 1)),
                    }
                    if slot.as_ref().is_some_and(|(_, n)| *n == variants) {
                        let Some((tsum, n)) = slot.take() else { continue };
                        w.add_tile(&mut fs.acc, (fold == 0).then_some(&mut weight), t, &tsum, n);
                        done_tiles += 1;
                        progress(done_tiles, total_tiles);
                    }
                }
            }
            w.finish_fold(&mut fs.acc, &weight, &mut sum, bound, fold);
        }
        // Every fold has finished the planes below `bound`: out they go.
        if let Some(slab) = w.emit(&mut sum, &mut weight, bound, nets.len()) {
            sink(slab)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_follow_nnunet() {
        assert_eq!(steps(128, 128, 0.5), vec![0]);
        assert_eq!(steps(100, 128, 0.5), vec![0]);
        // (200-128)/64 = 1.125 → 3 steps of 36
        assert_eq!(steps(200, 128, 0.5), vec![0, 36, 72]);
        assert_eq!(steps(192, 64, 0.5), vec![0, 32, 64, 96, 128]);
    }

    #[test]
    fn gaussian_peaks_at_ten_and_has_no_zeros() {
        let g = gaussian([8, 8, 8]);
        let max = g.iter().cloned().fold(0.0, f32::max);
        assert!((max - 10.0).abs() < 1e-5);
        assert_eq!(g[(4 * 8 + 4) * 8 + 4], max);
        assert!(g.iter().all(|&v| v > 0.0));
    }

    #[test]
    fn half_precision_rounding() {
        assert_eq!(f16_round(1.0), 1.0);
        assert_eq!(f16_round(10.0), 10.0);
        assert_eq!(f16_round(1.0 + 1.0 / 4096.0), 1.0); // below half a step: down
        assert_eq!(f16_round(1.0 + 3.0 / 2048.0), 1.0 + 2.0 / 1024.0); // tie to even
        assert_eq!(f16_round(1e-9), 0.0); // underflow
        assert_eq!(f16_round(2f32.powi(-24)), 2f32.powi(-24)); // smallest subnormal
        assert_eq!(f16_round(-3.0e-5), -(3.0e-5f32 * 16_777_216.0).round() / 16_777_216.0);
        assert_eq!(f16_round(65504.0), 65504.0);
        assert_eq!(f16_round(1e6), f32::INFINITY);
        assert_eq!(f16_round(-0.333_333_34), -0.333_251_95);
    }

    /// The accumulators store half bits: every half survives the round trip,
    /// and rounding through the `half` crate is the same as `f16_round`.
    #[test]
    fn half_storage_is_exact_and_rounds_like_f16_round() {
        for b in 0..=u16::MAX {
            let v = from_half(b);
            if !v.is_nan() {
                assert_eq!(to_half(v), b, "bits {b:#06x}");
            }
        }
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..200_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let x = f32::from_bits((state >> 32) as u32);
            if x.is_nan() {
                continue;
            }
            assert_eq!(from_half(to_half(x)).to_bits(), f16_round(x).to_bits(), "{x:e}");
        }
    }

    #[test]
    fn combinations_in_itertools_order() {
        assert_eq!(
            mirror_combinations(&[0, 1, 2]),
            vec![vec![0], vec![1], vec![2], vec![0, 1], vec![0, 2], vec![1, 2], vec![0, 1, 2]]
        );
        assert!(mirror_combinations(&[]).is_empty());
    }

    /// A "network" that returns its input channel 0 as class-1 logit and its
    /// negation as class 0: sliding-window inference must reproduce it exactly
    /// (a weighted average of identical values), mirroring included.
    struct Echo {
        patch: [usize; 3],
    }

    impl Network for Echo {
        fn run(&self, input: &[f32], n: usize) -> Result<Vec<f32>, InferError> {
            let t = self.patch.iter().product::<usize>();
            let mut out = Vec::with_capacity(n * 2 * t);
            for i in 0..n {
                let x = &input[i * t..(i + 1) * t];
                out.extend(x.iter().map(|v| -v));
                out.extend_from_slice(x);
            }
            Ok(out)
        }
    }

    /// The whole-volume implementation the streaming one replaced (nnU-Net
    /// parity-tested): folds outermost, volume-sized accumulators.
    #[allow(clippy::too_many_lines)]
    fn predict_whole(
        nets: &[&dyn Network],
        data: &[f32],
        channels: usize,
        shape: [usize; 3],
        s: &WindowSettings,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Logits, InferError> {
        let patch = s.patch;
        // Pad to at least the patch size (below = diff/2, above = the rest).
        let padded: [usize; 3] = [0, 1, 2].map(|a| shape[a].max(patch[a]));
        let below: [usize; 3] = [0, 1, 2].map(|a| (padded[a] - shape[a]) / 2);
        let pplane = padded[0] * padded[1] * padded[2];
        let plane = shape[0] * shape[1] * shape[2];
        let input: Cow<'_, [f32]> = if padded == shape {
            Cow::Borrowed(data)
        } else {
            let mut input = vec![0f32; channels * pplane];
            for ch in 0..channels {
                for a in 0..shape[0] {
                    for b in 0..shape[1] {
                        let src = ch * plane + (a * shape[1] + b) * shape[2];
                        let dst = ch * pplane + ((a + below[0]) * padded[1] + b + below[1]) * padded[2] + below[2];
                        input[dst..dst + shape[2]].copy_from_slice(&data[src..src + shape[2]]);
                    }
                }
            }
            Cow::Owned(input)
        };
        let g = gaussian(patch);
        let tiles: Vec<[usize; 3]> = {
            let st: Vec<Vec<usize>> = (0..3).map(|a| steps(padded[a], patch[a], s.step_size)).collect();
            let mut t = Vec::new();
            for &a in &st[0] {
                for &b in &st[1] {
                    for &c in &st[2] {
                        t.push([a, b, c]);
                    }
                }
            }
            t
        };
        let k = s.classes;
        let tile_n = patch[0] * patch[1] * patch[2];
        let combos = mirror_combinations(&s.mirror_axes);
        let variants = 1 + combos.len();
        let per_call = s.batch_size.max(1);
        // The Gaussian weight sum is the same for every fold.
        let mut weight = vec![0u16; pplane];
        for &[a0, b0, c0] in &tiles {
            for a in 0..patch[0] {
                for b in 0..patch[1] {
                    let dst = ((a0 + a) * padded[1] + b0 + b) * padded[2] + c0;
                    let src = (a * patch[1] + b) * patch[2];
                    for c in 0..patch[2] {
                        weight[dst + c] = to_half(f16_round(from_half(weight[dst + c]) + g[src + c]));
                    }
                }
            }
        }
        // Work items: (tile, mirror variant), batched across both.
        let items: Vec<(usize, usize)> = (0..tiles.len()).flat_map(|t| (0..variants).map(move |v| (t, v))).collect();
        let total_tiles = tiles.len() * nets.len();
        let mut done_tiles = 0;
        let mut logits = vec![0u16; k * plane];
        let mut acc = vec![0u16; k * pplane];
        for (fold, net) in nets.iter().enumerate() {
            acc.iter_mut().for_each(|v| *v = 0);
            let mut sums: Vec<Option<(Vec<f32>, usize)>> = vec![None; tiles.len()];
            for chunk in items.chunks(per_call) {
                let mut batch = Vec::with_capacity(chunk.len() * channels * tile_n);
                for &(t, v) in chunk {
                    let [a0, b0, c0] = tiles[t];
                    let mut tile = Vec::with_capacity(channels * tile_n);
                    for ch in 0..channels {
                        for a in 0..patch[0] {
                            for b in 0..patch[1] {
                                let src = ch * pplane + ((a0 + a) * padded[1] + b0 + b) * padded[2] + c0;
                                tile.extend_from_slice(&input[src..src + patch[2]]);
                            }
                        }
                    }
                    if v > 0 {
                        tile = flip(&tile, channels, patch, &combos[v - 1]);
                    }
                    batch.extend_from_slice(&tile);
                }
                let out = net.run(&batch, chunk.len())?;
                if out.len() != chunk.len() * k * tile_n {
                    return Err(InferError::Engine(format!(
                        "network returned {} values, {} expected ({} tiles × {k} classes × {tile_n})",
                        out.len(),
                        chunk.len() * k * tile_n,
                        chunk.len()
                    )));
                }
                for (i, &(t, v)) in chunk.iter().enumerate() {
                    let mut pred = out[i * k * tile_n..(i + 1) * k * tile_n].to_vec();
                    if v > 0 {
                        pred = flip(&pred, k, patch, &combos[v - 1]);
                    }
                    let slot = &mut sums[t];
                    match slot {
                        Some((sum, n)) => {
                            for (x, y) in sum.iter_mut().zip(&pred) {
                                *x += *y;
                            }
                            *n += 1;
                        }
                        None => *slot = Some((pred, 1)),
                    }
                    if let Some((sum, n)) = slot.as_ref().filter(|(_, n)| *n == variants) {
                        // Tile complete: mirror average (f32), Gaussian weight,
                        // accumulated in half precision as nnU-Net does.
                        let [a0, b0, c0] = tiles[t];
                        let inv = *n as f32;
                        for ch in 0..k {
                            for a in 0..patch[0] {
                                for b in 0..patch[1] {
                                    let dst = ch * pplane + ((a0 + a) * padded[1] + b0 + b) * padded[2] + c0;
                                    let src = ch * tile_n + (a * patch[1] + b) * patch[2];
                                    let gsrc = (a * patch[1] + b) * patch[2];
                                    for c in 0..patch[2] {
                                        let v = from_half(acc[dst + c]) + sum[src + c] / inv * g[gsrc + c];
                                        acc[dst + c] = to_half(f16_round(v));
                                    }
                                }
                            }
                        }
                        sums[t] = None;
                        done_tiles += 1;
                        progress(done_tiles, total_tiles);
                    }
                }
            }
            // This fold's logits (half), added to the folds' sum (half).
            for ch in 0..k {
                for a in 0..shape[0] {
                    for b in 0..shape[1] {
                        for c in 0..shape[2] {
                            let p = ((a + below[0]) * padded[1] + b + below[1]) * padded[2] + c + below[2];
                            let v = f16_round(from_half(acc[ch * pplane + p]) / from_half(weight[p]));
                            let o = &mut logits[ch * plane + (a * shape[1] + b) * shape[2] + c];
                            *o = to_half(if fold == 0 { v } else { f16_round(from_half(*o) + v) });
                        }
                    }
                }
            }
        }
        if nets.len() > 1 {
            let n = nets.len() as f32;
            logits.iter_mut().for_each(|v| *v = to_half(f16_round(from_half(*v) / n)));
        }
        Ok(Logits { half: logits, classes: k, plane })
    }

    /// A network whose output depends on the position in the tile, the
    /// value, the class and the fold, and is not mirror-symmetric: any change
    /// in the order or set of additions shows in the half-precision result.
    struct Wobbly {
        patch: [usize; 3],
        channels: usize,
        classes: usize,
        fold: f32,
    }

    impl Network for Wobbly {
        fn run(&self, input: &[f32], n: usize) -> Result<Vec<f32>, InferError> {
            let t = self.patch.iter().product::<usize>();
            let mut out = Vec::with_capacity(n * self.classes * t);
            for i in 0..n {
                let x = &input[i * self.channels * t..(i + 1) * self.channels * t];
                for c in 0..self.classes {
                    for j in 0..t {
                        let v: f32 = (0..self.channels).map(|ch| x[ch * t + j] * (ch + 1) as f32).sum();
                        out.push(
                            (v * (c as f32 + 0.7) + self.fold).sin() * 3.0 + (j % 7) as f32 * 0.013 * (c as f32 - 1.0),
                        );
                    }
                }
            }
            Ok(out)
        }
    }

    /// Streaming gives the whole-volume logits bit for bit: several folds,
    /// batches that straddle tile rows, mirroring, padding along each axis,
    /// uneven steps.
    #[test]
    fn streaming_equals_the_whole_volume_computation() {
        // (shape, patch, step, mirror axes, batch, classes, channels)
        type Case = ([usize; 3], [usize; 3], f64, &'static [usize], usize, usize, usize);
        let cases: [Case; 6] = [
            ([23, 13, 10], [6, 8, 8], 0.5, &[0, 1, 2], 3, 3, 1),
            ([23, 13, 10], [6, 8, 8], 0.5, &[], 5, 2, 2),
            ([4, 19, 17], [6, 8, 8], 0.5, &[1, 2], 2, 2, 1),
            ([31, 9, 12], [8, 12, 8], 0.7, &[0], 7, 3, 2),
            ([17, 16, 16], [5, 16, 16], 0.5, &[0, 2], 1, 2, 1),
            ([12, 10, 9], [12, 10, 9], 0.5, &[0, 1, 2], 4, 4, 1),
        ];
        for (shape, patch, step, axes, batch, classes, channels) in cases {
            let n = shape.iter().product::<usize>();
            let data: Vec<f32> = (0..channels * n).map(|i| (((i * 7919) % 211) as f32 / 50.0) - 2.0).collect();
            let nets: Vec<Wobbly> =
                (0..3).map(|f| Wobbly { patch, channels, classes, fold: f as f32 * 0.37 }).collect();
            let refs: Vec<&dyn Network> = nets.iter().map(|n| n as &dyn Network).collect();
            let s = WindowSettings { patch, step_size: step, mirror_axes: axes.to_vec(), batch_size: batch, classes };
            for folds in [1, 3] {
                let whole = predict_whole(&refs[..folds], &data, channels, shape, &s, |_, _| {}).expect("runs");
                let mut calls = 0;
                let streamed = predict(&refs[..folds], &data, channels, shape, &s, |d, t| {
                    calls += 1;
                    assert!(d <= t);
                })
                .expect("runs");
                assert_eq!(whole.half, streamed.half, "shape {shape:?} patch {patch:?} folds {folds}");
                let tiles = (0..3).map(|a| steps(shape[a].max(patch[a]), patch[a], step).len()).product::<usize>();
                assert_eq!(calls, tiles * folds);
            }
        }
    }

    #[test]
    fn sliding_window_reproduces_a_pointwise_network() {
        let shape = [7, 13, 10];
        let data: Vec<f32> = (0..shape.iter().product::<usize>()).map(|i| ((i * 37) % 11) as f32 - 5.0).collect();
        let net = Echo { patch: [4, 8, 8] };
        let s =
            WindowSettings { patch: net.patch, step_size: 0.5, mirror_axes: vec![0, 1, 2], batch_size: 3, classes: 2 };
        let logits = predict(&[&net, &net], &data, 1, shape, &s, |_, _| {}).expect("runs");
        let n = data.len();
        // Exact up to the half-precision accumulation nnU-Net uses.
        for i in 0..n {
            let tol = 2e-3 * data[i].abs().max(1.0);
            assert!((logits.get(1, i) - data[i]).abs() < tol, "voxel {i}: {} vs {}", logits.get(1, i), data[i]);
            assert!((logits.get(0, i) + data[i]).abs() < tol);
        }
    }
}

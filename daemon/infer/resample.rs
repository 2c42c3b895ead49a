//! nnU-Net's resampling, reproduced: `skimage.transform.resize` (mode
//! "edge", no anti-aliasing, output clipped to the input's range), which is
//! `scipy.ndimage.zoom` with `grid_mode=True` and mode "nearest", and the
//! separate-z path (per-slice 2D resize, then `map_coordinates` along the
//! low-resolution axis with order 0 or 1). Cubic splines follow scipy: the line
//! is padded by 12 edge values, prefiltered with reflect boundaries, and
//! evaluated with B-spline weights; all arithmetic in f64.
//!
//! Arrays are C-ordered `[d0, d1, d2]` (nnU-Net's axis order), which is the
//! x-fastest voxel order of `Volume` with d0 = slices.

use rayon::prelude::*;

use super::model::ResamplingKwargs;

/// Anisotropy above which nnU-Net resamples the low-resolution axis apart.
pub const ANISO_THRESHOLD: f64 = 3.0;

/// Output shape for a spacing change: round(old_spacing / new_spacing × shape).
pub fn compute_new_shape(shape: [usize; 3], old_spacing: [f64; 3], new_spacing: [f64; 3]) -> [usize; 3] {
    [0, 1, 2].map(|a| round_half_even(old_spacing[a] / new_spacing[a] * shape[a] as f64) as usize)
}

/// numpy's round (half to even).
pub fn round_half_even(x: f64) -> f64 {
    x.round_ties_even()
}

/// Cubic B-spline prefilter of one line as scipy runs it for mode "nearest"
/// (`apply_filter` with the reflect initialisations of `ni_splines.c`).
fn prefilter_cubic(c: &mut [f64]) {
    let n = c.len();
    if n < 2 {
        return;
    }
    let z = 3f64.sqrt() - 2.0;
    let gain = (1.0 - z) * (1.0 - 1.0 / z);
    for v in c.iter_mut() {
        *v *= gain;
    }
    // _init_causal_reflect
    let z_n = z.powi(n as i32);
    let c0 = c[0];
    c[0] += z_n * c[n - 1];
    let mut zi = z;
    for i in 1..n {
        c[0] += zi * (c[i] + z_n * c[n - 1 - i]);
        zi *= z;
    }
    c[0] *= z / (1.0 - z_n * z_n);
    c[0] += c0;
    for i in 1..n {
        c[i] += z * c[i - 1];
    }
    // _init_anticausal_reflect
    c[n - 1] *= z / (z - 1.0);
    for i in (0..n - 1).rev() {
        c[i] = z * (c[i + 1] - c[i]);
    }
}

/// Padding scipy adds before prefiltering for mode "nearest".
const NPAD: usize = 12;

/// Resamples one line of `n` samples to `m` samples at input coordinates
/// (o + 0.5)·n/m − 0.5, with spline `order` 0, 1 or 3, mode "nearest".
fn zoom_line(input: &[f64], m: usize, order: usize, out: &mut [f64], scratch: &mut Vec<f64>) {
    let n = input.len();
    let scale = n as f64 / m as f64;
    match order {
        0 => {
            for (o, v) in out.iter_mut().enumerate() {
                let x = (o as f64 + 0.5) * scale - 0.5;
                let i = (x + 0.5).floor().clamp(0.0, (n - 1) as f64) as usize;
                *v = input[i];
            }
        }
        1 => {
            for (o, v) in out.iter_mut().enumerate() {
                let x = (o as f64 + 0.5) * scale - 0.5;
                let f = x.floor();
                let t = x - f;
                let i0 = (f as i64).clamp(0, n as i64 - 1) as usize;
                let i1 = (f as i64 + 1).clamp(0, n as i64 - 1) as usize;
                *v = (1.0 - t) * input[i0] + t * input[i1];
            }
        }
        _ => {
            scratch.clear();
            scratch.extend(std::iter::repeat_n(input[0], NPAD));
            scratch.extend_from_slice(input);
            scratch.extend(std::iter::repeat_n(input[n - 1], NPAD));
            prefilter_cubic(scratch);
            let len = scratch.len() as i64;
            for (o, v) in out.iter_mut().enumerate() {
                let x = (o as f64 + 0.5) * scale - 0.5 + NPAD as f64;
                let f = x.floor();
                let t = x - f;
                let start = f as i64 - 1;
                let w = [
                    (1.0 - t).powi(3) / 6.0,
                    (3.0 * t * t * t - 6.0 * t * t + 4.0) / 6.0,
                    (-3.0 * t * t * t + 3.0 * t * t + 3.0 * t + 1.0) / 6.0,
                    t * t * t / 6.0,
                ];
                let mut s = 0.0;
                for (k, wk) in w.iter().enumerate() {
                    let idx = (start + k as i64).clamp(0, len - 1) as usize;
                    s += wk * scratch[idx];
                }
                *v = s;
            }
        }
    }
}

/// Lines resampled per parallel block: bounds the per-line results held
/// before they are scattered into the output (a few MB, not a volume).
const LINE_BLOCK: usize = 8192;

/// Resamples a 3D array along one axis to `m` samples.
fn zoom_axis<T: Copy + Into<f64> + Sync, O: Sample>(
    data: &[T],
    shape: [usize; 3],
    axis: usize,
    m: usize,
    order: usize,
    clip: Option<(f64, f64)>,
) -> Vec<O> {
    let finish = |v: f64| {
        O::from_f64(match clip {
            Some((lo, hi)) => v.clamp(lo, hi),
            None => v,
        })
    };
    let mut new_shape = shape;
    new_shape[axis] = m;
    let n = shape[axis];
    if n == m {
        return data.iter().map(|&v| finish(v.into())).collect();
    }
    let mut out = vec![O::default(); new_shape[0] * new_shape[1] * new_shape[2]];
    let stride_in = |a: usize, s: [usize; 3]| match a {
        0 => s[1] * s[2],
        1 => s[2],
        _ => 1,
    };
    let (si, so) = (stride_in(axis, shape), stride_in(axis, new_shape));
    // Lines along `axis`: enumerate the other two coordinates.
    let others: Vec<usize> = (0..3).filter(|&a| a != axis).collect();
    let (oa, ob) = (others[0], others[1]);
    let lines: Vec<(usize, usize)> = (0..new_shape[oa]).flat_map(|p| (0..new_shape[ob]).map(move |q| (p, q))).collect();
    let base = |p: usize, q: usize, s: [usize; 3]| {
        let mut c = [0usize; 3];
        c[oa] = p;
        c[ob] = q;
        c[0] * s[1] * s[2] + c[1] * s[2] + c[2]
    };
    for block in lines.chunks(LINE_BLOCK) {
        let results: Vec<Vec<f64>> = block
            .par_iter()
            .map_init(
                || (Vec::new(), Vec::new()),
                |(line, scratch), &(p, q)| {
                    let base_in = base(p, q, shape);
                    line.clear();
                    line.extend((0..n).map(|i| -> f64 { data[base_in + i * si].into() }));
                    let mut o = vec![0f64; m];
                    zoom_line(line, m, order, &mut o, scratch);
                    o
                },
            )
            .collect();
        for (&(p, q), r) in block.iter().zip(&results) {
            let base_out = base(p, q, new_shape);
            for (i, v) in r.iter().enumerate() {
                out[base_out + i * so] = finish(*v);
            }
        }
    }
    out
}

/// `skimage.transform.resize(image, new_shape, order, mode="edge",
/// anti_aliasing=False)` of a 3D (or, with a unit axis, 2D) array, clipped to
/// the input's range.
pub fn resize<T: Copy + Into<f64> + Sync, O: Sample>(
    data: &[T],
    shape: [usize; 3],
    new_shape: [usize; 3],
    order: usize,
) -> Vec<O> {
    if shape == new_shape {
        return data.iter().map(|&v| O::from_f64(v.into())).collect();
    }
    let plane = new_shape[1] * new_shape[2];
    let mut out = vec![O::default(); new_shape.iter().product()];
    resize_planes(data, shape, new_shape, order, |first, block: &[O]| {
        out[first * plane..first * plane + block.len()].copy_from_slice(block);
    });
    out
}

/// Planes of axis 0 per block of the in-plane passes.
const PLANE_BLOCK: usize = 16;

/// [`resize`] handed to `sink` in blocks of whole planes of axis 0 (`sink`'s
/// first argument: the block's first plane), so the caller need not hold
/// the output. Axis passes in f64 as [`resize`]: the pass along axis 0 (when
/// it changes) on the whole array, reading the input where it lies; the
/// passes along axes 1 and 2, which act on each plane alone, per block of
/// planes, the last one clipped and written in the output type. Every line
/// is resampled as it would be in the whole array: the values are the same.
pub fn resize_planes<T: Copy + Into<f64> + Sync, O: Sample>(
    data: &[T],
    shape: [usize; 3],
    new_shape: [usize; 3],
    order: usize,
    mut sink: impl FnMut(usize, &[O]),
) {
    if shape == new_shape {
        let out: Vec<O> = data.iter().map(|&v| O::from_f64(v.into())).collect();
        sink(0, &out);
        return;
    }
    let (lo, hi) = data.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
        let v: f64 = v.into();
        (a.min(v), b.max(v))
    });
    let clip = (order > 0).then_some((lo, hi));
    let in_plane: Vec<usize> = (1..3).filter(|&a| shape[a] != new_shape[a]).collect();
    if shape[0] == new_shape[0] {
        in_plane_blocks(data, shape, new_shape, &in_plane, order, clip, &mut sink);
    } else if in_plane.is_empty() {
        let out: Vec<O> = zoom_axis(data, shape, 0, new_shape[0], order, clip);
        sink(0, &out);
    } else {
        let first: Vec<f64> = zoom_axis(data, shape, 0, new_shape[0], order, None);
        in_plane_blocks(&first, [new_shape[0], shape[1], shape[2]], new_shape, &in_plane, order, clip, &mut sink);
    }
}

/// The in-plane passes (`axes`, 1 and/or 2, in order) of `data` (shape,
/// axis 0 already at its new size) per block of planes, into `sink`.
fn in_plane_blocks<T: Copy + Into<f64> + Sync, O: Sample>(
    data: &[T],
    shape: [usize; 3],
    new_shape: [usize; 3],
    axes: &[usize],
    order: usize,
    clip: Option<(f64, f64)>,
    sink: &mut impl FnMut(usize, &[O]),
) {
    let plane = shape[1] * shape[2];
    for start in (0..shape[0]).step_by(PLANE_BLOCK) {
        let end = (start + PLANE_BLOCK).min(shape[0]);
        let block = &data[start * plane..end * plane];
        let mut bshape = [end - start, shape[1], shape[2]];
        let mut cur: Option<Vec<f64>> = None;
        for (i, &axis) in axes.iter().enumerate() {
            if i + 1 == axes.len() {
                let out: Vec<O> = match &cur {
                    None => zoom_axis(block, bshape, axis, new_shape[axis], order, clip),
                    Some(c) => zoom_axis(c, bshape, axis, new_shape[axis], order, clip),
                };
                sink(start, &out);
                break;
            }
            let next: Vec<f64> = match &cur {
                None => zoom_axis(block, bshape, axis, new_shape[axis], order, None),
                Some(c) => zoom_axis(c, bshape, axis, new_shape[axis], order, None),
            };
            cur = Some(next);
            bshape[axis] = new_shape[axis];
        }
    }
}

/// An output sample type of the resampling (f64 for the reference, f32 for
/// the pipeline: nnU-Net casts its float64 result back to float32).
pub trait Sample: Copy + Default + Send + Sync {
    /// From the f64 result.
    fn from_f64(v: f64) -> Self;
}

impl Sample for f64 {
    #[inline]
    fn from_f64(v: f64) -> Self {
        v
    }
}

impl Sample for f32 {
    #[inline]
    fn from_f64(v: f64) -> Self {
        v as f32
    }
}

/// nnU-Net's separate-z decision: (do_separate_z, low-resolution axis).
pub fn separate_z(current: [f64; 3], new: [f64; 3], force: Option<bool>) -> Option<usize> {
    let aniso = |s: [f64; 3]| {
        let max = s.iter().cloned().fold(f64::MIN, f64::max);
        let min = s.iter().cloned().fold(f64::MAX, f64::min);
        max / min > ANISO_THRESHOLD
    };
    let lowres = |s: [f64; 3]| {
        let max = s.iter().cloned().fold(f64::MIN, f64::max);
        let axes: Vec<usize> = (0..3).filter(|&a| max / s[a] == 1.0).collect();
        (axes.len() == 1).then(|| axes[0])
    };
    match force {
        Some(true) => lowres(current),
        Some(false) => None,
        None if aniso(current) => lowres(current),
        None if aniso(new) => lowres(new),
        None => None,
    }
}

/// [`resample_channel`] handed to `sink` in blocks of whole planes of
/// axis 0 (without separate z: [`resize_planes`]; with it, the whole result
/// at once). The same values.
pub fn resample_channel_planes<T: Copy + Into<f64> + Sync, O: Sample>(
    data: &[T],
    shape: [usize; 3],
    new_shape: [usize; 3],
    current_spacing: [f64; 3],
    new_spacing: [f64; 3],
    kw: &ResamplingKwargs,
    mut sink: impl FnMut(usize, &[O]),
) {
    if shape != new_shape && separate_z(current_spacing, new_spacing, kw.force_separate_z).is_none() {
        resize_planes(data, shape, new_shape, kw.order, sink);
    } else {
        let out: Vec<O> = resample_channel(data, shape, new_shape, current_spacing, new_spacing, kw);
        sink(0, &out);
    }
}

/// `resample_data_or_seg_to_shape` for one channel (is_seg = False).
pub fn resample_channel<T: Copy + Into<f64> + Sync, O: Sample>(
    data: &[T],
    shape: [usize; 3],
    new_shape: [usize; 3],
    current_spacing: [f64; 3],
    new_spacing: [f64; 3],
    kw: &ResamplingKwargs,
) -> Vec<O> {
    let (order, order_z, force_separate_z) = (kw.order, kw.order_z, kw.force_separate_z);
    if shape == new_shape {
        return data.iter().map(|&v| O::from_f64(v.into())).collect();
    }
    let Some(axis) = separate_z(current_spacing, new_spacing, force_separate_z) else {
        return resize(data, shape, new_shape, order);
    };
    // Per slice along `axis`: a 2D resize (clipped to that slice's range).
    let mut in_plane = new_shape;
    in_plane[axis] = shape[axis];
    let mut stacked = vec![0f64; in_plane[0] * in_plane[1] * in_plane[2]];
    // Slices in blocks, so only a block of resized slices waits to be
    // scattered (not a second copy of the volume).
    let all: Vec<usize> = (0..shape[axis]).collect();
    for block in all.chunks(32) {
        let slices: Vec<Vec<f64>> = block
            .par_iter()
            .map(|&s| {
                let (mut sh, mut nsh) = (shape, new_shape);
                sh[axis] = 1;
                nsh[axis] = 1;
                let slice: Vec<T> = (0..sh[0])
                    .flat_map(|a| (0..sh[1]).flat_map(move |b| (0..sh[2]).map(move |c| (a, b, c))))
                    .map(|(a, b, c)| {
                        let mut idx = [a, b, c];
                        idx[axis] = s;
                        data[idx[0] * shape[1] * shape[2] + idx[1] * shape[2] + idx[2]]
                    })
                    .collect();
                resize::<T, f64>(&slice, sh, nsh, order)
            })
            .collect();
        // A resized slice is C-ordered over the two other axes.
        let others: Vec<usize> = (0..3).filter(|&x| x != axis).collect();
        let (oa, ob) = (others[0], others[1]);
        for (&s, sl) in block.iter().zip(&slices) {
            let mut i = 0;
            for p in 0..in_plane[oa] {
                for q in 0..in_plane[ob] {
                    let mut idx = [0usize; 3];
                    idx[axis] = s;
                    idx[oa] = p;
                    idx[ob] = q;
                    stacked[idx[0] * in_plane[1] * in_plane[2] + idx[1] * in_plane[2] + idx[2]] = sl[i];
                    i += 1;
                }
            }
        }
    }
    if shape[axis] == new_shape[axis] {
        return stacked.into_iter().map(O::from_f64).collect();
    }
    // map_coordinates along the low-resolution axis, mode "nearest", no clip.
    zoom_axis(&stacked, in_plane, axis, new_shape[axis], order_z, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole-array implementation `resize` had before its in-plane
    /// passes ran per block of planes: every axis pass on the whole array.
    fn resize_whole(data: &[f64], shape: [usize; 3], new_shape: [usize; 3], order: usize) -> Vec<f32> {
        let (lo, hi) = data.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
        let clip = (order > 0).then_some((lo, hi));
        let changing: Vec<usize> = (0..3).filter(|&a| shape[a] != new_shape[a]).collect();
        let mut cur = data.to_vec();
        let mut cur_shape = shape;
        for (i, &axis) in changing.iter().enumerate() {
            if i + 1 == changing.len() {
                return zoom_axis(&cur, cur_shape, axis, new_shape[axis], order, clip);
            }
            cur = zoom_axis(&cur, cur_shape, axis, new_shape[axis], order, None);
            cur_shape[axis] = new_shape[axis];
        }
        cur.iter().map(|&v| v as f32).collect()
    }

    /// In-plane passes per block of planes give the whole-array result bit
    /// for bit, for every combination of changing axes, up and down, with
    /// more planes than a block, spline orders 0, 1 and 3; the sink gets
    /// every plane once, in order.
    #[test]
    fn blocks_of_planes_equal_the_whole_array() {
        let shape = [37, 9, 7];
        let n = shape.iter().product::<usize>();
        let data: Vec<f64> = (0..n).map(|i| ((i * 7919) % 113) as f64 * 0.37 - 9.0 + (i as f64).sin()).collect();
        for new_shape in [[37, 13, 7], [37, 9, 4], [37, 5, 11], [20, 9, 7], [51, 13, 5], [18, 4, 10], [2, 9, 7]] {
            for order in [0, 1, 3] {
                let whole = resize_whole(&data, shape, new_shape, order);
                let blocks: Vec<f32> = resize(&data, shape, new_shape, order);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&blocks), bits(&whole), "{new_shape:?} order {order}");
                let mut next = 0;
                resize_planes(&data, shape, new_shape, order, |first, block: &[f32]| {
                    assert_eq!(first, next);
                    next += block.len() / (new_shape[1] * new_shape[2]);
                });
                assert_eq!(next, new_shape[0]);
            }
        }
    }

    /// Values computed by nnunetv2 2.8.1's own `resample_data_or_seg_to_shape`
    /// (skimage 0.25 / scipy) on the same input, recorded from its venv.
    #[test]
    fn matches_nnunet_resampling() {
        let mut a = Vec::new();
        for i in 0..5 {
            for j in 0..7 {
                for k in 0..6 {
                    a.push(((i * 7 + j * 3 + k * 5) % 11) as f64 * 9.1 + ((i + 2 * j + 3 * k) as f64).sin() * 4.0);
                }
            }
        }
        let shape = [5, 7, 6];
        let kw = |order, order_z| ResamplingKwargs { order, order_z, force_separate_z: None };
        let at = |r: &[f64], s: [usize; 3], t: [usize; 3]| r[(t[0] * s[1] + t[1]) * s[2] + t[2]];
        type Case = (&'static str, [usize; 3], [f64; 3], [f64; 3], ResamplingKwargs, [([usize; 3], f64); 5], f64);
        let cases: [Case; 4] = [
            (
                "order 3",
                [9, 4, 11],
                [1.0, 1.0, 1.0],
                [0.5, 1.75, 0.55],
                kw(3, 0),
                [
                    ([0, 0, 0], -2.176084443557479),
                    ([4, 2, 7], 40.795681803071496),
                    ([8, 3, 10], 44.42836015778127),
                    ([3, 1, 5], 30.328584238361287),
                    ([8, 0, 3], 3.2221833165814546),
                ],
                17905.07640024738,
            ),
            (
                "order 1",
                [9, 4, 11],
                [1.0, 1.0, 1.0],
                [0.5, 1.75, 0.55],
                kw(1, 0),
                [
                    ([0, 0, 0], 0.0),
                    ([4, 2, 7], 40.760695975671155),
                    ([8, 3, 10], 43.88384941870775),
                    ([3, 1, 5], 38.007321207632785),
                    ([8, 0, 3], 19.276297415516346),
                ],
                17941.730898503265,
            ),
            (
                "separate z, order_z 0",
                [9, 4, 11],
                [4.0, 1.0, 1.0],
                [2.2, 1.75, 0.55],
                kw(3, 0),
                [
                    ([0, 0, 0], 6.026373352889175),
                    ([4, 2, 7], 48.374101229027474),
                    ([8, 3, 10], 27.21048246186012),
                    ([3, 1, 5], 33.455635633576996),
                    ([8, 0, 3], 22.506350756129198),
                ],
                17894.469910764423,
            ),
            (
                "separate z, order_z 1",
                [12, 4, 11],
                [4.0, 1.0, 1.0],
                [1.6, 1.75, 0.55],
                kw(3, 1),
                [
                    ([0, 0, 0], 6.026373352889175),
                    ([4, 2, 7], 41.42798133494543),
                    ([8, 3, 10], 74.98337225319347),
                    ([3, 1, 5], 35.44550115461605),
                    ([11, 0, 3], 22.506350756129198),
                ],
                23959.677369545938,
            ),
        ];
        for (name, new_shape, cur, new, kw, points, sum) in cases {
            let r = resample_channel(&a, shape, new_shape, cur, new, &kw);
            for (t, v) in points {
                let got = at(&r, new_shape, t);
                assert!((got - v).abs() < 1e-9, "{name} at {t:?}: {got} vs nnU-Net {v}");
            }
            let total: f64 = r.iter().sum();
            assert!((total - sum).abs() < 1e-7, "{name}: sum {total} vs {sum}");
        }
    }

    #[test]
    fn cubic_spline_interpolates_the_samples() {
        // At zoom 1 the coordinates are the sample positions: the interpolating
        // spline gives the samples back.
        let line: Vec<f64> = (0..10).map(|i| ((i * 7) % 5) as f64 - 1.5).collect();
        let mut out = vec![0.0; 10];
        let mut scratch = Vec::new();
        zoom_line(&line, 10, 3, &mut out, &mut scratch);
        for (a, b) in line.iter().zip(&out) {
            assert!((a - b).abs() < 1e-9, "{a} vs {b}");
        }
    }

    #[test]
    fn linear_and_nearest_follow_grid_mode() {
        let line = [0.0, 10.0];
        let mut out = vec![0.0; 4];
        let mut s = Vec::new();
        zoom_line(&line, 4, 1, &mut out, &mut s);
        // coordinates -0.25, 0.25, 0.75, 1.25 → clamped linear.
        assert_eq!(out, vec![0.0, 2.5, 7.5, 10.0]);
        zoom_line(&line, 4, 0, &mut out, &mut s);
        assert_eq!(out, vec![0.0, 0.0, 10.0, 10.0]);
    }

    #[test]
    fn shapes_and_separate_z() {
        assert_eq!(compute_new_shape([10, 20, 30], [5.0, 1.0, 1.0], [2.5, 0.5, 2.0]), [20, 40, 15]);
        assert_eq!(separate_z([5.0, 0.8, 0.8], [1.0, 1.0, 1.0], None), Some(0));
        assert_eq!(separate_z([1.0, 1.0, 1.0], [1.0, 1.0, 1.0], None), None);
        assert_eq!(separate_z([0.24, 1.25, 1.25], [1.0, 1.0, 1.0], Some(true)), None);
        let d: Vec<f64> = (0..2 * 3 * 4).map(|v| v as f64).collect();
        let kw = ResamplingKwargs { order: 3, order_z: 0, force_separate_z: None };
        let r = resample_channel(&d, [2, 3, 4], [4, 6, 8], [5.0, 1.0, 1.0], [2.5, 0.5, 0.5], &kw);
        assert_eq!(r.len(), 4 * 6 * 8);
        let (lo, hi) = r.iter().fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        assert!(lo >= 0.0 && hi <= 23.0);
    }
}

//! nnU-Net's preprocessing of one case, reproduced: transpose_forward, crop to
//! the non-zero bounding box (any channel ≠ 0, holes filled), normalisation per
//! channel as the plans name it, resampling to the configuration's spacing.

use std::borrow::Cow;

use super::InferError;
use super::model::{IntensityProperties, ModelPackage};
use super::resample::{compute_new_shape, resample_channel};
use crate::gpu::{Connectivity, cpu};

/// What preprocessing did, for undoing it on the prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseProperties {
    /// Shape after transpose_forward, before cropping.
    pub shape_before_cropping: [usize; 3],
    /// Crop box per axis, [start, end).
    pub bbox: [[usize; 2]; 3],
    /// Shape after cropping.
    pub shape_after_cropping: [usize; 3],
    /// Spacing after transpose_forward.
    pub original_spacing: [f64; 3],
}

/// A preprocessed case: channels × shape, C order.
#[derive(Debug, Clone)]
pub struct Preprocessed {
    /// Voxels, channel-major.
    pub data: Vec<f32>,
    /// Shape of one channel.
    pub shape: [usize; 3],
    /// Channel count.
    pub channels: usize,
    /// For the way back.
    pub props: CaseProperties,
}

/// Permutes a C-ordered 3D array: output axis a is input axis `perm[a]`.
pub fn transpose<T: Copy + Default>(data: &[T], shape: [usize; 3], perm: [usize; 3]) -> (Vec<T>, [usize; 3]) {
    let new_shape = [shape[perm[0]], shape[perm[1]], shape[perm[2]]];
    if perm == [0, 1, 2] {
        return (data.to_vec(), shape);
    }
    let strides = [shape[1] * shape[2], shape[2], 1];
    let mut out = vec![T::default(); data.len()];
    let mut o = 0;
    for a in 0..new_shape[0] {
        for b in 0..new_shape[1] {
            for c in 0..new_shape[2] {
                out[o] = data[a * strides[perm[0]] + b * strides[perm[1]] + c * strides[perm[2]]];
                o += 1;
            }
        }
    }
    (out, new_shape)
}

/// `binary_fill_holes` (6-connected background reaching the border stays).
pub fn fill_holes(mask: &[bool], shape: [usize; 3]) -> Vec<bool> {
    // Our labeller is x-fastest with dims [nx, ny, nz] = [d2, d1, d0].
    let dims = [shape[2], shape[1], shape[0]];
    let background: Vec<u8> = mask.iter().map(|&m| u8::from(!m)).collect();
    let l = cpu::label(&background, dims, Connectivity::Six);
    let mut border = vec![false; l.count as usize + 1];
    for z in 0..dims[2] {
        for y in 0..dims[1] {
            for x in 0..dims[0] {
                if x == 0 || y == 0 || z == 0 || x + 1 == dims[0] || y + 1 == dims[1] || z + 1 == dims[2] {
                    border[l.data[x + dims[0] * (y + dims[1] * z)] as usize] = true;
                }
            }
        }
    }
    l.data.iter().map(|&lab| lab == 0 || !border[lab as usize]).collect()
}

fn normalise(
    scheme: &str,
    use_mask: bool,
    image: &mut [f32],
    mask: &[bool],
    props: Option<&IntensityProperties>,
) -> Result<(), InferError> {
    match scheme {
        "CTNormalization" => {
            let p = props
                .ok_or_else(|| InferError::Model("CTNormalization needs foreground intensity properties".into()))?;
            let (lo, hi) = (p.percentile_00_5 as f32, p.percentile_99_5 as f32);
            let (mean, std) = (p.mean as f32, (p.std as f32).max(1e-8));
            for v in image.iter_mut() {
                *v = (v.clamp(lo, hi) - mean) / std;
            }
        }
        "ZScoreNormalization" => {
            let sel = |i: usize| !use_mask || mask[i];
            let (mut n, mut s) = (0u64, 0f64);
            for (i, v) in image.iter().enumerate() {
                if sel(i) {
                    n += 1;
                    s += f64::from(*v);
                }
            }
            let mean = s / n.max(1) as f64;
            let mut ss = 0f64;
            for (i, v) in image.iter().enumerate() {
                if sel(i) {
                    ss += (f64::from(*v) - mean).powi(2);
                }
            }
            let std = (ss / n.max(1) as f64).sqrt().max(1e-8);
            let (mean, std) = (mean as f32, std as f32);
            for (i, v) in image.iter_mut().enumerate() {
                if sel(i) {
                    *v = (*v - mean) / std;
                }
            }
        }
        "RescaleTo01Normalization" => {
            let (lo, hi) = image.iter().fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
            let range = (hi - lo).max(1e-8);
            for v in image.iter_mut() {
                *v = (*v - lo) / range;
            }
        }
        "RGBTo01Normalization" => {
            for v in image.iter_mut() {
                *v /= 255.0;
            }
        }
        "NoNormalization" => {}
        other => return Err(InferError::Model(format!("normalisation scheme {other} is not supported"))),
    }
    Ok(())
}

/// Preprocesses one case. `channels[c]` is channel c in nnU-Net axis order
/// (C-ordered `[d0, d1, d2]`), all of `shape`, with `spacing` per axis.
pub fn preprocess(
    pkg: &ModelPackage,
    channels: &[&[f32]],
    shape: [usize; 3],
    spacing: [f64; 3],
) -> Result<Preprocessed, InferError> {
    let tf = &pkg.plans.transpose_forward;
    if tf.len() != 3 {
        return Err(InferError::Model("transpose_forward must have 3 axes".into()));
    }
    let perm = [tf[0], tf[1], tf[2]];
    let original_spacing = [spacing[perm[0]], spacing[perm[1]], spacing[perm[2]]];
    // The identity permutation (most plans) reads the caller's volumes in
    // place: no copy of a 1 GB CT.
    let mut transposed: Vec<Cow<'_, [f32]>> = Vec::with_capacity(channels.len());
    let mut tshape = shape;
    for c in channels {
        if perm == [0, 1, 2] {
            transposed.push(Cow::Borrowed(c));
        } else {
            let (t, s) = transpose(c, shape, perm);
            tshape = s;
            transposed.push(Cow::Owned(t));
        }
    }
    let refs: Vec<&[f32]> = transposed.iter().map(|t| t.as_ref()).collect();
    let bbox = nonzero_box(&refs, tshape);
    let cshape = [bbox[0][1] - bbox[0][0], bbox[1][1] - bbox[1][0], bbox[2][1] - bbox[2][0]];
    let crop_into = |src: &[f32], out: &mut Vec<f32>| {
        for a in bbox[0][0]..bbox[0][1] {
            for b in bbox[1][0]..bbox[1][1] {
                let row = (a * tshape[1] + b) * tshape[2];
                out.extend_from_slice(&src[row + bbox[2][0]..row + bbox[2][1]]);
            }
        }
    };
    // The hole-filled mask, only where a normalisation uses it, made on the
    // crop: outside the box all is background connected to the border, so a
    // background region touches the box's faces exactly when it reaches the
    // volume's border, and filling the crop equals cropping the filled volume.
    let needs_mask = pkg.config.use_mask_for_norm.iter().take(channels.len()).any(|&m| m);
    let mask: Vec<bool> = if needs_mask {
        let mut nonzero = Vec::with_capacity(cshape[0] * cshape[1] * cshape[2]);
        for a in bbox[0][0]..bbox[0][1] {
            for b in bbox[1][0]..bbox[1][1] {
                let row = (a * tshape[1] + b) * tshape[2];
                nonzero.extend((bbox[2][0]..bbox[2][1]).map(|c| transposed.iter().any(|t| t[row + c] != 0.0)));
            }
        }
        fill_holes(&nonzero, cshape)
    } else {
        Vec::new()
    };
    let target = [pkg.config.spacing[0], pkg.config.spacing[1], pkg.config.spacing[2]];
    let new_shape = working_shape(cshape, original_spacing, target)?;
    let kw = &pkg.config.resampling_fn_data_kwargs;
    let mut data = Vec::with_capacity(channels.len() * new_shape.iter().product::<usize>());
    let cn = cshape[0] * cshape[1] * cshape[2];
    for (ci, t) in transposed.iter().enumerate() {
        let props = pkg.plans.foreground_intensity_properties_per_channel.get(&ci.to_string());
        let (scheme, use_mask) = (&pkg.config.normalization_schemes[ci], pkg.config.use_mask_for_norm[ci]);
        if new_shape == cshape {
            // No resampling (nnU-Net returns the array unchanged): crop and
            // normalise straight into the output.
            let start = data.len();
            crop_into(t, &mut data);
            normalise(scheme, use_mask, &mut data[start..], &mask, props)?;
        } else {
            let mut img = Vec::with_capacity(cn);
            crop_into(t, &mut img);
            normalise(scheme, use_mask, &mut img, &mask, props)?;
            // f64 inside, one axis pass at a time; the input is read as f32.
            let r: Vec<f32> = resample_channel(&img, cshape, new_shape, original_spacing, target, kw);
            drop(img);
            if data.is_empty() {
                data = r;
            } else {
                data.extend_from_slice(&r);
            }
        }
    }
    Ok(Preprocessed {
        data,
        shape: new_shape,
        channels: channels.len(),
        props: CaseProperties { shape_before_cropping: tshape, bbox, shape_after_cropping: cshape, original_spacing },
    })
}

/// The crop box: the non-zero bounding box of the hole-filled any-channel
/// mask. Filling holes adds only voxels enclosed by non-zero ones, so the box
/// is the non-zero voxels' box, found by one scan without a mask volume. All
/// zero: the whole image (as nnU-Net keeps it).
fn nonzero_box(channels: &[&[f32]], shape: [usize; 3]) -> [[usize; 2]; 3] {
    let mut bbox = [[usize::MAX, 0usize]; 3];
    for a in 0..shape[0] {
        for b in 0..shape[1] {
            let row = (a * shape[1] + b) * shape[2];
            let nz = |c: usize| channels.iter().any(|t| t[row + c] != 0.0);
            let Some(first) = (0..shape[2]).find(|&c| nz(c)) else { continue };
            let last = (first..shape[2]).rev().find(|&c| nz(c)).unwrap_or(first);
            for (ax, (lo, hi)) in [(a, a), (b, b), (first, last)].into_iter().enumerate() {
                bbox[ax][0] = bbox[ax][0].min(lo);
                bbox[ax][1] = bbox[ax][1].max(hi + 1);
            }
        }
    }
    if bbox[0][0] == usize::MAX {
        bbox = [[0, shape[0]], [0, shape[1]], [0, shape[2]]];
    }
    bbox
}

/// The working grid of a crop: nnU-Net's new shape, refused when an axis
/// resamples to nothing (a volume thinner than half a voxel of the model's
/// grid, one slice say) rather than resampled to an empty axis.
fn working_shape(cshape: [usize; 3], spacing: [f64; 3], target: [f64; 3]) -> Result<[usize; 3], InferError> {
    let new_shape = compute_new_shape(cshape, spacing, target);
    if let Some(a) = (0..3).find(|&a| new_shape[a] == 0) {
        return Err(InferError::Input(format!(
            "the image is too small for the model: {} voxel(s) of {:.3} mm along axis {a} resample to none at {:.3} mm",
            cshape[a], spacing[a], target[a]
        )));
    }
    Ok(new_shape)
}

/// [`preprocess`] of volumes the caller gives up: a single channel with the
/// identity `transpose_forward` (CT models, mostly) is cropped and
/// normalised in its own buffer, so the network input takes no second
/// volume's memory (at the input's spacing it is that buffer); otherwise as
/// [`preprocess`]. The same values either way.
pub fn preprocess_owned(
    pkg: &ModelPackage,
    mut channels: Vec<Vec<f32>>,
    shape: [usize; 3],
    spacing: [f64; 3],
) -> Result<Preprocessed, InferError> {
    let tf = &pkg.plans.transpose_forward;
    if channels.len() != 1 || tf.as_slice() != [0, 1, 2] {
        let refs: Vec<&[f32]> = channels.iter().map(Vec::as_slice).collect();
        return preprocess(pkg, &refs, shape, spacing);
    }
    let mut img = channels.pop().unwrap_or_default();
    if img.len() != shape.iter().product::<usize>() {
        return Err(InferError::Input(format!("{} voxels given for a {shape:?} image", img.len())));
    }
    let bbox = nonzero_box(&[&img], shape);
    let cshape = [bbox[0][1] - bbox[0][0], bbox[1][1] - bbox[1][0], bbox[2][1] - bbox[2][0]];
    // Crop in place: each kept row moves to an index no later than its own,
    // so copying rows in order never overwrites one still to be read.
    let mut at = 0;
    for a in bbox[0][0]..bbox[0][1] {
        for b in bbox[1][0]..bbox[1][1] {
            let row = (a * shape[1] + b) * shape[2];
            img.copy_within(row + bbox[2][0]..row + bbox[2][1], at);
            at += cshape[2];
        }
    }
    img.truncate(at);
    img.shrink_to_fit();
    let mask = if pkg.config.use_mask_for_norm.first().copied().unwrap_or(false) {
        fill_holes(&img.iter().map(|&v| v != 0.0).collect::<Vec<bool>>(), cshape)
    } else {
        Vec::new()
    };
    let props = pkg.plans.foreground_intensity_properties_per_channel.get("0");
    let scheme = pkg.config.normalization_schemes.first().map(String::as_str).unwrap_or("");
    let use_mask = pkg.config.use_mask_for_norm.first().copied().unwrap_or(false);
    normalise(scheme, use_mask, &mut img, &mask, props)?;
    drop(mask);
    let target = [pkg.config.spacing[0], pkg.config.spacing[1], pkg.config.spacing[2]];
    let new_shape = working_shape(cshape, spacing, target)?;
    let data = if new_shape == cshape {
        img
    } else {
        resample_channel(&img, cshape, new_shape, spacing, target, &pkg.config.resampling_fn_data_kwargs)
    };
    Ok(Preprocessed {
        data,
        shape: new_shape,
        channels: 1,
        props: CaseProperties {
            shape_before_cropping: shape,
            bbox,
            shape_after_cropping: cshape,
            original_spacing: spacing,
        },
    })
}

#[cfg(test)]
#[allow(clippy::identity_op, clippy::erasing_op)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// A one-channel package (no files: the fields preprocessing reads).
    fn package(scheme: &str, mask: bool, spacing: [f64; 3], transpose: [usize; 3]) -> ModelPackage {
        let meta: super::super::model::ModelToml = toml::from_str(
            "name = \"t\"\nversion = \"1\"\nconfiguration = \"3d_fullres\"\nprofile = \"ct-radiomics\"\n\
             folds = [0]\n[[channels]]\nindex = 0\nname = \"CT\"\nmodality = \"CT\"\n[inference]\n\
             allowed_mirroring_axes = [0, 1, 2]\n[files]\n",
        )
        .expect("model.toml");
        let kw = serde_json::json!({"order": 3, "order_z": 0, "force_separate_z": null});
        let config: super::super::model::Configuration = serde_json::from_value(serde_json::json!({
            "patch_size": [8, 8, 8], "spacing": spacing, "normalization_schemes": [scheme],
            "use_mask_for_norm": [mask], "resampling_fn_data_kwargs": kw, "resampling_fn_probabilities_kwargs": kw,
        }))
        .expect("configuration");
        let inv = {
            let mut i = [0; 3];
            for (a, &p) in transpose.iter().enumerate() {
                i[p] = a;
            }
            i
        };
        let plans: super::super::model::Plans = serde_json::from_value(serde_json::json!({
            "transpose_forward": transpose, "transpose_backward": inv, "configurations": {},
            "foreground_intensity_properties_per_channel": {"0": {"mean": 40.0, "std": 300.0,
                "percentile_00_5": -900.0, "percentile_99_5": 1500.0, "min": -1000.0, "max": 3000.0, "median": 40.0}},
        }))
        .expect("plans");
        let dataset: super::super::model::Dataset = serde_json::from_value(
            serde_json::json!({"channel_names": {"0": "CT"}, "labels": {"background": 0, "a": 1}}),
        )
        .expect("dataset");
        ModelPackage { dir: PathBuf::new(), meta, plans, config, dataset, sha256: String::new(), radiomics: None }
    }

    /// Cropping and normalising the caller's buffer in place gives the same
    /// network input and properties as the copying path: with a crop on every
    /// axis, with the mask, with resampling, and (copying) with a transpose.
    #[test]
    fn in_place_preprocessing_equals_the_copying_one() {
        let shape = [9, 14, 11];
        let n = shape.iter().product::<usize>();
        let mut img = vec![0f32; n];
        for a in 1..8 {
            for b in 2..12 {
                for c in 1..9 {
                    let v = ((a * 131 + b * 17 + c * 7) % 97) as f32 * 23.0 - 1000.0;
                    img[(a * shape[1] + b) * shape[2] + c] = if (a + b + c) % 5 == 0 { 0.0 } else { v };
                }
            }
        }
        let sp = [2.0, 0.8, 0.8];
        for (scheme, mask, target, tf) in [
            ("CTNormalization", false, sp, [0, 1, 2]),
            ("ZScoreNormalization", true, sp, [0, 1, 2]),
            ("CTNormalization", false, [1.5, 1.1, 0.7], [0, 1, 2]),
            ("ZScoreNormalization", true, [1.5, 1.1, 0.7], [0, 1, 2]),
            ("CTNormalization", false, [1.5, 1.1, 0.7], [2, 1, 0]),
        ] {
            let pkg = package(scheme, mask, target, tf);
            let copied = preprocess(&pkg, &[&img], shape, sp).expect("copies");
            let owned = preprocess_owned(&pkg, vec![img.clone()], shape, sp).expect("in place");
            assert_eq!(owned.props, copied.props, "{scheme} {target:?}");
            assert_eq!(owned.shape, copied.shape);
            assert!(owned.props.shape_after_cropping != shape, "the case crops");
            let bits = |d: &[f32]| d.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&owned.data), bits(&copied.data), "{scheme} mask {mask} {target:?} {tf:?}");
        }
    }

    #[test]
    fn transpose_moves_axes() {
        let d: Vec<u32> = (0..24).collect();
        let (t, s) = transpose(&d, [2, 3, 4], [2, 0, 1]);
        assert_eq!(s, [4, 2, 3]);
        // out[c][a][b] = in[a][b][c]
        assert_eq!(t[(1 * 2 + 1) * 3 + 2], d[(1 * 3 + 2) * 4 + 1]);
    }

    #[test]
    fn holes_are_filled_border_background_is_not() {
        let shape = [3, 5, 5];
        let mut m = vec![false; 75];
        for a in 0..3 {
            for b in 1..4 {
                for c in 1..4 {
                    m[(a * 5 + b) * 5 + c] = true;
                }
            }
        }
        m[(1 * 5 + 2) * 5 + 2] = false; // enclosed in-plane but open along axis 0? no: a=1 is interior
        let f = fill_holes(&m, shape);
        assert!(f[(1 * 5 + 2) * 5 + 2]);
        assert!(!f[0]);
    }

    /// Filling the holes of the crop to the non-zero box equals cropping the
    /// filled volume (what nnU-Net does), on random shells with and without
    /// holes, open and closed, touching the volume's faces or not.
    #[test]
    fn filling_the_crop_equals_cropping_the_filled_volume() {
        let mut state = 0x1234_5678_9abc_def0u64;
        let mut rnd = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        for _ in 0..200 {
            let shape = [3 + rnd(6), 3 + rnd(7), 3 + rnd(8)];
            let n = shape[0] * shape[1] * shape[2];
            let mut m = vec![false; n];
            for _ in 0..1 + rnd(3) {
                let lo = [rnd(shape[0]), rnd(shape[1]), rnd(shape[2])];
                let hi = [0, 1, 2].map(|a| (lo[a] + 1 + rnd(shape[a])).min(shape[a]));
                for a in lo[0]..hi[0] {
                    for b in lo[1]..hi[1] {
                        for c in lo[2]..hi[2] {
                            let shell = [
                                a == lo[0] || a + 1 == hi[0],
                                b == lo[1] || b + 1 == hi[1],
                                c == lo[2] || c + 1 == hi[2],
                            ];
                            if shell.iter().any(|&x| x) && rnd(9) > 0 {
                                m[(a * shape[1] + b) * shape[2] + c] = true;
                            }
                        }
                    }
                }
            }
            let full = fill_holes(&m, shape);
            let mut bbox = [[usize::MAX, 0usize]; 3];
            for a in 0..shape[0] {
                for b in 0..shape[1] {
                    for c in 0..shape[2] {
                        if m[(a * shape[1] + b) * shape[2] + c] {
                            for (ax, v) in [a, b, c].into_iter().enumerate() {
                                bbox[ax][0] = bbox[ax][0].min(v);
                                bbox[ax][1] = bbox[ax][1].max(v + 1);
                            }
                        }
                    }
                }
            }
            if bbox[0][0] == usize::MAX {
                continue;
            }
            let cshape = [0, 1, 2].map(|a| bbox[a][1] - bbox[a][0]);
            let crop = |v: &[bool]| {
                let mut out = Vec::new();
                for a in bbox[0][0]..bbox[0][1] {
                    for b in bbox[1][0]..bbox[1][1] {
                        let row = (a * shape[1] + b) * shape[2];
                        out.extend_from_slice(&v[row + bbox[2][0]..row + bbox[2][1]]);
                    }
                }
                out
            };
            assert_eq!(fill_holes(&crop(&m), cshape), crop(&full), "shape {shape:?} box {bbox:?}");
        }
    }
}

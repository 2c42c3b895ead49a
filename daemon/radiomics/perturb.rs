//! Segmentation perturbations and ICC(1,1) (seed 001; Zwanenburg et al.
//! 2019, "Assessing robustness of radiomic features by image perturbation"):
//! every feature is extracted again on N perturbed masks, and each feature's
//! one-way random-effects, single-rater intra-class correlation over the
//! subjects (ROIs of one kind across lesions, or the cases of a batch) and
//! the k = N + 1 masks (the original and the perturbations, the raters) says
//! how far it survives a slightly different contour. docs/radiomics.md
//! "Reproducibility".

use serde::Serialize;
use serde_json::Value as Json;

use super::Output;

/// The extractions of a subject's perturbed masks, in plan order (an
/// extraction that failed as its reason).
pub type Perturbed = Vec<Result<Output, String>>;

/// One perturbation of a mask.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Perturbation {
    /// Dilation by one voxel (6-neighbourhood).
    Dilation,
    /// Erosion by one voxel (6-neighbourhood; voxels on the volume's border erode).
    Erosion,
    /// A shift by one voxel along each axis whose step is not 0.
    Translation {
        /// Voxels along i, j, k (each −1, 0 or 1, not all 0).
        voxels: [i64; 3],
    },
    /// A rotation in the axial plane about the mask's centre (mm), nearest neighbour.
    Rotation {
        /// Degrees, counter-clockwise from i towards j.
        degrees: f64,
    },
}

/// splitmix64: the seeded generator of the translations and rotations.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The seed of perturbation `i` (1-based).
pub fn seed(i: usize) -> u64 {
    0xED6E_5E6D_0000_0000 ^ i as u64
}

/// The N perturbations, the same for every run: 1 dilation, 2 erosion, then
/// translations (odd) and rotations (even) alternating, drawn from
/// splitmix64 seeded with [`seed`]`(i)`: a translation by one voxel along a
/// non-empty set of axes with random signs, a rotation by ±(5..=15)° (a whole
/// number of degrees).
pub fn plan(n: usize) -> Vec<Perturbation> {
    (1..=n)
        .map(|i| {
            let mut s = seed(i);
            match i {
                1 => Perturbation::Dilation,
                2 => Perturbation::Erosion,
                _ if i % 2 == 1 => {
                    let axes = 1 + splitmix64(&mut s) % 7; // 1..=7: which axes move
                    let mut voxels = [0i64; 3];
                    for (a, v) in voxels.iter_mut().enumerate() {
                        if axes & (1 << a) != 0 {
                            *v = if splitmix64(&mut s).is_multiple_of(2) { 1 } else { -1 };
                        }
                    }
                    Perturbation::Translation { voxels }
                }
                _ => {
                    let magnitude = 5 + splitmix64(&mut s) % 11;
                    let sign = if splitmix64(&mut s).is_multiple_of(2) { 1.0 } else { -1.0 };
                    Perturbation::Rotation { degrees: sign * magnitude as f64 }
                }
            }
        })
        .collect()
}

fn at(dims: [usize; 3], x: i64, y: i64, z: i64) -> Option<usize> {
    (x >= 0 && y >= 0 && z >= 0 && (x as usize) < dims[0] && (y as usize) < dims[1] && (z as usize) < dims[2])
        .then(|| x as usize + dims[0] * (y as usize + dims[1] * z as usize))
}

const FACES: [(i64, i64, i64); 6] = [(1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)];

/// The mask under one perturbation (on the same grid).
pub fn apply(p: Perturbation, mask: &[bool], dims: [usize; 3], spacing: [f64; 3]) -> Vec<bool> {
    let [nx, ny, nz] = dims;
    let idx = |v: usize| ((v % nx) as i64, ((v / nx) % ny) as i64, (v / (nx * ny)) as i64);
    match p {
        Perturbation::Dilation => (0..mask.len())
            .map(|v| {
                let (x, y, z) = idx(v);
                mask[v] || FACES.iter().any(|&(a, b, c)| at(dims, x + a, y + b, z + c).is_some_and(|u| mask[u]))
            })
            .collect(),
        Perturbation::Erosion => (0..mask.len())
            .map(|v| {
                let (x, y, z) = idx(v);
                mask[v] && FACES.iter().all(|&(a, b, c)| at(dims, x + a, y + b, z + c).is_some_and(|u| mask[u]))
            })
            .collect(),
        Perturbation::Translation { voxels: t } => (0..mask.len())
            .map(|v| {
                let (x, y, z) = idx(v);
                at(dims, x - t[0], y - t[1], z - t[2]).is_some_and(|u| mask[u])
            })
            .collect(),
        Perturbation::Rotation { degrees } => {
            // Centre of the mask in mm (i, j), the same for every slice.
            let (mut cx, mut cy, mut n) = (0.0, 0.0, 0usize);
            for v in (0..mask.len()).filter(|&v| mask[v]) {
                let (x, y, _) = idx(v);
                cx += x as f64 * spacing[0];
                cy += y as f64 * spacing[1];
                n += 1;
            }
            if n == 0 {
                return mask.to_vec();
            }
            let (cx, cy) = (cx / n as f64, cy / n as f64);
            let (s, c) = degrees.to_radians().sin_cos();
            let mut out = vec![false; mask.len()];
            for z in 0..nz {
                for y in 0..ny {
                    for x in 0..nx {
                        // Target (x, y) in mm, rotated back onto the source.
                        let (px, py) = (x as f64 * spacing[0] - cx, y as f64 * spacing[1] - cy);
                        let (qx, qy) = (c * px + s * py + cx, -s * px + c * py + cy);
                        let (sx, sy) = ((qx / spacing[0]).round() as i64, (qy / spacing[1]).round() as i64);
                        out[x + nx * (y + ny * z)] = at(dims, sx, sy, z as i64).is_some_and(|u| mask[u]);
                    }
                }
            }
            out
        }
    }
}

/// ICC(1,1) of a subjects × raters table: with n subjects, k raters,
/// subject means m_i and grand mean m,
/// MSB = k Σ_i (m_i − m)² / (n − 1), MSW = Σ_i Σ_j (y_ij − m_i)² / (n (k − 1)),
/// ICC(1,1) = (MSB − MSW) / (MSB + (k − 1) MSW).
/// Undefined (Err with the reason) for fewer than two subjects or raters, a
/// value that is not finite, or no variance: every value equal within 1e-12
/// relative (a feature constant but for rounding; 0/0 otherwise, or noise).
pub fn icc_1_1(y: &[Vec<f64>]) -> Result<f64, String> {
    let n = y.len();
    if n < 2 {
        return Err(format!("{n} subject(s): ICC(1,1) needs at least two"));
    }
    let k = y[0].len();
    if k < 2 || y.iter().any(|r| r.len() != k) {
        return Err("ICC(1,1) needs at least two ratings per subject".into());
    }
    if y.iter().flatten().any(|v| !v.is_finite()) {
        return Err("a value is not a finite number".into());
    }
    // Values that differ by rounding only (a feature constant in exact
    // arithmetic) have no variance to speak of: their ratio would be noise.
    let (lo, hi) = y.iter().flatten().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    if hi - lo <= 1e-12 * lo.abs().max(hi.abs()) {
        return Err("no variance: every value is the same (within 1e-12 relative)".into());
    }
    let means: Vec<f64> = y.iter().map(|r| r.iter().sum::<f64>() / k as f64).collect();
    let grand = means.iter().sum::<f64>() / n as f64;
    let msb = k as f64 * means.iter().map(|m| (m - grand).powi(2)).sum::<f64>() / (n - 1) as f64;
    let ssw: f64 = y.iter().zip(&means).map(|(r, m)| r.iter().map(|v| (v - m).powi(2)).sum::<f64>()).sum();
    let msw = ssw / (n * (k - 1)) as f64;
    let den = msb + (k - 1) as f64 * msw;
    if den == 0.0 {
        return Err("no variance: every value is the same".into());
    }
    Ok((msb - msw) / den)
}

/// One feature's ICC and verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeatureIcc {
    /// ICC(1,1), or null where undefined.
    pub icc: Option<f64>,
    /// ICC ≥ the threshold; null where the ICC is undefined.
    pub reproducible: Option<bool>,
    /// Why the ICC is undefined.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The numeric feature names of an extraction (diagnostics left out), in order.
pub fn feature_names(out: &Output) -> Vec<String> {
    out.iter().filter(|(k, v)| !k.starts_with("diagnostics_") && v.is_number()).map(|(k, _)| k.clone()).collect()
}

fn value(out: &Output, name: &str) -> f64 {
    out.iter().find(|(k, _)| k == name).and_then(|(_, v)| v.as_f64()).unwrap_or(f64::NAN)
}

/// Each feature's ICC(1,1) over `subjects`, each the k extractions of one
/// subject (the original first); names from the first subject's original.
/// With fewer than two subjects every ICC is null with `single` as the reason.
pub fn feature_iccs(subjects: &[Vec<Output>], threshold: f64) -> Vec<(String, FeatureIcc)> {
    let Some(first) = subjects.first().and_then(|s| s.first()) else {
        return Vec::new();
    };
    feature_names(first)
        .into_iter()
        .map(|name| {
            let table: Vec<Vec<f64>> = subjects.iter().map(|s| s.iter().map(|o| value(o, &name)).collect()).collect();
            let r = match icc_1_1(&table) {
                Ok(icc) => FeatureIcc { icc: Some(icc), reproducible: Some(icc >= threshold), reason: None },
                Err(reason) => FeatureIcc { icc: None, reproducible: None, reason: Some(reason) },
            };
            (name, r)
        })
        .collect()
}

/// The ICCs as a JSON object (feature → {icc, reproducible, reason}).
pub fn iccs_json(iccs: &[(String, FeatureIcc)]) -> Json {
    Json::Object(iccs.iter().map(|(k, v)| (k.clone(), serde_json::to_value(v).unwrap_or(Json::Null))).collect())
}

/// The two rows radiomics.csv and `--csv` append: the ICC (empty where
/// undefined) and the verdict (True / False, empty where undefined).
pub fn csv_rows(iccs: &[(String, FeatureIcc)]) -> (Output, Output) {
    let icc = iccs.iter().map(|(k, v)| (k.clone(), v.icc.map_or(Json::String(String::new()), super::json_num)));
    let rep = iccs.iter().map(|(k, v)| (k.clone(), v.reproducible.map_or(Json::String(String::new()), Json::Bool)));
    (icc.collect(), rep.collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icc_of_a_known_table() {
        // Shrout & Fleiss (1979), table 2: 6 targets, 4 judges; ICC(1,1) = 0.17.
        let y = vec![
            vec![9.0, 2.0, 5.0, 8.0],
            vec![6.0, 1.0, 3.0, 2.0],
            vec![8.0, 4.0, 6.0, 8.0],
            vec![7.0, 1.0, 2.0, 6.0],
            vec![10.0, 5.0, 6.0, 9.0],
            vec![6.0, 2.0, 4.0, 7.0],
        ];
        let icc = icc_1_1(&y).expect("defined");
        assert!((icc - 0.1657).abs() < 1e-4, "{icc}");
        assert!(icc_1_1(&y[..1]).is_err());
        assert!(icc_1_1(&[vec![1.0, 1.0], vec![1.0, 1.0]]).is_err());
        assert_eq!(icc_1_1(&[vec![1.0, 1.0], vec![2.0, 2.0]]), Ok(1.0));
    }

    #[test]
    fn the_plan_is_fixed_and_every_perturbation_changes_a_blob() {
        let p = plan(8);
        assert_eq!(p, plan(8));
        assert_eq!((p[0], p[1]), (Perturbation::Dilation, Perturbation::Erosion));
        assert!(matches!(p[2], Perturbation::Translation { .. }) && matches!(p[3], Perturbation::Rotation { .. }));
        let dims = [12, 12, 5];
        let mut m = vec![false; 720];
        for z in 1..4 {
            for y in 3..9 {
                for x in 2..8 {
                    m[x + 12 * (y + 12 * z)] = true;
                }
            }
        }
        let n = m.iter().filter(|v| **v).count();
        for q in &p {
            let out = apply(*q, &m, dims, [1.0, 1.0, 2.0]);
            if !matches!(q, Perturbation::Rotation { .. }) {
                assert_ne!(out, m, "{q:?}");
            }
            let c = out.iter().filter(|v| **v).count();
            match q {
                Perturbation::Dilation => assert!(c > n),
                Perturbation::Erosion => assert_eq!(c, 4 * 4),
                Perturbation::Translation { .. } => assert_eq!(c, n),
                Perturbation::Rotation { .. } => assert!(c > n / 2),
            }
        }
    }
}

//! Grey level co-occurrence matrix features as PyRadiomics' `glcm` class: one
//! matrix per angle (the 13 directions for each distance), empty grey levels
//! dropped, made symmetrical, optionally weighted into one matrix by angle
//! length, each normalised; features computed per angle and averaged.

use super::{Features, Roi, generate_angles, nanmean};
use crate::radiomics::params::{Settings, WeightingNorm};

/// GLCM features, with whether each is deprecated (deprecated GLCM features
/// are never computed, as PyRadiomics raises for them).
pub const FEATURES: &[(&str, bool)] = &[
    ("Autocorrelation", false),
    ("ClusterProminence", false),
    ("ClusterShade", false),
    ("ClusterTendency", false),
    ("Contrast", false),
    ("Correlation", false),
    ("DifferenceAverage", false),
    ("DifferenceEntropy", false),
    ("DifferenceVariance", false),
    ("Dissimilarity", true),
    ("Homogeneity1", true),
    ("Homogeneity2", true),
    ("Id", false),
    ("Idm", false),
    ("Idmn", false),
    ("Idn", false),
    ("Imc1", false),
    ("Imc2", false),
    ("InverseVariance", false),
    ("JointAverage", false),
    ("JointEnergy", false),
    ("JointEntropy", false),
    ("MCC", false),
    ("MaximumProbability", false),
    ("SumAverage", false),
    ("SumEntropy", false),
    ("SumSquares", false),
    ("SumVariance", true),
];

const EPS: f64 = f64::EPSILON;

/// Eigenvalues of a symmetric matrix by cyclic Jacobi rotations (the matrix
/// is overwritten).
pub fn jacobi_eigenvalues(a: &mut [Vec<f64>]) -> Vec<f64> {
    let n = a.len();
    for _sweep in 0..60 {
        let mut off = 0.0;
        for p in 0..n {
            for q in p + 1..n {
                off += a[p][q] * a[p][q];
            }
        }
        let scale: f64 = (0..n).map(|i| a[i][i] * a[i][i]).sum::<f64>() + off;
        if off <= 1e-26 * scale.max(1e-300) {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                if a[p][q] == 0.0 {
                    continue;
                }
                let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let akp = a[k][p];
                    let akq = a[k][q];
                    a[k][p] = c * akp - s * akq;
                    a[k][q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let apk = a[p][k];
                    let aqk = a[q][k];
                    a[p][k] = c * apk - s * aqk;
                    a[q][k] = s * apk + c * aqk;
                }
            }
        }
    }
    (0..n).map(|i| a[i][i]).collect()
}

/// Eigenvalues of a symmetric matrix: Householder reduction to tridiagonal
/// form, then implicit QL with Wilkinson shifts (O(n³) once; the matrix is
/// overwritten).
pub fn symmetric_eigenvalues(a: &mut [Vec<f64>]) -> Vec<f64> {
    let n = a.len();
    if n == 0 {
        return Vec::new();
    }
    let mut d = vec![0.0; n];
    let mut e = vec![0.0; n];
    for i in (1..n).rev() {
        let l = i - 1;
        let mut h = 0.0;
        if l > 0 {
            let scale: f64 = (0..=l).map(|k| a[i][k].abs()).sum();
            if scale == 0.0 {
                e[i] = a[i][l];
            } else {
                for k in 0..=l {
                    a[i][k] /= scale;
                    h += a[i][k] * a[i][k];
                }
                let f = a[i][l];
                let g = if f >= 0.0 { -h.sqrt() } else { h.sqrt() };
                e[i] = scale * g;
                h -= f * g;
                a[i][l] = f - g;
                let mut f = 0.0;
                for j in 0..=l {
                    let mut g = 0.0;
                    for k in 0..=j {
                        g += a[j][k] * a[i][k];
                    }
                    for k in j + 1..=l {
                        g += a[k][j] * a[i][k];
                    }
                    e[j] = g / h;
                    f += e[j] * a[i][j];
                }
                let hh = f / (h + h);
                for j in 0..=l {
                    let f = a[i][j];
                    let g = e[j] - hh * f;
                    e[j] = g;
                    for k in 0..=j {
                        a[j][k] -= f * e[k] + g * a[i][k];
                    }
                }
            }
        } else {
            e[i] = a[i][l];
        }
        d[i] = h;
    }
    for i in 0..n {
        d[i] = a[i][i];
    }
    for i in 1..n {
        e[i - 1] = e[i];
    }
    e[n - 1] = 0.0;
    for l in 0..n {
        let mut iter = 0;
        loop {
            let mut m = l;
            while m + 1 < n {
                let dd = d[m].abs() + d[m + 1].abs();
                if e[m].abs() <= f64::EPSILON * dd {
                    break;
                }
                m += 1;
            }
            if m == l || iter >= 60 {
                break;
            }
            iter += 1;
            let mut g = (d[l + 1] - d[l]) / (2.0 * e[l]);
            let mut r = g.hypot(1.0);
            g = d[m] - d[l] + e[l] / (g + if g >= 0.0 { r.abs() } else { -r.abs() });
            let (mut s, mut c, mut p) = (1.0, 1.0, 0.0);
            let mut early = false;
            let mut i = m;
            while i > l {
                i -= 1;
                let f = s * e[i];
                let b = c * e[i];
                r = f.hypot(g);
                e[i + 1] = r;
                if r == 0.0 {
                    d[i + 1] -= p;
                    e[m] = 0.0;
                    early = true;
                    break;
                }
                s = f / r;
                c = g / r;
                g = d[i + 1] - p;
                r = (d[i] - g) * s + 2.0 * c * b;
                p = s * r;
                d[i + 1] = g + p;
                g = c * r - b;
            }
            if early {
                continue;
            }
            d[l] -= p;
            e[l] = g;
            e[m] = 0.0;
        }
    }
    d
}

/// Builds the normalised matrices (one per non-empty angle, or one weighted).
fn matrices(roi: &Roi, s: &Settings) -> Vec<Vec<f64>> {
    let g = roi.grey_levels.len();
    let angles = generate_angles(roi.size_zyx(), &s.distances, false, roi.force2d(s));
    let mut p = vec![vec![0.0f64; g * g]; angles.len()];
    for (a, off) in angles.iter().enumerate() {
        let pa = &mut p[a];
        roi.for_each_pair(*off, |li, lj| pa[li * g + lj] += 1.0);
    }
    if s.symmetrical_glcm {
        for m in &mut p {
            for i in 0..g {
                for j in i + 1..g {
                    let t = m[i * g + j] + m[j * g + i];
                    m[i * g + j] = t;
                    m[j * g + i] = t;
                }
                m[i * g + i] *= 2.0;
            }
        }
    }
    if let Some(norm) = s.weighting_norm {
        let sp = roi.spacing_zyx();
        let mut sum = vec![0.0; g * g];
        for (a, off) in angles.iter().enumerate() {
            let d: Vec<f64> = (0..3).map(|k| off[k].abs() as f64 * sp[k]).collect();
            let w = match norm {
                WeightingNorm::Infinity => (-d.iter().fold(0.0f64, |m, v| m.max(*v)).powi(2)).exp(),
                WeightingNorm::Euclidean => (-d.iter().map(|v| v * v).sum::<f64>()).exp(),
                WeightingNorm::Manhattan => (-d.iter().sum::<f64>().powi(2)).exp(),
                WeightingNorm::NoWeighting => 1.0,
            };
            for (t, v) in sum.iter_mut().zip(&p[a]) {
                *t += v * w;
            }
        }
        p = vec![sum];
    }
    if p.len() > 1 {
        p.retain(|m| m.iter().sum::<f64>() != 0.0);
    }
    for m in &mut p {
        let t: f64 = m.iter().sum();
        let t = if t == 0.0 { f64::NAN } else { t };
        for v in m.iter_mut() {
            *v /= t;
        }
    }
    p
}

/// GLCM features of the ROI.
pub fn compute(roi: &Roi, s: &Settings, enabled: &[&str], out: &mut Features) {
    let g = roi.grey_levels.len();
    let ng = roi.ng as f64;
    let lv: Vec<f64> = roi.grey_levels.iter().map(|&l| l as f64).collect();
    let mats = matrices(roi, s);
    let mut per: std::collections::BTreeMap<&str, Vec<f64>> = std::collections::BTreeMap::new();
    for p in &mats {
        let at = |i: usize, j: usize| p[i * g + j];
        let px: Vec<f64> = (0..g).map(|i| (0..g).map(|j| at(i, j)).sum()).collect();
        let py: Vec<f64> = (0..g).map(|j| (0..g).map(|i| at(i, j)).sum()).collect();
        let ux: f64 = (0..g).map(|i| lv[i] * px[i]).sum();
        let uy: f64 = (0..g).map(|j| lv[j] * py[j]).sum();
        let nk = roi.ng as usize;
        let mut padd = vec![0.0; 2 * nk + 1];
        let mut psub = vec![0.0; nk.max(1)];
        let mut hxy = 0.0;
        let (mut ac, mut cp, mut cs, mut ct, mut con) = (0.0, 0.0, 0.0, 0.0, 0.0);
        let (mut sigx, mut sigy, mut corm, mut ene, mut maxp) = (0.0, 0.0, 0.0, 0.0, 0.0f64);
        let mut hxy1 = 0.0;
        for i in 0..g {
            for j in 0..g {
                let v = at(i, j);
                let (a, b) = (lv[i], lv[j]);
                padd[(roi.grey_levels[i] + roi.grey_levels[j]) as usize] += v;
                psub[(roi.grey_levels[i] as i64 - roi.grey_levels[j] as i64).unsigned_abs() as usize] += v;
                hxy -= v * (v + EPS).log2();
                hxy1 -= v * (px[i] * py[j] + EPS).log2();
                ac += v * a * b;
                let c = a + b - ux - uy;
                ct += v * c * c;
                cs += v * c * c * c;
                cp += v * c * c * c * c;
                con += v * (a - b) * (a - b);
                sigx += v * (a - ux) * (a - ux);
                sigy += v * (b - uy) * (b - uy);
                corm += v * (a - ux) * (b - uy);
                ene += v * v;
                maxp = maxp.max(v);
            }
        }
        let (sigx, sigy) = (sigx.sqrt(), sigy.sqrt());
        let diffavg: f64 = psub.iter().enumerate().map(|(k, v)| k as f64 * v).sum();
        let hx: f64 = -px.iter().map(|v| v * (v + EPS).log2()).sum::<f64>();
        let hy: f64 = -py.iter().map(|v| v * (v + EPS).log2()).sum::<f64>();
        let mut hxy2 = 0.0;
        for i in 0..g {
            for j in 0..g {
                let q = px[i] * py[j];
                hxy2 -= q * (q + EPS).log2();
            }
        }
        for &name in enabled {
            let v = match name {
                "Autocorrelation" => ac,
                "JointAverage" => ux,
                "ClusterProminence" => cp,
                "ClusterShade" => cs,
                "ClusterTendency" => ct,
                "Contrast" => con,
                "Correlation" => {
                    if sigx * sigy == 0.0 {
                        1.0
                    } else {
                        corm / (sigx * sigy + EPS)
                    }
                }
                "DifferenceAverage" => diffavg,
                "DifferenceEntropy" => -psub.iter().map(|v| v * (v + EPS).log2()).sum::<f64>(),
                "DifferenceVariance" => psub.iter().enumerate().map(|(k, v)| v * (k as f64 - diffavg).powi(2)).sum(),
                "JointEnergy" => ene,
                "JointEntropy" => hxy,
                "Imc1" => {
                    let div = hx.max(hy);
                    if div != 0.0 { (hxy - hxy1) / div } else { 0.0 }
                }
                "Imc2" => {
                    if hxy2 == hxy {
                        0.0
                    } else {
                        (1.0 - (-2.0 * (hxy2 - hxy)).exp()).sqrt()
                    }
                }
                "Idm" => psub.iter().enumerate().map(|(k, v)| v / (1.0 + (k * k) as f64)).sum(),
                "Idmn" => psub.iter().enumerate().map(|(k, v)| v / (1.0 + (k * k) as f64 / (ng * ng))).sum(),
                "Id" => psub.iter().enumerate().map(|(k, v)| v / (1.0 + k as f64)).sum(),
                "Idn" => psub.iter().enumerate().map(|(k, v)| v / (1.0 + k as f64 / ng)).sum(),
                "InverseVariance" => psub.iter().enumerate().skip(1).map(|(k, v)| v / (k * k) as f64).sum(),
                "MaximumProbability" => maxp,
                "SumAverage" => padd.iter().enumerate().map(|(k, v)| k as f64 * v).sum(),
                "SumEntropy" => -padd.iter().map(|v| v * (v + EPS).log2()).sum::<f64>(),
                "SumSquares" => (0..g).map(|i| px[i] * (lv[i] - ux).powi(2)).sum(),
                "MCC" => {
                    if g < 2 {
                        1.0
                    } else {
                        mcc(p, &px, &py, g)
                    }
                }
                _ => continue,
            };
            per.entry(name).or_default().push(v);
        }
    }
    for &name in enabled {
        if name == "MCC" && g < 2 {
            out.push(name.to_string(), 1.0);
            continue;
        }
        if let Some(v) = per.get(name) {
            out.push(name.to_string(), nanmean(v));
        } else if FEATURES.iter().any(|(f, dep)| *f == name && !dep) {
            out.push(name.to_string(), f64::NAN);
        }
    }
}

/// Maximal correlation coefficient: square root of the second largest
/// eigenvalue of Q = Dx⁻¹ P Dy⁻¹ Pᵀ, computed on its symmetric similar
/// matrix over the grey levels present in this angle.
fn mcc(p: &[f64], px: &[f64], py: &[f64], g: usize) -> f64 {
    let rows: Vec<usize> = (0..g).filter(|&i| px[i] > 0.0).collect();
    let n = rows.len();
    let mut s = vec![vec![0.0; n]; n];
    for (a, &i) in rows.iter().enumerate() {
        for (b, &k) in rows.iter().enumerate().skip(a) {
            let mut v = 0.0;
            for j in 0..g {
                if py[j] > 0.0 {
                    v += p[i * g + j] * p[k * g + j] / py[j];
                }
            }
            let v = v / (px[i] * px[k]).sqrt();
            s[a][b] = v;
            s[b][a] = v;
        }
    }
    let mut e = symmetric_eigenvalues(&mut s);
    e.extend(std::iter::repeat_n(0.0, g - n));
    e.sort_by(f64::total_cmp);
    e[g - 2].sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tridiagonal_ql_agrees_with_jacobi() {
        let n = 23;
        let mut m = vec![vec![0.0; n]; n];
        let mut seed = 12345u64;
        for i in 0..n {
            for j in 0..=i {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let v = (seed >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
                m[i][j] = v;
                m[j][i] = v;
            }
        }
        let mut a = symmetric_eigenvalues(&mut m.clone());
        let mut b = jacobi_eigenvalues(&mut m);
        a.sort_by(f64::total_cmp);
        b.sort_by(f64::total_cmp);
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-10, "{x} {y}");
        }
    }
}

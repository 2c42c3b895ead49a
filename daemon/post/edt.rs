//! Exact squared Euclidean distance transform (Felzenszwalb & Huttenlocher
//! 2012), separable over the three axes, in voxel units. Used for the S4C
//! "within 27 voxels of the largest component" rule.

use rayon::prelude::*;

/// "No seed" distance: far beyond any real squared distance (3·8192²) yet small
/// enough that differences of it stay exact in f64.
const FAR: f64 = 1e12;

/// 1D squared distance transform of `f` in place (lower envelope of parabolas).
fn dt1(f: &mut [f64], v: &mut [usize], z: &mut [f64], out: &mut [f64]) {
    let n = f.len();
    if n == 0 {
        return;
    }
    let mut k = 0usize;
    v[0] = 0;
    z[0] = f64::NEG_INFINITY;
    z[1] = f64::INFINITY;
    let inter = |q: usize, p: usize, f: &[f64]| {
        ((f[q] + (q * q) as f64) - (f[p] + (p * p) as f64)) / (2.0 * q as f64 - 2.0 * p as f64)
    };
    for q in 1..n {
        let mut s = inter(q, v[k], f);
        while s <= z[k] {
            k -= 1;
            s = inter(q, v[k], f);
        }
        k += 1;
        v[k] = q;
        z[k] = s;
        z[k + 1] = f64::INFINITY;
    }
    k = 0;
    for (q, o) in out.iter_mut().enumerate().take(n) {
        while z[k + 1] < q as f64 {
            k += 1;
        }
        let p = v[k];
        let d = q as f64 - p as f64;
        *o = d * d + f[p];
    }
    f.copy_from_slice(&out[..n]);
}

/// Squared distance (in voxels) from every voxel to the nearest voxel where
/// `seed` is true; 1e12 or more everywhere when there is no seed.
pub fn squared_distance(seed: &[bool], dims: [usize; 3]) -> Vec<f64> {
    let [nx, ny, nz] = dims;
    let mut d: Vec<f64> = seed.iter().map(|&s| if s { 0.0 } else { FAR }).collect();
    let plane = nx * ny;
    // Along x: rows are contiguous.
    d.par_chunks_mut(nx.max(1)).for_each(|row| {
        let n = row.len();
        let (mut v, mut z, mut out) = (vec![0usize; n], vec![0f64; n + 1], vec![0f64; n]);
        dt1(row, &mut v, &mut z, &mut out);
    });
    // Along y: per slice, gather columns.
    d.par_chunks_mut(plane.max(1)).for_each(|slice| {
        let (mut f, mut v, mut z, mut out) = (vec![0f64; ny], vec![0usize; ny], vec![0f64; ny + 1], vec![0f64; ny]);
        for x in 0..nx {
            for y in 0..ny {
                f[y] = slice[x + nx * y];
            }
            dt1(&mut f, &mut v, &mut z, &mut out);
            for y in 0..ny {
                slice[x + nx * y] = f[y];
            }
        }
    });
    // Along z: columns strided by a plane; split by rows of x.
    let cols: Vec<Vec<f64>> = (0..plane)
        .into_par_iter()
        .map(|c| {
            let (mut f, mut v, mut z, mut out) = (vec![0f64; nz], vec![0usize; nz], vec![0f64; nz + 1], vec![0f64; nz]);
            for k in 0..nz {
                f[k] = d[c + plane * k];
            }
            dt1(&mut f, &mut v, &mut z, &mut out);
            f
        })
        .collect();
    for (c, col) in cols.iter().enumerate() {
        for (k, v) in col.iter().enumerate() {
            d[c + plane * k] = *v;
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_brute_force() {
        let dims = [7, 5, 6];
        let n = 7 * 5 * 6;
        let seed: Vec<bool> = (0..n).map(|i| (i * 7919) % 37 == 0).collect();
        let d = squared_distance(&seed, dims);
        let pts: Vec<[i64; 3]> =
            (0..n).filter(|&i| seed[i]).map(|i| [(i % 7) as i64, ((i / 7) % 5) as i64, (i / 35) as i64]).collect();
        for i in 0..n {
            let p = [(i % 7) as i64, ((i / 7) % 5) as i64, (i / 35) as i64];
            let best =
                pts.iter().map(|q| (0..3).map(|a| (p[a] - q[a]) * (p[a] - q[a])).sum::<i64>()).min().expect("seeds");
            assert_eq!(d[i], best as f64, "voxel {i}");
        }
    }
}

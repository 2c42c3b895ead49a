//! CPU twins of the CUDA kernels: the oracle the GPU results are compared
//! with, bit for bit, and the path used on boxes without a GPU. Parallel with
//! rayon over slabs of slices.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use rayon::prelude::*;

use super::{ComponentStats, Connectivity, Labels, quantize};

/// Slabs per thread: enough to balance uneven foreground between threads.
const SLABS_PER_THREAD: usize = 4;

/// Memory the per-slab partial statistics may take together: with many
/// components (a noisy mask can give millions) fewer slabs are used, down
/// to one, instead of `count` partials per slab.
const STATS_PARTIAL_BUDGET: usize = 256 << 20;

fn slabs(nz: usize) -> Vec<(usize, usize)> {
    slabs_at_most(nz, usize::MAX)
}

/// Slabs of whole slices, at most `max` of them (at least one).
fn slabs_at_most(nz: usize, max: usize) -> Vec<(usize, usize)> {
    let want = (rayon::current_num_threads() * SLABS_PER_THREAD).min(max).clamp(1, nz.max(1));
    let per = nz.div_ceil(want).max(1);
    (0..nz).step_by(per).map(|z0| (z0, (z0 + per).min(nz))).collect()
}

/// A run: a maximal span `[x0, x1)` of one row holding the same non-zero value.
#[derive(Clone, Copy)]
struct Run {
    x0: u32,
    x1: u32,
    value: u8,
}

/// Union-find over run indices, one u32 per run (atomics with relaxed
/// ordering: plain loads and stores, shared between slab threads).
struct Forest<'a> {
    parent: &'a [AtomicU32],
}

impl Forest<'_> {
    #[inline]
    fn get(&self, i: u32) -> u32 {
        self.parent[i as usize].load(Relaxed)
    }

    /// Root of `i`, halving the path on the way.
    #[inline]
    fn find(&self, mut i: u32) -> u32 {
        loop {
            let p = self.get(i);
            if p == i {
                return i;
            }
            let gp = self.get(p);
            if gp == p {
                return p;
            }
            self.parent[i as usize].store(gp, Relaxed);
            i = gp;
        }
    }

    /// Joins two trees, hanging the larger root under the smaller: since runs
    /// are numbered in raster order, every root is its component's first run.
    #[inline]
    fn union(&self, a: u32, b: u32) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra < rb {
            self.parent[rb as usize].store(ra, Relaxed);
        } else if rb < ra {
            self.parent[ra as usize].store(rb, Relaxed);
        }
    }
}

/// The rows a forward scan has already seen that can touch the current row:
/// (dy, dz, reach), where reach 1 lets runs touch diagonally along x.
fn neighbour_rows(conn: Connectivity) -> Vec<(i64, i64, u32)> {
    let mut rows: Vec<(i64, i64, u32)> = Vec::new();
    for [dx, dy, dz] in conn.backward_offsets() {
        if dy == 0 && dz == 0 {
            continue; // same row: runs are maximal already
        }
        let reach = u32::from(dx != 0);
        match rows.iter_mut().find(|r| r.0 == dy && r.1 == dz) {
            Some(r) => r.2 = r.2.max(reach),
            None => rows.push((dy, dz, reach)),
        }
    }
    rows
}

/// Connected components; see the contract in `gpu/mod.rs`. Run-based
/// union-find: rows are cut into runs of equal value, runs are joined with the
/// runs they touch in the rows already seen, and each component is numbered by
/// its first run (hence its first voxel) in raster order.
pub fn label(mask: &[u8], dims: [usize; 3], conn: Connectivity) -> Labels {
    let [nx, ny, nz] = dims;
    let rows_total = ny * nz;
    if mask.is_empty() {
        return Labels { data: Vec::new(), count: 0 };
    }
    let slabs = slabs(nz);
    // 1. Runs per slab, with each row's run count.
    let per_slab: Vec<(Vec<Run>, Vec<u32>)> = slabs
        .par_iter()
        .map(|&(z0, z1)| {
            let mut runs = Vec::new();
            let mut counts = Vec::with_capacity((z1 - z0) * ny);
            for row in z0 * ny..z1 * ny {
                let line = &mask[row * nx..(row + 1) * nx];
                let before = runs.len();
                let mut x = 0;
                while x < nx {
                    let v = line[x];
                    if v == 0 {
                        x += 1;
                        continue;
                    }
                    let start = x;
                    while x < nx && line[x] == v {
                        x += 1;
                    }
                    runs.push(Run { x0: start as u32, x1: x as u32, value: v });
                }
                counts.push((runs.len() - before) as u32);
            }
            (runs, counts)
        })
        .collect();
    let mut row_start = Vec::with_capacity(rows_total + 1);
    row_start.push(0u32);
    let mut runs = Vec::new();
    for (r, counts) in per_slab {
        for c in counts {
            let last = row_start.last().copied().unwrap_or(0);
            row_start.push(last + c);
        }
        runs.extend(r);
    }
    let parent: Vec<AtomicU32> = (0..runs.len() as u32).map(AtomicU32::new).collect();
    let f = Forest { parent: &parent };
    let neighbours = neighbour_rows(conn);

    // Joins the runs of `row` with those of the rows it touches, leaving out
    // rows below slice `z_floor`.
    let join_row = |row: usize, z_floor: usize, only_below: bool| {
        let (y, z) = ((row % ny) as i64, (row / ny) as i64);
        let cur = row_start[row] as usize..row_start[row + 1] as usize;
        if cur.is_empty() {
            return;
        }
        for &(dy, dz, reach) in &neighbours {
            if only_below && dz == 0 {
                continue;
            }
            let (ny2, nz2) = (y + dy, z + dz);
            if ny2 < 0 || ny2 >= ny as i64 || nz2 < z_floor as i64 {
                continue;
            }
            let nrow = (nz2 as usize) * ny + ny2 as usize;
            let (ns, ne) = (row_start[nrow] as usize, row_start[nrow + 1] as usize);
            let mut j = ns;
            for a in cur.clone() {
                let ra = runs[a];
                // Skip neighbour runs that end before this one can reach.
                while j < ne && runs[j].x1 + reach <= ra.x0 {
                    j += 1;
                }
                let mut k = j;
                while k < ne && runs[k].x0 < ra.x1 + reach {
                    if runs[k].value == ra.value {
                        f.union(a as u32, k as u32);
                    }
                    k += 1;
                }
            }
        }
    };
    // 2. Each slab on its own (no tree crosses a slab border yet).
    slabs.par_iter().for_each(|&(z0, z1)| {
        for row in z0 * ny..z1 * ny {
            join_row(row, z0, false);
        }
    });
    // 3. Stitch each slab's first slice to the slice below.
    for &(z0, _) in slabs.iter().skip(1) {
        for row in z0 * ny..(z0 + 1) * ny {
            join_row(row, 0, true);
        }
    }
    // 4. Roots are each component's first run; number them in order.
    let roots: Vec<u32> = (0..runs.len() as u32).into_par_iter().map(|r| f.find(r)).collect();
    let mut label_of_run = vec![0u32; runs.len()];
    let mut count = 0u32;
    for (r, &root) in roots.iter().enumerate() {
        label_of_run[r] = if root == r as u32 {
            count += 1;
            count
        } else {
            label_of_run[root as usize]
        };
    }
    // 5. Paint the runs.
    let mut data = vec![0u32; mask.len()];
    crate::sys::advise_huge_pages(&mut data);
    data.par_chunks_mut(nx.max(1)).enumerate().for_each(|(row, line)| {
        for r in row_start[row] as usize..row_start[row + 1] as usize {
            let run = runs[r];
            line[run.x0 as usize..run.x1 as usize].fill(label_of_run[r]);
        }
    });
    Labels { data, count }
}

/// Per-component partial sums of one slab.
#[derive(Clone, Copy)]
struct Partial {
    voxels: u64,
    min: [u32; 3],
    max_c: [u32; 3],
    sum: i128,
    sum_sq: u128,
    max: f32,
    max_index: u64,
}

impl Partial {
    const EMPTY: Self = Self {
        voxels: 0,
        min: [u32::MAX; 3],
        max_c: [0; 3],
        sum: 0,
        sum_sq: 0,
        max: f32::NEG_INFINITY,
        max_index: u64::MAX,
    };

    fn merge(&mut self, o: &Partial) {
        self.voxels += o.voxels;
        for a in 0..3 {
            self.min[a] = self.min[a].min(o.min[a]);
            self.max_c[a] = self.max_c[a].max(o.max_c[a]);
        }
        // Modulo 2^128, as the GPU's 64-bit atomics with carry.
        self.sum = self.sum.wrapping_add(o.sum);
        self.sum_sq = self.sum_sq.wrapping_add(o.sum_sq);
        self.take_max(o.max, o.max_index);
    }

    /// Larger value by IEEE total order (−0 < +0, as the GPU's ordered-integer
    /// atomicMax); equal bits keep the smaller index.
    #[inline]
    fn take_max(&mut self, v: f32, index: u64) {
        if v.is_nan() || index == u64::MAX {
            return;
        }
        match v.total_cmp(&self.max) {
            std::cmp::Ordering::Greater => {
                self.max = v;
                self.max_index = index;
            }
            std::cmp::Ordering::Equal if index < self.max_index => self.max_index = index,
            _ => {}
        }
    }
}

/// How many slabs `stats` cuts a volume of `count` components into: as many
/// as `slabs` would, as long as their partials fit [`STATS_PARTIAL_BUDGET`].
fn stats_slab_limit(count: usize) -> usize {
    (STATS_PARTIAL_BUDGET / (count.max(1) * std::mem::size_of::<Partial>())).max(1)
}

/// Per-component statistics; see the contract in `gpu/mod.rs`. Labels above
/// `labels.count` are ignored, as the kernel does (`Backend::stats` refuses
/// them before either runs).
pub fn stats(labels: &Labels, values: &[f32], dims: [usize; 3]) -> Vec<ComponentStats> {
    let [nx, ny, nz] = dims;
    let plane = nx * ny;
    let count = labels.count as usize;
    let partials: Vec<Vec<Partial>> = slabs_at_most(nz, stats_slab_limit(count))
        .par_iter()
        .map(|&(z0, z1)| {
            let mut acc = vec![Partial::EMPTY; count];
            for z in z0..z1 {
                for y in 0..ny {
                    let row = z * plane + y * nx;
                    for x in 0..nx {
                        let i = row + x;
                        let l = labels.data[i];
                        if l == 0 || l > labels.count {
                            continue;
                        }
                        let p = &mut acc[(l - 1) as usize];
                        let c = [x as u32, y as u32, z as u32];
                        p.voxels += 1;
                        for a in 0..3 {
                            p.min[a] = p.min[a].min(c[a]);
                            p.max_c[a] = p.max_c[a].max(c[a]);
                        }
                        let v = values[i];
                        let q = quantize(v);
                        p.sum = p.sum.wrapping_add(i128::from(q));
                        p.sum_sq = p.sum_sq.wrapping_add(u128::from(q.unsigned_abs()) * u128::from(q.unsigned_abs()));
                        p.take_max(v, i as u64);
                    }
                }
            }
            acc
        })
        .collect();
    let mut total = vec![Partial::EMPTY; count];
    for part in &partials {
        for (t, p) in total.iter_mut().zip(part) {
            if p.voxels > 0 {
                t.merge(p);
            }
        }
    }
    total
        .into_iter()
        .map(|p| ComponentStats {
            voxels: p.voxels,
            bbox_min: p.min,
            bbox_max: p.max_c,
            sum_fixed: p.sum,
            sum_sq_fixed: p.sum_sq,
            max: p.max,
            max_index: p.max_index,
        })
        .collect()
}

/// The bits every NaN SUV is written with: the NaN NVIDIA's `fmaf` returns.
/// `f32::mul_add` on x86 and aarch64 passes an input NaN through (e.g.
/// `0x7fc00000`), so both sides canonicalise to compare bit for bit.
pub const CANONICAL_NAN_BITS: u32 = 0x7fff_ffff;

/// `x`, or the canonical NaN where `x` is a NaN.
#[inline]
pub fn canonical_nan(x: f32) -> f32 {
    if x.is_nan() { f32::from_bits(CANONICAL_NAN_BITS) } else { x }
}

/// Raw PET to SUV fused with a threshold; see the contract in `gpu/mod.rs`.
pub fn suv_threshold(
    stored: &[i16],
    dims: [usize; 3],
    slice_scale: &[(f32, f32)],
    threshold: f32,
) -> (Vec<f32>, Vec<u8>) {
    let plane = (dims[0] * dims[1]).max(1);
    let mut suv = vec![0f32; stored.len()];
    let mut mask = vec![0u8; stored.len()];
    suv.par_chunks_mut(plane).zip(mask.par_chunks_mut(plane)).enumerate().for_each(|(k, (s, m))| {
        let (a, b) = slice_scale[k];
        for ((o, mo), &v) in s.iter_mut().zip(m.iter_mut()).zip(&stored[k * plane..]) {
            let x = canonical_nan(f32::from(v).mul_add(a, b));
            *o = x;
            *mo = u8::from(x >= threshold);
        }
    });
    (suv, mask)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Flood fill in raster order: the obviously-correct reference numbering.
    fn reference(mask: &[u8], dims: [usize; 3], conn: Connectivity) -> Labels {
        let [nx, ny, nz] = dims;
        let mut out = vec![0u32; mask.len()];
        let mut count = 0;
        let mut all = conn.backward_offsets();
        all.extend(conn.backward_offsets().iter().map(|[a, b, c]| [-a, -b, -c]));
        for start in 0..mask.len() {
            if mask[start] == 0 || out[start] != 0 {
                continue;
            }
            count += 1;
            out[start] = count;
            let mut stack = vec![start];
            while let Some(i) = stack.pop() {
                let (x, y, z) = ((i % nx) as i64, ((i / nx) % ny) as i64, (i / (nx * ny)) as i64);
                for [dx, dy, dz] in &all {
                    let (a, b, c) = (x + dx, y + dy, z + dz);
                    if a < 0 || b < 0 || c < 0 || a >= nx as i64 || b >= ny as i64 || c >= nz as i64 {
                        continue;
                    }
                    let j = (a + nx as i64 * (b + ny as i64 * c)) as usize;
                    if out[j] == 0 && mask[j] == mask[i] {
                        out[j] = count;
                        stack.push(j);
                    }
                }
            }
        }
        Labels { data: out, count }
    }

    fn volume() -> impl Strategy<Value = ([usize; 3], Vec<u8>)> {
        (1usize..12, 1usize..12, 1usize..12, 0u8..4, 0u32..100).prop_flat_map(|(nx, ny, nz, classes, density)| {
            let n = nx * ny * nz;
            (
                Just([nx, ny, nz]),
                proptest::collection::vec((0u32..100, 1u8..=classes.max(1)), n)
                    .prop_map(move |v| v.into_iter().map(|(r, c)| if r < density { c } else { 0 }).collect()),
            )
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn labels_equal_flood_fill(((dims, mask), conn) in (volume(), prop_oneof![Just(6u32), Just(18), Just(26)])) {
            let conn = Connectivity::from_number(conn).expect("valid");
            prop_assert_eq!(label(&mask, dims, conn), reference(&mask, dims, conn));
        }
    }

    #[test]
    fn structured_cases() {
        for conn in [Connectivity::Six, Connectivity::Eighteen, Connectivity::TwentySix] {
            for dims in [[1, 1, 1], [7, 13, 5], [33, 17, 9]] {
                let n = dims[0] * dims[1] * dims[2];
                // Empty and full.
                assert_eq!(label(&vec![0; n], dims, conn).count, 0);
                let full = label(&vec![1; n], dims, conn);
                assert_eq!(full.count, 1);
                assert!(full.data.iter().all(|&l| l == 1));
                // A single voxel at every corner and face centre.
                for (i, j, k) in [
                    (0, 0, 0),
                    (dims[0] - 1, dims[1] - 1, dims[2] - 1),
                    (dims[0] / 2, 0, dims[2] / 2),
                    (0, dims[1] / 2, dims[2] - 1),
                ] {
                    let mut m = vec![0u8; n];
                    m[i + dims[0] * (j + dims[1] * k)] = 1;
                    let l = label(&m, dims, conn);
                    assert_eq!(l.count, 1);
                    assert_eq!(l, reference(&m, dims, conn));
                }
            }
        }
    }

    #[test]
    fn diagonal_neighbours_depend_on_connectivity() {
        // Two voxels touching by an edge, two by a corner.
        let dims = [3, 3, 3];
        let mut edge = vec![0u8; 27];
        edge[0] = 1;
        edge[1 + 3] = 1; // (1,1,0): edge neighbour of (0,0,0)
        let mut corner = vec![0u8; 27];
        corner[0] = 1;
        corner[1 + 3 + 9] = 1; // (1,1,1)
        assert_eq!(label(&edge, dims, Connectivity::Six).count, 2);
        assert_eq!(label(&edge, dims, Connectivity::Eighteen).count, 1);
        assert_eq!(label(&corner, dims, Connectivity::Eighteen).count, 2);
        assert_eq!(label(&corner, dims, Connectivity::TwentySix).count, 1);
    }

    #[test]
    fn big_volume_crosses_slab_borders() {
        // A helix through many slabs, plus noise, against the reference.
        let dims = [40, 40, 64];
        let mut m = vec![0u8; 40 * 40 * 64];
        let mut s = 12345u64;
        for (i, v) in m.iter_mut().enumerate() {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            if s % 10 < 3 {
                *v = 1 + (i % 2) as u8;
            }
        }
        for z in 0..64 {
            let a = z as f64 / 5.0;
            let (x, y) = ((20.0 + 12.0 * a.cos()) as usize, (20.0 + 12.0 * a.sin()) as usize);
            m[x + 40 * (y + 40 * z)] = 3;
        }
        for conn in [Connectivity::Six, Connectivity::Eighteen, Connectivity::TwentySix] {
            assert_eq!(label(&m, dims, conn), reference(&m, dims, conn));
        }
    }

    #[test]
    fn stats_match_a_direct_computation() {
        let dims = [9, 7, 11];
        let n = 9 * 7 * 11;
        let mask: Vec<u8> = (0..n).map(|i| u8::from((i * 7919) % 13 < 5)).collect();
        let values: Vec<f32> = (0..n).map(|i| ((i * 31) % 97) as f32 * 0.37 - 5.0).collect();
        let l = label(&mask, dims, Connectivity::Six);
        let s = stats(&l, &values, dims);
        assert_eq!(s.len(), l.count as usize);
        for (c, st) in s.iter().enumerate() {
            let idx: Vec<usize> = (0..n).filter(|&i| l.data[i] == c as u32 + 1).collect();
            assert_eq!(st.voxels, idx.len() as u64);
            let sum: i128 = idx.iter().map(|&i| i128::from(quantize(values[i]))).sum();
            assert_eq!(st.sum_fixed, sum);
            let mean: f64 = idx.iter().map(|&i| f64::from(values[i])).sum::<f64>() / idx.len() as f64;
            assert!((st.mean() - mean).abs() < 1e-5);
            let max = idx.iter().map(|&i| values[i]).fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(st.max, max);
            let first = idx.iter().copied().find(|&i| values[i] == max).expect("max present");
            assert_eq!(st.max_index, first as u64);
            let xs: Vec<u32> = idx.iter().map(|&i| (i % 9) as u32).collect();
            assert_eq!(st.bbox_min[0], *xs.iter().min().expect("x"));
            assert_eq!(st.bbox_max[0], *xs.iter().max().expect("x"));
        }
    }

    #[test]
    fn stats_ignore_labels_above_count() {
        let dims = [4, 1, 1];
        let values = [1.0f32, 2.0, 3.0, 4.0];
        let s = stats(&Labels { data: vec![1, 7, 1, 2], count: 2 }, &values, dims);
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].voxels, s[0].max, s[0].max_index), (2, 3.0, 2));
        assert_eq!((s[1].voxels, s[1].max_index), (1, 3));
    }

    #[test]
    fn stats_partials_stay_within_the_budget() {
        let size = std::mem::size_of::<Partial>();
        assert!(stats_slab_limit(1) * size <= STATS_PARTIAL_BUDGET.max(size));
        assert_eq!(stats_slab_limit(usize::MAX / 4096), 1);
        for count in [1usize, 1000, 1_000_000, 10_000_000] {
            let limit = stats_slab_limit(count);
            assert!(limit == 1 || limit * count * size <= STATS_PARTIAL_BUDGET, "{count}");
            assert!(slabs_at_most(400, limit).len() <= limit);
        }
        // A million one-voxel components: the same result as a direct count.
        let dims = [1000, 1000, 2];
        let n = dims.iter().product::<usize>();
        let data: Vec<u32> = (0..n as u32).map(|i| if i % 2 == 0 { i / 2 + 1 } else { 0 }).collect();
        let labels = Labels { data, count: (n / 2) as u32 };
        let values = vec![1.5f32; n];
        let s = stats(&labels, &values, dims);
        assert_eq!(s.len(), n / 2);
        assert!(s.iter().enumerate().all(|(c, st)| st.voxels == 1 && st.max_index == 2 * c as u64));
    }

    #[test]
    fn suv_nan_is_canonical() {
        let dims = [3, 1, 1];
        let (suv, mask) = suv_threshold(&[1, 0, -1], dims, &[(f32::NAN, 0.0)], 0.0);
        assert!(suv.iter().all(|v| v.to_bits() == CANONICAL_NAN_BITS), "{suv:?}");
        assert_eq!(mask, vec![0, 0, 0]);
        let nan_payload = f32::from_bits(0x7fc0_0001);
        let (suv, _) = suv_threshold(&[2], [1, 1, 1], &[(1.0, nan_payload)], 0.0);
        assert_eq!(suv[0].to_bits(), CANONICAL_NAN_BITS);
        let (suv, _) = suv_threshold(&[2], [1, 1, 1], &[(f32::INFINITY, f32::NEG_INFINITY)], 0.0);
        assert_eq!(suv[0].to_bits(), CANONICAL_NAN_BITS);
    }

    #[test]
    fn suv_threshold_is_fma_per_slice() {
        let dims = [2, 1, 2];
        let stored = [100i16, -5, 200, 0];
        let (suv, mask) = suv_threshold(&stored, dims, &[(0.01, 0.0), (0.02, 1.0)], 1.0);
        assert_eq!(suv, vec![100f32.mul_add(0.01, 0.0), -5f32 * 0.01, 200f32.mul_add(0.02, 1.0), 1.0]);
        assert_eq!(mask, vec![1, 0, 1, 1]);
    }
}

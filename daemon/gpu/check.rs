//! `edgeseg gpu-check`: the CUDA kernels against their CPU twins (the oracle),
//! bit for bit, on volumes generated afresh from a seed. The benchmark that
//! times them is not here: `bench/gpu_bench.rs` (built as the `gpu-bench`
//! example with `--features cuda`) and `bench/gpu-check.sh`, which runs both.
//!
//! Correctness cases (each for connectivity 6, 18 and 26 where it labels):
//! empty and full volumes, random noise at several densities (binary and
//! multi-label), random spheres (binary and multi-label), all 27
//! face/edge/corner/centre positions at once and each alone, on sizes that
//! are not multiples of any block size (1×1×1, 7×13×5, 33×65×17, 128×128×64).
//! Every labelling is followed by statistics over it with values that hold
//! NaN, ±0, ±∞ and values beyond the fixed-point clamp; every size gets SUV
//! cases with extreme stored values, a NaN slice and a zero slope. Then the
//! 512×512×400 benchmark volume (organs, lesions and speckle) labelled
//! `repeat` times on the GPU, each labelling compared with the twin's (races
//! show as differences between runs), and with `large` the labellings that
//! exercise the grid-y stride and indices above 2^31.
//!
//! The generator is a splitmix64 stream, so a seed names the volumes; the
//! benchmark volume can be written out (`write_bench_volume`) for other tools.

use std::path::Path;

use serde::Serialize;

use super::{Backend, ComponentStats, Connectivity, GpuError, Labels};

/// Sizes of the correctness cases.
pub const CHECK_SIZES: [[usize; 3]; 4] = [[1, 1, 1], [7, 13, 5], [33, 65, 17], [128, 128, 64]];
/// Size of the benchmark volume.
pub const BENCH_DIMS: [usize; 3] = [512, 512, 400];
/// The large labelling cases of `--large`: 512×1024×1100 needs more than
/// 65 535 block rows (the labelling kernels' grid-y stride loop runs), and
/// 2048×1024×1040 has more than 2^31 voxels (2.18 G; u32 indices above i32).
pub const LARGE_DIMS: [(&str, [usize; 3]); 2] =
    [("grid-y stride", [512, 1024, 1100]), ("above 2^31 voxels", [2048, 1024, 1040])];

/// What `run_with` does.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Seed of every generated volume.
    pub seed: u64,
    /// Sizes of the correctness cases.
    pub sizes: Vec<[usize; 3]>,
    /// Also the [`LARGE_DIMS`] labelling cases (26-connectivity; about
    /// 30 GB of host and 12 GB of device memory).
    pub large: bool,
    /// GPU labellings of the benchmark volume, each compared with the CPU
    /// twin's (0: none).
    pub repeat: usize,
}

impl CheckOptions {
    /// The full check: all sizes and one labelling of the benchmark volume.
    pub fn full(seed: u64) -> Self {
        Self { seed, sizes: CHECK_SIZES.to_vec(), large: false, repeat: 1 }
    }
}

/// One compared case.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    /// "label", "stats" or "suv".
    pub kernel: &'static str,
    /// The generated volume, e.g. "noise 30%".
    pub case: String,
    /// Volume size.
    pub dims: [usize; 3],
    /// Connectivity of the labelling (label and stats cases).
    pub connectivity: Option<u32>,
    /// Both backends agree bit for bit.
    pub pass: bool,
    /// The first difference, or a summary of the case.
    pub detail: String,
}

/// Result of `edgeseg gpu-check`.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// Seed of the generated volumes.
    pub seed: u64,
    /// GPU name, compute capability and driver.
    pub device: String,
    /// How each kernel file was loaded (embedded PTX or NVRTC).
    pub kernels: Vec<String>,
    /// Cases passed.
    pub passed: usize,
    /// Cases failed.
    pub failed: usize,
    /// Every case.
    pub cases: Vec<CaseResult>,
}

impl CheckReport {
    /// True when every case passed.
    pub fn all_passed(&self) -> bool {
        self.failed == 0
    }

    /// A Markdown summary: device, kernels and failures (if any).
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!("## edgeseg gpu-check (seed {})\n\n", self.seed));
        s.push_str(&format!("Device: {}\n\n", self.device));
        for k in &self.kernels {
            s.push_str(&format!("- {k}\n"));
        }
        s.push_str(&format!(
            "\nCorrectness against the CPU twins: {} of {} cases bit-identical{}\n\n",
            self.passed,
            self.passed + self.failed,
            if self.failed == 0 { "." } else { "; FAILURES below." }
        ));
        if self.failed > 0 {
            s.push_str("| kernel | case | dims | conn | difference |\n|---|---|---|---|---|\n");
            for c in self.cases.iter().filter(|c| !c.pass).take(100) {
                s.push_str(&format!(
                    "| {} | {} | {} | {} | {} |\n",
                    c.kernel,
                    c.case,
                    fmt_dims(c.dims),
                    c.connectivity.map_or("-".to_string(), |n| n.to_string()),
                    c.detail.replace('|', "/")
                ));
            }
            s.push('\n');
        }
        s
    }
}

/// `512×512×400`.
pub fn fmt_dims(d: [usize; 3]) -> String {
    format!("{}×{}×{}", d[0], d[1], d[2])
}

/// The full check on the GPU (see the module docs).
pub fn run(seed: u64) -> Result<CheckReport, GpuError> {
    run_with(&CheckOptions::full(seed))
}

/// The check with chosen sizes, repetitions and large cases.
pub fn run_with(opts: &CheckOptions) -> Result<CheckReport, GpuError> {
    let gpu = Backend::cuda()?;
    let cpu = Backend::Cpu;
    let mut cases = compare(opts.seed, &cpu, &gpu, &opts.sizes);
    if opts.repeat > 0 {
        cases.extend(compare_repeated(opts.seed, &cpu, &gpu, BENCH_DIMS, opts.repeat));
    }
    if opts.large {
        for (name, dims) in LARGE_DIMS {
            cases.push(compare_large(opts.seed, &cpu, &gpu, name, dims));
        }
    }
    let (device, kernels) = describe(&gpu);
    let passed = cases.iter().filter(|c| c.pass).count();
    Ok(CheckReport { seed: opts.seed, device, kernels, passed, failed: cases.len() - passed, cases })
}

/// The device (name, compute capability, driver) and how each kernel file
/// was loaded (embedded PTX or NVRTC).
pub fn describe(gpu: &Backend) -> (String, Vec<String>) {
    match gpu {
        #[cfg(feature = "cuda")]
        Backend::Cuda(k) => {
            let (major, minor) = k.compute_capability();
            let (dmaj, dmin) = k.driver_version();
            (format!("{} (sm_{major}{minor}, driver CUDA {dmaj}.{dmin})", k.device_name()), k.kernel_origins().to_vec())
        }
        Backend::Cpu => ("the CPU twins".into(), Vec::new()),
    }
}

/// The benchmark volume (26-connectivity) labelled once by `a` and `repeat`
/// times by `b`: one case for the first labelling, and with `repeat > 1` one
/// for whether every later one equals `a`'s too.
pub fn compare_repeated(seed: u64, a: &Backend, b: &Backend, dims: [usize; 3], repeat: usize) -> Vec<CaseResult> {
    let mask = bench_volume(seed, dims);
    let conn = Connectivity::TwentySix;
    let case = |case: String, pass: bool, detail: String| CaseResult {
        kernel: "label",
        case,
        dims,
        connectivity: Some(26),
        pass,
        detail,
    };
    let (pass, detail, first) = label_both(a, b, &mask, dims, conn);
    let mut out = vec![case("benchmark volume".into(), pass, detail)];
    let Some(first) = first.filter(|_| repeat > 1) else { return out };
    let mut differ = Vec::new();
    for run in 2..=repeat {
        match b.label(&mask, dims, conn) {
            Ok(l) => differ.extend(diff_labels(&first, &l).map(|d| format!("run {run}: {d}"))),
            Err(e) => differ.push(format!("run {run}: {}: {e}", b.name())),
        }
    }
    let (pass, detail) = if differ.is_empty() {
        (true, format!("{repeat} labellings by {}, every one equal to {}'s", b.name(), a.name()))
    } else {
        (false, format!("{} of {repeat} differ: {}", differ.len(), differ.join("; ")))
    };
    out.push(case(format!("benchmark volume, {repeat} repeated labellings"), pass, detail));
    out
}

/// One large labelling case (26-connectivity) on the benchmark generator.
pub fn compare_large(seed: u64, a: &Backend, b: &Backend, name: &str, dims: [usize; 3]) -> CaseResult {
    let mask = bench_volume(seed, dims);
    let conn = Connectivity::TwentySix;
    let (pass, detail, _) = label_both(a, b, &mask, dims, conn);
    CaseResult { kernel: "label", case: name.to_string(), dims, connectivity: Some(26), pass, detail }
}

/// Labels `mask` on both backends and compares: (equal, what was found, the
/// first backend's labels when it gave any).
fn label_both(
    a: &Backend,
    b: &Backend,
    mask: &[u8],
    dims: [usize; 3],
    conn: Connectivity,
) -> (bool, String, Option<Labels>) {
    match (a.label(mask, dims, conn), b.label(mask, dims, conn)) {
        (Ok(x), Ok(y)) => match diff_labels(&x, &y) {
            None => (true, format!("{} components", x.count), Some(x)),
            Some(d) => (false, d, Some(x)),
        },
        (Err(e), _) => (false, format!("{}: {e}", a.name()), None),
        (Ok(x), Err(e)) => (false, format!("{}: {e}", b.name()), Some(x)),
    }
}

/// Runs every correctness case on `a` and `b` and compares the outputs.
pub fn compare(seed: u64, a: &Backend, b: &Backend, sizes: &[[usize; 3]]) -> Vec<CaseResult> {
    let mut out = Vec::new();
    for (si, &dims) in sizes.iter().enumerate() {
        let mut rng = Rng::new(seed ^ (si as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let values = stat_values(&mut rng, dims);
        for (case, mask) in label_cases(&mut rng, dims) {
            for conn in [Connectivity::Six, Connectivity::Eighteen, Connectivity::TwentySix] {
                let (pass, detail, la) = label_both(a, b, &mask, dims, conn);
                out.push(CaseResult {
                    kernel: "label",
                    case: case.clone(),
                    dims,
                    connectivity: Some(conn as u32),
                    pass,
                    detail,
                });
                // Statistics over the first backend's labels (the same input for both).
                let Some(labels) = la else { continue };
                let sa = a.stats(&labels, &values, dims);
                let sb = b.stats(&labels, &values, dims);
                let (pass, detail) = match (&sa, &sb) {
                    (Ok(x), Ok(y)) => match diff_stats(x, y) {
                        None => (true, format!("{} components", x.len())),
                        Some(d) => (false, d),
                    },
                    (Err(e), _) => (false, format!("{}: {e}", a.name())),
                    (_, Err(e)) => (false, format!("{}: {e}", b.name())),
                };
                out.push(CaseResult {
                    kernel: "stats",
                    case: case.clone(),
                    dims,
                    connectivity: Some(conn as u32),
                    pass,
                    detail,
                });
            }
        }
        for (case, stored, scale, t) in suv_cases(&mut rng, dims) {
            let ra = a.suv_threshold(&stored, dims, &scale, t);
            let rb = b.suv_threshold(&stored, dims, &scale, t);
            let (pass, detail) = match (&ra, &rb) {
                (Ok(x), Ok(y)) => match diff_suv(x, y) {
                    None => (true, format!("{} voxels over {t}", x.1.iter().filter(|&&m| m != 0).count())),
                    Some(d) => (false, d),
                },
                (Err(e), _) => (false, format!("{}: {e}", a.name())),
                (_, Err(e)) => (false, format!("{}: {e}", b.name())),
            };
            out.push(CaseResult { kernel: "suv", case, dims, connectivity: None, pass, detail });
        }
    }
    out
}

/// The first difference between two labellings.
pub fn diff_labels(a: &Labels, b: &Labels) -> Option<String> {
    if a.data.len() != b.data.len() {
        return Some(format!("{} vs {} voxels", a.data.len(), b.data.len()));
    }
    let differ = a.data.iter().zip(&b.data).filter(|(x, y)| x != y).count();
    if a.count == b.count && differ == 0 {
        return None;
    }
    let first = a.data.iter().zip(&b.data).position(|(x, y)| x != y);
    Some(match first {
        Some(i) => format!(
            "count {} vs {}; {differ} voxels differ, first at index {i} ({} vs {})",
            a.count, b.count, a.data[i], b.data[i]
        ),
        None => format!("count {} vs {}", a.count, b.count),
    })
}

/// The first difference between two statistics lists (floats by their bits).
pub fn diff_stats(a: &[ComponentStats], b: &[ComponentStats]) -> Option<String> {
    if a.len() != b.len() {
        return Some(format!("{} vs {} components", a.len(), b.len()));
    }
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let field = if x.voxels != y.voxels {
            "voxels"
        } else if x.bbox_min != y.bbox_min || x.bbox_max != y.bbox_max {
            "bbox"
        } else if x.sum_fixed != y.sum_fixed {
            "sum_fixed"
        } else if x.sum_sq_fixed != y.sum_sq_fixed {
            "sum_sq_fixed"
        } else if x.max.to_bits() != y.max.to_bits() {
            "max"
        } else if x.max_index != y.max_index {
            "max_index"
        } else {
            continue;
        };
        return Some(format!("label {}: {field} differs: {x:?} vs {y:?}", i + 1));
    }
    None
}

/// The first difference between two (SUV, mask) results (floats by bits).
pub fn diff_suv(a: &(Vec<f32>, Vec<u8>), b: &(Vec<f32>, Vec<u8>)) -> Option<String> {
    if a.0.len() != b.0.len() || a.1.len() != b.1.len() {
        return Some(format!("lengths {}/{} vs {}/{}", a.0.len(), a.1.len(), b.0.len(), b.1.len()));
    }
    if let Some(i) = a.0.iter().zip(&b.0).position(|(x, y)| x.to_bits() != y.to_bits()) {
        return Some(format!("SUV at index {i}: {:e} vs {:e}", a.0[i], b.0[i]));
    }
    if let Some(i) = a.1.iter().zip(&b.1).position(|(x, y)| x != y) {
        return Some(format!("mask at index {i}: {} vs {}", a.1[i], b.1[i]));
    }
    None
}

// ---- generators ------------------------------------------------------------

/// splitmix64: small, fast, and the same everywhere.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A stream named by `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in 0..n (n ≥ 1).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n.max(1))) >> 64) as u64
    }
}

fn index(dims: [usize; 3], x: usize, y: usize, z: usize) -> usize {
    x + dims[0] * (y + dims[1] * z)
}

/// Sets every voxel within `r` of (cx, cy, cz) to `value`.
fn sphere(mask: &mut [u8], dims: [usize; 3], c: [f64; 3], r: f64, value: u8) {
    let lo = |a: usize| ((c[a] - r).floor().max(0.0)) as usize;
    let hi = |a: usize| ((c[a] + r).ceil().max(0.0) as usize).min(dims[a].saturating_sub(1));
    let r2 = r * r;
    for z in lo(2)..=hi(2) {
        let dz = z as f64 - c[2];
        for y in lo(1)..=hi(1) {
            let dy = y as f64 - c[1];
            let rest = r2 - dz * dz - dy * dy;
            if rest < 0.0 {
                continue;
            }
            for x in lo(0)..=hi(0) {
                let dx = x as f64 - c[0];
                if dx * dx <= rest {
                    mask[index(dims, x, y, z)] = value;
                }
            }
        }
    }
}

pub(crate) fn label_cases(rng: &mut Rng, dims: [usize; 3]) -> Vec<(String, Vec<u8>)> {
    let n = dims[0] * dims[1] * dims[2];
    let mut cases = vec![("empty".to_string(), vec![0u8; n]), ("full".to_string(), vec![1u8; n])];
    for d in [0.05, 0.3, 0.5, 0.7, 0.95] {
        cases.push((format!("noise {:.0}%", d * 100.0), (0..n).map(|_| u8::from(rng.unit() < d)).collect()));
    }
    for d in [0.3, 0.7] {
        let m = (0..n).map(|_| if rng.unit() < d { 1 + rng.below(3) as u8 } else { 0 }).collect();
        cases.push((format!("multi-label noise {:.0}%", d * 100.0), m));
    }
    let span = dims.iter().copied().min().unwrap_or(1).max(1) as f64;
    for (name, values) in [("spheres", 1u64), ("multi-label spheres", 4)] {
        let mut m = vec![0u8; n];
        for _ in 0..12 {
            let c = [0, 1, 2].map(|a| rng.unit() * dims[a] as f64);
            sphere(&mut m, dims, c, 0.5 + rng.unit() * span / 3.0, 1 + rng.below(values) as u8);
        }
        cases.push((name.to_string(), m));
    }
    let positions = |a: usize| {
        let mut p = vec![0, dims[a] / 2, dims[a].saturating_sub(1)];
        p.dedup();
        p
    };
    let mut all = vec![0u8; n];
    for &z in &positions(2) {
        for &y in &positions(1) {
            for &x in &positions(0) {
                let i = index(dims, x, y, z);
                all[i] = 1;
                let mut one = vec![0u8; n];
                one[i] = 1;
                cases.push((format!("single voxel at ({x},{y},{z})"), one));
            }
        }
    }
    cases.push(("faces, edges, corners and centre".to_string(), all));
    cases
}

pub(crate) fn stat_values(rng: &mut Rng, dims: [usize; 3]) -> Vec<f32> {
    let n = dims[0] * dims[1] * dims[2];
    (0..n)
        .map(|_| match rng.below(100) {
            0..=2 => f32::NAN,
            3..=4 => -0.0,
            5..=6 => 0.0,
            7 => f32::INFINITY,
            8 => f32::NEG_INFINITY,
            9 => 3.0e30,
            10 => -3.0e30,
            11..=29 => rng.below(7) as f32,
            _ => (rng.unit() * 100.0 - 50.0) as f32,
        })
        .collect()
}

pub(crate) type SuvCase = (String, Vec<i16>, Vec<(f32, f32)>, f32);

pub(crate) fn suv_cases(rng: &mut Rng, dims: [usize; 3]) -> Vec<SuvCase> {
    let n = dims[0] * dims[1] * dims[2];
    let stored: Vec<i16> = (0..n)
        .map(|_| match rng.below(50) {
            0 => i16::MIN,
            1 => i16::MAX,
            2 => 0,
            _ => rng.next_u64() as i16,
        })
        .collect();
    let mut scale: Vec<(f32, f32)> =
        (0..dims[2]).map(|_| ((rng.unit() * 2e-3 - 5e-4) as f32, (rng.unit() * 10.0 - 5.0) as f32)).collect();
    if dims[2] > 1 {
        scale[1] = (f32::NAN, 0.0);
    }
    if dims[2] > 2 {
        scale[2] = (0.0, 2.5);
    }
    vec![
        ("random stored, t = 2.5".to_string(), stored.clone(), scale.clone(), 2.5),
        ("random stored, t = 0".to_string(), stored, scale, 0.0),
    ]
}

/// The benchmark volume: a binary mask of "organs" (clusters of large
/// overlapping spheres), "lesions" (small spheres) and speckle (isolated
/// voxels, as a thresholded noisy PET gives), x fastest. Same seed, same
/// volume.
pub fn bench_volume(seed: u64, dims: [usize; 3]) -> Vec<u8> {
    let n = dims[0] * dims[1] * dims[2];
    let mut rng = Rng::new(seed ^ 0xb1b5_0000_0000_0001);
    let mut m = vec![0u8; n];
    if n == 0 {
        return m;
    }
    let scale = dims.iter().copied().min().unwrap_or(1) as f64 / 400.0;
    for _ in 0..24 {
        let centre = [0, 1, 2].map(|a| (0.1 + 0.8 * rng.unit()) * dims[a] as f64);
        for _ in 0..(6 + rng.below(7)) {
            let r = (6.0 + rng.unit() * 22.0) * scale.max(0.05);
            let c = [0, 1, 2].map(|a| centre[a] + (rng.unit() * 2.0 - 1.0) * r);
            sphere(&mut m, dims, c, r, 1);
        }
    }
    for _ in 0..600 {
        let c = [0, 1, 2].map(|a| rng.unit() * dims[a] as f64);
        sphere(&mut m, dims, c, 1.0 + rng.unit() * 5.0, 1);
    }
    for _ in 0..n / 2000 {
        let i = rng.below(n as u64) as usize;
        m[i] = 1;
    }
    m
}

/// Writes the benchmark volume as raw u8 (x fastest, then y, then z: a
/// C-order `[nz][ny][nx]` array); returns its dims.
pub fn write_bench_volume(path: &Path, seed: u64) -> std::io::Result<[usize; 3]> {
    std::fs::write(path, bench_volume(seed, BENCH_DIMS))?;
    Ok(BENCH_DIMS)
}

/// Writes the CPU twin's 26-connectivity labels of the benchmark volume as
/// raw little-endian u32 in the same order (for the CuPy comparison);
/// returns the component count.
pub fn write_bench_labels(path: &Path, seed: u64) -> std::io::Result<u32> {
    let labels = super::cpu::label(&bench_volume(seed, BENCH_DIMS), BENCH_DIMS, Connectivity::TwentySix);
    let bytes: Vec<u8> = labels.data.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes)?;
    Ok(labels.count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generators_are_deterministic_and_in_range() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
            let u = a.unit();
            assert!((0.0..1.0).contains(&u));
            assert!(a.below(5) < 5);
            b.unit();
            b.below(5);
        }
        let dims = [33, 65, 17];
        let c1 = label_cases(&mut Rng::new(3), dims);
        let c2 = label_cases(&mut Rng::new(3), dims);
        assert_eq!(c1, c2);
        let n = dims.iter().product::<usize>();
        assert!(c1.iter().all(|(_, m)| m.len() == n));
        // 27 distinct single-voxel positions on a volume of sides ≥ 3.
        assert_eq!(c1.iter().filter(|(name, _)| name.starts_with("single")).count(), 27);
        assert_eq!(label_cases(&mut Rng::new(3), [1, 1, 1]).iter().filter(|(c, _)| c.starts_with("single")).count(), 1);
    }

    #[test]
    fn bench_volume_is_realistic_and_reproducible() {
        let dims = [128, 128, 100];
        let v = bench_volume(1, dims);
        assert_eq!(v, bench_volume(1, dims));
        assert_ne!(v, bench_volume(2, dims));
        let fg = v.iter().filter(|&&x| x != 0).count() as f64 / v.len() as f64;
        assert!(fg > 0.001 && fg < 0.5, "foreground {fg}");
    }

    #[test]
    fn the_cpu_agrees_with_itself_on_every_case() {
        let cases = compare(11, &Backend::Cpu, &Backend::Cpu, &[[1, 1, 1], [7, 13, 5]]);
        assert!(cases.len() > 100);
        let failed: Vec<_> = cases.iter().filter(|c| !c.pass).collect();
        assert!(failed.is_empty(), "{failed:?}");
    }

    #[test]
    fn diffs_name_the_first_difference() {
        let a = Labels { data: vec![0, 1, 1, 2], count: 2 };
        let mut b = a.clone();
        assert_eq!(diff_labels(&a, &b), None);
        b.data[2] = 2;
        assert!(diff_labels(&a, &b).is_some_and(|d| d.contains("index 2")));
        let s = ComponentStats {
            voxels: 1,
            bbox_min: [0; 3],
            bbox_max: [0; 3],
            sum_fixed: 0,
            sum_sq_fixed: 0,
            max: 0.0,
            max_index: 0,
        };
        let mut t = s;
        t.max = -0.0;
        assert!(diff_stats(&[s], &[t]).is_some_and(|d| d.contains("max")));
        assert_eq!(diff_suv(&(vec![f32::NAN], vec![0]), &(vec![f32::NAN], vec![0])), None);
        assert!(diff_suv(&(vec![0.0], vec![0]), &(vec![-0.0], vec![0])).is_some());
    }

    #[test]
    fn the_cpu_agrees_with_itself_on_repeated_labellings_of_the_benchmark_volume() {
        let cases = compare_repeated(5, &Backend::Cpu, &Backend::Cpu, [64, 64, 40], 3);
        assert_eq!(cases.len(), 2, "{cases:?}");
        assert!(cases.iter().all(|c| c.pass && c.connectivity == Some(26)), "{cases:?}");
        assert!(cases[1].detail.starts_with("3 labellings by cpu"), "{cases:?}");
        assert_eq!(compare_repeated(5, &Backend::Cpu, &Backend::Cpu, [64, 64, 40], 1).len(), 1);
    }

    #[test]
    fn markdown_report_lists_failures() {
        let r = CheckReport {
            seed: 1,
            device: "test".into(),
            kernels: vec!["label: embedded PTX compute_90".into()],
            passed: 1,
            failed: 1,
            cases: vec![CaseResult {
                kernel: "label",
                case: "noise".into(),
                dims: [1, 2, 3],
                connectivity: Some(6),
                pass: false,
                detail: "count 1 vs 2".into(),
            }],
        };
        let md = r.to_markdown();
        assert!(md.contains("count 1 vs 2") && md.contains("| label | noise | 1×2×3 | 6 |"), "{md}");
        assert!(md.contains("1 of 2 cases bit-identical; FAILURES"), "{md}");
        assert!(serde_json::to_string(&r).is_ok_and(|j| j.contains("\"failed\":1")));
    }
}

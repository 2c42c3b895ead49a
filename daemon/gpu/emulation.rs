//! The CUDA kernels themselves, run on the CPU (feature `emulation`, tests
//! only): `kernels/*.cu` compiled as C++ with `kernels/emulation/cuda_host.h`
//! (one OS thread per GPU thread of a block, real barriers for
//! `__syncthreads` and the warp collectives, GCC atomics), driven by
//! `kernels/emulation/driver.cpp` with the launch sequence of `cuda.rs`, and
//! compared bit for bit with the CPU twins on random and adversarial volumes:
//! every connectivity, sizes that are not multiples of the block shapes,
//! grids capped so that every stride loop runs (the grid-y stride included),
//! ten repetitions of each labelling, unaligned SUV buffers and planes under
//! eight voxels. What this cannot show is in kernels/README.md.

use std::process::Command;

use super::check::{Rng, label_cases, stat_values};
use super::{ComponentStats, Connectivity, Labels, cpu, stats_from_records};

/// The emulation driver built by build.rs.
const EMU: &str = env!("EDGESEG_KERNEL_EMU");
/// Repetitions of each labelling (races show as differences between runs).
const REPS: usize = 10;
/// Block cap of the 1-D grids and of the labelling grid's y: small, so that
/// every grid-stride loop runs several rounds.
const CAP_1D: u64 = 3;
const CAP_Y: u64 = 2;

/// Operation counters of one driver run.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    atomic: u64,
    find_root: u64,
    compress_write: u64,
}

fn run(args: &[String], input: &[u8]) -> (Vec<u8>, Counts) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (inp, out) = (dir.path().join("in"), dir.path().join("out"));
    std::fs::write(&inp, input).expect("write input");
    let o = Command::new(EMU)
        .args(args)
        .arg(&inp)
        .arg(&out)
        .output()
        .unwrap_or_else(|e| panic!("running the emulation driver {EMU}: {e}"));
    assert!(o.status.success(), "driver {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    let field = |name: &str| -> u64 {
        text.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text:?}"))
    };
    let counts =
        Counts { atomic: field("atomic"), find_root: field("find_root"), compress_write: field("compress_write") };
    (std::fs::read(&out).expect("read output"), counts)
}

fn words32(b: &[u8]) -> Vec<u32> {
    b.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn dims_args(dims: [usize; 3]) -> [String; 3] {
    dims.map(|d| d.to_string())
}

/// `reps` labellings of `mask` by the kernels.
fn emu_label(mask: &[u8], dims: [usize; 3], conn: Connectivity, reps: usize) -> (Vec<Labels>, Counts) {
    let n = mask.len();
    let [x, y, z] = dims_args(dims);
    let args = vec![
        "label".into(),
        (conn as u32).to_string(),
        x,
        y,
        z,
        CAP_1D.to_string(),
        CAP_Y.to_string(),
        reps.to_string(),
    ];
    let (out, counts) = run(&args, mask);
    let w = words32(&out);
    assert_eq!(w.len(), reps * (n + 1));
    let runs = w.chunks_exact(n + 1).map(|c| Labels { data: c[..n].to_vec(), count: c[n] }).collect();
    (runs, counts)
}

fn emu_stats(labels: &Labels, values: &[f32], dims: [usize; 3]) -> (Vec<ComponentStats>, Counts) {
    let mut input = Vec::with_capacity(8 * values.len());
    input.extend(labels.data.iter().flat_map(|l| l.to_le_bytes()));
    input.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    let [x, y, z] = dims_args(dims);
    let args = vec!["stats".into(), x, y, z, labels.count.to_string(), CAP_1D.to_string()];
    let (out, counts) = run(&args, &input);
    let records = labels.count as usize + 1;
    assert_eq!(out.len(), records * 8 * 12);
    let r64: Vec<u64> =
        out[..records * 64].chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes"))).collect();
    let r32 = words32(&out[records * 64..]);
    (stats_from_records(&r64, &r32, labels.count).expect("whole records"), counts)
}

fn emu_suv(stored: &[i16], dims: [usize; 3], scale: &[(f32, f32)], t: f32, offsets: [usize; 3]) -> (Vec<f32>, Vec<u8>) {
    let n = stored.len();
    let mut input: Vec<u8> = stored.iter().flat_map(|v| v.to_le_bytes()).collect();
    input.extend(scale.iter().flat_map(|&(a, b)| [a.to_le_bytes(), b.to_le_bytes()]).flatten());
    let [x, y, z] = dims_args(dims);
    let mut args = vec!["suv".into(), x, y, z, t.to_bits().to_string(), CAP_1D.to_string()];
    args.extend(offsets.map(|o| o.to_string()));
    let (out, _) = run(&args, &input);
    assert_eq!(out.len(), 5 * n);
    let suv = words32(&out[..4 * n]).into_iter().map(f32::from_bits).collect();
    (suv, out[4 * n..].to_vec())
}

/// Adversarial masks: a 3-D checkerboard (isolated under 6, one component
/// under 18 and 26: every join is diagonal), a comb (long teeth joined only
/// at their far end: deep union-find trees), a staircase (rows joined only by
/// corners) and stripes of alternating classes.
fn adversarial(dims: [usize; 3]) -> Vec<(String, Vec<u8>)> {
    let [nx, ny, nz] = dims;
    let at = |f: &dyn Fn(usize, usize, usize) -> u8| -> Vec<u8> {
        let mut m = Vec::with_capacity(nx * ny * nz);
        for z in 0..nz {
            for y in 0..ny {
                for x in 0..nx {
                    m.push(f(x, y, z));
                }
            }
        }
        m
    };
    vec![
        ("checkerboard".into(), at(&|x, y, z| u8::from((x + y + z) % 2 == 0))),
        ("comb".into(), at(&|x, y, _| u8::from(y % 2 == 0 || x + 1 == nx))),
        ("staircase".into(), at(&|x, y, z| u8::from((x + 2 * y + 3 * z) % 5 == 0))),
        ("stripes of classes".into(), at(&|x, y, z| 1 + ((x / 3 + y + z) % 3) as u8)),
    ]
}

/// The volumes of the labelling tests: random ones from `check` (noise,
/// multi-label noise, spheres) and the adversarial ones.
fn volumes(seed: u64, dims: [usize; 3]) -> Vec<(String, Vec<u8>)> {
    let keep = ["noise 30%", "noise 50%", "noise 70%", "multi-label noise 70%", "spheres", "multi-label spheres"];
    let mut v: Vec<_> =
        label_cases(&mut Rng::new(seed), dims).into_iter().filter(|(name, _)| keep.contains(&name.as_str())).collect();
    v.extend(adversarial(dims));
    v
}

const CONNS: [Connectivity; 3] = [Connectivity::Six, Connectivity::Eighteen, Connectivity::TwentySix];

#[test]
fn labelling_equals_the_cpu_twin_on_every_run() {
    // 33 × 19 × 11: x not a multiple of the 32-wide blocks, 209 rows (27
    // block rows, 2 grid rows: the grid-y stride runs 14 rounds).
    for (si, dims) in [[33, 19, 11], [5, 3, 17]].into_iter().enumerate() {
        for (case, mask) in volumes(si as u64 + 1, dims) {
            for conn in CONNS {
                let want = cpu::label(&mask, dims, conn);
                let (runs, _) = emu_label(&mask, dims, conn, REPS);
                for (rep, got) in runs.iter().enumerate() {
                    assert!(
                        got == &want,
                        "{case} {dims:?} {conn:?} run {rep}: {:?}",
                        super::check::diff_labels(&want, got)
                    );
                }
            }
        }
    }
}

#[test]
fn labelling_tiny_and_multi_tile_volumes() {
    // One voxel; one row; a volume of 2 scan tiles of word counts (> 65 536
    // voxels: the recursive scan runs); all with every connectivity.
    let mut rng = Rng::new(5);
    for dims in [[1, 1, 1], [37, 1, 1], [1, 1, 9], [70, 40, 30]] {
        let n = dims.iter().product::<usize>();
        let mask: Vec<u8> = (0..n).map(|_| u8::from(rng.unit() < 0.4)).collect();
        for conn in CONNS {
            let reps = if n > 10_000 { 2 } else { REPS };
            let want = cpu::label(&mask, dims, conn);
            let (runs, _) = emu_label(&mask, dims, conn, reps);
            assert!(runs.iter().all(|r| r == &want), "{dims:?} {conn:?}");
        }
    }
}

#[test]
fn statistics_equal_the_cpu_twin() {
    for (si, dims) in [[33, 9, 5], [40, 2, 3]].into_iter().enumerate() {
        let values = stat_values(&mut Rng::new(99 + si as u64), dims);
        for (case, mask) in volumes(si as u64 + 7, dims) {
            for conn in CONNS {
                let labels = cpu::label(&mask, dims, conn);
                let want = cpu::stats(&labels, &values, dims);
                let (got, _) = emu_stats(&labels, &values, dims);
                assert!(
                    super::check::diff_stats(&want, &got).is_none(),
                    "{case} {dims:?} {conn:?}: {:?}",
                    super::check::diff_stats(&want, &got)
                );
            }
        }
        // Labels above the count are ignored by both.
        let n = dims.iter().product::<usize>();
        let labels = Labels { data: (0..n as u32).map(|i| i % 7).collect(), count: 4 };
        let (got, _) = emu_stats(&labels, &values, dims);
        assert!(super::check::diff_stats(&cpu::stats(&labels, &values, dims), &got).is_none());
    }
}

#[test]
fn suv_equals_the_cpu_twin_bit_for_bit() {
    let mut rng = Rng::new(3);
    // Planes of 1, 2, 3, 6 and 7 voxels (several slices per 8-voxel group),
    // and a larger one; every alignment of the three buffers.
    for dims in [[1, 1, 20], [2, 1, 9], [3, 1, 7], [3, 2, 9], [7, 1, 5], [37, 11, 5]] {
        let n = dims.iter().product::<usize>();
        let stored: Vec<i16> = (0..n)
            .map(|i| match i % 11 {
                0 => i16::MIN,
                1 => i16::MAX,
                _ => rng.next_u64() as i16,
            })
            .collect();
        let mut scale: Vec<(f32, f32)> =
            (0..dims[2]).map(|_| ((rng.unit() * 2e-3 - 5e-4) as f32, (rng.unit() * 10.0 - 5.0) as f32)).collect();
        scale[1 % dims[2]] = (f32::NAN, 0.0);
        scale[2 % dims[2]] = (0.0, 2.5);
        scale[3 % dims[2]] = (f32::INFINITY, f32::NEG_INFINITY);
        let want = cpu::suv_threshold(&stored, dims, &scale, 0.5);
        for offsets in [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [3, 2, 5]] {
            let got = emu_suv(&stored, dims, &scale, 0.5, offsets);
            assert!(super::check::diff_suv(&want, &got).is_none(), "{dims:?} {offsets:?}");
        }
    }
}

/// Operation counts per voxel on the benchmark volume (a smaller one):
/// atomics of the statistics per voxel and find_root calls per foreground
/// voxel of a 26-connected labelling. Printed (`--nocapture`) for
/// BENCHMARKS.md, and bounded so that a regression fails.
#[test]
fn operation_counts_on_the_benchmark_volume() {
    let dims = [96, 96, 24];
    let mask = super::check::bench_volume(1, dims);
    let n = mask.len() as f64;
    let fg = mask.iter().filter(|&&v| v != 0).count() as f64;
    let (runs, lc) = emu_label(&mask, dims, Connectivity::TwentySix, 1);
    let labels = runs.into_iter().next().expect("one run");
    assert_eq!(labels, cpu::label(&mask, dims, Connectivity::TwentySix));
    let values: Vec<f32> = (0..mask.len()).map(|i| (i % 97) as f32 * 0.25).collect();
    let (_, sc) = emu_stats(&labels, &values, dims);
    let find_per_fg = lc.find_root as f64 / fg;
    let stats_atomics = sc.atomic as f64 / n;
    println!(
        "emulation counts, bench volume {dims:?} ({:.1}% foreground, {} components): label 26-conn: {find_per_fg:.3} \
         find_root per foreground voxel, {:.4} atomics per voxel, {:.3} label_compress writes per foreground voxel; \
         stats: {stats_atomics:.4} atomics per voxel ({} in all)",
        100.0 * fg / n,
        labels.count,
        lc.atomic as f64 / n,
        lc.compress_write as f64 / fg,
        sc.atomic
    );
    assert!(find_per_fg < 1.0, "find_root per foreground voxel {find_per_fg}");
    assert!(stats_atomics < 0.1, "stats atomics per voxel {stats_atomics}");
}

//! The GPU benchmark (the `gpu-bench` example, built with `--features
//! cuda`): the CUDA kernels on the 512×512×400 benchmark volume of
//! `edgeseg::gpu::check` (organs, lesions and speckle, 26-connectivity),
//! timed against their CPU twins, the kernels alone and with the host↔device
//! copies, and the SUV kernel's bandwidth against a device-to-device memcpy
//! moving as many bytes; each output is also compared with the twin's. Best of
//! `--reps` runs after a warm-up. Not part of the shipped binary: the
//! bit-for-bit self-check is `edgeseg gpu-check`, and `bench/gpu-check.sh`
//! runs both (and CuPy's labelling where it is installed).
//!
//!     cargo build --release --features cuda --example gpu-bench
//!     target/release/examples/gpu-bench [--seed N] [--json] [--reps N]

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use edgeseg::gpu::check::{
    BENCH_DIMS, CaseResult, Rng, bench_volume, describe, diff_labels, diff_stats, diff_suv, fmt_dims,
};
use edgeseg::gpu::cpu;
use edgeseg::gpu::cuda::CudaKernels;
use edgeseg::gpu::{Backend, Connectivity, GpuError};
use serde::Serialize;

/// The GPU benchmark.
#[derive(Parser)]
#[command(name = "gpu-bench", about = "Time the CUDA kernels against their CPU twins on the benchmark volume")]
struct Args {
    /// Seed of the benchmark volume.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Timed repetitions of each GPU run (the best counts).
    #[arg(long, default_value_t = 5)]
    reps: usize,
}

/// One benchmark row (times in milliseconds, best of the repetitions).
#[derive(Debug, Clone, Serialize)]
struct Timing {
    /// What was timed.
    name: String,
    /// Volume size.
    dims: [usize; 3],
    /// CPU twin, one run.
    cpu_ms: Option<f64>,
    /// GPU kernels alone (inputs and outputs on the device).
    gpu_kernel_ms: Option<f64>,
    /// GPU including host↔device copies (the `Backend` call).
    gpu_total_ms: Option<f64>,
    /// Bytes the kernel reads and writes per second, in GB/s (10^9).
    kernel_gb_s: Option<f64>,
    /// Bytes a device-to-device memcpy moving as many bytes reads and writes
    /// per second, in GB/s.
    memcpy_gb_s: Option<f64>,
    /// Components, bytes moved, etc.
    note: String,
}

/// What the benchmark found: the bench volume's cases and the timings.
#[derive(Debug, Serialize)]
struct BenchReport {
    seed: u64,
    device: String,
    kernels: Vec<String>,
    passed: usize,
    failed: usize,
    cases: Vec<CaseResult>,
    timings: Vec<Timing>,
}

impl BenchReport {
    /// The timing table in Markdown.
    fn to_markdown(&self) -> String {
        let mut s = format!("## edgeseg GPU benchmark (seed {})\n\nDevice: {}\n\n", self.seed, self.device);
        for c in self.cases.iter().filter(|c| !c.pass) {
            s.push_str(&format!("- FAILED {} {}: {}\n", c.kernel, c.case, c.detail));
        }
        s.push_str("| benchmark | dims | CPU ms | GPU kernel ms | GPU + copies ms | kernel vs CPU | GB/s (memcpy GB/s) | note |\n");
        s.push_str("|---|---|---:|---:|---:|---:|---:|---|\n");
        let ms =
            |v: Option<f64>| v.map_or("-".into(), |v| if v < 10.0 { format!("{v:.2}") } else { format!("{v:.1}") });
        for t in &self.timings {
            let speedup = match (t.cpu_ms, t.gpu_kernel_ms) {
                (Some(c), Some(g)) if g > 0.0 => format!("{:.1}×", c / g),
                _ => "-".into(),
            };
            let gbs = match (t.kernel_gb_s, t.memcpy_gb_s) {
                (Some(k), Some(m)) => format!("{k:.0} ({m:.0}, {:.0}%)", 100.0 * k / m),
                (Some(k), None) => format!("{k:.0}"),
                (None, Some(m)) => format!("({m:.0})"),
                _ => "-".into(),
            };
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
                t.name,
                fmt_dims(t.dims),
                ms(t.cpu_ms),
                ms(t.gpu_kernel_ms),
                ms(t.gpu_total_ms),
                speedup,
                gbs,
                t.note
            ));
        }
        s
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match bench(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("gpu-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn bench(args: &Args) -> Result<bool> {
    let gpu = Backend::cuda().context("no CUDA device to benchmark")?;
    let Backend::Cuda(k) = &gpu else {
        anyhow::bail!("no CUDA device to benchmark");
    };
    let (device, kernels) = describe(&gpu);
    let (mut cases, mut timings) = (Vec::new(), Vec::new());
    // A benchmark that fails (out of memory on a small Jetson) is one failed
    // case; what was measured before it is kept and reported.
    if let Err(e) = run(k, args.seed, BENCH_DIMS, args.reps.max(1), &mut cases, &mut timings) {
        cases.push(CaseResult {
            kernel: "benchmark",
            case: "benchmark volume".into(),
            dims: BENCH_DIMS,
            connectivity: None,
            pass: false,
            detail: format!("the benchmark stopped: {e}"),
        });
    }
    let passed = cases.iter().filter(|c| c.pass).count();
    let r = BenchReport { seed: args.seed, device, kernels, passed, failed: cases.len() - passed, cases, timings };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!("{}", r.to_markdown());
    }
    Ok(r.failed == 0)
}

/// Milliseconds of the best of `reps` runs of `f`, and the last result.
fn best_of<T>(reps: usize, mut f: impl FnMut() -> Result<T, GpuError>) -> Result<(f64, T), GpuError> {
    let mut best = f64::INFINITY;
    let mut last = None;
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        let r = f()?;
        best = best.min(t.elapsed().as_secs_f64() * 1e3);
        last = Some(r);
    }
    match last {
        Some(r) => Ok((best, r)),
        None => Err(GpuError::Invalid("no repetitions".into())),
    }
}

fn bench_values(seed: u64, n: usize) -> Vec<f32> {
    let mut rng = Rng::new(seed ^ 0x7a1e_5000_0000_0002);
    (0..n).map(|_| (0.5 + 9.5 * rng.unit()) as f32).collect()
}

fn case(kernel: &'static str, dims: [usize; 3], conn: Option<u32>, diff: Option<String>, ok: String) -> CaseResult {
    CaseResult {
        kernel,
        case: "benchmark volume".into(),
        dims,
        connectivity: conn,
        pass: diff.is_none(),
        detail: diff.unwrap_or(ok),
    }
}

fn run(
    k: &CudaKernels,
    seed: u64,
    dims: [usize; 3],
    reps: usize,
    cases: &mut Vec<CaseResult>,
    timings: &mut Vec<Timing>,
) -> Result<(), GpuError> {
    let n = dims[0] * dims[1] * dims[2];
    let gpu = |f: &dyn Fn() -> Result<(), GpuError>| -> Result<f64, GpuError> {
        f()?; // warm-up (module JIT, memory pools)
        Ok(best_of(reps, || {
            f()?;
            k.synchronize()
        })?
        .0)
    };
    // Labelling, 26-connectivity.
    let mask = bench_volume(seed, dims);
    let conn = Connectivity::TwentySix;
    let t = Instant::now();
    let cpu_labels = cpu::label(&mask, dims, conn);
    let cpu_ms = t.elapsed().as_secs_f64() * 1e3;
    let gpu_labels = k.label(&mask, dims, conn)?;
    cases.push(case(
        "label",
        dims,
        Some(26),
        diff_labels(&cpu_labels, &gpu_labels),
        format!("{} components", cpu_labels.count),
    ));
    let total = gpu(&|| k.label(&mask, dims, conn).map(drop))?;
    let kernel = {
        let d_mask = k.upload(&mask)?;
        let out = std::cell::RefCell::new(k.alloc::<u32>(n)?);
        gpu(&|| k.label_device(&d_mask, dims, conn, &mut out.borrow_mut()).map(drop))?
    };
    timings.push(Timing {
        name: "label (26-conn)".into(),
        dims,
        cpu_ms: Some(cpu_ms),
        gpu_kernel_ms: Some(kernel),
        gpu_total_ms: Some(total),
        kernel_gb_s: None,
        memcpy_gb_s: None,
        note: format!(
            "{} components, {:.1}% foreground",
            cpu_labels.count,
            100.0 * mask.iter().filter(|&&v| v != 0).count() as f64 / n.max(1) as f64
        ),
    });
    drop(gpu_labels);
    drop(mask);

    // Statistics over those labels.
    let values = bench_values(seed, n);
    let t = Instant::now();
    let cpu_stats = cpu::stats(&cpu_labels, &values, dims);
    let cpu_ms = t.elapsed().as_secs_f64() * 1e3;
    let gpu_stats = k.stats(&cpu_labels, &values, dims)?;
    cases.push(case(
        "stats",
        dims,
        Some(26),
        diff_stats(&cpu_stats, &gpu_stats),
        format!("{} components", cpu_stats.len()),
    ));
    let total = gpu(&|| k.stats(&cpu_labels, &values, dims).map(drop))?;
    let kernel = {
        let d_labels = k.upload(&cpu_labels.data)?;
        let d_values = k.upload(&values)?;
        gpu(&|| k.stats_device(&d_labels, cpu_labels.count, &d_values, dims).map(drop))?
    };
    timings.push(Timing {
        name: "stats".into(),
        dims,
        cpu_ms: Some(cpu_ms),
        gpu_kernel_ms: Some(kernel),
        gpu_total_ms: Some(total),
        kernel_gb_s: Some(16.0 * n as f64 / (kernel * 1e6)),
        memcpy_gb_s: None,
        note: "two passes over labels (u32) and values (f32); GB/s counts both passes".into(),
    });
    drop((values, cpu_labels, cpu_stats, gpu_stats));

    // SUV threshold against a memcpy of the same traffic.
    let mut rng = Rng::new(seed ^ 0x5u64);
    let stored: Vec<i16> = (0..n).map(|_| (rng.below(20_000) as i16).wrapping_sub(1_000)).collect();
    let scale: Vec<(f32, f32)> = (0..dims[2]).map(|k| (1e-3 + k as f32 * 1e-6, 0.01)).collect();
    let threshold = 2.5f32;
    let t = Instant::now();
    let cpu_suv = cpu::suv_threshold(&stored, dims, &scale, threshold);
    let cpu_ms = t.elapsed().as_secs_f64() * 1e3;
    let gpu_suv = k.suv_threshold(&stored, dims, &scale, threshold)?;
    cases.push(case("suv", dims, None, diff_suv(&cpu_suv, &gpu_suv), "bit-identical".into()));
    drop((cpu_suv, gpu_suv));
    let total = gpu(&|| k.suv_threshold(&stored, dims, &scale, threshold).map(drop))?;
    let bytes = 7 * n; // 2 read + 4 + 1 written per voxel
    let (kernel, memcpy) = {
        let flat: Vec<f32> = scale.iter().flat_map(|&(a, b)| [a, b]).collect();
        let d_stored = k.upload(&stored)?;
        let d_scale = k.upload(&flat)?;
        let suv = std::cell::RefCell::new(k.alloc::<f32>(n)?);
        let out = std::cell::RefCell::new(k.alloc::<u8>(n)?);
        let kernel = gpu(&|| {
            k.suv_threshold_device(&d_stored, dims, &d_scale, threshold, &mut suv.borrow_mut(), &mut out.borrow_mut())
        })?;
        drop((d_stored, suv, out));
        let half = bytes.div_ceil(2); // a copy of `half` bytes reads and writes `bytes`
        let src = k.alloc::<u8>(half)?;
        let dst = std::cell::RefCell::new(k.alloc::<u8>(half)?);
        let memcpy = gpu(&|| k.copy_device(&src, &mut dst.borrow_mut()))?;
        (kernel, memcpy)
    };
    timings.push(Timing {
        name: "suv_threshold".into(),
        dims,
        cpu_ms: Some(cpu_ms),
        gpu_kernel_ms: Some(kernel),
        gpu_total_ms: Some(total),
        kernel_gb_s: Some(bytes as f64 / (kernel * 1e6)),
        memcpy_gb_s: Some(bytes as f64 / (memcpy * 1e6)),
        note: format!("{:.0} MB moved (i16 in, f32 + u8 out); memcpy D2D of half as many bytes", bytes as f64 / 1e6),
    });
    Ok(())
}

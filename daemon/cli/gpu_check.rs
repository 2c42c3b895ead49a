//! `edgeseg gpu-check`: the CUDA kernels against their CPU twins, bit for
//! bit (the timed benchmark is bench/gpu-check.sh).

use std::path::PathBuf;

use anyhow::{Context, Result};

/// Check the CUDA kernels against their CPU twins, bit for bit (the benchmark: bench/gpu-check.sh).
#[derive(clap::Args)]
pub struct Args {
    /// Seed of the generated volumes.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Only write the benchmark volume (raw u8, x fastest) to PATH and print "nx ny nz".
    #[arg(long, value_name = "PATH")]
    write_volume: Option<PathBuf>,
    /// With --write-volume: also write the CPU twin's 26-connectivity labels
    /// (raw u32 little-endian, same order) to PATH.
    #[arg(long, value_name = "PATH", requires = "write_volume")]
    write_labels: Option<PathBuf>,
    /// Skip the 512×512×400 benchmark volume's labellings (the small cases
    /// only). The timed benchmark is bench/gpu-check.sh's.
    #[arg(long)]
    no_bench: bool,
    /// Add the large labelling cases: a grid-y stride volume (512×1024×1100)
    /// and one above 2^31 voxels (2048×1024×1040); ~30 GB host memory.
    #[arg(long)]
    large: bool,
    /// GPU labellings of the benchmark volume, each compared with the CPU twin.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
}

pub fn run(a: Args) -> Result<bool> {
    use edgeseg::gpu::check;
    let seed = a.seed;
    if let Some(path) = a.write_volume.as_deref() {
        let [nx, ny, nz] =
            check::write_bench_volume(path, seed).with_context(|| format!("writing {}", path.display()))?;
        if let Some(labels) = a.write_labels.as_deref() {
            check::write_bench_labels(labels, seed).with_context(|| format!("writing {}", labels.display()))?;
        }
        outln!("{nx} {ny} {nz}");
        return Ok(true);
    }
    let mut opts = check::CheckOptions::full(seed);
    opts.large = a.large;
    opts.repeat = if a.no_bench { 0 } else { a.repeat };
    let report = check::run_with(&opts)?;
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        outln!("{}", report.to_markdown());
    }
    Ok(report.all_passed())
}

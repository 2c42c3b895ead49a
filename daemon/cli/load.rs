//! `edgeseg load`: every series of a folder read to volumes, with the time
//! taken and a checksum per series (benchmarks).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;

/// Read every series to volumes and report the time taken (benchmarks).
#[derive(clap::Args)]
pub struct Args {
    /// Folder to scan recursively.
    dir: PathBuf,
    /// Refuse slice stacks that need resampling (irregular spacing, gantry tilt).
    #[arg(long)]
    strict_geometry: bool,
}

/// Peak resident memory of this process in MiB (Linux VmHWM).
fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

pub fn run(a: Args) -> Result<bool> {
    let t0 = Instant::now();
    let index = super::dicom_index(&a.dir, a.strict_geometry)?;
    let t_index = t0.elapsed().as_secs_f64();
    super::report_file_errors(&index);
    let mut clean = index.errors.is_empty();
    // Timed: scan, plan and load. Not timed: the checksum that proves the data.
    let mut read_seconds = t_index;
    for s in &index.series {
        let t = Instant::now();
        let loaded = s.plan().and_then(|p| p.load());
        let seconds = t.elapsed().as_secs_f64();
        read_seconds += seconds;
        match loaded {
            Ok(v) => {
                let sum: f64 = v.volume.data.iter().map(|&x| f64::from(x)).sum();
                outln!(
                    "{}",
                    serde_json::json!({
                        "series_uid": v.info.series_uid,
                        "modality": v.info.modality,
                        "dims": v.volume.geometry.dims,
                        "seconds": seconds,
                        "checksum": sum,
                        "volume_mib": (v.volume.data.len() * 4) as f64 / (1024.0 * 1024.0),
                    })
                );
            }
            Err(e) => {
                eprintln!("edgeseg: skipped {e}");
                clean = false;
            }
        }
    }
    outln!(
        "{}",
        serde_json::json!({"index_seconds": t_index, "total_seconds": read_seconds, "peak_rss_mib": peak_rss_mib()})
    );
    Ok(clean)
}

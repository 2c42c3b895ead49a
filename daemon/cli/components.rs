//! `edgeseg components`: connected components of a NIfTI mask, in the
//! canonical order, with size filter and per-component statistics.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use edgeseg::export::nifti;

/// Label the connected components of a mask (any non-zero voxel), in the
/// canonical order (first voxel in raster order), with optional size filter
/// and per-component statistics of an intensity image.
#[derive(clap::Args)]
pub struct Args {
    /// The mask (NIfTI).
    mask: PathBuf,
    /// Output label map (NIfTI, same grid).
    #[arg(long)]
    out: PathBuf,
    /// 6, 18 or 26.
    #[arg(long, default_value_t = 26, value_parser = parse_connectivity)]
    connectivity: u32,
    /// Remove components smaller than this volume (ml), then renumber.
    #[arg(long)]
    min_ml: Option<f64>,
    /// Intensity image (NIfTI, same grid) for per-component statistics.
    #[arg(long)]
    stats: Option<PathBuf>,
    /// Print the components (and timings) as JSON.
    #[arg(long)]
    json: bool,
    /// Use the CUDA kernels instead of the CPU twins.
    #[arg(long)]
    gpu: bool,
}

fn parse_connectivity(s: &str) -> Result<u32, String> {
    match s {
        "6" | "18" | "26" => s.parse().map_err(|e| format!("{e}")),
        _ => Err(format!("{s}: connectivity must be 6, 18 or 26")),
    }
}

pub fn run(a: Args) -> Result<bool> {
    use edgeseg::gpu::{Backend, Connectivity};
    let (mask_path, out, connectivity, min_ml, stats, json, gpu) =
        (a.mask.as_path(), a.out.as_path(), a.connectivity, a.min_ml, a.stats.as_deref(), a.json, a.gpu);
    let conn = Connectivity::from_number(connectivity).context("connectivity must be 6, 18 or 26")?;
    let t = Instant::now();
    let mask = nifti::read_f32(mask_path)?;
    let image = match stats {
        Some(p) => {
            let v = nifti::read_f32(p)?;
            if v.geometry.dims != mask.geometry.dims {
                bail!("{}: dims {:?} differ from the mask's {:?}", p.display(), v.geometry.dims, mask.geometry.dims);
            }
            Some(v)
        }
        None => None,
    };
    let read_s = t.elapsed().as_secs_f64();
    let backend = if gpu { Backend::cuda()? } else { Backend::Cpu };
    let binary: Vec<u8> = mask.data.iter().map(|&v| u8::from(v != 0.0)).collect();
    let a = edgeseg::post::components::analyse(
        &backend,
        &binary,
        &mask.geometry,
        conn,
        min_ml,
        image.as_ref().map(|v| v.data.as_slice()),
    )?;
    let (labels, figures) = (a.labels, a.figures);
    let t = Instant::now();
    let desc = format!("edgeseg components {connectivity}-connected");
    let v = edgeseg::volume::Volume { geometry: mask.geometry.clone(), data: labels.data };
    nifti::write_instances(out, &v, &desc).with_context(|| format!("{}: cannot write", out.display()))?;
    let write_s = t.elapsed().as_secs_f64();
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "count": figures.len(),
                "connectivity": connectivity,
                "backend": backend.name(),
                "min_ml": min_ml,
                "voxel_volume_ml": mask.geometry.voxel_volume_ml(),
                "components": figures,
                "timings_s": {"read": read_s, "label": a.label_seconds, "stats": a.stats_seconds, "write": write_s},
            }))?
        );
    } else {
        outln!("{}: {} components ({}-connected, {})", out.display(), figures.len(), connectivity, backend.name());
    }
    Ok(true)
}

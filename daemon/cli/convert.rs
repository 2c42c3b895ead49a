//! `edgeseg convert`: every series of a DICOM folder to
//! OUT/<SeriesInstanceUID>.nii.gz with a JSON sidecar.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use edgeseg::export::{nifti, uid_file_stem, write_atomic};
use edgeseg::ingest::{self, SeriesVolume};

/// Convert every series to OUT/<SeriesInstanceUID>.nii.gz (+ .json).
#[derive(clap::Args)]
pub struct Args {
    /// Folder to scan recursively.
    dir: PathBuf,
    /// Output folder (created).
    #[arg(long)]
    out: PathBuf,
    /// Refuse slice stacks that need resampling (irregular spacing, gantry tilt).
    #[arg(long)]
    strict_geometry: bool,
}

#[derive(serde::Serialize)]
struct ConvertSidecar<'a> {
    edgeseg_version: &'static str,
    series: &'a ingest::SeriesInfo,
    geometry: &'a edgeseg::volume::Geometry,
    affine_ras: [[f64; 4]; 4],
    nifti: String,
}

pub fn run(a: Args) -> Result<bool> {
    let out = a.out.as_path();
    let index = super::dicom_index(&a.dir, a.strict_geometry)?;
    std::fs::create_dir_all(out).with_context(|| format!("{}: cannot create the output folder", out.display()))?;
    super::report_file_errors(&index);
    let mut clean = index.errors.is_empty();
    for s in &index.series {
        let loaded = s.plan().and_then(|p| p.load());
        let sv = match loaded {
            Ok(v) => v,
            Err(e) => {
                eprintln!("edgeseg: skipped {e}");
                clean = false;
                continue;
            }
        };
        // The command line names each dropped copy (a folder the user chose;
        // the daemon's log gives one line per series, without paths).
        for p in &sv.info.duplicates_dropped {
            eprintln!(
                "edgeseg: warning: {}: duplicate SOP instance ignored (another file has its SOP Instance UID)",
                p.display()
            );
        }
        let stem = uid_file_stem(&sv.info.series_uid);
        let path = out.join(format!("{stem}.nii.gz"));
        write_series(&sv, &path, &out.join(format!("{stem}.json")))?;
        outln!("{}", path.display());
    }
    Ok(clean)
}

fn write_series(sv: &SeriesVolume, nii: &Path, json: &Path) -> Result<()> {
    let desc = format!("edgeseg {} {:?}", env!("CARGO_PKG_VERSION"), sv.info.unit);
    nifti::write(nii, &sv.volume, &desc).with_context(|| format!("{}: cannot write", nii.display()))?;
    let side = ConvertSidecar {
        edgeseg_version: edgeseg::version(),
        series: &sv.info,
        geometry: &sv.volume.geometry,
        affine_ras: sv.volume.geometry.affine_ras(),
        nifti: nii.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
    };
    let text = serde_json::to_vec_pretty(&side)?;
    write_atomic(json, |f| std::io::Write::write_all(f, &text))
        .with_context(|| format!("{}: cannot write", json.display()))
}

//! `edgeseg radiomics`: PyRadiomics-exact features of one image and mask, or
//! of every Image,Mask pair of a batch CSV (pyradiomics' batch layout).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use edgeseg::export::nifti;
use edgeseg::radiomics::{self as rad, output};

use crate::progress::Progress;

/// Radiomics features exact to PyRadiomics (its parameter files and
/// output names) of one image and mask, or of every Image,Mask pair of a
/// batch CSV (pyradiomics' batch layout; output CSV).
#[derive(clap::Args)]
pub struct Args {
    /// Image (NIfTI), or a batch CSV with Image and Mask columns.
    image: PathBuf,
    /// Mask (NIfTI label map); omitted for a batch CSV.
    mask: Option<PathBuf>,
    /// Label of the ROI in the mask (default: the parameter file's, else 1).
    #[arg(long)]
    label: Option<i64>,
    /// PyRadiomics parameter file (YAML or JSON).
    #[arg(long)]
    params: Option<PathBuf>,
    /// Print one JSON object mapping each feature name to its value.
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// Print PyRadiomics' CSV layout (header and one row per case).
    #[arg(long)]
    csv: bool,
}

/// A NIfTI volume (its error names the file, in words).
fn read(p: &Path) -> Result<edgeseg::volume::Volume<f32>> {
    Ok(nifti::read_f32(p)?)
}

/// An image and its mask, read side by side (decompressing them is most of
/// a small ROI's time).
fn read_pair(image: &Path, mask: &Path) -> Result<(edgeseg::volume::Volume<f32>, edgeseg::volume::Volume<f32>)> {
    std::thread::scope(|sc| {
        let m = sc.spawn(|| read(mask));
        let i = read(image);
        let m = m.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        Ok((i?, m?))
    })
}

/// One case (text, --json or --csv) or a batch CSV (CSV or JSON on stdout,
/// progress on stderr; failed cases named on stderr and left out, exit 2).
pub fn run(a: Args) -> Result<bool> {
    let params = match a.params.as_deref() {
        Some(p) => rad::params::Params::from_file(p).with_context(|| format!("{}", p.display()))?,
        None => rad::params::Params::default(),
    };
    let Some(mask) = a.mask.as_deref() else {
        let cases = output::read_batch(&a.image)?;
        let mut progress = Progress::new("case", cases.len(), true);
        let mut rows = Vec::new();
        let mut all_ok = true;
        for (i, case) in cases.iter().enumerate() {
            progress.begin("");
            let result = read_pair(&case.image, &case.mask)
                .and_then(|(im, ma)| Ok(rad::extract(&im, &ma, &params, a.label.or(case.label))?));
            match result {
                Ok(out) => rows.push((case.columns.clone(), out)),
                Err(e) => {
                    all_ok = false;
                    progress.suspend(|| eprintln!("error: case {} ({}): {e:#}", i + 1, case.image.display()));
                }
            }
        }
        progress.finish();
        if a.json {
            let all: Vec<serde_json::Value> = rows
                .iter()
                .map(|(cols, out)| {
                    let mut m: serde_json::Map<String, serde_json::Value> =
                        cols.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect();
                    m.extend(out.iter().cloned());
                    serde_json::Value::Object(m)
                })
                .collect();
            outln!("{}", serde_json::to_string_pretty(&all)?);
        } else {
            std::io::Write::write_all(&mut std::io::stdout().lock(), output::to_csv(&rows).as_bytes())?;
        }
        return Ok(all_ok);
    };
    let (im, ma) = read_pair(&a.image, mask)?;
    let out = rad::extract(&im, &ma, &params, a.label)?;
    let text = if a.json {
        output::to_json(&out) + "\n"
    } else if a.csv {
        let cols = vec![
            ("Image".to_string(), a.image.display().to_string()),
            ("Mask".to_string(), mask.display().to_string()),
        ];
        output::to_csv(&[(cols, out)])
    } else {
        output::to_text(&out)
    };
    std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes())?;
    Ok(true)
}

//! `edgeseg add-lesion`: a lesion grown from a seed point added to a
//! finished PET/CT study folder.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

/// Add a lesion grown from a seed point to a finished PET/CT study folder
/// (rewrites its labels, lesions and report).
#[derive(clap::Args)]
pub struct Args {
    /// The study's output folder (OUT/<StudyInstanceUID>).
    study_out: PathBuf,
    /// Seed point x,y,z in patient coordinates (mm, DICOM LPS, as viewers show).
    #[arg(long, value_name = "X,Y,Z", allow_hyphen_values = true)]
    at: String,
    /// liver (the patient's reference threshold), a fraction of the local SUVmax (40%), or a fixed SUV (e.g. 3.5).
    #[arg(long, default_value = "liver")]
    threshold: String,
    /// Refuse a growth larger than this many mL (a leak into an organ, not a lesion).
    #[arg(long, default_value_t = edgeseg::edit::DEFAULT_MAX_ML)]
    max_ml: f64,
}

pub fn run(a: Args) -> Result<bool> {
    use edgeseg::post::pet::SeedThreshold;
    let (study, at, threshold) = (a.study_out.as_path(), a.at.as_str(), a.threshold.as_str());
    let parts: Vec<f64> = at
        .split(',')
        .map(|p| p.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("--at {at}: expected x,y,z in mm"))?;
    let [x, y, z] = parts[..] else { bail!("--at {at}: expected three numbers x,y,z") };
    let method = match threshold {
        "liver" | "reference" => SeedThreshold::Reference,
        t if t.ends_with('%') => {
            let f: f64 = t.trim_end_matches('%').parse().with_context(|| format!("--threshold {t}"))?;
            SeedThreshold::FractionOfMax(f / 100.0)
        }
        t => SeedThreshold::Suv(t.parse().with_context(|| format!("--threshold {t}: liver, N% or an SUV"))?),
    };
    let e = edgeseg::edit::add_lesion(&edgeseg::gpu::Backend::Cpu, study, [x, y, z], method, a.max_ml)?;
    outln!(
        "{}: lesion {} grown from voxel {:?} ({} voxels, {:.2} mL at SUV >= {:.2}); lesions {} -> {}",
        study.display(),
        e.lesion,
        e.seed_ijk,
        e.voxels,
        e.volume_ml,
        e.threshold_suv,
        e.lesions_before,
        e.lesions_after
    );
    for n in &e.notes {
        outln!("note: {n}");
    }
    Ok(true)
}

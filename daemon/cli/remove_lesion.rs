//! `edgeseg remove-lesion`: one lesion taken out of a finished PET/CT study
//! folder, the other lesions keeping their numbers.

use std::path::PathBuf;

use anyhow::Result;

/// Remove lesion N from a finished PET/CT study folder (the other lesions keep their numbers).
#[derive(clap::Args)]
pub struct Args {
    /// The study's output folder (OUT/<StudyInstanceUID>).
    study_out: PathBuf,
    /// The lesion's number, as in report.json and lesions.nii.gz.
    number: u32,
}

pub fn run(a: Args) -> Result<bool> {
    let study = a.study_out.as_path();
    let e = edgeseg::edit::remove_lesion(&edgeseg::gpu::Backend::Cpu, study, a.number)?;
    outln!(
        "{}: lesion {} removed ({} voxels, {:.2} mL); lesions {} -> {}",
        study.display(),
        e.lesion,
        e.voxels,
        e.volume_ml,
        e.lesions_before,
        e.lesions_after
    );
    for n in &e.notes {
        outln!("note: {n}");
    }
    Ok(true)
}

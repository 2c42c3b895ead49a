//! `edgeseg process`: every study of a DICOM folder through the pipeline,
//! one output folder per study.

use std::path::PathBuf;

use anyhow::Result;

use crate::predict;

/// Segment every study in a DICOM folder: OUT/<StudyInstanceUID>/ gets
/// labels.nii.gz (on the reference series' grid), lesions.nii.gz and
/// suv.nii.gz (PET/CT profile), report.json, lesions.csv and mip.png.
#[derive(clap::Args)]
pub struct Args {
    /// DICOM folder (scanned recursively).
    input: PathBuf,
    /// Model package folder.
    #[arg(long)]
    model: PathBuf,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// Folds to ensemble (default: all in the package).
    #[arg(short = 'f', long = "folds", num_args = 1..)]
    folds: Vec<u32>,
    /// Turn off mirroring test-time augmentation.
    #[arg(long)]
    disable_tta: bool,
    /// Also write probabilities.nii.gz (4D: x, y, z, class; float32).
    #[arg(long)]
    save_probabilities: bool,
    #[command(flatten)]
    engine: predict::EngineArgs,
    /// Run post-processing kernels on the GPU (CUDA) when there is one
    /// (the same as --postprocess auto).
    #[arg(long, conflicts_with = "postprocess")]
    gpu_post: bool,
    /// Where post-processing runs: auto (CUDA when there is a device,
    /// else the CPU), cuda (an error without one) or cpu.
    #[arg(long, default_value = "cpu")]
    postprocess: edgeseg::gpu::select::PostprocessChoice,
    /// Refuse slice stacks that need resampling (irregular spacing, gantry tilt).
    #[arg(long)]
    strict_geometry: bool,
    /// seg.dcm as binary (Segmentation Storage) or labelmap (Label Map
    /// Segmentation Storage, DICOM 2024), as the daemon's [output] seg_kind.
    #[arg(long, default_value = "binary")]
    seg_kind: edgeseg::export::seg::SegKind,
}

pub fn run(a: Args) -> Result<bool> {
    super::predict::require_package(&a.model, &a.folds, None)?;
    predict::process(&predict::ProcessArgs {
        input: a.input,
        model: a.model,
        out: a.out,
        folds: a.folds,
        tta: !a.disable_tta,
        save_probabilities: a.save_probabilities,
        engine: a.engine,
        postprocess: if a.gpu_post { edgeseg::gpu::select::PostprocessChoice::Auto } else { a.postprocess },
        strict_geometry: a.strict_geometry,
        seg_kind: a.seg_kind,
    })
}

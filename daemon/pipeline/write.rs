//! A study's results to the files of its folder (labels.nii.gz,
//! lesions.nii.gz, suv.nii.gz, probabilities.nii.gz, lesions.csv, the
//! radiomics files (rois/*.nii.gz, ct.nii.gz, radiomics.csv), mip.png,
//! seg.dcm, rtstruct.dcm, report.json last), through the atomic study
//! folder of `export::study_dir`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{PipelineError, StudyResult};
use crate::export::seg::SegKind;
use crate::export::study_dir::Staging;
use crate::export::{csv, mip, nifti, uid_file_stem};

/// Writes a study's files into `out/<StudyInstanceUID>/`, atomically: a
/// staging folder beside it, every file fsynced, then one rename. A study's
/// folder is complete or absent; reprocessing replaces it whole.
/// seg.dcm is written as `seg_kind` says (`[output] seg_kind`).
pub fn write_study(out: &Path, result: &mut StudyResult, seg_kind: SegKind) -> Result<PathBuf, PipelineError> {
    let t = Instant::now();
    let stem = uid_file_stem(&result.report.study_instance_uid);
    let mut staging = Staging::begin(out, &stem)?;
    write_files(&mut staging, result, t, seg_kind)?;
    Ok(staging.commit()?)
}

/// Writes every file of a study into its staging folder; report.json last,
/// with the seconds since `started`.
fn write_files(
    staging: &mut Staging,
    result: &mut StudyResult,
    started: Instant,
    seg_kind: SegKind,
) -> Result<(), PipelineError> {
    let dir = staging.dir().to_path_buf();
    let desc = format!("edgeseg {}", result.report.model.name);
    let p = dir.join("labels.nii.gz");
    nifti::write(&p, &result.labels, &desc).map_err(PipelineError::io(&p))?;
    staging.file_done();
    if let Some(l) = &result.lesions {
        let p = dir.join("lesions.nii.gz");
        nifti::write_instances(&p, l, &desc).map_err(PipelineError::io(&p))?;
        staging.file_done();
    }
    if let Some(v) = &result.suv {
        let p = dir.join("suv.nii.gz");
        nifti::write(&p, v, "edgeseg PET SUVbw").map_err(PipelineError::io(&p))?;
        staging.file_done();
    }
    if let Some(probs) = &result.probabilities {
        let p = dir.join("probabilities.nii.gz");
        nifti::write_4d(&p, probs, &format!("{desc} class probabilities")).map_err(PipelineError::io(&p))?;
        staging.file_done();
    }
    let p = dir.join("lesions.csv");
    csv::write(&p, &result.report.lesions).map_err(PipelineError::io(&p))?;
    staging.file_done();
    if let Some(r) = &result.radiomics {
        write_radiomics(staging, r, result.ct.as_ref(), &desc)?;
    }
    // A model not cleared for clinical use marks every human-readable output.
    let cu = result.report.model.clinical_use;
    let picture = match (&result.suv, &result.ct) {
        (Some(suv), _) => Some(mip::coronal_marked(suv, result.lesions.as_ref(), cu)),
        (None, Some(ct)) => Some(mip::axial_marked(ct, &result.labels, result.focus_class, cu)),
        (None, None) => None,
    };
    if let Some(pic) = picture {
        let p = dir.join("mip.png");
        mip::write(&p, &pic).map_err(PipelineError::io(&p))?;
        staging.file_done();
    }
    if let Some(d) = &result.dicom {
        let rois = result.radiomics.as_ref().map(|r| r.segments(&result.labels)).unwrap_or_default();
        // A label map holds one segment per voxel: the radiomics ROIs overlap
        // the lesions and classes, so such a study's seg.dcm stays binary.
        let seg_kind = if rois.is_empty() { seg_kind } else { crate::export::seg::SegKind::Binary };
        let opts = crate::export::DicomOptions { clinical_use: cu, seg_kind, ..Default::default() };
        result.report.dicom_outputs =
            crate::export::write_dicom_rois(&dir, d, &result.labels, result.lesions.as_ref(), &rois, &opts)?;
        for _ in &result.report.dicom_outputs {
            staging.file_done();
        }
    }
    result.report.timings_s.write = started.elapsed().as_secs_f64();
    let p = dir.join("report.json");
    let text = serde_json::to_vec_pretty(&result.report).map_err(|e| PipelineError::io(&p)(e.into()))?;
    crate::export::write_atomic(&p, |f| std::io::Write::write_all(f, &text)).map_err(PipelineError::io(&p))?;
    staging.file_done();
    Ok(())
}

/// The radiomics files: each ROI as a label map (`rois/<name>.nii.gz`,
/// 1 inside), the CT the features came from (`ct.nii.gz`) where a ROI was
/// extracted on it, and radiomics.csv.
fn write_radiomics(
    staging: &mut Staging,
    r: &crate::radiomics::study::StudyRadiomics,
    ct: Option<&crate::volume::Volume<f32>>,
    desc: &str,
) -> Result<(), PipelineError> {
    let dir = staging.dir().to_path_buf();
    if let Some(ct) = ct.filter(|_| r.results.iter().any(|x| x.image == "ct.nii.gz")) {
        let p = dir.join("ct.nii.gz");
        nifti::write(&p, ct, "edgeseg CT (HU)").map_err(PipelineError::io(&p))?;
        staging.file_done();
    }
    if !r.rois.is_empty() {
        let rois = dir.join("rois");
        crate::export::create_output_dir(&rois).map_err(PipelineError::io(&rois))?;
        let geometry = ct.map(|c| c.geometry.clone());
        for roi in &r.rois {
            let Some(g) = geometry.clone() else { break };
            let v = crate::volume::Volume { geometry: g, data: roi.mask.iter().map(|&m| u8::from(m)).collect() };
            let p = dir.join(crate::radiomics::study::roi_file(&roi.name));
            nifti::write(&p, &v, &format!("{desc} ROI {}", roi.name)).map_err(PipelineError::io(&p))?;
            staging.file_done();
        }
        std::fs::File::open(&rois).and_then(|d| d.sync_all()).map_err(PipelineError::io(&rois))?;
    }
    let p = dir.join("radiomics.csv");
    let text = r.csv();
    crate::export::write_atomic(&p, |f| std::io::Write::write_all(f, text.as_bytes()))
        .map_err(PipelineError::io(&p))?;
    staging.file_done();
    Ok(())
}

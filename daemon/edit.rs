//! Edits of a finished study folder by the physician (`edgeseg add-lesion`):
//! the edit, the recomputed lesions and figures, and the folder rewritten
//! atomically with the edit recorded in report.json.

use std::path::Path;

use serde::Serialize;

use crate::export::{csv, mip, nifti};
use crate::gpu::{Backend, GpuError};
use crate::pipeline::{PipelineError, swap_into_place};
use crate::post::pet::{self, PetRules};
use crate::volume::Volume;

/// The DICOM files `write_study` may write (`add_lesion` drops them).
const DICOM_OUTPUTS: [&str; 2] = ["seg.dcm", "rtstruct.dcm"];

/// What `add_lesion` did.
#[derive(Debug, Clone, Serialize)]
pub struct LesionEdit {
    /// "add-lesion".
    pub action: &'static str,
    /// The seed, LPS mm.
    pub seed_lps_mm: [f64; 3],
    /// The seed voxel.
    pub seed_ijk: [usize; 3],
    /// How the threshold was chosen.
    pub method: pet::SeedThreshold,
    /// The SUV threshold used.
    pub threshold_suv: f64,
    /// Voxels grown.
    pub voxels: u64,
    /// Lesions before and after.
    pub lesions_before: usize,
    /// See `lesions_before`.
    pub lesions_after: usize,
}

/// Adds a lesion grown from a seed point to a finished PET/CT study folder
/// (`edgeseg add-lesion`): the region connected to the seed above the
/// threshold joins the lesion class, the profile recomputes lesions and
/// figures, and the folder is rewritten atomically with the edit recorded in
/// report.json.
pub fn add_lesion(
    backend: &Backend,
    study_dir: &Path,
    seed_lps_mm: [f64; 3],
    method: pet::SeedThreshold,
) -> Result<LesionEdit, PipelineError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PipelineError::Io { path, source }
    };
    let read = |name: &str| {
        let p = study_dir.join(name);
        nifti::read_f32(&p)
            .map_err(|e| PipelineError::Io { path: p.clone(), source: std::io::Error::other(e.to_string()) })
    };
    let report_path = study_dir.join("report.json");
    let text = std::fs::read_to_string(&report_path).map_err(io(&report_path))?;
    let mut report: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| PipelineError::Io { path: report_path.clone(), source: std::io::Error::other(e.to_string()) })?;
    let rules: PetRules = serde_json::from_value(report["rules"].clone()).map_err(|_| PipelineError::NoInput {
        study_uid: report["study_instance_uid"].as_str().unwrap_or("?").to_string(),
        reason: "the study was not processed with the PET/CT profile (no rules in report.json)".into(),
    })?;
    let suv = read("suv.nii.gz")?;
    let labels = read("labels.nii.gz")?;
    let mut classes =
        Volume { geometry: labels.geometry.clone(), data: labels.data.iter().map(|&v| v as u8).collect() };
    let g = &suv.geometry;
    let c = g.lps_to_voxel(seed_lps_mm);
    let seed = [0, 1, 2].map(|a| c[a].round());
    if (0..3).any(|a| seed[a] < 0.0 || seed[a] >= g.dims[a] as f64) {
        return Err(PipelineError::Post(GpuError::Invalid(format!(
            "the seed {seed_lps_mm:?} mm (voxel {c:.1?}) lies outside the PET volume {:?}",
            g.dims
        ))));
    }
    let seed = seed.map(|v| v as usize);
    let before = pet::total_tumour(backend, &classes, &suv, &rules)?;
    let (grown, thr) = pet::grow_from_seed(backend, &suv, seed, method, before.patient.reference.as_ref(), 60.0)?;
    let voxels = grown.iter().filter(|&&m| m != 0).count() as u64;
    for (cl, &m) in classes.data.iter_mut().zip(&grown) {
        if m != 0 {
            *cl = rules.lesion_label;
        }
    }
    let after = pet::total_tumour(backend, &classes, &suv, &rules)?;
    let edit = LesionEdit {
        action: "add-lesion",
        seed_lps_mm,
        seed_ijk: seed,
        method,
        threshold_suv: thr,
        voxels,
        lesions_before: before.table.len(),
        lesions_after: after.table.len(),
    };
    // Rewrite the folder: a staging copy with the new files, then the swap.
    let out = study_dir.parent().unwrap_or(Path::new("."));
    let stem = study_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let staging = out.join(format!(".staging-{stem}-{}", std::process::id()));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io(&staging))?;
    }
    crate::export::create_output_dir(&staging).map_err(io(&staging))?;
    for e in std::fs::read_dir(study_dir).map_err(io(study_dir))? {
        let e = e.map_err(io(study_dir))?;
        // The DICOM SEG/RTSTRUCT describe the old lesions: dropped, not kept stale
        // (add-lesion has no source DICOM to reference; `process` writes them again).
        if DICOM_OUTPUTS.iter().any(|n| e.file_name() == *n) {
            continue;
        }
        std::fs::copy(e.path(), staging.join(e.file_name())).map_err(io(&e.path()))?;
    }
    let desc = "edgeseg add-lesion";
    let p = staging.join("labels.nii.gz");
    nifti::write(&p, &after.classes, desc).map_err(io(&p))?;
    let p = staging.join("lesions.nii.gz");
    let lesions =
        Volume { geometry: g.clone(), data: after.lesions.data.iter().map(|&x| x as u16).collect::<Vec<u16>>() };
    if after.lesions.count <= u32::from(u16::MAX) {
        nifti::write(&p, &lesions, desc)
    } else {
        nifti::write(&p, &Volume { geometry: g.clone(), data: after.lesions.data.clone() }, desc)
    }
    .map_err(io(&p))?;
    let p = staging.join("lesions.csv");
    csv::write(&p, &after.table).map_err(io(&p))?;
    let p = staging.join("mip.png");
    let instances = Volume { geometry: g.clone(), data: after.lesions.data.clone() };
    mip::write(&p, &mip::coronal(&suv, Some(&instances))).map_err(io(&p))?;
    report["lesions"] = to_value(&after.table);
    report["dicom_outputs"] = serde_json::json!([]);
    report["patient"] = to_value(&after.patient);
    let edits = report.as_object_mut().map(|o| o.entry("edits").or_insert_with(|| serde_json::json!([])));
    if let Some(serde_json::Value::Array(list)) = edits {
        list.push(to_value(&edit));
    }
    let p = staging.join("report.json");
    let text =
        serde_json::to_vec_pretty(&report).map_err(|e| PipelineError::Io { path: p.clone(), source: e.into() })?;
    crate::export::write_atomic(&p, |f| std::io::Write::write_all(f, &text)).map_err(io(&p))?;
    swap_into_place(out, &stem, &staging)?;
    Ok(edit)
}

/// A serialisable value as JSON (null if it cannot be serialised).
fn to_value<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

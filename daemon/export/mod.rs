//! Export stage: writes results to files: NIfTI volumes, the lesion table as
//! CSV, the MIP picture and the lesion palette they share, and the DICOM
//! Segmentation and RT Structure Set that reference the source series.

pub mod air;
pub mod contour;
pub mod csv;
pub mod dicom_refs;
pub mod mip;
pub mod nifti;
pub mod palette;
pub mod report;
pub mod rtstruct;
pub mod seg;
pub mod segments;

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::volume::Volume;

/// What the DICOM outputs need besides the maps.
#[derive(Debug, Clone, PartialEq)]
pub struct DicomInputs {
    /// The reference series and the source's patient/study attributes.
    pub source: dicom_refs::SourceRefs,
    /// The model's classes (value, name), from dataset.json.
    pub classes: Vec<(u8, String)>,
    /// The lesion class, where the profile makes a lesion instance map.
    pub lesion_label: Option<u8>,
    /// The model, for Algorithm Identification.
    pub algorithm: seg::Algorithm,
}

/// Writes `seg.dcm` and `rtstruct.dcm` into `dir` and returns the names
/// written. A study without any segment (no lesion, no class voxel) gets
/// neither file: a Segmentation needs at least one segment.
pub fn write_dicom(
    dir: &Path,
    inputs: &DicomInputs,
    labels: &Volume<u8>,
    lesions: Option<&Volume<u32>>,
) -> Result<Vec<String>, dicom_refs::DicomExportError> {
    // On a resampled grid (irregular spacing, gantry tilt): the maps mapped
    // back onto the source slices, so SEG frames and RTSTRUCT contours lie on
    // the source slices' own planes and pixels.
    let mapped = inputs.source.resampled.as_ref().map(|grid| {
        (
            dicom_refs::to_source_slices(labels, &inputs.source, grid),
            lesions.map(|l| dicom_refs::to_source_slices(l, &inputs.source, grid)),
        )
    });
    let (labels, lesions) = match &mapped {
        Some((l, les)) => (l, les.as_ref()),
        None => (labels, lesions),
    };
    let set = segments::SegmentSet::new(labels, lesions, inputs.lesion_label, &inputs.classes);
    if set.segments.is_empty() {
        let study = crate::queue::uid_hash(&inputs.source.study_uid);
        tracing::info!(study = %study, "study {study}: no segments: no seg.dcm or rtstruct.dcm written");
        return Ok(Vec::new());
    }
    let frames = seg::write(&dir.join("seg.dcm"), &inputs.source, &set, &inputs.algorithm)?;
    let rt = rtstruct::write(&dir.join("rtstruct.dcm"), &inputs.source, &set)?;
    // IHE AIR: contributing equipment (both) and tracking IDs/UIDs (SEG).
    for f in ["seg.dcm", "rtstruct.dcm"] {
        air::add(&dir.join(f), &inputs.source.study_uid, &inputs.algorithm)?;
    }
    let study = crate::queue::uid_hash(&inputs.source.study_uid);
    tracing::info!(
        study = %study,
        segments = set.segments.len(),
        frames,
        contours = rt.contours,
        holes = rt.holes,
        "study {study}: DICOM SEG and RTSTRUCT written ({} segments, {frames} frames, {} contours, {} holes)",
        set.segments.len(),
        rt.contours,
        rt.holes
    );
    Ok(vec!["seg.dcm".into(), "rtstruct.dcm".into()])
}

/// A name safe for a file system from a DICOM UID: the UID itself when it is
/// a well-formed UID (digits and dots, at most 64 characters), else a hash.
pub fn uid_file_stem(uid: &str) -> String {
    let well_formed = !uid.is_empty()
        && uid.len() <= 64
        && uid.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && !uid.starts_with('.')
        && !uid.contains("..");
    if well_formed {
        uid.to_string()
    } else {
        use sha2::{Digest, Sha256};
        let h = Sha256::digest(uid.as_bytes());
        format!("uid-{}", h.iter().take(12).map(|b| format!("{b:02x}")).collect::<String>())
    }
}

/// Mode of every output file: owner read-write, group (the service's group,
/// `edgeseg`) read, others nothing. Set explicitly, whatever the umask.
pub const OUTPUT_FILE_MODE: u32 = 0o640;
/// Mode of output and staging folders: owner all, group read and enter.
pub const OUTPUT_DIR_MODE: u32 = 0o750;

/// Writes `bytes` to `path` atomically: a temporary file in the same folder,
/// fsynced, then renamed over the target. The file gets [`OUTPUT_FILE_MODE`]
/// and the process's group (the service runs as group `edgeseg`).
pub fn write_atomic(path: &Path, write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp: PathBuf = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f =
            std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(OUTPUT_FILE_MODE).open(&tmp)?;
        // The umask may have taken bits away (or a stale file had others).
        f.set_permissions(std::fs::Permissions::from_mode(OUTPUT_FILE_MODE))?;
        write(&mut f)?;
        f.flush()?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Creates `path` (and missing parents) as a folder with [`OUTPUT_DIR_MODE`],
/// whatever the umask: staging and study folders are never world-readable.
pub fn create_output_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new().recursive(true).mode(OUTPUT_DIR_MODE).create(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(OUTPUT_DIR_MODE))
}

#[cfg(test)]
mod mode_tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).expect("metadata").permissions().mode() & 0o7777
    }

    #[test]
    fn outputs_are_0640_even_over_a_stale_temporary_file() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("report.json");
        // A temporary file left world-writable by someone else.
        let stale = d.path().join(format!(".report.json.tmp-{}", std::process::id()));
        std::fs::write(&stale, b"old").expect("write");
        std::fs::set_permissions(&stale, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        write_atomic(&p, |f| std::io::Write::write_all(f, b"{}")).expect("write_atomic");
        assert_eq!(mode(&p), 0o640);
        assert_eq!(std::fs::read(&p).expect("read"), b"{}");
    }

    #[test]
    fn output_folders_are_0750() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("a/b/.staging-1.2.3-1");
        create_output_dir(&p).expect("create");
        assert_eq!(mode(&p), 0o750);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        create_output_dir(&p).expect("again");
        assert_eq!(mode(&p), 0o750, "an existing folder is brought back to 0750");
    }
}

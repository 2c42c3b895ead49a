//! Export stage: writes results to files: NIfTI volumes, the lesion table as
//! CSV, the MIP picture and the lesion palette they share, and the DICOM
//! Segmentation, RT Structure Set and Secondary Capture (the MIP) that
//! reference the source study.

pub mod air;
pub mod contour;
pub mod csv;
pub mod dicom_refs;
pub mod dicom_source;
pub mod gzip;
pub mod inflate;
pub mod mip;
pub mod nifti;
pub mod palette;
pub mod report;
pub mod rtstruct;
pub mod sc;
pub mod seg;
pub mod segments;
pub mod study_dir;

/// Helpers shared by the export modules' tests.
#[cfg(test)]
pub(crate) mod testing {
    /// A xorshift32 sequence from `seed`: reproducible test bytes without a
    /// random-number crate.
    pub fn xorshift(seed: u32) -> impl FnMut() -> u32 {
        let mut x = seed.max(1);
        move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        }
    }
}

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

/// The mark every human-readable output of a model not cleared for clinical
/// use carries (`clinical_use = false` in model.toml): mip.png, and the
/// SeriesDescription of seg.dcm, rtstruct.dcm and mip.dcm.
pub const NOT_FOR_CLINICAL_USE: &str = "NOT FOR CLINICAL USE";

/// The folder inside a study folder that edgeseg keeps for itself: the DICOM
/// references (`dicom-source.json`) and the edit history (`history/`).
pub const STATE_DIR: &str = ".edgeseg";

/// PET Image Storage and Enhanced PET Image Storage.
const PET_SOP_CLASSES: [&str; 2] = ["1.2.840.10008.5.1.4.1.1.128", "1.2.840.10008.5.1.4.1.1.130"];

/// Series number and description of one DICOM output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSeries {
    /// SeriesNumber.
    pub number: u32,
    /// SeriesDescription (at most 64 characters).
    pub description: String,
}

/// What differs between the DICOM outputs of `process` and those of an edit.
#[derive(Debug, Clone, PartialEq)]
pub struct DicomOptions {
    /// The model is cleared for clinical use (model.toml `clinical_use`);
    /// when false every SeriesDescription ends with [`NOT_FOR_CLINICAL_USE`].
    pub clinical_use: bool,
    /// SeriesNumber of seg.dcm, rtstruct.dcm and mip.dcm: 901, 902, 903 from
    /// `process`; the previous file's number + 1 after an edit.
    pub series_numbers: [u32; 3],
    /// How seg.dcm encodes its segments (`[output] seg_kind`); an edit
    /// keeps the kind the study was written with (`.edgeseg/dicom-source.json`).
    pub seg_kind: seg::SegKind,
}

impl Default for DicomOptions {
    /// `process`'s numbers, and not cleared: where the caller does not say
    /// the model is cleared, the outputs say it is not.
    fn default() -> Self {
        DicomOptions { clinical_use: false, series_numbers: [901, 902, 903], seg_kind: seg::SegKind::Binary }
    }
}

impl DicomOptions {
    /// The series of output `i` (0 SEG, 1 RTSTRUCT, 2 SC) named `what`.
    fn series(&self, i: usize, what: &str) -> OutputSeries {
        let description = if self.clinical_use {
            format!("edgeseg {what}")
        } else {
            format!("edgeseg {what} - {NOT_FOR_CLINICAL_USE}")
        };
        OutputSeries { number: self.series_numbers[i], description }
    }
}

/// Writes `seg.dcm`, `rtstruct.dcm` and `mip.dcm` into `dir` with
/// [`DicomOptions::default`] and returns the names written (see
/// [`write_dicom_with`]).
pub fn write_dicom(
    dir: &Path,
    inputs: &DicomInputs,
    labels: &Volume<u8>,
    lesions: Option<&Volume<u32>>,
) -> Result<Vec<String>, dicom_refs::DicomExportError> {
    write_dicom_with(dir, inputs, labels, lesions, &DicomOptions::default())
}

/// Writes the DICOM outputs into `dir` and returns the names written:
/// `seg.dcm` and `rtstruct.dcm` (a study without any segment, no lesion and
/// no class voxel, gets neither: a Segmentation needs at least one segment),
/// and `mip.dcm`, the Secondary Capture of `dir/mip.png` where that picture
/// has been written. It also keeps what they reference in
/// `.edgeseg/dicom-source.json` (no patient data), so an edit can write them
/// again without the source DICOM.
pub fn write_dicom_with(
    dir: &Path,
    inputs: &DicomInputs,
    labels: &Volume<u8>,
    lesions: Option<&Volume<u32>>,
    options: &DicomOptions,
) -> Result<Vec<String>, dicom_refs::DicomExportError> {
    write_dicom_rois(dir, inputs, labels, lesions, &[], options)
}

/// [`write_dicom_with`] with extra segments after the lesions and classes:
/// the radiomics ROIs (peri-tumoural rings, the whole organ), on the label
/// map's grid; seg.dcm then says its segments may overlap.
pub fn write_dicom_rois(
    dir: &Path,
    inputs: &DicomInputs,
    labels: &Volume<u8>,
    lesions: Option<&Volume<u32>>,
    rois: &[segments::ExtraRoi],
    options: &DicomOptions,
) -> Result<Vec<String>, dicom_refs::DicomExportError> {
    let mut source = dicom_source::DicomSource::of(inputs);
    source.seg_kind = options.seg_kind;
    source.write(dir)?;
    let mut written = Vec::new();
    // On a resampled grid (irregular spacing, gantry tilt): the maps mapped
    // back onto the source slices, so SEG frames and RTSTRUCT contours lie on
    // the source slices' own planes and pixels.
    let mapped = inputs.source.resampled.as_ref().map(|grid| {
        (
            dicom_refs::to_source_slices(labels, &inputs.source, grid),
            lesions.map(|l| dicom_refs::to_source_slices(l, &inputs.source, grid)),
        )
    });
    let mapped_rois: Option<Vec<segments::ExtraRoi>> = inputs.source.resampled.as_ref().map(|grid| {
        rois.iter()
            .map(|r| segments::ExtraRoi {
                mask: dicom_refs::to_source_slices(&r.mask, &inputs.source, grid),
                ..r.clone()
            })
            .collect()
    });
    let rois = mapped_rois.as_deref().unwrap_or(rois);
    let (labels, lesions) = match &mapped {
        Some((l, les)) => (l, les.as_ref()),
        None => (labels, lesions),
    };
    let set = segments::SegmentSet::new(labels, lesions, inputs.lesion_label, &inputs.classes).with_rois(rois);
    let study = crate::queue::uid_hash(&inputs.source.study_uid);
    if set.segments.is_empty() {
        tracing::info!(study = %study, "study {study}: no segments: no seg.dcm or rtstruct.dcm written");
    } else {
        let seg_series = options.series(0, "segmentation");
        let frames =
            seg::write(&dir.join("seg.dcm"), &inputs.source, &set, &inputs.algorithm, &seg_series, options.seg_kind)?;
        let rt = rtstruct::write(&dir.join("rtstruct.dcm"), &inputs.source, &set, &options.series(1, "structures"))?;
        // IHE AIR: contributing equipment (both) and tracking IDs/UIDs (SEG).
        for f in ["seg.dcm", "rtstruct.dcm"] {
            air::add(&dir.join(f), &inputs.source.study_uid, &inputs.algorithm)?;
        }
        tracing::info!(
            study = %study,
            segments = set.segments.len(),
            frames,
            seg_kind = options.seg_kind.as_str(),
            contours = rt.contours,
            holes = rt.holes,
            "study {study}: DICOM SEG ({}) and RTSTRUCT written ({} segments, {frames} frames, {} contours, {} holes)",
            options.seg_kind.as_str(),
            set.segments.len(),
            rt.contours,
            rt.holes
        );
        written.extend(["seg.dcm".to_string(), "rtstruct.dcm".to_string()]);
    }
    let png = dir.join("mip.png");
    if png.exists() {
        // mip.png is the coronal MIP for a PET reference series, else axial CT slices.
        let pet = inputs.source.slices.iter().any(|s| PET_SOP_CLASSES.contains(&s.sop_class_uid.as_str()));
        let orientation = if pet { ["L", "F"] } else { ["L", "P"] };
        sc::write_png(&dir.join("mip.dcm"), &png, &inputs.source, &options.series(2, "MIP"), orientation)?;
        written.push("mip.dcm".into());
    }
    Ok(written)
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

#[cfg(test)]
mod dicom_options_tests {
    use super::*;

    /// Issue 13 item 17: the mark in every SeriesDescription unless the model is cleared.
    #[test]
    fn descriptions_carry_the_mark_unless_cleared() {
        let marked = DicomOptions::default();
        assert_eq!(marked.series(0, "segmentation").description, "edgeseg segmentation - NOT FOR CLINICAL USE");
        assert_eq!(marked.series(2, "MIP").number, 903);
        let cleared = DicomOptions { clinical_use: true, series_numbers: [905, 906, 907], ..Default::default() };
        assert_eq!(
            cleared.series(1, "structures"),
            OutputSeries { number: 906, description: "edgeseg structures".into() }
        );
        for what in ["segmentation", "structures", "MIP"] {
            assert!(marked.series(0, what).description.len() <= 64, "a LO value");
        }
    }
}

//! Walks a folder and reads the header of every DICOM Part-10 file in it, in
//! parallel, stopping each parse before the pixel data. Nothing here decodes
//! pixels; bad files become errors in the report, never panics.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_object::{OpenFileOptions, ReadError};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use rayon::prelude::*;

use super::error::FileError;
use super::header::{self, InstanceHeader, tag};

/// Modalities of non-image objects that may sit in an export folder (and our
/// own outputs): skipped without an error.
const NON_IMAGE_MODALITIES: &[&str] = &["SR", "RTSTRUCT", "SEG", "PR", "KO", "REG", "RTPLAN", "RTRECORD", "DOC"];

/// SOP classes that are never image volumes, by UID prefix (a prefix ending
/// in a digit matches that UID and its sub-classes), with what they are.
const NON_VOLUME_SOP_CLASSES: &[(&str, &str)] = &[
    ("1.2.840.10008.1.3.10", "a media storage directory (DICOMDIR)"),
    ("1.2.840.10008.5.1.4.1.1.88.", "a structured report or key object selection"),
    ("1.2.840.10008.5.1.4.1.1.11.", "a presentation state"),
    ("1.2.840.10008.5.1.4.1.1.66", "raw data, a registration, fiducials or a segmentation"),
    ("1.2.840.10008.5.1.4.1.1.7", "a secondary capture, a screen shot rather than an acquired volume"),
    ("1.2.840.10008.5.1.4.1.1.104.", "an encapsulated document"),
    ("1.2.840.10008.5.1.4.1.1.9.", "a waveform"),
    ("1.2.840.10008.5.1.4.1.1.481.", "an RT object other than an image"),
];

/// What reading one file's header gave.
#[derive(Debug)]
pub enum HeaderRead {
    /// An image instance.
    Image(Box<InstanceHeader>),
    /// Not an image volume (a directory file, a report, a screen shot, a
    /// colour picture, a localizer ...): passed over, with why.
    Skipped(String),
}

/// Files passed over by name: media directories (DICOMDIR, and the DIRFILE
/// of Philips exports), whatever their content.
pub fn skipped_by_name(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    if name == "DICOMDIR" {
        Some("DICOMDIR (media directory) ignored".into())
    } else if name.eq_ignore_ascii_case("DIRFILE") {
        Some("DIRFILE (Philips export directory file) ignored".into())
    } else {
        None
    }
}

/// Why an object of this SOP class is not an image volume, if it is not.
fn non_volume_sop_class(uid: &str) -> Option<&'static str> {
    let uid = uid.trim_end_matches('\0').trim();
    NON_VOLUME_SOP_CLASSES.iter().find_map(|&(prefix, what)| {
        let hit = if prefix.ends_with('.') {
            uid.starts_with(prefix)
        } else {
            uid == prefix || uid.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('.'))
        };
        hit.then_some(what)
    })
}

/// What a folder scan found.
#[derive(Debug, Default)]
pub struct ScanReport {
    /// Headers of the image instances read.
    pub instances: Vec<InstanceHeader>,
    /// Files that could not be read, each with its reason.
    pub errors: Vec<FileError>,
    /// Files passed over on purpose (DICOMDIR, non-image objects), with why.
    pub skipped: Vec<(PathBuf, String)>,
}

/// One readable file found by the walk: the path to open and the path to report.
#[derive(Debug)]
struct Candidate {
    open: PathBuf,
    report: PathBuf,
}

/// Lists the files under `root`, never following a symlink that leads out of it
/// and never following directory symlinks (loops).
fn walk(root: &Path, errors: &mut Vec<FileError>, skipped: &mut Vec<(PathBuf, String)>) -> Vec<Candidate> {
    let canonical_root = fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(root).follow_links(false).sort_by_file_name() {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                let path = e.path().map(Path::to_path_buf).unwrap_or_else(|| root.to_path_buf());
                let source = e.into_io_error().unwrap_or_else(|| std::io::Error::other("walk error"));
                errors.push(FileError::Io { path, source });
                continue;
            }
        };
        let path = entry.path();
        let ft = entry.file_type();
        if ft.is_dir() {
            continue;
        }
        if let Some(why) = skipped_by_name(path) {
            skipped.push((path.to_path_buf(), why));
            continue;
        }
        if ft.is_symlink() {
            let target = fs::read_link(path).unwrap_or_default();
            match fs::canonicalize(path) {
                Ok(real) if real.starts_with(&canonical_root) => {
                    if real.is_file() {
                        out.push(Candidate { open: real, report: path.to_path_buf() });
                    } else {
                        skipped.push((path.to_path_buf(), "symlink to a directory, not followed".into()));
                    }
                }
                Ok(real) => errors.push(FileError::SymlinkOutside { path: path.to_path_buf(), target: real }),
                Err(_) => errors.push(FileError::SymlinkOutside { path: path.to_path_buf(), target }),
            }
            continue;
        }
        if ft.is_file() {
            out.push(Candidate { open: path.to_path_buf(), report: path.to_path_buf() });
        }
    }
    out
}

/// Scans `root` recursively.
pub fn scan(root: &Path) -> ScanReport {
    let mut report = ScanReport::default();
    let candidates = walk(root, &mut report.errors, &mut report.skipped);
    let results: Vec<Outcome> = candidates.par_iter().map(read_candidate).collect();
    for r in results {
        match r {
            Outcome::Instance(h) => report.instances.push(*h),
            Outcome::Error(e) => report.errors.push(e),
            Outcome::Skipped(p, why) => report.skipped.push((p, why)),
        }
    }
    report
}

enum Outcome {
    Instance(Box<InstanceHeader>),
    Error(FileError),
    Skipped(PathBuf, String),
}

fn read_candidate(c: &Candidate) -> Outcome {
    match read_header(&c.open, &c.report) {
        Ok(HeaderRead::Image(h)) => Outcome::Instance(h),
        Ok(HeaderRead::Skipped(why)) => Outcome::Skipped(c.report.clone(), why),
        Err(e) => Outcome::Error(e),
    }
}

/// Checks the Part-10 magic without parsing: "DICM" at byte 128.
fn check_magic(open: &Path, report: &Path) -> Result<(), FileError> {
    let io = |source| FileError::Io { path: report.to_path_buf(), source };
    let meta = fs::metadata(open).map_err(io)?;
    if meta.len() == 0 {
        return Err(FileError::Empty { path: report.to_path_buf() });
    }
    let mut head = [0u8; 132];
    let mut f = fs::File::open(open).map_err(io)?;
    let mut got = 0;
    while got < head.len() {
        match f.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io(e)),
        }
    }
    if got < 132 || &head[128..132] != b"DICM" {
        return Err(FileError::NotDicom {
            path: report.to_path_buf(),
            reason: if got < 132 {
                format!("only {got} bytes, shorter than a Part-10 preamble")
            } else {
                "no \"DICM\" magic at byte 128".into()
            },
        });
    }
    Ok(())
}

/// Maps dicom-object's read errors to ours.
pub(crate) fn map_read_error(e: ReadError, report: &Path) -> FileError {
    let path = report.to_path_buf();
    match e {
        ReadError::ReadUnrecognizedTransferSyntax { uid, .. } => {
            FileError::UnsupportedTransferSyntax { path, uid, name: "unknown".into() }
        }
        ReadError::ReadUnsupportedTransferSyntax { uid, name, .. }
        | ReadError::ReadUnsupportedTransferSyntaxWithSuggestion { uid, name, .. } => {
            FileError::UnsupportedTransferSyntax { path, uid: uid.to_string(), name: name.to_string() }
        }
        ReadError::OpenFile { source, .. } | ReadError::ReadFile { source, .. } => FileError::Io { path, source },
        ReadError::ReadPreambleBytes { .. } | ReadError::ParseMetaDataSet { .. } => {
            FileError::NotDicom { path, reason: error_chain(&e) }
        }
        _ => FileError::Truncated { path, reason: error_chain(&e) },
    }
}

/// An error and its sources on one line, each cause once (one whose text
/// the line already holds is left out).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !t.is_empty() && !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// Checks that the transfer syntax is known and its pixel data decodable.
pub(crate) fn check_transfer_syntax(uid: &str, report: &Path) -> Result<(), FileError> {
    let uid = uid.trim_end_matches('\0').trim();
    let unsupported = |name: &str| FileError::UnsupportedTransferSyntax {
        path: report.to_path_buf(),
        uid: uid.to_string(),
        name: name.to_string(),
    };
    let ts = TransferSyntaxRegistry.get(uid).ok_or_else(|| unsupported("unknown"))?;
    if ts.is_unsupported() || !ts.can_decode_all() {
        return Err(unsupported(ts.name()));
    }
    Ok(())
}

/// Reads the header of one file, stopping before the pixel data.
/// `HeaderRead::Skipped` for objects that are not image volumes: directory
/// files, non-image SOP classes and modalities, secondary captures, colour
/// images, localizers (ImageType LOCALIZER). A file that claims to be an
/// image volume and is broken is an error.
pub fn read_header(open: &Path, report: &Path) -> Result<HeaderRead, FileError> {
    if let Some(why) = skipped_by_name(report) {
        return Ok(HeaderRead::Skipped(why));
    }
    check_magic(open, report)?;
    super::structure::check(open, report)?;
    let (obj, no_group_length) = super::part10::open(OpenFileOptions::new().read_until(tag::PIXEL_DATA), open)
        .map_err(|e| map_read_error(e, report))?;
    let ts = obj.meta().transfer_syntax().trim_end_matches('\0').to_string();
    let text = |t| obj.get(t).and_then(|e| e.to_str().ok()).map(|s| s.trim_end_matches('\0').trim().to_string());
    let sop_class = text(tag::SOP_CLASS_UID).unwrap_or_else(|| obj.meta().media_storage_sop_class_uid().to_string());
    // A skipped object is named by its SOP Instance UID too, so an engineer
    // finds it in the scanner's or the PACS's list (logs name the file itself
    // by a hash of its path: folder names carry patient names).
    let sop_instance = text(tag::SOP_INSTANCE_UID)
        .unwrap_or_else(|| obj.meta().media_storage_sop_instance_uid().trim_end_matches('\0').to_string());
    let skipped = |why: String| {
        if sop_instance.is_empty() {
            HeaderRead::Skipped(why)
        } else {
            HeaderRead::Skipped(format!("{why}; SOP Instance UID {sop_instance}"))
        }
    };
    if let Some(what) =
        non_volume_sop_class(&sop_class).or_else(|| non_volume_sop_class(obj.meta().media_storage_sop_class_uid()))
    {
        return Ok(skipped(format!("not an image volume: {what} (SOP class {})", sop_class.trim_end_matches('\0'))));
    }
    let modality = text(tag::MODALITY);
    if obj.get(tag::ROWS).is_none() && modality.as_deref().is_some_and(|m| NON_IMAGE_MODALITIES.contains(&m)) {
        return Ok(skipped(format!(
            "not an image volume: a non-image object (Modality {})",
            modality.as_deref().unwrap_or_default()
        )));
    }
    let samples = obj.get(tag::SAMPLES_PER_PIXEL).and_then(|e| e.to_int::<i64>().ok()).unwrap_or(1);
    let photometric = text(tag::PHOTOMETRIC_INTERPRETATION).unwrap_or_default();
    if samples > 1 || photometric.starts_with("RGB") || photometric.starts_with("YBR") {
        return Ok(skipped(format!(
            "not an image volume: a colour image (PhotometricInterpretation {photometric}, {samples} samples per pixel)"
        )));
    }
    if let Some(image_type) = text(tag::IMAGE_TYPE)
        && image_type.split('\\').any(|v| v.trim().eq_ignore_ascii_case("LOCALIZER"))
    {
        return Ok(skipped(format!("not an image volume: a localizer (ImageType {image_type})")));
    }
    check_transfer_syntax(&ts, report)?;
    let mut h = header::parse(&obj, report, &ts)?;
    h.meta_group_length_missing = no_group_length;
    Ok(HeaderRead::Image(Box::new(h)))
}

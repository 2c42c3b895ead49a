//! Typed ingest errors. Every variant names the file or the series it is about,
//! and every one has a class so the queue, D-Bus and metrics can act on it.

use std::path::PathBuf;

/// What the daemon should do with a study that raised an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorClass {
    /// The input itself is wrong: quarantine, never retry.
    BadInput,
    /// A passing condition (I/O hiccup): retry with backoff.
    Transient,
}

/// An error about one file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// Zero bytes.
    #[error("{path}: empty file (0 bytes)")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// No Part-10 preamble and "DICM" magic, or an unreadable meta group.
    #[error("{path}: not a DICOM file ({reason})")]
    NotDicom {
        /// The file.
        path: PathBuf,
        /// What was found instead.
        reason: String,
    },
    /// The data set ends in the middle of an element.
    #[error("{path}: truncated or corrupt DICOM data set ({reason})")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// The parser's words.
        reason: String,
    },
    /// A declared size or nesting breaks a limit; refused before parsing, so
    /// nothing was allocated for it (see `ingest::structure`).
    #[error("{path}: refused before parsing: {reason}")]
    Structure {
        /// The file.
        path: PathBuf,
        /// The element, what it declares and the limit.
        reason: String,
    },
    /// An image attribute this reader needs is absent.
    #[error("{path}: missing {attribute}")]
    MissingAttribute {
        /// The file.
        path: PathBuf,
        /// DICOM keyword of the attribute.
        attribute: &'static str,
    },
    /// An attribute is present but unusable.
    #[error("{path}: invalid {attribute}: {reason}")]
    InvalidAttribute {
        /// The file.
        path: PathBuf,
        /// DICOM keyword of the attribute.
        attribute: &'static str,
        /// Why it is unusable.
        reason: String,
    },
    /// The image has no PixelData element.
    #[error("{path}: no pixel data (PixelData (7FE0,0010) absent)")]
    NoPixelData {
        /// The file.
        path: PathBuf,
    },
    /// The transfer syntax is unknown or its pixel data cannot be decoded.
    #[error("{path}: unsupported transfer syntax {uid} ({name})")]
    UnsupportedTransferSyntax {
        /// The file.
        path: PathBuf,
        /// Transfer syntax UID.
        uid: String,
        /// Its name, where known.
        name: String,
    },
    /// NumberOfFrames and the pixel data disagree.
    #[error("{path}: frame count mismatch: {reason}")]
    FrameCount {
        /// The file.
        path: PathBuf,
        /// The numbers that disagree.
        reason: String,
    },
    /// Encapsulated pixel data the codec could not decode.
    #[error("{path}: cannot decode pixel data: {reason}")]
    PixelDecode {
        /// The file.
        path: PathBuf,
        /// The codec's words.
        reason: String,
    },
    /// A symbolic link leading out of the scanned folder (never followed).
    #[error("{path}: symlink pointing outside the folder (to {target}), not followed")]
    SymlinkOutside {
        /// The link.
        path: PathBuf,
        /// Where it points.
        target: PathBuf,
    },
    /// Reading the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl FileError {
    /// How the daemon should treat it.
    pub fn class(&self) -> ErrorClass {
        match self {
            FileError::Io { source, .. } if !matches!(source.kind(), std::io::ErrorKind::NotFound) => {
                ErrorClass::Transient
            }
            _ => ErrorClass::BadInput,
        }
    }

    /// The file the error is about.
    pub fn path(&self) -> &std::path::Path {
        match self {
            FileError::Empty { path }
            | FileError::NotDicom { path, .. }
            | FileError::Truncated { path, .. }
            | FileError::Structure { path, .. }
            | FileError::MissingAttribute { path, .. }
            | FileError::InvalidAttribute { path, .. }
            | FileError::NoPixelData { path }
            | FileError::UnsupportedTransferSyntax { path, .. }
            | FileError::FrameCount { path, .. }
            | FileError::PixelDecode { path, .. }
            | FileError::SymlinkOutside { path, .. }
            | FileError::Io { path, .. } => path,
        }
    }
}

/// An error about a whole series.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SeriesError {
    /// Slices whose ImageOrientationPatient differ.
    #[error(
        "series {series_uid}: mixed orientation: {path} has ImageOrientationPatient {found:?}, the series {expected:?}"
    )]
    MixedOrientation {
        /// SeriesInstanceUID.
        series_uid: String,
        /// The first file that differs.
        path: PathBuf,
        /// Its orientation.
        found: Vec<f64>,
        /// The series' orientation (its first slice).
        expected: Vec<f64>,
    },
    /// Slices off a uniform grid by more than 10 % of the spacing, refused
    /// in strict mode (otherwise resampled): the gap most off the median.
    #[error(
        "series {series_uid}: non-uniform slice spacing: gap of {gap:.4} mm between {before} and {after}, expected {expected:.4} mm"
    )]
    NonUniformSpacing {
        /// SeriesInstanceUID.
        series_uid: String,
        /// The gap found.
        gap: f64,
        /// The spacing of the series (median gap).
        expected: f64,
        /// File of the slice before the gap.
        before: String,
        /// File of the slice after the gap.
        after: String,
    },
    /// Two slices at one position with different SOP Instance UIDs.
    #[error(
        "series {series_uid}: duplicate position {position_mm:.3} mm along the normal: {first} and {second} have different SOP Instance UIDs"
    )]
    DuplicatePosition {
        /// SeriesInstanceUID.
        series_uid: String,
        /// Position along the slice normal.
        position_mm: f64,
        /// One file.
        first: String,
        /// The other file.
        second: String,
    },
    /// Rows, columns, pixel spacing or sample format differ between slices.
    #[error("series {series_uid}: inconsistent {what}: {path} differs from the first slice")]
    Inconsistent {
        /// SeriesInstanceUID.
        series_uid: String,
        /// Which attribute.
        what: &'static str,
        /// The first file that differs.
        path: PathBuf,
    },
    /// The series has no usable slice.
    #[error("series {series_uid}: no readable image")]
    Empty {
        /// SeriesInstanceUID.
        series_uid: String,
    },
    /// A declared size beyond what this reader accepts.
    #[error("series {series_uid}: {what} exceeds the limit ({value} > {limit})")]
    TooLarge {
        /// SeriesInstanceUID.
        series_uid: String,
        /// What is too large.
        what: &'static str,
        /// The declared value.
        value: u64,
        /// The limit.
        limit: u64,
    },
    /// A file of the series failed while its pixels were read.
    #[error("series {series_uid}: {source}")]
    File {
        /// SeriesInstanceUID.
        series_uid: String,
        /// The file's error.
        #[source]
        source: FileError,
    },
    /// No series with this UID in the folder.
    #[error("series {series_uid}: not found")]
    NotFound {
        /// SeriesInstanceUID.
        series_uid: String,
    },
}

impl SeriesError {
    /// How the daemon should treat it.
    pub fn class(&self) -> ErrorClass {
        match self {
            SeriesError::File { source, .. } => source.class(),
            _ => ErrorClass::BadInput,
        }
    }
}

//! Export stage: writes results to files: NIfTI volumes, the lesion table as
//! CSV, the MIP picture and the lesion palette they share; DICOM SEG/RTSTRUCT
//! join here.

pub mod csv;
pub mod mip;
pub mod nifti;
pub mod palette;

use std::io::Write;
use std::path::{Path, PathBuf};

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

/// Writes `bytes` to `path` atomically: a temporary file in the same folder,
/// fsynced, then renamed over the target.
pub fn write_atomic(path: &Path, write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp: PathBuf = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
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

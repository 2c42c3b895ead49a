//! The spool: where received instances wait for the pipeline
//! (`<state>/spool/`, watched like an export folder).
//!
//! An instance is written under `<state>/spool.tmp/` while its P-DATA
//! arrives, fsynced, checked (a DICOM header whose SOP Instance UID is the
//! one the C-STORE announced), renamed to `spool/<sha256 of its SOP Instance
//! UID>.dcm` and the folder fsynced: only then is it answered with success. A
//! resend of the same instance replaces the file by rename. Temporary files
//! of a dead process are removed at start; complete files stay until their
//! study is done (see [`Spool::release`]), whatever happened to the
//! association that brought them.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

/// Why an instance could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// Writing, syncing or renaming.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The data set is not what the command announced.
    #[error("the data set is not a readable DICOM instance: {0}")]
    Invalid(String),
    /// The data set's SOP Instance UID is another one.
    #[error("the data set's SOP Instance UID differs from the command's")]
    Mismatch,
}

impl SpoolError {
    /// Out of space (answered A700 rather than a failure).
    pub fn is_out_of_space(&self) -> bool {
        matches!(self, Self::Io { source, .. } if source.raw_os_error() == Some(libc::ENOSPC) || source.raw_os_error() == Some(libc::EDQUOT))
    }
}

/// The spool folders and the free-space floor.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    tmp: PathBuf,
    min_free_bytes: u64,
    counter: AtomicU64,
}

/// `<state>/spool`.
pub fn spool_dir(state: &Path) -> PathBuf {
    state.join("spool")
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io { path: path.to_path_buf(), source }
}

impl Spool {
    /// Creates the folders (0750) and removes temporary files left by a dead process.
    pub fn open(state: &Path, min_free_mb: u64) -> Result<Self, SpoolError> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = spool_dir(state);
        let tmp = state.join("spool.tmp");
        for d in [&dir, &tmp] {
            std::fs::DirBuilder::new().recursive(true).mode(0o750).create(d).map_err(io(d))?;
        }
        if let Ok(rd) = std::fs::read_dir(&tmp) {
            for e in rd.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(Self { dir, tmp, min_free_bytes: min_free_mb.saturating_mul(1024 * 1024), counter: AtomicU64::new(0) })
    }

    /// The folder the watcher reads.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the spool's file system has more free space than `[disk] min_free_mb`.
    pub fn has_room(&self) -> bool {
        crate::sys::free_bytes(&self.dir).map(|b| b > self.min_free_bytes).unwrap_or(false)
    }

    /// Starts an instance: a new temporary file with the Part-10 preamble and meta group.
    pub fn begin(
        &self,
        sop_class: &str,
        sop_instance: &str,
        transfer_syntax: &str,
        calling_ae: &str,
    ) -> Result<Incoming, SpoolError> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let tmp = self.tmp.join(format!("{}-{n}.part", std::process::id()));
        let name = format!("{}.dcm", hex_hash(sop_instance));
        let meta = dicom_object::meta::FileMetaTableBuilder::new()
            .media_storage_sop_class_uid(sop_class)
            .media_storage_sop_instance_uid(sop_instance)
            .transfer_syntax(transfer_syntax)
            .implementation_class_uid(crate::export::dicom_refs::IMPLEMENTATION_CLASS_UID)
            .source_application_entity_title(calling_ae)
            .build()
            .map_err(|e| SpoolError::Invalid(e.to_string()))?;
        let mut file = File::create(&tmp).map_err(io(&tmp))?;
        let mut head = vec![0u8; 128];
        head.extend_from_slice(b"DICM");
        meta.write(&mut head).map_err(|e| SpoolError::Invalid(e.to_string()))?;
        file.write_all(&head).map_err(io(&tmp))?;
        Ok(Incoming { file: Some(file), tmp, dest: self.dir.join(name), sop_instance: sop_instance.to_string() })
    }

    /// Removes the spooled files among `files` (a done study's inputs).
    /// Returns how many were removed.
    pub fn release<'a>(&self, files: impl IntoIterator<Item = &'a Path>) -> usize {
        let mut n = 0;
        for f in files {
            if f.parent() == Some(self.dir.as_path()) && std::fs::remove_file(f).is_ok() {
                n += 1;
            }
        }
        if n > 0 {
            let _ = File::open(&self.dir).and_then(|d| d.sync_all());
        }
        n
    }
}

/// sha256 of a UID, 32 hex digits: the spooled file's name.
pub fn hex_hash(uid: &str) -> String {
    Sha256::digest(uid.as_bytes()).iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// An instance being received.
#[derive(Debug)]
pub struct Incoming {
    file: Option<File>,
    tmp: PathBuf,
    dest: PathBuf,
    sop_instance: String,
}

impl Incoming {
    /// Appends data-set bytes.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), SpoolError> {
        match self.file.as_mut() {
            Some(f) => f.write_all(bytes).map_err(io(&self.tmp)),
            None => Ok(()),
        }
    }

    /// fsync, check, rename into the spool, fsync the folder. Returns the spooled file.
    pub fn commit(mut self) -> Result<PathBuf, SpoolError> {
        let Some(f) = self.file.take() else {
            return Err(SpoolError::Invalid("already closed".into()));
        };
        f.sync_all().map_err(io(&self.tmp))?;
        drop(f);
        let obj = crate::ingest::part10::open(
            dicom_object::OpenFileOptions::new().read_until(dicom_dictionary_std::tags::PIXEL_DATA),
            &self.tmp,
        )
        .map_err(|e| SpoolError::Invalid(e.to_string()))?
        .0;
        let sop = obj
            .element(dicom_dictionary_std::tags::SOP_INSTANCE_UID)
            .ok()
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim_end_matches(['\0', ' ']).to_string());
        if sop.as_deref() != Some(self.sop_instance.as_str()) {
            return Err(SpoolError::Mismatch);
        }
        std::fs::rename(&self.tmp, &self.dest).map_err(io(&self.dest))?;
        if let Some(dir) = self.dest.parent() {
            File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
        }
        Ok(self.dest.clone())
    }
}

impl Drop for Incoming {
    /// An instance not committed (aborted association, refused data set) leaves nothing.
    fn drop(&mut self) {
        if self.tmp.exists() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_files_of_a_dead_process_go_and_uncommitted_ones_leave_nothing() {
        let d = tempfile::tempdir().expect("tmp");
        std::fs::create_dir_all(d.path().join("spool.tmp")).expect("mkdir");
        std::fs::write(d.path().join("spool.tmp/1-0.part"), b"half").expect("write");
        let s = Spool::open(d.path(), 0).expect("open");
        assert_eq!(std::fs::read_dir(d.path().join("spool.tmp")).expect("rd").count(), 0);
        let mut i = s.begin("1.2.840.10008.5.1.4.1.1.2", "1.2.3", "1.2.840.10008.1.2.1", "CT01").expect("begin");
        i.write(b"\x08\x00\x18\x00UI\x06\x001.2.3\0").expect("write");
        drop(i);
        assert_eq!(std::fs::read_dir(d.path().join("spool.tmp")).expect("rd").count(), 0);
        assert_eq!(std::fs::read_dir(s.dir()).expect("rd").count(), 0);
    }

    #[test]
    fn an_instance_is_renamed_in_only_when_its_uid_is_the_announced_one() {
        let d = tempfile::tempdir().expect("tmp");
        let s = Spool::open(d.path(), 0).expect("open");
        // (0008,0018) SOPInstanceUID "1.2.3\0" in explicit VR little endian.
        let ds = b"\x08\x00\x18\x00UI\x06\x001.2.3\0";
        let mut i = s.begin("1.2.840.10008.5.1.4.1.1.2", "1.2.3", "1.2.840.10008.1.2.1", "CT01").expect("begin");
        i.write(ds).expect("write");
        let p = i.commit().expect("commit");
        assert_eq!(p, s.dir().join(format!("{}.dcm", hex_hash("1.2.3"))));
        let mut i = s.begin("1.2.840.10008.5.1.4.1.1.2", "1.2.4", "1.2.840.10008.1.2.1", "CT01").expect("begin");
        i.write(ds).expect("write");
        assert!(matches!(i.commit(), Err(SpoolError::Mismatch)));
        assert_eq!(std::fs::read_dir(s.dir()).expect("rd").count(), 1);
        assert_eq!(s.release([p.as_path(), Path::new("/etc/passwd")]), 1);
        assert_eq!(std::fs::read_dir(s.dir()).expect("rd").count(), 0);
    }
}

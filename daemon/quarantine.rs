//! The quarantine folder (`<state>/quarantine/`), read and tidied: one
//! record per study (`<study hash>/`) or per file no study could be named
//! from (`file-<hash>/`), each with a `reason.txt` and, for studies, a
//! `files.txt`. This module writes the records (for the service), lists them
//! for the status page and `edgeseg quarantine`, and removes the ones that
//! no longer hold (the study was later done, the file is gone or went into a
//! study that was done).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::queue::uid_hash;

/// What a record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// A study (`<study hash>/`).
    Study,
    /// A file no study could be named from (`file-<hash>/`).
    File,
}

impl RecordKind {
    /// `study` or `file`.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Study => "study",
            RecordKind::File => "file",
        }
    }
}

/// One quarantine record as read from its folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The folder's name: the study hash or `file-<hash>`.
    pub name: String,
    /// Study or file.
    pub kind: RecordKind,
    /// `quarantined_at` (RFC 3339), empty when the record lacks it.
    pub since: String,
    /// `reason`, as written (empty when the record lacks it).
    pub reason: String,
    /// The StudyInstanceUID (study records), for root and the admin group only.
    pub study_uid: Option<String>,
    /// The input files the record names (files.txt, or the `file:` line).
    pub files: Vec<PathBuf>,
}

/// Whether `name` is a record name this module writes or reads: 12 hex
/// digits, optionally after `file-` (never a path).
pub fn is_record_name(name: &str) -> bool {
    let hex = name.strip_prefix("file-").unwrap_or(name);
    hex.len() == 12 && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':'))).map(str::trim)
}

/// Reads one record folder; `None` when `dir`'s name is not a record name.
pub fn read_record(dir: &Path) -> Option<Record> {
    let name = dir.file_name()?.to_str()?.to_string();
    if !is_record_name(&name) {
        return None;
    }
    let kind = if name.starts_with("file-") { RecordKind::File } else { RecordKind::Study };
    let text = std::fs::read_to_string(dir.join("reason.txt")).unwrap_or_default();
    let mut files: Vec<PathBuf> = std::fs::read_to_string(dir.join("files.txt"))
        .map(|t| t.lines().filter(|l| !l.trim().is_empty()).map(PathBuf::from).collect())
        .unwrap_or_default();
    if files.is_empty()
        && let Some(f) = field(&text, "file")
        && !f.is_empty()
    {
        // Written with `{:?}` of a path string: quoted, backslashes escaped.
        let unquoted = serde_json::from_str::<String>(f).unwrap_or_else(|_| f.to_string());
        if unquoted.starts_with('/') {
            files.push(PathBuf::from(unquoted));
        }
    }
    Some(Record {
        kind,
        since: field(&text, "quarantined_at").unwrap_or_default().to_string(),
        reason: field(&text, "reason").unwrap_or_default().to_string(),
        study_uid: field(&text, "study_instance_uid").filter(|u| !u.is_empty()).map(str::to_string),
        files,
        name,
    })
}

/// Every record in `folder`, by name (an absent folder has none).
pub fn list(folder: &Path) -> Vec<Record> {
    let Ok(entries) = std::fs::read_dir(folder) else { return Vec::new() };
    let mut out: Vec<Record> =
        entries.flatten().filter(|e| e.path().is_dir()).filter_map(|e| read_record(&e.path())).collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Removes the record `name` from `folder`; `Ok(false)` when there is none.
pub fn remove(folder: &Path, name: &str) -> std::io::Result<bool> {
    if !is_record_name(name) {
        return Ok(false);
    }
    let dir = folder.join(name);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Removes the `file-*` records whose files are all gone or all in `done_files`
/// (inputs of a study that was done); returns the names removed.
pub fn remove_stale_file_records(folder: &Path, done_files: &BTreeSet<PathBuf>) -> Vec<String> {
    let mut removed = Vec::new();
    for r in list(folder) {
        if r.kind != RecordKind::File || r.files.is_empty() {
            continue;
        }
        let stale = r.files.iter().all(|f| done_files.contains(f) || std::fs::symlink_metadata(f).is_err());
        if stale {
            match remove(folder, &r.name) {
                Ok(true) => removed.push(r.name),
                Ok(false) => {}
                Err(e) => tracing::warn!(record = %r.name, "cannot remove a stale quarantine record: {e}"),
            }
        }
    }
    removed
}

/// Writes a study's record `<dir>/reason.txt` and `files.txt` (`dir` is
/// `<quarantine>/<study hash>`; the input stays where it is).
pub fn write_study_record(dir: &Path, uid: &str, reason: &str, files: &[PathBuf]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let text = format!(
        "study_instance_uid: {uid}\nstudy_hash: {}\nquarantined_at: {}\nreason: {reason}\n\
         The input files were left in place; they are listed in files.txt.\n\
         Run the study again with D-Bus Reprocess(study_uid) once the cause is fixed.\n",
        uid_hash(uid),
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    );
    crate::export::write_atomic(&dir.join("reason.txt"), |f| std::io::Write::write_all(f, text.as_bytes()))?;
    let list: String = files.iter().map(|p| format!("{}\n", p.display())).collect();
    write_private(&dir.join("files.txt"), &list)
}

/// The record folder of a file no study can be named from:
/// `<folder>/file-<hash of path, size and time>` (a changed file gets a new one).
pub fn file_record_dir(folder: &Path, path: &Path) -> PathBuf {
    let meta = std::fs::symlink_metadata(path).ok();
    let stamp = meta.as_ref().and_then(|m| m.modified().ok()).map(|t| format!("{t:?}")).unwrap_or_default();
    let key = format!("{}\0{}\0{stamp}", path.display(), meta.map(|m| m.len()).unwrap_or(0));
    folder.join(format!("file-{}", uid_hash(&key)))
}

/// Writes a file's record: `reason.txt` names it by `label` (never its
/// path), `files.txt` (mode 0600) holds its full path.
pub fn write_file_record(dir: &Path, label: &str, reason: &str, path: &Path) -> std::io::Result<()> {
    let text = format!(
        "file: {label}\nquarantined_at: {}\nreason: {reason}\n\
         No study could be named from this file (its header cannot be read); it was left in place.\n\
         Its full path is in files.txt (readable by root only).\n",
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    );
    std::fs::create_dir_all(dir)?;
    crate::export::write_atomic(&dir.join("reason.txt"), |f| std::io::Write::write_all(f, text.as_bytes()))?;
    write_private(&dir.join("files.txt"), &format!("{}\n", path.display()))
}

/// Writes a file only its owner can read (mode 0600): the full input paths,
/// which may name the patient.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    // Mode 0600 before the paths are written.
    crate::export::write_atomic(path, |f| {
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        std::io::Write::write_all(f, text.as_bytes())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_read_listed_and_the_stale_file_ones_removed() {
        let t = tempfile::tempdir().unwrap();
        let q = t.path().join("quarantine");
        let input = t.path().join("in");
        std::fs::create_dir_all(&input).unwrap();
        let kept = input.join("still-bad.dcm");
        let went_in = input.join("late.dcm");
        std::fs::write(&kept, b"x").unwrap();
        std::fs::write(&went_in, b"x").unwrap();
        let write = |name: &str, text: String| {
            std::fs::create_dir_all(q.join(name)).unwrap();
            std::fs::write(q.join(name).join("reason.txt"), text).unwrap();
        };
        write(
            "0123456789ab",
            "study_instance_uid: 1.2.3.4\nstudy_hash: 0123456789ab\nquarantined_at: 2026-12-05T10:00:00Z\nreason: 3 files unreadable\n".into(),
        );
        std::fs::write(q.join("0123456789ab").join("files.txt"), format!("{}\n", kept.display())).unwrap();
        for (name, f) in [("file-aaaaaaaaaaaa", &kept), ("file-bbbbbbbbbbbb", &went_in)] {
            write(name, format!("file: {:?}\nquarantined_at: x\nreason: truncated header\n", f.display().to_string()));
        }
        write("file-cccccccccccc", "file: \"/nowhere/gone.dcm\"\nreason: truncated\n".into());
        std::fs::create_dir_all(q.join("not-a-record")).unwrap();

        let all = list(&q);
        let names: Vec<&str> = all.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["0123456789ab", "file-aaaaaaaaaaaa", "file-bbbbbbbbbbbb", "file-cccccccccccc"]);
        assert_eq!(all[0].kind, RecordKind::Study);
        assert_eq!(all[0].study_uid.as_deref(), Some("1.2.3.4"));
        assert_eq!(all[0].reason, "3 files unreadable");
        assert_eq!(all[0].files, vec![kept.clone()]);
        assert_eq!(all[1].files, vec![kept.clone()]);

        let done: BTreeSet<PathBuf> = [went_in.clone()].into();
        let removed = remove_stale_file_records(&q, &done);
        assert_eq!(removed, ["file-bbbbbbbbbbbb", "file-cccccccccccc"]);
        assert!(q.join("file-aaaaaaaaaaaa").exists() && q.join("0123456789ab").exists());

        assert!(!remove(&q, "../in").unwrap(), "a path is not a record name");
        assert!(input.exists());
        assert!(remove(&q, "0123456789ab").unwrap());
        assert!(!remove(&q, "0123456789ab").unwrap());
    }
}

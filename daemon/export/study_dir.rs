//! The atomic study folder: a study's files are written into a staging
//! folder beside `out/<stem>`, fsynced, and renamed into place in one step
//! (a previous folder is set aside as a replaced folder and removed after).
//! This file is the one owner of the leftover names, `.staging-<stem>-<pid>`
//! and `.replaced-<stem>-<pid>`: it makes them, removes a crashed writer's
//! before a study is written again ([`Staging::begin`]) and at daemon start
//! ([`clean_output_folder`], which also puts back a replaced folder whose
//! swap was cut short), and holds the crash-test hook.
//!
//! Invariant: a study folder appears only by renaming a complete, fsynced
//! staging folder; reprocessing replaces it whole; a failed write leaves
//! nothing behind.

use std::path::{Path, PathBuf};

use crate::queue::uid_hash;

/// An I/O step on a study folder failed.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct FolderError {
    /// The file or folder.
    pub path: PathBuf,
    /// Why.
    pub source: std::io::Error,
}

/// `map_err` of an I/O step on `path`.
fn at(path: &Path) -> impl FnOnce(std::io::Error) -> FolderError {
    move |source| FolderError { path: path.to_path_buf(), source }
}

/// The two kinds of folder a writer leaves beside the study folders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leftover {
    /// `.staging-<stem>-<pid>`: a study folder being written.
    Staging,
    /// `.replaced-<stem>-<pid>`: the previous study folder, set aside during the swap.
    Replaced,
}

impl Leftover {
    const ALL: [Leftover; 2] = [Leftover::Staging, Leftover::Replaced];

    fn prefix(self) -> &'static str {
        match self {
            Leftover::Staging => ".staging-",
            Leftover::Replaced => ".replaced-",
        }
    }

    /// As log lines name it.
    fn name(self) -> &'static str {
        match self {
            Leftover::Staging => "staging",
            Leftover::Replaced => "replaced",
        }
    }

    /// This process's folder of this kind for study `stem` in `out`.
    fn path(self, out: &Path, stem: &str) -> PathBuf {
        out.join(format!("{}{stem}-{}", self.prefix(), std::process::id()))
    }

    /// The kind, study stem and process id (as written) of a leftover's name.
    fn parse(name: &str) -> Option<(Leftover, &str, &str)> {
        Leftover::ALL.into_iter().find_map(|kind| {
            let (stem, pid) = name.strip_prefix(kind.prefix())?.rsplit_once('-')?;
            Some((kind, stem, pid))
        })
    }
}

/// Whether process `pid` is running.
fn running(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// The crash-test hook: with `EDGESEG_TEST_ABORT_AFTER_FILE=N` in the
/// environment, a study folder's writer aborts the process
/// (`std::process::abort`, no clean-up, as a crash or `kill -9` would) right
/// after the N-th file of the staging folder is written. Read only here; for
/// tests of atomicity (docs/report.md).
struct AbortHook {
    after: Option<usize>,
    written: usize,
}

impl AbortHook {
    fn from_env() -> Self {
        let after = std::env::var("EDGESEG_TEST_ABORT_AFTER_FILE").ok().and_then(|v| v.trim().parse().ok());
        AbortHook { after, written: 0 }
    }

    /// One more file is in the staging folder.
    fn file_done(&mut self) {
        self.written += 1;
        if self.after == Some(self.written) {
            tracing::warn!("EDGESEG_TEST_ABORT_AFTER_FILE={}: aborting as a crash would", self.written);
            std::process::abort();
        }
    }
}

/// A study folder being written: an empty staging folder to fill, then
/// [`Staging::commit`]. Dropped without a commit (a failed write), the
/// staging folder is removed.
pub struct Staging {
    out: PathBuf,
    stem: String,
    dir: PathBuf,
    hook: AbortHook,
    committed: bool,
}

impl Staging {
    /// Starts writing `out/<stem>`: creates `out`, removes what a crashed
    /// writer of this study left there, and creates an empty staging folder
    /// (mode 0750).
    pub fn begin(out: &Path, stem: &str) -> Result<Staging, FolderError> {
        std::fs::create_dir_all(out).map_err(at(out))?;
        remove_stale(out, stem);
        let hook = AbortHook::from_env();
        let dir = Leftover::Staging.path(out, stem);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(at(&dir))?;
        }
        let staging = Staging { out: out.to_path_buf(), stem: stem.to_string(), dir, hook, committed: false };
        super::create_output_dir(&staging.dir).map_err(at(&staging.dir))?;
        Ok(staging)
    }

    /// The staging folder, where the files go.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// One more file is complete in the staging folder (the crash-test hook
    /// counts them).
    pub fn file_done(&mut self) {
        self.hook.file_done();
    }

    /// fsyncs the staging folder and renames it to `out/<stem>`, replacing a
    /// previous folder whole; returns `out/<stem>`.
    pub fn commit(mut self) -> Result<PathBuf, FolderError> {
        swap_into_place(&self.out, &self.stem, &self.dir)?;
        self.committed = true;
        Ok(self.out.join(&self.stem))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            // A failed write (a full disk) leaves nothing behind.
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// fsyncs a complete staging folder and renames it to `out/<stem>`,
/// replacing a previous folder whole.
pub fn swap_into_place(out: &Path, stem: &str, staging: &Path) -> Result<(), FolderError> {
    let final_dir = out.join(stem);
    std::fs::File::open(staging).and_then(|d| d.sync_all()).map_err(at(staging))?;
    if final_dir.exists() {
        let old = Leftover::Replaced.path(out, stem);
        std::fs::rename(&final_dir, &old).map_err(at(&final_dir))?;
        std::fs::rename(staging, &final_dir).map_err(at(&final_dir))?;
        std::fs::remove_dir_all(&old).map_err(at(&old))?;
    } else {
        std::fs::rename(staging, &final_dir).map_err(at(&final_dir))?;
    }
    std::fs::File::open(out).and_then(|d| d.sync_all()).map_err(at(out))?;
    Ok(())
}

/// Removes what a crashed writer of this study left in `out`: its staging
/// and replaced folders of processes no longer running (or of this one). A
/// live writer's folders are left alone. Failures are logged, not fatal:
/// they cost disk space, never correctness.
fn remove_stale(out: &Path, stem: &str) {
    let Ok(entries) = std::fs::read_dir(out) else { return };
    let me = std::process::id();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((_, s, pid)) = Leftover::parse(&name) else { continue };
        let Some(pid) = pid.parse::<u32>().ok().filter(|_| s == stem) else { continue };
        if pid == me || !running(pid) {
            match std::fs::remove_dir_all(e.path()) {
                Ok(()) => tracing::info!("removed a crashed writer's leftover folder (study {})", uid_hash(stem)),
                Err(err) => {
                    tracing::warn!("cannot remove a crashed writer's leftover folder (study {}): {err}", uid_hash(stem))
                }
            }
        }
    }
}

/// Removes what a crashed run left in the output folder: staging folders of
/// processes that are gone, and a replaced folder whose swap was cut short
/// (put back when the new one never arrived). The daemon calls it at start.
pub fn clean_output_folder(out: &Path) {
    let Ok(entries) = std::fs::read_dir(out) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((kind, stem, pid)) = Leftover::parse(&name) else { continue };
        if pid.parse::<u32>().is_ok_and(|p| running(p) && p != std::process::id()) {
            continue;
        }
        let path = e.path();
        let final_dir = out.join(stem);
        let r = if kind == Leftover::Replaced && !final_dir.exists() {
            std::fs::rename(&path, &final_dir)
        } else {
            std::fs::remove_dir_all(&path)
        };
        let kind = kind.name();
        match r {
            Ok(()) => {
                tracing::info!("{kind} folder of study {} left by an interrupted run, cleaned up", uid_hash(stem))
            }
            Err(e) => tracing::warn!("{kind} folder of study {}: cannot clean up: {e}", uid_hash(stem)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process id that is not running (pid_max is below 2^22).
    const DEAD: u32 = 4_194_999;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn leftover_names_parse_back() {
        let out = Path::new("/out");
        let me = std::process::id().to_string();
        for kind in Leftover::ALL {
            let p = kind.path(out, "uid-0a1b");
            let name = p.file_name().unwrap().to_str().unwrap();
            assert_eq!(Leftover::parse(name), Some((kind, "uid-0a1b", me.as_str())));
        }
        assert_eq!(Leftover::parse("1.2.3"), None);
        assert_eq!(Leftover::parse(".staging-"), None);
    }

    #[test]
    fn cleanup_restores_an_interrupted_swap_and_removes_dead_staging() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path();
        std::fs::create_dir_all(out.join(format!(".staging-1.2-{DEAD}"))).unwrap();
        std::fs::create_dir_all(out.join(format!(".replaced-3.4-{DEAD}"))).unwrap();
        std::fs::write(out.join(format!(".replaced-3.4-{DEAD}")).join("report.json"), b"{}").unwrap();
        std::fs::create_dir_all(out.join("5.6")).unwrap();
        std::fs::create_dir_all(out.join(format!(".replaced-5.6-{DEAD}"))).unwrap();
        clean_output_folder(out);
        assert_eq!(names(out), vec!["3.4".to_string(), "5.6".to_string()]);
        assert!(out.join("3.4/report.json").exists(), "the previous output is put back");
    }

    #[test]
    fn staging_commits_whole_or_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        // A dead writer's leftovers of this study go; another study's stay.
        std::fs::create_dir_all(out.join(format!(".staging-1.2-{DEAD}"))).unwrap();
        std::fs::create_dir_all(out.join(format!(".replaced-1.2-{DEAD}"))).unwrap();
        std::fs::create_dir_all(out.join(format!(".staging-7.8-{DEAD}"))).unwrap();
        let mut s = Staging::begin(&out, "1.2").unwrap();
        std::fs::write(s.dir().join("a.txt"), b"1").unwrap();
        s.file_done();
        assert_eq!(s.commit().unwrap(), out.join("1.2"));
        assert_eq!(names(&out), vec![format!(".staging-7.8-{DEAD}"), "1.2".into()]);
        // Again: the folder is replaced whole.
        let s = Staging::begin(&out, "1.2").unwrap();
        std::fs::write(s.dir().join("b.txt"), b"2").unwrap();
        s.commit().unwrap();
        assert_eq!(names(&out.join("1.2")), vec!["b.txt".to_string()]);
        // Dropped without a commit: nothing new, the old folder untouched.
        let s = Staging::begin(&out, "1.2").unwrap();
        std::fs::write(s.dir().join("c.txt"), b"3").unwrap();
        drop(s);
        assert_eq!(names(&out), vec![format!(".staging-7.8-{DEAD}"), "1.2".into()]);
        assert_eq!(names(&out.join("1.2")), vec!["b.txt".to_string()]);
    }
}

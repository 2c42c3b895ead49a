//! Retention (`[retention]`, off by default): the inputs of studies done
//! more than `days` ago deleted or moved, checked every ten minutes. The
//! only place the daemon touches its input.

use std::path::Path;
use std::time::{Duration, Instant};

use super::Daemon;
use crate::config::{self, RetentionAction};
use crate::queue::{self, Journal, QueueError};

/// When retention last ran.
#[derive(Default)]
pub(crate) struct Retention {
    last_pass: Option<Instant>,
}

impl Retention {
    /// Run at the next tick (the configuration changed).
    pub(crate) fn rerun(&mut self) {
        self.last_pass = None;
    }
}

impl Daemon<'_> {
    pub(super) fn retention(&mut self) {
        let r = self.config.retention.clone();
        if r.days == 0 || self.retention.last_pass.is_some_and(|t| t.elapsed() < Duration::from_secs(600)) {
            return;
        }
        self.retention.last_pass = Some(Instant::now());
        if let Err(e) = retention_pass(&self.journal, &r, queue::now()) {
            tracing::error!("retention: {e}");
        }
    }
}

/// Deletes or moves the inputs of studies done more than `r.days` before
/// `now` (moved ones to `move_to/<study hash>/`); returns how many studies were handled.
pub fn retention_pass(journal: &Journal, r: &config::RetentionConfig, now: f64) -> Result<usize, QueueError> {
    if r.days == 0 {
        return Ok(0);
    }
    let due = journal.due_for_retention(now - f64::from(r.days) * 86400.0)?;
    let mut handled = 0;
    for e in due {
        let mut all_ok = true;
        for f in &e.files {
            let res = match (r.action, &r.move_to) {
                (RetentionAction::Move, Some(to)) => {
                    let dir = to.join(&e.hash);
                    let dest = dir.join(f.path.file_name().unwrap_or_default());
                    std::fs::create_dir_all(&dir)
                        .and_then(|_| std::fs::rename(&f.path, &dest).or_else(|_| move_by_copy(&f.path, &dest)))
                }
                _ => std::fs::remove_file(&f.path),
            };
            match res {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => {
                    all_ok = false;
                    tracing::warn!("study {}: retention of one input file failed: {err}", e.hash);
                }
            }
        }
        if all_ok {
            journal.mark_retained(&e.uid)?;
            handled += 1;
            let what = match r.action {
                RetentionAction::Delete => "deleted",
                RetentionAction::Move => "moved",
            };
            tracing::info!(study = %e.hash, "study {}: inputs {what} after {} days", e.hash, r.days);
        }
    }
    Ok(handled)
}

/// Copies a file then removes the original (a move across file systems).
fn move_by_copy(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::copy(from, to)?;
    std::fs::File::open(to)?.sync_all()?;
    std::fs::remove_file(from)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::queue::{FileSig, uid_hash};

    fn done_study(j: &Journal, dir: &Path, uid: &str) -> Vec<PathBuf> {
        let paths: Vec<PathBuf> = (0..3).map(|i| dir.join(format!("{uid}-{i}.dcm"))).collect();
        for p in &paths {
            std::fs::write(p, b"x").unwrap();
        }
        let sigs: Vec<FileSig> = paths.iter().map(|p| FileSig { path: p.clone(), size: 1, mtime_ns: 1 }).collect();
        j.observe(uid, &sigs, uid).unwrap();
        j.mark_ready(uid, &sigs, uid).unwrap();
        j.start(uid).unwrap();
        j.done(uid, Path::new("/out")).unwrap();
        paths
    }

    #[test]
    fn retention_deletes_or_moves_after_the_days() {
        let d = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(&d.path().join("j.sqlite")).unwrap();
        let a = done_study(&j, d.path(), "1.1");
        let mut r = config::RetentionConfig { days: 2, ..Default::default() };
        assert_eq!(retention_pass(&j, &r, queue::now() + 86400.0).unwrap(), 0, "not yet");
        assert!(a.iter().all(|p| p.exists()));
        assert_eq!(retention_pass(&j, &r, queue::now() + 3.0 * 86400.0).unwrap(), 1);
        assert!(a.iter().all(|p| !p.exists()));
        assert!(j.get("1.1").unwrap().unwrap().retained);
        // Handled once; files gone from a done study do not make it run again.
        assert_eq!(retention_pass(&j, &r, queue::now() + 3.0 * 86400.0).unwrap(), 0);
        let b = done_study(&j, d.path(), "2.2");
        r.action = RetentionAction::Move;
        r.move_to = Some(d.path().join("archive"));
        assert_eq!(retention_pass(&j, &r, queue::now() + 3.0 * 86400.0).unwrap(), 1);
        let moved = d.path().join("archive").join(uid_hash("2.2"));
        for p in &b {
            assert!(!p.exists());
            assert!(moved.join(p.file_name().unwrap()).exists());
        }
        r.days = 0;
        assert_eq!(retention_pass(&j, &r, f64::INFINITY).unwrap(), 0, "off");
    }
}

//! The durable queue: a SQLite journal (WAL, `synchronous=FULL`) of studies
//! and their states, keyed by StudyInstanceUID.
//!
//! ```text
//! seen ──(series complete)──▶ ready ──▶ running ──▶ done
//!   ▲                           ▲          │ ├──▶ failed       (transient errors, attempts used up)
//!   │                           └─(retry)──┘ └──▶ quarantined  (bad input)
//!   └──── new or changed files of a done/failed/quarantined study; Reprocess ──▶ ready
//! ```
//!
//! Every transition is one committed transaction, made *before* the daemon
//! acts on it; a crash therefore leaves each study in a state it can resume
//! from. On open, `running` studies go back to `ready` and restart from the
//! beginning (outputs are replaced whole by an atomic rename, so a rerun is
//! never a second copy).
//!
//! Rule for new files: when files of a study change after it finished, it is
//! seen again and processed again when complete (its output folder replaced
//! whole); while it is running, it is queued again when the run ends.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};

/// Errors of the journal.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// SQLite.
    #[error("journal {path}: {source}")]
    Db {
        /// The journal file.
        path: PathBuf,
        /// Why.
        source: rusqlite::Error,
    },
    /// A stored value is unreadable.
    #[error("journal {path}: {reason}")]
    Corrupt {
        /// The journal file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// A study's state in the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StudyState {
    /// Files seen, not yet complete.
    Seen,
    /// Complete, waiting for the GPU.
    Ready,
    /// Being processed.
    Running,
    /// Outputs written.
    Done,
    /// Transient errors until the attempts ran out.
    Failed,
    /// Bad input, kept in quarantine.
    Quarantined,
}

impl StudyState {
    /// Every state.
    pub const ALL: [StudyState; 6] = [
        StudyState::Seen,
        StudyState::Ready,
        StudyState::Running,
        StudyState::Done,
        StudyState::Failed,
        StudyState::Quarantined,
    ];

    /// The name stored in the journal.
    pub fn as_str(self) -> &'static str {
        match self {
            StudyState::Seen => "seen",
            StudyState::Ready => "ready",
            StudyState::Running => "running",
            StudyState::Done => "done",
            StudyState::Failed => "failed",
            StudyState::Quarantined => "quarantined",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// A finished state (done, failed, quarantined).
    pub fn is_final(self) -> bool {
        matches!(self, StudyState::Done | StudyState::Failed | StudyState::Quarantined)
    }
}

/// One input file as the watcher last saw it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct FileSig {
    /// The path.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, ns since the epoch.
    pub mtime_ns: u128,
}

/// The short hash a study is named by in logs: the first 12 hex digits of
/// SHA-256 of its StudyInstanceUID (no patient data).
pub fn uid_hash(uid: &str) -> String {
    let d = Sha256::digest(uid.as_bytes());
    d.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// Seconds since the epoch.
pub fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// One study as the journal has it.
#[derive(Debug, Clone, PartialEq)]
pub struct StudyEntry {
    /// StudyInstanceUID.
    pub uid: String,
    /// [`uid_hash`] of it.
    pub hash: String,
    /// State.
    pub state: StudyState,
    /// Runs started.
    pub attempts: u32,
    /// Last error, if any.
    pub last_error: Option<String>,
    /// Times the outputs were written (done transitions).
    pub completions: u32,
    /// First seen (epoch seconds).
    pub created: f64,
    /// Last state change (epoch seconds).
    pub updated: f64,
    /// Not to be started before (retry backoff, epoch seconds).
    pub not_before: f64,
    /// Output folder once done; quarantine folder once quarantined.
    pub output_dir: Option<PathBuf>,
    /// The input files.
    pub files: Vec<FileSig>,
    /// Fingerprint of the input files (paths, sizes, times).
    pub fingerprint: String,
    /// Inputs removed or moved by retention.
    pub retained: bool,
}

/// Starts after which a study found `running` at startup is failed instead of
/// restarted (it may be what crashes the daemon); Reprocess runs it again.
pub const MAX_INTERRUPTED_ATTEMPTS: u32 = 20;

/// What [`Journal::observe`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// A study not in the journal before.
    New,
    /// Same files as recorded.
    Unchanged,
    /// Different files than recorded (the study is `seen` again unless running).
    Changed,
}

/// The journal.
pub struct Journal {
    conn: Connection,
    path: PathBuf,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS studies (
    uid TEXT PRIMARY KEY,
    hash TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    completions INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    not_before REAL NOT NULL DEFAULT 0,
    output_dir TEXT,
    files TEXT NOT NULL DEFAULT '[]',
    fingerprint TEXT NOT NULL DEFAULT '',
    requeue INTEGER NOT NULL DEFAULT 0,
    retained INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS studies_state ON studies(state, not_before, updated);
CREATE TABLE IF NOT EXISTS daemon_starts (at REAL NOT NULL);
";

const COLUMNS: &str = "uid, hash, state, attempts, last_error, completions, created, updated, not_before, output_dir, files, fingerprint, retained";

impl Journal {
    /// Opens (creates) the journal and recovers from a crash: `running`
    /// studies go back to `ready` (those started [`MAX_INTERRUPTED_ATTEMPTS`]
    /// times or more are failed instead). Returns the journal and how many were recovered.
    pub fn open(path: &Path) -> Result<(Self, usize), QueueError> {
        let j = Self::connect(path, false)?;
        j.conn.execute_batch(SCHEMA).map_err(|e| j.db(e))?;
        // A study that was running at every one of its last many starts may be
        // what stops the daemon (a crash loop): it is failed, not retried.
        j.conn
            .execute(
                "UPDATE studies SET state = 'failed', updated = ?1, last_error = ?2 WHERE state = 'running' AND attempts >= ?3",
                params![
                    now(),
                    format!("the daemon stopped during each of its last {MAX_INTERRUPTED_ATTEMPTS} or more attempts"),
                    MAX_INTERRUPTED_ATTEMPTS
                ],
            )
            .map_err(|e| j.db(e))?;
        let n = j
            .conn
            .execute(
                "UPDATE studies SET state = 'ready', not_before = 0, updated = ?1 WHERE state = 'running'",
                params![now()],
            )
            .map_err(|e| j.db(e))?;
        Ok((j, n))
    }

    /// Records one start of the daemon and returns how many starts the journal
    /// holds (the `edgeseg_starts_total` counter, which survives restarts, so
    /// a crash loop or watchdog restarts show up in monitoring).
    pub fn record_start(&self) -> Result<u64, QueueError> {
        self.conn.execute("INSERT INTO daemon_starts (at) VALUES (?1)", params![now()]).map_err(|e| self.db(e))?;
        let n: i64 =
            self.conn.query_row("SELECT COUNT(*) FROM daemon_starts", [], |r| r.get(0)).map_err(|e| self.db(e))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// When the oldest study still waiting (seen or ready) was first seen, and
    /// since when the study running now runs (epoch seconds; None when none).
    pub fn waiting_and_running_since(&self) -> Result<(Option<f64>, Option<f64>), QueueError> {
        let one = |sql: &str| -> Result<Option<f64>, QueueError> {
            self.conn.query_row(sql, [], |r| r.get::<_, Option<f64>>(0)).map_err(|e| self.db(e))
        };
        Ok((
            one("SELECT MIN(created) FROM studies WHERE state IN ('seen', 'ready')")?,
            one("SELECT MIN(updated) FROM studies WHERE state = 'running'")?,
        ))
    }

    /// Opens an existing journal read-only (status tools and tests), without recovery.
    pub fn inspect(path: &Path) -> Result<Self, QueueError> {
        Self::connect(path, true)
    }

    fn connect(path: &Path, read_only: bool) -> Result<Self, QueueError> {
        let db = |source| QueueError::Db { path: path.to_path_buf(), source };
        let conn = if read_only {
            Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(db)?
        } else {
            Connection::open(path).map_err(db)?
        };
        conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(db)?;
        if !read_only {
            conn.pragma_update(None, "journal_mode", "WAL").map_err(db)?;
            conn.pragma_update(None, "synchronous", "FULL").map_err(db)?;
        }
        Ok(Self { conn, path: path.to_path_buf() })
    }

    fn db(&self, source: rusqlite::Error) -> QueueError {
        QueueError::Db { path: self.path.clone(), source }
    }

    fn row(&self, r: &rusqlite::Row<'_>) -> rusqlite::Result<(StudyEntry, String)> {
        let state: String = r.get(2)?;
        let files: String = r.get(10)?;
        let paths: Vec<FileSig> = serde_json::from_str(&files).unwrap_or_default();
        Ok((
            StudyEntry {
                uid: r.get(0)?,
                hash: r.get(1)?,
                state: StudyState::parse(&state).unwrap_or(StudyState::Seen),
                attempts: r.get(3)?,
                last_error: r.get(4)?,
                completions: r.get(5)?,
                created: r.get(6)?,
                updated: r.get(7)?,
                not_before: r.get(8)?,
                output_dir: r.get::<_, Option<String>>(9)?.map(PathBuf::from),
                files: paths,
                fingerprint: r.get(11)?,
                retained: r.get::<_, i64>(12)? != 0,
            },
            state,
        ))
    }

    fn query(&self, sql_tail: &str, p: impl rusqlite::Params) -> Result<Vec<StudyEntry>, QueueError> {
        let sql = format!("SELECT {COLUMNS} FROM studies {sql_tail}");
        let mut st = self.conn.prepare(&sql).map_err(|e| self.db(e))?;
        let rows = st.query_map(p, |r| self.row(r)).map_err(|e| self.db(e))?;
        let mut out = Vec::new();
        for r in rows {
            let (e, state) = r.map_err(|e| self.db(e))?;
            if StudyState::parse(&state).is_none() {
                return Err(QueueError::Corrupt {
                    path: self.path.clone(),
                    reason: format!("study {}: unknown state {state:?}", e.hash),
                });
            }
            out.push(e);
        }
        Ok(out)
    }

    /// The study with this UID.
    pub fn get(&self, uid: &str) -> Result<Option<StudyEntry>, QueueError> {
        Ok(self.query("WHERE uid = ?1", params![uid])?.into_iter().next())
    }

    /// The studies waiting or running (seen, ready, running), oldest first.
    pub fn active(&self) -> Result<Vec<StudyEntry>, QueueError> {
        self.query("WHERE state IN ('seen', 'ready', 'running') ORDER BY created, uid", [])
    }

    /// The study of this [`uid_hash`], if the journal has one.
    pub fn by_hash(&self, hash: &str) -> Result<Option<StudyEntry>, QueueError> {
        Ok(self.query("WHERE hash = ?1", params![hash])?.into_iter().next())
    }

    /// A quarantined study an operator cleared: `failed`, with `note` as its
    /// last error (it leaves the quarantine count; Reprocess still runs it).
    /// Returns false when the study is not quarantined.
    pub fn dismiss(&self, uid: &str, note: &str) -> Result<bool, QueueError> {
        match self.get(uid)? {
            Some(e) if e.state == StudyState::Quarantined => {
                self.set(uid, StudyState::Failed, ", last_error = ?2", &[&note])?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Every study, oldest first.
    pub fn all(&self) -> Result<Vec<StudyEntry>, QueueError> {
        self.query("ORDER BY created, uid", [])
    }

    /// Studies per state.
    pub fn count(&self, state: StudyState) -> Result<u64, QueueError> {
        self.conn
            .query_row("SELECT COUNT(*) FROM studies WHERE state = ?1", params![state.as_str()], |r| r.get::<_, i64>(0))
            .map(|n| n.max(0) as u64)
            .map_err(|e| self.db(e))
    }

    /// Studies waiting (seen or ready).
    pub fn depth(&self) -> Result<u64, QueueError> {
        Ok(self.count(StudyState::Seen)? + self.count(StudyState::Ready)?)
    }

    fn set(&self, uid: &str, state: StudyState, extra: &str, p: &[&dyn rusqlite::ToSql]) -> Result<(), QueueError> {
        let sql = format!("UPDATE studies SET state = '{}', updated = {}{extra} WHERE uid = ?1", state.as_str(), now());
        let mut all: Vec<&dyn rusqlite::ToSql> = vec![&uid];
        all.extend_from_slice(p);
        self.conn.execute(&sql, all.as_slice()).map_err(|e| self.db(e))?;
        Ok(())
    }

    /// Records the current files of a study. New studies are `seen`. A study
    /// in `seen` or `ready` whose files changed is `seen` again; a finished one
    /// only when files were added or rewritten (files removed, e.g. by
    /// retention, change nothing); a running one keeps running and is queued
    /// again when the watcher reports it complete ([`Journal::mark_ready`]).
    pub fn observe(&self, uid: &str, files: &[FileSig], fingerprint: &str) -> Result<Observed, QueueError> {
        let files_json = serde_json::to_string(files).unwrap_or_else(|_| "[]".into());
        match self.get(uid)? {
            None => {
                let t = now();
                self.conn
                    .execute(
                        "INSERT INTO studies (uid, hash, state, created, updated, files, fingerprint) VALUES (?1, ?2, 'seen', ?3, ?3, ?4, ?5)",
                        params![uid, uid_hash(uid), t, files_json, fingerprint],
                    )
                    .map_err(|e| self.db(e))?;
                Ok(Observed::New)
            }
            Some(e) if e.fingerprint == fingerprint => Ok(Observed::Unchanged),
            Some(e)
                if (e.state.is_final() || e.state == StudyState::Running)
                    && files.iter().all(|f| e.files.contains(f)) =>
            {
                Ok(Observed::Unchanged)
            }
            Some(e) if e.state == StudyState::Running => {
                // New or rewritten files while it runs: this run's result is
                // stale; when it ends the study waits (`seen`) for the watcher
                // to call it complete again (requeue 1), or is `ready` at once
                // if that happened during the run already (requeue 2).
                self.conn
                    .execute(
                        "UPDATE studies SET files = ?2, fingerprint = ?3, requeue = MAX(requeue, 1) WHERE uid = ?1",
                        params![uid, files_json, fingerprint],
                    )
                    .map_err(|e| self.db(e))?;
                Ok(Observed::Changed)
            }
            Some(e) => {
                let reset = if e.state.is_final() { ", attempts = 0, not_before = 0, retained = 0" } else { "" };
                self.set(
                    uid,
                    StudyState::Seen,
                    &format!(", files = ?2, fingerprint = ?3{reset}"),
                    &[&files_json, &fingerprint],
                )?;
                Ok(Observed::Changed)
            }
        }
    }

    /// A `seen` study is complete: `ready`, with the files it will run on.
    /// A running study is queued again when its run ends. Returns whether the
    /// study is (or will be) ready.
    pub fn mark_ready(&self, uid: &str, files: &[FileSig], fingerprint: &str) -> Result<bool, QueueError> {
        let Some(e) = self.get(uid)? else { return Ok(false) };
        let files_json = serde_json::to_string(files).unwrap_or_else(|_| "[]".into());
        match e.state {
            StudyState::Seen => {
                self.set(
                    uid,
                    StudyState::Ready,
                    ", files = ?2, fingerprint = ?3, not_before = 0",
                    &[&files_json, &fingerprint],
                )?;
                Ok(true)
            }
            StudyState::Running if e.fingerprint == fingerprint => {
                self.conn
                    .execute("UPDATE studies SET requeue = 2 WHERE uid = ?1", params![uid])
                    .map_err(|e| self.db(e))?;
                Ok(true)
            }
            StudyState::Ready => Ok(true),
            _ => Ok(false),
        }
    }

    /// The next study to run: the oldest `ready` one whose backoff has passed.
    pub fn next_ready(&self, at: f64, skip: &[String]) -> Result<Option<StudyEntry>, QueueError> {
        let limit = skip.len() as i64 + 1;
        let list = self
            .query("WHERE state = 'ready' AND not_before <= ?1 ORDER BY updated, uid LIMIT ?2", params![at, limit])?;
        Ok(list.into_iter().find(|e| !skip.contains(&e.uid)))
    }

    /// `ready` → `running`, one more attempt.
    pub fn start(&self, uid: &str) -> Result<StudyEntry, QueueError> {
        self.set(uid, StudyState::Running, ", attempts = attempts + 1, requeue = 0", &[])?;
        self.get(uid)?.ok_or_else(|| QueueError::Corrupt {
            path: self.path.clone(),
            reason: format!("study {} vanished", uid_hash(uid)),
        })
    }

    /// Ends a run: the final state, unless new files came while it ran (then
    /// `ready` again, or `seen` until they have settled).
    fn finish(
        &self,
        uid: &str,
        state: StudyState,
        extra: &str,
        p: &[&dyn rusqlite::ToSql],
    ) -> Result<StudyState, QueueError> {
        let requeue: i64 = self
            .conn
            .query_row("SELECT requeue FROM studies WHERE uid = ?1", params![uid], |r| r.get(0))
            .optional()
            .map_err(|e| self.db(e))?
            .unwrap_or(0);
        if requeue != 0 && state.is_final() {
            // Files changed during the run: complete again already (2) → `ready`;
            // changed but not yet settled (1) → `seen`, for the watcher's next `Ready`.
            let next = if requeue >= 2 { StudyState::Ready } else { StudyState::Seen };
            self.set(uid, next, &format!("{extra}, requeue = 0, attempts = 0, not_before = 0"), p)?;
            return Ok(next);
        }
        self.set(uid, state, extra, p)?;
        Ok(state)
    }

    /// `running` → `done` with its output folder.
    pub fn done(&self, uid: &str, output_dir: &Path) -> Result<StudyState, QueueError> {
        let dir = output_dir.to_string_lossy().into_owned();
        self.finish(
            uid,
            StudyState::Done,
            ", output_dir = ?2, last_error = NULL, completions = completions + 1",
            &[&dir],
        )
    }

    /// `running` → `ready` after `retry_in` seconds, or `failed` when `retry_in` is None.
    pub fn failed(&self, uid: &str, error: &str, retry_in: Option<f64>) -> Result<StudyState, QueueError> {
        match retry_in {
            Some(s) => {
                let at = now() + s;
                self.finish(uid, StudyState::Ready, ", last_error = ?2, not_before = ?3", &[&error, &at])
            }
            None => self.finish(uid, StudyState::Failed, ", last_error = ?2", &[&error]),
        }
    }

    /// → `quarantined` with the reason and the quarantine folder.
    pub fn quarantine(&self, uid: &str, reason: &str, dir: &Path) -> Result<StudyState, QueueError> {
        let d = dir.to_string_lossy().into_owned();
        self.finish(uid, StudyState::Quarantined, ", last_error = ?2, output_dir = ?3", &[&reason, &d])
    }

    /// A finished (or waiting) study back to `ready` (D-Bus Reprocess). Returns
    /// false for an unknown or running study.
    pub fn reprocess(&self, uid: &str) -> Result<bool, QueueError> {
        match self.get(uid)? {
            Some(e) if e.state != StudyState::Running && !e.files.is_empty() => {
                self.set(uid, StudyState::Ready, ", attempts = 0, not_before = 0", &[])?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Done studies finished before `before` whose inputs retention has not handled.
    pub fn due_for_retention(&self, before: f64) -> Result<Vec<StudyEntry>, QueueError> {
        self.query("WHERE state = 'done' AND retained = 0 AND updated < ?1 ORDER BY updated", params![before])
    }

    /// Marks a study's inputs as handled by retention.
    pub fn mark_retained(&self, uid: &str) -> Result<(), QueueError> {
        self.conn.execute("UPDATE studies SET retained = 1 WHERE uid = ?1", params![uid]).map_err(|e| self.db(e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(n: usize) -> Vec<FileSig> {
        (0..n).map(|i| FileSig { path: PathBuf::from(format!("/e/{i}.dcm")), size: 10, mtime_ns: 5 }).collect()
    }

    #[test]
    fn starts_survive_reopening_and_ages_follow_the_states() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.sqlite");
        {
            let (j, _) = Journal::open(&path).unwrap();
            assert_eq!(j.record_start().unwrap(), 1);
            assert_eq!(j.waiting_and_running_since().unwrap(), (None, None));
            j.observe("1.2.3", &files(2), "fp").unwrap();
            let (waiting, running) = j.waiting_and_running_since().unwrap();
            assert!(waiting.is_some_and(|t| t > 0.0) && running.is_none());
            j.mark_ready("1.2.3", &files(2), "fp").unwrap();
            j.start("1.2.3").unwrap();
            let (waiting, running) = j.waiting_and_running_since().unwrap();
            assert!(waiting.is_none() && running.is_some_and(|t| t > 0.0));
        }
        let (j, _) = Journal::open(&path).unwrap();
        assert_eq!(j.record_start().unwrap(), 2, "a restart counts on from the journal");
    }

    #[test]
    fn lifecycle_and_recovery() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("j.sqlite");
        {
            let (j, n) = Journal::open(&p).unwrap();
            assert_eq!(n, 0);
            assert_eq!(j.observe("1.2.3", &files(2), "a").unwrap(), Observed::New);
            assert_eq!(j.observe("1.2.3", &files(2), "a").unwrap(), Observed::Unchanged);
            assert_eq!(j.depth().unwrap(), 1);
            assert!(j.mark_ready("1.2.3", &files(2), "a").unwrap());
            let e = j.next_ready(now(), &[]).unwrap().unwrap();
            assert_eq!(e.uid, "1.2.3");
            assert_eq!(j.start("1.2.3").unwrap().attempts, 1);
            assert!(j.next_ready(now(), &[]).unwrap().is_none());
        }
        // Crash while running: back to ready.
        let (j, n) = Journal::open(&p).unwrap();
        assert_eq!(n, 1);
        assert_eq!(j.get("1.2.3").unwrap().unwrap().state, StudyState::Ready);
        j.start("1.2.3").unwrap();
        assert_eq!(j.failed("1.2.3", "oom", Some(100.0)).unwrap(), StudyState::Ready);
        assert!(j.next_ready(now(), &[]).unwrap().is_none(), "backoff");
        assert!(j.next_ready(now() + 200.0, &[]).unwrap().is_some());
        j.start("1.2.3").unwrap();
        assert_eq!(j.done("1.2.3", Path::new("/out/1.2.3")).unwrap(), StudyState::Done);
        let e = j.get("1.2.3").unwrap().unwrap();
        assert_eq!((e.attempts, e.completions, e.last_error), (3, 1, None));
        assert_eq!(e.hash, uid_hash("1.2.3"));
        // New files after done: seen again, attempts reset.
        assert_eq!(j.observe("1.2.3", &files(3), "b").unwrap(), Observed::Changed);
        let e = j.get("1.2.3").unwrap().unwrap();
        assert_eq!((e.state, e.attempts, e.files.len()), (StudyState::Seen, 0, 3));
        // Files removed from a finished study (retention) change nothing.
        j.mark_ready("1.2.3", &files(3), "b").unwrap();
        j.start("1.2.3").unwrap();
        j.done("1.2.3", Path::new("/out/1.2.3")).unwrap();
        assert_eq!(j.observe("1.2.3", &files(1), "c").unwrap(), Observed::Unchanged);
        assert_eq!(j.get("1.2.3").unwrap().unwrap().state, StudyState::Done);
    }

    /// Files that change while a study runs make its result stale: the run
    /// ends `seen` (the watcher calls it complete again later) or `ready`
    /// (it already did during the run), never `done` for good.
    #[test]
    fn files_changed_during_a_run_run_it_again() {
        let d = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(&d.path().join("j.sqlite")).unwrap();
        j.observe("9.9", &files(2), "a").unwrap();
        j.mark_ready("9.9", &files(2), "a").unwrap();
        j.start("9.9").unwrap();
        // A sixth slice becomes readable mid-run; the run ends before the watcher settles it.
        assert_eq!(j.observe("9.9", &files(3), "b").unwrap(), Observed::Changed);
        assert_eq!(j.done("9.9", Path::new("/out/9.9")).unwrap(), StudyState::Seen);
        let e = j.get("9.9").unwrap().unwrap();
        assert_eq!((e.completions, e.files.len(), e.attempts), (1, 3, 0));
        assert!(j.mark_ready("9.9", &files(3), "b").unwrap());
        j.start("9.9").unwrap();
        // Changed and settled again during this run: ready at once when it ends.
        j.observe("9.9", &files(4), "c").unwrap();
        assert!(j.mark_ready("9.9", &files(4), "c").unwrap());
        assert_eq!(j.done("9.9", Path::new("/out/9.9")).unwrap(), StudyState::Ready);
        j.start("9.9").unwrap();
        assert_eq!(j.done("9.9", Path::new("/out/9.9")).unwrap(), StudyState::Done);
        assert_eq!(j.get("9.9").unwrap().unwrap().completions, 3);
    }

    #[test]
    fn crash_loop_is_failed_at_recovery() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("j.sqlite");
        {
            let (j, _) = Journal::open(&p).unwrap();
            j.observe("7", &files(1), "a").unwrap();
            j.mark_ready("7", &files(1), "a").unwrap();
            j.start("7").unwrap();
        }
        for _ in 1..MAX_INTERRUPTED_ATTEMPTS {
            let (j, n) = Journal::open(&p).unwrap();
            assert_eq!(n, 1);
            j.start("7").unwrap();
        }
        let (j, n) = Journal::open(&p).unwrap();
        assert_eq!(n, 0);
        let e = j.get("7").unwrap().unwrap();
        assert_eq!(e.state, StudyState::Failed);
        assert!(e.last_error.unwrap().contains("stopped during"));
    }

    #[test]
    fn changes_while_running_requeue() {
        let d = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(&d.path().join("j.sqlite")).unwrap();
        j.observe("9", &files(1), "a").unwrap();
        j.mark_ready("9", &files(1), "a").unwrap();
        j.start("9").unwrap();
        assert_eq!(j.observe("9", &files(2), "b").unwrap(), Observed::Changed);
        assert!(j.mark_ready("9", &files(2), "b").unwrap());
        assert_eq!(j.done("9", Path::new("/o")).unwrap(), StudyState::Ready);
        j.start("9").unwrap();
        assert_eq!(j.quarantine("9", "bad", Path::new("/q")).unwrap(), StudyState::Quarantined);
        assert_eq!(j.count(StudyState::Quarantined).unwrap(), 1);
        assert!(j.reprocess("9").unwrap());
        assert!(!j.reprocess("nope").unwrap());
        assert_eq!(j.get("9").unwrap().unwrap().state, StudyState::Ready);
    }
}

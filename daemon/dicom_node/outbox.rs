//! The outbox: one row per (study, destination, result object) in the
//! journal's SQLite file (`outbox` table), `queued → sending → sent`, or
//! back to `queued` with a backoff after a failed attempt, `failed` after
//! the destination's `max_attempts`.
//!
//! Each state change is committed (synchronous=FULL) before its effect, as
//! for studies. What is sent is a copy of the result taken when the study
//! was done (`<state>/outbox/<destination>-<sha256 of SOP Instance UID>.dcm`, written by
//! rename): a row left `sending` by a crash goes back to `queued` at the next
//! start and is sent again byte for byte, with its SOP Instance UID, so a
//! PACS that had stored it keeps one copy. The copy is removed once sent.
//!
//! The housekeeping thread finds done studies in the journal (`studies`
//! rows with state done and a completion count not yet handled), queues their
//! results for each destination configured before the study was done
//! (enabling a destination does not send the whole history), and removes the
//! study's received files from the spool.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use super::DeliverySink;
use crate::config::{Destination, DestinationKind};
use crate::queue::{FileSig, now, uid_hash};

/// Errors of the outbox.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutboxError {
    /// SQLite.
    #[error("{path}: outbox: {source}")]
    Db {
        /// The journal.
        path: PathBuf,
        /// Why.
        source: rusqlite::Error,
    },
    /// A file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// One destination's figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DestinationCounts {
    /// The destination's name.
    pub name: String,
    /// Results waiting or being sent.
    pub queued: u64,
    /// Results the destination stored, since the outbox began.
    pub sent: u64,
    /// Results given up after max_attempts.
    pub failed: u64,
    /// Age in seconds of the oldest result not sent yet (0: none).
    pub oldest_unsent_seconds: f64,
}

/// A row to send.
#[derive(Debug, Clone)]
pub struct Item {
    /// Row id.
    pub id: i64,
    /// StudyInstanceUID.
    pub study: String,
    /// seg, rtstruct or sc.
    pub object: String,
    /// SOP Class UID.
    pub sop_class: String,
    /// SOP Instance UID.
    pub sop_instance: String,
    /// The copy to send.
    pub file: PathBuf,
    /// Attempts so far.
    pub attempts: u32,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    study TEXT NOT NULL,
    destination TEXT NOT NULL,
    object TEXT NOT NULL,
    sop_class TEXT NOT NULL,
    sop_instance TEXT NOT NULL,
    file TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    UNIQUE (destination, sop_instance)
);
CREATE INDEX IF NOT EXISTS outbox_state ON outbox(destination, state, not_before);
CREATE TABLE IF NOT EXISTS outbox_handled (study TEXT NOT NULL, completions INTEGER NOT NULL, PRIMARY KEY (study, completions));
CREATE TABLE IF NOT EXISTS outbox_destinations (name TEXT PRIMARY KEY, since REAL NOT NULL);
";

/// A connection to the outbox.
pub struct Outbox {
    conn: Connection,
    path: PathBuf,
    store: PathBuf,
    destinations: Vec<Destination>,
}

impl Outbox {
    /// Opens the journal's outbox tables (created when missing), records when
    /// each destination was first configured, and puts rows a crash left
    /// `sending` back to `queued`.
    pub fn open(journal: &Path, state: &Path, destinations: &[Destination]) -> Result<Self, OutboxError> {
        let db = |source| OutboxError::Db { path: journal.to_path_buf(), source };
        let conn = Connection::open(journal).map_err(db)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(db)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(db)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(db)?;
        conn.execute_batch(SCHEMA).map_err(db)?;
        // The journal's own table, for a node started before the service made it.
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS studies (uid TEXT PRIMARY KEY, hash TEXT NOT NULL, state TEXT NOT NULL, \
             attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, completions INTEGER NOT NULL DEFAULT 0, \
             created REAL NOT NULL, updated REAL NOT NULL, not_before REAL NOT NULL DEFAULT 0, output_dir TEXT, \
             files TEXT NOT NULL DEFAULT '[]', fingerprint TEXT NOT NULL DEFAULT '', requeue INTEGER NOT NULL DEFAULT 0, \
             retained INTEGER NOT NULL DEFAULT 0);",
        )
        .map_err(db)?;
        for d in destinations {
            conn.execute(
                "INSERT OR IGNORE INTO outbox_destinations (name, since) VALUES (?1, ?2)",
                params![d.name, now()],
            )
            .map_err(db)?;
            conn.execute(
                "UPDATE outbox SET state = 'queued', updated = ?2 WHERE destination = ?1 AND state = 'sending'",
                params![d.name, now()],
            )
            .map_err(db)?;
        }
        let store = super::outbox_dir(state);
        std::fs::create_dir_all(&store).map_err(|source| OutboxError::Io { path: store.clone(), source })?;
        Ok(Self { conn, path: journal.to_path_buf(), store, destinations: destinations.to_vec() })
    }

    fn db(&self, source: rusqlite::Error) -> OutboxError {
        OutboxError::Db { path: self.path.clone(), source }
    }

    /// Done studies whose completion was not handled yet: (uid, completions, output_dir, updated, files).
    #[allow(clippy::type_complexity)]
    fn unhandled(&self) -> Result<Vec<(String, i64, Option<String>, f64, String)>, OutboxError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT uid, completions, output_dir, updated, files FROM studies s WHERE state = 'done' AND NOT EXISTS \
                 (SELECT 1 FROM outbox_handled h WHERE h.study = s.uid AND h.completions = s.completions) LIMIT 64",
            )
            .map_err(|e| self.db(e))?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
            .map_err(|e| self.db(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.db(e))?;
        Ok(rows)
    }

    /// Queues a study's results for `destinations` (each only when configured
    /// before `done_at`, unless `force`). Returns how many rows were queued.
    pub fn enqueue(
        &self,
        study: &str,
        output_dir: &Path,
        destinations: &[Destination],
        done_at: f64,
        force: bool,
    ) -> Result<usize, OutboxError> {
        let mut n = 0;
        for d in destinations {
            let since: Option<f64> = self
                .conn
                .query_row("SELECT since FROM outbox_destinations WHERE name = ?1", params![d.name], |r| r.get(0))
                .optional()
                .map_err(|e| self.db(e))?;
            if !force && since.is_some_and(|s| s > done_at) {
                continue;
            }
            for obj in &d.send {
                let src = output_dir.join(obj.file_name());
                let Some((class, instance)) = sop_of(&src) else { continue };
                // One copy per destination: each is removed when its destination has it.
                let copy = self.store.join(format!("{}-{}.dcm", d.name, super::spool::hex_hash(&instance)));
                if !copy.exists() {
                    copy_durably(&src, &copy)?;
                }
                let t = now();
                let changed = self
                    .conn
                    .execute(
                        "INSERT INTO outbox (study, destination, object, sop_class, sop_instance, file, state, created, updated) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'queued', ?7, ?7) \
                         ON CONFLICT (destination, sop_instance) DO UPDATE SET state = 'queued', attempts = 0, not_before = 0, \
                         last_error = NULL, updated = ?7 WHERE ?8",
                        params![study, d.name, obj.as_str(), class, instance, copy.to_string_lossy(), t, force],
                    )
                    .map_err(|e| self.db(e))?;
                n += changed;
            }
        }
        Ok(n)
    }

    /// [`enqueue`](Self::enqueue) with `force` for a study by UID (D-Bus `Resend`).
    pub fn resend(&self, study: &str) -> Result<usize, OutboxError> {
        let dests = self.destinations.clone();
        let dir: Option<Option<String>> = self
            .conn
            .query_row("SELECT output_dir FROM studies WHERE uid = ?1 AND state = 'done'", params![study], |r| r.get(0))
            .optional()
            .map_err(|e| self.db(e))?;
        match dir.flatten() {
            Some(d) => self.enqueue(study, Path::new(&d), &dests, now(), true),
            None => Ok(0),
        }
    }

    /// The next due row of a destination, marked `sending` (committed first).
    pub fn next(&self, destination: &str) -> Result<Option<Item>, OutboxError> {
        let item = self
            .conn
            .query_row(
                "SELECT id, study, object, sop_class, sop_instance, file, attempts FROM outbox \
                 WHERE destination = ?1 AND state = 'queued' AND not_before <= ?2 ORDER BY id LIMIT 1",
                params![destination, now()],
                |r| {
                    Ok(Item {
                        id: r.get(0)?,
                        study: r.get(1)?,
                        object: r.get(2)?,
                        sop_class: r.get(3)?,
                        sop_instance: r.get(4)?,
                        file: PathBuf::from(r.get::<_, String>(5)?),
                        attempts: r.get(6)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.db(e))?;
        if let Some(i) = &item {
            self.conn
                .execute(
                    "UPDATE outbox SET state = 'sending', attempts = attempts + 1, updated = ?2 WHERE id = ?1",
                    params![i.id, now()],
                )
                .map_err(|e| self.db(e))?;
        }
        Ok(item)
    }

    /// The peer stored it: `sent`, the copy removed.
    pub fn sent(&self, item: &Item) -> Result<(), OutboxError> {
        self.conn
            .execute(
                "UPDATE outbox SET state = 'sent', last_error = NULL, updated = ?2 WHERE id = ?1",
                params![item.id, now()],
            )
            .map_err(|e| self.db(e))?;
        let _ = std::fs::remove_file(&item.file);
        Ok(())
    }

    /// An attempt failed: `queued` again after the backoff, or `failed`
    /// after `max_attempts` (the copy kept for a Resend).
    pub fn attempt_failed(&self, item: &Item, d: &Destination, reason: &str) -> Result<bool, OutboxError> {
        let attempts = item.attempts + 1;
        let give_up = attempts >= d.max_attempts;
        let wait = (d.retry_seconds * 2f64.powi(attempts.saturating_sub(1).min(20) as i32)).min(3600.0);
        self.conn
            .execute(
                "UPDATE outbox SET state = ?2, last_error = ?3, not_before = ?4, updated = ?5 WHERE id = ?1",
                params![item.id, if give_up { "failed" } else { "queued" }, reason, now() + wait, now()],
            )
            .map_err(|e| self.db(e))?;
        Ok(give_up)
    }

    /// Figures per destination.
    pub fn counts(&self, destinations: &[Destination]) -> Result<Vec<DestinationCounts>, OutboxError> {
        let mut out = Vec::new();
        for d in destinations {
            let count = |states: &str| -> Result<u64, OutboxError> {
                self.conn
                    .query_row(
                        &format!("SELECT COUNT(*) FROM outbox WHERE destination = ?1 AND state IN ({states})"),
                        params![d.name],
                        |r| r.get::<_, i64>(0),
                    )
                    .map(|n| n.max(0) as u64)
                    .map_err(|e| self.db(e))
            };
            let oldest: Option<f64> = self
                .conn
                .query_row(
                    "SELECT MIN(created) FROM outbox WHERE destination = ?1 AND state IN ('queued', 'sending')",
                    params![d.name],
                    |r| r.get(0),
                )
                .map_err(|e| self.db(e))?;
            out.push(DestinationCounts {
                name: d.name.clone(),
                queued: count("'queued', 'sending'")?,
                sent: count("'sent'")?,
                failed: count("'failed'")?,
                oldest_unsent_seconds: oldest.map(|o| (now() - o).max(0.0)).unwrap_or(0.0),
            });
        }
        Ok(out)
    }

    /// Rows of a study: (destination, object, state, attempts) — for `edgeseg status` and tests.
    pub fn rows(&self, study: &str) -> Result<Vec<(String, String, String, u32)>, OutboxError> {
        let mut st = self
            .conn
            .prepare("SELECT destination, object, state, attempts FROM outbox WHERE study = ?1 ORDER BY id")
            .map_err(|e| self.db(e))?;
        st.query_map(params![study], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .map_err(|e| self.db(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.db(e))
    }
}

/// The SOP class and instance of a result file (None: no such file or no header).
fn sop_of(path: &Path) -> Option<(String, String)> {
    if !path.is_file() {
        return None;
    }
    let obj =
        dicom_object::OpenFileOptions::new().read_until(dicom_dictionary_std::tags::PIXEL_DATA).open_file(path).ok()?;
    let m = obj.meta();
    let t = |s: &str| s.trim_end_matches(['\0', ' ']).to_string();
    Some((t(m.media_storage_sop_class_uid()), t(m.media_storage_sop_instance_uid())))
}

fn copy_durably(src: &Path, dest: &Path) -> Result<(), OutboxError> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| OutboxError::Io { path: p, source }
    };
    let tmp = dest.with_extension("part");
    std::fs::copy(src, &tmp).map_err(io(src))?;
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(io(&tmp))?;
    std::fs::rename(&tmp, dest).map_err(io(dest))?;
    if let Some(dir) = dest.parent() {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
    }
    Ok(())
}

/// The housekeeping thread: queues done studies' results, empties the spool
/// of done studies, reports the figures; once a second until `stop`.
pub fn housekeeping(
    ob: Outbox,
    spool: &Path,
    destinations: &[Destination],
    sink: Option<Arc<dyn DeliverySink>>,
    stop: &AtomicBool,
) {
    let mut last_error = String::new();
    while !stop.load(Ordering::SeqCst) {
        let r = (|| -> Result<(), OutboxError> {
            for (uid, completions, dir, updated, files) in ob.unhandled()? {
                if let Some(dir) = &dir {
                    let n = ob.enqueue(&uid, Path::new(dir), destinations, updated, false)?;
                    if n > 0 {
                        tracing::info!("study {}: {n} result(s) queued for delivery", uid_hash(&uid));
                    }
                }
                let sigs: Vec<FileSig> = serde_json::from_str(&files).unwrap_or_default();
                let mut released = 0;
                for f in &sigs {
                    if f.path.parent() == Some(spool) && std::fs::remove_file(&f.path).is_ok() {
                        released += 1;
                    }
                }
                if released > 0 {
                    let _ = std::fs::File::open(spool).and_then(|d| d.sync_all());
                    tracing::info!("study {}: {released} received file(s) removed from the spool", uid_hash(&uid));
                }
                ob.conn
                    .execute(
                        "INSERT OR IGNORE INTO outbox_handled (study, completions) VALUES (?1, ?2)",
                        params![uid, completions],
                    )
                    .map_err(|e| ob.db(e))?;
            }
            if let Some(s) = &sink {
                s.delivery(&ob.counts(destinations)?);
            }
            Ok(())
        })();
        match r {
            Err(e) if e.to_string() != last_error => {
                last_error = e.to_string();
                tracing::error!("{last_error}");
            }
            Ok(()) => last_error.clear(),
            Err(_) => {}
        }
        sleep_unless(stop, Duration::from_secs(1));
    }
}

fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let step = Duration::from_millis(100);
    let mut left = d;
    while !left.is_zero() && !stop.load(Ordering::SeqCst) {
        let s = left.min(step);
        std::thread::sleep(s);
        left -= s;
    }
}

/// One destination's delivery thread: sends due rows one by one until `stop`.
pub fn deliver(ob: Outbox, d: &Destination, default_calling_ae: &str, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        let item = match ob.next(&d.name) {
            Ok(Some(i)) => i,
            Ok(None) => {
                sleep_unless(stop, Duration::from_millis(500));
                continue;
            }
            Err(e) => {
                tracing::error!("{e}");
                sleep_unless(stop, Duration::from_secs(5));
                continue;
            }
        };
        let result = match d.kind {
            DestinationKind::Dicom => super::scu::store(d, default_calling_ae, &item),
            DestinationKind::Dicomweb => super::stow::store(d, &item),
        };
        let study = uid_hash(&item.study);
        let r = match result {
            Ok(()) => {
                tracing::info!("study {study}: {} delivered to {}", item.object, d.name);
                ob.sent(&item)
            }
            Err(why) => match ob.attempt_failed(&item, d, &why) {
                Ok(true) => {
                    tracing::error!(
                        "study {study}: {} not delivered to {} after {} attempts, given up: {why}",
                        item.object,
                        d.name,
                        item.attempts + 1
                    );
                    Ok(())
                }
                Ok(false) => {
                    tracing::warn!(
                        "study {study}: {} to {}: attempt {} failed, retried later: {why}",
                        item.object,
                        d.name,
                        item.attempts + 1
                    );
                    Ok(())
                }
                Err(e) => Err(e),
            },
        };
        if let Err(e) = r {
            tracing::error!("{e}");
            sleep_unless(stop, Duration::from_secs(5));
        }
    }
}

//! The outbox: one row per (study, destination, result object) in the
//! journal's SQLite file (`outbox` table), `queued → sending → sent`, or
//! back to `queued` with a backoff after a failed attempt, `failed` after
//! the destination's `max_attempts`. With `storage_commitment`, `sent` is
//! followed by `committed` once the PACS confirms (`commit.rs`): the row
//! carries the time it was sent (`commit_since`), the Transaction UID of
//! its request (`transaction_uid`, stored before the N-ACTION goes out) and
//! when the PACS accepted the request (`commit_requested`); a result the
//! PACS reports failed, or not committed within `commitment_timeout_seconds`,
//! goes back to `queued` as a failed attempt and is sent again.
//!
//! Each state change is committed (synchronous=FULL) before its effect, as
//! for studies. What is sent is a copy of the result taken when the study
//! was done (`<state>/outbox/<destination>-<sha256 of SOP Instance UID>.dcm`, written by
//! rename): a row left `sending` by a crash goes back to `queued` at the next
//! start and is sent again byte for byte, with its SOP Instance UID, so a
//! PACS that had stored it keeps one copy. The copy is removed once sent
//! (once committed, with storage commitment).
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
    /// Whether the destination asks for Storage Commitment.
    pub storage_commitment: bool,
    /// Results the destination committed (Storage Commitment).
    pub committed: u64,
    /// Results sent and waiting for the destination's commitment.
    pub awaiting_commitment: u64,
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

/// Columns added for Storage Commitment (to journals made before it, too).
const COMMITMENT_COLUMNS: [(&str, &str); 3] =
    [("commit_since", "REAL"), ("transaction_uid", "TEXT"), ("commit_requested", "REAL")];

/// A study's results waiting for a commitment request: (study, rows as (id, SOP class, SOP instance)).
pub type CommitmentGroup = (String, Vec<(i64, String, String)>);

/// What a storage commitment report changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// The destination of the transaction's rows (None: an unknown transaction).
    pub destination: Option<String>,
    /// The study of the transaction's rows.
    pub study: String,
    /// Rows now `committed`.
    pub committed: usize,
    /// Rows the PACS did not commit: the reason in words, and whether the
    /// row was given up (max_attempts) rather than queued again.
    pub failed: Vec<(String, bool)>,
}

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
        let ob = Self::connect(journal, state, destinations)?;
        let db = |source| OutboxError::Db { path: journal.to_path_buf(), source };
        let conn = &ob.conn;
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
        Ok(ob)
    }

    /// Opens the journal's outbox tables (created when missing) without
    /// touching any row: for a thread beside the delivery threads (the SCP
    /// recording a storage commitment report).
    pub fn connect(journal: &Path, state: &Path, destinations: &[Destination]) -> Result<Self, OutboxError> {
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
        add_commitment_columns(&conn).map_err(db)?;
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
                         last_error = NULL, commit_since = NULL, transaction_uid = NULL, commit_requested = NULL, updated = ?7 WHERE ?8",
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

    /// The peer stored it: `sent`, the copy removed; with `commitment`
    /// the copy is kept (a result the PACS does not commit is sent again)
    /// and the row waits for the commitment from now.
    pub fn sent(&self, item: &Item, commitment: bool) -> Result<(), OutboxError> {
        let t = now();
        self.conn
            .execute(
                "UPDATE outbox SET state = 'sent', last_error = NULL, updated = ?2, not_before = 0, \
                 commit_since = CASE WHEN ?3 THEN ?2 ELSE NULL END, transaction_uid = NULL, commit_requested = NULL \
                 WHERE id = ?1",
                params![item.id, t, commitment],
            )
            .map_err(|e| self.db(e))?;
        if !commitment {
            let _ = std::fs::remove_file(&item.file);
        }
        Ok(())
    }

    /// The next study whose sent results of `destination` wait for a
    /// commitment request (none requested yet, or the last request failed
    /// and its wait is over).
    pub fn next_commitment(&self, destination: &str) -> Result<Option<CommitmentGroup>, OutboxError> {
        const DUE: &str = "destination = ?1 AND state = 'sent' AND commit_since IS NOT NULL \
                           AND commit_requested IS NULL AND not_before <= ?2";
        let study: Option<String> = self
            .conn
            .query_row(
                &format!("SELECT study FROM outbox WHERE {DUE} ORDER BY id LIMIT 1"),
                params![destination, now()],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.db(e))?;
        let Some(study) = study else { return Ok(None) };
        let mut st = self
            .conn
            .prepare(&format!("SELECT id, sop_class, sop_instance FROM outbox WHERE {DUE} AND study = ?3 ORDER BY id"))
            .map_err(|e| self.db(e))?;
        let rows = st
            .query_map(params![destination, now(), study], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(|e| self.db(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.db(e))?;
        Ok(Some((study, rows)))
    }

    /// Records a commitment request's Transaction UID on its rows (before the N-ACTION goes out).
    pub fn begin_commitment(&self, ids: &[i64], transaction: &str) -> Result<(), OutboxError> {
        let tx = self.conn.unchecked_transaction().map_err(|e| self.db(e))?;
        for id in ids {
            tx.execute(
                "UPDATE outbox SET transaction_uid = ?2, commit_requested = NULL, updated = ?3 WHERE id = ?1 AND state = 'sent'",
                params![id, transaction, now()],
            )
            .map_err(|e| self.db(e))?;
        }
        tx.commit().map_err(|e| self.db(e))
    }

    /// The PACS accepted the request: its rows wait for the report.
    pub fn commitment_requested(&self, transaction: &str) -> Result<(), OutboxError> {
        self.conn
            .execute(
                "UPDATE outbox SET commit_requested = ?2, last_error = NULL, updated = ?2 \
                 WHERE transaction_uid = ?1 AND state = 'sent' AND commit_requested IS NULL",
                params![transaction, now()],
            )
            .map(|_| ())
            .map_err(|e| self.db(e))
    }

    /// The request failed: asked again (with another Transaction UID) after `wait` seconds.
    pub fn commitment_request_failed(&self, transaction: &str, wait: f64, reason: &str) -> Result<(), OutboxError> {
        self.conn
            .execute(
                "UPDATE outbox SET not_before = ?2, last_error = ?3, updated = ?4 \
                 WHERE transaction_uid = ?1 AND state = 'sent' AND commit_requested IS NULL",
                params![transaction, now() + wait, reason, now()],
            )
            .map(|_| ())
            .map_err(|e| self.db(e))
    }

    /// A sent row the PACS did not commit: `queued` again after the backoff
    /// (a failed attempt), or `failed` after `max_attempts`. Returns whether it was given up.
    fn uncommitted(&self, id: i64, d: &Destination, reason: &str) -> Result<bool, OutboxError> {
        let attempts: u32 = self
            .conn
            .query_row("SELECT attempts FROM outbox WHERE id = ?1", params![id], |r| r.get(0))
            .map_err(|e| self.db(e))?;
        let give_up = attempts >= d.max_attempts;
        let wait = (d.retry_seconds * 2f64.powi(attempts.saturating_sub(1).min(20) as i32)).min(3600.0);
        self.conn
            .execute(
                "UPDATE outbox SET state = ?2, last_error = ?3, not_before = ?4, updated = ?5, commit_since = NULL, \
                 transaction_uid = NULL, commit_requested = NULL WHERE id = ?1 AND state = 'sent'",
                params![id, if give_up { "failed" } else { "queued" }, reason, now() + wait, now()],
            )
            .map_err(|e| self.db(e))?;
        Ok(give_up)
    }

    /// Sent rows of `d` not committed within `commitment_timeout_seconds`:
    /// queued to be sent again. Returns (study, object) of each.
    pub fn expire_commitments(&self, d: &Destination) -> Result<Vec<(String, String)>, OutboxError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT id, study, object FROM outbox WHERE destination = ?1 AND state = 'sent' \
                 AND commit_since IS NOT NULL AND commit_since + ?2 <= ?3",
            )
            .map_err(|e| self.db(e))?;
        let rows: Vec<(i64, String, String)> = st
            .query_map(params![d.name, d.commitment_timeout_seconds, now()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(|e| self.db(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.db(e))?;
        let reason = format!("{} did not commit it within {} s", d.name, d.commitment_timeout_seconds);
        let mut out = Vec::new();
        for (id, study, object) in rows {
            self.uncommitted(id, d, &reason)?;
            out.push((study, object));
        }
        Ok(out)
    }

    /// Records a storage commitment report: the committed rows of its
    /// transaction become `committed` (their copies removed), the failed ones
    /// are queued again; committed to the journal before this returns.
    pub fn apply_report(&self, r: &super::commit::Report) -> Result<Applied, OutboxError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT id, destination, study, sop_instance, file FROM outbox \
                 WHERE transaction_uid = ?1 AND state = 'sent' ORDER BY id",
            )
            .map_err(|e| self.db(e))?;
        let rows: Vec<(i64, String, String, String, String)> = st
            .query_map(params![r.transaction], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
            .map_err(|e| self.db(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.db(e))?;
        let mut out = Applied::default();
        let mut remove = Vec::new();
        for (id, destination, study, instance, file) in rows {
            out.destination = Some(destination.clone());
            out.study = study;
            if let Some((_, _, reason)) = r.failed.iter().find(|f| f.1 == instance) {
                let why = format!("{destination} did not commit it: {}", super::commit::failure_text(*reason));
                let Some(d) = self.destinations.iter().find(|d| d.name == destination) else { continue };
                let gave_up = self.uncommitted(id, d, &why)?;
                out.failed.push((super::commit::failure_text(*reason), gave_up));
            } else if r.committed.iter().any(|c| c.1 == instance) {
                self.conn
                    .execute(
                        "UPDATE outbox SET state = 'committed', last_error = NULL, updated = ?2 WHERE id = ?1 AND state = 'sent'",
                        params![id, now()],
                    )
                    .map_err(|e| self.db(e))?;
                out.committed += 1;
                remove.push(file);
            }
        }
        for f in remove {
            let _ = std::fs::remove_file(f);
        }
        Ok(out)
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
            let awaiting: i64 = self
                .conn
                .query_row(
                    "SELECT COUNT(*) FROM outbox WHERE destination = ?1 AND state = 'sent' AND commit_since IS NOT NULL",
                    params![d.name],
                    |r| r.get(0),
                )
                .map_err(|e| self.db(e))?;
            out.push(DestinationCounts {
                name: d.name.clone(),
                queued: count("'queued', 'sending'")?,
                sent: count("'sent', 'committed'")?,
                failed: count("'failed'")?,
                oldest_unsent_seconds: oldest.map(|o| (now() - o).max(0.0)).unwrap_or(0.0),
                storage_commitment: d.storage_commitment,
                committed: count("'committed'")?,
                awaiting_commitment: awaiting.max(0) as u64,
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

/// Adds [`COMMITMENT_COLUMNS`] where missing (one writer at a time).
fn add_commitment_columns(conn: &Connection) -> Result<(), rusqlite::Error> {
    let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)?;
    let have: Vec<String> = {
        let mut st = tx.prepare("SELECT name FROM pragma_table_info('outbox')")?;
        st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?
    };
    for (name, ty) in COMMITMENT_COLUMNS {
        if !have.iter().any(|h| h == name) {
            tx.execute_batch(&format!("ALTER TABLE outbox ADD COLUMN {name} {ty}"))?;
        }
    }
    tx.execute_batch("CREATE INDEX IF NOT EXISTS outbox_transaction ON outbox(transaction_uid)")?;
    tx.commit()
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
                let busy = d.storage_commitment && commitment_round(&ob, d, default_calling_ae);
                if !busy {
                    sleep_unless(stop, Duration::from_millis(500));
                }
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
                ob.sent(&item, d.storage_commitment)
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

/// One round of Storage Commitment for `d` (its delivery thread, when no
/// result is due): results not committed in time queued again, then one
/// study's sent results asked to be committed. Returns whether a request was made.
fn commitment_round(ob: &Outbox, d: &Destination, default_calling_ae: &str) -> bool {
    let r = (|| -> Result<bool, OutboxError> {
        for (study, object) in ob.expire_commitments(d)? {
            tracing::warn!(
                "study {}: {object} not committed by {} within {} s (commitment_timeout_seconds): sent again",
                uid_hash(&study),
                d.name,
                d.commitment_timeout_seconds
            );
        }
        let Some((study, rows)) = ob.next_commitment(&d.name)? else { return Ok(false) };
        let transaction = crate::export::dicom_refs::new_uid();
        let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
        ob.begin_commitment(&ids, &transaction)?;
        let refs: Vec<(String, String)> = rows.iter().map(|r| (r.1.clone(), r.2.clone())).collect();
        let mut on_report = |rep: &super::commit::Report| record_report(ob, rep, "the same association");
        let hash = uid_hash(&study);
        match super::commit::request(d, default_calling_ae, &transaction, &refs, &mut on_report) {
            Ok(()) => {
                ob.commitment_requested(&transaction)?;
                tracing::info!(
                    "study {hash}: storage commitment of {} result(s) requested from {}",
                    refs.len(),
                    d.name
                );
            }
            Err(why) => {
                let wait = d.retry_seconds.max(1.0);
                ob.commitment_request_failed(&transaction, wait, &why)?;
                tracing::warn!(
                    "study {hash}: storage commitment request to {} failed, asked again in {wait} s: {why}",
                    d.name
                );
            }
        }
        Ok(true)
    })();
    r.unwrap_or_else(|e| {
        tracing::error!("{e}");
        false
    })
}

/// Records a storage commitment report in the journal and logs it; returns
/// the N-EVENT-REPORT-RSP status (0000 once recorded, 0110 when the journal
/// could not record it, so the PACS reports again).
pub fn record_report(ob: &Outbox, r: &super::commit::Report, via: &str) -> u16 {
    match ob.apply_report(r) {
        Ok(a) => {
            match &a.destination {
                None => tracing::warn!(
                    "a storage commitment report (on {via}) names a transaction no result waits for; answered and ignored"
                ),
                Some(dest) => {
                    let study = uid_hash(&a.study);
                    if a.committed > 0 {
                        tracing::info!("study {study}: {dest} committed {} result(s) (report on {via})", a.committed);
                    }
                    for (why, gave_up) in &a.failed {
                        let next = if *gave_up { "given up after max_attempts" } else { "sent again" };
                        tracing::warn!("study {study}: {dest} did not commit a result ({why}): {next}");
                    }
                }
            }
            super::dimse::STATUS_SUCCESS
        }
        Err(e) => {
            tracing::error!("a storage commitment report could not be recorded: {e}");
            super::dimse::STATUS_PROCESSING_FAILURE
        }
    }
}

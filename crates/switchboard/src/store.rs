//! Durable state: live calls and the notification outbox, written in one transaction.
//!
//! [`Store`] is the boundary; [`SqliteStore`] is the embedded implementation (WAL, one connection
//! behind a mutex). A PostgreSQL implementation is planned behind the same trait. A call's row and the
//! notifications its transition owes are committed together, so a crash can never separate them
//! (invariant 1 and 3 in docs/ARCHITECTURE.md).

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, params};
use switchboard_core::call::Call;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored call {id} is unreadable: {source}")]
    Corrupt { id: String, source: serde_json::Error },
    #[error("call {id} changed concurrently (expected version {expected})")]
    Conflict { id: String, expected: u64 },
    #[error("a call with id {id} already exists")]
    Exists { id: String },
    #[error("cannot open the database at {path}: {source}")]
    Open { path: String, source: rusqlite::Error },
}

/// A notification waiting in the outbox: one `commsNotification` for one callback.
#[derive(Clone, Debug, PartialEq)]
pub struct OutboxRow {
    pub seq: i64,
    pub call_id: String,
    pub app_id: String,
    pub tenant_id: String,
    pub callback: String,
    /// The `commsNotification` JSON.
    pub body: String,
    pub attempts: u32,
    pub next_attempt_at: u64,
    pub status: OutboxStatus,
    pub last_error: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutboxStatus {
    Pending,
    /// Gave up after the last retry; kept so that it can be seen and retried by hand.
    Failed,
}

impl OutboxStatus {
    fn as_str(self) -> &'static str {
        match self {
            OutboxStatus::Pending => "pending",
            OutboxStatus::Failed => "failed",
        }
    }
}

/// A notification to append to the outbox in the same transaction as the call's new state.
#[derive(Clone, Debug)]
pub struct NewNotification {
    pub callback: String,
    pub body: String,
}

/// A call as stored, with its optimistic-concurrency version.
#[derive(Clone, Debug)]
pub struct StoredCall {
    pub call: Call,
    pub version: u64,
}

pub trait Store: Send + Sync + 'static {
    /// Persists the call's new state (deleting it once terminated) together with the notifications the
    /// transition owes. `expected_version` is `None` for a new call. Returns the new version and the
    /// outbox rows as written.
    fn commit(
        &self,
        call: &Call,
        expected_version: Option<u64>,
        notifications: &[NewNotification],
        now: u64,
    ) -> Result<(u64, Vec<OutboxRow>), StoreError>;
    fn live_calls(&self) -> Result<Vec<StoredCall>, StoreError>;
    /// Outbox rows in `status`, in order.
    fn outbox(&self, status: OutboxStatus) -> Result<Vec<OutboxRow>, StoreError>;
    fn delivered(&self, seqs: &[i64]) -> Result<(), StoreError>;
    /// Records a failed attempt; `next_attempt_at` None marks the rows as failed for good.
    fn attempt_failed(&self, seqs: &[i64], next_attempt_at: Option<u64>, error: &str) -> Result<(), StoreError>;
    /// Puts failed rows back in the queue, due now. Returns how many.
    fn requeue_failed(&self, now: u64) -> Result<usize, StoreError>;
}

pub struct SqliteStore {
    conn: Mutex<Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS calls (
    id TEXT PRIMARY KEY,
    app_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    state TEXT NOT NULL,
    body TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    call_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    callback TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS outbox_status ON outbox(status, seq);
";

impl SqliteStore {
    /// Opens (or creates) `dir/switchboard.db` in WAL mode. `synchronous=NORMAL` survives `kill -9`
    /// (the WAL is in the OS's hands); only a power loss could cost the last transactions.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join("switchboard.db");
        let conn = Connection::open(&path).map_err(|source| StoreError::Open { path: path.display().to_string(), source })?;
        Self::init(conn)
    }

    pub fn in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Self, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "busy_timeout", 5000)?;
        conn.execute_batch(SCHEMA)?;
        Ok(SqliteStore { conn: Mutex::new(conn) })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a half-done transaction behind (rusqlite rolls
        // back on drop), so a poisoned lock is safe to reuse.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn row_to_outbox(r: &rusqlite::Row<'_>) -> rusqlite::Result<OutboxRow> {
    let status: String = r.get(8)?;
    Ok(OutboxRow {
        seq: r.get(0)?,
        call_id: r.get(1)?,
        app_id: r.get(2)?,
        tenant_id: r.get(3)?,
        callback: r.get(4)?,
        body: r.get(5)?,
        attempts: r.get(6)?,
        next_attempt_at: r.get::<_, i64>(7)? as u64,
        status: if status == "failed" { OutboxStatus::Failed } else { OutboxStatus::Pending },
        last_error: r.get(9)?,
    })
}

impl Store for SqliteStore {
    fn commit(
        &self,
        call: &Call,
        expected_version: Option<u64>,
        notifications: &[NewNotification],
        now: u64,
    ) -> Result<(u64, Vec<OutboxRow>), StoreError> {
        let body = serde_json::to_string(call).map_err(|source| StoreError::Corrupt { id: call.id.clone(), source })?;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let version = match expected_version {
            None => {
                let inserted = tx.execute(
                    "INSERT INTO calls (id, app_id, version, state, body, updated_at) VALUES (?1, ?2, 1, ?3, ?4, ?5) ON CONFLICT (id) DO NOTHING",
                    params![call.id, call.app_id, call.state.as_str(), body, now as i64],
                )?;
                if inserted != 1 {
                    return Err(StoreError::Exists { id: call.id.clone() });
                }
                1
            }
            Some(expected) => {
                let changed = if call.is_terminated() {
                    tx.execute("DELETE FROM calls WHERE id = ?1 AND version = ?2", params![call.id, expected as i64])?
                } else {
                    tx.execute(
                        "UPDATE calls SET version = version + 1, state = ?3, body = ?4, updated_at = ?5 WHERE id = ?1 AND version = ?2",
                        params![call.id, expected as i64, call.state.as_str(), body, now as i64],
                    )?
                };
                if changed != 1 {
                    return Err(StoreError::Conflict { id: call.id.clone(), expected });
                }
                expected + 1
            }
        };
        let mut rows = Vec::with_capacity(notifications.len());
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO outbox (call_id, app_id, tenant_id, callback, body, created_at, next_attempt_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
            )?;
            for n in notifications {
                insert.execute(params![call.id, call.app_id, call.tenant_id, n.callback, n.body, now as i64])?;
                rows.push(OutboxRow {
                    seq: tx.last_insert_rowid(),
                    call_id: call.id.clone(),
                    app_id: call.app_id.clone(),
                    tenant_id: call.tenant_id.clone(),
                    callback: n.callback.clone(),
                    body: n.body.clone(),
                    attempts: 0,
                    next_attempt_at: now,
                    status: OutboxStatus::Pending,
                    last_error: None,
                });
            }
        }
        tx.commit()?;
        Ok((version, rows))
    }

    fn live_calls(&self) -> Result<Vec<StoredCall>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT id, version, body FROM calls")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?)))?;
        let mut calls = Vec::new();
        for row in rows {
            let (id, version, body) = row?;
            let call = serde_json::from_str(&body).map_err(|source| StoreError::Corrupt { id, source })?;
            calls.push(StoredCall { call, version: version as u64 });
        }
        Ok(calls)
    }

    fn outbox(&self, status: OutboxStatus) -> Result<Vec<OutboxRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT seq, call_id, app_id, tenant_id, callback, body, attempts, next_attempt_at, status, last_error
             FROM outbox WHERE status = ?1 ORDER BY seq",
        )?;
        let rows = stmt.query_map([status.as_str()], row_to_outbox)?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn delivered(&self, seqs: &[i64]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut del = tx.prepare_cached("DELETE FROM outbox WHERE seq = ?1")?;
            for seq in seqs {
                del.execute([seq])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn attempt_failed(&self, seqs: &[i64], next_attempt_at: Option<u64>, error: &str) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut upd = tx.prepare_cached(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?2, status = ?3, last_error = ?4 WHERE seq = ?1",
            )?;
            let (next, status) = match next_attempt_at {
                Some(at) => (at as i64, OutboxStatus::Pending),
                None => (0, OutboxStatus::Failed),
            };
            for seq in seqs {
                upd.execute(params![seq, next, status.as_str(), error])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn requeue_failed(&self, now: u64) -> Result<usize, StoreError> {
        let conn = self.conn();
        Ok(conn.execute("UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = ?1 WHERE status = 'failed'", [now as i64])?)
    }
}

#[cfg(test)]
mod tests {
    use switchboard_core::call::{Call, IncomingCall};
    use switchboard_core::party::Party;

    use super::*;

    fn offered(id: &str) -> Call {
        let party = |id: &str| Party::User { id: id.into(), display_name: id.into(), tenant_id: "t".into() };
        let req = IncomingCall {
            id: id.into(),
            app_id: "app".into(),
            tenant_id: "t".into(),
            source: party("caller"),
            target: Party::Application { id: "app".into(), display_name: "Bot".into() },
            application_instance: None,
            my_participant_id: "p".into(),
            peer_participant_id: "q".into(),
            call_chain_id: "c".into(),
            transferor: None,
        };
        Call::offer(req, 0).0
    }

    #[test]
    fn a_second_new_call_with_a_taken_id_is_refused_and_changes_nothing() {
        let store = SqliteStore::in_memory().unwrap();
        let call = offered("same");
        let note = NewNotification { callback: "http://127.0.0.1/cb".into(), body: "{}".into() };
        assert_eq!(store.commit(&call, None, std::slice::from_ref(&note), 1).unwrap().0, 1);
        assert!(matches!(store.commit(&call, None, &[note], 2), Err(StoreError::Exists { id }) if id == "same"));
        assert_eq!(store.live_calls().unwrap().len(), 1);
        assert_eq!(store.outbox(OutboxStatus::Pending).unwrap().len(), 1, "the refused commit left no notification behind");
    }
}

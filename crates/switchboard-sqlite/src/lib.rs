//! The embedded [`Store`]: SQLite in WAL mode, written by one thread that owns the connection and
//! commits in groups. Callers queue jobs; the writer takes every job waiting (up to [`MAX_GROUP`]),
//! runs them in one transaction and answers each once it has committed. Under load many calls'
//! transitions share one commit, so the per-transaction cost (locks, the WAL frame, the write
//! syscalls) is paid once per group instead of once per transition; alone, a job commits at once.
//!
//! A call's row and the notifications its transition owes are still written together (invariants 1
//! and 3 in docs/ARCHITECTURE.md): a job's checks (`Exists`, `Conflict`) run before it writes, so a
//! refused job leaves nothing behind and the others in its group commit; a SQLite error rolls the
//! whole group back and every job in it fails. Rows hold calls as `switchboard_engine::record` writes
//! them.
//!
//! WAL checkpoints run on a second thread and connection, every few seconds, never inside a commit.

use std::path::Path;
use std::sync::mpsc;

use rusqlite::{Connection, TransactionBehavior, params};
use switchboard_core::call::Call;
use switchboard_engine::record;
use switchboard_engine::store::{NewNotification, OutboxRow, OutboxStatus, Store, StoreError, StoredCall};
use tokio::sync::oneshot;

/// At most this many jobs share one transaction, so that one commit's latency stays bounded.
pub const MAX_GROUP: usize = 512;

/// SQLite errors inside this crate, and store errors on their way out.
enum Fail {
    Sqlite(rusqlite::Error),
    Store(StoreError),
}

impl From<rusqlite::Error> for Fail {
    fn from(e: rusqlite::Error) -> Self {
        Fail::Sqlite(e)
    }
}

impl From<StoreError> for Fail {
    fn from(f: StoreError) -> Self {
        Fail::Store(f)
    }
}

impl From<Fail> for StoreError {
    fn from(f: Fail) -> Self {
        match f {
            Fail::Sqlite(e) => StoreError::database(e),
            Fail::Store(e) => e,
        }
    }
}

/// What a job did inside the group's transaction: whether it failed in SQLite (the group must roll
/// back), and how to answer its caller once the group's fate is known.
struct Ran {
    poisoned: bool,
    answer: Box<dyn FnOnce(Result<(), String>) + Send>,
}

/// A queued piece of work. It gets the connection inside the group's transaction, or the reason there
/// is no transaction.
type Job = Box<dyn FnOnce(Result<&Connection, &str>) -> Ran + Send>;

pub struct SqliteStore {
    jobs: mpsc::Sender<Job>,
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
-- Only failed rows are indexed: pending rows come and go by the thousand per second, and an index
-- entry for each would double the pages every commit writes. Pending rows are read by a scan, once,
-- at start.
DROP INDEX IF EXISTS outbox_status;
CREATE INDEX IF NOT EXISTS outbox_failed ON outbox(seq) WHERE status = 'failed';
";

impl SqliteStore {
    /// Opens (or creates) `dir/switchboard.db` in WAL mode. `synchronous=NORMAL` survives `kill -9`
    /// (the WAL is in the OS's hands); only a power loss could cost the last transactions.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join("switchboard.db");
        let open = |source: rusqlite::Error| StoreError::Open { path: path.display().to_string(), source: Box::new(source) };
        private(&path).map_err(|e| StoreError::Open { path: path.display().to_string(), source: Box::new(e) })?;
        let conn = Connection::open(&path).map_err(open)?;
        // Checkpoints run on a thread of their own, on a second connection: inside a commit they
        // would stall every transition queued behind it for the time of two fsyncs.
        conn.pragma_update(None, "wal_autocheckpoint", 0).map_err(open)?;
        let checkpoints = Connection::open(&path).map_err(open)?;
        checkpoints.pragma_update(None, "busy_timeout", 5000).map_err(open)?;
        let (store, writer_gone) = Self::init(conn).map_err(|f| match f {
            Fail::Sqlite(e) => open(e),
            Fail::Store(e) => e,
        })?;
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn({
                let path = path.clone();
                move || checkpointer(checkpoints, &path, writer_gone)
            })
            .map_err(StoreError::database)?;
        Ok(store)
    }

    pub fn in_memory() -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory().map_err(StoreError::database)?;
        Ok(Self::init(conn)?.0)
    }

    /// Starts the writer; the receiver hears (a disconnection) when the writer has stopped.
    fn init(conn: Connection) -> Result<(Self, mpsc::Receiver<()>), Fail> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "busy_timeout", 5000)?;
        conn.execute_batch(SCHEMA)?;
        conn.set_prepared_statement_cache_capacity(32);
        let (jobs, queue) = mpsc::channel();
        let (alive, writer_gone) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                writer(conn, queue);
                drop(alive);
            })
            .map_err(|e| Fail::Store(StoreError::database(e)))?;
        Ok((SqliteStore { jobs }, writer_gone))
    }

    /// Runs `f` on the writer thread, inside the next group's transaction; answers once it committed.
    async fn with<T: Send + 'static>(&self, f: impl FnOnce(&Connection) -> Result<T, Fail> + Send + 'static) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let result = match conn {
                Ok(conn) => f(conn),
                Err(why) => Err(Fail::Store(StoreError::database(std::io::Error::other(why.to_owned())))),
            };
            let poisoned = matches!(result, Err(Fail::Sqlite(_)));
            Ran {
                poisoned,
                answer: Box::new(move |committed| {
                    let _ = tx.send(match (result, committed) {
                        (Err(e), _) => Err(StoreError::from(e)),
                        (Ok(v), Ok(())) => Ok(v),
                        (Ok(_), Err(e)) => Err(StoreError::database(std::io::Error::other(e))),
                    });
                }),
            }
        });
        self.jobs.send(job).map_err(|_| StoreError::database(std::io::Error::other("the SQLite writer has stopped")))?;
        rx.await.unwrap_or_else(|_| Err(StoreError::database(std::io::Error::other("the SQLite writer stopped before answering"))))
    }
}

/// The writer thread: one group at a time, until the store is dropped.
fn writer(mut conn: Connection, queue: mpsc::Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        // IMMEDIATE: the group takes the write lock at once (waiting out a checkpoint under
        // busy_timeout) rather than failing with SQLITE_BUSY when a read job is followed by a write.
        let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(e) => {
                let why = format!("cannot begin a transaction: {e}");
                for job in group {
                    (job(Err(&why)).answer)(Err(why.clone()));
                }
                continue;
            }
        };
        // Once a job has failed in SQLite, the rest of the group is not run: SQLite may have rolled the
        // transaction back itself (SQLITE_FULL, IOERR), and later jobs would then commit one statement
        // at a time. A panicking job counts as failed (its caller hears that the writer stopped).
        let mut poisoned = false;
        let ran: Vec<Ran> = group
            .into_iter()
            .map(|job| {
                if poisoned {
                    return job(Err("another write in the same transaction failed; nothing was written"));
                }
                let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(Ok(&tx))))
                    .unwrap_or_else(|_| Ran { poisoned: true, answer: Box::new(|_| {}) });
                poisoned = ran.poisoned || tx.is_autocommit();
                ran
            })
            .collect();
        let committed = if poisoned {
            let _ = tx.rollback();
            Err("another write in the same transaction failed; nothing was written".to_owned())
        } else {
            tx.commit().map_err(|e| format!("commit failed: {e}"))
        };
        for r in ran {
            (r.answer)(committed.clone());
        }
    }
}

/// Makes the database readable by its owner only (0600), creating it so if need be. SQLite gives the
/// WAL and shared-memory files the database's permissions; existing ones are tightened too.
fn private(db: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(db)?;
        for file in [db.to_path_buf(), db.with_extension("db-wal"), db.with_extension("db-shm")] {
            match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
    }
    #[cfg(not(unix))]
    let _ = db;
    Ok(())
}

/// How often the checkpointer copies the WAL into the database. Each checkpoint's fsyncs stall the
/// writer for milliseconds on this class of VM disk (a transfer's p99 at 3,500/s: 1.3 ms without
/// checkpoints, 14 ms every 2 s, 18 ms every 200 ms), so they are few. At 7k transfers/s the WAL
/// grows by 100k–190k frames between two checkpoints, and the passive copy takes about 200 ms.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(2);
/// A WAL this long (pages) is checkpointed with RESTART, which waits for the writer, so that a
/// sustained load the passive checkpoints cannot catch up with does not grow it without end.
const WAL_LIMIT_PAGES: i64 = 16_384;

/// Copies the WAL into the database in the background (PASSIVE: never blocks the writer), until the
/// writer stops; then once more, so that a clean shutdown leaves a short WAL.
fn checkpointer(conn: Connection, db: &Path, writer_gone: mpsc::Receiver<()>) {
    let wal = db.with_extension("db-wal");
    // The WAL's length in frames.
    let checkpoint = |mode: &str| {
        conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| r.get::<_, i64>(1)).unwrap_or_else(|e| {
            tracing::warn!(error = %e, mode, "WAL checkpoint failed; the next one will try again");
            0
        })
    };
    loop {
        match writer_gone.recv_timeout(CHECKPOINT_EVERY) {
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if checkpoint("PASSIVE") > WAL_LIMIT_PAGES {
                    // RESTART holds the write lock while it copies what came in since and syncs both
                    // files, and every commit waits. Syncing them first, outside any lock, leaves its
                    // own fsyncs next to nothing to write.
                    for file in [&wal, db] {
                        if let Ok(f) = std::fs::File::open(file) {
                            let _ = f.sync_data();
                        }
                    }
                    checkpoint("RESTART");
                }
            }
            _ => {
                checkpoint("TRUNCATE");
                return;
            }
        }
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

/// What a commit writes, owned so that it can go to the writer thread.
struct Commit {
    id: String,
    app_id: String,
    tenant_id: String,
    state: &'static str,
    terminated: bool,
    body: String,
    expected_version: Option<u64>,
    notifications: Vec<NewNotification>,
    now: i64,
}

/// One call's transition, inside the group's transaction. Its check comes first, so a refused commit
/// has written nothing.
fn commit(tx: &Connection, c: Commit) -> Result<(u64, Vec<OutboxRow>), Fail> {
    let version = match c.expected_version {
        None => {
            let inserted = tx
                .prepare_cached(
                    "INSERT INTO calls (id, app_id, version, state, body, updated_at) VALUES (?1, ?2, 1, ?3, ?4, ?5) ON CONFLICT (id) DO NOTHING",
                )?
                .execute(params![c.id, c.app_id, c.state, c.body, c.now])?;
            if inserted != 1 {
                return Err(StoreError::Exists { id: c.id }.into());
            }
            1
        }
        Some(expected) => {
            let changed = if c.terminated {
                tx.prepare_cached("DELETE FROM calls WHERE id = ?1 AND version = ?2")?.execute(params![c.id, expected as i64])?
            } else {
                tx.prepare_cached(
                    "UPDATE calls SET version = version + 1, state = ?3, body = ?4, updated_at = ?5 WHERE id = ?1 AND version = ?2",
                )?
                .execute(params![c.id, expected as i64, c.state, c.body, c.now])?
            };
            if changed != 1 {
                return Err(StoreError::Conflict { id: c.id, expected }.into());
            }
            expected + 1
        }
    };
    let mut rows = Vec::with_capacity(c.notifications.len());
    let mut insert = tx.prepare_cached(
        "INSERT INTO outbox (call_id, app_id, tenant_id, callback, body, created_at, next_attempt_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
    )?;
    for n in c.notifications {
        insert.execute(params![c.id, c.app_id, c.tenant_id, n.callback, n.body, c.now])?;
        rows.push(OutboxRow {
            seq: tx.last_insert_rowid(),
            call_id: c.id.clone(),
            app_id: c.app_id.clone(),
            tenant_id: c.tenant_id.clone(),
            callback: n.callback,
            body: n.body,
            attempts: 0,
            next_attempt_at: c.now as u64,
            status: OutboxStatus::Pending,
            last_error: None,
        });
    }
    Ok((version, rows))
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn commit(
        &self,
        call: &Call,
        expected_version: Option<u64>,
        notifications: &[NewNotification],
        now: u64,
    ) -> Result<(u64, Vec<OutboxRow>), StoreError> {
        let c = Commit {
            id: call.id.clone(),
            app_id: call.app_id.clone(),
            tenant_id: call.tenant_id.clone(),
            state: call.state.as_str(),
            terminated: call.is_terminated(),
            body: record::encode(call),
            expected_version,
            notifications: notifications.to_vec(),
            now: now as i64,
        };
        self.with(move |tx| commit(tx, c)).await
    }

    async fn live_calls(&self) -> Result<Vec<StoredCall>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare("SELECT id, version, body FROM calls")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?)))?;
            let mut calls = Vec::new();
            for row in rows {
                let (id, version, body) = row?;
                let call = record::decode(&body).map_err(|source| StoreError::Corrupt { id, source })?;
                calls.push(StoredCall { call, version: version as u64 });
            }
            Ok(calls)
        })
        .await
    }

    async fn outbox(&self, status: OutboxStatus) -> Result<Vec<OutboxRow>, StoreError> {
        self.with(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, call_id, app_id, tenant_id, callback, body, attempts, next_attempt_at, status, last_error
                 FROM outbox WHERE status = ?1 ORDER BY seq",
            )?;
            let rows = stmt.query_map([status.as_str()], row_to_outbox)?.collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn delivered(&self, seqs: &[i64]) -> Result<(), StoreError> {
        let seqs = seqs.to_vec();
        self.with(move |conn| {
            let mut del = conn.prepare_cached("DELETE FROM outbox WHERE seq = ?1")?;
            for seq in seqs {
                del.execute([seq])?;
            }
            Ok(())
        })
        .await
    }

    async fn attempt_failed(&self, seqs: &[i64], next_attempt_at: Option<u64>, error: &str) -> Result<(), StoreError> {
        let (seqs, error) = (seqs.to_vec(), error.to_owned());
        self.with(move |conn| {
            let mut upd = conn.prepare_cached(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?2, status = ?3, last_error = ?4 WHERE seq = ?1",
            )?;
            let (next, status) = match next_attempt_at {
                Some(at) => (at as i64, OutboxStatus::Pending),
                None => (0, OutboxStatus::Failed),
            };
            for seq in seqs {
                upd.execute(params![seq, next, status.as_str(), error])?;
            }
            Ok(())
        })
        .await
    }

    async fn requeue_failed(&self, now: u64) -> Result<usize, StoreError> {
        self.with(move |conn| {
            Ok(conn
                .prepare_cached("UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = ?1 WHERE status = 'failed'")?
                .execute([now as i64])?)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use switchboard_engine::conformance::{self, Opener};

    use super::SqliteStore;

    /// Stores in a fresh folder each; reopening opens the same file again.
    struct Files {
        dirs: Vec<std::path::PathBuf>,
    }

    impl Opener for Files {
        type Store = SqliteStore;
        async fn fresh(&mut self) -> SqliteStore {
            let dir = std::env::temp_dir().join(format!("switchboard-sqlite-{}-{}", std::process::id(), self.dirs.len()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            self.dirs.push(dir.clone());
            SqliteStore::open(&dir).unwrap()
        }
        async fn reopen(&mut self, store: SqliteStore) -> Option<SqliteStore> {
            drop(store);
            let dir = self.dirs.last()?.clone();
            Some(SqliteStore::open(&dir).unwrap())
        }
    }

    impl Drop for Files {
        fn drop(&mut self) {
            for d in &self.dirs {
                let _ = std::fs::remove_dir_all(d);
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passes_the_store_conformance_suite() {
        conformance::run(Files { dirs: Vec::new() }).await;
    }

    /// A request whose client goes away while its commit is on the disk must not leave the engine
    /// behind the store: the step runs to the end on its own task.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_step_whose_caller_goes_away_still_completes() {
        use std::sync::Arc;

        use switchboard_core::call::{Call, Input, Notification};
        use switchboard_engine::engine::{OutboxSink, Parts, Render};
        use switchboard_engine::store::{NewNotification, OutboxRow, Store};
        use switchboard_engine::{Clock, Engine};

        struct Nothing;
        impl Render for Nothing {
            fn render(&self, _: &Call, _: &[&Notification], _: u64) -> Vec<NewNotification> {
                Vec::new()
            }
        }
        impl OutboxSink for Nothing {
            fn enqueue(&self, _: Vec<OutboxRow>) {}
        }
        let store = Arc::new(SqliteStore::in_memory().unwrap());
        let engine = Engine::new(Parts {
            store: Arc::clone(&store) as Arc<dyn Store>,
            clock: Clock::virtual_at(0),
            render: Arc::new(Nothing),
            outbox: Arc::new(Nothing),
            metrics: Arc::default(),
            history: Default::default(),
        });
        let call = conformance::offered("gone");
        let req = switchboard_core::call::IncomingCall {
            id: call.id.clone(),
            app_id: call.app_id.clone(),
            tenant_id: call.tenant_id.clone(),
            source: call.source.clone(),
            target: call.target.clone(),
            application_instance: None,
            my_participant_id: call.my_participant_id.clone(),
            peer_participant_id: call.peer_participant_id.clone(),
            call_chain_id: call.call_chain_id.clone(),
            transferor: None,
        };
        engine.offer(req).await.unwrap();
        // The caller gives up after one poll, while the commit is queued on the writer thread.
        let mut step = Box::pin(engine.apply("gone", Input::Reject { reason: "busy".into() }));
        std::future::poll_fn(|cx| {
            let _ = step.as_mut().poll(cx);
            std::task::Poll::Ready(())
        })
        .await;
        drop(step);
        for _ in 0..200 {
            if store.live_calls().await.unwrap().is_empty() && engine.get("gone").await.is_none() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        panic!(
            "the store has {:?} and the engine {:?}",
            store.live_calls().await.unwrap().len(),
            engine.get("gone").await.map(|c| c.state)
        );
    }

    /// Commits queued together share a transaction: a refused one (stale version, id taken) writes
    /// nothing, and the others in its group commit all the same.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_commit_leaves_its_group_whole() {
        use std::sync::Arc;

        use switchboard_engine::store::{NewNotification, OutboxStatus, Store, StoreError};
        let store = Arc::new(SqliteStore::in_memory().unwrap());
        let taken = conformance::offered("taken");
        store.commit(&taken, None, &[], 1).await.unwrap();
        let note = vec![NewNotification { callback: "https://bot/cb".into(), body: "{}".into() }];
        let mut tasks = Vec::new();
        for i in 0..300 {
            let (store, note, taken) = (Arc::clone(&store), note.clone(), taken.clone());
            tasks.push(tokio::spawn(async move {
                match i % 3 {
                    0 => store.commit(&conformance::offered(&format!("new-{i}")), None, &note, 2).await.map(|_| "new"),
                    1 => store.commit(&taken, Some(7), &note, 2).await.map(|_| "stale"),
                    _ => store.commit(&taken, None, &note, 2).await.map(|_| "again"),
                }
            }));
        }
        let mut outcomes = std::collections::BTreeMap::new();
        for t in tasks {
            let key = match t.await.unwrap() {
                Ok(what) => what.to_owned(),
                Err(StoreError::Conflict { .. }) => "conflict".to_owned(),
                Err(StoreError::Exists { .. }) => "exists".to_owned(),
                Err(e) => panic!("{e}"),
            };
            *outcomes.entry(key).or_insert(0) += 1;
        }
        assert_eq!(outcomes, [("conflict".to_owned(), 100), ("exists".to_owned(), 100), ("new".to_owned(), 100)].into_iter().collect());
        assert_eq!(store.live_calls().await.unwrap().len(), 101);
        let owed = store.outbox(OutboxStatus::Pending).await.unwrap();
        assert_eq!(owed.len(), 100);
        assert!(owed.iter().all(|r| r.call_id.starts_with("new-")));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unreadable_row_is_reported_with_its_call_id() {
        use switchboard_engine::store::{Store, StoreError};
        let store = SqliteStore::in_memory().unwrap();
        store.commit(&conformance::offered("bad"), None, &[], 1).await.unwrap();
        store.with(|conn| Ok(conn.execute("UPDATE calls SET body = '{\"schema\": 99}'", [])?)).await.unwrap();
        let err = store.live_calls().await.unwrap_err();
        assert!(matches!(&err, StoreError::Corrupt { id, .. } if id == "bad"), "{err}");
    }
}

//! The PostgreSQL [`Store`]: the same promises as SQLite (a call's new state and the notifications its
//! transition owes in one transaction, `WHERE version = …` against stale writes), in a database that
//! several Switchboard nodes can share. It passes the same conformance suite.
//!
//! The schema is versioned ([`MIGRATIONS`]) and migrated at connect, under an advisory lock, so that
//! nodes starting together migrate once. Calls are written as `switchboard_engine::record` says.
//!
//! Several nodes share one database: each store is opened as one node ([`PgStore::connect_as`]), owns
//! the calls and outbox rows it writes, and implements [`Membership`]: leases in `nodes`, adoption of a
//! dead node's calls and rows with `FOR UPDATE SKIP LOCKED`, hand-over, shared keys.

#[cfg(feature = "testing")]
pub mod testing;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use switchboard_core::call::Call;
use switchboard_engine::cluster::{Adopted, LEASE_MS, Membership, Node, Owner};
use switchboard_engine::record;
use switchboard_engine::store::{NewNotification, OutboxRow, OutboxStatus, Store, StoreError, StoredCall};
use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls, Row};

/// The schema, one step per version; a database records the versions it has in `schema_migrations`.
pub const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        "CREATE TABLE calls (
        id TEXT PRIMARY KEY,
        app_id TEXT NOT NULL,
        version BIGINT NOT NULL,
        state TEXT NOT NULL,
        body TEXT NOT NULL,
        updated_at BIGINT NOT NULL
    );
    CREATE TABLE outbox (
        seq BIGSERIAL PRIMARY KEY,
        call_id TEXT NOT NULL,
        app_id TEXT NOT NULL,
        tenant_id TEXT NOT NULL,
        callback TEXT NOT NULL,
        body TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at BIGINT NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',
        last_error TEXT
    );
    CREATE INDEX outbox_status ON outbox (status, seq);",
    ),
    (
        2,
        // Ownership: the node that owns a call and its outbox rows, and the nodes' leases (database time).
        "ALTER TABLE calls ADD COLUMN owner TEXT;
    ALTER TABLE outbox ADD COLUMN owner TEXT;
    CREATE INDEX calls_owner ON calls (owner);
    CREATE INDEX outbox_owner ON outbox (owner, status, seq);
    CREATE TABLE nodes (
        id TEXT PRIMARY KEY,
        address TEXT NOT NULL,
        lease_until TIMESTAMPTZ NOT NULL
    );
    CREATE TABLE shared (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );",
    ),
];

/// Any number, as long as every node uses the same: the advisory lock that serialises migrations.
const MIGRATION_LOCK: i64 = 0x5377_6974_6368; // "Switch"

/// How many connections a store keeps.
const CONNECTIONS: usize = 4;

/// The node a store is opened as when none is named (a single node).
pub const DEFAULT_NODE: &str = "switchboard";

pub struct PgStore {
    url: String,
    /// The node this store writes as: the owner of what it commits.
    node: String,
    /// Whether this store has joined a cluster (then it writes only under a live lease).
    joined: std::sync::atomic::AtomicBool,
    clients: Vec<Mutex<Client>>,
    next: AtomicUsize,
}

/// How long connecting may take before a request gives up with a 503.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Opens one connection; its driver runs on a task of its own.
async fn connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "a PostgreSQL connection ended; it is opened again when next needed");
        }
    });
    Ok(client)
}

fn db(e: tokio_postgres::Error) -> StoreError {
    StoreError::database(e)
}

impl PgStore {
    /// Connects to `url` (`postgres://user@host:port/db`) as a single node and brings its schema up to
    /// date.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_as(url, DEFAULT_NODE).await
    }

    /// Connects as the node `node`: what it commits, it owns.
    pub async fn connect_as(url: &str, node: &str) -> Result<Self, StoreError> {
        let open = |e: tokio_postgres::Error| StoreError::Open { path: redact(url), source: Box::new(e) };
        let mut clients = Vec::with_capacity(CONNECTIONS);
        for _ in 0..CONNECTIONS {
            clients.push(Mutex::new(connect(url).await.map_err(open)?));
        }
        let store = PgStore {
            url: url.to_owned(),
            node: node.to_owned(),
            joined: std::sync::atomic::AtomicBool::new(false),
            clients,
            next: AtomicUsize::new(0),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Applies the migrations the database does not have yet, each in its own transaction, holding
    /// an advisory lock so that nodes starting at once take turns. Returns the versions applied.
    pub async fn migrate(&self) -> Result<Vec<i32>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(db)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )
        .await
        .map_err(db)?;
        let have: Vec<i32> = tx.query("SELECT version FROM schema_migrations", &[]).await.map_err(db)?.iter().map(|r| r.get(0)).collect();
        let mut applied = Vec::new();
        for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| !have.contains(v)) {
            tx.batch_execute(sql).await.map_err(db)?;
            tx.execute("INSERT INTO schema_migrations (version) VALUES ($1)", &[version]).await.map_err(db)?;
            applied.push(*version);
        }
        tx.commit().await.map_err(db)?;
        if !applied.is_empty() {
            tracing::info!(?applied, "PostgreSQL schema migrated");
        }
        Ok(applied)
    }

    /// One of the connections, in turn, opened again if the server dropped it (a database restart):
    /// while the database is down this fails at once, and the request with it (a 503), never hangs.
    async fn client(&self) -> Result<tokio::sync::MutexGuard<'_, Client>, StoreError> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        let mut guard = self.clients[i].lock().await;
        if guard.is_closed() {
            let fresh = tokio::time::timeout(CONNECT_TIMEOUT, connect(&self.url))
                .await
                .map_err(|_| StoreError::Database(format!("connecting to {} timed out", redact(&self.url)).into()))?
                .map_err(db)?;
            *guard = fresh;
            tracing::info!(url = redact(&self.url), "PostgreSQL connection opened again");
        }
        Ok(guard)
    }
}

/// A connection URL without its password, for messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// The columns [`outbox_row`] reads, in its order.
const OUTBOX_COLUMNS: &str = "seq, call_id, app_id, tenant_id, callback, body, attempts, next_attempt_at, status, last_error";

fn stored_call(r: &Row) -> Result<StoredCall, StoreError> {
    let (id, version, body): (String, i64, String) = (r.get(0), r.get(1), r.get(2));
    let call = record::decode(&body).map_err(|source| StoreError::Corrupt { id, source })?;
    Ok(StoredCall { call, version: version as u64 })
}

fn outbox_row(r: &Row) -> OutboxRow {
    let status: String = r.get(8);
    OutboxRow {
        seq: r.get(0),
        call_id: r.get(1),
        app_id: r.get(2),
        tenant_id: r.get(3),
        callback: r.get(4),
        body: r.get(5),
        attempts: r.get::<_, i32>(6) as u32,
        next_attempt_at: r.get::<_, i64>(7) as u64,
        status: if status == "failed" { OutboxStatus::Failed } else { OutboxStatus::Pending },
        last_error: r.get(9),
    }
}

#[async_trait::async_trait]
impl Store for PgStore {
    async fn commit(
        &self,
        call: &Call,
        expected_version: Option<u64>,
        notifications: &[NewNotification],
        now: u64,
    ) -> Result<(u64, Vec<OutboxRow>), StoreError> {
        let body = record::encode(call);
        let now_i = now as i64;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let version = match expected_version {
            None => {
                let inserted = tx
                    .execute(
                        // A node of a cluster creates calls only under a live lease: otherwise the call
                        // would belong to a dead node. (A store that never joined, like the conformance
                        // suite's, is one process alone.)
                        "INSERT INTO calls (id, app_id, version, state, body, updated_at, owner)
                         SELECT $1, $2, 1, $3, $4, $5, $6
                         WHERE NOT $7 OR EXISTS (SELECT 1 FROM nodes WHERE id = $6 AND lease_until > clock_timestamp())
                         ON CONFLICT (id) DO NOTHING",
                        &[&call.id, &call.app_id, &call.state.as_str(), &body, &now_i, &self.node, &self.joined.load(Ordering::Relaxed)],
                    )
                    .await
                    .map_err(db)?;
                if inserted != 1 {
                    let exists = tx.query_opt("SELECT 1 FROM calls WHERE id = $1", &[&call.id]).await.map_err(db)?.is_some();
                    return Err(if exists {
                        StoreError::Exists { id: call.id.clone() }
                    } else {
                        StoreError::NotOwner { id: call.id.clone() }
                    });
                }
                1
            }
            Some(expected) => {
                let expected_i = expected as i64;
                // Only the owner writes: a node that lost the call (adopted elsewhere) is refused.
                let changed = if call.is_terminated() {
                    tx.execute("DELETE FROM calls WHERE id = $1 AND version = $2 AND owner = $3", &[&call.id, &expected_i, &self.node])
                        .await
                } else {
                    tx.execute(
                        "UPDATE calls SET version = version + 1, state = $3, body = $4, updated_at = $5 WHERE id = $1 AND version = $2 AND owner = $6",
                        &[&call.id, &expected_i, &call.state.as_str(), &body, &now_i, &self.node],
                    )
                    .await
                }
                .map_err(db)?;
                if changed != 1 {
                    let owner = tx.query_opt("SELECT owner FROM calls WHERE id = $1", &[&call.id]).await.map_err(db)?;
                    return Err(match owner.and_then(|r| r.get::<_, Option<String>>(0)) {
                        Some(o) if o != self.node => StoreError::NotOwner { id: call.id.clone() },
                        _ => StoreError::Conflict { id: call.id.clone(), expected },
                    });
                }
                expected + 1
            }
        };
        let mut rows = Vec::with_capacity(notifications.len());
        for n in notifications {
            let seq: i64 = tx
                .query_one(
                    "INSERT INTO outbox (call_id, app_id, tenant_id, callback, body, created_at, next_attempt_at, owner) VALUES ($1, $2, $3, $4, $5, $6, $6, $7) RETURNING seq",
                    &[&call.id, &call.app_id, &call.tenant_id, &n.callback, &n.body, &now_i, &self.node],
                )
                .await
                .map_err(db)?
                .get(0);
            rows.push(OutboxRow::owed(seq, call, n, now));
        }
        tx.commit().await.map_err(db)?;
        Ok((version, rows))
    }

    /// This node's calls, after a restart; rows written before ownership existed become this node's.
    async fn live_calls(&self) -> Result<Vec<StoredCall>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        tx.execute("UPDATE outbox SET owner = $1 WHERE owner IS NULL", &[&self.node]).await.map_err(db)?;
        let rows = tx
            .query("UPDATE calls SET owner = $1 WHERE owner IS NULL OR owner = $1 RETURNING id, version, body", &[&self.node])
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        rows.iter().map(stored_call).collect()
    }

    /// This node's outbox rows: each node delivers what it owns.
    async fn outbox(&self, status: OutboxStatus) -> Result<Vec<OutboxRow>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!("SELECT {OUTBOX_COLUMNS} FROM outbox WHERE status = $1 AND owner = $2 ORDER BY seq"),
                &[&status.as_str(), &self.node],
            )
            .await
            .map_err(db)?;
        Ok(rows.iter().map(outbox_row).collect())
    }

    async fn delivered(&self, seqs: &[i64]) -> Result<(), StoreError> {
        let client = self.client().await?;
        client.execute("DELETE FROM outbox WHERE seq = ANY($1)", &[&seqs]).await.map_err(db)?;
        Ok(())
    }

    async fn attempt_failed(&self, seqs: &[i64], next_attempt_at: Option<u64>, error: &str) -> Result<(), StoreError> {
        let (next, status) = match next_attempt_at {
            Some(at) => (at as i64, OutboxStatus::Pending),
            None => (0, OutboxStatus::Failed),
        };
        let client = self.client().await?;
        client
            .execute(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $2, status = $3, last_error = $4 WHERE seq = ANY($1)",
                &[&seqs, &next, &status.as_str(), &error],
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn ready(&self) -> Result<(), StoreError> {
        self.client().await?.execute("SELECT 1", &[]).await.map_err(db)?;
        Ok(())
    }

    async fn requeue_failed(&self, now: u64) -> Result<usize, StoreError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = $1 WHERE status = 'failed' AND owner = $2",
                &[&(now as i64), &self.node],
            )
            .await
            .map_err(db)?;
        Ok(n as usize)
    }
}

/// A lease's expiry, `LEASE_MS` from now in the database's time (one clock for every node).
const LEASE_UNTIL: &str = "clock_timestamp() + make_interval(secs => $2::double precision / 1000)";

#[async_trait::async_trait]
impl Membership for PgStore {
    fn node_id(&self) -> &str {
        &self.node
    }

    async fn join(&self, address: &str) -> Result<(), StoreError> {
        self.joined.store(true, Ordering::Relaxed);
        let client = self.client().await?;
        client
            .execute(
                &format!(
                    "INSERT INTO nodes (id, address, lease_until) VALUES ($1, $3, {LEASE_UNTIL})
                     ON CONFLICT (id) DO UPDATE SET address = EXCLUDED.address, lease_until = EXCLUDED.lease_until"
                ),
                &[&self.node, &(LEASE_MS as f64), &address],
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn renew(&self) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let n = client
            .execute(&format!("UPDATE nodes SET lease_until = {LEASE_UNTIL} WHERE id = $1"), &[&self.node, &(LEASE_MS as f64)])
            .await
            .map_err(db)?;
        Ok(n == 1)
    }

    async fn leave(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        client.execute("UPDATE nodes SET lease_until = '-infinity' WHERE id = $1", &[&self.node]).await.map_err(db)?;
        Ok(())
    }

    async fn nodes(&self) -> Result<Vec<Node>, StoreError> {
        let client = self.client().await?;
        let rows = client.query("SELECT id, address, lease_until > clock_timestamp() FROM nodes ORDER BY id", &[]).await.map_err(db)?;
        Ok(rows.iter().map(|r| Node { id: r.get(0), address: r.get(1), alive: r.get(2) }).collect())
    }

    async fn owner(&self, call_id: &str) -> Result<Option<Owner>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT COALESCE(c.owner, ''), COALESCE(n.address, ''), COALESCE(n.lease_until > clock_timestamp(), false), c.app_id
                 FROM calls c LEFT JOIN nodes n ON n.id = c.owner WHERE c.id = $1",
                &[&call_id],
            )
            .await
            .map_err(db)?;
        Ok(row.map(|r| Owner { node: r.get(0), address: r.get(1), alive: r.get(2), app_id: r.get(3) }))
    }

    async fn adopt_dead(&self) -> Result<Adopted, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        // Each dead node is adopted whole by one node; a node another adopter holds is skipped.
        let dead: Vec<String> = tx
            .query("SELECT id FROM nodes WHERE id <> $1 AND lease_until < clock_timestamp() FOR UPDATE SKIP LOCKED", &[&self.node])
            .await
            .map_err(db)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        // Calls whose owner has no row at all: created by a node after its row was adopted and before
        // it noticed (a pause), then left when it died. Nobody else will ever take them.
        let orphans: Vec<String> = tx
            .query(
                "SELECT DISTINCT c.owner FROM calls c WHERE c.owner IS NOT NULL AND c.owner <> $1
                   AND NOT EXISTS (SELECT 1 FROM nodes n WHERE n.id = c.owner)",
                &[&self.node],
            )
            .await
            .map_err(db)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let dead: Vec<String> = dead.into_iter().chain(orphans).collect();
        if dead.is_empty() {
            return Ok(Adopted::default());
        }
        let calls = tx
            .query("UPDATE calls SET owner = $1 WHERE owner = ANY($2) RETURNING id, version, body", &[&self.node, &dead])
            .await
            .map_err(db)?;
        let outbox = tx
            .query(&format!("UPDATE outbox SET owner = $1 WHERE owner = ANY($2) RETURNING {OUTBOX_COLUMNS}"), &[&self.node, &dead])
            .await
            .map_err(db)?;
        tx.execute("DELETE FROM nodes WHERE id = ANY($1)", &[&dead]).await.map_err(db)?;
        tx.commit().await.map_err(db)?;
        adopted(&calls, &outbox, dead)
    }

    async fn adopt_call(&self, call_id: &str, from: &str) -> Result<Option<Adopted>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let calls = tx
            .query(
                "UPDATE calls SET owner = $1 WHERE id = $2 AND COALESCE(owner, '') = $3
                   AND NOT EXISTS (SELECT 1 FROM nodes WHERE id = $3 AND lease_until >= clock_timestamp())
                 RETURNING id, version, body",
                &[&self.node, &call_id, &from],
            )
            .await
            .map_err(db)?;
        if calls.is_empty() {
            return Ok(None);
        }
        let outbox = tx
            .query(
                &format!("UPDATE outbox SET owner = $1 WHERE call_id = $2 AND COALESCE(owner, '') = $3 RETURNING {OUTBOX_COLUMNS}"),
                &[&self.node, &call_id, &from],
            )
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        adopted(&calls, &outbox, vec![]).map(Some)
    }

    async fn hand_over(&self, call_id: &str, to: &str) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let n = tx.execute("UPDATE calls SET owner = $3 WHERE id = $1 AND owner = $2", &[&call_id, &self.node, &to]).await.map_err(db)?;
        if n == 1 {
            tx.execute("UPDATE outbox SET owner = $3 WHERE call_id = $1 AND owner = $2", &[&call_id, &self.node, &to]).await.map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(n == 1)
    }

    async fn all_calls(&self) -> Result<Vec<StoredCall>, StoreError> {
        let client = self.client().await?;
        let rows = client.query("SELECT id, version, body FROM calls", &[]).await.map_err(db)?;
        rows.iter().map(stored_call).collect()
    }

    async fn owned_call(&self, call_id: &str) -> Result<Option<Adopted>, StoreError> {
        let client = self.client().await?;
        let calls =
            client.query("SELECT id, version, body FROM calls WHERE id = $1 AND owner = $2", &[&call_id, &self.node]).await.map_err(db)?;
        if calls.is_empty() {
            return Ok(None);
        }
        let outbox = client
            .query(&format!("SELECT {OUTBOX_COLUMNS} FROM outbox WHERE call_id = $1 AND owner = $2 ORDER BY seq"), &[&call_id, &self.node])
            .await
            .map_err(db)?;
        adopted(&calls, &outbox, vec![]).map(Some)
    }

    async fn shared(&self, name: &str, make: &(dyn Fn() -> String + Send + Sync)) -> Result<String, StoreError> {
        let client = self.client().await?;
        let read = "SELECT value FROM shared WHERE name = $1";
        if let Some(r) = client.query_opt(read, &[&name]).await.map_err(db)? {
            return Ok(r.get(0));
        }
        // Two nodes starting at once both make one; the first stored wins and both read it back.
        client
            .execute("INSERT INTO shared (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING", &[&name, &make()])
            .await
            .map_err(db)?;
        Ok(client.query_one(read, &[&name]).await.map_err(db)?.get(0))
    }
}

fn adopted(calls: &[Row], outbox: &[Row], nodes: Vec<String>) -> Result<Adopted, StoreError> {
    let calls = calls.iter().map(stored_call).collect::<Result<Vec<_>, _>>()?;
    let mut outbox: Vec<OutboxRow> = outbox.iter().map(outbox_row).collect();
    outbox.sort_by_key(|r| r.seq);
    Ok(Adopted { calls, outbox, nodes })
}

/// A shared store handle for the server's wiring.
pub async fn open(url: &str, node: &str) -> Result<Arc<PgStore>, StoreError> {
    Ok(Arc::new(PgStore::connect_as(url, node).await?))
}

#[cfg(all(test, feature = "testing"))]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use switchboard_engine::conformance::{self, Opener};

    use super::PgStore;
    use crate::testing::Cluster;

    /// A database of its own for each fresh store; reopening connects to the same one again.
    struct Databases {
        cluster: Cluster,
        made: usize,
    }

    impl Opener for Databases {
        type Store = PgStore;
        async fn fresh(&mut self) -> PgStore {
            self.made += 1;
            let url = self.cluster.database(&format!("conformance_{}", self.made)).await;
            PgStore::connect(&url).await.unwrap()
        }
        async fn reopen(&mut self, store: PgStore) -> Option<PgStore> {
            drop(store);
            let url = self.cluster.url(&format!("conformance_{}", self.made));
            Some(PgStore::connect(&url).await.unwrap())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passes_the_store_conformance_suite() {
        let cluster = Cluster::start().await;
        conformance::run(Databases { cluster, made: 0 }).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn migrations_run_once_even_when_nodes_start_together() {
        let cluster = Cluster::start().await;
        let url = cluster.database("migrations").await;
        let (a, b, c) = tokio::join!(PgStore::connect(&url), PgStore::connect(&url), PgStore::connect(&url));
        let (a, _b, _c) = (a.unwrap(), b.unwrap(), c.unwrap());
        assert!(a.migrate().await.unwrap().is_empty(), "nothing left to migrate");
        let client = a.client().await.unwrap();
        let versions: Vec<i32> =
            client.query("SELECT version FROM schema_migrations ORDER BY version", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
        assert_eq!(versions, super::MIGRATIONS.iter().map(|(v, _)| *v).collect::<Vec<_>>());
    }

    /// Several nodes on one database: a dead node is adopted whole by exactly one of the nodes that
    /// look at once, with its call's notifications; the node that lost the call can no longer write it
    /// and learns that its lease is gone; a call handed over moves with its rows; shared values agree.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dead_node_is_adopted_once_and_can_no_longer_write() {
        use switchboard_engine::cluster::Membership;
        use switchboard_engine::store::{NewNotification, OutboxStatus, Store, StoreError};

        let cluster = Cluster::start().await;
        let url = cluster.database("membership").await;
        let (a, b, c) = (
            PgStore::connect_as(&url, "a").await.unwrap(),
            PgStore::connect_as(&url, "b").await.unwrap(),
            PgStore::connect_as(&url, "c").await.unwrap(),
        );
        for n in [&a, &b, &c] {
            n.join(&format!("http://{}", n.node_id())).await.unwrap();
        }
        let call = conformance::offered("call-x");
        let note = NewNotification { callback: "https://bot/cb".into(), body: "{}".into() };
        a.commit(&call, None, std::slice::from_ref(&note), 1).await.unwrap();
        let owner = b.owner("call-x").await.unwrap().unwrap();
        assert_eq!((owner.node.as_str(), owner.address.as_str(), owner.alive), ("a", "http://a", true));
        // Nothing is dead yet: nobody adopts anything.
        assert!(b.adopt_dead().await.unwrap().calls.is_empty());
        assert!(b.adopt_call("call-x", "a").await.unwrap().is_none(), "a live owner keeps its call");

        a.leave().await.unwrap();
        let (from_b, from_c) = tokio::join!(b.adopt_dead(), c.adopt_dead());
        let (from_b, from_c) = (from_b.unwrap(), from_c.unwrap());
        assert_eq!(from_b.calls.len() + from_c.calls.len(), 1, "adopted exactly once");
        let (adopter, other, adopted) = if from_b.calls.is_empty() { (&c, &b, from_c) } else { (&b, &c, from_b) };
        assert_eq!(adopted.nodes, ["a"]);
        assert_eq!(adopted.outbox.len(), 1, "the call's notification goes with it");
        assert_eq!(adopter.outbox(OutboxStatus::Pending).await.unwrap().len(), 1);
        assert!(a.outbox(OutboxStatus::Pending).await.unwrap().is_empty());

        // The old owner is fenced: its write is refused by name, and its lease is gone.
        let mut next = call.clone();
        next.created_at += 1;
        assert!(matches!(a.commit(&next, Some(1), &[], 2).await, Err(StoreError::NotOwner { .. })));
        assert!(!a.renew().await.unwrap());
        adopter.commit(&next, Some(1), &[note], 2).await.unwrap();

        // Handed over to the other live node, with its rows.
        assert!(adopter.hand_over("call-x", other.node_id()).await.unwrap());
        assert!(!adopter.hand_over("call-x", other.node_id()).await.unwrap(), "no longer the adopter's to give");
        let moved = other.owned_call("call-x").await.unwrap().unwrap();
        assert_eq!((moved.calls.len(), moved.calls[0].version, moved.outbox.len()), (1, 2, 2));
        assert_eq!(b.all_calls().await.unwrap().len(), 1);

        // Two nodes making a shared value at once agree on one.
        let (x, y) = tokio::join!(b.shared("k", &|| "from-b".to_owned()), c.shared("k", &|| "from-c".to_owned()));
        assert_eq!(x.unwrap(), y.unwrap());
    }

    #[test]
    fn urls_in_messages_hide_the_password() {
        assert_eq!(super::redact("postgres://sb:secret@127.0.0.1:5432/db"), "postgres://sb@127.0.0.1:5432/db");
        assert_eq!(super::redact("postgres://sb@127.0.0.1/db"), "postgres://sb@127.0.0.1/db");
    }
}

//! The PostgreSQL backend: every table's rows in one table, `writ_kv (tbl, k, v)`, keyed by
//! the table's name and the same byte-string keys as sled (`bytea` sorts byte by byte, as sled
//! does), so every read by key, prefix or range means the same on both, and the audit log's
//! record blocks are the same bytes.
//!
//! The store's interface is synchronous (sled's is); the database is reached with
//! `tokio-postgres` through a pool on a small runtime of the store's own, and a caller waits
//! for its query's answer on a channel, so a call works from any thread, inside another
//! runtime or not, like a sled read that goes to disk.
//!
//! A commit is one transaction with `synchronous_commit` on: once it returns, the database has
//! made it durable. The schema is versioned (`migrations/`, applied at start with refinery,
//! under an advisory lock so that nodes starting together apply each once); a database that
//! has a migration this build does not know is refused.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;
use tokio_postgres::config::SslMode;

use crate::{Change, Guard, Remove, Result, RowIter, StoreError, Table, Write, prefix_end};

mod embedded {
    refinery::embed_migrations!("migrations");
}

use crate::feed::{CHANNEL, listen, notices};

/// Serializes schema migrations across processes.
const MIGRATION_LOCK: i64 = 0x5772_6974_0001;
/// Held shared by every node serving the store, alone by a migration into it.
const SERVING_LOCK: i64 = 0x5772_6974_0002;
/// Rows read per round trip by the lazy iterators.
const PAGE_ROWS: i64 = 256;
/// Connections in the pool.
const POOL_SIZE: usize = 16;
/// Changes a slow follower may fall behind by before it is told to read everything again.
const CHANGES_BUFFERED: usize = 4096;

/// How to reach the PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// `postgres://user@host:port/db` (libpq's URL or key-value form).
    pub url: String,
    /// How this process holds the store against others.
    pub hold: Hold,
}

/// How a process holds a PostgreSQL store against others, with a session advisory lock kept
/// as long as the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Not at all: an offline reader (verify, export).
    Nothing,
    /// Beside other nodes serving it: refused only while a process holds it alone.
    Serving,
    /// Alone (a migration into it): refused while any node serves it.
    Alone,
}

pub(crate) struct PgStore {
    dir: PathBuf,
    pool: Pool,
    runtime: Option<tokio::runtime::Runtime>,
    /// The connection that holds the serving lock, kept open as long as the store.
    _lock: Option<tokio_postgres::Client>,
    /// This process's id in notifications, so it skips its own.
    node: String,
    changes: tokio::sync::broadcast::Sender<Change>,
    #[cfg(any(test, feature = "fault-injection"))]
    fail_commits: std::sync::atomic::AtomicBool,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn pg(e: impl std::fmt::Display) -> StoreError {
    StoreError::Postgres(e.to_string())
}

/// Runs `work` on `runtime` and waits for it on this thread.
fn wait_on<T: Send + 'static>(
    runtime: &tokio::runtime::Handle,
    work: impl Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime.spawn(async move {
        let _ = tx.send(work.await);
    });
    rx.recv()
        .unwrap_or_else(|_| Err(pg("the database task ended before answering")))
}

impl PgStore {
    pub(crate) fn open(options: &PgOptions, dir: &Path) -> Result<Self> {
        let mut config = tokio_postgres::Config::from_str(&options.url)
            .map_err(|e| pg(format!("the store URL: {e}")))?;
        if config.get_ssl_mode() == SslMode::Require {
            return Err(pg(
                "sslmode=require is not supported: reach PostgreSQL over loopback, a Unix socket or a private network",
            ));
        }
        // Durable before acknowledged: a commit returns once the database has made it durable.
        config.options("-c synchronous_commit=on");
        std::fs::create_dir_all(dir).map_err(|e| pg(format!("{}: {e}", dir.display())))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("writ-postgres")
            .enable_all()
            .build()
            .map_err(pg)?;
        let hold = options.hold;
        let setup = config.clone();
        let lock = wait_on(runtime.handle(), async move {
            let (mut client, connection) = setup.connect(NoTls).await.map_err(pg)?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::warn!(error = %e, "the PostgreSQL store's setup connection ended");
                }
            });
            migrate(&mut client).await?;
            let (sql, refused) = match hold {
                Hold::Nothing => return Ok(None),
                Hold::Serving => (
                    "SELECT pg_try_advisory_lock_shared($1)",
                    "a process holds this PostgreSQL store alone (a migration into it): wait for it to end",
                ),
                Hold::Alone => (
                    "SELECT pg_try_advisory_lock($1)",
                    "gateway processes serve this PostgreSQL store: stop them first",
                ),
            };
            // A process that just stopped may still hold it until its connection is gone.
            let mut held = false;
            for _ in 0..50 {
                held = client
                    .query_one(sql, &[&SERVING_LOCK])
                    .await
                    .map_err(pg)?
                    .get(0);
                if held {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            if !held {
                return Err(StoreError::Locked(refused.into()));
            }
            Ok(Some(client))
        })?;
        let config_for_listen = config.clone();
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(pg)?;
        let node = format!("{:016x}", rand::random::<u64>());
        let changes = tokio::sync::broadcast::channel(CHANGES_BUFFERED).0;
        // Listening before the store is handed out: a change committed after `open` returns
        // is heard.
        let (listening, heard) = std::sync::mpsc::sync_channel(1);
        runtime.spawn(listen(
            config_for_listen,
            node.clone(),
            changes.clone(),
            listening,
        ));
        heard
            .recv_timeout(std::time::Duration::from_secs(30))
            .map_err(|_| pg("could not listen for other processes' changes"))?;
        Ok(Self {
            dir: dir.to_owned(),
            pool,
            runtime: Some(runtime),
            _lock: lock,
            node,
            changes,
            #[cfg(any(test, feature = "fault-injection"))]
            fail_commits: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn node_id(&self) -> &str {
        &self.node
    }

    pub(crate) fn changes(&self) -> tokio::sync::broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// Runs a query with a pooled connection and waits for its answer.
    fn run<T, F>(
        &self,
        work: impl FnOnce(deadpool_postgres::Object) -> F + Send + 'static,
    ) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T>> + Send + 'static,
    {
        let pool = self.pool.clone();
        let runtime = self
            .runtime
            .as_ref()
            .expect("running until dropped")
            .handle();
        wait_on(runtime, async move {
            let client = pool.get().await.map_err(pg)?;
            work(client).await
        })
    }

    /// Commits are durable when they return: nothing is left to flush.
    pub(crate) fn flush(&self) -> Result<()> {
        #[cfg(any(test, feature = "fault-injection"))]
        if self.fail_commits.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(StoreError::Inconsistent("flush failure injected by a test"));
        }
        Ok(())
    }

    #[cfg(any(test, feature = "fault-injection"))]
    pub(crate) fn fail_flushes(&self, fail: bool) {
        self.fail_commits
            .store(fail, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn get_raw(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let key = key.to_vec();
        self.run(move |c| async move {
            let sql = "SELECT v FROM writ_kv WHERE tbl = $1 AND k = $2";
            let statement = c.prepare_cached(sql).await.map_err(pg)?;
            let row = c
                .query_opt(&statement, &[&table.name(), &key])
                .await
                .map_err(pg)?;
            Ok(row.map(|r| r.get(0)))
        })
    }

    pub(crate) fn contains(&self, table: Table, key: &[u8]) -> Result<bool> {
        let key = key.to_vec();
        self.run(move |c| async move {
            let sql = "SELECT 1 FROM writ_kv WHERE tbl = $1 AND k = $2";
            let statement = c.prepare_cached(sql).await.map_err(pg)?;
            let row = c
                .query_opt(&statement, &[&table.name(), &key])
                .await
                .map_err(pg)?;
            Ok(row.is_some())
        })
    }

    pub(crate) fn put_raw(&self, table: Table, key: &[u8], value: &[u8]) -> Result<()> {
        self.commit_with_removes(&[(table, key.to_vec(), value.to_vec())], &[])
    }

    /// Rows of `table` with keys in `[from, to)` (`to` `None`: no end), ascending or
    /// descending, at most `limit`.
    fn rows(
        &self,
        table: Table,
        from: Vec<u8>,
        to: Option<Vec<u8>>,
        descending: bool,
        limit: i64,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.run(move |c| async move {
            let order = if descending { "DESC" } else { "ASC" };
            let sql = format!(
                "SELECT k, v FROM writ_kv WHERE tbl = $1 AND k >= $2 AND ($3::bytea IS NULL OR k < $3) \
                 ORDER BY k {order} LIMIT $4"
            );
            let statement = c.prepare_cached(&sql).await.map_err(pg)?;
            let rows = c
                .query(&statement, &[&table.name(), &from, &to, &limit])
                .await
                .map_err(pg)?;
            Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }

    pub(crate) fn scan_raw(&self, table: Table, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.rows(table, prefix.to_vec(), prefix_end(prefix), false, i64::MAX)
    }

    pub(crate) fn scan_keys(&self, table: Table, prefix: &[u8]) -> Result<Vec<Vec<u8>>> {
        let (from, to) = (prefix.to_vec(), prefix_end(prefix));
        self.run(move |c| async move {
            let sql = "SELECT k FROM writ_kv WHERE tbl = $1 AND k >= $2 AND ($3::bytea IS NULL OR k < $3) ORDER BY k";
            let statement = c.prepare_cached(sql).await.map_err(pg)?;
            let rows = c
                .query(&statement, &[&table.name(), &from, &to])
                .await
                .map_err(pg)?;
            Ok(rows.into_iter().map(|r| r.get(0)).collect())
        })
    }

    pub(crate) fn range_raw(
        &self,
        table: Table,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.rows(table, from.to_vec(), Some(to.to_vec()), false, limit)
    }

    pub(crate) fn iter_raw(&self, table: Table, from: &[u8], to: &[u8]) -> RowIter {
        Box::new(Pages::new(
            self.clone_handle(),
            table,
            from.to_vec(),
            Some(to.to_vec()),
        ))
    }

    pub(crate) fn remove(&self, table: Table, key: &[u8]) -> Result<()> {
        self.commit_with_removes(&[], &[(table, key.to_vec())])
    }

    pub(crate) fn last_raw(
        &self,
        table: Table,
        prefix: &[u8],
    ) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        Ok(self
            .rows(table, prefix.to_vec(), prefix_end(prefix), true, 1)?
            .pop())
    }

    pub(crate) fn last_at_or_before(
        &self,
        table: Table,
        prefix: &[u8],
        key: &[u8],
    ) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        // `k <= key` is `k < key ‖ 0x00`.
        let mut to = key.to_vec();
        to.push(0);
        if to.as_slice() <= prefix {
            return Ok(None);
        }
        Ok(self.rows(table, prefix.to_vec(), Some(to), true, 1)?.pop())
    }

    pub(crate) fn iter_prefix_from(&self, table: Table, prefix: &[u8], from: &[u8]) -> RowIter {
        let from = from.max(prefix).to_vec();
        Box::new(Pages::new(
            self.clone_handle(),
            table,
            from,
            prefix_end(prefix),
        ))
    }

    pub(crate) fn commit_with_removes(&self, writes: &[Write], removes: &[Remove]) -> Result<()> {
        self.commit_guarded(writes, removes, &[])
    }

    /// A guarded row is locked for the transaction with an advisory lock on a hash of its table
    /// and key (every guarded commit takes them, in one order), then compared: so two
    /// processes that read the same head or counter cannot both commit on it, and a row
    /// expected absent cannot be created by another meanwhile.
    pub(crate) fn commit_guarded(
        &self,
        writes: &[Write],
        removes: &[Remove],
        guards: &[Guard],
    ) -> Result<()> {
        self.fail_if_told()?;
        let statements = Statements::new(&self.node, writes, removes);
        let rows: Vec<(Table, Vec<u8>)> = guards.iter().map(|(t, k, _)| (*t, k.clone())).collect();
        let expected: Vec<Guard> = guards.to_vec();
        self.run(move |c| async move {
            c.batch_execute("BEGIN").await.map_err(pg)?;
            let done = async {
                let current = lock_and_read(&c, &rows).await?;
                let changed: Vec<(Table, Vec<u8>)> = expected
                    .into_iter()
                    .filter(|(table, key, want)| {
                        current.get(&(*table, key.clone())) != want.as_ref()
                    })
                    .map(|(table, key, _)| (table, key))
                    .collect();
                if !changed.is_empty() {
                    return Err(StoreError::Conflict(changed));
                }
                statements.apply(&c).await?;
                c.batch_execute("COMMIT").await.map_err(pg)
            }
            .await;
            if done.is_err() {
                let _ = c.batch_execute("ROLLBACK").await;
            }
            done
        })
    }

    /// Begins a transaction holding `rows` locked against every other locked or guarded
    /// commit of any process, with their current values; see [`crate::Store::begin_locked`].
    pub(crate) fn begin_locked(&self, rows: &[(Table, Vec<u8>)]) -> Result<(RowValues, PgTx)> {
        self.fail_if_told()?;
        let (pool, rows) = (self.pool.clone(), rows.to_vec());
        let runtime = self
            .runtime
            .as_ref()
            .expect("running until dropped")
            .handle()
            .clone();
        let (client, values) = wait_on(&runtime, async move {
            let c = pool.get().await.map_err(pg)?;
            c.batch_execute("BEGIN").await.map_err(pg)?;
            match lock_and_read(&c, &rows).await {
                Ok(values) => Ok((c, values)),
                Err(e) => {
                    let _ = c.batch_execute("ROLLBACK").await;
                    Err(e)
                }
            }
        })?;
        Ok((
            values,
            PgTx {
                client: Some(client),
                runtime,
                node: self.node.clone(),
            },
        ))
    }

    fn fail_if_told(&self) -> Result<()> {
        #[cfg(any(test, feature = "fault-injection"))]
        if self.fail_commits.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(StoreError::Inconsistent(
                "commit failure injected by a test",
            ));
        }
        Ok(())
    }

    /// What the lazy iterators hold: the pool and the runtime's handle.
    fn clone_handle(&self) -> Handle {
        Handle {
            pool: self.pool.clone(),
            runtime: self
                .runtime
                .as_ref()
                .expect("running until dropped")
                .handle()
                .clone(),
        }
    }
}

/// Current values of locked rows, by table and key (absent rows are missing).
pub(crate) type RowValues = std::collections::HashMap<(Table, Vec<u8>), Vec<u8>>;

/// A transaction begun by [`PgStore::begin_locked`]: committed by [`PgTx::commit`], rolled
/// back when dropped otherwise.
pub(crate) struct PgTx {
    client: Option<deadpool_postgres::Object>,
    runtime: tokio::runtime::Handle,
    node: String,
}

impl PgTx {
    pub(crate) fn commit(mut self, writes: &[Write], removes: &[Remove]) -> Result<()> {
        let c = self.client.take().expect("committed once");
        let statements = Statements::new(&self.node, writes, removes);
        wait_on(&self.runtime, async move {
            let done = async {
                statements.apply(&c).await?;
                c.batch_execute("COMMIT").await.map_err(pg)
            }
            .await;
            if done.is_err() {
                let _ = c.batch_execute("ROLLBACK").await;
            }
            done
        })
    }
}

impl Drop for PgTx {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            let _ = wait_on(&self.runtime, async move {
                c.batch_execute("ROLLBACK").await.map_err(pg)
            });
        }
    }
}

/// A commit's statements' parameters: upserts (the last write of a key wins, as in sled),
/// deletions, and the notifications of cached tables' rows.
struct Statements {
    tables: Vec<&'static str>,
    keys: Vec<Vec<u8>>,
    values: Vec<Vec<u8>>,
    removed_tables: Vec<&'static str>,
    removed_keys: Vec<Vec<u8>>,
    notices: Vec<String>,
}

impl Statements {
    fn new(node: &str, writes: &[Write], removes: &[Remove]) -> Self {
        let mut latest: std::collections::HashMap<(Table, &[u8]), &[u8]> =
            std::collections::HashMap::with_capacity(writes.len());
        for (table, key, value) in writes {
            latest.insert((*table, key), value);
        }
        let (mut tables, mut keys, mut values) = (Vec::new(), Vec::new(), Vec::new());
        for ((table, key), value) in latest {
            tables.push(table.name());
            keys.push(key.to_vec());
            values.push(value.to_vec());
        }
        Self {
            tables,
            keys,
            values,
            removed_tables: removes.iter().map(|(t, _)| t.name()).collect(),
            removed_keys: removes.iter().map(|(_, k)| k.clone()).collect(),
            notices: notices(
                node,
                writes
                    .iter()
                    .map(|(t, k, _)| (*t, k.as_slice()))
                    .chain(removes.iter().map(|(t, k)| (*t, k.as_slice()))),
            ),
        }
    }

    /// Runs them on `c`, inside its open transaction.
    async fn apply(&self, c: &deadpool_postgres::Object) -> Result<()> {
        if !self.keys.is_empty() {
            let statement = c
                .prepare_cached(
                    "INSERT INTO writ_kv (tbl, k, v) \
                     SELECT * FROM UNNEST($1::text[], $2::bytea[], $3::bytea[]) \
                     ON CONFLICT (tbl, k) DO UPDATE SET v = EXCLUDED.v",
                )
                .await
                .map_err(pg)?;
            c.execute(&statement, &[&self.tables, &self.keys, &self.values])
                .await
                .map_err(pg)?;
        }
        if !self.removed_keys.is_empty() {
            let statement = c
                .prepare_cached(
                    "DELETE FROM writ_kv WHERE (tbl, k) IN \
                     (SELECT * FROM UNNEST($1::text[], $2::bytea[]))",
                )
                .await
                .map_err(pg)?;
            c.execute(&statement, &[&self.removed_tables, &self.removed_keys])
                .await
                .map_err(pg)?;
        }
        for notice in &self.notices {
            c.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, notice])
                .await
                .map_err(pg)?;
        }
        Ok(())
    }
}

/// Locks `rows` for the open transaction on `c` (advisory locks on their hashes, in one
/// order) and reads their current values.
async fn lock_and_read(
    c: &deadpool_postgres::Object,
    rows: &[(Table, Vec<u8>)],
) -> Result<RowValues> {
    if rows.is_empty() {
        return Ok(RowValues::new());
    }
    let mut locks: Vec<i64> = rows.iter().map(|(t, k)| guard_lock(*t, k)).collect();
    locks.sort_unstable();
    locks.dedup();
    let statement = c
        .prepare_cached("SELECT pg_advisory_xact_lock(x) FROM unnest($1::bigint[]) AS x")
        .await
        .map_err(pg)?;
    c.execute(&statement, &[&locks]).await.map_err(pg)?;
    let tables: Vec<&'static str> = rows.iter().map(|(t, _)| t.name()).collect();
    let keys: Vec<Vec<u8>> = rows.iter().map(|(_, k)| k.clone()).collect();
    let statement = c
        .prepare_cached(
            "SELECT tbl, k, v FROM writ_kv WHERE (tbl, k) IN \
             (SELECT * FROM UNNEST($1::text[], $2::bytea[]))",
        )
        .await
        .map_err(pg)?;
    let found = c.query(&statement, &[&tables, &keys]).await.map_err(pg)?;
    Ok(found
        .into_iter()
        .filter_map(|r| {
            let table = Table::from_name(r.get::<_, &str>(0))?;
            Some(((table, r.get(1)), r.get(2)))
        })
        .collect())
}

/// The advisory lock of a guarded row: 64 bits of a blake3 hash of its table and key (the
/// same in every build, so every node takes the same lock for a row).
fn guard_lock(table: Table, key: &[u8]) -> i64 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(table.name().as_bytes());
    hasher.update(&[0]);
    hasher.update(key);
    let hash = hasher.finalize();
    i64::from_le_bytes(hash.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// Applies the migrations this build has, one process at a time; refuses a database with one
/// it does not have (a newer build migrated it).
async fn migrate(client: &mut tokio_postgres::Client) -> Result<()> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg)?;
    let applied = embedded::migrations::runner()
        .set_abort_missing(true)
        .set_abort_divergent(true)
        .run_async(client)
        .await;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg)?;
    applied.map_err(|e| {
        StoreError::Schema(format!(
            "{e} (a database migrated by a newer writ is refused; run that version)"
        ))
    })?;
    Ok(())
}

#[derive(Clone)]
struct Handle {
    pool: Pool,
    runtime: tokio::runtime::Handle,
}

/// A lazy read of `[from, to)`, a page of rows per round trip.
struct Pages {
    handle: Handle,
    table: Table,
    next: Option<Vec<u8>>,
    to: Option<Vec<u8>>,
    page: std::vec::IntoIter<(Vec<u8>, Vec<u8>)>,
}

impl Pages {
    fn new(handle: Handle, table: Table, from: Vec<u8>, to: Option<Vec<u8>>) -> Self {
        Self {
            handle,
            table,
            next: Some(from),
            to,
            page: Vec::new().into_iter(),
        }
    }

    fn fetch(&mut self, from: Vec<u8>) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let (pool, table, to) = (self.handle.pool.clone(), self.table, self.to.clone());
        wait_on(&self.handle.runtime, async move {
            let c = pool.get().await.map_err(pg)?;
            let sql = "SELECT k, v FROM writ_kv WHERE tbl = $1 AND k >= $2 AND ($3::bytea IS NULL OR k < $3) \
                       ORDER BY k ASC LIMIT $4";
            let statement = c.prepare_cached(sql).await.map_err(pg)?;
            let rows = c
                .query(&statement, &[&table.name(), &from, &to, &PAGE_ROWS])
                .await
                .map_err(pg)?;
            Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }
}

impl Iterator for Pages {
    type Item = Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(row) = self.page.next() {
            return Some(Ok(row));
        }
        let from = self.next.take()?;
        match self.fetch(from) {
            Err(e) => Some(Err(e)),
            Ok(rows) => {
                if rows.len() as i64 == PAGE_ROWS {
                    // The next page starts just past this one's last key.
                    let mut after = rows.last().expect("a full page").0.clone();
                    after.push(0);
                    self.next = Some(after);
                }
                self.page = rows.into_iter();
                self.page.next().map(Ok)
            }
        }
    }
}

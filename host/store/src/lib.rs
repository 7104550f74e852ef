//! The durable store, Writ's storage boundary: named [`Table`]s of JSON or raw values under
//! byte-string keys, read by key, prefix and range, and one transactional write across tables,
//! [`Store::commit`], which the audit log uses for a batch of record blocks with their indexes,
//! usage counters and escalation rows. The rest of the code sees nothing else.
//!
//! Two backends hold it: sled in the data directory (embedded, the default; `embedded.rs`) and
//! PostgreSQL (`postgres.rs`), where every table is rows of one key-value table, so records,
//! their canonical encoding and hashes are byte for byte the same on both.
//!
//! Keys are byte strings. Tenant-scoped keys start with the tenant id and a `0x00` separator, so
//! a prefix scan for one tenant never sees another's rows.

mod embedded;
mod feed;
mod postgres;

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use postgres::{Hold, PgOptions};

/// Storage failures. All are server-side: the API answers them with a 500.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled failed (I/O, corruption).
    #[error("storage: {0}")]
    Sled(#[from] ::sled::Error),
    /// PostgreSQL failed (connection, query, transaction).
    #[error("database: {0}")]
    Postgres(String),
    /// The database's schema is newer than this build knows, or could not be brought up to it.
    #[error("database schema: {0}")]
    Schema(String),
    /// Another process holds the store.
    #[error("{0}")]
    Locked(String),
    /// Guarded rows did not hold what the commit expected (another process changed them):
    /// nothing was written.
    #[error("{} guarded rows changed since they were read", .0.len())]
    Conflict(Vec<(Table, Vec<u8>)>),
    /// A stored value did not decode: the store was written by something else.
    #[error("corrupt value in {table:?}: {source}")]
    Corrupt {
        table: Table,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
    /// An index names a row that is not there.
    #[error("store inconsistent: {0}")]
    Inconsistent(&'static str),
}

/// Result of a store operation.
pub type Result<T> = std::result::Result<T, StoreError>;

/// The store's tables, one sled tree each (one name in PostgreSQL's key-value table), named
/// after the variant in snake case.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    strum::IntoStaticStr,
    strum::VariantArray,
    strum::EnumCount,
)]
#[strum(serialize_all = "snake_case")]
pub enum Table {
    /// tenant id → tenant record.
    Tenants,
    /// key hash → key record.
    Keys,
    /// key id → key hash.
    KeyIds,
    /// tenant ‖ policy id → policy metadata.
    Policies,
    /// tenant id → active policy id.
    Active,
    /// tenant ‖ first seq (big-endian) → a block of consecutive audit records.
    Audit,
    /// event id → tenant ‖ seq, for event ids chosen before their record was appended.
    Events,
    /// tenant ‖ session ‖ first seq → seqs (big-endian u64s): the session index.
    Sessions,
    /// tenant id → seq (big-endian): the session index covers the chain below it.
    SessionMarks,
    /// tenant ‖ window bucket ‖ counter → f64 (big-endian bits).
    Usage,
    /// tenant id → latest signed checkpoint (note text).
    Checkpoints,
    /// tenant ‖ escalation id → escalation.
    Escalations,
    /// tenant ‖ credential name → nonce ‖ XChaCha20-Poly1305 sealed secret.
    Credentials,
    /// tenant ‖ credential name → the origins the credential may be sent to (JSON).
    CredentialOrigins,
    /// tenant id → nonce ‖ XChaCha20-Poly1305 sealed webhook signing secret.
    WebhookSecrets,
    /// tenant ‖ service ‖ tool name → catalog entry.
    Catalog,
    /// tenant ‖ job id → downstream job.
    Jobs,
    /// tenant ‖ idempotency key → the first response to it.
    Idempotency,
    /// tenant ‖ event id of an allowed call → the event id of its completion record.
    Completions,
    /// tenant ‖ MCP server name → its catalog entry (the tools marked destructive).
    McpServers,
    /// policy id → the component's bytes, in a store shared by several processes (each keeps
    /// its own compiled artifacts); sled's are files beside the store.
    Components,
    /// tenant id → the chain's head: next seq (big-endian u64) ‖ the last record's hash,
    /// written with every batch and guarded, so appends from several processes stay one chain.
    ChainHeads,
    /// blake3 hash of a console session id → the session (JSON), on a store several processes
    /// share.
    ConsoleSessions,
    /// tenant ‖ job id → the lease of a job not finished: the process running it and until
    /// when (JSON). A lease not renewed in time marks the job failed `interrupted`.
    JobLeases,
}

impl Table {
    /// The table's name: its sled tree, its rows' `tbl` in PostgreSQL.
    pub fn name(self) -> &'static str {
        self.into()
    }

    /// Every table.
    pub fn all() -> &'static [Self] {
        <Self as strum::VariantArray>::VARIANTS
    }

    /// The table named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::all().iter().copied().find(|t| t.name() == name)
    }

    /// Whether processes sharing the store keep this table's rows in memory, and so must hear
    /// of every change another makes to them (see [`Store::changes`]).
    pub fn is_cached(self) -> bool {
        matches!(
            self,
            Self::Tenants
                | Self::Keys
                | Self::Active
                | Self::Escalations
                | Self::WebhookSecrets
                | Self::Catalog
                | Self::McpServers
        )
    }
}

/// A change another process sharing the store made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A row of a cached table was written or removed: read it again.
    Row(Table, Vec<u8>),
    /// Changes may have been missed (the notification connection was lost and is back): read
    /// every cached table again.
    Resync,
}

/// Joins key parts with the `0x00` separator.
pub fn key(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push(0);
        }
        out.extend_from_slice(part);
    }
    out
}

/// One write of a [`Store::commit`].
pub type Write = (Table, Vec<u8>, Vec<u8>);

/// One removal of a [`Store::commit_with_removes`].
pub type Remove = (Table, Vec<u8>);

/// A row a [`Store::commit_guarded`] expects to hold this value (`None`: to be absent) when it
/// commits.
pub type Guard = (Table, Vec<u8>, Option<Vec<u8>>);

/// Rows read lazily, for scans too large to hold in memory.
pub type RowIter = Box<dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>)>> + Send>;

/// The store. Cheap to clone: one reference count (each evaluation takes a clone).
#[derive(Clone)]
pub struct Store(std::sync::Arc<Backend>);

enum Backend {
    Sled(embedded::SledStore),
    Postgres(postgres::PgStore),
}

/// Calls the backend's method of the same name.
macro_rules! each {
    ($self:ident, $store:ident => $call:expr) => {
        match $self.0.as_ref() {
            Backend::Sled($store) => $call,
            Backend::Postgres($store) => $call,
        }
    };
}

impl Store {
    /// Opens (creating if needed) the sled store in `dir`.
    ///
    /// sled releases its lock on the directory when its last background write ends, which can
    /// be shortly after the previous `Store` in this process was dropped; a lock held that way
    /// is waited for, up to two seconds.
    pub fn open(dir: &Path) -> Result<Self> {
        Ok(Self(std::sync::Arc::new(Backend::Sled(
            embedded::SledStore::open(dir)?,
        ))))
    }

    /// Connects to the PostgreSQL store at `options.url`, bringing its schema up to this
    /// build's (refusing one newer than it knows); `dir` keeps this process's local files
    /// (compiled policy artifacts).
    pub fn open_postgres(options: &PgOptions, dir: &Path) -> Result<Self> {
        Ok(Self(std::sync::Arc::new(Backend::Postgres(
            postgres::PgStore::open(options, dir)?,
        ))))
    }

    /// Whether the store is a database shared with other processes (PostgreSQL).
    pub fn is_shared(&self) -> bool {
        matches!(self.0.as_ref(), Backend::Postgres(_))
    }

    /// This process's id among those sharing the store (`local` for sled).
    pub fn node_id(&self) -> &str {
        match self.0.as_ref() {
            Backend::Sled(_) => "local",
            Backend::Postgres(s) => s.node_id(),
        }
    }

    /// The changes other processes sharing the store make to rows of cached tables, as they
    /// commit (PostgreSQL's `LISTEN`/`NOTIFY`, delivered at commit); `None` for a store no
    /// other process writes (sled).
    pub fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<Change>> {
        match self.0.as_ref() {
            Backend::Sled(_) => None,
            Backend::Postgres(s) => Some(s.changes()),
        }
    }

    /// The directory this process keeps its files in, beside the store.
    pub fn dir(&self) -> &Path {
        each!(self, s => s.dir())
    }

    /// Makes every write so far durable (see ARCHITECTURE.md for what that means with each
    /// backend). Blocking: call from a blocking thread.
    pub fn flush(&self) -> Result<()> {
        each!(self, s => s.flush())
    }

    /// Makes every flush (and, in PostgreSQL, every commit) fail (`true`) or work again
    /// (`false`), for tests of what a failing disk or database does.
    #[cfg(any(test, feature = "fault-injection"))]
    pub fn fail_flushes(&self, fail: bool) {
        each!(self, s => s.fail_flushes(fail))
    }

    /// Makes the calling thread write sled's log buffers its own writes fill or seal (see
    /// `sled.rs`); nothing for PostgreSQL.
    pub fn write_log_buffers_on_this_thread(&self) {
        if let Backend::Sled(s) = self.0.as_ref() {
            s.write_log_buffers_on_this_thread();
        }
    }

    /// Reads and decodes a JSON value.
    pub fn get<T: DeserializeOwned>(&self, table: Table, key: &[u8]) -> Result<Option<T>> {
        self.get_raw(table, key)?
            .map(|v| decode(table, &v))
            .transpose()
    }

    /// Encodes and writes a JSON value.
    pub fn put<T: Serialize>(&self, table: Table, key: &[u8], value: &T) -> Result<()> {
        let bytes = serde_json::to_vec(value).expect("store values serialize");
        self.put_raw(table, key, &bytes)
    }

    /// Reads raw bytes.
    pub fn get_raw(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        each!(self, s => s.get_raw(table, key))
    }

    /// Whether `key` is present.
    pub fn contains(&self, table: Table, key: &[u8]) -> Result<bool> {
        each!(self, s => s.contains(table, key))
    }

    /// Writes raw bytes.
    pub fn put_raw(&self, table: Table, key: &[u8], value: &[u8]) -> Result<()> {
        each!(self, s => s.put_raw(table, key, value))
    }

    /// Decodes every JSON value whose key starts with `prefix`, in key order.
    pub fn scan<T: DeserializeOwned>(
        &self,
        table: Table,
        prefix: &[u8],
    ) -> Result<Vec<(Vec<u8>, T)>> {
        self.scan_raw(table, prefix)?
            .into_iter()
            .map(|(k, v)| Ok((k, decode(table, &v)?)))
            .collect()
    }

    /// [`Store::scan`] that decodes each value on its own: the values that decode, and the
    /// keys of those that do not with their errors (a store error ends the scan).
    #[allow(clippy::type_complexity)]
    pub fn scan_each<T: DeserializeOwned>(
        &self,
        table: Table,
        prefix: &[u8],
    ) -> Result<(Vec<(Vec<u8>, T)>, Vec<(Vec<u8>, StoreError)>)> {
        let (mut good, mut bad) = (Vec::new(), Vec::new());
        for (k, v) in self.scan_raw(table, prefix)? {
            match decode(table, &v) {
                Ok(value) => good.push((k, value)),
                Err(e) => bad.push((k, e)),
            }
        }
        Ok((good, bad))
    }

    /// Every raw value whose key starts with `prefix`, in key order.
    pub fn scan_raw(&self, table: Table, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        each!(self, s => s.scan_raw(table, prefix))
    }

    /// Every key starting with `prefix`, in order.
    pub fn scan_keys(&self, table: Table, prefix: &[u8]) -> Result<Vec<Vec<u8>>> {
        each!(self, s => s.scan_keys(table, prefix))
    }

    /// Raw values with keys in `[from, to)`, in key order, at most `limit`.
    pub fn range_raw(
        &self,
        table: Table,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        each!(self, s => s.range_raw(table, from, to, limit))
    }

    /// Raw values with keys in `[from, to)`, in key order, read lazily: for scans too large to
    /// hold in memory.
    pub fn iter_raw(&self, table: Table, from: &[u8], to: &[u8]) -> RowIter {
        each!(self, s => s.iter_raw(table, from, to))
    }

    /// Removes a row. Used by maintenance and by tests that tamper with a stopped store.
    pub fn remove(&self, table: Table, key: &[u8]) -> Result<()> {
        each!(self, s => s.remove(table, key))
    }

    /// The last raw value whose key starts with `prefix`.
    pub fn last_raw(&self, table: Table, prefix: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        each!(self, s => s.last_raw(table, prefix))
    }

    /// A usage counter's value (0 when never charged).
    pub fn usage(&self, key: &[u8]) -> Result<f64> {
        Ok(self
            .get_raw(Table::Usage, key)?
            .map_or(0.0, |v| decode_f64(&v)))
    }

    /// The last raw value whose key starts with `prefix` and is at most `key`.
    pub fn last_at_or_before(
        &self,
        table: Table,
        prefix: &[u8],
        key: &[u8],
    ) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        each!(self, s => s.last_at_or_before(table, prefix, key))
    }

    /// Raw values whose key starts with `prefix` and is at least `from`, in key order, read
    /// lazily.
    pub fn iter_prefix_from(&self, table: Table, prefix: &[u8], from: &[u8]) -> RowIter {
        each!(self, s => s.iter_prefix_from(table, prefix, from))
    }

    /// Applies `writes` (inserts, across tables) in one transaction: after a crash, either all
    /// of them are there or none. Not flushed (sled); committed, so durable (PostgreSQL).
    pub fn commit(&self, writes: &[Write]) -> Result<()> {
        self.commit_with_removes(writes, &[])
    }

    /// [`Store::commit`] that also removes `removes`, in the same transaction (a key both
    /// written and removed ends removed).
    pub fn commit_with_removes(&self, writes: &[Write], removes: &[Remove]) -> Result<()> {
        self.commit_guarded(writes, removes, &[])
    }

    /// Begins a transaction holding `rows` locked against every other locked or guarded commit
    /// of any process sharing the store, until it commits or is dropped, with their current
    /// values: what is computed from them can be committed without a conflict. On sled, whose
    /// only writer of such rows is the audit writer, it only reads them.
    pub fn begin_locked(&self, rows: &[(Table, Vec<u8>)]) -> Result<Locked> {
        match self.0.as_ref() {
            Backend::Sled(s) => {
                let mut values = std::collections::HashMap::new();
                for (table, key) in rows {
                    if let Some(value) = s.get_raw(*table, key)? {
                        values.insert((*table, key.clone()), value);
                    }
                }
                Ok(Locked {
                    values,
                    tx: LockedTx::Sled(self.clone()),
                })
            }
            Backend::Postgres(s) => {
                let (values, tx) = s.begin_locked(rows)?;
                Ok(Locked {
                    values,
                    tx: LockedTx::Postgres(Box::new(tx)),
                })
            }
        }
    }

    /// [`Store::commit_with_removes`] only if every guarded row holds what it expects, checked
    /// in the same transaction against every other guarded commit (of this process or another
    /// on the same database); otherwise nothing is written and the answer is
    /// [`StoreError::Conflict`] naming the rows that differ. Compare-and-set across processes: the chain heads and usage
    /// counters the audit log writes are guarded so.
    pub fn commit_guarded(
        &self,
        writes: &[Write],
        removes: &[Remove],
        guards: &[Guard],
    ) -> Result<()> {
        each!(self, s => s.commit_guarded(writes, removes, guards))
    }
}

/// A transaction holding rows locked (see [`Store::begin_locked`]): their values as they were
/// when locked, and [`Locked::commit`]. Dropped without committing, it writes nothing.
pub struct Locked {
    values: std::collections::HashMap<(Table, Vec<u8>), Vec<u8>>,
    tx: LockedTx,
}

enum LockedTx {
    Sled(Store),
    Postgres(Box<postgres::PgTx>),
}

impl Locked {
    /// A locked row's value when it was locked (`None`: absent).
    pub fn value(&self, table: Table, key: &[u8]) -> Option<&[u8]> {
        self.values.get(&(table, key.to_vec())).map(Vec::as_slice)
    }

    /// Writes `writes` and removes `removes` in the transaction and commits it.
    pub fn commit(self, writes: &[Write], removes: &[Remove]) -> Result<()> {
        match self.tx {
            LockedTx::Sled(store) => store.commit_with_removes(writes, removes),
            LockedTx::Postgres(tx) => tx.commit(writes, removes),
        }
    }
}

/// The first key after every key that starts with `prefix`, if there is one (a prefix of only
/// `0xff` bytes has none).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn decode<T: DeserializeOwned>(table: Table, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt { table, source })
}

fn decode_f64(bytes: &[u8]) -> f64 {
    bytes
        .try_into()
        .map(|b| f64::from_bits(u64::from_be_bytes(b)))
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_end_of_a_prefix_is_the_first_key_past_it() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert_eq!(prefix_end(b""), None);
    }
}

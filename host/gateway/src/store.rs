//! The durable store: one sled database in the data directory. This is the only module that
//! touches sled; the rest of the code sees named [`Table`]s of JSON or raw values, and one
//! transactional write across tables, [`Store::commit`], which the audit log uses for a batch
//! of record blocks with their indexes, usage counters and escalation rows.
//!
//! Keys are byte strings. Tenant-scoped keys start with the tenant id and a `0x00` separator, so
//! a prefix scan for one tenant never sees another's rows.

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::Transactional;
use sled::transaction::TransactionError;

/// Storage failures. All are server-side: the API answers them with a 500.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled failed (I/O, corruption).
    #[error("storage: {0}")]
    Sled(#[from] sled::Error),
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

/// The store's tables, one sled tree each, named after the variant in snake case.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::VariantArray, strum::EnumCount,
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
}

impl Table {
    fn name(self) -> &'static str {
        self.into()
    }
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

/// The sled database and its trees. Cheap to clone: one reference count, where the parts
/// themselves would be eighteen and a path copy (each evaluation takes a clone).
#[derive(Clone)]
pub struct Store(std::sync::Arc<Parts>);

struct Parts {
    dir: std::path::PathBuf,
    db: sled::Db,
    trees: [sled::Tree; <Table as strum::EnumCount>::COUNT],
    /// Tests make flushes fail with this.
    #[cfg(any(test, feature = "fault-injection"))]
    fail_flushes: std::sync::atomic::AtomicBool,
}

impl Store {
    /// Opens (creating if needed) the store in `dir`.
    ///
    /// sled releases its lock on the directory when its last background write ends, which can
    /// be shortly after the previous `Store` in this process was dropped; a lock held that way
    /// is waited for, up to two seconds.
    pub fn open(dir: &Path) -> Result<Self> {
        let mut waited = std::time::Duration::ZERO;
        loop {
            match Self::try_open(dir) {
                Err(StoreError::Sled(sled::Error::Io(e)))
                    if e.to_string().contains("could not acquire lock")
                        && waited < std::time::Duration::from_secs(2) =>
                {
                    let pause = std::time::Duration::from_millis(20);
                    std::thread::sleep(pause);
                    waited += pause;
                }
                result => return result,
            }
        }
    }

    fn try_open(dir: &Path) -> Result<Self> {
        let db = sled::Config::new()
            .path(dir.join("db"))
            .cache_capacity(16 << 20)
            // Values larger than a quarter segment become files of their own; 2 MiB segments
            // keep a leaf of audit blocks (up to 16 blocks of 16 records) in the log.
            .segment_size(2 << 20)
            .open()?;
        let trees = <Table as strum::VariantArray>::VARIANTS
            .iter()
            .map(|t| db.open_tree(t.name()))
            .collect::<std::result::Result<Vec<_>, _>>()?
            .try_into()
            .unwrap_or_else(|_| unreachable!("one tree per table"));
        Ok(Self(std::sync::Arc::new(Parts {
            dir: dir.to_owned(),
            db,
            trees,
            #[cfg(any(test, feature = "fault-injection"))]
            fail_flushes: std::sync::atomic::AtomicBool::new(false),
        })))
    }

    /// The data directory the store is in; other modules keep their files beside it.
    pub fn dir(&self) -> &Path {
        &self.0.dir
    }

    fn tree(&self, table: Table) -> &sled::Tree {
        &self.0.trees[table as usize]
    }

    /// Makes every write so far durable (see ARCHITECTURE.md for what that means with sled).
    /// Blocking: call from a blocking thread.
    pub fn flush(&self) -> Result<()> {
        #[cfg(any(test, feature = "fault-injection"))]
        if self
            .0
            .fail_flushes
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Err(StoreError::Inconsistent("flush failure injected by a test"));
        }
        self.0.db.flush()?;
        Ok(())
    }

    /// Makes every flush fail (`true`) or work again (`false`), for tests of what a failing
    /// disk does.
    #[cfg(any(test, feature = "fault-injection"))]
    pub fn fail_flushes(&self, fail: bool) {
        self.0
            .fail_flushes
            .store(fail, std::sync::atomic::Ordering::Relaxed);
    }

    /// Makes the calling thread write the log buffers its own writes fill or seal instead of
    /// handing them to sled's I/O threads, and leave a commit's batch-manifest buffer to be
    /// synced with its next flush's buffer in one call (changes 5 and 7 in
    /// `vendor/sled/WRIT-PATCH.md`). The setting is the thread's, for every store it writes
    /// to. For a thread that flushes after every commit, such as the audit writer: its flush
    /// waits for every earlier buffer anyway, and each hand-off cost a pool thread's wake-up
    /// and each separate sync a disk round trip.
    pub fn write_log_buffers_on_this_thread(&self) {
        sled::write_buffers_inline(true);
    }

    /// Reads and decodes a JSON value.
    pub fn get<T: DeserializeOwned>(&self, table: Table, key: &[u8]) -> Result<Option<T>> {
        self.tree(table)
            .get(key)?
            .map(|v| decode(table, &v))
            .transpose()
    }

    /// Encodes and writes a JSON value.
    pub fn put<T: Serialize>(&self, table: Table, key: &[u8], value: &T) -> Result<()> {
        let bytes = serde_json::to_vec(value).expect("store values serialize");
        self.tree(table).insert(key, bytes)?;
        Ok(())
    }

    /// Reads raw bytes.
    pub fn get_raw(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.tree(table).get(key)?.map(|v| v.to_vec()))
    }

    /// Whether `key` is present.
    pub fn contains(&self, table: Table, key: &[u8]) -> Result<bool> {
        Ok(self.tree(table).contains_key(key)?)
    }

    /// Writes raw bytes.
    pub fn put_raw(&self, table: Table, key: &[u8], value: &[u8]) -> Result<()> {
        self.tree(table).insert(key, value)?;
        Ok(())
    }

    /// Decodes every JSON value whose key starts with `prefix`, in key order.
    pub fn scan<T: DeserializeOwned>(
        &self,
        table: Table,
        prefix: &[u8],
    ) -> Result<Vec<(Vec<u8>, T)>> {
        self.tree(table)
            .scan_prefix(prefix)
            .map(|kv| {
                let (k, v) = kv?;
                Ok((k.to_vec(), decode(table, &v)?))
            })
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
        for kv in self.tree(table).scan_prefix(prefix) {
            let (k, v) = kv?;
            match decode(table, &v) {
                Ok(value) => good.push((k.to_vec(), value)),
                Err(e) => bad.push((k.to_vec(), e)),
            }
        }
        Ok((good, bad))
    }

    /// Every key starting with `prefix`, in order.
    pub fn scan_keys(&self, table: Table, prefix: &[u8]) -> Result<Vec<Vec<u8>>> {
        self.tree(table)
            .scan_prefix(prefix)
            .keys()
            .map(|k| Ok(k?.to_vec()))
            .collect()
    }

    /// Raw values with keys in `[from, to)`, in key order, at most `limit`.
    pub fn range_raw(
        &self,
        table: Table,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.tree(table)
            .range(from..to)
            .take(limit)
            .map(|kv| {
                let (k, v) = kv?;
                Ok((k.to_vec(), v.to_vec()))
            })
            .collect()
    }

    /// Raw values with keys in `[from, to)`, in key order, read lazily: for scans too large to
    /// hold in memory.
    pub fn iter_raw(
        &self,
        table: Table,
        from: &[u8],
        to: &[u8],
    ) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>)>> + use<> {
        self.tree(table)
            .range(from.to_vec()..to.to_vec())
            .map(|kv| {
                let (k, v) = kv?;
                Ok((k.to_vec(), v.to_vec()))
            })
    }

    /// Removes a row. Used by maintenance and by tests that tamper with a stopped store.
    pub fn remove(&self, table: Table, key: &[u8]) -> Result<()> {
        self.tree(table).remove(key)?;
        Ok(())
    }

    /// The last raw value whose key starts with `prefix`.
    pub fn last_raw(&self, table: Table, prefix: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        Ok(self
            .tree(table)
            .scan_prefix(prefix)
            .next_back()
            .transpose()?
            .map(|(k, v)| (k.to_vec(), v.to_vec())))
    }

    /// A usage counter's value (0 when never charged).
    pub fn usage(&self, key: &[u8]) -> Result<f64> {
        Ok(self
            .tree(Table::Usage)
            .get(key)?
            .map_or(0.0, |v| decode_f64(&v)))
    }

    /// The last raw value whose key starts with `prefix` and is at most `key`.
    pub fn last_at_or_before(
        &self,
        table: Table,
        prefix: &[u8],
        key: &[u8],
    ) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        Ok(self
            .tree(table)
            .range(prefix..=key)
            .next_back()
            .transpose()?
            .map(|(k, v)| (k.to_vec(), v.to_vec())))
    }

    /// Raw values whose key starts with `prefix` and is at least `from`, in key order, read
    /// lazily.
    pub fn iter_prefix_from(
        &self,
        table: Table,
        prefix: &[u8],
        from: &[u8],
    ) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>)>> + use<> {
        let prefix = prefix.to_vec();
        self.tree(table)
            .range(from.to_vec()..)
            .take_while(move |kv| kv.as_ref().map_or(true, |(k, _)| k.starts_with(&prefix)))
            .map(|kv| {
                let (k, v) = kv?;
                Ok((k.to_vec(), v.to_vec()))
            })
    }

    /// Applies `writes` (inserts, across tables) in one transaction: after a crash, either all
    /// of them are there or none. Not flushed.
    ///
    /// Every sled transaction costs a log buffer write, and every insert a copy of its leaf,
    /// so the audit log's writer commits a whole batch at once, in as few values as it can.
    pub fn commit(&self, writes: &[Write]) -> Result<()> {
        self.commit_with_removes(writes, &[])
    }

    /// [`Store::commit`] that also removes `removes`, in the same transaction.
    pub fn commit_with_removes(&self, writes: &[Write], removes: &[Remove]) -> Result<()> {
        let mut tables: Vec<Table> = writes
            .iter()
            .map(|(t, _, _)| *t)
            .chain(removes.iter().map(|(t, _)| *t))
            .collect();
        tables.sort_by_key(|t| *t as usize);
        tables.dedup();
        let trees: Vec<&sled::Tree> = tables.iter().map(|t| self.tree(*t)).collect();
        let result: std::result::Result<(), TransactionError<()>> =
            trees.as_slice().transaction(|trees| {
                for (table, key, value) in writes {
                    let at = tables.iter().position(|t| t == table).expect("collected");
                    trees[at].set(key.as_slice(), value.as_slice());
                }
                for (table, key) in removes {
                    let at = tables.iter().position(|t| t == table).expect("collected");
                    trees[at].remove(key.as_slice())?;
                }
                Ok(())
            });
        match result {
            Ok(()) => Ok(()),
            Err(TransactionError::Abort(())) => unreachable!("the transaction never aborts"),
            Err(TransactionError::Storage(e)) => Err(e.into()),
        }
    }
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

    /// A thread that writes its own log buffers: commits that fill several of them (2 MiB
    /// segments; every buffer seal and every last reservation out of a full one falls to this
    /// thread, and the latter are left unsynced until a flush), with flushes after some, then
    /// another thread's plain writes and a flush from that thread, which must also make the
    /// first thread's last commit durable. All read back after the store is reopened.
    #[test]
    fn commits_written_on_the_committing_thread_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let value = |i: u32| -> Vec<u8> {
            // 16 KiB: the 200 committed fill more than a 2 MiB segment's buffer.
            let seed = blake3::hash(&i.to_be_bytes());
            (0..512).flat_map(|_| *seed.as_bytes()).collect()
        };
        {
            let store = Store::open(dir.path()).unwrap();
            let writer = store.clone();
            std::thread::spawn(move || {
                writer.write_log_buffers_on_this_thread();
                for batch in 0..10u32 {
                    let writes: Vec<Write> = (0..20)
                        .map(|j| {
                            let i = batch * 20 + j;
                            (Table::Audit, i.to_be_bytes().to_vec(), value(i))
                        })
                        .collect();
                    writer.commit(&writes).unwrap();
                    if batch % 3 == 0 {
                        writer.flush().unwrap();
                    }
                }
                // The last commit is left for another thread's flush to make durable.
            })
            .join()
            .unwrap();
            for i in 0..50u32 {
                store
                    .put_raw(Table::Jobs, &i.to_be_bytes(), &value(1000 + i))
                    .unwrap();
            }
            store.flush().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        for i in 0..200u32 {
            let got = store.get_raw(Table::Audit, &i.to_be_bytes()).unwrap();
            assert_eq!(got.as_deref(), Some(value(i).as_slice()), "audit value {i}");
        }
        for i in 0..50u32 {
            let got = store.get_raw(Table::Jobs, &i.to_be_bytes()).unwrap();
            assert_eq!(
                got.as_deref(),
                Some(value(1000 + i).as_slice()),
                "job value {i}"
            );
        }
    }
}

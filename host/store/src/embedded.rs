//! The embedded backend: one sled database in the data directory, one tree per table. This is
//! the only module that touches sled.

use std::path::{Path, PathBuf};

use sled::Transactional;
use sled::transaction::TransactionError;

use crate::{Guard, Remove, Result, RowIter, StoreError, Table, Write};

pub(crate) struct SledStore {
    dir: PathBuf,
    db: sled::Db,
    trees: [sled::Tree; <Table as strum::EnumCount>::COUNT],
    /// Tests make flushes fail with this.
    #[cfg(any(test, feature = "fault-injection"))]
    fail_flushes: std::sync::atomic::AtomicBool,
}

impl SledStore {
    pub(crate) fn open(dir: &Path) -> Result<Self> {
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
        let trees = Table::all()
            .iter()
            .map(|t| db.open_tree(t.name()))
            .collect::<std::result::Result<Vec<_>, _>>()?
            .try_into()
            .unwrap_or_else(|_| unreachable!("one tree per table"));
        Ok(Self {
            dir: dir.to_owned(),
            db,
            trees,
            #[cfg(any(test, feature = "fault-injection"))]
            fail_flushes: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn tree(&self, table: Table) -> &sled::Tree {
        &self.trees[table as usize]
    }

    pub(crate) fn flush(&self) -> Result<()> {
        #[cfg(any(test, feature = "fault-injection"))]
        if self.fail_flushes.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(StoreError::Inconsistent("flush failure injected by a test"));
        }
        self.db.flush()?;
        Ok(())
    }

    #[cfg(any(test, feature = "fault-injection"))]
    pub(crate) fn fail_flushes(&self, fail: bool) {
        self.fail_flushes
            .store(fail, std::sync::atomic::Ordering::Relaxed);
    }

    /// Makes the calling thread write the log buffers its own writes fill or seal instead of
    /// handing them to sled's I/O threads, and leave a commit's batch-manifest buffer to be
    /// synced with its next flush's buffer in one call (changes 5 and 7 in
    /// `vendor/sled/WRIT-PATCH.md`). The setting is the thread's, for every store it writes
    /// to. For a thread that flushes after every commit, such as the audit writer: its flush
    /// waits for every earlier buffer anyway, and each hand-off cost a pool thread's wake-up
    /// and each separate sync a disk round trip.
    pub(crate) fn write_log_buffers_on_this_thread(&self) {
        sled::write_buffers_inline(true);
    }

    pub(crate) fn get_raw(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.tree(table).get(key)?.map(|v| v.to_vec()))
    }

    pub(crate) fn contains(&self, table: Table, key: &[u8]) -> Result<bool> {
        Ok(self.tree(table).contains_key(key)?)
    }

    pub(crate) fn put_raw(&self, table: Table, key: &[u8], value: &[u8]) -> Result<()> {
        self.tree(table).insert(key, value)?;
        Ok(())
    }

    pub(crate) fn scan_raw(&self, table: Table, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.tree(table)
            .scan_prefix(prefix)
            .map(|kv| {
                let (k, v) = kv?;
                Ok((k.to_vec(), v.to_vec()))
            })
            .collect()
    }

    pub(crate) fn scan_keys(&self, table: Table, prefix: &[u8]) -> Result<Vec<Vec<u8>>> {
        self.tree(table)
            .scan_prefix(prefix)
            .keys()
            .map(|k| Ok(k?.to_vec()))
            .collect()
    }

    pub(crate) fn range_raw(
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

    pub(crate) fn iter_raw(&self, table: Table, from: &[u8], to: &[u8]) -> RowIter {
        Box::new(
            self.tree(table)
                .range(from.to_vec()..to.to_vec())
                .map(|kv| {
                    let (k, v) = kv?;
                    Ok((k.to_vec(), v.to_vec()))
                }),
        )
    }

    pub(crate) fn remove(&self, table: Table, key: &[u8]) -> Result<()> {
        self.tree(table).remove(key)?;
        Ok(())
    }

    pub(crate) fn last_raw(
        &self,
        table: Table,
        prefix: &[u8],
    ) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        Ok(self
            .tree(table)
            .scan_prefix(prefix)
            .next_back()
            .transpose()?
            .map(|(k, v)| (k.to_vec(), v.to_vec())))
    }

    pub(crate) fn last_at_or_before(
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

    pub(crate) fn iter_prefix_from(&self, table: Table, prefix: &[u8], from: &[u8]) -> RowIter {
        let prefix = prefix.to_vec();
        Box::new(
            self.tree(table)
                .range(from.to_vec()..)
                .take_while(move |kv| kv.as_ref().map_or(true, |(k, _)| k.starts_with(&prefix)))
                .map(|kv| {
                    let (k, v) = kv?;
                    Ok((k.to_vec(), v.to_vec()))
                }),
        )
    }

    /// Every sled transaction costs a log buffer write, and every insert a copy of its leaf,
    /// so the audit log's writer commits a whole batch at once, in as few values as it can.
    pub(crate) fn commit_guarded(
        &self,
        writes: &[Write],
        removes: &[Remove],
        guards: &[Guard],
    ) -> Result<()> {
        let mut tables: Vec<Table> = writes
            .iter()
            .map(|(t, _, _)| *t)
            .chain(removes.iter().map(|(t, _)| *t))
            .chain(guards.iter().map(|(t, _, _)| *t))
            .collect();
        tables.sort_by_key(|t| *t as usize);
        tables.dedup();
        let trees: Vec<&sled::Tree> = tables.iter().map(|t| self.tree(*t)).collect();
        let result: std::result::Result<(), TransactionError<(Table, Vec<u8>)>> =
            trees.as_slice().transaction(|trees| {
                for (table, key, expected) in guards {
                    let at = tables.iter().position(|t| t == table).expect("collected");
                    let current = trees[at].get(key.as_slice())?;
                    if current.as_deref() != expected.as_deref() {
                        return sled::transaction::abort((*table, key.clone()));
                    }
                }
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
            Err(TransactionError::Abort(row)) => Err(StoreError::Conflict(vec![row])),
            Err(TransactionError::Storage(e)) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{Store, Table, Write};

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

//! Reads: pages of a chain, a session's records, one record by event id. Pages are bounded
//! by count and by the bytes of the records' stored JSON (see [`crate::page`]).

#[allow(unused_imports)]
use super::*;
use crate::page::{Bounds, Budget};

/// A page of a chain, or of a session's records.
#[derive(Debug, Clone, Default)]
pub struct RecordPage {
    /// The records, in seq order.
    pub records: Vec<Record>,
    /// Pass as `after_seq` for the next page: the last record's seq when the page stopped at
    /// its count or its byte budget; `None` when the read reached the end.
    pub next_after_seq: Option<u64>,
    /// The page stopped at its byte budget (before its count).
    pub truncated: bool,
}

impl RecordPage {
    fn finish(records: Vec<Record>, budget: &Budget) -> Self {
        let next_after_seq = budget
            .stopped()
            .then(|| records.last().map(|r| r.body.seq))
            .flatten();
        Self {
            records,
            next_after_seq,
            truncated: budget.truncated(),
        }
    }
}

/// The last block read, kept while a read's seqs fall in it: a session's records are often
/// neighbours, and a block decodes to up to 4 MiB.
#[derive(Default)]
struct BlockCache {
    /// (first seq, the block's lines joined by `\n`, where each line starts).
    block: Option<(u64, Vec<u8>, Vec<usize>)>,
}

impl Chains {
    /// The record of `seq`, from the block holding it.
    pub(crate) fn record_at(&self, tenant_id: &str, seq: u64) -> Result<Option<Record>> {
        let mut cache = BlockCache::default();
        self.stored_at(tenant_id, seq, &mut cache)?
            .map(|line| check_seq(decode_record(line)?, seq))
            .transpose()
    }

    /// The stored JSON of `seq`, from the block holding it (the cached one when it does).
    fn stored_at<'c>(
        &self,
        tenant_id: &str,
        seq: u64,
        cache: &'c mut BlockCache,
    ) -> Result<Option<&'c [u8]>> {
        let cached = cache
            .block
            .as_ref()
            .is_some_and(|(first, _, starts)| seq >= *first && seq - *first < starts.len() as u64);
        if !cached {
            cache.block = None;
            let Some((key, block)) = self.store.last_at_or_before(
                Table::Audit,
                &tenant_prefix(tenant_id),
                &block_key(tenant_id, seq),
            )?
            else {
                return Ok(None);
            };
            let block = decoded_block(&block)?;
            let starts = std::iter::once(0)
                .chain(
                    block
                        .iter()
                        .enumerate()
                        .filter(|(_, b)| **b == b'\n')
                        .map(|(i, _)| i + 1),
                )
                .collect();
            cache.block = Some((block_first_seq(&key), block, starts));
        }
        let (first, block, starts) = cache.block.as_ref().expect("set above");
        let Some(at) = seq
            .checked_sub(*first)
            .and_then(|at| usize::try_from(at).ok())
            .filter(|at| *at < starts.len())
        else {
            return Ok(None);
        };
        let end = starts.get(at + 1).map_or(block.len(), |next| next - 1);
        Ok(Some(&block[starts[at]..end]))
    }
}

fn check_seq(record: Record, seq: u64) -> Result<Record> {
    if record.body.seq != seq {
        return Err(StoreError::Inconsistent("a record is not where its seq puts it").into());
    }
    Ok(record)
}

impl AuditLog {
    /// Records of a tenant with `seq > after_seq` (all when `None`), at most `limit`.
    pub fn records(
        &self,
        tenant_id: &str,
        after_seq: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Record>> {
        let bounds = Bounds {
            limit: limit.max(1),
            max_bytes: usize::MAX,
        };
        Ok(self.records_page(tenant_id, after_seq, bounds)?.records)
    }

    /// A page of a tenant's records with `seq > after_seq` (from the start when `None`),
    /// within `bounds`: read block by block, stopping at the count or before the record that
    /// would pass the byte budget.
    pub fn records_page(
        &self,
        tenant_id: &str,
        after_seq: Option<u64>,
        bounds: Bounds,
    ) -> Result<RecordPage> {
        let from = after_seq.map_or(0, |s| s.saturating_add(1));
        let mut budget = Budget::new(bounds);
        let mut records = Vec::new();
        let mut stored = stored_records(&self.chains.store, tenant_id, from);
        while budget.has_room() {
            let Some(item) = stored.next() else { break };
            let (_, line) = item?;
            if !budget.take(line.len()) {
                break;
            }
            records.push(decode_record(&line)?);
        }
        Ok(RecordPage::finish(records, &budget))
    }

    /// Records of one session of a tenant with `seq > after_seq`, at most `limit`.
    pub fn session_records(
        &self,
        tenant_id: &str,
        session_id: &str,
        after_seq: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Record>> {
        let bounds = Bounds {
            limit: limit.max(1),
            max_bytes: usize::MAX,
        };
        Ok(self
            .session_page(tenant_id, session_id, after_seq, bounds)?
            .records)
    }

    /// A page of one session's records with `seq > after_seq`, within `bounds` (see
    /// [`AuditLog::records_page`]).
    pub fn session_page(
        &self,
        tenant_id: &str,
        session_id: &str,
        after_seq: Option<u64>,
        bounds: Bounds,
    ) -> Result<RecordPage> {
        let limit = bounds.limit;
        let after = |seq: &u64| after_seq.is_none_or(|a| *seq > a);
        // The tail first, then the store: an entry written out in between is seen twice, never
        // missed.
        let tail: Vec<u64> = self
            .chains
            .sessions
            .lock()
            .expect("sessions lock")
            .seqs
            .get(&(tenant_id.to_owned(), session_id.to_owned()))
            .cloned()
            .unwrap_or_default();
        let prefix = tenant_key(tenant_id, &[session_id.as_bytes(), b""]);
        let mut seqs = Vec::new();
        for item in self
            .chains
            .store
            .iter_prefix_from(Table::Sessions, &prefix, &prefix)
        {
            let (_, value) = item?;
            seqs.extend(
                value
                    .chunks_exact(8)
                    .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
                    .filter(after),
            );
            if seqs.len() >= limit {
                break;
            }
        }
        seqs.extend(tail.into_iter().filter(after));
        seqs.sort_unstable();
        seqs.dedup();
        seqs.truncate(limit);
        let mut budget = Budget::new(bounds);
        let mut cache = BlockCache::default();
        let mut records = Vec::new();
        for seq in seqs {
            let line = self.chains.stored_at(tenant_id, seq, &mut cache)?.ok_or(
                StoreError::Inconsistent("the session index names a missing record"),
            )?;
            if !budget.take(line.len()) {
                break;
            }
            records.push(check_seq(decode_record(line)?, seq)?);
        }
        Ok(RecordPage::finish(records, &budget))
    }

    /// The record with `event_id`, if it belongs to `tenant_id`.
    pub fn event(&self, tenant_id: &str, event_id: &str) -> Result<Option<Record>> {
        if let Some(seq) = event_id_seq(event_id)
            && let Some(record) = self.chains.record_at(tenant_id, seq)?
            && record.body.event_id == event_id
        {
            return Ok(Some(record));
        }
        let Some(key) = self
            .chains
            .store
            .get_raw(Table::Events, event_id.as_bytes())?
        else {
            return Ok(None);
        };
        if !key.starts_with(&tenant_prefix(tenant_id)) {
            return Ok(None);
        }
        Ok(self
            .chains
            .record_at(tenant_id, block_first_seq(&key))?
            .filter(|r| r.body.event_id == event_id))
    }
}

//! Reads: pages of a chain, a session's records, one record by event id.

#[allow(unused_imports)]
use super::*;

impl Chains {
    /// The record of `seq`, from the block holding it.
    pub(crate) fn record_at(&self, tenant_id: &str, seq: u64) -> Result<Option<Record>> {
        let Some((key, block)) = self.store.last_at_or_before(
            Table::Audit,
            &tenant_prefix(tenant_id),
            &block_key(tenant_id, seq),
        )?
        else {
            return Ok(None);
        };
        let block = decoded_block(&block)?;
        let Some(line) = usize::try_from(seq - block_first_seq(&key))
            .ok()
            .and_then(|at| block.split(|b| *b == b'\n').nth(at))
        else {
            return Ok(None);
        };
        let record = decode_record(line)?;
        if record.body.seq != seq {
            return Err(StoreError::Inconsistent("a record is not where its seq puts it").into());
        }
        Ok(Some(record))
    }
}

impl AuditLog {
    /// Records of a tenant with `seq > after_seq` (all when `None`), at most `limit`.
    pub fn records(
        &self,
        tenant_id: &str,
        after_seq: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Record>> {
        let from = after_seq.map_or(0, |s| s.saturating_add(1));
        stored_records(&self.chains.store, tenant_id, from)
            .take(limit)
            .map(|item| decode_record(&item?.1))
            .collect()
    }

    /// Records of one session of a tenant with `seq > after_seq`, at most `limit`.
    pub fn session_records(
        &self,
        tenant_id: &str,
        session_id: &str,
        after_seq: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Record>> {
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
        seqs.into_iter()
            .map(|seq| {
                self.chains.record_at(tenant_id, seq)?.ok_or_else(|| {
                    StoreError::Inconsistent("the session index names a missing record").into()
                })
            })
            .collect()
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

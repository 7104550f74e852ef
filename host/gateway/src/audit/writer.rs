//! The writer thread: batches queued appends, chains them, commits each batch in one
//! transaction and flushes once (group commit), then answers every append.

#[allow(unused_imports)]
use super::*;

/// An append waiting for the writer.
pub(crate) struct Pending {
    pub(crate) tenant_id: String,
    pub(crate) body: RecordBody,
    pub(crate) effects: Effects,
    pub(crate) reply: oneshot::Sender<Result<Record>>,
}

/// One batch being prepared: the chains and usage values as they will be once it is written.
#[derive(Default)]
pub(crate) struct Batch {
    pub(crate) heads: HashMap<String, Head>,
    pub(crate) usage: HashMap<Vec<u8>, f64>,
    /// Each tenant's new records (seq, stored bytes), in order.
    pub(crate) records: HashMap<String, Vec<(u64, Vec<u8>)>>,
    /// Index rows and the records' own rows.
    pub(crate) rows: Vec<Write>,
    /// Rows the records remove.
    pub(crate) removes: Vec<Remove>,
    /// (tenant, session, seq) of the new records that have a session.
    pub(crate) sessions: Vec<(String, String, u64)>,
}

impl Batch {
    /// The store writes: each tenant's records in blocks, the final value of each usage
    /// counter it changed, and the rows.
    pub(crate) fn writes(&mut self) -> Vec<Write> {
        let mut writes = std::mem::take(&mut self.rows);
        for (tenant_id, records) in &self.records {
            for block in blocks(records) {
                let bytes = encode_block(block.iter().map(|(_, r)| r.as_slice()));
                writes.push((Table::Audit, block_key(tenant_id, block[0].0), bytes));
            }
        }
        for (key, value) in &self.usage {
            writes.push((
                Table::Usage,
                key.clone(),
                value.to_bits().to_be_bytes().to_vec(),
            ));
        }
        writes
    }
}

/// The writer thread and the queue to it. Dropping the last [`AuditLog`] closes the queue and
/// waits for the thread, so the store is released when the log is.
pub(crate) struct Writer {
    pub(crate) queue: Option<mpsc::Sender<Pending>>,
    pub(crate) thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Chains {
    /// Whether the store is unhealthy after trying a flush: if the last flush failed, a new
    /// one decides; one that works makes the store healthy again.
    pub(crate) fn recover(&self) -> Option<String> {
        let mut unhealthy = self.unhealthy.lock().expect("health lock");
        if unhealthy.is_some() {
            match self.store.flush() {
                Ok(()) => {
                    tracing::warn!("the audit store flushes again; appends resume");
                    *unhealthy = None;
                }
                Err(e) => *unhealthy = Some(format!("the audit store cannot flush: {e}")),
            }
        }
        unhealthy.clone()
    }

    /// One writer round: commit the batch in one transaction, flush once, answer everyone.
    /// After a failed flush nothing more is written until a flush works again: an answer is
    /// never given for a record that is not durable.
    pub(crate) fn write_and_flush(&self, batch: Vec<Pending>, metrics: &AuditWriterMetrics) {
        if self.recover().is_some() {
            for pending in batch {
                let _ = pending.reply.send(Err(AuditError::FlushFailed));
            }
            return;
        }
        let (items, replies): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .map(|p| ((p.tenant_id, p.body, p.effects), p.reply))
            .unzip();
        let mut results = self.write_batch(items);
        let written = results.iter().filter(|r| r.is_ok()).count();
        if written > 0 {
            let started = Instant::now();
            let flushed = self.store.flush();
            metrics
                .flush_seconds
                .observe(started.elapsed().as_secs_f64());
            if let Err(e) = flushed {
                tracing::error!(error = %e, "audit flush failed; no append is acknowledged until a flush works");
                *self.unhealthy.lock().expect("health lock") =
                    Some(format!("the audit store cannot flush: {e}"));
                for r in results.iter_mut().filter(|r| r.is_ok()) {
                    *r = Err(AuditError::FlushFailed);
                }
            }
            metrics.batch_records.observe(written as f64);
        }
        for (reply, result) in replies.into_iter().zip(results) {
            // A caller that has gone away no longer needs its answer; the record stands.
            let _ = reply.send(result);
        }
    }

    /// See [`AuditLog::write_batch`]. The rows every append of the batch reads (its chains'
    /// heads, the usage counters it reads or charges, its own guarded rows) are locked first,
    /// for the batch's transaction, against every other process sharing the store: the batch
    /// is chained on their values as they are, and commits without a conflict. An append
    /// whose own guarded row no longer holds what it expected fails alone with
    /// [`AuditError::RowChanged`].
    pub(crate) fn write_batch(
        &self,
        items: Vec<(String, RecordBody, Effects)>,
    ) -> Vec<Result<Record>> {
        let mut heads = self.heads.lock().expect("heads lock");
        let mut lock: Vec<(Table, Vec<u8>)> = Vec::new();
        for (tenant_id, _, effects) in &items {
            lock.push((Table::ChainHeads, tenant_id.as_bytes().to_vec()));
            lock.extend(
                effects
                    .expect
                    .iter()
                    .chain(&effects.add)
                    .map(|(key, _)| (Table::Usage, key.clone())),
            );
            lock.extend(effects.guards.iter().map(|(t, k, _)| (*t, k.clone())));
        }
        lock.sort();
        lock.dedup();
        let locked = match self.store.begin_locked(&lock) {
            Ok(locked) => locked,
            Err(e) => {
                tracing::error!(error = %e, "audit write failed");
                let failed = e.to_string();
                return items
                    .iter()
                    .map(|_| Err(AuditError::WriteFailed(failed.clone())))
                    .collect();
            }
        };
        let mut batch = Batch::default();
        let results: Vec<Result<Record>> = items
            .into_iter()
            .map(|(tenant_id, body, effects)| {
                self.prepare(&mut heads, &mut batch, &locked, tenant_id, body, effects)
            })
            .collect();
        if batch.records.is_empty() {
            return results;
        }
        let mut writes = batch.writes();
        for (tenant_id, head) in &batch.heads {
            writes.push((
                Table::ChainHeads,
                tenant_id.as_bytes().to_vec(),
                head.row_value(),
            ));
        }
        // Sessions due to be written out go in the same transaction (each costs sled log
        // writes): the entries waiting are all of records already committed.
        let out = {
            let tail = self.sessions.lock().expect("sessions lock");
            let (out, marks) = tail.due();
            (!out.is_empty() || marks).then(|| {
                writes.extend(tail.writes(&out));
                out
            })
        };
        if let Err(e) = locked.commit(&writes, &batch.removes) {
            tracing::error!(error = %e, "audit write failed");
            // Nothing was written: the chains stay as they were.
            let failed = e.to_string();
            return results
                .into_iter()
                .map(|r| r.and_then(|_| Err(AuditError::WriteFailed(failed.clone()))))
                .collect();
        }
        {
            let mut tail = self.sessions.lock().expect("sessions lock");
            if let Some(out) = &out {
                tail.written(out);
            }
            for (tenant_id, session_id, seq) in &batch.sessions {
                tail.add(tenant_id, session_id, *seq);
            }
            for (tenant_id, head) in &batch.heads {
                tail.unmarked.insert(tenant_id.clone(), head.next_seq);
            }
        }
        heads.extend(batch.heads);
        results
    }

    /// Chains one record onto its tenant's head as the batch leaves it, after checking its
    /// usage expectations against the values the batch leaves, and adds it to the batch.
    pub(crate) fn prepare(
        &self,
        heads: &mut HashMap<String, Head>,
        batch: &mut Batch,
        locked: &Locked,
        tenant_id: String,
        mut body: RecordBody,
        effects: Effects,
    ) -> Result<Record> {
        for (table, key, expected) in &effects.guards {
            if locked.value(*table, key) != expected.as_deref() {
                return Err(AuditError::RowChanged);
            }
        }
        for (key, expected) in &effects.expect {
            if usage_value(batch, locked, key) != *expected {
                return Err(AuditError::UsageConflict);
            }
        }
        let usage: Vec<(Vec<u8>, f64)> = effects
            .add
            .iter()
            .map(|(key, amount)| (key.clone(), usage_value(batch, locked, key) + amount))
            .collect();
        if !batch.heads.contains_key(&tenant_id) {
            // The head row, as locked, is the head: another process may have appended.
            let head = match locked
                .value(Table::ChainHeads, tenant_id.as_bytes())
                .and_then(Head::from_row)
            {
                Some(head) => head,
                // A chain written before head rows: its last block, once (loading also
                // re-indexes the sessions above the tenant's mark).
                None => match heads.entry(tenant_id.clone()) {
                    Entry::Occupied(head) => *head.get(),
                    Entry::Vacant(slot) => *slot.insert(self.load_stored_head(&tenant_id)?),
                },
            };
            batch.heads.insert(tenant_id.clone(), head);
        }
        let head = batch.heads.get_mut(&tenant_id).expect("inserted above");
        // Committed with the batch, its row holds the head from then on.
        head.row = true;
        let seq = head.next_seq;
        let chosen_event_id = !body.event_id.is_empty();
        if !chosen_event_id {
            body.event_id = event_id_for(seq);
        }
        body.prev_hash = String::from(&*hash_hex(&head.prev_hash));
        body.seq = seq;
        body.timestamp_ms = self.clock.now_ms();
        body.tenant_id = tenant_id;
        let canonical = body.canonical();
        let bytes = stored_len(&canonical);
        if bytes > MAX_RECORD_BYTES {
            return Err(AuditError::RecordTooLarge {
                bytes,
                limit: MAX_RECORD_BYTES,
            });
        }
        let hash = chain_hash(&head.prev_hash, &canonical);
        head.next_seq += 1;
        head.prev_hash = hash;
        batch.usage.extend(usage);
        let record = Record {
            body,
            hash: String::from(&*hash_hex(&hash)),
        };
        let tenant_id = &record.body.tenant_id;
        if chosen_event_id {
            batch.rows.push((
                Table::Events,
                record.body.event_id.as_bytes().to_vec(),
                block_key(tenant_id, seq),
            ));
        }
        batch.rows.extend(effects.rows);
        batch.removes.extend(effects.removes);
        if let Some(session_id) = &record.body.session_id {
            if self.store.is_shared() {
                // Several processes append: each record's entry is written with it.
                let key = tenant_key(tenant_id, &[session_id.as_bytes(), &seq.to_be_bytes()]);
                batch
                    .rows
                    .push((Table::Sessions, key, seq.to_be_bytes().to_vec()));
            } else {
                batch
                    .sessions
                    .push((tenant_id.clone(), session_id.clone(), seq));
            }
        }
        batch
            .records
            .entry(tenant_id.clone())
            .or_default()
            .push((seq, stored_bytes(canonical, &record.hash)));
        Ok(record)
    }

    /// A tenant's head as stored, after putting the records above its session mark back into
    /// the session index's tail (a shared store's entries are written with their records).
    pub(crate) fn load_stored_head(&self, tenant_id: &str) -> Result<Head> {
        if let Some(head) = self
            .store
            .get_raw(Table::ChainHeads, tenant_id.as_bytes())?
            .as_deref()
            .and_then(Head::from_row)
        {
            if !self.store.is_shared() {
                self.reindex_sessions(tenant_id, head.next_seq)?;
            }
            return Ok(head);
        }
        let head = match self
            .store
            .last_raw(Table::Audit, &tenant_prefix(tenant_id))?
        {
            Some((_, block)) => {
                let block = decoded_block(&block)?;
                let last = block.rsplit(|b| *b == b'\n').next().unwrap_or_default();
                let last = decode_record(last)?;
                Head {
                    next_seq: last.body.seq + 1,
                    prev_hash: decode_hash(&last.hash)?,
                    row: false,
                }
            }
            None => Head {
                next_seq: 0,
                prev_hash: [0; 32],
                row: false,
            },
        };
        if !self.store.is_shared() {
            self.reindex_sessions(tenant_id, head.next_seq)?;
        }
        Ok(head)
    }

    /// Puts the records from the tenant's session mark to `next_seq` back into the session
    /// index's tail.
    fn reindex_sessions(&self, tenant_id: &str, next_seq: u64) -> Result<()> {
        let mark = self
            .store
            .get_raw(Table::SessionMarks, tenant_id.as_bytes())?
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_be_bytes);
        if mark < next_seq {
            let mut tail = self.sessions.lock().expect("sessions lock");
            for item in stored_records(&self.store, tenant_id, mark) {
                let (_, bytes) = item?;
                let record = decode_record(&bytes)?;
                if let Some(session_id) = &record.body.session_id {
                    tail.add(tenant_id, session_id, record.body.seq);
                }
            }
            tail.unmarked.insert(tenant_id.to_owned(), next_seq);
        }
        Ok(())
    }
}

/// A usage counter's value as the batch leaves it: its last charge in the batch, else its
/// value when locked.
fn usage_value(batch: &Batch, locked: &Locked, key: &[u8]) -> f64 {
    if let Some(v) = batch.usage.get(key) {
        return *v;
    }
    locked.value(Table::Usage, key).map_or(0.0, |v| {
        v.try_into()
            .map(|b| f64::from_bits(u64::from_be_bytes(b)))
            .unwrap_or(0.0)
    })
}

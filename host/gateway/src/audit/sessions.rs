//! The session index's in-memory tail: entries waiting to be written out a session at a time.

use std::collections::HashSet;

#[allow(unused_imports)]
use super::*;

/// A session's waiting index entries are written out once the oldest has waited this long…
pub(crate) const SESSION_TAIL_AGE: Duration = Duration::from_secs(1);

/// …or without waiting while more than this many entries wait…
pub(crate) const SESSION_TAIL_MAX: usize = 16_384;

/// …at most this many sessions with any one batch, so no batch waits on a large write, unless
/// more than [`SESSION_TAIL_MAX`] entries wait: then as many as bring the tail back under it
/// (a batch adds at most `MAX_BATCH` entries, so a round writes out about that many at most,
/// and the tail never holds more than [`SESSION_TAIL_MAX`] plus one batch's).
pub(crate) const SESSION_WRITE_OUT: usize = 32;

/// Session index entries not yet in the store. The writer adds each batch's entries once the
/// batch is committed, and writes sessions out (all of a session's waiting entries as one
/// store value) in the transaction of a later batch once their oldest entry has waited
/// [`SESSION_TAIL_AGE`], a few at a time, each tenant's mark with them: one value per session
/// per second or so instead of one per record. After a crash, the entries not written out are
/// rebuilt from the chain above each tenant's mark.
#[derive(Default)]
pub(crate) struct SessionTail {
    /// (tenant, session) → seqs waiting, ascending.
    pub(crate) seqs: HashMap<(String, String), Vec<u64>>,
    /// The sessions waiting, in the order their first waiting entry arrived.
    pub(crate) order: VecDeque<(Instant, String, String)>,
    /// Per tenant, the first waiting seq of each waiting session: the lowest is as far as the
    /// tenant's mark may go.
    pub(crate) firsts: HashMap<String, BTreeMap<u64, String>>,
    /// Tenants appended to since their mark was last written, with their next seq.
    pub(crate) unmarked: HashMap<String, u64>,
    /// When marks were last written.
    pub(crate) marked: Option<Instant>,
    pub(crate) len: usize,
}

impl SessionTail {
    pub(crate) fn add(&mut self, tenant_id: &str, session_id: &str, seq: u64) {
        let seqs = self
            .seqs
            .entry((tenant_id.to_owned(), session_id.to_owned()))
            .or_default();
        if seqs.is_empty() {
            self.order
                .push_back((Instant::now(), tenant_id.to_owned(), session_id.to_owned()));
            self.firsts
                .entry(tenant_id.to_owned())
                .or_default()
                .insert(seq, session_id.to_owned());
        }
        seqs.push(seq);
        self.len += 1;
    }

    /// The sessions to write out now, oldest first (a prefix of `order`): those whose oldest
    /// entry has waited [`SESSION_TAIL_AGE`], at most [`SESSION_WRITE_OUT`]; and, while more
    /// than [`SESSION_TAIL_MAX`] entries would still wait, more, aged or not, until no more
    /// would. Also whether marks are due even if no session is.
    pub(crate) fn due(&self) -> (Vec<(String, String)>, bool) {
        let mut sessions = Vec::new();
        let mut waiting = self.len;
        for (at, tenant_id, session_id) in &self.order {
            let over = waiting > SESSION_TAIL_MAX;
            if !over && (sessions.len() >= SESSION_WRITE_OUT || at.elapsed() < SESSION_TAIL_AGE) {
                break;
            }
            let key = (tenant_id.clone(), session_id.clone());
            waiting -= self.seqs.get(&key).map_or(0, Vec::len);
            sessions.push(key);
        }
        let marks = !self.unmarked.is_empty()
            && self
                .marked
                .is_none_or(|at| at.elapsed() >= SESSION_TAIL_AGE);
        (sessions, marks)
    }

    /// The store writes for writing `out` and every unmarked tenant's mark.
    pub(crate) fn writes(&self, out: &[(String, String)]) -> Vec<Write> {
        let mut writes: Vec<Write> = out
            .iter()
            .map(|(tenant_id, session_id)| {
                let seqs = &self.seqs[&(tenant_id.clone(), session_id.clone())];
                let key = tenant_key(tenant_id, &[session_id.as_bytes(), &seqs[0].to_be_bytes()]);
                let value = seqs.iter().flat_map(|s| s.to_be_bytes()).collect();
                (Table::Sessions, key, value)
            })
            .collect();
        for (tenant_id, next) in &self.unmarked {
            let mark = self.first_waiting(tenant_id, out).unwrap_or(*next);
            writes.push((
                Table::SessionMarks,
                tenant_id.as_bytes().to_vec(),
                mark.to_be_bytes().to_vec(),
            ));
        }
        writes
    }

    /// The tenant's first waiting seq once `out` is written.
    pub(crate) fn first_waiting(&self, tenant_id: &str, out: &[(String, String)]) -> Option<u64> {
        let out: HashSet<(&str, &str)> = out
            .iter()
            .filter(|(t, _)| t == tenant_id)
            .map(|(t, s)| (t.as_str(), s.as_str()))
            .collect();
        self.firsts.get(tenant_id).and_then(|firsts| {
            firsts
                .iter()
                .find(|(_, session)| !out.contains(&(tenant_id, session.as_str())))
                .map(|(seq, _)| *seq)
        })
    }

    /// Forgets `out`, now written, and the marks written with it.
    pub(crate) fn written(&mut self, out: &[(String, String)]) {
        for (tenant_id, session_id) in out {
            if let Some(seqs) = self.seqs.remove(&(tenant_id.clone(), session_id.clone())) {
                self.len -= seqs.len();
                if let Some(firsts) = self.firsts.get_mut(tenant_id) {
                    firsts.remove(&seqs[0]);
                    if firsts.is_empty() {
                        self.firsts.remove(tenant_id);
                    }
                }
            }
        }
        self.order.drain(..out.len());
        // A tenant with entries still waiting is marked again when they are written.
        let firsts = &self.firsts;
        self.unmarked
            .retain(|tenant_id, _| firsts.contains_key(tenant_id));
        self.marked = Some(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Batches of a full `MAX_BATCH` of new sessions each, written out the way the writer does
    /// (what `due` names goes out with the next batch): none has waited a second, so only the
    /// cap writes anything out.
    #[test]
    fn the_tail_stays_bounded_when_every_batch_brings_more_sessions_than_a_round_writes_out() {
        let mut tail = SessionTail::default();
        let mut seq = 0u64;
        for round in 0..200 {
            let (out, _) = tail.due();
            let writes = tail.writes(&out);
            assert!(writes.len() >= out.len());
            tail.written(&out);
            for i in 0..MAX_BATCH {
                tail.add(&format!("t{}", i % 3), &format!("s{round}-{i}"), seq);
                seq += 1;
            }
            assert!(
                tail.len <= SESSION_TAIL_MAX + MAX_BATCH,
                "round {round}: {} entries wait",
                tail.len
            );
            assert_eq!(tail.order.len(), tail.seqs.len());
            assert_eq!(tail.len, tail.seqs.values().map(Vec::len).sum::<usize>());
        }
        assert!(tail.len > SESSION_TAIL_MAX, "the cap was reached");
    }

    #[test]
    fn under_the_cap_a_round_writes_out_only_aged_sessions_and_few_of_them() {
        let mut tail = SessionTail::default();
        for i in 0..100 {
            tail.add("t", &format!("s{i}"), i);
        }
        assert!(tail.due().0.is_empty(), "nothing has waited a second");
        for entry in tail.order.iter_mut() {
            entry.0 = entry
                .0
                .checked_sub(SESSION_TAIL_AGE)
                .expect("a second after boot");
        }
        let (out, _) = tail.due();
        assert_eq!(out.len(), SESSION_WRITE_OUT);
        assert_eq!(out[0], ("t".to_owned(), "s0".to_owned()), "oldest first");
        assert_eq!(
            tail.first_waiting("t", &out),
            Some(SESSION_WRITE_OUT as u64)
        );
    }
}

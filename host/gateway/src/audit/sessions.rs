//! The session index's in-memory tail: entries waiting to be written out a session at a time.

#[allow(unused_imports)]
use super::*;

/// A session's waiting index entries are written out once the oldest has waited this long…
pub(crate) const SESSION_TAIL_AGE: Duration = Duration::from_secs(1);

/// …or without waiting while more than this many entries wait…
pub(crate) const SESSION_TAIL_MAX: usize = 16_384;

/// …at most this many sessions with any one batch, so no batch waits on a large write.
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

    /// The sessions to write out now (oldest first, at most [`SESSION_WRITE_OUT`]), and whether
    /// marks are due even if none is.
    pub(crate) fn due(&self) -> (Vec<(String, String)>, bool) {
        let sessions = self
            .order
            .iter()
            .take_while(|(at, _, _)| {
                at.elapsed() >= SESSION_TAIL_AGE || self.len > SESSION_TAIL_MAX
            })
            .take(SESSION_WRITE_OUT)
            .map(|(_, t, s)| (t.clone(), s.clone()))
            .collect();
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
        self.firsts.get(tenant_id).and_then(|firsts| {
            firsts
                .iter()
                .find(|(_, session)| !out.iter().any(|(t, s)| t == tenant_id && s == *session))
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

//! A tenant's audit chain as a service: pages of records, one record, a session's timeline,
//! verification (against the latest signed checkpoint) and export. Read-only: the chain is
//! written by the operations that make its records.

use writ_runtime::decision::Outcome;

use super::checkpoints::CheckpointService;
use crate::access::{Reviewer, TenantScope};
use crate::audit::{Kind, Record, SharedLedger};
use crate::checkpoint;
use crate::error::{AppError, Result};
use crate::store::Store;
use crate::verify::{self, Verification};

/// A session's decisions.
#[derive(Debug, Clone)]
pub struct SessionSummary {
    /// Allowed calls.
    pub allowed: usize,
    /// Blocked calls.
    pub blocked: usize,
    /// Escalated calls.
    pub escalated: usize,
    /// The session's records, in order.
    pub events: Vec<Record>,
}

/// Reads, verifies and exports chains. Cheap to clone.
#[derive(Clone)]
pub struct AuditService {
    pub(crate) audit: SharedLedger,
    pub(crate) store: Store,
    pub(crate) checkpoints: CheckpointService,
}

impl AuditService {
    /// The tenant's audit records after `after_seq`, optionally of one session.
    pub fn audit_records(
        &self,
        scope: &TenantScope<Reviewer>,
        session_id: Option<&str>,
        after_seq: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Record>> {
        let tenant_id = scope.tenant_id();
        Ok(match session_id {
            Some(session) => self
                .audit
                .session_records(tenant_id, session, after_seq, limit)?,
            None => self.audit.records(tenant_id, after_seq, limit)?,
        })
    }

    /// One audit record of the tenant by event id.
    pub fn audit_event(&self, scope: &TenantScope<Reviewer>, event_id: &str) -> Result<Record> {
        let tenant_id = scope.tenant_id();
        self.audit
            .event(tenant_id, event_id)?
            .ok_or(AppError::NotFound("event"))
    }

    /// Verifies the tenant's whole chain, and against its latest signed checkpoint.
    pub async fn verify(&self, scope: &TenantScope<Reviewer>) -> Result<Verification> {
        let tenant_id = scope.tenant_id().to_owned();
        let store = self.store.clone();
        let note = self.checkpoints.latest(&tenant_id)?;
        let public = self.checkpoints.public_key();
        tokio::task::spawn_blocking(move || {
            let cp = note
                .as_deref()
                .and_then(|n| checkpoint::verify(n, &public).ok());
            verify::verify_chain(&store, &tenant_id, cp.as_ref())
        })
        .await
        .map_err(AppError::internal)?
        .map_err(Into::into)
    }

    /// Streams the tenant's records after `after_seq` as JSON Lines, read lazily on a blocking
    /// thread: the receiver yields one line (with its newline) at a time.
    pub fn export(
        &self,
        scope: &TenantScope<Reviewer>,
        after_seq: Option<u64>,
    ) -> Result<tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>> {
        let tenant_id = scope.tenant_id().to_owned();
        let store = self.store.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::task::spawn_blocking(move || {
            let result = verify::export(&store, &tenant_id, after_seq, |line| {
                let mut buf = Vec::with_capacity(line.len() + 1);
                buf.extend_from_slice(line);
                buf.push(b'\n');
                tx.blocking_send(Ok(buf.into())).is_ok()
            });
            if let Err(e) = result {
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            }
        });
        Ok(rx)
    }

    /// A session's counts and events.
    pub fn session(
        &self,
        scope: &TenantScope<Reviewer>,
        session_id: &str,
    ) -> Result<SessionSummary> {
        let tenant_id = scope.tenant_id();
        let events = self
            .audit
            .session_records(tenant_id, session_id, None, 10_000)?;
        if events.is_empty() {
            return Err(AppError::NotFound("session"));
        }
        let count = |o: Outcome| {
            events
                .iter()
                .filter(|r| {
                    r.body.kind == Kind::Decision.as_str()
                        || r.body.kind == Kind::EscalationOpened.as_str()
                })
                .filter(|r| r.body.outcome.as_deref() == Some(o.as_str()))
                .count()
        };
        Ok(SessionSummary {
            allowed: count(Outcome::Allow),
            blocked: count(Outcome::Block),
            escalated: count(Outcome::Escalate),
            events,
        })
    }
}

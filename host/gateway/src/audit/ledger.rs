//! The boundary between the gateway and where its chains live. The services append and read
//! through [`Ledger`]; [`AuditLog`] (sled, group commit on one writer thread) implements it,
//! and a second backend implements the same operations:
//!
//! - **append with head check**: chain a record onto its tenant's head, gapless, one writer
//!   per chain at a time;
//! - **usage compare-and-set**: the record's [`Effects::expect`] values must still hold, or
//!   nothing is written ([`AuditError::UsageConflict`]); its [`Effects::add`] amounts commit
//!   with it;
//! - **rows**: [`Effects::rows`] commit in the same transaction;
//! - **group commit**: durable before `append` returns, many appends per flush;
//! - **range reads**: a chain from a seq, a session's records, one record by event id; every
//!   read of many records is a page bounded by count and by bytes ([`crate::page::Bounds`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::{AuditError, AuditLog, Effects, Record, RecordBody, RecordPage};
use crate::page::Bounds;

/// An append in flight: resolves once the record is durable.
pub type Appending<'a> = Pin<Box<dyn Future<Output = Result<Record, AuditError>> + Send + 'a>>;

/// A tenant's chain head: the number of records and the last one's hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    pub tenant_id: String,
    /// Records in the chain (the next seq).
    pub size: u64,
    /// The last record's hash (32 zero bytes for an empty chain).
    pub hash: [u8; 32],
}

/// Where the gateway's chains are kept. See the module docs for what an implementation owes.
pub trait Ledger: Send + Sync + 'static {
    /// Appends a record to `tenant_id`'s chain with its effects, and resolves once it is
    /// durable.
    fn append<'a>(
        &'a self,
        tenant_id: &'a str,
        body: RecordBody,
        effects: Effects,
    ) -> Appending<'a>;

    /// The heads of every chain this ledger has loaded or appended to.
    fn heads(&self) -> Vec<ChainHead>;

    /// Why appends cannot be made durable now, if they cannot (checked afresh).
    fn unhealthy(&self) -> Option<String>;

    /// Loads a tenant's head so that [`Ledger::heads`] reports it.
    fn load_head(&self, tenant_id: &str) -> Result<(), AuditError>;

    /// A page of a tenant's records with `seq > after_seq` (from the start when `None`),
    /// within `bounds`.
    fn records_page(
        &self,
        tenant_id: &str,
        after_seq: Option<u64>,
        bounds: Bounds,
    ) -> Result<RecordPage, AuditError>;

    /// A page of one session's records with `seq > after_seq`, within `bounds`.
    fn session_page(
        &self,
        tenant_id: &str,
        session_id: &str,
        after_seq: Option<u64>,
        bounds: Bounds,
    ) -> Result<RecordPage, AuditError>;

    /// The record with `event_id`, if it belongs to `tenant_id`.
    fn event(&self, tenant_id: &str, event_id: &str) -> Result<Option<Record>, AuditError>;
}

/// A ledger shared by every service of one gateway.
pub type SharedLedger = Arc<dyn Ledger>;

impl Ledger for AuditLog {
    fn append<'a>(
        &'a self,
        tenant_id: &'a str,
        body: RecordBody,
        effects: Effects,
    ) -> Appending<'a> {
        Box::pin(AuditLog::append(self, tenant_id, body, effects))
    }

    fn heads(&self) -> Vec<ChainHead> {
        AuditLog::heads(self)
            .into_iter()
            .map(|(tenant_id, size, hash)| ChainHead {
                tenant_id,
                size,
                hash,
            })
            .collect()
    }

    fn load_head(&self, tenant_id: &str) -> Result<(), AuditError> {
        AuditLog::load_head(self, tenant_id)
    }

    fn unhealthy(&self) -> Option<String> {
        AuditLog::unhealthy(self)
    }

    fn records_page(
        &self,
        tenant_id: &str,
        after_seq: Option<u64>,
        bounds: Bounds,
    ) -> Result<RecordPage, AuditError> {
        AuditLog::records_page(self, tenant_id, after_seq, bounds)
    }

    fn session_page(
        &self,
        tenant_id: &str,
        session_id: &str,
        after_seq: Option<u64>,
        bounds: Bounds,
    ) -> Result<RecordPage, AuditError> {
        AuditLog::session_page(self, tenant_id, session_id, after_seq, bounds)
    }

    fn event(&self, tenant_id: &str, event_id: &str) -> Result<Option<Record>, AuditError> {
        AuditLog::event(self, tenant_id, event_id)
    }
}

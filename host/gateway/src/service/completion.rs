//! Completions: the caller of an allowed call reports how it went where it ran (the MCP proxy
//! does, when the server answers), and the report is appended to the chain beside the
//! decision. A report names the decision (or the approval) by its event id; only the key that
//! made the call may report, once.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use super::execute::ExecuteService;
use crate::access::{Agent, TenantScope};
use crate::audit::{Effects, Kind, Record, RecordBody};
use crate::error::{AppError, Result};
use crate::store::Table;
use crate::tenants::{new_ordered_id, tenant_key};

/// How an allowed call went, as its caller reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// The tool answered with an error.
    pub is_error: bool,
    /// The size of its result, in bytes.
    pub result_bytes: u64,
    /// From forwarding the call to its result, in ms.
    pub duration_ms: u64,
}

/// Reports being recorded now, so two at once for one call cannot both pass the check.
#[derive(Debug, Default)]
pub(crate) struct InFlight(Mutex<HashSet<(String, String)>>);

/// A report's place in [`InFlight`], freed when dropped.
struct Reporting {
    in_flight: Arc<InFlight>,
    key: (String, String),
}

impl Drop for Reporting {
    fn drop(&mut self) {
        self.in_flight
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
    }
}

impl ExecuteService {
    /// Records how the call that `event_id` allowed (a decision ALLOW, or the approval of a
    /// held call) finished. Only the key that made the call; once per call (409 after).
    pub async fn complete(
        &self,
        scope: &TenantScope<Agent>,
        event_id: &str,
        completion: Completion,
    ) -> Result<Record> {
        let (tenant_id, who) = (scope.tenant_id(), scope.key());
        let allowed = self
            .audit
            .event(tenant_id, event_id)?
            .ok_or(AppError::NotFound("event"))?;
        let b = &allowed.body;
        let caller = match b.kind.as_str() {
            "decision" => b.key_id.clone().flatten(),
            "escalation_resolved" => b
                .escalation_id
                .as_deref()
                .map(|id| self.escalations.registry.get(tenant_id, id))
                .transpose()?
                .flatten()
                .and_then(|e| e.caller_key_id),
            _ => None,
        };
        // Another key's call is not found, as another tenant's would be.
        if caller.as_deref() != Some(who.key_id.as_str()) {
            return Err(AppError::NotFound("event"));
        }
        if b.outcome.as_deref() != Some("ALLOW") {
            return Err(AppError::Conflict {
                code: "not_allowed",
                message: format!("event {event_id} did not allow the call"),
            });
        }
        let key = tenant_key(tenant_id, &[event_id.as_bytes()]);
        let _reporting = {
            let mut in_flight = self.completions.0.lock().expect("completions lock");
            let place = (tenant_id.to_owned(), event_id.to_owned());
            if !in_flight.insert(place.clone()) || self.store.contains(Table::Completions, &key)? {
                in_flight.remove(&place);
                return Err(AppError::Conflict {
                    code: "already_completed",
                    message: format!("the call of event {event_id} has already been reported"),
                });
            }
            Reporting {
                in_flight: self.completions.clone(),
                key: place,
            }
        };
        let mut record = RecordBody::new(Kind::ToolCompleted);
        record.event_id = new_ordered_id("evt_", self.clock.now_ms());
        record.action = b.action.clone();
        record.agent_id = b.agent_id.clone();
        record.session_id = b.session_id.clone();
        record.policy_id = b.policy_id.clone();
        record.escalation_id = b.escalation_id.clone();
        record.acted_by(&who.key_id, &who.subject);
        record.detail = Some(
            serde_json::json!({
                "of": event_id,
                "is_error": completion.is_error,
                "result_bytes": completion.result_bytes,
                "duration_ms": completion.duration_ms,
            })
            .to_string(),
        );
        let effects = Effects {
            rows: vec![(
                Table::Completions,
                key,
                record.event_id.clone().into_bytes(),
            )],
            ..Effects::default()
        };
        Ok(self.audit.append(tenant_id, record, effects).await?)
    }
}

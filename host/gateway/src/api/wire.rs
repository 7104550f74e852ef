//! The HTTP API's JSON shapes (`writ-wire`) and their conversions from the domain types.

pub use writ_wire::*;

use crate::app::ExecuteOutcome;
use crate::policies::PolicyMeta;
use crate::tenants::{KeyRecord, Tenant, TenantLimits};

/// The wire form of a decision's outcome.
pub fn verdict(outcome: writ_runtime::Outcome) -> Verdict {
    match outcome {
        writ_runtime::Outcome::Allow => Verdict::Allow,
        writ_runtime::Outcome::Block => Verdict::Block,
        writ_runtime::Outcome::Escalate => Verdict::Escalate,
    }
}

impl From<ExecuteOutcome> for ExecuteResponse {
    fn from(o: ExecuteOutcome) -> Self {
        Self {
            decision: verdict(o.decision.outcome),
            reason: o.decision.reason,
            event_id: o.event_id,
            escalation_id: o.escalation_id,
            actor_human_id: o.actor_human_id,
            codes: o.decision.codes,
            policy_id: o.policy_id,
            session_id: o.session_id,
        }
    }
}

impl From<TenantLimits> for LimitsView {
    fn from(l: TenantLimits) -> Self {
        Self {
            fuel: l.fuel,
            memory_mib: l.memory_mib,
            deadline_ms: l.deadline_ms,
            escalation_hold_s: l.escalation_hold_s,
            max_pending_escalations: l.max_pending_escalations,
            irreversible_gate: l.irreversible_gate,
            rate_per_s: l.rate_per_s,
            burst: l.burst,
            eval_ms_per_s: l.eval_ms_per_s,
            max_evaluations: l.max_evaluations,
            max_queued: l.max_queued,
            queue_ms: l.queue_ms,
            max_policies: l.max_policies,
            max_policy_bytes: l.max_policy_bytes,
        }
    }
}

impl From<Tenant> for TenantView {
    fn from(t: Tenant) -> Self {
        Self {
            tenant_id: t.id,
            name: t.name,
            limits: t.limits.into(),
        }
    }
}

impl From<KeyRecord> for KeyView {
    fn from(k: KeyRecord) -> Self {
        Self {
            key_id: k.key_id,
            tenant_id: k.tenant_id,
            role: k.role.as_str().to_owned(),
            subject: k.subject,
            agent_id: k.agent_id,
            created_ms: k.created_ms,
            revoked: k.revoked,
        }
    }
}

/// A view of `meta`, marked active if it is.
pub fn policy_view(meta: PolicyMeta, active: bool) -> PolicyView {
    PolicyView {
        policy_id: meta.policy_id,
        name: meta.name,
        size: meta.size,
        uploaded_ms: meta.uploaded_ms,
        active,
    }
}

impl From<crate::verify::Verification> for VerifyView {
    fn from(v: crate::verify::Verification) -> Self {
        Self {
            ok: v.ok(),
            records: v.records,
            head_seq: v.head.map(|(s, _)| s),
            head_hash: v.head.map(|(_, h)| hex::encode(h)),
            broken_seq: v.broken.as_ref().map(|b| b.seq),
            problem: v.broken.as_ref().map(|b| b.problem.code().to_owned()),
            detail: v.broken.map(|b| b.detail),
        }
    }
}

impl From<crate::escalations::Escalation> for EscalationView {
    fn from(e: crate::escalations::Escalation) -> Self {
        Self {
            status: e.status.as_str().to_owned(),
            parameters: serde_json::from_str(&e.arguments).unwrap_or(serde_json::Value::Null),
            escalation_id: e.id,
            action: e.action,
            agent_id: e.agent_id,
            session_id: e.session_id,
            policy_id: e.policy_id,
            reason: e.reason,
            codes: e.codes,
            call_hash: e.call_hash,
            opened_ms: e.opened_ms,
            deadline_ms: e.deadline_ms,
            decided_ms: e.decided_ms,
            decided_by: e.decided_by,
            note: e.note,
            opened_event_id: e.opened_event_id,
            resolved_event_id: e.resolved_event_id,
            request: e.request.map(|r| RequestView {
                method: r.method,
                url: r.url,
                body: r.body,
                destructive: r.destructive,
            }),
            job_id: e.job_id,
        }
    }
}

impl From<crate::catalog::ToolEntry> for ToolView {
    fn from(e: crate::catalog::ToolEntry) -> Self {
        Self {
            service: e.service,
            tool_name: e.tool_name,
            method: e.method,
            url: e.url,
            query: e.query,
            body: e.body,
            headers: e.headers,
            credential: e.credential.map(|c| CredentialUseBody {
                name: c.name,
                header: c.header,
                format: c.format,
            }),
            destructive: e.destructive,
        }
    }
}

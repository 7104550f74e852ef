//! The JSON shapes of Writ's HTTP API, shared by the gateway that serves them and the clients
//! that call it. The gateway converts between these and its domain types; nothing here
//! depends on the gateway.

#![warn(missing_docs)]

#[cfg(feature = "axum")]
mod reply;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

#[cfg(feature = "axum")]
pub use reply::JsonReply;

/// A decision's outcome on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    /// The call may run.
    Allow,
    /// The call must not run.
    Block,
    /// A human decides.
    Escalate,
}

/// `POST /v1/gateway/execute`: the Provenance SDK's request.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ExecuteBody {
    /// The agent's session.
    pub session_id: String,
    /// The agent making the call.
    pub agent_id: String,
    /// The action, e.g. `payments.initiate`.
    pub action: String,
    /// The client's expected decision: recorded, never used to decide.
    #[serde(default)]
    pub decision: Option<String>,
    /// The call's arguments: a JSON object, kept as the text received (validated, not
    /// re-encoded): the policy, the audit record and an escalation's call hash all see it.
    #[schema(value_type = Object)]
    pub parameters: Box<RawValue>,
    /// Optional context: a JSON object, kept as the text received.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub context: Option<Box<RawValue>>,
}

/// Query of `POST /v1/gateway/execute`.
#[derive(Debug, Serialize, Deserialize, IntoParams)]
pub struct ExecuteQuery {
    /// Hold an escalated call at most this many seconds (0: answer ESCALATE at once).
    pub wait: Option<u64>,
}

/// The decision on a tool call.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct ExecuteResponse {
    /// `ALLOW`, `BLOCK` or `ESCALATE`.
    pub decision: Verdict,
    /// Human-readable reason.
    pub reason: String,
    /// The audit record of this decision.
    pub event_id: String,
    /// Set when the call was escalated.
    pub escalation_id: Option<String>,
    /// The human who decided, when one did.
    pub actor_human_id: Option<String>,
    /// Machine-readable codes.
    pub codes: Vec<String>,
    /// The policy that decided.
    pub policy_id: Option<String>,
    /// The session.
    pub session_id: String,
}

/// `POST /v1/admin/tenants`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenantBody {
    /// Display name.
    pub name: String,
}

/// A tenant's limits.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct LimitsView {
    /// Fuel per evaluation.
    pub fuel: u64,
    /// Memory per evaluation, MiB.
    pub memory_mib: u32,
    /// Deadline per evaluation, ms.
    pub deadline_ms: u64,
    /// Escalation hold, seconds.
    pub escalation_hold_s: u64,
    /// Escalations that may be pending at once.
    pub max_pending_escalations: usize,
    /// Whether the irreversible-action gate is on.
    pub irreversible_gate: bool,
    /// Calls per second (token bucket); 0: no limit.
    pub rate_per_s: u32,
    /// The rate bucket's burst.
    pub burst: u32,
    /// Evaluation wall time the tenant may spend per second, ms; 0: no budget.
    pub eval_ms_per_s: u64,
    /// The tenant's evaluations running at once.
    pub max_evaluations: usize,
    /// The tenant's calls that may wait for admission at once.
    pub max_queued: usize,
    /// Longest a call waits for admission, ms.
    pub queue_ms: u64,
    /// Policies the tenant may keep stored.
    #[serde(default)]
    pub max_policies: usize,
    /// Bytes of components the tenant may keep stored.
    #[serde(default)]
    pub max_policy_bytes: u64,
}

/// A tenant.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct TenantView {
    /// `ten_…`.
    pub tenant_id: String,
    /// Display name.
    pub name: String,
    /// Limits.
    pub limits: LimitsView,
}

/// `PATCH /v1/admin/tenants/{tenant_id}`: the limits to change.
#[derive(Debug, Serialize, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct PatchTenantBody {
    /// Fuel per evaluation.
    pub fuel: Option<u64>,
    /// Memory per evaluation, MiB.
    pub memory_mib: Option<u32>,
    /// Deadline per evaluation, ms.
    pub deadline_ms: Option<u64>,
    /// Escalation hold, seconds.
    pub escalation_hold_s: Option<u64>,
    /// Escalations that may be pending at once.
    pub max_pending_escalations: Option<usize>,
    /// Hold ALLOWed irreversible calls (DELETE, or destructive in the catalog) for a human.
    pub irreversible_gate: Option<bool>,
    /// Calls per second (token bucket); 0: no limit.
    pub rate_per_s: Option<u32>,
    /// The rate bucket's burst.
    pub burst: Option<u32>,
    /// Evaluation wall time the tenant may spend per second, ms; 0: no budget.
    pub eval_ms_per_s: Option<u64>,
    /// The tenant's evaluations running at once.
    pub max_evaluations: Option<usize>,
    /// The tenant's calls that may wait for admission at once.
    pub max_queued: Option<usize>,
    /// Longest a call waits for admission, ms.
    pub queue_ms: Option<u64>,
    /// Policies the tenant may keep stored (1 to 10000); beyond, uploads get 409.
    pub max_policies: Option<usize>,
    /// Bytes of components the tenant may keep stored; beyond, uploads get 413.
    pub max_policy_bytes: Option<u64>,
}

/// `POST /v1/admin/tenants/{tenant_id}/keys`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyBody {
    /// `agent`, `reviewer` or `admin`.
    pub role: String,
    /// Who holds the key, e.g. a reviewer's email.
    pub subject: String,
    /// For agent keys: the only agent id the key may act as.
    #[serde(default)]
    pub agent_id: Option<String>,
}

/// A key (never its secret, except once at creation in [`CreatedKey`]).
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct KeyView {
    /// `key_…`.
    pub key_id: String,
    /// The tenant.
    pub tenant_id: Option<String>,
    /// The role.
    pub role: String,
    /// The holder.
    pub subject: String,
    /// The agent an agent key is bound to.
    pub agent_id: Option<String>,
    /// Creation time, ms since the epoch.
    pub created_ms: u64,
    /// Whether it was revoked.
    pub revoked: bool,
}

/// A created key with its secret, shown this once.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct CreatedKey {
    /// The key.
    #[serde(flatten)]
    pub key: KeyView,
    /// The secret: send it as `X-PROVENANCE-API-KEY`, `Authorization: Bearer` or `X-API-Key`.
    pub api_key: String,
}

/// Keys of a tenant: a page of them.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct KeyList {
    /// The keys, oldest first.
    pub keys: Vec<KeyView>,
    /// Pass as `cursor` for the next page; absent at the end.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// Query of a paged list (`GET /v1/escalations/pending`, keys, catalog, credentials).
#[derive(Debug, Default, Serialize, Deserialize, IntoParams)]
pub struct PageQuery {
    /// A `next_cursor` from the previous page: this page starts after it.
    pub cursor: Option<String>,
    /// At most this many items (default and most: the route's, 1000 for every list).
    pub limit: Option<usize>,
}

/// Query of `POST /v1/policies`.
#[derive(Debug, Serialize, Deserialize, IntoParams)]
pub struct UploadQuery {
    /// A name for the policy.
    pub name: String,
    /// Activate it at once.
    #[serde(default)]
    pub activate: bool,
}

/// An uploaded policy.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct PolicyView {
    /// blake3 hex of the component.
    pub policy_id: String,
    /// Its name.
    pub name: String,
    /// Component size, bytes.
    pub size: usize,
    /// Upload time, ms since the epoch.
    pub uploaded_ms: u64,
    /// Whether it is the active policy.
    pub active: bool,
}

/// `POST /v1/policies` answer.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct UploadedPolicy {
    /// blake3 hex of the component.
    pub policy_id: String,
    /// Its name.
    pub name: String,
    /// Component size, bytes.
    pub size: usize,
    /// Whether it was activated.
    pub activated: bool,
}

/// The tenant's policies.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct PolicyList {
    /// Oldest first.
    pub policies: Vec<PolicyView>,
    /// The active policy, if any.
    pub active_policy_id: Option<String>,
}

/// Query of `GET /v1/audit`.
#[derive(Debug, Serialize, Deserialize, IntoParams)]
pub struct AuditQuery {
    /// Only this session's records.
    pub session_id: Option<String>,
    /// Only records with a greater seq.
    pub after_seq: Option<u64>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<usize>,
}

/// A page of audit records.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct AuditPage {
    /// Records in seq order, as stored (see ARCHITECTURE.md for the fields).
    #[schema(value_type = Vec<Object>)]
    pub records: Vec<Value>,
    /// Pass as `after_seq` for the next page; absent at the end. A page ends at `limit`
    /// records or before the record that would take its records' stored JSON past 4 MiB
    /// (always at least one record).
    pub next_after_seq: Option<u64>,
    /// The page ended at the byte budget, before `limit`.
    #[serde(default)]
    pub truncated: bool,
}

/// Query of `GET /v1/sessions/{session_id}`.
#[derive(Debug, Default, Serialize, Deserialize, IntoParams)]
pub struct SessionQuery {
    /// Only records with a greater seq (a `next_after_seq`).
    pub after_seq: Option<u64>,
    /// At most this many records (default 1000, at most 10000).
    pub limit: Option<usize>,
}

/// A session's decisions: a page of its records, and the counts of the calls in that page.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct SessionView {
    /// The session.
    pub session_id: String,
    /// Allowed calls in this page.
    pub allowed: usize,
    /// Blocked calls in this page.
    pub blocked: usize,
    /// Escalated calls in this page.
    pub escalated: usize,
    /// Its audit records, in seq order: a page, bounded like `GET /v1/audit`'s.
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<Value>,
    /// Pass as `after_seq` for the next page; absent at the end.
    #[serde(default)]
    pub next_after_seq: Option<u64>,
    /// The page ended at the byte budget, before `limit`.
    #[serde(default)]
    pub truncated: bool,
}

/// `GET /healthz` and `GET /readyz`.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or `unavailable`.
    pub status: String,
    /// `/readyz`: why the gateway is not ready, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `/readyz`: how many tenants could not be loaded at start (their calls are blocked;
    /// every other tenant serves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degraded_tenants: Option<usize>,
    /// `/readyz` with the operator key: each degraded tenant and what failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degraded: Option<Vec<DegradedTenant>>,
}

/// A tenant the gateway could not load whole at start.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct DegradedTenant {
    /// The tenant.
    pub tenant_id: String,
    /// Each part that failed and its error.
    pub reason: String,
}

/// `GET /v1/audit/verify`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct VerifyView {
    /// Whether the whole chain verified (and matches the latest checkpoint).
    pub ok: bool,
    /// Records verified.
    pub records: u64,
    /// Seq of the last verified record.
    pub head_seq: Option<u64>,
    /// Hash of the last verified record (hex).
    pub head_hash: Option<String>,
    /// The first broken seq, when not ok.
    pub broken_seq: Option<u64>,
    /// What broke: `undecodable`, `missing_seq`, `seq_out_of_order`, `prev_hash_mismatch`,
    /// `hash_mismatch`, `wrong_tenant`, `checkpoint_mismatch` or `truncated`.
    pub problem: Option<String>,
    /// Details.
    pub detail: Option<String>,
}

/// Query of `GET /v1/audit/export`.
#[derive(Debug, Serialize, Deserialize, IntoParams)]
pub struct ExportQuery {
    /// Only records with a greater seq.
    pub after_seq: Option<u64>,
}

/// `GET /v1/audit/public-key`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct PublicKeyView {
    /// The signed-note verifier key: `writ+<key id hex>+<base64(0x01 ‖ key)>`.
    pub verifier_key: String,
    /// The Ed25519 public key, standard base64.
    pub public_key: String,
    /// The signature algorithm.
    pub algorithm: String,
}

/// Query of `GET /v1/escalations`.
#[derive(Debug, Default, Serialize, Deserialize, IntoParams)]
pub struct EscalationQuery {
    /// `pending`, `approved`, `rejected` or `expired`.
    pub status: Option<String>,
    /// A `next_cursor` from the previous page: this page starts after it.
    pub cursor: Option<String>,
    /// At most this many (default 1000, at most 1000).
    pub limit: Option<usize>,
}

/// Query of `GET /v1/escalations/{id}/wait`.
#[derive(Debug, Serialize, Deserialize, IntoParams)]
pub struct WaitQuery {
    /// Seconds to wait at most (default 30, at most 300).
    pub timeout: Option<u64>,
}

/// `PUT /v1/mcp/servers/{name}`: an MCP server of the tenant's catalog.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct McpServerBody {
    /// Its tools whose calls are irreversible: the gateway holds them for a human whatever the
    /// policy allowed (when the tenant's irreversible-action gate is on, the default).
    #[serde(default)]
    pub destructive_tools: Vec<String>,
    /// A remote server's MCP endpoint (Streamable HTTP): agents reach it through the gateway's
    /// `/mcp/{name}`. Absent for a server run beside its client with `writ mcp`.
    #[serde(default)]
    pub url: Option<String>,
    /// The vault credential the gateway injects into every request to `url`; it must be bound
    /// to `url`'s origin. The agent never holds it.
    #[serde(default)]
    pub credential: Option<CredentialUseBody>,
}

/// An MCP server of the tenant's catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct McpServerView {
    /// The name in actions (`<name>.<tool>`).
    pub name: String,
    /// Its tools marked destructive.
    pub destructive_tools: Vec<String>,
    /// A remote server's MCP endpoint, relayed by `/mcp/{name}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The credential injected into requests to `url` (its name and how, never its value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<CredentialUseBody>,
}

/// `GET /v1/mcp/servers`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct McpServerList {
    /// By name.
    pub servers: Vec<McpServerView>,
}

/// `POST /v1/events/{event_id}/completion`: how an allowed call went where it ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompletionBody {
    /// The tool answered with an error.
    pub is_error: bool,
    /// The size of its result, in bytes.
    pub result_bytes: u64,
    /// From forwarding the call to its result, in ms.
    pub duration_ms: u64,
}

/// The record of a completion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CompletionView {
    /// The completion's own audit record.
    pub event_id: String,
}

/// `POST /v1/escalations/{id}/approve|reject`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoteBody {
    /// The reviewer's note: the held call's reason.
    #[serde(default)]
    pub note: Option<String>,
}

/// `POST /v1/escalations/{id}/decide` (Provenance form). Other fields, such as Provenance's
/// `approver_id`, are ignored: the approver is always the key's subject.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DecideBody {
    /// `APPROVE` or `REJECT`.
    pub decision: String,
    /// The reviewer's note.
    #[serde(default)]
    pub reason: Option<String>,
}

/// An escalation.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct EscalationView {
    /// `esc_…`.
    pub escalation_id: String,
    /// `pending`, `approved`, `rejected`, `expired` or `withdrawn`.
    pub status: String,
    /// The call's action.
    pub action: String,
    /// The call's arguments.
    #[schema(value_type = Object)]
    pub parameters: Value,
    /// The agent.
    pub agent_id: String,
    /// The session.
    pub session_id: String,
    /// The policy that escalated.
    pub policy_id: String,
    /// The policy's reason.
    pub reason: String,
    /// The policy's codes.
    pub codes: Vec<String>,
    /// blake3 of (action, arguments, policy id): what an approval covers.
    pub call_hash: String,
    /// Opened, ms since the epoch.
    pub opened_ms: u64,
    /// Expires, ms since the epoch.
    pub deadline_ms: u64,
    /// Decided, ms since the epoch.
    pub decided_ms: Option<u64>,
    /// The reviewer (key subject).
    pub decided_by: Option<String>,
    /// The reviewer's note.
    pub note: Option<String>,
    /// The `escalation_opened` record.
    pub opened_event_id: String,
    /// The `escalation_resolved` record.
    pub resolved_event_id: Option<String>,
    /// The downstream request an approval runs (method and URL; credentials are never shown).
    pub request: Option<RequestView>,
    /// The job an approval started.
    pub job_id: Option<String>,
}

/// A resolved downstream request as a reviewer sees it.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct RequestView {
    /// HTTP method.
    pub method: String,
    /// URL.
    pub url: String,
    /// JSON body.
    pub body: Option<String>,
    /// Marked destructive.
    pub destructive: bool,
}

/// A list of escalations: a page of them, at most `limit` and (past the first) 4 MiB of their
/// stored rows.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct EscalationList {
    /// Oldest first.
    pub escalations: Vec<EscalationView>,
    /// Pass as `cursor` for the next page; absent at the end. A page can hold fewer than
    /// `limit` escalations and still have one (a status filter reads a bounded stretch of
    /// history per page).
    #[serde(default)]
    pub next_cursor: Option<String>,
    /// The page ended at the byte budget.
    #[serde(default)]
    pub truncated: bool,
}

/// `GET /v1/escalations/{id}/wait`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct WaitResponse {
    /// The escalation's status.
    pub status: String,
    /// The held call's answer as it stands (ESCALATE while pending).
    pub result: ExecuteResponse,
}

/// `PUT /v1/webhooks`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhooksBody {
    /// URLs to POST escalation events to (at most 10).
    pub urls: Vec<String>,
}

/// The tenant's webhooks.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct WebhooksView {
    /// The URLs.
    pub urls: Vec<String>,
    /// The signing secret: returned once, when set. Each delivery carries
    /// `X-Writ-Signature: t=<ms since the epoch>,v1=<hex HMAC-SHA256 of "<t>.<body>" under this
    /// secret>`; refuse a delivery whose `t` is older than a few minutes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// How a credential is injected into a tool's requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialUseBody {
    /// The credential's name in the vault.
    pub name: String,
    /// The header, e.g. `Authorization`.
    pub header: String,
    /// The header value with `{secret}` where the secret goes, e.g. `Bearer {secret}`.
    pub format: String,
}

/// `PUT /v1/catalog/{service}/{tool_name}`: how the tool resolves to a downstream request.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolBody {
    /// `GET`, `POST`, `PUT`, `PATCH` or `DELETE`.
    pub method: String,
    /// URL template; `{argument}` is replaced by the percent-encoded argument.
    pub url: String,
    /// Arguments sent as query parameters.
    #[serde(default)]
    pub query: Vec<String>,
    /// Arguments sent as fields of a JSON body.
    #[serde(default)]
    pub body: Vec<String>,
    /// Extra headers.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// The credential to inject.
    #[serde(default)]
    pub credential: Option<CredentialUseBody>,
    /// Irreversible even if the method is not DELETE (e.g. a POST that moves money).
    #[serde(default)]
    pub destructive: bool,
}

/// A catalog entry.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct ToolView {
    /// The service.
    pub service: String,
    /// The tool.
    pub tool_name: String,
    /// HTTP method.
    pub method: String,
    /// URL template.
    pub url: String,
    /// Query arguments.
    pub query: Vec<String>,
    /// Body arguments.
    pub body: Vec<String>,
    /// Extra headers.
    pub headers: std::collections::BTreeMap<String, String>,
    /// The credential injected (its name, never its value).
    pub credential: Option<CredentialUseBody>,
    /// Marked destructive.
    pub destructive: bool,
}

/// The tenant's catalog: a page of it.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct ToolList {
    /// The tools, by service and name.
    pub tools: Vec<ToolView>,
    /// Pass as `cursor` for the next page; absent at the end.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// `PUT /v1/credentials/{name}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialBody {
    /// The secret: stored encrypted, never returned.
    pub secret: String,
    /// The origins it may be sent to, e.g. `https://api.github.com` (1 to 16). It is sent only
    /// to these, and over plain HTTP only to an `http://` origin named here.
    pub origins: Vec<String>,
}

/// The tenant's credential names: a page of them.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct CredentialList {
    /// Names only, in order; values are never returned.
    pub names: Vec<String>,
    /// Pass as `cursor` for the next page; absent at the end.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// `POST /v1/execute`: the Tenet SDK's request. (`requestId` is accepted and not yet used:
/// idempotency is still to come.)
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TenetBody {
    /// The downstream service, e.g. `github`.
    pub service: String,
    /// The logical tool call.
    #[serde(rename = "toolCall")]
    pub tool_call: TenetToolCall,
    /// The agent.
    #[serde(default)]
    pub agent: Option<TenetAgent>,
    /// Caller context (a JSON object); `sessionId` in it names the session.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub context: Option<Value>,
}

/// The tool call of a Tenet request.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TenetToolCall {
    /// The tool, e.g. `github.repos.delete`.
    #[serde(rename = "toolName")]
    pub tool_name: String,
    /// Its arguments (a JSON object).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub arguments: Option<Value>,
}

/// The agent of a Tenet request.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TenetAgent {
    /// The agent id (default `default`).
    #[serde(rename = "agentId", default)]
    pub agent_id: Option<String>,
}

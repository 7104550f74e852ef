//! The audit chain: pages newest first with filters, one record with every field and its
//! hash, verification with the latest signed checkpoint, a session's timeline, and the export.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use maud::{Markup, html};
use serde::Deserialize;
use writ_gateway::app::AppError;
use writ_gateway::audit::Record;
use writ_gateway::page::Bounds;
use writ_gateway::service::audit::Scan;

use crate::Console;
use crate::error::ConsoleError;
use crate::inbox::urlencode;
use crate::layout::{self, Nav};
use crate::session::{CsrfForm, SignedIn, check_origin};

/// The kinds of record, for the filter.
const KINDS: [&str; 16] = [
    "decision",
    "escalation_opened",
    "escalation_resolved",
    "job_finished",
    "policy_activated",
    "policy_deleted",
    "key_created",
    "key_revoked",
    "catalog_put",
    "catalog_deleted",
    "credential_put",
    "credential_deleted",
    "webhooks_set",
    "webhooks_removed",
    "tenant_limits_changed",
    "tool_completed",
];

/// The audit page's filters, as the form sends them.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Filters {
    session: Option<String>,
    agent: Option<String>,
    action: Option<String>,
    outcome: Option<String>,
    kind: Option<String>,
    /// Start of the time range: ms since the epoch (the script converts the browser's local
    /// time), or `YYYY-MM-DDTHH:MM` in UTC.
    from: Option<String>,
    to: Option<String>,
    before: Option<u64>,
}

impl Filters {
    fn clean(v: &Option<String>) -> Option<&str> {
        v.as_deref().map(str::trim).filter(|s| !s.is_empty())
    }

    fn time(v: &Option<String>) -> Result<Option<u64>, ConsoleError> {
        Self::clean(v)
            .map(|t| {
                t.parse::<u64>()
                    .ok()
                    .or_else(|| parse_utc(t))
                    .ok_or_else(|| {
                        ConsoleError::BadInput(format!("`{t}` is not a time (YYYY-MM-DDTHH:MM)"))
                    })
            })
            .transpose()
    }

    fn matches(&self, r: &Record, to: Option<u64>) -> Scan {
        let b = &r.body;
        let eq = |want: &Option<String>, have: &Option<String>| {
            Self::clean(want).is_none_or(|w| have.as_deref() == Some(w))
        };
        if to.is_some_and(|to| b.timestamp_ms > to) {
            return Scan::Skip;
        }
        let kind_ok = Self::clean(&self.kind).is_none_or(|k| b.kind == k);
        if kind_ok
            && eq(&self.session, &b.session_id)
            && eq(&self.agent, &b.agent_id)
            && eq(&self.action, &b.action)
            && eq(&self.outcome, &b.outcome)
        {
            Scan::Take
        } else {
            Scan::Skip
        }
    }

    /// The query string of these filters, with `before`.
    fn query(&self, before: u64) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        let fields = [
            ("session", &self.session),
            ("agent", &self.agent),
            ("action", &self.action),
            ("outcome", &self.outcome),
            ("kind", &self.kind),
            ("from", &self.from),
            ("to", &self.to),
        ];
        for (k, v) in fields {
            if let Some(v) = Self::clean(v) {
                q.append_pair(k, v);
            }
        }
        q.append_pair("before", &before.to_string());
        q.finish()
    }
}

/// `YYYY-MM-DDTHH:MM[:SS]` read as UTC, in ms since the epoch; years 1970 to 9999 only.
fn parse_utc(t: &str) -> Option<u64> {
    let t = t.trim_end_matches('Z');
    let (date, time) = t.split_once('T')?;
    let number = |s: &str| s.parse::<u32>().ok().map(i64::from);
    let mut d = date.splitn(3, '-').map(number);
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut h = time.splitn(3, ':').map(number);
    let (hh, mm) = (h.next()??, h.next()??);
    let ss = h.next().flatten().unwrap_or(0);
    let valid = (1970..=9999).contains(&y)
        && (1..=12).contains(&m)
        && (1..=31).contains(&day)
        && hh <= 23
        && mm <= 59
        && ss <= 59;
    if !valid {
        return None;
    }
    // Howard Hinnant's days-from-civil (in range for these years: no overflow).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    u64::try_from(secs).ok().map(|s| s * 1000)
}

/// The chain, newest first, filtered.
pub(crate) async fn page(
    State(console): State<Console>,
    who: SignedIn,
    Query(filters): Query<Filters>,
) -> Result<Markup, ConsoleError> {
    let from = Filters::time(&filters.from)?;
    let to = Filters::time(&filters.to)?;
    let audit = console.app.audit().clone();
    let scope = who.scope.clone();
    let (page, filters) = tokio::task::spawn_blocking(move || {
        let page = audit.scan_back(&scope, filters.before, crate::LIST_SCAN, |r| {
            if from.is_some_and(|from| r.body.timestamp_ms < from) {
                return Scan::Stop;
            }
            filters.matches(r, to)
        });
        page.map(|p| (p, filters))
    })
    .await
    .map_err(AppError::internal)??;
    let size = console.app.audit().chain_size(&who.scope)?;
    let text = |v: &Option<String>| Filters::clean(v).map(str::to_owned);
    let body = html! {
        h1 { "Audit chain" }
        p.muted { (size) " records. Every decision and human action, hash-chained." }
        div.actions {
            form method="post" action="/console/audit/verify" {
                (layout::csrf(&who))
                button type="submit" #verify { "Verify the chain" }
            }
            a.button href="/console/audit/export" download { "Download export (JSON Lines)" }
        }
        form.filters #audit-filters method="get" action="/console/audit" {
            label { "Session " input name="session" value=[text(&filters.session)]; }
            label { "Agent " input name="agent" value=[text(&filters.agent)]; }
            label { "Action " input name="action" value=[text(&filters.action)]; }
            label { "Outcome "
                select name="outcome" {
                    @for o in ["", "ALLOW", "BLOCK", "ESCALATE"] {
                        option value=(o) selected[Filters::clean(&filters.outcome).unwrap_or("") == o] {
                            @if o.is_empty() { "any" } @else { (o) }
                        }
                    }
                }
            }
            label { "Kind "
                select name="kind" {
                    option value="" { "any" }
                    @for k in KINDS {
                        option value=(k) selected[Filters::clean(&filters.kind) == Some(k)] { (k) }
                    }
                }
            }
            label { "From " input type="datetime-local" name="from" data-local-time value=[local_value(from)]; }
            label { "To " input type="datetime-local" name="to" data-local-time value=[local_value(to)]; }
            button type="submit" { "Filter" }
            a href="/console/audit" { "Clear" }
        }
        (records_table(&page.records))
        @if let Some(before) = page.next_before {
            p { a.more href=(format!("/console/audit?{}", filters.query(before))) { "Older →" } }
        }
    };
    Ok(layout::page("Audit", Some(&who), Nav::Audit, body))
}

/// A time filter's value as the form shows it (UTC until the script shows it locally).
fn local_value(ms: Option<u64>) -> Option<String> {
    ms.map(|ms| layout::utc(ms)[..16].to_owned())
}

fn records_table(records: &[Record]) -> Markup {
    html! {
        @if records.is_empty() {
            p.empty #audit-empty { "No records match." }
        } @else {
            div.table-wrap { table.list #audit-records {
                thead { tr { th { "Seq" } th { "When" } th { "Kind" } th { "Action" } th { "Agent" } th { "Outcome" } th { "Reason" } } }
                tbody {
                    @for r in records {
                        @let b = &r.body;
                        tr {
                            td { a href=(format!("/console/audit/{}", b.event_id)) { (b.seq) } }
                            td { (layout::time(b.timestamp_ms)) }
                            td { (b.kind) }
                            td { (b.action.as_deref().unwrap_or("")) }
                            td { (b.agent_id.as_deref().unwrap_or("")) }
                            td { @if let Some(o) = &b.outcome { (layout::outcome(o)) } }
                            td.reason { (b.reason.as_deref().map(|r| clip(r, 160)).unwrap_or_default()) }
                        }
                    }
                }
            } }
        }
    }
}

/// At most `n` characters of `s`, with an ellipsis when cut.
fn clip(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// One record: every field, and its hash.
pub(crate) async fn record(
    State(console): State<Console>,
    who: SignedIn,
    Path(event_id): Path<String>,
) -> Result<Markup, ConsoleError> {
    let r = console.app.audit().audit_event(&who.scope, &event_id)?;
    let fields = serde_json::to_value(&r.body).map_err(AppError::internal)?;
    let body = html! {
        p { a href="/console/audit" { "← Audit chain" } }
        h1 { "Record " (r.body.seq) }
        dl.facts.record {
            dt { "hash" } dd { code.hash #record-hash { (r.hash) } }
            @if let Some(fields) = fields.as_object() {
                @for (name, value) in fields {
                    dt { (name) }
                    dd { (field(name, value)) }
                }
            }
        }
        @if let Some(session) = &r.body.session_id {
            p { a href=(format!("/console/sessions/{}", urlencode(session))) { "This session's timeline →" } }
        }
    };
    Ok(layout::page("Record", Some(&who), Nav::Audit, body))
}

fn field(name: &str, value: &serde_json::Value) -> Markup {
    match (name, value) {
        ("timestamp_ms", serde_json::Value::Number(n)) => html! {
            (n) " · " (layout::time(n.as_u64().unwrap_or(0)))
        },
        ("arguments" | "detail" | "client_hint", serde_json::Value::String(s)) => layout::json(s),
        (_, serde_json::Value::String(s)) => html! { code { (s) } },
        (_, serde_json::Value::Null) => html! { span.muted { "null" } },
        (_, other) => layout::json(&other.to_string()),
    }
}

/// Verifies the whole chain and shows the result with the latest signed checkpoint.
pub(crate) async fn verify(
    State(console): State<Console>,
    who: SignedIn,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Result<Markup, ConsoleError> {
    check_origin(&headers, &console.config)?;
    who.check_csrf(&form.csrf)?;
    let v = console.app.audit().verify(&who.scope).await?;
    let note = match console.app.checkpoints().note(&who.scope) {
        Ok(note) => Some(note),
        Err(AppError::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let (verifier_key, public_key) = console.app.checkpoints().verifier();
    let body = html! {
        p { a href="/console/audit" { "← Audit chain" } }
        h1 { "Chain verification" }
        @match &v.broken {
            None => {
                section.notice.ok #verify-result role="status" {
                    h2 { "Intact" }
                    p { "All " (v.records) " records verify: every hash recomputes and links to the one before"
                        @if note.is_some() { ", and the latest signed checkpoint matches" } "." }
                }
            }
            Some(broken) => {
                section.notice.error #verify-result role="alert" {
                    h2 { "Broken at seq " (broken.seq) }
                    p { strong { (broken.problem.code()) } ": " (broken.detail) }
                    p { (v.records) " records verified before the break. "
                        a href=(format!("/console/audit?before={}", broken.seq + 1)) { "See the records up to it" } }
                }
            }
        }
        h2 { "Latest signed checkpoint" }
        @if let Some(note) = &note {
            pre.note #checkpoint { (note) }
        } @else {
            p.empty { "No checkpoint has been signed for this tenant yet." }
        }
        h2 { "Checkpoint public key" }
        dl.facts {
            dt { "Verifier key (signed note)" } dd { code.hash { (verifier_key) } }
            dt { "Ed25519 public key (base64)" } dd { code.hash { (public_key) } }
        }
        p.muted { "The same key is published at " code { "/v1/audit/public-key" } "." }
    };
    Ok(layout::page("Verification", Some(&who), Nav::Audit, body))
}

/// The tenant's whole chain as JSON Lines, as a download.
#[utoipa::path(get, path = "/console/audit/export", tag = "console",
    responses((status = 200, content_type = "application/jsonl"),
        (status = 303, description = "No session: to the sign-in page"),
        (status = 429, description = "Too many exports running")),
    security(("console_session" = [])))]
pub(crate) async fn export(
    State(console): State<Console>,
    who: SignedIn,
) -> Result<impl IntoResponse, ConsoleError> {
    let lines = console.app.audit().export(&who.scope, None)?;
    let filename = format!("writ-audit-{}.jsonl", who.scope.tenant_id());
    Ok((
        [
            (header::CONTENT_TYPE, "application/jsonl".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        axum::body::Body::from_stream(lines),
    ))
}

#[derive(Debug, Deserialize)]
pub(crate) struct SessionQuery {
    after: Option<u64>,
}

/// A session's records in order, with its counts.
pub(crate) async fn session(
    State(console): State<Console>,
    who: SignedIn,
    Path(session_id): Path<String>,
    Query(q): Query<SessionQuery>,
) -> Result<Markup, ConsoleError> {
    let s = console
        .app
        .audit()
        .session(&who.scope, &session_id, q.after, Bounds::new(100))?;
    let body = html! {
        p { a href="/console/audit" { "← Audit chain" } }
        h1 { "Session " code { (session_id) } }
        p.counts {
            (s.allowed) " allowed · " (s.blocked) " blocked · " (s.escalated) " escalated"
            @if q.after.is_some() { " (on this page)" }
        }
        ol.timeline {
            @for r in &s.events {
                @let b = &r.body;
                li {
                    (layout::time(b.timestamp_ms)) " "
                    a href=(format!("/console/audit/{}", b.event_id)) { (b.kind) }
                    @if let Some(a) = &b.action { " " code { (a) } }
                    @if let Some(o) = &b.outcome { " " (layout::outcome(o)) }
                    @if let Some(actor) = &b.actor { " by " (actor) }
                    @if let Some(reason) = &b.reason { p.reason { (clip(reason, 300)) } }
                }
            }
        }
        @if let Some(after) = s.next_after_seq {
            p { a.more href=(format!("/console/sessions/{}?after={after}", urlencode(&session_id))) { "Later →" } }
        }
    };
    Ok(layout::page("Session", Some(&who), Nav::Audit, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_times_are_read_as_utc() {
        assert_eq!(parse_utc("1970-01-01T00:00"), Some(0));
        assert_eq!(parse_utc("2026-05-28T20:26:40Z"), Some(1_780_000_000_000));
        assert_eq!(parse_utc("2026-13-01T00:00"), None);
        assert_eq!(parse_utc("yesterday"), None);
        assert_eq!(parse_utc("999999999999-01-01T00:00"), None);
        assert_eq!(parse_utc("2020-01-01T-1:00"), None);
        assert_eq!(parse_utc("9999-12-31T23:59:59"), Some(253_402_300_799_000));
    }
}

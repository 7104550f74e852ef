//! Held calls: the inbox (live, over server-sent events), one escalation, the decision form,
//! and the list of decided and expired ones. Decisions go through the same service operation
//! as the API's, so separation of duties and exactly-once hold as there; the deciding
//! reviewer is the session's key holder, never a form field.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt as _};
use writ_gateway::access::{Member, Require};
use writ_gateway::app::AppError;
use writ_gateway::app::{Escalation, EscalationStatus as Status};
use writ_gateway::page::Bounds;
use writ_gateway::service::audit::Scan;

use crate::Console;
use crate::error::ConsoleError;
use crate::layout::{self, Nav};
use crate::session::{SignedIn, check_origin};

/// Pending escalations shown at once (a tenant's pending cap is usually far below).
const INBOX_SIZE: usize = 200;
/// How often an open stream re-checks its session, so it ends when the session does.
const STREAM_CHECK: Duration = Duration::from_secs(15);
/// Live inboxes a tenant may have open at once.
const MAX_STREAMS_PER_TENANT: usize = 64;
/// How long a stream waits after a change for more before it re-renders.
const COALESCE: Duration = Duration::from_millis(200);
/// Longest decision note, as the API allows.
const MAX_NOTE_BYTES: usize = 4096;

#[derive(Debug, Deserialize)]
pub(crate) struct InboxQuery {
    done: Option<String>,
    id: Option<String>,
}

/// The inbox page.
pub(crate) async fn page(
    State(console): State<Console>,
    who: SignedIn,
    Query(q): Query<InboxQuery>,
) -> Result<Markup, ConsoleError> {
    let list = inbox(&console, &who)?;
    // Fixed messages only: the query picks one, it never supplies text.
    let done = match q.done.as_deref() {
        Some("approved") => Some("approved"),
        Some("rejected") => Some("rejected"),
        _ => None,
    };
    let body = html! {
        h1 { "Held calls" }
        @if let Some(done) = done {
            p.notice.ok role="status" {
                "You " (done) " "
                @if let Some(id) = &q.id { (layout::short(id)) } @else { "the call" }
                "."
            }
        }
        p.muted { "Calls a policy escalated wait here for a decision, newest first. \
                  The list updates by itself." }
        div #inbox data-stream="/console/inbox/stream" aria-live="polite" { (list) }
    };
    Ok(layout::page("Held calls", Some(&who), Nav::Inbox, body))
}

/// The pending escalations, newest first, as cards.
fn inbox(console: &Console, who: &SignedIn) -> Result<Markup, ConsoleError> {
    let page = console.app.escalations().escalations(
        &who.scope,
        Some(Status::Pending),
        None,
        Bounds::new(INBOX_SIZE),
    )?;
    let names = policy_names(console, who);
    let now = console.app.clock().now_ms();
    Ok(html! {
        @if page.escalations.is_empty() {
            p.empty #inbox-empty { "Nothing is waiting for a decision." }
        } @else {
            p.count { (page.escalations.len()) " waiting"
                @if page.next_after.is_some() { " (the oldest " (page.escalations.len()) " shown)" } }
            @for e in page.escalations.iter().rev() {
                (card(e, who, &names, now))
            }
        }
    })
}

/// The tenant's policy names by id.
fn policy_names(console: &Console, who: &SignedIn) -> HashMap<String, String> {
    console
        .app
        .policies()
        .list(&who.scope)
        .map(|(list, _)| list.into_iter().map(|p| (p.policy_id, p.name)).collect())
        .unwrap_or_default()
}

/// One held call: everything a reviewer needs to decide it, and the form.
fn card(e: &Escalation, who: &SignedIn, names: &HashMap<String, String>, now: u64) -> Markup {
    let own = e.caller_subject.as_deref().unwrap_or(&e.agent_id) == who.subject();
    html! {
        article.card.escalation #(e.id) data-escalation=(e.id) {
            header {
                h2 { a href=(format!("/console/escalations/{}", e.id)) { (e.action) } }
                (layout::outcome("ESCALATE"))
            }
            dl.facts {
                dt { "Agent" } dd { (e.agent_id) }
                dt { "Key" } dd {
                    @if let Some(k) = &e.caller_key_id { code { (k) } } @else { "not recorded" }
                    @if let Some(s) = &e.caller_subject { " held by " (s) }
                }
                dt { "Session" } dd { a href=(format!("/console/sessions/{}", urlencode(&e.session_id))) { (e.session_id) } }
                dt { "Reason" } dd.reason { (e.reason) }
                dt { "Codes" } dd { @for c in &e.codes { code.codeword { (c) } " " } }
                dt { "Policy" } dd {
                    (names.get(&e.policy_id).map_or("(deleted)", String::as_str)) " "
                    (layout::short(&e.policy_id))
                }
                dt { "Held since" } dd { (layout::time(e.opened_ms)) }
                dt { "Time left" } dd {
                    span.countdown data-deadline=(e.deadline_ms) data-now=(now) {
                        (layout::duration(e.deadline_ms.saturating_sub(now)))
                    }
                }
                dt { "Call hash" } dd { code.hash { (e.call_hash) } }
            }
            details.args open {
                summary { "Arguments" }
                (layout::json(&e.arguments))
            }
            @if let Some(r) = &e.request {
                details.request open {
                    summary { "Downstream request" @if r.destructive { " · " strong.destructive { "destructive" } } }
                    dl.facts {
                        dt { "Request" } dd { code { (r.method) " " (r.url) } }
                        @if let Some(c) = &r.credential {
                            dt { "Credential" } dd { "the vault's " code { (c.name) } " into " code { (c.header) } }
                        }
                    }
                    @if let Some(body) = &r.body { (layout::json(body)) }
                }
            }
            @if e.status == Status::Pending {
                @if own {
                    p.notice.warn { "You hold the key that made this call: another reviewer must decide it." }
                } @else {
                    (decide_form(e, who))
                }
            }
        }
    }
}

fn decide_form(e: &Escalation, who: &SignedIn) -> Markup {
    let note_id = format!("note-{}", e.id);
    html! {
        form.decide method="post" action=(format!("/console/escalations/{}/decide", e.id)) {
            (layout::csrf(who))
            label for=(note_id) { "Note (required, recorded with your decision)" }
            textarea id=(note_id) name="note" required maxlength=(MAX_NOTE_BYTES) rows="2" {}
            div.buttons {
                button.approve type="submit" name="decision" value="approve" { "Approve" }
                button.reject type="submit" name="decision" value="reject" { "Reject" }
            }
        }
    }
}

/// Percent-encodes a path segment.
pub(crate) fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The inbox as a stream of server-sent events: the list now, then again whenever the
/// tenant's pending escalations change; it ends when the session does (event `signedout`) or
/// the gateway stops.
#[utoipa::path(get, path = "/console/inbox/stream", tag = "console",
    responses((status = 200, content_type = "text/event-stream",
        description = "Events `inbox` (the pending calls as HTML), `signedout`, `failed`"),
        (status = 303, description = "No session: to the sign-in page")),
    security(("console_session" = [])))]
pub(crate) async fn stream(
    State(console): State<Console>,
    who: SignedIn,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ConsoleError> {
    let tenant_id = who.scope.tenant_id().to_owned();
    let open = console.streams.open(&tenant_id)?;
    let mut changes = console.app.escalations().pending_changes();
    let stream = async_stream(move |tx| async move {
        let _open = open;
        let render = |who: &SignedIn| match inbox(&console, who) {
            Ok(list) => Event::default().event("inbox").data(list.into_string()),
            Err(e) => Event::default().event("failed").data(e.to_string()),
        };
        if tx.send(render(&who)).await.is_err() {
            return;
        }
        let mut check = tokio::time::interval(STREAM_CHECK);
        loop {
            let changed = tokio::select! {
                () = console.stopping.cancelled() => return,
                () = tx.closed() => return,
                _ = check.tick() => false,
                change = changes.recv() => match change {
                    Ok(t) => *t == *tenant_id,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => true,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
            };
            if !console.sessions.still_signed_in(&headers, &console.app) {
                let _ = tx.send(Event::default().event("signedout").data("")).await;
                return;
            }
            if !changed {
                continue;
            }
            // One rendering for a burst of changes.
            tokio::time::sleep(COALESCE).await;
            while changes.try_recv().is_ok() {}
            if tx.send(render(&who)).await.is_err() {
                return;
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// Inbox streams open per tenant, so a tab left open in many windows cannot hold the gateway's
/// tasks.
#[derive(Default)]
pub(crate) struct Streams(std::sync::Mutex<HashMap<String, usize>>);

/// One open stream of a tenant; closed when dropped.
pub(crate) struct OpenStream {
    streams: std::sync::Arc<Streams>,
    tenant_id: String,
}

impl Streams {
    fn open(self: &std::sync::Arc<Self>, tenant_id: &str) -> Result<OpenStream, ConsoleError> {
        let mut open = self.0.lock().expect("streams lock");
        let n = open.entry(tenant_id.to_owned()).or_default();
        if *n >= MAX_STREAMS_PER_TENANT {
            return Err(AppError::Busy {
                code: "too_many_streams",
                retry_after_s: 30,
                message: format!(
                    "this tenant has {MAX_STREAMS_PER_TENANT} live inboxes open; close some tabs"
                ),
            }
            .into());
        }
        *n += 1;
        Ok(OpenStream {
            streams: self.clone(),
            tenant_id: tenant_id.to_owned(),
        })
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        let mut open = self.streams.0.lock().expect("streams lock");
        if let Some(n) = open.get_mut(&self.tenant_id) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.tenant_id);
            }
        }
    }
}

/// A stream fed by `body` through a small channel (the producer waits when the client is
/// slow, and stops when it goes).
fn async_stream<F, Fut>(body: F) -> impl Stream<Item = Result<Event, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Event>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(body(tx));
    ReceiverStream::new(rx).map(Ok)
}

/// One escalation, pending or decided.
pub(crate) async fn detail(
    State(console): State<Console>,
    who: SignedIn,
    Path(id): Path<String>,
) -> Result<Markup, ConsoleError> {
    let member = who.scope.key().require::<Member>()?;
    let e = console.app.escalations().escalation(&member, &id)?;
    Ok(detail_page(&console, &who, &e, None))
}

fn detail_page(
    console: &Console,
    who: &SignedIn,
    e: &Escalation,
    message: Option<Markup>,
) -> Markup {
    let names = policy_names(console, who);
    let now = console.app.clock().now_ms();
    let body = html! {
        p { a href="/console/" { "← Held calls" } }
        @if let Some(message) = message { (message) }
        @if e.status != Status::Pending { (resolution(e)) }
        (card(e, who, &names, now))
    };
    layout::page(&e.action, Some(who), Nav::Inbox, body)
}

/// What became of a decided or expired escalation.
fn resolution(e: &Escalation) -> Markup {
    html! {
        section.resolution {
            h2 { "This call was " (e.status.as_str()) }
            dl.facts {
                @if let Some(by) = &e.decided_by { dt { "By" } dd { (by) } }
                @if let Some(at) = e.decided_ms { dt { "At" } dd { (layout::time(at)) } }
                @if let Some(note) = &e.note { dt { "Note" } dd.note { (note) } }
                @if let Some(job) = &e.job_id { dt { "Job" } dd { code { (job) } } }
            }
        }
    }
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
// Missing fields are empty, so a forged form is refused by its token, not its shape.
#[serde(default)]
pub(crate) struct DecideForm {
    /// The session's form token.
    csrf: String,
    /// `approve` or `reject`.
    decision: String,
    /// Why: recorded with the decision.
    note: String,
}

/// Approves or rejects a held call in the signed-in reviewer's name, with a required note.
#[utoipa::path(post, path = "/console/escalations/{id}/decide", tag = "console",
    params(("id" = String, Path, description = "The escalation")),
    request_body(content = DecideForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303, description = "Decided: back to the inbox"),
        (status = 400, description = "No note, or not approve/reject", content_type = "text/html"),
        (status = 403, description = "Wrong form token or origin, or the reviewer made the call", content_type = "text/html"),
        (status = 409, description = "Already decided or expired: the page says by whom", content_type = "text/html")),
    security(("console_session" = [])))]
pub(crate) async fn decide(
    State(console): State<Console>,
    who: SignedIn,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<DecideForm>,
) -> Result<Response, ConsoleError> {
    check_origin(&headers, &console.config)?;
    who.check_csrf(&form.csrf)?;
    let approve = match form.decision.as_str() {
        "approve" => true,
        "reject" => false,
        _ => {
            return Err(ConsoleError::BadInput(
                "decision must be approve or reject".into(),
            ));
        }
    };
    let note = form.note.trim();
    if note.is_empty() {
        return Err(ConsoleError::BadInput(
            "a note is required: say why you approve or reject the call".into(),
        ));
    }
    if note.len() > MAX_NOTE_BYTES {
        return Err(ConsoleError::BadInput(format!(
            "the note must be at most {MAX_NOTE_BYTES} bytes"
        )));
    }
    let decided = console
        .app
        .escalations()
        .decide(&who.scope, &id, approve, Some(note.to_owned()))
        .await;
    match decided {
        Ok(e) => Ok(Redirect::to(&format!(
            "/console/?done={}&id={}",
            e.status.as_str(),
            urlencode(&e.id)
        ))
        .into_response()),
        Err(AppError::Conflict { .. }) => {
            // Lost a race (or was late): say plainly what happened instead.
            let member = who.scope.key().require::<Member>()?;
            let e = console.app.escalations().escalation(&member, &id)?;
            let message = html! {
                p.notice.error role="alert" #decision-lost {
                    "Your decision was not recorded: this call was already " (e.status.as_str())
                    @if let Some(by) = &e.decided_by { " by " (by) }
                    @if let Some(at) = e.decided_ms { " at " (layout::time(at)) }
                    "."
                }
            };
            Ok((
                StatusCode::CONFLICT,
                detail_page(&console, &who, &e, Some(message)),
            )
                .into_response())
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct HistoryQuery {
    status: Option<String>,
    action: Option<String>,
    by: Option<String>,
    agent: Option<String>,
    before: Option<u64>,
}

/// Decided and expired escalations, newest first, from the chain's resolution records.
pub(crate) async fn history(
    State(console): State<Console>,
    who: SignedIn,
    Query(q): Query<HistoryQuery>,
) -> Result<Markup, ConsoleError> {
    let filter = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let (status, action, by, agent) = (
        filter(&q.status),
        filter(&q.action),
        filter(&q.by),
        filter(&q.agent),
    );
    let audit = console.app.audit().clone();
    let scope = who.scope.clone();
    let (s2, a2, b2, g2) = (status.clone(), action.clone(), by.clone(), agent.clone());
    let page = tokio::task::spawn_blocking(move || {
        audit.scan_back(&scope, q.before, crate::LIST_SCAN, |r| {
            let b = &r.body;
            if b.kind != "escalation_resolved" {
                return Scan::Skip;
            }
            let detail: serde_json::Value = b
                .detail
                .as_deref()
                .and_then(|d| serde_json::from_str(d).ok())
                .unwrap_or_default();
            let matches = s2.as_deref().is_none_or(|s| detail["status"] == s)
                && a2.as_deref().is_none_or(|a| b.action.as_deref() == Some(a))
                && b2.as_deref().is_none_or(|w| b.actor.as_deref() == Some(w))
                && g2
                    .as_deref()
                    .is_none_or(|g| b.agent_id.as_deref() == Some(g));
            if matches { Scan::Take } else { Scan::Skip }
        })
    })
    .await
    .map_err(AppError::internal)??;
    let body = html! {
        h1 { "Decided and expired" }
        form.filters method="get" action="/console/escalations" {
            label { "Status "
                select name="status" {
                    @for (value, text) in [("", "any"), ("approved", "approved"), ("rejected", "rejected"), ("expired", "expired"), ("withdrawn", "withdrawn")] {
                        option value=(value) selected[status.as_deref().unwrap_or("") == value] { (text) }
                    }
                }
            }
            label { "Action " input name="action" value=[action.as_deref()]; }
            label { "Decided by " input name="by" value=[by.as_deref()]; }
            label { "Agent " input name="agent" value=[agent.as_deref()]; }
            button type="submit" { "Filter" }
        }
        @if page.records.is_empty() {
            p.empty { "No decided or expired calls match." }
        } @else {
            div.table-wrap { table.list {
                thead { tr { th { "When" } th { "Action" } th { "Agent" } th { "Status" } th { "By" } th { "Note" } } }
                tbody {
                    @for r in &page.records {
                        @let b = &r.body;
                        @let detail: serde_json::Value = b.detail.as_deref().and_then(|d| serde_json::from_str(d).ok()).unwrap_or_default();
                        tr {
                            td { (layout::time(b.timestamp_ms)) }
                            td { @if let Some(id) = &b.escalation_id {
                                a href=(format!("/console/escalations/{id}")) { (b.action.as_deref().unwrap_or("")) }
                            } }
                            td { (b.agent_id.as_deref().unwrap_or("")) }
                            td { span class=(format!("status {}", detail["status"].as_str().unwrap_or(""))) { (detail["status"].as_str().unwrap_or("")) } }
                            td { (b.actor.as_deref().unwrap_or("—")) }
                            td.note { (detail["note"].as_str().unwrap_or("")) }
                        }
                    }
                }
            } }
        }
        @if let Some(before) = page.next_before {
            p { a.more href=(more_link(&status, &action, &by, &agent, before)) { "Older →" } }
        }
    };
    Ok(layout::page("Decided", Some(&who), Nav::Decided, body))
}

fn more_link(
    status: &Option<String>,
    action: &Option<String>,
    by: &Option<String>,
    agent: &Option<String>,
    before: u64,
) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in [
        ("status", status),
        ("action", action),
        ("by", by),
        ("agent", agent),
    ] {
        if let Some(v) = v {
            q.append_pair(k, v);
        }
    }
    q.append_pair("before", &before.to_string());
    format!("/console/escalations?{}", q.finish())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn a_tenant_keeps_only_so_many_inboxes_open_and_a_closed_one_frees_its_place() {
        let streams = Arc::new(Streams::default());
        let mut open: Vec<OpenStream> = (0..MAX_STREAMS_PER_TENANT)
            .map(|_| streams.open("ten_a").unwrap())
            .collect();
        assert!(streams.open("ten_a").is_err());
        // Another tenant's inboxes are counted apart.
        let _other = streams.open("ten_b").unwrap();
        open.pop();
        let _again = streams.open("ten_a").unwrap();
    }
}

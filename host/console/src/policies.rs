//! Policies: the tenant's uploaded policies with the active one marked, the activation
//! history from the chain, and, for admins, activation (a roll back is activating an earlier
//! one) behind a confirmation page.

use axum::Form;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use writ_gateway::app::AppError;
use writ_gateway::service::audit::{Scan, ScanBounds};

use crate::Console;
use crate::error::ConsoleError;
use crate::layout::{self, Nav};
use crate::session::{CsrfForm, SignedIn, check_origin};

/// How much of the chain the activation history reads back.
const HISTORY_SCAN: ScanBounds = ScanBounds {
    take: 20,
    read: 100_000,
    read_bytes: 128 << 20,
};

/// The policies page.
pub(crate) async fn page(
    State(console): State<Console>,
    who: SignedIn,
) -> Result<Markup, ConsoleError> {
    let (mut list, active) = console.app.policies().list(&who.scope)?;
    list.sort_by_key(|p| std::cmp::Reverse(p.uploaded_ms));
    let audit = console.app.audit().clone();
    let scope = who.scope.clone();
    let history = tokio::task::spawn_blocking(move || {
        audit.scan_back(&scope, None, HISTORY_SCAN, |r| {
            if r.body.kind == "policy_activated" {
                Scan::Take
            } else {
                Scan::Skip
            }
        })
    })
    .await
    .map_err(AppError::internal)??;
    // The policy active before the current one: what a roll back returns to.
    let previous = history
        .records
        .get(1)
        .and_then(|r| r.body.policy_id.clone());
    let body = html! {
        h1 { "Policies" }
        @if list.is_empty() {
            p.empty { "No policy has been uploaded: every call is blocked until one is activated." }
        } @else {
            div.table-wrap { table.list #policies {
                thead { tr { th { "Name" } th { "Id" } th { "Size" } th { "Uploaded" } th { "State" } } }
                tbody {
                    @for p in &list {
                        @let is_active = active.as_deref() == Some(p.policy_id.as_str());
                        tr class=[is_active.then_some("active")] {
                            td { (p.name) }
                            td { (layout::short(&p.policy_id)) }
                            td.num { (p.size / 1024) " KiB" }
                            td { (layout::time(p.uploaded_ms)) }
                            td {
                                @if is_active {
                                    strong.active-mark { "Active" }
                                } @else if who.is_admin() {
                                    a.button href=(format!("/console/policies/{}/activate", p.policy_id)) {
                                        @if previous.as_deref() == Some(p.policy_id.as_str()) { "Roll back to this…" } @else { "Activate…" }
                                    }
                                } @else {
                                    span.muted { "inactive" }
                                }
                            }
                        }
                    }
                }
            } }
            @if !who.is_admin() {
                p.muted { "Only an admin key can activate a policy." }
            }
        }
        h2 { "Activation history" }
        @if history.records.is_empty() {
            p.empty { "No activation is recorded." }
        } @else {
            ol.timeline #activations {
                @for r in &history.records {
                    @let detail: serde_json::Value = r.body.detail.as_deref().and_then(|d| serde_json::from_str(d).ok()).unwrap_or_default();
                    li {
                        (layout::time(r.body.timestamp_ms)) " "
                        strong { (detail["name"].as_str().unwrap_or("?")) } " "
                        (layout::short(r.body.policy_id.as_deref().unwrap_or("")))
                        " activated by " (r.body.actor.as_deref().unwrap_or("?"))
                    }
                }
            }
        }
    };
    Ok(layout::page("Policies", Some(&who), Nav::Policies, body))
}

/// The confirmation step before an activation.
pub(crate) async fn confirm(
    State(console): State<Console>,
    who: SignedIn,
    Path(policy_id): Path<String>,
) -> Result<Markup, ConsoleError> {
    who.admin()?;
    let (list, active) = console.app.policies().list(&who.scope)?;
    let policy = list
        .into_iter()
        .find(|p| p.policy_id == policy_id)
        .ok_or(AppError::NotFound("policy"))?;
    let body = html! {
        p { a href="/console/policies" { "← Policies" } }
        h1 { "Activate " (policy.name) "?" }
        p { "Every call of this tenant will be decided by " strong { (policy.name) } " ("
            (layout::short(&policy.policy_id)) ") from the moment you confirm"
            @if let Some(active) = &active { ", instead of " (layout::short(active)) } ". "
            "The activation is recorded in the audit chain under your name." }
        form method="post" action=(format!("/console/policies/{}/activate", policy.policy_id)) {
            (layout::csrf(&who))
            div.buttons {
                button.approve type="submit" #confirm-activate { "Activate " (policy.name) }
                a.button href="/console/policies" { "Cancel" }
            }
        }
    };
    Ok(layout::page(
        "Activate policy",
        Some(&who),
        Nav::Policies,
        body,
    ))
}

/// Activates a policy (admins).
pub(crate) async fn activate(
    State(console): State<Console>,
    who: SignedIn,
    headers: HeaderMap,
    Path(policy_id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, ConsoleError> {
    check_origin(&headers, &console.config)?;
    who.check_csrf(&form.csrf)?;
    let admin = who.admin()?;
    console
        .app
        .policies()
        .activate_policy(&admin, &policy_id)
        .await?;
    Ok(Redirect::to("/console/policies").into_response())
}

//! The overview: decisions by outcome over the last hour and day, the actions most blocked and
//! escalated, what is waiting, and the usage counters of the current windows.

use std::collections::HashMap;

use axum::extract::State;
use maud::{Markup, html};
use writ_gateway::app::AppError;
use writ_gateway::app::EscalationStatus as Status;
use writ_gateway::page::Bounds;
use writ_gateway::service::audit::{Scan, ScanBounds};

use crate::Console;
use crate::chart::{self, Bar};
use crate::error::ConsoleError;
use crate::layout::{self, Nav};
use crate::session::SignedIn;

const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 24 * HOUR_MS;
/// How far back the summary reads: a day, or this many records if the day has more.
const SUMMARY_SCAN: ScanBounds = ScanBounds {
    take: usize::MAX,
    read: 200_000,
    read_bytes: 256 << 20,
};

/// What the last day's records add up to.
#[derive(Default)]
struct Summary {
    /// Per 5 minutes of the last hour, oldest first.
    hour: [[u64; 3]; 12],
    /// Per hour of the last day, oldest first.
    day: [[u64; 3]; 24],
    blocked: HashMap<String, u64>,
    escalated: HashMap<String, u64>,
    /// The read stopped at its bound before a day back.
    partial: bool,
}

impl Summary {
    fn add(&mut self, now: u64, ts: u64, outcome: &str, action: &str) {
        let k = match outcome {
            "ALLOW" => 0,
            "BLOCK" => 1,
            "ESCALATE" => 2,
            _ => return,
        };
        let age = now.saturating_sub(ts);
        if age < HOUR_MS {
            self.hour[11 - (age / (5 * 60_000)) as usize][k] += 1;
        }
        if age < DAY_MS {
            self.day[23 - (age / HOUR_MS) as usize][k] += 1;
            match k {
                1 => *self.blocked.entry(action.to_owned()).or_default() += 1,
                2 => *self.escalated.entry(action.to_owned()).or_default() += 1,
                _ => {}
            }
        }
    }
}

/// The overview page.
pub(crate) async fn page(
    State(console): State<Console>,
    who: SignedIn,
) -> Result<Markup, ConsoleError> {
    let now = console.app.clock().now_ms();
    let audit = console.app.audit().clone();
    let scope = who.scope.clone();
    let summary = tokio::task::spawn_blocking(move || {
        let mut summary = Summary::default();
        let page = audit.scan_back(&scope, None, SUMMARY_SCAN, |r| {
            let b = &r.body;
            if b.timestamp_ms.saturating_add(DAY_MS) <= now {
                return Scan::Stop;
            }
            // A call's decision: escalated calls are recorded as the escalation's opening.
            if b.kind == "decision" || b.kind == "escalation_opened" {
                summary.add(
                    now,
                    b.timestamp_ms,
                    b.outcome.as_deref().unwrap_or(""),
                    b.action.as_deref().unwrap_or(""),
                );
            }
            Scan::Skip
        })?;
        summary.partial = page.next_before.is_some();
        Ok::<_, AppError>(summary)
    })
    .await
    .map_err(AppError::internal)??;
    let pending = console.app.escalations().escalations(
        &who.scope,
        Some(Status::Pending),
        None,
        Bounds::new(1000),
    )?;
    let oldest = pending.escalations.iter().map(|e| e.opened_ms).min();
    let mut counters = console.app.audit().usage_now(&who.scope, now, 50)?;
    counters.sort_by(|a, b| b.value.total_cmp(&a.value));
    counters.truncate(20);

    let hour: Vec<Bar> = summary
        .hour
        .iter()
        .enumerate()
        .map(|(i, c)| Bar {
            label: format!("-{} min", (12 - i) * 5),
            counts: *c,
        })
        .collect();
    let day: Vec<Bar> = summary
        .day
        .iter()
        .enumerate()
        .map(|(i, c)| Bar {
            label: format!("-{} h", 24 - i),
            counts: *c,
        })
        .collect();
    let body = html! {
        h1 { "Overview" }
        section.tiles {
            div.tile #pending-count {
                span.big { (pending.escalations.len()) @if pending.next_after.is_some() { "+" } }
                span { "waiting for a decision" }
            }
            div.tile {
                span.big { @if let Some(o) = oldest { (layout::duration(now.saturating_sub(o))) } @else { "—" } }
                span { "oldest waiting" }
            }
        }
        @if summary.partial {
            p.notice.warn { "The last day has more records than the summary reads: the charts count the most recent 200,000." }
        }
        (chart::decisions("Decisions in the last hour (5-minute bars)", &hour))
        (chart::decisions("Decisions in the last day (hourly bars)", &day))
        div.columns {
            (top("Most blocked actions (day)", &summary.blocked))
            (top("Most escalated actions (day)", &summary.escalated))
        }
        section {
            h2 { "Usage counters" }
            p.muted { "The counters policies charge, in the current UTC hour and day and all time, largest first. \
                       The caps are in the policy's code: compare with the limits it enforces." }
            @if counters.is_empty() {
                p.empty { "No policy has charged a counter in these windows." }
            } @else {
                div.table-wrap { table.list {
                    thead { tr { th { "Counter" } th { "Window" } th { "Value" } } }
                    tbody { @for c in &counters { tr { td { code { (c.counter) } } td { (c.window) } td.num { (c.value) } } } }
                } }
            }
        }
    };
    Ok(layout::page("Overview", Some(&who), Nav::Overview, body))
}

fn top(title: &str, counts: &HashMap<String, u64>) -> Markup {
    let mut rows: Vec<(&String, &u64)> = counts.iter().collect();
    rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    rows.truncate(5);
    html! {
        section {
            h2 { (title) }
            @if rows.is_empty() {
                p.empty { "None." }
            } @else {
                ol.top { @for (action, n) in rows { li { code { (action) } " " span.num { (n) } } } }
            }
        }
    }
}

//! The page shell (navigation, who is signed in) and the small pieces every page uses: times,
//! JSON, the CSRF field. Everything interpolated is escaped by maud; nothing here marks
//! text as pre-escaped except fixed markup.

use axum::http::StatusCode;
use maud::{DOCTYPE, Markup, html};

use crate::session::SignedIn;

/// The pages in the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nav {
    Inbox,
    Decided,
    Audit,
    Overview,
    Policies,
    None,
}

/// Longest stretch of a JSON value shown inline; the rest is in the record and the export.
const JSON_SHOWN_BYTES: usize = 64 << 10;

/// A whole page.
pub(crate) fn page(title: &str, who: Option<&SignedIn>, nav: Nav, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="same-origin";
                title { (title) " · Writ" }
                link rel="stylesheet" href="/console/assets/console.css";
                script src="/console/assets/console.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/console/" { "Writ" }
                    @if let Some(who) = who {
                        nav aria-label="Console" {
                            (link("/console/", "Held calls", nav == Nav::Inbox))
                            (link("/console/escalations", "Decided", nav == Nav::Decided))
                            (link("/console/audit", "Audit", nav == Nav::Audit))
                            (link("/console/overview", "Overview", nav == Nav::Overview))
                            (link("/console/policies", "Policies", nav == Nav::Policies))
                        }
                        form.signout method="post" action="/console/signout" {
                            (csrf(who))
                            span.who {
                                (who.subject())
                                " · " (who.scope.key().role.as_str())
                            }
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main #main { (body) }
            }
        }
    }
}

fn link(href: &str, text: &str, current: bool) -> Markup {
    html! {
        @if current {
            a href=(href) aria-current="page" { (text) }
        } @else {
            a href=(href) { (text) }
        }
    }
}

/// The page an error is answered with.
pub(crate) fn error_page(status: StatusCode, message: &str) -> Markup {
    let title = status.canonical_reason().unwrap_or("Error");
    page(
        title,
        None,
        Nav::None,
        html! {
            section.notice.error role="alert" {
                h1 { (status.as_u16()) " " (title) }
                p { (message) }
                p { a href="/console/" { "Back to the console" } }
            }
        },
    )
}

/// The hidden CSRF field of a state-changing form.
pub(crate) fn csrf(who: &SignedIn) -> Markup {
    html! { input type="hidden" name="csrf" value=(who.csrf); }
}

/// A time: shown in UTC, and in the browser's time zone once the script runs.
pub(crate) fn time(ms: u64) -> Markup {
    let utc = utc(ms);
    html! { time datetime=(utc) data-ms=(ms) { (utc) } }
}

/// `ms` since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub(crate) fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil-from-days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A duration in words: `3 min 20 s`.
pub(crate) fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        3600..86_400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

/// JSON text, pretty-printed when it parses, in a block: escaped like any text, so markup in
/// an agent's arguments shows as the characters it is.
pub(crate) fn json(text: &str) -> Markup {
    let pretty = serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| text.to_owned());
    let (shown, cut) = if pretty.len() > JSON_SHOWN_BYTES {
        let mut end = JSON_SHOWN_BYTES;
        while !pretty.is_char_boundary(end) {
            end -= 1;
        }
        (&pretty[..end], pretty.len() - end)
    } else {
        (pretty.as_str(), 0)
    };
    html! {
        pre.json { code { (shown) } }
        @if cut > 0 {
            p.muted { "… " (cut) " more bytes: open the record or download the export for all of it." }
        }
    }
}

/// A short form of a long hash or id, whole in its title.
pub(crate) fn short(id: &str) -> Markup {
    let cut: String = id.chars().take(16).collect();
    html! {
        @if cut.len() < id.len() {
            code title=(id) { (cut) "…" }
        } @else {
            code { (id) }
        }
    }
}

/// An outcome as a badge.
pub(crate) fn outcome(outcome: &str) -> Markup {
    let class = match outcome {
        "ALLOW" => "badge allow",
        "BLOCK" => "badge block",
        "ESCALATE" => "badge escalate",
        _ => "badge",
    };
    html! { span class=(class) { (outcome) } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_written_in_utc() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_780_000_000_000), "2026-05-28T20:26:40Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn markup_in_json_is_escaped() {
        let out = json(r#"{"memo":"<script>alert(1)</script><img src=x onerror=alert(2)>"}"#)
            .into_string();
        assert!(!out.contains("<script>"), "{out}");
        assert!(!out.contains("<img"), "{out}");
        assert!(out.contains("&lt;script&gt;"), "{out}");
    }
}

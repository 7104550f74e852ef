//! Signing in and out. A reviewer or admin key is exchanged once for a session; agent and
//! operator keys are refused. Attempts are limited per client address and gateway-wide, so
//! keys cannot be guessed through the form any faster than through the API.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

use axum::Form;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use writ_gateway::app::Role;
use writ_gateway::clock::SharedClock;

use crate::error::ConsoleError;
use crate::layout::{self, Nav};
use crate::session::{CsrfForm, SignedIn, check_origin};
use crate::{Console, ConsoleConfig};

/// Client addresses tracked at once; past it, attempts from new addresses are refused until
/// the tracked ones' buckets refill.
const MAX_TRACKED: usize = 10_000;
/// Sign-in attempts per second gateway-wide.
const GLOBAL_PER_S: f64 = 20.0;
/// Longest key accepted (keys are about 50 characters).
const MAX_KEY_CHARS: usize = 256;

/// Token buckets of sign-in attempts.
pub(crate) struct Attempts {
    clock: SharedClock,
    burst: f64,
    refill_ms: f64,
    state: Mutex<State_>,
}

#[derive(Default)]
struct State_ {
    /// (tokens, last refill ms) per client address.
    by_addr: HashMap<IpAddr, (f64, u64)>,
    global: (f64, u64),
}

impl Attempts {
    pub(crate) fn new(clock: SharedClock, config: &ConsoleConfig) -> Self {
        let burst = f64::from(config.signin_burst.max(1));
        let now = clock.now_ms();
        Self {
            clock,
            burst,
            refill_ms: config.signin_refill.as_millis().max(1) as f64,
            state: Mutex::new(State_ {
                by_addr: HashMap::new(),
                global: (GLOBAL_PER_S, now),
            }),
        }
    }

    /// Takes an attempt for `addr`; when none is left, the seconds until one is.
    fn take(&self, addr: IpAddr) -> Result<(), u64> {
        let now = self.clock.now_ms();
        let mut state = self.state.lock().expect("sign-in attempts lock");
        let global_rate = GLOBAL_PER_S / 1000.0;
        let (g_tokens, g_last) = state.global;
        let g_tokens =
            (g_tokens + (now.saturating_sub(g_last) as f64) * global_rate).min(GLOBAL_PER_S);
        if g_tokens < 1.0 {
            state.global = (g_tokens, now);
            return Err(1);
        }
        if !state.by_addr.contains_key(&addr) && state.by_addr.len() >= MAX_TRACKED {
            let (burst, refill) = (self.burst, self.refill_ms);
            state
                .by_addr
                .retain(|_, (t, last)| *t + (now.saturating_sub(*last) as f64) / refill < burst);
            if state.by_addr.len() >= MAX_TRACKED {
                return Err((self.refill_ms / 1000.0).ceil() as u64);
            }
        }
        let (burst, refill) = (self.burst, self.refill_ms);
        let entry = state.by_addr.entry(addr).or_insert((burst, now));
        let tokens = (entry.0 + (now.saturating_sub(entry.1) as f64) / refill).min(burst);
        if tokens < 1.0 {
            *entry = (tokens, now);
            return Err((((1.0 - tokens) * refill) / 1000.0).ceil().max(1.0) as u64);
        }
        *entry = (tokens - 1.0, now);
        state.global = (g_tokens - 1.0, now);
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct SignInQuery {
    expired: Option<String>,
    next: Option<String>,
}

/// The sign-in page.
pub(crate) async fn page(Query(q): Query<SignInQuery>) -> Markup {
    let note = q
        .expired
        .is_some()
        .then_some("Your session has ended. Sign in again to continue.");
    form_page(StatusCode::OK, note, q.next.as_deref().and_then(safe_next)).1
}

fn form_page(
    status: StatusCode,
    message: Option<&str>,
    next: Option<&str>,
) -> (StatusCode, Markup) {
    let body = html! {
        section.signin {
            h1 { "Sign in to the Writ console" }
            p { "Paste a " strong { "reviewer" } " or " strong { "admin" } " key of your tenant. \
                 It is exchanged for a session on this gateway and is not kept by your browser." }
            @if let Some(message) = message {
                p.notice.error role="alert" #signin-error { (message) }
            }
            form method="post" action="/console/signin" {
                label for="key" { "API key" }
                input #key type="password" name="key" required autocomplete="off"
                    autocapitalize="off" spellcheck="false" maxlength=(MAX_KEY_CHARS);
                @if let Some(next) = next {
                    input type="hidden" name="next" value=(next);
                }
                button type="submit" { "Sign in" }
            }
        }
    };
    (status, layout::page("Sign in", None, Nav::None, body))
}

/// Where to go after signing in: only a console path of this origin.
fn safe_next(next: &str) -> Option<&str> {
    let ok = next.starts_with("/console/")
        && !next.contains("//")
        && !next.contains('\\')
        && next.len() <= 512
        && next.bytes().all(|b| b.is_ascii_graphic());
    ok.then_some(next)
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
// Missing fields are empty, so a forged form is refused by its token, not its shape.
#[serde(default)]
pub(crate) struct SignInForm {
    /// A reviewer or admin key.
    key: String,
    /// A console path to go to after signing in.
    next: Option<String>,
}

/// Exchanges a reviewer or admin key for a console session: 303 to the console with the
/// session cookie (HttpOnly, SameSite=Strict); 401 for other keys, 429 past the attempts
/// allowed, 403 from another origin.
#[utoipa::path(post, path = "/console/signin", tag = "console",
    request_body(content = SignInForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303, description = "Signed in: the session cookie is set"),
        (status = 401, description = "Not a reviewer or admin key", content_type = "text/html"),
        (status = 403, description = "From another origin", content_type = "text/html"),
        (status = 429, description = "Too many attempts from this address", content_type = "text/html")))]
pub(crate) async fn sign_in(
    State(console): State<Console>,
    parts: Parts,
    Form(form): Form<SignInForm>,
) -> Result<Response, ConsoleError> {
    check_origin(&parts.headers, &console.config)?;
    let addr = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
    let next = form.next.as_deref().and_then(safe_next);
    if let Err(retry_after) = console.signins.take(addr) {
        let (status, page) = form_page(
            StatusCode::TOO_MANY_REQUESTS,
            Some("Too many sign-in attempts. Wait a minute and try again."),
            next,
        );
        return Ok((
            status,
            [(header::RETRY_AFTER, retry_after.to_string())],
            page,
        )
            .into_response());
    }
    let refuse = |message: &str| {
        tracing::info!(%addr, reason = message, "console sign-in refused");
        form_page(StatusCode::UNAUTHORIZED, Some(message), next).into_response()
    };
    let secret = form.key.trim();
    if secret.is_empty() || secret.len() > MAX_KEY_CHARS {
        return Ok(refuse("That is not a valid key."));
    }
    let Some(key) = console.app.tenants().authenticate(secret) else {
        return Ok(refuse("That key is not valid, or it has been revoked."));
    };
    match key.role {
        Role::Reviewer | Role::Admin if key.tenant_id.is_some() => {}
        Role::Agent => {
            return Ok(refuse(
                "Agent keys cannot sign in: the console is for reviewers and admins.",
            ));
        }
        _ => {
            return Ok(refuse(
                "The operator key cannot sign in: the console shows one tenant. Use a \
                 reviewer or admin key of that tenant.",
            ));
        }
    }
    let started = console.sessions.start(&key);
    tracing::info!(key_id = %key.key_id, subject = %key.subject, "console sign-in");
    Ok((
        [(header::SET_COOKIE, started.cookie)],
        Redirect::to(next.unwrap_or("/console/")),
    )
        .into_response())
}

/// Ends the console session.
#[utoipa::path(post, path = "/console/signout", tag = "console",
    request_body(content = CsrfForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303, description = "Signed out: the cookie is cleared"),
        (status = 403, description = "Wrong form token or origin", content_type = "text/html")),
    security(("console_session" = [])))]
pub(crate) async fn sign_out(
    State(console): State<Console>,
    who: SignedIn,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Result<Response, ConsoleError> {
    check_origin(&headers, &console.config)?;
    who.check_csrf(&form.csrf)?;
    console.sessions.end(&headers);
    Ok((
        [(header::SET_COOKIE, console.sessions.cleared_cookie())],
        Redirect::to("/console/signin"),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use writ_gateway::clock::ManualClock;

    use super::*;

    #[test]
    fn an_address_gets_its_burst_then_one_attempt_per_refill() {
        let clock = ManualClock::new(1_000_000);
        let config = ConsoleConfig {
            signin_burst: 3,
            signin_refill: Duration::from_secs(6),
            ..ConsoleConfig::default()
        };
        let attempts = Attempts::new(clock.clone(), &config);
        let addr: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..3 {
            attempts.take(addr).unwrap();
        }
        assert_eq!(attempts.take(addr), Err(6));
        // Another address has its own bucket.
        attempts.take("127.0.0.2".parse().unwrap()).unwrap();
        clock.advance(6_000);
        attempts.take(addr).unwrap();
        assert!(attempts.take(addr).is_err());
    }

    #[test]
    fn only_console_paths_are_followed_after_sign_in() {
        assert_eq!(
            safe_next("/console/escalations/esc_1"),
            Some("/console/escalations/esc_1")
        );
        assert_eq!(safe_next("https://evil.example/"), None);
        assert_eq!(safe_next("//evil.example/console/"), None);
        assert_eq!(safe_next("/console//evil.example"), None);
        assert_eq!(safe_next("/console/\\evil"), None);
    }
}

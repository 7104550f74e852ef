//! The reviewer console: the pages people use to decide held calls and read their tenant's
//! audit chain, served by `writ serve` at `/console/` beside the API.
//!
//! Server-rendered HTML ([`maud`] escapes every value it interpolates), one stylesheet and one
//! small script, all embedded in the binary: no request leaves for another host. A reviewer
//! or admin signs in once with their key, which is exchanged for a server-side session
//! ([`session`]); the key itself is never kept. Every page takes its [`TenantScope`] from the
//! session's key, re-checked on each request, so the API's role matrix applies here too:
//! reviewers see and decide, admins also activate policies.
//!
//! [`TenantScope`]: writ_gateway::access::TenantScope

mod audit;
mod chart;
mod error;
mod inbox;
mod layout;
mod overview;
mod policies;
mod session;
mod signin;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;
use writ_gateway::app::App;
use writ_gateway::service::audit::ScanBounds;

pub use error::ConsoleError;
pub use session::Sessions;

/// How the console runs.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// The origin browsers reach the console at (`https://writ.example.com`), when a proxy
    /// terminates TLS in front of the gateway: cookies are then `Secure` and a state-changing
    /// request must come from this origin. Without it, the request's own `Host` is the origin.
    pub public_origin: Option<url::Url>,
    /// A session ends after this long without a request…
    pub idle_timeout: Duration,
    /// …and this long after sign-in, whatever its use.
    pub absolute_timeout: Duration,
    /// Sign-in attempts a client address may make in a burst…
    pub signin_burst: u32,
    /// …and one more each this often.
    pub signin_refill: Duration,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            public_origin: None,
            idle_timeout: Duration::from_secs(30 * 60),
            absolute_timeout: Duration::from_secs(12 * 3600),
            signin_burst: 10,
            signin_refill: Duration::from_secs(6),
        }
    }
}

/// What every console handler gets.
#[derive(Clone)]
pub(crate) struct Console {
    pub(crate) app: App,
    pub(crate) sessions: Arc<Sessions>,
    pub(crate) signins: Arc<signin::Attempts>,
    pub(crate) streams: Arc<inbox::Streams>,
    pub(crate) config: Arc<ConsoleConfig>,
    /// Cancelled when the gateway begins to shut down: event streams end on it.
    pub(crate) stopping: CancellationToken,
}

/// How far one page of a filtered list (decided calls, the audit chain) reads back.
pub(crate) const LIST_SCAN: ScanBounds = ScanBounds {
    take: 50,
    read: 20_000,
    read_bytes: 64 << 20,
};

/// Form bodies are a key or a note: small.
const FORM_BYTES: usize = 16 << 10;

/// The Content-Security-Policy of every console response: nothing from another origin, no
/// inline script or style.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
                   base-uri 'none'";

/// The console's API routes (its pages are not described).
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(signin::sign_in, signin::sign_out, inbox::stream, inbox::decide, audit::export),
    modifiers(&SessionCookie),
    tags((name = "console", description = "The reviewer console: sign-in sessions and the routes its pages use")),
)]
struct ConsoleDoc;

struct SessionCookie;

impl utoipa::Modify for SessionCookie {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme(
                "console_session",
                SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                    "writ_console",
                    "The console session from POST /console/signin (`__Host-writ_console` behind an https origin)",
                ))),
            );
        }
    }
}

/// The OpenAPI description of the console's API routes, for `/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi as _;
    ConsoleDoc::openapi()
}

/// The console's routes (`/` redirects to `/console/`), with its hardening headers.
pub fn router(app: App, config: ConsoleConfig, stopping: CancellationToken) -> Router {
    let state = Console {
        sessions: Arc::new(Sessions::new(app.clock().clone(), &config, app.store())),
        signins: Arc::new(signin::Attempts::new(app.clock().clone(), &config)),
        streams: Arc::default(),
        config: Arc::new(config),
        app,
        stopping,
    };
    Router::new()
        .route("/console/", get(inbox::page))
        .route("/console/signin", get(signin::page).post(signin::sign_in))
        .route("/console/signout", post(signin::sign_out))
        .route("/console/inbox/stream", get(inbox::stream))
        .route("/console/escalations", get(inbox::history))
        .route("/console/escalations/{id}", get(inbox::detail))
        .route("/console/escalations/{id}/decide", post(inbox::decide))
        .route("/console/audit", get(audit::page))
        .route("/console/audit/verify", post(audit::verify))
        .route("/console/audit/export", get(audit::export))
        .route("/console/audit/{event_id}", get(audit::record))
        .route("/console/sessions/{session_id}", get(audit::session))
        .route("/console/overview", get(overview::page))
        .route("/console/policies", get(policies::page))
        .route(
            "/console/policies/{policy_id}/activate",
            get(policies::confirm).post(policies::activate),
        )
        .route("/console/assets/console.css", get(assets::css))
        .route("/console/assets/console.js", get(assets::js))
        .route(
            "/console",
            get(|| async { Redirect::permanent("/console/") }),
        )
        .route("/console/{*rest}", get(|| async { ConsoleError::NoPage }))
        .route("/", get(|| async { Redirect::to("/console/") }))
        .layer(DefaultBodyLimit::max(FORM_BYTES))
        .layer(axum::middleware::map_response(harden))
        .with_state(state)
}

/// Adds the headers every console response carries; pages are never cached.
async fn harden(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let set = [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        // Not `no-referrer`: with it, Chromium sends `Origin: null` on the console's own forms.
        (header::REFERRER_POLICY, "same-origin"),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
        (
            HeaderName::from_static("cross-origin-resource-policy"),
            "same-origin",
        ),
        (
            HeaderName::from_static("permissions-policy"),
            "camera=(), microphone=(), geolocation=(), payment=()",
        ),
    ];
    for (name, value) in set {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// The embedded stylesheet and script.
mod assets {
    use super::*;

    const CSS: &str = include_str!("../assets/console.css");
    const JS: &str = include_str!("../assets/console.js");

    pub(crate) async fn css() -> impl IntoResponse {
        (
            [
                (header::CONTENT_TYPE, "text/css; charset=utf-8"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            CSS,
        )
    }

    pub(crate) async fn js() -> impl IntoResponse {
        (
            [
                (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            JS,
        )
    }
}

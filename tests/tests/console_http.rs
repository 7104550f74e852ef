//! The reviewer console's security properties over plain HTTP against a real gateway on
//! loopback: hardening headers, the session cookie, CSRF tokens, origin checks, the sign-in
//! rate limit and its refusals, roles, sign-out, tenant isolation, the live inbox stream, the
//! `next` parameter and escaping. The client follows no redirect and keeps no cookie jar: every test
//! sees exactly what the server sends, and sends back by hand what a browser would.

use std::net::IpAddr;
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{Client, Method, RequestBuilder};
use serde_json::{Value, json};
use writ_gateway::clock::ManualClock;
use writ_tests::artifacts;
use writ_tests::gateway::{TestGateway, TestTenant};

/// Longest wait for any one answer or event.
const WAIT: Duration = Duration::from_secs(15);
/// The name of the session cookie without a public https origin.
const COOKIE: &str = "writ_console";

/// A gateway whose clock stands still: no held call expires and no sign-in attempt refills
/// while a test runs, however slowly.
async fn gateway() -> TestGateway {
    TestGateway::start_with_clock(ManualClock::starting_now()).await
}

/// A client as a browser without a cookie jar: no redirects followed, no proxy.
fn client_from(local: Option<IpAddr>) -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .local_address(local)
        .build()
        .expect("an HTTP client")
}

/// What the server answered: status, headers and the whole body.
struct Reply {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("an ASCII header"))
    }

    /// The `Location` of a redirect.
    fn location(&self) -> &str {
        self.header("location")
            .unwrap_or_else(|| panic!("no Location on a {} answer", self.status))
    }

    /// The one `Set-Cookie` header, if any.
    fn set_cookie(&self) -> Option<&str> {
        let all: Vec<_> = self.headers.get_all("set-cookie").iter().collect();
        assert!(all.len() <= 1, "more than one Set-Cookie: {all:?}");
        all.first().map(|v| v.to_str().expect("an ASCII cookie"))
    }

    fn content_type(&self) -> &str {
        self.header("content-type").unwrap_or("")
    }
}

/// Sends `request` and reads the whole answer, within [`WAIT`].
async fn reply(request: RequestBuilder) -> Reply {
    tokio::time::timeout(WAIT, async {
        let r = request.send().await.expect("request sent");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.text().await.expect("a body");
        Reply {
            status,
            headers,
            body,
        }
    })
    .await
    .expect("an answer in time")
}

/// A signed-in browser: the `name=value` pair it sends in `Cookie`.
#[derive(Debug, Clone)]
struct Session {
    cookie: String,
}

/// The console of one gateway, as a browser on its own origin reaches it.
struct Console<'a> {
    gw: &'a TestGateway,
    http: Client,
    /// The gateway's origin, `http://127.0.0.1:PORT`.
    origin: String,
}

impl<'a> Console<'a> {
    fn new(gw: &'a TestGateway) -> Self {
        Self::from_address(gw, None)
    }

    /// A console reached from the local address `local`.
    fn from_address(gw: &'a TestGateway, local: Option<IpAddr>) -> Self {
        Self {
            gw,
            http: client_from(local),
            origin: gw.url(""),
        }
    }

    /// `GET path`, with the session's cookie if given.
    async fn get(&self, path: &str, session: Option<&Session>) -> Reply {
        let mut r = self.http.get(self.gw.url(path));
        if let Some(s) = session {
            r = r.header("cookie", &s.cookie);
        }
        reply(r).await
    }

    /// `POST path` with `form`, from the console's own origin.
    async fn post(&self, path: &str, session: Option<&Session>, form: &[(&str, &str)]) -> Reply {
        let origin = self.origin.clone();
        self.post_with(path, session, &[("origin", &origin)], form)
            .await
    }

    /// `POST path` with `form` and exactly the `headers` given (no `Origin` unless there).
    async fn post_with(
        &self,
        path: &str,
        session: Option<&Session>,
        headers: &[(&str, &str)],
        form: &[(&str, &str)],
    ) -> Reply {
        let mut r = self.http.post(self.gw.url(path)).form(form);
        if let Some(s) = session {
            r = r.header("cookie", &s.cookie);
        }
        for (name, value) in headers {
            r = r.header(*name, *value);
        }
        reply(r).await
    }

    /// Signs in with `key` through the form; asserts the redirect and the cookie.
    async fn sign_in(&self, key: &str) -> Session {
        let r = self.post("/console/signin", None, &[("key", key)]).await;
        assert_eq!(r.status, 303, "sign-in refused: {}", r.body);
        Session {
            cookie: cookie_pair(r.set_cookie().expect("a session cookie")).to_owned(),
        }
    }

    /// The session's CSRF token, as its pages carry it.
    async fn csrf(&self, session: &Session) -> String {
        let page = self.get("/console/audit", Some(session)).await;
        assert_eq!(page.status, 200, "{}", page.body);
        csrf_of(&page.body)
    }
}

/// The `name=value` part of a `Set-Cookie` value.
fn cookie_pair(set_cookie: &str) -> &str {
    set_cookie.split(';').next().unwrap().trim()
}

/// The attributes of a `Set-Cookie` value after its `name=value`, trimmed.
fn cookie_attributes(set_cookie: &str) -> Vec<&str> {
    set_cookie.split(';').skip(1).map(str::trim).collect()
}

/// The CSRF token in a page's hidden input.
fn csrf_of(html: &str) -> String {
    let at = html
        .find(r#"name="csrf" value=""#)
        .unwrap_or_else(|| panic!("no CSRF field in {html}"));
    let rest = &html[at + r#"name="csrf" value=""#.len()..];
    let token = &rest[..rest.find('"').unwrap()];
    assert!(!token.is_empty(), "an empty CSRF token");
    token.to_owned()
}

/// The escalation's status through the API.
async fn escalation_status(gw: &TestGateway, t: &TestTenant, id: &str) -> String {
    let (status, e) = gw
        .call(
            Method::GET,
            &format!("/v1/escalations/{id}"),
            Some(&t.reviewer),
            None,
        )
        .await;
    assert_eq!(status, 200, "{e}");
    e["status"].as_str().unwrap().to_owned()
}

/// An agent's payment over the limit, answered at once (`wait=0`): held, pending a decision.
/// Returns the escalation's id and the event id of the decision record.
async fn held_payment(gw: &TestGateway, t: &TestTenant, session: &str) -> (String, String) {
    let (status, answer) = gw
        .execute(
            &t.agent,
            session,
            "payments.initiate",
            json!({"amount": 800, "currency": "GBP", "recipient_id": "r"}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["decision"], "ESCALATE", "{answer}");
    (
        answer["escalation_id"].as_str().unwrap().to_owned(),
        answer["event_id"].as_str().unwrap().to_owned(),
    )
}

/// The tenant's active policy id through the API.
async fn active_policy(gw: &TestGateway, t: &TestTenant) -> Value {
    let (status, list) = gw
        .call(Method::GET, "/v1/policies", Some(&t.admin), None)
        .await;
    assert_eq!(status, 200, "{list}");
    list["active_policy_id"].clone()
}

/// Asserts the headers every console response carries; `cache` is the Cache-Control
/// expected.
fn assert_hardened(r: &Reply, what: &str, cache: &str) {
    let csp = r
        .header("content-security-policy")
        .unwrap_or_else(|| panic!("{what}: no Content-Security-Policy"));
    assert!(
        csp.starts_with("default-src 'none'"),
        "{what}: CSP does not start with default-src 'none': {csp}"
    );
    assert!(!csp.contains("unsafe-"), "{what}: CSP relaxes: {csp}");
    let directives: Vec<(&str, Vec<&str>)> = csp
        .split(';')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| {
            let mut words = d.split_whitespace();
            (words.next().unwrap(), words.collect())
        })
        .collect();
    assert!(
        directives.contains(&("frame-ancestors", vec!["'none'"])),
        "{what}: no frame-ancestors 'none': {csp}"
    );
    // Nothing from another origin, no scheme or wildcard source.
    for (name, sources) in &directives {
        for s in sources {
            assert!(
                matches!(*s, "'none'" | "'self'"),
                "{what}: {name} allows {s}: {csp}"
            );
        }
    }
    for (name, want) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "same-origin"),
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-resource-policy", "same-origin"),
        ("cache-control", cache),
    ] {
        assert_eq!(r.header(name), Some(want), "{what}: {name}");
    }
}

/// Asserts that a page runs no inline script and has no inline style or handler, so the CSP
/// costs it nothing.
fn assert_no_inline_code(html: &str, what: &str) {
    for (at, _) in html.match_indices("<script") {
        assert!(
            html[at..].starts_with("<script src="),
            "{what}: an inline script at {at}: {html}"
        );
    }
    for attribute in [
        " style=",
        " onclick=",
        " onload=",
        " onerror=",
        " onsubmit=",
    ] {
        assert!(!html.contains(attribute), "{what}: {attribute} in {html}");
    }
}

#[tokio::test]
async fn every_console_response_carries_the_hardening_headers() {
    let gw = gateway().await;
    let t = gw.tenant("acme", Some(artifacts::PAYMENTS_LIMITS)).await;
    let c = Console::new(&gw);
    let session = c.sign_in(&t.reviewer).await;

    let root = c.get("/", None).await;
    assert_eq!(root.status, 303);
    assert_eq!(root.location(), "/console/");
    assert_hardened(&root, "GET /", "no-store");

    let signed_out = c.get("/console/", None).await;
    assert_eq!(signed_out.status, 303);
    assert!(
        signed_out.location().starts_with("/console/signin"),
        "{}",
        signed_out.location()
    );
    assert_hardened(&signed_out, "GET /console/ signed out", "no-store");

    let signin = c.get("/console/signin", None).await;
    assert_eq!(signin.status, 200);
    assert!(signin.content_type().starts_with("text/html"));
    assert_hardened(&signin, "the sign-in page", "no-store");
    assert_no_inline_code(&signin.body, "the sign-in page");

    for path in ["/console/", "/console/audit", "/console/policies"] {
        let page = c.get(path, Some(&session)).await;
        assert_eq!(page.status, 200, "{path}: {}", page.body);
        assert!(page.content_type().starts_with("text/html"), "{path}");
        assert_hardened(&page, path, "no-store");
        assert_no_inline_code(&page.body, path);
    }

    for session in [None, Some(&session)] {
        let missing = c.get("/console/nope", session).await;
        assert_eq!(missing.status, 404, "{}", missing.body);
        assert!(missing.content_type().starts_with("text/html"));
        assert!(missing.body.contains("404"), "{}", missing.body);
        assert_hardened(&missing, "a missing page", "no-store");
    }

    let css = c.get("/console/assets/console.css", None).await;
    assert_eq!(css.status, 200);
    assert_eq!(css.content_type(), "text/css; charset=utf-8");
    assert_hardened(&css, "the stylesheet", "no-cache");
    let js = c.get("/console/assets/console.js", None).await;
    assert_eq!(js.status, 200);
    assert_eq!(js.content_type(), "text/javascript; charset=utf-8");
    assert_hardened(&js, "the script", "no-cache");

    let forged = c
        .post_with(
            "/console/signin",
            None,
            &[("origin", "http://evil.example")],
            &[("key", &t.reviewer)],
        )
        .await;
    assert_eq!(forged.status, 403, "{}", forged.body);
    assert!(forged.content_type().starts_with("text/html"));
    assert_hardened(&forged, "a refused forged post", "no-store");

    // A method a console path does not take is refused with the same headers.
    let wrong_method = c.post("/console/audit", Some(&session), &[]).await;
    assert_eq!(wrong_method.status, 405);
    assert_hardened(&wrong_method, "POST /console/audit", "no-store");
}

#[tokio::test]
async fn the_session_cookie_is_http_only_strict_and_random_and_secure_behind_a_public_https_origin()
{
    let gw = gateway().await;
    let t = gw.tenant("acme", Some(artifacts::PAYMENTS_LIMITS)).await;
    let c = Console::new(&gw);

    let r = c
        .post("/console/signin", None, &[("key", &t.reviewer)])
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let set = r.set_cookie().expect("a session cookie").to_owned();
    let (name, id) = cookie_pair(&set).split_once('=').unwrap();
    assert_eq!(name, COOKIE, "{set}");
    assert_eq!(id.len(), 64, "{set}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{set}");
    let attributes = cookie_attributes(&set);
    for want in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(attributes.contains(&want), "no {want}: {set}");
    }
    assert!(
        !attributes
            .iter()
            .any(|a| a.eq_ignore_ascii_case("secure")
                || a.to_ascii_lowercase().starts_with("domain")),
        "{set}"
    );
    // A browser session's cookie: it outlives no browser.
    assert!(
        !attributes
            .iter()
            .any(|a| a.starts_with("Max-Age") || a.starts_with("Expires")),
        "{set}"
    );
    assert!(
        !set.contains(&t.reviewer),
        "the key is in the cookie: {set}"
    );
    // Nor is any sizeable piece of it.
    for piece in t.reviewer.as_bytes().windows(12) {
        assert!(!set.contains(std::str::from_utf8(piece).unwrap()), "{set}");
    }

    let first = Session {
        cookie: cookie_pair(&set).to_owned(),
    };
    let second = c.sign_in(&t.reviewer).await;
    assert_ne!(
        first.cookie, second.cookie,
        "a second sign-in reused the id"
    );
    for s in [&first, &second] {
        assert_eq!(c.get("/console/", Some(s)).await.status, 200);
    }
    // Each session has its own CSRF token.
    assert_ne!(c.csrf(&first).await, c.csrf(&second).await);

    // A cookie planted before sign-in is not adopted: the sign-in sets a fresh id, and the
    // planted one is still no session.
    let planted = format!("{COOKIE}={}", "ab".repeat(32));
    let r = c
        .post_with(
            "/console/signin",
            Some(&Session {
                cookie: planted.clone(),
            }),
            &[("origin", &c.origin)],
            &[("key", &t.reviewer)],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let fresh = cookie_pair(r.set_cookie().expect("a session cookie")).to_owned();
    assert_ne!(fresh, planted);
    let planted = Session { cookie: planted };
    assert_eq!(c.get("/console/", Some(&planted)).await.status, 303);

    // The session cookie is no API credential.
    let api = reply(
        c.http
            .get(gw.url("/v1/escalations/pending"))
            .header("cookie", &first.cookie),
    )
    .await;
    assert_eq!(api.status, 401, "{}", api.body);

    // Behind a proxy terminating TLS for https://writ.example.com.
    let dir = tempfile::tempdir().unwrap();
    let public = TestGateway::start_with_console(
        TestGateway::config(dir.path()),
        writ_console::ConsoleConfig {
            public_origin: Some("https://writ.example.com".parse().unwrap()),
            ..Default::default()
        },
    )
    .await;
    let pt = public
        .tenant("acme", Some(artifacts::PAYMENTS_LIMITS))
        .await;
    let pc = Console::new(&public);
    let own_host = pc
        .post("/console/signin", None, &[("key", &pt.reviewer)])
        .await;
    assert_eq!(
        own_host.status, 403,
        "the gateway's own http origin is not the public one: {}",
        own_host.body
    );
    assert_eq!(own_host.set_cookie(), None);

    let r = pc
        .post_with(
            "/console/signin",
            None,
            &[("origin", "https://writ.example.com")],
            &[("key", &pt.reviewer)],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.location(), "/console/");
    let set = r.set_cookie().expect("a session cookie").to_owned();
    let (name, id) = cookie_pair(&set).split_once('=').unwrap();
    assert_eq!(name, "__Host-writ_console", "{set}");
    let attributes = cookie_attributes(&set);
    for want in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(attributes.contains(&want), "no {want}: {set}");
    }
    // `__Host-` cookies must have no Domain.
    assert!(
        !attributes
            .iter()
            .any(|a| a.to_ascii_lowercase().starts_with("domain")),
        "{set}"
    );
    let session = Session {
        cookie: cookie_pair(&set).to_owned(),
    };
    assert_eq!(pc.get("/console/", Some(&session)).await.status, 200);
    // The same id under the unprefixed name is no session.
    let unprefixed = Session {
        cookie: format!("{COOKIE}={id}"),
    };
    assert_eq!(pc.get("/console/", Some(&unprefixed)).await.status, 303);
}

/// A held call and a reviewer signed in to decide it.
struct Held<'a> {
    c: Console<'a>,
    t: TestTenant,
    session: Session,
    token: String,
    id: String,
}

async fn held_and_signed_in(gw: &TestGateway) -> Held<'_> {
    let t = gw.tenant("acme", Some(artifacts::PAYMENTS_LIMITS)).await;
    let (id, _) = held_payment(gw, &t, "s").await;
    let c = Console::new(gw);
    let session = c.sign_in(&t.reviewer).await;
    let token = c.csrf(&session).await;
    Held {
        c,
        t,
        session,
        token,
        id,
    }
}

#[tokio::test]
async fn a_decision_without_the_sessions_csrf_token_is_refused_and_changes_nothing() {
    let gw = gateway().await;
    let h = held_and_signed_in(&gw).await;
    let decide = format!("/console/escalations/{}/decide", h.id);
    let other_session = h.c.sign_in(&h.t.reviewer).await;
    let others_token = h.c.csrf(&other_session).await;
    assert_ne!(others_token, h.token);

    let upper = h.token.to_uppercase();
    let wrong_tokens: [(&str, Option<&str>); 6] = [
        ("no csrf field", None),
        ("an empty token", Some("")),
        ("a made-up token", Some("0000000000000000")),
        ("the token cut short", Some(&h.token[..h.token.len() - 1])),
        ("the token in upper case", Some(&upper)),
        ("another session's token", Some(&others_token)),
    ];
    for (what, token) in wrong_tokens {
        // (Hex of 32 random bytes without a letter, which upper case leaves alone: 2^-40.)
        if token == Some(h.token.as_str()) {
            continue;
        }
        let mut form = vec![("decision", "approve"), ("note", "x")];
        if let Some(token) = token {
            form.push(("csrf", token));
        }
        let r = h.c.post(&decide, Some(&h.session), &form).await;
        assert_eq!(r.status, 403, "{what}: {}", r.body);
        assert!(
            r.body.contains("did not come from a console page"),
            "{what}"
        );
        assert_eq!(
            escalation_status(&gw, &h.t, &h.id).await,
            "pending",
            "{what}"
        );
    }

    let r =
        h.c.post(
            &decide,
            Some(&h.session),
            &[("csrf", &h.token), ("decision", "approve"), ("note", "x")],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.location(), format!("/console/?done=approved&id={}", h.id));
    assert_eq!(escalation_status(&gw, &h.t, &h.id).await, "approved");
}

#[tokio::test]
async fn a_post_from_another_origin_is_refused_even_with_the_cookie_and_the_token() {
    let gw = gateway().await;
    let h = held_and_signed_in(&gw).await;
    let decide = format!("/console/escalations/{}/decide", h.id);
    let form = [
        ("csrf", h.token.as_str()),
        ("decision", "approve"),
        ("note", "forged"),
    ];
    let other_port = format!("http://{}:{}", gw.addr.ip(), gw.addr.port().wrapping_add(1));
    let forgeries: [&[(&str, &str)]; 6] = [
        &[("origin", "http://evil.example")],
        &[("origin", "null")],
        &[("origin", &other_port)],
        &[("origin", "https://127.0.0.1")],
        &[("sec-fetch-site", "cross-site")],
        &[("sec-fetch-site", "same-site")],
    ];
    for headers in forgeries {
        let r =
            h.c.post_with(&decide, Some(&h.session), headers, &form)
                .await;
        assert_eq!(r.status, 403, "{headers:?}: {}", r.body);
        assert_eq!(escalation_status(&gw, &h.t, &h.id).await, "pending");
    }
    // Sign-out from another origin does not end the session either.
    let r =
        h.c.post_with(
            "/console/signout",
            Some(&h.session),
            &[("origin", "http://evil.example")],
            &[("csrf", &h.token)],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.set_cookie(), None);
    assert_eq!(h.c.get("/console/", Some(&h.session)).await.status, 200);

    // Signing in from another origin: refused, and no cookie.
    for headers in [
        &[("origin", "http://evil.example")][..],
        &[("sec-fetch-site", "cross-site")][..],
    ] {
        let r =
            h.c.post_with("/console/signin", None, headers, &[("key", &h.t.reviewer)])
                .await;
        assert_eq!(r.status, 403, "{headers:?}: {}", r.body);
        assert_eq!(r.set_cookie(), None, "{headers:?}");
    }

    // The very same request from the console's own origin is accepted.
    let r =
        h.c.post_with(
            &decide,
            Some(&h.session),
            &[("origin", &h.c.origin), ("sec-fetch-site", "same-origin")],
            &form,
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(escalation_status(&gw, &h.t, &h.id).await, "approved");
}

#[tokio::test]
async fn sign_in_attempts_are_rate_limited_per_client_address_right_key_or_wrong() {
    // The gateway's clock stands still unless advanced.
    let clock = ManualClock::starting_now();
    let gw = TestGateway::start_with_clock(clock.clone()).await;
    let t = gw.tenant("acme", Some(artifacts::PAYMENTS_LIMITS)).await;
    let c = Console::new(&gw);
    let defaults = writ_console::ConsoleConfig::default();
    let (burst, refill) = (defaults.signin_burst, defaults.signin_refill);
    assert_eq!((burst, refill.as_secs()), (10, 6));
    for i in 0..burst {
        let (key, want) = if i % 2 == 0 {
            (t.reviewer.as_str(), 303)
        } else {
            ("wk_live_not_a_key", 401)
        };
        let r = c.post("/console/signin", None, &[("key", key)]).await;
        assert_eq!(r.status, want, "attempt {i}: {}", r.body);
    }
    let refused = async |key: &str| {
        let r = c.post("/console/signin", None, &[("key", key)]).await;
        assert_eq!(r.status, 429, "{}", r.body);
        assert_eq!(r.header("retry-after"), Some("6"), "one attempt per refill");
        assert_eq!(r.set_cookie(), None, "a cookie on a 429");
        assert!(r.body.contains("Too many sign-in attempts"), "{}", r.body);
    };
    for key in [t.reviewer.as_str(), "wk_live_not_a_key", t.admin.as_str()] {
        refused(key).await;
    }

    // Another client address has its own attempts.
    let elsewhere = Console::from_address(&gw, Some("127.0.0.2".parse().unwrap()));
    let session = elsewhere.sign_in(&t.reviewer).await;
    assert_eq!(elsewhere.get("/console/", Some(&session)).await.status, 200);

    // One more attempt each refill.
    clock.advance(refill.as_millis() as u64);
    c.sign_in(&t.reviewer).await;
    refused(&t.reviewer).await;
}

#[tokio::test]
async fn only_reviewer_and_admin_keys_sign_in_and_bad_bodies_are_refused_without_a_server_error() {
    let gw = gateway().await;
    let t = gw.tenant("acme", Some(artifacts::PAYMENTS_LIMITS)).await;
    let c = Console::new(&gw);
    let long = "k".repeat(10_000);
    for (what, key, says) in [
        (
            "an agent key",
            t.agent.as_str(),
            "Agent keys cannot sign in",
        ),
        (
            "the operator key",
            gw.operator_key.as_str(),
            "The operator key cannot sign in",
        ),
        ("a wrong key", "wk_live_not_a_key", "not valid"),
        ("an empty key", "", "not a valid key"),
        ("a 10 000 character key", long.as_str(), "not a valid key"),
    ] {
        let r = c.post("/console/signin", None, &[("key", key)]).await;
        assert_eq!(r.status, 401, "{what}: {}", r.body);
        assert_eq!(r.set_cookie(), None, "{what}");
        assert!(r.body.contains(says), "{what}: {}", r.body);
        if !key.is_empty() {
            assert!(!r.body.contains(key), "{what}: the page repeats the key");
        }
    }
    // The refused keys got no session: the console still sends to the sign-in page.
    assert_eq!(c.get("/console/", None).await.status, 303);

    let big = "k".repeat(17 << 10);
    let r = c.post("/console/signin", None, &[("key", &big)]).await;
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(r.set_cookie(), None);

    let session = c.sign_in(&t.reviewer).await;
    let token = c.csrf(&session).await;
    let bodies: [(&str, Option<&str>, Vec<u8>); 6] = [
        (
            "JSON",
            Some("application/json"),
            serde_json::to_vec(&json!({"key": t.reviewer})).unwrap(),
        ),
        (
            "no content type",
            None,
            format!("key={}", t.reviewer).into_bytes(),
        ),
        ("plain text", Some("text/plain"), b"key=x".to_vec()),
        (
            "multipart",
            Some("multipart/form-data; boundary=x"),
            b"--x\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\nk\r\n--x--\r\n".to_vec(),
        ),
        (
            "bytes that are not UTF-8",
            Some("application/x-www-form-urlencoded"),
            vec![0xff, 0xfe, b'=', 0x80, b'&', 0xc3],
        ),
        (
            "the key twice",
            Some("application/x-www-form-urlencoded"),
            b"key=a&key=b".to_vec(),
        ),
    ];
    for (what, content_type, body) in bodies {
        for (path, session) in [
            ("/console/signin", None),
            ("/console/signout", Some(&session)),
        ] {
            let mut r = c
                .http
                .post(gw.url(path))
                .header("origin", &c.origin)
                .body(body.clone());
            if let Some(ct) = content_type {
                r = r.header("content-type", ct);
            }
            if let Some(s) = session {
                r = r.header("cookie", &s.cookie);
            }
            let r = reply(r).await;
            assert!(
                (400..500).contains(&r.status),
                "{what} to {path}: {} {}",
                r.status,
                r.body
            );
            assert_eq!(r.set_cookie(), None, "{what} to {path}");
        }
    }
    // None of that ended the session or disturbed the gateway.
    assert_eq!(c.get("/console/", Some(&session)).await.status, 200);
    assert_eq!(c.csrf(&session).await, token);
}

#[tokio::test]
async fn reviewers_see_policies_but_only_admins_activate_them() {
    let gw = gateway().await;
    let t = gw.tenant("acme", Some(artifacts::PAYMENTS_LIMITS)).await;
    let (status, uploaded) = gw
        .upload(
            &t.admin,
            "allow-all",
            writ_tests::component(artifacts::ALLOW_ALL),
            false,
        )
        .await;
    assert_eq!(status, 201, "{uploaded}");
    let allow_all = uploaded["policy_id"].as_str().unwrap().to_owned();
    let before = active_policy(&gw, &t).await;
    assert!(
        before.is_string() && before != allow_all.as_str(),
        "{before}"
    );
    let activate = format!("/console/policies/{allow_all}/activate");
    let c = Console::new(&gw);

    let reviewer = c.sign_in(&t.reviewer).await;
    let list = c.get("/console/policies", Some(&reviewer)).await;
    assert_eq!(list.status, 200);
    assert!(list.body.contains("allow-all"), "{}", list.body);
    assert!(!list.body.contains(&activate), "{}", list.body);
    let confirm = c.get(&activate, Some(&reviewer)).await;
    assert_eq!(confirm.status, 403, "{}", confirm.body);
    let token = c.csrf(&reviewer).await;
    let r = c
        .post(&activate, Some(&reviewer), &[("csrf", &token)])
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(active_policy(&gw, &t).await, before);

    let admin = c.sign_in(&t.admin).await;
    let list = c.get("/console/policies", Some(&admin)).await;
    assert!(list.body.contains(&activate), "{}", list.body);
    let confirm = c.get(&activate, Some(&admin)).await;
    assert_eq!(confirm.status, 200, "{}", confirm.body);
    let token = csrf_of(&confirm.body);
    // The admin's post needs the admin's session's token too.
    let reviewers_token = c.csrf(&reviewer).await;
    let r = c
        .post(&activate, Some(&admin), &[("csrf", &reviewers_token)])
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(active_policy(&gw, &t).await, before);

    let r = c.post(&activate, Some(&admin), &[("csrf", &token)]).await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.location(), "/console/policies");
    assert_eq!(active_policy(&gw, &t).await, allow_all.as_str());
}

#[tokio::test]
async fn signing_out_ends_the_session_and_clears_the_cookie() {
    let gw = gateway().await;
    let h = held_and_signed_in(&gw).await;
    let other = h.c.sign_in(&h.t.reviewer).await;

    // Without the token, sign-out is refused and the session lives on.
    let r = h.c.post("/console/signout", Some(&h.session), &[]).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.set_cookie(), None);
    assert_eq!(h.c.get("/console/", Some(&h.session)).await.status, 200);

    let r =
        h.c.post("/console/signout", Some(&h.session), &[("csrf", &h.token)])
            .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.location(), "/console/signin");
    let cleared = r.set_cookie().expect("the cookie cleared");
    assert_eq!(cookie_pair(cleared), format!("{COOKIE}="), "{cleared}");
    let attributes = cookie_attributes(cleared);
    for want in ["Max-Age=0", "Path=/", "HttpOnly", "SameSite=Strict"] {
        assert!(attributes.contains(&want), "no {want}: {cleared}");
    }

    // The old cookie is no session any more: not for pages, not for the stream, not for
    // decisions (even with its old token).
    let page = h.c.get("/console/", Some(&h.session)).await;
    assert_eq!(page.status, 303);
    assert!(
        page.location().starts_with("/console/signin?expired=1"),
        "{}",
        page.location()
    );
    let stream = h.c.get("/console/inbox/stream", Some(&h.session)).await;
    assert_eq!(stream.status, 303);
    let r =
        h.c.post(
            &format!("/console/escalations/{}/decide", h.id),
            Some(&h.session),
            &[("csrf", &h.token), ("decision", "approve"), ("note", "x")],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(r.location().starts_with("/console/signin"));
    assert_eq!(escalation_status(&gw, &h.t, &h.id).await, "pending");
    // Signing out again with the ended session changes nothing either.
    let r =
        h.c.post("/console/signout", Some(&h.session), &[("csrf", &h.token)])
            .await;
    assert_eq!(r.status, 303);
    assert!(r.location().starts_with("/console/signin?"));

    // Only that session ended: the same key's other one lives on.
    assert_eq!(h.c.get("/console/", Some(&other)).await.status, 200);
}

#[tokio::test]
async fn one_tenants_reviewer_never_sees_another_tenants_escalations_or_records() {
    let gw = gateway().await;
    let a = gw.tenant("acme", Some(artifacts::PAYMENTS_LIMITS)).await;
    let b = gw.tenant("globex", Some(artifacts::PAYMENTS_LIMITS)).await;
    let (a_escalation, a_event) = held_payment(&gw, &a, "s-acme").await;
    let (b_escalation, b_event) = held_payment(&gw, &b, "s-globex").await;
    let c = Console::new(&gw);
    let a_session = c.sign_in(&a.reviewer).await;
    let b_session = c.sign_in(&b.reviewer).await;

    // Each sees its own: the pages exist and show them.
    for (session, escalation, event, session_id) in [
        (&a_session, &a_escalation, &a_event, "s-acme"),
        (&b_session, &b_escalation, &b_event, "s-globex"),
    ] {
        let inbox = c.get("/console/", Some(session)).await;
        assert!(inbox.body.contains(escalation.as_str()), "{}", inbox.body);
        let page = c
            .get(&format!("/console/escalations/{escalation}"), Some(session))
            .await;
        assert_eq!(page.status, 200, "{}", page.body);
        let page = c
            .get(&format!("/console/audit/{event}"), Some(session))
            .await;
        assert_eq!(page.status, 200, "{}", page.body);
        let page = c
            .get(&format!("/console/sessions/{session_id}"), Some(session))
            .await;
        assert!(page.body.contains(event.as_str()), "{}", page.body);
    }

    // A's reviewer does not see B's.
    let inbox = c.get("/console/", Some(&a_session)).await;
    assert!(!inbox.body.contains(&b_escalation), "{}", inbox.body);
    let page = c
        .get(
            &format!("/console/escalations/{b_escalation}"),
            Some(&a_session),
        )
        .await;
    assert_eq!(page.status, 404, "{}", page.body);
    assert!(!page.body.contains("s-globex"), "{}", page.body);
    let page = c
        .get(&format!("/console/audit/{b_event}"), Some(&a_session))
        .await;
    assert_eq!(page.status, 404, "{}", page.body);
    assert!(!page.body.contains("s-globex"), "{}", page.body);
    let page = c.get("/console/sessions/s-globex", Some(&a_session)).await;
    assert!(!page.body.contains(&b_event), "{}", page.body);
    for path in [
        "/console/audit",
        "/console/escalations",
        "/console/overview",
    ] {
        let page = c.get(path, Some(&a_session)).await;
        assert_eq!(page.status, 200, "{path}");
        for b_id in [&b_escalation, &b_event] {
            assert!(!page.body.contains(b_id.as_str()), "{path}: {}", page.body);
        }
    }
    let export = c.get("/console/audit/export", Some(&a_session)).await;
    assert_eq!(export.status, 200);
    assert!(export.body.contains(&a_event), "{}", export.body);
    assert!(!export.body.contains(&b_event) && !export.body.contains("s-globex"));

    // Nor can they decide it.
    let token = c.csrf(&a_session).await;
    let r = c
        .post(
            &format!("/console/escalations/{b_escalation}/decide"),
            Some(&a_session),
            &[("csrf", &token), ("decision", "approve"), ("note", "x")],
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(escalation_status(&gw, &b, &b_escalation).await, "pending");
}

/// An open event stream, read event by event.
struct Events {
    response: reqwest::Response,
    buffer: String,
}

impl Events {
    /// The next event's `(event, data)`, skipping comments (keep-alives), within [`WAIT`].
    async fn next(&mut self) -> (String, String) {
        tokio::time::timeout(WAIT, async {
            loop {
                while let Some(end) = self.buffer.find("\n\n") {
                    let block: String = self.buffer.drain(..end + 2).collect();
                    let (mut event, mut data) = (String::new(), Vec::new());
                    for line in block.lines() {
                        if let Some(v) = line.strip_prefix("event:") {
                            event = v.trim_start().to_owned();
                        } else if let Some(v) = line.strip_prefix("data:") {
                            data.push(v.strip_prefix(' ').unwrap_or(v).to_owned());
                        }
                    }
                    if !event.is_empty() || !data.is_empty() {
                        return (event, data.join("\n"));
                    }
                }
                let chunk = self
                    .response
                    .chunk()
                    .await
                    .expect("the stream reads")
                    .expect("the stream does not end");
                self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
            }
        })
        .await
        .expect("an event in time")
    }

    /// Asserts that the stream ends (after nothing but comments), within [`WAIT`].
    async fn end(&mut self) {
        tokio::time::timeout(WAIT, async {
            while let Some(chunk) = self.response.chunk().await.expect("the stream reads") {
                self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
            }
        })
        .await
        .expect("the stream ends in time");
        assert!(
            self.buffer
                .split("\n\n")
                .all(|block| block.lines().all(|l| l.starts_with(':'))),
            "more events after the end: {}",
            self.buffer
        );
    }
}

#[tokio::test]
async fn the_live_inbox_streams_the_pending_cards_to_a_session_only() {
    let gw = gateway().await;
    let h = held_and_signed_in(&gw).await;

    let refused = h.c.get("/console/inbox/stream", None).await;
    assert_eq!(refused.status, 303);
    let to = refused.location();
    assert!(to.starts_with("/console/signin"), "{to}");
    assert!(
        !to.contains("stream"),
        "a stream is no page to return to: {to}"
    );
    assert!(!refused.content_type().starts_with("text/event-stream"));

    let response = tokio::time::timeout(
        WAIT,
        h.c.http
            .get(gw.url("/console/inbox/stream"))
            .header("cookie", &h.session.cookie)
            .send(),
    )
    .await
    .expect("the stream opens in time")
    .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    assert!(response.headers().contains_key("content-security-policy"));
    let mut events = Events {
        response,
        buffer: String::new(),
    };
    let (event, data) = events.next().await;
    assert_eq!(event, "inbox", "{data}");
    assert!(
        data.contains(&format!("data-escalation=\"{}\"", h.id)),
        "{data}"
    );
    assert!(data.contains("payments.initiate"), "{data}");
    assert!(data.contains(&h.token), "the cards' forms carry the token");

    // A call held after the stream opened is pushed to it; another tenant's is not.
    let other = gw.tenant("globex", Some(artifacts::PAYMENTS_LIMITS)).await;
    let (elsewhere, _) = held_payment(&gw, &other, "s-globex").await;
    let (second, _) = held_payment(&gw, &h.t, "s-second").await;
    let (event, data) = events.next().await;
    assert_eq!(event, "inbox", "{data}");
    assert!(data.contains(&second), "{data}");
    assert!(data.contains(&h.id), "{data}");
    assert!(!data.contains(&elsewhere), "{data}");

    // Signed out elsewhere (another tab), the open stream ends at its next change.
    let r =
        h.c.post("/console/signout", Some(&h.session), &[("csrf", &h.token)])
            .await;
    assert_eq!(r.status, 303, "{}", r.body);
    held_payment(&gw, &h.t, "s-third").await;
    let (event, data) = events.next().await;
    assert_eq!(event, "signedout", "{data}");
    events.end().await;
}

#[tokio::test]
async fn after_sign_in_the_next_parameter_only_leads_to_console_paths() {
    let gw = gateway().await;
    let t = gw.tenant("acme", Some(artifacts::PAYMENTS_LIMITS)).await;
    let c = Console::new(&gw);

    for (next, want) in [
        ("https://evil.example/", "/console/"),
        ("//evil.example/console/", "/console/"),
        ("/console//evil.example", "/console/"),
        ("/console/\\evil.example", "/console/"),
        ("javascript:alert(1)", "/console/"),
        ("/console/escalations/x", "/console/escalations/x"),
    ] {
        let r = c
            .post(
                "/console/signin",
                None,
                &[("key", &t.reviewer), ("next", next)],
            )
            .await;
        assert_eq!(r.status, 303, "{next}: {}", r.body);
        assert_eq!(r.location(), want, "next={next}");
    }

    // The sign-in page carries only a safe `next` into its form.
    let page = c
        .get("/console/signin?next=https%3A%2F%2Fevil.example%2F", None)
        .await;
    assert_eq!(page.status, 200);
    assert!(!page.body.contains("evil.example"), "{}", page.body);

    // A signed-out visit to a page is sent to sign in and, signed in, back to that page.
    let r = c.get("/console/audit?kind=decision", None).await;
    assert_eq!(r.status, 303);
    let to = reqwest::Url::parse(&gw.url(r.location())).unwrap();
    assert_eq!(to.path(), "/console/signin");
    let next = to
        .query_pairs()
        .find(|(k, _)| k == "next")
        .map(|(_, v)| v.into_owned())
        .expect("a next parameter");
    assert_eq!(next, "/console/audit?kind=decision");
    let r = c
        .post(
            "/console/signin",
            None,
            &[("key", &t.reviewer), ("next", &next)],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.location(), "/console/audit?kind=decision");
}

#[tokio::test]
async fn what_agents_and_links_supply_is_shown_as_text_never_as_markup() {
    let gw = gateway().await;
    let t = gw.tenant("acme", Some(artifacts::PAYMENTS_LIMITS)).await;
    let hostile = "\"><script>alert(1)</script><img src=x onerror=alert(2)>";
    let (status, answer) = gw
        .execute(
            &t.agent,
            hostile,
            "payments.initiate",
            json!({"amount": 800, "currency": "GBP", "recipient_id": hostile}),
        )
        .await;
    assert_eq!(answer["decision"], "ESCALATE", "{status} {answer}");
    let id = answer["escalation_id"].as_str().unwrap();
    let event = answer["event_id"].as_str().unwrap();
    let c = Console::new(&gw);
    let session = c.sign_in(&t.reviewer).await;

    // Shown, as text.
    let inbox = c.get("/console/", Some(&session)).await;
    assert!(
        inbox.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{}",
        inbox.body
    );

    let query = |v: &str| url_encode(v);
    for (path, signed_in) in [
        ("/console/".to_owned(), true),
        (format!("/console/escalations/{id}"), true),
        (format!("/console/audit/{event}"), true),
        (format!("/console/sessions/{}", query(hostile)), true),
        (
            format!("/console/?done=approved&id={}", query(hostile)),
            true,
        ),
        (format!("/console/audit?agent={}", query(hostile)), true),
        (
            format!("/console/escalations?action={}", query(hostile)),
            true,
        ),
        (format!("/console/audit?from={}", query(hostile)), true),
        (
            format!(
                "/console/signin?next={}",
                query(&format!("/console/{hostile}"))
            ),
            false,
        ),
    ] {
        let r = c.get(&path, signed_in.then_some(&session)).await;
        assert!(r.status < 500, "{path}: {}", r.status);
        for raw in ["<script>alert", "<img src=x"] {
            assert!(
                !r.body.contains(raw),
                "{path} shows {raw} as markup: {}",
                r.body
            );
        }
    }
}

/// `s` percent-encoded for a query or a path segment.
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn a_time_filter_far_out_of_range_is_refused_400_and_the_page_still_answers() {
    let gw = gateway().await;
    let t = gw.tenant("acme", Some(artifacts::PAYMENTS_LIMITS)).await;
    let c = Console::new(&gw);
    let session = c.sign_in(&t.reviewer).await;
    for filter in [
        // days * 86_400 overflows i64.
        "from=999999999999-01-01T00:00",
        // era * 146_097 overflows i64.
        "to=99999999999999999-01-01T00:00",
        // The seconds fit, their milliseconds overflow u64.
        "from=10000000000-01-01T00:00",
    ] {
        let path = format!("/console/audit?{filter}");
        let sent = tokio::time::timeout(
            WAIT,
            c.http
                .get(gw.url(&path))
                .header("cookie", &session.cookie)
                .send(),
        )
        .await
        .expect("an answer in time");
        let r = sent.unwrap_or_else(|e| panic!("{path}: no answer, the connection dropped: {e}"));
        assert_eq!(r.status(), 400, "{path}");
        let body = r.text().await.unwrap();
        assert!(body.contains("is not a time"), "{path}: {body}");
    }
    assert_eq!(c.get("/console/audit", Some(&session)).await.status, 200);
}

#[tokio::test]
async fn a_decision_that_lost_the_race_says_who_decided_first_and_changes_nothing() {
    let gw = gateway().await;
    let h = held_and_signed_in(&gw).await;
    let decide = format!("/console/escalations/{}/decide", h.id);
    // An admin of the tenant decides first, in another browser.
    let admin = h.c.sign_in(&h.t.admin).await;
    let admin_token = h.c.csrf(&admin).await;
    let first =
        h.c.post(
            &decide,
            Some(&admin),
            &[
                ("csrf", &admin_token),
                ("decision", "reject"),
                ("note", "no"),
            ],
        )
        .await;
    assert_eq!(first.status, 303, "{}", first.body);

    let late =
        h.c.post(
            &decide,
            Some(&h.session),
            &[("csrf", &h.token), ("decision", "approve"), ("note", "yes")],
        )
        .await;
    assert_eq!(late.status, 409, "{}", late.body);
    assert!(
        late.body.contains(
            "Your decision was not recorded: this call was already rejected by admin@example.com"
        ),
        "{}",
        late.body
    );
    assert_eq!(escalation_status(&gw, &h.t, &h.id).await, "rejected");
}

#[tokio::test]
async fn the_holder_of_the_key_that_made_a_call_cannot_decide_it_in_the_console() {
    let gw = gateway().await;
    let t = gw.tenant("acme", Some(artifacts::PAYMENTS_LIMITS)).await;
    // One person holds an agent key and a reviewer key.
    let operator = gw.client(&gw.operator_key);
    let key = |role: &str| writ_client::wire::CreateKeyBody {
        role: role.into(),
        subject: "dana@example.com".into(),
        agent_id: None,
    };
    let agent = operator
        .create_key(&t.id, &key("agent"))
        .await
        .unwrap()
        .api_key;
    let reviewer = operator
        .create_key(&t.id, &key("reviewer"))
        .await
        .unwrap()
        .api_key;
    let dana = TestTenant { agent, ..t.clone() };
    let (id, _) = held_payment(&gw, &dana, "s").await;

    let c = Console::new(&gw);
    let session = c.sign_in(&reviewer).await;
    let inbox = c.get("/console/", Some(&session)).await;
    assert!(
        inbox.body.contains("You hold the key that made this call"),
        "{}",
        inbox.body
    );
    assert!(
        !inbox
            .body
            .contains(&format!("/console/escalations/{id}/decide"))
    );
    let token = c.csrf(&session).await;
    let r = c
        .post(
            &format!("/console/escalations/{id}/decide"),
            Some(&session),
            &[("csrf", &token), ("decision", "approve"), ("note", "mine")],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(escalation_status(&gw, &t, &id).await, "pending");
}

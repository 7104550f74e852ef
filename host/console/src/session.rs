//! Sign-in sessions: a reviewer's key exchanged for a random session id in an HttpOnly,
//! `SameSite=Strict` cookie. The server keeps, per session, the key's id (never the key), a
//! CSRF token, and when it began and was last used; the id is kept only as its blake3 hash.
//! A session ends on sign-out, after [`crate::ConsoleConfig::idle_timeout`] unused, after
//! [`crate::ConsoleConfig::absolute_timeout`], or as soon as its key is revoked: the key is
//! looked up on every request.
//!
//! On a store several gateway processes share, each session is also a row
//! (`Table::ConsoleSessions`, by the id's hash), so a browser signed in through one process is
//! signed in on every one; the last use is written back at most once a minute.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use writ_gateway::access::{Admin, Require, Reviewer, TenantScope};
use writ_gateway::app::App;
use writ_gateway::app::{Principal, Role};
use writ_gateway::clock::SharedClock;
use writ_gateway::store::{Store, Table};

use crate::error::ConsoleError;
use crate::{Console, ConsoleConfig};

/// Sessions kept gateway-wide; past it, the least recently used goes.
const MAX_SESSIONS: usize = 10_000;
/// Sessions one key may hold; past it, its least recently used goes.
const MAX_SESSIONS_PER_KEY: usize = 16;

/// How often a session's last use is written back to a shared store, and how often its
/// expired rows are purged.
const WRITE_BACK_MS: u64 = 60_000;

/// One signed-in browser.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Session {
    key_id: String,
    csrf: String,
    created_ms: u64,
    last_ms: u64,
    /// When this process last wrote it to the shared store.
    #[serde(skip)]
    written_ms: u64,
}

/// The console's sessions, in memory (a restart signs everyone out), and in a store several
/// processes share.
pub struct Sessions {
    clock: SharedClock,
    idle_ms: u64,
    absolute_ms: u64,
    secure: bool,
    by_hash: Mutex<HashMap<[u8; 32], Session>>,
    /// The shared store, when there is one.
    shared: Option<Store>,
    /// When expired rows were last purged from it.
    purged_ms: Mutex<u64>,
}

/// A new session: the cookie to set.
pub(crate) struct Started {
    pub(crate) cookie: String,
}

impl Sessions {
    pub(crate) fn new(clock: SharedClock, config: &ConsoleConfig, store: &Store) -> Self {
        Self {
            shared: store.is_shared().then(|| store.clone()),
            purged_ms: Mutex::new(0),
            clock,
            idle_ms: config.idle_timeout.as_millis() as u64,
            absolute_ms: config.absolute_timeout.as_millis() as u64,
            secure: config
                .public_origin
                .as_ref()
                .is_some_and(|o| o.scheme() == "https"),
            by_hash: Mutex::default(),
        }
    }

    /// The cookie's name: with `Secure`, the `__Host-` prefix, so no other path or
    /// subdomain can set it.
    fn cookie_name(&self) -> &'static str {
        if self.secure {
            "__Host-writ_console"
        } else {
            "writ_console"
        }
    }

    /// Starts a session for `key`.
    pub(crate) fn start(&self, key: &Principal) -> Started {
        let id = hex::encode(rand::random::<[u8; 32]>());
        let now = self.clock.now_ms();
        let session = Session {
            key_id: key.key_id.clone(),
            csrf: hex::encode(rand::random::<[u8; 32]>()),
            created_ms: now,
            last_ms: now,
            written_ms: now,
        };
        self.write(&hash(&id), &session);
        self.purge(now);
        let mut all = self.by_hash.lock().expect("sessions lock");
        all.retain(|_, s| !self.expired(s, now));
        let of_key: Vec<([u8; 32], u64)> = all
            .iter()
            .filter(|(_, s)| s.key_id == key.key_id)
            .map(|(h, s)| (*h, s.last_ms))
            .collect();
        if of_key.len() >= MAX_SESSIONS_PER_KEY {
            evict_oldest(&mut all, of_key);
        }
        if all.len() >= MAX_SESSIONS {
            let everyone = all.iter().map(|(h, s)| (*h, s.last_ms)).collect();
            evict_oldest(&mut all, everyone);
        }
        all.insert(hash(&id), session);
        Started {
            cookie: self.cookie(&id, None),
        }
    }

    /// The `Set-Cookie` value for session `id`; `max_age` 0 removes it.
    fn cookie(&self, id: &str, max_age: Option<u64>) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        let max_age = max_age.map_or(String::new(), |s| format!("; Max-Age={s}"));
        format!(
            "{}={id}; Path=/; HttpOnly; SameSite=Strict{secure}{max_age}",
            self.cookie_name()
        )
    }

    /// The cookie that removes the session's cookie from the browser.
    pub(crate) fn cleared_cookie(&self) -> String {
        self.cookie("", Some(0))
    }

    /// Ends the session the request's cookie names, if any.
    pub(crate) fn end(&self, headers: &HeaderMap) {
        if let Some(id) = self.cookie_value(headers) {
            let h = hash(&id);
            self.by_hash.lock().expect("sessions lock").remove(&h);
            if let Some(store) = &self.shared
                && let Err(e) = store.remove(Table::ConsoleSessions, &h)
            {
                tracing::warn!(error = %e, "removing a console session from the store");
            }
        }
    }

    /// Writes a session to the shared store, if there is one.
    fn write(&self, h: &[u8; 32], session: &Session) {
        if let Some(store) = &self.shared
            && let Err(e) = store.put(Table::ConsoleSessions, h, session)
        {
            tracing::warn!(error = %e, "writing a console session to the store");
        }
    }

    /// A session another process started, from the shared store.
    fn stored(&self, h: &[u8; 32]) -> Option<Session> {
        let store = self.shared.as_ref()?;
        let mut session: Session = store.get(Table::ConsoleSessions, h).ok().flatten()?;
        session.written_ms = session.last_ms;
        Some(session)
    }

    /// Removes the shared store's expired sessions, at most once every [`WRITE_BACK_MS`].
    fn purge(&self, now: u64) {
        let Some(store) = &self.shared else {
            return;
        };
        {
            let mut purged = self.purged_ms.lock().expect("purge lock");
            if now.saturating_sub(*purged) < WRITE_BACK_MS {
                return;
            }
            *purged = now;
        }
        let rows = match store.scan::<Session>(Table::ConsoleSessions, b"") {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "reading console sessions to purge");
                return;
            }
        };
        let expired: Vec<_> = rows
            .into_iter()
            .filter(|(_, s)| self.expired(s, now))
            .map(|(k, _)| (Table::ConsoleSessions, k))
            .collect();
        if let Err(e) = store.commit_with_removes(&[], &expired) {
            tracing::warn!(error = %e, "purging console sessions");
        }
    }

    pub(crate) fn cookie_value(&self, headers: &HeaderMap) -> Option<String> {
        let name = self.cookie_name();
        headers
            .get_all(axum::http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.to_owned())
    }

    fn expired(&self, s: &Session, now: u64) -> bool {
        now >= s.created_ms.saturating_add(self.absolute_ms)
            || now >= s.last_ms.saturating_add(self.idle_ms)
    }

    /// The live session the request's cookie names, touched; `None` when there is none or it
    /// has expired (then it is removed).
    fn touch(&self, headers: &HeaderMap) -> Option<(String, String)> {
        let id = self.cookie_value(headers)?;
        let h = hash(&id);
        let now = self.clock.now_ms();
        // On a shared store the row decides: a sign-out through another process removed it.
        let stored = self.shared.as_ref().map(|_| self.stored(&h));
        let mut all = self.by_hash.lock().expect("sessions lock");
        match stored {
            Some(None) => {
                all.remove(&h);
                return None;
            }
            Some(Some(stored)) => {
                let known = all.entry(h).or_insert_with(|| stored.clone());
                known.last_ms = known.last_ms.max(stored.last_ms);
            }
            None => {}
        }
        let session = all.get_mut(&h)?;
        if self.expired(session, now) {
            all.remove(&h);
            drop(all);
            if let Some(store) = &self.shared {
                let _ = store.remove(Table::ConsoleSessions, &h);
            }
            return None;
        }
        session.last_ms = now;
        let (key_id, csrf) = (session.key_id.clone(), session.csrf.clone());
        if now.saturating_sub(session.written_ms) >= WRITE_BACK_MS {
            session.written_ms = now;
            let session = session.clone();
            drop(all);
            self.write(&h, &session);
        }
        Some((key_id, csrf))
    }

    /// Whether the request's session is still live and its key unrevoked, without touching
    /// it (a stream open in a tab is not use): event streams check it as they go, so a stream
    /// ends with its session.
    pub(crate) fn still_signed_in(&self, headers: &HeaderMap, app: &App) -> bool {
        let Some(id) = self.cookie_value(headers) else {
            return false;
        };
        let now = self.clock.now_ms();
        let h = hash(&id);
        let session = match &self.shared {
            // The row decides: a sign-out through another process removed it.
            Some(_) => self.stored(&h),
            None => self.by_hash.lock().expect("sessions lock").get(&h).cloned(),
        };
        let key_id = match session {
            Some(s) if !self.expired(&s, now) => s.key_id,
            _ => return false,
        };
        app.tenants()
            .tenants()
            .key(&key_id)
            .is_ok_and(|k| !k.revoked)
    }
}

fn hash(id: &str) -> [u8; 32] {
    *blake3::hash(id.as_bytes()).as_bytes()
}

/// Removes the least recently used of `candidates`.
fn evict_oldest(all: &mut HashMap<[u8; 32], Session>, candidates: Vec<([u8; 32], u64)>) {
    if let Some((h, _)) = candidates.into_iter().min_by_key(|(_, last)| *last) {
        all.remove(&h);
    }
}

/// A form whose only field is the session's CSRF token (sign-out, verify, activate).
#[derive(Debug, Default, serde::Deserialize, utoipa::ToSchema)]
// Missing fields are empty, so a forged form is refused by its token, not its shape.
#[serde(default)]
pub(crate) struct CsrfForm {
    /// The session's form token.
    pub(crate) csrf: String,
}

/// A signed-in reviewer or admin: the session's key, looked up afresh (a revoked key's
/// sessions end at once), as a reviewer's scope on its tenant.
pub(crate) struct SignedIn {
    pub(crate) scope: TenantScope<Reviewer>,
    pub(crate) csrf: String,
}

impl SignedIn {
    /// The key's holder, as decisions name them.
    pub(crate) fn subject(&self) -> &str {
        self.scope.subject()
    }

    /// Whether the key is an admin's.
    pub(crate) fn is_admin(&self) -> bool {
        self.scope.key().role == Role::Admin
    }

    /// The admin scope, for configuration changes.
    pub(crate) fn admin(&self) -> Result<TenantScope<Admin>, ConsoleError> {
        Ok(self.scope.key().require::<Admin>()?)
    }

    /// Checks a state-changing request's CSRF token (compared as hashes: in constant time).
    pub(crate) fn check_csrf(&self, token: &str) -> Result<(), ConsoleError> {
        if blake3::hash(token.as_bytes()) == blake3::hash(self.csrf.as_bytes()) {
            Ok(())
        } else {
            Err(ConsoleError::Forged)
        }
    }
}

impl FromRequestParts<Console> for SignedIn {
    type Rejection = ConsoleError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Console,
    ) -> Result<Self, Self::Rejection> {
        let signed_out = |parts: &Parts| ConsoleError::SignedOut {
            expired: state.sessions.cookie_value(&parts.headers).is_some(),
            // A page asked for is where to go after signing in (an event stream or a form
            // post is not).
            next: (parts.method == axum::http::Method::GET
                && !parts.uri.path().ends_with("/stream"))
            .then(|| parts.uri.to_string()),
        };
        let Some((key_id, csrf)) = state.sessions.touch(&parts.headers) else {
            return Err(signed_out(parts));
        };
        let key = state.app.tenants().tenants().key(&key_id).ok();
        let scope = key
            .filter(|k| !k.revoked)
            .and_then(|k| std::sync::Arc::new(k).require::<Reviewer>().ok());
        match scope {
            Some(scope) => Ok(Self { scope, csrf }),
            None => {
                let refused = signed_out(parts);
                state.sessions.end(&parts.headers);
                Err(refused)
            }
        }
    }
}

/// Refuses a state-changing request that a browser says came from another origin (the
/// `Origin` header, else `Sec-Fetch-Site`): with `SameSite=Strict` and the CSRF token, the
/// third of the console's defences against cross-site requests, and the one that covers
/// sign-in, which has no session yet.
pub(crate) fn check_origin(
    headers: &HeaderMap,
    config: &ConsoleConfig,
) -> Result<(), ConsoleError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(origin) = header("origin") {
        let expected = match &config.public_origin {
            Some(public) => public.origin().ascii_serialization(),
            None => format!("http://{}", header("host").unwrap_or_default()),
        };
        return if origin == expected {
            Ok(())
        } else {
            Err(ConsoleError::Forged)
        };
    }
    match header("sec-fetch-site") {
        None | Some("same-origin" | "none") => Ok(()),
        Some(_) => Err(ConsoleError::Forged),
    }
}

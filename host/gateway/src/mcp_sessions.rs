//! What the gateway's Streamable HTTP endpoint (`/mcp/{name}`) remembers between requests, in
//! memory: the sessions it issued, the calls it holds, the tools' annotations each upstream
//! server declared, and how many relays each tenant has open.
//!
//! A session id is the gateway's own, random, issued when an upstream answers `initialize`; it
//! maps to the upstream's session id (never shown to the client) and is bound to the key that
//! opened it and to the server: another key, even of the same tenant, presenting it is told
//! the session does not exist. Sessions end on `DELETE`, after [`SESSION_IDLE_MS`] unused, or
//! when the gateway restarts (the client then initializes again, as the transport specifies).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use rand::RngCore;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::clock::SharedClock;

/// A session unused this long is forgotten.
pub const SESSION_IDLE_MS: u64 = 60 * 60 * 1000;
/// Most sessions one tenant may have open.
pub const MAX_SESSIONS_PER_TENANT: usize = 1024;
/// Most requests one tenant may have relayed at once (held calls and open streams included).
pub const MAX_RELAYS_PER_TENANT: usize = 256;
/// Most tools whose annotations are remembered per server (a `tools/list` is untrusted input).
const MAX_TOOLS: usize = 10_000;

/// One session the gateway issued.
#[derive(Debug, Clone)]
pub struct McpSession {
    /// The gateway's id, the client's `Mcp-Session-Id`.
    pub id: String,
    /// The upstream server's session id, if it issued one.
    pub upstream: Option<String>,
    /// The client's name and version, from `initialize`.
    pub client: Option<(String, String)>,
    tenant_id: String,
    server: String,
    key_id: String,
    last_used_ms: u64,
}

/// Where a held call is found by a later `notifications/cancelled`: tenant, key, session, and
/// the request id's JSON text.
type HeldKey = (String, String, Option<String>, String);

#[derive(Default)]
struct State {
    /// By tenant, then by id: what one tenant opens is pruned and counted on its own.
    sessions: HashMap<String, HashMap<String, McpSession>>,
    annotations: HashMap<(String, String), HashMap<String, Value>>,
    held: HashMap<HeldKey, CancellationToken>,
    relays: HashMap<String, usize>,
}

/// The endpoint's memory. Cheap to clone.
#[derive(Clone)]
pub struct McpSessions {
    state: Arc<Mutex<State>>,
    clock: SharedClock,
}

/// Why a session cannot be used or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// Unknown, ended, idle too long, or another key's or server's.
    #[error("no such MCP session (it ended or was never issued to this key): initialize again")]
    NotFound,
    /// The tenant has [`MAX_SESSIONS_PER_TENANT`] sessions in use.
    #[error("this tenant has {MAX_SESSIONS_PER_TENANT} MCP sessions open; end one (DELETE) first")]
    Full,
    /// The tenant has [`MAX_RELAYS_PER_TENANT`] requests in flight.
    #[error("this tenant has {MAX_RELAYS_PER_TENANT} MCP requests in flight; retry shortly")]
    Busy,
}

/// A tenant's place among its relays in flight, freed when dropped.
pub struct RelaySlot {
    sessions: McpSessions,
    tenant_id: String,
}

impl Drop for RelaySlot {
    fn drop(&mut self) {
        let mut state = self.sessions.lock();
        if let Some(n) = state.relays.get_mut(&self.tenant_id) {
            *n -= 1;
            if *n == 0 {
                state.relays.remove(&self.tenant_id);
            }
        }
    }
}

/// A held call's place, removed when dropped.
pub struct HeldSlot {
    sessions: McpSessions,
    key: HeldKey,
}

impl Drop for HeldSlot {
    fn drop(&mut self) {
        self.sessions.lock().held.remove(&self.key);
    }
}

impl McpSessions {
    /// An empty memory, aging sessions by `clock`.
    pub fn new(clock: SharedClock) -> Self {
        Self {
            state: Arc::default(),
            clock,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Issues a session for `key_id` on `server`, mapped to the upstream's session id.
    pub fn open(
        &self,
        tenant_id: &str,
        server: &str,
        key_id: &str,
        upstream: Option<String>,
        client: Option<(String, String)>,
    ) -> Result<McpSession, SessionError> {
        let now = self.clock.now_ms();
        let mut state = self.lock();
        let open = state.sessions.entry(tenant_id.to_owned()).or_default();
        if open.len() >= MAX_SESSIONS_PER_TENANT {
            open.retain(|_, s| now.saturating_sub(s.last_used_ms) < SESSION_IDLE_MS);
        }
        if open.len() >= MAX_SESSIONS_PER_TENANT {
            return Err(SessionError::Full);
        }
        let mut id = [0u8; 24];
        rand::rng().fill_bytes(&mut id);
        let session = McpSession {
            id: format!("ws_{}", hex::encode(id)),
            upstream,
            client,
            tenant_id: tenant_id.to_owned(),
            server: server.to_owned(),
            key_id: key_id.to_owned(),
            last_used_ms: now,
        };
        open.insert(session.id.clone(), session.clone());
        Ok(session)
    }

    /// The session `id`, if it is `key_id`'s on `server` and still in use; touching it.
    pub fn get(
        &self,
        tenant_id: &str,
        server: &str,
        key_id: &str,
        id: &str,
    ) -> Result<McpSession, SessionError> {
        let now = self.clock.now_ms();
        let mut state = self.lock();
        let Some(open) = state.sessions.get_mut(tenant_id) else {
            return Err(SessionError::NotFound);
        };
        let Some(session) = open.get_mut(id) else {
            return Err(SessionError::NotFound);
        };
        if session.server != server || session.key_id != key_id {
            return Err(SessionError::NotFound);
        }
        if now.saturating_sub(session.last_used_ms) >= SESSION_IDLE_MS {
            open.remove(id);
            return Err(SessionError::NotFound);
        }
        session.last_used_ms = now;
        Ok(session.clone())
    }

    /// Ends a session (already checked with [`McpSessions::get`]); its held calls are
    /// cancelled.
    pub fn end(&self, session: &McpSession) {
        let mut state = self.lock();
        if let Some(open) = state.sessions.get_mut(&session.tenant_id) {
            open.remove(&session.id);
        }
        for (key, cancel) in &state.held {
            if key.2.as_deref() == Some(session.id.as_str()) {
                cancel.cancel();
            }
        }
    }

    /// Takes a place among the tenant's relays in flight.
    pub fn relay_slot(&self, tenant_id: &str) -> Result<RelaySlot, SessionError> {
        let mut state = self.lock();
        let n = state.relays.entry(tenant_id.to_owned()).or_default();
        if *n >= MAX_RELAYS_PER_TENANT {
            return Err(SessionError::Busy);
        }
        *n += 1;
        Ok(RelaySlot {
            sessions: self.clone(),
            tenant_id: tenant_id.to_owned(),
        })
    }

    /// Notes a call being decided or held, cancelled by [`McpSessions::cancel`] with the same
    /// tenant, key, session and request id.
    pub fn hold(
        &self,
        tenant_id: &str,
        key_id: &str,
        session: Option<&str>,
        request: &str,
        cancel: CancellationToken,
    ) -> HeldSlot {
        let key = (
            tenant_id.to_owned(),
            key_id.to_owned(),
            session.map(str::to_owned),
            request.to_owned(),
        );
        self.lock().held.insert(key.clone(), cancel);
        HeldSlot {
            sessions: self.clone(),
            key,
        }
    }

    /// Cancels the held call the client's `notifications/cancelled` names; whether there was one.
    pub fn cancel(
        &self,
        tenant_id: &str,
        key_id: &str,
        session: Option<&str>,
        request: &str,
    ) -> bool {
        let key = (
            tenant_id.to_owned(),
            key_id.to_owned(),
            session.map(str::to_owned),
            request.to_owned(),
        );
        match self.lock().held.remove(&key) {
            Some(cancel) => {
                cancel.cancel();
                true
            }
            None => false,
        }
    }

    /// Remembers the annotations of the tools a server listed.
    pub fn learn_tools(&self, tenant_id: &str, server: &str, tools: Vec<(String, Value)>) {
        let mut state = self.lock();
        let known = state
            .annotations
            .entry((tenant_id.to_owned(), server.to_owned()))
            .or_default();
        for (name, annotations) in tools {
            if known.len() < MAX_TOOLS || known.contains_key(&name) {
                known.insert(name, annotations);
            }
        }
    }

    /// The annotations the server declared for `tool` (`null` when it listed none).
    pub fn annotations(&self, tenant_id: &str, server: &str, tool: &str) -> Value {
        self.lock()
            .annotations
            .get(&(tenant_id.to_owned(), server.to_owned()))
            .and_then(|tools| tools.get(tool))
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// Forgets what a server removed from the catalog left: its sessions and annotations.
    pub fn forget_server(&self, tenant_id: &str, server: &str) {
        let mut state = self.lock();
        if let Some(open) = state.sessions.get_mut(tenant_id) {
            open.retain(|_, s| s.server != server);
        }
        state
            .annotations
            .remove(&(tenant_id.to_owned(), server.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn sessions() -> (McpSessions, Arc<ManualClock>) {
        let clock = ManualClock::new(1_000);
        (McpSessions::new(clock.clone()), clock)
    }

    #[test]
    fn a_session_is_found_only_by_the_key_and_server_it_was_issued_to() {
        let (sessions, _) = sessions();
        let s = sessions
            .open("t1", "files", "key_a", Some("up-1".into()), None)
            .unwrap();
        assert_eq!(
            sessions
                .get("t1", "files", "key_a", &s.id)
                .unwrap()
                .upstream,
            Some("up-1".into())
        );
        for (tenant, server, key) in [
            ("t1", "files", "key_b"),
            ("t1", "other", "key_a"),
            ("t2", "files", "key_a"),
        ] {
            assert_eq!(
                sessions.get(tenant, server, key, &s.id).unwrap_err(),
                SessionError::NotFound
            );
        }
    }

    #[test]
    fn a_session_unused_for_an_hour_is_gone() {
        let (sessions, clock) = sessions();
        let s = sessions.open("t1", "files", "k", None, None).unwrap();
        clock.advance(SESSION_IDLE_MS - 1);
        assert!(sessions.get("t1", "files", "k", &s.id).is_ok());
        clock.advance(SESSION_IDLE_MS);
        assert_eq!(
            sessions.get("t1", "files", "k", &s.id).unwrap_err(),
            SessionError::NotFound
        );
    }

    #[test]
    fn a_tenant_cannot_open_more_sessions_or_relays_than_its_bound() {
        let (sessions, _) = sessions();
        for _ in 0..MAX_SESSIONS_PER_TENANT {
            sessions.open("t1", "s", "k", None, None).unwrap();
        }
        assert_eq!(
            sessions.open("t1", "s", "k", None, None).unwrap_err(),
            SessionError::Full
        );
        assert!(sessions.open("t2", "s", "k", None, None).is_ok());
        let slots: Vec<_> = (0..MAX_RELAYS_PER_TENANT)
            .map(|_| sessions.relay_slot("t1").unwrap())
            .collect();
        assert!(matches!(sessions.relay_slot("t1"), Err(SessionError::Busy)));
        drop(slots);
        assert!(sessions.relay_slot("t1").is_ok());
    }

    #[test]
    fn ending_a_session_cancels_its_held_calls() {
        let (sessions, _) = sessions();
        let s = sessions.open("t1", "s", "k", None, None).unwrap();
        let cancel = CancellationToken::new();
        let _held = sessions.hold("t1", "k", Some(&s.id), "7", cancel.clone());
        assert!(!sessions.cancel("t1", "other-key", Some(&s.id), "7"));
        sessions.end(&s);
        assert!(cancel.is_cancelled());
    }
}

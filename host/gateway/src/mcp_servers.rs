//! The MCP servers a tenant's catalog knows: for each server name, the tools the tenant marks
//! destructive, so that the host's irreversible-action gate holds their calls (action
//! `<server>.<tool>`) for a human whatever the policy allowed, and, for a remote server, the
//! upstream URL the gateway's `/mcp/{name}` endpoint relays to with the vault credential it
//! injects. What a server declares of its own tools is a hint to the policy; this is the
//! tenant's word.
//!
//! Rows (tenant ‖ server name → entry) are read once at start into memory, where every call's
//! gate looks them up.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::catalog::CredentialUse;
use crate::store::{Store, StoreError, Table, Write};
use crate::tenants::{tenant_key, tenant_of_key};

/// Most tools one server entry may mark.
pub const MAX_MARKED_TOOLS: usize = 1000;

/// One MCP server of a tenant's catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct McpServer {
    /// The name in actions (`--server` of `writ mcp`).
    pub name: String,
    /// Its tools whose calls are irreversible.
    pub destructive_tools: BTreeSet<String>,
    /// Where `/mcp/{name}` relays to; `None` for a server run beside its client (`writ mcp`).
    #[serde(default)]
    pub upstream: Option<McpUpstream>,
}

/// A remote MCP server (Streamable HTTP) and the credential the gateway sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct McpUpstream {
    /// Its MCP endpoint, an absolute http(s) URL.
    pub url: String,
    /// The vault credential injected into every request to it (bound to its origin).
    pub credential: Option<CredentialUse>,
}

/// Longest upstream URL.
const MAX_URL_BYTES: usize = 2048;

/// Headers the relay sets itself, which a credential may not name.
const RELAY_HEADERS: [&str; 10] = [
    "accept",
    "connection",
    "content-length",
    "content-type",
    "host",
    "last-event-id",
    "mcp-protocol-version",
    "mcp-session-id",
    "te",
    "transfer-encoding",
];

impl McpUpstream {
    /// The URL, parsed: http(s), a host, no user name or password, no fragment.
    pub fn parsed_url(&self) -> Result<url::Url, McpServerError> {
        let bad = |m: &str| Err(McpServerError::Invalid(format!("url: {m}")));
        if self.url.len() > MAX_URL_BYTES {
            return bad("at most 2048 bytes");
        }
        let url = match url::Url::parse(&self.url) {
            Ok(url) => url,
            Err(e) => return bad(&e.to_string()),
        };
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return bad("an absolute http(s) URL with a host is required");
        }
        if !url.username().is_empty() || url.password().is_some() || url.fragment().is_some() {
            return bad("no user name, password or fragment (credentials come from the vault)");
        }
        Ok(url)
    }

    fn validate(&self) -> Result<(), McpServerError> {
        self.parsed_url()?;
        if let Some(c) = &self.credential {
            let header = c.header.to_ascii_lowercase();
            let valid = !header.is_empty()
                && header.len() <= 128
                && header
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-');
            if !valid || RELAY_HEADERS.contains(&header.as_str()) {
                return Err(McpServerError::Invalid(format!(
                    "credential header `{}` is not a header name the relay leaves to it",
                    c.header
                )));
            }
            if !c.format.contains("{secret}") || c.format.contains(['\r', '\n']) {
                return Err(McpServerError::Invalid(
                    "credential format must contain {secret} and no line breaks".into(),
                ));
            }
        }
        Ok(())
    }
}

/// Why an entry is refused.
#[derive(Debug, thiserror::Error)]
pub enum McpServerError {
    #[error("invalid MCP server entry: {0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl McpServer {
    /// Checks the names: a server name has no `.` (the action's first `.` ends it), tools are
    /// valid names, at most [`MAX_MARKED_TOOLS`] of them.
    pub fn validate(&self) -> Result<(), McpServerError> {
        if !crate::valid_name(&self.name) || self.name.contains('.') {
            return Err(McpServerError::Invalid(
                "the server name must be 1 to 256 bytes without `.` or control characters".into(),
            ));
        }
        if self.destructive_tools.len() > MAX_MARKED_TOOLS {
            return Err(McpServerError::Invalid(format!(
                "at most {MAX_MARKED_TOOLS} destructive tools"
            )));
        }
        if let Some(bad) = self
            .destructive_tools
            .iter()
            .find(|t| !crate::valid_name(t))
        {
            return Err(McpServerError::Invalid(format!(
                "`{bad}` is not a valid tool name"
            )));
        }
        if let Some(upstream) = &self.upstream {
            upstream.validate()?;
        }
        Ok(())
    }
}

/// Every tenant's MCP servers, in memory (their rows are committed with the records of their
/// changes). Cheap to clone.
#[derive(Clone)]
pub struct McpServers {
    store: Store,
    by_tenant: Arc<RwLock<HashMap<String, HashMap<String, McpServer>>>>,
}

impl McpServers {
    /// Reads every row; a tenant whose rows cannot be read is degraded.
    pub fn load(store: &Store, degraded: &crate::degraded::Degraded) -> Result<Self, StoreError> {
        let (rows, bad) = store.scan_each::<McpServer>(Table::McpServers, b"")?;
        for (key, e) in bad {
            degraded.mark(&tenant_of_key(&key), crate::degraded::Part::Catalog, e);
        }
        let mut by_tenant: HashMap<String, HashMap<String, McpServer>> = HashMap::new();
        for (key, server) in rows {
            by_tenant
                .entry(tenant_of_key(&key))
                .or_default()
                .insert(server.name.clone(), server);
        }
        Ok(Self {
            store: store.clone(),
            by_tenant: Arc::new(RwLock::new(by_tenant)),
        })
    }

    /// The row of `name`.
    pub fn key(tenant_id: &str, name: &str) -> Vec<u8> {
        tenant_key(tenant_id, &[name.as_bytes()])
    }

    /// The store row of a validated entry, to commit with the record of its change; then
    /// [`McpServers::stored`].
    pub fn row(tenant_id: &str, server: &McpServer) -> Result<Write, McpServerError> {
        server.validate()?;
        let value = serde_json::to_vec(server).expect("entries serialize");
        Ok((Table::McpServers, Self::key(tenant_id, &server.name), value))
    }

    /// Notes in memory that `server` is stored.
    pub fn stored(&self, tenant_id: &str, server: McpServer) {
        self.by_tenant
            .write()
            .expect("mcp servers lock")
            .entry(tenant_id.to_owned())
            .or_default()
            .insert(server.name.clone(), server);
    }

    /// Notes in memory that `name` is removed.
    pub fn removed(&self, tenant_id: &str, name: &str) {
        if let Some(servers) = self
            .by_tenant
            .write()
            .expect("mcp servers lock")
            .get_mut(tenant_id)
        {
            servers.remove(name);
        }
    }

    /// Reads an entry's row again after another process sharing the store changed it.
    pub fn refresh(&self, key: &[u8]) -> Result<(), StoreError> {
        let tenant_id = tenant_of_key(key);
        match self.store.get::<McpServer>(Table::McpServers, key)? {
            Some(server) => self.stored(&tenant_id, server),
            None => {
                let name = key.get(tenant_id.len() + 1..).unwrap_or_default();
                self.removed(&tenant_id, &String::from_utf8_lossy(name));
            }
        }
        Ok(())
    }

    /// The tenant's entry for `name`.
    pub fn get(&self, tenant_id: &str, name: &str) -> Option<McpServer> {
        self.by_tenant
            .read()
            .expect("mcp servers lock")
            .get(tenant_id)?
            .get(name)
            .cloned()
    }

    /// The tenant's entries, by name.
    pub fn list(&self, tenant_id: &str) -> Vec<McpServer> {
        let mut list: Vec<McpServer> = self
            .by_tenant
            .read()
            .expect("mcp servers lock")
            .get(tenant_id)
            .map(|s| s.values().cloned().collect())
            .unwrap_or_default();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    /// Whether the tenant marks `action` (`<server>.<tool>`, split at its first `.`) destructive.
    pub fn destructive(&self, tenant_id: &str, action: &str) -> bool {
        let Some((server, tool)) = action.split_once('.') else {
            return false;
        };
        self.by_tenant
            .read()
            .expect("mcp servers lock")
            .get(tenant_id)
            .and_then(|s| s.get(server))
            .is_some_and(|s| s.destructive_tools.contains(tool))
    }
}

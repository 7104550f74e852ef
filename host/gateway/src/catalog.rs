//! The per-tenant tool catalog: how a logical tool call (`service` + `toolName` + arguments)
//! resolves to a downstream HTTP request, which credential it carries and how, and whether it
//! is destructive.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::store::{Store, StoreError, Table, Write};
use crate::tenants::{tenant_key, tenant_prefix};

/// Errors of the catalog.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The entry is malformed.
    #[error("invalid catalog entry: {0}")]
    Invalid(String),
    /// The call's arguments do not fill the entry.
    #[error("cannot resolve the tool call: {0}")]
    Unresolvable(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How a credential is injected: a header whose value is `format` with `{secret}` replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialUse {
    /// The vault credential's name.
    pub name: String,
    /// The header, e.g. `Authorization`.
    pub header: String,
    /// The value, e.g. `Bearer {secret}`.
    pub format: String,
}

/// One tool of a tenant's catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolEntry {
    /// The downstream service, e.g. `github`.
    pub service: String,
    /// The tool, e.g. `github.repos.delete`.
    pub tool_name: String,
    /// HTTP method, upper case.
    pub method: String,
    /// URL template; `{argument}` is replaced by the argument, percent-encoded.
    pub url: String,
    /// Arguments sent as query parameters.
    pub query: Vec<String>,
    /// Arguments sent as the JSON body's fields.
    pub body: Vec<String>,
    /// Extra headers.
    pub headers: BTreeMap<String, String>,
    /// The credential to inject, if any.
    pub credential: Option<CredentialUse>,
    /// Marked destructive (e.g. a POST that moves money).
    pub destructive: bool,
}

/// A tool call resolved to a downstream request (without the credential).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedRequest {
    /// The downstream service, as the catalog names it.
    #[serde(default)]
    pub service: String,
    /// HTTP method.
    pub method: String,
    /// The full URL.
    pub url: String,
    /// Headers other than the credential.
    pub headers: BTreeMap<String, String>,
    /// The JSON body, if any.
    pub body: Option<String>,
    /// The credential to inject when it runs.
    pub credential: Option<CredentialUse>,
    /// Marked destructive in the catalog.
    pub destructive: bool,
}

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

fn valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn placeholders(template: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        out.push(&rest[start + 1..start + len]);
        rest = &rest[start + len + 1..];
    }
    out
}

/// What a URL template fixes: its origin (scheme, host, port) and the path before its first
/// placeholder. A resolved URL must keep both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// The template's origin.
    pub origin: url::Origin,
    /// The template's path up to its first placeholder.
    pub path_prefix: String,
}

/// Checks where a template's placeholders stand (the path and the query only, never the
/// scheme, host, port or fragment) and returns what it fixes.
fn destination(template: &str) -> Result<Destination, CatalogError> {
    let bad = |m: &str| Err(CatalogError::Invalid(format!("url: {m}")));
    let Some((scheme, rest)) = template.split_once("://") else {
        return bad("an absolute http(s) URL is required");
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    if scheme.contains(['{', '}']) || rest[..authority_end].contains(['{', '}']) {
        return bad(
            "placeholders may stand in the path and the query only, not in the scheme, host or port",
        );
    }
    if rest
        .find('#')
        .is_some_and(|at| rest[at..].contains(['{', '}']))
    {
        return bad("placeholders may not stand in the fragment");
    }
    let fixed = rest[..rest.find('{').unwrap_or(rest.len())]
        .split(['?', '#'])
        .next()
        .unwrap_or_default();
    let parsed = reqwest::Url::parse(&format!("{scheme}://{fixed}"))
        .map_err(|e| CatalogError::Invalid(format!("url: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return bad("an http(s) URL with a host is required");
    }
    Ok(Destination {
        origin: parsed.origin(),
        path_prefix: parsed.path().to_owned(),
    })
}

/// Whether a placeholder's value would move the path: `.`, `..`, or a percent-encoded form of
/// them (decoded however many times).
fn dot_segment(value: &str) -> bool {
    let mut current = value.to_owned();
    for _ in 0..4 {
        if current == "." || current == ".." {
            return true;
        }
        let decoded = percent_encoding::percent_decode_str(&current)
            .decode_utf8_lossy()
            .into_owned();
        if decoded == current {
            return false;
        }
        current = decoded;
    }
    current == "." || current == ".."
}

impl ToolEntry {
    /// What the entry's URL template fixes: origin and path prefix.
    pub fn destination(&self) -> Result<Destination, CatalogError> {
        destination(&self.url)
    }

    /// Checks the entry: known method, an http(s) URL template whose placeholders stand in the
    /// path and query only, sane headers, and a credential format that places `{secret}`.
    pub fn validate(&self) -> Result<(), CatalogError> {
        let bad = |m: String| Err(CatalogError::Invalid(m));
        if !crate::valid_name(&self.service) || !crate::valid_name(&self.tool_name) {
            return bad("service and tool name must be 1 to 256 printable characters".into());
        }
        if !METHODS.contains(&self.method.as_str()) {
            return bad(format!("method must be one of {METHODS:?}"));
        }
        destination(&self.url)?;
        let mut probe = self.url.clone();
        for p in placeholders(&self.url) {
            probe = probe.replace(&format!("{{{p}}}"), "x");
        }
        let parsed =
            reqwest::Url::parse(&probe).map_err(|e| CatalogError::Invalid(format!("url: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
            return bad("url must be an http(s) URL with a host".into());
        }
        if self.headers.keys().any(|h| !valid_header_name(h))
            || self.headers.values().any(|v| v.contains(['\r', '\n']))
        {
            return bad(
                "header names are letters, digits and `-`; values have no line breaks".into(),
            );
        }
        if let Some(c) = &self.credential
            && (!valid_header_name(&c.header)
                || !c.format.contains("{secret}")
                || c.format.contains(['\r', '\n']))
        {
            return bad("credential needs a header name and a format containing {secret}".into());
        }
        Ok(())
    }

    /// Resolves the entry with a call's arguments: placeholders percent-encoded into the URL,
    /// query and body arguments placed. A missing argument is an error.
    pub fn resolve(&self, arguments: &Map<String, Value>) -> Result<ResolvedRequest, CatalogError> {
        let text = |name: &str| -> Result<String, CatalogError> {
            match arguments.get(name) {
                Some(Value::String(s)) => Ok(s.clone()),
                Some(v @ (Value::Number(_) | Value::Bool(_))) => Ok(v.to_string()),
                Some(_) => Err(CatalogError::Unresolvable(format!(
                    "argument `{name}` must be a string, number or boolean"
                ))),
                None => Err(CatalogError::Unresolvable(format!(
                    "argument `{name}` is missing"
                ))),
            }
        };
        let fixed = destination(&self.url)?;
        let mut url = self.url.clone();
        for p in placeholders(&self.url) {
            let value = text(p)?;
            if dot_segment(&value) {
                return Err(CatalogError::Unresolvable(format!(
                    "argument `{p}` may not be `.` or `..` (in any encoding)"
                )));
            }
            url = url.replace(
                &format!("{{{p}}}"),
                &utf8_percent_encode(&value, NON_ALPHANUMERIC).to_string(),
            );
        }
        let mut parsed = reqwest::Url::parse(&url)
            .map_err(|e| CatalogError::Unresolvable(format!("url: {e}")))?;
        if parsed.origin() != fixed.origin || !parsed.path().starts_with(&fixed.path_prefix) {
            return Err(CatalogError::Unresolvable(
                "the arguments would move the request off the catalog entry's destination".into(),
            ));
        }
        let present: Vec<&String> = self
            .query
            .iter()
            .filter(|q| arguments.contains_key(*q))
            .collect();
        if !present.is_empty() {
            let mut pairs = parsed.query_pairs_mut();
            for q in present {
                pairs.append_pair(q, &text(q)?);
            }
        }
        let body = (!self.body.is_empty()).then(|| {
            let fields: Map<String, Value> = self
                .body
                .iter()
                .filter_map(|b| Some((b.clone(), arguments.get(b)?.clone())))
                .collect();
            Value::Object(fields).to_string()
        });
        Ok(ResolvedRequest {
            service: self.service.clone(),
            method: self.method.clone(),
            url: parsed.to_string(),
            headers: self.headers.clone(),
            body,
            credential: self.credential.clone(),
            destructive: self.destructive,
        })
    }
}

/// The tenants' catalogs in the store. Cheap to clone.
///
/// Which services each tenant has entries for is also kept in memory, so a call naming a
/// service outside the tenant's catalog is answered without touching the store. The set only
/// grows, after an entry is stored: a service whose entries were all deleted stays in it, and
/// its calls are answered `unknown_tool` rather than treated as uncatalogued.
#[derive(Clone)]
pub struct Catalog {
    store: Store,
    services: Arc<RwLock<HashMap<String, HashSet<String>>>>,
}

impl Catalog {
    /// The catalogs of `tenants` in `store`, with each tenant's services read once.
    pub fn load<'a>(
        store: Store,
        tenants: impl IntoIterator<Item = &'a str>,
        degraded: &crate::degraded::Degraded,
    ) -> Result<Self, CatalogError> {
        let catalog = Self {
            store,
            services: Arc::default(),
        };
        let mut services = HashMap::new();
        for tenant_id in tenants {
            let names: HashSet<String> = match catalog.list(tenant_id) {
                Ok(entries) => entries.into_iter().map(|e| e.service).collect(),
                Err(e) => {
                    degraded.mark(tenant_id, crate::degraded::Part::Catalog, e);
                    continue;
                }
            };
            if !names.is_empty() {
                services.insert(tenant_id.to_owned(), names);
            }
        }
        *catalog.services.write().expect("catalog services lock") = services;
        Ok(catalog)
    }

    /// Adds or replaces an entry, after validating it, without a record (the unit tests').
    #[cfg(test)]
    pub fn put(&self, tenant_id: &str, entry: &ToolEntry) -> Result<(), CatalogError> {
        let (table, key, value) = self.row(tenant_id, entry)?;
        self.store.put_raw(table, &key, &value)?;
        self.stored(tenant_id, entry);
        Ok(())
    }

    /// The store row of a validated entry, to commit with the record of its change; then
    /// [`Catalog::stored`].
    pub fn row(&self, tenant_id: &str, entry: &ToolEntry) -> Result<Write, CatalogError> {
        entry.validate()?;
        let key = Self::key(tenant_id, &entry.service, &entry.tool_name);
        let value = serde_json::to_vec(entry).expect("catalog entries serialize");
        Ok((Table::Catalog, key, value))
    }

    /// The row of `service` / `tool_name`, to remove with the record of its deletion.
    pub fn key(tenant_id: &str, service: &str, tool_name: &str) -> Vec<u8> {
        tenant_key(tenant_id, &[service.as_bytes(), tool_name.as_bytes()])
    }

    /// Notes in memory that `entry` is stored (its service is now catalogued).
    pub fn stored(&self, tenant_id: &str, entry: &ToolEntry) {
        self.services
            .write()
            .expect("catalog services lock")
            .entry(tenant_id.to_owned())
            .or_default()
            .insert(entry.service.clone());
    }

    /// Notes an entry another process sharing the store wrote (by its row's key).
    pub fn refresh(&self, key: &[u8]) -> Result<(), CatalogError> {
        if let Some(entry) = self.store.get::<ToolEntry>(Table::Catalog, key)? {
            self.stored(&crate::tenants::tenant_of_key(key), &entry);
        }
        Ok(())
    }

    /// The entry for `service` and `tool_name`.
    pub fn get(
        &self,
        tenant_id: &str,
        service: &str,
        tool_name: &str,
    ) -> Result<Option<ToolEntry>, CatalogError> {
        Ok(self
            .store
            .get(Table::Catalog, &Self::key(tenant_id, service, tool_name))?)
    }

    /// Whether the tenant has any entry for `service` (from memory; on a store other processes
    /// write, a service not known here is looked up, so an entry just put through another
    /// node is in force at once).
    pub fn has_service(&self, tenant_id: &str, service: &str) -> bool {
        let known = self
            .services
            .read()
            .expect("catalog services lock")
            .get(tenant_id)
            .is_some_and(|names| names.contains(service));
        if known || !self.store.is_shared() {
            return known;
        }
        let prefix = tenant_key(tenant_id, &[service.as_bytes(), b""]);
        let end = crate::store::prefix_end(&prefix).unwrap_or_default();
        let stored = self
            .store
            .range_raw(Table::Catalog, &prefix, &end, 1)
            .map(|rows| !rows.is_empty())
            // A store that cannot be read is not taken as "uncatalogued": the call then
            // resolves through the store and fails there.
            .unwrap_or(true);
        if stored {
            self.services
                .write()
                .expect("catalog services lock")
                .entry(tenant_id.to_owned())
                .or_default()
                .insert(service.to_owned());
        }
        stored
    }

    /// A page of the tenant's entries in key (service, tool name) order, strictly after the
    /// key suffix `after`: at most `limit`, and the suffix the next page starts after.
    #[allow(clippy::type_complexity)]
    pub fn page(
        &self,
        tenant_id: &str,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<ToolEntry>, Option<Vec<u8>>), CatalogError> {
        let (rows, next) = crate::page::rows_after(
            &self.store,
            Table::Catalog,
            &tenant_prefix(tenant_id),
            after,
            limit,
        )?;
        let entries = rows
            .iter()
            .map(|(_, value)| {
                serde_json::from_slice(value).map_err(|source| StoreError::Corrupt {
                    table: Table::Catalog,
                    source,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok((entries, next))
    }

    /// Every entry of the tenant.
    pub fn list(&self, tenant_id: &str) -> Result<Vec<ToolEntry>, CatalogError> {
        Ok(self
            .store
            .scan::<ToolEntry>(Table::Catalog, &tenant_prefix(tenant_id))?
            .into_iter()
            .map(|(_, e)| e)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry() -> ToolEntry {
        ToolEntry {
            service: "github".into(),
            tool_name: "github.repos.delete".into(),
            method: "DELETE".into(),
            url: "https://api.github.com/repos/{owner}/{repo}".into(),
            query: vec!["reason".into()],
            body: vec![],
            headers: BTreeMap::from([("Accept".into(), "application/json".into())]),
            credential: Some(CredentialUse {
                name: "github".into(),
                header: "Authorization".into(),
                format: "Bearer {secret}".into(),
            }),
            destructive: false,
        }
    }

    #[test]
    fn resolves_with_percent_encoded_substitutions() {
        let args = json!({"owner": "acme corp", "repo": "a/b?c", "reason": "tidy up"});
        let r = entry().resolve(args.as_object().unwrap()).unwrap();
        assert_eq!(
            r.url,
            "https://api.github.com/repos/acme%20corp/a%2Fb%3Fc?reason=tidy+up"
        );
        assert_eq!(r.method, "DELETE");
        assert!(r.body.is_none());
    }

    #[test]
    fn a_dot_segment_argument_in_any_encoding_is_refused() {
        let mut e = entry();
        e.url = "https://api.github.com/orgs/acme/repos/{r}/collaborators/{u}".into();
        for dots in [".", "..", "%2e", "%2E%2E", "%2e.", ".%2e", "%252e%252e"] {
            let args = json!({"r": dots, "u": "mallory"});
            assert!(
                matches!(
                    e.resolve(args.as_object().unwrap()),
                    Err(CatalogError::Unresolvable(_))
                ),
                "{dots} resolved"
            );
        }
        let fine = json!({"r": "..repo", "u": "mallory"});
        let r = e.resolve(fine.as_object().unwrap()).unwrap();
        assert!(
            r.url.starts_with("https://api.github.com/orgs/acme/repos/"),
            "{}",
            r.url
        );
    }

    #[test]
    fn placeholders_may_not_choose_the_scheme_host_or_port() {
        for url in [
            "https://{host}/repos",
            "https://api.x.com{suffix}/v1",
            "https://api.x.com:{port}/v1",
            "{scheme}://api.x.com/v1",
            "https://{user}@api.x.com/v1",
            "https://api.x.com/v1#{frag}",
        ] {
            let mut e = entry();
            e.url = url.into();
            assert!(
                matches!(e.validate(), Err(CatalogError::Invalid(_))),
                "{url} was accepted"
            );
        }
        let mut e = entry();
        e.url = "https://api.x.com/v1/{id}?q={q}".into();
        assert!(e.validate().is_ok());
    }

    #[test]
    fn a_resolved_url_keeps_the_templates_origin_and_path_prefix() {
        let e = entry();
        let d = e.destination().unwrap();
        assert_eq!(d.origin.ascii_serialization(), "https://api.github.com");
        assert_eq!(d.path_prefix, "/repos/");
        for owner in ["@evil.example", "//evil.example", "\\\\evil", "a/../../x"] {
            let args = json!({"owner": owner, "repo": "r"});
            if let Ok(r) = e.resolve(args.as_object().unwrap()) {
                let url = reqwest::Url::parse(&r.url).unwrap();
                assert_eq!(url.host_str(), Some("api.github.com"), "{owner}");
                assert!(url.path().starts_with("/repos/"), "{owner}: {}", r.url);
            }
        }
    }

    #[test]
    fn body_arguments_become_a_json_object() {
        let mut e = entry();
        e.method = "POST".into();
        e.url = "https://api.stripe.com/v1/charges".into();
        e.query = vec![];
        e.body = vec!["amount".into(), "currency".into()];
        let r = e
            .resolve(
                json!({"amount": 50, "currency": "gbp", "x": 1})
                    .as_object()
                    .unwrap(),
            )
            .unwrap();
        assert_eq!(r.body.as_deref(), Some(r#"{"amount":50,"currency":"gbp"}"#));
    }

    #[test]
    fn absent_query_arguments_leave_no_query() {
        let r = entry()
            .resolve(json!({"owner": "a", "repo": "b"}).as_object().unwrap())
            .unwrap();
        assert_eq!(r.url, "https://api.github.com/repos/a/b");
    }

    #[test]
    fn missing_or_structured_placeholder_arguments_do_not_resolve() {
        assert!(
            entry()
                .resolve(json!({"owner": "a"}).as_object().unwrap())
                .is_err()
        );
        assert!(
            entry()
                .resolve(json!({"owner": {"x": 1}, "repo": "r"}).as_object().unwrap())
                .is_err()
        );
    }

    #[test]
    fn validation_refuses_bad_entries() {
        let mut e = entry();
        e.method = "TRACE".into();
        assert!(e.validate().is_err());
        let mut e = entry();
        e.url = "file:///etc/passwd".into();
        assert!(e.validate().is_err());
        let mut e = entry();
        e.credential.as_mut().unwrap().format = "Bearer".into();
        assert!(e.validate().is_err());
        let mut e = entry();
        e.headers
            .insert("X-Evil".into(), "a\r\nInjected: yes".into());
        assert!(e.validate().is_err());
        assert!(entry().validate().is_ok());
    }

    #[test]
    fn services_are_known_from_memory_after_a_put_and_after_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let catalog = Catalog::load(store, ["t1", "t2"], &Default::default()).unwrap();
            assert!(!catalog.has_service("t1", "github"));
            catalog.put("t1", &entry()).unwrap();
            assert!(catalog.has_service("t1", "github"));
            assert!(!catalog.has_service("t2", "github"));
            assert!(!catalog.has_service("t1", "stripe"));
            assert!(!catalog.has_service("t", "github"));

            // A refused entry is neither stored nor known.
            let mut bad = entry();
            bad.service = "stripe".into();
            bad.method = "TRACE".into();
            assert!(catalog.put("t1", &bad).is_err());
            assert!(!catalog.has_service("t1", "stripe"));
        }
        let store = Store::open(dir.path()).unwrap();
        let catalog = Catalog::load(store, ["t1", "t2"], &Default::default()).unwrap();
        assert!(catalog.has_service("t1", "github"));
        assert!(!catalog.has_service("t2", "github"));
        assert_eq!(
            catalog.get("t1", "github", "github.repos.delete").unwrap(),
            Some(entry())
        );
        assert_eq!(catalog.list("t1").unwrap(), vec![entry()]);
    }
}

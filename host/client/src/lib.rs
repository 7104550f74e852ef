//! A typed client for Writ's HTTP API: one method per route, over the wire types the gateway
//! serves (`writ-wire`). The CLI's remote commands, the load tool and the tests use it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), writ_client::ClientError> {
//! let operator = writ_client::Client::new("http://127.0.0.1:8080", "wk_op_…")?;
//! let tenant = operator.create_tenant("acme").await?;
//! println!("{}", tenant.tenant_id);
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
pub use writ_wire as wire;
use writ_wire::*;

/// What a call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The gateway URL is not a valid base URL.
    #[error("invalid gateway URL `{0}`")]
    InvalidUrl(String),
    /// The request could not be sent or its answer read.
    #[error("reaching the gateway: {0}")]
    Transport(#[from] reqwest::Error),
    /// The gateway answered with an error.
    #[error("{status}: {code}: {message}")]
    Api {
        /// The HTTP status.
        status: StatusCode,
        /// The error's machine-readable code (`{"error": {"code"}}`).
        code: String,
        /// The error's message.
        message: String,
    },
    /// A success answer that is not the expected JSON.
    #[error("{status}: unexpected answer: {detail}")]
    Decode {
        /// The HTTP status.
        status: StatusCode,
        /// What did not parse.
        detail: String,
    },
    /// The gateway did not answer within the caller's time.
    #[error("the gateway did not answer within {0:?}")]
    Timeout(std::time::Duration),
}

/// A client acting with one key against one gateway.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Client {
    /// A client for the gateway at `base` (e.g. `http://127.0.0.1:8080`) using `key`. A loopback
    /// gateway is reached directly, never through a proxy the environment names.
    pub fn new(base: &str, key: &str) -> Result<Self, ClientError> {
        let url = reqwest::Url::parse(base).map_err(|_| ClientError::InvalidUrl(base.into()))?;
        let loopback = match url.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(d)) => d == "localhost",
            None => return Err(ClientError::InvalidUrl(base.into())),
        };
        let mut builder = reqwest::Client::builder();
        if loopback {
            builder = builder.no_proxy();
        }
        Ok(Self::with_http(builder.build()?, base, key))
    }

    /// A client over an existing `reqwest` client (its pool, timeouts and proxy settings).
    pub fn with_http(http: reqwest::Client, base: &str, key: &str) -> Self {
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            key: key.to_owned(),
        }
    }

    /// The same gateway and connection pool, acting with another key.
    pub fn with_key(&self, key: &str) -> Self {
        Self {
            http: self.http.clone(),
            base: self.base.clone(),
            key: key.to_owned(),
        }
    }

    /// The gateway's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// A request to `path` (which starts with `/`) carrying the key, for routes this client
    /// has no method for.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key)
    }

    async fn send<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T, ClientError> {
        let response = request.send().await?;
        let status = response.status();
        let bytes = response.bytes().await?;
        if !status.is_success() {
            return Err(api_error(status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            status,
            detail: e.to_string(),
        })
    }

    async fn send_empty(&self, request: RequestBuilder) -> Result<(), ClientError> {
        let response = request.send().await?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        Err(api_error(status, &response.bytes().await?))
    }

    async fn send_text(&self, request: RequestBuilder) -> Result<String, ClientError> {
        let response = request.send().await?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            return Err(api_error(status, text.as_bytes()));
        }
        Ok(text)
    }

    async fn json<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.send(self.request(method, path).json(body)).await
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.send(self.request(Method::GET, path)).await
    }

    // Operator routes.

    /// `POST /v1/admin/tenants`.
    pub async fn create_tenant(&self, name: &str) -> Result<TenantView, ClientError> {
        let body = CreateTenantBody { name: name.into() };
        self.json(Method::POST, "/v1/admin/tenants", &body).await
    }

    /// `PATCH /v1/admin/tenants/{tenant_id}`.
    pub async fn patch_tenant(
        &self,
        tenant_id: &str,
        limits: &PatchTenantBody,
    ) -> Result<TenantView, ClientError> {
        let path = format!("/v1/admin/tenants/{}", segment(tenant_id));
        self.json(Method::PATCH, &path, limits).await
    }

    /// `POST /v1/admin/tenants/{tenant_id}/keys`.
    pub async fn create_key(
        &self,
        tenant_id: &str,
        key: &CreateKeyBody,
    ) -> Result<CreatedKey, ClientError> {
        let path = format!("/v1/admin/tenants/{}/keys", segment(tenant_id));
        self.json(Method::POST, &path, key).await
    }

    /// `GET /v1/admin/tenants/{tenant_id}/keys`: every page, followed through `next_cursor`.
    pub async fn keys(&self, tenant_id: &str) -> Result<KeyList, ClientError> {
        let mut keys = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.keys_page(tenant_id, cursor.as_deref(), None).await?;
            keys.extend(page.keys);
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => {
                    return Ok(KeyList {
                        keys,
                        next_cursor: None,
                    });
                }
            }
        }
    }

    /// One page of `GET /v1/admin/tenants/{tenant_id}/keys`, after `cursor`.
    pub async fn keys_page(
        &self,
        tenant_id: &str,
        cursor: Option<&str>,
        limit: Option<usize>,
    ) -> Result<KeyList, ClientError> {
        let path = format!("/v1/admin/tenants/{}/keys", segment(tenant_id));
        self.send(
            self.request(Method::GET, &path)
                .query(&page_query(cursor, limit)),
        )
        .await
    }

    /// `DELETE /v1/admin/keys/{key_id}`.
    pub async fn revoke_key(&self, key_id: &str) -> Result<KeyView, ClientError> {
        let path = format!("/v1/admin/keys/{}", segment(key_id));
        self.send(self.request(Method::DELETE, &path)).await
    }

    // Policies.

    /// `POST /v1/policies`: uploads a component, activating it if asked.
    pub async fn upload_policy(
        &self,
        name: &str,
        activate: bool,
        component: Vec<u8>,
    ) -> Result<UploadedPolicy, ClientError> {
        let request = self
            .request(Method::POST, "/v1/policies")
            .query(&[("name", name), ("activate", &activate.to_string())])
            .header("content-type", "application/wasm")
            .body(component);
        self.send(request).await
    }

    /// `GET /v1/policies`.
    pub async fn policies(&self) -> Result<PolicyList, ClientError> {
        self.get("/v1/policies").await
    }

    /// `POST /v1/policies/{policy_id}/activate`.
    pub async fn activate_policy(&self, policy_id: &str) -> Result<PolicyView, ClientError> {
        let path = format!("/v1/policies/{}/activate", segment(policy_id));
        self.send(self.request(Method::POST, &path)).await
    }

    // Tool calls.

    /// `POST /v1/gateway/execute`, holding an escalated call at most `wait` seconds.
    pub async fn execute(
        &self,
        call: &ExecuteBody,
        wait: Option<u64>,
    ) -> Result<ExecuteResponse, ClientError> {
        let mut request = self.request(Method::POST, "/v1/gateway/execute").json(call);
        if let Some(wait) = wait {
            request = request.query(&[("wait", wait)]);
        }
        self.send(request).await
    }

    /// `POST /v1/execute` (the Tenet form). Its answer is the Tenet SDK's JSON.
    pub async fn tenet_execute(&self, call: &TenetBody) -> Result<Value, ClientError> {
        self.json(Method::POST, "/v1/execute", call).await
    }

    /// `GET /v1/jobs/{id}` (the Tenet SDK's JSON).
    pub async fn job(&self, job_id: &str) -> Result<Value, ClientError> {
        self.get(&format!("/v1/jobs/{}", segment(job_id))).await
    }

    // Escalations.

    /// `GET /v1/escalations`, optionally of one status: every page, followed through
    /// `next_cursor`.
    pub async fn escalations(&self, status: Option<&str>) -> Result<EscalationList, ClientError> {
        self.every_escalation(async |cursor| {
            self.escalations_page(status, cursor.as_deref(), None).await
        })
        .await
    }

    /// One page of `GET /v1/escalations`, optionally of one status, after `cursor`.
    pub async fn escalations_page(
        &self,
        status: Option<&str>,
        cursor: Option<&str>,
        limit: Option<usize>,
    ) -> Result<EscalationList, ClientError> {
        let query = EscalationQuery {
            status: status.map(str::to_owned),
            cursor: cursor.map(str::to_owned),
            limit,
        };
        self.send(self.request(Method::GET, "/v1/escalations").query(&query))
            .await
    }

    /// `GET /v1/escalations/pending`: every page, followed through `next_cursor`.
    pub async fn pending_escalations(&self) -> Result<EscalationList, ClientError> {
        self.every_escalation(async |cursor| {
            self.pending_escalations_page(cursor.as_deref(), None).await
        })
        .await
    }

    /// One page of `GET /v1/escalations/pending`, after `cursor`.
    pub async fn pending_escalations_page(
        &self,
        cursor: Option<&str>,
        limit: Option<usize>,
    ) -> Result<EscalationList, ClientError> {
        self.send(
            self.request(Method::GET, "/v1/escalations/pending")
                .query(&page_query(cursor, limit)),
        )
        .await
    }

    /// Every escalation `page` lists, page after page.
    async fn every_escalation(
        &self,
        page: impl AsyncFn(Option<String>) -> Result<EscalationList, ClientError>,
    ) -> Result<EscalationList, ClientError> {
        let mut escalations = Vec::new();
        let mut cursor = None;
        loop {
            let next = page(cursor).await?;
            escalations.extend(next.escalations);
            match next.next_cursor {
                Some(c) => cursor = Some(c),
                None => {
                    return Ok(EscalationList {
                        escalations,
                        next_cursor: None,
                        truncated: false,
                    });
                }
            }
        }
    }

    /// `GET /v1/escalations/{id}`.
    pub async fn escalation(&self, id: &str) -> Result<EscalationView, ClientError> {
        self.get(&format!("/v1/escalations/{}", segment(id))).await
    }

    /// `GET /v1/escalations/{id}/wait`, at most `timeout` seconds.
    pub async fn wait_escalation(
        &self,
        id: &str,
        timeout: Option<u64>,
    ) -> Result<WaitResponse, ClientError> {
        let mut request = self.request(
            Method::GET,
            &format!("/v1/escalations/{}/wait", segment(id)),
        );
        if let Some(timeout) = timeout {
            request = request.query(&[("timeout", timeout)]);
        }
        self.send(request).await
    }

    /// `POST /v1/escalations/{id}/approve`.
    pub async fn approve(
        &self,
        id: &str,
        note: Option<&str>,
    ) -> Result<EscalationView, ClientError> {
        self.note(id, "approve", note).await
    }

    /// `POST /v1/escalations/{id}/reject`.
    pub async fn reject(
        &self,
        id: &str,
        note: Option<&str>,
    ) -> Result<EscalationView, ClientError> {
        self.note(id, "reject", note).await
    }

    /// `POST /v1/events/{event_id}/completion` (the agent key that made the call).
    pub async fn complete(
        &self,
        event_id: &str,
        body: &CompletionBody,
    ) -> Result<CompletionView, ClientError> {
        let path = format!("/v1/events/{}/completion", segment(event_id));
        self.json(Method::POST, &path, body).await
    }

    /// `POST /v1/escalations/{id}/withdraw` (the agent key that made the call).
    pub async fn withdraw(&self, id: &str) -> Result<EscalationView, ClientError> {
        let path = format!("/v1/escalations/{}/withdraw", segment(id));
        self.send(self.request(Method::POST, &path)).await
    }

    async fn note(
        &self,
        id: &str,
        verb: &str,
        note: Option<&str>,
    ) -> Result<EscalationView, ClientError> {
        let path = format!("/v1/escalations/{}/{verb}", segment(id));
        let body = NoteBody {
            note: note.map(str::to_owned),
        };
        self.json(Method::POST, &path, &body).await
    }

    /// `PUT /v1/webhooks`.
    pub async fn set_webhooks(&self, urls: Vec<String>) -> Result<WebhooksView, ClientError> {
        self.json(Method::PUT, "/v1/webhooks", &WebhooksBody { urls })
            .await
    }

    // Catalog and credentials.

    /// `PUT /v1/catalog/{service}/{tool_name}`.
    pub async fn put_tool(
        &self,
        service: &str,
        tool_name: &str,
        tool: &ToolBody,
    ) -> Result<ToolView, ClientError> {
        let path = format!("/v1/catalog/{}/{}", segment(service), segment(tool_name));
        self.json(Method::PUT, &path, tool).await
    }

    /// `GET /v1/catalog`: every page, followed through `next_cursor`.
    pub async fn tools(&self) -> Result<ToolList, ClientError> {
        let mut tools = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.tools_page(cursor.as_deref(), None).await?;
            tools.extend(page.tools);
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => {
                    return Ok(ToolList {
                        tools,
                        next_cursor: None,
                    });
                }
            }
        }
    }

    /// One page of `GET /v1/catalog`, after `cursor`.
    pub async fn tools_page(
        &self,
        cursor: Option<&str>,
        limit: Option<usize>,
    ) -> Result<ToolList, ClientError> {
        self.send(
            self.request(Method::GET, "/v1/catalog")
                .query(&page_query(cursor, limit)),
        )
        .await
    }

    /// `PUT /v1/credentials/{name}`: the secret and the origins it may be sent to.
    pub async fn put_credential(
        &self,
        name: &str,
        secret: &str,
        origins: &[&str],
    ) -> Result<(), ClientError> {
        let body = CredentialBody {
            secret: secret.into(),
            origins: origins.iter().map(|o| (*o).to_owned()).collect(),
        };
        let path = format!("/v1/credentials/{}", segment(name));
        self.send_empty(self.request(Method::PUT, &path).json(&body))
            .await
    }

    /// `DELETE /v1/credentials/{name}`.
    pub async fn delete_credential(&self, name: &str) -> Result<(), ClientError> {
        let path = format!("/v1/credentials/{}", segment(name));
        self.send_empty(self.request(Method::DELETE, &path)).await
    }

    // Audit.

    /// `GET /v1/audit`.
    pub async fn audit(
        &self,
        session_id: Option<&str>,
        after_seq: Option<u64>,
        limit: Option<usize>,
    ) -> Result<AuditPage, ClientError> {
        let query = AuditQuery {
            session_id: session_id.map(str::to_owned),
            after_seq,
            limit,
        };
        self.send(self.request(Method::GET, "/v1/audit").query(&query))
            .await
    }

    /// `GET /v1/audit/verify`.
    pub async fn verify(&self) -> Result<VerifyView, ClientError> {
        self.get("/v1/audit/verify").await
    }

    /// `GET /v1/audit/export`: the chain as JSON Lines.
    pub async fn export(&self, after_seq: Option<u64>) -> Result<String, ClientError> {
        let query = ExportQuery { after_seq };
        self.send_text(self.request(Method::GET, "/v1/audit/export").query(&query))
            .await
    }

    /// `GET /v1/audit/checkpoint`: the latest signed checkpoint note.
    pub async fn checkpoint(&self) -> Result<String, ClientError> {
        self.send_text(self.request(Method::GET, "/v1/audit/checkpoint"))
            .await
    }

    /// `GET /v1/audit/public-key`.
    pub async fn public_key(&self) -> Result<PublicKeyView, ClientError> {
        self.get("/v1/audit/public-key").await
    }

    /// `GET /v1/sessions/{session_id}`: the first page of its events (see
    /// [`Client::session_page`]).
    pub async fn session(&self, session_id: &str) -> Result<SessionView, ClientError> {
        self.get(&format!("/v1/sessions/{}", segment(session_id)))
            .await
    }

    /// One page of `GET /v1/sessions/{session_id}`: its events after `after_seq`, and the
    /// counts of the calls among them.
    pub async fn session_page(
        &self,
        session_id: &str,
        after_seq: Option<u64>,
        limit: Option<usize>,
    ) -> Result<SessionView, ClientError> {
        let path = format!("/v1/sessions/{}", segment(session_id));
        let query = SessionQuery { after_seq, limit };
        self.send(self.request(Method::GET, &path).query(&query))
            .await
    }

    /// `GET /metrics` (OpenMetrics text).
    pub async fn metrics(&self) -> Result<String, ClientError> {
        self.send_text(self.request(Method::GET, "/metrics")).await
    }
}

/// `s` percent-encoded as one path segment.
fn page_query(cursor: Option<&str>, limit: Option<usize>) -> PageQuery {
    PageQuery {
        cursor: cursor.map(str::to_owned),
        limit,
    }
}

fn segment(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

fn api_error(status: StatusCode, body: &[u8]) -> ClientError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().map(|v| &v["error"]);
    let field = |name: &str| error.and_then(|e| e[name].as_str()).map(str::to_owned);
    ClientError::Api {
        status,
        code: field("code").unwrap_or_else(|| "unknown".into()),
        message: field("message")
            .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(500).collect()),
    }
}

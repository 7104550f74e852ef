//! A gateway driven over HTTP, wherever it runs: in the test's process ([`crate::gateway`]) or
//! as a `writ serve` child ([`crate::child`]). Both dereference to [`Api`].

use std::time::{Duration, Instant};

use reqwest::{Client, Method, Response};
use serde_json::{Value, json};
use writ_client::wire::CreateKeyBody;

use crate::component;
use crate::gateway::TestTenant;

/// A gateway's base URL, its operator key and an HTTP client.
pub struct Api {
    base: String,
    /// The operator key.
    pub operator_key: String,
    client: Client,
}

impl Api {
    /// The gateway at `base` (`http://127.0.0.1:<port>`), operated with `operator_key`.
    pub fn new(base: String, operator_key: String) -> Self {
        Self {
            base,
            operator_key,
            client: Client::builder()
                .no_proxy()
                .build()
                .expect("an HTTP client"),
        }
    }

    /// Sets `t`'s limits with the operator key (`PATCH /v1/admin/tenants/{id}`); asserts 200.
    pub async fn set_limits(&self, t: &TestTenant, limits: Value) {
        let (status, body) = self
            .call(
                Method::PATCH,
                &format!("/v1/admin/tenants/{}", t.id),
                Some(&self.operator_key),
                Some(limits),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }

    /// The base URL.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request with `key` in `X-PROVENANCE-API-KEY` and an optional JSON body.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> Response {
        let mut r = self.client.request(method, self.url(path));
        if let Some(key) = key {
            r = r.header("X-PROVENANCE-API-KEY", key);
        }
        if let Some(body) = body {
            r = r.json(&body);
        }
        r.send().await.expect("request sent")
    }

    /// Like [`Self::request`] but returns the status and the JSON body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let response = self.request(method, path, key, body).await;
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    /// `POST /v1/gateway/execute?wait=0` with the Provenance body: an escalated call is
    /// answered ESCALATE at once.
    pub async fn execute(
        &self,
        key: &str,
        session: &str,
        action: &str,
        parameters: Value,
    ) -> (u16, Value) {
        self.execute_waiting(key, session, action, parameters, Some(0))
            .await
    }

    /// `POST /v1/gateway/execute` (`query` after the path, e.g. `?wait=0`) with `body` sent
    /// as it is, for bodies a `Value` cannot express (malformed, or spaced as an agent spaced it).
    pub async fn execute_raw(&self, key: &str, query: &str, body: String) -> (u16, Value) {
        let r = reqwest::Client::new()
            .post(self.url(&format!("/v1/gateway/execute{query}")))
            .header("X-PROVENANCE-API-KEY", key)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json::<Value>().await.unwrap())
    }

    /// `POST /v1/gateway/execute`, holding an escalated call up to `wait` seconds (the tenant's
    /// hold when `None`).
    pub async fn execute_waiting(
        &self,
        key: &str,
        session: &str,
        action: &str,
        parameters: Value,
        wait: Option<u64>,
    ) -> (u16, Value) {
        let path = match wait {
            Some(w) => format!("/v1/gateway/execute?wait={w}"),
            None => "/v1/gateway/execute".to_owned(),
        };
        self.call(
            Method::POST,
            &path,
            Some(key),
            Some(json!({
                "session_id": session,
                "agent_id": "agent-1",
                "action": action,
                "decision": "ALLOW",
                "parameters": parameters,
            })),
        )
        .await
    }

    /// Uploads a component as the tenant admin.
    pub async fn upload(
        &self,
        admin: &str,
        name: &str,
        bytes: Vec<u8>,
        activate: bool,
    ) -> (u16, Value) {
        let response = self
            .client
            .post(self.url(&format!("/v1/policies?name={name}&activate={activate}")))
            .header("X-PROVENANCE-API-KEY", admin)
            .header("content-type", "application/wasm")
            .body(bytes)
            .send()
            .await
            .expect("upload sent");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A typed API client acting with `key`.
    pub fn client(&self, key: &str) -> writ_client::Client {
        writ_client::Client::with_http(self.client.clone(), &self.url(""), key)
    }

    /// Creates a tenant with an agent, reviewer and admin key, and `policy` (a guest path)
    /// active if given.
    pub async fn tenant(&self, name: &str, policy: Option<&str>) -> TestTenant {
        let operator = self.client(&self.operator_key);
        let id = operator
            .create_tenant(name)
            .await
            .expect("tenant created")
            .tenant_id;
        let key = async |role: &str, subject: &str| {
            let key = CreateKeyBody {
                role: role.into(),
                subject: subject.into(),
                agent_id: None,
            };
            operator
                .create_key(&id, &key)
                .await
                .expect("key created")
                .api_key
        };
        let agent = key("agent", "agent-owner").await;
        let reviewer = key("reviewer", "reviewer@example.com").await;
        let admin = key("admin", "admin@example.com").await;
        if let Some(path) = policy {
            self.client(&admin)
                .upload_policy("policy", true, component(path))
                .await
                .expect("policy uploaded");
        }
        TestTenant {
            id,
            agent,
            reviewer,
            admin,
        }
    }

    /// The oldest pending escalation of the reviewer's tenant, once there is one (polled
    /// every 100 ms for at most 30 s: a call held by another process appears when it does).
    pub async fn pending_escalation(&self, reviewer: &str) -> Value {
        for _ in 0..300 {
            let (_, page) = self
                .call(Method::GET, "/v1/escalations/pending", Some(reviewer), None)
                .await;
            if let Some(e) = page["escalations"].get(0) {
                return e.clone();
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("no escalation appeared");
    }

    /// Every audit record of the key's tenant.
    pub async fn audit(&self, key: &str) -> Vec<Value> {
        let client = self.client(key);
        let mut out = Vec::new();
        let mut after: Option<u64> = None;
        loop {
            let page = client
                .audit(None, after, Some(1000))
                .await
                .expect("audit page");
            out.extend(page.records);
            match page.next_after_seq {
                Some(a) => after = Some(a),
                None => return out,
            }
        }
    }

    /// Waits until `key` authenticates here (its creation reached this gateway, when another
    /// made it): how long it took.
    pub async fn until_key_known(&self, key: &str) -> Duration {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            let (status, _) = self
                .call(Method::GET, "/v1/escalations/pending", Some(key), None)
                .await;
            if status != 401 {
                return started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("the key never reached {}", self.base);
    }

    /// Waits until this gateway has compiled the tenant of `agent`'s active policy (until
    /// then its calls are blocked `no_active_policy`; the probes are in session `probe`).
    pub async fn until_policy_loaded(&self, agent: &str) {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            let (_, body) = self.execute(agent, "probe", "probe", json!({})).await;
            if body["decision"].is_string() && body["codes"] != json!(["no_active_policy"]) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the policy never loaded on {}", self.base);
    }

    /// `GET /v1/escalations/{id}/wait?timeout=SECONDS` with `key`: the status and the body.
    pub async fn wait_escalation(&self, key: &str, id: &str, timeout_s: u64) -> (u16, Value) {
        let path = format!("/v1/escalations/{id}/wait?timeout={timeout_s}");
        self.call(Method::GET, &path, Some(key), None).await
    }
}

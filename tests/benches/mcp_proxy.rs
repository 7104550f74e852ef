//! What the MCP gateway adds to a `tools/call`: one call's round trip straight to an MCP
//! server, through `writ mcp` (relay and decision) with a real gateway on loopback, and the
//! decision alone (`POST /v1/gateway/execute` with the same body); and over Streamable HTTP,
//! straight to the server and through the gateway's `/mcp/{name}` (decision, credential
//! injection, egress guard, relay). The servers are in-process echoes (on a pipe, on loopback
//! HTTP), so the numbers are the proxy's and the gateway's, not a server's.
//! `cargo bench -p writ-tests --bench mcp_proxy`.

#![allow(missing_docs)] // criterion_group! generates undocumented items.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream, Lines, WriteHalf};
use writ_mcp::ProxyConfig;
use writ_tests::artifacts;
use writ_tests::gateway::TestGateway;

/// Answers every request line on `io` with an MCP text result.
async fn echo_server(io: DuplexStream) {
    let (read, mut write) = tokio::io::split(io);
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let request: Value = serde_json::from_str(&line).unwrap();
        if let Some(id) = request.get("id") {
            let answer = serde_json::json!({
                "jsonrpc": "2.0",
                "id": id,
                "result": {"content": [{"type": "text", "text": "ok"}], "isError": false},
            });
            let mut out = answer.to_string();
            out.push('\n');
            write.write_all(out.as_bytes()).await.unwrap();
        }
    }
}

/// A client end: writes request lines, reads answer lines.
struct Peer {
    write: WriteHalf<DuplexStream>,
    lines: Lines<BufReader<tokio::io::ReadHalf<DuplexStream>>>,
    next_id: u64,
}

impl Peer {
    fn new(io: DuplexStream) -> Self {
        let (read, write) = tokio::io::split(io);
        Self {
            write,
            lines: BufReader::new(read).lines(),
            next_id: 0,
        }
    }

    /// One `tools/call` and its answer.
    async fn call(&mut self) {
        self.next_id += 1;
        let line = format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":{},\"method\":\"tools/call\",\"params\":{{\"name\":\"echo\",\"arguments\":{{\"text\":\"hello\"}}}}}}\n",
            self.next_id
        );
        self.write.write_all(line.as_bytes()).await.unwrap();
        loop {
            let answer = self.lines.next_line().await.unwrap().unwrap();
            let answer: Value = serde_json::from_str(&answer).unwrap();
            if answer.get("id").and_then(Value::as_u64) == Some(self.next_id) {
                assert_eq!(answer["result"]["isError"], false, "{answer}");
                return;
            }
        }
    }
}

/// An MCP server over Streamable HTTP on loopback answering every request with a JSON text
/// result; its URL.
async fn http_echo_server() -> String {
    let app = axum::Router::new().route(
        "/mcp",
        axum::routing::post(|body: axum::body::Bytes| async move {
            let request: Value = serde_json::from_slice(&body).unwrap();
            axum::Json(serde_json::json!({
                "jsonrpc": "2.0",
                "id": request["id"],
                "result": {"content": [{"type": "text", "text": "ok"}], "isError": false},
            }))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// One `tools/call` over Streamable HTTP and its JSON answer.
async fn http_call(http: &reqwest::Client, url: &str, key: Option<&str>) {
    let mut request = http
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hello"}}}"#);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let answer: Value = request.send().await.unwrap().json().await.unwrap();
    assert_eq!(answer["result"]["isError"], false, "{answer}");
}

fn proxy(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (gw, tenant) = rt.block_on(async {
        let gw = TestGateway::start().await;
        let t = gw.tenant("bench", Some(artifacts::ALLOW_ALL)).await;
        (gw, t)
    });
    let agent = tenant.agent.clone();
    let mut group = c.benchmark_group("mcp_tools_call");
    group.measurement_time(Duration::from_secs(10));

    let mut direct = rt.block_on(async {
        let (client, server) = tokio::io::duplex(1 << 16);
        tokio::spawn(echo_server(server));
        Peer::new(client)
    });
    group.bench_function("direct to the server", |b| {
        b.iter(|| rt.block_on(direct.call()));
    });

    let mut proxied = rt.block_on(async {
        let (client, client_side) = tokio::io::duplex(1 << 16);
        let (server_side, server) = tokio::io::duplex(1 << 16);
        tokio::spawn(echo_server(server));
        let (client_in, client_out) = tokio::io::split(client_side);
        let (server_out, server_in) = tokio::io::split(server_side);
        let config = ProxyConfig {
            server: "bench".into(),
            agent_id: "bench-agent".into(),
            session_id: "bench-session".into(),
            progress_every: Duration::from_secs(10),
        };
        tokio::spawn(writ_mcp::relay(
            client_in,
            client_out,
            server_in,
            server_out,
            gw.client(&agent),
            config,
        ));
        Peer::new(client)
    });
    group.bench_function("through writ mcp", |b| {
        b.iter(|| rt.block_on(proxied.call()));
    });

    let client = gw.client(&agent);
    let body: writ_client::wire::ExecuteBody = serde_json::from_value(serde_json::json!({
        "session_id": "bench-session",
        "agent_id": "bench-agent",
        "action": "bench.echo",
        "parameters": {"text": "hello"},
        "context": {"mcp": {"server": "bench", "tool": "echo", "client": null, "annotations": null}},
    }))
    .unwrap();
    group.bench_function("the decision alone", |b| {
        b.iter(|| rt.block_on(client.execute(&body, Some(0))).unwrap());
    });

    let (upstream, gateway) = rt.block_on(async {
        let upstream = http_echo_server().await;
        let origin = upstream.trim_end_matches("/mcp").to_owned();
        let admin = &tenant.admin;
        let credential = serde_json::json!({"secret": "bench-token", "origins": [origin]});
        gw.call(reqwest::Method::PUT, "/v1/credentials/bench-token", Some(admin), Some(credential))
            .await;
        let server = serde_json::json!({
            "url": upstream,
            "credential": {"name": "bench-token", "header": "Authorization", "format": "Bearer {secret}"},
        });
        let (status, answer) = gw
            .call(reqwest::Method::PUT, "/v1/mcp/servers/bench", Some(admin), Some(server))
            .await;
        assert_eq!(status, 200, "{answer}");
        (upstream, gw.url("/mcp/bench"))
    });
    let http = reqwest::Client::new();
    group.bench_function("over HTTP, direct to the server", |b| {
        b.iter(|| rt.block_on(http_call(&http, &upstream, None)));
    });
    group.bench_function("over HTTP, through the gateway", |b| {
        b.iter(|| rt.block_on(http_call(&http, &gateway, Some(&agent))));
    });
    group.finish();
    rt.block_on(gw.stop());
}

criterion_group!(benches, proxy);
criterion_main!(benches);

//! What `writ mcp` adds to a `tools/call`: one call's round trip straight to an MCP server,
//! through the proxy (relay and decision) with a real gateway on loopback, and the decision
//! alone (`POST /v1/gateway/execute` with the same body). The server is an in-process echo on
//! a pipe, so the numbers are the proxy's and the gateway's, not a server's.
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

fn proxy(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (gw, agent) = rt.block_on(async {
        let gw = TestGateway::start().await;
        let t = gw.tenant("bench", Some(artifacts::ALLOW_ALL)).await;
        (gw, t.agent)
    });
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
    group.finish();
    rt.block_on(gw.stop());
}

criterion_group!(benches, proxy);
criterion_main!(benches);

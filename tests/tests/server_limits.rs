//! The gateway's connection limits against a real gateway on a loopback port, driven by raw
//! TCP clients that misbehave: headers that never finish, bodies that stall or trickle, more
//! connections than the cap. The timeouts are configured short; every wait is bounded.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use writ_gateway::server::{ConnectionLimits, ServeConfig};
use writ_tests::gateway::TestGateway;

/// Long enough for anything that should happen, on a loaded machine.
const BOUND: Duration = Duration::from_secs(20);

async fn start(limits: ConnectionLimits) -> (TestGateway, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config: ServeConfig = TestGateway::config(dir.path());
    config.connections = limits;
    (TestGateway::start_with(config).await, dir)
}

/// What the gateway does next on `stream`: the bytes it sends until it closes, or `None` when
/// it closed (or reset) without a byte.
async fn read_until_closed(stream: &mut TcpStream) -> Option<String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(BOUND, stream.read(&mut buf))
            .await
            .expect("the gateway neither answered nor closed the connection in time")
        {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    (!out.is_empty()).then(|| String::from_utf8_lossy(&out).into_owned())
}

/// Reads one response (headers and a `content-length` body) from a connection kept alive.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&out).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if out.len() >= end + 4 + length {
                return text;
            }
        }
        let n = tokio::time::timeout(BOUND, stream.read(&mut buf))
            .await
            .expect("no response in time")
            .unwrap();
        assert!(n > 0, "closed mid-response: {text}");
        out.extend_from_slice(&buf[..n]);
    }
}

fn status(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a response: {response:?}"))
}

fn health_request() -> &'static [u8] {
    b"GET /healthz HTTP/1.1\r\nHost: writ\r\n\r\n"
}

/// The head of `POST /v1/admin/tenants` (a route that reads its body) announcing `length`
/// bytes of body.
fn create_tenant_head(gw: &TestGateway, length: usize) -> String {
    format!(
        "POST /v1/admin/tenants HTTP/1.1\r\nHost: writ\r\nX-PROVENANCE-API-KEY: {}\r\n\
         Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n",
        gw.operator_key
    )
}

fn short_headers() -> ConnectionLimits {
    ConnectionLimits {
        header_timeout: Duration::from_millis(200),
        ..ConnectionLimits::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_halfway_through_its_headers_is_disconnected() {
    let (gw, _dir) = start(short_headers()).await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: wr")
        .await
        .unwrap();
    assert_eq!(read_until_closed(&mut stream).await, None);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_halfway_through_its_request_line_is_disconnected() {
    let (gw, _dir) = start(short_headers()).await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream.write_all(b"GET /heal").await.unwrap();
    assert_eq!(read_until_closed(&mut stream).await, None);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_sends_a_byte_is_closed() {
    let (gw, _dir) = start(short_headers()).await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    assert_eq!(read_until_closed(&mut stream).await, None);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_connection_is_served_then_closed_once_idle_for_the_header_timeout() {
    let (gw, _dir) = start(short_headers()).await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    for _ in 0..2 {
        stream.write_all(health_request()).await.unwrap();
        assert_eq!(status(&read_response(&mut stream).await), 200);
    }
    assert_eq!(read_until_closed(&mut stream).await, None);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stalls_is_answered_408_and_the_connection_closed() {
    let (gw, _dir) = start(ConnectionLimits {
        body_timeout: Duration::from_millis(200),
        ..ConnectionLimits::default()
    })
    .await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream
        .write_all(create_tenant_head(&gw, 100).as_bytes())
        .await
        .unwrap();
    stream.write_all(br#"{"name": "#).await.unwrap();
    let response = read_until_closed(&mut stream)
        .await
        .expect("an answer before the close");
    assert_eq!(status(&response), 408, "{response}");
    assert!(
        response.contains(r#""code":"request_timeout""#),
        "{response}"
    );
    assert!(
        response.to_ascii_lowercase().contains("connection: close"),
        "{response}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_trickled_a_byte_at_a_time_runs_out_of_time_as_a_whole() {
    let (gw, _dir) = start(ConnectionLimits {
        body_timeout: Duration::from_millis(300),
        ..ConnectionLimits::default()
    })
    .await;
    let body = br#"{"name": "a tenant whose body takes far longer than the timeout"}"#;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream
        .write_all(create_tenant_head(&gw, body.len()).as_bytes())
        .await
        .unwrap();
    // A byte every 50 ms never leaves the body idle for the timeout, but the whole would take
    // three seconds.
    let (mut read, mut write) = stream.into_split();
    let trickle = tokio::spawn(async move {
        for byte in body {
            if write.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let mut out = Vec::new();
    tokio::time::timeout(BOUND, read.read_to_end(&mut out))
        .await
        .expect("an answer in time")
        .ok();
    let response = String::from_utf8_lossy(&out);
    assert_eq!(status(&response), 408, "{response}");
    trickle.abort();
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_sent_in_parts_within_the_timeout_is_served() {
    let (gw, _dir) = start(ConnectionLimits {
        body_timeout: Duration::from_secs(10),
        ..ConnectionLimits::default()
    })
    .await;
    let body = br#"{"name": "acme"}"#;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream
        .write_all(create_tenant_head(&gw, body.len()).as_bytes())
        .await
        .unwrap();
    stream.write_all(&body[..5]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stream.write_all(&body[5..]).await.unwrap();
    let response = read_response(&mut stream).await;
    assert_eq!(status(&response), 201, "{response}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_cap_a_connection_waits_until_another_closes() {
    let (gw, _dir) = start(ConnectionLimits {
        max_connections: 2,
        ..ConnectionLimits::default()
    })
    .await;
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(gw.addr).await.unwrap();
        stream.write_all(health_request()).await.unwrap();
        assert_eq!(status(&read_response(&mut stream).await), 200);
        open.push(stream);
    }
    // The third connection reaches the listen backlog, but is not served...
    let mut third = TcpStream::connect(gw.addr).await.unwrap();
    third.write_all(health_request()).await.unwrap();
    let mut buf = [0u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf))
            .await
            .is_err(),
        "a connection past the cap was served"
    );
    // ...until one of the first two closes.
    drop(open.remove(0));
    assert_eq!(status(&read_response(&mut third).await), 200);
    // The one still open is served as before.
    open[0].write_all(health_request()).await.unwrap();
    assert_eq!(status(&read_response(&mut open[0]).await), 200);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_the_request_in_flight_then_stops_accepting() {
    let (gw, _dir) = start(ConnectionLimits::default()).await;
    let addr = gw.addr;
    let body = br#"{"name": "late"}"#;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(create_tenant_head(&gw, body.len()).as_bytes())
        .await
        .unwrap();
    stream.write_all(&body[..4]).await.unwrap();
    // Let the request reach its handler, then ask the gateway to stop.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopping = tokio::spawn(gw.stop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!stopping.is_finished(), "stopped with a request in flight");
    stream.write_all(&body[4..]).await.unwrap();
    let response = read_until_closed(&mut stream)
        .await
        .expect("the request in flight is answered");
    assert_eq!(status(&response), 201, "{response}");
    tokio::time::timeout(BOUND, stopping)
        .await
        .expect("stopped in time")
        .unwrap();
    assert!(TcpStream::connect(addr).await.is_err());
}

//! Bounded reads against a live gateway: pages of large records stop at a byte budget and
//! their cursors reach the end with nothing skipped or repeated; the session view and every
//! list page; pending escalations come from an index of pending ones; the pending cap holds
//! under concurrency; exports are capped, and one whose reader stops reading is cut off and
//! frees its place.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use writ_gateway::clock::ManualClock;
use writ_gateway::service::audit::ChainReadLimits;
use writ_tests::artifacts;
use writ_tests::gateway::{TestGateway, TestTenant, assert_chain_valid};

/// The byte budget of a page: its records' stored JSON, past the first.
const PAGE_BYTES: usize = 4 << 20;

const OVER_LIMIT: fn() -> Value =
    || json!({"amount": 800, "currency": "GBP", "recipient_id": "rec_xyz789"});

/// A call whose record is about `bytes` long: its arguments carry a memo that size, with a
/// quote and a backslash every hundred bytes so the stored form is escaped.
async fn large_call(gw: &TestGateway, t: &TestTenant, session: &str, bytes: usize) {
    let memo: String = format!("{}\"\\", "x".repeat(98)).repeat(bytes / 100);
    let (status, body) = gw
        .execute(&t.agent, session, "notes.write", json!({"memo": memo}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["decision"], "ALLOW", "{body}");
}

async fn small_call(gw: &TestGateway, t: &TestTenant, session: &str) {
    let (status, body) = gw
        .execute(&t.agent, session, "notes.read", json!({"id": 1}))
        .await;
    assert_eq!(status, 200, "{body}");
}

/// A record's stored size: its JSON as the gateway stored it (compact, its own key order).
fn stored_len(record: &Value) -> usize {
    serde_json::to_vec(record).unwrap().len()
}

/// Every page of `path` (a route answering `records` or `events` with `next_after_seq`),
/// each as (seqs, stored bytes, truncated).
async fn pages(
    gw: &TestGateway,
    key: &str,
    path: &str,
    field: &str,
) -> Vec<(Vec<u64>, usize, bool)> {
    let mut out = Vec::new();
    let mut after: Option<u64> = None;
    let sep = if path.contains('?') { '&' } else { '?' };
    loop {
        let url = match after {
            Some(a) => format!("{path}{sep}after_seq={a}"),
            None => path.to_owned(),
        };
        let (status, page) = gw.call(Method::GET, &url, Some(key), None).await;
        assert_eq!(status, 200, "{page}");
        let records = page[field].as_array().unwrap();
        assert!(!records.is_empty() || after.is_some(), "{page}");
        out.push((
            records.iter().map(|r| r["seq"].as_u64().unwrap()).collect(),
            records.iter().map(stored_len).sum(),
            page["truncated"].as_bool().unwrap(),
        ));
        match page["next_after_seq"].as_u64() {
            Some(a) => after = Some(a),
            None => return out,
        }
        assert!(out.len() < 1000, "paging does not end");
    }
}

#[tokio::test]
async fn a_page_of_large_records_stops_at_the_byte_budget_and_its_cursor_reaches_the_end_with_nothing_skipped_or_repeated()
 {
    let gw = TestGateway::start().await;
    let t = gw.tenant("acme", Some(artifacts::ALLOW_ALL)).await;
    for i in 0..9 {
        large_call(&gw, &t, "big", 900_000).await;
        if i % 3 == 0 {
            small_call(&gw, &t, "small").await;
        }
    }
    let all = gw.audit(&t.admin).await;
    assert_chain_valid(&all);
    let chain_pages = pages(&gw, &t.admin, "/v1/audit?limit=1000", "records").await;
    let seqs: Vec<u64> = chain_pages.iter().flat_map(|(s, _, _)| s.clone()).collect();
    assert_eq!(
        seqs,
        (0..all.len() as u64).collect::<Vec<_>>(),
        "every record once, in order"
    );
    assert!(
        chain_pages.len() >= 3,
        "nine records of 900 kB take several pages"
    );
    assert!(chain_pages.iter().any(|(_, _, truncated)| *truncated));
    for (seqs, bytes, _) in &chain_pages {
        assert!(seqs.len() < 1000);
        // Past the first record, within the budget.
        assert!(*bytes <= PAGE_BYTES + 1_000_000, "a page of {bytes} bytes");
    }

    // A session's records through the same route page the same way.
    let big = pages(
        &gw,
        &t.admin,
        "/v1/audit?session_id=big&limit=1000",
        "records",
    )
    .await;
    let big_seqs: Vec<u64> = big.iter().flat_map(|(s, _, _)| s.clone()).collect();
    let expected: Vec<u64> = all
        .iter()
        .filter(|r| r["session_id"] == "big")
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(big_seqs, expected);
    assert!(big.len() >= 3 && big.iter().any(|(_, _, truncated)| *truncated));

    // A count limit still ends a page, with a cursor; hostile limits are clamped or refused.
    let (_, page) = gw
        .call(Method::GET, "/v1/audit?limit=2", Some(&t.admin), None)
        .await;
    assert_eq!(page["records"].as_array().unwrap().len(), 2);
    assert_eq!(page["next_after_seq"], 1);
    assert_eq!(page["truncated"], false);
    let (status, page) = gw
        .call(Method::GET, "/v1/audit?limit=0", Some(&t.admin), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(page["records"].as_array().unwrap().len(), 1);
    let (status, page) = gw
        .call(
            Method::GET,
            &format!("/v1/audit?after_seq={}", u64::MAX),
            Some(&t.admin),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(page["records"], json!([]));
    assert_eq!(page["next_after_seq"], Value::Null);
    let (status, _) = gw
        .call(
            Method::GET,
            "/v1/audit?limit=99999999999999999999999",
            Some(&t.admin),
            None,
        )
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn the_session_view_pages_by_count_and_by_bytes_and_its_pages_add_up_to_the_session() {
    let gw = TestGateway::start().await;
    let t = gw.tenant("acme", Some(artifacts::PAYMENTS_LIMITS)).await;
    let payment = |amount: u64| json!({"amount": amount, "currency": "GBP", "memo": "m"});
    // 12 allowed, 3 blocked (a negative amount), interleaved with another session.
    for i in 0..15u64 {
        let params = if i % 5 == 4 {
            json!({"amount": -1, "currency": "GBP"})
        } else {
            payment(10 + i)
        };
        let (status, _) = gw
            .execute(&t.agent, "checkout", "payments.initiate", params)
            .await;
        assert_eq!(status, 200);
        small_call(&gw, &t, "other").await;
    }
    let all = gw.audit(&t.admin).await;
    let expected: Vec<u64> = all
        .iter()
        .filter(|r| r["session_id"] == "checkout")
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(expected.len(), 15);

    let (status, whole) = gw
        .call(Method::GET, "/v1/sessions/checkout", Some(&t.admin), None)
        .await;
    assert_eq!(status, 200, "{whole}");
    assert_eq!(
        (&whole["allowed"], &whole["blocked"], &whole["escalated"]),
        (&json!(12), &json!(3), &json!(0))
    );
    assert_eq!(whole["events"].as_array().unwrap().len(), 15);
    assert_eq!(whole["next_after_seq"], Value::Null);
    assert_eq!(whole["truncated"], false);

    let mut seqs = Vec::new();
    let (mut allowed, mut blocked) = (0, 0);
    let mut after: Option<u64> = None;
    for round in 0.. {
        assert!(round < 20, "paging does not end");
        let path = match after {
            Some(a) => format!("/v1/sessions/checkout?limit=4&after_seq={a}"),
            None => "/v1/sessions/checkout?limit=4".to_owned(),
        };
        let (status, page) = gw.call(Method::GET, &path, Some(&t.admin), None).await;
        assert_eq!(status, 200, "{page}");
        let events = page["events"].as_array().unwrap();
        assert!(events.len() <= 4);
        seqs.extend(events.iter().map(|r| r["seq"].as_u64().unwrap()));
        allowed += page["allowed"].as_u64().unwrap();
        blocked += page["blocked"].as_u64().unwrap();
        match page["next_after_seq"].as_u64() {
            Some(a) => after = Some(a),
            None => break,
        }
    }
    assert_eq!(seqs, expected, "every event once, in order");
    assert_eq!((allowed, blocked), (12, 3));

    // Large records: the first page stops at the byte budget.
    for _ in 0..6 {
        let memo = "z".repeat(900_000);
        let (status, body) = gw
            .execute(
                &t.agent,
                "heavy",
                "payments.initiate",
                json!({"amount": 10, "currency": "GBP", "memo": memo}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let heavy = pages(&gw, &t.admin, "/v1/sessions/heavy", "events").await;
    assert!(heavy[0].2, "the first page ends at the byte budget");
    assert!(heavy[0].1 <= PAGE_BYTES + 1_000_000);
    assert_eq!(heavy.iter().map(|(s, _, _)| s.len()).sum::<usize>(), 6);

    // Hostile: unknown sessions are not found; a cursor past the end is an empty page.
    let (status, _) = gw
        .call(Method::GET, "/v1/sessions/nobody", Some(&t.admin), None)
        .await;
    assert_eq!(status, 404);
    let (status, page) = gw
        .call(
            Method::GET,
            &format!("/v1/sessions/checkout?after_seq={}", u64::MAX),
            Some(&t.admin),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(page["events"], json!([]));
    let (status, _) = gw
        .call(
            Method::GET,
            "/v1/sessions/checkout?limit=-1",
            Some(&t.admin),
            None,
        )
        .await;
    assert_eq!(status, 400);
}

/// The ids on every page of `path` (a list answering `field` with `next_cursor`), with the
/// number of pages.
async fn all_pages(gw: &TestGateway, key: &str, path: &str, field: &str) -> (Vec<Value>, usize) {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    let sep = if path.contains('?') { '&' } else { '?' };
    for pages in 1.. {
        assert!(pages < 100, "paging does not end");
        let url = match &cursor {
            Some(c) => format!("{path}{sep}cursor={c}"),
            None => path.to_owned(),
        };
        let (status, page) = gw.call(Method::GET, &url, Some(key), None).await;
        assert_eq!(status, 200, "{page}");
        items.extend(page[field].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return (items, pages),
        }
    }
    unreachable!()
}

fn ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|e| e["escalation_id"].as_str().unwrap().to_owned())
        .collect()
}

async fn escalate(gw: &TestGateway, t: &TestTenant) -> String {
    let (status, body) = gw
        .execute(&t.agent, "s", "payments.initiate", OVER_LIMIT())
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["decision"], "ESCALATE", "{body}");
    body["escalation_id"].as_str().unwrap().to_owned()
}

async fn decide(gw: &TestGateway, t: &TestTenant, id: &str, verb: &str) {
    let (status, body) = gw
        .call(
            Method::POST,
            &format!("/v1/escalations/{id}/{verb}"),
            Some(&t.reviewer),
            Some(json!({"note": verb})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn pending_escalations_list_only_pending_ones_and_stay_right_after_approvals_and_expiry() {
    let clock = ManualClock::starting_now();
    let gw = TestGateway::start_with_clock(clock.clone()).await;
    let t = gw.tenant("acme", Some(artifacts::PAYMENTS_LIMITS)).await;
    let neighbour = gw.tenant("other", Some(artifacts::PAYMENTS_LIMITS)).await;
    let mut opened = Vec::new();
    for _ in 0..7 {
        opened.push(escalate(&gw, &t).await);
        clock.advance(1);
    }
    let theirs = escalate(&gw, &neighbour).await;
    decide(&gw, &t, &opened[0], "approve").await;
    decide(&gw, &t, &opened[3], "reject").await;
    decide(&gw, &t, &opened[5], "approve").await;
    let pending_now: Vec<String> = [1, 2, 4, 6].iter().map(|i| opened[*i].clone()).collect();

    let (list, pages) = all_pages(
        &gw,
        &t.reviewer,
        "/v1/escalations/pending?limit=1",
        "escalations",
    )
    .await;
    assert_eq!(
        ids(&list),
        pending_now,
        "only pending ones, oldest first, each once"
    );
    assert!(pages >= 4);
    assert!(list.iter().all(|e| e["status"] == "pending"));
    let (list, _) = all_pages(
        &gw,
        &t.reviewer,
        "/v1/escalations?status=pending&limit=3",
        "escalations",
    )
    .await;
    assert_eq!(ids(&list), pending_now);
    let (list, _) = all_pages(&gw, &t.reviewer, "/v1/escalations/pending", "escalations").await;
    assert_eq!(ids(&list), pending_now);
    assert!(
        !ids(&list).contains(&theirs),
        "another tenant's are not listed"
    );

    // The typed client follows the cursor, or reads one page.
    let reviewer = gw.client(&t.reviewer);
    let all: Vec<String> = reviewer
        .pending_escalations()
        .await
        .unwrap()
        .escalations
        .into_iter()
        .map(|e| e.escalation_id)
        .collect();
    assert_eq!(all, pending_now);
    let first = reviewer
        .pending_escalations_page(None, Some(3))
        .await
        .unwrap();
    assert_eq!(first.escalations.len(), 3);
    let rest = reviewer
        .pending_escalations_page(first.next_cursor.as_deref(), Some(3))
        .await
        .unwrap();
    assert_eq!(rest.escalations[0].escalation_id, pending_now[3]);
    assert_eq!(rest.next_cursor, None);
    assert_eq!(
        reviewer.escalations(None).await.unwrap().escalations.len(),
        7
    );

    // The whole history, and one status of it, page the same way.
    let (list, _) = all_pages(&gw, &t.reviewer, "/v1/escalations?limit=2", "escalations").await;
    assert_eq!(ids(&list), opened);
    let (list, _) = all_pages(
        &gw,
        &t.reviewer,
        "/v1/escalations?status=approved&limit=1",
        "escalations",
    )
    .await;
    assert_eq!(ids(&list), [opened[0].clone(), opened[5].clone()]);

    // Past the hold (60 s), the sweeper expires the rest: nothing is pending.
    clock.advance(60_000);
    let started = Instant::now();
    loop {
        let (_, page) = gw
            .call(
                Method::GET,
                "/v1/escalations/pending",
                Some(&t.reviewer),
                None,
            )
            .await;
        if page["escalations"] == json!([]) {
            assert_eq!(page["next_cursor"], Value::Null);
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{page}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (list, _) = all_pages(
        &gw,
        &t.reviewer,
        "/v1/escalations?status=expired",
        "escalations",
    )
    .await;
    assert_eq!(ids(&list), pending_now);
    // And new ones are listed again.
    let fresh = escalate(&gw, &t).await;
    let (list, _) = all_pages(&gw, &t.reviewer, "/v1/escalations/pending", "escalations").await;
    assert_eq!(ids(&list), [fresh]);

    // Hostile cursors: malformed ones are refused; another tenant's id shows nothing of theirs.
    for bad in ["zz", "abc", "ff", &"0".repeat(5000)] {
        let (status, body) = gw
            .call(
                Method::GET,
                &format!("/v1/escalations/pending?cursor={bad}"),
                Some(&t.reviewer),
                None,
            )
            .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["code"], "invalid_cursor");
    }
    let (status, page) = gw
        .call(
            Method::GET,
            &format!("/v1/escalations?cursor={}", hex::encode(&theirs)),
            Some(&t.reviewer),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert!(!ids(page["escalations"].as_array().unwrap()).contains(&theirs));
}

#[tokio::test]
async fn concurrent_escalations_never_exceed_the_tenants_pending_cap() {
    let gw = Arc::new(TestGateway::start().await);
    let t = gw.tenant("acme", Some(artifacts::PAYMENTS_LIMITS)).await;
    gw.set_limits(&t, json!({"max_pending_escalations": 3}))
        .await;
    let calls: Vec<_> = (0..24)
        .map(|_| {
            let (gw, key) = (gw.clone(), t.agent.clone());
            tokio::spawn(async move {
                gw.execute(&key, "s", "payments.initiate", OVER_LIMIT())
                    .await
            })
        })
        .collect();
    let mut escalated = 0;
    for call in calls {
        let (status, body) = call.await.unwrap();
        assert_eq!(status, 200, "{body}");
        match body["decision"].as_str().unwrap() {
            "ESCALATE" => escalated += 1,
            "BLOCK" => assert_eq!(
                body["codes"],
                json!(["too_many_pending_escalations"]),
                "{body}"
            ),
            other => panic!("{other}: {body}"),
        }
    }
    assert_eq!(escalated, 3, "exactly the cap, however the calls raced");
    let (list, _) = all_pages(&gw, &t.reviewer, "/v1/escalations/pending", "escalations").await;
    assert_eq!(list.len(), 3);

    // A decision frees a place, for one more.
    decide(&gw, &t, &ids(&list)[0], "reject").await;
    let (_, body) = gw
        .execute(&t.agent, "s", "payments.initiate", OVER_LIMIT())
        .await;
    assert_eq!(body["decision"], "ESCALATE", "{body}");
    let (_, body) = gw
        .execute(&t.agent, "s", "payments.initiate", OVER_LIMIT())
        .await;
    assert_eq!(
        body["codes"],
        json!(["too_many_pending_escalations"]),
        "{body}"
    );
}

#[tokio::test]
async fn keys_catalog_and_credentials_page_with_a_cursor_and_nothing_skipped_or_repeated() {
    let gw = TestGateway::start().await;
    let t = gw.tenant("acme", None).await;
    let operator = gw.client(&gw.operator_key);
    for i in 0..4 {
        operator
            .create_key(
                &t.id,
                &writ_client::wire::CreateKeyBody {
                    role: "agent".into(),
                    subject: format!("agent-{i}"),
                    agent_id: None,
                },
            )
            .await
            .unwrap();
    }
    let (keys, pages) = all_pages(
        &gw,
        &t.admin,
        &format!("/v1/admin/tenants/{}/keys?limit=2", t.id),
        "keys",
    )
    .await;
    let key_ids: Vec<&str> = keys.iter().map(|k| k["key_id"].as_str().unwrap()).collect();
    assert_eq!(key_ids.len(), 7);
    assert_eq!(key_ids.iter().collect::<HashSet<_>>().len(), 7);
    assert!(pages >= 4);
    let created: Vec<u64> = keys
        .iter()
        .map(|k| k["created_ms"].as_u64().unwrap())
        .collect();
    assert!(created.windows(2).all(|w| w[0] <= w[1]), "oldest first");

    let mut names: Vec<String> = (0..5).map(|i| format!("cred-{i}")).collect();
    names.push("cred-1.x".into());
    for name in &names {
        let (status, body) = gw
            .call(
                Method::PUT,
                &format!("/v1/credentials/{}", urlencode(name)),
                Some(&t.admin),
                Some(json!({"secret": "s3cret", "origins": ["https://api.example.com"]})),
            )
            .await;
        assert_eq!(status, 204, "{body}");
    }
    let (listed, _) = all_pages(&gw, &t.admin, "/v1/credentials?limit=2", "names").await;
    names.sort();
    assert_eq!(listed, names.iter().map(|n| json!(n)).collect::<Vec<_>>());

    for (service, tool) in [("svc", "a"), ("svc", "b"), ("svc2", "a"), ("sv", "c")] {
        let (status, body) = gw
            .call(
                Method::PUT,
                &format!("/v1/catalog/{service}/{tool}"),
                Some(&t.admin),
                Some(json!({"method": "GET", "url": "https://api.example.com/x"})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let (tools, _) = all_pages(&gw, &t.admin, "/v1/catalog?limit=3", "tools").await;
    let tools: Vec<(String, String)> = tools
        .iter()
        .map(|t| {
            (
                t["service"].as_str().unwrap().to_owned(),
                t["tool_name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(tools.len(), 4);
    assert_eq!(tools.iter().collect::<HashSet<_>>().len(), 4);

    for path in [
        "/v1/credentials?cursor=xyz",
        "/v1/catalog?cursor=0",
        &format!("/v1/admin/tenants/{}/keys?cursor=nothex", t.id),
    ] {
        let (status, body) = gw.call(Method::GET, path, Some(&t.admin), None).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"]["code"], "invalid_cursor");
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A gateway whose exports wait at most `send_timeout` on a reader, with these caps.
async fn export_gateway(
    max_running: usize,
    per_tenant: usize,
    send_timeout: Duration,
) -> TestGateway {
    TestGateway::start_configured(|config| {
        config.chain_reads = ChainReadLimits {
            max_running,
            max_running_per_tenant: per_tenant,
            send_timeout,
        };
    })
    .await
}

/// Makes the tenant's chain about `n` × 900 kB: far more than the socket buffers, the
/// server's write buffer and the export's own queue hold.
async fn large_chain(gw: &TestGateway, t: &TestTenant, n: usize) {
    for _ in 0..n {
        let memo = "e".repeat(900_000);
        let (status, body) = gw
            .execute(&t.agent, "bulk", "notes.write", json!({"memo": memo}))
            .await;
        assert_eq!(status, 200, "{body}");
    }
}

/// Starts an export with a small receive buffer, reads its head, then stops reading.
async fn stalled_export(gw: &TestGateway, key: &str) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(gw.addr).await.unwrap();
    let request = format!(
        "GET /v1/audit/export HTTP/1.1\r\nHost: {}\r\nX-PROVENANCE-API-KEY: {key}\r\n\r\n",
        gw.addr
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(10), async {
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
    })
    .await
    .expect("the export's head arrives");
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    stream
}

/// An export read whole: the status, the Retry-After header and the body.
async fn export(gw: &TestGateway, key: &str) -> (u16, Option<String>, String) {
    let r = gw
        .request(Method::GET, "/v1/audit/export", Some(key), None)
        .await;
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, retry, r.text().await.unwrap())
}

/// Polls (bounded) until the tenant's export is admitted again, and reads it whole.
async fn export_when_admitted(gw: &TestGateway, key: &str) -> String {
    let started = Instant::now();
    loop {
        let (status, _, body) = export(gw, key).await;
        if status == 200 {
            return body;
        }
        assert_eq!(status, 429, "{body}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the export's place was never freed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn an_export_whose_reader_stops_reading_is_cut_off_and_its_place_freed() {
    let gw = export_gateway(16, 1, Duration::from_secs(2)).await;
    let t = gw.tenant("acme", Some(artifacts::ALLOW_ALL)).await;
    large_chain(&gw, &t, 20).await;
    let records = gw.audit(&t.admin).await.len();

    let started = Instant::now();
    let mut stalled = stalled_export(&gw, &t.admin).await;
    // While it holds the tenant's one place, another export of the tenant is refused.
    let (status, retry, body) = export(&gw, &t.reviewer).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "checked within the send timeout"
    );
    assert_eq!(status, 429, "{body}");
    assert_eq!(retry.as_deref(), Some("5"));
    let error: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"]["code"], "too_many_exports");

    // Its reader takes nothing for the send timeout: the export ends and frees its place.
    let whole = export_when_admitted(&gw, &t.reviewer).await;
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert_eq!(whole.lines().count(), records, "a later export is whole");

    // The stalled response was cut off, not ended as if whole: no final chunk.
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), stalled.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the connection is closed");
    assert!(
        !rest.ends_with(b"0\r\n\r\n"),
        "the cut-off export does not end cleanly"
    );
    assert!(rest.len() < whole.len(), "only part of the chain was sent");
}

#[tokio::test]
async fn exports_over_the_gateways_cap_get_429_and_so_do_verifications() {
    let gw = export_gateway(2, 2, Duration::from_secs(2)).await;
    let big = gw.tenant("big", Some(artifacts::ALLOW_ALL)).await;
    let small = gw.tenant("small", Some(artifacts::ALLOW_ALL)).await;
    large_chain(&gw, &big, 20).await;
    small_call(&gw, &small, "s").await;

    let started = Instant::now();
    let _first = stalled_export(&gw, &big.admin).await;
    let _second = stalled_export(&gw, &big.reviewer).await;
    let (status, retry, body) = export(&gw, &small.admin).await;
    let (verify_status, verify) = gw
        .call(Method::GET, "/v1/audit/verify", Some(&small.admin), None)
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "checked within the send timeout"
    );
    assert_eq!(status, 429, "{body}");
    assert!(retry.is_some());
    let error: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"]["code"], "too_many_exports");
    assert_eq!(verify_status, 429, "{verify}");
    assert_eq!(verify["error"]["code"], "too_many_verifications");

    // Once the stalled exports are cut off, the other tenant's export runs.
    let body = export_when_admitted(&gw, &small.admin).await;
    assert_eq!(body.lines().count(), gw.audit(&small.admin).await.len());
    let (status, verify) = gw
        .call(Method::GET, "/v1/audit/verify", Some(&small.admin), None)
        .await;
    assert_eq!(status, 200, "{verify}");
}

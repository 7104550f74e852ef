//! `writ store migrate` and `writ audit verify --store`: a stopped gateway's sled store moved
//! into PostgreSQL (the tests' private cluster) by the real binary, verified there, and served
//! from there by a gateway that has only the key files of the original data directory.

use std::process::Output;

use reqwest::Method;
use serde_json::{Value, json};
use writ_tests::artifacts;
use writ_tests::gateway::{Backend, TestGateway, assert_chain_valid};
use writ_tests::postgres::{PgCluster, execute};

const WRIT: &str = env!("CARGO_BIN_EXE_writ");

fn writ(args: &[&str]) -> Output {
    std::process::Command::new(WRIT)
        .args(args)
        .env_remove("WRIT_STORE_URL")
        .output()
        .expect("writ ran")
}

fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_sled_store_moves_into_postgres_and_is_served_from_there() {
    let old = tempfile::tempdir().unwrap();
    let gw = TestGateway::start_in(old.path()).await;
    let t = gw.tenant("acme", Some(artifacts::PAYMENTS_LIMITS)).await;
    for i in 0..40 {
        gw.execute(&t.agent, "s", "email.send", json!({"i": i}))
            .await;
    }
    let (status, _) = gw
        .call(
            Method::PUT,
            "/v1/credentials/github",
            Some(&t.admin),
            Some(json!({"secret": "ghp_sealed", "origins": ["https://api.github.com"]})),
        )
        .await;
    assert_eq!(status, 204);
    let before = gw.audit(&t.admin).await;
    gw.stop().await;

    let url = PgCluster::shared().database();
    let dir = old.path().to_str().unwrap();
    let out = writ(&["store", "migrate", "--from-data-dir", dir, "--to", &url]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = json_lines(&out);
    assert!(lines.contains(&json!({"components": 1})), "{lines:?}");
    let chain = lines
        .iter()
        .find(|l| l["tenant_id"] == t.id.as_str())
        .expect("the tenant's chain was verified");
    assert_eq!(chain["records"], before.len() as u64);

    let again = writ(&["store", "migrate", "--from-data-dir", dir, "--to", &url]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already holds a store"),
        "a second migration into the same database is refused"
    );

    let verified = writ(&["audit", "verify", "--store", &url]);
    assert!(verified.status.success(), "{verified:?}");
    assert_eq!(json_lines(&verified)[0]["ok"], true);

    // A node with only the key files: the policy comes from the database, the chain goes on.
    let node = tempfile::tempdir().unwrap();
    for file in ["master.key", "checkpoint.key"] {
        std::fs::copy(old.path().join(file), node.path().join(file)).unwrap();
    }
    let gw = TestGateway::start_in_on(node.path(), &Backend::Postgres(url.clone())).await;
    let (status, body) = gw
        .execute(
            &t.agent,
            "s",
            "payments.initiate",
            json!({"amount": 800, "currency": "GBP"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["codes"], json!(["amount_over_limit"]), "{body}");
    let after = gw.audit(&t.admin).await;
    assert_eq!(after[..before.len()], before[..]);
    assert_eq!(after.len(), before.len() + 1);
    assert_chain_valid(&after);
    let (_, credentials) = gw
        .call(Method::GET, "/v1/credentials", Some(&t.admin), None)
        .await;
    assert_eq!(credentials["names"], json!(["github"]), "{credentials}");
    gw.stop().await;

    // A block removed from the database is found by the offline verifier.
    execute(
        &url,
        "DELETE FROM writ_kv WHERE tbl = 'audit' AND k = (SELECT k FROM writ_kv WHERE tbl = 'audit' ORDER BY k LIMIT 1)",
    );
    let broken = writ(&["audit", "verify", "--store", &url]);
    assert!(!broken.status.success());
    let line = &json_lines(&broken)[0];
    assert_eq!(line["ok"], false, "{line}");
    assert_eq!(line["problem"], "missing_seq", "{line}");
}

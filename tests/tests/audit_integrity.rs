//! Audit integrity: verification, streamed export checked by an independent Python verifier,
//! signed checkpoints, and tampering with a stopped gateway's store (one byte, a deleted
//! record, swapped records, a truncated tail, a rewrite with valid hashes).

use std::path::Path;

use rstest::rstest;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use writ_gateway::audit::{Record, replace_stored_record, stored_record};
use writ_gateway::checkpoint::{self, Checkpoint, CheckpointSigner};
use writ_gateway::store::{Store, Table};
use writ_gateway::verify::{Problem, verify_chain};
use writ_tests::artifacts;
use writ_tests::gateway::{Backend, TestGateway, assert_chain_valid};

/// Runs a gateway on `backend` (its files in `dir`), makes `n` decisions for a new tenant,
/// stops it (which signs a checkpoint); returns the tenant id.
async fn chain_of(dir: &Path, backend: &Backend, n: usize) -> String {
    let gw = TestGateway::start_in_on(dir, backend).await;
    let t = gw.tenant("acme", Some(artifacts::PAYMENTS_LIMITS)).await;
    for i in 0..n {
        gw.execute(
            &t.agent,
            "s",
            "email.send",
            json!({"i": i, "note": "héllo \"quoted\"\n"}),
        )
        .await;
    }
    gw.stop().await;
    t.id
}

fn open(dir: &Path, backend: &Backend) -> (Store, Checkpoint) {
    let store = backend.open_store(dir);
    let signer = CheckpointSigner::load_or_create(dir).unwrap();
    let (tenant, _) = store.scan::<Value>(Table::Tenants, b"").unwrap()[0].clone();
    let note = store
        .get_raw(Table::Checkpoints, &tenant)
        .unwrap()
        .expect("a checkpoint was signed at shutdown");
    let cp = checkpoint::verify(&String::from_utf8(note).unwrap(), &signer.public_key()).unwrap();
    (store, cp)
}

fn record(store: &Store, tenant: &str, seq: u64) -> Record {
    serde_json::from_slice(&stored_record(store, tenant, seq).unwrap().unwrap()).unwrap()
}

fn put(store: &Store, tenant: &str, seq: u64, r: &Record) {
    replace_stored_record(store, tenant, seq, Some(&serde_json::to_vec(r).unwrap())).unwrap();
}

#[rstest]
#[case::sled(Backend::Sled)]
#[case::postgres(Backend::postgres())]
#[tokio::test]
async fn untouched_chain_verifies_with_its_checkpoint(#[case] backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let tenant = chain_of(dir.path(), &backend, 10).await;
    let (store, cp) = open(dir.path(), &backend);
    assert_eq!(cp.tenant_id, tenant);
    // 3 key_created + 1 policy_activated + 10 decisions.
    assert_eq!(cp.size, 14);
    let v = verify_chain(&store, &tenant, Some(&cp)).unwrap();
    assert!(v.ok(), "{v:?}");
    assert_eq!(v.records, 14);
    assert_eq!(v.head.unwrap().1, cp.head_hash);
}

#[rstest]
#[case::sled(Backend::Sled)]
#[case::postgres(Backend::postgres())]
#[tokio::test]
async fn one_changed_byte_is_a_hash_mismatch_at_its_seq(#[case] backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let tenant = chain_of(dir.path(), &backend, 10).await;
    let (store, cp) = open(dir.path(), &backend);
    let mut bytes = stored_record(&store, &tenant, 7).unwrap().unwrap();
    let at = bytes.windows(5).position(|w| w == b"email").unwrap();
    bytes[at] = b'E';
    replace_stored_record(&store, &tenant, 7, Some(&bytes)).unwrap();
    let v = verify_chain(&store, &tenant, Some(&cp)).unwrap();
    let broken = v.broken.unwrap();
    assert_eq!(
        (broken.seq, broken.problem),
        (7, Problem::HashMismatch),
        "{}",
        broken.detail
    );
    assert_eq!(v.records, 7);
}

#[rstest]
#[case::sled(Backend::Sled)]
#[case::postgres(Backend::postgres())]
#[tokio::test]
async fn deleted_record_is_a_missing_seq(#[case] backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let tenant = chain_of(dir.path(), &backend, 10).await;
    let (store, cp) = open(dir.path(), &backend);
    replace_stored_record(&store, &tenant, 5, None).unwrap();
    let broken = verify_chain(&store, &tenant, Some(&cp))
        .unwrap()
        .broken
        .unwrap();
    assert_eq!((broken.seq, broken.problem), (5, Problem::MissingSeq));
}

#[rstest]
#[case::sled(Backend::Sled)]
#[case::postgres(Backend::postgres())]
#[tokio::test]
async fn swapped_records_are_out_of_order(#[case] backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let tenant = chain_of(dir.path(), &backend, 10).await;
    let (store, cp) = open(dir.path(), &backend);
    let (a, b) = (record(&store, &tenant, 8), record(&store, &tenant, 9));
    put(&store, &tenant, 8, &b);
    put(&store, &tenant, 9, &a);
    let broken = verify_chain(&store, &tenant, Some(&cp))
        .unwrap()
        .broken
        .unwrap();
    assert_eq!((broken.seq, broken.problem), (8, Problem::SeqOutOfOrder));
}

#[rstest]
#[case::sled(Backend::Sled)]
#[case::postgres(Backend::postgres())]
#[tokio::test]
async fn truncated_tail_is_caught_only_by_the_checkpoint(#[case] backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let tenant = chain_of(dir.path(), &backend, 10).await;
    let (store, cp) = open(dir.path(), &backend);
    for seq in (11..14).rev() {
        replace_stored_record(&store, &tenant, seq, None).unwrap();
    }
    assert!(
        verify_chain(&store, &tenant, None).unwrap().ok(),
        "a cut chain is still a chain"
    );
    let broken = verify_chain(&store, &tenant, Some(&cp))
        .unwrap()
        .broken
        .unwrap();
    assert_eq!(
        (broken.seq, broken.problem),
        (11, Problem::Truncated),
        "{}",
        broken.detail
    );
}

#[rstest]
#[case::sled(Backend::Sled)]
#[case::postgres(Backend::postgres())]
#[tokio::test]
async fn rewrite_with_valid_hashes_fails_the_checkpoint_and_cannot_be_re_signed(
    #[case] backend: Backend,
) {
    let dir = tempfile::tempdir().unwrap();
    let tenant = chain_of(dir.path(), &backend, 10).await;
    let (store, cp) = open(dir.path(), &backend);
    // Rewrite from seq 6: change a decision, then re-hash everything after it.
    let mut prev = hex_bytes(&record(&store, &tenant, 5).hash);
    for seq in 6..14 {
        let mut r = record(&store, &tenant, seq);
        if seq == 6 {
            r.body.outcome = Some("BLOCK".into());
        }
        r.body.prev_hash = hex::encode(prev);
        prev = r.body.hash(&prev);
        r.hash = hex::encode(prev);
        put(&store, &tenant, seq, &r);
    }
    assert!(
        verify_chain(&store, &tenant, None).unwrap().ok(),
        "the rewrite is self-consistent"
    );
    let broken = verify_chain(&store, &tenant, Some(&cp))
        .unwrap()
        .broken
        .unwrap();
    assert_eq!(
        (broken.seq, broken.problem),
        (13, Problem::CheckpointMismatch),
        "{}",
        broken.detail
    );
    // A checkpoint for the rewritten chain signed with any other key does not verify.
    let forger = CheckpointSigner::load_or_create(tempfile::tempdir().unwrap().path()).unwrap();
    let forged = forger.sign(&Checkpoint {
        head_hash: prev,
        ..cp.clone()
    });
    let real_key = CheckpointSigner::load_or_create(dir.path())
        .unwrap()
        .public_key();
    assert!(checkpoint::verify(&forged, &real_key).is_err());
}

fn hex_bytes(h: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    hex::decode_to_slice(h, &mut out).unwrap();
    out
}

#[rstest]
#[case::sled(Backend::Sled)]
#[case::postgres(Backend::postgres())]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_is_verified_by_the_independent_python_verifier(#[case] backend: Backend) {
    let gw = TestGateway::start_on(&backend).await;
    let t = gw.tenant("acme", Some(artifacts::SPEND_CAP)).await;
    for i in 0..30 {
        let args = json!({"amount": 12.5 + i as f64, "currency": "GBP", "memo": "naïve ☃ \u{1}"});
        gw.execute(&t.agent, &format!("s{}", i % 3), "payments.initiate", args)
            .await;
    }
    let export = gw
        .request(Method::GET, "/v1/audit/export", Some(&t.reviewer), None)
        .await;
    assert_eq!(export.status(), 200);
    assert_eq!(export.headers()["content-type"], "application/jsonl");
    let text = export.text().await.unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 34);
    assert_chain_valid(&lines);
    let out = writ_tests::run_verifier(&text, &["--tenant", &t.id]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let head = lines.last().unwrap()["hash"].as_str().unwrap();
    assert_eq!(stdout.trim(), format!("ok 34 33 {head}"));

    // The verifier is not a rubber stamp: one altered character breaks it at that seq.
    let tampered = text.replacen("naïve", "naive", 1);
    let out = writ_tests::run_verifier(&tampered, &[]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("broken 4 hash_mismatch"));

    // after_seq pages the export.
    let tail = gw
        .request(
            Method::GET,
            "/v1/audit/export?after_seq=30",
            Some(&t.admin),
            None,
        )
        .await;
    assert_eq!(tail.text().await.unwrap().lines().count(), 3);
    let (status, _) = gw
        .call(Method::GET, "/v1/audit/export", Some(&t.agent), None)
        .await;
    assert_eq!(status, 403);
}

#[rstest]
#[case::sled(Backend::Sled)]
#[case::postgres(Backend::postgres())]
#[tokio::test]
async fn verify_endpoint_reports_the_chain_and_checkpoints_are_signed_as_it_grows(
    #[case] backend: Backend,
) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = TestGateway::config(dir.path());
    backend.apply(&mut config);
    config.app.checkpoint_every_records = 5;
    config.app.checkpoint_every = Duration::from_secs(3600);
    let gw = TestGateway::start_with(config).await;
    let t = gw.tenant("acme", Some(artifacts::ALLOW_ALL)).await;
    for i in 0..12 {
        gw.execute(&t.agent, "s", "x", json!({"i": i})).await;
    }
    let (_, key) = gw
        .call(Method::GET, "/v1/audit/public-key", None, None)
        .await;
    let public = checkpoint::parse_verifier_key(key["verifier_key"].as_str().unwrap()).unwrap();
    let mut size = 0;
    for _ in 0..50 {
        let note = gw
            .request(Method::GET, "/v1/audit/checkpoint", Some(&t.reviewer), None)
            .await;
        if note.status() == 200 {
            let cp = checkpoint::verify(&note.text().await.unwrap(), &public).unwrap();
            assert_eq!(cp.tenant_id, t.id);
            size = cp.size;
            if size >= 15 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        size >= 15,
        "checkpoint size {size}: expected one within 5 records of the 16 written"
    );
    let (status, v) = gw
        .call(Method::GET, "/v1/audit/verify", Some(&t.admin), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["records"], 16);
    assert_eq!(v["head_seq"], 15);
    let (status, _) = gw
        .call(Method::GET, "/v1/audit/verify", Some(&t.agent), None)
        .await;
    assert_eq!(status, 403);
}

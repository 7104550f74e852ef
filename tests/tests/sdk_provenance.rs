//! The published `provenance-client` Python SDK, unmodified, against a live gateway: the seed
//! README's patterns (`tests/python/test_provenance_client.py`). The virtualenv is made by
//! `scripts/test.sh` (see `writ_tests::python`).

use std::path::PathBuf;

use writ_tests::gateway::TestGateway;
use writ_tests::{artifacts, python};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provenance_client_seed_patterns_work_unmodified() {
    let gw = TestGateway::start().await;
    let t = gw.tenant("sdk", Some(artifacts::PAYMENTS_LIMITS)).await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/test_provenance_client.py");
    let out = tokio::process::Command::new(python())
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(&script)
        .env("WRIT_URL", gw.url(""))
        .env("WRIT_AGENT_KEY", &t.agent)
        .env("WRIT_ADMIN_KEY", &t.admin)
        .env("WRIT_REVIEWER_KEY", &t.reviewer)
        .output()
        .await
        .expect("run pytest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pytest failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("11 passed"), "{stdout}");
}

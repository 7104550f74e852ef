//! The published `provenance-client` Python SDK, unmodified, against a live gateway: the seed
//! README's patterns (`tests/python/test_provenance_client.py`). The virtualenv is made by
//! `scripts/test.sh` (see `writ_tests::python`).

use writ_tests::gateway::TestGateway;
use writ_tests::{artifacts, run_pytest};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provenance_client_seed_patterns_work_unmodified() {
    let gw = TestGateway::start().await;
    let t = gw.tenant("sdk", Some(artifacts::PAYMENTS_LIMITS)).await;
    let stdout = run_pytest(
        "test_provenance_client.py",
        &[
            ("WRIT_URL", gw.url("")),
            ("WRIT_AGENT_KEY", t.agent.clone()),
            ("WRIT_ADMIN_KEY", t.admin.clone()),
            ("WRIT_REVIEWER_KEY", t.reviewer.clone()),
        ],
    )
    .await;
    assert!(stdout.contains("11 passed"), "{stdout}");
}

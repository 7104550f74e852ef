//! Bounded uploads against a real gateway: a tenant keeps at most its quota of policies (count
//! and bytes), a component is compiled within a time and memory budget by a compiler process
//! and a few at a time while the gateway keeps answering, and a deleted policy's files go when
//! no tenant uses the component any more.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::Method;
use rstest::rstest;
use serde_json::{Value, json};
use writ_bench::distinct_component;
use writ_gateway::server::ServeConfig;
use writ_gateway::store::Table;
use writ_tests::gateway::{Backend, TestGateway, TestTenant, assert_chain_valid};
use writ_tests::{artifacts, component};

/// A copy of `path`'s component that hashes differently (a custom section named by `tag`).
fn variant(path: &str, tag: &str) -> Vec<u8> {
    distinct_component(&component(path), tag)
}

async fn listed(gw: &TestGateway, t: &TestTenant) -> Vec<String> {
    let (status, body) = gw
        .call(Method::GET, "/v1/policies", Some(&t.admin), None)
        .await;
    assert_eq!(status, 200, "{body}");
    body["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["policy_id"].as_str().unwrap().to_owned())
        .collect()
}

/// The gateway's compiled-policy files, and the components its store holds (a shared store
/// keeps them in a table; sled beside the files).
fn policy_files(gw: &TestGateway) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(gw.data_dir.join("policies"))
        .into_iter()
        .flatten()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let rows = gw.store().scan_keys(Table::Components, b"").unwrap();
    names.extend(rows.iter().map(|k| format!("row:{}", hex::encode(k))));
    names.sort();
    names
}

fn files_of(gw: &TestGateway, policy_id: &str) -> [PathBuf; 2] {
    let dir = gw.data_dir.join("policies");
    [
        dir.join(format!("{policy_id}.wasm")),
        dir.join(format!("{policy_id}.cwasm")),
    ]
}

async fn delete(gw: &TestGateway, key: &str, policy_id: &str) -> (u16, Value) {
    gw.call(
        Method::DELETE,
        &format!("/v1/policies/{policy_id}"),
        Some(key),
        None,
    )
    .await
}

async fn start_with(change: impl FnOnce(&mut ServeConfig)) -> (TestGateway, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = TestGateway::config(dir.path());
    change(&mut config);
    (TestGateway::start_with(config).await, dir)
}

#[rstest]
#[case::sled(Backend::Sled)]
#[case::postgres(Backend::postgres())]
#[tokio::test]
async fn an_upload_past_the_policy_count_quota_gets_409_and_nothing_is_stored(
    #[case] backend: Backend,
) {
    let gw = TestGateway::start_on(&backend).await;
    let t = gw.tenant("quota-count", None).await;
    gw.set_limits(&t, json!({"max_policies": 2})).await;
    for tag in ["a", "b"] {
        let (status, body) = gw
            .upload(&t.admin, tag, variant(artifacts::ALLOW_ALL, tag), false)
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let before = policy_files(&gw);
    let (status, body) = gw
        .upload(&t.admin, "c", variant(artifacts::ALLOW_ALL, "c"), false)
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "policy_quota");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_policies"),
        "{body}"
    );
    assert_eq!(listed(&gw, &t).await.len(), 2);
    assert_eq!(policy_files(&gw), before, "no file is written");

    // Uploading again one the tenant has is not one more.
    let (status, body) = gw
        .upload(
            &t.admin,
            "a-again",
            variant(artifacts::ALLOW_ALL, "a"),
            false,
        )
        .await;
    assert_eq!(status, 201, "{body}");
    // The limit is shown with the tenant's others.
    let (_, tenant) = gw
        .call(
            Method::PATCH,
            &format!("/v1/admin/tenants/{}", t.id),
            Some(&gw.operator_key),
            Some(json!({})),
        )
        .await;
    assert_eq!(tenant["limits"]["max_policies"], 2);
    assert_eq!(tenant["limits"]["max_policy_bytes"], 64 << 20);
}

#[rstest]
#[case::sled(Backend::Sled)]
#[case::postgres(Backend::postgres())]
#[tokio::test]
async fn an_upload_past_the_policy_bytes_quota_gets_413_and_nothing_is_stored(
    #[case] backend: Backend,
) {
    let gw = TestGateway::start_on(&backend).await;
    let t = gw.tenant("quota-bytes", None).await;
    let first = variant(artifacts::ALLOW_ALL, "first");
    gw.set_limits(&t, json!({"max_policy_bytes": first.len() + 100}))
        .await;
    let (status, body) = gw.upload(&t.admin, "first", first, false).await;
    assert_eq!(status, 201, "{body}");
    let before = policy_files(&gw);
    let (status, body) = gw
        .upload(
            &t.admin,
            "second",
            variant(artifacts::ALLOW_ALL, "second"),
            false,
        )
        .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "policy_quota");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_policy_bytes"),
        "{body}"
    );
    assert_eq!(listed(&gw, &t).await.len(), 1);
    assert_eq!(policy_files(&gw), before, "no file is written");
}

#[tokio::test]
async fn quotas_out_of_bounds_are_refused() {
    let gw = TestGateway::start().await;
    let t = gw.tenant("bounds", None).await;
    for limits in [
        json!({"max_policies": 0}),
        json!({"max_policy_bytes": 0}),
        json!({"max_policies": 10_001}),
    ] {
        let (status, body) = gw
            .call(
                Method::PATCH,
                &format!("/v1/admin/tenants/{}", t.id),
                Some(&gw.operator_key),
                Some(limits),
            )
            .await;
        assert_eq!(status, 400, "{body}");
    }
}

#[tokio::test]
async fn deleting_a_policy_removes_its_files_only_when_no_tenant_uses_the_component() {
    let gw = TestGateway::start().await;
    let a = gw.tenant("deleter", Some(artifacts::ALLOW_ALL)).await;
    let b = gw.tenant("sharer", Some(artifacts::ALLOW_ALL)).await;
    let shared = variant(artifacts::PAYMENTS_LIMITS, "shared");
    let (status, body) = gw.upload(&a.admin, "shared", shared.clone(), false).await;
    assert_eq!(status, 201, "{body}");
    let id = body["policy_id"].as_str().unwrap().to_owned();
    let (status, _) = gw.upload(&b.admin, "shared", shared, false).await;
    assert_eq!(status, 201);
    let files = files_of(&gw, &id);
    assert!(files.iter().all(|f| f.exists()));

    let (status, body) = delete(&gw, &a.admin, &id).await;
    assert_eq!(status, 204, "{body}");
    assert!(!listed(&gw, &a).await.contains(&id));
    assert!(listed(&gw, &b).await.contains(&id));
    assert!(
        files.iter().all(|f| f.exists()),
        "the other tenant still uses the component"
    );
    // Its row is gone: deleting again, or activating it, is not found.
    assert_eq!(delete(&gw, &a.admin, &id).await.0, 404);
    let (status, _) = gw
        .call(
            Method::POST,
            &format!("/v1/policies/{id}/activate"),
            Some(&a.admin),
            None,
        )
        .await;
    assert_eq!(status, 404);

    let (status, body) = delete(&gw, &b.admin, &id).await;
    assert_eq!(status, 204, "{body}");
    assert!(
        files.iter().all(|f| !f.exists()),
        "no tenant uses the component: its files are removed"
    );
    // The active policies' files are still there, and they still decide.
    let (status, body) = gw
        .execute(&a.agent, "s", "anything.at.all", json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(policy_files(&gw).len(), 2);

    // Uploaded again, the component is compiled and stored again.
    let (status, body) = gw
        .upload(
            &a.admin,
            "back",
            variant(artifacts::PAYMENTS_LIMITS, "shared"),
            true,
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert!(files.iter().all(|f| f.exists()));
}

#[rstest]
#[case::sled(Backend::Sled)]
#[case::postgres(Backend::postgres())]
#[tokio::test]
async fn the_active_policy_cannot_be_deleted(#[case] backend: Backend) {
    let gw = TestGateway::start_on(&backend).await;
    let t = gw.tenant("active", Some(artifacts::PAYMENTS_LIMITS)).await;
    let (_, list) = gw
        .call(Method::GET, "/v1/policies", Some(&t.admin), None)
        .await;
    let id = list["active_policy_id"].as_str().unwrap().to_owned();
    let (status, body) = delete(&gw, &t.admin, &id).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "policy_active");
    assert!(listed(&gw, &t).await.contains(&id));
    assert!(files_of(&gw, &id).iter().all(|f| f.exists()));
    // Not the admin's to delete as a reviewer or an agent either.
    assert_eq!(delete(&gw, &t.reviewer, &id).await.0, 403);
    assert_eq!(delete(&gw, &t.agent, &id).await.0, 403);

    // Once another is active, the old version can go (it stayed until then).
    let (status, _) = gw
        .upload(&t.admin, "next", component(artifacts::ALLOW_ALL), true)
        .await;
    assert_eq!(status, 201);
    assert!(listed(&gw, &t).await.contains(&id), "old versions stay");
    assert_eq!(delete(&gw, &t.admin, &id).await.0, 204);
    assert!(files_of(&gw, &id).iter().all(|f| !f.exists()));
}

#[rstest]
#[case::sled(Backend::Sled)]
#[case::postgres(Backend::postgres())]
#[tokio::test]
async fn a_deletion_is_recorded_in_the_tenant_audit_chain(#[case] backend: Backend) {
    let gw = TestGateway::start_on(&backend).await;
    let t = gw.tenant("recorded", Some(artifacts::ALLOW_ALL)).await;
    let (status, body) = gw
        .upload(
            &t.admin,
            "old",
            component(artifacts::PAYMENTS_LIMITS),
            false,
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let id = body["policy_id"].as_str().unwrap().to_owned();
    assert_eq!(delete(&gw, &t.admin, &id).await.0, 204);
    let records = gw.audit(&t.admin).await;
    assert_chain_valid(&records);
    let deleted: Vec<&Value> = records
        .iter()
        .filter(|r| r["kind"] == "policy_deleted")
        .collect();
    assert_eq!(deleted.len(), 1, "{records:?}");
    let record = deleted[0];
    assert_eq!(record["policy_id"], id.as_str());
    assert_eq!(record["actor"], "admin@example.com");
    let detail: Value = serde_json::from_str(record["detail"].as_str().unwrap()).unwrap();
    assert_eq!(detail["name"], "old");
    assert!(detail["key_id"].as_str().unwrap().starts_with("key_"));
}

#[tokio::test]
async fn uploads_beyond_the_compile_slots_wait_or_get_503_while_healthz_and_execute_are_answered() {
    let (gw, _dir) = start_with(|c| {
        c.app.engine.compile.max_concurrent = 1;
        c.app.engine.compile.max_waiting = 1;
        c.app.engine.compile.max_wait = Duration::from_secs(120);
    })
    .await;
    let t = gw.tenant("flood", Some(artifacts::PAYMENTS_LIMITS)).await;
    let gw = std::sync::Arc::new(gw);
    let uploads: Vec<_> = (0..4)
        .map(|i| {
            let (gw, admin) = (gw.clone(), t.admin.clone());
            let bytes = variant(artifacts::PAYMENTS_LIMITS, &format!("flood-{i}"));
            tokio::spawn(async move { gw.upload(&admin, &format!("p{i}"), bytes, false).await })
        })
        .collect();
    // While the compiler works, the gateway answers.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    let (status, _) = gw.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(status, 200);
    let (status, body) = gw
        .execute(
            &t.agent,
            "s",
            "payments.initiate",
            json!({"amount": 10, "currency": "GBP"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["decision"], "ALLOW", "{body}");
    let answered_in = started.elapsed();
    let still_compiling = uploads.iter().any(|u| !u.is_finished());

    let mut created = 0;
    let mut busy = 0;
    for upload in uploads {
        let (status, body) = upload.await.unwrap();
        match status {
            201 => created += 1,
            503 => {
                assert_eq!(body["error"]["code"], "compiler_busy", "{body}");
                busy += 1;
            }
            other => panic!("{other}: {body}"),
        }
    }
    assert!(
        still_compiling,
        "the calls were answered while uploads were compiling"
    );
    assert!(
        answered_in < Duration::from_secs(5),
        "answered in {answered_in:?}"
    );
    assert!(busy >= 1, "one compiles, one waits, the others are refused");
    assert!(created >= 2, "the one that waited got its turn");
    assert_eq!(listed(&gw, &t).await.len(), 1 + created);
}

#[tokio::test]
async fn a_component_over_the_compile_time_budget_is_refused_naming_the_bound() {
    let (gw, _dir) = start_with(|c| {
        c.app.engine.compile.timeout = Duration::from_millis(1);
    })
    .await;
    let t = gw.tenant("slow", None).await;
    let (status, body) = gw
        .upload(&t.admin, "p", component(artifacts::PAYMENTS_LIMITS), true)
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "policy_too_costly");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("time budget of 1 ms"), "{message}");
    assert!(listed(&gw, &t).await.is_empty());
    assert!(policy_files(&gw).is_empty(), "nothing is written");
    let (status, _) = gw.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_component_over_the_compile_memory_budget_is_refused_naming_the_bound() {
    let (gw, _dir) = start_with(|c| {
        c.app.engine.compile.memory_bytes = 4 << 20;
    })
    .await;
    let t = gw.tenant("greedy", None).await;
    let (status, body) = gw
        .upload(&t.admin, "p", component(artifacts::PAYMENTS_LIMITS), true)
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "policy_too_costly");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("memory budget of 4 MiB"), "{message}");
    assert!(listed(&gw, &t).await.is_empty());
    assert!(policy_files(&gw).is_empty(), "nothing is written");
}

#[tokio::test]
async fn the_delete_route_is_in_the_openapi_document() {
    let gw = TestGateway::start().await;
    let (status, spec) = gw.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(status, 200);
    let route = &spec["paths"]["/v1/policies/{policy_id}"]["delete"];
    assert!(route.is_object(), "{}", spec["paths"]);
    assert!(route["responses"]["409"].is_object());
}

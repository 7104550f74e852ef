//! The tool catalog and the credential vault through the admin API: validation, roles, tenant
//! isolation, and secrets never returned nor stored in clear.

use reqwest::Method;
use rstest::rstest;
use serde_json::json;
use writ_gateway::store::Table;
use writ_tests::artifacts;
use writ_tests::gateway::{Backend, TestGateway};

const SECRET: &str = "ghp_VERYSECRETtoken1234567890";

fn tool() -> serde_json::Value {
    json!({
        "method": "delete",
        "url": "https://api.github.com/repos/{owner}/{repo}",
        "headers": {"Accept": "application/vnd.github+json"},
        "credential": {"name": "github", "header": "Authorization", "format": "Bearer {secret}"},
    })
}

#[rstest]
#[case::sled(Backend::Sled)]
#[case::postgres(Backend::postgres())]
#[tokio::test]
async fn admins_manage_the_catalog_and_reviewers_read_it(#[case] backend: Backend) {
    let gw = TestGateway::start_on(&backend).await;
    let t = gw.tenant("acme", Some(artifacts::ALLOW_ALL)).await;
    let other = gw.tenant("other", None).await;
    let path = "/v1/catalog/github/github.repos.delete";
    let (status, body) = gw
        .call(
            Method::PUT,
            "/v1/credentials/github",
            Some(&t.admin),
            Some(json!({"secret": SECRET, "origins": ["https://api.github.com"]})),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    for key in [&t.agent, &t.reviewer] {
        let (status, _) = gw.call(Method::PUT, path, Some(key), Some(tool())).await;
        assert_eq!(status, 403);
    }
    let (status, entry) = gw
        .call(Method::PUT, path, Some(&t.admin), Some(tool()))
        .await;
    assert_eq!(status, 200, "{entry}");
    assert_eq!(entry["method"], "DELETE");
    assert_eq!(entry["credential"]["name"], "github");
    for bad in [
        json!({"method": "TRACE", "url": "https://x.example"}),
        json!({"method": "GET", "url": "file:///etc/passwd"}),
        json!({"method": "GET", "url": "https://x.example", "headers": {"X": "a\r\nB: c"}}),
        json!({"method": "GET", "url": "https://x.example", "credential": {"name": "c", "header": "Authorization", "format": "no placeholder"}}),
        json!({"method": "GET", "url": "https://x.example", "surprise": true}),
    ] {
        let (status, body) = gw
            .call(Method::PUT, path, Some(&t.admin), Some(bad.clone()))
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (status, list) = gw
        .call(Method::GET, "/v1/catalog", Some(&t.reviewer), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(list["tools"].as_array().unwrap().len(), 1);
    let (_, theirs) = gw
        .call(Method::GET, "/v1/catalog", Some(&other.admin), None)
        .await;
    assert_eq!(theirs["tools"], json!([]), "catalogs are per tenant");
}

#[rstest]
#[case::sled(Backend::Sled)]
#[case::postgres(Backend::postgres())]
#[tokio::test]
async fn credentials_are_write_only_and_encrypted_at_rest(#[case] backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let gw = TestGateway::start_in_on(dir.path(), &backend).await;
    let t = gw.tenant("acme", Some(artifacts::ALLOW_ALL)).await;
    let other = gw.tenant("other", None).await;
    let (status, _) = gw
        .call(
            Method::PUT,
            "/v1/credentials/github",
            Some(&t.reviewer),
            Some(json!({"secret": SECRET, "origins": ["https://api.github.com"]})),
        )
        .await;
    assert_eq!(status, 403);
    let (status, body) = gw
        .call(
            Method::PUT,
            "/v1/credentials/github",
            Some(&t.admin),
            Some(json!({"secret": SECRET, "origins": ["https://api.github.com"]})),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let (status, _) = gw
        .call(
            Method::PUT,
            "/v1/credentials/bad name",
            Some(&t.admin),
            Some(json!({"secret": "x", "origins": ["https://api.github.com"]})),
        )
        .await;
    assert_eq!(status, 400);
    gw.call(
        Method::PUT,
        "/v1/catalog/github/github.repos.delete",
        Some(&t.admin),
        Some(tool()),
    )
    .await;

    let (_, names) = gw
        .call(Method::GET, "/v1/credentials", Some(&t.admin), None)
        .await;
    assert_eq!(names["names"], json!(["github"]));
    let (_, theirs) = gw
        .call(Method::GET, "/v1/credentials", Some(&other.admin), None)
        .await;
    assert_eq!(theirs["names"], json!([]));
    let (status, _) = gw
        .call(
            Method::DELETE,
            "/v1/credentials/github",
            Some(&other.admin),
            None,
        )
        .await;
    assert_eq!(status, 404, "another tenant's credential is not there");

    // The secret appears in no response and in no audit export.
    let mut seen = String::new();
    for path in ["/v1/credentials", "/v1/catalog", "/v1/audit/export"] {
        seen += &gw
            .request(Method::GET, path, Some(&t.admin), None)
            .await
            .text()
            .await
            .unwrap();
    }
    assert!(!seen.contains(SECRET));
    gw.stop().await;
    let store = backend.open_store(dir.path());
    for &table in Table::all() {
        for (_, value) in store.scan_raw(table, b"").unwrap() {
            assert!(
                !value.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
                "the secret is in clear in {}",
                table.name()
            );
        }
    }
    drop(store);
    for file in writ_tests::files_under(dir.path()) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
            "the secret is in clear in {}",
            file.display()
        );
    }
    let gw = TestGateway::start_in_on(dir.path(), &backend).await;
    let (status, _) = gw
        .call(
            Method::DELETE,
            "/v1/credentials/github",
            Some(&t.admin),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = gw
        .call(
            Method::DELETE,
            "/v1/credentials/github",
            Some(&t.admin),
            None,
        )
        .await;
    assert_eq!(status, 404);
}

#[rstest]
#[case::sled(Backend::Sled)]
#[case::postgres(Backend::postgres())]
#[tokio::test]
async fn an_mcp_tool_the_tenant_marks_destructive_is_held_whatever_the_policy_allowed(
    #[case] backend: Backend,
) {
    let dir = tempfile::tempdir().unwrap();
    let gw = TestGateway::start_in_on(dir.path(), &backend).await;
    let t = gw.tenant("acme", Some(artifacts::ALLOW_ALL)).await;
    let put = async |key: &str, name: &str, body: serde_json::Value| {
        let path = format!("/v1/mcp/servers/{name}");
        gw.call(Method::PUT, &path, Some(key), Some(body)).await
    };
    let marks = json!({"destructive_tools": ["write_note", "rm.rf"]});
    assert_eq!(put(&t.reviewer, "notes", marks.clone()).await.0, 403);
    assert_eq!(put(&t.admin, "no.dots", marks.clone()).await.0, 400);
    let (status, server) = put(&t.admin, "notes", marks).await;
    assert_eq!(status, 200, "{server}");
    assert_eq!(server["destructive_tools"], json!(["rm.rf", "write_note"]));

    let decide = async |action: &str| {
        let (_, answer) = gw.execute(&t.agent, "s", action, json!({})).await;
        (
            answer["decision"].as_str().unwrap().to_owned(),
            answer["codes"].clone(),
        )
    };
    let (outcome, codes) = decide("notes.write_note").await;
    assert_eq!(outcome, "ESCALATE");
    assert_eq!(codes, json!(["irreversible_action"]));
    // A tool name may hold dots: the server's name ends at the action's first.
    assert_eq!(decide("notes.rm.rf").await.0, "ESCALATE");
    assert_eq!(decide("notes.echo").await.0, "ALLOW");
    assert_eq!(decide("other.write_note").await.0, "ALLOW");

    // The marks are in force again after a restart, and their change is in the chain.
    gw.stop().await;
    let gw = TestGateway::start_in_on(dir.path(), &backend).await;
    let (_, answer) = gw
        .execute(&t.agent, "s", "notes.write_note", json!({}))
        .await;
    assert_eq!(answer["decision"], "ESCALATE", "{answer}");
    let (_, list) = gw
        .call(Method::GET, "/v1/mcp/servers", Some(&t.reviewer), None)
        .await;
    assert_eq!(list["servers"][0]["name"], "notes", "{list}");
    let records = gw.audit(&t.reviewer).await;
    assert!(records.iter().any(|r| {
        r["kind"] == "catalog_put"
            && r["detail"]
                .as_str()
                .unwrap()
                .contains("\"mcp_server\":\"notes\"")
    }));

    let (status, _) = gw
        .call(
            Method::DELETE,
            "/v1/mcp/servers/notes",
            Some(&t.admin),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (_, answer) = gw
        .execute(&t.agent, "s", "notes.write_note", json!({}))
        .await;
    assert_eq!(answer["decision"], "ALLOW", "{answer}");
    let (status, _) = gw
        .call(
            Method::DELETE,
            "/v1/mcp/servers/notes",
            Some(&t.admin),
            None,
        )
        .await;
    assert_eq!(status, 404);
}

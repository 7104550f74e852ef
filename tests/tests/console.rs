//! The reviewer console end to end, in a real browser (headless Chromium through ChromeDriver,
//! `writ_tests::browser`) against a real gateway on loopback. Each test saves screenshots of
//! the pages it checks under `target/screenshots/console_*.png`.

use std::time::Duration;

use axum::response::Html;
use fantoccini::Locator;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use writ_gateway::audit::{Record, replace_stored_record, stored_record};
use writ_gateway::clock::ManualClock;
use writ_tests::artifacts;
use writ_tests::browser::Browser;
use writ_tests::gateway::{TestGateway, TestTenant};

const WAIT: Duration = Duration::from_secs(15);
/// Arguments an agent controls, written to run script if they were ever rendered as markup.
const HOSTILE: &str = "<script>window.__pwned=1</script><img src=x onerror=\"window.__pwned=2\">";

/// Signs in through the form with `key` and returns the page's text after the redirect.
async fn sign_in(browser: &Browser, gw: &TestGateway, key: &str) -> String {
    browser.goto(&gw.url("/console/signin")).await.unwrap();
    browser
        .find(Locator::Css("#key"))
        .await
        .unwrap()
        .send_keys(key)
        .await
        .unwrap();
    submit(browser, "form[action='/console/signin'] button").await;
    browser.text_of("main").await
}

/// Clicks the button `css` and waits until the browser has loaded the page the form led to.
async fn submit(browser: &Browser, css: &str) {
    browser
        .execute("window.__before = true", vec![])
        .await
        .unwrap();
    browser
        .find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    for _ in 0..150 {
        let loaded = browser
            .execute(
                "return window.__before === undefined && document.readyState === 'complete'",
                vec![],
            )
            .await;
        if loaded.is_ok_and(|v| v == json!(true)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("clicking {css} loaded no page");
}

/// Makes an agent's held payment call in the background: it is answered when decided.
fn held_payment(
    gw: &TestGateway,
    t: &TestTenant,
    session: &str,
    recipient: &str,
) -> JoinHandle<(u16, Value)> {
    let (url, key) = (gw.url("/v1/gateway/execute"), t.agent.clone());
    let body = json!({
        "session_id": session,
        "agent_id": "agent-1",
        "action": "payments.initiate",
        "decision": "ALLOW",
        "parameters": {"amount": 800, "currency": "GBP", "recipient_id": recipient},
    });
    tokio::spawn(async move {
        let r = reqwest::Client::new()
            .post(url)
            .header("X-PROVENANCE-API-KEY", key)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    })
}

/// The id of the one pending escalation, once there is one.
async fn pending_id(gw: &TestGateway, t: &TestTenant) -> String {
    for _ in 0..150 {
        let (_, page) = gw
            .call(
                Method::GET,
                "/v1/escalations/pending",
                Some(&t.reviewer),
                None,
            )
            .await;
        if let Some(id) = page["escalations"][0]["escalation_id"].as_str() {
            return id.to_owned();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no escalation appeared");
}

/// Decides the escalation `id` shown in the inbox through its form.
async fn decide(browser: &Browser, id: &str, verb: &str, note: &str) {
    browser
        .find(Locator::Css(&format!("#note-{id}")))
        .await
        .unwrap()
        .send_keys(note)
        .await
        .unwrap();
    browser
        .find(Locator::Css(&format!(
            "[data-escalation='{id}'] button[value='{verb}']"
        )))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reviewer_approves_a_held_call_that_appeared_live_and_the_agent_is_answered_allow_in_their_name()
 {
    let gw = TestGateway::start().await;
    let t = gw.tenant("acme", Some(artifacts::PAYMENTS_LIMITS)).await;
    let browser = Browser::start().await;

    let landing = sign_in(&browser, &gw, &t.reviewer).await;
    assert!(
        landing.contains("Nothing is waiting for a decision."),
        "{landing}"
    );
    browser.screenshot("console_inbox_empty").await;

    // The call is made after the page loaded: it must appear without a reload.
    let call = held_payment(&gw, &t, "s-live", HOSTILE);
    let id = pending_id(&gw, &t).await;
    let card = browser
        .wait_for_text("#inbox", "payments.initiate", WAIT)
        .await;
    // The arguments as JSON text: the markup's quotes escaped, its angle brackets as they are.
    let hostile = serde_json::to_string(HOSTILE).unwrap();
    for shown in [
        "agent-1",
        "s-live",
        "amount_over_limit",
        "policy",
        "Call hash",
        &hostile[1..hostile.len() - 1],
    ] {
        assert!(card.contains(shown), "the card shows {shown:?}: {card}");
    }
    // The arguments are text: no element came from them and no script of theirs ran.
    assert!(
        browser
            .find_all(Locator::Css("#inbox img, #inbox script"))
            .await
            .unwrap()
            .is_empty()
    );
    let pwned = browser
        .execute("return window.__pwned === undefined", vec![])
        .await
        .unwrap();
    assert_eq!(pwned, json!(true), "the agent's markup ran");
    browser.screenshot("console_inbox_held_call").await;

    decide(&browser, &id, "approve", "Checked the invoice").await;
    let done = browser.wait_for_text("main", "You approved", WAIT).await;
    assert!(done.contains("Nothing is waiting"), "{done}");
    browser.screenshot("console_inbox_after_approval").await;

    let (status, answer) = call.await.unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["decision"], "ALLOW", "{answer}");
    assert_eq!(answer["actor_human_id"], "reviewer@example.com", "{answer}");
    assert_eq!(answer["reason"], "Checked the invoice", "{answer}");

    // The decided list names who decided, and why.
    browser
        .goto(&gw.url("/console/escalations?status=approved"))
        .await
        .unwrap();
    let decided = browser
        .wait_for_text("table", "Checked the invoice", WAIT)
        .await;
    assert!(decided.contains("reviewer@example.com"), "{decided}");
    browser.screenshot("console_decided").await;

    browser.goto(&gw.url("/console/overview")).await.unwrap();
    let day = browser
        .find(Locator::Css("figure.chart:nth-of-type(2) svg"))
        .await
        .unwrap()
        .attr("aria-label")
        .await
        .unwrap()
        .unwrap();
    assert!(day.contains("0 allowed, 0 blocked, 1 escalated"), "{day}");
    let overview = browser.text_of("main").await;
    assert!(
        overview.contains("Most escalated actions (day)\npayments.initiate 1"),
        "{overview}"
    );
    browser.screenshot("console_overview").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_held_by_the_provenance_sdk_and_rejected_in_the_console_raises_policy_blocked_with_the_note()
 {
    let gw = TestGateway::start().await;
    let t = gw.tenant("acme", Some(artifacts::PAYMENTS_LIMITS)).await;
    let browser = Browser::start().await;
    sign_in(&browser, &gw, &t.reviewer).await;

    let sdk = tokio::process::Command::new(writ_tests::python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/python/console_held_call.py"
        ))
        .env("WRIT_URL", gw.url(""))
        .env("WRIT_AGENT_KEY", &t.agent)
        .kill_on_drop(true)
        .output();
    let sdk = tokio::spawn(sdk);
    let id = pending_id(&gw, &t).await;
    browser.wait_for_text("#inbox", "JPY", WAIT).await;
    decide(&browser, &id, "reject", "JPY is not authorised").await;
    browser.wait_for_text("main", "You rejected", WAIT).await;

    let out = sdk.await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(answer["raised"], "PolicyBlockedError", "{answer}");
    assert_eq!(answer["reason"], "JPY is not authorised", "{answer}");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_and_operator_keys_cannot_sign_in_and_get_no_session() {
    let gw = TestGateway::start().await;
    let t = gw.tenant("acme", Some(artifacts::PAYMENTS_LIMITS)).await;
    let browser = Browser::start().await;

    let page = sign_in(&browser, &gw, &t.agent).await;
    assert!(page.contains("Agent keys cannot sign in"), "{page}");
    browser.screenshot("console_signin_agent_refused").await;
    let page = sign_in(&browser, &gw, &gw.operator_key).await;
    assert!(page.contains("The operator key cannot sign in"), "{page}");
    let page = sign_in(&browser, &gw, "wk_live_not_a_key").await;
    assert!(page.contains("not valid"), "{page}");
    assert!(browser.cookies().await.is_empty());

    browser.goto(&gw.url("/console/")).await.unwrap();
    assert!(
        browser
            .current_url()
            .await
            .unwrap()
            .path()
            .ends_with("/console/signin")
    );
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_cross_site_post_is_refused_and_decides_nothing() {
    let gw = TestGateway::start().await;
    let t = gw.tenant("acme", Some(artifacts::PAYMENTS_LIMITS)).await;
    let browser = Browser::start().await;
    sign_in(&browser, &gw, &t.reviewer).await;
    let _call = held_payment(&gw, &t, "s-forged", "rec_1");
    let id = pending_id(&gw, &t).await;

    // Another origin on the same host (same site, so the SameSite cookie is sent): a page
    // that posts an approval as soon as it loads.
    let target = gw.url(&format!("/console/escalations/{id}/decide"));
    let page = format!(
        "<!doctype html><form id=f method=post action='{target}'>\
         <input name=decision value=approve><input name=note value=forged></form>\
         <script>document.getElementById('f').submit()</script>"
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let evil = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let app =
            axum::Router::new().route("/", axum::routing::get(move || async move { Html(page) }));
        axum::serve(listener, app).await.unwrap();
    });
    browser.goto(&evil).await.unwrap();
    let refused = browser
        .wait_for_text("main", "did not come from a console page", WAIT)
        .await;
    assert!(refused.contains("403"), "{refused}");
    browser.screenshot("console_forged_post_refused").await;

    let (_, e) = gw
        .call(
            Method::GET,
            &format!("/v1/escalations/{id}"),
            Some(&t.reviewer),
            None,
        )
        .await;
    assert_eq!(e["status"], "pending", "{e}");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ends_after_its_idle_time_and_when_its_key_is_revoked() {
    let clock = ManualClock::starting_now();
    let gw = TestGateway::start_with_clock(clock.clone()).await;
    let t = gw.tenant("acme", Some(artifacts::PAYMENTS_LIMITS)).await;
    let browser = Browser::start().await;

    sign_in(&browser, &gw, &t.reviewer).await;
    clock.advance(29 * 60_000);
    browser.goto(&gw.url("/console/audit")).await.unwrap();
    assert!(browser.text_of("h1").await.contains("Audit chain"));
    // Used a minute ago: 29 more minutes idle is within the 30.
    clock.advance(29 * 60_000);
    browser.goto(&gw.url("/console/overview")).await.unwrap();
    assert!(browser.text_of("h1").await.contains("Overview"));
    clock.advance(31 * 60_000);
    browser.goto(&gw.url("/console/overview")).await.unwrap();
    let page = browser
        .wait_for_text("main", "Your session has ended", WAIT)
        .await;
    assert!(page.contains("Sign in"), "{page}");
    browser.screenshot("console_session_expired").await;

    // Signed in again, then the key is revoked: the session ends with it.
    sign_in(&browser, &gw, &t.reviewer).await;
    assert!(browser.text_of("h1").await.contains("Held calls"));
    let keys = gw.client(&t.admin).keys(&t.id).await.unwrap().keys;
    let reviewer = keys.iter().find(|k| k.role == "reviewer").unwrap();
    gw.client(&t.admin)
        .revoke_key(&reviewer.key_id)
        .await
        .unwrap();
    browser.goto(&gw.url("/console/")).await.unwrap();
    browser
        .wait_for_text("main", "Your session has ended", WAIT)
        .await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_page_verifies_an_intact_chain_and_names_the_first_broken_record_of_a_tampered_one()
 {
    let gw = TestGateway::start().await;
    let t = gw.tenant("acme", Some(artifacts::PAYMENTS_LIMITS)).await;
    for i in 0..5 {
        gw.execute(&t.agent, "s-audit", "email.send", json!({"i": i}))
            .await;
    }
    let browser = Browser::start().await;
    sign_in(&browser, &gw, &t.reviewer).await;

    browser
        .goto(&gw.url("/console/audit?session=s-audit"))
        .await
        .unwrap();
    let rows = browser
        .find_all(Locator::Css("#audit-records tbody tr"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 5);
    browser.screenshot("console_audit").await;
    browser
        .find(Locator::Css("#verify"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let ok = browser
        .wait_for_text("#verify-result", "Intact", WAIT)
        .await;
    assert!(ok.contains("All 9 records verify"), "{ok}");
    browser.screenshot("console_verify_intact").await;

    // Someone with the disk rewrites a decision's reason.
    let seq = 6;
    let bytes = stored_record(gw.store(), &t.id, seq).unwrap().unwrap();
    let mut record: Record = serde_json::from_slice(&bytes).unwrap();
    record.body.reason = Some("Nothing to see here".into());
    replace_stored_record(
        gw.store(),
        &t.id,
        seq,
        Some(&serde_json::to_vec(&record).unwrap()),
    )
    .unwrap();

    browser.goto(&gw.url("/console/audit")).await.unwrap();
    browser
        .find(Locator::Css("#verify"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let broken = browser
        .wait_for_text("#verify-result", "Broken at seq 6", WAIT)
        .await;
    assert!(
        broken.contains("6 records verified before the break"),
        "{broken}"
    );
    browser.screenshot("console_verify_broken").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reviewer_decides_from_a_phone_sized_screen() {
    let gw = TestGateway::start().await;
    let t = gw.tenant("acme", Some(artifacts::PAYMENTS_LIMITS)).await;
    let browser = Browser::start_phone().await;
    sign_in(&browser, &gw, &t.reviewer).await;
    let call = held_payment(&gw, &t, "s-phone", "rec_phone");
    let id = pending_id(&gw, &t).await;
    browser
        .wait_for_text("#inbox", "payments.initiate", WAIT)
        .await;

    // Nothing is wider than the screen: no sideways scrolling to reach the buttons.
    let overflow = browser
        .execute(
            "return document.documentElement.scrollWidth - window.innerWidth",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        overflow.as_i64().unwrap() <= 0,
        "the page is {overflow} px too wide"
    );
    browser.screenshot("console_phone_inbox").await;
    decide(&browser, &id, "approve", "OK from my phone").await;
    browser.wait_for_text("main", "You approved", WAIT).await;
    browser.screenshot("console_phone_approved").await;
    let (_, answer) = call.await.unwrap();
    assert_eq!(answer["decision"], "ALLOW", "{answer}");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_rolls_back_a_policy_after_confirming_and_a_reviewer_cannot() {
    let gw = TestGateway::start().await;
    let t = gw.tenant("acme", Some(artifacts::PAYMENTS_LIMITS)).await;
    let (status, _) = gw
        .upload(
            &t.admin,
            "allow-all",
            writ_tests::component(artifacts::ALLOW_ALL),
            true,
        )
        .await;
    assert_eq!(status, 201);

    let reviewer = Browser::start().await;
    sign_in(&reviewer, &gw, &t.reviewer).await;
    reviewer.goto(&gw.url("/console/policies")).await.unwrap();
    let page = reviewer.text_of("main").await;
    assert!(
        page.contains("Only an admin key can activate a policy."),
        "{page}"
    );
    assert!(
        reviewer
            .find_all(Locator::Css("#policies a.button"))
            .await
            .unwrap()
            .is_empty()
    );
    reviewer.close().await;

    let admin = Browser::start().await;
    sign_in(&admin, &gw, &t.admin).await;
    admin.goto(&gw.url("/console/policies")).await.unwrap();
    admin.screenshot("console_policies").await;
    admin
        .find(Locator::LinkText("Roll back to this…"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    admin
        .wait_for_text("main", "Every call of this tenant will be decided by", WAIT)
        .await;
    admin.screenshot("console_policy_confirm").await;
    admin
        .find(Locator::Css("#confirm-activate"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let history = admin
        .wait_for_text("#activations", "admin@example.com", WAIT)
        .await;
    assert_eq!(history.matches("activated by").count(), 3, "{history}");

    // Now payments-limits decides again.
    let (_, answer) = gw.execute(&t.agent, "s", "shell.exec", json!({})).await;
    assert_eq!(answer["decision"], "BLOCK", "{answer}");
    admin.close().await;
}

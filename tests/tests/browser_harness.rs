//! The browser harness (`writ_tests::browser`) on a tiny page served from loopback: Chromium
//! loads it and its script, clicks, screenshots, and emulates a phone.

use std::time::Duration;

use axum::Router;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use fantoccini::Locator;
use writ_tests::browser::Browser;

const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Harness</title>
  <style>
    body { font: 18px system-ui, sans-serif; margin: 2rem; }
    button { font-size: 1.2rem; padding: .5rem 1rem; }
    #out { margin-top: 1rem; color: #0a5; }
  </style>
</head>
<body>
  <h1>Browser harness</h1>
  <button id="go">Press</button>
  <p id="out">Waiting</p>
  <script src="/app.js"></script>
</body>
</html>"#;

const SCRIPT: &str = r#"document.getElementById("go").addEventListener("click", () => {
  document.cookie = "pressed=yes; path=/";
  document.getElementById("out").textContent = "Pressed by a script from " + location.host;
});
"#;

/// Serves the page and its script on 127.0.0.1 and returns the page's URL.
async fn serve() -> String {
    let app = Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route(
            "/app.js",
            get(|| async { ([(header::CONTENT_TYPE, "text/javascript")], SCRIPT).into_response() }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

#[tokio::test]
async fn the_test_browser_renders_a_loopback_page_and_runs_its_script() {
    let url = serve().await;
    let browser = Browser::start().await;
    browser.goto(&url).await.unwrap();
    assert_eq!(browser.text_of("#out").await, "Waiting");

    browser
        .find(Locator::Css("#go"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let text = browser
        .wait_for_text("#out", "Pressed by a script", Duration::from_secs(10))
        .await;
    assert!(text.ends_with(url.trim_start_matches("http://").trim_end_matches('/')));
    let cookies = browser.cookies().await;
    assert!(
        cookies
            .iter()
            .any(|c| c.name() == "pressed" && c.value() == "yes")
    );

    let shot = browser.screenshot("browser_harness_desktop").await;
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is a PNG",
        shot.display()
    );
    assert!(png.len() > 1000, "{} has a picture", shot.display());
    browser.close().await;
}

#[tokio::test]
async fn the_phone_browser_has_a_phone_sized_viewport() {
    let url = serve().await;
    let browser = Browser::start_phone().await;
    browser.goto(&url).await.unwrap();
    let width = browser
        .execute("return window.innerWidth", vec![])
        .await
        .unwrap();
    assert_eq!(width.as_u64(), Some(390));
    let agent = browser
        .execute("return navigator.userAgent", vec![])
        .await
        .unwrap();
    assert!(agent.as_str().unwrap().contains("iPhone"), "{agent}");

    let shot = browser.screenshot("browser_harness_phone").await;
    assert!(std::fs::metadata(&shot).unwrap().len() > 1000);
    browser.close().await;
}

#[tokio::test]
async fn a_test_that_panics_with_a_browser_leaves_no_chromium_running() {
    let (pid_tx, pid_rx) = tokio::sync::oneshot::channel();
    let test = tokio::spawn(async move {
        let browser = Browser::start().await;
        let pid = browser
            .capabilities()
            .and_then(|c| c.get("goog:processID")?.as_u64());
        pid_tx
            .send(pid.expect("ChromeDriver tells Chromium's process id"))
            .unwrap();
        panic!("a failing test, with its browser still open");
    });
    assert!(test.await.unwrap_err().is_panic());
    let chromium = pid_rx.await.unwrap();

    // Killed with its process group as the panic dropped the browser, then reaped by init.
    let stat = format!("/proc/{chromium}/stat");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&stat).is_ok_and(|s| !s.contains(") Z ")) {
        assert!(
            std::time::Instant::now() < deadline,
            "Chromium (process {chromium}) outlived its test"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

//! A real browser for end-to-end tests of web pages: Debian's headless Chromium, driven through
//! ChromeDriver (WebDriver) with [`fantoccini`]. Everything stays on loopback: ChromeDriver
//! listens on 127.0.0.1; Chromium uses no proxy and reaches only `localhost`, `127.0.0.1` and
//! `[::1]` (any other host or address fails as unresolved, before any traffic).
//! `./scripts/test.sh` installs both (`chromium`, `chromium-driver`).
//!
//! [`Browser`] derefs to [`fantoccini::Client`], so a test calls fantoccini's API on it
//! (`goto`, `find`, `form`, `click`, `wait`) and adds [`Browser::wait_for_text`],
//! [`Browser::text_of`] and [`Browser::screenshot`]. `tests/tests/browser_harness.rs` shows one
//! in use.
//!
//! Processes: ChromeDriver runs as the leader of its own process group, which Chromium's
//! processes join (a killed ChromeDriver leaves Chromium running otherwise). Dropping the
//! [`Browser`], also while a test panics, kills that whole group; [`Browser::close`] first
//! ends the WebDriver session, which quits Chromium gracefully. Chromium's crash handler, which
//! leaves the group, exits with Chromium. Only a test process killed outright (SIGKILL, or
//! Ctrl-C of `cargo test`) leaves them behind.

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use fantoccini::cookies::Cookie;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use rustix::process::{Pid, Signal, kill_process_group};
use serde_json::{Map, json};
use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep, timeout};

/// Debian's Chromium (a launcher script for `/usr/lib/chromium/chromium`).
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Debian's ChromeDriver, the same version as [`CHROMIUM`].
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The viewport of [`Browser::start_phone`]: an iPhone's 390 × 844 CSS pixels.
pub const PHONE: (u32, u32) = (390, 844);
const PHONE_UA: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";

/// A headless Chromium with its own ChromeDriver and a fresh profile.
pub struct Browser {
    // Dropped in this order: the session, then every process, then the profile.
    client: Client,
    _processes: ProcessGroup,
    _driver: Child,
    _home: TempDir,
}

impl Browser {
    /// A desktop browser with a 1280 × 900 window.
    pub async fn start() -> Browser {
        Browser::launch(false).await
    }

    /// A phone: a [`PHONE`]-sized window and viewport with a device pixel ratio of 3, touch
    /// events and an iPhone's user agent (ChromeDriver's `mobileEmulation`).
    pub async fn start_phone() -> Browser {
        Browser::launch(true).await
    }

    async fn launch(phone: bool) -> Browser {
        for path in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(path).exists(),
                "{path} is missing: run ./scripts/test.sh (it installs Debian's chromium and chromium-driver)"
            );
        }
        let home = tempfile::tempdir().expect("a directory for the browser's profile");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let mut driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            // A process group of its own, which Chromium's processes join: see `ProcessGroup`.
            .process_group(0)
            // Chromium's crash reports and settings go to the profile, not the user's home.
            .env("XDG_CONFIG_HOME", home.path())
            .env("XDG_CACHE_HOME", home.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {CHROMEDRIVER}: {e}"));
        let processes = ProcessGroup(
            driver
                .id()
                .and_then(|id| Pid::from_raw(i32::try_from(id).ok()?)),
        );

        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if let Ok(Some(status)) = driver.try_wait() {
                panic!("{CHROMEDRIVER} exited on start: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "{CHROMEDRIVER} did not listen on 127.0.0.1:{port} within 10 s"
            );
            sleep(Duration::from_millis(50)).await;
        }

        let (width, height) = if phone { PHONE } else { (1280, 900) };
        let profile = home.path().join("profile");
        let mut options = json!({
            "binary": CHROMIUM,
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-quic",
                "--no-first-run",
                "--disable-default-apps",
                "--disable-extensions",
                "--no-proxy-server",
                // Loopback only: any other host or address fails as unresolved, before any traffic.
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1, EXCLUDE ::1",
                format!("--window-size={width},{height}"),
                format!("--user-data-dir={}", profile.display()),
            ],
        });
        if phone {
            options["mobileEmulation"] = json!({
                "deviceMetrics": { "width": width, "height": height, "pixelRatio": 3, "touch": true },
                "userAgent": PHONE_UA,
            });
        }
        let mut capabilities = Map::new();
        capabilities.insert("goog:chromeOptions".into(), options);
        capabilities.insert("proxy".into(), json!({ "proxyType": "direct" }));
        let mut builder = ClientBuilder::new(HttpConnector::new());
        builder.capabilities(capabilities);
        let driver_url = format!("http://127.0.0.1:{port}");
        let client = timeout(Duration::from_secs(60), builder.connect(&driver_url))
            .await
            .expect("Chromium did not start within 60 s")
            .unwrap_or_else(|e| panic!("start a Chromium session: {e}"));
        Browser {
            client,
            _processes: processes,
            _driver: driver,
            _home: home,
        }
    }

    /// The WebDriver client (also reachable through `Deref`).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Saves a screenshot of the window to `<target>/screenshots/<name>.png` and returns its
    /// path (`<target>` is `$CARGO_TARGET_DIR` or the workspace's `target/`).
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("take a screenshot");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// Waits up to `within` until an element matching `css` contains `text`, and returns that
    /// element's whole text; panics with the texts last seen otherwise.
    pub async fn wait_for_text(&self, css: &str, text: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let mut seen = Vec::new();
            for element in self.find_all(Locator::Css(css)).await.unwrap_or_default() {
                // An element replaced meanwhile is stale: the next round finds the new one.
                if let Ok(t) = element.text().await {
                    if t.contains(text) {
                        return t;
                    }
                    seen.push(t);
                }
            }
            assert!(
                Instant::now() < deadline,
                "no {css:?} contained {text:?} within {within:?}; last seen: {seen:?}"
            );
            sleep(Duration::from_millis(100)).await;
        }
    }

    /// The rendered text of the first element matching `css`; panics if there is none.
    pub async fn text_of(&self, css: &str) -> String {
        let element =
            (self.find(Locator::Css(css)).await).unwrap_or_else(|e| panic!("find {css:?}: {e}"));
        element
            .text()
            .await
            .unwrap_or_else(|e| panic!("text of {css:?}: {e}"))
    }

    /// Every cookie the current page can see.
    pub async fn cookies(&self) -> Vec<Cookie<'static>> {
        self.client
            .get_all_cookies()
            .await
            .expect("read the cookies")
    }

    /// Ends the WebDriver session, which quits Chromium, then kills ChromeDriver. Dropping the
    /// browser without it kills both outright (Drop cannot await).
    pub async fn close(self) {
        // A session that fails to end is killed with the process group all the same.
        let _ = self.client.clone().close().await;
    }
}

impl Deref for Browser {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

/// Kills a process group when dropped: ChromeDriver and the Chromium it started.
struct ProcessGroup(Option<Pid>);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if let Some(group) = self.0 {
            // The group is already gone after a graceful close.
            let _ = kill_process_group(group, Signal::KILL);
        }
    }
}

/// `<target>/screenshots`, where `<target>` is `$CARGO_TARGET_DIR` (relative to the workspace
/// when relative) or the workspace's `target/`.
fn screenshot_dir() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace.join("target"), |dir| workspace.join(dir));
    target.join("screenshots")
}

//! The status page at `/` in a real headless browser (Debian's `chromium`, driven over the
//! DevTools protocol on a loopback port): it renders every actor and the mode, shows alert text
//! as text (never markup), offers no action, follows an actor restart on its own refresh (the
//! same document, not a reload), says so when the daemon goes away, and leaves a screenshot in
//! `target/status-page.png`.
//!
//! Without a `chromium` on PATH (or in `$CHROMIUM`) the test prints a loud SKIP and passes,
//! unless `TRADEBAAS_REQUIRE_BROWSER=1` (set by `.ci/run` once it has installed chromium), where
//! a missing browser is a failure.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use ractor::cast;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tradebaas_actors::alert::{Alert, AlertMsg, Severity};
use tradebaas_actors::backoff::Backoff;
use tradebaas_actors::hooks::TestHook;
use tradebaas_actors::strategy::StrategyMsg;

const FAST: Backoff =
    Backoff::fixed_ratio(Duration::from_millis(20), Duration::from_millis(200), 2.0);

/// Generous: two cores shared with other builds.
const DEADLINE: Duration = Duration::from_secs(30);

/// Markup inside an alert: the page must show it as text.
const INJECTED_TITLE: &str = "<b class=\"injected\">bold title</b>";
const INJECTED_MESSAGE: &str = "<img src=x onerror=\"document.title='pwned'\">";

fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|d| [d.join("chromium"), d.join("chromium-browser")])
        .find(|p| p.is_file())
}

/// A headless chromium in its own process group and profile; killed (with its helpers) on drop.
struct Browser {
    child: Child,
    profile: tempfile::TempDir,
}

impl Browser {
    fn launch(binary: &Path, url: &str) -> Browser {
        use std::os::unix::process::CommandExt;
        let profile = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(profile.path().join("stderr.log")).unwrap();
        let child = Command::new(binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--window-size=1200,1300",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        Browser { child, profile }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.profile.path().join("stderr.log")).unwrap_or_default()
    }

    /// The DevTools port chromium chose (it writes it into the profile).
    async fn devtools_port(&mut self) -> u16 {
        let file = self.profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Ok(text) = std::fs::read_to_string(&file)
                && let Some(port) = text.lines().next().and_then(|l| l.trim().parse().ok())
            {
                return port;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("chromium exited ({status}): {}", self.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "chromium wrote no DevToolsActivePort: {}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A DevTools session on the tab showing a URL under `base`.
    async fn page(&mut self, base: &str) -> Page {
        let port = self.devtools_port().await;
        let devtools = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + DEADLINE;
        let ws_url = loop {
            if let Ok((200, body)) =
                tradebaas::status::get(&devtools, "/json/list", Duration::from_secs(5)).await
            {
                let targets: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let found = targets.as_array().and_then(|ts| {
                    ts.iter().find(|t| {
                        t["type"] == "page"
                            && t["url"].as_str().is_some_and(|u| u.starts_with(base))
                    })
                });
                if let Some(url) = found.and_then(|t| t["webSocketDebuggerUrl"].as_str()) {
                    break url.to_owned();
                }
            }
            assert!(
                Instant::now() < deadline,
                "no page under {base}: {}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let (ws, _) = tokio_tungstenite::connect_async(ws_url.as_str())
            .await
            .unwrap();
        Page { ws, next_id: 1 }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole group: the browser and its renderer/zygote helpers.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One DevTools protocol session (JSON-RPC over WebSocket).
struct Page {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl Page {
    async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let request = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws.send(Message::text(request)).await.unwrap();
        loop {
            let frame = tokio::time::timeout(DEADLINE, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no answer to {method}"))
                .unwrap_or_else(|| panic!("DevTools closed during {method}"))
                .unwrap();
            let Message::Text(text) = frame else { continue };
            let v: Value = serde_json::from_str(&text).unwrap();
            if v["id"] == id {
                assert!(v["error"].is_null(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Evaluates `expression` in the page; its value (JSON-serialisable).
    async fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true}),
            )
            .await;
        assert!(r["exceptionDetails"].is_null(), "{expression}: {r}");
        r["result"]["value"].clone()
    }

    /// What the page shows, by actor: `[name, status, restarts, last failure]`.
    async fn actor_rows(&mut self) -> Value {
        self.eval(
            "JSON.stringify([...document.querySelectorAll('tr[data-actor]')]\
               .map(r => [r.dataset.actor, ...[...r.cells].slice(1).map(c => c.innerText.trim())]))",
        )
        .await
        .as_str()
        .map(|s| serde_json::from_str(s).unwrap())
        .unwrap_or(Value::Null)
    }

    async fn text(&mut self) -> String {
        self.eval("document.body.innerText")
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Polls the rendered text until `pred` holds.
    async fn wait_text(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let text = self.text().await;
            if pred(&text) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "the page never showed {what}; it shows:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The row of `actor` in `rows` (from [`Page::actor_rows`]).
fn row<'a>(rows: &'a Value, actor: &str) -> &'a [Value] {
    rows.as_array()
        .and_then(|rs| rs.iter().find(|r| r[0] == actor))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_else(|| panic!("no row for {actor} in {rows}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_every_actor_and_follows_a_restart_in_a_real_browser() {
    let Some(binary) = chromium() else {
        let required = std::env::var("TRADEBAAS_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "TRADEBAAS_REQUIRE_BROWSER=1 but no chromium on PATH"
        );
        eprintln!(
            "\n\n*** SKIP status page browser test: no `chromium` on PATH (apt-get install \
             chromium, or set CHROMIUM=/path) ***\n\n"
        );
        return;
    };
    let h = common::start(|t, _| t.supervisor.children.strategy.backoff = FAST).await;
    h.ready().await;

    // The document and its headers.
    let head = common::raw(h.http.local_addr, "GET", "/");
    let lower = head.to_ascii_lowercase();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        lower.contains("content-type: text/html; charset=utf-8"),
        "{head}"
    );
    assert!(
        lower.contains("content-security-policy: default-src 'none'; script-src 'self';"),
        "{head}"
    );

    // An open alert whose title and message are markup.
    let alert = h.names.get::<AlertMsg>().unwrap();
    cast!(
        alert,
        AlertMsg::Raise(Alert {
            key: "integrity:status_page_test".into(),
            severity: Severity::Warning,
            title: INJECTED_TITLE.into(),
            message: INJECTED_MESSAGE.into(),
            root_cause: "the status page test raised it".into(),
            recommended_action: "none".into(),
            metadata: json!({}),
        })
    )
    .unwrap();

    let mut browser = Browser::launch(&binary, &format!("{}/?refresh=1", h.base));
    let mut page = browser.page(&h.base).await;

    // Every actor, the mode and the alert, rendered by the page's own script (so the CSP
    // lets it run and fetch /health).
    let text = page
        .wait_text("every actor, the mode and the alert", |t| {
            common::ACTORS.iter().all(|a| t.contains(a))
                && t.contains("OBSERVE_ONLY")
                && t.contains(INJECTED_MESSAGE)
        })
        .await;
    for heading in [
        "Actors",
        "Broker link",
        "Strategies",
        "Open alerts",
        "Last recovery",
        "Uptime",
    ] {
        assert!(text.contains(heading), "no {heading}:\n{text}");
    }
    let mode = page
        .eval("document.querySelector('[data-field=mode]').innerText")
        .await;
    assert_eq!(mode.as_str().map(str::trim), Some("Mode OBSERVE_ONLY"));
    let rows = page.actor_rows().await;
    for actor in common::ACTORS {
        let r = row(&rows, actor);
        assert_eq!(r[1], "running", "{actor}: {rows}");
        assert_eq!(r[2], "0", "{actor}: {rows}");
    }
    assert!(text.contains("example"), "no strategy row:\n{text}");

    // Alert text is text: no element was made from it, no script ran from it.
    assert!(text.contains(INJECTED_TITLE), "{text}");
    let injected = page
        .eval("document.querySelectorAll('.injected, img').length")
        .await;
    assert_eq!(injected, 0);
    let title = page.eval("document.title").await;
    assert!(
        title.as_str().is_some_and(|t| t.starts_with("TradeBaas:")),
        "{title}"
    );
    // Nothing to click or submit.
    let controls = page
        .eval("document.querySelectorAll('form, button, input, select, textarea, a').length")
        .await;
    assert_eq!(controls, 0);

    // A strategy restart shows on the next refresh of the same document.
    page.eval("window.__statusPageTest = 'same document'").await;
    let before: u64 = page
        .eval("Number(document.body.dataset.updates)")
        .await
        .as_u64()
        .unwrap();
    let strategy = h.names.get::<StrategyMsg>().unwrap();
    cast!(
        strategy,
        StrategyMsg::Hook(TestHook::Panic("status page test panic".into()))
    )
    .unwrap();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let rows = page.actor_rows().await;
        let r = row(&rows, "strategy");
        if r[1] == "running"
            && r[2] == "1"
            && r[3]
                .as_str()
                .is_some_and(|f| f.contains("status page test panic"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the page never showed the restart: {rows}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        page.eval("window.__statusPageTest").await,
        "same document",
        "the page was reloaded instead of refreshing itself"
    );
    let after = page
        .eval("Number(document.body.dataset.updates)")
        .await
        .as_u64()
        .unwrap();
    assert!(after > before, "updates {before} → {after}");

    // The screenshot (the whole page, after the restart).
    page.call(
        "Emulation.setDeviceMetricsOverride",
        json!({"width": 1200, "height": 1300, "deviceScaleFactor": 1, "mobile": false}),
    )
    .await;
    let shot = page
        .call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        )
        .await;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().unwrap())
        .unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000);
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap();
    let file = target.join("status-page.png");
    std::fs::write(&file, &png).unwrap();
    eprintln!("status page screenshot: {}", file.display());

    // The daemon goes away: the page says so and keeps the last data.
    h.stop().await;
    let text = page
        .wait_text("that /health cannot be read", |t| {
            t.contains("Cannot read /health")
        })
        .await;
    assert!(text.contains("showing data from"), "{text}");
    assert!(common::ACTORS.iter().all(|a| text.contains(a)), "{text}");
    drop(browser);
}

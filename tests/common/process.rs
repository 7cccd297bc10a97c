//! The real `tradebaas` binary as a child process (signals, exit codes, log lines), and a fake
//! systemd notify socket. The same shape as the harness in tests/daemon.rs, shared here.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_tradebaas");
pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A running `tradebaas run`; killed (SIGKILL) when dropped.
pub struct Daemon {
    pub child: Child,
    pub lines: Arc<Mutex<Vec<String>>>,
}

/// `config/default.toml` with each `(from, to)` replaced, written to `dir/name`.
pub fn config_with(
    dir: &std::path::Path,
    name: &str,
    edits: &[(&str, &str)],
) -> std::path::PathBuf {
    let mut text = std::fs::read_to_string(format!("{ROOT}/config/default.toml")).unwrap();
    for (from, to) in edits {
        assert!(text.contains(from), "default.toml has no {from}");
        text = text.replacen(from, to, 1);
    }
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

impl Daemon {
    /// `tradebaas run` with `config` on `data`, on a free port, JSON logs, `env` added.
    pub fn start(data: &std::path::Path, config: &std::path::Path, env: &[(&str, &str)]) -> Daemon {
        let mut child = Command::new(BIN)
            .args(["--log-format", "json", "run", "--config"])
            .arg(config)
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            // The test runner may itself run under systemd: only what a test passes counts.
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env_remove("TRADEBAAS_TEST_HOOKS")
            .env_remove("RUST_LOG")
            .env_remove("TRADEBAAS_LISTEN")
            .env_remove("TRADEBAAS_DATA_DIR")
            .env_remove("TRADEBAAS_BROKER_URL")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        Daemon { child, lines }
    }

    pub fn json_lines(&self) -> Vec<Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Whether a log line's message starts with `prefix`.
    pub fn logged(&self, prefix: &str) -> bool {
        self.json_lines()
            .iter()
            .any(|v| v["message"].as_str().is_some_and(|m| m.starts_with(prefix)))
    }

    /// Waits for a log line whose message starts with `prefix`.
    pub fn wait_logged(&self, prefix: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.logged(prefix) {
            assert!(
                Instant::now() < deadline,
                "no log line {prefix:?} within {timeout:?}; log:\n{}",
                self.lines.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The HTTP base URL, from the daemon's own log line.
    pub fn base_url(&self) -> String {
        self.wait_logged("http: serving", Duration::from_secs(30));
        let line = self
            .json_lines()
            .into_iter()
            .find(|v| {
                v["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("http: serving"))
            })
            .unwrap();
        format!("http://{}", line["listen"].as_str().unwrap())
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// The exit code (-1 for a signal), or `None` if still running after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status.code().unwrap_or(-1));
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `/health` until `pred` holds on its body (any status code).
pub async fn wait_health(base: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match tradebaas::status::get(base, "/health", Duration::from_secs(2)).await {
            Ok((_, body)) => serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null),
            Err(e) => Value::String(e),
        };
        if pred(&last) {
            return last;
        }
        assert!(
            Instant::now() < deadline,
            "/health never matched within {timeout:?}; last: {last:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A fake systemd notify socket: a Unix datagram socket the test reads from a thread.
pub struct FakeNotifySocket {
    _dir: tempfile::TempDir,
    pub path: std::path::PathBuf,
    pub received: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl FakeNotifySocket {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&received);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Ends when the test process exits; one idle thread per test.
            while let Ok(n) = sock.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                sink.lock().unwrap().push((Instant::now(), text));
            }
        });
        Self {
            _dir: dir,
            path,
            received,
        }
    }

    /// Datagrams carrying `line` (e.g. `READY=1`).
    pub fn with(&self, line: &str) -> Vec<(Instant, String)> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, d)| d.lines().any(|l| l == line))
            .cloned()
            .collect()
    }

    /// Waits until at least `n` datagrams carry `line`.
    pub fn wait(&self, line: &str, n: usize, timeout: Duration) -> Vec<(Instant, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.with(line);
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "fewer than {n} {line} within {timeout:?}; received: {:?}",
                self.received.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

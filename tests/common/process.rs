//! The real `tradebaas` binary as a child process (signals, exit codes, log lines), the polls of
//! its HTTP routes, and a fake systemd notify socket: the one real-binary harness every
//! integration test uses (no test file keeps a copy of its own).

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
    /// The data directory of [`Daemon::fresh`], removed with the daemon.
    dir: Option<tempfile::TempDir>,
}

/// The shipped `config/default.toml`.
pub fn default_config() -> std::path::PathBuf {
    std::path::PathBuf::from(format!("{ROOT}/config/default.toml"))
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
    /// `tradebaas run` with `config/default.toml` on a new temporary data directory (see
    /// [`Daemon::data_dir`]), kept as long as the daemon.
    pub fn fresh() -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let mut d = Daemon::start(dir.path(), &default_config(), &[]);
        d.dir = Some(dir);
        d
    }

    /// The data directory of a [`Daemon::fresh`].
    pub fn data_dir(&self) -> &std::path::Path {
        self.dir.as_ref().expect("a Daemon::fresh").path()
    }

    /// `tradebaas run` with `config` on `data`, on a free port, JSON logs, `env` added.
    pub fn start(data: &std::path::Path, config: &std::path::Path, env: &[(&str, &str)]) -> Daemon {
        Daemon::start_wrapped(&[], data, config, env)
    }

    /// [`Daemon::start`] run through `wrapper` (a command that ends by executing its arguments,
    /// e.g. `unshare … sh -c '…; exec "$0" "$@"'`); empty: the binary itself.
    pub fn start_wrapped(
        wrapper: &[&str],
        data: &std::path::Path,
        config: &std::path::Path,
        env: &[(&str, &str)],
    ) -> Daemon {
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        let mut child = command
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
        Daemon {
            child,
            lines,
            dir: None,
        }
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
    pub fn wait_logged(&self, prefix: &str, timeout: Duration) -> Value {
        self.wait_line(&format!("{prefix:?}"), timeout, |v| {
            v["message"].as_str().is_some_and(|m| m.starts_with(prefix))
        })
    }

    /// Waits for a (JSON) log line matching `pred`, blocking this thread; returns it.
    pub fn wait_line(&self, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = self.json_lines().into_iter().find(|v| pred(v)) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "no log line {what} within {timeout:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The HTTP base URL, from the daemon's own log line.
    pub fn base_url(&self) -> String {
        let line = self.wait_logged("http: serving", Duration::from_secs(30));
        format!("http://{}", line["listen"].as_str().unwrap())
    }

    /// [`Daemon::base_url`] without blocking the runtime's thread, failing at once (with the
    /// log's tail) if the process exits before it serves.
    pub async fn serving(&mut self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self.json_lines().into_iter().find(|v| {
                v["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("http: serving"))
            });
            if let Some(line) = found {
                return format!("http://{}", line["listen"].as_str().unwrap());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the daemon exited ({status}) before serving:\n{}",
                    self.log_tail(60)
                );
            }
            assert!(
                Instant::now() < deadline,
                "the daemon never served HTTP:\n{}",
                self.log_tail(60)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
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

    /// SIGKILL (`Child::kill` on Unix: no handler runs, nothing is flushed); asserts that the
    /// daemon was still running.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let status = self.child.wait().unwrap();
        assert_eq!(
            status.code(),
            None,
            "the daemon had already exited: {status}"
        );
    }

    /// SIGTERM, then [`Daemon::wait_exit`].
    pub fn terminate(&mut self, timeout: Duration) -> Option<i32> {
        self.signal("TERM");
        self.wait_exit(timeout)
    }

    pub fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// The last `n` log lines.
    pub fn log_tail(&self, n: usize) -> String {
        let lines = self.lines.lock().unwrap();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Log lines containing `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    /// [`wait_health`] with this daemon's log in the failure message.
    pub async fn wait_health(
        &self,
        base: &str,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let (_, body) = poll(
            base,
            "/health",
            timeout,
            |_, b| pred(b),
            || format!("never {what}; log:\n{}", self.log()),
        )
        .await;
        body
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `bin` with `args` to completion on a blocking thread: stdin closed, and without the
/// `TRADEBAAS_CONFIG`/`TRADEBAAS_DATA_DIR` a CLI command would read from the test's own
/// environment; `prepare` adjusts the command (e.g. another uid).
pub async fn cli_with(
    bin: std::path::PathBuf,
    args: &[&str],
    prepare: impl FnOnce(&mut Command) + Send + 'static,
) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(bin);
        cmd.args(&args)
            .env_remove("TRADEBAAS_CONFIG")
            .env_remove("TRADEBAAS_DATA_DIR")
            .stdin(Stdio::null());
        prepare(&mut cmd);
        cmd.output().unwrap()
    })
    .await
    .unwrap()
}

/// [`cli_with`] on the binary under test, unchanged.
pub async fn cli(args: &[&str]) -> std::process::Output {
    cli_with(BIN.into(), args, |_| {}).await
}

/// GET `path` on `base`: the status code and the body as JSON (`Null` when it is not JSON), or
/// the error while nothing answers.
pub async fn fetch(base: &str, path: &str) -> Result<(u16, Value), String> {
    let (code, body) = tradebaas::status::get(base, path, Duration::from_secs(2)).await?;
    Ok((code, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

/// Polls `path` every 50 ms until `pred(code, body)` holds; while nothing answers, `pred` sees
/// code 0 and the error as a JSON string. Panics after `timeout` with `context()` and the last
/// answer.
pub async fn poll(
    base: &str,
    path: &str,
    timeout: Duration,
    pred: impl Fn(u16, &Value) -> bool,
    context: impl Fn() -> String,
) -> (u16, Value) {
    let deadline = Instant::now() + timeout;
    loop {
        let (code, body) = fetch(base, path)
            .await
            .unwrap_or_else(|e| (0, Value::String(e)));
        if pred(code, &body) {
            return (code, body);
        }
        assert!(
            Instant::now() < deadline,
            "{path} never matched within {timeout:?} ({}); last {code}: {body:#}",
            context()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `/health` until `pred` holds on its body (any status code).
pub async fn wait_health(base: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
    poll(base, "/health", timeout, |_, b| pred(b), String::new)
        .await
        .1
}

/// Polls `path` until it answers `want`; returns the body.
pub async fn wait_status(base: &str, path: &str, want: u16, timeout: Duration) -> Value {
    poll(
        base,
        path,
        timeout,
        |c, _| c == want,
        || format!("waiting for {want}"),
    )
    .await
    .1
}

/// Polls `/ready` until it answers 200.
pub async fn wait_ready(base: &str, timeout: Duration) -> Value {
    wait_status(base, "/ready", 200, timeout).await
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

//! The shipped Prometheus rules: `promtool check rules`, `promtool test rules` (each alert fires
//! and resolves on synthetic series), and every `runbook_url` names an anchor that exists in
//! `docs/OPERATIONS.md`. `.ci/run` installs Debian's `prometheus` (for `promtool`) when missing;
//! only where that is impossible do the promtool tests skip, loudly.
//!
//! Also the rest of the operator's kit: `deploy/install.sh` (staged with DESTDIR), the systemd
//! unit's `systemd-analyze security` score, the Grafana dashboard's metrics against a live
//! `/metrics`, and the Kubernetes manifests against the daemon's routes and config parser.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::process::Daemon;
use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `promtool`, or `None` with a loud message (tests that need it then skip).
fn promtool() -> Option<&'static str> {
    let found = Command::new("promtool").arg("--version").output().is_ok();
    if !found {
        eprintln!("*** SKIP: promtool not installed (Debian package `prometheus`) ***");
        if std::env::var_os("TRADEBAAS_REQUIRE_PROMTOOL").is_some() {
            panic!("TRADEBAAS_REQUIRE_PROMTOOL is set but promtool is missing");
        }
        return None;
    }
    Some("promtool")
}

fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .current_dir(root())
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{args:?} failed:\n{text}");
    text
}

#[test]
fn shipped_rules_pass_promtool_check() {
    let Some(p) = promtool() else { return };
    let text = run(&[p, "check", "rules", "deploy/prometheus/rules.yml"]);
    assert!(text.contains("SUCCESS"), "{text}");
}

#[test]
fn every_alert_fires_and_resolves_in_the_rule_unit_tests() {
    let Some(p) = promtool() else { return };
    let text = run(&[p, "test", "rules", "deploy/prometheus/rules_test.yml"]);
    assert!(text.contains("SUCCESS"), "{text}");
    // Every alert in the rules file is exercised by the unit tests.
    let rules = std::fs::read_to_string(root().join("deploy/prometheus/rules.yml")).unwrap();
    let tests = std::fs::read_to_string(root().join("deploy/prometheus/rules_test.yml")).unwrap();
    for name in alert_names(&rules) {
        assert!(
            tests.contains(&format!("alertname: {name}")),
            "{name} has no promtool unit test"
        );
    }
}

#[test]
fn every_runbook_url_names_a_row_in_operations() {
    let rules = std::fs::read_to_string(root().join("deploy/prometheus/rules.yml")).unwrap();
    let ops = std::fs::read_to_string(root().join("docs/OPERATIONS.md")).unwrap();
    let names = alert_names(&rules);
    let urls: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("runbook_url:"))
        .map(|u| u.trim().trim_matches('"'))
        .collect();
    assert_eq!(urls.len(), names.len(), "one runbook_url per alert");
    for url in urls {
        let (file, anchor) = url.split_once('#').expect("runbook_url has an anchor");
        assert_eq!(file, "docs/OPERATIONS.md", "{url}");
        assert!(
            ops.contains(&format!("<a id=\"{anchor}\"></a>")),
            "docs/OPERATIONS.md has no anchor {anchor}"
        );
    }
}

fn alert_names(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(|n| n.trim().to_owned())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// deploy/install.sh and the systemd unit.

const BIN: &str = env!("CARGO_BIN_EXE_tradebaas");

/// `deploy/install.sh ARGS` with `env`, from the repository root; (exit code, stdout+stderr).
fn install_sh(args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> (i32, String) {
    let out = Command::new("sh")
        .arg(root().join("deploy/install.sh"))
        .args(args)
        .env_remove("DESTDIR")
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .current_dir(root())
        .output()
        .expect("run deploy/install.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn install_sh_stages_idempotently_and_uninstall_keeps_config_and_credentials() {
    let dest = tempfile::tempdir().unwrap();
    let env = [("DESTDIR", dest.path().as_os_str())];
    let args = ["--binary", BIN];
    let (code, text) = install_sh(&args, &env);
    assert_eq!(code, 0, "first install failed:\n{text}");
    assert!(text.contains("systemctl not called"), "{text}");

    let bin = dest.path().join("usr/local/bin/tradebaas");
    let unit = dest.path().join("etc/systemd/system/tradebaas.service");
    let config = dest.path().join("etc/tradebaas/config.toml");
    let credentials = dest.path().join("etc/tradebaas/credentials");
    let docs = dest.path().join("usr/local/share/doc/tradebaas");
    assert_eq!(mode(&bin), 0o755);
    assert_eq!(std::fs::read(&bin).unwrap(), std::fs::read(BIN).unwrap());
    assert_eq!(mode(&credentials), 0o600);
    assert_eq!(std::fs::read(&credentials).unwrap(), b"");
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        std::fs::read_to_string(root().join("config/production.example.toml")).unwrap()
    );
    for doc in ["README.md", "OPERATIONS.md", "ARCHITECTURE.md"] {
        assert!(docs.join(doc).is_file(), "{doc} not installed");
    }
    let unit_text = std::fs::read_to_string(&unit).unwrap();
    assert!(
        unit_text.contains(
            "\nExecStart=/usr/local/bin/tradebaas --log-format json run --config /etc/tradebaas/config.toml"
        ),
        "{unit_text}"
    );
    // Documentation= names the files where they were installed.
    let doc_line = unit_text
        .lines()
        .find(|l| l.starts_with("Documentation="))
        .unwrap();
    for url in doc_line["Documentation=".len()..].split_whitespace() {
        let path = url.strip_prefix("file://").expect("file:// URL");
        let staged = dest.path().join(path.trim_start_matches('/'));
        assert!(staged.is_file(), "{url} does not name an installed file");
    }
    systemd_analyze_verify(dest.path(), &unit_text);

    // An operator edits both files; a second run (an upgrade) keeps them.
    std::fs::write(
        &config,
        "# edited by the operator\n[server]\nlisten = \"127.0.0.1:3001\"\n",
    )
    .unwrap();
    std::fs::write(
        &credentials,
        "DERIBIT_CLIENT_ID=x\nDERIBIT_CLIENT_SECRET=y\n",
    )
    .unwrap();
    let (code, text) = install_sh(&args, &env);
    assert_eq!(code, 0, "second install failed:\n{text}");
    assert!(
        text.contains("kept the existing /etc/tradebaas/config.toml"),
        "{text}"
    );
    assert!(
        std::fs::read_to_string(&config)
            .unwrap()
            .starts_with("# edited by the operator")
    );
    assert_eq!(
        std::fs::read_to_string(&credentials).unwrap(),
        "DERIBIT_CLIENT_ID=x\nDERIBIT_CLIENT_SECRET=y\n"
    );
    assert_eq!(mode(&credentials), 0o600);
    assert_eq!(std::fs::read_to_string(&unit).unwrap(), unit_text);

    let (code, text) = install_sh(&["--uninstall"], &env);
    assert_eq!(code, 0, "uninstall failed:\n{text}");
    assert!(text.contains("kept /etc/tradebaas"), "{text}");
    assert!(text.contains("/var/lib/tradebaas"), "{text}");
    assert!(!bin.exists() && !unit.exists() && !docs.exists());
    assert!(config.is_file() && credentials.is_file());
    // Uninstall is idempotent as well.
    let (code, text) = install_sh(&["--uninstall"], &env);
    assert_eq!(code, 0, "second uninstall failed:\n{text}");
}

#[test]
fn install_sh_honours_prefix_and_config() {
    let dest = tempfile::tempdir().unwrap();
    let env = [("DESTDIR", dest.path().as_os_str())];
    let config = dest.path().join("mine.toml");
    std::fs::write(&config, "[server]\nlisten = \"127.0.0.1:3999\"\n").unwrap();
    let (code, text) = install_sh(
        &[
            "--prefix",
            "/opt/tb",
            "--config",
            config.to_str().unwrap(),
            "--binary",
            BIN,
        ],
        &env,
    );
    assert_eq!(code, 0, "{text}");
    assert_eq!(mode(&dest.path().join("opt/tb/bin/tradebaas")), 0o755);
    let unit =
        std::fs::read_to_string(dest.path().join("etc/systemd/system/tradebaas.service")).unwrap();
    assert!(
        unit.contains("\nExecStart=/opt/tb/bin/tradebaas "),
        "{unit}"
    );
    assert!(
        unit.contains("\nDocumentation=file:///opt/tb/share/doc/tradebaas/OPERATIONS.md "),
        "{unit}"
    );
    assert!(
        dest.path()
            .join("opt/tb/share/doc/tradebaas/README.md")
            .is_file()
    );
    assert_eq!(
        std::fs::read_to_string(dest.path().join("etc/tradebaas/config.toml")).unwrap(),
        "[server]\nlisten = \"127.0.0.1:3999\"\n"
    );

    // A configuration the daemon's parser rejects is refused (exit 2), naming check-config.
    let dest2 = tempfile::tempdir().unwrap();
    std::fs::write(&config, "[server]\nlisten = \"not an address\"\n").unwrap();
    let (code, text) = install_sh(
        &["--config", config.to_str().unwrap(), "--binary", BIN],
        &[("DESTDIR", dest2.path().as_os_str())],
    );
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("check-config"), "{text}");
}

#[test]
fn install_sh_refuses_without_systemd() {
    // A PATH with the shell tools but no systemctl, and no DESTDIR: a live install is refused.
    let tools = tempfile::tempdir().unwrap();
    for tool in [
        "sh", "sed", "id", "install", "mkdir", "rm", "rmdir", "chmod", "mv", "cmp", "grep", "cat",
        "pwd",
    ] {
        for dir in ["/usr/bin", "/bin"] {
            let p = Path::new(dir).join(tool);
            if p.exists() {
                let _ = std::os::unix::fs::symlink(&p, tools.path().join(tool));
                break;
            }
        }
    }
    let dest_probe = tempfile::tempdir().unwrap();
    // A missing --config and --binary: should the systemd check ever regress, the script still
    // refuses before it writes anything to this machine (the message then differs: a failure).
    let no_config = dest_probe.path().join("missing.toml");
    let no_config = no_config.to_str().unwrap();
    let prefix = dest_probe.path().to_str().unwrap();
    let install = [
        "--prefix",
        prefix,
        "--binary",
        "/nonexistent/tradebaas",
        "--config",
        no_config,
    ];
    for args in [&install[..], &["--prefix", prefix, "--uninstall"][..]] {
        let out = Command::new(tools.path().join("sh"))
            .arg(root().join("deploy/install.sh"))
            .args(args)
            .env_remove("DESTDIR")
            .env("PATH", tools.path())
            .env("HOME", dest_probe.path())
            .current_dir(root())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("systemd is required"), "{err}");
        assert!(
            err.contains("systemctl"),
            "the message names systemctl: {err}"
        );
        assert!(
            err.contains("DESTDIR"),
            "the message names the way out: {err}"
        );
    }
}

/// `systemd-analyze verify` on the staged unit (its ExecStart pointed at the staged binary, the
/// only path that differs from a live install), where systemd-analyze exists.
fn systemd_analyze_verify(dest: &Path, unit_text: &str) {
    let Some(tool) = systemd_analyze() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let staged_bin = dest.join("usr/local/bin/tradebaas");
    let text = unit_text.replace(
        "\nExecStart=/usr/local/bin/tradebaas ",
        &format!("\nExecStart={} ", staged_bin.display()),
    );
    let unit = dir.path().join("tradebaas.service");
    std::fs::write(&unit, text).unwrap();
    let out = Command::new(tool)
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // A container without systemd's own units cannot resolve the [Install]/After= targets: that
    // is the host, not the unit.
    if !out.status.success() && text.contains("Unit sysinit.target not found") {
        eprintln!("*** SKIP systemd-analyze verify: this host has no systemd units ***\n{text}");
        return;
    }
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{text}"
    );
}

/// `systemd-analyze`, or `None` with a loud message (TRADEBAAS_REQUIRE_SYSTEMD_ANALYZE makes it
/// a failure).
fn systemd_analyze() -> Option<&'static str> {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Some("systemd-analyze");
    }
    eprintln!("*** SKIP: systemd-analyze not installed (Debian package `systemd`) ***");
    if std::env::var_os("TRADEBAAS_REQUIRE_SYSTEMD_ANALYZE").is_some() {
        panic!("TRADEBAAS_REQUIRE_SYSTEMD_ANALYZE is set but systemd-analyze is missing");
    }
    None
}

/// The highest `systemd-analyze security` exposure the shipped unit may have. 1.1 is what the
/// unit reaches without an IP allow-list and a RootDirectory= (see the comments in the unit).
const MAX_EXPOSURE: f64 = 1.1;

#[test]
fn shipped_unit_exposure_score() {
    let Some(tool) = systemd_analyze() else {
        return;
    };
    let out = Command::new(tool)
        .args(["security", "--offline=true", "--no-pager"])
        .arg(root().join("deploy/tradebaas.service"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level for tradebaas.service:"))
        .unwrap_or_else(|| panic!("no overall exposure line:\n{text}"));
    let score: f64 = line
        .split(':')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the score in {line:?}"));
    eprintln!("systemd-analyze security: {line}");
    assert!(
        score <= MAX_EXPOSURE,
        "exposure {score} > {MAX_EXPOSURE}:\n{text}"
    );
    // The hardening keeps what the daemon needs.
    let unit = std::fs::read_to_string(root().join("deploy/tradebaas.service")).unwrap();
    for needed in [
        "\nType=notify\n",
        "\nNotifyAccess=main\n",
        "\nWatchdogSec=30s\n",
        "\nRestrictAddressFamilies=AF_UNIX AF_INET AF_INET6\n",
    ] {
        assert!(unit.contains(needed), "the unit lost {needed:?}");
    }
    assert!(
        !unit.lines().any(|l| l.starts_with("IPAddressAllow=")),
        "an IP allow-list cuts the daemon off from the exchange on some hosts"
    );
}

// ---------------------------------------------------------------------------------------------
// deploy/grafana/tradebaas.json.

fn dashboard() -> Value {
    let text = std::fs::read_to_string(root().join("deploy/grafana/tradebaas.json")).unwrap();
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// Every panel, rows' nested panels included.
fn panels(dash: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dash["panels"], &mut out);
    out
}

/// The PromQL each panel target and templating query runs.
fn queries(dash: &Value) -> Vec<String> {
    let mut out: Vec<String> = panels(dash)
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .map(|t| {
            t["expr"]
                .as_str()
                .expect("every target has an expr")
                .to_owned()
        })
        .collect();
    for var in dash["templating"]["list"].as_array().unwrap() {
        if let Some(q) = var["query"]["query"].as_str() {
            out.push(q.to_owned());
        }
    }
    out
}

/// The daemon's metric names a PromQL expression refers to: identifiers outside string
/// literals starting `tradebaas_` or `process_` (label names inside `{}` never do).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut chars = expr.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '"' || c == '\'' {
            // Skip the string literal (with escapes).
            while let Some((_, d)) = chars.next() {
                if d == '\\' {
                    chars.next();
                } else if d == c {
                    break;
                }
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let mut end = i + c.len_utf8();
            while let Some(&(j, d)) = chars.peek() {
                if d.is_ascii_alphanumeric() || d == '_' || d == ':' {
                    end = j + d.len_utf8();
                    chars.next();
                } else {
                    break;
                }
            }
            let word = &expr[i..end];
            if word.starts_with("tradebaas_") || word.starts_with("process_") {
                names.push(word.to_owned());
            }
        } else if c.is_ascii_digit() {
            // A number (1e3, 0.99): not an identifier.
            while chars
                .peek()
                .is_some_and(|&(_, d)| d.is_ascii_alphanumeric() || d == '.')
            {
                chars.next();
            }
        }
    }
    names
}

#[test]
fn metric_names_tokenizer() {
    assert_eq!(
        metric_names(
            r#"histogram_quantile(0.9, sum by (le) (rate(tradebaas_order_latency_seconds_bucket{job=~"tradebaas_x",instance=~"$instance"}[5m]))) / process_cpu_seconds_total"#
        ),
        [
            "tradebaas_order_latency_seconds_bucket",
            "process_cpu_seconds_total"
        ]
    );
    assert!(metric_names(r#"up{job="process_x"} == 1e3"#).is_empty());
}

#[test]
fn dashboard_uses_the_datasource_variable_everywhere() {
    let dash = dashboard();
    assert!(
        dash["schemaVersion"].as_u64().unwrap() >= 36,
        "schemaVersion"
    );
    assert!(dash["uid"].is_string() && dash["title"].is_string());
    let vars = dash["templating"]["list"].as_array().unwrap();
    assert!(
        vars.iter().any(|v| v["name"] == "datasource"
            && v["type"] == "datasource"
            && v["query"] == "prometheus"),
        "no `datasource` variable of type prometheus"
    );
    // Every `datasource` anywhere (panels, targets, query variables) is the variable.
    fn check(v: &Value, at: &str, seen: &mut usize) {
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    let here = format!("{at}.{k}");
                    if k == "datasource" {
                        *seen += 1;
                        assert_eq!(
                            child,
                            &serde_json::json!({"type": "prometheus", "uid": "${datasource}"}),
                            "{here} is not the datasource variable"
                        );
                    } else {
                        check(child, &here, seen);
                    }
                }
            }
            Value::Array(list) => {
                for (i, child) in list.iter().enumerate() {
                    check(child, &format!("{at}[{i}]"), seen);
                }
            }
            _ => {}
        }
    }
    let mut seen = 0;
    check(&dash, "$", &mut seen);
    let mut ids = BTreeSet::new();
    for p in panels(&dash) {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "duplicate panel id");
        let g = &p["gridPos"];
        let (x, w, h) = (g["x"].as_u64(), g["w"].as_u64(), g["h"].as_u64());
        assert!(
            x.zip(w).is_some_and(|(x, w)| w > 0 && x + w <= 24) && h.is_some_and(|h| h > 0),
            "panel {} has a bad gridPos {g}",
            p["title"]
        );
        if p["type"] == "row" {
            continue;
        }
        assert!(
            p["datasource"].is_object(),
            "panel {} has no datasource",
            p["title"]
        );
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {} has no targets", p["title"]);
        for t in targets {
            assert!(
                t["datasource"].is_object(),
                "a target of {} has no datasource",
                p["title"]
            );
        }
    }
    assert!(seen > 20, "only {seen} datasource references");
    // The subjects the dashboard exists for.
    let all = queries(&dash).join("\n");
    for needle in [
        "tradebaas_trading_mode",
        "up{",
        "tradebaas_actor_restarts_total",
        "tradebaas_reconnect_attempts_total",
        "tradebaas_circuit_breaker_open",
        "rate(tradebaas_market_data_messages_total",
        "sum by (result) (rate(tradebaas_orders_total",
        "histogram_quantile(0.99, sum by (le) (rate(tradebaas_order_latency_seconds_bucket",
        "tradebaas_positions_open",
        "tradebaas_trades_total",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "tradebaas_last_recovery_duration_seconds",
    ] {
        assert!(
            all.contains(needle),
            "the dashboard queries nothing with {needle}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_metric_is_in_a_live_scrape() {
    let dash = dashboard();
    let wanted: BTreeSet<String> = queries(&dash)
        .iter()
        .flat_map(|q| metric_names(q))
        .collect();
    assert!(
        wanted.len() > 20,
        "only {} metric names found",
        wanted.len()
    );

    let data = tempfile::tempdir().unwrap();
    let config = root().join("config/default.toml");
    let daemon = Daemon::start(data.path(), &config, &[]);
    let base = daemon.base_url();
    let (code, body) = tradebaas::status::get(&base, "/metrics", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(code, 200);
    let text = String::from_utf8(body).unwrap();
    // Sample names as scraped, and the families they belong to (histograms' base names).
    let mut scraped = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            scraped.insert(rest.split_whitespace().next().unwrap().to_owned());
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            scraped.insert(line[..end].to_owned());
        }
    }
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|name| {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            !scraped.contains(name.as_str()) && !scraped.contains(base)
        })
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics the daemon does not export: {missing:?}"
    );
    drop(daemon);
}

// ---------------------------------------------------------------------------------------------
// deploy/kubernetes/.

/// Every document of every manifest in deploy/kubernetes, as JSON values, with its file name.
fn manifests() -> Vec<(String, Value)> {
    use serde::Deserialize as _;
    let dir = root().join("deploy/kubernetes");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "manifests: {files:?}");
    let mut out = Vec::new();
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{name} is not valid YAML: {e}"));
            let json = serde_json::to_value(value).unwrap();
            assert!(
                json["apiVersion"].is_string() && json["kind"].is_string(),
                "{name}: a document without apiVersion/kind"
            );
            out.push((name.clone(), json));
        }
    }
    out
}

fn kind<'a>(all: &'a [(String, Value)], kind: &str) -> Vec<&'a Value> {
    all.iter()
        .filter(|(_, v)| v["kind"] == kind)
        .map(|(_, v)| v)
        .collect()
}

/// A probe's or Service's port (a number or the name of a container port) as a number.
fn resolve_port(port: &Value, container: &Value) -> u64 {
    if let Some(n) = port.as_u64() {
        return n;
    }
    let name = port.as_str().expect("a port is a number or a name");
    container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no container port named {name}"))["containerPort"]
        .as_u64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_manifests_match_the_daemon() {
    let all = manifests();
    let sts = kind(&all, "StatefulSet");
    assert_eq!(sts.len(), 1, "one StatefulSet");
    let sts = sts[0];
    let spec = &sts["spec"];
    assert_eq!(spec["replicas"], 1, "replicas must be 1 (single writer)");
    assert_eq!(spec["podManagementPolicy"], "OrderedReady");
    assert_eq!(spec["updateStrategy"]["type"], "RollingUpdate");
    let pod = &spec["template"]["spec"];
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];

    // The ConfigMap's config.toml: mounted where --config points, parsed by the daemon itself.
    let cms = kind(&all, "ConfigMap");
    assert_eq!(cms.len(), 1);
    let config_text = cms[0]["data"]["config.toml"]
        .as_str()
        .expect("the ConfigMap has config.toml");
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let arg = |flag: &str| {
        let i = args
            .iter()
            .position(|a| *a == flag)
            .unwrap_or_else(|| panic!("no {flag} in {args:?}"));
        args[i + 1]
    };
    assert!(args.contains(&"run"), "{args:?}");
    let mounts = c["volumeMounts"].as_array().unwrap();
    let mount_of = |path: &str| {
        mounts
            .iter()
            .find(|m| {
                let mp = m["mountPath"].as_str().unwrap();
                path == mp || path.starts_with(&format!("{}/", mp.trim_end_matches('/')))
            })
            .unwrap_or_else(|| panic!("nothing is mounted at {path}"))
    };
    let config_path = arg("--config");
    let config_mount = mount_of(config_path);
    let config_volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == config_mount["name"])
        .expect("the config mount's volume");
    assert_eq!(
        config_volume["configMap"]["name"], cms[0]["metadata"]["name"],
        "--config comes from the ConfigMap"
    );
    let file_name = Path::new(config_path)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap();
    assert!(
        config_volume["configMap"]["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["key"] == "config.toml" && i["path"] == file_name),
        "config.toml is projected as {file_name}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let config_file = tmp.path().join("config.toml");
    std::fs::write(&config_file, config_text).unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&config_file)
        .env_remove("TRADEBAAS_LISTEN")
        .env_remove("TRADEBAAS_DATA_DIR")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the ConfigMap's config.toml fails check-config:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let config: toml::Table = toml::from_str(config_text).unwrap();
    let listen: std::net::SocketAddr = config["server"]["listen"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        listen.ip().is_unspecified(),
        "a pod listens on 0.0.0.0, not {listen}"
    );
    let port = u64::from(listen.port());

    // The data directory: --data-dir is the PVC's mount, and the config agrees.
    let data_dir = arg("--data-dir");
    let data_mount = mounts
        .iter()
        .find(|m| m["mountPath"] == data_dir)
        .unwrap_or_else(|| panic!("--data-dir {data_dir} is not a volume mount"));
    let claims = spec["volumeClaimTemplates"].as_array().unwrap();
    let claim = claims
        .iter()
        .find(|t| t["metadata"]["name"] == data_mount["name"])
        .expect("the data dir mount is a volumeClaimTemplate");
    assert_eq!(claim["spec"]["accessModes"][0], "ReadWriteOnce");
    assert_eq!(config["server"]["data_dir"].as_str(), Some(data_dir));
    assert_ne!(data_mount["readOnly"], true);

    // Probes: the daemon's routes, on the port the config listens on.
    let mut probe_paths = Vec::new();
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        let get = &c[probe]["httpGet"];
        let path = get["path"]
            .as_str()
            .unwrap_or_else(|| panic!("{probe} path"));
        assert!(
            tradebaas::http::ROUTES.contains(&path),
            "{probe} {path} is not a route"
        );
        assert_eq!(resolve_port(&get["port"], c), port, "{probe} port");
        probe_paths.push(path);
    }
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/live");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/ready");
    // Generous for recovery: at least the [recovery] timeout plus start-up checks, twice over.
    let startup = &c["startupProbe"];
    let startup_secs =
        startup["periodSeconds"].as_u64().unwrap() * startup["failureThreshold"].as_u64().unwrap();
    assert!(
        startup_secs >= 120,
        "startupProbe allows only {startup_secs} s"
    );
    // More than the daemon's internal shutdown limit.
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    let shutdown =
        humantime::parse_duration(config["server"]["shutdown_timeout"].as_str().unwrap()).unwrap();
    assert!(
        grace > shutdown.as_secs() + 5,
        "terminationGracePeriodSeconds {grace}"
    );

    // Services: the same port, one of them headless for the StatefulSet.
    let services = kind(&all, "Service");
    assert!(!services.is_empty());
    for svc in &services {
        for p in svc["spec"]["ports"].as_array().unwrap() {
            assert_eq!(
                resolve_port(&p["targetPort"], c),
                port,
                "Service targetPort"
            );
        }
        assert_eq!(
            svc["spec"]["selector"], spec["selector"]["matchLabels"],
            "the Service selects the pod"
        );
    }
    assert!(
        services
            .iter()
            .any(|s| s["metadata"]["name"] == spec["serviceName"]
                && s["spec"]["clusterIP"] == "None")
    );
    let annotations = &spec["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], port.to_string());
    assert_eq!(annotations["prometheus.io/path"], "/metrics");
    for pm in kind(&all, "PodMonitor") {
        for ep in pm["spec"]["podMetricsEndpoints"].as_array().unwrap() {
            assert_eq!(resolve_port(&ep["port"], c), port, "PodMonitor port");
            assert_eq!(ep["path"], "/metrics");
        }
    }

    // Credentials from a Secret, under the names the daemon reads.
    let env = c["env"].as_array().unwrap();
    for var in ["DERIBIT_CLIENT_ID", "DERIBIT_CLIENT_SECRET"] {
        let e = env
            .iter()
            .find(|e| e["name"] == var)
            .unwrap_or_else(|| panic!("no {var} in the container's env"));
        assert!(e["value"].is_null(), "{var} must not be a literal");
        assert!(e["valueFrom"]["secretKeyRef"]["name"].is_string(), "{var}");
    }
    let broker = config["broker"].as_table().unwrap();
    assert!(broker.get("client_id_env").is_none() && broker.get("client_secret_env").is_none());
    assert_eq!(
        tradebaas_actors::broker::BrokerConfig::default().client_id_env,
        "DERIBIT_CLIENT_ID"
    );
    assert_eq!(
        tradebaas_actors::broker::BrokerConfig::default().client_secret_env,
        "DERIBIT_CLIENT_SECRET"
    );

    // Non-root, read-only root filesystem, nothing to escalate with.
    let psc = &pod["securityContext"];
    assert_eq!(psc["runAsNonRoot"], true);
    assert!(psc["runAsUser"].as_u64().unwrap() > 0);
    assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault");
    let csc = &c["securityContext"];
    assert_eq!(csc["readOnlyRootFilesystem"], true);
    assert_eq!(csc["allowPrivilegeEscalation"], false);
    assert_eq!(csc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    for r in ["cpu", "memory"] {
        assert!(c["resources"]["requests"][r].is_string(), "requests.{r}");
    }
    assert!(
        c["resources"]["limits"]["memory"].is_string(),
        "limits.memory"
    );

    // The probe paths answer on a running daemon (200 or 503, never 404).
    let data = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(data.path(), &root().join("config/default.toml"), &[]);
    let base = daemon.base_url();
    for path in probe_paths {
        let (code, _) = tradebaas::status::get(&base, path, Duration::from_secs(10))
            .await
            .unwrap();
        assert!(code == 200 || code == 503, "{path} answered {code}");
    }
    drop(daemon);
}

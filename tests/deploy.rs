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

/// The daemon binary under test.
const BIN: &str = env!("CARGO_BIN_EXE_tradebaas");

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

#[path = "deploy/grafana.rs"]
mod grafana;
#[path = "deploy/install.rs"]
mod install;
#[path = "deploy/kubernetes.rs"]
mod kubernetes;

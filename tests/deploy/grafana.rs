//! deploy/grafana/tradebaas.json: every panel's metric against a live scrape.

use super::*;

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

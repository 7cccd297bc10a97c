//! `tradebaas status`: fetch a running daemon's `/health` and print it as a table.
//! Exit code 0 healthy, 1 degraded, 2 unhealthy or unreachable.

use std::fmt::Write as _;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// Fetches `GET {base}{path}`: status code and body.
pub async fn get(base: &str, path: &str, timeout: Duration) -> Result<(u16, Vec<u8>), String> {
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let uri: hyper::Uri = url.parse().map_err(|e| format!("bad URL {url:?}: {e}"))?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let fetch = async {
        let resp = client
            .get(uri)
            .await
            .map_err(|e| format!("cannot reach {url}: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("reading the answer of {url}: {e}"))?
            .to_bytes();
        Ok((status, body.to_vec()))
    };
    tokio::time::timeout(timeout, fetch)
        .await
        .map_err(|_| format!("no answer from {url} within {}s", timeout.as_secs()))?
}

/// Renders a `/health` body as a table.
pub fn render(health: &Value) -> String {
    let s = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        Value::Number(n) if n.is_f64() => format!("{:.1}", n.as_f64().unwrap_or_default()),
        other => other.to_string(),
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "status {}   mode {}   version {}   uptime {}s",
        s(&health["status"]),
        s(&health["mode"]),
        s(&health["version"]),
        s(&health["uptime_seconds"])
    );
    let _ = writeln!(
        out,
        "\n{:<18} {:<13} {:>8}  facts",
        "ACTOR", "STATUS", "RESTARTS"
    );
    if let Some(actors) = health["actors"].as_object() {
        for (name, a) in actors {
            let facts: Vec<String> = match name.as_str() {
                "broker-connection" => [
                    "state",
                    "circuit_breaker",
                    "reconnect_attempts",
                    "market_data_age_ms",
                ]
                .as_slice(),
                "strategy" => ["active", "ticks_received"].as_slice(),
                "state-persister" => ["last_seq", "writes_failed"].as_slice(),
                "fail-safe" => ["mode", "reason"].as_slice(),
                "heartbeat" => ["beats", "unanswered"].as_slice(),
                "alert" => ["open", "open_critical", "sinks_failing"].as_slice(),
                _ => [].as_slice(),
            }
            .iter()
            .filter(|k| !a[**k].is_null())
            .map(|k| format!("{k}={}", s(&a[*k])))
            .collect();
            let _ = writeln!(
                out,
                "{:<18} {:<13} {:>8}  {}",
                name,
                s(&a["status"]),
                s(&a["restarts"]),
                facts.join(" ")
            );
        }
    }
    let sys = &health["system"];
    // A figure the daemon could not read is `null`: printed as unknown, never as 0 %.
    let percent = |v: &Value| match v.as_f64() {
        Some(p) => format!("{p:.1}%"),
        None => "unknown".into(),
    };
    let limit = match (
        sys["memory_limit_bytes"].as_u64(),
        sys["memory_limit_source"].as_str(),
    ) {
        (Some(l), Some(src)) => format!(" of {l} bytes ({src})"),
        _ => String::new(),
    };
    let _ = writeln!(
        out,
        "\nsystem memory {}{limit}  cpu {}  rss {} bytes",
        percent(&sys["memory_percent"]),
        percent(&sys["cpu_percent"]),
        s(&sys["rss_bytes"])
    );
    if let Some(unknown) = sys["unknown"].as_array().filter(|u| !u.is_empty()) {
        for u in unknown {
            let _ = writeln!(out, "  unknown: {}", s(u));
        }
    }
    if let Some(reasons) = health["reasons"].as_array().filter(|r| !r.is_empty()) {
        let _ = writeln!(out, "\nreasons:");
        for r in reasons {
            let _ = writeln!(out, "  - {}", s(r));
        }
    }
    out
}

/// The exit code for a verdict.
pub fn exit_code(status: &str) -> i32 {
    match status {
        "healthy" => 0,
        "degraded" => 1,
        _ => 2,
    }
}

/// `tradebaas status --url URL`.
pub async fn run(base: &str) -> i32 {
    match get(base, "/health", Duration::from_secs(5)).await {
        Ok((_, body)) => match serde_json::from_slice::<Value>(&body) {
            Ok(health) => {
                print!("{}", render(&health));
                exit_code(health["status"].as_str().unwrap_or(""))
            }
            Err(e) => {
                eprintln!("tradebaas status: {base}/health did not return JSON: {e}");
                2
            }
        },
        Err(e) => {
            eprintln!("tradebaas status: {e}");
            2
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_system_figures_print_as_unknown_never_zero() {
        let health = json!({
            "status": "healthy",
            "system": {
                "memory_percent": null, "memory": "unknown", "cpu_percent": 3.25, "cpu": "ok",
                "rss_bytes": 1000, "memory_limit_bytes": null, "memory_limit_source": null,
                "unknown": ["memory: no memory limit to measure RSS against"],
            },
        });
        let out = render(&health);
        assert!(
            out.contains("system memory unknown  cpu 3.2%  rss 1000 bytes"),
            "{out}"
        );
        assert!(out.contains("unknown: memory: no memory limit"), "{out}");
        assert!(!out.contains("0.0%"), "{out}");
        let health = json!({"system": {
            "memory_percent": 25.0, "cpu_percent": 1.0, "rss_bytes": 268435456,
            "memory_limit_bytes": 1073741824u64, "memory_limit_source": "cgroup", "unknown": [],
        }});
        let out = render(&health);
        assert!(
            out.contains("memory 25.0% of 1073741824 bytes (cgroup)"),
            "{out}"
        );
    }
}

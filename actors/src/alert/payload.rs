//! The bodies the external sinks post, built from [`AlertRecord`]s (pure, no I/O).
//!
//! - Alertmanager `POST /api/v2/alerts`: a JSON array of `{labels, annotations, startsAt,
//!   endsAt?, generatorURL?}`. Labels identify an alert in Alertmanager, so they hold only what
//!   identifies the condition (`alertname` = the dedup key, `severity`, `key`, `service`); the
//!   `alert_id`, texts and counts are annotations. A re-raised key is therefore the same
//!   Alertmanager alert, consistent with Alertmanager's own grouping and dedup.
//! - Generic webhook: the Alertmanager webhook version 4 body (what Alertmanager sends to its
//!   receivers), so receivers written for Alertmanager accept ours.
//! - Telegram: the `sendMessage` body with a plain-text message.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::AlertRecord;

/// The `service` label on every alert.
pub const SERVICE: &str = "tradebaas";

/// Go's zero time, which Alertmanager puts into `endsAt` of a firing alert in webhook bodies.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The identifying labels of an alert.
pub fn labels(r: &AlertRecord) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("alertname".to_owned(), r.alert.key.clone()),
        ("key".to_owned(), r.alert.key.clone()),
        (
            "severity".to_owned(),
            r.alert.severity.as_str().to_ascii_lowercase(),
        ),
        ("service".to_owned(), SERVICE.to_owned()),
    ])
}

/// The descriptive annotations of an alert.
pub fn annotations(r: &AlertRecord) -> BTreeMap<String, String> {
    let mut a = BTreeMap::from([
        ("summary".to_owned(), r.alert.title.clone()),
        ("description".to_owned(), r.alert.message.clone()),
        ("root_cause".to_owned(), r.alert.root_cause.clone()),
        (
            "recommended_action".to_owned(),
            r.alert.recommended_action.clone(),
        ),
        ("alert_id".to_owned(), r.alert_id.clone()),
        ("count".to_owned(), r.count.to_string()),
    ]);
    if !r.alert.metadata.is_null() {
        a.insert("metadata".to_owned(), r.alert.metadata.to_string());
    }
    a
}

/// Alertmanager's label-set fingerprint (FNV-1a 64 over the sorted names and values, each
/// followed by the 0xff separator), as 16 hex digits.
pub fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    const OFFSET: u64 = 14_695_981_039_346_656_037;
    const PRIME: u64 = 1_099_511_628_211;
    let mut h = OFFSET;
    let mut add = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(PRIME);
        }
    };
    for (name, value) in labels {
        add(name.as_bytes());
        add(&[0xff]);
        add(value.as_bytes());
        add(&[0xff]);
    }
    format!("{h:016x}")
}

/// One alert for Alertmanager's `POST /api/v2/alerts`; `endsAt` only once resolved.
pub fn alertmanager_alert(r: &AlertRecord, generator_url: Option<&str>) -> Value {
    let mut a = json!({
        "labels": labels(r),
        "annotations": annotations(r),
        "startsAt": rfc3339(r.timestamp),
    });
    if let Some(end) = r.resolved_at {
        a["endsAt"] = json!(rfc3339(end));
    }
    if let Some(url) = generator_url.filter(|u| !u.is_empty()) {
        a["generatorURL"] = json!(url);
    }
    a
}

/// The `POST /api/v2/alerts` body for `records`.
pub fn alertmanager_body<'a>(
    records: impl IntoIterator<Item = &'a AlertRecord>,
    generator_url: Option<&str>,
) -> Value {
    Value::Array(
        records
            .into_iter()
            .map(|r| alertmanager_alert(r, generator_url))
            .collect(),
    )
}

/// The webhook-v4 body for one alert changing state (firing on raise, resolved on resolve).
pub fn webhook_v4(r: &AlertRecord, receiver: &str, external_url: &str) -> Value {
    let status = if r.resolved_at.is_some() {
        "resolved"
    } else {
        "firing"
    };
    let labels = labels(r);
    let annotations = annotations(r);
    let group_labels = BTreeMap::from([("alertname".to_owned(), r.alert.key.clone())]);
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{{alertname={:?}}}", r.alert.key),
        "truncatedAlerts": 0,
        "status": status,
        "receiver": receiver,
        "groupLabels": group_labels,
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": external_url,
        "alerts": [{
            "status": status,
            "labels": labels,
            "annotations": annotations,
            "startsAt": rfc3339(r.timestamp),
            "endsAt": r.resolved_at.map_or_else(|| ZERO_TIME.to_owned(), rfc3339),
            "generatorURL": external_url,
            "fingerprint": fingerprint(&labels),
        }],
    })
}

/// The Telegram `sendMessage` body: a plain-text summary of a raise or a resolve.
pub fn telegram_message(r: &AlertRecord, chat_id: &str) -> Value {
    let text = match r.resolved_at {
        Some(at) => format!(
            "RESOLVED {} [{}]\n{}\nresolved at {}",
            r.alert.severity.as_str(),
            r.alert.key,
            r.alert.title,
            rfc3339(at)
        ),
        None => format!(
            "{} [{}] {}\n{}\nroot cause: {}\naction: {}\nid {}",
            r.alert.severity.as_str(),
            r.alert.key,
            r.alert.title,
            r.alert.message,
            r.alert.root_cause,
            r.alert.recommended_action,
            r.alert_id
        ),
    };
    json!({ "chat_id": chat_id, "text": text, "disable_web_page_preview": true })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{Alert, Severity};

    fn record() -> AlertRecord {
        AlertRecord {
            alert_id: "0190-id".into(),
            timestamp: "2026-01-02T03:04:05Z".parse().unwrap(),
            alert: Alert {
                key: "failsafe:heartbeat".into(),
                severity: Severity::Critical,
                title: "Trading stopped".into(),
                message: "fail-safe entered SHUTDOWN".into(),
                root_cause: "heartbeat lost".into(),
                recommended_action: "check the host".into(),
                metadata: json!({"trigger": "heartbeat"}),
            },
            acknowledged: false,
            count: 3,
            last_raised_at: None,
            acknowledged_at: None,
            resolved_at: None,
        }
    }

    #[test]
    fn alertmanager_alert_has_labels_annotations_and_no_end_while_open() {
        let a = alertmanager_alert(&record(), Some("http://tb:3000/health"));
        assert_eq!(a["labels"]["alertname"], "failsafe:heartbeat");
        assert_eq!(a["labels"]["severity"], "critical");
        assert_eq!(a["labels"]["key"], "failsafe:heartbeat");
        assert_eq!(a["annotations"]["summary"], "Trading stopped");
        assert_eq!(
            a["annotations"]["description"],
            "fail-safe entered SHUTDOWN"
        );
        assert_eq!(a["annotations"]["root_cause"], "heartbeat lost");
        assert_eq!(a["annotations"]["recommended_action"], "check the host");
        assert_eq!(a["startsAt"], "2026-01-02T03:04:05.000Z");
        assert_eq!(a["generatorURL"], "http://tb:3000/health");
        assert!(a.get("endsAt").is_none());
        assert!(
            alertmanager_alert(&record(), None)
                .get("generatorURL")
                .is_none()
        );
    }

    #[test]
    fn a_resolved_alert_carries_ends_at() {
        let mut r = record();
        r.resolved_at = Some("2026-01-02T04:00:00Z".parse().unwrap());
        let a = alertmanager_alert(&r, None);
        assert_eq!(a["endsAt"], "2026-01-02T04:00:00.000Z");
        let w = webhook_v4(&r, "tradebaas", "");
        assert_eq!(w["status"], "resolved");
        assert_eq!(w["alerts"][0]["endsAt"], "2026-01-02T04:00:00.000Z");
    }

    #[test]
    fn webhook_v4_has_every_documented_field() {
        let w = webhook_v4(&record(), "ops", "http://tb:3000");
        for k in [
            "version",
            "groupKey",
            "status",
            "receiver",
            "groupLabels",
            "commonLabels",
            "commonAnnotations",
            "externalURL",
            "alerts",
        ] {
            assert!(w.get(k).is_some(), "missing {k}");
        }
        assert_eq!(w["version"], "4");
        assert_eq!(w["status"], "firing");
        assert_eq!(w["receiver"], "ops");
        assert_eq!(w["groupKey"], "{}:{alertname=\"failsafe:heartbeat\"}");
        let a = &w["alerts"][0];
        for k in [
            "status",
            "labels",
            "annotations",
            "startsAt",
            "endsAt",
            "fingerprint",
        ] {
            assert!(a.get(k).is_some(), "missing alerts[0].{k}");
        }
        assert_eq!(a["endsAt"], ZERO_TIME);
        assert_eq!(a["fingerprint"].as_str().unwrap().len(), 16);
    }

    #[test]
    fn fingerprint_is_fnv1a_over_sorted_labels() {
        // Empty label set: the FNV-1a offset basis.
        assert_eq!(fingerprint(&BTreeMap::new()), "cbf29ce484222325");
        let a = labels(&record());
        assert_eq!(fingerprint(&a), fingerprint(&a.clone()));
        let mut b = a.clone();
        b.insert("severity".into(), "warning".into());
        assert_ne!(fingerprint(&a), fingerprint(&b));
    }

    #[test]
    fn telegram_text_names_severity_key_and_action() {
        let m = telegram_message(&record(), "-100123");
        assert_eq!(m["chat_id"], "-100123");
        let text = m["text"].as_str().unwrap();
        assert!(text.starts_with("CRITICAL [failsafe:heartbeat] Trading stopped"));
        assert!(text.contains("check the host"));
    }
}

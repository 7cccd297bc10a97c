//! Unit tests of the admin channel: peer check, config, request parsing, the pre-flight.

use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};

use tradebaas_actors::checks::{self, ChecksArgs, ChecksReport};
use tradebaas_actors::client::Reply;
use tradebaas_actors::failsafe::FailSafeStatus;
use tradebaas_actors::names::Names;

use super::*;

#[test]
fn only_the_own_uid_and_listed_uids_are_authorized() {
    let none = AdminConfig::default();
    assert_eq!(authorize(1000, 1000, &none), Ok(()));
    let err = authorize(65534, 1000, &none).unwrap_err();
    assert!(
        err.contains("uid 65534") && err.contains("allowed_uids"),
        "{err}"
    );
    let listed = AdminConfig {
        allowed_uids: vec![1001],
    };
    assert_eq!(authorize(1001, 1000, &listed), Ok(()));
    assert!(authorize(1002, 1000, &listed).is_err());
    // Root is not special: it is allowed only as the daemon's own uid or when listed.
    assert!(authorize(0, 1000, &listed).is_err());
}

#[test]
fn config_validation_names_the_field() {
    assert_eq!(AdminConfig::default().validate(), Ok(()));
    let dup = AdminConfig {
        allowed_uids: vec![5, 5],
    };
    assert!(dup.validate().unwrap_err().starts_with("allowed_uids[1]"));
    let bad = AdminConfig {
        allowed_uids: vec![u32::MAX],
    };
    assert!(bad.validate().unwrap_err().starts_with("allowed_uids[0]"));
}

#[test]
fn requests_parse_and_malformed_lines_are_errors() {
    assert_eq!(
        parse_request(br#"{"command":"mode","mode":"observe","reason":"x"}"#),
        Ok(Request::Mode {
            mode: OperatorMode::Observe,
            reason: "x".into()
        })
    );
    assert_eq!(
        parse_request(br#"{"command":"alerts_ack","alert_id":"a1"}"#),
        Ok(Request::AlertsAck {
            alert_id: "a1".into(),
            reason: None
        })
    );
    assert_eq!(
        parse_request(br#"{"command":"status"}"#),
        Ok(Request::Status {})
    );
    for bad in [
        &b""[..],
        b"not json",
        b"\xff\xfe",
        br#"{"command":"mode","mode":"shutdown","reason":"x"}"#,
        br#"{"command":"mode","mode":"observe"}"#,
        br#"{"command":"status","extra":1}"#,
        br#"{"command":"rm -rf"}"#,
        b"[1,2,3]",
    ] {
        assert!(
            parse_request(bad).is_err(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn preflight_names_every_failed_check() {
    let fs = FailSafeStatus {
        mode: TradingMode::ObserveOnly,
        loaded: true,
        reason: "test".into(),
        changed_at: None,
        initial_mode: TradingMode::ObserveOnly,
        initial_mode_reason: "test".into(),
        triggers: 0,
        last_trigger: None,
        recovered: false,
        conditions: Vec::new(),
        checks: None,
    };
    let bad_store = ChecksReport {
        kind: checks::RunKind::OnDemand,
        at: chrono::Utc::now(),
        passed: false,
        took_ms: 1,
        checks: vec![
            checks::Check {
                name: checks::EVENT_LOG.into(),
                passed: false,
                detail: "event 2: hash mismatch".into(),
            },
            checks::Check {
                name: checks::MODE.into(),
                passed: true,
                detail: "ok".into(),
            },
        ],
    };
    let problems = preflight_problems(
        &Reply::Answered(fs.clone()),
        &Reply::Unresponsive,
        &Reply::NotRunning,
        Some(&bad_store),
    );
    assert_eq!(problems.len(), 4, "{problems:?}");
    assert!(problems[0].contains("recovery has not finished"));
    assert!(problems[1].contains("broker-connection is unresponsive"));
    assert!(problems[2].contains("state-persister is not running"));
    assert!(problems[3].contains("hash mismatch"));
    let unloaded = FailSafeStatus {
        loaded: false,
        ..fs
    };
    let problems = preflight_problems(
        &Reply::Answered(unloaded),
        &Reply::NotRunning,
        &Reply::NotRunning,
        None,
    );
    assert!(problems[0].contains("not been loaded"), "{problems:?}");
    assert!(problems[3].contains("did not run"), "{problems:?}");
}

#[tokio::test]
async fn the_socket_is_0600_replaces_a_stale_one_and_answers_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    // A stale socket from an earlier run.
    let stale = std::os::unix::net::UnixListener::bind(socket_path(dir.path())).unwrap();
    drop(stale);
    let bound = bind(dir.path()).unwrap();
    let meta = std::fs::metadata(bound.path()).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    assert_eq!(leftovers, vec![SOCKET_NAME.to_string()]);
    let path = bound.path().to_path_buf();
    let server = bound.serve(AdminContext {
        names: Names::with_prefix("admin-unit-"),
        config: AdminConfig::default(),
        checks: ChecksArgs {
            store_path: dir.path().join("tradebaas.db"),
            config: Default::default(),
        },
    });
    let exchange = |bytes: Vec<u8>| {
        let path = path.clone();
        tokio::task::spawn_blocking(move || {
            let mut s = std::os::unix::net::UnixStream::connect(&path).unwrap();
            s.write_all(&bytes).unwrap();
            let mut answer = String::new();
            s.read_to_string(&mut answer).unwrap();
            serde_json::from_str::<Response>(answer.trim()).unwrap()
        })
    };
    let r = exchange(b"{not json\n".to_vec()).await.unwrap();
    assert_eq!(r.error, Some(Refusal::BadRequest), "{r:?}");
    let mut long = vec![b'x'; MAX_REQUEST_BYTES + 10];
    long.push(b'\n');
    let r = exchange(long).await.unwrap();
    assert!(r.message.contains("longer than"), "{r:?}");
    // No actors under these names: an honest "unavailable", not a panic.
    let r = exchange(b"{\"command\":\"status\"}\n".to_vec())
        .await
        .unwrap();
    assert_eq!(r.error, Some(Refusal::Unavailable), "{r:?}");
    let r = exchange(b"{\"command\":\"mode\",\"mode\":\"observe\",\"reason\":\"  \"}\n".to_vec())
        .await
        .unwrap();
    assert!(r.message.contains("reason is required"), "{r:?}");
    server.stop().await;
    assert!(!path.exists(), "the socket file is removed at stop");
}

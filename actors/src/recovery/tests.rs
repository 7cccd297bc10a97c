use super::*;
use crate::strategy::{Lifecycle, Side};
use crate::testkit;

fn record(
    id: &str,
    position: Option<(&str, Side, f64, &[&str])>,
    intents: &[&str],
) -> StrategyRecord {
    StrategyRecord {
        id: id.into(),
        lifecycle: if position.is_some() {
            Lifecycle::PositionOpen
        } else if intents.is_empty() {
            Lifecycle::Idle
        } else {
            Lifecycle::EnteringPosition
        },
        position: position.map(|(instrument, direction, size, protective)| {
            testkit::position(instrument, direction, size, protective)
        }),
        intents_in_flight: intents.iter().map(|l| testkit::buy_intent(l)).collect(),
        next_intent_seq: 0,
        updated_at: Utc::now(),
    }
}

fn pos(instrument: &str, size: f64) -> ExPosition {
    ExPosition {
        instrument_name: instrument.into(),
        size,
        direction: if size > 0.0 {
            "buy"
        } else if size < 0.0 {
            "sell"
        } else {
            "zero"
        }
        .into(),
        average_price: 65_000.0,
    }
}

fn order(id: &str, label: &str, state: &str) -> ExOrder {
    ExOrder::sample(id, label, state)
}

struct Case {
    name: &'static str,
    local: Vec<StrategyRecord>,
    positions: Vec<ExPosition>,
    open: Vec<ExOrder>,
    labelled: Vec<(String, Option<ExOrder>)>,
    expected: Vec<Difference>,
}

#[test]
fn reconcile_table() {
    let cases = vec![
        Case {
            name: "everything agrees (short position, owned protective order by label and id)",
            local: vec![record(
                "a",
                Some(("BTC-PERPETUAL", Side::Sell, 100.0, &["tb-a-sl", "ORD-9"])),
                &[],
            )],
            positions: vec![pos("BTC-PERPETUAL", -100.0), pos("ETH-PERPETUAL", 0.0)],
            open: vec![
                order("ORD-1", "tb-a-sl", "open"),
                order("ORD-9", "tb-other", "untriggered"),
                order("ORD-2", "manual", "open"),
                order("ORD-3", "", "open"),
            ],
            labelled: vec![],
            expected: vec![],
        },
        Case {
            name: "unknown exchange position",
            local: vec![record("a", None, &[])],
            positions: vec![pos("ETH-PERPETUAL", -300.0)],
            open: vec![],
            labelled: vec![],
            expected: vec![Difference::UnknownExchangePosition {
                instrument: "ETH-PERPETUAL".into(),
                size: -300.0,
            }],
        },
        Case {
            name: "local position gone (flat on the exchange)",
            local: vec![record(
                "a",
                Some(("BTC-PERPETUAL", Side::Buy, 100.0, &[])),
                &[],
            )],
            positions: vec![pos("BTC-PERPETUAL", 0.0)],
            open: vec![],
            labelled: vec![],
            expected: vec![Difference::LocalPositionGone {
                strategy: "a".into(),
                instrument: "BTC-PERPETUAL".into(),
            }],
        },
        Case {
            name: "size mismatch, including a flipped side",
            local: vec![
                record("a", Some(("BTC-PERPETUAL", Side::Buy, 100.0, &[])), &[]),
                record("b", Some(("ETH-PERPETUAL", Side::Buy, 50.0, &[])), &[]),
            ],
            positions: vec![pos("BTC-PERPETUAL", 200.0), pos("ETH-PERPETUAL", -50.0)],
            open: vec![],
            labelled: vec![],
            expected: vec![
                Difference::SizeMismatch {
                    strategy: "a".into(),
                    instrument: "BTC-PERPETUAL".into(),
                    local: 100.0,
                    exchange: 200.0,
                },
                Difference::SizeMismatch {
                    strategy: "b".into(),
                    instrument: "ETH-PERPETUAL".into(),
                    local: 50.0,
                    exchange: -50.0,
                },
            ],
        },
        Case {
            name: "two strategies on one instrument are summed",
            local: vec![
                record("a", Some(("BTC-PERPETUAL", Side::Buy, 100.0, &[])), &[]),
                record("b", Some(("BTC-PERPETUAL", Side::Sell, 30.0, &[])), &[]),
            ],
            positions: vec![pos("BTC-PERPETUAL", 70.0)],
            open: vec![],
            labelled: vec![],
            expected: vec![],
        },
        Case {
            name: "intent reached the exchange (and its open order is owned)",
            local: vec![record("a", None, &["tb-a-1"])],
            positions: vec![],
            open: vec![order("ORD-1", "tb-a-1", "open")],
            labelled: vec![("tb-a-1".into(), Some(order("ORD-1", "tb-a-1", "open")))],
            expected: vec![Difference::IntentReachedExchange {
                strategy: "a".into(),
                label: "tb-a-1".into(),
                order_state: "open".into(),
            }],
        },
        Case {
            name: "intent not on the exchange (answered empty, or not asked)",
            local: vec![record("a", None, &["tb-a-1", "tb-a-2"])],
            positions: vec![],
            open: vec![],
            labelled: vec![("tb-a-1".into(), None)],
            expected: vec![
                Difference::IntentNotOnExchange {
                    strategy: "a".into(),
                    label: "tb-a-1".into(),
                },
                Difference::IntentNotOnExchange {
                    strategy: "a".into(),
                    label: "tb-a-2".into(),
                },
            ],
        },
        Case {
            name: "orphan order: our prefix, nobody owns it",
            local: vec![record(
                "a",
                Some(("BTC-PERPETUAL", Side::Buy, 10.0, &["tb-a-sl"])),
                &[],
            )],
            positions: vec![pos("BTC-PERPETUAL", 10.0)],
            open: vec![
                order("ORD-1", "tb-a-sl", "untriggered"),
                order("ORD-2", "tb-x-7", "open"),
                order("ORD-3", "tbx-not-ours", "open"),
            ],
            labelled: vec![],
            expected: vec![Difference::OrphanOrder {
                order_id: "ORD-2".into(),
                label: "tb-x-7".into(),
                instrument: "BTC-PERPETUAL".into(),
            }],
        },
    ];
    for c in cases {
        let got = reconcile(&c.local, &c.positions, &c.open, &c.labelled, "tb");
        assert_eq!(got, c.expected, "case: {}", c.name);
    }
}

#[test]
fn differences_serialize_with_a_kind_tag() {
    let d = Difference::OrphanOrder {
        order_id: "1".into(),
        label: "tb-1".into(),
        instrument: "BTC-PERPETUAL".into(),
    };
    assert_eq!(
        serde_json::to_value(&d).unwrap(),
        json!({"kind": "orphan_order", "order_id": "1", "label": "tb-1", "instrument": "BTC-PERPETUAL"})
    );
}

#[test]
fn exchange_objects_parse_from_deribit_shapes() {
    let p: Vec<ExPosition> = serde_json::from_value(json!([{
        "instrument_name": "BTC-PERPETUAL", "size": -100, "direction": "sell",
        "average_price": 65000.5, "kind": "future", "delta": -0.001
    }]))
    .unwrap();
    assert_eq!(p[0].size, -100.0);
    let o: Vec<ExOrder> = serde_json::from_value(json!([{
        "order_id": "ETH-1", "instrument_name": "ETH-PERPETUAL", "order_state": "filled",
        "direction": "buy", "amount": 5, "price": 3000, "label": "tb-a-1"
    }, {
        "order_id": "ETH-2", "instrument_name": "ETH-PERPETUAL", "order_state": "open"
    }]))
    .unwrap();
    assert_eq!(o[0].label, "tb-a-1");
    assert_eq!(o[1].label, "");
}

#[test]
fn config_defaults_and_validation() {
    let c = RecoveryConfig::default();
    assert_eq!(c.timeout, Duration::from_secs(30));
    assert_eq!(c.label_prefix, "tb");
    assert_eq!(c.currencies, vec!["BTC".to_string()]);
    assert!(c.validate().is_ok());
    let parsed: RecoveryConfig =
        serde_json::from_value(json!({"timeout": "5s", "currencies": ["BTC", "ETH"]})).unwrap();
    assert_eq!(parsed.timeout, Duration::from_secs(5));
    assert_eq!(parsed.label_prefix, "tb");
    assert!(serde_json::from_value::<RecoveryConfig>(json!({"timout": "5s"})).is_err());
    for (bad, field) in [
        (json!({"timeout": "10ms"}), "timeout"),
        (json!({"label_prefix": ""}), "label_prefix"),
        (json!({"currencies": []}), "currencies"),
        (json!({"currencies": ["btc"]}), "currencies[0]"),
    ] {
        let c: RecoveryConfig = serde_json::from_value(bad).unwrap();
        let e = c.validate().unwrap_err();
        assert!(e.starts_with(field), "{e}");
    }
}

#[test]
fn only_a_clean_recovery_of_a_stored_aggressive_mode_resumes() {
    use TradingMode::*;
    assert_eq!(
        resume_decision(true, Some(Aggressive), true, Some(ObserveOnly)),
        Resume::Resume
    );
    // Already in SHUTDOWN: nothing to restrict, trading stays stopped.
    assert_eq!(
        resume_decision(true, Some(Aggressive), true, Some(Shutdown)),
        Resume::StaysShutdown
    );
    // Clean, but not stored as AGGRESSIVE: restricted, no alert, a warning saying why.
    assert_eq!(
        resume_decision(true, Some(ObserveOnly), true, Some(ObserveOnly)),
        Resume::Restrict {
            alert: false,
            warning: Some("stored mode OBSERVE_ONLY: trading is not resumed automatically".into()),
        }
    );
    // Unclean: restricted and alerted, whatever was stored.
    assert_eq!(
        resume_decision(false, Some(Aggressive), true, Some(Aggressive)),
        Resume::Restrict {
            alert: true,
            warning: None,
        }
    );
}

#[test]
fn a_first_start_resumes_on_the_configured_mode_but_not_with_records_and_no_mode() {
    use TradingMode::*;
    // Nothing stored at all: the fail-safe's initial mode stands in.
    assert_eq!(
        resume_decision(true, None, false, Some(Aggressive)),
        Resume::Resume
    );
    assert_eq!(
        resume_decision(true, None, false, Some(ObserveOnly)),
        Resume::Restrict {
            alert: false,
            warning: Some("no stored mode: trading is not resumed automatically".into()),
        }
    );
    // Records but no stored mode: the mode was lost, so no resume on the configured one.
    assert_eq!(
        resume_decision(true, None, true, Some(Aggressive)),
        Resume::Restrict {
            alert: false,
            warning: Some("no stored mode: trading is not resumed automatically".into()),
        }
    );
    // The fail-safe did not answer: nothing to stand in.
    assert!(matches!(
        resume_decision(true, None, false, None),
        Resume::Restrict { alert: false, .. }
    ));
}

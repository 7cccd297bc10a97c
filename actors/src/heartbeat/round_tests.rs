//! The round book on its own: plain tests, no runtime, no actor, time passed in.

use super::*;
use chrono::TimeZone;

const ALL: [ChildName; 5] = [
    ChildName::Alert,
    ChildName::StatePersister,
    ChildName::FailSafe,
    ChildName::BrokerConnection,
    ChildName::Strategy,
];

fn at(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::seconds(secs)
}

/// Every child answers in 2 ms except those in `silent`, which get `outcome`.
fn pings(silent: &[ChildName], outcome: PingOutcome) -> Vec<(ChildName, PingOutcome)> {
    ALL.iter()
        .map(|c| {
            if silent.contains(c) {
                (*c, outcome)
            } else {
                (*c, PingOutcome::Answered(Duration::from_millis(2)))
            }
        })
        .collect()
}

fn round(
    b: &mut RoundBook,
    silent: &[ChildName],
    escalated: &[ChildName],
    secs: i64,
) -> Vec<Effect> {
    b.on_round(
        pings(silent, PingOutcome::TimedOut),
        escalated.iter().copied().collect(),
        Some(TradingMode::Aggressive),
        2,
        at(secs),
    )
}

fn systemd(effects: &[Effect]) -> (bool, String) {
    match effects.last() {
        Some(Effect::Systemd { feed, status }) => (*feed, status.clone()),
        other => panic!("the systemd line comes last, got {other:?}"),
    }
}

#[test]
fn a_round_where_all_answer_feeds_the_watchdog() {
    let mut b = RoundBook::default();
    let effects = round(&mut b, &[], &[], 1);
    assert_eq!(effects.len(), 1, "{effects:?}");
    let (feed, status) = systemd(&effects);
    assert!(feed);
    assert_eq!(
        status,
        "mode AGGRESSIVE; heartbeat round 1: all 5 actors answered (slowest 2.0 ms)"
    );
    assert_eq!(b.beats(), 1);
    assert_eq!(b.last_beat_at(), Some(at(1)));
    assert_eq!(b.round_trip_ms().len(), 5);
    assert_eq!(b.mode(), Some(TradingMode::Aggressive));
}

#[test]
fn a_silent_child_withholds_the_watchdog_is_wedged_once_and_resolved_when_it_answers() {
    let mut b = RoundBook::default();
    let s = ChildName::Strategy;
    let first = round(&mut b, &[s], &[], 1);
    assert_eq!(first[0], Effect::Silent(s, PingOutcome::TimedOut));
    assert!(!first.iter().any(|e| matches!(e, Effect::Wedged { .. })));
    let (feed, status) = systemd(&first);
    assert!(!feed);
    assert!(
        status.ends_with("no answer from strategy; watchdog not fed"),
        "{status}"
    );
    assert!(b.unanswered().contains(&s));

    let second = round(&mut b, &[s], &[], 2);
    assert_eq!(
        second[0],
        Effect::Wedged {
            child: s,
            outcome: PingOutcome::TimedOut,
            rounds: 2
        },
        "logged silent once, wedged at the threshold"
    );
    let third = round(&mut b, &[s], &[], 3);
    assert_eq!(
        third.len(),
        1,
        "nothing new while it stays silent: {third:?}"
    );

    let back = round(&mut b, &[], &[], 4);
    assert_eq!(
        &back[..2],
        &[
            Effect::AnswersAgain(s),
            Effect::Resolve {
                child: s,
                why: "wedged actor answers again"
            }
        ]
    );
    assert!(systemd(&back).0);
    assert!(b.unanswered().is_empty());
}

#[test]
fn an_absent_child_is_listed_as_absent_and_unanswered() {
    let mut b = RoundBook::default();
    b.on_round(
        pings(&[ChildName::BrokerConnection], PingOutcome::Absent),
        BTreeSet::new(),
        None,
        2,
        at(1),
    );
    assert_eq!(b.absent(), ["broker-connection".to_string()]);
    assert!(b.unanswered().contains(&ChildName::BrokerConnection));
}

#[test]
fn an_escalated_child_is_not_expected_and_its_earlier_wedge_is_resolved() {
    let mut b = RoundBook::default();
    let c = ChildName::BrokerConnection;
    round(&mut b, &[c], &[], 1);
    let wedged = round(&mut b, &[c], &[], 2);
    assert!(wedged.iter().any(|e| matches!(e, Effect::Wedged { .. })));
    let escalated = round(&mut b, &[c], &[c], 3);
    assert_eq!(escalated[0], Effect::Escalated(c));
    assert_eq!(
        escalated[1],
        Effect::Resolve {
            child: c,
            why: "escalated: its escalation alert takes over"
        }
    );
    let (feed, status) = systemd(&escalated);
    assert!(feed, "an escalated child does not withhold the watchdog");
    assert!(
        status.ends_with("escalated (stopped, see /health): broker-connection"),
        "{status}"
    );
    assert!(b.unanswered().is_empty());
    let later = round(&mut b, &[c], &[c], 4);
    assert_eq!(later.len(), 1, "escalation logged once: {later:?}");
}

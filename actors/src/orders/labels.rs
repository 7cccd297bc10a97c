//! Deterministic order labels: `<prefix>-<strategy_id>-<intent_seq>[-<leg>]`.
//!
//! The same intent always yields the same label, so after a timeout or reconnect the caller can
//! ask `private/get_order_state_by_label` whether an order reached the exchange instead of
//! placing it twice, and orphan cleanup can tell our orders from anybody else's.
//!
//! Rules (Deribit caps `label` at 64 characters; its docs do not list allowed characters, so we
//! stay within a conservative set):
//! - `prefix`: 1+ of `[A-Za-z0-9_]` (no `-`, so the first `-` ends the prefix).
//! - `strategy_id`: 1+ of `[A-Za-z0-9_-]`, not starting or ending with `-`, no `--`.
//! - `intent_seq`: decimal `u64` without leading zeros.
//! - leg suffix: none (entry), `-sl`, `-tp`, `-close`.
//!
//! Invalid input is **refused**, never sanitized: sanitizing could map two strategy ids to one
//! label and break both idempotency and ownership. [`intent_label`] also refuses when the longest
//! leg label of the intent would exceed 64 characters, so every leg of an accepted intent fits.

/// Deribit's maximum `label` length.
pub const LABEL_MAX_LEN: usize = 64;

/// Which order of an intent a label names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Leg {
    /// The entry order (no suffix).
    Entry,
    /// The protective stop-loss (`-sl`).
    StopLoss,
    /// The take-profit (`-tp`).
    TakeProfit,
    /// An order that closes the position (`-close`).
    Close,
}

impl Leg {
    /// All legs, in a fixed order.
    pub const ALL: [Leg; 4] = [Leg::Entry, Leg::StopLoss, Leg::TakeProfit, Leg::Close];

    fn suffix(self) -> &'static str {
        match self {
            Leg::Entry => "",
            Leg::StopLoss => "-sl",
            Leg::TakeProfit => "-tp",
            Leg::Close => "-close",
        }
    }

    fn from_suffix(s: &str) -> Option<Leg> {
        match s {
            "sl" => Some(Leg::StopLoss),
            "tp" => Some(Leg::TakeProfit),
            "close" => Some(Leg::Close),
            _ => None,
        }
    }
}

/// The parts of one of our labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ParsedLabel {
    pub strategy_id: String,
    pub intent_seq: u64,
    pub leg: Leg,
}

fn is_prefix_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Checks a label prefix; the error says what is allowed.
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() || !prefix.chars().all(is_prefix_char) {
        return Err(format!(
            "label prefix {prefix:?} must be non-empty and use only A-Z, a-z, 0-9 and _"
        ));
    }
    Ok(())
}

fn check_strategy_id(id: &str) -> Result<(), String> {
    let chars_ok = id.chars().all(|c| is_prefix_char(c) || c == '-');
    if id.is_empty() || !chars_ok || id.starts_with('-') || id.ends_with('-') || id.contains("--") {
        return Err(format!(
            "strategy id {id:?} must be non-empty, use only A-Z, a-z, 0-9, _ and single inner -"
        ));
    }
    Ok(())
}

/// The label of one leg of an intent. Errors name the offending part.
pub fn leg_label(
    prefix: &str,
    strategy_id: &str,
    intent_seq: u64,
    leg: Leg,
) -> Result<String, String> {
    check_prefix(prefix)?;
    check_strategy_id(strategy_id)?;
    let label = format!("{prefix}-{strategy_id}-{intent_seq}{}", leg.suffix());
    if label.len() > LABEL_MAX_LEN {
        return Err(format!(
            "label {label:?} is {} characters; Deribit allows {LABEL_MAX_LEN}",
            label.len()
        ));
    }
    Ok(label)
}

/// The entry label of an intent, e.g. `tb-ema_cross-42`.
///
/// Refused when any leg label of the same intent (the longest is `-close`) would not fit in
/// [`LABEL_MAX_LEN`], so a caller that got an entry label can always label its protective legs.
pub fn intent_label(prefix: &str, strategy_id: &str, intent_seq: u64) -> Result<String, String> {
    leg_label(prefix, strategy_id, intent_seq, Leg::Close)?;
    leg_label(prefix, strategy_id, intent_seq, Leg::Entry)
}

/// Parses a label made by [`leg_label`] with this `prefix`. `None` for anything else, including
/// labels that merely start with the prefix but are not in canonical form.
pub fn parse_label(prefix: &str, label: &str) -> Option<ParsedLabel> {
    check_prefix(prefix).ok()?;
    let rest = label.strip_prefix(prefix)?.strip_prefix('-')?;
    let (body, leg) = match rest.rsplit_once('-') {
        Some((body, last)) if Leg::from_suffix(last).is_some() => (body, Leg::from_suffix(last)?),
        _ => (rest, Leg::Entry),
    };
    let (strategy_id, seq) = body.rsplit_once('-')?;
    if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let intent_seq: u64 = seq.parse().ok()?;
    // Canonical form only (no leading zeros, valid id, within length): one label per intent leg.
    if leg_label(prefix, strategy_id, intent_seq, leg).ok()? != label {
        return None;
    }
    Some(ParsedLabel {
        strategy_id: strategy_id.to_string(),
        intent_seq,
        leg,
    })
}

/// Whether an order with this label was placed by us (this `prefix`). Orders without the prefix,
/// or with a label we would never produce, are never ours: orphan cleanup must leave them alone.
pub fn owned_by_us(prefix: &str, label: &str) -> bool {
    parse_label(prefix, label).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn labels_look_as_documented() {
        assert_eq!(
            intent_label("tb", "ema_cross", 42).unwrap(),
            "tb-ema_cross-42"
        );
        assert_eq!(
            leg_label("tb", "ema-x", 7, Leg::StopLoss).unwrap(),
            "tb-ema-x-7-sl"
        );
        assert_eq!(
            leg_label("tb", "s", 0, Leg::TakeProfit).unwrap(),
            "tb-s-0-tp"
        );
        assert_eq!(leg_label("tb", "s", 1, Leg::Close).unwrap(), "tb-s-1-close");
    }

    #[test]
    fn bad_characters_are_refused_not_sanitized() {
        for id in ["", "a b", "a/b", "ä", "-a", "a-", "a--b", "a.b"] {
            assert!(
                intent_label("tb", id, 1)
                    .unwrap_err()
                    .contains("strategy id"),
                "{id:?}"
            );
        }
        for p in ["", "t-b", "t b"] {
            assert!(
                intent_label(p, "s", 1).unwrap_err().contains("prefix"),
                "{p:?}"
            );
        }
    }

    #[test]
    fn intent_refused_when_a_leg_would_not_fit() {
        // "tb-" + id + "-" + 20 digits + "-close" = 30 + id.
        let id = "x".repeat(34);
        assert_eq!(
            leg_label("tb", &id, u64::MAX, Leg::Close).unwrap().len(),
            64
        );
        assert!(intent_label("tb", &id, u64::MAX).is_ok());
        let id = "x".repeat(35);
        assert!(leg_label("tb", &id, u64::MAX, Leg::Entry).is_ok());
        assert!(
            intent_label("tb", &id, u64::MAX)
                .unwrap_err()
                .contains("64")
        );
    }

    #[test]
    fn foreign_and_malformed_labels_are_not_ours() {
        for l in [
            "",
            "market0000234",
            "tb",
            "tb-",
            "tb-s",
            "tb-s-",
            "tb-s-01",
            "tb-s-1-xx",
            "tb-s-1-sl-sl",
            "tbx-s-1",
            "TB-s-1",
            "other-s-1",
            "tb--1",
            "tb-s-18446744073709551616",
        ] {
            assert!(!owned_by_us("tb", l), "{l:?}");
        }
        assert!(owned_by_us("tb", "tb-s-1"));
        assert!(!owned_by_us("tb2", "tb-s-1"));
    }

    #[test]
    fn strategy_ids_that_look_like_legs_still_parse() {
        let p = parse_label("tb", "tb-x-sl-5").unwrap();
        assert_eq!(
            (p.strategy_id.as_str(), p.intent_seq, p.leg),
            ("x-sl", 5, Leg::Entry)
        );
        let p = parse_label("tb", "tb-1-2-tp").unwrap();
        assert_eq!(
            (p.strategy_id.as_str(), p.intent_seq, p.leg),
            ("1", 2, Leg::TakeProfit)
        );
    }

    proptest! {
        #[test]
        fn label_round_trip(
            prefix in "[A-Za-z0-9_]{1,6}",
            id in "[A-Za-z0-9_]{1,8}(-[A-Za-z0-9_]{1,8}){0,3}",
            seq in any::<u64>(),
            leg in prop::sample::select(Leg::ALL.to_vec()),
        ) {
            let longest = prefix.len() + id.len() + seq.to_string().len() + 2 + leg.suffix().len();
            let label = match leg_label(&prefix, &id, seq, leg) {
                Ok(label) => label,
                // Too long for Deribit is the only refusal valid parts can get.
                Err(e) => {
                    prop_assert!(longest > LABEL_MAX_LEN && e.contains("Deribit allows"), "{e}");
                    return Ok(());
                }
            };
            prop_assert!(label.len() <= LABEL_MAX_LEN);
            prop_assert!(owned_by_us(&prefix, &label));
            let parsed = parse_label(&prefix, &label).unwrap();
            prop_assert_eq!(parsed, ParsedLabel { strategy_id: id, intent_seq: seq, leg });
        }

        #[test]
        fn parse_never_panics_and_only_accepts_canonical(label in "\\PC{0,70}") {
            if let Some(p) = parse_label("tb", &label) {
                prop_assert_eq!(leg_label("tb", &p.strategy_id, p.intent_seq, p.leg).unwrap(), label);
            }
        }
    }
}

//! Guards between a strategy's [`Decision`](super::signal::Decision) and an order: position
//! sizing from a risk budget, the single-position rule, and bracket (stop / take-profit) prices
//! on the instrument's tick grid.
//!
//! Pure code: no I/O, no clock. Amounts are in USD, as Deribit takes them for inverse
//! perpetuals (`BTC-PERPETUAL`, `ETH-PERPETUAL`): a multiple of `contract_size`, at least
//! `min_trade_amount`. Linear instruments (amounts in the base currency) are not covered.
//!
//! Intended order of use: [`bracket_prices`] first (puts stop and take-profit on the grid), then
//! [`size_entry`] with the *rounded* stop, so the risk budget is computed on the stop that will
//! really be sent.

use serde::{Deserialize, Serialize};

use super::Side;

/// `[risk]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RiskConfig {
    /// Equity lost if the stop is hit, in percent of equity. At most 10.
    pub risk_per_trade_pct: f64,
    /// Largest position, in USD.
    pub max_position_usd: f64,
    /// Largest position as a multiple of equity. At most 50 (Deribit's BTC-PERPETUAL maximum).
    pub max_leverage: f64,
}

impl Default for RiskConfig {
    fn default() -> Self {
        Self {
            risk_per_trade_pct: 0.5,
            max_position_usd: 1000.0,
            max_leverage: 2.0,
        }
    }
}

impl RiskConfig {
    /// Checks the values; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        // Written as `!(ok)` so that NaN fails every check.
        if !(self.risk_per_trade_pct > 0.0 && self.risk_per_trade_pct <= 10.0) {
            return Err(format!(
                "risk_per_trade_pct must be greater than 0 and at most 10 (got {})",
                self.risk_per_trade_pct
            ));
        }
        if !(self.max_position_usd > 0.0 && self.max_position_usd.is_finite()) {
            return Err(format!(
                "max_position_usd must be a finite number greater than 0 (got {})",
                self.max_position_usd
            ));
        }
        if !(self.max_leverage > 0.0 && self.max_leverage <= 50.0) {
            return Err(format!(
                "max_leverage must be greater than 0 and at most 50 (got {})",
                self.max_leverage
            ));
        }
        Ok(())
    }
}

/// The trading rules of one instrument, from `public/get_instruments`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstrumentSpec {
    /// Price grid step.
    pub tick_size: f64,
    /// Amount grid step (USD for inverse perpetuals).
    pub contract_size: f64,
    /// Smallest amount accepted.
    pub min_trade_amount: f64,
}

impl InstrumentSpec {
    /// Checks the values; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("tick_size", self.tick_size),
            ("contract_size", self.contract_size),
        ] {
            if !(v > 0.0 && v.is_finite()) {
                return Err(format!(
                    "{name} must be a finite number greater than 0 (got {v})"
                ));
            }
        }
        if !(self.min_trade_amount >= 0.0 && self.min_trade_amount.is_finite()) {
            return Err(format!(
                "min_trade_amount must be a finite number, at least 0 (got {})",
                self.min_trade_amount
            ));
        }
        Ok(())
    }
}

/// Why an entry is not placed. `Display` is the human reason (for events and logs).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    /// Single-position guard: one position at a time.
    #[error("a position is already open; only one position at a time")]
    PositionAlreadyOpen,
    /// A buy's stop must be below the entry, a sell's above.
    #[error("stop {stop} is on the wrong side of entry {entry} for a {side:?}")]
    StopOnWrongSide { side: Side, entry: f64, stop: f64 },
    /// A buy's take-profit must be above the entry, a sell's below — also after rounding to the
    /// tick grid towards the entry.
    #[error("take-profit {take_profit} is not on the profit side of entry {entry} for a {side:?}")]
    TakeProfitOnWrongSide {
        side: Side,
        entry: f64,
        take_profit: f64,
    },
    /// Stop equal to the entry: the risk per contract would be zero, the size unbounded.
    #[error("stop is at the entry price {entry}; no stop distance")]
    ZeroStopDistance { entry: f64 },
    /// The size after caps and rounding is below the instrument's minimum.
    #[error("size {size} is below the minimum trade amount {min}")]
    BelowMinimum { size: f64, min: f64 },
    /// A number that cannot be used (not finite, not positive, invalid config).
    #[error("invalid input: {0}")]
    InvalidInput(String),
}

/// Which price a rounding is for; see [`round_to_tick`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriceKind {
    Stop,
    TakeProfit,
}

/// Relative slack under which a price counts as already on the grid: absorbs representation
/// error such as `0.1 + 0.2 = 0.30000000000000004` without moving a price that is really a
/// fraction of a tick off.
fn grid_tolerance(steps: f64) -> f64 {
    1e-9_f64.max(steps.abs() * 1e-12)
}

/// `n` steps of `step`, computed as an integer over a power of ten when `step` is a short
/// decimal (0.5, 2.5, 0.0001, 10), so `3 × 0.1` gives the `f64` nearest to 0.3 rather than
/// `0.30000000000000004`.
fn steps_to_value(n: f64, step: f64) -> f64 {
    let mut scale = 1.0_f64;
    for _ in 0..=12 {
        let units = step * scale;
        if (units - units.round()).abs() < 1e-9 * units.abs().max(1.0) {
            return n * units.round() / scale;
        }
        scale *= 10.0;
    }
    n * step
}

fn round_down_to_grid(value: f64, step: f64) -> f64 {
    let n = value / step;
    let r = n.round();
    let k = if (n - r).abs() <= grid_tolerance(n) {
        r
    } else {
        n.floor()
    };
    steps_to_value(k, step)
}

fn round_up_to_grid(value: f64, step: f64) -> f64 {
    let n = value / step;
    let r = n.round();
    let k = if (n - r).abs() <= grid_tolerance(n) {
        r
    } else {
        n.ceil()
    };
    steps_to_value(k, step)
}

fn positive_finite(name: &str, v: f64) -> Result<(), Refusal> {
    if v > 0.0 && v.is_finite() {
        Ok(())
    } else {
        Err(Refusal::InvalidInput(format!(
            "{name} must be a finite number greater than 0 (got {v})"
        )))
    }
}

/// Puts a bracket price for a `side` position on the tick grid.
///
/// Rule: **stops are rounded away from the entry** (a buy's stop down, a sell's stop up), so the
/// rounded stop is never closer to the entry than the strategy asked — it can never reach or pass
/// the entry, and [`size_entry`] fed with it keeps the loss within the risk budget.
/// **Take-profits are rounded towards the entry** (a buy's down, a sell's up), so the order never
/// asks for more profit than the strategy did. Net effect: for a buy both round down, for a sell
/// both round up. A price already on the grid (within floating-point noise) is left on its tick.
pub fn round_to_tick(
    price: f64,
    tick_size: f64,
    side: Side,
    kind: PriceKind,
) -> Result<f64, Refusal> {
    positive_finite("price", price)?;
    positive_finite("tick_size", tick_size)?;
    let _ = kind; // Both kinds round the same way for a given side; see the rule above.
    Ok(match side {
        Side::Buy => round_down_to_grid(price, tick_size),
        Side::Sell => round_up_to_grid(price, tick_size),
    })
}

/// Checks and rounds a bracket: returns `(stop, take_profit)` on the tick grid.
///
/// A buy needs stop < entry < take-profit, a sell take-profit < entry < stop. The raw stop is
/// checked ([`Refusal::ZeroStopDistance`], [`Refusal::StopOnWrongSide`]); the take-profit is
/// checked after rounding, since rounding towards the entry can bring it onto the entry
/// ([`Refusal::TakeProfitOnWrongSide`]). `entry` itself is not rounded (a market entry fills off
/// the grid of our choosing).
pub fn bracket_prices(
    side: Side,
    entry: f64,
    stop: f64,
    take_profit: f64,
    spec: &InstrumentSpec,
) -> Result<(f64, f64), Refusal> {
    spec.validate().map_err(Refusal::InvalidInput)?;
    positive_finite("entry", entry)?;
    positive_finite("stop", stop)?;
    positive_finite("take_profit", take_profit)?;
    if stop == entry {
        return Err(Refusal::ZeroStopDistance { entry });
    }
    let stop_ok = match side {
        Side::Buy => stop < entry,
        Side::Sell => stop > entry,
    };
    if !stop_ok {
        return Err(Refusal::StopOnWrongSide { side, entry, stop });
    }
    let stop_r = round_to_tick(stop, spec.tick_size, side, PriceKind::Stop)?;
    let tp_r = round_to_tick(take_profit, spec.tick_size, side, PriceKind::TakeProfit)?;
    let tp_ok = match side {
        Side::Buy => tp_r > entry,
        Side::Sell => tp_r < entry,
    };
    if !tp_ok {
        return Err(Refusal::TakeProfitOnWrongSide {
            side,
            entry,
            take_profit: tp_r,
        });
    }
    // Rounding a sell's stop up can never drop it below 0; a buy's stop rounded down can reach 0
    // for a stop under one tick.
    positive_finite("stop after rounding", stop_r)?;
    Ok((stop_r, tp_r))
}

/// The entry size in USD for a position risking `risk_per_trade_pct` of `equity_usd` if the
/// stop is hit.
///
/// size = equity · risk% / (|entry − stop| / entry), then capped by `max_position_usd` and by
/// `equity · max_leverage`, then rounded **down** to a multiple of `contract_size` (rounding down
/// never adds risk). Refused while a position is open (single-position guard, checked first),
/// for a stop at the entry, for a result under `min_trade_amount` (or zero), and for
/// non-finite / non-positive inputs or an invalid config. Which side the stop is on is checked
/// by [`bracket_prices`], which needs the side.
pub fn size_entry(
    equity_usd: f64,
    entry: f64,
    stop: f64,
    spec: &InstrumentSpec,
    risk: &RiskConfig,
    has_open_position: bool,
) -> Result<f64, Refusal> {
    if has_open_position {
        return Err(Refusal::PositionAlreadyOpen);
    }
    risk.validate().map_err(Refusal::InvalidInput)?;
    spec.validate().map_err(Refusal::InvalidInput)?;
    positive_finite("equity_usd", equity_usd)?;
    positive_finite("entry", entry)?;
    positive_finite("stop", stop)?;
    let distance = (entry - stop).abs() / entry;
    if distance == 0.0 {
        return Err(Refusal::ZeroStopDistance { entry });
    }
    let risk_usd = equity_usd * risk.risk_per_trade_pct / 100.0;
    let raw = (risk_usd / distance)
        .min(risk.max_position_usd)
        .min(equity_usd * risk.max_leverage);
    let size = round_down_to_grid(raw, spec.contract_size);
    let min = spec.min_trade_amount;
    if size <= 0.0 || size < min - grid_tolerance(min) {
        return Err(Refusal::BelowMinimum { size, min });
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn btc() -> InstrumentSpec {
        InstrumentSpec {
            tick_size: 0.5,
            contract_size: 10.0,
            min_trade_amount: 10.0,
        }
    }

    fn risk(pct: f64, max_usd: f64, lev: f64) -> RiskConfig {
        RiskConfig {
            risk_per_trade_pct: pct,
            max_position_usd: max_usd,
            max_leverage: lev,
        }
    }

    #[test]
    fn risk_defaults_and_serde() {
        let r = RiskConfig::default();
        assert_eq!(r, risk(0.5, 1000.0, 2.0));
        r.validate().unwrap();
        let r: RiskConfig = serde_json::from_str(r#"{"max_leverage": 3}"#).unwrap();
        assert_eq!(r, risk(0.5, 1000.0, 3.0));
        assert!(serde_json::from_str::<RiskConfig>(r#"{"leverage": 3}"#).is_err());
    }

    #[test]
    fn invalid_risk_config_names_the_field() {
        for (r, field) in [
            (risk(0.0, 1000.0, 2.0), "risk_per_trade_pct"),
            (risk(11.0, 1000.0, 2.0), "risk_per_trade_pct"),
            (risk(f64::NAN, 1000.0, 2.0), "risk_per_trade_pct"),
            (risk(0.5, 0.0, 2.0), "max_position_usd"),
            (risk(0.5, f64::INFINITY, 2.0), "max_position_usd"),
            (risk(0.5, 1000.0, 0.0), "max_leverage"),
            (risk(0.5, 1000.0, 51.0), "max_leverage"),
        ] {
            let err = r.validate().unwrap_err();
            assert!(err.contains(field), "{err:?} should name {field}");
            let refusal = size_entry(10_000.0, 100.0, 99.0, &btc(), &r, false).unwrap_err();
            assert!(matches!(refusal, Refusal::InvalidInput(ref m) if m.contains(field)));
        }
    }

    #[test]
    fn invalid_spec_names_the_field() {
        for (spec, field) in [
            (
                InstrumentSpec {
                    tick_size: 0.0,
                    ..btc()
                },
                "tick_size",
            ),
            (
                InstrumentSpec {
                    contract_size: f64::NAN,
                    ..btc()
                },
                "contract_size",
            ),
            (
                InstrumentSpec {
                    min_trade_amount: -1.0,
                    ..btc()
                },
                "min_trade_amount",
            ),
        ] {
            let err = spec.validate().unwrap_err();
            assert!(err.contains(field), "{err:?}");
            assert!(matches!(
                bracket_prices(Side::Buy, 100.0, 99.0, 101.0, &spec),
                Err(Refusal::InvalidInput(_))
            ));
        }
    }

    #[test]
    fn size_is_risk_over_stop_distance() {
        // 10 000 USD equity, 0.5% risk = 50 USD; stop 1% away → 5 000 USD; caps out of the way.
        let r = risk(0.5, 1_000_000.0, 10.0);
        assert_eq!(
            size_entry(10_000.0, 60_000.0, 59_400.0, &btc(), &r, false),
            Ok(5_000.0)
        );
        // Same for a sell (stop above).
        assert_eq!(
            size_entry(10_000.0, 60_000.0, 60_600.0, &btc(), &r, false),
            Ok(5_000.0)
        );
    }

    #[test]
    fn size_is_capped_by_max_position_usd() {
        let r = risk(0.5, 1000.0, 10.0);
        assert_eq!(
            size_entry(10_000.0, 60_000.0, 59_400.0, &btc(), &r, false),
            Ok(1000.0)
        );
    }

    #[test]
    fn size_is_capped_by_leverage() {
        // Risk size 5 000, max position 1 000 000, but 2 000 equity × 2 = 4 000.
        let r = risk(2.5, 1_000_000.0, 2.0);
        assert_eq!(
            size_entry(2_000.0, 60_000.0, 59_400.0, &btc(), &r, false),
            Ok(4000.0)
        );
    }

    #[test]
    fn size_rounds_down_to_contract_size() {
        let r = risk(0.5, 1_000_000.0, 10.0);
        // 50 USD / (0.7/100) = 7142.857… → 7140.
        assert_eq!(
            size_entry(10_000.0, 100.0, 99.3, &btc(), &r, false),
            Ok(7140.0)
        );
        // Contract size 0.1: a raw size that is 0.3 up to float noise stays 0.3, not 0.2.
        let spec = InstrumentSpec {
            tick_size: 0.01,
            contract_size: 0.1,
            min_trade_amount: 0.1,
        };
        let r = risk(0.5, 0.1 + 0.2, 10.0);
        assert_eq!(size_entry(10_000.0, 100.0, 99.0, &spec, &r, false), Ok(0.3));
    }

    #[test]
    fn refuses_when_a_position_is_open_before_anything_else() {
        // Even with otherwise invalid input, the single-position guard answers first.
        let r = RiskConfig::default();
        assert_eq!(
            size_entry(f64::NAN, 100.0, 100.0, &btc(), &r, true),
            Err(Refusal::PositionAlreadyOpen)
        );
        assert_eq!(
            size_entry(10_000.0, 100.0, 99.0, &btc(), &r, true),
            Err(Refusal::PositionAlreadyOpen)
        );
    }

    #[test]
    fn refuses_zero_stop_distance() {
        let r = RiskConfig::default();
        assert_eq!(
            size_entry(10_000.0, 100.0, 100.0, &btc(), &r, false),
            Err(Refusal::ZeroStopDistance { entry: 100.0 })
        );
        assert_eq!(
            bracket_prices(Side::Buy, 100.0, 100.0, 101.0, &btc()),
            Err(Refusal::ZeroStopDistance { entry: 100.0 })
        );
    }

    #[test]
    fn refuses_below_minimum() {
        // 100 USD equity, 0.5% = 0.5 USD risk, stop 10% away → 5 USD → rounds down to 0.
        let r = RiskConfig::default();
        assert_eq!(
            size_entry(100.0, 100.0, 90.0, &btc(), &r, false),
            Err(Refusal::BelowMinimum {
                size: 0.0,
                min: 10.0
            })
        );
        // On the grid but under a larger minimum.
        let spec = InstrumentSpec {
            min_trade_amount: 100.0,
            ..btc()
        };
        assert_eq!(
            size_entry(1_000.0, 100.0, 90.0, &spec, &r, false),
            Err(Refusal::BelowMinimum {
                size: 50.0,
                min: 100.0
            })
        );
    }

    #[test]
    fn refuses_non_finite_or_non_positive_inputs() {
        let r = RiskConfig::default();
        for (eq, entry, stop) in [
            (f64::NAN, 100.0, 99.0),
            (0.0, 100.0, 99.0),
            (-1.0, 100.0, 99.0),
            (1e4, f64::INFINITY, 99.0),
            (1e4, 100.0, f64::NAN),
            (1e4, 100.0, -1.0),
        ] {
            assert!(
                matches!(
                    size_entry(eq, entry, stop, &btc(), &r, false),
                    Err(Refusal::InvalidInput(_))
                ),
                "{eq} {entry} {stop}"
            );
        }
        assert!(matches!(
            bracket_prices(Side::Sell, 100.0, 101.0, f64::NAN, &btc()),
            Err(Refusal::InvalidInput(_))
        ));
    }

    #[test]
    fn refuses_stop_on_wrong_side() {
        assert_eq!(
            bracket_prices(Side::Buy, 100.0, 101.0, 102.0, &btc()),
            Err(Refusal::StopOnWrongSide {
                side: Side::Buy,
                entry: 100.0,
                stop: 101.0
            })
        );
        assert!(matches!(
            bracket_prices(Side::Sell, 100.0, 99.0, 98.0, &btc()),
            Err(Refusal::StopOnWrongSide {
                side: Side::Sell,
                ..
            })
        ));
    }

    #[test]
    fn refuses_take_profit_on_wrong_side_including_after_rounding() {
        assert!(matches!(
            bracket_prices(Side::Buy, 100.0, 99.0, 99.5, &btc()),
            Err(Refusal::TakeProfitOnWrongSide { .. })
        ));
        // 100.3 rounds down (towards the entry) to 100.0 = entry: no profit left.
        assert_eq!(
            bracket_prices(Side::Buy, 100.0, 99.0, 100.3, &btc()),
            Err(Refusal::TakeProfitOnWrongSide {
                side: Side::Buy,
                entry: 100.0,
                take_profit: 100.0
            })
        );
        assert!(matches!(
            bracket_prices(Side::Sell, 100.0, 101.0, 99.8, &btc()),
            Err(Refusal::TakeProfitOnWrongSide {
                side: Side::Sell,
                ..
            })
        ));
    }

    #[test]
    fn bracket_rounds_stop_away_and_take_profit_towards_entry() {
        // Buy at 60 000.3: stop 59 700.2 → 59 700.0 (down, away); TP 60 600.9 → 60 600.5 (down, towards).
        assert_eq!(
            bracket_prices(Side::Buy, 60_000.3, 59_700.2, 60_600.9, &btc()),
            Ok((59_700.0, 60_600.5))
        );
        // Sell mirrored: both up.
        assert_eq!(
            bracket_prices(Side::Sell, 60_000.3, 60_300.2, 59_400.1, &btc()),
            Ok((60_300.5, 59_400.5))
        );
        // Already on the grid: unchanged.
        assert_eq!(
            bracket_prices(Side::Buy, 100.0, 99.5, 101.0, &btc()),
            Ok((99.5, 101.0))
        );
    }

    #[test]
    fn stop_under_one_tick_rounds_to_zero_and_is_refused() {
        let spec = InstrumentSpec {
            tick_size: 2.5,
            ..btc()
        };
        assert!(matches!(
            bracket_prices(Side::Buy, 10.0, 1.0, 20.0, &spec),
            Err(Refusal::InvalidInput(_))
        ));
    }

    #[test]
    fn round_to_tick_float_edges() {
        use PriceKind::*;
        use Side::*;
        // 0.1 + 0.2 = 0.30000000000000004: on the grid, must stay 0.3 both ways.
        let p = 0.1 + 0.2;
        assert_eq!(round_to_tick(p, 0.1, Sell, Stop), Ok(0.3));
        assert_eq!(round_to_tick(p, 0.1, Buy, Stop), Ok(0.3));
        // 0.7 / 0.1 = 6.999999999999999: still 0.7.
        assert_eq!(round_to_tick(0.7, 0.1, Buy, TakeProfit), Ok(0.7));
        assert_eq!(round_to_tick(0.7, 0.1, Sell, TakeProfit), Ok(0.7));
        // Tick 0.5.
        assert_eq!(round_to_tick(100.25, 0.5, Buy, Stop), Ok(100.0));
        assert_eq!(round_to_tick(100.25, 0.5, Sell, Stop), Ok(100.5));
        assert_eq!(round_to_tick(100.5, 0.5, Sell, Stop), Ok(100.5));
        assert_eq!(round_to_tick(65_432.1, 0.5, Buy, Stop), Ok(65_432.0));
        // Tick 2.5.
        assert_eq!(round_to_tick(101.0, 2.5, Buy, Stop), Ok(100.0));
        assert_eq!(round_to_tick(101.0, 2.5, Sell, Stop), Ok(102.5));
        assert_eq!(round_to_tick(102.5, 2.5, Buy, TakeProfit), Ok(102.5));
        assert_eq!(round_to_tick(3_002.5, 2.5, Sell, TakeProfit), Ok(3_002.5));
        // Small ticks: results are the nearest f64 to the decimal, not n × tick.
        assert_eq!(round_to_tick(1.23456, 0.0001, Buy, Stop), Ok(1.2345));
        assert_eq!(round_to_tick(1.23456, 0.0001, Sell, Stop), Ok(1.2346));
        assert_eq!(
            round_to_tick(0.3, 0.1, Buy, Stop).map(|v| v * 10.0),
            Ok(3.0)
        );
        // Invalid input.
        assert!(round_to_tick(f64::NAN, 0.5, Buy, Stop).is_err());
        assert!(round_to_tick(100.0, 0.0, Buy, Stop).is_err());
    }

    #[test]
    fn rounded_prices_are_on_the_grid_for_many_values() {
        // Deterministic sweep: every result is an integer number of ticks (to float precision),
        // within one tick of the input, on the documented side of it.
        for tick in [0.5, 2.5, 0.05, 0.0001, 1.0] {
            for i in 0..2000 {
                let p = 1.0 + i as f64 * 0.37 * tick + 0.013 * i as f64;
                for side in [Side::Buy, Side::Sell] {
                    let r = round_to_tick(p, tick, side, PriceKind::Stop).unwrap();
                    let n = r / tick;
                    assert!((n - n.round()).abs() < 1e-6, "{p} {tick} {r}");
                    match side {
                        Side::Buy => assert!(r <= p + 1e-9 && p - r < tick + 1e-9, "{p} {r}"),
                        Side::Sell => assert!(r >= p - 1e-9 && r - p < tick + 1e-9, "{p} {r}"),
                    }
                }
            }
        }
    }

    #[test]
    fn refusals_read_as_reasons() {
        assert_eq!(
            Refusal::PositionAlreadyOpen.to_string(),
            "a position is already open; only one position at a time"
        );
        assert_eq!(
            Refusal::BelowMinimum {
                size: 0.0,
                min: 10.0
            }
            .to_string(),
            "size 0 is below the minimum trade amount 10"
        );
        assert!(
            Refusal::StopOnWrongSide {
                side: Side::Buy,
                entry: 100.0,
                stop: 101.0
            }
            .to_string()
            .contains("wrong side")
        );
    }

    #[test]
    fn sized_risk_never_exceeds_budget() {
        // With the rounded stop, loss at the stop ≤ equity · risk%.
        let r = risk(1.0, 1_000_000.0, 50.0);
        for i in 1..500 {
            let entry = 60_000.0 + i as f64 * 7.3;
            let stop_raw = entry * (1.0 - 0.001 * (1 + i % 20) as f64);
            let (stop, _) =
                bracket_prices(Side::Buy, entry, stop_raw, entry * 1.02, &btc()).unwrap();
            let size = size_entry(25_000.0, entry, stop, &btc(), &r, false).unwrap();
            let loss = size * (entry - stop) / entry;
            assert!(loss <= 250.0 + 1e-6, "{entry} {stop} {size} {loss}");
        }
    }
}

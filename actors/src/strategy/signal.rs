//! Signal generation: the [`Strategy`] trait and the built-in example strategy [`MaCross`].
//!
//! Pure code: a strategy sees one [`MarketTick`] at a time and answers with a [`Decision`]. It
//! does no I/O and reads no clock; time arrives only as the tick's exchange timestamp. Whether a
//! decision is acted on (position already open, sizing, bracket prices) is decided elsewhere
//! (`strategy::guards`), not here.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

pub use crate::model::Decision;
use crate::model::{Side, Ticker};

/// The part of a ticker a strategy sees.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MarketTick {
    /// E.g. `BTC-PERPETUAL`.
    pub instrument: String,
    /// Exchange time, ms since the epoch.
    pub timestamp_ms: i64,
    pub mark_price: f64,
}

impl From<&Ticker> for MarketTick {
    fn from(t: &Ticker) -> Self {
        Self {
            instrument: t.instrument_name.clone(),
            timestamp_ms: t.timestamp,
            mark_price: t.mark_price,
        }
    }
}

/// A trading strategy: turns ticks into decisions.
pub trait Strategy: Send {
    /// Called for every tick the strategy actor receives; must be cheap (no I/O, no blocking).
    fn on_tick(&mut self, tick: &MarketTick) -> Decision;
    /// A short, stable name for logs and events.
    fn name(&self) -> &str;
}

/// `[strategy.ma_cross]`: the example moving-average crossover.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaCrossConfig {
    /// Ticks in the fast moving average.
    pub fast: usize,
    /// Ticks in the slow moving average; greater than `fast`.
    pub slow: usize,
    /// Stop distance from the entry, in percent of the entry price.
    pub stop_distance_pct: f64,
    /// Take-profit distance from the entry, in percent of the entry price.
    pub take_profit_pct: f64,
    /// After a signal, crossings within this many ticks are ignored (0: none are).
    pub min_ticks_between_signals: u64,
}

impl Default for MaCrossConfig {
    fn default() -> Self {
        Self {
            fast: 10,
            slow: 30,
            stop_distance_pct: 0.5,
            take_profit_pct: 1.0,
            min_ticks_between_signals: 0,
        }
    }
}

impl MaCrossConfig {
    /// Checks the values; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.fast < 1 {
            return Err("fast must be at least 1".into());
        }
        if self.slow < 1 {
            return Err("slow must be at least 1".into());
        }
        if self.fast >= self.slow {
            return Err(format!(
                "fast ({}) must be less than slow ({})",
                self.fast, self.slow
            ));
        }
        for (name, v) in [
            ("stop_distance_pct", self.stop_distance_pct),
            ("take_profit_pct", self.take_profit_pct),
        ] {
            // `!(v > 0.0)` also catches NaN.
            if !(v > 0.0 && v < 50.0) {
                return Err(format!(
                    "{name} must be greater than 0 and less than 50 (got {v})"
                ));
            }
        }
        Ok(())
    }
}

/// A simple moving average over the last `len` values, O(1) per push.
///
/// The running sum is recomputed from the window once every `len` pushes, so floating-point
/// drift cannot accumulate over a 24/7 run while the cost stays amortised O(1).
#[derive(Debug, Clone)]
struct Window {
    len: usize,
    values: VecDeque<f64>,
    sum: f64,
    pushes_since_resum: usize,
}

impl Window {
    fn new(len: usize) -> Self {
        Self {
            len,
            values: VecDeque::with_capacity(len + 1),
            sum: 0.0,
            pushes_since_resum: 0,
        }
    }

    fn push(&mut self, v: f64) {
        self.values.push_back(v);
        self.sum += v;
        if self.values.len() > self.len
            && let Some(old) = self.values.pop_front()
        {
            self.sum -= old;
        }
        self.pushes_since_resum += 1;
        if self.pushes_since_resum >= self.len {
            self.sum = self.values.iter().sum();
            self.pushes_since_resum = 0;
        }
    }

    /// The average, once the window is full.
    fn mean(&self) -> Option<f64> {
        (self.values.len() == self.len).then(|| self.sum / self.len as f64)
    }
}

/// Which side of the slow average the fast one was last strictly on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Relation {
    Above,
    Below,
}

/// **Example strategy, not alpha.** A moving-average crossover on the mark price, shipped to
/// exercise the execution path end to end. It has no edge; do not trade it for profit.
///
/// Rules:
/// - Only ticks for the configured instrument with a finite, positive mark price count; others
///   are ignored (answer [`Decision::Hold`], state unchanged).
/// - No signal until both windows are full. The first full tick only records which side the
///   fast average is on; a crossing needs a prior side to cross from.
/// - The fast average moving from strictly below to strictly above the slow one is a crossing
///   up → `Enter Buy` with stop = price·(1 − stop%) and take-profit = price·(1 + tp%). Strictly
///   above to strictly below → `Enter Sell`, mirrored. Ticks where the averages are equal do not
///   change the recorded side, so touching and returning is no crossing.
/// - One signal per crossing. A crossing within `min_ticks_between_signals` ticks of the last
///   signal is consumed without a signal (it is not replayed later).
/// - It never says `Exit`: it does not know whether a position is open. The opposite crossing
///   is an `Enter` of the other side; the single-position guard refuses it while a position is
///   open and the bracket orders close positions.
#[derive(Debug, Clone)]
pub struct MaCross {
    instrument: String,
    config: MaCrossConfig,
    fast: Window,
    slow: Window,
    relation: Option<Relation>,
    /// Accepted ticks so far.
    ticks: u64,
    /// `ticks` at the last signal.
    last_signal_tick: Option<u64>,
}

impl MaCross {
    /// A fresh instance for `instrument`; fails with the [`MaCrossConfig::validate`] message.
    pub fn new(instrument: impl Into<String>, config: MaCrossConfig) -> Result<Self, String> {
        config.validate()?;
        Ok(Self {
            instrument: instrument.into(),
            fast: Window::new(config.fast),
            slow: Window::new(config.slow),
            config,
            relation: None,
            ticks: 0,
            last_signal_tick: None,
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &MaCrossConfig {
        &self.config
    }

    /// The instrument whose ticks count.
    pub fn instrument(&self) -> &str {
        &self.instrument
    }

    fn in_cooldown(&self) -> bool {
        match self.last_signal_tick {
            Some(at) => self.ticks - at < self.config.min_ticks_between_signals,
            None => false,
        }
    }

    fn enter(&mut self, side: Side, price: f64, fast: f64, slow: f64) -> Decision {
        self.last_signal_tick = Some(self.ticks);
        let stop = self.config.stop_distance_pct / 100.0;
        let tp = self.config.take_profit_pct / 100.0;
        let (stop_price, take_profit_price, dir) = match side {
            Side::Buy => (price * (1.0 - stop), price * (1.0 + tp), "above"),
            Side::Sell => (price * (1.0 + stop), price * (1.0 - tp), "below"),
        };
        Decision::Enter {
            side,
            stop_price,
            take_profit_price,
            reason: format!(
                "MA({}) {fast:.4} crossed {dir} MA({}) {slow:.4} at mark {price}",
                self.config.fast, self.config.slow
            ),
        }
    }
}

impl Strategy for MaCross {
    fn on_tick(&mut self, tick: &MarketTick) -> Decision {
        let price = tick.mark_price;
        if tick.instrument != self.instrument || !price.is_finite() || price <= 0.0 {
            return Decision::Hold;
        }
        self.ticks += 1;
        self.fast.push(price);
        self.slow.push(price);
        let (Some(fast), Some(slow)) = (self.fast.mean(), self.slow.mean()) else {
            return Decision::Hold;
        };
        let now = if fast > slow {
            Relation::Above
        } else if fast < slow {
            Relation::Below
        } else {
            return Decision::Hold;
        };
        let before = self.relation.replace(now);
        let side = match (before, now) {
            (Some(Relation::Below), Relation::Above) => Side::Buy,
            (Some(Relation::Above), Relation::Below) => Side::Sell,
            _ => return Decision::Hold,
        };
        if self.in_cooldown() {
            return Decision::Hold;
        }
        self.enter(side, price, fast, slow)
    }

    fn name(&self) -> &str {
        "ma_cross"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INST: &str = "BTC-PERPETUAL";

    fn tick(price: f64) -> MarketTick {
        MarketTick {
            instrument: INST.into(),
            timestamp_ms: 0,
            mark_price: price,
        }
    }

    fn cfg(fast: usize, slow: usize) -> MaCrossConfig {
        MaCrossConfig {
            fast,
            slow,
            ..MaCrossConfig::default()
        }
    }

    fn feed(s: &mut MaCross, prices: &[f64]) -> Vec<Decision> {
        prices.iter().map(|p| s.on_tick(&tick(*p))).collect()
    }

    fn entries(ds: &[Decision]) -> Vec<(usize, Side)> {
        ds.iter()
            .enumerate()
            .filter_map(|(i, d)| match d {
                Decision::Enter { side, .. } => Some((i, *side)),
                _ => None,
            })
            .collect()
    }

    /// Reference: averages recomputed from scratch, same crossing rules.
    fn reference(cfg: &MaCrossConfig, prices: &[f64]) -> Vec<(usize, Side)> {
        let mut out = Vec::new();
        let mut rel: Option<bool> = None;
        let mut last: Option<usize> = None;
        for i in 0..prices.len() {
            if i + 1 < cfg.slow {
                continue;
            }
            let f: f64 = prices[i + 1 - cfg.fast..=i].iter().sum::<f64>() / cfg.fast as f64;
            let s: f64 = prices[i + 1 - cfg.slow..=i].iter().sum::<f64>() / cfg.slow as f64;
            if f == s {
                continue;
            }
            let above = f > s;
            let before = rel.replace(above);
            if before == Some(!above) {
                let cool = last.is_some_and(|l| ((i - l) as u64) < cfg.min_ticks_between_signals);
                if !cool {
                    last = Some(i);
                    out.push((i, if above { Side::Buy } else { Side::Sell }));
                }
            }
        }
        out
    }

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let c = MaCrossConfig::default();
        assert_eq!((c.fast, c.slow), (10, 30));
        assert_eq!((c.stop_distance_pct, c.take_profit_pct), (0.5, 1.0));
        assert_eq!(c.min_ticks_between_signals, 0);
        c.validate().unwrap();
    }

    #[test]
    fn config_deserializes_with_defaults_and_rejects_unknown_fields() {
        let c: MaCrossConfig = serde_json::from_str(r#"{"fast": 3}"#).unwrap();
        assert_eq!(c.fast, 3);
        assert_eq!(c.slow, 30);
        assert!(serde_json::from_str::<MaCrossConfig>(r#"{"fats": 3}"#).is_err());
    }

    #[test]
    fn invalid_configs_name_the_field() {
        let cases: Vec<(MaCrossConfig, &str)> = vec![
            (cfg(0, 30), "fast"),
            (cfg(1, 0), "slow"),
            (cfg(30, 30), "fast"),
            (cfg(31, 30), "fast"),
            (
                MaCrossConfig {
                    stop_distance_pct: 0.0,
                    ..Default::default()
                },
                "stop_distance_pct",
            ),
            (
                MaCrossConfig {
                    stop_distance_pct: 50.0,
                    ..Default::default()
                },
                "stop_distance_pct",
            ),
            (
                MaCrossConfig {
                    take_profit_pct: -1.0,
                    ..Default::default()
                },
                "take_profit_pct",
            ),
            (
                MaCrossConfig {
                    take_profit_pct: f64::NAN,
                    ..Default::default()
                },
                "take_profit_pct",
            ),
        ];
        for (c, field) in cases {
            let err = c.validate().unwrap_err();
            assert!(err.contains(field), "{err:?} should name {field}");
            assert_eq!(MaCross::new(INST, c).unwrap_err(), err);
        }
    }

    #[test]
    fn no_signal_during_warm_up() {
        let mut s = MaCross::new(INST, cfg(2, 4)).unwrap();
        // A sharp rise during warm-up: windows not full, so no decision can be made.
        let ds = feed(&mut s, &[100.0, 90.0, 80.0]);
        assert!(ds.iter().all(|d| *d == Decision::Hold));
        // Fourth tick fills the slow window and only records the side (fast below slow).
        assert_eq!(s.on_tick(&tick(70.0)), Decision::Hold);
        assert_eq!(s.relation, Some(Relation::Below));
    }

    /// A crossing up enters BUY with the bracket below and above; a crossing down mirrors it.
    #[test]
    fn a_crossing_enters_with_its_bracket_up_as_buy_and_down_as_sell() {
        let cases = [
            (
                [99.0, 101.0, 104.0],
                Side::Buy,
                (0.995, 1.01),
                "crossed above",
            ),
            (
                [101.0, 99.0, 96.0],
                Side::Sell,
                (1.005, 0.99),
                "crossed below",
            ),
        ];
        for (tail, side, (stop, take), said) in cases {
            let mut s = MaCross::new(INST, cfg(2, 4)).unwrap();
            let mut prices = vec![100.0, 100.0, 100.0];
            prices.extend(tail);
            let ds = feed(&mut s, &prices);
            assert_eq!(entries(&ds), vec![(5, side)]);
            let Decision::Enter {
                stop_price,
                take_profit_price,
                reason,
                ..
            } = &ds[5]
            else {
                unreachable!()
            };
            let last = tail[2];
            assert!((stop_price - last * stop).abs() < 1e-9, "{side:?}");
            assert!((take_profit_price - last * take).abs() < 1e-9, "{side:?}");
            assert!(reason.contains(said), "{reason}");
        }
    }

    #[test]
    fn no_repeated_signal_without_a_new_crossing() {
        let mut s = MaCross::new(INST, cfg(2, 4)).unwrap();
        let mut prices = vec![100.0, 100.0, 100.0, 99.0];
        // A long steady rise: fast stays above slow after the one crossing.
        prices.extend((1..50).map(|i| 100.0 + i as f64));
        let ds = feed(&mut s, &prices);
        assert_eq!(entries(&ds).len(), 1);
        assert_eq!(entries(&ds)[0].1, Side::Buy);
    }

    #[test]
    fn touching_without_crossing_is_no_signal() {
        let mut s = MaCross::new(INST, cfg(1, 2)).unwrap();
        // fast = last price, slow = mean of last two. 100,101: above. 101: equal. 102: above again.
        let ds = feed(&mut s, &[100.0, 101.0, 101.0, 102.0]);
        assert!(entries(&ds).is_empty());
    }

    #[test]
    fn cooldown_consumes_a_crossing_inside_it() {
        let c = MaCrossConfig {
            min_ticks_between_signals: 5,
            ..cfg(1, 2)
        };
        let mut s = MaCross::new(INST, c.clone()).unwrap();
        // Crossings on every tick from index 2 on (zig-zag).
        let prices = [100.0, 99.0, 101.0, 99.0, 101.0, 99.0, 101.0, 99.0, 101.0];
        let ds = feed(&mut s, &prices);
        assert_eq!(entries(&ds), vec![(2, Side::Buy), (7, Side::Sell)]);
        assert_eq!(entries(&ds), reference(&c, &prices));
    }

    #[test]
    fn nan_and_other_instruments_are_ignored() {
        let mut s = MaCross::new(INST, cfg(2, 4)).unwrap();
        feed(&mut s, &[100.0, 100.0, 100.0, 99.0, 101.0]);
        let before = (s.ticks, s.slow.sum, s.relation);
        for p in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 0.0, -5.0] {
            assert_eq!(s.on_tick(&tick(p)), Decision::Hold);
        }
        let other = MarketTick {
            instrument: "ETH-PERPETUAL".into(),
            timestamp_ms: 1,
            mark_price: 1_000_000.0,
        };
        assert_eq!(s.on_tick(&other), Decision::Hold);
        assert_eq!((s.ticks, s.slow.sum, s.relation), before);
        // Still crosses as if the ignored ticks never came.
        assert!(matches!(
            s.on_tick(&tick(104.0)),
            Decision::Enter {
                side: Side::Buy,
                ..
            }
        ));
    }

    #[test]
    fn matches_a_from_scratch_reference_on_a_deterministic_series() {
        // Two sines of different periods plus a slow trend: many crossings both ways.
        let prices: Vec<f64> = (0..5000)
            .map(|i| {
                let t = i as f64;
                60_000.0 + 0.3 * t + 400.0 * (t / 37.0).sin() + 150.0 * (t / 11.0).cos()
            })
            .collect();
        for c in [
            cfg(3, 8),
            cfg(10, 30),
            MaCrossConfig {
                min_ticks_between_signals: 40,
                ..cfg(5, 20)
            },
        ] {
            let mut s = MaCross::new(INST, c.clone()).unwrap();
            let ds = feed(&mut s, &prices);
            let got = entries(&ds);
            assert_eq!(got, reference(&c, &prices), "config {c:?}");
            assert!(got.len() > 10, "series should cross often: {}", got.len());
            // Signals alternate sides: each is a new crossing.
            for w in got.windows(2) {
                if c.min_ticks_between_signals == 0 {
                    assert_ne!(w[0].1, w[1].1);
                }
            }
            // Every Enter is bracketed on the right sides of the price.
            for (d, p) in ds.iter().zip(&prices) {
                if let Decision::Enter {
                    side,
                    stop_price,
                    take_profit_price,
                    ..
                } = d
                {
                    match side {
                        Side::Buy => assert!(*stop_price < *p && *p < *take_profit_price),
                        Side::Sell => assert!(*take_profit_price < *p && *p < *stop_price),
                    }
                }
            }
        }
    }

    #[test]
    fn running_sum_does_not_drift() {
        let mut w = Window::new(7);
        for i in 0..100_000 {
            w.push(1e6 + (i % 13) as f64 * 0.1);
        }
        let exact: f64 = w.values.iter().sum::<f64>() / 7.0;
        assert!((w.mean().unwrap() - exact).abs() < 1e-9);
    }

    #[test]
    fn ticker_converts_and_decision_serializes() {
        let t: Ticker = serde_json::from_value(serde_json::json!({
            "instrument_name": INST, "timestamp": 1_700_000_000_000i64, "mark_price": 65000.5
        }))
        .unwrap();
        let m = MarketTick::from(&t);
        assert_eq!(m, tick(65000.5).with_ts(1_700_000_000_000));
        let d = Decision::Enter {
            side: Side::Buy,
            stop_price: 1.0,
            take_profit_price: 2.0,
            reason: "x".into(),
        };
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(v["decision"], "enter");
        assert_eq!(v["side"], "buy");
        assert_eq!(
            serde_json::to_value(Decision::Hold).unwrap()["decision"],
            "hold"
        );
        let s = MaCross::new(INST, MaCrossConfig::default()).unwrap();
        assert_eq!(s.name(), "ma_cross");
    }

    impl MarketTick {
        fn with_ts(mut self, ts: i64) -> Self {
            self.timestamp_ms = ts;
            self
        }
    }
}

//! The channels one connection is subscribed to: parsing channel names, the subscribe and
//! unsubscribe rules (unknown channels silently left out, `raw` tickers need auth, `user.*`
//! channels need `private/subscribe`), and the per-channel subscriber counts the tick path
//! reads (released when the connection ends).

use std::collections::BTreeSet;
use std::sync::Arc;

use super::protocol::{RpcError, code};
use super::shared::{Interval, Shared};

/// A channel the paper exchange can serve.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Channel {
    /// `ticker.{instrument}.{interval}`.
    Ticker {
        instrument: usize,
        interval: Interval,
    },
    /// `user.orders.{instrument}.raw`, `user.trades.{instrument}.raw` or
    /// `user.portfolio.{btc|eth}`: account events, matched by channel name.
    User,
}

fn parse(shared: &Shared, name: &str) -> Option<Channel> {
    let parts: Vec<&str> = name.split('.').collect();
    match parts.as_slice() {
        ["ticker", instrument, interval] => Some(Channel::Ticker {
            instrument: shared.instrument_index(instrument)?,
            interval: Interval::parse(interval)?,
        }),
        ["user", "orders" | "trades", instrument, "raw"] => {
            shared.instrument_index(instrument).map(|_| Channel::User)
        }
        ["user", "portfolio", "btc" | "eth"] => Some(Channel::User),
        _ => None,
    }
}

/// One connection's subscriptions.
#[derive(Debug)]
pub(crate) struct Subscriptions {
    shared: Arc<Shared>,
    /// Bit `interval` set for each subscribed ticker interval, per instrument.
    ticker: Vec<u8>,
    user: BTreeSet<String>,
    /// Every subscribed channel name, in subscription order.
    names: Vec<String>,
}

impl Subscriptions {
    /// No subscriptions.
    pub fn new(shared: Arc<Shared>) -> Self {
        let ticker = vec![0; shared.instruments.len()];
        Self {
            shared,
            ticker,
            user: BTreeSet::new(),
            names: Vec::new(),
        }
    }

    /// Subscribes to the known channels among `names`; returns those now subscribed (as
    /// requested, duplicates removed). `raw` tickers without auth fail the whole request with
    /// 13778; `user.*` channels are only taken from an authenticated `private/subscribe`.
    pub fn subscribe(
        &mut self,
        names: &[&str],
        authenticated: bool,
        private: bool,
    ) -> Result<Vec<String>, RpcError> {
        let mut accepted: Vec<(String, Channel)> = Vec::new();
        for name in names {
            let Some(channel) = parse(&self.shared, name) else {
                continue;
            };
            match channel {
                Channel::Ticker {
                    interval: Interval::Raw,
                    ..
                } if !authenticated => {
                    return Err(RpcError::new(
                        code::RAW_NEEDS_AUTH,
                        "raw_subscriptions_not_available_for_unauthorized",
                    ));
                }
                Channel::User if !(private && authenticated) => continue,
                _ => {}
            }
            if !accepted.iter().any(|(n, _)| n == name) {
                accepted.push(((*name).to_owned(), channel));
            }
        }
        for (name, channel) in &accepted {
            if self.names.contains(name) {
                continue;
            }
            match channel {
                Channel::Ticker {
                    instrument,
                    interval,
                } => {
                    self.ticker[*instrument] |= 1 << (*interval as u8);
                    self.shared
                        .count_ticker_subscriber(*instrument, *interval, 1);
                }
                Channel::User => {
                    self.user.insert(name.clone());
                }
            }
            self.names.push(name.clone());
        }
        Ok(accepted.into_iter().map(|(name, _)| name).collect())
    }

    /// Unsubscribes from `names`; returns the channels still subscribed.
    pub fn unsubscribe(&mut self, names: &[&str]) -> Vec<String> {
        for name in names {
            self.remove(name);
        }
        self.names.clone()
    }

    /// Unsubscribes from everything.
    pub fn clear(&mut self) {
        for name in self.names.clone() {
            self.remove(&name);
        }
    }

    fn remove(&mut self, name: &str) {
        let Some(position) = self.names.iter().position(|n| n == name) else {
            return;
        };
        self.names.remove(position);
        match parse(&self.shared, name) {
            Some(Channel::Ticker {
                instrument,
                interval,
            }) => {
                self.ticker[instrument] &= !(1 << (interval as u8));
                self.shared
                    .count_ticker_subscriber(instrument, interval, -1);
            }
            Some(Channel::User) | None => {
                self.user.remove(name);
            }
        }
    }

    /// The subscribed ticker intervals of `instrument` as a bit set.
    pub fn ticker_mask(&self, instrument: usize) -> u8 {
        self.ticker.get(instrument).copied().unwrap_or(0)
    }

    /// Whether any ticker channel is subscribed.
    pub fn wants_ticks(&self) -> bool {
        self.ticker.iter().any(|mask| *mask != 0)
    }

    /// Whether any account channel is subscribed.
    pub fn wants_user_events(&self) -> bool {
        !self.user.is_empty()
    }

    /// Whether the account channel `name` is subscribed.
    pub fn has_user_channel(&self, name: &str) -> bool {
        self.user.contains(name)
    }
}

impl Drop for Subscriptions {
    fn drop(&mut self) {
        // Release the subscriber counts so ticks nobody wants stop being serialized.
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paper_exchange::auth::AuthState;
    use crate::paper_exchange::config::PaperConfig;
    use crate::paper_exchange::engine::Engine;
    use crate::paper_exchange::market::{InstrumentSpec, MarketState};

    fn shared() -> Arc<Shared> {
        let markets = InstrumentSpec::BUILTIN
            .iter()
            .map(|spec| MarketState::new(spec, fastrand::Rng::with_seed(1)))
            .collect();
        Arc::new(Shared::new(
            PaperConfig::default(),
            Engine::new(markets, 1.0, 1.0),
            AuthState::new(fastrand::Rng::with_seed(1)),
        ))
    }

    #[test]
    fn unknown_channels_are_left_out_and_duplicates_collapse() {
        let mut subs = Subscriptions::new(shared());
        let result = subs
            .subscribe(
                &[
                    "ticker.BTC-PERPETUAL.100ms",
                    "ticker.BTC-PERPETUAL.100ms",
                    "ticker.BTC-PERPETUAL.1s",
                    "book.BTC-PERPETUAL.100ms",
                    "ticker.SOL-PERPETUAL.raw",
                ],
                false,
                false,
            )
            .unwrap();
        assert_eq!(result, vec!["ticker.BTC-PERPETUAL.100ms"]);
    }

    #[test]
    fn raw_ticker_without_auth_fails_the_request() {
        let mut subs = Subscriptions::new(shared());
        let err = subs
            .subscribe(
                &["ticker.BTC-PERPETUAL.100ms", "ticker.ETH-PERPETUAL.raw"],
                false,
                false,
            )
            .unwrap_err();
        assert_eq!(err.code, code::RAW_NEEDS_AUTH);
        assert!(!subs.wants_ticks());
    }

    #[test]
    fn user_channels_need_an_authenticated_private_subscribe() {
        let mut subs = Subscriptions::new(shared());
        let channels = ["user.orders.BTC-PERPETUAL.raw", "user.portfolio.btc"];
        assert!(subs.subscribe(&channels, true, false).unwrap().is_empty());
        assert!(subs.subscribe(&channels, false, true).unwrap().is_empty());
        assert_eq!(subs.subscribe(&channels, true, true).unwrap().len(), 2);
        assert!(subs.has_user_channel("user.portfolio.btc"));
    }

    #[test]
    fn subscriber_counts_follow_unsubscribe_and_drop() {
        let shared = shared();
        let mut a = Subscriptions::new(Arc::clone(&shared));
        let mut b = Subscriptions::new(Arc::clone(&shared));
        a.subscribe(&["ticker.ETH-PERPETUAL.agg2"], false, false)
            .unwrap();
        b.subscribe(&["ticker.ETH-PERPETUAL.100ms"], false, false)
            .unwrap();
        assert!(shared.has_ticker_subscribers(1));
        assert!(a.unsubscribe(&["ticker.ETH-PERPETUAL.agg2"]).is_empty());
        assert!(shared.has_ticker_subscribers(1));
        drop(b);
        assert!(!shared.has_ticker_subscribers(1));
        assert!(!shared.has_ticker_subscribers(0));
    }
}

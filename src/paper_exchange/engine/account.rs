//! The simulated account: positions (inverse-contract averaging and realized PnL), balances,
//! `private/close_position`, position and account-summary objects.

use serde_json::{Value, json};

use super::{
    Account, ConnId, Direction, Engine, EngineError, EngineEvent, OrderRequest, OrderType,
    PlaceContext, num,
};
use crate::paper_exchange::market::round_decimals;

impl Engine {
    /// Books a fill into the position and the balance (inverse-contract arithmetic).
    pub(super) fn apply_fill(
        &mut self,
        instrument: usize,
        direction: Direction,
        quantity: f64,
        price: f64,
        fee: f64,
    ) {
        let currency = self.markets[instrument].spec.currency;
        let position = &mut self.positions[instrument];
        position.existed = true;
        let signed = direction.sign() * quantity;
        let mut pnl = 0.0;
        if position.size == 0.0 || position.size.signum() == signed.signum() {
            let old = position.size.abs();
            // Inverse contracts average by harmonic mean: USD over coins.
            position.average_price = if old == 0.0 {
                price
            } else {
                (old + quantity) / (old / position.average_price + quantity / price)
            };
            position.size += signed;
        } else {
            let closed = quantity.min(position.size.abs());
            pnl = if position.size > 0.0 {
                closed * (1.0 / position.average_price - 1.0 / price)
            } else {
                closed * (1.0 / price - 1.0 / position.average_price)
            };
            position.size += signed;
            if position.size.abs() < 1e-9 {
                position.size = 0.0;
                position.average_price = 0.0;
            } else if quantity > closed {
                // Flipped: the remainder opened a new position at the fill price.
                position.average_price = price;
            }
        }
        position.realized_pnl += pnl;
        let market = &mut self.markets[instrument];
        market.volume_usd += quantity;
        market.volume += quantity / price;
        if let Some(account) = self.accounts.iter_mut().find(|a| a.currency == currency) {
            account.balance += pnl - fee;
            account.realized_pnl += pnl;
        }
    }

    // ----- positions -----

    /// `private/close_position`: a reduce-only order against the whole position. `price` is
    /// required for `limit`.
    pub(crate) fn close_position(
        &mut self,
        instrument: usize,
        order_type: OrderType,
        price: Option<f64>,
        created_by: Option<ConnId>,
        now_ms: i64,
    ) -> Result<(Value, Vec<Value>), EngineError> {
        let size = self
            .positions
            .get(instrument)
            .ok_or(EngineError::UnknownInstrument)?
            .size;
        if size == 0.0 {
            return Err(EngineError::AlreadyClosed);
        }
        let direction = if size > 0.0 {
            Direction::Sell
        } else {
            Direction::Buy
        };
        let mut req = OrderRequest::new(instrument, direction, size.abs(), order_type);
        req.price = price;
        req.reduce_only = true;
        self.place(
            req,
            PlaceContext {
                created_by,
                now_ms,
                ..PlaceContext::default()
            },
        )
    }

    /// Overwrites the position of `instrument` (test seeding).
    pub(crate) fn seed_position(
        &mut self,
        instrument: usize,
        direction: Direction,
        size_usd: f64,
        average_price: f64,
    ) {
        let Some(position) = self.positions.get_mut(instrument) else {
            return;
        };
        position.size = direction.sign() * size_usd.abs();
        position.average_price = if position.size == 0.0 {
            0.0
        } else {
            average_price
        };
        position.existed = true;
        self.events.push(EngineEvent::Portfolio {
            currency: self.markets[instrument].spec.currency,
        });
    }

    /// `private/get_positions`: positions of `currency` that exist or once existed (flat ones
    /// with direction `zero`); instruments never traded are left out.
    pub(crate) fn positions(&self, currency: Option<&str>) -> Vec<Value> {
        self.positions
            .iter()
            .enumerate()
            .filter(|(i, p)| {
                p.existed && currency.is_none_or(|c| self.markets[*i].spec.currency == c)
            })
            .map(|(i, _)| self.position_json(i))
            .collect()
    }

    /// `private/get_position`: one instrument's position (flat if never traded).
    pub(crate) fn position_json(&self, instrument: usize) -> Value {
        let market = &self.markets[instrument];
        let position = &self.positions[instrument];
        let mark = market.mark;
        let size = position.size;
        let direction = if size > 0.0 {
            "buy"
        } else if size < 0.0 {
            "sell"
        } else {
            "zero"
        };
        let floating = floating_pnl(size, position.average_price, mark);
        let size_currency = size / mark;
        let initial_margin = size_currency.abs() / market.spec.max_leverage;
        json!({
            "instrument_name": market.spec.name,
            "kind": "future",
            "direction": direction,
            "size": num(size),
            "size_currency": round_decimals(size_currency, 9),
            "average_price": position.average_price,
            "mark_price": num(mark),
            "index_price": num(mark),
            "settlement_price": num(market.spec.start_price),
            "delta": round_decimals(size_currency, 9),
            "leverage": num(market.spec.max_leverage),
            "initial_margin": round_decimals(initial_margin, 9),
            "maintenance_margin": round_decimals(initial_margin / 2.0, 9),
            "open_orders_margin": 0.0,
            "floating_profit_loss": round_decimals(floating, 9),
            "realized_profit_loss": round_decimals(position.realized_pnl, 9),
            "total_profit_loss": round_decimals(floating + position.realized_pnl, 9),
            "realized_funding": 0.0,
            "interest_value": 0.0,
        })
    }

    pub(super) fn account(&self, currency: &str) -> Option<&Account> {
        self.accounts.iter().find(|a| a.currency == currency)
    }

    /// `private/get_account_summary` for `currency` (also the `user.portfolio` data).
    pub(crate) fn account_summary(&self, currency: &str) -> Option<Value> {
        let account = self.account(currency)?;
        let mut upl = 0.0;
        let mut initial_margin = 0.0;
        for (market, position) in self.markets.iter().zip(&self.positions) {
            if market.spec.currency != currency {
                continue;
            }
            upl += floating_pnl(position.size, position.average_price, market.mark);
            initial_margin += position.size.abs() / market.mark / market.spec.max_leverage;
        }
        let equity = account.balance + upl;
        Some(json!({
            "currency": account.currency,
            "balance": round_decimals(account.balance, 9),
            "equity": round_decimals(equity, 9),
            "margin_balance": round_decimals(equity, 9),
            "available_funds": round_decimals(equity - initial_margin, 9),
            "available_withdrawal_funds": round_decimals((equity - initial_margin).min(account.balance), 9),
            "initial_margin": round_decimals(initial_margin, 9),
            "maintenance_margin": round_decimals(initial_margin / 2.0, 9),
            "session_upl": round_decimals(upl, 9),
            "session_rpl": round_decimals(account.realized_pnl, 9),
            "total_pl": round_decimals(upl + account.realized_pnl, 9),
            "delta_total": 0.0,
            "limits": {
                "non_matching_engine": { "rate": 20, "burst": 100 },
                "matching_engine": { "rate": 5, "burst": 20 },
            },
        }))
    }
}

/// Unrealized PnL in the settlement currency of an inverse position of `size` USD.
fn floating_pnl(size: f64, average_price: f64, mark: f64) -> f64 {
    if size == 0.0 || average_price <= 0.0 || mark <= 0.0 {
        return 0.0;
    }
    size * (1.0 / average_price - 1.0 / mark)
}

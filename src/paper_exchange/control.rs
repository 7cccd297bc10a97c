//! The `paper/*` control methods: the wire form of [`super::FaultControl`] and of the market and
//! account seeding on [`super::PaperExchange`], for tests that drive the real daemon binary.
//! Served only when `allow_control` is set (the caller checks).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};

use super::engine::{Direction, OrderSeed};
use super::faults::FaultControl;
use super::protocol::{Params, RpcError};
use super::shared::Shared;

/// Runs control method `method`; `None` if there is no such control method.
pub(crate) fn dispatch(
    shared: &Arc<Shared>,
    method: &str,
    params: &Params<'_>,
) -> Option<Result<Value, RpcError>> {
    let faults = FaultControl {
        shared: Arc::clone(shared),
    };
    let result = match method {
        "paper/drop_all" => {
            faults.drop_all();
            Ok(json!("ok"))
        }
        "paper/refuse" => seconds(params).map(|d| {
            faults.refuse_for(d);
            json!("ok")
        }),
        "paper/stall" => seconds(params).map(|d| {
            faults.stall_for(d);
            json!("ok")
        }),
        "paper/malformed" => count(params, "count").map(|n| {
            faults.send_malformed(n as usize);
            json!("ok")
        }),
        "paper/set_price" => set_price(shared, params),
        "paper/seed_position" => seed_position(shared, params),
        "paper/seed_order" => seed_order(shared, params),
        "paper/inject_error" => inject_error(&faults, params),
        "paper/drop_after_accept" => (|| {
            let method = params.str("method")?;
            let times = times(params)?;
            faults.drop_after_accept(method, times);
            Ok(json!("ok"))
        })(),
        "paper/reject_linked_legs" => times(params).map(|times| {
            faults.reject_linked_legs(times);
            json!("ok")
        }),
        "paper/clear_faults" => {
            faults.clear();
            Ok(json!("ok"))
        }
        "paper/stats" => Ok(shared.stats.snapshot().to_json(shared.started)),
        "paper/pause_market" => params.bool_or("paused", true).map(|paused| {
            shared.paused.store(paused, Ordering::Relaxed);
            json!("ok")
        }),
        _ => return None,
    };
    Some(result)
}

fn seconds(params: &Params<'_>) -> Result<Duration, RpcError> {
    let seconds = params.f64("seconds")?;
    Duration::try_from_secs_f64(seconds)
        .map_err(|_| RpcError::invalid_params("seconds", "must be a non-negative number"))
}

fn count(params: &Params<'_>, name: &str) -> Result<u64, RpcError> {
    let n = params
        .opt_u64(name)?
        .ok_or_else(|| RpcError::invalid_params(name, "required"))?;
    if n > 10_000 {
        return Err(RpcError::invalid_params(name, "must be at most 10000"));
    }
    Ok(n)
}

fn times(params: &Params<'_>) -> Result<u32, RpcError> {
    Ok(params
        .opt_u64("times")?
        .unwrap_or(1)
        .min(u64::from(u32::MAX)) as u32)
}

fn instrument(shared: &Shared, params: &Params<'_>) -> Result<usize, RpcError> {
    let name = params.str("instrument_name")?;
    shared
        .instrument_index(name)
        .ok_or_else(|| RpcError::invalid_params("instrument_name", "unknown instrument"))
}

fn positive(params: &Params<'_>, name: &str) -> Result<f64, RpcError> {
    let value = params.f64(name)?;
    if value > 0.0 {
        Ok(value)
    } else {
        Err(RpcError::invalid_params(name, "must be > 0"))
    }
}

fn set_price(shared: &Shared, params: &Params<'_>) -> Result<Value, RpcError> {
    let instrument = instrument(shared, params)?;
    let price = positive(params, "price")?;
    shared.set_price(instrument, price);
    Ok(json!("ok"))
}

fn seed_position(shared: &Shared, params: &Params<'_>) -> Result<Value, RpcError> {
    let instrument = instrument(shared, params)?;
    let direction = params.parsed("direction", Direction::parse, "buy, sell")?;
    let size = params.f64("size")?.abs();
    let average_price = params
        .opt_f64("average_price")?
        .unwrap_or_else(|| shared.lock_engine().markets()[instrument].mark);
    shared.with_engine(|engine| {
        engine.seed_position(instrument, direction, size, average_price);
    });
    Ok(json!("ok"))
}

fn seed_order(shared: &Shared, params: &Params<'_>) -> Result<Value, RpcError> {
    let seed = OrderSeed {
        instrument: params.str("instrument_name")?.to_owned(),
        direction: params.parsed("direction", Direction::parse, "buy, sell")?,
        amount: params.f64("amount")?,
        order_type: params.opt_str("type")?.unwrap_or("limit").to_owned(),
        price: params.opt_f64("price")?,
        trigger_price: params.opt_f64("trigger_price")?,
        label: params.opt_str("label")?.unwrap_or_default().to_owned(),
        reduce_only: params.bool_or("reduce_only", false)?,
    };
    let order = shared.seed_order(&seed)?;
    Ok(order)
}

fn inject_error(faults: &FaultControl, params: &Params<'_>) -> Result<Value, RpcError> {
    let method = params.str("method")?;
    let code = params
        .opt_i64("code")?
        .ok_or_else(|| RpcError::invalid_params("code", "required"))?;
    let message = params.str("message")?;
    let times = times(params)?;
    faults.inject_error(method, code, message, times);
    Ok(json!("ok"))
}

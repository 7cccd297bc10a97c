//! The `public/*` and `private/*` JSON-RPC methods: parameter parsing and validation, auth
//! gating, and the calls into the engine, subscriptions and session. Synchronous: a method never
//! awaits, so the engine lock is never held across an `.await`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tracing::debug;

use super::auth::TOKEN_LIFETIME_SECS;
use super::connection::Session;
use super::control;
use super::engine::{
    Direction, Engine, FillCondition, LinkKind, LinkRequest, OrderFilter, OrderRequest, OrderType,
    PlaceContext, TimeInForce, Trigger, TypeFilter,
};
use super::protocol::{Params, RpcError, code};
use super::shared::{Shared, now_ms};

/// The version `public/test` and `public/hello` report.
const API_VERSION: &str = "1.2.26";

/// What a method produced.
#[derive(Debug)]
pub(crate) enum Handled {
    /// Answer with this result or error.
    Reply(Result<Value, RpcError>),
    /// `private/logout`: no answer; close the socket without cancel-on-disconnect.
    Logout,
}

/// Methods that need an authenticated connection (or a valid `access_token` param).
const PRIVATE_METHODS: &[&str] = &[
    "private/subscribe",
    "private/unsubscribe",
    "private/unsubscribe_all",
    "private/logout",
    "private/buy",
    "private/sell",
    "private/cancel",
    "private/cancel_all",
    "private/cancel_all_by_currency",
    "private/cancel_all_by_instrument",
    "private/cancel_by_label",
    "private/close_position",
    "private/get_open_orders_by_currency",
    "private/get_open_orders_by_instrument",
    "private/get_order_state",
    "private/get_order_state_by_label",
    "private/get_positions",
    "private/get_position",
    "private/get_account_summary",
    "private/enable_cancel_on_disconnect",
    "private/disable_cancel_on_disconnect",
    "private/get_cancel_on_disconnect",
];

/// Runs one request on behalf of `session`.
pub(crate) fn dispatch(
    shared: &Arc<Shared>,
    session: &mut Session,
    method: &str,
    params: &Map<String, Value>,
) -> Handled {
    let params = Params(params);
    if method.starts_with("paper/") {
        if !shared.config.allow_control {
            return Handled::Reply(Err(RpcError::method_not_found()));
        }
        return Handled::Reply(
            control::dispatch(shared, method, &params)
                .unwrap_or_else(|| Err(RpcError::method_not_found())),
        );
    }
    if PRIVATE_METHODS.contains(&method)
        && let Err(err) = authenticate_by_param(shared, session, &params)
    {
        return Handled::Reply(Err(err));
    }
    if method == "private/logout" {
        if params.bool_or("invalidate_token", true).unwrap_or(true)
            && let Some(token) = &session.access_token
        {
            shared.lock_auth().invalidate(token);
        }
        return Handled::Logout;
    }
    Handled::Reply(call(shared, session, method, &params))
}

/// Authenticates an unauthenticated connection from a valid `access_token` param.
fn authenticate_by_param(
    shared: &Shared,
    session: &mut Session,
    params: &Params<'_>,
) -> Result<(), RpcError> {
    if session.client_id.is_some() {
        return Ok(());
    }
    let token = params
        .opt_str("access_token")
        .ok()
        .flatten()
        .ok_or_else(RpcError::unauthorized)?;
    let client_id = shared
        .lock_auth()
        .client_for(token)
        .ok_or_else(RpcError::unauthorized)?;
    debug!(client_id = %client_id, "connection authenticated by access_token param");
    session.client_id = Some(client_id);
    session.access_token = Some(token.to_owned());
    Ok(())
}

fn call(
    shared: &Arc<Shared>,
    session: &mut Session,
    method: &str,
    params: &Params<'_>,
) -> Result<Value, RpcError> {
    match method {
        "public/auth" => auth(shared, session, params),
        "public/hello" => Ok(json!({ "version": API_VERSION })),
        "public/test" => {
            session.heartbeat_answered(shared);
            match params.opt_str("expected_result")? {
                Some("exception") => Err(RpcError {
                    data: Some(json!({ "reason": "expected_result exception" })),
                    ..RpcError::new(code::ERROR, "error")
                }),
                _ => Ok(json!({ "version": API_VERSION })),
            }
        }
        "public/set_heartbeat" => {
            let seconds = params.f64("interval")?;
            let min = shared.config.min_heartbeat_interval;
            let interval = Duration::try_from_secs_f64(seconds)
                .ok()
                .filter(|d| *d >= min)
                .ok_or_else(|| {
                    RpcError::invalid_params(
                        "interval",
                        &format!("must be at least {} seconds", min.as_secs_f64()),
                    )
                })?;
            session.set_heartbeat(Some(interval));
            Ok(json!("ok"))
        }
        "public/disable_heartbeat" => {
            session.set_heartbeat(None);
            Ok(json!("ok"))
        }
        "public/get_time" => Ok(json!(now_ms())),
        "public/get_instruments" => get_instruments(shared, params),
        "public/ticker" => {
            let name = params.str("instrument_name")?;
            let instrument = shared
                .instrument_index(name)
                .ok_or_else(|| RpcError::invalid_params("instrument_name", "unknown instrument"))?;
            let engine = shared.lock_engine();
            let open_interest = engine.open_interest(instrument);
            let ticker = engine.markets()[instrument].ticker(now_ms(), open_interest);
            serde_json::to_value(ticker).map_err(|_| RpcError::new(code::ERROR, "error"))
        }
        "public/subscribe" | "private/subscribe" => {
            let channels = params.str_array("channels")?;
            let authenticated = session.client_id.is_some();
            let private = method == "private/subscribe";
            let subscribed = session.subs.subscribe(&channels, authenticated, private)?;
            Ok(json!(subscribed))
        }
        "public/unsubscribe" | "private/unsubscribe" => {
            let channels = params.str_array("channels")?;
            Ok(json!(session.subs.unsubscribe(&channels)))
        }
        "public/unsubscribe_all" | "private/unsubscribe_all" => {
            session.subs.clear();
            Ok(json!("ok"))
        }
        "private/buy" => place(shared, session, params, Direction::Buy),
        "private/sell" => place(shared, session, params, Direction::Sell),
        "private/cancel" => {
            let order_id = params.str("order_id")?;
            let now = now_ms();
            Ok(shared.with_engine(|engine| engine.cancel(order_id, now))?)
        }
        "private/cancel_all" => {
            let now = now_ms();
            let count =
                shared.with_engine(|engine| engine.cancel_matching(&OrderFilter::default(), now));
            Ok(json!(count))
        }
        "private/cancel_all_by_currency" => {
            let filter = OrderFilter {
                currency: currency(params, "currency", true)?,
                types: type_filter(params)?,
                ..OrderFilter::default()
            };
            if !kind_matches(params)? {
                return Ok(json!(0));
            }
            let now = now_ms();
            Ok(json!(shared.with_engine(|engine| {
                engine.cancel_matching(&filter, now)
            })))
        }
        "private/cancel_all_by_instrument" => {
            let filter = OrderFilter {
                instrument: Some(trading_instrument(shared, params)?),
                types: type_filter(params)?,
                ..OrderFilter::default()
            };
            let now = now_ms();
            Ok(json!(shared.with_engine(|engine| {
                engine.cancel_matching(&filter, now)
            })))
        }
        "private/cancel_by_label" => {
            let filter = OrderFilter {
                label: Some(params.str("label")?),
                currency: currency(params, "currency", true)?,
                ..OrderFilter::default()
            };
            let now = now_ms();
            Ok(json!(shared.with_engine(|engine| {
                engine.cancel_matching(&filter, now)
            })))
        }
        "private/close_position" => {
            let instrument = trading_instrument(shared, params)?;
            let order_type = match params.str("type")? {
                "market" => OrderType::Market,
                "limit" => OrderType::Limit,
                _ => {
                    return Err(RpcError::invalid_params("type", "must be limit or market"));
                }
            };
            let price = params.opt_f64("price")?;
            let created_by = Some(session.id);
            let now = now_ms();
            let (order, trades) = shared.with_engine(|engine| {
                engine.close_position(instrument, order_type, price, created_by, now)
            })?;
            Ok(json!({ "order": order, "trades": trades }))
        }
        "private/get_open_orders_by_currency" => {
            let filter = OrderFilter {
                currency: currency(params, "currency", true)?,
                types: type_filter(params)?,
                ..OrderFilter::default()
            };
            if !kind_matches(params)? {
                return Ok(json!([]));
            }
            Ok(json!(shared.lock_engine().open_orders(&filter)))
        }
        "private/get_open_orders_by_instrument" => {
            let filter = OrderFilter {
                instrument: Some(trading_instrument(shared, params)?),
                types: type_filter(params)?,
                ..OrderFilter::default()
            };
            Ok(json!(shared.lock_engine().open_orders(&filter)))
        }
        "private/get_order_state" => {
            let order_id = params.str("order_id")?;
            shared
                .lock_engine()
                .order_state(order_id)
                .ok_or_else(|| RpcError::new(code::ORDER_NOT_FOUND, "order_not_found"))
        }
        "private/get_order_state_by_label" => {
            let filter = OrderFilter {
                currency: currency(params, "currency", false)?,
                label: Some(params.str("label")?),
                ..OrderFilter::default()
            };
            Ok(json!(shared.lock_engine().all_orders(&filter)))
        }
        "private/get_positions" => {
            let currency = currency(params, "currency", true)?;
            if !kind_matches(params)? {
                return Ok(json!([]));
            }
            Ok(json!(shared.lock_engine().positions(currency)))
        }
        "private/get_position" => {
            let instrument = trading_instrument(shared, params)?;
            Ok(shared.lock_engine().position_json(instrument))
        }
        "private/get_account_summary" => {
            let currency = currency(params, "currency", false)?.unwrap_or("BTC");
            shared
                .lock_engine()
                .account_summary(currency)
                .ok_or_else(|| RpcError::invalid_params("currency", "unknown currency"))
        }
        "private/enable_cancel_on_disconnect" | "private/disable_cancel_on_disconnect" => {
            let enable = method == "private/enable_cancel_on_disconnect";
            match params.opt_str("scope")?.unwrap_or("connection") {
                "connection" => session.cod = enable,
                "account" => shared.with_engine(|engine| engine.cod_account = enable),
                _ => {
                    return Err(RpcError::invalid_params(
                        "scope",
                        "must be connection or account",
                    ));
                }
            }
            Ok(json!("ok"))
        }
        "private/get_cancel_on_disconnect" => {
            let account = shared.lock_engine().cod_account;
            match params.opt_str("scope")?.unwrap_or("connection") {
                "connection" => {
                    Ok(json!({ "scope": "connection", "enabled": session.cod || account }))
                }
                "account" => Ok(json!({ "scope": "account", "enabled": account })),
                _ => Err(RpcError::invalid_params(
                    "scope",
                    "must be connection or account",
                )),
            }
        }
        _ => Err(RpcError::method_not_found()),
    }
}

fn auth(shared: &Shared, session: &mut Session, params: &Params<'_>) -> Result<Value, RpcError> {
    let now = now_ms();
    let (client_id, tokens) = match params.str("grant_type")? {
        "client_credentials" => {
            let client_id = params.str("client_id")?;
            let client_secret = params.str("client_secret")?;
            let mut auth = shared.lock_auth();
            if !auth.check(client_id, client_secret) {
                return Err(RpcError::new(
                    code::INVALID_CREDENTIALS,
                    "invalid_credentials",
                ));
            }
            (client_id.to_owned(), auth.issue(client_id, now))
        }
        "refresh_token" => {
            let refresh_token = params.str("refresh_token")?;
            shared
                .lock_auth()
                .refresh(refresh_token, now)
                .ok_or_else(RpcError::unauthorized)?
        }
        "client_signature" => {
            return Err(RpcError::invalid_params(
                "grant_type",
                "client_signature is not supported by the paper exchange; use client_credentials",
            ));
        }
        _ => {
            return Err(RpcError::invalid_params(
                "grant_type",
                "must be client_credentials, client_signature or refresh_token",
            ));
        }
    };
    debug!(client_id = %client_id, "authenticated");
    session.client_id = Some(client_id);
    session.access_token = Some(tokens.access_token.clone());
    Ok(json!({
        "access_token": tokens.access_token,
        "expires_in": TOKEN_LIFETIME_SECS,
        "refresh_token": tokens.refresh_token,
        "scope": "connection mainaccount",
        "token_type": "bearer",
        "enabled_features": [],
    }))
}

fn get_instruments(shared: &Shared, params: &Params<'_>) -> Result<Value, RpcError> {
    let currency = currency(params, "currency", true)?;
    if !kind_matches(params)? || params.bool_or("expired", false)? {
        return Ok(json!([]));
    }
    let items: Vec<Value> = shared
        .instruments
        .iter()
        .filter(|spec| currency.is_none_or(|c| spec.currency == c))
        .map(|spec| spec.to_json())
        .collect();
    Ok(json!(items))
}

/// The `currency` param as the account's upper-case name; `None` for `any` when allowed.
fn currency(
    params: &Params<'_>,
    name: &str,
    allow_any: bool,
) -> Result<Option<&'static str>, RpcError> {
    let Some(value) = params.opt_str(name)? else {
        return if allow_any {
            Ok(None)
        } else {
            Err(RpcError::invalid_params(name, "required"))
        };
    };
    let upper = value.to_ascii_uppercase();
    if allow_any && upper == "ANY" {
        return Ok(None);
    }
    super::engine::CURRENCIES
        .iter()
        .find(|c| **c == upper)
        .map(|c| Some(*c))
        .ok_or_else(|| RpcError::invalid_params(name, "must be BTC or ETH"))
}

/// Whether the optional `kind` param selects futures (the only kind listed).
fn kind_matches(params: &Params<'_>) -> Result<bool, RpcError> {
    match params.opt_str("kind")? {
        None | Some("future" | "any") => Ok(true),
        Some("option" | "spot" | "future_combo" | "option_combo") => Ok(false),
        Some(_) => Err(RpcError::invalid_params(
            "kind",
            "must be future, option, spot, future_combo, option_combo or any",
        )),
    }
}

fn type_filter(params: &Params<'_>) -> Result<TypeFilter, RpcError> {
    Ok(params
        .opt_parsed(
            "type",
            TypeFilter::parse,
            "all, limit, trigger_all, stop_all, stop_limit, stop_market, take_all, take_limit, take_market",
        )?
        .unwrap_or_default())
}

/// The `instrument_name` of a trading method: unknown names are 10020.
fn trading_instrument(shared: &Shared, params: &Params<'_>) -> Result<usize, RpcError> {
    let name = params.str("instrument_name")?;
    shared.instrument_index(name).ok_or_else(|| {
        RpcError::new(
            code::INVALID_INSTRUMENT,
            "invalid_or_unsupported_instrument",
        )
    })
}

const ORDER_TYPES: &str =
    "limit, market, market_limit, stop_limit, stop_market, take_limit, take_market";

fn place(
    shared: &Arc<Shared>,
    session: &Session,
    params: &Params<'_>,
    direction: Direction,
) -> Result<Value, RpcError> {
    let instrument = trading_instrument(shared, params)?;
    let spec = shared.instruments[instrument];
    let amount = match (params.opt_f64("amount")?, params.opt_f64("contracts")?) {
        (Some(amount), None) => amount,
        (None, Some(contracts)) => contracts * spec.contract_size,
        (Some(amount), Some(contracts)) => {
            if (contracts * spec.contract_size - amount).abs() > 1e-9 {
                return Err(RpcError::invalid_params(
                    "contracts",
                    "must match amount / contract size",
                ));
            }
            amount
        }
        (None, None) => return Err(RpcError::invalid_params("amount", "required")),
    };
    let mut req = order_fields(params, instrument, direction, amount)?;
    req.valid_until_ms = params.opt_i64("valid_until")?;
    req.link = link(params)?;

    let reject_legs = req.link.is_some() && shared.lock_faults().reject_linked_legs_pending();
    let ctx = PlaceContext {
        created_by: Some(session.id),
        now_ms: now_ms(),
        reject_legs,
        skip_margin_check: false,
    };
    let (order, trades) = shared.with_engine(|engine: &mut Engine| engine.place(req, ctx))?;
    if reject_legs {
        shared.lock_faults().take_reject_linked_legs();
    }
    Ok(json!({ "order": order, "trades": trades }))
}

/// The fields shared by an order and an OTOCO leg.
fn order_fields(
    params: &Params<'_>,
    instrument: usize,
    direction: Direction,
    amount: f64,
) -> Result<OrderRequest, RpcError> {
    if params.opt_str("type")? == Some("trailing_stop") {
        return Err(RpcError::invalid_params(
            "type",
            "trailing_stop is not supported by the paper exchange",
        ));
    }
    let order_type = params
        .opt_parsed("type", OrderType::parse, ORDER_TYPES)?
        .unwrap_or(OrderType::Limit);
    let mut req = OrderRequest::new(instrument, direction, amount, order_type);
    req.label = params.opt_str("label")?.unwrap_or_default().to_owned();
    if req.label.chars().count() > 64 {
        return Err(RpcError::invalid_params(
            "label",
            "must be at most 64 characters",
        ));
    }
    req.price = params.opt_f64("price")?;
    req.trigger_price = params.opt_f64("trigger_price")?;
    req.trigger = params.opt_parsed(
        "trigger",
        Trigger::parse,
        "index_price, mark_price, last_price",
    )?;
    req.time_in_force = params
        .opt_parsed(
            "time_in_force",
            TimeInForce::parse,
            "good_til_cancelled, good_til_day, fill_or_kill, immediate_or_cancel",
        )?
        .unwrap_or(TimeInForce::GoodTilCancelled);
    req.post_only = params.bool_or("post_only", false)?;
    req.reject_post_only = params.bool_or("reject_post_only", false)?;
    req.reduce_only = params.bool_or("reduce_only", false)?;
    Ok(req)
}

fn link(params: &Params<'_>) -> Result<Option<LinkRequest>, RpcError> {
    let kind = match params.opt_str("linked_order_type")? {
        None => return Ok(None),
        Some("one_triggers_other") => LinkKind::OneTriggersOther,
        Some("one_triggers_one_cancels_other") => LinkKind::OneTriggersOneCancelsOther,
        Some("one_cancels_other") => {
            return Err(RpcError::invalid_params(
                "linked_order_type",
                "one_cancels_other is not supported by the paper exchange",
            ));
        }
        Some(_) => {
            return Err(RpcError::invalid_params(
                "linked_order_type",
                "must be one_triggers_other or one_triggers_one_cancels_other",
            ));
        }
    };
    let fill_condition = params
        .opt_parsed(
            "trigger_fill_condition",
            FillCondition::parse,
            "first_hit, complete_fill, incremental",
        )?
        .unwrap_or(FillCondition::FirstHit);
    let legs = params
        .object_array("otoco_config")?
        .into_iter()
        .map(|leg| parse_leg(&Params(leg)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(LinkRequest {
        kind,
        fill_condition,
        legs,
    }))
}

/// One `otoco_config` item; any error is reported against `otoco_config`.
fn parse_leg(params: &Params<'_>) -> Result<OrderRequest, RpcError> {
    let inner = || -> Result<OrderRequest, RpcError> {
        let amount = params.f64("amount")?;
        let direction = params.parsed("direction", Direction::parse, "buy, sell")?;
        // The instrument is the primary's; the engine sets it.
        order_fields(params, 0, direction, amount)
    };
    inner().map_err(|err| {
        let detail = err
            .data
            .as_ref()
            .map(|d| {
                format!(
                    "{}: {}",
                    d["param"].as_str().unwrap_or("?"),
                    d["reason"].as_str().unwrap_or("invalid")
                )
            })
            .unwrap_or_else(|| err.message.clone());
        RpcError::invalid_params("otoco_config", &detail)
    })
}

//! Frame fuzzing shared by `tests/fuzz.rs` (fast subset) and `tests/bench/fuzz_frames.rs`
//! (the 10 M run): a corpus of real Deribit frame shapes, a generator of valid frames with
//! random contents, mutators (byte flips, truncation, insertions, splices, duplicated keys, deep
//! nesting, huge numbers, wrong types), and an oracle that checks every decoded frame against an
//! independent `serde_json::Value` reading of the same text.
//!
//! Stable toolchain only: `fastrand` with a printed seed (`TRADEBAAS_FUZZ_SEED` replays a run).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};

use serde_json::{Value, json};
use tradebaas_actors::broker::protocol::{DecodeError, Incoming, decode};

/// The seed from `TRADEBAAS_FUZZ_SEED`, else a fresh one (always printed by the caller).
pub fn seed() -> u64 {
    std::env::var("TRADEBAAS_FUZZ_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| fastrand::u64(..))
}

/// Frames as the exchange sends them (deribit-api-v2.md and the paper exchange).
pub const CORPUS: &[&str] = &[
    r#"{"jsonrpc":"2.0","method":"subscription","params":{"channel":"ticker.BTC-PERPETUAL.raw","data":{"timestamp":1597244851057,"stats":{"volume_usd":404775400.0,"volume":35574.05167122,"price_change":0.493,"low":11131.5,"high":11632.5},"state":"open","settlement_price":11452.62,"open_interest":117979530,"min_price":11443.06,"max_price":11791.58,"mark_price":11617.8,"last_price":11618.0,"instrument_name":"BTC-PERPETUAL","index_price":11609.61,"funding_8h":0.00001212,"estimated_delivery_price":11609.61,"current_funding":0.00020545,"best_bid_price":11618.0,"best_bid_amount":7460.0,"best_ask_price":11618.5,"best_ask_amount":497870.0}}}"#,
    r#"{"jsonrpc":"2.0","method":"subscription","params":{"channel":"ticker.ETH-PERPETUAL.100ms","data":{"instrument_name":"ETH-PERPETUAL","timestamp":1,"mark_price":1.5,"best_bid_price":null,"best_ask_price":null,"state":"halted"}}}"#,
    r#"{"jsonrpc":"2.0","method":"subscription","params":{"channel":"deribit_price_index.btc_usd","data":{"timestamp":1535098298227,"price":6521.17,"index_name":"btc_usd"}}}"#,
    r#"{"jsonrpc":"2.0","method":"subscription","params":{"channel":"user.orders.BTC-PERPETUAL.raw","data":{"order_id":"58167917688","order_state":"open","order_type":"limit","price":115000,"amount":1000,"filled_amount":0,"label":"tb-1-0001","direction":"buy","instrument_name":"BTC-PERPETUAL","creation_timestamp":1754907086852}}}"#,
    r#"{"jsonrpc":"2.0","method":"subscription","params":{"channel":"user.trades.future.BTC.100ms","data":[{"trade_id":"ETH-2696097","order_id":"ETH-584864807","instrument_name":"ETH-PERPETUAL","timestamp":1590486335742,"direction":"sell","price":202.8,"amount":21,"fee":7.766e-05}]}}"#,
    r#"{"jsonrpc":"2.0","id":42,"result":1550147385946,"testnet":false,"usIn":1535043730126248,"usOut":1535043730126250,"usDiff":2}"#,
    r#"{"jsonrpc":"2.0","id":17,"error":{"message":"unauthorized","code":13009},"usIn":1635047305421510,"usOut":1635047305421560,"usDiff":50,"testnet":true}"#,
    r#"{"jsonrpc":"2.0","id":2,"error":{"message":"Invalid params","data":{"reason":"must be a multiple of contract size","param":"amount"},"code":-32602}}"#,
    r#"{"jsonrpc":"2.0","id":9929,"result":{"access_token":"1582628593469.1MbQ-J_4.CBP","expires_in":31536000,"refresh_token":"1582628593469.1GP4rQd0.A9Wa","scope":"connection mainaccount","enabled_features":[],"token_type":"bearer"}}"#,
    r#"{"jsonrpc":"2.0","id":9098,"result":"ok"}"#,
    r#"{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"heartbeat"}}"#,
    r#"{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"test_request"}}"#,
    r#"{"jsonrpc":"2.0","id":8212,"result":{"version":"1.2.26"}}"#,
    r#"{"jsonrpc":"2.0","id":3600,"result":["ticker.BTC-PERPETUAL.100ms","book.BTC-PERPETUAL.100ms"]}"#,
    r#"{"jsonrpc":"2.0","id":3,"result":{"order":{"order_id":"58167917688","order_state":"open","order_type":"limit","price":115000,"amount":1000,"contracts":100,"filled_amount":0,"label":"","post_only":false,"api":true,"direction":"buy","instrument_name":"BTC-PERPETUAL","time_in_force":"good_til_cancelled","creation_timestamp":1754907086852,"last_update_timestamp":1754907086852},"trades":[]}}"#,
    r#"{"jsonrpc":"2.0","id":2236,"result":[{"instrument_name":"BTC-PERPETUAL","kind":"future","direction":"buy","size":50,"average_price":7440.18,"mark_price":7476.65,"floating_profit_loss":0,"realized_profit_loss":-9e-09}]}"#,
    r#"{"jsonrpc":"2.0","id":"abc","result":"ok"}"#,
    r#"{"jsonrpc":"2.0","method":"public/announcement","params":{"title":"maintenance"}}"#,
];

/// What a decode produced, by kind (for the counts a run prints).
pub fn kind(r: &Result<Incoming, DecodeError>) -> &'static str {
    match r {
        Ok(Incoming::Response { result: Ok(_), .. }) => "ok:response",
        Ok(Incoming::Response { result: Err(_), .. }) => "ok:error_response",
        Ok(Incoming::UnmatchedResponse) => "ok:unmatched_response",
        Ok(Incoming::Ticker(_)) => "ok:ticker",
        Ok(Incoming::Subscription { .. }) => "ok:subscription",
        Ok(Incoming::TestRequest) => "ok:test_request",
        Ok(Incoming::Heartbeat) => "ok:heartbeat",
        Ok(Incoming::Other { .. }) => "ok:other",
        Err(DecodeError::Json(_)) => "err:json",
        Err(DecodeError::Shape) => "err:shape",
        Err(DecodeError::Params { .. }) => "err:params",
        Err(DecodeError::Ticker { .. }) => "err:ticker",
    }
}

fn pick<'a, T>(rng: &mut fastrand::Rng, items: &'a [T]) -> &'a T {
    &items[rng.usize(..items.len())]
}

fn name(rng: &mut fastrand::Rng) -> String {
    let base = *pick(rng, &["BTC", "ETH", "SOL", "XRP", "", "ü€", "\"q\\"]);
    match rng.u8(..4) {
        0 => format!("{base}-PERPETUAL"),
        1 => format!("{base}-{}DEC26", rng.u8(1..31)),
        2 => format!("{base}_USDC-{}", rng.u32(..)),
        _ => base.to_string(),
    }
}

fn price(rng: &mut fastrand::Rng) -> f64 {
    match rng.u8(..6) {
        0 => 0.0,
        1 => -rng.f64() * 1e6,
        2 => rng.f64() * 1e-300,
        3 => rng.f64() * 1e300,
        _ => (rng.f64() * 200_000.0 * 2.0).round() / 2.0,
    }
}

fn opt_price(rng: &mut fastrand::Rng) -> Value {
    if rng.u8(..5) == 0 {
        Value::Null
    } else {
        json!(price(rng))
    }
}

/// A structurally valid frame with random contents; it must decode.
pub fn generate(rng: &mut fastrand::Rng) -> String {
    let id = match rng.u8(..4) {
        0 => rng.u64(..),
        1 => u64::MAX,
        _ => rng.u64(..100_000),
    };
    let value = match rng.u8(..8) {
        0..=2 => {
            let instrument = name(rng);
            let mut data = json!({
                "instrument_name": instrument,
                "timestamp": rng.i64(..),
                "mark_price": price(rng),
            });
            for field in [
                "last_price",
                "index_price",
                "best_bid_price",
                "best_ask_price",
                "best_bid_amount",
                "best_ask_amount",
            ] {
                if rng.bool() {
                    data[field] = opt_price(rng);
                }
            }
            if rng.bool() {
                data["state"] = json!(*pick(rng, &["open", "halted", "settlement", "locked"]));
            }
            if rng.bool() {
                data["stats"] = json!({"volume": price(rng), "low": price(rng)});
            }
            let interval = *pick(rng, &["raw", "100ms", "agg2"]);
            json!({"jsonrpc": "2.0", "method": "subscription",
                   "params": {"channel": format!("ticker.{instrument}.{interval}"), "data": data}})
        }
        3 => json!({"jsonrpc": "2.0", "method": "subscription",
                   "params": {"channel": format!("user.orders.{}.raw", name(rng)),
                              "data": {"order_id": rng.u64(..).to_string(), "price": price(rng)}}}),
        4 => {
            let n = rng.i64(..);
            let result = pick(
                rng,
                &[
                    json!("ok"),
                    json!(n),
                    json!([]),
                    json!({"version": "1"}),
                    Value::Null,
                ],
            )
            .clone();
            json!({"jsonrpc": "2.0", "id": id, "result": result})
        }
        5 => json!({"jsonrpc": "2.0", "id": id,
                   "error": {"code": rng.i64(..), "message": name(rng), "data": {"param": "amount"}}}),
        6 => json!({"jsonrpc": "2.0", "method": "heartbeat",
                   "params": {"type": *pick(rng, &["heartbeat", "test_request"])}}),
        _ => json!({"jsonrpc": "2.0", "method": format!("public/{}", name(rng)), "params": {}}),
    };
    value.to_string()
}

const INTERESTING_BYTES: &[u8] = b"{}[]\",:\\0123456789-+.eEntfalsru \t\n\x00\x7f\xff\xc3";
const INTERESTING_VALUES: &[&str] = &[
    "null",
    "true",
    "0",
    "-0",
    "1.0",
    "-1",
    "1e400",
    "-1e400",
    "1e-400",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775809",
    "123456789012345678901234567890",
    "0.000000000000000000000000000001",
    "\"\"",
    "\"NaN\"",
    "\"\\ud800\"",
    "\"\\u0000\"",
    "[]",
    "{}",
    "[null]",
    "{\"a\":{}}",
];

/// One of the mutations, applied to `bytes`.
fn mutate_once(rng: &mut fastrand::Rng, bytes: &mut Vec<u8>) {
    let len = bytes.len();
    match rng.u8(..12) {
        // Bit flips.
        0 if len > 0 => {
            for _ in 0..rng.usize(1..4) {
                let i = rng.usize(..len);
                bytes[i] ^= 1 << rng.u8(..8);
            }
        }
        // A byte replaced by a structurally interesting one.
        1 if len > 0 => {
            let i = rng.usize(..len);
            bytes[i] = *pick(rng, INTERESTING_BYTES);
        }
        // Truncation.
        2 => bytes.truncate(rng.usize(..=len)),
        // A range deleted.
        3 if len > 0 => {
            let a = rng.usize(..len);
            let b = rng.usize(a..=len.min(a + 16));
            bytes.drain(a..b);
        }
        // Random bytes inserted.
        4 => {
            let at = rng.usize(..=len);
            let n = rng.usize(1..8);
            let ins: Vec<u8> = (0..n).map(|_| rng.u8(..)).collect();
            bytes.splice(at..at, ins);
        }
        // A range duplicated.
        5 if len > 0 => {
            let a = rng.usize(..len);
            let b = rng.usize(a..=len.min(a + 32));
            let chunk = bytes[a..b].to_vec();
            let at = rng.usize(..=len);
            bytes.splice(at..at, chunk);
        }
        // A value replaced by an interesting one (huge numbers, wrong types, bad escapes).
        6 => {
            if let Some((a, b)) = value_span(rng, bytes) {
                bytes.splice(a..b, pick(rng, INTERESTING_VALUES).bytes());
            }
        }
        // Deep nesting: a value wrapped in many arrays or objects.
        7 => {
            if let Some((a, b)) = value_span(rng, bytes) {
                let depth = *pick(rng, &[2usize, 64, 127, 128, 129, 500, 5_000]);
                let (open, close): (&[u8], &[u8]) = if rng.bool() {
                    (b"[", b"]")
                } else {
                    (b"{\"k\":", b"}")
                };
                let inner = bytes[a..b].to_vec();
                let mut wrapped = Vec::with_capacity(inner.len() + depth * 6);
                for _ in 0..depth {
                    wrapped.extend_from_slice(open);
                }
                wrapped.extend_from_slice(&inner);
                for _ in 0..depth {
                    wrapped.extend_from_slice(close);
                }
                bytes.splice(a..b, wrapped);
            }
        }
        // A duplicated key: `"k":v,` inserted after an opening brace.
        8 => {
            let braces: Vec<usize> = (0..len).filter(|&i| bytes[i] == b'{').collect();
            if !braces.is_empty() {
                let at = *pick(rng, &braces) + 1;
                let key = *pick(
                    rng,
                    &[
                        "id",
                        "method",
                        "params",
                        "result",
                        "error",
                        "channel",
                        "data",
                        "type",
                        "mark_price",
                        "instrument_name",
                        "timestamp",
                        "code",
                    ],
                );
                let v = *pick(rng, INTERESTING_VALUES);
                bytes.splice(at..at, format!("\"{key}\":{v},").into_bytes());
            }
        }
        // Splice with another frame.
        9 => {
            let other = pick(rng, CORPUS).as_bytes();
            let a = rng.usize(..=len);
            let b = rng.usize(..=other.len());
            bytes.truncate(a);
            bytes.extend_from_slice(&other[b..]);
        }
        // The whole object turned into an array of its values (a JSON-RPC frame is an object).
        10 => {
            if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(bytes) {
                let mut values: Vec<Value> = map.into_iter().map(|(_, v)| v).collect();
                if rng.bool() {
                    values.reverse();
                }
                *bytes = Value::Array(values).to_string().into_bytes();
            }
        }
        // A nested object turned into an array of its values.
        _ => {
            if let Ok(mut v) = serde_json::from_slice::<Value>(bytes) {
                arrayify_one(rng, &mut v);
                *bytes = v.to_string().into_bytes();
            }
        }
    }
}

fn arrayify_one(rng: &mut fastrand::Rng, v: &mut Value) {
    if let Value::Object(map) = v {
        let keys: Vec<String> = map
            .iter()
            .filter(|(_, v)| v.is_object())
            .map(|(k, _)| k.clone())
            .collect();
        if keys.is_empty() || rng.u8(..4) == 0 {
            let values: Vec<Value> = std::mem::take(map).into_iter().map(|(_, v)| v).collect();
            *v = Value::Array(values);
        } else if let Some(child) = map.get_mut(pick(rng, &keys).as_str()) {
            arrayify_one(rng, child);
        }
    }
}

/// A byte range holding one JSON value after a `:` (up to the next `,` or `}` at the same
/// depth, roughly): good enough to aim a mutation at a value.
fn value_span(rng: &mut fastrand::Rng, bytes: &[u8]) -> Option<(usize, usize)> {
    let colons: Vec<usize> = (0..bytes.len()).filter(|&i| bytes[i] == b':').collect();
    let start = *colons.get(rng.usize(..colons.len().max(1)))? + 1;
    let mut depth = 0i32;
    let mut in_str = false;
    let mut i = start;
    while i < bytes.len() {
        let c = bytes[i];
        if in_str {
            if c == b'\\' {
                i += 1;
            } else if c == b'"' {
                in_str = false;
            }
        } else {
            match c {
                b'"' => in_str = true,
                b'{' | b'[' => depth += 1,
                b'}' | b']' if depth == 0 => break,
                b'}' | b']' => depth -= 1,
                b',' if depth == 0 => break,
                _ => {}
            }
        }
        i += 1;
    }
    Some((start, i.min(bytes.len())))
}

/// One fuzz input: a generated frame, a corpus frame, or either mutated 1-4 times.
pub struct Input {
    pub bytes: Vec<u8>,
    /// Unmutated (generated or corpus): it must decode.
    pub valid: bool,
}

pub fn input(rng: &mut fastrand::Rng) -> Input {
    let mut bytes = if rng.bool() {
        generate(rng).into_bytes()
    } else {
        pick(rng, CORPUS).as_bytes().to_vec()
    };
    if rng.u8(..10) == 0 {
        return Input { bytes, valid: true };
    }
    for _ in 0..rng.usize(1..5) {
        mutate_once(rng, &mut bytes);
    }
    Input {
        bytes,
        valid: false,
    }
}

/// Checks one decode against an independent reading of the text: `Err(why)` on a violation.
///
/// - a valid (unmutated) frame decodes;
/// - anything decoded is a JSON object (so is the notification's `params`, and a ticker's data)
///   whose fields agree with what `decode` returned;
/// - malformed input is an `Err`, never a panic (checked by the caller).
pub fn check(text: &str, valid: bool, got: &Result<Incoming, DecodeError>) -> Result<(), String> {
    let ok = match got {
        Ok(incoming) => incoming,
        Err(e) if valid => return Err(format!("a valid frame did not decode: {e}")),
        Err(_) => return Ok(()),
    };
    let v: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        // Nesting past serde_json's recursion limit, a number out of f64 range or a lone
        // UTF-16 surrogate escape inside a field the decoder skips (or keeps raw) without
        // building it: valid syntax, not readable as a `Value`, so nothing to compare with.
        Err(e)
            if [
                "recursion limit",
                "number out of range",
                "hex escape",
                "surrogate",
            ]
            .iter()
            .any(|m| e.to_string().contains(m)) =>
        {
            return Ok(());
        }
        Err(e) => return Err(format!("decoded {} but is not JSON: {e}", kind(got))),
    };
    let obj = v
        .as_object()
        .ok_or_else(|| format!("decoded {} from a non-object frame", kind(got)))?;
    // A `null` member is an absent one (serde's `Option`), for the decoder as here.
    let method = obj.get("method").filter(|m| !m.is_null());
    let params = obj.get("params");
    match ok {
        Incoming::Response { id, result } => {
            if method.is_some() {
                return Err("a notification decoded as a response".into());
            }
            if obj.get("id").and_then(Value::as_u64) != Some(*id) {
                return Err(format!("response id {id} is not the frame's id"));
            }
            match result {
                Ok(raw) => {
                    let inner: Value = serde_json::from_str(raw.get())
                        .map_err(|e| format!("result is not JSON: {e}"))?;
                    if obj.get("error").is_some_and(|e| !e.is_null()) {
                        return Err("an error response decoded as a result".into());
                    }
                    if obj.get("result") != Some(&inner) {
                        return Err("result differs from the frame's".into());
                    }
                }
                Err(e) => {
                    let err = obj
                        .get("error")
                        .and_then(Value::as_object)
                        .ok_or("an error decoded from a non-object error field")?;
                    if err.get("code").and_then(Value::as_i64) != Some(e.code) {
                        return Err("error code differs from the frame's".into());
                    }
                }
            }
        }
        Incoming::UnmatchedResponse => {
            if method.is_some() {
                return Err("a notification decoded as a response".into());
            }
            if obj.get("id").and_then(Value::as_u64).is_some() {
                return Err("a response with a numeric id was unmatched".into());
            }
        }
        Incoming::Ticker(t) => {
            if method.and_then(Value::as_str) != Some("subscription") {
                return Err("a ticker from a non-subscription frame".into());
            }
            let p = params
                .and_then(Value::as_object)
                .ok_or("a ticker from non-object params")?;
            let channel = p.get("channel").and_then(Value::as_str).unwrap_or_default();
            if !channel.starts_with("ticker.") {
                return Err(format!("a ticker from channel {channel:?}"));
            }
            let d = p
                .get("data")
                .and_then(Value::as_object)
                .ok_or("a ticker from non-object data")?;
            if d.get("instrument_name").and_then(Value::as_str) != Some(t.instrument_name.as_str())
            {
                return Err("instrument_name differs from the frame's".into());
            }
            if d.get("timestamp").and_then(Value::as_i64) != Some(t.timestamp) {
                return Err("timestamp differs from the frame's".into());
            }
            if d.get("mark_price").and_then(Value::as_f64) != Some(t.mark_price) {
                return Err("mark_price differs from the frame's".into());
            }
            let field = |k: &str| d.get(k).and_then(Value::as_f64);
            for (k, got) in [
                ("best_bid_price", t.best_bid_price),
                ("best_ask_price", t.best_ask_price),
                ("last_price", t.last_price),
                ("index_price", t.index_price),
            ] {
                if field(k) != got {
                    return Err(format!("{k} differs from the frame's"));
                }
            }
        }
        Incoming::Subscription { channel, data } => {
            if method.and_then(Value::as_str) != Some("subscription") {
                return Err("a subscription from another method".into());
            }
            let p = params
                .and_then(Value::as_object)
                .ok_or("a subscription from non-object params")?;
            if p.get("channel").and_then(Value::as_str) != Some(channel.as_str()) {
                return Err("channel differs from the frame's".into());
            }
            let inner: Value =
                serde_json::from_str(data.get()).map_err(|e| format!("data is not JSON: {e}"))?;
            if p.get("data") != Some(&inner) {
                return Err("data differs from the frame's".into());
            }
        }
        Incoming::TestRequest | Incoming::Heartbeat => {
            if method.and_then(Value::as_str) != Some("heartbeat") {
                return Err("a heartbeat from another method".into());
            }
            let p = params
                .and_then(Value::as_object)
                .ok_or("a heartbeat from non-object params")?;
            let test = p.get("type").and_then(Value::as_str) == Some("test_request");
            if test != matches!(ok, Incoming::TestRequest) {
                return Err("heartbeat type differs from the frame's".into());
            }
        }
        Incoming::Other { method: m } => {
            if method.and_then(Value::as_str) != Some(m.as_str()) {
                return Err("method differs from the frame's".into());
            }
        }
    }
    Ok(())
}

/// What a run found.
#[derive(Default)]
pub struct Tally {
    pub inputs: u64,
    pub valid: u64,
    pub non_utf8: u64,
    pub by_kind: BTreeMap<&'static str, u64>,
    pub panics: u64,
    /// Oracle violations (first few kept with their input).
    pub violations: u64,
    pub examples: Vec<String>,
}

impl Tally {
    pub fn ok(&self) -> u64 {
        self.by_kind
            .iter()
            .filter(|(k, _)| k.starts_with("ok:"))
            .map(|(_, n)| n)
            .sum()
    }

    pub fn errors(&self) -> u64 {
        self.by_kind
            .iter()
            .filter(|(k, _)| k.starts_with("err:"))
            .map(|(_, n)| n)
            .sum()
    }

    fn example(&mut self, what: String) {
        if self.examples.len() < 10 {
            self.examples.push(what);
        }
    }

    pub fn summary(&self) -> String {
        let kinds: Vec<String> = self
            .by_kind
            .iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        format!(
            "inputs={} (valid {}, non-UTF-8 {}) ok={} errors={} panics={} violations={}\n  {}",
            self.inputs,
            self.valid,
            self.non_utf8,
            self.ok(),
            self.errors(),
            self.panics,
            self.violations,
            kinds.join(" ")
        )
    }
}

/// Decodes one input (lossily converted when it is not UTF-8: a text frame always is), under
/// `catch_unwind`, and checks it.
pub fn run_one(tally: &mut Tally, input: &Input) {
    tally.inputs += 1;
    tally.valid += u64::from(input.valid);
    let text = match std::str::from_utf8(&input.bytes) {
        Ok(t) => std::borrow::Cow::Borrowed(t),
        Err(_) => {
            tally.non_utf8 += 1;
            String::from_utf8_lossy(&input.bytes)
        }
    };
    match catch_unwind(AssertUnwindSafe(|| decode(&text))) {
        Err(_) => {
            tally.panics += 1;
            tally.example(format!("PANIC on {text:?}"));
        }
        Ok(got) => {
            *tally.by_kind.entry(kind(&got)).or_default() += 1;
            if let Err(why) = check(&text, input.valid, &got) {
                tally.violations += 1;
                tally.example(format!("{why}: {text:?}"));
            }
        }
    }
}

/// `n` inputs from `seed`.
pub fn run(seed: u64, n: u64) -> Tally {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut tally = Tally::default();
    for _ in 0..n {
        let input = input(&mut rng);
        run_one(&mut tally, &input);
    }
    tally
}

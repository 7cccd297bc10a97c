//! Deribit JSON-RPC 2.0 framing: encoding requests and decoding what the exchange sends.
//!
//! Decoding is lenient: unknown fields are ignored, optional fields may be missing or `null`,
//! and anything that does not fit is a [`DecodeError`], never a panic. Pure functions only.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

pub use crate::model::{ErrorClass, RpcError, Ticker};

/// Encodes a request frame. `params` must be a JSON object (named params only).
pub fn encode_request(id: u64, method: &str, params: &Value) -> String {
    #[derive(Serialize)]
    struct Request<'a> {
        jsonrpc: &'static str,
        id: u64,
        method: &'a str,
        params: &'a Value,
    }
    let empty = Value::Object(serde_json::Map::new());
    let params = if params.is_null() { &empty } else { params };
    // Serializing a `Value` into a string cannot fail.
    serde_json::to_string(&Request {
        jsonrpc: "2.0",
        id,
        method,
        params,
    })
    .unwrap_or_default()
}

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("not JSON-RPC: {0}")]
    Json(String),
    #[error("neither a response nor a notification")]
    Shape,
    #[error("notification {method:?} without usable params: {reason}")]
    Params { method: String, reason: String },
    #[error("ticker on {channel:?} does not decode: {reason}")]
    Ticker { channel: String, reason: String },
}

/// A decoded frame.
#[derive(Debug, Clone)]
pub enum Incoming {
    /// The answer to request `id`.
    Response {
        id: u64,
        result: Result<Box<RawValue>, RpcError>,
    },
    /// A response whose id is not one of ours (a string, or absent).
    UnmatchedResponse,
    /// A ticker notification.
    Ticker(Ticker),
    /// Another subscription notification (order updates, books, …).
    Subscription {
        channel: String,
        data: Box<RawValue>,
    },
    /// The exchange asks us to prove we are alive (`public/test` must follow).
    TestRequest,
    /// A plain heartbeat.
    Heartbeat,
    /// A notification method we do not know; ignored.
    Other { method: String },
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(default, borrow)]
    id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    method: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    params: Option<&'a RawValue>,
    /// `Some` whenever the member is present, `null` included (a method may answer `null`).
    #[serde(default, borrow, deserialize_with = "present")]
    result: Option<&'a RawValue>,
    #[serde(default, borrow)]
    error: Option<&'a RawValue>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&'de RawValue>::deserialize(d).map(Some)
}

/// A JSON object (serde's derived structs also accept a JSON array of the field values in
/// order; no JSON-RPC frame, params or ticker is an array, so such a frame is malformed).
fn is_object(raw: &str) -> bool {
    raw.trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('{')
}

#[derive(Deserialize)]
struct SubscriptionParams<'a> {
    #[serde(borrow)]
    channel: Cow<'a, str>,
    #[serde(borrow)]
    data: &'a RawValue,
}

#[derive(Deserialize)]
struct HeartbeatParams<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
}

/// `T` read only from a JSON object: serde's derived structs also accept an array of the field
/// values, and a frame, its params or a ticker's data given as an array is malformed (the
/// general path checks this with [`is_object`]; the one-pass path with this).
struct Obj<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Only<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Only<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(Only(std::marker::PhantomData)).map(Obj)
    }
}

/// A ticker notification read in one pass: the frame the hot path sees most, by far.
#[derive(Deserialize)]
struct TickerNotification<'a> {
    #[serde(borrow)]
    method: Cow<'a, str>,
    #[serde(borrow)]
    params: Obj<TickerParams<'a>>,
}

#[derive(Deserialize)]
struct TickerParams<'a> {
    #[serde(borrow)]
    channel: Cow<'a, str>,
    data: Obj<Ticker>,
}

/// Decodes one text frame.
///
/// A ticker notification is decoded in one pass over the frame; anything else (or a ticker that
/// does not decode) goes the general way: the envelope, then the params, then the data, which
/// reads the frame up to three times but names exactly what is wrong.
pub fn decode(text: &str) -> Result<Incoming, DecodeError> {
    if let Ok(Obj(n)) = serde_json::from_str::<Obj<TickerNotification<'_>>>(text)
        && n.method == "subscription"
        && n.params.0.channel.starts_with("ticker.")
    {
        return Ok(Incoming::Ticker(n.params.0.data.0));
    }
    decode_general(text)
}

/// [`decode`] without the one-pass ticker path.
fn decode_general(text: &str) -> Result<Incoming, DecodeError> {
    let env: Envelope<'_> =
        serde_json::from_str(text).map_err(|e| DecodeError::Json(e.to_string()))?;
    if !is_object(text) {
        return Err(DecodeError::Json("a frame must be a JSON object".into()));
    }
    if let Some(method) = env.method {
        return decode_notification(&method, env.params);
    }
    let error = match env.error.map(RawValue::get) {
        None | Some("null") => None,
        Some(raw) if is_object(raw) => Some(
            serde_json::from_str::<RpcError>(raw)
                .map_err(|e| DecodeError::Json(format!("error member: {e}")))?,
        ),
        Some(_) => return Err(DecodeError::Json("error member is not an object".into())),
    };
    let id = match env.id {
        Some(raw) => raw.get().parse::<u64>().ok(),
        None => None,
    };
    let Some(id) = id else {
        return if env.result.is_some() || error.is_some() {
            Ok(Incoming::UnmatchedResponse)
        } else {
            Err(DecodeError::Shape)
        };
    };
    let result = match (error, env.result) {
        (Some(err), _) => Err(err),
        (None, Some(raw)) => Ok(raw.to_owned()),
        (None, None) => return Err(DecodeError::Shape),
    };
    Ok(Incoming::Response { id, result })
}

fn decode_notification(method: &str, params: Option<&RawValue>) -> Result<Incoming, DecodeError> {
    let params_err = |reason: String| DecodeError::Params {
        method: method.to_string(),
        reason,
    };
    match method {
        "subscription" => {
            let raw = params.ok_or_else(|| params_err("missing params".into()))?;
            if !is_object(raw.get()) {
                return Err(params_err("params is not an object".into()));
            }
            let p: SubscriptionParams<'_> =
                serde_json::from_str(raw.get()).map_err(|e| params_err(e.to_string()))?;
            if p.channel.starts_with("ticker.") {
                if !is_object(p.data.get()) {
                    return Err(DecodeError::Ticker {
                        channel: p.channel.to_string(),
                        reason: "data is not an object".into(),
                    });
                }
                let ticker: Ticker =
                    serde_json::from_str(p.data.get()).map_err(|e| DecodeError::Ticker {
                        channel: p.channel.to_string(),
                        reason: e.to_string(),
                    })?;
                Ok(Incoming::Ticker(ticker))
            } else {
                Ok(Incoming::Subscription {
                    channel: p.channel.into_owned(),
                    data: p.data.to_owned(),
                })
            }
        }
        "heartbeat" => {
            let raw = params.ok_or_else(|| params_err("missing params".into()))?;
            if !is_object(raw.get()) {
                return Err(params_err("params is not an object".into()));
            }
            let p: HeartbeatParams<'_> =
                serde_json::from_str(raw.get()).map_err(|e| params_err(e.to_string()))?;
            Ok(if p.kind == "test_request" {
                Incoming::TestRequest
            } else {
                Incoming::Heartbeat
            })
        }
        other => Ok(Incoming::Other {
            method: other.to_string(),
        }),
    }
}

/// A URL with credentials and query removed, safe to show in status and logs.
pub fn redact_url(url: &str) -> String {
    let without_query = url.split(['?', '#']).next().unwrap_or_default();
    match without_query.split_once("://") {
        Some((scheme, rest)) => {
            let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
            format!("{scheme}://{rest}")
        }
        None => without_query.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICKER: &str = r#"{"jsonrpc":"2.0","method":"subscription","params":{"channel":"ticker.BTC-PERPETUAL.raw","data":{"timestamp":1597244851057,"stats":{"volume_usd":404775400.0,"volume":35574.05167122,"price_change":0.493,"low":11131.5,"high":11632.5},"state":"open","settlement_price":11452.62,"open_interest":117979530,"min_price":11443.06,"max_price":11791.58,"mark_price":11617.8,"last_price":11618.0,"instrument_name":"BTC-PERPETUAL","index_price":11609.61,"funding_8h":0.00001212,"estimated_delivery_price":11609.61,"current_funding":0.00020545,"best_bid_price":11618.0,"best_bid_amount":7460.0,"best_ask_price":11618.5,"best_ask_amount":497870.0}}}"#;

    #[test]
    fn decodes_the_real_ticker_capture() {
        let Incoming::Ticker(t) = decode(TICKER).unwrap() else {
            panic!("not a ticker")
        };
        assert_eq!(t.instrument_name, "BTC-PERPETUAL");
        assert_eq!(t.timestamp, 1597244851057);
        assert_eq!(t.mark_price, 11617.8);
        assert_eq!(t.best_ask_price, Some(11618.5));
        assert_eq!(t.state.as_deref(), Some("open"));
    }

    /// The one-pass ticker path decodes exactly what the general path does, and leaves every
    /// other frame (and every broken ticker, with its precise error) to the general path.
    #[test]
    fn one_pass_ticker_path_agrees_with_the_general_path() {
        // A ticker frame as the paper exchange writes it (also the throughput bench's).
        let paper = include_str!("../../testdata/paper_ticker.json");
        let frames = [
            TICKER,
            paper,
            r#"{"jsonrpc":"2.0","method":"subscription","params":{"channel":"ticker.X.100ms","data":{"instrument_name":"X","timestamp":1,"mark_price":1.5,"best_bid_price":null}}}"#,
            // Not tickers, or not decodable as one: the general path answers.
            r#"{"jsonrpc":"2.0","method":"subscription","params":{"channel":"user.orders.X.raw","data":{"instrument_name":"X","timestamp":1,"mark_price":1.5}}}"#,
            r#"{"jsonrpc":"2.0","method":"other","params":{"channel":"ticker.X.raw","data":{"instrument_name":"X","timestamp":1,"mark_price":1.5}}}"#,
            r#"{"jsonrpc":"2.0","method":"subscription","params":{"channel":"ticker.X.raw","data":{"instrument_name":42}}}"#,
            r#"{"jsonrpc":"2.0","method":"subscription","params":{"channel":"ticker.X.raw"}}"#,
            r#"{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"test_request"}}"#,
            r#"{"jsonrpc":"2.0","id":42,"result":1550147385946}"#,
            r#"{"jsonrpc":"2.0","method":"subscription","params":{"channel":"#,
            "[1,2]",
        ];
        for frame in frames {
            let fast = format!("{:?}", decode(frame));
            let general = format!("{:?}", decode_general(frame));
            assert_eq!(fast, general, "{frame}");
        }
        let Incoming::Ticker(t) = decode(paper).unwrap() else {
            panic!("not a ticker")
        };
        assert_eq!(t.mark_price, 60007.5);
        assert_eq!(t.best_ask_amount, Some(9870.0));
        assert!(matches!(decode(frames[5]), Err(DecodeError::Ticker { .. })));
    }

    #[test]
    fn empty_book_side_is_null() {
        let frame = r#"{"jsonrpc":"2.0","method":"subscription","params":{"channel":"ticker.X.100ms","data":{"instrument_name":"X","timestamp":1,"mark_price":1.5,"best_bid_price":null,"new_field":{"a":[1]}}}}"#;
        let Incoming::Ticker(t) = decode(frame).unwrap() else {
            panic!()
        };
        assert_eq!(t.best_bid_price, None);
    }

    #[test]
    fn decodes_responses_and_errors() {
        let ok = decode(r#"{"jsonrpc":"2.0","id":42,"result":1550147385946,"testnet":false,"usIn":1,"usOut":2,"usDiff":1}"#).unwrap();
        let Incoming::Response { id, result } = ok else {
            panic!()
        };
        assert_eq!(id, 42);
        assert_eq!(result.unwrap().get(), "1550147385946");

        let err = decode(r#"{"jsonrpc":"2.0","id":17,"error":{"message":"unauthorized","code":13009},"testnet":true}"#).unwrap();
        let Incoming::Response { id: 17, result } = err else {
            panic!()
        };
        let e = result.unwrap_err();
        assert_eq!(e.code, 13009);
        assert_eq!(e.class(), ErrorClass::Auth);
    }

    #[test]
    fn string_ids_are_not_ours() {
        assert!(matches!(
            decode(r#"{"jsonrpc":"2.0","id":"abc","result":"ok"}"#).unwrap(),
            Incoming::UnmatchedResponse
        ));
    }

    #[test]
    fn heartbeats() {
        assert!(matches!(
            decode(r#"{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"test_request"}}"#)
                .unwrap(),
            Incoming::TestRequest
        ));
        assert!(matches!(
            decode(r#"{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"heartbeat"}}"#)
                .unwrap(),
            Incoming::Heartbeat
        ));
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        for frame in [
            "",
            "not json",
            "[1,2,3]",
            "{}",
            r#"{"method":"subscription"}"#,
            r#"{"method":"subscription","params":{"channel":"ticker.X.raw","data":{"mark_price":"high"}}}"#,
            r#"{"method":"heartbeat","params":7}"#,
            r#"{"id":1}"#,
            "\u{0}\u{1}\u{2}",
        ] {
            assert!(decode(frame).is_err(), "{frame:?} decoded");
        }
    }

    /// Found by the frame fuzz (tests/fuzz.rs): serde's derived structs also read a JSON array
    /// of the field values, so arrays decoded as responses, tickers and heartbeats instead of
    /// being counted as malformed.
    #[test]
    fn arrays_in_place_of_objects_are_malformed() {
        for frame in [
            r#"[1,null,null,5]"#,
            r#"["2.0","subscription",{"channel":"ticker.X.raw","data":{"instrument_name":"X","timestamp":1,"mark_price":1.5}}]"#,
            r#"{"method":"subscription","params":["ticker.X.raw",{"instrument_name":"X","timestamp":1,"mark_price":1.5}]}"#,
            r#"{"method":"subscription","params":{"channel":"ticker.X.raw","data":["X",1,1.5]}}"#,
            r#"{"method":"heartbeat","params":["test_request"]}"#,
            r#"{"id":3,"error":[13009,"unauthorized"]}"#,
        ] {
            assert!(decode(frame).is_err(), "{frame} decoded");
        }
        // Whitespace before the object is fine, and other notifications' data may be an array.
        assert!(decode(" \n{\"id\":1,\"result\":2}").is_ok());
        assert!(matches!(
            decode(r#"{"method":"subscription","params":{"channel":"user.trades.x","data":[1]}}"#),
            Ok(Incoming::Subscription { .. })
        ));
    }

    /// Found by the frame fuzz: `"result": null` is a valid JSON-RPC answer, not a malformed
    /// frame (the request would otherwise wait for its timeout).
    #[test]
    fn a_null_result_is_an_answer() {
        let Incoming::Response { id: 4, result } =
            decode(r#"{"jsonrpc":"2.0","id":4,"result":null}"#).unwrap()
        else {
            panic!("not a response")
        };
        assert_eq!(result.unwrap().get(), "null");
        let Incoming::Response { id: 5, result } =
            decode(r#"{"id":5,"result":null,"error":{"code":10028,"message":"too many"}}"#)
                .unwrap()
        else {
            panic!("not a response")
        };
        assert_eq!(result.unwrap_err().code, 10028);
        assert!(matches!(
            decode(r#"{"id":6,"error":null,"result":1}"#),
            Ok(Incoming::Response {
                id: 6,
                result: Ok(_)
            })
        ));
        assert_eq!(decode(r#"{"id":6}"#).unwrap_err(), DecodeError::Shape);
    }

    #[test]
    fn encodes_named_params() {
        let frame = encode_request(7, "public/get_time", &Value::Null);
        assert_eq!(
            frame,
            r#"{"jsonrpc":"2.0","id":7,"method":"public/get_time","params":{}}"#
        );
    }

    #[test]
    fn classifies_errors() {
        let e = |code| RpcError {
            code,
            message: String::new(),
            data: None,
        };
        for code in [10028, 10040, 10047, 10066, 11051, 13028] {
            assert_eq!(e(code).class(), ErrorClass::Retryable, "{code}");
        }
        for code in [10002, 10009, 10043, -32602, 11029] {
            assert_eq!(e(code).class(), ErrorClass::Fatal, "{code}");
        }
        assert_eq!(e(13009).class(), ErrorClass::Auth);
    }

    #[test]
    fn redacts_credentials_and_query() {
        assert_eq!(
            redact_url("wss://user:pw@test.deribit.com/ws/api/v2?token=abc"),
            "wss://test.deribit.com/ws/api/v2"
        );
        assert_eq!(redact_url("ws://127.0.0.1:9/ws"), "ws://127.0.0.1:9/ws");
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(s in "\\PC*") {
            let _ = decode(&s);
        }

        #[test]
        fn decode_never_panics_on_near_json(
            id in proptest::option::of(proptest::num::i64::ANY),
            method in proptest::option::of("(subscription|heartbeat|[a-z/]{0,12})"),
            channel in "(ticker\\.[A-Z-]{0,8}\\.raw|user\\.orders\\..{0,5}|.{0,6})",
            price in proptest::num::f64::ANY,
        ) {
            let frame = serde_json::json!({
                "jsonrpc": "2.0", "id": id, "method": method,
                "params": {"channel": channel, "data": {"instrument_name": "X", "timestamp": 1, "mark_price": price}},
            });
            let _ = decode(&frame.to_string());
        }
    }
}

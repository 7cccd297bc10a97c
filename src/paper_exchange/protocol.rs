//! Deribit's JSON-RPC 2.0 framing as the server sees it: parsing a request frame, typed access to
//! its params, the error codes, and building response and notification frames. Pure functions;
//! no sockets, no state.

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::engine::EngineError;

/// Deribit / JSON-RPC error codes the paper exchange answers with.
pub(crate) mod code {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const ERROR: i64 = 10001;
    pub const QTY_TOO_LOW: i64 = 10002;
    pub const ORDER_NOT_FOUND: i64 = 10004;
    pub const NOT_ENOUGH_FUNDS: i64 = 10009;
    pub const ALREADY_CLOSED: i64 = 10010;
    pub const INVALID_INSTRUMENT: i64 = 10020;
    pub const PRICE_WRONG_TICK: i64 = 10043;
    pub const POST_ONLY_REJECT: i64 = 11054;
    pub const INVALID_CREDENTIALS: i64 = 13004;
    pub const UNAUTHORIZED: i64 = 13009;
    pub const RAW_NEEDS_AUTH: i64 = 13778;
    pub const TIMED_OUT: i64 = 13888;
}

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct RpcError {
    pub code: i64,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl RpcError {
    /// An error without data.
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
        }
    }

    /// `-32700 Parse error`.
    pub fn parse_error() -> Self {
        Self::new(code::PARSE_ERROR, "Parse error")
    }

    /// `-32600 request entity too large`.
    pub fn too_large() -> Self {
        Self::new(code::INVALID_REQUEST, "request entity too large")
    }

    /// `-32600 Invalid Request` (not a JSON-RPC request object).
    pub fn invalid_request(reason: &str) -> Self {
        Self {
            data: Some(json!({ "reason": reason })),
            ..Self::new(code::INVALID_REQUEST, "Invalid Request")
        }
    }

    /// `-32601 Method not found`.
    pub fn method_not_found() -> Self {
        Self::new(code::METHOD_NOT_FOUND, "Method not found")
    }

    /// `-32602 Invalid params` naming the param and the reason.
    pub fn invalid_params(param: &str, reason: &str) -> Self {
        Self {
            data: Some(json!({ "reason": reason, "param": param })),
            ..Self::new(code::INVALID_PARAMS, "Invalid params")
        }
    }

    /// `13009 unauthorized`.
    pub fn unauthorized() -> Self {
        Self::new(code::UNAUTHORIZED, "unauthorized")
    }

    /// Whether this error means the request itself was malformed (counted in the stats).
    pub fn is_malformed(&self) -> bool {
        matches!(
            self.code,
            code::PARSE_ERROR
                | code::INVALID_REQUEST
                | code::METHOD_NOT_FOUND
                | code::INVALID_PARAMS
        )
    }
}

impl From<EngineError> for RpcError {
    fn from(err: EngineError) -> Self {
        match err {
            EngineError::InvalidParams { param, reason } => Self::invalid_params(param, &reason),
            EngineError::UnknownInstrument => Self::new(
                code::INVALID_INSTRUMENT,
                "invalid_or_unsupported_instrument",
            ),
            EngineError::QtyTooLow => Self::new(code::QTY_TOO_LOW, "qty_too_low"),
            EngineError::PriceWrongTick => Self::new(code::PRICE_WRONG_TICK, "price_wrong_tick"),
            EngineError::NotEnoughFunds => Self::new(code::NOT_ENOUGH_FUNDS, "not_enough_funds"),
            EngineError::OrderNotFound => Self::new(code::ORDER_NOT_FOUND, "order_not_found"),
            EngineError::AlreadyClosed => Self::new(code::ALREADY_CLOSED, "already_closed"),
            EngineError::PostOnlyReject => Self::new(code::POST_ONLY_REJECT, "post_only_reject"),
            EngineError::TimedOut => Self::new(code::TIMED_OUT, "timed_out"),
        }
    }
}

/// A parsed request: its id (echoed verbatim), method and named params.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Request {
    pub id: Value,
    pub method: String,
    pub params: Map<String, Value>,
}

/// A request that could not be parsed: the id to answer with (null if unknown) and the error.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BadRequest {
    pub id: Value,
    pub error: RpcError,
}

/// Parses one text frame into a request.
pub(crate) fn parse_request(text: &str) -> Result<Request, BadRequest> {
    let value: Value = serde_json::from_str(text).map_err(|_| BadRequest {
        id: Value::Null,
        error: RpcError::parse_error(),
    })?;
    let Value::Object(mut object) = value else {
        return Err(BadRequest {
            id: Value::Null,
            error: RpcError::invalid_request("a request must be a JSON object (no batches)"),
        });
    };
    let id = match object.remove("id") {
        Some(id @ (Value::Number(_) | Value::String(_))) => id,
        Some(_) => {
            return Err(BadRequest {
                id: Value::Null,
                error: RpcError::invalid_request("id must be an integer or a string"),
            });
        }
        None => {
            return Err(BadRequest {
                id: Value::Null,
                error: RpcError::invalid_request("id is required"),
            });
        }
    };
    let method = match object.remove("method") {
        Some(Value::String(method)) => method,
        _ => {
            return Err(BadRequest {
                id,
                error: RpcError::invalid_request("method must be a string"),
            });
        }
    };
    let params = match object.remove("params") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(params)) => params,
        Some(_) => {
            return Err(BadRequest {
                id,
                error: RpcError::invalid_params("params", "must be an object of named params"),
            });
        }
    };
    Ok(Request { id, method, params })
}

/// Microsecond timestamps Deribit adds to every response.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub us_in: i64,
    pub us_out: i64,
}

#[derive(Serialize)]
struct Response<'a> {
    jsonrpc: &'static str,
    id: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a RpcError>,
    #[serde(rename = "usIn")]
    us_in: i64,
    #[serde(rename = "usOut")]
    us_out: i64,
    #[serde(rename = "usDiff")]
    us_diff: i64,
    testnet: bool,
}

/// The response frame for `id`: `result` on success, `error` otherwise.
pub(crate) fn response_frame(
    id: &Value,
    outcome: &Result<Value, RpcError>,
    timing: Timing,
) -> String {
    let (result, error) = match outcome {
        Ok(result) => (Some(result), None),
        Err(error) => (None, Some(error)),
    };
    let response = Response {
        jsonrpc: "2.0",
        id,
        result,
        error,
        us_in: timing.us_in,
        us_out: timing.us_out,
        us_diff: timing.us_out - timing.us_in,
        testnet: false,
    };
    // Serializing a Value-based struct cannot fail; fall back to a fixed error frame anyway.
    serde_json::to_string(&response).unwrap_or_else(|_| {
        r#"{"jsonrpc":"2.0","id":null,"error":{"code":10001,"message":"error"}}"#.to_owned()
    })
}

/// A `subscription` notification frame for `channel` whose data is the already-serialized
/// JSON `data`. Building it by concatenation lets a tick be serialized once.
pub(crate) fn notification_frame(channel: &str, data: &str) -> String {
    let mut frame = String::with_capacity(data.len() + channel.len() + 80);
    frame.push_str(r#"{"jsonrpc":"2.0","method":"subscription","params":{"channel":"#);
    // Channel names are ASCII identifiers we built; serializing keeps them valid JSON regardless.
    frame.push_str(&Value::String(channel.to_owned()).to_string());
    frame.push_str(r#","data":"#);
    frame.push_str(data);
    frame.push_str("}}");
    frame
}

/// `{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"test_request"}}`.
pub(crate) const TEST_REQUEST_FRAME: &str =
    r#"{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"test_request"}}"#;

/// Typed access to named params; every failure is a `-32602` naming the param.
pub(crate) struct Params<'a>(pub &'a Map<String, Value>);

impl<'a> Params<'a> {
    /// A required string.
    pub fn str(&self, name: &str) -> Result<&'a str, RpcError> {
        self.opt_str(name)?
            .ok_or_else(|| RpcError::invalid_params(name, "required"))
    }

    /// An optional string.
    pub fn opt_str(&self, name: &str) -> Result<Option<&'a str>, RpcError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(RpcError::invalid_params(name, "must be a string")),
        }
    }

    /// A required number.
    pub fn f64(&self, name: &str) -> Result<f64, RpcError> {
        self.opt_f64(name)?
            .ok_or_else(|| RpcError::invalid_params(name, "required"))
    }

    /// An optional finite number.
    pub fn opt_f64(&self, name: &str) -> Result<Option<f64>, RpcError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => match n.as_f64() {
                Some(f) if f.is_finite() => Ok(Some(f)),
                _ => Err(RpcError::invalid_params(name, "must be a finite number")),
            },
            Some(_) => Err(RpcError::invalid_params(name, "must be a number")),
        }
    }

    /// An optional integer.
    pub fn opt_i64(&self, name: &str) -> Result<Option<i64>, RpcError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| RpcError::invalid_params(name, "must be an integer")),
            Some(_) => Err(RpcError::invalid_params(name, "must be an integer")),
        }
    }

    /// An optional non-negative integer.
    pub fn opt_u64(&self, name: &str) -> Result<Option<u64>, RpcError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .map(Some)
                .ok_or_else(|| RpcError::invalid_params(name, "must be a non-negative integer")),
            Some(_) => Err(RpcError::invalid_params(
                name,
                "must be a non-negative integer",
            )),
        }
    }

    /// An optional boolean, `default` when absent.
    pub fn bool_or(&self, name: &str, default: bool) -> Result<bool, RpcError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(RpcError::invalid_params(name, "must be a boolean")),
        }
    }

    /// A required array of strings.
    pub fn str_array(&self, name: &str) -> Result<Vec<&'a str>, RpcError> {
        match self.0.get(name) {
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| {
                    item.as_str().ok_or_else(|| {
                        RpcError::invalid_params(name, "must be an array of strings")
                    })
                })
                .collect(),
            None | Some(Value::Null) => Err(RpcError::invalid_params(name, "required")),
            Some(_) => Err(RpcError::invalid_params(
                name,
                "must be an array of strings",
            )),
        }
    }

    /// A required array of objects.
    pub fn object_array(&self, name: &str) -> Result<Vec<&'a Map<String, Value>>, RpcError> {
        match self.0.get(name) {
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| {
                    item.as_object().ok_or_else(|| {
                        RpcError::invalid_params(name, "must be an array of objects")
                    })
                })
                .collect(),
            None | Some(Value::Null) => Err(RpcError::invalid_params(name, "required")),
            Some(_) => Err(RpcError::invalid_params(
                name,
                "must be an array of objects",
            )),
        }
    }

    /// A required string parsed by `parse`; `expected` describes the accepted values.
    pub fn parsed<T>(
        &self,
        name: &str,
        parse: impl Fn(&str) -> Option<T>,
        expected: &str,
    ) -> Result<T, RpcError> {
        self.opt_parsed(name, parse, expected)?
            .ok_or_else(|| RpcError::invalid_params(name, "required"))
    }

    /// An optional string parsed by `parse`.
    pub fn opt_parsed<T>(
        &self,
        name: &str,
        parse: impl Fn(&str) -> Option<T>,
        expected: &str,
    ) -> Result<Option<T>, RpcError> {
        match self.opt_str(name)? {
            None => Ok(None),
            Some(s) => parse(s).map(Some).ok_or_else(|| {
                RpcError::invalid_params(name, &format!("must be one of {expected}"))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_and_string_ids_are_kept_verbatim() {
        let req = parse_request(r#"{"jsonrpc":"2.0","id":42,"method":"public/test"}"#).unwrap();
        assert_eq!(req.id, json!(42));
        let req =
            parse_request(r#"{"jsonrpc":"2.0","id":"abc","method":"m","params":{}}"#).unwrap();
        assert_eq!(req.id, json!("abc"));
    }

    #[test]
    fn invalid_json_is_parse_error_with_null_id() {
        let bad = parse_request("{not json").unwrap_err();
        assert_eq!(bad.id, Value::Null);
        assert_eq!(bad.error.code, code::PARSE_ERROR);
    }

    #[test]
    fn arrays_and_missing_ids_are_invalid_requests() {
        assert_eq!(
            parse_request("[1,2]").unwrap_err().error.code,
            code::INVALID_REQUEST
        );
        assert_eq!(
            parse_request(r#"{"method":"x"}"#).unwrap_err().error.code,
            code::INVALID_REQUEST
        );
    }

    #[test]
    fn params_that_are_not_an_object_are_invalid_params() {
        let bad = parse_request(r#"{"id":1,"method":"x","params":[1]}"#).unwrap_err();
        assert_eq!(bad.id, json!(1));
        assert_eq!(bad.error.code, code::INVALID_PARAMS);
    }

    #[test]
    fn response_carries_timing_and_testnet() {
        let frame = response_frame(
            &json!(7),
            &Ok(json!("ok")),
            Timing {
                us_in: 10,
                us_out: 15,
            },
        );
        let v: Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(v["id"], 7);
        assert_eq!(v["result"], "ok");
        assert_eq!(v["usDiff"], 5);
        assert_eq!(v["testnet"], false);
        assert!(v.get("error").is_none());
    }

    #[test]
    fn error_response_has_code_message_and_data() {
        let frame = response_frame(
            &json!("x"),
            &Err(RpcError::invalid_params(
                "amount",
                "must be a multiple of contract size",
            )),
            Timing {
                us_in: 1,
                us_out: 1,
            },
        );
        let v: Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(v["error"]["code"], -32602);
        assert_eq!(v["error"]["data"]["param"], "amount");
        assert!(v.get("result").is_none());
    }

    #[test]
    fn notification_frame_is_valid_json() {
        let frame = notification_frame("ticker.BTC-PERPETUAL.raw", r#"{"a":1}"#);
        let v: Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(v["method"], "subscription");
        assert_eq!(v["params"]["channel"], "ticker.BTC-PERPETUAL.raw");
        assert_eq!(v["params"]["data"]["a"], 1);
    }

    #[test]
    fn params_report_wrong_types() {
        let map = json!({"amount": "ten", "flag": 1})
            .as_object()
            .unwrap()
            .clone();
        let params = Params(&map);
        let err = params.f64("amount").unwrap_err();
        assert_eq!(err.data.unwrap()["param"], "amount");
        assert!(params.bool_or("flag", false).is_err());
        assert!(params.str("missing").is_err());
    }
}

//! The local admin channel: operator actions (`tradebaas mode …`, `tradebaas alerts ack …`) over a
//! Unix stream socket `<data_dir>/admin.sock`, never over the public HTTP API.
//!
//! - The socket is created inside a fresh 0700 directory, set to 0600 and only then renamed into
//!   place, so there is no moment at which another user could connect; a stale socket from an
//!   earlier run is replaced (safe: the daemon holds the data-directory lock).
//! - Every connection's peer is checked with `SO_PEERCRED`: the daemon's own uid and the uids in
//!   `[admin] allowed_uids` are allowed, anyone else gets a refusal (and a `warn` log).
//! - Protocol: one JSON request line, one JSON response line (see [`Request`], [`Response`]); a
//!   line longer than [`MAX_REQUEST_BYTES`] or malformed JSON gets an error response.
//! - Every operator action, accepted or refused, is committed as an `operator_action` event with
//!   its reason, the peer's uid and the outcome. `status` is a question, not an action: not recorded.
//!
//! This module changes nothing itself: mode changes go to the fail-safe (`SetMode`), acknowledgements
//! to the alert actor (`Acknowledge`).
//!
//! This file holds the wire protocol (`Request`, `Response`, `Refusal`), `[admin]` and the peer
//! check; `admin/server.rs` the socket (bind, serve, one connection, the `operator_action`
//! record); `admin/actions.rs` what each request does (status, mode, acknowledgement, the
//! AGGRESSIVE pre-flight); `admin/client.rs` the blocking client the CLI uses.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tradebaas_actors::mode::TradingMode;

mod actions;
mod client;
mod server;
#[cfg(test)]
mod tests;

pub use actions::{aggressive_preflight, preflight_problems};
pub use client::{ClientError, request};
pub use server::{AdminContext, AdminServer, BoundAdmin, bind};

/// The socket's file name inside the data directory.
pub const SOCKET_NAME: &str = "admin.sock";
/// The longest request line accepted (newline excluded).
pub const MAX_REQUEST_BYTES: usize = 16 * 1024;
/// How long a client has to send its request line.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an actor has to answer a status question.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an action (a commit through the persister included) may take.
const ACTION_TIMEOUT: Duration = Duration::from_secs(10);

/// `[admin]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Uids allowed on the admin socket besides the daemon's own (which is always allowed).
    /// The socket file is 0600, so another uid also needs the file mode opened up to connect.
    pub allowed_uids: Vec<u32>,
}

impl AdminConfig {
    /// Checks the values; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        for (i, uid) in self.allowed_uids.iter().enumerate() {
            if *uid == u32::MAX {
                return Err(format!(
                    "allowed_uids[{i}] is 4294967295, which is no user ((uid_t)-1)"
                ));
            }
            if self.allowed_uids[..i].contains(uid) {
                return Err(format!("allowed_uids[{i}]: uid {uid} is listed twice"));
            }
        }
        Ok(())
    }
}

/// The socket path for a data directory.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_NAME)
}

/// A mode an operator may ask for (SHUTDOWN is only entered by a trigger).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum OperatorMode {
    /// OBSERVE_ONLY: no new entries (clears SHUTDOWN).
    Observe,
    /// AGGRESSIVE: entries allowed; needs the pre-flight checks to pass.
    Aggressive,
}

impl OperatorMode {
    fn trading_mode(self) -> TradingMode {
        match self {
            OperatorMode::Observe => TradingMode::ObserveOnly,
            OperatorMode::Aggressive => TradingMode::Aggressive,
        }
    }
}

/// One request line, e.g. `{"command":"mode","mode":"observe","reason":"maintenance done"}`,
/// `{"command":"alerts_ack","alert_id":"0192…","reason":"seen"}` or `{"command":"status"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Change the trading mode; `reason` must not be empty.
    Mode { mode: OperatorMode, reason: String },
    /// Acknowledge an open or recent alert.
    AlertsAck {
        alert_id: String,
        #[serde(default)]
        reason: Option<String>,
    },
    /// The mode, why, and the open alerts.
    Status {},
}

impl Request {
    /// The action name in the `operator_action` event.
    fn action(&self) -> &'static str {
        match self {
            Request::Mode { .. } => "mode",
            Request::AlertsAck { .. } => "alerts_ack",
            Request::Status {} => "status",
        }
    }

    fn args(&self) -> Value {
        match self {
            Request::Mode { mode, .. } => json!({ "mode": mode }),
            Request::AlertsAck { alert_id, .. } => json!({ "alert_id": alert_id }),
            Request::Status {} => json!({}),
        }
    }

    fn reason(&self) -> Option<&str> {
        match self {
            Request::Mode { reason, .. } => Some(reason),
            Request::AlertsAck { reason, .. } => reason.as_deref(),
            Request::Status {} => None,
        }
    }
}

/// Why a request was not carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// The peer's uid is not allowed.
    Forbidden,
    /// Not a valid request line.
    BadRequest,
    /// Understood and refused (a failed pre-flight check, SHUTDOWN → AGGRESSIVE, unknown alert).
    Refused,
    /// An actor needed for it did not answer.
    Unavailable,
}

/// One response line: `{"ok":true,"message":"…","data":{…}}` or
/// `{"ok":false,"error":"refused","message":"…","problems":[…]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    /// Set when `ok` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Refusal>,
    /// For the operator, one line.
    pub message: String,
    /// Each failed pre-flight check, when that is why AGGRESSIVE was refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// Details (the acknowledged alert, the status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl Response {
    fn ok(message: impl Into<String>, data: Option<Value>) -> Response {
        Response {
            ok: true,
            error: None,
            message: message.into(),
            problems: Vec::new(),
            data,
        }
    }

    fn refused(error: Refusal, message: impl Into<String>) -> Response {
        Response {
            ok: false,
            error: Some(error),
            message: message.into(),
            problems: Vec::new(),
            data: None,
        }
    }
}

/// Whether `peer_uid` may use the admin socket of a daemon running as `own_uid`.
pub fn authorize(peer_uid: u32, own_uid: u32, config: &AdminConfig) -> Result<(), String> {
    if peer_uid == own_uid || config.allowed_uids.contains(&peer_uid) {
        Ok(())
    } else {
        Err(format!(
            "uid {peer_uid} may not use the admin socket: only the daemon's user (uid {own_uid}) \
             and the uids in `admin.allowed_uids` may"
        ))
    }
}

/// Parses one request line (without its newline).
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    let text = std::str::from_utf8(line).map_err(|_| "the request is not UTF-8".to_string())?;
    serde_json::from_str(text.trim()).map_err(|e| format!("not a valid request: {e}"))
}

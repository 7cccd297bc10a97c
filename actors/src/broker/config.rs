//! `[broker]`: where to connect, how, and what may be sent there; the API credentials.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::protocol::redact_url;
use super::reconnect::ReconnectPolicy;
use super::session::RequestError;
use crate::secret::Secret;

/// The `broker.url` that makes the daemon start its embedded paper exchange and trade on it.
pub const PAPER_URL: &str = "paper";

/// The namespace of the paper exchange's control methods (fault injection, price and account
/// seeding). They exist only on a paper exchange.
pub const PAPER_CONTROL_PREFIX: &str = "paper/";

/// `[broker]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// `paper` (start the embedded paper exchange and connect to it) or a `ws://`/`wss://` URL.
    pub url: String,
    /// Channels to subscribe to after every (re)connect.
    pub channels: Vec<String>,
    /// `public/set_heartbeat` interval; silence for twice this long is a dead connection.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// TCP + TLS + WebSocket handshake limit.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Per-request answer limit.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Larger incoming messages close the session.
    pub max_message_bytes: usize,
    /// Refuse to start without credentials in the environment (testnet, production).
    pub require_credentials: bool,
    /// Environment variable holding the client id.
    pub client_id_env: String,
    /// Environment variable holding the client secret.
    pub client_secret_env: String,
    /// Backoff and circuit breaker.
    pub reconnect: ReconnectPolicy,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            url: PAPER_URL.into(),
            channels: vec!["ticker.BTC-PERPETUAL.100ms".into()],
            heartbeat_interval: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            max_message_bytes: 16 << 20,
            require_credentials: false,
            client_id_env: "DERIBIT_CLIENT_ID".into(),
            client_secret_env: "DERIBIT_CLIENT_SECRET".into(),
            reconnect: ReconnectPolicy::default(),
        }
    }
}

impl BrokerConfig {
    /// Checks the values; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.url != PAPER_URL
            && !(self.url.starts_with("ws://") || self.url.starts_with("wss://"))
        {
            return Err(format!(
                "url must be \"paper\" or a ws:// or wss:// URL, not {:?}",
                redact_url(&self.url)
            ));
        }
        if self.channels.is_empty() {
            return Err("channels must name at least one channel".into());
        }
        if self.heartbeat_interval < Duration::from_millis(100) {
            return Err("heartbeat_interval must be at least 100ms (Deribit accepts ≥ 10s)".into());
        }
        for (name, d) in [
            ("connect_timeout", self.connect_timeout),
            ("request_timeout", self.request_timeout),
        ] {
            if d.is_zero() {
                return Err(format!("{name} must be greater than 0"));
            }
        }
        if self.max_message_bytes < 1024 {
            return Err("max_message_bytes must be at least 1024".into());
        }
        self.reconnect
            .validate()
            .map_err(|e| format!("reconnect.{e}"))
    }
}

impl BrokerConfig {
    /// Whether the exchange is the embedded paper exchange (`url = "paper"`); any other URL is
    /// treated as a real exchange, whatever answers there.
    pub fn is_embedded_paper(&self) -> bool {
        self.url == PAPER_URL
    }

    /// Whether `method` may be sent on this exchange: a `paper/*` control method only to the
    /// embedded paper exchange, so that nothing in the daemon sends fault injection or seeding
    /// to a real exchange. Everything else is the exchange's business.
    pub fn may_send(&self, method: &str) -> Result<(), RequestError> {
        if method.starts_with(PAPER_CONTROL_PREFIX) && !self.is_embedded_paper() {
            return Err(RequestError::Refused {
                method: method.to_owned(),
                reason: "paper/* control methods are sent only to the embedded paper exchange \
                         (broker.url = \"paper\")"
                    .into(),
            });
        }
        Ok(())
    }
}

/// API credentials (`client_credentials` grant).
#[derive(Debug, Clone)]
pub struct Credentials {
    pub client_id: String,
    pub client_secret: Secret,
}

//! One session's handshake: connect, `public/set_heartbeat`, `public/auth`
//! (`client_credentials`), subscribe; the result is an [`Established`] session or why not.

use super::*;

/// A session that finished its handshake.
pub struct Established {
    pub(super) session: Session,
    pub(super) auth: Option<AuthTokens>,
    pub(super) subscribed: Vec<String>,
    pub(super) missing: Vec<String>,
    pub(super) took: Duration,
}

impl std::fmt::Debug for Established {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Established")
            .field("session", &self.session.id())
            .field("subscribed", &self.subscribed)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub(super) struct AuthTokens {
    pub(super) refresh_token: Secret,
    pub(super) expires_in: Duration,
}

#[derive(Deserialize)]
pub(super) struct AuthResult {
    pub(super) access_token: String,
    #[serde(default)]
    pub(super) refresh_token: Option<String>,
    #[serde(default)]
    pub(super) expires_in: Option<u64>,
}

/// The `interval` param of `public/set_heartbeat`: whole seconds when possible.
pub(super) fn heartbeat_param(d: Duration) -> Value {
    if d.subsec_nanos() == 0 {
        json!(d.as_secs())
    } else {
        json!(d.as_secs_f64())
    }
}

/// `public/auth` with the `client_credentials` grant on session `h`.
pub(super) async fn authenticate(
    h: &session::SessionHandle,
    c: &Credentials,
) -> Result<AuthTokens, RequestError> {
    let result: AuthResult = h
        .call(
            "public/auth",
            json!({
                "grant_type": "client_credentials",
                "client_id": c.client_id,
                "client_secret": c.client_secret.expose(),
            }),
        )
        .await?;
    if result.access_token.is_empty() {
        return Err(RequestError::Unexpected {
            method: "public/auth".into(),
            reason: "empty access token".into(),
        });
    }
    Ok(AuthTokens {
        refresh_token: Secret::new(result.refresh_token.unwrap_or_default()),
        expires_in: Duration::from_secs(result.expires_in.unwrap_or(0)),
    })
}

pub(super) async fn establish(
    conn: u64,
    url: String,
    config: BrokerConfig,
    credentials: Option<Credentials>,
    sink: EventSink,
) -> Result<Established, ConnectError> {
    let started = Instant::now();
    let session_config = SessionConfig {
        connect_timeout: config.connect_timeout,
        request_timeout: config.request_timeout,
        max_message_bytes: config.max_message_bytes,
    };
    let session = Session::connect(conn, &url, session_config, sink).await?;
    let h = session.handle();
    let auth = match &credentials {
        Some(c) => Some(
            authenticate(&h, c)
                .await
                .map_err(|source| ConnectError::Handshake {
                    step: "public/auth",
                    source,
                })?,
        ),
        None => None,
    };
    h.call::<Value>(
        "public/set_heartbeat",
        json!({ "interval": heartbeat_param(config.heartbeat_interval) }),
    )
    .await
    .map_err(|source| ConnectError::Handshake {
        step: "public/set_heartbeat",
        source,
    })?;
    let method = if auth.is_some() {
        "private/subscribe"
    } else {
        "public/subscribe"
    };
    let subscribed: Vec<String> = h
        .call(method, json!({ "channels": config.channels }))
        .await
        .map_err(|source| ConnectError::Handshake {
            step: "subscribe",
            source,
        })?;
    let missing = config
        .channels
        .iter()
        .filter(|c| !subscribed.contains(c))
        .cloned()
        .collect();
    Ok(Established {
        session,
        auth,
        subscribed,
        missing,
        took: started.elapsed(),
    })
}

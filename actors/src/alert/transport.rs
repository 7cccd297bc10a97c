//! One JSON `POST` over HTTP/1.1, plain or TLS: the only network code of the alert sinks.
//!
//! A fresh connection per delivery (alerts are rare, and a kept-alive connection to a receiver
//! that restarted would only fail the next delivery). TLS uses rustls with `ring` and the webpki
//! roots, the same stack the broker's `wss://` connection already compiles in. Error texts name
//! the host and port, never the request path, because a path may carry a token (Telegram).

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Bytes;
use hyper::header::{CONTENT_TYPE, HOST, USER_AGENT};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use crate::secret::Secret;

/// Where a sink posts: scheme, host and port from its configured URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `https` when true.
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// The path of the configured URL, without a trailing `/` (may be empty).
    pub base_path: String,
}

impl Endpoint {
    /// Parses an `http://` or `https://` URL; the error names what is wrong, not the URL.
    pub fn parse(url: &str) -> Result<Self, String> {
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e| format!("is not a URL like http://host:port/path ({e})"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err("must start with http:// or https://".into()),
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or("has no host")?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if uri.query().is_some() {
            return Err("must not have a query string".into());
        }
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        Ok(Self {
            tls,
            host,
            port,
            base_path: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    /// `host:port` for errors and status (no path: it may carry a token).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// A sink's HTTP client: the endpoint, the full request path, and a TLS config when needed.
pub struct Poster {
    endpoint: Endpoint,
    /// Request path; kept as a [`Secret`] because Telegram puts the bot token into it.
    path: Secret,
    tls: Option<TlsConnector>,
    timeout: Duration,
}

impl Poster {
    /// A client that posts to `path` (absolute, starting with `/`) on `endpoint`.
    pub fn new(endpoint: Endpoint, path: Secret, timeout: Duration) -> Result<Self, String> {
        let tls = if endpoint.tls {
            let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
            let roots = RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            let config = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS setup failed: {e}"))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Some(TlsConnector::from(Arc::new(config)))
        } else {
            None
        };
        Ok(Self {
            endpoint,
            path,
            tls,
            timeout,
        })
    }

    /// Posts `body` as JSON; `Ok` only for a 2xx answer. Bounded by the configured timeout.
    pub async fn post(&self, body: Bytes) -> Result<(), String> {
        let authority = self.endpoint.authority();
        match tokio::time::timeout(self.timeout, self.exchange(body)).await {
            Ok(Ok(status)) if (200..300).contains(&status) => Ok(()),
            Ok(Ok(status)) => Err(format!("{authority} answered HTTP {status}")),
            Ok(Err(e)) => Err(format!("{authority}: {e}")),
            Err(_) => Err(format!(
                "{authority}: no answer within {} ms",
                self.timeout.as_millis()
            )),
        }
    }

    async fn exchange(&self, body: Bytes) -> Result<u16, String> {
        let tcp = TcpStream::connect((self.endpoint.host.as_str(), self.endpoint.port))
            .await
            .map_err(|e| format!("connect failed: {e}"))?;
        let request = Request::post(self.path.expose())
            .header(HOST, self.endpoint.authority())
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, concat!("tradebaas/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(body))
            // The path is not echoed: it may carry a token.
            .map_err(|_| "invalid request path".to_owned())?;
        match &self.tls {
            None => send(tcp, request).await,
            Some(connector) => {
                let name = ServerName::try_from(self.endpoint.host.clone())
                    .map_err(|e| format!("invalid TLS server name: {e}"))?;
                let stream = connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS handshake failed: {e}"))?;
                send(stream, request).await
            }
        }
    }
}

async fn send<S>(io: S, request: Request<Full<Bytes>>) -> Result<u16, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    let driver = tokio::spawn(conn);
    let result = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = response.status().as_u16();
        // Read the answer to the end so the receiver sees a clean exchange; its content is unused.
        let _ = response.into_body().collect().await;
        Ok(status)
    }
    .await;
    driver.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_parses_http_and_https_with_default_ports() {
        let e = Endpoint::parse("http://127.0.0.1:9093/").unwrap();
        assert_eq!((e.tls, e.host.as_str(), e.port), (false, "127.0.0.1", 9093));
        assert_eq!(e.base_path, "");
        let e = Endpoint::parse("https://api.telegram.org").unwrap();
        assert_eq!((e.tls, e.port), (true, 443));
        let e = Endpoint::parse("http://hooks.local/a/b/").unwrap();
        assert_eq!((e.port, e.base_path.as_str()), (80, "/a/b"));
        assert_eq!(e.authority(), "hooks.local:80");
    }

    #[test]
    fn endpoint_refuses_other_schemes_and_queries() {
        assert!(Endpoint::parse("ws://x").unwrap_err().contains("http"));
        assert!(
            Endpoint::parse("http://x/?a=1")
                .unwrap_err()
                .contains("query")
        );
        assert!(Endpoint::parse("not a url").is_err());
    }
}

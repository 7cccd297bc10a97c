//! The WebSocket session alone, against a scripted loopback server.

use super::*;

/// A ticker frame for instrument `X` with exchange time `ts`.
fn ticker_frame(ts: u64) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","method":"subscription","params":{{"channel":"ticker.X.raw","data":{{"instrument_name":"X","timestamp":{ts},"mark_price":1.5}}}}}}"#
    )
}

/// A burst of ticker frames reaches the owner in batches (at most 64), in order, all before
/// the frame that follows them; a lone ticker after a pause comes at once, alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_hands_over_buffered_tickers_in_order_in_bounded_batches() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tradebaas_actors::broker::session::{Session, SessionConfig, SessionEvent};

    const BURST: u64 = 500;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        for ts in 1..=BURST {
            ws.feed(Message::text(ticker_frame(ts))).await.unwrap();
        }
        let other = r#"{"jsonrpc":"2.0","method":"subscription","params":{"channel":"user.orders.X.raw","data":[]}}"#;
        ws.feed(Message::text(other)).await.unwrap();
        ws.flush().await.unwrap();
        tokio::time::sleep(ms(200)).await;
        ws.send(Message::text(ticker_frame(BURST + 1)))
            .await
            .unwrap();
        // Held open until the test ends.
        let _ = ws.next().await;
    });
    let (tx, mut rx) = mpsc::unbounded_channel();
    let sink = Arc::new(move |e: SessionEvent| tx.send(e).is_ok());
    let config = SessionConfig {
        connect_timeout: WAIT,
        request_timeout: WAIT,
        max_message_bytes: 1 << 20,
    };
    let _session = Session::connect(1, &url, config, sink).await.unwrap();

    let mut seen: Vec<u64> = Vec::new();
    let mut batches: Vec<usize> = Vec::new();
    loop {
        let event = tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("every event within 5 s")
            .expect("sink open");
        match event {
            SessionEvent::Tickers(tickers) => {
                batches.push(tickers.len());
                seen.extend(tickers.iter().map(|t| t.timestamp as u64));
            }
            SessionEvent::Subscription { channel, .. } => {
                assert_eq!(channel, "user.orders.X.raw");
                assert_eq!(
                    seen,
                    (1..=BURST).collect::<Vec<_>>(),
                    "all before the next frame"
                );
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        batches.iter().all(|&n| (1..=64).contains(&n)),
        "{batches:?}"
    );
    assert!(
        batches.iter().any(|&n| n > 1),
        "a burst is batched: {batches:?}"
    );
    let started = Instant::now();
    match tokio::time::timeout(WAIT, rx.recv()).await {
        Ok(Some(SessionEvent::Tickers(tickers))) => {
            assert_eq!(tickers.len(), 1);
            assert_eq!(tickers[0].timestamp as u64, BURST + 1);
        }
        other => panic!("the lone ticker, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    server.abort();
}

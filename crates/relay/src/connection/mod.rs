//! One client connection: TLS, WebSocket, and the writer that batches
//! outgoing frames. The protocol itself (version check, login, requests,
//! deliveries) is in [`protocol`], which sees only frames.

pub(crate) mod protocol;

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use hush_proto::limits::MAX_FRAME_BYTES;
use hush_proto::{ClientFrame, DecodeError, ErrorCode, RelayFrame};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::server::Shared;
use protocol::{FrameSource, Outbound, OUTBOUND_QUEUE};

type Ws = WebSocketStream<tokio_rustls::server::TlsStream<TcpStream>>;

/// Why a connection ended early; logged without user data.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectionError {
    #[error("handshake timed out")]
    Timeout,
    #[error("TLS: {0}")]
    Tls(std::io::Error),
    #[error("WebSocket: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("client closed the connection")]
    Closed,
    #[error("refused: {0:?}")]
    Refused(ErrorCode),
}

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES))
        .read_buffer_size(512)
        .write_buffer_size(0)
}

/// Serves one accepted TCP connection to its end.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    acceptor: TlsAcceptor,
    stream: TcpStream,
    shutdown: watch::Receiver<bool>,
    over_capacity: bool,
) {
    let _ = stream.set_nodelay(true);
    // Each phase is boxed so a connection's task holds only the memory of
    // the phase it is in: the TLS and WebSocket handshakes are large state
    // machines that an idle connection should not keep paying for.
    match Box::pin(open(&shared, acceptor, stream)).await {
        Ok(ws) => {
            let (sink, incoming) = (*ws).split();
            let (outbound, queue) = mpsc::channel(OUTBOUND_QUEUE);
            let writer = tokio::spawn(write_loop(sink, queue));
            let mut frames = WsFrames(incoming);
            let result =
                Box::pin(protocol::run(shared, &mut frames, outbound, shutdown, over_capacity)).await;
            let _ = writer.await;
            if let Err(error) = result {
                tracing::debug!(%error, "connection ended");
            }
        }
        Err(error) => tracing::debug!(%error, "handshake failed"),
    }
}

/// The TLS and WebSocket handshakes. The stream comes back boxed: moved
/// through the async functions by value, its ~3 KB would stay reserved in
/// each of their state machines for the connection's whole life.
async fn open(shared: &Shared, acceptor: TlsAcceptor, stream: TcpStream) -> Result<Box<Ws>, ConnectionError> {
    let timeout = shared.config.handshake_timeout();
    let tls = tokio::time::timeout(timeout, acceptor.accept(stream))
        .await
        .map_err(|_| ConnectionError::Timeout)?
        .map_err(ConnectionError::Tls)?;
    let ws =
        tokio::time::timeout(timeout, tokio_tungstenite::accept_async_with_config(tls, Some(ws_config())))
            .await
            .map_err(|_| ConnectionError::Timeout)??;
    Ok(Box::new(ws))
}

/// Client frames from WebSocket binary messages, one frame each.
struct WsFrames(futures_util::stream::SplitStream<Ws>);

impl FrameSource for WsFrames {
    async fn next_frame(&mut self) -> Result<Result<ClientFrame, ErrorCode>, ConnectionError> {
        loop {
            match self.0.next().await {
                None => return Err(ConnectionError::Closed),
                Some(Err(tokio_tungstenite::tungstenite::Error::Capacity(_))) => {
                    return Ok(Err(ErrorCode::TooLarge))
                }
                Some(Err(error)) => return Err(error.into()),
                Some(Ok(Message::Binary(bytes))) => {
                    return Ok(ClientFrame::decode(&bytes).map_err(|error| match error {
                        DecodeError::TooLong { .. } => ErrorCode::TooLarge,
                        _ => ErrorCode::Malformed,
                    }))
                }
                Some(Ok(Message::Close(_))) => return Err(ConnectionError::Closed),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(Message::Text(_) | Message::Frame(_))) => return Ok(Err(ErrorCode::Malformed)),
            }
        }
    }
}

/// Sends what the protocol queues, feeding up to 64 frames before one
/// flush; stops at `Close` or when the queue's senders are all gone.
async fn write_loop(
    mut sink: futures_util::stream::SplitSink<Ws, Message>,
    mut queue: mpsc::Receiver<Outbound>,
) {
    while let Some(item) = queue.recv().await {
        let result = match item {
            Outbound::Frame(frame) => {
                let mut batch = vec![*frame];
                let mut closing = false;
                while batch.len() < 64 {
                    match queue.try_recv() {
                        Ok(Outbound::Frame(next)) => batch.push(*next),
                        Ok(Outbound::Close) => {
                            closing = true;
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let fed = Box::pin(feed_all(&mut sink, batch)).await;
                if closing {
                    let _ = Box::pin(sink.close()).await;
                    return;
                }
                fed
            }
            Outbound::Close => {
                let _ = Box::pin(sink.close()).await;
                return;
            }
        };
        if result.is_err() {
            return;
        }
    }
    let _ = sink.close().await;
}

async fn feed_all(
    sink: &mut futures_util::stream::SplitSink<Ws, Message>,
    frames: Vec<RelayFrame>,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    for frame in frames {
        sink.feed(Message::binary(frame.encode())).await?;
    }
    sink.flush().await
}

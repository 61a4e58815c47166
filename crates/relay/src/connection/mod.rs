//! One client connection: TLS, WebSocket, and the writer that batches
//! outgoing frames. The protocol itself (version check, login, requests,
//! deliveries) is in [`protocol`], which sees only frames.

pub(crate) mod protocol;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hush_proto::limits::{MAX_FRAME_BYTES, MAX_PREAUTH_FRAME_BYTES};
use hush_proto::{ClientFrame, DecodeError, ErrorCode, RelayFrame};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::server::Shared;
use protocol::{FrameSource, Outbound, OUTBOUND_QUEUE};

type Ws = WebSocketStream<tokio_rustls::server::TlsStream<TcpStream>>;
type Sink = futures_util::stream::SplitSink<Ws, Message>;

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
    #[error("client stopped reading")]
    Stalled,
    #[error("refused: {0:?}")]
    Refused(ErrorCode),
}

/// WebSocket limits: frames of at most `max_frame` bytes.
fn ws_config(max_frame: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(max_frame))
        .max_frame_size(Some(max_frame))
        .read_buffer_size(512)
        .write_buffer_size(0)
}

/// Serves one accepted TCP connection to its end.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    acceptor: TlsAcceptor,
    stream: TcpStream,
    shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    // TLS, WebSocket and login share one deadline.
    let deadline = Instant::now() + shared.config.handshake_timeout();
    // Each phase is boxed so a connection's task holds only the memory of
    // the phase it is in: the TLS and WebSocket handshakes are large state
    // machines that an idle connection should not keep paying for.
    let result = match Box::pin(open(acceptor, stream, deadline)).await {
        Ok(ws) => Box::pin(log_in_and_serve(shared, ws, shutdown, deadline)).await,
        Err(error) => Err(error),
    };
    if let Err(error) = result {
        tracing::debug!(%error, "connection ended");
    }
}

/// The TLS and WebSocket handshakes, with frames no larger than a login
/// needs. The stream comes back boxed: moved through the async functions by
/// value, its ~3 KB would stay reserved in each of their state machines for
/// the connection's whole life.
async fn open(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    deadline: Instant,
) -> Result<Box<Ws>, ConnectionError> {
    let tls = tokio::time::timeout_at(deadline.into(), acceptor.accept(stream))
        .await
        .map_err(|_| ConnectionError::Timeout)?
        .map_err(ConnectionError::Tls)?;
    let config = ws_config(MAX_PREAUTH_FRAME_BYTES);
    let ws = tokio::time::timeout_at(
        deadline.into(),
        tokio_tungstenite::accept_async_with_config(tls, Some(config)),
    )
    .await
    .map_err(|_| ConnectionError::Timeout)??;
    Ok(Box::new(ws))
}

/// Login on the small frame limit; once logged in (the client sends nothing
/// between its login and the relay's `Ready`), the same TLS stream is
/// served with the full frame limit.
async fn log_in_and_serve(
    shared: Arc<Shared>,
    ws: Box<Ws>,
    mut shutdown: watch::Receiver<bool>,
    deadline: Instant,
) -> Result<(), ConnectionError> {
    let (sink, incoming) = (*ws).split();
    let (outbound, queue) = mpsc::channel(OUTBOUND_QUEUE);
    let writer = Writer::spawn(sink, queue);
    let mut frames = WsFrames(incoming);
    let logged_in = Box::pin(protocol::login(&shared, &mut frames, &outbound, deadline)).await;
    drop(outbound);
    // The writer has sent everything queued (`Ready`, or a refusal and the
    // close) when it gives the sink back; a client that does not read it
    // by the deadline (or, for a refusal, within a short grace) is dropped.
    let sink = writer.finish(deadline.max(Instant::now() + CLOSE_GRACE)).await;
    let account = logged_in?;
    let sink = sink.ok_or(ConnectionError::Stalled)?;
    let ws = frames.0.reunite(sink).map_err(|_| ConnectionError::Closed)?;
    let tls = ws.into_inner();
    let ws = WebSocketStream::from_raw_socket(tls, Role::Server, Some(ws_config(MAX_FRAME_BYTES))).await;
    let (sink, incoming) = ws.split();
    let (outbound, queue) = mpsc::channel(OUTBOUND_QUEUE);
    let mut writer = Writer::spawn(sink, queue);
    let mut frames = WsFrames(incoming);
    let session = Box::pin(protocol::session(shared, account, &mut frames, outbound, &mut shutdown));
    // A writer that ends first (the client stopped reading, or the socket
    // failed) ends the session too.
    let (result, writer_ended) = tokio::select! {
        result = session => (result, false),
        _ = &mut writer.0 => (Err(ConnectionError::Stalled), true),
    };
    if !writer_ended {
        if let Some(mut sink) = writer.finish(Instant::now() + WRITE_TIMEOUT).await {
            let _ = tokio::time::timeout(CLOSE_GRACE, sink.close()).await;
        }
    }
    result
}

/// How long the relay waits for a client to take a batch of frames: one
/// that stops reading is disconnected rather than holding its slot.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a refusal or a closing handshake may take to reach the client.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// The writer task, aborted if the connection's own task ends first (or is
/// aborted at shutdown), so a writer stuck on a client never outlives it.
struct Writer(tokio::task::JoinHandle<Option<Sink>>);

impl Writer {
    fn spawn(sink: Sink, queue: mpsc::Receiver<Outbound>) -> Self {
        Self(tokio::spawn(write_loop(sink, queue)))
    }

    /// Waits until `until` at most for the writer to send what was queued;
    /// the sink back if its queue ended without a close.
    async fn finish(mut self, until: Instant) -> Option<Sink> {
        tokio::time::timeout_at(until.into(), &mut self.0).await.ok().and_then(Result::ok).flatten()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.0.abort();
    }
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
/// flush. At `Close` it closes the WebSocket; when the queue's senders are
/// all gone it gives the sink back, everything sent and flushed.
async fn write_loop(mut sink: Sink, mut queue: mpsc::Receiver<Outbound>) -> Option<Sink> {
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
                let fed = tokio::time::timeout(WRITE_TIMEOUT, Box::pin(feed_all(&mut sink, batch))).await;
                if closing {
                    let _ = tokio::time::timeout(CLOSE_GRACE, Box::pin(sink.close())).await;
                    return None;
                }
                fed.map_err(|_| ()).and_then(|fed| fed.map_err(|_| ()))
            }
            Outbound::Close => {
                let _ = tokio::time::timeout(CLOSE_GRACE, Box::pin(sink.close())).await;
                return None;
            }
        };
        if result.is_err() {
            return None;
        }
    }
    Some(sink)
}

async fn feed_all(
    sink: &mut Sink,
    frames: Vec<RelayFrame>,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    for frame in frames {
        sink.feed(Message::binary(frame.encode())).await?;
    }
    sink.flush().await
}

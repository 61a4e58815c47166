//! One client connection: TLS, WebSocket, and the writer that batches
//! outgoing frames. The protocol itself (version check, login, requests,
//! deliveries) is in [`protocol`], which sees only frames.

pub(crate) mod protocol;
mod tls;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hush_proto::limits::{MAX_FRAME_BYTES, MAX_PREAUTH_BYTES, MAX_WIRE_FRAME_BYTES};
use hush_proto::{ClientFrame, DecodeError, ErrorCode};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::WebSocketStream;

use crate::server::Shared;
use protocol::{FrameSource, OutFrame, Outbound, OUTBOUND_QUEUE};

type Ws = WebSocketStream<Budgeted>;
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
    #[error("a message sent in fragments was not finished in time")]
    TooSlow,
    #[error("refused: {0:?}")]
    Refused(ErrorCode),
}

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_WIRE_FRAME_BYTES))
        // Bounds what waits unsent (automatic pongs to a client that sends
        // pings and never reads, above all): past it, writing fails and the
        // connection ends. A few fragments: the buffer keeps the largest
        // size it ever reached.
        .max_write_buffer_size(4 * MAX_WIRE_FRAME_BYTES)
        .read_buffer_size(512)
        .write_buffer_size(0)
}

/// Serves one accepted TCP connection to its end.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    tls: Arc<rustls::ServerConfig>,
    stream: TcpStream,
    shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    // TLS, WebSocket and login share one deadline.
    let deadline = Instant::now() + shared.config.handshake_timeout();
    // Each phase is boxed so a connection's task holds only the memory of
    // the phase it is in: the TLS and WebSocket handshakes are large state
    // machines that an idle connection should not keep paying for.
    let result = match Box::pin(open(tls, stream, deadline)).await {
        Ok((ws, reading)) => Box::pin(log_in_and_serve(shared, ws, reading, shutdown, deadline)).await,
        Err(error) => Err(error),
    };
    if let Err(error) = result {
        tracing::debug!(%error, "connection ended");
    }
}

/// The TLS and WebSocket handshakes. The stream comes back boxed: moved
/// through the async functions by value, its ~3 KB would stay reserved in
/// each of their state machines for the connection's whole life.
async fn open(
    config: Arc<rustls::ServerConfig>,
    stream: TcpStream,
    deadline: Instant,
) -> Result<(Box<Ws>, Arc<Reading>), ConnectionError> {
    let tls = tokio::time::timeout_at(deadline.into(), tls::accept(config, stream))
        .await
        .map_err(|_| ConnectionError::Timeout)?
        .map_err(ConnectionError::Tls)?;
    let reading = Arc::new(Reading::default());
    let stream =
        Budgeted { inner: tls, read: 0, scan: Scan::start(), message: 0, reading: Arc::clone(&reading) };
    let ws = tokio::time::timeout_at(
        deadline.into(),
        tokio_tungstenite::accept_async_with_config(stream, Some(ws_config())),
    )
    .await
    .map_err(|_| ConnectionError::Timeout)??;
    Ok((Box::new(ws), reading))
}

/// Login, then the session, on one WebSocket whose writer sends what both
/// queue. The writer runs in the connection's own task, beside the
/// conversation: one task per connection, and the socket's reading and
/// writing wake the same task.
async fn log_in_and_serve(
    shared: Arc<Shared>,
    ws: Box<Ws>,
    reading: Arc<Reading>,
    mut shutdown: watch::Receiver<bool>,
    deadline: Instant,
) -> Result<(), ConnectionError> {
    let (sink, incoming) = (*ws).split();
    let (outbound, queue) = mpsc::channel(OUTBOUND_QUEUE);
    let mut writer = std::pin::pin!(write_loop(sink, queue));
    let mut frames = WsFrames { stream: incoming, reading: Arc::clone(&reading), timer: None };
    let conversation = Box::pin(async {
        let opened = Box::pin(protocol::login(&shared, &mut frames, &outbound, deadline)).await?;
        // Proved: the read budget gives way to the plane's largest message
        // (the client sends nothing more until it has its answer, queued
        // above).
        reading.open(opened.message_limit(), shared.config.fragmented_message_timeout());
        protocol::session(Arc::clone(&shared), opened, &mut frames, outbound, &mut shutdown).await
    });
    // A writer that ends first (the client stopped reading, or the socket
    // failed) ends the conversation too.
    let (result, writer_ended) = tokio::select! {
        biased;
        result = conversation => (result, false),
        _ = &mut writer => (Err(ConnectionError::Stalled), true),
    };
    if !writer_ended {
        // What is queued (a refusal, the last answers) gets a bounded time
        // to go out: before login, the deadline or a short grace.
        let until = if reading.logged_in() {
            Instant::now() + WRITE_TIMEOUT
        } else {
            deadline.max(Instant::now() + CLOSE_GRACE)
        };
        if let Ok(Some(mut sink)) = tokio::time::timeout_at(until.into(), writer).await {
            let _ = tokio::time::timeout(CLOSE_GRACE, sink.close()).await;
        }
    }
    result
}

/// The TLS stream, with limits on what it reads. Before login, a budget: a
/// client that has proved nothing cannot make the relay read more than
/// [`MAX_PREAUTH_BYTES`], nor announce a WebSocket frame longer than what is
/// left of them (the WebSocket codec reserves a frame's announced length
/// before reading it, so such a header never reaches it). After login, the
/// WebSocket frame headers are still followed: a message may not grow past
/// its plane's largest (a queue connection never needs megabytes), and a
/// message sent in fragments is timed from its first one (see
/// [`WsFrames`]).
struct Budgeted {
    inner: tls::TlsStream,
    /// Bytes read before login.
    read: usize,
    scan: Scan,
    /// Payload bytes of the data message being read, so far.
    message: u64,
    reading: Arc<Reading>,
}

/// What reading a connection shares with its conversation.
#[derive(Default)]
pub(crate) struct Reading {
    /// The largest message the connection's plane takes; 0 until the
    /// connection proved something (the pre-login budget applies).
    limit: AtomicUsize,
    /// When the fragmented message being read began (its first fragment's
    /// header), as milliseconds after `base`, plus one; 0 if none is.
    partial: AtomicU64,
    /// Its payload bytes announced so far: the longer it is, the longer it
    /// may take.
    partial_bytes: AtomicU64,
    /// How long one may take besides, in milliseconds.
    timeout_ms: AtomicU64,
    base: OnceInstant,
}

/// An `Instant` fixed at creation (`Instant` has no `Default`).
struct OnceInstant(Instant);

impl Default for OnceInstant {
    fn default() -> Self {
        Self(Instant::now())
    }
}

/// The slowest a fragmented message may arrive, on top of the timeout: a
/// slow link is not cut off for sending a large message (8 MiB at this
/// rate takes about 9 minutes), and a client that trickles one in cannot
/// hold its bytes for longer than sending them would take.
const FRAGMENTED_BYTES_PER_SEC: u64 = 16 * 1024;

impl Reading {
    fn logged_in(&self) -> bool {
        self.limit.load(Ordering::Relaxed) > 0
    }

    fn open(&self, limit: usize, timeout: Duration) {
        let timeout = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX / 2);
        self.timeout_ms.store(timeout, Ordering::Relaxed);
        self.limit.store(limit.max(1), Ordering::Relaxed);
    }

    fn begin_partial(&self) {
        let since = u64::try_from(self.base.0.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.partial.store(since + 1, Ordering::Relaxed);
    }

    fn end_partial(&self) {
        self.partial.store(0, Ordering::Relaxed);
        self.partial_bytes.store(0, Ordering::Relaxed);
    }

    /// When the fragmented message being read must be complete, if one is.
    fn partial_deadline(&self) -> Option<Instant> {
        match self.partial.load(Ordering::Relaxed) {
            0 => None,
            since => {
                let bytes = self.partial_bytes.load(Ordering::Relaxed);
                let allowed = self
                    .timeout_ms
                    .load(Ordering::Relaxed)
                    .saturating_add(bytes.saturating_mul(1000) / FRAGMENTED_BYTES_PER_SEC);
                Some(self.base.0 + Duration::from_millis((since - 1).saturating_add(allowed)))
            }
        }
    }
}

/// The error a read ends with when a message grows past its plane's
/// largest, answered `TooLarge`.
#[derive(Debug, thiserror::Error)]
#[error("message too large for this connection")]
struct MessageTooLarge;

/// Where the bytes read are: in the upgrade request (how much of its blank
/// line is matched, and how many bytes came before), in a frame header
/// (its bytes so far), or in a frame's payload (bytes left, and its
/// header's first byte).
#[derive(Clone, Copy)]
enum Scan {
    Request { matched: usize, seen: usize },
    Header { bytes: [u8; 14], len: usize },
    Payload { rest: u64, first: u8 },
}

/// What a connection may send, frame by frame, as [`Scan`] finds them.
trait Rules {
    /// A frame header: its first byte (FIN and opcode) and payload length.
    /// False refuses the frame.
    fn header(&mut self, first: u8, payload: u64) -> bool;
    /// The end of a frame's payload.
    fn end(&mut self, first: u8);
}

/// WebSocket data frames: text, binary, continuation.
fn is_data(first: u8) -> bool {
    matches!(first & 0x0f, 0x0..=0x2)
}

fn is_final(first: u8) -> bool {
    first & 0x80 != 0
}

/// Before login: no frame longer than what is left of the budget, and no
/// message in fragments (nothing a client sends before proving anything
/// comes near a fragment's size; a fragment read now would escape the
/// timing of fragmented messages).
struct PreLogin {
    left: u64,
}

impl Rules for PreLogin {
    fn header(&mut self, first: u8, payload: u64) -> bool {
        payload <= self.left && !(is_data(first) && (!is_final(first) || first & 0x0f == 0))
    }

    fn end(&mut self, _: u8) {}
}

/// After login: a data message no longer than the plane takes, and one in
/// fragments timed from its first fragment to the end of its last.
struct AfterLogin<'a> {
    reading: &'a Reading,
    /// Payload bytes of the data message being read, so far.
    message: &'a mut u64,
    limit: u64,
}

impl Rules for AfterLogin<'_> {
    fn header(&mut self, first: u8, payload: u64) -> bool {
        if !is_data(first) {
            // Control frames (tungstenite caps them at 125 bytes) may come
            // between fragments.
            return true;
        }
        *self.message = match first & 0x0f {
            0x0 => self.message.saturating_add(payload),
            _ => payload,
        };
        if !is_final(first) && first & 0x0f != 0 {
            self.reading.begin_partial();
        }
        if self.reading.partial.load(Ordering::Relaxed) != 0 {
            self.reading.partial_bytes.store(*self.message, Ordering::Relaxed);
        }
        *self.message <= self.limit
    }

    fn end(&mut self, first: u8) {
        // The message is whole once its last frame's payload is read, not
        // when that frame's header is.
        if is_data(first) && is_final(first) {
            self.reading.end_partial();
            *self.message = 0;
        }
    }
}

impl Scan {
    fn start() -> Self {
        Scan::Request { matched: 0, seen: 0 }
    }

    /// Follows `chunk` under `rules`; false as soon as they refuse a frame,
    /// or the upgrade request is not one whose end the scan can tell.
    fn follow(&mut self, chunk: &[u8], rules: &mut impl Rules) -> bool {
        let mut at = 0;
        while at < chunk.len() {
            *self = match *self {
                // A payload is skipped whole, not byte by byte.
                Scan::Payload { rest, first } => {
                    let skip = rest.min((chunk.len() - at) as u64);
                    at += skip as usize;
                    match rest - skip {
                        0 => {
                            rules.end(first);
                            Scan::Header { bytes: [0; 14], len: 0 }
                        }
                        rest => Scan::Payload { rest, first },
                    }
                }
                Scan::Request { matched, seen } => {
                    let byte = chunk[at];
                    at += 1;
                    // Lines end in CRLF. The WebSocket library's parser
                    // also takes a bare LF, and skips blank lines before
                    // the request: refused, so that the request ends where
                    // the scan says it does and frames are followed from
                    // their first byte.
                    if byte == b'\n' && matched != 1 && matched != 3 {
                        return false;
                    }
                    match byte == b"\r\n\r\n"[matched] {
                        true if matched == 3 && seen < MIN_REQUEST => return false,
                        true if matched == 3 => Scan::Header { bytes: [0; 14], len: 0 },
                        true => Scan::Request { matched: matched + 1, seen: seen + 1 },
                        false => Scan::Request { matched: usize::from(byte == b'\r'), seen: seen + 1 },
                    }
                }
                Scan::Header { mut bytes, len } => {
                    bytes[len] = chunk[at];
                    at += 1;
                    let len = len + 1;
                    match frame_length(&bytes[..len]) {
                        None => Scan::Header { bytes, len },
                        Some(payload) if !rules.header(bytes[0], payload) => return false,
                        Some(0) => {
                            rules.end(bytes[0]);
                            Scan::Header { bytes: [0; 14], len: 0 }
                        }
                        Some(payload) => Scan::Payload { rest: payload, first: bytes[0] },
                    }
                }
            };
        }
        true
    }
}

/// The shortest upgrade request before its blank line: `GET / HTTP/1.1`
/// and a line end.
const MIN_REQUEST: usize = 16;

/// The payload length a complete WebSocket frame header announces, or
/// `None` while the header is incomplete (RFC 6455, section 5.2).
fn frame_length(header: &[u8]) -> Option<u64> {
    let second = *header.get(1)?;
    let (extended, mask) = match second & 0x7f {
        126 => (2, second & 0x80 != 0),
        127 => (8, second & 0x80 != 0),
        _ => (0, second & 0x80 != 0),
    };
    let needed = 2 + extended + if mask { 4 } else { 0 };
    if header.len() < needed {
        return None;
    }
    Some(match extended {
        2 => u64::from(u16::from_be_bytes([header[2], header[3]])),
        8 => header[2..10].iter().fold(0, |length, byte| (length << 8) | u64::from(*byte)),
        _ => u64::from(second & 0x7f),
    })
}

impl AsyncRead for Budgeted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let limit = this.reading.limit.load(Ordering::Relaxed);
        if limit > 0 {
            let before = buf.filled().len();
            ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
            let mut rules =
                AfterLogin { reading: &this.reading, message: &mut this.message, limit: limit as u64 };
            let fits = this.scan.follow(&buf.filled()[before..], &mut rules);
            if !fits {
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    MessageTooLarge,
                )));
            }
            return Poll::Ready(Ok(()));
        }
        let left = MAX_PREAUTH_BYTES.saturating_sub(this.read);
        if left == 0 {
            let error = std::io::Error::new(std::io::ErrorKind::InvalidData, "too much sent before login");
            return Poll::Ready(Err(error));
        }
        // Read at most what is left of the budget, through a small buffer.
        let mut chunk = [0u8; 512];
        let len = left.min(chunk.len()).min(buf.remaining());
        let mut limited = ReadBuf::new(&mut chunk[..len]);
        let polled = Pin::new(&mut this.inner).poll_read(cx, &mut limited);
        if let Poll::Ready(Ok(())) = polled {
            let chunk = limited.filled();
            this.read += chunk.len();
            let left = MAX_PREAUTH_BYTES.saturating_sub(this.read) as u64;
            if !this.scan.follow(chunk, &mut PreLogin { left }) {
                let error =
                    std::io::Error::new(std::io::ErrorKind::InvalidData, "frame too large before login");
                return Poll::Ready(Err(error));
            }
            buf.put_slice(chunk);
        }
        polled
    }
}

impl AsyncWrite for Budgeted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, data)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// How long the relay waits for a client to take a batch of frames: one
/// that stops reading is disconnected rather than holding its slot.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a refusal or a closing handshake may take to reach the client.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Client frames from WebSocket binary messages, one frame each.
/// A message sent in fragments must be whole within the relay's
/// `fragmented_message_timeout_secs` of its first fragment, or the
/// connection ends: a client that trickles one in holds at most its plane's
/// largest message, for at most that long.
struct WsFrames {
    stream: futures_util::stream::SplitStream<Ws>,
    reading: Arc<Reading>,
    /// Armed while a fragmented message is being read: its deadline, and
    /// the timer for it (allocated only then).
    timer: Option<(Instant, Pin<Box<tokio::time::Sleep>>)>,
}

impl WsFrames {
    /// The next WebSocket message, or `Err(TooSlow)` past a fragmented
    /// message's deadline. Cancel-safe: the timer lives in `self`.
    fn poll_message(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Result<Message, tokio_tungstenite::tungstenite::Error>>, ConnectionError>> {
        // The deadline first: frames that keep coming (pings between
        // fragments) do not put it off.
        if self.reading.partial_deadline().is_some_and(|deadline| deadline <= Instant::now()) {
            return Poll::Ready(Err(ConnectionError::TooSlow));
        }
        if let Poll::Ready(message) = self.stream.poll_next_unpin(cx) {
            return Poll::Ready(Ok(message));
        }
        // Read again: what was just read may have begun a fragmented message.
        let Some(deadline) = self.reading.partial_deadline() else {
            self.timer = None;
            return Poll::Pending;
        };
        let sleep = match &mut self.timer {
            Some((armed, sleep)) => {
                // The message grew, and with it the time it may take.
                if *armed != deadline {
                    *armed = deadline;
                    sleep.as_mut().reset(deadline.into());
                }
                sleep
            }
            timer => &mut timer.insert((deadline, Box::pin(tokio::time::sleep_until(deadline.into())))).1,
        };
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(ConnectionError::TooSlow)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl FrameSource for WsFrames {
    async fn next_frame(&mut self) -> Result<Result<ClientFrame, ErrorCode>, ConnectionError> {
        loop {
            match std::future::poll_fn(|cx| self.poll_message(cx)).await? {
                None => return Err(ConnectionError::Closed),
                Some(Err(tokio_tungstenite::tungstenite::Error::Capacity(_))) => {
                    return Ok(Err(ErrorCode::TooLarge))
                }
                Some(Err(tokio_tungstenite::tungstenite::Error::Io(error)))
                    if error.get_ref().is_some_and(|inner| inner.is::<MessageTooLarge>()) =>
                {
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
    frames: Vec<OutFrame>,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    // The deliveries' window shares are given back once the batch is
    // flushed, not merely fed.
    let mut shares = Vec::with_capacity(frames.len());
    for out in frames {
        let bytes = out.frame.encode();
        if bytes.len() <= MAX_WIRE_FRAME_BYTES {
            sink.feed(Message::binary(bytes)).await?;
        } else {
            for fragment in fragments(bytes) {
                sink.feed(fragment).await?;
            }
        }
        shares.push(out._window);
    }
    sink.flush().await?;
    drop(shares);
    Ok(())
}

/// `bytes` as WebSocket fragments of at most [`MAX_WIRE_FRAME_BYTES`]: a
/// binary frame, then continuations, the last one final (see
/// [`MAX_WIRE_FRAME_BYTES`] for why).
pub(crate) fn fragments(bytes: Vec<u8>) -> impl Iterator<Item = Message> {
    let bytes = Bytes::from(bytes);
    let pieces = bytes.len().div_ceil(MAX_WIRE_FRAME_BYTES).max(1);
    (0..pieces).map(move |n| {
        let start = n * MAX_WIRE_FRAME_BYTES;
        let piece = bytes.slice(start..(start + MAX_WIRE_FRAME_BYTES).min(bytes.len()));
        let opcode = OpCode::Data(if n == 0 { Data::Binary } else { Data::Continue });
        Message::Frame(Frame::message(piece, opcode, n + 1 == pieces))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: hush-relay\r\nUpgrade: websocket\r\n\r\n";

    /// A masked frame header: its first byte (FIN and opcode), announcing
    /// `len` payload bytes.
    fn frame_header(first: u8, len: u64) -> Vec<u8> {
        let mut header = vec![first];
        match len {
            0..=125 => header.push(0x80 | len as u8),
            126..=65_535 => {
                header.push(0x80 | 126);
                header.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                header.push(0x80 | 127);
                header.extend_from_slice(&len.to_be_bytes());
            }
        }
        header.extend_from_slice(&[1, 2, 3, 4]);
        header
    }

    /// A whole binary frame's header.
    fn header(len: u64) -> Vec<u8> {
        frame_header(0x82, len)
    }

    /// A frame: header and payload.
    fn frame(first: u8, len: usize) -> Vec<u8> {
        let mut frame = frame_header(first, len as u64);
        frame.extend(std::iter::repeat_n(0, len));
        frame
    }

    /// A scan already past the upgrade request.
    fn after_request() -> Scan {
        let mut scan = Scan::start();
        assert!(scan.follow(REQUEST, &mut PreLogin { left: 4_000 }));
        scan
    }

    #[test]
    fn after_login_a_message_is_counted_across_its_fragments_and_timed_until_its_last_byte() {
        let reading = Reading::default();
        reading.open(100, Duration::from_secs(5));
        let mut message = 0;
        let mut scan = after_request();
        let mut follow = |bytes: &[u8]| {
            scan.follow(bytes, &mut AfterLogin { reading: &reading, message: &mut message, limit: 100 })
        };
        // One frame, whole: counted, no timer.
        assert!(follow(&frame(0x82, 100)));
        assert!(reading.partial_deadline().is_none());
        // In fragments, with a ping between: the timer runs from the first
        // fragment, longer as the message grows, and the sum is what counts.
        assert!(follow(&frame(0x02, 60)));
        let deadline = reading.partial_deadline().expect("no timer for a fragmented message");
        assert!(deadline <= Instant::now() + Duration::from_secs(6));
        assert!(follow(&frame(0x89, 4)));
        assert!(follow(&frame(0x00, 30)));
        assert!(reading.partial_deadline().is_some_and(|later| later >= deadline));
        // The last fragment's header does not stop the timer: its last
        // byte does.
        assert!(follow(&frame_header(0x80, 10)));
        assert!(follow(&[0; 9]));
        assert!(reading.partial_deadline().is_some(), "the timer stopped before the message was whole");
        assert!(follow(&[0]));
        assert!(reading.partial_deadline().is_none(), "the whole message left the timer running");
        // A next message starts from nothing; past the limit is refused.
        assert!(follow(&frame(0x02, 90)));
        assert!(!follow(&frame_header(0x00, 11)));
    }

    #[test]
    fn a_large_frame_goes_as_fragments_no_larger_than_a_wire_frame() {
        let bytes: Vec<u8> = (0..40_000u32).map(|n| n as u8).collect();
        let mut joined = Vec::new();
        let mut kinds = Vec::new();
        for message in fragments(bytes.clone()) {
            let Message::Frame(frame) = message else { panic!("not a frame") };
            assert!(frame.payload().len() <= MAX_WIRE_FRAME_BYTES);
            kinds.push((frame.header().opcode, frame.header().is_final));
            joined.extend_from_slice(frame.payload());
        }
        assert_eq!(joined, bytes);
        assert_eq!(
            kinds,
            [
                (OpCode::Data(Data::Binary), false),
                (OpCode::Data(Data::Continue), false),
                (OpCode::Data(Data::Continue), true)
            ]
        );
    }

    #[test]
    fn before_login_a_frame_announcing_more_than_the_budget_is_refused_at_its_header() {
        let within = |left: usize| PreLogin { left: left as u64 };
        // A login-sized frame, then another, byte by byte or at once.
        let mut stream = REQUEST.to_vec();
        for _ in 0..2 {
            stream.extend(header(200));
            stream.extend([0; 200]);
        }
        let mut scan = Scan::start();
        assert!(scan.follow(&stream, &mut within(MAX_PREAUTH_BYTES - stream.len())));
        let mut scan = Scan::start();
        assert!(stream.iter().all(|byte| scan.follow(&[*byte], &mut within(1_000))));
        // Headers announcing 8 MiB, 70,000 or 2,000 bytes with 1,000 left
        // are refused, in whichever length form.
        for len in [8 << 20, 70_000, 2_000] {
            let mut scan = after_request();
            assert!(!scan.follow(&header(len), &mut within(1_000)), "{len}");
        }
        // A frame split across reads is followed: its payload is skipped,
        // and the next header is checked.
        let mut scan = after_request();
        assert!(scan.follow(&header(300)[..3], &mut within(3_000)));
        assert!(scan.follow(&header(300)[3..], &mut within(3_000)));
        assert!(scan.follow(&[0; 300], &mut within(3_000)));
        assert!(!scan.follow(&header(5_000), &mut within(3_000)));
        // No message in fragments before login: neither a first fragment
        // nor a continuation; a ping is fine.
        for first in [0x02, 0x00, 0x80] {
            let mut scan = after_request();
            assert!(!scan.follow(&frame_header(first, 10), &mut within(3_000)), "{first:#x}");
        }
        assert!(after_request().follow(&frame(0x89, 4), &mut within(3_000)));
    }

    /// The WebSocket library would also take a request whose lines end in
    /// a bare LF, or that starts with blank lines; the scan would then lose
    /// where the frames begin. Refused.
    #[test]
    fn an_upgrade_request_the_scan_cannot_end_where_the_parser_does_is_refused() {
        let bare = b"GET / HTTP/1.1\nHost: hush-relay\nUpgrade: websocket\n\n";
        let mixed = b"GET / HTTP/1.1\r\nHost: hush-relay\r\n\n";
        let blank = b"\r\n\r\nGET / HTTP/1.1\r\n\r\n";
        for request in [&bare[..], &mixed[..], &blank[..]] {
            let mut scan = Scan::start();
            assert!(
                !scan.follow(request, &mut PreLogin { left: 4_000 }),
                "{:?}",
                String::from_utf8_lossy(request)
            );
        }
        // One blank line before the request is harmless: the scan still
        // ends where the request does.
        let mut scan = Scan::start();
        let mut leading = b"\r\n".to_vec();
        leading.extend_from_slice(REQUEST);
        assert!(scan.follow(&leading, &mut PreLogin { left: 4_000 }));
        assert!(matches!(scan, Scan::Header { len: 0, .. }));
    }
}

//! The connection to the relay: TLS 1.3 with the relay's certificate pinned
//! (no certificate authority is trusted), WebSocket on top, one frame per
//! binary message (sent as fragments of at most
//! [`MAX_WIRE_FRAME_BYTES`] each).

use std::sync::Arc;
use std::time::Duration;

use futures_util::{Sink, SinkExt, StreamExt};
use hush_proto::limits::{MAX_FRAME_BYTES, MAX_WIRE_FRAME_BYTES};
use hush_proto::{CertificatePin, ClientFrame, RelayFrame};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::WebSocketStream;

use crate::error::ClientError;

/// How long connecting (TCP, TLS and WebSocket) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Accepts exactly the certificate whose SHA-256 is the pin.
#[derive(Debug)]
struct PinVerifier {
    pin: CertificatePin,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if CertificatePin::of_certificate(end_entity) == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("relay certificate does not match the pinned certificate".into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not accepted".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// TLS 1.3 with the hybrid X25519MLKEM768 key exchange only (traffic
/// recorded today cannot be decrypted by a quantum computer later), the
/// relay's certificate checked against its pin, and no server name sent:
/// the relay has one certificate, and the name would only tell the network
/// what the connection is for.
fn tls_config(pin: CertificatePin) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    tls_config_with(pin, rustls::crypto::aws_lc_rs::kx_group::X25519MLKEM768)
}

fn tls_config_with(
    pin: CertificatePin,
    group: &'static dyn rustls::crypto::SupportedKxGroup,
) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let provider = Arc::new(rustls::crypto::CryptoProvider {
        kx_groups: vec![group],
        ..rustls::crypto::aws_lc_rs::default_provider()
    });
    let verifier = Arc::new(PinVerifier { pin, provider: Arc::clone(&provider) });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|error| ClientError::Transport(error.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.enable_sni = false;
    Ok(Arc::new(config))
}

/// A connection to the relay, speaking frames.
pub struct Connection {
    ws: WebSocketStream<TlsStream<TcpStream>>,
}

impl Connection {
    /// Connects to `address` and checks the relay's certificate against `pin`.
    /// A comma-separated list names the relays of one cluster: they are
    /// tried in turn, from a random one (so a cluster's clients spread
    /// over its relays), until one answers; a relay that is down, or that
    /// shows another certificate, is passed over.
    pub async fn open(address: &str, pin: CertificatePin) -> Result<Self, ClientError> {
        let relays: Vec<&str> = address.split(',').collect();
        let start = if relays.len() > 1 { rand::random::<usize>() % relays.len() } else { 0 };
        let mut failure = None;
        for relay in relays.iter().cycle().skip(start).take(relays.len()) {
            let attempt = tokio::time::timeout(CONNECT_TIMEOUT, Self::open_inner(relay, pin))
                .await
                .map_err(|_| ClientError::Unreachable(format!("{relay}: timed out")))
                .and_then(|opened| opened);
            match attempt {
                Ok(connection) => return Ok(connection),
                // A wrong certificate is the error worth reporting, even if
                // other relays were merely down.
                Err(error) => {
                    if !matches!(failure, Some(ClientError::WrongCertificate)) {
                        failure = Some(error);
                    }
                }
            }
        }
        Err(failure.unwrap_or_else(|| ClientError::Unreachable(format!("{address}: no relay address"))))
    }

    /// Like [`Self::open`], from a chosen local address (load tests spread
    /// connections over several loopback source addresses).
    pub async fn open_from(
        address: &str,
        pin: CertificatePin,
        local: std::net::IpAddr,
    ) -> Result<Self, ClientError> {
        tokio::time::timeout(CONNECT_TIMEOUT, Self::open_inner_from(address, pin, Some(local)))
            .await
            .map_err(|_| ClientError::Unreachable(format!("{address}: timed out")))?
    }

    async fn open_inner(address: &str, pin: CertificatePin) -> Result<Self, ClientError> {
        Self::open_inner_from(address, pin, None).await
    }

    async fn tcp(address: &str, local: Option<std::net::IpAddr>) -> std::io::Result<TcpStream> {
        let Some(local) = local else { return TcpStream::connect(address).await };
        let remote = tokio::net::lookup_host(address)
            .await?
            .next()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no address"))?;
        let socket = if remote.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.bind(std::net::SocketAddr::new(local, 0))?;
        socket.connect(remote).await
    }

    async fn open_inner_from(
        address: &str,
        pin: CertificatePin,
        local: Option<std::net::IpAddr>,
    ) -> Result<Self, ClientError> {
        let tcp = Self::tcp(address, local)
            .await
            .map_err(|error| ClientError::Unreachable(format!("{address}: {error}")))?;
        let _ = tcp.set_nodelay(true);
        let connector = tokio_rustls::TlsConnector::from(tls_config(pin)?);
        let name =
            ServerName::try_from("hush-relay").map_err(|error| ClientError::Transport(error.to_string()))?;
        let tls = connector.connect(name, tcp).await.map_err(|error| {
            if error.to_string().contains("pinned") {
                ClientError::WrongCertificate
            } else {
                ClientError::Transport(format!("TLS: {error}"))
            }
        })?;
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_FRAME_BYTES))
            .max_frame_size(Some(MAX_WIRE_FRAME_BYTES));
        let (ws, _) = tokio_tungstenite::client_async_with_config("wss://hush-relay/", tls, Some(config))
            .await
            .map_err(|error| ClientError::Transport(format!("WebSocket: {error}")))?;
        Ok(Self { ws })
    }

    /// Sends one frame.
    pub async fn send(&mut self, frame: &ClientFrame) -> Result<(), ClientError> {
        feed(&mut self.ws, frame.encode()).await?;
        self.ws.flush().await.map_err(|error| ClientError::Transport(error.to_string()))
    }

    /// Sends raw bytes as one message (tests use this to send garbage).
    pub async fn send_raw(&mut self, bytes: Vec<u8>) -> Result<(), ClientError> {
        self.ws.send(Message::binary(bytes)).await.map_err(|error| ClientError::Transport(error.to_string()))
    }

    /// Receives the next frame. A relay `Error` frame becomes an error.
    pub async fn recv(&mut self) -> Result<RelayFrame, ClientError> {
        read_frame(&mut self.ws).await
    }

    /// Whether the relay ended this connection (or sent something nobody
    /// asked for): checked without waiting, before a connection that sat
    /// unused is used again, so that a request is not lost on it. A frame
    /// that arrived is consumed, so only for connections that receive
    /// nothing unasked.
    pub fn ended(&mut self) -> bool {
        use futures_util::FutureExt as _;
        self.ws.next().now_or_never().is_some()
    }

    /// Closes the connection politely.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }

    /// Splits into a sending and a receiving half, for pipelined use.
    pub fn split(self) -> (FrameSender, FrameReceiver) {
        let (sink, stream) = self.ws.split();
        (FrameSender { sink }, FrameReceiver { stream })
    }
}

type Ws = WebSocketStream<TlsStream<TcpStream>>;

/// Queues `bytes` as one binary message without flushing: one frame, or,
/// past [`MAX_WIRE_FRAME_BYTES`], fragments of that size (a binary frame,
/// then continuations, the last one final), so that neither side's
/// WebSocket buffers grow to a large payload's size and stay there.
async fn feed<S>(sink: &mut S, bytes: Vec<u8>) -> Result<(), ClientError>
where
    S: Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    let failed = |error: tokio_tungstenite::tungstenite::Error| ClientError::Transport(error.to_string());
    if bytes.len() <= MAX_WIRE_FRAME_BYTES {
        return sink.feed(Message::binary(bytes)).await.map_err(failed);
    }
    let bytes = Bytes::from(bytes);
    let pieces = bytes.len().div_ceil(MAX_WIRE_FRAME_BYTES);
    for n in 0..pieces {
        let start = n * MAX_WIRE_FRAME_BYTES;
        let piece = bytes.slice(start..(start + MAX_WIRE_FRAME_BYTES).min(bytes.len()));
        let opcode = OpCode::Data(if n == 0 { Data::Binary } else { Data::Continue });
        sink.feed(Message::Frame(Frame::message(piece, opcode, n + 1 == pieces))).await.map_err(failed)?;
    }
    Ok(())
}

/// The sending half of a split connection.
pub struct FrameSender {
    sink: futures_util::stream::SplitSink<Ws, Message>,
}

impl FrameSender {
    /// Queues a frame without flushing.
    pub async fn feed(&mut self, frame: &ClientFrame) -> Result<(), ClientError> {
        feed(&mut self.sink, frame.encode()).await
    }

    /// Flushes queued frames.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        self.sink.flush().await.map_err(|error| ClientError::Transport(error.to_string()))
    }

    /// Sends one frame.
    pub async fn send(&mut self, frame: &ClientFrame) -> Result<(), ClientError> {
        feed(&mut self.sink, frame.encode()).await?;
        self.flush().await
    }
}

/// The receiving half of a split connection.
pub struct FrameReceiver {
    stream: futures_util::stream::SplitStream<Ws>,
}

impl FrameReceiver {
    /// Receives the next frame. A relay `Error` frame becomes an error.
    pub async fn recv(&mut self) -> Result<RelayFrame, ClientError> {
        read_frame(&mut self.stream).await
    }
}

/// Reads the next frame from a WebSocket (whole or split). A relay `Error`
/// frame becomes an error; pings and pongs are skipped.
async fn read_frame<S>(stream: &mut S) -> Result<RelayFrame, ClientError>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let message = stream
            .next()
            .await
            .ok_or(ClientError::Disconnected)?
            .map_err(|error| ClientError::Transport(error.to_string()))?;
        let bytes = match message {
            Message::Binary(bytes) => bytes,
            Message::Close(_) => return Err(ClientError::Disconnected),
            Message::Ping(_) | Message::Pong(_) => continue,
            _ => return Err(ClientError::Protocol("relay sent a non-binary message".into())),
        };
        return match RelayFrame::decode(&bytes).map_err(|error| ClientError::Protocol(error.to_string()))? {
            RelayFrame::Error { code, .. } => Err(ClientError::Relay(code)),
            frame => Ok(frame),
        };
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use hush_proto::ErrorCode;
    use rustls::crypto::aws_lc_rs::kx_group::{X25519, X25519MLKEM768};
    use rustls::NamedGroup;

    use super::*;

    /// What a TLS server sees of the client's hello: the server name and
    /// the key exchange groups on offer.
    #[tokio::test]
    async fn the_client_offers_only_the_hybrid_group_and_sends_no_server_name() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp);
            let start = acceptor.await.unwrap();
            let hello = start.client_hello();
            (hello.server_name().map(str::to_owned), hello.named_groups().map(<[NamedGroup]>::to_vec))
        });
        // The handshake goes no further: the server only reads the hello.
        let _ = Connection::open(&address, CertificatePin([0; 32])).await;
        let (name, groups) = server.await.unwrap();
        assert_eq!(name, None, "the client sent a server name");
        assert_eq!(groups, Some(vec![NamedGroup::X25519MLKEM768]));
    }

    /// A real relay: the hybrid group is negotiated, and a client offering
    /// only classical X25519 is refused.
    #[tokio::test]
    async fn the_relay_accepts_only_the_hybrid_key_exchange() {
        let relay = hush_testkit::TestRelay::start().unwrap();
        let pin: CertificatePin = relay.pin.parse().unwrap();
        let address = relay.address.to_string();
        let handshake = |group| {
            let address = address.clone();
            async move {
                let tcp = TcpStream::connect(&address).await.unwrap();
                let connector = tokio_rustls::TlsConnector::from(tls_config_with(pin, group).unwrap());
                let name = ServerName::try_from("hush-relay").unwrap();
                connector.connect(name, tcp).await
            }
        };
        let tls = handshake(X25519MLKEM768).await.expect("the hybrid handshake failed");
        let negotiated = tls.get_ref().1.negotiated_key_exchange_group().map(|group| group.name());
        assert_eq!(negotiated, Some(NamedGroup::X25519MLKEM768));
        assert!(handshake(X25519).await.is_err(), "the relay accepted classical X25519 alone");
    }

    /// Before login, a client may send a few kilobytes in all: past them the
    /// relay reads no more and drops the connection (it holds no megabytes
    /// for a connection that proved nothing).
    #[tokio::test]
    async fn a_client_that_has_not_logged_in_may_send_a_few_kilobytes() {
        let relay = hush_testkit::TestRelay::start().unwrap();
        let pin: CertificatePin = relay.pin.parse().unwrap();
        let address = relay.address.to_string();
        let mut connection = Connection::open(&address, pin).await.unwrap();
        connection.send(&ClientFrame::Hello { version: hush_proto::PROTOCOL_VERSION }).await.unwrap();
        assert!(matches!(connection.recv().await.unwrap(), RelayFrame::Challenge { .. }));
        let big = vec![0; hush_proto::limits::MAX_PREAUTH_BYTES];
        let _ = connection.ws.send(Message::binary(big)).await;
        let refused = connection.recv().await;
        assert!(
            matches!(refused, Err(ClientError::Disconnected | ClientError::Transport(_))),
            "got {refused:?}"
        );
    }

    /// Past its per-address limit the relay closes new connections before
    /// TLS; a slot freed is usable again.
    #[tokio::test]
    async fn connections_past_the_per_address_limit_are_closed_before_tls() {
        let config = hush_relay::RelayConfig { max_connections_per_address: 2, ..Default::default() };
        let relay = hush_testkit::TestRelay::start_with(&config).unwrap();
        let pin: CertificatePin = relay.pin.parse().unwrap();
        let address = relay.address.to_string();
        let first = Connection::open(&address, pin).await.unwrap();
        let _second = Connection::open(&address, pin).await.unwrap();
        let third = Connection::open(&address, pin).await;
        assert!(third.is_err(), "a third connection from one address was served");
        drop(first);
        // The relay notices the closed connection on its own time.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match Connection::open(&address, pin).await {
                Ok(_) => break,
                Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(error) => panic!("the freed slot was never reused: {error}"),
            }
        }
    }

    /// After login, a message longer than one wire frame must come in
    /// fragments: one frame that long ends the connection (a relay that
    /// took it would keep a buffer that size while the connection idles).
    #[tokio::test]
    async fn after_login_one_frame_longer_than_a_wire_frame_ends_the_connection() {
        let relay = hush_testkit::TestRelay::start().unwrap();
        let invite: hush_proto::Invite = relay.invite().unwrap().parse().unwrap();
        let client = crate::Client::create(
            &relay.profile_dir("a"),
            b"pw",
            hush_store::KdfParams::FAST,
            0,
            &invite,
            "a",
        )
        .unwrap();
        crate::Session::register(&client, &invite.code).await.unwrap().close().await;
        let login = crate::Credentials::Login { account: client.account() };
        let (mut connection, _) = crate::Session::admit(&client, login).await.unwrap();
        // A well-formed frame of 24 KB (two key packages of 12 KB), sent
        // in fragments, is taken and answered.
        let upload = |request| ClientFrame::UploadKeyPackages {
            request,
            one_time: vec![vec![7; 12_000], vec![8; 12_000]],
            last_resort: None,
            expires_at: u64::MAX / 2,
        };
        connection.send(&upload(1)).await.unwrap();
        let answered = tokio::time::timeout(Duration::from_secs(10), connection.recv()).await.unwrap();
        assert!(
            !matches!(
                answered,
                Err(ClientError::Relay(hush_proto::ErrorCode::TooLarge)
                    | ClientError::Disconnected
                    | ClientError::Transport(_))
            ),
            "a fragmented 24 KB frame was refused: {answered:?}"
        );
        // The same frame in one WebSocket frame ends the connection.
        connection.send_raw(upload(2).encode()).await.unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(10), connection.recv()).await.unwrap();
        assert!(
            matches!(ended, Err(ClientError::Relay(hush_proto::ErrorCode::TooLarge))),
            "one 24 KB frame was taken: {ended:?}"
        );
    }

    /// A profile registered at `relay`, with its contact queue made.
    async fn registered(relay: &hush_testkit::TestRelay, name: &str) -> crate::Client {
        let invite: hush_proto::Invite = relay.invite().unwrap().parse().unwrap();
        let dir = relay.profile_dir(name);
        let client =
            crate::Client::create(&dir, b"pw", hush_store::KdfParams::FAST, 0, &invite, name).unwrap();
        crate::Session::register(&client, &invite.code).await.unwrap().close().await;
        client
    }

    /// A queue connection never needs a large message: one past its
    /// plane's limit is refused as its fragments arrive, where the same
    /// kind of frame, smaller, is merely answered as out of place.
    #[tokio::test]
    async fn a_queue_connection_takes_no_message_past_its_plane_s_limit() {
        use ed25519_dalek::Signer as _;
        let relay = hush_testkit::TestRelay::start().unwrap();
        let client = registered(&relay, "a").await;
        let (queue, owner) = client.engine().own_queues().unwrap().remove(0);
        let pin: CertificatePin = relay.pin.parse().unwrap();
        let mut connection = Connection::open(&relay.address.to_string(), pin).await.unwrap();
        let nonce = crate::handshake::hello(&mut connection).await.unwrap();
        let proof = owner.sign(&hush_proto::queue_auth_message(&nonce, &pin, &queue)).to_bytes();
        connection
            .send(&ClientFrame::SubscribeQueues { request: 1, proofs: vec![(queue, proof)] })
            .await
            .unwrap();
        assert!(matches!(connection.recv().await.unwrap(), RelayFrame::Accepted { request: 1, .. }));
        let send = |request, len| ClientFrame::SealedSend {
            request,
            targets: vec![hush_proto::Capability { queue, secret: [1; 32] }],
            payload: vec![0; len],
            ttl_secs: 0,
        };
        connection.send(&send(2, 20_000)).await.unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(10), connection.recv()).await.unwrap();
        assert!(
            matches!(answer, Ok(RelayFrame::Rejected { request: 2, code: ErrorCode::Unexpected })),
            "{answer:?}"
        );
        connection.send(&send(3, 100_000)).await.unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(10), connection.recv()).await.unwrap();
        assert!(matches!(ended, Err(ClientError::Relay(ErrorCode::TooLarge))), "100 KB taken: {ended:?}");
    }

    /// A message sent in fragments must be whole in time: finished within
    /// the relay's timeout it is answered, trickled past it the connection
    /// ends (and holds nothing longer).
    #[tokio::test]
    async fn a_message_left_unfinished_in_fragments_ends_the_connection_at_its_deadline() {
        let config = hush_relay::RelayConfig { fragmented_message_timeout_secs: 1, ..Default::default() };
        let relay = hush_testkit::TestRelay::start_with(&config).unwrap();
        let client = registered(&relay, "a").await;
        let login = crate::Credentials::Login { account: client.account() };
        let (mut connection, _) = crate::Session::admit(&client, login).await.unwrap();
        let upload = ClientFrame::UploadKeyPackages {
            request: 1,
            one_time: vec![vec![7; 12_000], vec![8; 12_000]],
            last_resort: None,
            expires_at: u64::MAX / 2,
        };
        let bytes = Bytes::from(upload.encode());
        let (first, rest) = (bytes.slice(..MAX_WIRE_FRAME_BYTES), bytes.slice(MAX_WIRE_FRAME_BYTES..));
        let fragment = |piece: Bytes, first: bool, last: bool| {
            let opcode = OpCode::Data(if first { Data::Binary } else { Data::Continue });
            Message::Frame(Frame::message(piece, opcode, last))
        };
        // Slow, but in time.
        connection.ws.send(fragment(first.clone(), true, false)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        connection.ws.send(fragment(rest, false, true)).await.unwrap();
        let answered = tokio::time::timeout(Duration::from_secs(10), connection.recv()).await.unwrap();
        assert!(matches!(answered, Ok(RelayFrame::Accepted { request: 1, .. })), "{answered:?}");
        // Never finished.
        connection.ws.send(fragment(first, true, false)).await.unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(10), connection.recv())
            .await
            .expect("the relay waited past the deadline for the rest of the message");
        assert!(matches!(ended, Err(ClientError::Disconnected | ClientError::Transport(_))), "{ended:?}");
    }
}

//! TLS for one connection through rustls' unbuffered API, so that the
//! buffers are the relay's and an idle connection holds none.
//!
//! rustls' buffered connection (what tokio-rustls drives) keeps a 4 KiB
//! read buffer for as long as the connection lives, whether anything is
//! arriving or not: a quarter of an idle connection's memory at the relay.
//! Here what arrives is read into a buffer on the stack, kept on the heap
//! only while a record is incomplete or its data unread, and what is sent
//! is kept only until the socket takes it.

use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{
    AppDataRecord, ConnectionState, EncodeError, EncryptError, InsufficientSizeError, UnbufferedStatus,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Bytes read from the socket at a time (a full TLS record and then some).
const READ_CHUNK: usize = 17 * 1024;
/// Most TLS bytes kept while a record or a handshake message is incomplete
/// (rustls refuses handshake messages over 64 KiB and records over 16 KiB
/// plus overhead before this is reached).
const MAX_INCOMING: usize = 80 * 1024;
/// Plaintext taken per write: one full record.
const MAX_WRITE: usize = 16 * 1024;
/// Encrypted bytes queued before a write waits for the socket to take them.
const SEND_AHEAD: usize = 32 * 1024;

/// A server-side TLS stream over TCP.
pub(crate) struct TlsStream {
    io: TcpStream,
    conn: UnbufferedServerConnection,
    /// TLS bytes received and not processed yet: an incomplete record, if
    /// anything (nothing is allocated between records).
    incoming: Vec<u8>,
    /// Decrypted application data not read yet, from `read_at`.
    plaintext: Vec<u8>,
    read_at: usize,
    /// TLS bytes for the peer, from `sent`.
    outgoing: Vec<u8>,
    sent: usize,
    /// The peer sent its close_notify: reading is over.
    peer_closed: bool,
    /// Our close_notify is queued.
    closing: bool,
}

/// What a step of processing is for.
#[derive(Clone, Copy)]
enum Want<'a> {
    Read,
    Write(&'a [u8]),
    Close,
}

/// What a step of processing did.
enum Step {
    /// Something was processed or queued: go on.
    Again,
    /// Nothing more can be done without more bytes from the peer.
    NeedInput,
    /// The plaintext was encrypted and queued.
    Wrote(usize),
    /// Both sides sent close_notify.
    Closed,
}

/// Accepts a TLS connection on `io`: the whole handshake, nothing more.
pub(crate) async fn accept(config: Arc<rustls::ServerConfig>, io: TcpStream) -> io::Result<TlsStream> {
    let conn = UnbufferedServerConnection::new(config).map_err(tls_error)?;
    let mut stream = TlsStream {
        io,
        conn,
        incoming: Vec::new(),
        plaintext: Vec::new(),
        read_at: 0,
        outgoing: Vec::new(),
        sent: 0,
        peer_closed: false,
        closing: false,
    };
    match poll_fn(|cx| stream.poll_handshake(cx)).await {
        Ok(()) => Ok(stream),
        Err(error) => {
            // Tell the peer why (an alert rustls queued), if the socket
            // takes it at once; the caller's deadline bounds the rest.
            stream.queue_alert();
            let _ = poll_fn(|cx| Poll::Ready(stream.poll_send(cx))).await;
            Err(error)
        }
    }
}

impl TlsStream {
    /// Runs one step of rustls' state machine on what was received.
    fn process(&mut self, want: Want<'_>) -> io::Result<Step> {
        let UnbufferedStatus { mut discard, state } = self.conn.process_tls_records(&mut self.incoming);
        let step = match state.map_err(tls_error)? {
            ConnectionState::ReadTraffic(mut records) => {
                while let Some(record) = records.next_record() {
                    let AppDataRecord { discard: more, payload, .. } = record.map_err(tls_error)?;
                    discard += more;
                    self.plaintext.extend_from_slice(payload);
                }
                Step::Again
            }
            ConnectionState::EncodeTlsData(mut encode) => {
                append(
                    &mut self.outgoing,
                    0,
                    |buffer| encode.encode(buffer),
                    |error| match error {
                        EncodeError::InsufficientSize(size) => Some(*size),
                        _ => None,
                    },
                )?;
                Step::Again
            }
            // Queued in `outgoing`, which goes out before anything queued later.
            ConnectionState::TransmitTlsData(transmit) => {
                transmit.done();
                Step::Again
            }
            ConnectionState::PeerClosed => {
                self.peer_closed = true;
                Step::Again
            }
            ConnectionState::Closed => Step::Closed,
            ConnectionState::BlockedHandshake => Step::NeedInput,
            ConnectionState::WriteTraffic(mut traffic) => match want {
                Want::Read => Step::NeedInput,
                Want::Write(data) => {
                    // A record's header and tag on each full record, and one more.
                    let estimate = data.len() + (data.len() / MAX_WRITE + 1) * 32;
                    append(
                        &mut self.outgoing,
                        estimate,
                        |buffer| traffic.encrypt(data, buffer),
                        size_needed,
                    )?;
                    Step::Wrote(data.len())
                }
                Want::Close => {
                    append(&mut self.outgoing, 32, |buffer| traffic.queue_close_notify(buffer), size_needed)?;
                    self.closing = true;
                    Step::Again
                }
            },
            _ => return Err(io::Error::new(io::ErrorKind::InvalidData, "unexpected TLS state")),
        };
        if discard > 0 {
            self.incoming.drain(..discard);
        }
        if self.incoming.is_empty() && self.incoming.capacity() > 0 {
            self.incoming = Vec::new();
        }
        Ok(step)
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if !self.conn.is_handshaking() {
                return self.poll_send(cx);
            }
            match self.process(Want::Read)? {
                Step::Again => {}
                Step::NeedInput => {
                    ready!(self.poll_send(cx))?;
                    if ready!(self.poll_receive(cx))? == 0 {
                        return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                    }
                }
                Step::Wrote(_) | Step::Closed => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "TLS closed in handshake",
                    )))
                }
            }
        }
    }

    /// Reads what the socket has into `incoming`; the number of bytes (0 at
    /// the end of the stream).
    fn poll_receive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        // Not zeroed first: only what the socket fills is looked at.
        let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut read = ReadBuf::uninit(&mut chunk);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut read))?;
        let received = read.filled();
        if self.incoming.len() + received.len() > MAX_INCOMING {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, "TLS message too large")));
        }
        self.incoming.extend_from_slice(received);
        Poll::Ready(Ok(received.len()))
    }

    /// Writes what is queued for the peer until the socket has it all.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.outgoing.len() {
            let written = ready!(Pin::new(&mut self.io).poll_write(cx, &self.outgoing[self.sent..]))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += written;
        }
        if self.outgoing.capacity() > 0 {
            self.outgoing = Vec::new();
        }
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// Queues an alert rustls has for the peer after an error. (rustls is
    /// given what it was given before: it keeps offsets into that buffer
    /// while a handshake message spans records.)
    fn queue_alert(&mut self) {
        for _ in 0..4 {
            let UnbufferedStatus { state, .. } = self.conn.process_tls_records(&mut self.incoming);
            match state {
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    let encoded = append(
                        &mut self.outgoing,
                        0,
                        |buffer| encode.encode(buffer),
                        |error| match error {
                            EncodeError::InsufficientSize(size) => Some(*size),
                            _ => None,
                        },
                    );
                    if encoded.is_err() {
                        return;
                    }
                }
                Ok(ConnectionState::TransmitTlsData(transmit)) => transmit.done(),
                _ => return,
            }
        }
    }
}

fn size_needed(error: &EncryptError) -> Option<InsufficientSizeError> {
    match error {
        EncryptError::InsufficientSize(size) => Some(*size),
        _ => None,
    }
}

/// Appends what `write` puts in a buffer to `outgoing`: tried with
/// `estimate` bytes of room, then again with the room rustls asks for.
fn append<E: std::fmt::Display>(
    outgoing: &mut Vec<u8>,
    estimate: usize,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, E>,
    needed: impl Fn(&E) -> Option<InsufficientSizeError>,
) -> io::Result<()> {
    let start = outgoing.len();
    outgoing.resize(start + estimate, 0);
    let written = match write(&mut outgoing[start..]) {
        Ok(written) => written,
        Err(error) => {
            let Some(InsufficientSizeError { required_size }) = needed(&error) else {
                outgoing.truncate(start);
                return Err(io::Error::other(error.to_string()));
            };
            outgoing.resize(start + required_size, 0);
            match write(&mut outgoing[start..]) {
                Ok(written) => written,
                Err(error) => {
                    outgoing.truncate(start);
                    return Err(io::Error::other(error.to_string()));
                }
            }
        }
    };
    outgoing.truncate(start + written);
    Ok(())
}

fn tls_error(error: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

impl AsyncRead for TlsStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.read_at < this.plaintext.len() {
                let len = buf.remaining().min(this.plaintext.len() - this.read_at);
                buf.put_slice(&this.plaintext[this.read_at..this.read_at + len]);
                this.read_at += len;
                if this.read_at == this.plaintext.len() {
                    this.plaintext = Vec::new();
                    this.read_at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.peer_closed {
                return Poll::Ready(Ok(()));
            }
            match this.process(Want::Read)? {
                Step::Again | Step::Wrote(_) => {}
                Step::Closed => return Poll::Ready(Ok(())),
                Step::NeedInput => {
                    // What processing queued (session tickets after the
                    // handshake) goes out without waiting for a write.
                    if let Poll::Ready(Err(error)) = this.poll_send(cx) {
                        return Poll::Ready(Err(error));
                    }
                    if ready!(this.poll_receive(cx))? == 0 {
                        // The peer closed the socket without a close_notify.
                        return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                    }
                }
            }
        }
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.closing {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if this.outgoing.len() - this.sent >= SEND_AHEAD {
            ready!(this.poll_send(cx))?;
        }
        let data = &data[..data.len().min(MAX_WRITE)];
        loop {
            match this.process(Want::Write(data))? {
                Step::Again => {}
                Step::Wrote(written) => {
                    // Started at once; what the socket does not take now
                    // waits for the next write or flush.
                    if let Poll::Ready(Err(error)) = this.poll_send(cx) {
                        return Poll::Ready(Err(error));
                    }
                    return Poll::Ready(Ok(written));
                }
                Step::NeedInput | Step::Closed => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while !this.closing {
            match this.process(Want::Close)? {
                Step::Again | Step::Wrote(_) => {}
                // Closed already, or never open: nothing to say.
                Step::NeedInput | Step::Closed => this.closing = true,
            }
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::CryptoProvider;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Trusts the one certificate whose pin it has, as the client does.
    #[derive(Debug)]
    struct Pinned(hush_proto::CertificatePin, Arc<CryptoProvider>);

    impl ServerCertVerifier for Pinned {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            if hush_proto::CertificatePin::of_certificate(end_entity) == self.0 {
                Ok(ServerCertVerified::assertion())
            } else {
                Err(rustls::Error::General("not the pinned certificate".into()))
            }
        }

        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Err(rustls::Error::General("TLS 1.2".into()))
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.1.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.1.signature_verification_algorithms.supported_schemes()
        }
    }

    /// A relay's TLS configuration, and a client's for it.
    fn configs() -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
        let dir = tempfile::tempdir().unwrap();
        let identity = crate::tls::TlsIdentity::load_or_create(dir.path()).unwrap();
        let provider = Arc::new(rustls::crypto::CryptoProvider {
            kx_groups: vec![rustls::crypto::aws_lc_rs::kx_group::X25519MLKEM768],
            ..rustls::crypto::aws_lc_rs::default_provider()
        });
        let verifier = Arc::new(Pinned(identity.pin(), Arc::clone(&provider)));
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        (identity.server_config().unwrap(), Arc::new(client))
    }

    /// Everything the client sends comes back whole, through records cut
    /// anywhere, a key update and both closes; and once the peer has closed,
    /// the server's stream holds no buffer at all.
    #[tokio::test]
    async fn data_goes_both_ways_whole_and_nothing_is_kept_between_records() {
        let (server_config, client_config) = configs();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut tls = accept(server_config, tcp).await.unwrap();
            let mut chunk = vec![0u8; 5_000];
            loop {
                let read = tls.read(&mut chunk).await.unwrap();
                if read == 0 {
                    break;
                }
                tls.write_all(&chunk[..read]).await.unwrap();
                tls.flush().await.unwrap();
            }
            let held = (tls.incoming.capacity(), tls.plaintext.capacity(), tls.outgoing.capacity());
            tls.shutdown().await.unwrap();
            held
        });

        let tcp = TcpStream::connect(address).await.unwrap();
        let name = ServerName::try_from("hush-relay").unwrap();
        let mut client = tokio_rustls::TlsConnector::from(client_config).connect(name, tcp).await.unwrap();
        let sent: Vec<u8> = (0..300_000u32).map(|n| (n % 251) as u8).collect();
        // A key update (the server must take it, and answer with its own)
        // in the middle of the data.
        client.write_all(&sent[..1_000]).await.unwrap();
        client.get_mut().1.refresh_traffic_keys().unwrap();
        let (mut from_server, mut to_server) = tokio::io::split(client);
        let reader = tokio::spawn(async move {
            let mut echoed = Vec::new();
            from_server.read_to_end(&mut echoed).await.map(|_| echoed)
        });
        for (n, piece) in sent[1_000..].chunks(7_001).enumerate() {
            to_server.write_all(piece).await.unwrap();
            if n == 20 {
                to_server.flush().await.unwrap();
            }
        }
        to_server.flush().await.unwrap();
        to_server.shutdown().await.unwrap();
        let echoed = reader.await.unwrap().expect("the server did not close cleanly");
        assert!(echoed == sent, "{} bytes came back of {}", echoed.len(), sent.len());
        assert_eq!(server.await.unwrap(), (0, 0, 0), "buffers kept after the last record");
    }

    /// A handshake that breaks off inside a handshake message spanning
    /// records (a hello announcing more than it carries, then the end of
    /// the stream) fails cleanly: no panic, an error for the caller.
    #[tokio::test]
    async fn a_handshake_cut_inside_a_message_fails_cleanly() {
        let (server_config, _) = configs();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            accept(server_config, tcp).await.map(drop)
        });
        let mut tcp = TcpStream::connect(address).await.unwrap();
        // A handshake record carrying the start of a ClientHello that
        // announces 256 bytes, then garbage, then the end of the stream.
        tcp.write_all(&[0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x00, 0x01, 0x00]).await.unwrap();
        tcp.write_all(&[0x17; 40]).await.unwrap();
        tcp.shutdown().await.unwrap();
        let accepted = server.await.expect("the handshake panicked");
        assert!(accepted.is_err());
    }

    /// A client that offers only classical key exchange gets an alert, not
    /// a silent close, and the handshake fails on both sides.
    #[tokio::test]
    async fn a_client_without_the_hybrid_group_is_refused_with_an_alert() {
        let (server_config, _) = configs();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            accept(server_config, tcp).await.map(drop)
        });
        let provider = Arc::new(rustls::crypto::CryptoProvider {
            kx_groups: vec![rustls::crypto::aws_lc_rs::kx_group::X25519],
            ..rustls::crypto::aws_lc_rs::default_provider()
        });
        let verifier = Arc::new(Pinned(hush_proto::CertificatePin([0; 32]), Arc::clone(&provider)));
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        let tcp = TcpStream::connect(address).await.unwrap();
        let name = ServerName::try_from("hush-relay").unwrap();
        let refused = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await;
        let error = refused.map(drop).expect_err("the handshake went through").to_string();
        assert!(error.contains("HandshakeFailure"), "no alert: {error}");
        assert!(server.await.unwrap().is_err());
    }
}

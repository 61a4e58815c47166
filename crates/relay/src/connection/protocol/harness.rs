//! The protocol without sockets, for the unit tests and the fuzz target: a
//! relay with a real store in a temporary directory, and clients whose
//! frames go in through a channel and whose answers and deliveries come out
//! of the outbound queue.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::{Signer, SigningKey};
use hush_proto::{
    auth_message, AccountId, AuthPurpose, CertificatePin, ClientFrame, ErrorCode, IdentityKey, RelayFrame,
    PROTOCOL_VERSION,
};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};

use super::{run, FrameSource, Outbound};
use crate::connection::ConnectionError;
use crate::hub::Hub;
use crate::server::Shared;
use crate::store::{Admin as _, SqliteStore};
use crate::tokens::TokenDesk;
use crate::RelayConfig;

/// The certificate pin clients sign their logins for.
pub(crate) const PIN: CertificatePin = CertificatePin([7; 32]);
/// The invite code every registration uses.
pub(crate) const INVITE: &str = "test-invite-code";
/// The token secret.
pub(crate) const TOKEN_SECRET: [u8; 32] = [5; 32];
/// Tokens per account and day.
pub(crate) const TOKENS_PER_DAY: u32 = 100;

/// What a client sends: a decoded frame, or a frame the transport could not
/// decode (as the error code the relay refuses it with).
type Incoming = Result<ClientFrame, ErrorCode>;

struct Frames(mpsc::UnboundedReceiver<Incoming>);

impl FrameSource for Frames {
    async fn next_frame(&mut self) -> Result<Incoming, ConnectionError> {
        match self.0.recv().await {
            Some(frame) => Ok(frame),
            None => Err(ConnectionError::Closed),
        }
    }
}

/// A relay with no listener: a store in a temporary directory, a hub.
pub(crate) struct Relay {
    pub(crate) shared: Arc<Shared>,
    pub(crate) shutdown: watch::Sender<bool>,
    /// Holds the store's directory (the tests open the store beside the relay).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) dir: tempfile::TempDir,
}

impl Relay {
    pub(crate) fn start() -> Self {
        // On tmpfs where there is one: durability is not under test here,
        // and the fuzzer runs this thousands of times.
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() };
        let dir = dir.unwrap();
        let path = dir.path().join("relay.db");
        let mut store = SqliteStore::open(&path).unwrap();
        let invite_hash: [u8; 32] = Sha256::digest(INVITE.as_bytes()).into();
        store.add_invite(&invite_hash, 100, u64::MAX / 2).unwrap();
        let hub = Arc::new(Hub::default());
        let pushes = Arc::clone(&hub);
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let (store, _worker) =
            crate::actor::spawn(move || Ok(store), move |queued| pushes.push(queued), Arc::clone(&metrics))
                .unwrap();
        let reader = crate::actor::spawn_reader(move || Ok(Box::new(SqliteStore::open(&path)?))).unwrap();
        let config = RelayConfig { tokens_per_day: TOKENS_PER_DAY, ..RelayConfig::default() };
        let tokens = TokenDesk::new(zeroize::Zeroizing::new(TOKEN_SECRET), TOKENS_PER_DAY);
        let shared = Arc::new(Shared { store, reader, hub, pin: PIN, config, metrics, tokens });
        Self { shared, shutdown: watch::channel(false).0, dir }
    }

    pub(crate) fn connect(&self) -> Peer {
        let (to, frames) = mpsc::unbounded_channel();
        let (outbound, from) = mpsc::channel(super::OUTBOUND_QUEUE);
        let shared = Arc::clone(&self.shared);
        let shutdown = self.shutdown.subscribe();
        let task = tokio::spawn(async move { run(shared, &mut Frames(frames), outbound, shutdown).await });
        Peer { to, from, task }
    }

    /// A new account with `key`, logged in.
    pub(crate) async fn register(&self, key: &SigningKey) -> (Peer, AccountId) {
        self.register_wiped_by(key, [0; 32]).await
    }

    /// As [`Self::register`], with the hash of a wipe secret.
    pub(crate) async fn register_wiped_by(&self, key: &SigningKey, wipe_hash: [u8; 32]) -> (Peer, AccountId) {
        let mut peer = self.connect();
        let nonce = peer.hello().await;
        let signature = key.sign(&auth_message(AuthPurpose::Register, &nonce, &PIN)).to_bytes();
        let identity_key = IdentityKey(key.verifying_key().to_bytes());
        peer.send(ClientFrame::Register { invite_code: INVITE.into(), identity_key, signature, wipe_hash });
        let account = identity_key.account();
        assert_eq!(peer.recv().await, RelayFrame::Ready { account, key_packages: 0 });
        (peer, account)
    }
}

/// One client's end.
pub(crate) struct Peer {
    pub(crate) to: mpsc::UnboundedSender<Incoming>,
    pub(crate) from: mpsc::Receiver<Outbound>,
    pub(crate) task: tokio::task::JoinHandle<Result<(), ConnectionError>>,
}

impl Peer {
    pub(crate) fn send(&self, frame: ClientFrame) {
        self.to.send(Ok(frame)).unwrap();
    }

    /// The next frame out, or `None` once the relay closes the connection.
    pub(crate) async fn next(&mut self) -> Option<RelayFrame> {
        match tokio::time::timeout(Duration::from_secs(10), self.from.recv())
            .await
            .expect("the relay went quiet")
        {
            Some(Outbound::Frame(out)) => Some(out.frame),
            Some(Outbound::Close) | None => None,
        }
    }

    pub(crate) async fn recv(&mut self) -> RelayFrame {
        self.next().await.expect("the relay closed the connection")
    }

    pub(crate) async fn hello(&mut self) -> [u8; 32] {
        self.send(ClientFrame::Hello { version: PROTOCOL_VERSION });
        match self.recv().await {
            RelayFrame::Challenge { nonce } => nonce,
            other => panic!("expected a challenge, got {other:?}"),
        }
    }

    /// The connection's end: the error frame sent, and that it closed.
    #[cfg(test)]
    pub(crate) async fn refused(mut self) -> ErrorCode {
        let code = match self.recv().await {
            RelayFrame::Error { code, .. } => code,
            other => panic!("expected an error, got {other:?}"),
        };
        assert!(self.next().await.is_none(), "the connection stayed open");
        assert!(matches!(self.task.await.unwrap(), Err(ConnectionError::Refused(c)) if c == code));
        code
    }
}

/// A commit payload announcing `next_key` (the signature is the members'
/// business; the relay only checks the key matches the frame).
pub(crate) fn announce(next_key: &[u8; 32], body: &[u8]) -> Vec<u8> {
    let announcement = hush_proto::KeyAnnouncement { next_key: *next_key, signature: [0; 64] };
    hush_proto::announced_payload(hush_proto::COMMIT_PAYLOAD_TAG, &announcement, body)
}

/// A sealed commit making a fresh group (`seed`) whose Welcome goes to
/// `to`'s introduction mailbox.
pub(crate) fn introduction(request: u32, seed: u8, to: AccountId, welcome: &[u8]) -> ClientFrame {
    let group = hush_proto::GroupId(vec![seed; 16]);
    let next_key = key(seed).verifying_key().to_bytes();
    let payload = announce(&next_key, b"create");
    let message = hush_proto::commit_auth_message(&group, 0, &payload, Some(welcome), &next_key);
    ClientFrame::SealedCommit {
        request,
        group,
        epoch: 0,
        targets: vec![],
        rotate: vec![],
        payload,
        welcome: Some((vec![hush_proto::Destination::Account(to)], welcome.to_vec())),
        next_key,
        signature: key(seed.wrapping_add(1)).sign(&message).to_bytes(),
    }
}

/// A fixed signing key, so that inputs can name its account.
pub(crate) fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

/// Today's tokens for a logged-in peer.
pub(crate) async fn tokens(peer: &mut Peer, count: usize) -> Vec<hush_proto::tokens::Token> {
    let request = hush_proto::tokens::TokenRequest::new(count, &mut rand::rngs::OsRng);
    peer.send(ClientFrame::IssueTokens { request: 900, blinded: request.blinded().to_vec() });
    let RelayFrame::Tokens { request: 900, issued } = peer.recv().await else { panic!("no tokens") };
    let today = issued.day;
    request.finish(&issued, today).unwrap()
}

impl Relay {
    /// A sealed connection opened with `token`.
    pub(crate) async fn sealed(&self, token: hush_proto::tokens::Token) -> Peer {
        let mut peer = self.connect();
        let _ = peer.hello().await;
        peer.send(ClientFrame::Spend { request: 901, token });
        assert_eq!(peer.recv().await, RelayFrame::Accepted { request: 901, inactive: vec![] });
        peer
    }

    /// A connection receiving from `queues`, each with its owner key,
    /// delivery started and the first `QueueEmpty` read.
    pub(crate) async fn receive(&self, queues: &[(hush_proto::QueueId, &SigningKey)]) -> Peer {
        let mut peer = self.connect();
        let nonce = peer.hello().await;
        let proofs = queues
            .iter()
            .map(|(queue, owner)| {
                (*queue, owner.sign(&hush_proto::queue_auth_message(&nonce, &PIN, queue)).to_bytes())
            })
            .collect();
        peer.send(ClientFrame::SubscribeQueues { request: 902, proofs });
        assert_eq!(peer.recv().await, RelayFrame::Accepted { request: 902, inactive: vec![] });
        peer.send(ClientFrame::Subscribe);
        peer
    }
}

#[cfg(test)]
impl Peer {
    /// Creates a queue on this sealed connection.
    pub(crate) async fn create_queue(
        &mut self,
        owner: &SigningKey,
        secret: &[u8; 32],
    ) -> hush_proto::QueueId {
        self.send(ClientFrame::CreateQueue {
            request: 903,
            owner_key: owner.verifying_key().to_bytes(),
            write_hash: hush_proto::write_hash(secret),
        });
        match self.recv().await {
            RelayFrame::QueueCreated { request: 903, queue } => queue,
            other => panic!("expected a queue, got {other:?}"),
        }
    }
}

//! The relay's protocol as a structure-aware fuzz target (`hush-fuzz
//! relay_session`; built only with the `fuzzing` feature).
//!
//! One hostile client (Mallory) sends arbitrary frames to a relay with its
//! real store, while two honest clients (Bob and Carol) are logged in and
//! subscribed, and Carol also receives from a queue ([`CAROL_QUEUE`], whose
//! write secret Mallory knows, as a member of a conversation would). An
//! input is one byte (its value modulo 3: Mallory's frames start on a new
//! connection before any proof, after logging in, or on a sealed
//! connection opened with a token) and then up to
//! [`MAX_FRAMES`] frames, each a 2-byte big-endian length and that many
//! bytes, decoded as the transport decodes them: one that does not decode
//! is refused as it would be on a socket.
//!
//! Beyond not panicking, the relay must:
//! - answer every request it read exactly once, and nothing it was not
//!   asked (all of them unless it refused the connection);
//! - keep Bob and Carol connected, and deliver to them, and to Mallory,
//!   only payloads that Mallory addressed to them;
//! - still carry a message from Bob to Carol and back afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::time::Duration;

use hush_proto::{
    AccountId, Capability, ClientFrame, DecodeError, Destination, ErrorCode, IdentityKey, QueueId, RelayFrame,
};

use crate::connection::protocol::harness::{introduction, key, tokens, Peer, Relay};
use crate::connection::protocol::Outbound;

/// The most frames one input sends: below the per-connection burst, so the
/// rate limit never sleeps.
pub const MAX_FRAMES: usize = 64;
/// The signing-key seeds of Mallory, Bob and Carol (see [`account`]).
pub const MALLORY: u8 = 1;
/// Bob's key seed.
pub const BOB: u8 = 2;
/// Carol's key seed.
pub const CAROL: u8 = 3;
/// Writes the honest traffic after Mallory's session.
const DAVE: u8 = 4;
/// Carol's queue: Mallory may write to it with [`CAROL_QUEUE_SECRET`].
pub const CAROL_QUEUE: QueueId = QueueId([CAROL; 16]);
/// The write secret of Carol's queue.
pub const CAROL_QUEUE_SECRET: [u8; 32] = [CAROL; 32];

/// The account of the client with key seed `who`, to write seeds with.
pub fn account(who: u8) -> AccountId {
    IdentityKey(key(who).verifying_key().to_bytes()).account()
}

/// How Mallory's connection starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Before any proof.
    Fresh = 0,
    /// Logged in as Mallory.
    LoggedIn = 1,
    /// Sealed, with one of Mallory's tokens spent.
    Sealed = 2,
}

/// The input that sends `frames` on a connection started as `start`.
pub fn input(start: Start, frames: &[ClientFrame]) -> Vec<u8> {
    let mut data = vec![start as u8];
    for frame in frames {
        let bytes = frame.encode();
        let len = u16::try_from(bytes.len()).expect("a seed frame under 64 KiB");
        data.extend_from_slice(&len.to_be_bytes());
        data.extend_from_slice(&bytes);
    }
    data
}

/// Runs one input.
pub fn session(data: &[u8]) {
    let Some((&start, mut rest)) = data.split_first() else { return };
    let mut frames = Vec::new();
    while rest.len() >= 2 && frames.len() < MAX_FRAMES {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let bytes = &rest[2..rest.len().min(2 + len)];
        rest = &rest[2 + bytes.len()..];
        frames.push(ClientFrame::decode(bytes).map_err(|error| match error {
            DecodeError::TooLong { .. } => ErrorCode::TooLarge,
            _ => ErrorCode::Malformed,
        }));
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let start = match start % 3 {
        0 => Start::Fresh,
        1 => Start::LoggedIn,
        _ => Start::Sealed,
    };
    runtime.block_on(drive(start, frames));
}

/// Requests and what was addressed to whom, as Mallory sent them.
#[derive(Default)]
struct Sent {
    unanswered: HashMap<u32, usize>,
    addressed: HashMap<AccountId, Vec<Vec<u8>>>,
    /// Payloads written to Carol's queue with its secret.
    to_carol_queue: Vec<Vec<u8>>,
}

impl Sent {
    fn note(&mut self, frame: &ClientFrame) {
        let carol_queue = |targets: &[Capability]| {
            targets.iter().any(|target| target.queue == CAROL_QUEUE && target.secret == CAROL_QUEUE_SECRET)
        };
        if let ClientFrame::SealedSend { targets, payload, .. } = frame {
            if carol_queue(targets) {
                self.to_carol_queue.push(payload.clone());
            }
        }
        if let ClientFrame::SealedCommit { targets, payload, welcome, .. } = frame {
            if carol_queue(targets) {
                self.to_carol_queue.push(payload.clone());
            }
            if let Some((to, welcome)) = welcome {
                for destination in to {
                    match destination {
                        Destination::Queue(target) if carol_queue(std::slice::from_ref(target)) => {
                            self.to_carol_queue.push(welcome.clone());
                        }
                        Destination::Queue(_) => {}
                        Destination::Account(account) => {
                            self.addressed.entry(*account).or_default().push(welcome.clone());
                        }
                    }
                }
            }
        }
        let request = frame.request();
        if let Some(request) = request {
            *self.unanswered.entry(request).or_default() += 1;
        }
    }

    /// Panics unless Mallory addressed `payload` to `account`.
    fn check(&self, account: AccountId, payload: &[u8]) {
        let theirs = self.addressed.get(&account).map(Vec::as_slice).unwrap_or_default();
        assert!(
            theirs.iter().any(|sent| sent == payload),
            "an honest client was given a payload not addressed to it"
        );
    }

    /// Panics unless Mallory wrote `payload` to Carol's queue.
    fn check_carol_queue(&self, payload: &[u8]) {
        assert!(
            self.to_carol_queue.iter().any(|sent| sent == payload),
            "a queue was given a payload not written to it with its secret"
        );
    }

    /// Counts an answer to `request` off.
    fn answered(&mut self, request: u32) {
        let left = self.unanswered.get_mut(&request).filter(|left| **left > 0);
        let left = left.unwrap_or_else(|| panic!("the relay answered request {request}, never made"));
        *left -= 1;
    }
}

fn answer_to(frame: &RelayFrame) -> Option<u32> {
    match frame {
        RelayFrame::Accepted { request, .. }
        | RelayFrame::KeyPackage { request, .. }
        | RelayFrame::Rejected { request, .. }
        | RelayFrame::StaleEpoch { request, .. }
        | RelayFrame::Tokens { request, .. }
        | RelayFrame::Sent { request, .. }
        | RelayFrame::QueueCreated { request, .. } => Some(*request),
        _ => None,
    }
}

async fn drive(start: Start, frames: Vec<Result<ClientFrame, ErrorCode>>) {
    let relay = Relay::start();
    let (mut bob, bob_id) = relay.register(&key(BOB)).await;
    let (mut carol, carol_id) = relay.register(&key(CAROL)).await;
    for peer in [&mut bob, &mut carol] {
        peer.send(ClientFrame::Subscribe);
        assert_eq!(peer.recv().await, RelayFrame::QueueEmpty);
    }
    let carol_owner = key(CAROL + 100);
    let owner_key = carol_owner.verifying_key().to_bytes();
    let secret_hash = hush_proto::write_hash(&CAROL_QUEUE_SECRET);
    relay.shared.store.create_queue(CAROL_QUEUE, owner_key, secret_hash, relay.shared.now()).await.unwrap();
    let mut carol_queue = relay.receive(&[(CAROL_QUEUE, &carol_owner)]).await;
    assert_eq!(carol_queue.recv().await, RelayFrame::QueueEmpty);
    let mallory = match start {
        Start::Fresh => relay.connect(),
        Start::LoggedIn => relay.register(&key(MALLORY)).await.0,
        Start::Sealed => {
            let (mut account, _) = relay.register(&key(MALLORY)).await;
            relay.sealed(tokens(&mut account, 1).await.remove(0)).await
        }
    };

    // Dave writes the honest traffic, on a sealed connection of his own.
    let (mut dave, _) = relay.register(&key(DAVE)).await;
    let mut writer = relay.sealed(tokens(&mut dave, 1).await.remove(0)).await;

    let mut sent = Sent::default();
    for frame in frames {
        if let Ok(frame) = &frame {
            sent.note(frame);
        }
        if mallory.to.send(frame).is_err() {
            break;
        }
    }
    let Peer { to, mut from, task } = mallory;
    // Closing Mallory's end ends the session once every frame is read; the
    // queue then ends once its last request is answered.
    drop(to);
    let mut refused = false;
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), from.recv()).await;
        match next.expect("Mallory's requests went unanswered for 10 s") {
            Some(Outbound::Frame(out)) => {
                let frame = &out.frame;
                if let Some(request) = answer_to(frame) {
                    sent.answered(request);
                }
                if let RelayFrame::Deliver { payload, .. } = frame {
                    sent.check(account(MALLORY), payload);
                }
            }
            Some(Outbound::Close) => refused = true,
            None => break,
        }
    }
    let ended = tokio::time::timeout(Duration::from_secs(10), task).await;
    let _ = ended.expect("Mallory's session did not end").expect("Mallory's session panicked");
    if !refused {
        let unanswered: Vec<_> = sent.unanswered.iter().filter(|(_, left)| **left > 0).collect();
        assert!(unanswered.is_empty(), "requests never answered: {unanswered:?}");
    }

    // Carol's queue: given only what was written to it with its secret.
    carol_queue.send(ClientFrame::SubscribeQueues { request: 1, proofs: vec![] });
    loop {
        match carol_queue.recv().await {
            RelayFrame::QueueDeliver { payload, .. } => sent.check_carol_queue(&payload),
            RelayFrame::QueueEmpty => {}
            RelayFrame::Rejected { request: 1, .. } => break,
            other => panic!("a queue connection was sent {other:?}"),
        }
    }
    // Bob and Carol: still connected, given only what was theirs, and able
    // to write to each other.
    exchange(&mut writer, 1, (&mut carol, carol_id), &sent).await;
    exchange(&mut writer, 2, (&mut bob, bob_id), &sent).await;
    let _ = relay.shutdown.send(true);
}

/// `writer` (a sealed connection) introduces itself to `reader`, which
/// receives it after whatever Mallory addressed to it, and nothing Mallory
/// did not address to it.
async fn exchange(writer: &mut Peer, request: u32, reader: (&mut Peer, AccountId), sent: &Sent) {
    let marker = b"\x01 still carried".to_vec();
    let (reader, reader_id) = reader;
    // A fresh group, one Mallory cannot have taken: its first commit
    // needs no epoch key.
    let mut frame = introduction(request, 200, reader_id, &marker);
    if let ClientFrame::SealedCommit { group, .. } = &mut frame {
        *group = hush_proto::GroupId(rand::random::<[u8; 16]>().to_vec());
    }
    writer.send(frame);
    assert_eq!(writer.recv().await, RelayFrame::Sent { request, refused: vec![] });
    loop {
        match reader.recv().await {
            RelayFrame::Deliver { payload, .. } if payload == marker => break,
            RelayFrame::Deliver { payload, .. } => sent.check(reader_id, &payload),
            other => panic!("an honest client was sent {other:?}"),
        }
    }
}

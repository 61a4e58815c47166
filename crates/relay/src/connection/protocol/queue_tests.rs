//! The queue and sealed planes, against a real store: who may receive from
//! a queue, who may write to it, what a token buys, and that the planes do
//! not mix.

use crate::store::Admin as _;
use ed25519_dalek::{Signer, SigningKey};
use hush_proto::{
    queue_auth_message, write_hash, Capability, ClientFrame, Destination, ErrorCode, GroupId, QueueId,
    RelayFrame, SEALED_REQUESTS_PER_TOKEN,
};

use super::harness::{key, tokens, Relay, PIN};

fn capability(queue: QueueId, secret: [u8; 32]) -> Capability {
    Capability { queue, secret }
}

fn send(request: u32, targets: Vec<Capability>, payload: &[u8]) -> ClientFrame {
    ClientFrame::SealedSend { request, targets, payload: payload.to_vec(), ttl_secs: 0 }
}

#[tokio::test]
async fn a_sealed_send_reaches_the_queue_owner_once_and_an_ack_deletes_it() {
    let relay = Relay::start();
    let (mut alice, _) = relay.register(&key(1)).await;
    let mut sealed = relay.sealed(tokens(&mut alice, 1).await.remove(0)).await;
    let (owner, secret) = (key(20), [21; 32]);
    let queue = sealed.create_queue(&owner, &secret).await;
    let mut bob = relay.receive(&[(queue, &owner)]).await;
    assert_eq!(bob.recv().await, RelayFrame::QueueEmpty);

    sealed.send(send(1, vec![capability(queue, secret)], b"hello"));
    assert_eq!(sealed.recv().await, RelayFrame::Sent { request: 1, refused: vec![] });
    let RelayFrame::QueueDeliver { queue: from, seq, payload, .. } = bob.recv().await else {
        panic!("no delivery")
    };
    assert_eq!((from, payload.as_slice()), (queue, &b"hello"[..]));
    bob.send(ClientFrame::AckQueues { items: vec![(queue, seq)] });
    // Operations reach the store in the order their frames came: a later
    // answer means the acknowledgement is applied.
    bob.send(ClientFrame::SubscribeQueues { request: 2, proofs: vec![] });
    assert_eq!(bob.recv().await, RelayFrame::Rejected { request: 2, code: ErrorCode::Malformed });
    drop(bob);
    let mut again = relay.receive(&[(queue, &owner)]).await;
    assert_eq!(again.recv().await, RelayFrame::QueueEmpty, "the acknowledged payload was kept");
}

#[tokio::test]
async fn only_the_write_secret_writes_and_refusals_are_by_index() {
    let relay = Relay::start();
    let (mut alice, _) = relay.register(&key(1)).await;
    let mut sealed = relay.sealed(tokens(&mut alice, 1).await.remove(0)).await;
    let (owner, secret) = (key(20), [21; 32]);
    let queue = sealed.create_queue(&owner, &secret).await;
    let other = sealed.create_queue(&key(22), &[23; 32]).await;
    let targets = vec![
        capability(other, [23; 32]),
        capability(queue, [99; 32]),
        capability(QueueId([5; 16]), [21; 32]),
    ];
    sealed.send(send(1, targets, b"one"));
    assert_eq!(sealed.recv().await, RelayFrame::Sent { request: 1, refused: vec![1, 2] });
    // Nothing reached the queue whose secret was wrong.
    let mut bob = relay.receive(&[(queue, &owner)]).await;
    assert_eq!(bob.recv().await, RelayFrame::QueueEmpty);
    // A queue named twice, or no queue at all, is malformed.
    sealed.send(send(2, vec![capability(queue, secret), capability(queue, secret)], b"two"));
    assert_eq!(sealed.recv().await, RelayFrame::Rejected { request: 2, code: ErrorCode::Malformed });
    sealed.send(send(3, vec![], b"three"));
    assert_eq!(sealed.recv().await, RelayFrame::Rejected { request: 3, code: ErrorCode::Malformed });
}

#[tokio::test]
async fn queue_proofs_must_come_from_the_owner_for_this_challenge() {
    let relay = Relay::start();
    let (mut alice, _) = relay.register(&key(1)).await;
    let mut sealed = relay.sealed(tokens(&mut alice, 1).await.remove(0)).await;
    let owner = key(20);
    let queue = sealed.create_queue(&owner, &[21; 32]).await;
    let prove = |nonce: &[u8; 32], signer: &SigningKey, queue: QueueId| {
        (queue, signer.sign(&queue_auth_message(nonce, &PIN, &queue)).to_bytes())
    };
    // Another key, another challenge, an unknown queue: refused alike.
    let mut peer = relay.connect();
    let nonce = peer.hello().await;
    peer.send(ClientFrame::SubscribeQueues { request: 1, proofs: vec![prove(&nonce, &key(30), queue)] });
    assert_eq!(peer.refused().await, ErrorCode::BadQueue);
    let mut peer = relay.connect();
    let _fresh = peer.hello().await;
    peer.send(ClientFrame::SubscribeQueues { request: 1, proofs: vec![prove(&nonce, &owner, queue)] });
    assert_eq!(peer.refused().await, ErrorCode::BadQueue);
    let mut peer = relay.connect();
    let nonce = peer.hello().await;
    let unknown = QueueId([6; 16]);
    peer.send(ClientFrame::SubscribeQueues { request: 1, proofs: vec![prove(&nonce, &owner, unknown)] });
    assert_eq!(peer.refused().await, ErrorCode::BadQueue);
    // On a queue connection, a bad proof for one more queue is refused
    // and the connection keeps the queues it has.
    let mut bob = relay.receive(&[(queue, &owner)]).await;
    assert_eq!(bob.recv().await, RelayFrame::QueueEmpty);
    bob.send(ClientFrame::SubscribeQueues { request: 2, proofs: vec![(unknown, [0; 64])] });
    assert_eq!(bob.recv().await, RelayFrame::Rejected { request: 2, code: ErrorCode::BadQueue });
    sealed.send(send(3, vec![capability(queue, [21; 32])], b"still"));
    assert_eq!(sealed.recv().await, RelayFrame::Sent { request: 3, refused: vec![] });
    assert!(matches!(bob.recv().await, RelayFrame::QueueDeliver { payload, .. } if payload == b"still"));
}

#[tokio::test]
async fn a_queue_proved_later_is_drained_then_followed() {
    let relay = Relay::start();
    let (mut alice, _) = relay.register(&key(1)).await;
    let mut sealed = relay.sealed(tokens(&mut alice, 1).await.remove(0)).await;
    let (first, second) = (key(20), key(22));
    let one = sealed.create_queue(&first, &[21; 32]).await;
    let two = sealed.create_queue(&second, &[23; 32]).await;
    sealed.send(send(1, vec![capability(two, [23; 32])], b"waiting"));
    assert_eq!(sealed.recv().await, RelayFrame::Sent { request: 1, refused: vec![] });
    let mut bob = relay.receive(&[(one, &first)]).await;
    assert_eq!(bob.recv().await, RelayFrame::QueueEmpty);
    // The receive helper proved under its own challenge; prove the second
    // queue under the same one through a fresh connection instead.
    drop(bob);
    let mut bob = relay.connect();
    let nonce = bob.hello().await;
    let proof = |queue: QueueId, owner: &SigningKey| {
        (queue, owner.sign(&queue_auth_message(&nonce, &PIN, &queue)).to_bytes())
    };
    bob.send(ClientFrame::SubscribeQueues { request: 2, proofs: vec![proof(one, &first)] });
    assert_eq!(bob.recv().await, RelayFrame::Accepted { request: 2, inactive: vec![] });
    bob.send(ClientFrame::Subscribe);
    assert_eq!(bob.recv().await, RelayFrame::QueueEmpty);
    bob.send(ClientFrame::SubscribeQueues { request: 3, proofs: vec![proof(two, &second)] });
    assert_eq!(bob.recv().await, RelayFrame::Accepted { request: 3, inactive: vec![] });
    assert!(matches!(bob.recv().await, RelayFrame::QueueDeliver { queue, payload, .. }
        if queue == two && payload == b"waiting"));
    assert_eq!(bob.recv().await, RelayFrame::QueueEmpty);
    sealed.send(send(4, vec![capability(two, [23; 32])], b"live"));
    assert_eq!(sealed.recv().await, RelayFrame::Sent { request: 4, refused: vec![] });
    assert!(matches!(bob.recv().await, RelayFrame::QueueDeliver { payload, .. } if payload == b"live"));
}

/// A client counts on one `QueueEmpty` for `Subscribe` and one for each
/// proof accepted after it, after that proof's queues were drained: proofs
/// sent back to back, before the first drain is over, are not answered by
/// one `QueueEmpty` between them, and a proof of queues proved already
/// still gets its own.
#[tokio::test]
async fn every_proof_after_subscribe_gets_a_queue_empty_of_its_own() {
    let relay = Relay::start();
    let (mut alice, _) = relay.register(&key(1)).await;
    let mut sealed = relay.sealed(tokens(&mut alice, 1).await.remove(0)).await;
    let owners = [key(20), key(22), key(24)];
    let mut queues = Vec::new();
    for (n, owner) in owners.iter().enumerate() {
        let secret = [30 + n as u8; 32];
        let queue = sealed.create_queue(owner, &secret).await;
        sealed.send(send(10 + n as u32, vec![capability(queue, secret)], &[n as u8]));
        assert!(matches!(sealed.recv().await, RelayFrame::Sent { .. }));
        queues.push(queue);
    }
    let mut bob = relay.connect();
    let nonce = bob.hello().await;
    let proof =
        |n: usize| (queues[n], owners[n].sign(&queue_auth_message(&nonce, &PIN, &queues[n])).to_bytes());
    bob.send(ClientFrame::SubscribeQueues { request: 1, proofs: vec![proof(0)] });
    assert_eq!(bob.recv().await, RelayFrame::Accepted { request: 1, inactive: vec![] });
    // Subscribe, two proofs and a proof of a queue proved already, at once.
    bob.send(ClientFrame::Subscribe);
    bob.send(ClientFrame::SubscribeQueues { request: 2, proofs: vec![proof(1)] });
    bob.send(ClientFrame::SubscribeQueues { request: 3, proofs: vec![proof(2)] });
    bob.send(ClientFrame::SubscribeQueues { request: 4, proofs: vec![proof(0)] });
    let mut empties = 0;
    let mut delivered = Vec::new();
    while empties < 4 {
        match bob.recv().await {
            RelayFrame::QueueEmpty => empties += 1,
            RelayFrame::QueueDeliver { payload, .. } => delivered.push((payload[0], empties)),
            RelayFrame::Accepted { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    delivered.sort_unstable();
    // Each payload came between the QueueEmpty before its proof's and its
    // proof's own.
    assert_eq!(delivered, [(0, 0), (1, 1), (2, 2)], "(payload, QueueEmpty frames before it)");
}

#[tokio::test]
async fn a_token_opens_one_budget_once() {
    let relay = Relay::start();
    let (mut alice, _) = relay.register(&key(1)).await;
    let mut spare = tokens(&mut alice, 3).await;
    let token = spare.remove(0);
    let mut sealed = relay.sealed(token.clone()).await;
    // Spent already: refused, whether to open a connection or top one up.
    let mut peer = relay.connect();
    let _ = peer.hello().await;
    peer.send(ClientFrame::Spend { request: 1, token: token.clone() });
    assert_eq!(peer.refused().await, ErrorCode::BadToken);
    sealed.send(ClientFrame::Spend { request: 2, token });
    assert_eq!(sealed.recv().await, RelayFrame::Rejected { request: 2, code: ErrorCode::BadToken });
    // A made-up token, and one of a key day long past.
    let mut forged = spare[0].clone();
    forged.output[0] ^= 1;
    let mut stale = spare[0].clone();
    stale.day -= 2;
    for bad in [forged, stale] {
        let mut peer = relay.connect();
        let _ = peer.hello().await;
        peer.send(ClientFrame::Spend { request: 1, token: bad });
        assert_eq!(peer.refused().await, ErrorCode::BadToken);
    }
    // The budget: so many requests, then `NeedToken` until topped up.
    let queue = sealed.create_queue(&key(20), &[21; 32]).await;
    for request in 1..SEALED_REQUESTS_PER_TOKEN {
        sealed.send(send(request, vec![capability(queue, [21; 32])], b"x"));
        assert_eq!(sealed.recv().await, RelayFrame::Sent { request, refused: vec![] });
    }
    sealed.send(send(100, vec![capability(queue, [21; 32])], b"x"));
    assert_eq!(sealed.recv().await, RelayFrame::Rejected { request: 100, code: ErrorCode::NeedToken });
    sealed.send(ClientFrame::Spend { request: 101, token: spare.remove(0) });
    assert_eq!(sealed.recv().await, RelayFrame::Accepted { request: 101, inactive: vec![] });
    sealed.send(send(102, vec![capability(queue, [21; 32])], b"x"));
    assert_eq!(sealed.recv().await, RelayFrame::Sent { request: 102, refused: vec![] });
}

/// Before proving anything, anyone may ask for a day's token key: the key
/// issuances name, for today and yesterday only; the connection then goes
/// on to spend a token as usual.
#[tokio::test]
async fn the_token_key_is_shown_to_anyone_before_a_token_is_spent() {
    let relay = Relay::start();
    let (mut alice, _) = relay.register(&key(1)).await;
    let request = hush_proto::tokens::TokenRequest::new(2, &mut rand::rngs::OsRng);
    alice.send(ClientFrame::IssueTokens { request: 1, blinded: request.blinded().to_vec() });
    let RelayFrame::Tokens { issued, .. } = alice.recv().await else { panic!("no tokens") };
    let mut tokens = request.finish(&issued, issued.day).unwrap();

    let mut peer = relay.connect();
    let _ = peer.hello().await;
    peer.send(ClientFrame::TokenKey { request: 2, day: issued.day });
    let shown = RelayFrame::TokenKey { request: 2, day: issued.day, public_key: issued.public_key };
    assert_eq!(peer.recv().await, shown);
    peer.send(ClientFrame::TokenKey { request: 3, day: issued.day + 1 });
    assert_eq!(peer.recv().await, RelayFrame::Rejected { request: 3, code: ErrorCode::Malformed });
    peer.send(ClientFrame::Spend { request: 4, token: tokens.remove(0) });
    assert_eq!(peer.recv().await, RelayFrame::Accepted { request: 4, inactive: vec![] });
    // Not once the connection is open: it is asked before a token is shown.
    peer.send(ClientFrame::TokenKey { request: 5, day: issued.day });
    assert_eq!(peer.recv().await, RelayFrame::Rejected { request: 5, code: ErrorCode::Unexpected });
    // Twice at most before a proof (today's and yesterday's): the relay is
    // not a free source of work for a connection that proved nothing.
    let mut peer = relay.connect();
    let _ = peer.hello().await;
    for request in 1..=2 {
        peer.send(ClientFrame::TokenKey { request, day: issued.day });
        assert!(matches!(peer.recv().await, RelayFrame::TokenKey { .. }));
    }
    peer.send(ClientFrame::TokenKey { request: 3, day: issued.day });
    assert_eq!(peer.refused().await, ErrorCode::Unexpected);
}

#[tokio::test]
async fn the_planes_do_not_mix() {
    let relay = Relay::start();
    let (mut alice, alice_id) = relay.register(&key(1)).await;
    let mut tokens = tokens(&mut alice, 2).await;
    // A logged-in connection neither sends sealed nor receives queues.
    alice.send(send(1, vec![capability(QueueId([1; 16]), [0; 32])], b"x"));
    assert_eq!(alice.recv().await, RelayFrame::Rejected { request: 1, code: ErrorCode::Unexpected });
    alice.send(ClientFrame::Spend { request: 2, token: tokens.remove(0) });
    assert_eq!(alice.recv().await, RelayFrame::Rejected { request: 2, code: ErrorCode::Unexpected });
    // A sealed connection neither logs in nor receives, nor sends the
    // account plane's frames.
    let mut sealed = relay.sealed(tokens.remove(0)).await;
    sealed.send(ClientFrame::Login { account: alice_id, signature: [0; 64] });
    assert!(matches!(sealed.recv().await, RelayFrame::Error { code: ErrorCode::Unexpected, .. }));
    sealed.send(ClientFrame::Ack { ids: vec![1] });
    assert!(matches!(sealed.recv().await, RelayFrame::Error { code: ErrorCode::Unexpected, .. }));
    sealed.send(ClientFrame::IssueTokens { request: 4, blinded: vec![] });
    assert_eq!(sealed.recv().await, RelayFrame::Rejected { request: 4, code: ErrorCode::Unexpected });
    // A queue connection does not send.
    let owner = key(20);
    let queue = sealed.create_queue(&owner, &[21; 32]).await;
    let mut bob = relay.receive(&[(queue, &owner)]).await;
    assert_eq!(bob.recv().await, RelayFrame::QueueEmpty);
    bob.send(send(5, vec![capability(queue, [21; 32])], b"x"));
    assert_eq!(bob.recv().await, RelayFrame::Rejected { request: 5, code: ErrorCode::Unexpected });
    bob.send(ClientFrame::CreateQueue { request: 6, owner_key: [1; 32], write_hash: [2; 32] });
    assert_eq!(bob.recv().await, RelayFrame::Rejected { request: 6, code: ErrorCode::Unexpected });
    // Nothing before a proof but the three ways in.
    let mut peer = relay.connect();
    let _ = peer.hello().await;
    peer.send(send(7, vec![capability(queue, [21; 32])], b"x"));
    assert_eq!(peer.refused().await, ErrorCode::Unexpected);
}

/// A commit payload announcing `next_key`.
fn announce(next_key: &[u8; 32], body: &[u8]) -> Vec<u8> {
    let announcement = hush_proto::KeyAnnouncement { next_key: *next_key, signature: [0; 64] };
    hush_proto::announced_payload(hush_proto::COMMIT_PAYLOAD_TAG, &announcement, body)
}

#[tokio::test]
async fn an_accepted_commit_rotates_write_secrets_and_a_rejected_one_does_not() {
    let relay = Relay::start();
    let (mut alice, _) = relay.register(&key(1)).await;
    let (mut carol, carol_id) = relay.register(&key(3)).await;
    carol.send(ClientFrame::Subscribe);
    assert_eq!(carol.recv().await, RelayFrame::QueueEmpty);
    let mut sealed = relay.sealed(tokens(&mut alice, 1).await.remove(0)).await;
    let (alice_owner, bob_owner) = (key(20), key(22));
    let (alice_old, bob_old, alice_new, bob_new) = ([21; 32], [23; 32], [31; 32], [33; 32]);
    let alice_queue = sealed.create_queue(&alice_owner, &alice_old).await;
    let bob_queue = sealed.create_queue(&bob_owner, &bob_old).await;
    let group = GroupId(vec![4; 16]);
    let commit = |request, epoch: u64, signer: &SigningKey, next: &SigningKey, welcome: Option<Vec<u8>>| {
        let next_key = next.verifying_key().to_bytes();
        let payload = announce(&next_key, b"commit");
        let message = hush_proto::commit_auth_message(&group, epoch, &payload, welcome.as_deref(), &next_key);
        ClientFrame::SealedCommit {
            request,
            group: group.clone(),
            epoch,
            targets: vec![capability(bob_queue, bob_old)],
            rotate: vec![
                (capability(alice_queue, alice_old), write_hash(&alice_new)),
                (capability(bob_queue, bob_old), write_hash(&bob_new)),
            ],
            payload,
            welcome: welcome.map(|bytes| (vec![Destination::Account(carol_id)], bytes)),
            next_key,
            signature: signer.sign(&message).to_bytes(),
        }
    };
    let epoch_key = key(50);
    // The group's first commit, with a Welcome for Carol by account.
    sealed.send(commit(1, 0, &key(49), &epoch_key, Some(b"welcome".to_vec())));
    assert_eq!(sealed.recv().await, RelayFrame::Sent { request: 1, refused: vec![] });
    assert!(matches!(carol.recv().await, RelayFrame::Deliver { payload, .. } if payload == b"welcome"));
    // The old secrets write no more; the new ones do.
    sealed.send(send(2, vec![capability(bob_queue, bob_old), capability(bob_queue, bob_new)], b"x"));
    assert_eq!(sealed.recv().await, RelayFrame::Rejected { request: 2, code: ErrorCode::Malformed });
    sealed.send(send(3, vec![capability(bob_queue, bob_old), capability(alice_queue, alice_new)], b"x"));
    assert_eq!(sealed.recv().await, RelayFrame::Sent { request: 3, refused: vec![0] });
    // A commit not signed by the epoch's key (a removed member's) rotates
    // nothing, and is refused.
    let rotated_back = ClientFrame::SealedCommit {
        request: 4,
        group: group.clone(),
        epoch: 1,
        targets: vec![],
        rotate: vec![(capability(bob_queue, bob_new), write_hash(&[66; 32]))],
        payload: announce(&key(52).verifying_key().to_bytes(), b"junk"),
        welcome: None,
        next_key: key(52).verifying_key().to_bytes(),
        signature: [0; 64],
    };
    sealed.send(rotated_back);
    assert_eq!(sealed.recv().await, RelayFrame::Rejected { request: 4, code: ErrorCode::NotAMember });
    sealed.send(send(5, vec![capability(bob_queue, bob_new)], b"y"));
    assert_eq!(sealed.recv().await, RelayFrame::Sent { request: 5, refused: vec![] });
    let mut bob = relay.receive(&[(bob_queue, &bob_owner)]).await;
    let mut payloads = Vec::new();
    loop {
        match bob.recv().await {
            RelayFrame::QueueDeliver { payload, .. } => payloads.push(payload),
            RelayFrame::QueueEmpty => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(payloads.len(), 2, "the commit, then the send with the new secret");
    assert_eq!(payloads[1], b"y");
    let mut alice = relay.receive(&[(alice_queue, &alice_owner)]).await;
    assert!(matches!(alice.recv().await, RelayFrame::QueueDeliver { payload, .. } if payload == b"x"));
    assert_eq!(alice.recv().await, RelayFrame::QueueEmpty);
}

#[tokio::test]
async fn an_owner_can_hand_a_queue_over_and_delete_it() {
    let relay = Relay::start();
    let (mut alice, _) = relay.register(&key(1)).await;
    let mut sealed = relay.sealed(tokens(&mut alice, 1).await.remove(0)).await;
    // Alice makes a queue for Bob with a key she knows; Bob takes it over.
    let (made, bobs) = (key(20), key(21));
    let queue = sealed.create_queue(&made, &[22; 32]).await;
    let mut bob = relay.receive(&[(queue, &made)]).await;
    assert_eq!(bob.recv().await, RelayFrame::QueueEmpty);
    let owner_key = bobs.verifying_key().to_bytes();
    bob.send(ClientFrame::RekeyQueue { request: 1, queue, owner_key, wipe_tag: [0; 32] });
    assert_eq!(bob.recv().await, RelayFrame::Accepted { request: 1, inactive: vec![] });
    drop(bob);
    // The key Alice made proves nothing any more; Bob's does.
    let mut peer = relay.connect();
    let nonce = peer.hello().await;
    let proof = made.sign(&queue_auth_message(&nonce, &PIN, &queue)).to_bytes();
    peer.send(ClientFrame::SubscribeQueues { request: 2, proofs: vec![(queue, proof)] });
    assert_eq!(peer.refused().await, ErrorCode::BadQueue);
    let mut bob = relay.receive(&[(queue, &bobs)]).await;
    assert_eq!(bob.recv().await, RelayFrame::QueueEmpty);
    // A queue not proved on this connection cannot be touched.
    let other = sealed.create_queue(&key(23), &[24; 32]).await;
    bob.send(ClientFrame::DeleteQueue { request: 3, queue: other });
    assert_eq!(bob.recv().await, RelayFrame::Rejected { request: 3, code: ErrorCode::BadQueue });
    bob.send(ClientFrame::RekeyQueue { request: 4, queue: other, owner_key: [1; 32], wipe_tag: [0; 32] });
    assert_eq!(bob.recv().await, RelayFrame::Rejected { request: 4, code: ErrorCode::BadQueue });
    // Deleted: writes are refused and nothing is left.
    sealed.send(send(5, vec![capability(queue, [22; 32])], b"before"));
    assert_eq!(sealed.recv().await, RelayFrame::Sent { request: 5, refused: vec![] });
    assert!(matches!(bob.recv().await, RelayFrame::QueueDeliver { .. }));
    bob.send(ClientFrame::DeleteQueue { request: 6, queue });
    assert_eq!(bob.recv().await, RelayFrame::Accepted { request: 6, inactive: vec![] });
    sealed.send(send(7, vec![capability(queue, [22; 32])], b"after"));
    assert_eq!(sealed.recv().await, RelayFrame::Sent { request: 7, refused: vec![0] });
    let mut store = crate::store::SqliteStore::open(&relay.dir.path().join("relay.db")).unwrap();
    assert_eq!(store.stats().unwrap().queued_messages, 0);
    assert_eq!(store.stats().unwrap().queues, 1, "the other queue, and nothing of the deleted one");
}

/// A device whose logged-in connection rests hears of its wipe on its
/// queue connection, at once; connections to other queues carry on.
#[tokio::test]
async fn a_wipe_order_reaches_the_connections_of_the_queues_it_deletes() {
    use sha2::{Digest, Sha256};
    let relay = Relay::start();
    let secret = [42u8; 32];
    let (mut alice, account) = relay.register_wiped_by(&key(1), Sha256::digest(secret).into()).await;
    let mut sealed = relay.sealed(tokens(&mut alice, 1).await.remove(0)).await;
    drop(alice);
    let (owner, other_owner) = (key(20), key(22));
    let queue = sealed.create_queue(&owner, &[21; 32]).await;
    let other = sealed.create_queue(&other_owner, &[23; 32]).await;
    let mut device = relay.receive(&[(queue, &owner)]).await;
    assert_eq!(device.recv().await, RelayFrame::QueueEmpty);
    let (owner_key, wipe_tag) = (owner.verifying_key().to_bytes(), hush_proto::wipe_tag(&secret, &queue));
    device.send(ClientFrame::RekeyQueue { request: 1, queue, owner_key, wipe_tag });
    assert_eq!(device.recv().await, RelayFrame::Accepted { request: 1, inactive: vec![] });
    let mut bystander = relay.receive(&[(other, &other_owner)]).await;
    assert_eq!(bystander.recv().await, RelayFrame::QueueEmpty);

    let mut peer = relay.connect();
    let _ = peer.hello().await;
    peer.send(ClientFrame::RemoteWipe { request: 1, account, secret });
    assert_eq!(peer.recv().await, RelayFrame::Accepted { request: 1, inactive: vec![] });
    assert_eq!(device.recv().await, RelayFrame::WipeOrder { secret });
    assert!(device.next().await.is_none(), "the connection stays open after the order");
    sealed.send(send(2, vec![capability(queue, [21; 32]), capability(other, [23; 32])], b"after"));
    assert_eq!(sealed.recv().await, RelayFrame::Sent { request: 2, refused: vec![0] }, "the queue is gone");
    assert!(
        matches!(bystander.recv().await, RelayFrame::QueueDeliver { payload, .. } if payload == b"after")
    );
}

#[tokio::test]
async fn a_report_is_kept_only_with_its_senders_signature_and_never_on_the_account_plane() {
    let relay = Relay::start();
    let (mallory_key, alice_key) = (key(1), key(2));
    let (_mallory, mallory) = relay.register(&mallory_key).await;
    let (mut alice, _) = relay.register(&alice_key).await;
    let content = br#"{"id":[1],"body":{"Text":"threat"}}"#.to_vec();
    let nobody = || hush_proto::IdentityKey(key(9).verifying_key().to_bytes()).account();
    let signed = |key: &SigningKey, content: &[u8]| {
        key.sign(&hush_proto::content_signature_message(content)).to_bytes()
    };
    let report = |request, account, content: &[u8], signature| ClientFrame::Report {
        request,
        account,
        content: content.to_vec(),
        signature,
        reason: "threats".into(),
    };

    // Not on a logged-in connection: that would tie the reporter to it.
    alice.send(report(1, mallory, &content, signed(&mallory_key, &content)));
    assert_eq!(alice.recv().await, RelayFrame::Rejected { request: 1, code: ErrorCode::Unexpected });

    // Each report spends a whole token, on a connection of its own.
    let mut tokens = tokens(&mut alice, 6).await;
    let mut reported = |frame: ClientFrame| {
        let token = tokens.pop().unwrap();
        let relay = &relay;
        async move {
            let mut sealed = relay.sealed(token).await;
            sealed.send(frame);
            let answer = sealed.recv().await;
            sealed.send(ClientFrame::FetchKeyPackage { request: 99, account: nobody() });
            let next = sealed.recv().await;
            assert_eq!(
                next,
                RelayFrame::Rejected { request: 99, code: ErrorCode::NeedToken },
                "one report spends the token"
            );
            answer
        }
    };
    // Words put in mallory's mouth: signed by someone else, or changed
    // after signing, or naming an account that does not exist.
    let forged = signed(&alice_key, &content);
    let answer = reported(report(2, mallory, &content, forged)).await;
    assert_eq!(answer, RelayFrame::Rejected { request: 2, code: ErrorCode::BadSignature });
    let mut changed = content.clone();
    changed[30] ^= 1;
    let answer = reported(report(3, mallory, &changed, signed(&mallory_key, &content))).await;
    assert_eq!(answer, RelayFrame::Rejected { request: 3, code: ErrorCode::BadSignature });
    let answer = reported(report(4, nobody(), &content, signed(&key(9), &content))).await;
    assert_eq!(answer, RelayFrame::Rejected { request: 4, code: ErrorCode::BadSignature });
    let mut store = crate::store::SqliteStore::open(&relay.dir.path().join("relay.db")).unwrap();
    assert!(store.reports().unwrap().is_empty(), "a refused report was kept");

    // The genuine one is kept, once however often it is reported.
    for request in [5, 6] {
        let answer = reported(report(request, mallory, &content, signed(&mallory_key, &content))).await;
        assert_eq!(answer, RelayFrame::Accepted { request, inactive: vec![] });
    }
    let reports = store.reports().unwrap();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(
        (reports[0].account, &reports[0].content, reports[0].reason.as_str()),
        (mallory, &content, "threats")
    );
}

#[tokio::test]
async fn commits_are_ordered_one_per_epoch_under_the_epoch_key() {
    let relay = Relay::start();
    let (mut alice, _) = relay.register(&key(1)).await;
    let mut sealed = relay.sealed(tokens(&mut alice, 1).await.remove(0)).await;
    let (owner, secret) = (key(20), [21; 32]);
    let queue = sealed.create_queue(&owner, &secret).await;
    // The first commit sets the group's key; one not signed with it is
    // refused; the same commit again is accepted without being queued
    // twice; a rival for an ordered epoch is stale.
    let group = GroupId(vec![3; 16]);
    let commit = |request, epoch: u64, body: &[u8], signer: &SigningKey, next: &SigningKey| {
        let next_key = next.verifying_key().to_bytes();
        let payload = announce(&next_key, body);
        let message = hush_proto::commit_auth_message(&group, epoch, &payload, None, &next_key);
        ClientFrame::SealedCommit {
            request,
            group: group.clone(),
            epoch,
            targets: vec![capability(queue, secret)],
            rotate: vec![],
            payload,
            welcome: None,
            next_key,
            signature: signer.sign(&message).to_bytes(),
        }
    };
    let (epoch_key, next_epoch_key) = (key(50), key(51));
    sealed.send(commit(10, 0, b"create", &key(49), &epoch_key));
    assert_eq!(sealed.recv().await, RelayFrame::Sent { request: 10, refused: vec![] });
    sealed.send(commit(11, 1, b"junk", &key(99), &key(98)));
    assert_eq!(sealed.recv().await, RelayFrame::Rejected { request: 11, code: ErrorCode::NotAMember });
    sealed.send(commit(12, 1, b"update", &epoch_key, &next_epoch_key));
    assert_eq!(sealed.recv().await, RelayFrame::Sent { request: 12, refused: vec![] });
    sealed.send(commit(13, 1, b"update", &epoch_key, &next_epoch_key));
    assert_eq!(sealed.recv().await, RelayFrame::Accepted { request: 13, inactive: vec![] });
    sealed.send(commit(14, 1, b"rival", &epoch_key, &next_epoch_key));
    assert_eq!(sealed.recv().await, RelayFrame::StaleEpoch { request: 14, epoch: 2 });
    // A payload announcing another key than the frame, or a key no
    // signature can match, is refused before the store sees it.
    let ClientFrame::SealedCommit { payload, .. } = commit(15, 2, b"next", &next_epoch_key, &key(52)) else {
        unreachable!()
    };
    let (_, mls) = hush_proto::split_announced_payload(hush_proto::COMMIT_PAYLOAD_TAG, &payload).unwrap();
    for (announced, next_key) in [([1; 32], key(52).verifying_key().to_bytes()), ([0; 32], [0; 32])] {
        let mut frame = commit(15, 2, b"next", &next_epoch_key, &key(52));
        if let ClientFrame::SealedCommit { payload, next_key: frame_key, .. } = &mut frame {
            *payload = announce(&announced, mls);
            *frame_key = next_key;
        }
        sealed.send(frame);
        assert_eq!(sealed.recv().await, RelayFrame::Rejected { request: 15, code: ErrorCode::Malformed });
    }
    // A commit naming a queue twice is refused before the store sees it.
    let mut twice = commit(16, 2, b"twice", &next_epoch_key, &key(53));
    if let ClientFrame::SealedCommit { targets, .. } = &mut twice {
        targets.push(capability(queue, secret));
    }
    sealed.send(twice);
    assert_eq!(sealed.recv().await, RelayFrame::Rejected { request: 16, code: ErrorCode::Malformed });
    let mut receiver = relay.receive(&[(queue, &owner)]).await;
    let mut bodies = Vec::new();
    loop {
        match receiver.recv().await {
            RelayFrame::QueueDeliver { payload, .. } => bodies.push(
                hush_proto::split_announced_payload(hush_proto::COMMIT_PAYLOAD_TAG, &payload)
                    .unwrap()
                    .1
                    .to_vec(),
            ),
            RelayFrame::QueueEmpty => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(bodies, vec![b"create".to_vec(), b"update".to_vec()]);
}

/// Another relay of a cluster stores an entry (no push here, its wake-up
/// still on the way), then this relay stores the next one and pushes it:
/// the listening device must get both, in order, not the push alone.
#[tokio::test]
async fn a_push_past_an_entry_another_relay_stored_brings_that_entry_first() {
    let relay = Relay::start();
    let (mut alice, _) = relay.register(&key(1)).await;
    let mut sealed = relay.sealed(tokens(&mut alice, 1).await.remove(0)).await;
    let (owner, secret) = (key(30), [31; 32]);
    let queue = sealed.create_queue(&owner, &secret).await;
    let mut bob = relay.receive(&[(queue, &owner)]).await;
    assert_eq!(bob.recv().await, RelayFrame::QueueEmpty);

    // "The other relay": a store worker of its own on the same store,
    // whose writes push to no one.
    let path = relay.dir.path().join("relay.db");
    let (other, _worker) = crate::actor::spawn(
        move || crate::store::SqliteStore::open(&path),
        |_| {},
        std::sync::Arc::new(crate::metrics::Metrics::default()),
    )
    .unwrap();
    let payload: std::sync::Arc<[u8]> = std::sync::Arc::from(&b"from the other relay"[..]);
    let written =
        other.enqueue_sealed(vec![capability(queue, secret)], payload, 1, u64::MAX / 2).await.unwrap();
    assert_eq!(written.queued[0].id, 1);

    sealed.send(send(1, vec![capability(queue, secret)], b"from this relay"));
    assert_eq!(sealed.recv().await, RelayFrame::Sent { request: 1, refused: vec![] });
    for (expected_seq, expected) in [(1, &b"from the other relay"[..]), (2, &b"from this relay"[..])] {
        let RelayFrame::QueueDeliver { seq, payload, .. } = bob.recv().await else { panic!("no delivery") };
        assert_eq!((seq, payload.as_slice()), (expected_seq, expected));
    }
}

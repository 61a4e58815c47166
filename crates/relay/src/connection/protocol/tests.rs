//! The protocol without sockets: frames go in through a channel, answers
//! and deliveries come out of the outbound queue, against a real store.

use crate::store::Admin as _;
use std::time::Duration;

use ed25519_dalek::Signer;
use hush_proto::{
    auth_message, AuthPurpose, Capability, CertificatePin, ClientFrame, ErrorCode, IdentityKey, RelayFrame,
    PROTOCOL_VERSION,
};

use super::harness::{introduction, key, tokens, Peer, Relay, INVITE, PIN, TOKENS_PER_DAY, TOKEN_SECRET};
use crate::store::SqliteStore;

#[tokio::test]
async fn a_handshake_with_the_wrong_version_frame_or_relay_is_refused() {
    let relay = Relay::start();
    let peer = relay.connect();
    peer.send(ClientFrame::Hello { version: PROTOCOL_VERSION - 1 });
    assert_eq!(peer.refused().await, ErrorCode::UnsupportedVersion);

    let peer = relay.connect();
    peer.send(ClientFrame::Subscribe);
    assert_eq!(peer.refused().await, ErrorCode::Unexpected);

    // A registration signed for another relay's certificate does not verify
    // here, so a relay cannot replay what a client sent to another one.
    let mut peer = relay.connect();
    let nonce = peer.hello().await;
    let alice = key(1);
    let elsewhere = CertificatePin([8; 32]);
    let signature = alice.sign(&auth_message(AuthPurpose::Register, &nonce, &elsewhere)).to_bytes();
    let identity_key = IdentityKey(alice.verifying_key().to_bytes());
    peer.send(ClientFrame::Register {
        invite_code: INVITE.into(),
        identity_key,
        signature,
        wipe_hash: [0; 32],
    });
    assert_eq!(peer.refused().await, ErrorCode::BadSignature);

    // A login with a signature over an old challenge.
    let (_alice, account) = relay.register(&alice).await;
    let mut peer = relay.connect();
    let _fresh = peer.hello().await;
    let stale = alice.sign(&auth_message(AuthPurpose::Login, &nonce, &PIN)).to_bytes();
    peer.send(ClientFrame::Login { account, signature: stale });
    assert_eq!(peer.refused().await, ErrorCode::BadSignature);

    // A login for an account that does not exist is refused exactly as one
    // with a bad signature: a caller who proved nothing learns nothing of
    // which accounts exist.
    let mut peer = relay.connect();
    let nonce = peer.hello().await;
    let nobody = key(77);
    let signature = nobody.sign(&auth_message(AuthPurpose::Login, &nonce, &PIN)).to_bytes();
    let unknown = IdentityKey(nobody.verifying_key().to_bytes()).account();
    peer.send(ClientFrame::Login { account: unknown, signature });
    assert_eq!(peer.refused().await, ErrorCode::BadSignature);
    // So is a wipe order for one: as a wrong wipe code for a real account.
    for target in [unknown, account] {
        let mut peer = relay.connect();
        let _ = peer.hello().await;
        peer.send(ClientFrame::RemoteWipe { request: 1, account: target, secret: [1; 32] });
        assert_eq!(peer.recv().await, RelayFrame::Rejected { request: 1, code: ErrorCode::BadWipeCode });
    }
}

#[tokio::test]
async fn an_introduction_reaches_a_subscribed_account_at_once_and_an_ack_deletes_it() {
    let relay = Relay::start();
    let (mut alice, _) = relay.register(&key(1)).await;
    let (mut bob, bob_id) = relay.register(&key(2)).await;
    bob.send(ClientFrame::Subscribe);
    assert_eq!(bob.recv().await, RelayFrame::QueueEmpty);
    let mut sealed = relay.sealed(tokens(&mut alice, 1).await.remove(0)).await;
    sealed.send(introduction(5, 40, bob_id, b"welcome"));
    assert_eq!(sealed.recv().await, RelayFrame::Sent { request: 5, refused: vec![] });
    let RelayFrame::Deliver { id, payload, .. } = bob.recv().await else { panic!("no delivery") };
    assert_eq!(payload, b"welcome");
    bob.send(ClientFrame::Ack { ids: vec![id] });
    // Operations reach the store in the order their frames came, so the
    // answer to a later request means the acknowledgement is applied.
    bob.send(ClientFrame::IssueTokens { request: 6, blinded: vec![[0xff; 32]] });
    assert_eq!(bob.recv().await, RelayFrame::Rejected { request: 6, code: ErrorCode::Malformed });
    drop(bob);
    let mut again = relay.connect();
    let nonce = again.hello().await;
    let signature = key(2).sign(&auth_message(AuthPurpose::Login, &nonce, &PIN)).to_bytes();
    again.send(ClientFrame::Login { account: bob_id, signature });
    assert!(matches!(again.recv().await, RelayFrame::Ready { .. }));
    again.send(ClientFrame::Subscribe);
    assert_eq!(again.recv().await, RelayFrame::QueueEmpty, "the acknowledged payload was kept");
}

#[tokio::test]
async fn requests_after_login_are_answered_in_place_and_bad_ones_keep_the_connection() {
    let relay = Relay::start();
    let (mut alice, alice_id) = relay.register(&key(1)).await;
    // The account plane's sends are retired (protocol 3): they named
    // recipients by account. Refused, and the connection stays.
    alice.send(ClientFrame::Send { request: 1, recipients: vec![alice_id], payload: vec![1], ttl_secs: 0 });
    assert_eq!(alice.recv().await, RelayFrame::Rejected { request: 1, code: ErrorCode::Unexpected });
    let ClientFrame::SealedCommit { group, payload, next_key, signature, .. } =
        introduction(0, 40, alice_id, b"welcome")
    else {
        unreachable!()
    };
    alice.send(ClientFrame::Commit {
        request: 7,
        group,
        epoch: 0,
        recipients: vec![alice_id],
        payload,
        welcome: None,
        next_key,
        signature,
    });
    assert_eq!(alice.recv().await, RelayFrame::Rejected { request: 7, code: ErrorCode::Unexpected });
    // So is fetching a key package while logged in: it would tie the
    // fetcher to the account it is about to write to.
    alice.send(ClientFrame::FetchKeyPackage { request: 3, account: alice_id });
    assert_eq!(alice.recv().await, RelayFrame::Rejected { request: 3, code: ErrorCode::Unexpected });
    // A second login on a logged-in connection is an error, not a takeover.
    alice.send(ClientFrame::Login { account: alice_id, signature: [0; 64] });
    assert!(matches!(alice.recv().await, RelayFrame::Error { code: ErrorCode::Unexpected, .. }));
    // A wipe order is not for a logged-in connection, but it is a request:
    // it gets an answer (the fuzzer found it got none, and the client's
    // request waited for ever).
    alice.send(ClientFrame::RemoteWipe { request: 20, account: alice_id, secret: [0; 32] });
    assert_eq!(alice.recv().await, RelayFrame::Rejected { request: 20, code: ErrorCode::Unexpected });
    // Key packages already expired on arrival: the client's clock is wrong.
    alice.send(ClientFrame::UploadKeyPackages {
        request: 8,
        one_time: vec![b"old".to_vec()],
        last_resort: None,
        expires_at: 1,
    });
    assert_eq!(alice.recv().await, RelayFrame::Rejected { request: 8, code: ErrorCode::Malformed });
    // A key package round trip, fetched on a sealed connection.
    alice.send(ClientFrame::UploadKeyPackages {
        request: 2,
        one_time: vec![b"kp".to_vec()],
        last_resort: None,
        expires_at: u64::MAX,
    });
    assert_eq!(alice.recv().await, RelayFrame::Accepted { request: 2, inactive: vec![] });
    let mut sealed = relay.sealed(tokens(&mut alice, 1).await.remove(0)).await;
    sealed.send(ClientFrame::FetchKeyPackage { request: 3, account: alice_id });
    assert_eq!(sealed.recv().await, RelayFrame::KeyPackage { request: 3, key_package: b"kp".to_vec() });
    sealed.send(ClientFrame::FetchKeyPackage { request: 4, account: alice_id });
    assert_eq!(sealed.recv().await, RelayFrame::Rejected { request: 4, code: ErrorCode::NoKeyPackage });
}

#[tokio::test]
async fn a_welcome_to_a_deactivated_account_is_refused_by_index() {
    let relay = Relay::start();
    let (mut alice, _) = relay.register(&key(1)).await;
    let (_carol, carol_id) = relay.register(&key(3)).await;
    // Deactivated by the operator (the admin command's path).
    let path = relay.dir.path().join("relay.db");
    SqliteStore::open(&path).unwrap().deactivate(&carol_id, 5).unwrap();
    let mut sealed = relay.sealed(tokens(&mut alice, 1).await.remove(0)).await;
    sealed.send(introduction(1, 40, carol_id, b"welcome"));
    assert_eq!(sealed.recv().await, RelayFrame::Sent { request: 1, refused: vec![0] });
}

#[tokio::test]
async fn shutdown_and_deactivation_close_a_live_session_with_a_reason() {
    let relay = Relay::start();
    let (alice, alice_id) = relay.register(&key(1)).await;
    relay.shared.hub.close(&alice_id);
    assert_eq!(alice.refused().await, ErrorCode::Deactivated);
    let (bob, _) = relay.register(&key(2)).await;
    relay.shutdown.send(true).unwrap();
    assert_eq!(bob.refused().await, ErrorCode::ShuttingDown);
}

#[tokio::test]
async fn tokens_are_issued_within_the_daily_quota_and_check_under_the_day_key() {
    use hush_proto::tokens::{TokenIssuer, TokenRequest};
    let relay = Relay::start();
    let (mut alice, _) = relay.register(&key(1)).await;
    let most = TOKENS_PER_DAY as usize * 3 / 5;
    let request = TokenRequest::new(most, &mut rand::rngs::OsRng);
    alice.send(ClientFrame::IssueTokens { request: 1, blinded: request.blinded().to_vec() });
    let RelayFrame::Tokens { request: 1, issued } = alice.recv().await else { panic!("no tokens") };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let tokens = request.finish(&issued, hush_proto::tokens::day_of(now)).unwrap();
    let issuer = TokenIssuer::for_day(&TOKEN_SECRET, issued.day).unwrap();
    assert!(tokens.iter().all(|token| issuer.check(token)));
    // The same again would pass the day's quota: refused, and the
    // connection stays.
    let again = TokenRequest::new(most, &mut rand::rngs::OsRng);
    alice.send(ClientFrame::IssueTokens { request: 2, blinded: again.blinded().to_vec() });
    assert_eq!(alice.recv().await, RelayFrame::Rejected { request: 2, code: ErrorCode::RateLimited });
    alice.send(ClientFrame::IssueTokens { request: 3, blinded: vec![[0xff; 32]] });
    assert_eq!(alice.recv().await, RelayFrame::Rejected { request: 3, code: ErrorCode::Malformed });
    // Another account has its own quota.
    let (mut bob, _) = relay.register(&key(2)).await;
    bob.send(ClientFrame::IssueTokens { request: 4, blinded: again.blinded().to_vec() });
    assert!(matches!(bob.recv().await, RelayFrame::Tokens { request: 4, .. }));
    // Nobody gets tokens before logging in.
    let mut peer = relay.connect();
    let _ = peer.hello().await;
    peer.send(ClientFrame::IssueTokens { request: 5, blinded: again.blinded().to_vec() });
    assert_eq!(peer.refused().await, ErrorCode::Unexpected);
}

#[tokio::test]
async fn a_client_that_does_not_read_holds_at_most_the_delivery_window() {
    let relay = Relay::start();
    let (mut alice, _) = relay.register(&key(1)).await;
    let mut sealed = relay.sealed(tokens(&mut alice, 1).await.remove(0)).await;
    let (owner, secret) = (key(20), [21; 32]);
    let queue = sealed.create_queue(&owner, &secret).await;
    // 3 MiB each: two fit the 8 MiB window, a third must wait.
    let big = vec![7u8; 3 * 1024 * 1024];
    for request in 0..4 {
        sealed.send(ClientFrame::SealedSend {
            request,
            targets: vec![Capability { queue, secret }],
            payload: big.clone(),
            ttl_secs: 0,
        });
        assert_eq!(sealed.recv().await, RelayFrame::Sent { request, refused: vec![] });
    }
    let mut reader = relay.connect();
    let nonce = reader.hello().await;
    let proof = owner.sign(&hush_proto::queue_auth_message(&nonce, &PIN, &queue)).to_bytes();
    reader.send(ClientFrame::SubscribeQueues { request: 1, proofs: vec![(queue, proof)] });
    assert_eq!(reader.recv().await, RelayFrame::Accepted { request: 1, inactive: vec![] });
    reader.send(ClientFrame::Subscribe);
    async fn queued_reaches(peer: &Peer, count: usize) {
        while peer.from.len() < count {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let wait = Duration::from_secs(10);
    tokio::time::timeout(wait, queued_reaches(&reader, 2)).await.expect("two deliveries were not queued");
    // Unread, they hold the window: no third is queued.
    let third = tokio::time::timeout(Duration::from_millis(300), queued_reaches(&reader, 3)).await;
    assert!(third.is_err(), "a third 3 MiB delivery was queued past the window");
    // Reading one gives its share back, and the next comes.
    assert!(matches!(reader.recv().await, RelayFrame::QueueDeliver { .. }));
    tokio::time::timeout(wait, queued_reaches(&reader, 2)).await.expect("the next delivery did not come");
    for _ in 0..3 {
        assert!(matches!(reader.recv().await, RelayFrame::QueueDeliver { .. }));
    }
    assert_eq!(reader.recv().await, RelayFrame::QueueEmpty);
}

//! Two relays in front of one PostgreSQL database: clients connected to
//! either talk to each other, and what one relay stores reaches a
//! recipient listening on the other at once (through the relays'
//! notifications, not a poll).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use hush_client::{Client, KdfParams, Session};
use hush_proto::Invite;
use hush_testkit::TestRelay;

async fn join(relay: &TestRelay, name: &str) -> Client {
    let invite: Invite = relay.invite().unwrap().parse().unwrap();
    let client = Client::create(&relay.profile_dir(name), b"pw", KdfParams::FAST, 0, &invite, name).unwrap();
    Session::register(&client, &invite.code).await.unwrap().close().await;
    client
}

/// Waits for `count` texts pushed live to `listener`'s client.
async fn pushed(listener: &mut Session<'_>, client: &Client, count: usize) -> Vec<String> {
    let mut shown = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while shown.len() < count {
        let push = tokio::time::timeout_at(deadline, listener.next_push())
            .await
            .expect("nothing reached the listener on the other relay")
            .unwrap();
        listener.handle_push(push).await.unwrap();
        shown.extend(client.take_unshown().unwrap().into_iter().map(|m| m.text));
    }
    shown
}

#[tokio::test(flavor = "current_thread")]
async fn clients_of_two_relays_on_one_database_chat_live() {
    let url = hush_pgtest::Cluster::shared().database();
    let first = TestRelay::start_on(&url, None).unwrap();
    let second = TestRelay::start_on(&url, Some(&first)).unwrap();
    assert_eq!(first.pin, second.pin, "the second relay joined with the first one's certificate");

    // Invites minted through either relay's data directory are good.
    let alice = join(&first, "alice").await;
    let bob = join(&second, "bob").await;
    alice.add_contact("bob", bob.account()).unwrap();
    bob.add_contact("alice", alice.account()).unwrap();

    // Bob listens on the second relay; alice writes through the first.
    let mut bob_listens = Session::login(&bob).await.unwrap();
    bob_listens.subscribe().await.unwrap();
    let mut session = Session::login(&alice).await.unwrap();
    session.send_text(&bob.account().to_string(), "hello from the first relay", None).await.unwrap();
    session.send_text(&bob.account().to_string(), "and again", None).await.unwrap();
    session.close().await;
    assert_eq!(pushed(&mut bob_listens, &bob, 2).await, ["hello from the first relay", "and again"]);

    // And the other way round.
    let mut alice_listens = Session::login(&alice).await.unwrap();
    alice_listens.subscribe().await.unwrap();
    bob_listens.send_text(&alice.account().to_string(), "hello from the second", None).await.unwrap();
    assert_eq!(pushed(&mut alice_listens, &alice, 1).await, ["hello from the second"]);
    alice_listens.close().await;
    bob_listens.close().await;
}

/// A wipe ordered through one relay reaches a device that is not logged
/// in and receives through the other: its queue connection there is
/// closed, and the login that follows gets the order.
#[tokio::test(flavor = "current_thread")]
async fn a_wipe_ordered_at_one_relay_reaches_a_resting_device_on_the_other() {
    let url = hush_pgtest::Cluster::shared().database();
    let first = TestRelay::start_on(&url, None).unwrap();
    let second = TestRelay::start_on(&url, Some(&first)).unwrap();
    let alice = join(&second, "alice").await;
    let mut session = Session::login(&alice).await.unwrap();
    session.receive(Duration::ZERO).await.unwrap();
    session.rest_account(Duration::ZERO).await;
    assert!(!session.account_open());

    let mut code = alice.wipe_code().unwrap();
    code.address = first.address.to_string();
    hush_client::send_wipe_order(&code, Duration::from_secs(10)).await.unwrap();
    let push = tokio::time::timeout(Duration::from_secs(20), session.next_push())
        .await
        .expect("the queue connection on the other relay was not closed");
    let ended = match push {
        Ok(push) => session.handle_push(push).await,
        Err(error) => Err(error),
    };
    assert!(ended.is_err(), "the queue connection carried on: {ended:?}");
    let again = Session::login(&alice).await.map(|_| ());
    assert!(matches!(again, Err(hush_client::ClientError::WipeOrdered)), "{again:?}");
}

/// Texts `client` receives on a fresh session (waiting for the relay's
/// queue-empty marker), in order.
async fn received(client: &Client) -> Vec<String> {
    let mut session = Session::login(client).await.unwrap();
    session.receive(Duration::ZERO).await.unwrap();
    session.close().await;
    client.take_unshown().unwrap().into_iter().map(|m| m.text).collect()
}

#[tokio::test(flavor = "current_thread")]
async fn clients_fail_over_when_a_relay_of_their_cluster_stops_and_lose_nothing() {
    let url = hush_pgtest::Cluster::shared().database();
    let first = TestRelay::start_on(&url, None).unwrap();
    let second = TestRelay::start_on(&url, Some(&first)).unwrap();
    let addresses = format!("{},{}", first.address, second.address);
    let join_cluster = |name: &'static str| {
        let invite: Invite = first.invite_for(&addresses).unwrap().parse().unwrap();
        let profile = second.profile_dir(name);
        async move {
            let client = Client::create(&profile, b"pw", KdfParams::FAST, 0, &invite, name).unwrap();
            Session::register(&client, &invite.code).await.unwrap().close().await;
            client
        }
    };
    let alice = join_cluster("alice").await;
    let bob = join_cluster("bob").await;
    alice.add_contact("bob", bob.account()).unwrap();
    bob.add_contact("alice", alice.account()).unwrap();
    let to_bob = bob.account().to_string();

    let mut session = Session::login(&alice).await.unwrap();
    for n in 0..5 {
        session.send_text(&to_bob, &format!("before {n}"), None).await.unwrap();
    }
    session.close().await;
    // One relay of the two stops for good; whichever the clients used,
    // they carry on with the other, with tokens the stopped one issued.
    drop(first);
    // A session a message: each of its connections picks a relay of the
    // list at random, so the dead one is tried first (and passed over)
    // many times over.
    for n in 0..5 {
        let mut session = Session::login(&alice).await.unwrap();
        session.send_text(&to_bob, &format!("after {n}"), None).await.unwrap();
        session.close().await;
    }
    let expected: Vec<String> =
        (0..5).map(|n| format!("before {n}")).chain((0..5).map(|n| format!("after {n}"))).collect();
    assert_eq!(received(&bob).await, expected, "lost, repeated or reordered across the failover");
    drop(second);
}

/// Sends `draft` until the relay acknowledges it, logging in again as
/// needed; answers the errors met on the way.
async fn send_until_acknowledged(client: &Client, to: &str, draft: &hush_client::Draft) -> Vec<String> {
    let mut errors = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let sent = async {
            let mut session = Session::login(client).await?;
            let sent = session.send_draft(to, draft).await;
            session.close().await;
            sent
        };
        match sent.await {
            Ok(()) => return errors,
            Err(error) => errors.push(error.to_string()),
        }
        assert!(tokio::time::Instant::now() < deadline, "never acknowledged: {errors:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Alice and bob, contacts of each other on `relay`, and `count` drafts
/// from alice to bob ("message 0", ...) of which the first four went
/// through.
async fn contacts_with_four_sent(
    relay: &TestRelay,
    count: usize,
) -> (Client, Client, Vec<hush_client::Draft>) {
    let alice = join(relay, "alice").await;
    let bob = join(relay, "bob").await;
    alice.add_contact("bob", bob.account()).unwrap();
    bob.add_contact("alice", alice.account()).unwrap();
    let drafts: Vec<hush_client::Draft> =
        (0..count).map(|n| hush_client::Draft::new(&format!("message {n}"), None)).collect();
    for draft in &drafts[..4] {
        assert!(send_until_acknowledged(&alice, &bob.account().to_string(), draft).await.is_empty());
    }
    (alice, bob, drafts)
}

#[tokio::test(flavor = "current_thread")]
async fn a_database_crash_loses_nothing_acknowledged_and_sends_meanwhile_get_a_clear_error() {
    let database = hush_pgtest::Cluster::start().unwrap();
    let relay = TestRelay::start_on(&database.database(), None).unwrap();
    let (alice, bob, drafts) = contacts_with_four_sent(&relay, 12).await;
    let to_bob = bob.account().to_string();
    // PostgreSQL stops at once, as in a crash, under a logged-in session:
    // no send is acknowledged while it is down, and the error says why
    // (a connection the relay closed on such an error is closed for the
    // sends after it).
    let mut session = Session::login(&alice).await.unwrap();
    database.stop();
    let mut errors = Vec::new();
    for draft in &drafts[4..6] {
        let error =
            session.send_draft(&to_bob, draft).await.expect_err("acknowledged while the database was down");
        errors.push(error.to_string());
    }
    session.close().await;
    let login = Session::login(&alice).await.err().map(|error| error.to_string());
    errors.push(login.unwrap_or_else(|| "logged in while the database was down".into()));
    assert!(
        errors.iter().all(|error| error.contains("database") || error.contains("closed the connection")),
        "{errors:?}"
    );
    assert!(errors[0].contains("database") || errors[2].contains("database"), "{errors:?}");
    assert!(errors[2].contains("database"), "a new session's error does not say why: {errors:?}");
    database.restart().unwrap();
    // The relay reconnects by itself; the drafts refused meanwhile go
    // through now, once each, and so does the rest.
    for draft in &drafts[4..] {
        send_until_acknowledged(&alice, &to_bob, draft).await;
    }
    let expected: Vec<String> = (0..12).map(|n| format!("message {n}")).collect();
    assert_eq!(received(&bob).await, expected, "lost or repeated across the database's crash");
}

#[tokio::test(flavor = "current_thread")]
async fn a_synchronous_standby_promoted_after_the_primary_dies_has_every_acknowledged_message() {
    let primary = hush_pgtest::Cluster::start().unwrap();
    let url = primary.database();
    let name = url.rsplit('/').next().unwrap().to_owned();
    let standby = primary.standby().unwrap();
    primary.require_synchronous_standby().unwrap();
    // Commits wait for the standby from here on.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while primary.query("SELECT sync_state FROM pg_stat_replication").unwrap() != "sync" {
        assert!(std::time::Instant::now() < deadline, "the standby never became synchronous");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The relay knows both servers and writes to whichever accepts
    // writes: the primary, then the standby once promoted.
    let both = format!(
        "postgresql://{}@{},{}/{name}?target_session_attrs=read-write",
        hush_pgtest::USER,
        primary.host(),
        standby.host()
    );
    let relay = TestRelay::start_on(&both, None).unwrap();
    let (alice, bob, drafts) = contacts_with_four_sent(&relay, 8).await;
    let to_bob = bob.account().to_string();
    // The primary dies at once; what it acknowledged is on the standby,
    // which is promoted. The relay finds it by itself.
    primary.stop();
    standby.promote().unwrap();
    for draft in &drafts[4..] {
        send_until_acknowledged(&alice, &to_bob, draft).await;
    }
    let expected: Vec<String> = (0..8).map(|n| format!("message {n}")).collect();
    assert_eq!(received(&bob).await, expected, "lost or repeated across the failover");
}

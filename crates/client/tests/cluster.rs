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

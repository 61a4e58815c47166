//! The client library against a real in-process relay: register, chat,
//! groups with a removal, and commit races resolved by retrying.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use hush_client::{Client, KdfParams, Session};
use hush_proto::Invite;
use hush_testkit::TestRelay;

const CHEAP: KdfParams = KdfParams::FAST;

async fn join(relay: &TestRelay, name: &str) -> Client {
    let invite: Invite = relay.invite().unwrap().parse().unwrap();
    let client = Client::create(&relay.profile_dir(name), b"pw", CHEAP, 0, &invite, name).unwrap();
    Session::register(&client, &invite.code).await.unwrap().close().await;
    client
}

async fn texts(client: &Client) -> Vec<String> {
    let mut session = Session::login(client).await.unwrap();
    session.receive(Duration::ZERO).await.unwrap();
    session.close().await;
    client.take_unshown().unwrap().into_iter().map(|m| m.text).collect()
}

async fn send(client: &Client, to: &str, text: &str) {
    let mut session = Session::login(client).await.unwrap();
    session.send_text(to, text, None).await.unwrap();
    session.close().await;
}

#[tokio::test(flavor = "current_thread")]
async fn chat_and_group_membership_changes() {
    let relay = TestRelay::start().unwrap();
    let alice = join(&relay, "alice").await;
    let bob = join(&relay, "bob").await;
    let carol = join(&relay, "carol").await;

    send(&alice, &bob.account().to_string(), "hello").await;
    assert_eq!(texts(&bob).await, vec!["hello"]);

    let mut session = Session::login(&alice).await.unwrap();
    session.group_create("team", &[bob.account(), carol.account()]).await.unwrap();
    session.close().await;
    send(&alice, "team", "to the team").await;
    assert_eq!(texts(&bob).await, vec!["to the team"]);
    let alice_id = alice.account().to_string();
    let events: Vec<String> =
        bob.history("team").unwrap().into_iter().filter(|m| m.event).map(|m| m.text).collect();
    assert_eq!(
        events,
        vec![format!("{alice_id} added you")],
        "membership events are shown, not counted unread"
    );
    assert_eq!(texts(&carol).await, vec!["to the team"]);

    // Bob and carol both self-updated after joining; alice catches up first.
    assert!(texts(&alice).await.is_empty());
    let mut session = Session::login(&alice).await.unwrap();
    session.group_remove("team", &[carol.account()]).await.unwrap();
    session.close().await;
    send(&bob, "team", "after carol left").await;
    assert_eq!(texts(&alice).await, vec!["after carol left"]);
    assert!(texts(&carol).await.is_empty());
}

#[tokio::test(flavor = "current_thread")]
async fn a_commit_that_loses_its_epoch_is_retried() {
    let relay = TestRelay::start().unwrap();
    let alice = join(&relay, "alice").await;
    let bob = join(&relay, "bob").await;
    let mut session = Session::login(&alice).await.unwrap();
    session.group_create("pair", &[bob.account()]).await.unwrap();
    session.close().await;
    assert!(texts(&bob).await.is_empty(), "only the group's description, no text yet");

    // Bob self-updated at the end of his receive; alice has not seen it, so
    // her next commit is made at a stale epoch and must be retried.
    let mut session = Session::login(&alice).await.unwrap();
    let group_id = alice.groups().unwrap()[0].1.group_id.clone();
    session.self_update(&group_id).await.unwrap();
    session.close().await;
    send(&alice, "pair", "after the race").await;
    assert_eq!(texts(&bob).await, vec!["after the race"]);
}

#[tokio::test(flavor = "current_thread")]
async fn a_draft_sent_twice_is_shown_once_and_pushes_arrive_live() {
    let relay = TestRelay::start().unwrap();
    let alice = join(&relay, "alice").await;
    let bob = join(&relay, "bob").await;
    bob.add_contact("alice", alice.account()).unwrap();
    let bob_id = bob.account().to_string();

    // Bob listens live, the way `hush chat` does.
    let mut listener = Session::login(&bob).await.unwrap();
    listener.subscribe().await.unwrap();

    let draft = hush_client::Draft::new("only once", None);
    let mut session = Session::login(&alice).await.unwrap();
    session.send_draft(&bob_id, &draft).await.unwrap();
    // As after a lost acknowledgement: the same draft again.
    session.send_draft(&bob_id, &draft).await.unwrap();
    session.send_text(&bob_id, "then this", None).await.unwrap();
    session.close().await;

    let mut shown = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while shown.len() < 2 {
        let push = tokio::time::timeout_at(deadline, listener.next_push()).await.unwrap().unwrap();
        listener.handle_push(push).await.unwrap();
        shown.extend(bob.take_unshown().unwrap().into_iter().map(|m| m.text));
    }
    assert_eq!(shown, vec!["only once", "then this"]);
    let summaries = bob.conversation_summaries().unwrap();
    assert_eq!(summaries.len(), 1);
    assert_eq!(summaries[0].name, "alice");
    assert_eq!(bob.history("alice").unwrap().len(), 2);
    listener.close().await;
}

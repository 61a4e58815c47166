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

/// Alice and bob, contacts of each other, in a group "pair" both have
/// caught up with (join self-updates included).
async fn pair_group(alice: &Client, bob: &Client) {
    alice.add_contact("bob", bob.account()).unwrap();
    bob.add_contact("alice", alice.account()).unwrap();
    let mut session = Session::login(alice).await.unwrap();
    session.group_create("pair", &[bob.account()]).await.unwrap();
    session.close().await;
    assert!(texts(bob).await.is_empty());
    assert!(texts(alice).await.is_empty());
}

/// A clock that runs with the system's, moved on by the returned offset
/// (milliseconds).
fn moving_clock() -> (hush_client::Clock, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    let offset = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let moved = std::sync::Arc::clone(&offset);
    let clock: hush_client::Clock = std::sync::Arc::new(move || {
        let real = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
        real.as_millis() as u64 + moved.load(std::sync::atomic::Ordering::SeqCst)
    });
    (clock, offset)
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

/// Regression (issue 9, finding 5): the last-resort key package was made
/// once and kept forever, with its private key; unused one-time packages
/// were never deleted. Time is moved on through the client's clock.
#[tokio::test(flavor = "current_thread")]
async fn key_packages_rotate_and_old_private_keys_are_deleted() {
    use std::sync::atomic::Ordering;

    const DAY_MS: u64 = 24 * 3600 * 1000;
    let relay = TestRelay::start().unwrap();
    let (clock, offset) = moving_clock();
    let invite: Invite = relay.invite().unwrap().parse().unwrap();
    let alice = Client::create(&relay.profile_dir("alice"), b"pw", CHEAP, 0, &invite, "alice").unwrap();
    let alice = alice.with_clock(clock);
    Session::register(&alice, &invite.code).await.unwrap().close().await;
    let relays_last_resort = || -> Vec<u8> {
        let db = rusqlite::Connection::open(relay.data().join("relay.db")).unwrap();
        db.query_row("SELECT data FROM key_packages WHERE last_resort = 1", [], |row| row.get(0)).unwrap()
    };
    let login_at = |days: u64| {
        offset.store(days * DAY_MS, Ordering::SeqCst);
        async { Session::login(&alice).await.unwrap().close().await }
    };

    let issued = alice.issued_key_packages().unwrap();
    let first: Vec<_> = issued.iter().filter(|p| p.last_resort).collect();
    assert_eq!((issued.len(), first.len()), (11, 1), "ten one-time packages and a last-resort one");
    let first = first[0].clone();
    let published = relays_last_resort();

    login_at(6).await;
    assert_eq!(alice.issued_key_packages().unwrap().len(), 11, "nothing is due within the week");
    assert_eq!(relays_last_resort(), published);

    // A week on: a new last-resort package replaces the old one at the
    // relay; the old private key is kept for Welcomes still in flight.
    login_at(8).await;
    let issued = alice.issued_key_packages().unwrap();
    assert_eq!(issued.len(), 12);
    let old = issued.iter().find(|p| p.hash_ref == first.hash_ref).expect("replaced too early");
    assert!(old.retired_at.is_some());
    assert_ne!(relays_last_resort(), published, "the relay still hands out the old last-resort package");

    // Two weeks after the replacement the old private key is deleted.
    login_at(23).await;
    let issued = alice.issued_key_packages().unwrap();
    assert!(issued.iter().all(|p| p.hash_ref != first.hash_ref), "the replaced key was kept");
    assert!(issued.iter().filter(|p| p.last_resort).count() >= 1);

    // One-time packages nobody used go once expired and the grace is over.
    login_at(28 + 14 + 1).await;
    let issued = alice.issued_key_packages().unwrap();
    assert!(issued.iter().all(|p| p.last_resort), "expired one-time packages were kept: {}", issued.len());
}

/// What waits in `client`'s queue of the conversation `to` (payload row
/// id, payload), oldest first, read from the relay's own database: the
/// tests below play a relay that reorders, corrupts and loses.
fn queue_of(relay: &TestRelay, client: &Client, to: &str) -> (rusqlite::Connection, Vec<(i64, Vec<u8>)>) {
    let queue = client.queue_of(to).unwrap().expect("a queue in the conversation");
    let db = rusqlite::Connection::open(relay.data().join("relay.db")).unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    let rows = db
        .prepare(
            "SELECT p.id, p.data FROM queue_entries e JOIN payloads p ON p.id = e.payload
             WHERE e.queue = ?1 ORDER BY e.seq",
        )
        .unwrap()
        .query_map([&queue.0[..]], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    (db, rows)
}

/// Regression (issue 9, finding 3): a payload that could not be processed
/// was acknowledged and dropped with a log line only, even one that was
/// merely early (delivered before the commit of its epoch).
#[tokio::test(flavor = "current_thread")]
async fn early_payloads_wait_for_their_epoch_and_unreadable_ones_are_shown() {
    let relay = TestRelay::start().unwrap();
    let alice = join(&relay, "alice").await;
    let bob = join(&relay, "bob").await;
    let mut session = Session::login(&alice).await.unwrap();
    session.group_create("pair", &[bob.account()]).await.unwrap();
    session.close().await;
    assert!(texts(&bob).await.is_empty());
    assert!(texts(&alice).await.is_empty());

    // Bob moves the group to a new epoch and writes in it; the relay hands
    // alice the message before the commit.
    let group_id = bob.groups().unwrap()[0].1.group_id.clone();
    let mut session = Session::login(&bob).await.unwrap();
    session.self_update(&group_id).await.unwrap();
    session.send_text("pair", "after the update", None).await.unwrap();
    session.close().await;
    let (db, rows) = queue_of(&relay, &alice, "pair");
    assert_eq!(rows.len(), 2, "a commit and a message");
    for ((id, _), (_, payload)) in rows.iter().zip(rows.iter().rev()) {
        db.execute("UPDATE payloads SET data = ?1 WHERE id = ?2", rusqlite::params![payload, id]).unwrap();
    }
    drop(db);
    assert_eq!(texts(&alice).await, vec!["after the update"]);

    // A corrupted message is shown as lost; the conversation carries on.
    let mut session = Session::login(&bob).await.unwrap();
    session.send_text("pair", "corrupted on the way", None).await.unwrap();
    session.close().await;
    let (db, rows) = queue_of(&relay, &alice, "pair");
    let (id, mut payload) = rows.into_iter().next().unwrap();
    let last = payload.len() - 1;
    payload[last] ^= 0x55;
    db.execute("UPDATE payloads SET data = ?1 WHERE id = ?2", rusqlite::params![payload, id]).unwrap();
    drop(db);
    send(&bob, "pair", "and then this").await;
    let mut session = Session::login(&alice).await.unwrap();
    session.receive(Duration::ZERO).await.unwrap();
    session.close().await;
    let shown: Vec<(String, bool)> =
        alice.take_unshown().unwrap().into_iter().map(|m| (m.text, m.event)).collect();
    assert_eq!(
        shown,
        vec![
            ("a message could not be decrypted and is lost".to_owned(), true),
            ("and then this".to_owned(), false)
        ]
    );
    let history: Vec<String> = alice.history("pair").unwrap().into_iter().map(|m| m.text).collect();
    assert!(history.iter().any(|text| text.contains("could not be decrypted")), "{history:?}");
}

/// Review findings: junk that claims a far-future epoch is not held (it
/// would crowd out real early messages) and shows one notice per epoch at
/// most (anyone who knows a group id can send such junk).
#[tokio::test(flavor = "current_thread")]
async fn junk_claiming_a_far_epoch_is_not_held_and_notices_do_not_flood() {
    let relay = TestRelay::start().unwrap();
    let alice = join(&relay, "alice").await;
    let bob = join(&relay, "bob").await;
    pair_group(&alice, &bob).await;
    let mut session = Session::login(&bob).await.unwrap();
    for text in ["one", "two", "three"] {
        session.send_text("pair", text, None).await.unwrap();
    }
    session.close().await;
    // The epoch sits in the clear after a sealed message's tag.
    let (db, rows) = queue_of(&relay, &alice, "pair");
    assert_eq!(rows.len(), 3);
    for (id, mut payload) in rows.into_iter().take(2) {
        assert_eq!(payload[0], hush_core::engine::MESSAGE_TAG, "not the layout this test expects");
        let epoch = u64::from_be_bytes(payload[1..9].try_into().unwrap());
        payload[1..9].copy_from_slice(&(epoch + 1000).to_be_bytes());
        db.execute("UPDATE payloads SET data = ?1 WHERE id = ?2", rusqlite::params![payload, id]).unwrap();
    }
    drop(db);
    let shown: Vec<String> = texts(&alice).await;
    assert_eq!(shown, vec!["a message could not be decrypted and is lost", "three"]);
}

#[tokio::test(flavor = "current_thread")]
async fn requests_are_told_apart_by_id_and_end_when_their_sender_becomes_a_contact() {
    let relay = TestRelay::start().unwrap();
    let mallory = join(&relay, "mallory").await;
    let bob = join(&relay, "bob").await;
    let mut session = Session::login(&mallory).await.unwrap();
    session.group_create("one", &[bob.account()]).await.unwrap();
    session.group_create("two", &[bob.account()]).await.unwrap();
    session.close().await;
    assert!(texts(&bob).await.is_empty());
    let requests = bob.requests().unwrap();
    assert_eq!(requests.len(), 2);
    let mallory_id = mallory.account().to_string();
    assert!(matches!(bob.decline_request(&mallory_id), Err(hush_client::ClientError::Invalid(_))));
    bob.decline_request(&requests[0].id()).unwrap();
    let left = bob.requests().unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].group_id, requests[1].group_id);
    bob.add_contact("mallory", mallory.account()).unwrap();
    assert!(bob.requests().unwrap().is_empty(), "a contact's conversation is still a request");
}

/// A message whose commit never comes (the relay lost or withheld it) is
/// held, then given up after the relay's retention and shown as lost:
/// nothing disappears without the user knowing.
#[tokio::test(flavor = "current_thread")]
async fn a_message_whose_commit_never_comes_is_shown_as_lost_after_the_retention() {
    use std::sync::atomic::Ordering;

    const DAY_MS: u64 = 24 * 3600 * 1000;
    let relay = TestRelay::start().unwrap();
    let (clock, offset) = moving_clock();
    let invite: Invite = relay.invite().unwrap().parse().unwrap();
    let alice = Client::create(&relay.profile_dir("alice"), b"pw", CHEAP, 0, &invite, "alice").unwrap();
    let alice = alice.with_clock(clock);
    // No scheduled self-update in the weeks this test skips: it would wait
    // for the lost commit too.
    let yearly =
        hush_client::UpdatePolicy { after_messages: 100, after: Duration::from_secs(365 * 24 * 3600) };
    alice.set_update_policy(yearly).unwrap();
    Session::register(&alice, &invite.code).await.unwrap().close().await;
    let bob = join(&relay, "bob").await;
    pair_group(&alice, &bob).await;

    let group_id = bob.groups().unwrap()[0].1.group_id.clone();
    let mut session = Session::login(&bob).await.unwrap();
    session.self_update(&group_id).await.unwrap();
    session.send_text("pair", "written after the update", None).await.unwrap();
    session.close().await;
    // The relay loses the commit.
    let (db, rows) = queue_of(&relay, &alice, "pair");
    assert_eq!(rows.len(), 2);
    db.execute("DELETE FROM queue_entries WHERE payload = ?1", [rows[0].0]).unwrap();
    drop(db);
    assert!(texts(&alice).await.is_empty(), "held, not shown and not lost yet");
    offset.store(13 * DAY_MS, Ordering::SeqCst);
    assert!(texts(&alice).await.is_empty(), "given up too early");
    offset.store(15 * DAY_MS, Ordering::SeqCst);
    assert_eq!(texts(&alice).await, vec!["a message could not be decrypted and is lost"]);
}

/// Found while checking the simulation plan: a member several commits
/// behind (offline while others self-updated) wrote at an epoch the others
/// had left more than four behind, and nobody could read it. Sending now
/// catches up first.
#[tokio::test(flavor = "current_thread")]
async fn a_member_far_behind_catches_up_before_writing() {
    let relay = TestRelay::start().unwrap();
    let alice = join(&relay, "alice").await;
    let bob = join(&relay, "bob").await;
    pair_group(&alice, &bob).await;
    let group_id = bob.groups().unwrap()[0].1.group_id.clone();
    let mut session = Session::login(&bob).await.unwrap();
    for _ in 0..6 {
        session.self_update(&group_id).await.unwrap();
    }
    session.close().await;
    send(&alice, "pair", "written six commits behind").await;
    assert_eq!(texts(&bob).await, vec!["written six commits behind"]);
}

/// Found by the simulation (seed 177): a member who committed several times
/// without reading its mailbox moved past the epoch of messages waiting
/// there, by more than the four epochs whose secrets are kept, and could
/// not read them. Committing now catches up first.
#[tokio::test(flavor = "current_thread")]
async fn a_member_reads_its_mailbox_before_moving_the_group_on() {
    let relay = TestRelay::start().unwrap();
    let alice = join(&relay, "alice").await;
    let bob = join(&relay, "bob").await;
    pair_group(&alice, &bob).await;
    send(&alice, "pair", "waiting in bob's mailbox").await;
    let group_id = bob.groups().unwrap()[0].1.group_id.clone();
    for _ in 0..6 {
        let mut session = Session::login(&bob).await.unwrap();
        session.self_update(&group_id).await.unwrap();
        session.close().await;
    }
    let shown: Vec<String> = bob.take_unshown().unwrap().into_iter().map(|m| m.text).collect();
    assert_eq!(shown, vec!["waiting in bob's mailbox"]);
}

#[tokio::test(flavor = "current_thread")]
async fn group_create_never_takes_over_a_group_it_did_not_start_and_leaves_nothing_when_it_fails() {
    let relay = TestRelay::start().unwrap();
    let alice = join(&relay, "alice").await;
    let bob = join(&relay, "bob").await;
    let carol = join(&relay, "carol").await;
    // Alice's group "pair", which bob is in.
    pair_group(&alice, &bob).await;
    bob.add_contact("carol", carol.account()).unwrap();
    let mut session = Session::login(&bob).await.unwrap();
    // Bob asks to create a "pair" with alice and carol: it exists, and is
    // not his to finish (before, carol would have been added to alice's).
    let error = session.group_create("pair", &[alice.account(), carol.account()]).await.unwrap_err();
    assert!(error.to_string().contains("exists already"), "{error}");
    assert_eq!(bob.group_members("pair").unwrap().len(), 2);
    // Adding someone who is in already is said, not silently done.
    let error = session.group_add("pair", &[alice.account()]).await.unwrap_err();
    assert!(error.to_string().contains("all in the group already"), "{error}");
    // A creation whose member is unknown leaves no group behind.
    let stranger = hush_proto::IdentityKey([9; 32]).account();
    assert!(session.group_create("crew", &[carol.account(), stranger]).await.is_err());
    assert!(bob.groups().unwrap().iter().all(|(name, _)| name != "crew"), "an empty 'crew' was left");
    session.close().await;
    assert!(texts(&carol).await.is_empty(), "carol was added to something");
}

#[tokio::test(flavor = "current_thread")]
async fn writing_to_a_group_no_one_else_is_in_is_an_error_not_a_silent_success() {
    let relay = TestRelay::start().unwrap();
    let alice = join(&relay, "alice").await;
    let bob = join(&relay, "bob").await;
    pair_group(&alice, &bob).await;
    let mut session = Session::login(&alice).await.unwrap();
    session.group_remove("pair", &[bob.account()]).await.unwrap();
    let error = session.send_text("pair", "anyone?", None).await.unwrap_err();
    assert!(error.to_string().contains("no one else"), "{error}");
    session.close().await;
    assert!(alice.history("pair").unwrap().iter().all(|m| m.text != "anyone?"), "stored as if sent");
}

/// Review finding: one queue that no longer proves at the relay (deleted
/// there, or a Welcome that named a queue that is not ours) refused the
/// whole proof, and with it every login. It is now forgotten, alone.
#[tokio::test(flavor = "current_thread")]
async fn a_queue_that_no_longer_proves_is_forgotten_and_locks_nothing() {
    let relay = TestRelay::start().unwrap();
    let alice = join(&relay, "alice").await;
    let bob = join(&relay, "bob").await;
    pair_group(&alice, &bob).await;
    // The relay loses alice's contact queue (proved first, to open the
    // connection) and her queue in the pair.
    let contact = alice.contact_code().unwrap().expect("a contact code").queue.queue;
    let pair = alice.queue_of("pair").unwrap().expect("a queue in the pair");
    let db = rusqlite::Connection::open(relay.data().join("relay.db")).unwrap();
    for queue in [contact, pair] {
        assert_eq!(db.execute("DELETE FROM queues WHERE id = ?1", [&queue.0[..]]).unwrap(), 1);
    }
    drop(db);
    assert!(texts(&alice).await.is_empty(), "the login failed");
    assert_eq!(alice.queue_of("pair").unwrap(), None, "the lost queue is still proved");
    // A new contact queue was made; bob's sends to the lost queue are
    // refused, so alice is out of reach there, and bob is told.
    assert_ne!(alice.contact_code().unwrap().map(|code| code.queue.queue), Some(contact));
    let mut session = Session::login(&bob).await.unwrap();
    assert!(session.send_text("pair", "anyone there?", None).await.is_err());
    session.close().await;
}

#[tokio::test(flavor = "current_thread")]
async fn an_unused_sending_connection_is_closed_and_the_next_send_opens_another() {
    let relay = TestRelay::start().unwrap();
    let alice = join(&relay, "alice").await;
    let bob = join(&relay, "bob").await;
    bob.add_contact("alice", alice.account()).unwrap();
    let bob_id = bob.account().to_string();
    let mut session = Session::login(&alice).await.unwrap();
    session.send_text(&bob_id, "before", None).await.unwrap();
    assert!(session.sealed_open());
    // Just used: kept, with a time to close it.
    session.rest_sealed(hush_client::SEALED_IDLE).await;
    assert!(session.sealed_open());
    assert!(session.sealed_idle_at(hush_client::SEALED_IDLE).is_some());
    // Unused for long enough: closed, and nothing left to wait for.
    session.rest_sealed(Duration::ZERO).await;
    assert!(!session.sealed_open());
    assert!(session.sealed_idle_at(hush_client::SEALED_IDLE).is_none());
    // The next send opens another (with a token of its own).
    session.send_text(&bob_id, "after", None).await.unwrap();
    assert!(session.sealed_open());
    session.close().await;
    assert_eq!(texts(&bob).await, ["before", "after"]);
}

/// A long-running client closes its logged-in connection while unused: an
/// introduction then waits at the relay until the client checks in, and
/// nothing of it is lost.
#[tokio::test]
async fn a_resting_account_connection_takes_introductions_at_the_next_check_in() {
    let relay = TestRelay::start().unwrap();
    let alice = join(&relay, "alice").await;
    let bob = join(&relay, "bob").await;
    let mut session = Session::login(&alice).await.unwrap();
    session.receive(Duration::ZERO).await.unwrap();
    session.rest_account(hush_client::ACCOUNT_IDLE).await;
    assert!(session.account_open(), "just used: kept");
    session.rest_account(Duration::ZERO).await;
    assert!(!session.account_open());
    assert!(session.account_idle_at(hush_client::ACCOUNT_IDLE).is_none());

    // Bob knows only Alice's account id: his Welcome goes to her
    // introduction mailbox, which nothing reads while she rests.
    bob.add_contact("alice", alice.account()).unwrap();
    let mut bobs = Session::login(&bob).await.unwrap();
    bobs.send_text("alice", "hello", None).await.unwrap();
    bobs.close().await;
    assert_eq!(session.receive(Duration::ZERO).await.unwrap(), 0);
    assert!(alice.take_unshown().unwrap().is_empty());

    session.check_in().await.unwrap();
    assert!(session.account_open());
    let got: Vec<String> = alice.take_unshown().unwrap().into_iter().map(|m| m.text).collect();
    assert_eq!(got, ["hello"]);
    session.close().await;
}

/// A wipe order reaches a device whose logged-in connection rests, on its
/// queue connection, at once.
#[tokio::test]
async fn a_wipe_order_reaches_a_device_that_is_not_logged_in() {
    let relay = TestRelay::start().unwrap();
    let alice = join(&relay, "alice").await;
    let mut session = Session::login(&alice).await.unwrap();
    session.receive(Duration::ZERO).await.unwrap();
    session.rest_account(Duration::ZERO).await;
    assert!(!session.account_open());

    hush_client::send_wipe_order(&alice.wipe_code().unwrap(), Duration::from_secs(10)).await.unwrap();
    let push = tokio::time::timeout(Duration::from_secs(10), session.next_push())
        .await
        .expect("no wipe order arrived")
        .unwrap();
    let handled = session.handle_push(push).await;
    assert!(matches!(handled, Err(hush_client::ClientError::WipeOrdered)), "{handled:?}");
}

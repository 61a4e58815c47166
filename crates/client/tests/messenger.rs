//! The messenger (the driver `hush chat` and apps embed) against a real
//! relay: live deliveries, a message typed while the relay is unreachable
//! that survives the app being killed and is sent once the relay is back,
//! and a remote wipe order obeyed by the library itself.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hush_client::{Client, Job, KdfParams, Link, Messenger, Session, Update};
use hush_proto::Invite;
use hush_testkit::TestRelay;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::UnboundedReceiver;

const WAIT: Duration = Duration::from_secs(30);

/// Forwards TCP to the relay while open; while closed, connections are
/// refused (accepted and dropped) and open ones are cut. Armed with
/// [`Gate::cut_after_upload`], it cuts a connection as soon as the client
/// has sent that many bytes more, right after forwarding them: what was sent
/// reaches the relay, its answer never reaches the client.
struct Gate {
    address: SocketAddr,
    open: Arc<AtomicBool>,
    cut_after: Arc<AtomicUsize>,
    cuts: Arc<AtomicUsize>,
}

impl Gate {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let cut_after = Arc::new(AtomicUsize::new(0));
        let cuts = Arc::new(AtomicUsize::new(0));
        let (flag, armed, cut) = (Arc::clone(&open), Arc::clone(&cut_after), Arc::clone(&cuts));
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if !flag.load(Ordering::SeqCst) {
                    continue;
                }
                let (flag, armed, cut) = (Arc::clone(&flag), Arc::clone(&armed), Arc::clone(&cut));
                tokio::spawn(async move {
                    let relay = TcpStream::connect(target).await.unwrap();
                    let (mut from_client, mut to_client) = client.into_split();
                    let (mut from_relay, mut to_relay) = relay.into_split();
                    let down = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut from_relay, &mut to_client).await;
                    });
                    let mut check = tokio::time::interval(Duration::from_millis(50));
                    let mut buffer = vec![0u8; 64 * 1024];
                    let mut uploaded = 0;
                    loop {
                        tokio::select! {
                            read = from_client.read(&mut buffer) => {
                                let n = match read { Ok(0) | Err(_) => break, Ok(n) => n };
                                if to_relay.write_all(&buffer[..n]).await.is_err() {
                                    break;
                                }
                                let limit = armed.load(Ordering::SeqCst);
                                uploaded = if limit == 0 { 0 } else { uploaded + n };
                                if limit > 0 && uploaded >= limit {
                                    armed.store(0, Ordering::SeqCst);
                                    cut.fetch_add(1, Ordering::SeqCst);
                                    break;
                                }
                            }
                            _ = check.tick() => if !flag.load(Ordering::SeqCst) { break },
                        }
                    }
                    down.abort();
                });
            }
        });
        Self { address, open, cut_after, cuts }
    }

    fn cut_after_upload(&self, bytes: usize) {
        self.cut_after.store(bytes, Ordering::SeqCst);
    }

    fn cuts(&self) -> usize {
        self.cuts.load(Ordering::SeqCst)
    }

    fn set_open(&self, open: bool) {
        self.open.store(open, Ordering::SeqCst);
    }
}

async fn join(relay: &TestRelay, name: &str, address: SocketAddr) -> Client {
    let mut invite: Invite = relay.invite().unwrap().parse().unwrap();
    invite.address = address.to_string();
    let client = Client::create(&relay.profile_dir(name), b"pw", KdfParams::FAST, 0, &invite, name).unwrap();
    Session::register(&client, &invite.code).await.unwrap().close().await;
    client
}

async fn texts(client: &Client) -> Vec<String> {
    let mut session = Session::login(client).await.unwrap();
    session.receive(Duration::ZERO).await.unwrap();
    session.close().await;
    client.take_unshown().unwrap().into_iter().map(|m| m.text).collect()
}

/// Waits for the first update `wanted` accepts (others are skipped).
async fn until<T>(updates: &mut UnboundedReceiver<Update>, wanted: impl Fn(&Update) -> Option<T>) -> T {
    tokio::time::timeout(WAIT, async {
        loop {
            let update = updates.recv().await.expect("the messenger stopped");
            if let Some(found) = wanted(&update) {
                return found;
            }
        }
    })
    .await
    .expect("no such update in time")
}

/// Alice (through `gate`) and bob, contacts, with a conversation.
async fn pair(relay: &TestRelay, gate: &Gate) -> (Client, Client) {
    let alice = join(relay, "alice", gate.address).await;
    let bob = join(relay, "bob", relay.address).await;
    alice.add_contact("bob", bob.account()).unwrap();
    bob.add_contact("alice", alice.account()).unwrap();
    let mut session = Session::login(&alice).await.unwrap();
    session.send_text("bob", "hello", None).await.unwrap();
    session.close().await;
    assert_eq!(texts(&bob).await, ["hello"]);
    (alice, bob)
}

/// A sending connection the relay ended while it sat unused (a restart, a
/// lost route) is found out before the next send, which goes on a new one
/// rather than failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sending_connection_the_relay_ended_is_replaced_before_the_next_send() {
    let relay = TestRelay::start().unwrap();
    let gate = Gate::start(relay.address).await;
    let (alice, bob) = pair(&relay, &gate).await;
    let mut session = Session::login(&alice).await.unwrap();
    session.send_text("bob", "before", None).await.unwrap();
    assert!(session.sealed_open());
    // Every connection through the gate is cut.
    gate.set_open(false);
    tokio::time::timeout(WAIT, async {
        while session.sealed_open() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the cut sending connection still counts as open");
    gate.set_open(true);
    session.send_text("bob", "after", None).await.unwrap();
    assert_eq!(texts(&bob).await, ["before", "after"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_arrive_live_and_reads_see_them() {
    let relay = TestRelay::start().unwrap();
    let gate = Gate::start(relay.address).await;
    let (alice, bob) = pair(&relay, &gate).await;
    let (messenger, mut updates) = Messenger::start(bob).unwrap();
    until(&mut updates, |u| matches!(u, Update::Link(Link::Online)).then_some(())).await;

    let mut session = Session::login(&alice).await.unwrap();
    session.send_text("bob", "live", None).await.unwrap();
    session.close().await;
    let shown = tokio::time::timeout(WAIT, async {
        loop {
            until(&mut updates, |u| matches!(u, Update::Changed).then_some(())).await;
            let unshown = messenger.read(|bob| bob.take_unshown()).await.unwrap().unwrap();
            if !unshown.is_empty() {
                return unshown;
            }
        }
    })
    .await
    .expect("the message arrives");
    assert_eq!(shown.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(), ["live"]);
    messenger.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_typed_offline_survives_a_kill_and_is_sent_once_the_relay_is_back() {
    let relay = TestRelay::start().unwrap();
    let gate = Gate::start(relay.address).await;
    let (alice, bob) = pair(&relay, &gate).await;
    let dir = relay.profile_dir("alice");
    drop(alice);

    gate.set_open(false);
    let (messenger, mut updates) = Messenger::start(Client::open(&dir, b"pw").unwrap()).unwrap();
    until(&mut updates, |u| matches!(u, Update::Link(Link::Offline { .. })).then_some(())).await;
    messenger.submit(Job::Send { to: "bob".into(), text: "typed offline".into() });
    // The app is killed before the relay comes back: nothing was sent, and
    // the message waits in the profile's outbox.
    let outbox = messenger.read(|alice| alice.outbox()).await.unwrap().unwrap();
    assert_eq!(outbox, [("bob".to_owned(), "typed offline".to_owned())]);
    messenger.abort();
    assert!(texts(&bob).await.is_empty());

    // The next start sends it, once the relay is reachable again.
    gate.set_open(true);
    let (messenger, mut updates) = Messenger::start(Client::open(&dir, b"pw").unwrap()).unwrap();
    let outcome = until(&mut updates, |u| match u {
        Update::Done { outcome, .. } => Some(outcome.clone()),
        _ => None,
    })
    .await;
    assert_eq!(outcome, Ok(String::new()));
    messenger.close();
    assert_eq!(texts(&bob).await, ["typed offline"]);

    // Sent means gone from the outbox.
    assert!(Client::open(&dir, b"pw").unwrap().outbox().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_genuine_wipe_order_wipes_the_profile_from_the_library() {
    let relay = TestRelay::start().unwrap();
    let gate = Gate::start(relay.address).await;
    let (alice, _bob) = pair(&relay, &gate).await;
    let dir = relay.profile_dir("alice");
    let code = alice.wipe_code().unwrap();
    let (messenger, mut updates) = Messenger::start(alice).unwrap();
    until(&mut updates, |u| matches!(u, Update::Link(Link::Online)).then_some(())).await;

    hush_client::send_wipe_order(&code, WAIT).await.unwrap();
    until(&mut updates, |u| matches!(u, Update::Wiped).then_some(())).await;
    messenger.close();
    let reopened = Client::open(&dir, b"pw").map(drop);
    assert!(reopened.is_err_and(|error| error.is_profile_gone()), "the profile is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_job_whose_answer_was_lost_is_done_once_and_reported_done() {
    let relay = TestRelay::start().unwrap();
    let gate = Gate::start(relay.address).await;
    let (alice, bob) = pair(&relay, &gate).await;
    let carol = join(&relay, "carol", relay.address).await;
    alice.add_contact("carol", carol.account()).unwrap();
    carol.add_contact("alice", alice.account()).unwrap();
    let (messenger, mut updates) = Messenger::start(alice).unwrap();
    until(&mut updates, |u| matches!(u, Update::Link(Link::Online)).then_some(())).await;
    // The commit that makes the group (with its Welcome, several KB) goes
    // through, and the connection is cut before the relay's answer.
    gate.cut_after_upload(3_000);
    let ticket = messenger
        .submit(Job::GroupCreate { name: "crew".into(), members: vec!["bob".into(), "carol".into()] });
    let outcome = until(&mut updates, |u| match u {
        Update::Done { ticket: t, outcome } if *t == ticket => Some(outcome.clone()),
        _ => None,
    })
    .await;
    assert_eq!(gate.cuts(), 1, "the answer was not lost: the test did not test anything");
    // Tried again after reconnecting, the job finds its work done (the
    // commit was resolved at login) instead of failing on "exists already".
    assert_eq!(outcome, Ok("group crew created".to_owned()));
    let members = messenger.read(|alice| alice.group_members("crew")).await.unwrap().unwrap();
    assert_eq!(members.len(), 3);
    let groups = messenger.read(|alice| alice.groups()).await.unwrap().unwrap();
    assert_eq!(groups.len(), 1, "one group, not two");
    messenger.close();
    // Bob and carol each joined it once, and know its name.
    for member in [&bob, &carol] {
        let mut session = Session::login(member).await.unwrap();
        session.receive(Duration::ZERO).await.unwrap();
        session.close().await;
        let conversations = member.conversation_summaries().unwrap().len();
        assert_eq!(
            conversations,
            if std::ptr::eq(member, &carol) { 1 } else { 2 },
            "a second group was made"
        );
        assert_eq!(member.group_members("crew").unwrap().len(), 3);
    }
    // The relay ordered commits for two groups (alice and bob's, and crew),
    // not a third, nameless one that the first try left behind.
    let db = rusqlite::Connection::open(relay.data().join("relay.db")).unwrap();
    let groups: i64 = db.query_row("SELECT COUNT(*) FROM group_epochs", [], |row| row.get(0)).unwrap();
    assert_eq!(groups, 2, "the first try's group was not finished but made again");
}

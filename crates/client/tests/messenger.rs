//! The messenger (the driver `hush chat` and apps embed) against a real
//! relay: live deliveries, a message typed while the relay is unreachable
//! that survives the app being killed and is sent once the relay is back,
//! and a remote wipe order obeyed by the library itself.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hush_client::{Client, Job, KdfParams, Link, Messenger, Session, Update};
use hush_proto::Invite;
use hush_testkit::TestRelay;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::UnboundedReceiver;

const WAIT: Duration = Duration::from_secs(30);

/// Forwards TCP to the relay while open; while closed, connections are
/// refused (accepted and dropped) and open ones are cut.
struct Gate {
    address: SocketAddr,
    open: Arc<AtomicBool>,
}

impl Gate {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let flag = Arc::clone(&open);
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !flag.load(Ordering::SeqCst) {
                    continue;
                }
                let flag = Arc::clone(&flag);
                tokio::spawn(async move {
                    let mut relay = TcpStream::connect(target).await.unwrap();
                    let mut check = tokio::time::interval(Duration::from_millis(50));
                    let copy = tokio::io::copy_bidirectional(&mut client, &mut relay);
                    tokio::pin!(copy);
                    loop {
                        tokio::select! {
                            _ = &mut copy => return,
                            _ = check.tick() => if !flag.load(Ordering::SeqCst) { return },
                        }
                    }
                });
            }
        });
        Self { address, open }
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

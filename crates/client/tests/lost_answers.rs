//! Commits whose answer never arrives (issue 9, finding 3). A TCP proxy
//! between one client and a real relay forwards the client's frames but
//! swallows everything the relay says back, then cuts the client off: the
//! relay orders the commit, the committer never learns it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hush_client::{Client, KdfParams, Session};
use hush_proto::Invite;
use hush_testkit::TestRelay;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// Forwards TCP both ways until told to cut answers.
struct Proxy {
    address: SocketAddr,
    cut: Arc<AtomicBool>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&cut);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let relay = TcpStream::connect(target).await.unwrap();
                tokio::spawn(pipe(client, relay, Arc::clone(&flag)));
            }
        });
        Self { address, cut }
    }

    fn cut_answers(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
    }
}

/// While `cut` is set, the relay's bytes are dropped, and the client is
/// disconnected shortly after it sends something. The relay's side stays
/// open, so the relay reads and handles everything the client sent.
async fn pipe(client: TcpStream, relay: TcpStream, cut: Arc<AtomicBool>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut relay_read, mut relay_write) = relay.into_split();
    let hang_up = Arc::new(Notify::new());
    let hung_up = Arc::clone(&hang_up);
    let down_cut = Arc::clone(&cut);
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            tokio::select! {
                read = relay_read.read(&mut buffer) => {
                    let Ok(n @ 1..) = read else { break };
                    if !down_cut.load(Ordering::SeqCst) && client_write.write_all(&buffer[..n]).await.is_err() {
                        break;
                    }
                }
                _ = hung_up.notified() => break,
            }
        }
        let _ = client_write.shutdown().await;
    });
    let mut buffer = vec![0u8; 16 * 1024];
    while let Ok(n @ 1..) = client_read.read(&mut buffer).await {
        if relay_write.write_all(&buffer[..n]).await.is_err() {
            break;
        }
        if cut.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(300)).await;
            hang_up.notify_one();
            break;
        }
    }
    // Keep the relay's side open: closing it is not what is being tested.
    std::future::pending::<()>().await;
    drop(relay_write);
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

/// Regression: the committer used to abandon a commit whose answer was
/// lost although the relay had ordered it, staying an epoch behind: it
/// could not read what others wrote next, and what it wrote could not be
/// read by those who joined in that commit.
#[tokio::test(flavor = "current_thread")]
async fn a_commit_whose_answer_was_lost_is_resolved_by_sending_it_again() {
    let relay = TestRelay::start().unwrap();
    let proxy = Proxy::start(relay.address).await;
    let alice = join(&relay, "alice", proxy.address).await;
    let bob = join(&relay, "bob", relay.address).await;
    let carol = join(&relay, "carol", relay.address).await;

    let mut session = Session::login(&alice).await.unwrap();
    session.group_create("team", &[bob.account(), carol.account()]).await.unwrap();
    session.close().await;
    // Both join and owe a self-update; alice catches up with them.
    assert!(texts(&bob).await.is_empty());
    assert!(texts(&carol).await.is_empty());
    assert!(texts(&alice).await.is_empty());

    // Alice removes carol; the relay orders it, alice never hears back.
    let mut session = Session::login(&alice).await.unwrap();
    // Caught up (as a commit first does), and the connection that sends
    // (opened by the first send) open already, so the next frame on it is
    // the commit.
    session.receive(Duration::ZERO).await.unwrap();
    session.send_text("team", "before the cut", None).await.unwrap();
    assert_eq!(texts(&bob).await, vec!["before the cut"]);
    assert_eq!(texts(&carol).await, vec!["before the cut"]);
    proxy.cut_answers(true);
    let lost =
        tokio::time::timeout(Duration::from_secs(60), session.group_remove("team", &[carol.account()]))
            .await
            .expect("a cut connection must end the request, not hang it");
    assert!(lost.is_err(), "the commit's answer was cut, yet it succeeded");
    drop(session);
    proxy.cut_answers(false);

    // Bob sees the removal, then writes in the new epoch.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        assert!(texts(&bob).await.is_empty());
        let removed = bob.history("team").unwrap().iter().any(|m| m.event && m.text.contains("removed"));
        if removed {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the relay never ordered the commit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut session = Session::login(&bob).await.unwrap();
    session.send_text("team", "after carol left", None).await.unwrap();
    session.close().await;

    // Alice's next login sends the commit again: the relay recognises it,
    // alice merges it and reads bob.
    assert_eq!(texts(&alice).await, vec!["after carol left"]);
    let members: Vec<_> = alice.group_members("team").unwrap().into_iter().map(|m| m.account).collect();
    assert!(!members.contains(&carol.account()), "alice still has carol in the group");
    assert!(texts(&carol).await.is_empty());

    // And the group carries on with alice's next commit.
    let mut session = Session::login(&alice).await.unwrap();
    let group_id = alice.groups().unwrap()[0].1.group_id.clone();
    session.self_update(&group_id).await.unwrap();
    session.send_text("team", "still here", None).await.unwrap();
    session.close().await;
    assert_eq!(texts(&bob).await, vec!["still here"]);
}

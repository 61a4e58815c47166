//! End-to-end tests: the real `hush` binary as relay and as clients, over
//! real TLS sockets on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const HUSH: &str = env!("CARGO_BIN_EXE_hush");

struct Relay {
    data: PathBuf,
    child: Option<Child>,
    address: String,
    pin: String,
    log: PathBuf,
}

impl Relay {
    fn start(data: &Path, listen: &str) -> Self {
        Self::start_with(data, listen, &[])
    }

    /// Starts a relay that logs at debug level.
    fn start_debug(data: &Path, listen: &str) -> Self {
        Self::spawn(data, listen, &[], "debug")
    }

    /// Starts a relay with more `hush serve` arguments.
    fn start_with(data: &Path, listen: &str, extra: &[&str]) -> Self {
        Self::spawn(data, listen, extra, "info")
    }

    fn spawn(data: &Path, listen: &str, extra: &[&str], log_level: &str) -> Self {
        let log = data.with_extension(format!("log{}", std::process::id()));
        let log_file = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let mut child = Command::new(HUSH)
            .env("HUSH_LOG", log_level)
            .args(["serve", "--data"])
            .arg(data)
            .args(["--listen", listen])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert!(line.contains("listening on"), "relay did not start: {line}");
        let address = line.split_whitespace().skip_while(|w| *w != "on").nth(1).unwrap().to_owned();
        let pin = line.split_whitespace().skip_while(|w| *w != "pin").nth(1).unwrap().to_owned();
        Relay { data: data.to_path_buf(), child: Some(child), address, pin, log }
    }

    fn invite(&self) -> String {
        let out = hush(&["admin", "invite", "--data", self.data.to_str().unwrap()], None, None);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    fn stats(&self) -> Value {
        let out = hush(&["admin", "stats", "--json", "--data", self.data.to_str().unwrap()], None, None);
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn signal(&mut self, signal: &str) {
        let mut child = self.child.take().unwrap();
        Command::new("kill").args([signal, &child.id().to_string()]).status().unwrap();
        let status = child.wait().unwrap();
        if signal == "-TERM" {
            assert!(status.success(), "relay did not exit cleanly on SIGTERM: {status}");
        }
    }

    fn restart(&mut self) {
        let address = self.address.clone();
        *self = Relay::start(&self.data, &address);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The `hush` command as the tests run it: no profile from the
/// environment, stdin empty, and the passphrase strength floor off (test
/// passphrases are short; the floor has tests of its own).
fn hush_command(args: &[&str], home: Option<&Path>, passphrase: Option<&str>) -> Command {
    let mut command = Command::new(HUSH);
    if let Some(home) = home {
        command.arg("--home").arg(home);
    }
    command
        .args(args)
        .env_remove("HUSH_HOME")
        .env_remove("HUSH_PANIC_PASSPHRASE")
        .env_remove("HUSH_NEW_PASSPHRASE")
        .env("HUSH_MIN_PASSPHRASE_SCORE", "0")
        .stdin(Stdio::null());
    match passphrase {
        Some(p) => command.env("HUSH_PASSPHRASE", p),
        None => command.env_remove("HUSH_PASSPHRASE"),
    };
    command
}

fn hush(args: &[&str], home: Option<&Path>, passphrase: Option<&str>) -> Output {
    hush_command(args, home, passphrase).output().unwrap()
}

/// `hush` with `input` on standard input.
fn hush_with_stdin(args: &[&str], home: Option<&Path>, passphrase: Option<&str>, input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = hush_command(args, home, passphrase)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

struct User {
    home: PathBuf,
    passphrase: String,
    account: String,
}

impl User {
    fn join(dir: &Path, name: &str, relay: &Relay) -> User {
        let home = dir.join(name);
        let passphrase = format!("{name}-passphrase");
        let out = hush(&["join", &relay.invite(), "--name", name, "--json"], Some(&home), Some(&passphrase));
        assert!(out.status.success(), "join failed: {}", String::from_utf8_lossy(&out.stderr));
        let json: Value = serde_json::from_slice(&out.stdout).unwrap();
        User { home, passphrase, account: json["account"].as_str().unwrap().to_owned() }
    }

    /// Joins at `home` with `passphrase` and a panic passphrase.
    fn join_with_panic(home: &Path, relay: &Relay, passphrase: &str, panic: &str, extra: &[&str]) -> User {
        let invite = relay.invite();
        let mut args = vec!["join", invite.as_str(), "--json"];
        args.extend_from_slice(extra);
        let out = hush_command(&args, Some(home), Some(passphrase))
            .env("HUSH_PANIC_PASSPHRASE", panic)
            .output()
            .unwrap();
        assert!(out.status.success(), "join failed: {}", String::from_utf8_lossy(&out.stderr));
        let json: Value = serde_json::from_slice(&out.stdout).unwrap();
        let account = json["account"].as_str().unwrap().to_owned();
        User { home: home.to_path_buf(), passphrase: passphrase.to_owned(), account }
    }

    fn run(&self, args: &[&str]) -> Output {
        hush(args, Some(&self.home), Some(&self.passphrase))
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    fn recv(&self) -> Vec<Value> {
        self.ok(&["recv", "--json"]).lines().map(|line| serde_json::from_str(line).unwrap()).collect()
    }

    fn texts(&self) -> Vec<String> {
        self.recv().iter().map(|m| m["text"].as_str().unwrap().to_owned()).collect()
    }
}

impl User {
    /// `hush recv --wait 60` in the background, once `relay` counts its two
    /// connections (the logged-in one and the one that receives its queues).
    fn listen_on(&self, relay: &Relay) -> Child {
        let listening = Command::new(HUSH)
            .arg("--home")
            .arg(&self.home)
            .args(["recv", "--wait", "60"])
            .env("HUSH_PASSPHRASE", &self.passphrase)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let socket = relay.data.join("admin.sock");
        wait_until("the listening client's connections", || {
            use std::io::{Read, Write};
            let Ok(mut stream) = std::os::unix::net::UnixStream::connect(&socket) else { return false };
            let _ = stream.write_all(b"connections\n");
            let mut reply = [0u8; 32];
            let n = stream.read(&mut reply).unwrap_or(0);
            String::from_utf8_lossy(&reply[..n]).trim() == "ok 2"
        });
        listening
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else if path.is_file() {
            files.push(path);
        }
    }
    files
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn assert_nowhere(paths: &[PathBuf], needles: &[&[u8]]) {
    for path in paths {
        let bytes = std::fs::read(path).unwrap();
        for needle in needles {
            assert!(
                !contains(&bytes, needle),
                "{} contains {:?}",
                path.display(),
                String::from_utf8_lossy(needle)
            );
        }
    }
}

/// Every row of a relay table, each row's blobs and texts joined.
fn table_rows(db: &rusqlite::Connection, table: &str) -> Vec<Vec<u8>> {
    let mut query = db.prepare(&format!("SELECT * FROM {table}")).unwrap();
    let columns = query.column_count();
    query
        .query_map([], |row| {
            let mut bytes = Vec::new();
            for i in 0..columns {
                match row.get_ref(i)? {
                    rusqlite::types::ValueRef::Blob(b) => bytes.extend_from_slice(b),
                    rusqlite::types::ValueRef::Text(t) => bytes.extend_from_slice(t),
                    _ => {}
                }
            }
            Ok(bytes)
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn two_users_chat_both_ways_and_the_relay_mailbox_empties() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(&dir.path().join("relay"), "127.0.0.1:0");
    let alice = User::join(dir.path(), "alice", &relay);
    let bob = User::join(dir.path(), "bob", &relay);
    alice.ok(&["contact", "add", "bob", &bob.account]);
    bob.ok(&["contact", "add", "alice", &alice.account]);

    alice.ok(&["send", "bob", "hello", "bob"]);
    let got = bob.recv();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["text"], "hello bob");
    assert_eq!(got[0]["from"], alice.account.as_str());
    assert_eq!(got[0]["conversation"], "alice");

    bob.ok(&["send", "alice", "hi alice"]);
    assert_eq!(alice.texts(), vec!["hi alice"]);
    assert!(bob.recv().is_empty(), "a message was shown twice");
    assert_eq!(relay.stats()["queued_messages"], 0);

    let history: Vec<Value> =
        alice.ok(&["history", "bob", "--json"]).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let texts: Vec<_> = history.iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts, vec!["hello bob", "hi alice"]);
    let whoami: Value = serde_json::from_str(&alice.ok(&["whoami", "--json"])).unwrap();
    assert_eq!(whoami["account"], alice.account.as_str());
    assert_eq!(whoami["name"], "alice");
}

#[test]
fn simultaneous_starts_end_in_one_conversation() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(&dir.path().join("relay"), "127.0.0.1:0");
    let alice = User::join(dir.path(), "alice", &relay);
    let bob = User::join(dir.path(), "bob", &relay);
    alice.ok(&["send", &bob.account, "from alice"]);
    bob.ok(&["send", &alice.account, "from bob"]);
    assert_eq!(alice.texts(), vec!["from bob"]);
    assert_eq!(bob.texts(), vec!["from alice"]);
    alice.ok(&["send", &bob.account, "second from alice"]);
    bob.ok(&["send", &alice.account, "second from bob"]);
    assert_eq!(alice.texts(), vec!["second from bob"]);
    assert_eq!(bob.texts(), vec!["second from alice"]);
    let history = alice.ok(&["history", &bob.account, "--json"]);
    assert_eq!(history.lines().count(), 4, "both groups' messages belong to one conversation");
}

#[test]
fn group_add_and_remove_and_removed_member_reads_nothing_after() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(&dir.path().join("relay"), "127.0.0.1:0");
    let alice = User::join(dir.path(), "alice", &relay);
    let bob = User::join(dir.path(), "bob", &relay);
    let carol = User::join(dir.path(), "carol", &relay);
    alice.ok(&["group", "create", "crew", &bob.account]);
    alice.ok(&["group", "add", "crew", &carol.account]);
    alice.ok(&["send", "crew", "all three of us"]);
    assert_eq!(bob.texts(), vec!["all three of us"]);
    let carol_got = carol.recv();
    assert_eq!(carol_got[0]["conversation"], "crew");
    assert_eq!(carol_got[0]["text"], "all three of us");
    bob.ok(&["send", "crew", "bob to the crew"]);
    assert_eq!(alice.texts(), vec!["bob to the crew"]);
    assert_eq!(carol.texts(), vec!["bob to the crew"]);

    let members = |user: &User| -> Vec<(String, bool)> {
        user.ok(&["group", "members", "crew", "--json"])
            .lines()
            .map(|line| serde_json::from_str::<Value>(line).unwrap())
            .map(|m| (m["account"].as_str().unwrap().to_owned(), m["you"].as_bool().unwrap()))
            .collect()
    };
    let mut expected = vec![alice.account.clone(), bob.account.clone(), carol.account.clone()];
    expected.sort();
    let mut listed: Vec<String> = members(&bob).into_iter().map(|(account, _)| account).collect();
    listed.sort();
    assert_eq!(listed, expected);
    assert!(members(&bob).contains(&(bob.account.clone(), true)));
    alice.ok(&["group", "remove", "crew", &carol.account]);
    assert_eq!(members(&alice).len(), 2);
    alice.ok(&["send", "crew", "carol must not read this"]);
    assert_eq!(bob.texts(), vec!["carol must not read this"]);
    assert!(carol.texts().is_empty(), "a removed member read a later message");
    let list = carol.ok(&["group", "list"]);
    assert!(!list.contains("crew"), "carol still lists the group: {list}");
    assert_eq!(relay.stats()["queued_messages"], 0);

    // Re-adding a removed member works, and she reads from then on only.
    alice.ok(&["group", "add", "crew", &carol.account]);
    alice.ok(&["send", "crew", "carol is back"]);
    assert_eq!(bob.texts(), vec!["carol is back"]);
    assert_eq!(carol.texts(), vec!["carol is back"]);
    carol.ok(&["send", "crew", "thanks"]);
    assert_eq!(alice.texts(), vec!["thanks"]);
    assert_eq!(bob.texts(), vec!["thanks"]);
}

/// Regression (issue 9, finding 1): a member who panic-wiped (and so was
/// deactivated) made every later send and the remove commit fail with
/// "unknown account". The relay now skips deactivated recipients.
#[test]
fn a_member_who_wiped_does_not_brick_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(&dir.path().join("relay"), "127.0.0.1:0");
    let alice = User::join(dir.path(), "alice", &relay);
    let bob = User::join(dir.path(), "bob", &relay);
    let carol = User::join_with_panic(&dir.path().join("carol"), &relay, "carol-pass", "carol-duress", &[]);
    let dave = User::join(dir.path(), "dave", &relay);
    alice.ok(&["group", "create", "crew", &bob.account, &carol.account]);
    alice.ok(&["send", "crew", "before"]);
    assert_eq!(bob.texts(), ["before"]);
    assert_eq!(carol.texts(), ["before"]);
    // Carol panic-wipes; the relay deactivates her account.
    assert!(!hush(&["whoami"], Some(&carol.home), Some("carol-duress")).status.success());
    assert!(!carol.home.exists());
    alice.ok(&["send", "crew", "after the wipe"]);
    assert_eq!(bob.texts(), ["after the wipe"]);
    // The relay told alice's device that carol's account is gone; it removed
    // her from the group without anyone having to notice, and everyone sees it.
    let members = |user: &User| -> Vec<String> {
        user.ok(&["group", "members", "crew", "--json"])
            .lines()
            .map(|line| serde_json::from_str::<Value>(line).unwrap()["account"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(!members(&alice).contains(&carol.account), "the wiped member is still in the group");
    assert!(!members(&bob).contains(&carol.account));
    let history = bob.ok(&["history", "crew"]);
    assert!(history.contains("removed"), "{history}");
    bob.ok(&["send", "crew", "bob too"]);
    assert_eq!(alice.texts(), ["bob too"]);
    alice.ok(&["group", "add", "crew", &dave.account]);
    alice.ok(&["send", "crew", "welcome dave"]);
    assert_eq!(bob.texts(), ["welcome dave"]);
    assert_eq!(dave.texts(), ["welcome dave"]);
    // A one-to-one send to the wiped account still fails clearly.
    let out = alice.run(&["send", &carol.account, "anyone there?"]);
    assert!(!out.status.success());
}

/// Regression (issue 9, finding 2): the relay accepted a `Commit` from any
/// logged-in account that named a group's id and epoch, so a removed member
/// could move the group's epoch on with junk and no member's commit would
/// go through again. Now a commit must be signed with the current epoch's
/// key, which only current members can derive.
#[test]
fn a_removed_members_junk_commit_is_refused_and_the_group_carries_on() {
    use hush_client::{Client, ClientError, Session};
    use hush_proto::{ClientFrame, ErrorCode, GroupId, RelayFrame};

    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(&dir.path().join("relay"), "127.0.0.1:0");
    let alice = User::join(dir.path(), "alice", &relay);
    let bob = User::join(dir.path(), "bob", &relay);
    let carol = User::join(dir.path(), "carol", &relay);
    let dave = User::join(dir.path(), "dave", &relay);
    alice.ok(&["group", "create", "crew", &bob.account, &carol.account]);
    alice.ok(&["send", "crew", "before"]);
    assert_eq!(bob.texts(), ["before"]);
    assert_eq!(carol.texts(), ["before"]);
    assert!(alice.texts().is_empty());
    alice.ok(&["group", "remove", "crew", &carol.account]);

    // Carol knew the group's id; the relay's epoch is no secret either.
    let db = rusqlite::Connection::open(relay.data.join("relay.db")).unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    let (group, epoch): (Vec<u8>, i64) =
        db.query_row("SELECT id, epoch FROM group_epochs", [], |row| Ok((row.get(0)?, row.get(1)?))).unwrap();
    drop(db);
    let carols = Client::open(&carol.home, carol.passphrase.as_bytes()).unwrap();
    runtime().block_on(async {
        // Carol is still an account: she gets send tokens, and spends one
        // on a sealed connection, as any sender does.
        let mut account = Session::connect(&carols).await.unwrap();
        let request = hush_proto::tokens::TokenRequest::new(1, &mut rand::rngs::OsRng);
        account
            .send(&ClientFrame::IssueTokens { request: 1, blinded: request.blinded().to_vec() })
            .await
            .unwrap();
        let issued = loop {
            if let Ok(RelayFrame::Tokens { issued, .. }) = account.recv().await {
                break issued;
            }
        };
        let token = request.finish(&issued, issued.day).unwrap().remove(0);
        account.close().await;
        let mut raw = raw_connection(&relay).await;
        hush_client::hello(&mut raw).await.unwrap();
        raw.send(&ClientFrame::Spend { request: 0, token }).await.unwrap();
        assert!(matches!(raw.recv().await, Ok(RelayFrame::Accepted { request: 0, .. })));
        // A well-formed commit (the Ed25519 base point as the announced
        // key) whose signature is not made with the epoch's key.
        let mut next_key = [0x66; 32];
        next_key[0] = 0x58;
        let junk = |request, epoch: i64, next_key: [u8; 32]| ClientFrame::SealedCommit {
            request,
            group: GroupId(group.clone()),
            epoch: epoch as u64,
            targets: vec![],
            rotate: vec![],
            payload: hush_proto::announced_payload(
                hush_proto::COMMIT_PAYLOAD_TAG,
                &hush_proto::KeyAnnouncement { next_key, signature: [0; 64] },
                b"junk that no member can process",
            ),
            welcome: None,
            next_key,
            signature: [9; 64],
        };
        raw.send(&junk(1, epoch, next_key)).await.unwrap();
        assert!(
            matches!(raw.recv().await, Ok(RelayFrame::Rejected { request: 1, code: ErrorCode::NotAMember })),
            "a non-member moved the group on"
        );
        raw.send(&junk(2, epoch - 1, next_key)).await.unwrap();
        assert!(matches!(raw.recv().await, Ok(RelayFrame::StaleEpoch { request: 2, .. })));
        // The connection stays usable: a refusal is an answer, not an error.
        raw.send(&junk(3, epoch, next_key)).await.unwrap();
        assert!(!matches!(
            raw.recv().await,
            Err(ClientError::Disconnected) | Ok(RelayFrame::Accepted { .. } | RelayFrame::Sent { .. })
        ));
        raw.close().await;
    });
    drop(carols);

    // The members carry on: messages, a self-update, an addition.
    bob.ok(&["send", "crew", "after the junk"]);
    assert_eq!(alice.texts(), ["after the junk"]);
    alice.ok(&["group", "add", "crew", &dave.account]);
    alice.ok(&["send", "crew", "welcome dave"]);
    assert_eq!(bob.texts(), ["welcome dave"]);
    assert_eq!(dave.texts(), ["welcome dave"]);
    assert!(carol.texts().is_empty());
}

/// A group someone else names like one of ours must not catch what we send
/// to ours: the received name is made unambiguous.
#[test]
fn a_stranger_cannot_take_over_a_group_name() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(&dir.path().join("relay"), "127.0.0.1:0");
    let alice = User::join(dir.path(), "alice", &relay);
    let bob = User::join(dir.path(), "bob", &relay);
    let mallory = User::join(dir.path(), "mallory", &relay);
    alice.ok(&["group", "create", "crew", &bob.account]);
    mallory.ok(&["group", "create", "crew", &alice.account]);
    assert!(alice.texts().is_empty());
    let groups = alice.ok(&["group", "list"]);
    let names: Vec<&str> = groups.lines().collect();
    assert_eq!(names.len(), 2, "{groups}");
    assert!(names.contains(&"crew"), "{groups}");
    assert!(names.iter().any(|n| n.starts_with("crew (from ") && n.contains(&mallory.account)), "{groups}");
    alice.ok(&["send", "crew", "for bob only"]);
    assert_eq!(bob.texts(), ["for bob only"]);
    assert!(mallory.texts().is_empty(), "mallory's look-alike group caught the message");
}

#[test]
fn offline_recipient_gets_everything_once_in_order_across_restart_and_kill() {
    let dir = tempfile::tempdir().unwrap();
    let mut relay = Relay::start(&dir.path().join("relay"), "127.0.0.1:0");
    let alice = User::join(dir.path(), "alice", &relay);
    let bob = User::join(dir.path(), "bob", &relay);
    alice.ok(&["send", &bob.account, "one"]);
    alice.ok(&["send", &bob.account, "two"]);
    relay.signal("-TERM");
    relay.restart();
    alice.ok(&["send", &bob.account, "three"]);
    // Killed right after the sender saw its acknowledgement.
    relay.signal("-KILL");
    relay.restart();
    // The Welcome, the conversation's description and three messages.
    assert_eq!(relay.stats()["queued_messages"], 5);
    assert_eq!(bob.texts(), vec!["one", "two", "three"]);
    assert!(bob.texts().is_empty());
    // Alice is no contact of bob's: a request, into which bob's device
    // sends nothing until he accepts; then his owed self-update goes out.
    assert_eq!(relay.stats()["queued_messages"], 0);
    bob.ok(&["requests", "accept", &alice.account]);
    assert!(bob.texts().is_empty());
    assert_eq!(relay.stats()["queued_messages"], 1);
    assert!(alice.texts().is_empty());
    assert_eq!(relay.stats()["queued_messages"], 0);
}

/// Issue 9, finding 6: a Welcome from anyone was joined and treated like
/// any other. Now what people who are not contacts start waits as a
/// request: shown, marked, and silent until accepted or declined.
#[test]
fn conversations_started_by_strangers_are_requests() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(&dir.path().join("relay"), "127.0.0.1:0");
    let alice = User::join(dir.path(), "alice", &relay);
    let bob = User::join(dir.path(), "bob", &relay);
    let mallory = User::join(dir.path(), "mallory", &relay);
    let carol = User::join(dir.path(), "carol", &relay);
    bob.ok(&["contact", "add", "alice", &alice.account]);
    let requests = |user: &User| -> Vec<Value> {
        user.ok(&["requests", "--json"]).lines().map(|line| serde_json::from_str(line).unwrap()).collect()
    };

    // A contact's group is an ordinary conversation.
    alice.ok(&["group", "create", "friends", &bob.account]);
    alice.ok(&["send", "friends", "hi bob"]);
    let got = bob.recv();
    assert_eq!(got.len(), 1);
    assert!(got[0].get("request").is_none(), "{got:?}");
    assert!(requests(&bob).is_empty());
    // Bob's owed self-update went to alice.
    assert_eq!(relay.stats()["queued_messages"], 1);
    assert!(alice.texts().is_empty());

    // A stranger's group: shown as a request, and bob's device stays silent.
    mallory.ok(&["group", "create", "free stuff", &bob.account]);
    mallory.ok(&["send", "free stuff", "click here"]);
    let got = bob.recv();
    assert_eq!(
        (got.len(), got[0]["text"].as_str(), got[0]["request"].as_bool()),
        (1, Some("click here"), Some(true))
    );
    let listed = requests(&bob);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["conversation"], "free stuff");
    assert_eq!(listed[0]["from"], mallory.account.as_str());
    assert_eq!(listed[0]["members"], 2);
    assert_eq!(
        relay.stats()["queued_messages"],
        0,
        "bob's device answered a stranger (a self-update commit)"
    );
    // Declined: gone from the device, and what mallory sends next is not shown.
    bob.ok(&["requests", "decline", "free stuff"]);
    assert!(requests(&bob).is_empty());
    assert!(!bob.ok(&["group", "list"]).contains("free stuff"));
    mallory.ok(&["send", "free stuff", "are you there?"]);
    assert!(bob.texts().is_empty());
    assert!(!bob.run(&["requests", "accept", "free stuff"]).status.success());

    // A stranger writing one-to-one: replying accepts.
    carol.ok(&["send", &bob.account, "hello from carol"]);
    assert_eq!(bob.texts(), ["hello from carol"]);
    assert_eq!(requests(&bob).len(), 1);
    bob.ok(&["send", &carol.account, "hello carol"]);
    assert!(requests(&bob).is_empty());
    assert_eq!(carol.texts(), ["hello carol"]);
    // The alice group was never a request and carries on.
    bob.ok(&["send", "friends", "thanks"]);
    assert_eq!(alice.texts(), ["thanks"]);
}

#[test]
fn seizure_of_relay_and_device_finds_no_plaintext_or_sender() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(&dir.path().join("relay"), "127.0.0.1:0");
    let alice = User::join(dir.path(), "alice", &relay);
    let bob = User::join(dir.path(), "bob", &relay);
    alice.ok(&["contact", "add", "bobbycontactname", &bob.account]);
    alice.ok(&["send", "bobbycontactname", "the-drop-is-at-pier-seven"]);
    alice.ok(&["group", "create", "secretgroupname", &bob.account]);
    alice.ok(&["send", "secretgroupname", "the-group-plaintext-words"]);
    // Bob stays offline: the messages are queued at the relay when it is seized.
    let relay_files = files_under(&relay.data);
    let plaintexts: [&[u8]; 4] =
        [b"the-drop-is-at-pier-seven", b"the-group-plaintext-words", b"bobbycontactname", b"secretgroupname"];
    assert_nowhere(&relay_files, &plaintexts);
    assert_nowhere(std::slice::from_ref(&relay.log), &plaintexts);
    assert_nowhere(std::slice::from_ref(&relay.log), &[alice.account.as_bytes(), bob.account.as_bytes()]);

    // The queued rows carry no sender: read the mailbox and queue tables
    // directly.
    let db = rusqlite::Connection::open(relay.data.join("relay.db")).unwrap();
    let alice_id: hush_proto::AccountId = alice.account.parse().unwrap();
    let rows: Vec<Vec<u8>> =
        ["mailbox", "payloads", "queue_entries"].iter().flat_map(|table| table_rows(&db, table)).collect();
    assert!(rows.len() >= 3, "messages should be queued for offline bob");
    for row in &rows {
        assert!(!contains(row, &alice_id.0), "a queued row names its sender");
        assert!(!contains(row, alice.account.as_bytes()));
    }

    assert_eq!(bob.recv().len(), 2);
    for user in [&alice, &bob] {
        assert_nowhere(&files_under(&user.home), &plaintexts);
    }
}

#[test]
fn bad_invite_wrong_passphrase_and_deactivated_account_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(&dir.path().join("relay"), "127.0.0.1:0");
    let alice = User::join(dir.path(), "alice", &relay);
    let bob = User::join(dir.path(), "bob", &relay);

    // An invite with a made-up code.
    let good = relay.invite();
    let forged = format!("{}/{}", good.rsplit_once('/').unwrap().0, "aaaaaaaaaaaaaaaaaaaaaaaaaa");
    let out = hush(&["join", &forged], Some(&dir.path().join("mallory")), Some("pw"));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invite"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The profile was not left half-made: the real invite still works there.
    let out = hush(&["join", &good], Some(&dir.path().join("mallory")), Some("pw"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A used invite is refused.
    let out = hush(&["join", &good], Some(&dir.path().join("eve")), Some("pw"));
    assert!(!out.status.success());

    // Wrong passphrase: clear error; it uses up one attempt slot of the key
    // file and touches nothing else.
    let key_before = std::fs::read(alice.home.join("key")).unwrap();
    let db_before = std::fs::read(alice.home.join("hush.db")).unwrap();
    let out = hush(&["whoami"], Some(&alice.home), Some("not-the-passphrase"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong passphrase"));
    let key_after = std::fs::read(alice.home.join("key")).unwrap();
    assert_eq!(key_after.len(), key_before.len());
    assert_eq!(std::fs::read(alice.home.join("hush.db")).unwrap(), db_before);
    alice.ok(&["whoami"]);

    // Deactivation: locked out, introductions dropped, others unaffected.
    // (What waits in the account's queues expires with the retention: the
    // relay cannot tell which queues are the account's.)
    alice.ok(&["send", &bob.account, "queued for bob"]);
    let queued = relay.stats()["queued_messages"].as_u64().unwrap();
    let out =
        hush(&["admin", "deactivate", &bob.account, "--data", relay.data.to_str().unwrap()], None, None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(relay.stats()["queued_messages"].as_u64().unwrap(), queued - 1, "the Welcome stayed");
    assert_eq!(relay.stats()["active_accounts"], 2);
    let out = bob.run(&["recv"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("deactivated"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Starting a conversation with a deactivated account fails (it has no
    // key package any more). Alice's existing conversation with bob cannot
    // be refused by the relay, which does not know the conversation's
    // queues are bob's: what she writes there waits until it expires.
    let carol = User::join(dir.path(), "carol", &relay);
    let out = carol.run(&["send", &bob.account, "again"]);
    assert!(!out.status.success(), "starting a conversation with a deactivated account must fail");
    alice.ok(&["send", &carol.account, "still working"]);
    assert_eq!(carol.texts(), vec!["still working"]);
}

#[test]
fn deactivation_closes_a_live_connection() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(&dir.path().join("relay"), "127.0.0.1:0");
    let bob = User::join(dir.path(), "bob", &relay);
    let mut listening = bob.listen_on(&relay);
    let out =
        hush(&["admin", "deactivate", &bob.account, "--data", relay.data.to_str().unwrap()], None, None);
    assert!(out.status.success());
    let started = Instant::now();
    wait_until("the live client to be disconnected", || listening.try_wait().unwrap().is_some());
    assert!(started.elapsed() < Duration::from_secs(30));
    let output = listening.wait_with_output().unwrap();
    assert!(!output.status.success());
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

async fn raw_connection(relay: &Relay) -> hush_client::Connection {
    hush_client::Connection::open(&relay.address, relay.pin.parse().unwrap()).await.unwrap()
}

#[test]
fn hostile_frames_get_errors_and_do_not_disturb_others() {
    use hush_client::ClientError;
    use hush_proto::{ClientFrame, ErrorCode, RelayFrame, PROTOCOL_VERSION};

    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(&dir.path().join("relay"), "127.0.0.1:0");
    let alice = User::join(dir.path(), "alice", &relay);
    let bob = User::join(dir.path(), "bob", &relay);
    runtime().block_on(async {
        // Garbage instead of a frame.
        let mut garbage = raw_connection(&relay).await;
        garbage.send_raw(vec![0xff, 1, 2, 3]).await.unwrap();
        assert!(matches!(garbage.recv().await, Err(ClientError::Relay(ErrorCode::Malformed))));

        // A frame over the size limit.
        let mut huge = raw_connection(&relay).await;
        let _ = huge.send_raw(vec![0u8; hush_proto::limits::MAX_FRAME_BYTES + 1024]).await;
        assert!(huge.recv().await.is_err(), "an oversized frame must end the connection");

        // Wrong protocol version.
        let mut old = raw_connection(&relay).await;
        old.send(&ClientFrame::Hello { version: PROTOCOL_VERSION + 1 }).await.unwrap();
        assert!(matches!(old.recv().await, Err(ClientError::Relay(ErrorCode::UnsupportedVersion))));

        // A login with a signature that does not verify.
        let mut forger = raw_connection(&relay).await;
        forger.send(&ClientFrame::Hello { version: PROTOCOL_VERSION }).await.unwrap();
        assert!(matches!(forger.recv().await.unwrap(), RelayFrame::Challenge { .. }));
        let account = alice.account.parse().unwrap();
        forger.send(&ClientFrame::Login { account, signature: [7u8; 64] }).await.unwrap();
        assert!(matches!(forger.recv().await, Err(ClientError::Relay(ErrorCode::BadSignature))));

        // A request before login.
        let mut early = raw_connection(&relay).await;
        early.send(&ClientFrame::Subscribe).await.unwrap();
        assert!(matches!(early.recv().await, Err(ClientError::Relay(ErrorCode::Unexpected))));

        // A certificate other than the pinned one is refused by the client.
        let wrong_pin = hush_proto::CertificatePin([0u8; 32]);
        let refused = hush_client::Connection::open(&relay.address, wrong_pin).await;
        assert!(matches!(refused, Err(ClientError::WrongCertificate)));
    });
    alice.ok(&["send", &bob.account, "still served"]);
    assert_eq!(bob.texts(), vec!["still served"]);
}

#[test]
fn a_relay_that_substitutes_a_key_package_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(&dir.path().join("relay"), "127.0.0.1:0");
    let alice = User::join(dir.path(), "alice", &relay);
    let bob = User::join(dir.path(), "bob", &relay);
    let mallory = User::join(dir.path(), "mallory", &relay);
    // The relay lies: it hands out mallory's key packages as bob's.
    let db = rusqlite::Connection::open(relay.data.join("relay.db")).unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    let bob_id: hush_proto::AccountId = bob.account.parse().unwrap();
    let mallory_id: hush_proto::AccountId = mallory.account.parse().unwrap();
    db.execute("DELETE FROM key_packages WHERE account = ?1", [&bob_id.0[..]]).unwrap();
    db.execute("UPDATE key_packages SET account = ?1 WHERE account = ?2", [&bob_id.0[..], &mallory_id.0[..]])
        .unwrap();
    drop(db);
    let out = alice.run(&["send", &bob.account, "for bob only"]);
    assert!(!out.status.success(), "the send must fail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("key substitution"), "{stderr}");
    assert!(mallory.texts().is_empty());
    assert!(bob.texts().is_empty());
}

#[test]
fn self_update_policy_from_join_is_applied() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(&dir.path().join("relay"), "127.0.0.1:0");
    let home = dir.path().join("alice");
    let out = hush(
        &["join", &relay.invite(), "--update-every-messages", "2", "--json"],
        Some(&home),
        Some("alice-passphrase"),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let account =
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["account"].as_str().unwrap().to_owned();
    let alice = User { home, passphrase: "alice-passphrase".into(), account };
    let bob = User::join(dir.path(), "bob", &relay);
    for text in ["one", "two", "three"] {
        alice.ok(&["send", &bob.account, text]);
    }
    // Welcome, description, three texts, and one self-update commit before the third.
    assert_eq!(relay.stats()["queued_messages"], 6);
    assert_eq!(bob.texts(), vec!["one", "two", "three"]);
}

/// Regression (issue 9, finding 4): self-updates were checked only when
/// sending, so a member who only reads never rotated its keys. Bob only
/// reads, with a 2-second update interval: a `recv` after that interval
/// sends his self-update commit, and the conversation carries on.
#[test]
fn a_member_who_only_reads_self_updates_on_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(&dir.path().join("relay"), "127.0.0.1:0");
    let alice = User::join(dir.path(), "alice", &relay);
    let home = dir.path().join("bob");
    let out =
        hush(&["join", &relay.invite(), "--update-every", "2s", "--json"], Some(&home), Some("bob-pass"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let account =
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["account"].as_str().unwrap().to_owned();
    let bob = User { home, passphrase: "bob-pass".into(), account };
    bob.ok(&["contact", "add", "alice", &alice.account]);
    alice.ok(&["send", &bob.account, "one"]);
    // Joining owes an update at once: bob's first recv sends it.
    assert_eq!(bob.texts(), ["one"]);
    let updated = Instant::now();
    assert_eq!(relay.stats()["queued_messages"], 1, "the self-update owed on joining");
    assert!(alice.texts().is_empty());
    assert_eq!(relay.stats()["queued_messages"], 0);
    // Bob only reads; once his interval has passed, a recv updates.
    wait_until("bob's scheduled self-update", || {
        assert!(bob.texts().is_empty());
        relay.stats()["queued_messages"] == 1
    });
    assert!(updated.elapsed() >= Duration::from_millis(1500), "updated before the interval");
    assert!(alice.texts().is_empty());
    alice.ok(&["send", &bob.account, "two"]);
    assert_eq!(bob.texts(), ["two"]);
    bob.ok(&["send", &alice.account, "three"]);
    assert_eq!(alice.texts(), ["three"]);
}

fn fresh_machine_output(home: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = hush(args, Some(home), Some("any-passphrase"));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn panic_passphrase_wipes_silently_and_deactivates_the_account() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(&dir.path().join("relay"), "127.0.0.1:0");
    let home = dir.path().join("alice");
    let alice = User::join_with_panic(&home, &relay, "alice-passphrase", "duress words", &[]);
    let bob = User::join(dir.path(), "bob", &relay);
    alice.ok(&["contact", "add", "bobcontactname", &bob.account]);
    alice.ok(&["send", "bobcontactname", "alice-plaintext-before-panic"]);
    bob.ok(&["send", &alice.account, "bob-plaintext-to-alice"]);
    assert_eq!(alice.texts(), vec!["bob-plaintext-to-alice"]);
    let before = relay.stats()["active_accounts"].as_u64().unwrap();

    let started = Instant::now();
    let panicked = hush(&["whoami"], Some(&home), Some("duress words"));
    eprintln!("panic wipe took {:?} (process start to exit)", started.elapsed());
    assert!(!home.exists(), "the profile directory must be gone");
    // Exactly what a machine that never had a profile says.
    let fresh = fresh_machine_output(&home, &["whoami"]);
    assert_eq!(
        (
            panicked.status.code(),
            String::from_utf8_lossy(&panicked.stdout).into(),
            String::from_utf8_lossy(&panicked.stderr).into()
        ),
        fresh
    );
    assert_eq!(relay.stats()["active_accounts"].as_u64().unwrap(), before - 1);
    let out = bob.run(&["send", &alice.account, "after the wipe"]);
    assert!(!out.status.success(), "a wiped account can no longer receive");
    assert_nowhere(
        &files_under(&relay.data),
        &[b"alice-plaintext-before-panic", b"bob-plaintext-to-alice", b"bobcontactname", b"duress words"],
    );
}

#[test]
fn too_many_wrong_passphrases_wipe_the_profile() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(&dir.path().join("relay"), "127.0.0.1:0");
    let home = dir.path().join("alice");
    let out = hush(&["join", &relay.invite(), "--max-attempts", "3"], Some(&home), Some("right"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for _ in 0..2 {
        let out = hush(&["whoami"], Some(&home), Some("wrong"));
        assert!(String::from_utf8_lossy(&out.stderr).contains("wrong passphrase"));
    }
    // A right passphrase resets the count; a wrong one changes nothing else.
    assert!(hush(&["whoami"], Some(&home), Some("right")).status.success());
    for _ in 0..2 {
        assert!(!hush(&["whoami"], Some(&home), Some("wrong")).status.success());
    }
    assert!(home.exists());
    let out = hush(&["whoami"], Some(&home), Some("wrong"));
    assert!(!home.exists(), "the third wrong passphrase in a row wipes");
    let fresh = fresh_machine_output(&home, &["whoami"]);
    assert_eq!(out.status.code(), fresh.0);
    assert_eq!(String::from_utf8_lossy(&out.stderr), fresh.2);
}

#[test]
fn disappearing_messages_vanish_from_every_member_and_from_the_relay() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(&dir.path().join("relay"), "127.0.0.1:0");
    let alice = User::join(dir.path(), "alice", &relay);
    let bob = User::join(dir.path(), "bob", &relay);
    alice.ok(&["send", &bob.account, "hello, this one stays"]);
    alice.ok(&["timer", &bob.account, "3s"]);
    alice.ok(&["send", &bob.account, "this one disappears"]);
    let got = bob.recv();
    let texts: Vec<_> = got.iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts, vec!["hello, this one stays", "disappearing messages: 3s", "this one disappears"]);
    assert_eq!(got[1]["event"], true);
    assert!(got[2]["expires_at"].is_string());
    // Bob's replies follow the timer his client learned.
    bob.ok(&["send", &alice.account, "bob's reply also disappears"]);
    assert_eq!(alice.texts(), vec!["bob's reply also disappears"]);
    for user in [&alice, &bob] {
        wait_until("messages to disappear", || {
            let history = user
                .ok(&["history", if user.account == alice.account { &bob.account } else { &alice.account }]);
            !history.contains("disappears")
        });
        let history =
            user.ok(&["history", if user.account == alice.account { &bob.account } else { &alice.account }]);
        assert!(history.contains("this one stays") && history.contains("disappearing messages: 3s"));
    }

    // A one-off timer on a message nobody collects: the relay drops it too.
    alice.ok(&["timer", &bob.account, "off"]);
    alice.ok(&["send", &bob.account, "--expire", "2s", "never delivered"]);
    wait_until("the relay to drop the expired message", || relay.stats()["queued_messages"] == 1);
    let texts = bob.texts();
    assert_eq!(texts, vec!["disappearing messages: off"]);
    assert_nowhere(&files_under(&relay.data), &[b"never delivered", b"this one disappears"]);
}

#[test]
fn remote_wipe_with_the_wipe_code_and_only_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(&dir.path().join("relay"), "127.0.0.1:0");
    let alice = User::join(dir.path(), "alice", &relay);
    let home = dir.path().join("bob");
    let out = hush(&["join", &relay.invite(), "--json"], Some(&home), Some("bob-pass"));
    let joined: Value = serde_json::from_slice(&out.stdout).unwrap();
    let bob = User {
        home: home.clone(),
        passphrase: "bob-pass".into(),
        account: joined["account"].as_str().unwrap().into(),
    };
    let code = joined["wipe_code"].as_str().unwrap().to_owned();
    assert!(code.starts_with("hush-wipe://") && code.contains(&bob.account));
    alice.ok(&["send", &bob.account, "message-for-bob-before-wipe"]);
    assert_eq!(bob.texts(), vec!["message-for-bob-before-wipe"]);

    // A wrong code changes nothing.
    let (head, secret) = code.rsplit_once('/').unwrap();
    let wrong_secret: String = secret.chars().rev().collect();
    let wrong = format!("{head}/{wrong_secret}");
    let out = hush(&["remote-wipe", &wrong], None, None);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("wipe code"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    alice.ok(&["send", &bob.account, "still fine"]);
    assert_eq!(bob.texts(), vec!["still fine"]);

    // The right code, from a machine with no profile at all.
    let out = hush(&["remote-wipe", &code], Some(&dir.path().join("nobody")), None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let wiped = bob.run(&["recv"]);
    assert!(!wiped.status.success());
    assert!(!home.exists(), "the device wiped itself when it next connected");
    let fresh = fresh_machine_output(&home, &["recv"]);
    assert_eq!(String::from_utf8_lossy(&wiped.stderr), fresh.2);
    let out = alice.run(&["send", &bob.account, "after"]);
    assert!(!out.status.success(), "a wiped account cannot receive");
}

#[test]
fn remote_wipe_reaches_a_connected_device_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(&dir.path().join("relay"), "127.0.0.1:0");
    let home = dir.path().join("bob");
    let out = hush(&["join", &relay.invite(), "--json"], Some(&home), Some("bob-pass"));
    let code =
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["wipe_code"].as_str().unwrap().to_owned();
    let bob = User { home: home.clone(), passphrase: "bob-pass".into(), account: String::new() };
    let mut listening = bob.listen_on(&relay);
    assert!(hush(&["remote-wipe", &code], None, None).status.success());
    wait_until("the connected device to wipe itself", || listening.try_wait().unwrap().is_some());
    assert!(!listening.wait().unwrap().success());
    assert!(!home.exists());
}

#[test]
fn provisioned_accounts_are_counted_and_bad_lines_refused() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(&dir.path().join("relay"), "127.0.0.1:0");
    let data = relay.data.to_str().unwrap().to_owned();
    let file = dir.path().join("accounts");
    let line = |n: u8| format!("{} {}\n", format!("{n:02x}").repeat(32), "ab".repeat(32));
    std::fs::write(&file, format!("{}{}{}", line(1), line(2), line(1))).unwrap();
    let out = hush(&["admin", "provision", file.to_str().unwrap(), "--data", &data], None, None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "provisioned 2 of 3 accounts");
    assert_eq!(relay.stats()["accounts"], 2);

    std::fs::write(&file, "not-hex ab\n").unwrap();
    let out = hush(&["admin", "provision", file.to_str().unwrap(), "--data", &data], None, None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 1: expected IDENTITY_KEY_HEX"));
    assert_eq!(relay.stats()["accounts"], 2);
}

#[path = "e2e/chat.rs"]
mod chat;
#[path = "e2e/cluster.rs"]
mod cluster;
#[path = "e2e/graph.rs"]
mod graph;
#[path = "e2e/operator.rs"]
mod operator;
#[path = "e2e/reports.rs"]
mod reports;
#[path = "e2e/seizure.rs"]
mod seizure;

#[test]
fn version_names_the_commit_it_was_built_from() {
    let output = hush(&["--version"], None, None);
    assert!(output.status.success());
    let version = String::from_utf8_lossy(&output.stdout);
    let head =
        Command::new("git").args(["rev-parse", "HEAD"]).current_dir(env!("CARGO_MANIFEST_DIR")).output();
    let expected = match head {
        Ok(head) if head.status.success() => String::from_utf8_lossy(&head.stdout).trim().to_owned(),
        // Not a git checkout: the build says so.
        _ => "unknown".to_owned(),
    };
    assert_eq!(version.trim(), format!("hush {} (commit {expected})", env!("CARGO_PKG_VERSION")));
}

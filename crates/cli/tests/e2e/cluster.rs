//! Two `hush serve` processes on one PostgreSQL database (a private server
//! the test starts): clients whose invite lists both fail over when one is
//! killed, nothing acknowledged is lost and nothing is shown twice; the
//! operator's commands work through either node's data directory; a store
//! that cannot be reached, or a bad URL, is a clear error that never shows
//! the password.

use super::*;

/// A password the test server never asks for (it trusts local users), so
/// that the tests can check it is shown nowhere.
const PASSWORD: &str = "s3cret-pw";

fn store_url() -> String {
    let url = hush_pgtest::Cluster::shared().database();
    url.replacen("postgresql://hush@", &format!("postgresql://hush:{PASSWORD}@"), 1)
}

/// Starts the first node of a cluster, then a second on a data directory
/// holding copies of the first one's certificate and key (logging at debug
/// level, for the tests that read its log).
fn cluster(dir: &Path, url: &str) -> (Relay, Relay) {
    let first = Relay::start_with(&dir.join("a"), "127.0.0.1:0", &["--store", url]);
    let second_data = dir.join("b");
    std::fs::create_dir(&second_data).unwrap();
    for file in ["cert.pem", "key.pem"] {
        std::fs::copy(first.data.join(file), second_data.join(file)).unwrap();
    }
    // The most specific directive for the module that logs statements.
    let log_level = "debug,tokio_postgres::query=trace";
    let second = Relay::spawn(&second_data, "127.0.0.1:0", &["--store", url], log_level);
    assert_eq!(first.pin, second.pin);
    (first, second)
}

/// Joins through an invite minted on `node`'s data directory for `addresses`.
fn join_cluster(dir: &Path, name: &str, node: &Relay, addresses: &str) -> User {
    let out =
        hush(&["admin", "invite", "--data", node.data.to_str().unwrap(), "--address", addresses], None, None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let invite = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(invite.starts_with(&format!("hush://{addresses}/")), "{invite}");
    let home = dir.join(name);
    let passphrase = format!("{name}-passphrase");
    let out = hush(&["join", &invite, "--name", name, "--json"], Some(&home), Some(&passphrase));
    assert!(out.status.success(), "join failed: {}", String::from_utf8_lossy(&out.stderr));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    User { home, passphrase, account: json["account"].as_str().unwrap().to_owned() }
}

#[test]
fn clients_of_a_two_relay_cluster_survive_a_relay_killed_mid_send() {
    let dir = tempfile::tempdir().unwrap();
    let url = store_url();
    let (mut first, second) = cluster(dir.path(), &url);
    let addresses = format!("{},{}", first.address, second.address);
    let alice = join_cluster(dir.path(), "alice", &first, &addresses);
    let bob = join_cluster(dir.path(), "bob", &second, &addresses);
    alice.ok(&["contact", "add", "bob", &bob.account]);
    bob.ok(&["contact", "add", "alice", &alice.account]);

    // Alice sends one message after another; the first relay is killed
    // (SIGKILL) once ten are acknowledged, while she goes on.
    let (acked_tx, acked_rx) = std::sync::mpsc::channel::<usize>();
    let sender = {
        let (home, passphrase, to) = (alice.home.clone(), alice.passphrase.clone(), bob.account.clone());
        std::thread::spawn(move || {
            let mut acknowledged = Vec::new();
            for n in 0..30 {
                let text = format!("message {n}");
                let out = hush(&["send", &to, &text], Some(&home), Some(&passphrase));
                if out.status.success() {
                    acknowledged.push(text);
                    let _ = acked_tx.send(acknowledged.len());
                }
            }
            acknowledged
        })
    };
    while acked_rx.recv_timeout(Duration::from_secs(120)).unwrap() < 10 {}
    first.signal("-KILL");
    let acknowledged = sender.join().unwrap();
    assert!(acknowledged.len() >= 25, "sends kept failing after the failover: {acknowledged:?}");

    // Bob reads through whichever relay is left.
    let shown = bob.texts();
    for text in &acknowledged {
        assert!(shown.contains(text), "acknowledged and lost: {text} (shown: {shown:?})");
    }
    let mut unique = shown.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), shown.len(), "shown twice: {shown:?}");

    // Nothing shows the database's password: not the logs, not the admin
    // commands; the URL is kept in a file only its owner reads.
    for log in [&first.log, &second.log] {
        let text = std::fs::read_to_string(log).unwrap();
        assert!(!text.contains(PASSWORD), "the password is in {}", log.display());
        assert!(text.contains("hush:***@"), "the store is not named in {}", log.display());
    }
    // Nor any statement's parameters (queue ids, ciphertext, account ids),
    // which the PostgreSQL client logs at debug level.
    let debug = std::fs::read_to_string(&second.log).unwrap();
    assert!(debug.contains("DEBUG"), "the second relay did not log at debug level");
    assert!(!debug.contains("parameters"), "statement parameters are in {}", second.log.display());
    let stats = hush(&["admin", "stats", "--json", "--data", second.data.to_str().unwrap()], None, None);
    assert!(stats.status.success(), "{}", String::from_utf8_lossy(&stats.stderr));
    assert!(!String::from_utf8_lossy(&stats.stdout).contains(PASSWORD));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(second.data.join("store.url")).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "store.url is readable by others: {mode:o}");
}

#[test]
fn deactivation_through_one_node_closes_a_connection_held_by_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = cluster(dir.path(), &store_url());
    // Bob's invite names the first relay only: his live connection is there.
    let bob = join_cluster(dir.path(), "bob", &second, &first.address);
    let mut listening = bob.listen_on(&first);
    // The operator works on the second node's data directory.
    let out =
        hush(&["admin", "deactivate", &bob.account, "--data", second.data.to_str().unwrap()], None, None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_until("the first relay to close bob's connection", || listening.try_wait().unwrap().is_some());
    assert!(!listening.wait_with_output().unwrap().status.success());
}

#[test]
fn an_unreachable_or_malformed_store_is_a_clear_error_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let nowhere = dir.path().join("no-server").display().to_string().replace('/', "%2F");
    let cases = [
        (
            format!("postgresql://hush:{PASSWORD}@{nowhere}/hush"),
            "cannot reach the database at postgresql://hush:***@",
        ),
        (
            format!("postgresql://hush:{PASSWORD}@db.invalid:notaport/hush"),
            "bad store URL: postgresql://hush:***@",
        ),
    ];
    for (n, (url, expected)) in cases.iter().enumerate() {
        let data = dir.path().join(format!("relay{n}"));
        let started = Instant::now();
        let out = hush(
            &["serve", "--data", data.to_str().unwrap(), "--listen", "127.0.0.1:0", "--store", url],
            None,
            None,
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "the relay started on {url}");
        assert!(stderr.contains(expected), "unclear error for {url}: {stderr}");
        assert!(!stderr.contains(PASSWORD), "the password was shown: {stderr}");
        assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());
        assert!(!data.join("store.url").exists(), "a store that never answered was remembered");
    }
}

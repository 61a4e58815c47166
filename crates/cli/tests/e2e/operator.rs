//! The operator's kit: metrics, JSON logs and the systemd unit, tried with
//! the real binary.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use super::{hush, wait_until, Relay, User, HUSH};

/// `GET path` over plain HTTP; the status line and the body.
fn http_get(address: &str, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(address).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {address}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {name} in:\n{metrics}"))
        .parse()
        .unwrap()
}

/// The relay's log lines, each of which must be JSON; a last line still
/// being written (no newline yet) is left for the next read.
fn log_lines(relay: &Relay) -> Vec<Value> {
    let log = std::fs::read_to_string(&relay.log).unwrap();
    let complete = &log[..log.rfind('\n').map_or(0, |end| end + 1)];
    complete
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not a JSON log line: {line}")))
        .collect()
}

#[test]
fn the_relay_serves_metrics_of_totals_only_and_logs_json() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start_with(
        &dir.path().join("relay"),
        "127.0.0.1:0",
        &["--metrics", "127.0.0.1:0", "--log-format", "json"],
    );
    let mut address = String::new();
    wait_until("the metrics address is logged", || {
        let found = log_lines(&relay).into_iter().find(|line| line["message"] == "metrics served");
        if let Some(line) = found {
            address = line["address"].as_str().unwrap().to_owned();
        }
        !address.is_empty()
    });
    let alice = User::join(dir.path(), "alice", &relay);
    let bob = User::join(dir.path(), "bob", &relay);
    alice.ok(&["contact", "add", "bob", &bob.account]);
    alice.ok(&["send", "bob", "hello", "bob"]);
    alice.ok(&["send", "bob", "second"]);

    let (status, metrics) = http_get(&address, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(sample(&metrics, "hush_messages_accepted_total") >= 2.0, "{metrics}");
    assert!(sample(&metrics, "hush_commits_accepted_total") >= 1.0, "{metrics}");
    assert!(sample(&metrics, "hush_queued_messages") >= 3.0, "welcome and two messages wait for bob");
    assert!(sample(&metrics, "hush_queued_bytes") > 0.0);
    assert!(sample(&metrics, "hush_connections_accepted_total") >= 2.0);
    assert!(sample(&metrics, "hush_store_commit_seconds_count") >= 1.0);
    assert_eq!(sample(&metrics, "hush_accounts_active"), 2.0);
    // Bob reads: delivered, and the queue empties.
    assert_eq!(bob.texts(), ["hello bob", "second"]);
    wait_until("bob's acknowledgements reach the store", || {
        sample(&http_get(&address, "/metrics").1, "hush_queued_messages") == 0.0
    });
    let (_, metrics) = http_get(&address, "/metrics");
    assert!(sample(&metrics, "hush_delivered_total") >= 3.0, "{metrics}");
    // Nothing per user: no account id, no label but the histograms' bounds.
    for account in [&alice.account, &bob.account] {
        assert!(!metrics.contains(account.as_str()), "an account id in the metrics");
    }
    for line in metrics.lines().filter(|line| line.contains('{')) {
        assert!(line.contains("_bucket{le=\""), "a label other than a bucket bound: {line}");
    }
    assert_eq!(http_get(&address, "/").0, "HTTP/1.1 404 Not Found");
    // Every log line is JSON with a level and a message, and none names an account.
    let log = log_lines(&relay);
    assert!(log.iter().all(|line| line["level"].is_string() && line["message"].is_string()), "{log:?}");
    let text = std::fs::read_to_string(&relay.log).unwrap();
    assert!(!text.contains(&alice.account) && !text.contains(&bob.account), "an account id in the log");
}

#[test]
fn a_metrics_address_that_cannot_be_bound_is_a_clear_error_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("relay");
    // Taken by someone else.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let out = hush(
        &["serve", "--data", data.to_str().unwrap(), "--listen", "127.0.0.1:0", "--metrics", &address],
        None,
        None,
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("cannot serve metrics on {address}")), "{stderr}");
    assert!(stderr.contains("in use"), "{stderr}");
}

const UNIT: &str = include_str!("../../../../contrib/systemd/hush-relay.service");

/// The unit's `ExecStart` words after the binary.
fn exec_start_arguments() -> Vec<String> {
    let line = UNIT.lines().find_map(|line| line.strip_prefix("ExecStart=")).expect("ExecStart");
    let mut words = line.split_whitespace().map(str::to_owned);
    assert_eq!(words.next().as_deref(), Some("/usr/local/bin/hush"));
    words.collect()
}

#[test]
fn the_systemd_unit_is_hardened_and_its_command_line_starts_the_relay() {
    for directive in [
        "User=hush",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "StateDirectory=hush",
        "StateDirectoryMode=0700",
        "CapabilityBoundingSet=",
        "LimitNOFILE=65536",
        "LimitCORE=0",
        "MemoryMax=4G",
    ] {
        assert!(UNIT.lines().any(|line| line == directive), "the unit lacks {directive}");
    }
    // Its command line, with a private data directory and free ports,
    // starts this relay and serves metrics.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("relay");
    let mut arguments = exec_start_arguments();
    let mut value_of = |flag: &str, value: &str| {
        let at = arguments.iter().position(|word| word == flag).unwrap_or_else(|| panic!("no {flag}"));
        arguments[at + 1] = value.to_owned();
    };
    value_of("--data", data.to_str().unwrap());
    value_of("--listen", "127.0.0.1:0");
    value_of("--metrics", "127.0.0.1:0");
    assert_eq!(arguments[..2], ["serve", "--data"]);
    assert_eq!(arguments[3], "--listen");
    let relay = Relay::start_with(
        Path::new(&arguments[2]),
        &arguments[4],
        &arguments[5..].iter().map(String::as_str).collect::<Vec<_>>(),
    );
    wait_until("the relay logs as JSON", || {
        std::fs::read_to_string(&relay.log).is_ok_and(|log| log.contains("\"metrics served\""))
    });

    // systemd's own checks, where systemd is installed (it is on Debian,
    // where CI runs): the unit parses, and its exposure score stays at
    // "OK" (1.5 or less of 10; a weaker unit fails this).
    let analyze = "systemd-analyze";
    let present = Command::new(analyze).arg("--version").output();
    assert!(
        present.is_ok(),
        "systemd-analyze is needed (Debian's systemd): scripts/setup.sh --tests installs it"
    );
    let unit = dir.path().join("hush-relay.service");
    std::fs::write(&unit, UNIT.replace("/usr/local/bin/hush", HUSH)).unwrap();
    let verify = Command::new(analyze).args(["verify", "--man=no"]).arg(&unit).output().unwrap();
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
    let security = Command::new(analyze)
        .args(["security", "--offline=yes", "--threshold=15"])
        .arg(&unit)
        .output()
        .unwrap();
    assert!(security.status.success(), "{}", String::from_utf8_lossy(&security.stdout));
    let weaker = dir.path().join("weaker.service");
    std::fs::write(
        &weaker,
        UNIT.replace("/usr/local/bin/hush", HUSH)
            .replace("ProtectSystem=strict", "ProtectSystem=no")
            .replace("NoNewPrivileges=yes", "NoNewPrivileges=no"),
    )
    .unwrap();
    let security = Command::new(analyze)
        .args(["security", "--offline=yes", "--threshold=15"])
        .arg(&weaker)
        .output()
        .unwrap();
    assert!(!security.status.success(), "the threshold does not tell a weaker unit apart");
}

#[test]
fn completions_and_manual_pages_come_from_the_command_line_definition() {
    let bash = hush(&["completions", "bash"], None, None);
    assert!(bash.status.success());
    let script = String::from_utf8(bash.stdout).unwrap();
    assert!(script.contains("_hush()") && script.contains("remote-wipe"), "{script}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hush.bash");
    std::fs::write(&file, &script).unwrap();
    let parsed = Command::new("bash").arg("-n").arg(&file).status().unwrap();
    assert!(parsed.success(), "the bash completion script does not parse");

    let man = dir.path().join("man1");
    std::fs::create_dir(&man).unwrap();
    let out = hush(&["man", "--dir", man.to_str().unwrap()], None, None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for page in ["hush.1", "hush-serve.1", "hush-admin-invite.1", "hush-send.1"] {
        let roff = std::fs::read_to_string(man.join(page)).unwrap_or_else(|_| panic!("no {page}"));
        assert!(roff.contains(".TH "), "{page} is not a manual page");
    }
    let serve = std::fs::read_to_string(man.join("hush-serve.1")).unwrap();
    assert!(serve.contains("metrics") && serve.contains("log\\-format"), "{serve}");
    let printed = hush(&["man"], None, None);
    assert_eq!(
        String::from_utf8(printed.stdout).unwrap(),
        std::fs::read_to_string(man.join("hush.1")).unwrap()
    );
}

fn release_verify(args: &[&str]) -> (bool, String) {
    let mut all = vec!["release", "verify"];
    all.extend_from_slice(args);
    let out = hush(&all, None, None);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn a_release_signed_with_minisign_verifies_and_any_tampering_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    // A throwaway key, made and used by minisign itself (the tool a release
    // manager signs with).
    let made = Command::new("minisign")
        .args(["-G", "-W", "-p", &path("test.pub"), "-s", &path("test.key")])
        .output()
        .expect("minisign is needed: scripts/setup.sh --tests installs it");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    std::fs::write(path("hush"), b"the released binary").unwrap();
    std::fs::write(path("notes.txt"), b"release notes").unwrap();
    let hash = |name: &str| {
        use sha2::Digest;
        data_encoding::HEXLOWER.encode(&sha2::Sha256::digest(std::fs::read(path(name)).unwrap()))
    };
    let manifest = format!(
        "hush release manifest v1\nversion 0.1.0\ncommit {}\nsha256 {} hush\nsha256 {} notes.txt\n",
        "ab".repeat(20),
        hash("hush"),
        hash("notes.txt")
    );
    std::fs::write(path("MANIFEST"), &manifest).unwrap();
    let signed = Command::new("minisign")
        .args(["-S", "-s", &path("test.key"), "-m", &path("MANIFEST"), "-t", "hush 0.1.0 test"])
        .output()
        .unwrap();
    assert!(signed.status.success(), "{}", String::from_utf8_lossy(&signed.stderr));
    let (manifest_path, signature, key) = (path("MANIFEST"), path("MANIFEST.minisig"), path("test.pub"));

    // Every file the manifest lists, found next to it.
    let (ok, text) = release_verify(&[&manifest_path, &signature, "--key", &key]);
    assert!(ok, "{text}");
    assert!(
        text.contains("trusted comment \"hush 0.1.0 test\"") && text.contains("not the pinned"),
        "{text}"
    );
    assert_eq!(text.lines().filter(|line| line.starts_with("ok ")).count(), 2, "{text}");

    // Not signed by the pinned release key.
    let (ok, text) = release_verify(&[&manifest_path, &signature]);
    assert!(!ok && text.contains("not signed by the Hush release key"), "{text}");
    assert!(
        text.contains("not from the release key CCDFDB53147EAAC5"),
        "the pinned key is the default: {text}"
    );
    // A tampered file.
    std::fs::write(path("hush"), b"the released binary, backdoored").unwrap();
    let (ok, text) = release_verify(&[&manifest_path, &signature, &path("hush"), "--key", &key]);
    assert!(!ok && text.contains("this is not the released file"), "{text}");
    std::fs::write(path("hush"), b"the released binary").unwrap();
    // A file the manifest does not list.
    std::fs::write(path("extra"), b"x").unwrap();
    let (ok, text) = release_verify(&[&manifest_path, &signature, &path("extra"), "--key", &key]);
    assert!(!ok && text.contains("not in the manifest"), "{text}");
    // A manifest changed after signing (the hash of a backdoored binary).
    let original = std::fs::read_to_string(path("MANIFEST")).unwrap();
    std::fs::write(path("MANIFEST"), original.replace(&hash("hush"), &"00".repeat(32))).unwrap();
    let (ok, text) = release_verify(&[&manifest_path, &signature, "--key", &key]);
    assert!(!ok && text.contains("the manifest was changed after it was signed"), "{text}");
    std::fs::write(path("MANIFEST"), &original).unwrap();
    // A trusted comment changed after signing.
    let minisig = std::fs::read_to_string(&signature).unwrap();
    std::fs::write(&signature, minisig.replace("hush 0.1.0 test", "hush 9.9.9 test")).unwrap();
    let (ok, text) = release_verify(&[&manifest_path, &signature, "--key", &key]);
    assert!(!ok && text.contains("trusted comment was changed"), "{text}");
    // minisign agrees with the untouched pair.
    std::fs::write(&signature, &minisig).unwrap();
    let checked = Command::new("minisign").args(["-V", "-p", &key, "-m", &manifest_path]).output().unwrap();
    assert!(checked.status.success());
}

//! Part 7: a relay seized after a session, its disk and its debug log read
//! as an investigator would, shows accounts and queues, not who talks to
//! whom.

use std::path::Path;

use serde_json::Value;

use super::{files_under, table_rows, Relay, User};

/// Every row of every table but `accounts` and `key_packages` (which are an
/// account's own records), each row's blobs and texts joined.
fn rows_outside_account_records(db: &rusqlite::Connection) -> Vec<(String, Vec<u8>)> {
    let tables: Vec<String> = db
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    tables
        .into_iter()
        .filter(|t| t != "accounts" && t != "key_packages")
        .flat_map(|table| table_rows(db, &table).into_iter().map(move |row| (table.clone(), row)))
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(haystack, needle).is_some()
}

fn contact_code(user: &User) -> String {
    let whoami: Value = serde_json::from_str(user.ok(&["whoami", "--json"]).trim()).unwrap();
    whoami["contact_code"].as_str().expect("a contact code").to_owned()
}

#[test]
fn a_seized_relay_holds_accounts_and_queues_but_no_social_graph() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start_debug(&dir.path().join("relay"), "127.0.0.1:0");
    let alice = User::join(dir.path(), "alice", &relay);
    let bob = User::join(dir.path(), "bob", &relay);
    let carol = User::join(dir.path(), "carol", &relay);
    let dave = User::join(dir.path(), "dave", &relay);
    for (name, user) in [("bob", &bob), ("carol", &carol), ("dave", &dave)] {
        alice.ok(&["contact", "add", name, &contact_code(user)]);
    }
    // One-to-one both ways, a group, a member offline, a member removed.
    alice.ok(&["send", "bob", "hello bob"]);
    assert_eq!(bob.texts(), ["hello bob"]);
    bob.ok(&["send", &alice.account, "hello alice"]);
    assert_eq!(alice.texts(), ["hello alice"]);
    alice.ok(&["group", "create", "crew", &bob.account, &carol.account, &dave.account]);
    alice.ok(&["send", "crew", "to the crew"]);
    assert_eq!(bob.texts(), ["to the crew"]);
    assert_eq!(carol.texts(), ["to the crew"]);
    alice.ok(&["group", "remove", "crew", &carol.account]);
    alice.ok(&["send", "crew", "without carol"]);
    assert_eq!(bob.texts(), ["without carol"]);
    // Dave never came back: his Welcome and messages wait at the relay.
    assert!(relay.stats()["queued_messages"].as_u64().unwrap() >= 3);

    let db = rusqlite::Connection::open(relay.data.join("relay.db")).unwrap();
    let accounts: Vec<(Vec<u8>, Vec<u8>)> = db
        .prepare("SELECT id, identity_key FROM accounts")
        .unwrap()
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(accounts.len(), 4);
    let texts: Vec<Vec<u8>> =
        [&alice, &bob, &carol, &dave].iter().map(|u| u.account.clone().into_bytes()).collect();

    // No account id or identity key in any other table: no row links two
    // accounts, no queue (or payload, or group) is linked to one.
    let rows = rows_outside_account_records(&db);
    assert!(rows.iter().any(|(table, _)| table == "queue_entries"), "nothing queued?");
    for (table, row) in &rows {
        for (id, key) in &accounts {
            assert!(!contains(row, id), "{table} holds an account id");
            assert!(!contains(row, key), "{table} holds an identity key");
        }
        for text in &texts {
            assert!(!contains(row, text), "{table} holds an account id as text");
        }
    }
    // The introduction mailbox was not needed: contact codes were used.
    let introductions: i64 = db.query_row("SELECT COUNT(*) FROM mailbox", [], |row| row.get(0)).unwrap();
    assert_eq!(introductions, 0);
    // Every stored payload's length is one of the padded sizes.
    let lengths: Vec<i64> = db
        .prepare("SELECT LENGTH(data) FROM payloads")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(!lengths.is_empty());
    for len in lengths {
        assert!(hush_core::route::is_padded_size(len as usize), "a payload of {len} bytes");
    }
    drop(db);

    // The debug log and every file but the database name no account and
    // hold no identity key.
    let mut files: Vec<std::path::PathBuf> = files_under(&relay.data)
        .into_iter()
        .filter(|path| !file_name(path).starts_with("relay.db"))
        .collect();
    files.push(relay.log.clone());
    let log = std::fs::read_to_string(&relay.log).unwrap();
    assert!(log.contains("DEBUG") || log.contains("debug"), "the relay did not log at debug level");
    for path in files {
        let bytes = std::fs::read(&path).unwrap_or_default();
        for (id, key) in &accounts {
            assert!(!contains(&bytes, id), "{} holds an account id", path.display());
            assert!(!contains(&bytes, key), "{} holds an identity key", path.display());
            let hex = data_encoding::HEXLOWER.encode(key);
            assert!(!contains(&bytes, hex.as_bytes()), "{} holds an identity key in hex", path.display());
        }
        for text in &texts {
            assert!(!contains(&bytes, text), "{} names an account", path.display());
        }
    }
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default()
}

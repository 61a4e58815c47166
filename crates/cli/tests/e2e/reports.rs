//! Reports: a recipient shows the operator what someone wrote, with the
//! writer's signature as proof; the operator can act on it; the relay
//! never learns who reported.

use serde_json::Value;

use super::{contains, hush, table_rows, Relay, User};

fn reports(relay: &Relay) -> Vec<Value> {
    let out = hush(&["admin", "reports", "--json", "--data", relay.data.to_str().unwrap()], None, None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(|line| serde_json::from_str(line).unwrap()).collect()
}

#[test]
fn a_reported_message_reaches_the_operator_with_proof_and_leads_to_deactivation() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(&dir.path().join("relay"), "127.0.0.1:0");
    let mallory = User::join(dir.path(), "mallory", &relay);
    let bob = User::join(dir.path(), "bob", &relay);

    mallory.ok(&["send", &bob.account, "pay up, or else"]);
    let received = bob.recv();
    let threat = received.iter().find(|m| m["text"] == "pay up, or else").expect("the message");
    let id = threat["id"].as_str().unwrap();
    bob.ok(&["send", &mallory.account, "no"]);
    let own = bob.ok(&["history", &mallory.account, "--json"]);
    let own: Value =
        own.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).find(|m| m["text"] == "no").unwrap();

    // What cannot be reported says why, and sends nothing.
    let out = bob.run(&["report", own["id"].as_str().unwrap(), "spam"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("your own message"), "{out:?}");
    let out = bob.run(&["report", "00112233445566778899aabbccddeeff"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no message with id"), "{out:?}");
    assert!(reports(&relay).is_empty());

    let out = bob.ok(&["report", id, "threatening", "me"]);
    assert!(out.contains(&mallory.account), "{out}");
    let listed = reports(&relay);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["account"], mallory.account.as_str());
    assert_eq!(listed[0]["text"], "pay up, or else");
    assert_eq!(listed[0]["reason"], "threatening me");
    assert_eq!(listed[0]["signature_valid"], true);

    // The relay does not know who reported.
    let db = rusqlite::Connection::open(relay.data.join("relay.db")).unwrap();
    let bob_id: hush_proto::AccountId = bob.account.parse().unwrap();
    for row in table_rows(&db, "reports") {
        assert!(
            !contains(&row, &bob_id.0) && !contains(&row, bob.account.as_bytes()),
            "the report names bob"
        );
    }
    // A row altered on the relay's disk no longer passes for mallory's.
    db.execute("UPDATE reports SET content = CAST(replace(content, 'pay up', 'PAY UP') AS BLOB)", [])
        .unwrap();
    let listed = reports(&relay);
    assert_eq!(
        (listed[0]["text"].as_str(), &listed[0]["signature_valid"]),
        (Some("PAY UP, or else"), &Value::Bool(false))
    );
    drop(db);

    // The operator acts: mallory is locked out and can send nothing more.
    let data = relay.data.to_str().unwrap();
    let out = hush(&["admin", "deactivate", &mallory.account, "--data", data], None, None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = mallory.run(&["send", &bob.account, "you cannot stop me"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("deactivated"), "{out:?}");
    assert!(bob.recv().is_empty());

    // A dealt-with report is dismissed by its number.
    let number = listed[0]["number"].as_u64().unwrap().to_string();
    let out = hush(&["admin", "reports", "--dismiss", &number, "--data", data], None, None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(reports(&relay).is_empty());
    let out = hush(&["admin", "reports", "--dismiss", &number, "--data", data], None, None);
    assert!(!out.status.success(), "dismissing it twice");
}

//! Re-keying, the wipe's overwrites and file modes.

use std::os::unix::fs::PermissionsExt;

use super::*;

const FAST: KdfParams = KdfParams::FAST;

fn message(n: u8, text: &str, expires_at_ms: Option<u64>) -> MessageRecord {
    MessageRecord {
        message_id: [n; 16],
        group_id: vec![1],
        sender: AccountId([3; 20]),
        text: text.into(),
        sent_at_ms: 1,
        event: false,
        expires_at_ms,
    }
}

fn opens_with(db: &Path, key: &DatabaseKey) -> bool {
    let connection = Connection::open(db).unwrap();
    connection.pragma_update(None, "key", &*key.pragma()).unwrap();
    connection.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(())).is_ok()
}

fn current_key(store: &Store) -> DatabaseKey {
    store.keys.borrow().database.duplicate()
}

#[test]
fn a_rekey_keeps_the_data_and_the_old_key_opens_nothing_any_more() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("profile");
    let store = Store::create(&dir, b"pw", FAST, 10).unwrap();
    for n in 0..20 {
        store.insert_message(&message(n, "kept across re-keys", None), 2, false).unwrap();
    }
    let old = current_key(&store);
    assert!(opens_with(&dir.join("hush.db"), &old));
    store.rekey(100).unwrap();
    let new = current_key(&store);
    assert!(!opens_with(&dir.join("hush.db"), &old), "the old key still opens the database");
    assert!(opens_with(&dir.join("hush.db"), &new));
    assert_eq!(store.history(&[vec![1]]).unwrap().len(), 20);
    drop(store);
    let store = Store::open(&dir, b"pw").unwrap();
    assert_eq!(store.history(&[vec![1]]).unwrap().len(), 20);
    assert!(opens_with(&dir.join("hush.db"), &current_key(&store)));
}

#[test]
fn a_crash_between_the_database_and_the_key_file_loses_nothing() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("profile");
    let store = Store::create(&dir, b"pw", FAST, 10).unwrap();
    store.insert_message(&message(1, "survives the crash", None), 2, false).unwrap();
    // The first two steps of a re-key, then the process dies.
    let next = DatabaseKey::random();
    {
        let keys = store.keys.borrow();
        let both = SealedKeys { current: keys.database.duplicate(), next: Some(next.duplicate()) };
        KeyFile::reseal(&dir.join("key"), &keys.wrapping, &both).unwrap();
    }
    store.reencrypt(&next).unwrap();
    drop(store);
    let store = Store::open(&dir, b"pw").unwrap();
    assert_eq!(store.history(&[vec![1]]).unwrap()[0].text, "survives the crash");
    assert!(opens_with(&dir.join("hush.db"), &next));
    // The key file now holds the new key alone.
    drop(store);
    let Attempt::Opened(Unlocked::Database(keys, _)) = KeyFile::attempt(&dir.join("key"), b"pw").unwrap()
    else {
        panic!("the passphrase no longer opens the key file")
    };
    assert!(keys.next.is_none());
    assert_eq!(keys.current.bytes(), next.bytes());
}

#[test]
fn a_purge_replaces_the_key_unless_one_was_just_replaced() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("profile");
    let store = Store::create(&dir, b"pw", FAST, 10).unwrap();
    let start = now_ms_of(&store);
    store.insert_message(&message(1, "a", Some(start + 1)), 2, false).unwrap();
    store.insert_message(&message(2, "b", Some(start + REKEY_AFTER_PURGE_GAP_MS + 2)), 2, false).unwrap();
    let first = current_key(&store);
    // Purged, but the key was made at creation a moment ago: kept.
    assert_eq!(store.purge_expired(start + 1).unwrap(), 1);
    assert_eq!(current_key(&store).bytes(), first.bytes());
    // Purged after the gap: replaced.
    assert_eq!(store.purge_expired(start + REKEY_AFTER_PURGE_GAP_MS + 2).unwrap(), 1);
    assert_ne!(current_key(&store).bytes(), first.bytes());
    // Nothing purged, not yet a day: kept; a day later: replaced.
    let second = current_key(&store);
    let later = start + REKEY_AFTER_PURGE_GAP_MS + 2;
    assert!(!store.rekey_if_due(later + 1000, REKEY_EVERY_MS).unwrap());
    assert!(store.rekey_if_due(later + REKEY_EVERY_MS, REKEY_EVERY_MS).unwrap());
    assert_ne!(current_key(&store).bytes(), second.bytes());
}

fn now_ms_of(store: &Store) -> u64 {
    store
        .setting(REKEYED_AT)
        .unwrap()
        .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_slice()).ok())
        .map(u64::from_be_bytes)
        .unwrap()
}

#[test]
fn the_wipe_overwrites_the_files_before_removing_them() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("profile");
    let store = Store::create(&dir, b"pw", FAST, 10).unwrap();
    for n in 0..50 {
        store.insert_message(&message(n, "some history", None), 2, false).unwrap();
    }
    drop(store);
    // Hard links keep the files' blocks reachable after the wipe unlinks
    // the profile's names, so what the wipe left in them can be read.
    let kept = root.path().join("kept");
    std::fs::create_dir(&kept).unwrap();
    let key_before = std::fs::read(dir.join("key")).unwrap();
    for name in ["key", "hush.db"] {
        std::fs::hard_link(dir.join(name), kept.join(name)).unwrap();
    }
    wipe(&dir).unwrap();
    assert!(!dir.exists());
    let key_after = std::fs::read(kept.join("key")).unwrap();
    assert_eq!(key_after.len(), key_before.len());
    let same = key_after.iter().zip(&key_before).filter(|(a, b)| a == b).count();
    assert!(same < key_before.len() / 64, "{same} bytes of the key file survived the wipe");
    let db = std::fs::read(kept.join("hush.db")).unwrap();
    assert!(!db.is_empty() && db.iter().all(|b| *b == 0), "the database file was not overwritten");
}

#[test]
fn profile_files_are_private_even_in_an_open_directory() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("profile");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let store = Store::create(&dir, b"pw", FAST, 10).unwrap();
    store.insert_message(&message(1, "x", None), 2, false).unwrap();
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
}

//! Re-keying, the wipe's overwrites and file modes.

use std::os::unix::fs::PermissionsExt;

use super::rekey::Rekey;
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
        proof: None,
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

fn rekey(store: Store, now_ms: u64) -> (Store, Rekey) {
    store.rekeyed(now_ms).unwrap()
}

fn sealed_in_key_file(dir: &Path) -> SealedKeys {
    let Attempt::Opened(Unlocked::Database(wrapping)) = KeyFile::attempt(&dir.join("key"), b"pw").unwrap()
    else {
        panic!("the passphrase no longer opens the key file")
    };
    KeyFile::read_keys(&dir.join("key"), &wrapping).unwrap()
}

fn filled(dir: &Path, count: u8) -> Store {
    let store = Store::create(dir, b"pw", FAST, 10).unwrap();
    for n in 0..count {
        store.insert_message(&message(n, "kept across re-keys", None), 2, false).unwrap();
    }
    store
}

#[test]
fn a_rekey_keeps_the_data_and_the_old_key_opens_nothing_any_more() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("profile");
    let store = filled(&dir, 20);
    let old = current_key(&store);
    assert!(opens_with(&dir.join("hush.db"), &old));
    let (store, outcome) = rekey(store, crate::now_ms());
    assert_eq!(outcome, Rekey::Replaced);
    let new = current_key(&store);
    assert!(!opens_with(&dir.join("hush.db"), &old), "the old key still opens the database");
    assert!(opens_with(&dir.join("hush.db"), &new));
    assert_eq!(store.history(&[vec![1]]).unwrap().len(), 20);
    store.insert_message(&message(50, "written after", None), 3, false).unwrap();
    drop(store);
    let store = Store::open(&dir, b"pw").unwrap();
    assert_eq!(store.history(&[vec![1]]).unwrap().len(), 21);
    assert_eq!(current_key(&store).bytes(), new.bytes());
    assert!(!dir.join(rekey::EXPORT_FILE).exists());
}

#[test]
fn a_crash_before_or_after_the_new_file_replaces_the_old_loses_nothing() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("profile");
    let store = filled(&dir, 5);
    let old = current_key(&store);
    // Before: both keys sealed, a half-written export left behind.
    let next = DatabaseKey::random();
    {
        let keys = store.keys.borrow();
        let both = SealedKeys { current: old.duplicate(), next: Some(next.duplicate()) };
        KeyFile::reseal(&dir.join("key"), &keys.wrapping, &both).unwrap();
    }
    std::fs::write(dir.join(rekey::EXPORT_FILE), b"half an export").unwrap();
    drop(store);
    let store = Store::open(&dir, b"pw").unwrap();
    assert_eq!(store.history(&[vec![1]]).unwrap().len(), 5);
    assert!(!dir.join(rekey::EXPORT_FILE).exists(), "the half export was left behind");
    drop(store);
    let sealed = sealed_in_key_file(&dir);
    assert!(sealed.next.is_none(), "the unused key stays sealed");
    assert_eq!(sealed.current.bytes(), old.bytes());

    // After: the new file is in place, the key file still holds both.
    let store = Store::open(&dir, b"pw").unwrap();
    {
        let keys = store.keys.borrow();
        let both = SealedKeys { current: old.duplicate(), next: Some(next.duplicate()) };
        KeyFile::reseal(&dir.join("key"), &keys.wrapping, &both).unwrap();
    }
    let Store { dir: _, connection, crypto: _, keys: _, presence: _ } = store;
    drop(connection);
    assert!(matches!(rekey::export_for_tests(&dir, &old, &next), Ok(())));
    let store = Store::open(&dir, b"pw").unwrap();
    assert_eq!(store.history(&[vec![1]]).unwrap().len(), 5);
    assert_eq!(current_key(&store).bytes(), next.bytes());
    drop(store);
    let sealed = sealed_in_key_file(&dir);
    assert!(sealed.next.is_none());
    assert_eq!(sealed.current.bytes(), next.bytes());
}

#[test]
fn the_key_is_replaced_after_purges_daily_and_after_a_passphrase_change() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("profile");
    let store = Store::create(&dir, b"pw", FAST, 10).unwrap();
    let start = rekeyed_at(&store);
    store.insert_message(&message(1, "a", Some(start + 1)), 2, false).unwrap();
    let first = current_key(&store);
    // Nothing purged, not a day old: not due.
    let (store, outcome) = store.rekeyed_if_due(start + 1000).unwrap();
    assert_eq!(outcome, Rekey::NotDue);
    // Purged: due once the gap since the last re-key has passed.
    assert_eq!(store.purge_expired(start + 1).unwrap(), 1);
    let (store, outcome) = store.rekeyed_if_due(start + 2).unwrap();
    assert_eq!(outcome, Rekey::NotDue);
    let later = start + REKEY_AFTER_PURGE_GAP_MS;
    let (store, outcome) = store.rekeyed_if_due(later).unwrap();
    assert_eq!(outcome, Rekey::Replaced);
    assert_ne!(current_key(&store).bytes(), first.bytes());
    // A day later, with nothing purged.
    let (store, outcome) = store.rekeyed_if_due(later + 1000).unwrap();
    assert_eq!(outcome, Rekey::NotDue);
    let (store, outcome) = store.rekeyed_if_due(later + REKEY_EVERY_MS).unwrap();
    assert_eq!(outcome, Rekey::Replaced);
    // A new passphrase: at once.
    store.change_passphrase(b"a new passphrase").unwrap();
    let (_, outcome) = store.rekeyed_if_due(later + REKEY_EVERY_MS + 1).unwrap();
    assert_eq!(outcome, Rekey::Replaced);
    assert!(Store::open(&dir, b"a new passphrase").is_ok());
}

fn rekeyed_at(store: &Store) -> u64 {
    store
        .setting(REKEYED_AT)
        .unwrap()
        .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_slice()).ok())
        .map(u64::from_be_bytes)
        .unwrap()
}

#[test]
fn no_rekey_while_another_process_has_the_profile_open() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("profile");
    let first = filled(&dir, 1);
    // A second opener (another process, as far as flock is concerned).
    let second = Store::open(&dir, b"pw").unwrap();
    let key = current_key(&first);
    let (first, outcome) = rekey(first, crate::now_ms());
    assert_eq!(outcome, Rekey::Busy);
    assert_eq!(current_key(&first).bytes(), key.bytes());
    assert_eq!(second.history(&[vec![1]]).unwrap().len(), 1, "the other opener can still read");
    second.insert_message(&message(2, "and write", None), 3, false).unwrap();
    drop(second);
    let (first, outcome) = rekey(first, crate::now_ms());
    assert_eq!(outcome, Rekey::Replaced);
    assert_ne!(current_key(&first).bytes(), key.bytes());
    assert_eq!(first.history(&[vec![1]]).unwrap().len(), 2);
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

/// An export that fails halfway (a file-size limit, in a child process:
/// `ulimit -f`, with SIGXFSZ ignored, as a full disk would) changes
/// nothing: the database stays under its key and whole.
#[test]
fn a_rekey_that_fails_halfway_changes_nothing() {
    const CHILD: &str = "HUSH_REKEY_UNDER_FILE_LIMIT";
    if let Some(dir) = std::env::var_os(CHILD) {
        let store = Store::open(Path::new(&dir), b"pw").unwrap();
        let (store, outcome) = store.rekeyed(1).unwrap();
        assert!(matches!(outcome, Rekey::Failed(_)), "{outcome:?}");
        // Still open and readable, under the old key.
        assert_eq!(store.history(&[vec![1]]).unwrap().len(), 256);
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("profile");
    let store = Store::create(&dir, b"pw", FAST, 10).unwrap();
    let text = "x".repeat(1000);
    store
        .transaction(|store| {
            for n in 0..=255u8 {
                store.insert_message(&message(n, &text, None), 2, false)?;
            }
            Ok::<_, StoreError>(())
        })
        .unwrap();
    let old = current_key(&store);
    drop(store);
    let test = "database::rekey_tests::a_rekey_that_fails_halfway_changes_nothing";
    // The child's output goes to pipes: the file-size limit would also hit
    // a standard output redirected to a file already past it (a CI log).
    let child = std::process::Command::new("sh")
        .arg("-c")
        .arg("trap '' XFSZ; ulimit -f 200; exec \"$0\" --exact \"$1\" --nocapture")
        .arg(std::env::current_exe().unwrap())
        .arg(test)
        .env(CHILD, &dir)
        .output()
        .unwrap();
    assert!(
        child.status.success(),
        "the child's re-key did not fail as it should, or left the profile unusable:\n{}{}",
        String::from_utf8_lossy(&child.stdout),
        String::from_utf8_lossy(&child.stderr)
    );
    assert!(!dir.join(rekey::EXPORT_FILE).exists(), "the half export was left behind");
    let store = Store::open(&dir, b"pw").unwrap();
    assert_eq!(store.history(&[vec![1]]).unwrap().len(), 256);
    assert_eq!(current_key(&store).bytes(), old.bytes(), "the database is still under its old key");
    assert!(sealed_in_key_file_of(&store).next.is_none());
}

fn sealed_in_key_file_of(store: &Store) -> SealedKeys {
    let dir = store.dir.clone();
    sealed_in_key_file(&dir)
}

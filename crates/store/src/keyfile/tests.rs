use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use super::*;

const FAST: KdfParams = KdfParams::FAST;

fn code() -> WipeCode {
    WipeCode {
        address: "127.0.0.1:7443".into(),
        pin: CertificatePin([1; 32]),
        account: AccountId([2; 20]),
        secret: [3; 32],
    }
}

fn opened_key(path: &Path, attempt: Attempt) -> Option<[u8; 32]> {
    match attempt {
        Attempt::Opened(Unlocked::Database(wrapping)) => {
            Some(KeyFile::read_keys(path, &wrapping).unwrap().current.bytes())
        }
        _ => None,
    }
}

fn fresh(max_attempts: u32) -> (tempfile::TempDir, PathBuf, DatabaseKey, Wrapping) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key");
    let key = DatabaseKey::random();
    let wrapping = KeyFile::create(&path, b"correct horse", &key, FAST, max_attempts).unwrap();
    (dir, path, key, wrapping)
}

fn sealed(key: &DatabaseKey) -> SealedKeys {
    SealedKeys { current: key.duplicate(), next: None }
}

fn state(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap();
    decode_word(bytes[..WORD].try_into().unwrap())
}

fn set_state(path: &Path, state: u32, level: u32) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[..WORD].copy_from_slice(&encode_word(state, level));
    std::fs::write(path, &bytes).unwrap();
}

fn wrong(attempt: Attempt) -> Option<bool> {
    match attempt {
        Attempt::Wrong { exhausted } => Some(exhausted),
        _ => None,
    }
}

#[test]
fn each_passphrase_opens_its_own_slot() {
    let (_dir, path, key, wrapping) = fresh(10);
    KeyFile::set_panic(&path, &wrapping, &sealed(&key), b"duress", &code()).unwrap();
    assert_eq!(opened_key(&path, KeyFile::attempt(&path, b"correct horse").unwrap()), Some(key.bytes()));
    let Attempt::Opened(Unlocked::Panic(opened)) = KeyFile::attempt(&path, b"duress").unwrap() else {
        panic!("the panic passphrase did not open the panic slot")
    };
    assert_eq!(opened, code());
    assert_eq!(wrong(KeyFile::attempt(&path, b"wrong").unwrap()), Some(false));
}

#[test]
fn the_panic_passphrase_must_differ_from_the_passphrase_both_ways() {
    let (_dir, path, key, wrapping) = fresh(10);
    assert!(matches!(
        KeyFile::set_panic(&path, &wrapping, &sealed(&key), b"correct horse", &code()),
        Err(StoreError::PanicIsPassphrase)
    ));
    KeyFile::set_panic(&path, &wrapping, &sealed(&key), b"duress", &code()).unwrap();
    let keys = SealedKeys { current: key.duplicate(), next: None };
    assert!(matches!(
        KeyFile::change_passphrase(&path, &wrapping, b"duress", &keys),
        Err(StoreError::PanicIsPassphrase)
    ));
}

#[test]
fn a_changed_passphrase_opens_and_the_old_one_does_not() {
    let (_dir, path, key, wrapping) = fresh(10);
    let keys = SealedKeys { current: key.duplicate(), next: None };
    KeyFile::change_passphrase(&path, &wrapping, b"new passphrase", &keys).unwrap();
    assert_eq!(wrong(KeyFile::attempt(&path, b"correct horse").unwrap()), Some(false));
    assert_eq!(opened_key(&path, KeyFile::attempt(&path, b"new passphrase").unwrap()), Some(key.bytes()));
}

#[test]
fn every_wrong_passphrase_destroys_a_slot_on_disk_before_it_is_tried() {
    let (_dir, path, _key, _) = fresh(5);
    let before = std::fs::read(&path).unwrap();
    assert_eq!(state(&path), (5, 1));
    assert_eq!(wrong(KeyFile::attempt(&path, b"nope").unwrap()), Some(false));
    let after = std::fs::read(&path).unwrap();
    assert_eq!(state(&path), (4, 1));
    // Slot 4 (the last live one) is different bytes now; slots 0..4 are not.
    let slot =
        |bytes: &[u8], i: usize| bytes[REAL_SLOTS_AT + i * SLOT..REAL_SLOTS_AT + (i + 1) * SLOT].to_vec();
    assert_ne!(slot(&before, 4), slot(&after, 4));
    for i in 0..4 {
        assert_eq!(slot(&before, i), slot(&after, i));
    }
}

#[test]
fn editing_the_state_back_does_not_bring_back_used_slots() {
    let (_dir, path, key, _) = fresh(3);
    for _ in 0..2 {
        assert_eq!(wrong(KeyFile::attempt(&path, b"wrong").unwrap()), Some(false));
    }
    // An attacker sets the count back to three.
    set_state(&path, 3, 1);
    // The used slot is gone: even the right passphrase fails on it.
    assert!(opened_key(&path, KeyFile::attempt(&path, b"correct horse").unwrap()).is_none());
    // The next one was used too; the one never used still opens and
    // re-seals every slot.
    assert!(opened_key(&path, KeyFile::attempt(&path, b"correct horse").unwrap()).is_none());
    assert_eq!(opened_key(&path, KeyFile::attempt(&path, b"correct horse").unwrap()), Some(key.bytes()));
    assert_eq!(state(&path), (3, 1));
}

#[test]
fn editing_the_state_to_unlimited_makes_unlocking_fail_instead_of_lifting_the_limit() {
    let (_dir, path, _key, _) = fresh(10);
    set_state(&path, UNLIMITED, 1);
    for _ in 0..3 {
        assert!(opened_key(&path, KeyFile::attempt(&path, b"correct horse").unwrap()).is_none());
    }
    // The other way round: an unlimited profile edited to "counted".
    let (_dir, path, _key, _) = fresh(0);
    set_state(&path, 1, 1);
    assert!(opened_key(&path, KeyFile::attempt(&path, b"correct horse").unwrap()).is_none());
}

#[test]
fn editing_the_cost_level_or_a_salt_makes_unlocking_fail() {
    let (_dir, path, _key, _) = fresh(0);
    set_state(&path, UNLIMITED, 0);
    assert!(opened_key(&path, KeyFile::attempt(&path, b"correct horse").unwrap()).is_none());
    let (_dir, path, _key, _) = fresh(0);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[REAL_SALT_AT] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    assert!(opened_key(&path, KeyFile::attempt(&path, b"correct horse").unwrap()).is_none());
}

#[test]
fn the_last_allowed_wrong_passphrase_is_reported_as_exhausted() {
    let (_dir, path, _key, _) = fresh(2);
    assert_eq!(wrong(KeyFile::attempt(&path, b"wrong").unwrap()), Some(false));
    assert_eq!(wrong(KeyFile::attempt(&path, b"wrong").unwrap()), Some(true));
    assert_eq!(wrong(KeyFile::attempt(&path, b"correct horse").unwrap()), Some(true));
}

#[test]
fn an_unlimited_profile_consumes_nothing() {
    let (_dir, path, key, _) = fresh(0);
    for _ in 0..5 {
        assert_eq!(wrong(KeyFile::attempt(&path, b"wrong").unwrap()), Some(false));
    }
    assert_eq!(opened_key(&path, KeyFile::attempt(&path, b"correct horse").unwrap()), Some(key.bytes()));
}

#[test]
fn every_key_file_has_one_size_and_holds_no_key_or_address() {
    let (_dir, plain, key, _) = fresh(10);
    let (_dir2, with_panic, key2, wrapping) = fresh(100);
    KeyFile::set_panic(&with_panic, &wrapping, &sealed(&key2), b"duress", &code()).unwrap();
    let (_dir3, unlimited, _, _) = fresh(0);
    for path in [&plain, &with_panic, &unlimited] {
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(bytes.len(), KEY_FILE_LEN);
        assert!(!bytes.windows(32).any(|w| w == key.0.as_ref()));
        assert!(!bytes.windows(14).any(|w| w == b"127.0.0.1:7443"));
    }
}

#[test]
fn key_files_have_no_fixed_bytes_and_look_random() {
    let files: Vec<Vec<u8>> = (0..12)
        .map(|n| {
            let (_dir, path, key, wrapping) = fresh(n * 8);
            if n % 2 == 0 {
                KeyFile::set_panic(&path, &wrapping, &sealed(&key), b"duress", &code()).unwrap();
            }
            std::fs::read(&path).unwrap()
        })
        .collect();
    // No magic: no byte position holds the same value in every file.
    let fixed = (0..KEY_FILE_LEN).filter(|&at| files.iter().all(|f| f[at] == files[0][at])).count();
    assert_eq!(fixed, 0, "{fixed} byte positions are the same in every key file");
    // Byte frequencies of each file fit a uniform distribution (chi-square
    // with 255 degrees of freedom; 400 is far beyond any random file).
    for bytes in &files {
        let mut counts = [0f64; 256];
        for byte in bytes {
            counts[usize::from(*byte)] += 1.0;
        }
        let expected = bytes.len() as f64 / 256.0;
        let chi: f64 = counts.iter().map(|c| (c - expected).powi(2) / expected).sum();
        assert!(chi < 400.0, "chi-square {chi}");
    }
}

#[test]
fn any_word_decodes_to_a_valid_state_and_states_round_trip() {
    for word in [0u32, 1, 101, 203, 1 << 31, u32::MAX, u32::MAX - 1, 0xdead_beef] {
        let (state, level) = decode_word(word.to_be_bytes());
        assert!(state < STATES && (level as usize) < KdfParams::LEVELS.len());
    }
    for level in 0..KdfParams::LEVELS.len() as u32 {
        for state in 0..STATES {
            assert_eq!(decode_word(encode_word(state, level)), (state, level));
        }
    }
}

#[test]
fn unsupported_argon2_parameters_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let odd = KdfParams { memory_kib: 1024, iterations: 1, parallelism: 1 };
    assert!(KeyFile::create(&dir.path().join("key"), b"pw", &DatabaseKey::random(), odd, 3).is_err());
}

#[test]
fn the_file_is_rewritten_in_place_never_replaced() {
    use std::os::unix::fs::MetadataExt;
    let (dir, path, key, wrapping) = fresh(4);
    let inode = std::fs::metadata(&path).unwrap().ino();
    KeyFile::attempt(&path, b"wrong").unwrap();
    KeyFile::attempt(&path, b"correct horse").unwrap();
    KeyFile::set_panic(&path, &wrapping, &sealed(&key), b"duress", &code()).unwrap();
    KeyFile::reseal(&path, &wrapping, &sealed(&key)).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().ino(), inode);
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["key"], "no temporary files");
}

#[test]
fn a_destroyed_file_is_noise_under_its_old_inode_and_opens_with_nothing() {
    let (dir, path, key, wrapping) = fresh(0);
    KeyFile::set_panic(&path, &wrapping, &sealed(&key), b"duress", &code()).unwrap();
    // A second name keeps the inode reachable after the wipe unlinks it.
    let kept = dir.path().join("kept");
    std::fs::hard_link(&path, &kept).unwrap();
    let before = std::fs::read(&path).unwrap();
    KeyFile::destroy(&path).unwrap();
    assert!(!path.exists());
    let after = std::fs::read(&kept).unwrap();
    assert_eq!(after.len(), KEY_FILE_LEN);
    let same = before.iter().zip(&after).filter(|(a, b)| a == b).count();
    assert!(same < KEY_FILE_LEN / 64, "{same} bytes survived");
    assert!(wrong(KeyFile::attempt(&kept, b"correct horse").unwrap()).is_some());
    assert!(wrong(KeyFile::attempt(&kept, b"duress").unwrap()).is_some());
}

#[test]
fn an_attempt_waits_for_the_lock_of_another() {
    let (_dir, path, _key, _) = fresh(3);
    let held = open_locked(&path).unwrap();
    let (done, finished) = mpsc::channel();
    let other = path.clone();
    let worker = std::thread::spawn(move || {
        let result = KeyFile::attempt(&other, b"wrong").map(wrong);
        let _ = done.send(());
        result
    });
    assert!(
        finished.recv_timeout(Duration::from_millis(300)).is_err(),
        "an attempt ran while another held the lock"
    );
    assert_eq!(state(&path), (3, 1), "the slot was used while the lock was held");
    drop(held);
    finished.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(worker.join().unwrap().unwrap(), Some(false));
    assert_eq!(state(&path), (2, 1));
}

#[test]
fn parallel_attempts_each_use_a_slot_of_their_own() {
    let (_dir, path, _key, _) = fresh(6);
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (path, barrier) = (path.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                KeyFile::attempt(&path, b"wrong").map(wrong).unwrap()
            })
        })
        .collect();
    for worker in workers {
        assert_eq!(worker.join().unwrap(), Some(false));
    }
    assert_eq!(state(&path), (2, 1), "four attempts must use four slots");
}

#[test]
fn replacing_the_panic_slot_makes_unlocking_fail_instead_of_disarming_it() {
    let (_dir, path, key, wrapping) = fresh(10);
    KeyFile::set_panic(&path, &wrapping, &sealed(&key), b"duress", &code()).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    rand::rngs::OsRng.fill_bytes(&mut bytes[PANIC_SALT_AT..PANIC_SLOT_AT + SLOT]);
    std::fs::write(&path, &bytes).unwrap();
    assert!(opened_key(&path, KeyFile::attempt(&path, b"correct horse").unwrap()).is_none());
}

#[test]
fn a_reseal_while_open_gives_back_no_used_attempt() {
    let (_dir, path, key, wrapping) = fresh(5);
    for _ in 0..3 {
        KeyFile::attempt(&path, b"wrong").unwrap();
    }
    assert_eq!(state(&path), (2, 1));
    KeyFile::reseal(&path, &wrapping, &sealed(&key)).unwrap();
    KeyFile::set_panic(&path, &wrapping, &sealed(&key), b"duress", &code()).unwrap();
    assert_eq!(state(&path), (2, 1));
    // The two live slots still open; the right passphrase then resets.
    assert_eq!(opened_key(&path, KeyFile::attempt(&path, b"correct horse").unwrap()), Some(key.bytes()));
    assert_eq!(state(&path), (5, 1));
}

#[test]
fn a_stale_passphrase_key_cannot_rewrite_the_file() {
    // Another process changed the passphrase; this one still holds the old
    // derived key and must not seal the slots under it.
    let (_dir, path, key, wrapping) = fresh(5);
    let newer = KeyFile::change_passphrase(&path, &wrapping, b"new passphrase", &sealed(&key)).unwrap();
    assert!(matches!(KeyFile::reseal(&path, &wrapping, &sealed(&key)), Err(StoreError::ProfileChanged)));
    assert!(matches!(
        KeyFile::set_panic(&path, &wrapping, &sealed(&key), b"duress", &code()),
        Err(StoreError::ProfileChanged)
    ));
    KeyFile::reseal(&path, &newer, &sealed(&key)).unwrap();
    assert_eq!(opened_key(&path, KeyFile::attempt(&path, b"new passphrase").unwrap()), Some(key.bytes()));
}

#[test]
fn a_writer_that_waited_for_a_wipe_finds_nothing_to_write() {
    let (_dir, path, key, wrapping) = fresh(5);
    let held = open_locked(&path).unwrap();
    let (done, finished) = mpsc::channel();
    let other = path.clone();
    let writer = std::thread::spawn(move || {
        let result = KeyFile::reseal(&other, &wrapping, &sealed(&key));
        let _ = done.send(());
        result
    });
    assert!(finished.recv_timeout(Duration::from_millis(200)).is_err());
    // The wipe: overwrite and unlink while the writer waits for the lock.
    std::fs::remove_file(&path).unwrap();
    drop(held);
    finished.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(matches!(writer.join().unwrap(), Err(StoreError::NoProfile)));
}

#[test]
fn an_old_format_key_file_gets_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key");
    std::fs::write(&path, b"HUSHKEY3\0\0\0\0").unwrap();
    assert!(matches!(KeyFile::attempt(&path, b"pw"), Err(StoreError::OldKeyFile)));
}

/// Killing the process while Argon2id runs still counts the attempt: the
/// slot is destroyed on disk before the passphrase is tried. A child
/// process tries the right passphrase at full cost and is killed as soon
/// as the count drops; a slot was used, and nothing gave it back.
#[test]
fn killing_an_attempt_midway_still_counts_it() {
    const CHILD: &str = "HUSH_ATTEMPT_CHILD";
    if let Some(path) = std::env::var_os(CHILD) {
        let _ = KeyFile::attempt(Path::new(&path), b"correct horse");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key");
    KeyFile::create(&path, b"correct horse", &DatabaseKey::random(), KdfParams::STANDARD, 5).unwrap();
    assert_eq!(state(&path), (5, 0));
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "keyfile::tests::killing_an_attempt_midway_still_counts_it"])
        .env(CHILD, &path)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while state(&path).0 == 5 {
        assert!(std::time::Instant::now() < deadline, "the attempt never used a slot");
        std::thread::yield_now();
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "the child finished before it was killed; the test proves nothing");
    assert_eq!(state(&path), (4, 0), "the killed attempt was not counted");
}

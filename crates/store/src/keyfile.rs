//! The key file: the random database key, wrapped by a key derived from the
//! passphrase with Argon2id and sealed with XChaCha20-Poly1305, in a file
//! that can be destroyed and that looks like random bytes.
//!
//! **Destroyable.** The file has one fixed size and is only ever rewritten
//! in place (same file, same blocks on a file system that overwrites in
//! place, such as ext4), then synced: no temporary file, no rename, so no
//! earlier version is left in freed blocks. A wipe overwrites it with
//! random bytes and syncs before anything else is touched.
//!
//! **No structure.** There is no magic and no readable header. The only
//! field read before the passphrase is known, the attempt state, is hidden
//! in a random 32-bit word: its value modulo a small number is the state,
//! so every possible word (every random file) decodes to a valid state.
//! Salts, nonces and sealed slots are random-looking by construction. An
//! examiner who carves a disk cannot tell the file from random data.
//!
//! **Wrong passphrases consume slots.** The database key is sealed in
//! `max_attempts` slots under one Argon2id-derived key. An attempt first
//! overwrites the last live slot on disk (and counts it down) and only then
//! tries the passphrase on the copy in memory; the right passphrase
//! re-seals every slot. Killing the process mid-try still counts, and
//! editing the word cannot bring a destroyed slot back. The whole attempt
//! holds an exclusive lock on the file, so parallel attempts cannot share a
//! slot.
//!
//! **Authenticated state.** Each slot is sealed with its own index and the
//! file's mode (counted or unlimited) as associated data, so editing the
//! word (to "unlimited", or to point at another slot) makes unlocking fail
//! instead of disabling the limit. The Argon2id cost level is part of the
//! word too; editing it derives a different key and unlocking fails.
//!
//! A last slot of the same shape holds the wipe instructions sealed under
//! the panic passphrase, or random bytes when none is set. Every attempt
//! derives and tries both, so neither the file nor the time taken says
//! whether a panic passphrase exists.
//!
//! Limits: restoring a whole earlier copy of the file restores its slots
//! (as for any software-only counter); a copy taken before a wipe can be
//! attacked offline, where only the passphrase's strength and Argon2id's
//! cost help; on flash storage and copy-on-write file systems (btrfs, ZFS,
//! an SSD's own remapping) "in place" is a request the hardware may not
//! honour (see docs/device-security.md).

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hush_proto::{AccountId, CertificatePin, WipeCode};
use rand::{Rng, RngCore};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use crate::error::StoreError;

const WORD: usize = 4;
const SALT: usize = 16;
const NONCE: usize = 24;
/// Plaintext sealed in a slot: a kind byte and its contents, padded.
const PAYLOAD: usize = 256;
const SEALED: usize = PAYLOAD + 16;
const SLOT: usize = NONCE + SEALED;
/// Most wrong passphrases a profile may allow before wiping.
pub const MAX_ATTEMPTS_LIMIT: u32 = 100;
const REAL_SLOTS: usize = MAX_ATTEMPTS_LIMIT as usize;
const REAL_SALT_AT: usize = WORD;
const PANIC_SALT_AT: usize = REAL_SALT_AT + SALT;
const PANIC_SLOT_AT: usize = PANIC_SALT_AT + SALT;
const REAL_SLOTS_AT: usize = PANIC_SLOT_AT + SLOT;
/// The size of every key file.
pub const KEY_FILE_LEN: usize = REAL_SLOTS_AT + REAL_SLOTS * SLOT;

/// Attempt states hidden in the word: 0 unlimited, 1..=100 slots left,
/// 101 exhausted.
const STATES: u32 = MAX_ATTEMPTS_LIMIT + 2;
const UNLIMITED: u32 = 0;
const EXHAUSTED: u32 = MAX_ATTEMPTS_LIMIT + 1;

const KIND_DATABASE_KEY: u8 = 1;
const KIND_WIPE: u8 = 2;

/// Argon2id cost parameters. Only the levels in [`KdfParams::LEVELS`] can
/// be used: the file records which one by its index, hidden in the word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl KdfParams {
    /// Above OWASP's Argon2id recommendation (46 MiB, 1 pass): 64 MiB, 3
    /// passes. What every profile made by `hush join` uses.
    pub const STANDARD: Self = Self { memory_kib: 64 * 1024, iterations: 3, parallelism: 1 };
    /// 8 MiB, 1 pass: for tests and benchmarks only. It protects a copied
    /// key file far less against offline guessing.
    pub const FAST: Self = Self { memory_kib: 8 * 1024, iterations: 1, parallelism: 1 };
    /// The levels a key file can record, by index.
    pub const LEVELS: [Self; 2] = [Self::STANDARD, Self::FAST];

    fn level(self) -> Result<u32, StoreError> {
        Self::LEVELS
            .iter()
            .position(|level| *level == self)
            .and_then(|index| u32::try_from(index).ok())
            .ok_or_else(|| StoreError::Kdf("unsupported Argon2id parameters".into()))
    }
}

impl Default for KdfParams {
    fn default() -> Self {
        Self::STANDARD
    }
}

/// The 32-byte database key. Zeroized on drop; never printed.
pub struct DatabaseKey(Zeroizing<[u8; 32]>);

impl DatabaseKey {
    pub(crate) fn random() -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(key.as_mut());
        Self(key)
    }

    /// A second copy of the key (for sealing it while it stays in use).
    pub(crate) fn duplicate(&self) -> Self {
        Self(self.0.clone())
    }

    /// The key's bytes, for tests that compare keys.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> [u8; 32] {
        *self.0
    }

    fn from_slice(bytes: &[u8]) -> Option<Self> {
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(bytes.get(..32)?);
        Some(Self(key))
    }

    /// The SQLCipher raw-key literal `x'...'`, in a buffer allocated once
    /// at its final size (a growing string leaves unzeroed copies).
    pub(crate) fn pragma(&self) -> Zeroizing<String> {
        let mut hex = Zeroizing::new([0u8; 64]);
        data_encoding::HEXLOWER.encode_mut(self.0.as_ref(), hex.as_mut());
        let mut literal = Zeroizing::new(String::with_capacity(67));
        literal.push_str("x'");
        literal.extend(hex.iter().map(|b| char::from(*b)));
        literal.push('\'');
        literal
    }

    /// `PRAGMA key = "x'...'";`, built the same way, for `execute_batch`
    /// (rusqlite's `pragma_update` formats the value into a string that
    /// grows and is never zeroized).
    pub(crate) fn key_statement(&self) -> Zeroizing<String> {
        let literal = self.pragma();
        let mut statement = Zeroizing::new(String::with_capacity(96));
        statement.push_str("PRAGMA key = \"");
        statement.push_str(&literal);
        statement.push_str("\";");
        statement
    }
}

/// The database key as sealed in the slots: the key in use and, while a
/// re-key is under way, the key that replaces it (the database holds one
/// of the two; opening tries both).
pub(crate) struct SealedKeys {
    pub(crate) current: DatabaseKey,
    pub(crate) next: Option<DatabaseKey>,
}

/// What an unlocked profile needs to rewrite its key file later (re-key,
/// panic passphrase): the passphrase-derived key and the attempt limit.
/// Zeroized on drop.
pub(crate) struct Wrapping {
    kek: Zeroizing<[u8; 32]>,
    level: u32,
    max_attempts: u32,
}

/// What a passphrase opened.
pub(crate) enum Unlocked {
    /// The real passphrase: what it derives, to read the sealed keys
    /// with ([`KeyFile::read_keys`]) and to rewrite the file.
    Database(Wrapping),
    /// The panic passphrase: what to tell the relay while wiping.
    Panic(WipeCode),
}

/// The result of one unlock attempt.
pub(crate) enum Attempt {
    /// The passphrase (or the panic passphrase) opened a slot.
    Opened(Unlocked),
    /// Wrong passphrase; `exhausted` once no slot is left.
    Wrong {
        /// True when this was the last allowed attempt.
        exhausted: bool,
    },
}

fn derive(passphrase: &[u8], salt: &[u8], params: KdfParams) -> Result<Zeroizing<[u8; 32]>, StoreError> {
    let params = Params::new(params.memory_kib, params.iterations, params.parallelism, Some(32))
        .map_err(|error| StoreError::Kdf(error.to_string()))?;
    let mut out = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase, salt, out.as_mut())
        .map_err(|error| StoreError::Kdf(error.to_string()))?;
    Ok(out)
}

fn level_params(level: u32) -> Result<KdfParams, StoreError> {
    usize::try_from(level)
        .ok()
        .and_then(|index| KdfParams::LEVELS.get(index).copied())
        .ok_or(StoreError::CorruptKeyFile)
}

/// Associated data of a real slot: its index, the file's mode and a hash
/// of the panic salt and slot, so that replacing the panic slot (to disarm
/// the panic passphrase) makes unlocking fail too.
fn real_slot_ad(index: usize, counted: bool, panic_area: &[u8]) -> [u8; 48] {
    use sha2::{Digest, Sha256};
    let mut ad = [0u8; 48];
    ad[..14].copy_from_slice(b"hush-key-slot\0");
    ad[14] = u8::try_from(index).unwrap_or(u8::MAX);
    ad[15] = u8::from(counted);
    ad[16..].copy_from_slice(&Sha256::digest(panic_area));
    ad
}

const PANIC_SLOT_AD: &[u8] = b"hush-panic-slot";

fn seal(kek: &[u8; 32], ad: &[u8], payload: &[u8; PAYLOAD]) -> Result<[u8; SLOT], StoreError> {
    let mut slot = [0u8; SLOT];
    rand::rngs::OsRng.fill_bytes(&mut slot[..NONCE]);
    let sealed = XChaCha20Poly1305::new(kek.into())
        .encrypt(XNonce::from_slice(&slot[..NONCE]), Payload { msg: payload, aad: ad })
        .map_err(|_| StoreError::Kdf("sealing failed".into()))?;
    slot[NONCE..].copy_from_slice(&sealed);
    Ok(slot)
}

fn open(kek: &[u8; 32], ad: &[u8], slot: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    XChaCha20Poly1305::new(kek.into())
        .decrypt(XNonce::from_slice(slot.get(..NONCE)?), Payload { msg: slot.get(NONCE..SLOT)?, aad: ad })
        .ok()
        .map(Zeroizing::new)
}

fn keys_payload(keys: &SealedKeys, max_attempts: u32) -> Zeroizing<[u8; PAYLOAD]> {
    let mut payload = Zeroizing::new([0u8; PAYLOAD]);
    payload[0] = KIND_DATABASE_KEY;
    payload[1..33].copy_from_slice(keys.current.0.as_ref());
    payload[33..37].copy_from_slice(&max_attempts.to_be_bytes());
    if let Some(next) = &keys.next {
        payload[37] = 1;
        payload[38..70].copy_from_slice(next.0.as_ref());
    }
    payload
}

/// Parses a decrypted slot as each kind of payload (the fuzzer's entry).
#[cfg(feature = "fuzzing")]
pub(crate) fn parse_slot(payload: &[u8]) {
    let _ = parse_keys(payload);
    let _ = parse_wipe(payload);
}

fn parse_keys(payload: &[u8]) -> Option<(SealedKeys, u32)> {
    if *payload.first()? != KIND_DATABASE_KEY {
        return None;
    }
    let current = DatabaseKey::from_slice(payload.get(1..33)?)?;
    let max_attempts = u32::from_be_bytes(payload.get(33..37)?.try_into().ok()?);
    let next = match payload.get(37)? {
        1 => Some(DatabaseKey::from_slice(payload.get(38..70)?)?),
        _ => None,
    };
    Some((SealedKeys { current, next }, max_attempts))
}

fn wipe_payload(code: &WipeCode) -> Result<Zeroizing<[u8; PAYLOAD]>, StoreError> {
    let address = code.address.as_bytes();
    let fixed = 1 + AccountId::LEN + 32 + 32 + 1;
    if address.len() > PAYLOAD - fixed {
        return Err(StoreError::Kdf("relay address too long for the key file".into()));
    }
    let mut payload = Zeroizing::new([0u8; PAYLOAD]);
    payload[0] = KIND_WIPE;
    payload[1..21].copy_from_slice(&code.account.0);
    payload[21..53].copy_from_slice(&code.secret);
    payload[53..85].copy_from_slice(&code.pin.0);
    payload[85] = address.len() as u8;
    payload[86..86 + address.len()].copy_from_slice(address);
    Ok(payload)
}

fn parse_wipe(payload: &[u8]) -> Option<WipeCode> {
    if *payload.first()? != KIND_WIPE {
        return None;
    }
    let len = usize::from(*payload.get(85)?);
    Some(WipeCode {
        account: AccountId(payload.get(1..21)?.try_into().ok()?),
        secret: payload.get(21..53)?.try_into().ok()?,
        pin: CertificatePin(payload.get(53..85)?.try_into().ok()?),
        address: String::from_utf8(payload.get(86..86 + len)?.to_vec()).ok()?,
    })
}

/// The word: `state + STATES * level`, hidden in a uniformly random u32
/// that has that value modulo `STATES * LEVELS`.
fn encode_word(state: u32, level: u32) -> [u8; WORD] {
    let modulus = STATES * KdfParams::LEVELS.len() as u32;
    let value = state + STATES * level;
    let top = (u32::MAX - value) / modulus;
    let word = value + modulus * rand::rngs::OsRng.gen_range(0..=top);
    word.to_be_bytes()
}

fn decode_word(word: [u8; WORD]) -> (u32, u32) {
    let value = u32::from_be_bytes(word) % (STATES * KdfParams::LEVELS.len() as u32);
    (value % STATES, value / STATES)
}

/// The bytes of a key file, read and written whole, always in place.
struct Image(Zeroizing<Vec<u8>>);

impl Image {
    fn random() -> Self {
        let mut bytes = Zeroizing::new(vec![0u8; KEY_FILE_LEN]);
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    fn read(file: &mut File) -> Result<Self, StoreError> {
        let mut bytes = Zeroizing::new(Vec::with_capacity(KEY_FILE_LEN));
        file.read_to_end(&mut bytes)?;
        if bytes.starts_with(b"HUSHKEY") {
            return Err(StoreError::OldKeyFile);
        }
        if bytes.len() != KEY_FILE_LEN {
            return Err(StoreError::CorruptKeyFile);
        }
        Ok(Self(bytes))
    }

    /// Overwrites the file's bytes where they are: everything after the
    /// word first, synced, then the word, synced. A rewrite cut short (a
    /// kill between pages, a power cut) then leaves the old word over
    /// slots that are each either old or new, both of which open.
    fn write(&self, file: &File) -> Result<(), StoreError> {
        file.write_all_at(&self.0[WORD..], WORD as u64)?;
        file.sync_all()?;
        file.write_all_at(&self.0[..WORD], 0)?;
        file.sync_all()?;
        Ok(())
    }

    fn state(&self) -> (u32, u32) {
        let mut word = [0u8; WORD];
        word.copy_from_slice(&self.0[..WORD]);
        decode_word(word)
    }

    fn set_state(&mut self, state: u32, level: u32) {
        self.0[..WORD].copy_from_slice(&encode_word(state, level));
    }

    fn real_salt(&self) -> &[u8] {
        &self.0[REAL_SALT_AT..REAL_SALT_AT + SALT]
    }

    fn panic_salt(&self) -> &[u8] {
        &self.0[PANIC_SALT_AT..PANIC_SALT_AT + SALT]
    }

    fn panic_slot(&self) -> &[u8] {
        &self.0[PANIC_SLOT_AT..PANIC_SLOT_AT + SLOT]
    }

    /// The panic salt and slot together (bound into every real slot).
    fn panic_area(&self) -> &[u8] {
        &self.0[PANIC_SALT_AT..PANIC_SLOT_AT + SLOT]
    }

    fn slot_ad(&self, index: usize, counted: bool) -> [u8; 48] {
        real_slot_ad(index, counted, self.panic_area())
    }

    fn real_slot(&self, index: usize) -> &[u8] {
        let at = REAL_SLOTS_AT + index * SLOT;
        &self.0[at..at + SLOT]
    }

    fn set_real_slot(&mut self, index: usize, slot: &[u8; SLOT]) {
        let at = REAL_SLOTS_AT + index * SLOT;
        self.0[at..at + SLOT].copy_from_slice(slot);
    }

    fn destroy_real_slot(&mut self, index: usize) {
        let at = REAL_SLOTS_AT + index * SLOT;
        rand::rngs::OsRng.fill_bytes(&mut self.0[at..at + SLOT]);
    }

    /// Seals `keys` in every real slot the limit uses, fresh noise in the
    /// rest, and sets the state to "all slots left": only after the right
    /// passphrase (or a new one).
    fn seal_keys(&mut self, wrapping: &Wrapping, keys: &SealedKeys) -> Result<(), StoreError> {
        let counted = wrapping.max_attempts > 0;
        let state = if counted { wrapping.max_attempts } else { UNLIMITED };
        self.seal_live_slots(wrapping, keys, state)
    }

    /// Seals `keys` in the slots that `state` says are live, noise in the
    /// rest, and keeps `state`: a rewrite while the profile is open (a
    /// re-key, a new panic passphrase) gives back no used attempt.
    fn seal_live_slots(
        &mut self,
        wrapping: &Wrapping,
        keys: &SealedKeys,
        state: u32,
    ) -> Result<(), StoreError> {
        let payload = keys_payload(keys, wrapping.max_attempts);
        let counted = state != UNLIMITED;
        let live = match state {
            UNLIMITED => 1,
            EXHAUSTED => 0,
            left => left as usize,
        };
        for index in 0..REAL_SLOTS {
            if index < live {
                let slot = seal(&wrapping.kek, &self.slot_ad(index, counted), &payload)?;
                self.set_real_slot(index, &slot);
            } else {
                self.destroy_real_slot(index);
            }
        }
        self.set_state(state, wrapping.level);
        Ok(())
    }

    /// The keys in the live slot an attempt would use next, opened with
    /// `wrapping`: refuses a process whose passphrase-derived key is no
    /// longer the file's (the passphrase was changed meanwhile).
    fn live_keys(&self, wrapping: &Wrapping) -> Result<SealedKeys, StoreError> {
        let (state, _) = self.state();
        let (index, counted) = match state {
            UNLIMITED => (0, false),
            EXHAUSTED => return Err(StoreError::ProfileChanged),
            left => (left as usize - 1, true),
        };
        open(&wrapping.kek, &self.slot_ad(index, counted), self.real_slot(index))
            .and_then(|payload| parse_keys(&payload))
            .map(|(keys, _)| keys)
            .ok_or(StoreError::ProfileChanged)
    }

    fn check_wrapping(&self, wrapping: &Wrapping) -> Result<(), StoreError> {
        self.live_keys(wrapping).map(drop)
    }
}

fn slot_count(max_attempts: u32) -> usize {
    max_attempts.clamp(1, MAX_ATTEMPTS_LIMIT) as usize
}

/// Opens the key file for reading and writing in place and takes an
/// exclusive lock on it (released when the file is closed).
fn open_locked(path: &Path) -> Result<File, StoreError> {
    use std::os::unix::fs::MetadataExt;
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path)?;
    if !lock_within(&file, LOCK_WAIT)? {
        return Err(StoreError::Busy);
    }
    // A wipe holds the lock until it has unlinked the file: whoever waited
    // for it finds a file with no name and must not write it back.
    if file.metadata()?.nlink() == 0 {
        return Err(StoreError::NoProfile);
    }
    Ok(file)
}

/// How long an attempt or a rewrite waits for another process's hold on
/// the key file (an attempt holds it through Argon2id, under a second)
/// before giving up: a stopped process must not hang every other one.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long a wipe waits for it before overwriting the file anyway.
const WIPE_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Takes `file`'s exclusive lock, waiting at most `wait`; false if it could
/// not.
fn lock_within(file: &File, wait: std::time::Duration) -> Result<bool, StoreError> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(true),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(std::fs::TryLockError::WouldBlock) => return Ok(false),
            Err(std::fs::TryLockError::Error(error)) => return Err(error.into()),
        }
    }
}

/// Opens and locks the key file for a rewrite by an open profile, and
/// checks that `wrapping` still opens its live slot.
fn open_for_rewrite(path: &Path, wrapping: &Wrapping) -> Result<(File, Image), StoreError> {
    let mut file = open_locked(path)?;
    let image = Image::read(&mut file)?;
    image.check_wrapping(wrapping)?;
    Ok((file, image))
}

/// The key file of a profile.
pub(crate) struct KeyFile;

impl KeyFile {
    /// Writes a new key file at `path` (which must not exist, created mode
    /// 0600) with `key` sealed under `passphrase` and no panic passphrase.
    /// `max_attempts` 0 means one slot, never consumed.
    pub(crate) fn create(
        path: &Path,
        passphrase: &[u8],
        key: &DatabaseKey,
        params: KdfParams,
        max_attempts: u32,
    ) -> Result<Wrapping, StoreError> {
        use std::os::unix::fs::OpenOptionsExt;
        let level = params.level()?;
        let max_attempts = max_attempts.min(MAX_ATTEMPTS_LIMIT);
        let mut image = Image::random();
        let kek = derive(passphrase, image.real_salt(), params)?;
        let wrapping = Wrapping { kek, level, max_attempts };
        let keys = SealedKeys { current: key.duplicate(), next: None };
        image.seal_keys(&wrapping, &keys)?;
        let file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
        file.lock()?;
        image.write(&file)?;
        sync_parent(path);
        Ok(wrapping)
    }

    /// One unlock attempt: the slot it uses is destroyed on disk before the
    /// passphrase is tried (so killing the process mid-try still counts),
    /// and all slots are re-sealed on success. Holds the file's lock
    /// throughout.
    pub(crate) fn attempt(path: &Path, passphrase: &[u8]) -> Result<Attempt, StoreError> {
        let mut file = open_locked(path)?;
        let mut image = Image::read(&mut file)?;
        let (state, level) = image.state();
        if state == EXHAUSTED {
            return Ok(Attempt::Wrong { exhausted: true });
        }
        let counted = state != UNLIMITED;
        let index = if counted { state as usize - 1 } else { 0 };
        let mut taken = [0u8; SLOT];
        taken.copy_from_slice(image.real_slot(index));
        if counted {
            image.destroy_real_slot(index);
            image.set_state(if state == 1 { EXHAUSTED } else { state - 1 }, level);
            image.write(&file)?;
        }
        let params = level_params(level)?;
        let kek = derive(passphrase, image.real_salt(), params)?;
        let panic_kek = derive(passphrase, image.panic_salt(), params)?;
        let real = open(&kek, &image.slot_ad(index, counted), &taken).and_then(|p| parse_keys(&p));
        taken.zeroize();
        if let Some((keys, max_attempts)) = real {
            if counted != (max_attempts > 0) || index >= slot_count(max_attempts) {
                return Err(StoreError::CorruptKeyFile);
            }
            let wrapping = Wrapping { kek, level, max_attempts };
            if counted {
                image.seal_keys(&wrapping, &keys)?;
                image.write(&file)?;
            }
            drop(keys);
            return Ok(Attempt::Opened(Unlocked::Database(wrapping)));
        }
        if let Some(code) = open(&panic_kek, PANIC_SLOT_AD, image.panic_slot()).and_then(|p| parse_wipe(&p)) {
            return Ok(Attempt::Opened(Unlocked::Panic(code)));
        }
        Ok(Attempt::Wrong { exhausted: counted && state == 1 })
    }

    /// The keys sealed now, read with an already derived key (an unlock
    /// that took the profile lock after its attempt re-reads them: a
    /// re-key may have run in between). Consumes no attempt.
    pub(crate) fn read_keys(path: &Path, wrapping: &Wrapping) -> Result<SealedKeys, StoreError> {
        let mut file = open_locked(path)?;
        Image::read(&mut file)?.live_keys(wrapping)
    }

    /// Takes the key file's exclusive lock (held until the file is
    /// dropped): what every attempt and every rewrite holds.
    pub(crate) fn lock(path: &Path) -> Result<File, StoreError> {
        open_locked(path)
    }

    /// Re-seals `keys` in every slot (after a re-key, or to finish one).
    /// The attempt state is kept: a reseal gives back no used attempt.
    pub(crate) fn reseal(path: &Path, wrapping: &Wrapping, keys: &SealedKeys) -> Result<(), StoreError> {
        let (file, mut image) = open_for_rewrite(path, wrapping)?;
        let (state, _) = image.state();
        image.seal_live_slots(wrapping, keys, state)?;
        image.write(&file)
    }

    /// Seals the wipe instructions under `panic` in the panic slot, with a
    /// fresh salt. Refuses a panic passphrase equal to the passphrase.
    /// The real slots are re-sealed too (they are bound to the panic slot),
    /// keeping the attempt state.
    pub(crate) fn set_panic(
        path: &Path,
        wrapping: &Wrapping,
        keys: &SealedKeys,
        panic: &[u8],
        code: &WipeCode,
    ) -> Result<(), StoreError> {
        let (file, mut image) = open_for_rewrite(path, wrapping)?;
        let params = level_params(wrapping.level)?;
        let as_real = derive(panic, image.real_salt(), params)?;
        if bool::from(as_real.as_slice().ct_eq(wrapping.kek.as_slice())) {
            return Err(StoreError::PanicIsPassphrase);
        }
        rand::rngs::OsRng.fill_bytes(&mut image.0[PANIC_SALT_AT..PANIC_SALT_AT + SALT]);
        let kek = derive(panic, image.panic_salt(), params)?;
        let slot = seal(&kek, PANIC_SLOT_AD, &*wipe_payload(code)?)?;
        image.0[PANIC_SLOT_AT..PANIC_SLOT_AT + SLOT].copy_from_slice(&slot);
        let (state, _) = image.state();
        image.seal_live_slots(wrapping, keys, state)?;
        image.write(&file)
    }

    /// Re-seals `keys` under a new passphrase (same salt), and returns the
    /// new wrapping. Refuses a passphrase that opens the panic slot.
    pub(crate) fn change_passphrase(
        path: &Path,
        wrapping: &Wrapping,
        passphrase: &[u8],
        keys: &SealedKeys,
    ) -> Result<Wrapping, StoreError> {
        let (file, mut image) = open_for_rewrite(path, wrapping)?;
        let params = level_params(wrapping.level)?;
        let as_panic = derive(passphrase, image.panic_salt(), params)?;
        if open(&as_panic, PANIC_SLOT_AD, image.panic_slot()).is_some() {
            return Err(StoreError::PanicIsPassphrase);
        }
        // The salt stays: a rewrite cut short then leaves every slot sealed
        // under either the old or the new passphrase, never under neither.
        let kek = derive(passphrase, image.real_salt(), params)?;
        let wrapping = Wrapping { kek, level: wrapping.level, max_attempts: wrapping.max_attempts };
        image.seal_keys(&wrapping, keys)?;
        image.write(&file)?;
        Ok(wrapping)
    }

    /// Overwrites the whole file with random bytes in place, syncs, and
    /// unlinks it, all under the file's lock (so a process that was waiting
    /// to write it finds it gone instead of writing it back).
    /// Waits for the lock at most briefly: a stopped process holding it
    /// must not keep a panic wipe from happening. A file already gone is
    /// already destroyed.
    pub(crate) fn destroy(path: &Path) -> Result<(), StoreError> {
        use std::os::unix::fs::MetadataExt;
        let file = match std::fs::OpenOptions::new().write(true).open(path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(error) => return Err(error.into()),
        };
        lock_within(&file, WIPE_LOCK_WAIT)?;
        if file.metadata()?.nlink() == 0 {
            return Ok(());
        }
        let len = usize::try_from(file.metadata()?.len()).unwrap_or(KEY_FILE_LEN).max(KEY_FILE_LEN);
        let mut noise = vec![0u8; len];
        rand::rngs::OsRng.fill_bytes(&mut noise);
        file.write_all_at(&noise, 0)?;
        file.sync_all()?;
        match std::fs::remove_file(path) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error.into()),
            _ => Ok(()),
        }
    }
}

impl Wrapping {
    /// A wrapping that seals nothing anyone can open (tests of an unkeyed
    /// database).
    #[cfg(test)]
    pub(crate) fn unusable() -> Self {
        Self { kek: Zeroizing::new([0; 32]), level: 0, max_attempts: 0 }
    }
}

fn sync_parent(path: &Path) {
    if let Some(dir) = path.parent() {
        if let Ok(dir) = File::open(dir) {
            let _ = dir.sync_all();
        }
    }
}

#[cfg(test)]
mod tests;

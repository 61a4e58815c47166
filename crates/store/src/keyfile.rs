//! The key file: the random database key, wrapped by a key derived from the
//! passphrase with Argon2id and sealed with XChaCha20-Poly1305.
//!
//! Wrong passphrases are limited by consuming slots, not by trusting a
//! counter. The database key is sealed in `max_attempts` slots (all under
//! the same Argon2id-derived key, each with its own nonce). Every unlock
//! first destroys the next slot on disk and only then tries the passphrase
//! on the copy in memory; a right passphrase re-seals all slots. Editing
//! the file's counter therefore cannot bring back a used slot: after
//! `max_attempts` wrong passphrases in a row no slot opens and the profile
//! is wiped. (Restoring a whole earlier copy of the file is the one way
//! around this, as it is for any software-only counter.)
//!
//! A last slot of the same shape holds the wipe instructions sealed under
//! the panic passphrase, or random bytes when none is set. Every unlock
//! derives and tries both, so neither the file nor the time taken says
//! whether a panic passphrase exists.

use std::io::Write;
use std::path::Path;

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hush_proto::{AccountId, CertificatePin, WipeCode};
use rand::RngCore;
use zeroize::{Zeroize, Zeroizing};

use crate::error::StoreError;

const MAGIC: &[u8; 8] = b"HUSHKEY3";
const SALT: usize = 16;
const NONCE: usize = 24;
/// Plaintext sealed in a slot: a kind byte and its contents, padded.
const PAYLOAD: usize = 256;
const SEALED: usize = PAYLOAD + 16;
const SLOT: usize = SALT + NONCE + SEALED;
const HEADER: usize = MAGIC.len() + 5 * 4;
/// Most wrong passphrases a profile may allow before wiping.
pub const MAX_ATTEMPTS_LIMIT: u32 = 100;

const KIND_DATABASE_KEY: u8 = 1;
const KIND_WIPE: u8 = 2;

type Slot = [u8; SLOT];

/// Argon2id cost parameters, stored in the key file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for KdfParams {
    fn default() -> Self {
        // Above OWASP's Argon2id recommendation (46 MiB, 1 pass): 64 MiB, 3 passes.
        Self { memory_kib: 64 * 1024, iterations: 3, parallelism: 1 }
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

    /// The SQLCipher raw-key pragma value.
    pub(crate) fn pragma(&self) -> Zeroizing<String> {
        let mut hex = data_encoding::HEXLOWER.encode(self.0.as_ref());
        let pragma = Zeroizing::new(format!("x'{hex}'"));
        hex.zeroize();
        pragma
    }
}

/// What a passphrase opened.
pub(crate) enum Unlocked {
    /// The real passphrase: the database key.
    Database(DatabaseKey),
    /// The panic passphrase: what to tell the relay while wiping.
    Panic(WipeCode),
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

fn random_slot() -> Slot {
    let mut slot = [0u8; SLOT];
    rand::rngs::OsRng.fill_bytes(&mut slot);
    slot
}

fn cipher(kek: &Zeroizing<[u8; 32]>) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(kek.as_ref().into())
}

/// Seals `payload` under an already derived key, with a fresh nonce.
fn seal_with(
    kek: &Zeroizing<[u8; 32]>,
    salt: &[u8],
    payload: &Zeroizing<[u8; PAYLOAD]>,
) -> Result<Slot, StoreError> {
    let mut slot = random_slot();
    slot[..SALT].copy_from_slice(salt);
    let sealed = cipher(kek)
        .encrypt(XNonce::from_slice(&slot[SALT..SALT + NONCE]), &payload[..])
        .map_err(|_| StoreError::Kdf("sealing failed".into()))?;
    slot[SALT + NONCE..].copy_from_slice(&sealed);
    Ok(slot)
}

fn open_with(kek: &Zeroizing<[u8; 32]>, slot: &Slot) -> Option<Zeroizing<Vec<u8>>> {
    cipher(kek)
        .decrypt(XNonce::from_slice(&slot[SALT..SALT + NONCE]), &slot[SALT + NONCE..])
        .ok()
        .map(Zeroizing::new)
}

fn key_payload(key: &DatabaseKey) -> Zeroizing<[u8; PAYLOAD]> {
    let mut payload = Zeroizing::new([0u8; PAYLOAD]);
    payload[0] = KIND_DATABASE_KEY;
    payload[1..33].copy_from_slice(key.0.as_ref());
    payload
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

fn parse_payload(payload: &[u8]) -> Option<Unlocked> {
    match *payload.first()? {
        KIND_DATABASE_KEY => {
            let mut key = Zeroizing::new([0u8; 32]);
            key.copy_from_slice(payload.get(1..33)?);
            Some(Unlocked::Database(DatabaseKey(key)))
        }
        KIND_WIPE => {
            let len = usize::from(*payload.get(85)?);
            Some(Unlocked::Panic(WipeCode {
                account: AccountId(payload.get(1..21)?.try_into().ok()?),
                secret: payload.get(21..53)?.try_into().ok()?,
                pin: CertificatePin(payload.get(53..85)?.try_into().ok()?),
                address: String::from_utf8(payload.get(86..86 + len)?.to_vec()).ok()?,
            }))
        }
        _ => None,
    }
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

/// A parsed key file.
pub struct KeyFile {
    params: KdfParams,
    next_slot: u32,
    max_attempts: u32,
    real: Vec<Slot>,
    panic: Slot,
}

impl KeyFile {
    /// A new key file with `key` sealed under `passphrase` in every slot and
    /// no panic passphrase. `max_attempts` 0 means one slot, never consumed.
    pub(crate) fn new(
        passphrase: &[u8],
        key: &DatabaseKey,
        params: KdfParams,
        max_attempts: u32,
    ) -> Result<Self, StoreError> {
        let max_attempts = max_attempts.min(MAX_ATTEMPTS_LIMIT);
        let mut salt = [0u8; SALT];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        let kek = derive(passphrase, &salt, params)?;
        let payload = key_payload(key);
        let real =
            (0..max_attempts.max(1)).map(|_| seal_with(&kek, &salt, &payload)).collect::<Result<_, _>>()?;
        Ok(Self { params, next_slot: 0, max_attempts, real, panic: random_slot() })
    }

    /// Wrong passphrases in a row so far.
    pub fn failed_attempts(&self) -> u32 {
        self.next_slot
    }

    /// Wrong passphrases in a row that wipe the profile (0: never).
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// One unlock attempt on the key file at `path`: the slot it uses is
    /// destroyed on disk before the passphrase is tried (so killing the
    /// process mid-try still counts), and all slots are re-sealed on success.
    pub(crate) fn attempt(path: &Path, passphrase: &[u8]) -> Result<Attempt, StoreError> {
        let mut file = Self::read(path)?;
        let counted = file.max_attempts > 0;
        let index = if counted { file.next_slot as usize } else { 0 };
        let Some(taken) = file.real.get(index).copied() else {
            return Ok(Attempt::Wrong { exhausted: true });
        };
        if counted {
            file.real[index] = random_slot();
            file.next_slot += 1;
            file.write(path)?;
        }
        let kek = derive(passphrase, &taken[..SALT], file.params)?;
        let panic_kek = derive(passphrase, &file.panic[..SALT], file.params)?;
        let opened = open_with(&kek, &taken).or_else(|| open_with(&panic_kek, &file.panic));
        match opened.and_then(|payload| parse_payload(&payload)) {
            Some(Unlocked::Database(key)) => {
                if counted {
                    let payload = key_payload(&key);
                    for slot in file.real.iter_mut() {
                        *slot = seal_with(&kek, &taken[..SALT], &payload)?;
                    }
                    file.next_slot = 0;
                    file.write(path)?;
                }
                Ok(Attempt::Opened(Unlocked::Database(key)))
            }
            Some(panic) => Ok(Attempt::Opened(panic)),
            None => Ok(Attempt::Wrong { exhausted: counted && file.next_slot >= file.max_attempts }),
        }
    }

    /// True if `passphrase` is the profile's passphrase (consumes nothing).
    /// Right after a successful unlock every slot is sealed, so the first
    /// one answers.
    pub(crate) fn is_passphrase(&self, passphrase: &[u8]) -> Result<bool, StoreError> {
        let Some(slot) = self.real.first() else { return Ok(false) };
        let kek = derive(passphrase, &slot[..SALT], self.params)?;
        Ok(open_with(&kek, slot).is_some())
    }

    /// Seals the wipe instructions under `panic` in the panic slot.
    pub(crate) fn set_panic(&mut self, panic: &[u8], code: &WipeCode) -> Result<(), StoreError> {
        let mut salt = [0u8; SALT];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        let kek = derive(panic, &salt, self.params)?;
        self.panic = seal_with(&kek, &salt, &wipe_payload(code)?)?;
        Ok(())
    }

    fn slot_count(max_attempts: u32) -> usize {
        max_attempts.clamp(1, MAX_ATTEMPTS_LIMIT) as usize
    }

    /// The size of a key file allowing `max_attempts`.
    pub fn len_for(max_attempts: u32) -> usize {
        HEADER + (Self::slot_count(max_attempts) + 1) * SLOT
    }

    /// Reads a key file.
    pub fn read(path: &Path) -> Result<Self, StoreError> {
        let bytes = std::fs::read(path)?;
        if bytes.len() < HEADER || &bytes[..MAGIC.len()] != MAGIC {
            return Err(StoreError::CorruptKeyFile);
        }
        let word = |i: usize| {
            let at = MAGIC.len() + 4 * i;
            u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let params = KdfParams { memory_kib: word(0), iterations: word(1), parallelism: word(2) };
        let (next_slot, max_attempts) = (word(3), word(4));
        if max_attempts > MAX_ATTEMPTS_LIMIT || bytes.len() != Self::len_for(max_attempts) {
            return Err(StoreError::CorruptKeyFile);
        }
        let slot_at = |i: usize| -> Slot {
            let mut slot = [0u8; SLOT];
            slot.copy_from_slice(&bytes[HEADER + i * SLOT..HEADER + (i + 1) * SLOT]);
            slot
        };
        let count = Self::slot_count(max_attempts);
        let real = (0..count).map(slot_at).collect();
        Ok(Self { params, next_slot, max_attempts, real, panic: slot_at(count) })
    }

    /// Writes the key file durably and atomically (temp file, fsync,
    /// rename, fsync of the directory), mode 0600.
    pub(crate) fn write(&self, path: &Path) -> Result<(), StoreError> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut bytes = Zeroizing::new(Vec::with_capacity(Self::len_for(self.max_attempts)));
        bytes.extend_from_slice(MAGIC);
        let words = [
            self.params.memory_kib,
            self.params.iterations,
            self.params.parallelism,
            self.next_slot,
            self.max_attempts,
        ];
        for word in words {
            bytes.extend_from_slice(&word.to_be_bytes());
        }
        for slot in self.real.iter().chain(std::iter::once(&self.panic)) {
            bytes.extend_from_slice(slot);
        }
        let temp = path.with_extension("tmp");
        let mut file =
            std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&temp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHEAP: KdfParams = KdfParams { memory_kib: 1024, iterations: 1, parallelism: 1 };

    fn code() -> WipeCode {
        WipeCode {
            address: "127.0.0.1:7443".into(),
            pin: CertificatePin([1; 32]),
            account: AccountId([2; 20]),
            secret: [3; 32],
        }
    }

    fn opened_key(attempt: Attempt) -> Option<[u8; 32]> {
        match attempt {
            Attempt::Opened(Unlocked::Database(key)) => Some(*key.0),
            _ => None,
        }
    }

    #[test]
    fn each_passphrase_opens_its_own_slot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let key = DatabaseKey::random();
        let mut file = KeyFile::new(b"correct horse", &key, CHEAP, 10).unwrap();
        file.set_panic(b"duress", &code()).unwrap();
        file.write(&path).unwrap();
        assert_eq!(opened_key(KeyFile::attempt(&path, b"correct horse").unwrap()), Some(*key.0));
        assert!(KeyFile::read(&path).unwrap().is_passphrase(b"correct horse").unwrap());
        assert!(!KeyFile::read(&path).unwrap().is_passphrase(b"duress").unwrap());
        let Attempt::Opened(Unlocked::Panic(opened)) = KeyFile::attempt(&path, b"duress").unwrap() else {
            panic!()
        };
        assert_eq!(opened, code());
        assert!(matches!(KeyFile::attempt(&path, b"wrong").unwrap(), Attempt::Wrong { exhausted: false }));
    }

    #[test]
    fn resetting_the_counter_by_hand_does_not_bring_back_used_slots() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let key = DatabaseKey::random();
        KeyFile::new(b"right", &key, CHEAP, 3).unwrap().write(&path).unwrap();
        for _ in 0..2 {
            assert!(matches!(
                KeyFile::attempt(&path, b"wrong").unwrap(),
                Attempt::Wrong { exhausted: false }
            ));
        }
        // An attacker sets the counter back to zero in the header.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[MAGIC.len() + 12..MAGIC.len() + 16].copy_from_slice(&0u32.to_be_bytes());
        std::fs::write(&path, &bytes).unwrap();
        // The used slots are gone: even the right passphrase fails on them.
        for _ in 0..2 {
            assert!(opened_key(KeyFile::attempt(&path, b"right").unwrap()).is_none());
        }
        // The one slot never used still opens, and re-seals every slot.
        assert_eq!(opened_key(KeyFile::attempt(&path, b"right").unwrap()), Some(*key.0));
        assert_eq!(KeyFile::read(&path).unwrap().failed_attempts(), 0);
        assert_eq!(opened_key(KeyFile::attempt(&path, b"right").unwrap()), Some(*key.0));
    }

    #[test]
    fn the_last_allowed_wrong_passphrase_is_reported_as_exhausted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        KeyFile::new(b"right", &DatabaseKey::random(), CHEAP, 2).unwrap().write(&path).unwrap();
        assert!(matches!(KeyFile::attempt(&path, b"wrong").unwrap(), Attempt::Wrong { exhausted: false }));
        assert!(matches!(KeyFile::attempt(&path, b"wrong").unwrap(), Attempt::Wrong { exhausted: true }));
        assert!(matches!(KeyFile::attempt(&path, b"right").unwrap(), Attempt::Wrong { exhausted: true }));
    }

    #[test]
    fn files_with_and_without_a_panic_slot_have_the_same_shape() {
        let dir = tempfile::tempdir().unwrap();
        let key = DatabaseKey::random();
        let plain = dir.path().join("plain");
        let with_panic = dir.path().join("panic");
        KeyFile::new(b"pw", &key, CHEAP, 10).unwrap().write(&plain).unwrap();
        let mut file = KeyFile::new(b"pw", &key, CHEAP, 10).unwrap();
        file.set_panic(b"duress", &code()).unwrap();
        file.write(&with_panic).unwrap();
        let (a, b) = (std::fs::read(&plain).unwrap(), std::fs::read(&with_panic).unwrap());
        assert_eq!(a.len(), KeyFile::len_for(10));
        assert_eq!(a.len(), b.len());
        assert_eq!(a[..HEADER], b[..HEADER]);
        for bytes in [&a, &b] {
            assert!(!bytes.windows(32).any(|w| w == key.0.as_ref()));
            assert!(!bytes.windows(14).any(|w| w == b"127.0.0.1:7443"));
        }
    }

    #[test]
    fn truncated_key_file_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, b"HUSHKEY3").unwrap();
        assert!(matches!(KeyFile::read(&path), Err(StoreError::CorruptKeyFile)));
    }
}

//! The key file: the random database key, wrapped by a key derived from the
//! passphrase with Argon2id and sealed with XChaCha20-Poly1305, plus the
//! wrong-passphrase counter.
//!
//! The file always holds two slots of the same shape and size. One seals the
//! database key under the passphrase; the other seals the wipe instructions
//! under the panic passphrase, or holds random bytes when no panic
//! passphrase is set. Every unlock derives and tries both, so neither the
//! file nor the time taken says whether a panic passphrase exists.

use std::io::Write;
use std::path::Path;

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hush_proto::{AccountId, CertificatePin, WipeCode};
use rand::RngCore;
use zeroize::{Zeroize, Zeroizing};

use crate::error::StoreError;

const MAGIC: &[u8; 8] = b"HUSHKEY2";
const SALT: usize = 16;
const NONCE: usize = 24;
/// Plaintext sealed in a slot: a kind byte and its contents, padded.
const PAYLOAD: usize = 256;
const SEALED: usize = PAYLOAD + 16;
const SLOT: usize = SALT + NONCE + SEALED;
const SLOTS: usize = 2;
const HEADER: usize = MAGIC.len() + 5 * 4;
/// Size of every key file.
pub const FILE_LEN: usize = HEADER + SLOTS * SLOT;

const KIND_DATABASE_KEY: u8 = 1;
const KIND_WIPE: u8 = 2;
const REAL: usize = 0;
const PANIC: usize = 1;

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

/// A parsed key file.
pub struct KeyFile {
    params: KdfParams,
    failed_attempts: u32,
    max_attempts: u32,
    slots: [[u8; SLOT]; SLOTS],
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

fn random_slot() -> [u8; SLOT] {
    let mut slot = [0u8; SLOT];
    rand::rngs::OsRng.fill_bytes(&mut slot);
    slot
}

fn seal(
    passphrase: &[u8],
    payload: &Zeroizing<[u8; PAYLOAD]>,
    params: KdfParams,
) -> Result<[u8; SLOT], StoreError> {
    let mut slot = random_slot();
    let kek = derive(passphrase, &slot[..SALT], params)?;
    let cipher = XChaCha20Poly1305::new(kek.as_ref().into());
    let sealed = cipher
        .encrypt(XNonce::from_slice(&slot[SALT..SALT + NONCE]), &payload[..])
        .map_err(|_| StoreError::Kdf("sealing failed".into()))?;
    slot[SALT + NONCE..].copy_from_slice(&sealed);
    Ok(slot)
}

fn open_slot(
    passphrase: &[u8],
    slot: &[u8; SLOT],
    params: KdfParams,
) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
    let kek = derive(passphrase, &slot[..SALT], params)?;
    let cipher = XChaCha20Poly1305::new(kek.as_ref().into());
    Ok(cipher
        .decrypt(XNonce::from_slice(&slot[SALT..SALT + NONCE]), &slot[SALT + NONCE..])
        .ok()
        .map(Zeroizing::new))
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

impl KeyFile {
    /// A new key file with `key` sealed under `passphrase` and no panic passphrase.
    pub(crate) fn new(
        passphrase: &[u8],
        key: &DatabaseKey,
        params: KdfParams,
        max_attempts: u32,
    ) -> Result<Self, StoreError> {
        let real = seal(passphrase, &key_payload(key), params)?;
        Ok(Self { params, failed_attempts: 0, max_attempts, slots: [real, random_slot()] })
    }

    /// Tries `passphrase` on both slots (always both, so the time taken
    /// says nothing about the panic slot).
    pub(crate) fn unlock(&self, passphrase: &[u8]) -> Result<Option<Unlocked>, StoreError> {
        let real = open_slot(passphrase, &self.slots[REAL], self.params)?;
        let panic = open_slot(passphrase, &self.slots[PANIC], self.params)?;
        Ok(real.or(panic).and_then(|payload| parse_payload(&payload)))
    }

    /// Seals the wipe instructions under `panic` in the second slot.
    pub(crate) fn set_panic(&mut self, panic: &[u8], code: &WipeCode) -> Result<(), StoreError> {
        self.slots[PANIC] = seal(panic, &wipe_payload(code)?, self.params)?;
        Ok(())
    }

    /// Wrong passphrases in a row so far.
    pub fn failed_attempts(&self) -> u32 {
        self.failed_attempts
    }

    /// Wrong passphrases in a row that wipe the profile (0: never).
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    pub(crate) fn set_failed_attempts(&mut self, count: u32) {
        self.failed_attempts = count;
    }

    /// Reads a key file.
    pub fn read(path: &Path) -> Result<Self, StoreError> {
        let bytes = std::fs::read(path)?;
        if bytes.len() != FILE_LEN || &bytes[..MAGIC.len()] != MAGIC {
            return Err(StoreError::CorruptKeyFile);
        }
        let word = |i: usize| {
            let at = MAGIC.len() + 4 * i;
            u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let params = KdfParams { memory_kib: word(0), iterations: word(1), parallelism: word(2) };
        let mut slots = [[0u8; SLOT]; SLOTS];
        for (i, slot) in slots.iter_mut().enumerate() {
            slot.copy_from_slice(&bytes[HEADER + i * SLOT..HEADER + (i + 1) * SLOT]);
        }
        Ok(Self { params, failed_attempts: word(3), max_attempts: word(4), slots })
    }

    /// Writes the key file durably and atomically (temp file, fsync,
    /// rename, fsync of the directory), mode 0600.
    pub(crate) fn write(&self, path: &Path) -> Result<(), StoreError> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut bytes = Vec::with_capacity(FILE_LEN);
        bytes.extend_from_slice(MAGIC);
        let words = [
            self.params.memory_kib,
            self.params.iterations,
            self.params.parallelism,
            self.failed_attempts,
            self.max_attempts,
        ];
        for word in words {
            bytes.extend_from_slice(&word.to_be_bytes());
        }
        for slot in &self.slots {
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

    #[test]
    fn each_passphrase_opens_its_own_slot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let key = DatabaseKey::random();
        let mut file = KeyFile::new(b"correct horse", &key, CHEAP, 10).unwrap();
        file.set_panic(b"duress", &code()).unwrap();
        file.write(&path).unwrap();
        let file = KeyFile::read(&path).unwrap();
        let Some(Unlocked::Database(opened)) = file.unlock(b"correct horse").unwrap() else { panic!() };
        assert_eq!(opened.0.as_ref(), key.0.as_ref());
        let Some(Unlocked::Panic(opened)) = file.unlock(b"duress").unwrap() else { panic!() };
        assert_eq!(opened, code());
        assert!(file.unlock(b"wrong").unwrap().is_none());
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
        assert_eq!(a.len(), FILE_LEN);
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
        std::fs::write(&path, b"HUSHKEY2").unwrap();
        assert!(matches!(KeyFile::read(&path), Err(StoreError::CorruptKeyFile)));
    }
}

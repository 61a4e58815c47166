//! The key file: the random database key, wrapped by a key derived from the
//! passphrase with Argon2id and sealed with XChaCha20-Poly1305.
//!
//! The file always holds two slots of the same shape. Slot 0 opens with the
//! passphrase; the other slot is reserved (random bytes until a second
//! passphrase uses it), so the file's shape says nothing about its use.

use std::io::Write;
use std::path::Path;

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use zeroize::{Zeroize, Zeroizing};

use crate::error::StoreError;

const MAGIC: &[u8; 8] = b"HUSHKEY1";
const SALT: usize = 16;
const NONCE: usize = 24;
const SEALED: usize = 32 + 16;
const SLOT: usize = SALT + NONCE + SEALED;
const SLOTS: usize = 2;
const HEADER: usize = MAGIC.len() + 12;
const FILE_LEN: usize = HEADER + SLOTS * SLOT;

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
        // OWASP's Argon2id recommendation tier: 46 MiB, 1 pass would do;
        // we take 64 MiB and 3 passes.
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

/// A parsed key file.
pub struct KeyFile {
    params: KdfParams,
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

fn seal(passphrase: &[u8], key: &DatabaseKey, params: KdfParams) -> Result<[u8; SLOT], StoreError> {
    let mut slot = [0u8; SLOT];
    rand::rngs::OsRng.fill_bytes(&mut slot[..SALT + NONCE]);
    let kek = derive(passphrase, &slot[..SALT], params)?;
    let cipher = XChaCha20Poly1305::new(kek.as_ref().into());
    let sealed = cipher
        .encrypt(XNonce::from_slice(&slot[SALT..SALT + NONCE]), &key.0[..])
        .map_err(|_| StoreError::Kdf("sealing failed".into()))?;
    slot[SALT + NONCE..].copy_from_slice(&sealed);
    Ok(slot)
}

impl KeyFile {
    /// A new key file with `key` sealed under `passphrase` in slot 0.
    pub(crate) fn new(passphrase: &[u8], key: &DatabaseKey, params: KdfParams) -> Result<Self, StoreError> {
        let mut filler = [0u8; SLOT];
        rand::rngs::OsRng.fill_bytes(&mut filler);
        Ok(Self { params, slots: [seal(passphrase, key, params)?, filler] })
    }

    /// Tries to open slot 0 with `passphrase`.
    pub(crate) fn unlock(&self, passphrase: &[u8]) -> Result<DatabaseKey, StoreError> {
        let slot = &self.slots[0];
        let kek = derive(passphrase, &slot[..SALT], self.params)?;
        let cipher = XChaCha20Poly1305::new(kek.as_ref().into());
        let opened = Zeroizing::new(
            cipher
                .decrypt(XNonce::from_slice(&slot[SALT..SALT + NONCE]), &slot[SALT + NONCE..])
                .map_err(|_| StoreError::WrongPassphrase)?,
        );
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&opened);
        Ok(DatabaseKey(key))
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
        Ok(Self { params, slots })
    }

    /// Writes the key file atomically (temp file, fsync, rename), mode 0600.
    pub(crate) fn write(&self, path: &Path) -> Result<(), StoreError> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut bytes = Vec::with_capacity(FILE_LEN);
        bytes.extend_from_slice(MAGIC);
        for word in [self.params.memory_kib, self.params.iterations, self.params.parallelism] {
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

    #[test]
    fn right_passphrase_unlocks_wrong_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let key = DatabaseKey::random();
        KeyFile::new(b"correct horse", &key, CHEAP).unwrap().write(&path).unwrap();
        let file = KeyFile::read(&path).unwrap();
        assert_eq!(file.unlock(b"correct horse").unwrap().0.as_ref(), key.0.as_ref());
        assert!(matches!(file.unlock(b"wrong"), Err(StoreError::WrongPassphrase)));
    }

    #[test]
    fn key_file_has_a_fixed_size_and_no_key_in_clear() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let key = DatabaseKey::random();
        KeyFile::new(b"pw", &key, CHEAP).unwrap().write(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), FILE_LEN);
        assert!(!bytes.windows(32).any(|w| w == key.0.as_ref()));
    }

    #[test]
    fn truncated_key_file_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, b"HUSHKEY1").unwrap();
        assert!(matches!(KeyFile::read(&path), Err(StoreError::CorruptKeyFile)));
    }
}

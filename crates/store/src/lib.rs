//! The client's local store: one SQLCipher database holding OpenMLS state
//! and Hush's own tables (profile, contacts, conversations, messages), with
//! a random database key wrapped by Argon2id(passphrase) in a key file.
//!
//! Key design decision: nothing is written unencrypted. The database, its
//! WAL and journal are SQLCipher pages; temporary tables stay in memory; the
//! only other file is the key file, which holds the database key encrypted
//! under the passphrase, is rewritten only in place, and looks like random
//! bytes. The database key is replaced on a schedule and after purges, so
//! pages written under an old key become noise once it is overwritten.

mod database;
mod device;
mod error;
mod keyfile;
mod provider;

pub use database::{
    rekey::Rekey, wipe, ConversationKind, ConversationRecord, MessageRecord, Store, REKEY_AFTER_PURGE_GAP_MS,
    REKEY_EVERY_MS,
};
pub use error::StoreError;
pub use keyfile::{KdfParams, KEY_FILE_LEN, MAX_ATTEMPTS_LIMIT};
pub use provider::HushProvider;

/// The key file's parsers, for the fuzzer (`crates/fuzz`): what a slot of
/// the key file holds once decrypted.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    /// Parses `payload` as each kind of key-file slot.
    pub fn key_file_slot(payload: &[u8]) {
        crate::keyfile::parse_slot(payload);
    }
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

//! Errors of the local store.

use thiserror::Error;

/// What can go wrong with the local store.
#[derive(Debug, Error)]
pub enum StoreError {
    /// No profile exists in the directory.
    #[error("no profile here (run `hush join INVITE` first)")]
    NoProfile,
    /// A profile exists already.
    #[error("a profile already exists here")]
    ProfileExists,
    /// The profile was wiped (panic passphrase, or too many wrong ones).
    /// Reads exactly like `NoProfile`; carries what to tell the relay.
    #[error("no profile here (run `hush join INVITE` first)")]
    Wiped(Option<Box<hush_proto::WipeCode>>),
    /// The panic passphrase may not equal the passphrase.
    #[error("the panic passphrase must differ from the passphrase")]
    PanicIsPassphrase,
    /// The passphrase does not unlock the profile.
    #[error("wrong passphrase")]
    WrongPassphrase,
    /// The key file is damaged.
    #[error("the profile's key file is damaged")]
    CorruptKeyFile,
    /// The key file was made by an older development version of Hush.
    #[error("this profile was made by an older version of Hush whose key file this one cannot read; make a new profile (hush join) and wipe this one")]
    OldKeyFile,
    /// Another process held the profile's key file too long.
    #[error("another hush process is using this profile; try again")]
    Busy,
    /// Another process changed the passphrase while this one had the
    /// profile open.
    #[error("the passphrase was changed by another process: unlock again")]
    ProfileChanged,
    /// Replacing the database key failed; the database is read-only until
    /// the profile is unlocked again (nothing is lost).
    #[error("replacing the database key failed ({0}); unlock the profile again")]
    RekeyFailed(String),
    /// A file could not be read or written.
    #[error("profile files: {0}")]
    Io(#[from] std::io::Error),
    /// The database failed.
    #[error("profile database: {0}")]
    Database(#[from] rusqlite::Error),
    /// The OpenMLS storage schema could not be set up.
    #[error("profile database migration: {0}")]
    Migration(String),
    /// The key derivation failed.
    #[error("key derivation: {0}")]
    Kdf(String),
}

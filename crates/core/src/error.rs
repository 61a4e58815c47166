//! Errors of the protocol engine.

use hush_proto::AccountId;
use thiserror::Error;

/// What can go wrong in the protocol engine.
#[derive(Debug, Error)]
pub enum CoreError {
    /// A key package or credential does not hash to the account id it was
    /// supposed to belong to: someone (the relay?) substituted a key.
    #[error("key substitution detected: the key offered for {expected} does not belong to that account")]
    KeySubstitution {
        /// The account the key was supposed to belong to.
        expected: AccountId,
    },
    /// A credential is not a self-certifying Hush identity.
    #[error("a group member's credential is not a valid Hush identity")]
    BadCredential,
    /// Bytes received could not be parsed as MLS.
    #[error("malformed MLS message")]
    Malformed,
    /// A message uses a ciphersuite other than Hush's.
    #[error("message uses a ciphersuite Hush does not accept")]
    WrongCiphersuite,
    /// Decrypted content could not be parsed.
    #[error("malformed content")]
    BadContent,
    /// A Welcome into a group this device is still a member of.
    #[error("a Welcome into a group this device is already in")]
    AlreadyMember,
    /// OpenMLS refused an operation.
    #[error("MLS: {0}")]
    Mls(String),
    /// The device's storage engine failed underneath OpenMLS (I/O error,
    /// full disk): nothing is wrong with what was being processed, which
    /// must be tried again.
    #[error("the device's storage failed: {0}")]
    Storage(String),
}

impl CoreError {
    /// An error OpenMLS returned, at any depth of OpenMLS's error enums.
    ///
    /// Only the SQLite engine failing (rusqlite's `SqliteFailure`: an I/O
    /// error, a full disk, a locked or damaged database file) is
    /// [`CoreError::Storage`], so a delivery that met it is delivered again
    /// rather than given up as unreadable. A stored value that does not
    /// decode (damage in one group, an OpenMLS format change) stays an MLS
    /// error local to its group: treating it as a storage failure would
    /// block every delivery behind it for good. Attacker-supplied bytes
    /// appear in OpenMLS's error texts only as hex, never as this name.
    pub(crate) fn mls(error: impl std::fmt::Debug) -> Self {
        let text = format!("{error:?}");
        if text.contains("SqliteFailure(") {
            Self::Storage(text)
        } else {
            Self::Mls(text)
        }
    }
}

#[cfg(test)]
mod tests {
    use openmls::prelude::{MergeCommitError, MergePendingCommitError, ProcessMessageError};

    use super::*;

    /// The errors the SQLCipher store's OpenMLS storage really returns.
    fn disk_full() -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            Some("database or disk is full".into()),
        )
    }

    fn undecodable() -> rusqlite::Error {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, "unknown field".into())
    }

    #[test]
    fn the_storage_engine_failing_is_told_apart_from_damage_and_refusals() {
        assert!(matches!(CoreError::mls(disk_full()), CoreError::Storage(_)));
        let direct = ProcessMessageError::StorageError(disk_full());
        assert!(matches!(CoreError::mls(direct), CoreError::Storage(_)));
        let nested = MergePendingCommitError::MergeCommitError(MergeCommitError::StorageError(disk_full()));
        assert!(matches!(CoreError::mls(nested), CoreError::Storage(_)));
        // One group's state that does not decode is that group's trouble.
        assert!(matches!(CoreError::mls(undecodable()), CoreError::Mls(_)));
        let damaged = ProcessMessageError::StorageError(undecodable());
        assert!(matches!(CoreError::mls(damaged), CoreError::Mls(_)));
        let refused: ProcessMessageError<rusqlite::Error> = ProcessMessageError::IncompatibleWireFormat;
        assert!(matches!(CoreError::mls(refused), CoreError::Mls(_)));
        let state: MergePendingCommitError<rusqlite::Error> = MergePendingCommitError::MlsGroupStateError(
            openmls::prelude::MlsGroupStateError::UseAfterEviction,
        );
        assert!(matches!(CoreError::mls(state), CoreError::Mls(_)));
    }
}

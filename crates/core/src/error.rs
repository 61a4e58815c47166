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
    /// The device's storage failed underneath OpenMLS: nothing is wrong
    /// with what was being processed, which must be tried again.
    #[error("the device's storage failed: {0}")]
    Storage(String),
}

impl CoreError {
    /// An error OpenMLS returned. Every OpenMLS error enum carries the
    /// storage provider's own error as a `StorageError` variant, at any
    /// depth, and its `Debug` output names it: such an error is the
    /// device's storage failing, not a bad message, and is kept apart so
    /// that a delivery it met is not given up as unreadable.
    pub(crate) fn mls(error: impl std::fmt::Debug) -> Self {
        let text = format!("{error:?}");
        if text.starts_with("StorageError(") || text.contains("(StorageError(") {
            Self::Storage(text)
        } else {
            Self::Mls(text)
        }
    }

    /// An error of the OpenMLS storage provider itself.
    pub(crate) fn storage(error: impl std::fmt::Debug) -> Self {
        Self::Storage(format!("{error:?}"))
    }
}

#[cfg(test)]
mod tests {
    use openmls::prelude::{MergeCommitError, MergePendingCommitError, ProcessMessageError};

    use super::*;

    #[test]
    fn storage_failures_under_openmls_are_told_apart_from_refusals() {
        let io = || std::io::Error::other("disk I/O error");
        let direct = ProcessMessageError::StorageError(io());
        assert!(matches!(CoreError::mls(direct), CoreError::Storage(_)));
        let nested: MergePendingCommitError<std::io::Error> = MergePendingCommitError::MlsGroupStateError(
            openmls::prelude::MlsGroupStateError::UseAfterEviction,
        );
        assert!(matches!(CoreError::mls(nested), CoreError::Mls(_)));
        let nested: MergePendingCommitError<std::io::Error> =
            MergePendingCommitError::MergeCommitError(MergeCommitError::StorageError(io()));
        assert!(matches!(CoreError::mls(nested), CoreError::Storage(_)));
        let refused: ProcessMessageError<std::io::Error> = ProcessMessageError::IncompatibleWireFormat;
        assert!(matches!(CoreError::mls(refused), CoreError::Mls(_)));
    }
}

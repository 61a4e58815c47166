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
}

impl CoreError {
    pub(crate) fn mls(error: impl std::fmt::Debug) -> Self {
        Self::Mls(format!("{error:?}"))
    }
}

//! Errors of the client driver.

use hush_proto::ErrorCode;
use thiserror::Error;

/// What can go wrong talking to the relay or running the protocol.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The relay could not be reached.
    #[error("cannot reach the relay at {0}")]
    Unreachable(String),
    /// The relay presented a certificate other than the pinned one.
    #[error("the relay's certificate does not match the pin in the invite: refusing to talk to it")]
    WrongCertificate,
    /// TLS or WebSocket failed.
    #[error("connection to the relay failed: {0}")]
    Transport(String),
    /// The relay closed the connection.
    #[error("the relay closed the connection")]
    Disconnected,
    /// The relay sent something outside the protocol.
    #[error("the relay broke the protocol: {0}")]
    Protocol(String),
    /// The relay refused a request.
    #[error("the relay refused: {}", .0.describe())]
    Relay(ErrorCode),
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] hush_store::StoreError),
    /// The protocol engine failed.
    #[error(transparent)]
    Core(#[from] hush_core::CoreError),
    /// A group's commits at the relay are ahead of anything delivered to
    /// this device: its commit cannot go through until that is resolved.
    #[error("the group is stuck: the relay holds commits this device never received")]
    GroupStuck,
    /// A genuine wipe order arrived: the caller must wipe the profile.
    #[error("this device was ordered to wipe itself")]
    WipeOrdered,
    /// A name given on the command line means nothing here.
    #[error("{0}")]
    Unknown(String),
    /// Something the user asked for cannot be done.
    #[error("{0}")]
    Invalid(String),
    /// A new passphrase is below the strength floor (the text says why).
    #[error("{0}")]
    WeakPassphrase(String),
}

impl From<hush_core::StorageError> for ClientError {
    fn from(error: hush_core::StorageError) -> Self {
        match error.into_inner().downcast::<hush_store::StoreError>() {
            Ok(error) => Self::Store(*error),
            Err(other) => Self::Store(hush_store::StoreError::Io(std::io::Error::other(other))),
        }
    }
}

impl From<hush_core::EngineError> for ClientError {
    fn from(error: hush_core::EngineError) -> Self {
        match error {
            hush_core::EngineError::Storage(error) => error.into(),
            hush_core::EngineError::Core(error) => Self::Core(error),
            hush_core::EngineError::Invalid(text) => Self::Invalid(text),
        }
    }
}

impl ClientError {
    /// True for a wrong passphrase (one attempt used up).
    pub fn is_wrong_passphrase(&self) -> bool {
        matches!(self, Self::Store(hush_store::StoreError::WrongPassphrase))
    }

    /// True if the profile is gone: wiped (a panic passphrase, too many
    /// wrong passphrases, a remote wipe) or never made. It reads the same.
    pub fn is_profile_gone(&self) -> bool {
        matches!(self, Self::Store(hush_store::StoreError::Wiped(_) | hush_store::StoreError::NoProfile))
    }

    /// True for a failure of one group's operation (stuck at the relay,
    /// refused by the relay or the engine): it is logged and retried later,
    /// while a lost connection, a failing store or a wipe order end the
    /// caller.
    pub fn is_local_to_group(&self) -> bool {
        matches!(self, Self::GroupStuck | Self::Core(_) | Self::Invalid(_) | Self::Relay(_))
    }
}

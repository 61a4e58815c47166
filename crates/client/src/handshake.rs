//! The one handshake every client speaks: the CLI's and the TUI's sessions,
//! the load generator and the tests. `Hello` with the protocol version, the
//! relay's fresh challenge, then `Register` or `Login` signed over the
//! challenge and the relay's certificate pin; the relay answers `Ready` (or,
//! for an account with a wipe order waiting, the order).

use hush_proto::{
    AccountId, AuthPurpose, CertificatePin, ClientFrame, IdentityKey, RelayFrame, PROTOCOL_VERSION,
};

use crate::error::ClientError;
use crate::transport::Connection;

/// Who logs in, and how. (Its `Debug` shows no invite code.)
#[derive(Clone)]
pub enum Credentials {
    /// An existing account.
    Login {
        /// The account.
        account: AccountId,
    },
    /// A new account, with an invite.
    Register {
        /// The invite's secret code.
        invite_code: String,
        /// The new account's identity key.
        identity_key: IdentityKey,
        /// SHA-256 of the account's remote-wipe secret.
        wipe_hash: [u8; 32],
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Login { account } => f.debug_struct("Login").field("account", account).finish(),
            Self::Register { identity_key, .. } => {
                f.debug_struct("Register").field("account", &identity_key.account()).finish_non_exhaustive()
            }
        }
    }
}

impl Credentials {
    fn account(&self) -> AccountId {
        match self {
            Self::Login { account } => *account,
            Self::Register { identity_key, .. } => identity_key.account(),
        }
    }
}

/// How the relay answered a handshake that got through. (Its `Debug`
/// shows no wipe secret.)
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Logged in.
    Ready {
        /// One-time key packages the relay still holds for the account.
        key_packages: u32,
    },
    /// The account was ordered to wipe; the caller checks the secret
    /// against its own before obeying (the relay cannot make a real one).
    WipeOrder([u8; 32]),
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ready { key_packages } => {
                f.debug_struct("Ready").field("key_packages", key_packages).finish()
            }
            Self::WipeOrder(_) => f.write_str("WipeOrder(..)"),
        }
    }
}

/// Says `Hello` and returns the relay's challenge. (A remote wipe order is
/// sent right after it, without logging in.)
pub async fn hello(connection: &mut Connection) -> Result<[u8; 32], ClientError> {
    connection.send(&ClientFrame::Hello { version: PROTOCOL_VERSION }).await?;
    match connection.recv().await? {
        RelayFrame::Challenge { nonce } => Ok(nonce),
        _ => Err(ClientError::Protocol("expected a challenge".into())),
    }
}

/// Runs the handshake on a fresh connection. `sign` signs the challenge
/// (with the purpose and nonce given) with the account's identity key.
pub async fn handshake(
    connection: &mut Connection,
    pin: &CertificatePin,
    credentials: Credentials,
    sign: impl FnOnce(AuthPurpose, &[u8; 32], &CertificatePin) -> Result<[u8; 64], ClientError>,
) -> Result<Admission, ClientError> {
    let nonce = hello(connection).await?;
    let account = credentials.account();
    let frame = match credentials {
        Credentials::Login { account } => {
            ClientFrame::Login { account, signature: sign(AuthPurpose::Login, &nonce, pin)? }
        }
        Credentials::Register { invite_code, identity_key, wipe_hash } => ClientFrame::Register {
            invite_code,
            identity_key,
            signature: sign(AuthPurpose::Register, &nonce, pin)?,
            wipe_hash,
        },
    };
    connection.send(&frame).await?;
    match connection.recv().await? {
        RelayFrame::Ready { account: ready, key_packages } if ready == account => {
            Ok(Admission::Ready { key_packages })
        }
        RelayFrame::WipeOrder { secret } => Ok(Admission::WipeOrder(secret)),
        _ => Err(ClientError::Protocol("expected the relay to confirm the login".into())),
    }
}

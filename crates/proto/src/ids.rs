//! Identifiers on the wire: self-certifying account ids, identity keys,
//! opaque group ids and the relay's certificate pin.

use std::fmt;
use std::str::FromStr;

use data_encoding::{BASE32_NOPAD, HEXLOWER};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// Why a textual id could not be parsed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum IdError {
    /// The text is not a 32-character base32 account id.
    #[error("not an account id (expected 32 base32 characters)")]
    Account,
    /// The text is not a 64-character hex certificate pin.
    #[error("not a certificate pin (expected 64 hex characters)")]
    Pin,
    /// The text is not a contact code.
    #[error("not a contact code (expected hush-contact: and 109 base32 characters)")]
    ContactCode,
}

/// An Ed25519 identity public key: the root of an account.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdentityKey(pub [u8; 32]);

impl IdentityKey {
    /// The account id this key certifies.
    pub fn account(&self) -> AccountId {
        AccountId::from_identity_key(self)
    }
}

impl fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdentityKey({})", HEXLOWER.encode(&self.0))
    }
}

/// A self-certifying account id: the first 160 bits of SHA-256 over the
/// identity public key. Whoever holds an id can check any key offered for it,
/// so no relay can substitute keys.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId(pub [u8; AccountId::LEN]);

impl AccountId {
    /// Bytes in an account id (160 bits).
    pub const LEN: usize = 20;

    /// Derives the id from an identity public key.
    pub fn from_identity_key(key: &IdentityKey) -> Self {
        let digest = Sha256::digest(key.0);
        let mut id = [0u8; Self::LEN];
        id.copy_from_slice(&digest[..Self::LEN]);
        Self(id)
    }

    /// True if `key` is the key this id was derived from.
    pub fn is_certified_by(&self, key: &IdentityKey) -> bool {
        Self::from_identity_key(key) == *self
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&BASE32_NOPAD.encode(&self.0).to_ascii_lowercase())
    }
}

impl fmt::Debug for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccountId({self})")
    }
}

impl FromStr for AccountId {
    type Err = IdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let upper = text.trim().to_ascii_uppercase();
        let bytes = BASE32_NOPAD.decode(upper.as_bytes()).map_err(|_| IdError::Account)?;
        let id = <[u8; Self::LEN]>::try_from(bytes.as_slice()).map_err(|_| IdError::Account)?;
        Ok(Self(id))
    }
}

/// One device of an account: the id of the key that signs the device's
/// MLS leaves, so each device is its own member of a group.
///
/// Key design decision: an account has one device today, whose leaf key is
/// the account's identity key. Multi-device adds devices with leaf keys of
/// their own, certified by the identity key in their credential: their ids
/// differ, their account (derived from the identity key) is the same, and
/// nothing keyed by device id now has to change.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(pub [u8; DeviceId::LEN]);

impl DeviceId {
    /// Bytes in a device id (128 bits).
    pub const LEN: usize = 16;

    /// The id of the device whose leaf signature key is `key`.
    pub fn of_leaf_key(key: &[u8]) -> Self {
        let digest = Sha256::new().chain_update(b"hush device id v1\0").chain_update(key).finalize();
        let mut id = [0u8; Self::LEN];
        id.copy_from_slice(&digest[..Self::LEN]);
        Self(id)
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&BASE32_NOPAD.encode(&self.0).to_ascii_lowercase())
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId({self})")
    }
}

/// An opaque group id: the relay orders commits per group and knows nothing
/// else about it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupId(pub Vec<u8>);

impl fmt::Debug for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GroupId({})", HEXLOWER.encode(&self.0))
    }
}

/// SHA-256 of the relay's TLS certificate (DER). Invites carry it; clients
/// refuse any certificate that does not match.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CertificatePin(pub [u8; 32]);

impl CertificatePin {
    /// The pin of a DER-encoded certificate.
    pub fn of_certificate(der: &[u8]) -> Self {
        Self(Sha256::digest(der).into())
    }
}

impl fmt::Display for CertificatePin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&HEXLOWER.encode(&self.0))
    }
}

impl fmt::Debug for CertificatePin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertificatePin({self})")
    }
}

impl FromStr for CertificatePin {
    type Err = IdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bytes = HEXLOWER.decode(text.trim().to_ascii_lowercase().as_bytes()).map_err(|_| IdError::Pin)?;
        let pin = <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| IdError::Pin)?;
        Ok(Self(pin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_id_is_not_its_account_id_and_differs_per_leaf_key() {
        let key = IdentityKey([7u8; 32]);
        let device = DeviceId::of_leaf_key(&key.0);
        assert_eq!(device, DeviceId::of_leaf_key(&key.0));
        assert_ne!(device, DeviceId::of_leaf_key(&[8u8; 32]));
        assert_ne!(&device.0[..], &key.account().0[..DeviceId::LEN]);
        assert_eq!(device.to_string().len(), 26);
    }

    #[test]
    fn account_id_round_trips_through_text() {
        let id = IdentityKey([7u8; 32]).account();
        let text = id.to_string();
        assert_eq!(text.len(), 32);
        assert_eq!(text.parse::<AccountId>(), Ok(id));
        assert_eq!(text.to_ascii_uppercase().parse::<AccountId>(), Ok(id));
    }

    #[test]
    fn account_id_is_certified_only_by_its_own_key() {
        let key = IdentityKey([1u8; 32]);
        let id = key.account();
        assert!(id.is_certified_by(&key));
        assert!(!id.is_certified_by(&IdentityKey([2u8; 32])));
    }

    #[test]
    fn malformed_ids_are_refused() {
        assert_eq!("hello".parse::<AccountId>(), Err(IdError::Account));
        assert_eq!("ab".parse::<CertificatePin>(), Err(IdError::Pin));
    }
}

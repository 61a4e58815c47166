//! Key packages: making our own, and checking one fetched from the relay
//! against the account id it is supposed to belong to.

use hush_proto::{AccountId, IdentityKey};
use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::{BasicCredential, Credential, KeyPackage, KeyPackageIn, OpenMlsProvider, ProtocolVersion};

use crate::error::CoreError;
use crate::identity::Identity;
use crate::CIPHERSUITE;

/// A key package whose credential was checked against the expected account.
#[derive(Debug, Clone)]
pub struct VerifiedKeyPackage {
    /// Whose it is.
    pub account: AccountId,
    /// The key package.
    pub key_package: KeyPackage,
}

/// Makes `count` one-time key packages and, if `last_resort`, one more that
/// may be used repeatedly. Returns them serialized for upload.
pub fn new_key_packages(
    provider: &impl OpenMlsProvider,
    identity: &Identity,
    count: usize,
    last_resort: bool,
) -> Result<(Vec<Vec<u8>>, Option<Vec<u8>>), CoreError> {
    let make = |last_resort: bool| -> Result<Vec<u8>, CoreError> {
        let mut builder = KeyPackage::builder();
        if last_resort {
            builder = builder.mark_as_last_resort();
        }
        let bundle = builder
            .build(CIPHERSUITE, provider, identity.signer(), identity.credential())
            .map_err(CoreError::mls)?;
        bundle.key_package().tls_serialize_detached().map_err(CoreError::mls)
    };
    let one_time = (0..count).map(|_| make(false)).collect::<Result<Vec<_>, _>>()?;
    let last = if last_resort { Some(make(true)?) } else { None };
    Ok((one_time, last))
}

/// The account a credential certifies: the credential's identity must be the
/// leaf's signature key, and the id is derived from it.
pub(crate) fn credential_account(credential: &Credential, signature_key: &[u8]) -> Result<AccountId, CoreError> {
    let basic = BasicCredential::try_from(credential.clone()).map_err(|_| CoreError::BadCredential)?;
    let identity = basic.identity();
    if identity != signature_key {
        return Err(CoreError::BadCredential);
    }
    let key = <[u8; 32]>::try_from(identity).map_err(|_| CoreError::BadCredential)?;
    Ok(IdentityKey(key).account())
}

/// Parses and verifies a key package fetched for `expected`. A package that
/// does not belong to `expected` is a key substitution.
pub fn verify_key_package(
    provider: &impl OpenMlsProvider,
    bytes: &[u8],
    expected: AccountId,
) -> Result<VerifiedKeyPackage, CoreError> {
    let key_package_in = KeyPackageIn::tls_deserialize_exact(bytes).map_err(|_| CoreError::Malformed)?;
    let key_package =
        key_package_in.validate(provider.crypto(), ProtocolVersion::Mls10).map_err(CoreError::mls)?;
    if key_package.ciphersuite() != CIPHERSUITE {
        return Err(CoreError::WrongCiphersuite);
    }
    let leaf = key_package.leaf_node();
    let account = credential_account(leaf.credential(), leaf.signature_key().as_slice())
        .map_err(|_| CoreError::KeySubstitution { expected })?;
    if account != expected {
        return Err(CoreError::KeySubstitution { expected });
    }
    Ok(VerifiedKeyPackage { account, key_package })
}

//! The account's identity: one Ed25519 key pair, used as the MLS signature
//! key and to answer the relay's login challenge. The account id is derived
//! from its public half.

use hush_proto::{auth_message, AccountId, AuthPurpose, CertificatePin, DeviceId, IdentityKey};
use openmls::prelude::{BasicCredential, CredentialWithKey, SignatureScheme};
use openmls_basic_credential::SignatureKeyPair;
use openmls_traits::signatures::Signer;
use openmls_traits::storage::{StorageProvider, CURRENT_VERSION};

use crate::error::CoreError;

/// The account's signing key. Not `Clone`; the private key lives in the
/// (encrypted) store and in this value only.
pub struct Identity {
    signer: SignatureKeyPair,
    key: IdentityKey,
}

impl Identity {
    /// Generates a new identity and stores its key pair.
    pub fn generate<S: StorageProvider<CURRENT_VERSION>>(storage: &S) -> Result<Self, CoreError> {
        let signer = SignatureKeyPair::new(SignatureScheme::ED25519).map_err(CoreError::mls)?;
        signer.store(storage).map_err(CoreError::mls)?;
        Self::from_signer(signer)
    }

    /// Loads the identity whose public key is `key`.
    pub fn load<S: StorageProvider<CURRENT_VERSION>>(
        storage: &S,
        key: &IdentityKey,
    ) -> Result<Self, CoreError> {
        let signer = SignatureKeyPair::read(storage, &key.0, SignatureScheme::ED25519)
            .ok_or_else(|| CoreError::Mls("identity key missing from the store".into()))?;
        Self::from_signer(signer)
    }

    fn from_signer(signer: SignatureKeyPair) -> Result<Self, CoreError> {
        let key = <[u8; 32]>::try_from(signer.public()).map_err(|_| CoreError::BadCredential)?;
        Ok(Self { signer, key: IdentityKey(key) })
    }

    /// The public identity key.
    pub fn key(&self) -> IdentityKey {
        self.key
    }

    /// The self-certifying account id.
    pub fn account(&self) -> AccountId {
        self.key.account()
    }

    /// This device: the id of the key that signs its MLS leaves (the
    /// identity key, while an account has one device).
    pub fn device(&self) -> DeviceId {
        DeviceId::of_leaf_key(&self.key.0)
    }

    /// The MLS credential: a basic credential whose identity is the public
    /// key itself, so it can be checked against the account id.
    pub fn credential(&self) -> CredentialWithKey {
        CredentialWithKey {
            credential: BasicCredential::new(self.key.0.to_vec()).into(),
            signature_key: self.key.0.to_vec().into(),
        }
    }

    /// The MLS signer.
    pub fn signer(&self) -> &SignatureKeyPair {
        &self.signer
    }

    /// Signs the relay's login or registration challenge.
    pub fn sign_challenge(
        &self,
        purpose: AuthPurpose,
        nonce: &[u8; 32],
        relay: &CertificatePin,
    ) -> Result<[u8; 64], CoreError> {
        let signature = self.signer.sign(&auth_message(purpose, nonce, relay)).map_err(CoreError::mls)?;
        <[u8; 64]>::try_from(signature.as_slice()).map_err(|_| CoreError::Mls("bad signature length".into()))
    }
}

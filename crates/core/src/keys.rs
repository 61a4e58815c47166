//! Key packages: making our own, and checking one fetched from the relay
//! against the account id it is supposed to belong to.

use hush_proto::{AccountId, IdentityKey};
use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::{
    BasicCredential, Credential, KeyPackage, KeyPackageIn, OpenMlsProvider, ProtocolVersion,
};

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

/// Serialized key packages for upload: one-time ones and a last-resort one.
pub type KeyPackageUpload = (Vec<Vec<u8>>, Option<Vec<u8>>);

/// Makes `count` one-time key packages and, if `last_resort`, one more that
/// may be used repeatedly. Returns them serialized for upload.
pub fn new_key_packages(
    provider: &impl OpenMlsProvider,
    identity: &Identity,
    count: usize,
    last_resort: bool,
) -> Result<KeyPackageUpload, CoreError> {
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
pub(crate) fn credential_account(
    credential: &Credential,
    signature_key: &[u8],
) -> Result<AccountId, CoreError> {
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

#[cfg(test)]
mod tests {
    use openmls_rust_crypto::OpenMlsRustCrypto;

    use super::*;
    use crate::content::{Body, Content};
    use crate::group::{process_incoming, Conversation, Incoming};

    fn person() -> (OpenMlsRustCrypto, Identity) {
        let provider = OpenMlsRustCrypto::default();
        let identity = Identity::generate(provider.storage()).unwrap();
        (provider, identity)
    }

    #[test]
    fn a_key_package_for_another_account_is_a_substitution() {
        let (provider, bob) = person();
        let (_, mallory) = person();
        let (packages, _) = new_key_packages(&provider, &bob, 1, false).unwrap();
        assert!(verify_key_package(&provider, &packages[0], bob.account()).is_ok());
        let lie = verify_key_package(&provider, &packages[0], mallory.account());
        assert!(matches!(lie, Err(CoreError::KeySubstitution { expected }) if expected == mallory.account()));
    }

    #[test]
    fn two_members_exchange_a_message_and_a_removed_member_reads_nothing() {
        let (alice_provider, alice) = person();
        let (bob_provider, bob) = person();
        let (carol_provider, carol) = person();
        let mut group = Conversation::create(&alice_provider, &alice).unwrap();
        let mut packages = Vec::new();
        for (provider, who) in [(&bob_provider, &bob), (&carol_provider, &carol)] {
            let (kp, _) = new_key_packages(provider, who, 1, false).unwrap();
            packages.push(verify_key_package(&alice_provider, &kp[0], who.account()).unwrap());
        }
        let commit = group.add(&alice_provider, &alice, &packages).unwrap();
        group.confirm_commit(&alice_provider).unwrap();
        let (_, welcome) = commit.welcome.unwrap();
        for provider in [&bob_provider, &carol_provider] {
            let Incoming::Joined { members, .. } = process_incoming(provider, &welcome).unwrap() else {
                panic!()
            };
            assert_eq!(members.len(), 3);
        }
        let content =
            Content { id: [1; 16], sent_at_ms: 5, body: Body::Text("hi".into()), expires_after_secs: None };
        let outgoing = group.encrypt(&alice_provider, &alice, &content).unwrap();
        assert_eq!(outgoing.recipients.len(), 2);
        let Incoming::Message { sender, content: got, .. } =
            process_incoming(&bob_provider, &outgoing.payload).unwrap()
        else {
            panic!()
        };
        assert_eq!((sender, got), (alice.account(), content));

        let removal = group.remove(&alice_provider, &alice, &[carol.account()]).unwrap();
        group.confirm_commit(&alice_provider).unwrap();
        for provider in [&bob_provider, &carol_provider] {
            assert!(matches!(process_incoming(provider, &removal.commit).unwrap(), Incoming::Changed { .. }));
        }
        let secret = Content {
            id: [2; 16],
            sent_at_ms: 6,
            body: Body::Text("secret".into()),
            expires_after_secs: None,
        };
        let outgoing = group.encrypt(&alice_provider, &alice, &secret).unwrap();
        assert!(matches!(
            process_incoming(&bob_provider, &outgoing.payload).unwrap(),
            Incoming::Message { .. }
        ));
        assert!(matches!(process_incoming(&carol_provider, &outgoing.payload).unwrap(), Incoming::Ignored));

        // The removed member's group state is gone, and adding her back works.
        let group_id = group.id();
        assert!(
            Conversation::load(&carol_provider, &group_id).unwrap().is_none(),
            "state kept after removal"
        );
        let (kp, _) = new_key_packages(&carol_provider, &carol, 1, false).unwrap();
        let package = verify_key_package(&alice_provider, &kp[0], carol.account()).unwrap();
        let again = group.add(&alice_provider, &alice, &[package]).unwrap();
        group.confirm_commit(&alice_provider).unwrap();
        let (_, welcome) = again.welcome.unwrap();
        assert!(matches!(process_incoming(&carol_provider, &welcome).unwrap(), Incoming::Joined { .. }));
        // A second Welcome into a group she is in is refused.
        assert!(process_incoming(&carol_provider, &welcome).is_err());
    }

    #[test]
    fn each_epochs_relay_key_is_known_to_its_members_and_announced_by_the_commit_before_it() {
        use ed25519_dalek::Verifier as _;
        let (alice_provider, alice) = person();
        let (bob_provider, bob) = person();
        let (carol_provider, carol) = person();
        let mut group = Conversation::create(&alice_provider, &alice).unwrap();
        let (kp, _) = new_key_packages(&bob_provider, &bob, 1, false).unwrap();
        let package = verify_key_package(&alice_provider, &kp[0], bob.account()).unwrap();
        let create = group.add(&alice_provider, &alice, &[package]).unwrap();
        group.confirm_commit(&alice_provider).unwrap();
        let (_, welcome) = create.welcome.clone().unwrap();
        let Incoming::Joined { conversation: bobs, .. } = process_incoming(&bob_provider, &welcome).unwrap()
        else {
            panic!()
        };
        // The committer and the new member derive the key the commit announced.
        assert_eq!(group.relay_public_key(&alice_provider).unwrap(), create.next_key);
        assert_eq!(bobs.relay_public_key(&bob_provider).unwrap(), create.next_key);

        // Bob's self-update is signed with that key and announces the next.
        let mut bobs = Conversation::load(&bob_provider, &group.id()).unwrap().unwrap();
        let update = bobs.self_update(&bob_provider, &bob).unwrap();
        let message = hush_proto::commit_auth_message(
            &hush_proto::GroupId(group.id()),
            update.epoch,
            &update.commit,
            None,
            &update.next_key,
        );
        let key = ed25519_dalek::VerifyingKey::from_bytes(&create.next_key).unwrap();
        assert!(key.verify(&message, &ed25519_dalek::Signature::from_bytes(&update.signature)).is_ok());
        bobs.confirm_commit(&bob_provider).unwrap();
        assert!(matches!(
            process_incoming(&alice_provider, &update.commit).unwrap(),
            Incoming::Changed { .. }
        ));
        let group = Conversation::load(&alice_provider, &group.id()).unwrap().unwrap();
        assert_eq!(group.relay_public_key(&alice_provider).unwrap(), update.next_key);
        assert_ne!(update.next_key, create.next_key, "each epoch has its own key");

        // An outsider's key for the same group is unrelated.
        let outsider = Conversation::create(&carol_provider, &carol).unwrap();
        assert_ne!(outsider.relay_public_key(&carol_provider).unwrap(), update.next_key);
    }
}

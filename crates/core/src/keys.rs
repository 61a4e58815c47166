//! Key packages: making our own, and checking one fetched from the relay
//! against the account id it is supposed to belong to.

use hush_proto::{AccountId, DeviceId, IdentityKey};
use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::{
    BasicCredential, Capabilities, Credential, ExtensionType, KeyPackage, KeyPackageIn, KeyPackageRef,
    Lifetime, OpenMlsProvider, ProtocolVersion,
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

impl VerifiedKeyPackage {
    /// The device whose key package it is.
    pub fn device(&self) -> DeviceId {
        DeviceId::of_leaf_key(self.key_package.leaf_node().signature_key().as_slice())
    }
}

/// How long a key package we make is valid (its MLS lifetime).
pub const KEY_PACKAGE_LIFETIME_SECS: u64 = 28 * 24 * 3600;

/// Key packages made in one go, serialized for upload, with what the
/// device must remember of each to delete its private keys later.
#[derive(Debug, Clone)]
pub struct KeyPackageBatch {
    /// Key packages each handed out once.
    pub one_time: Vec<Vec<u8>>,
    /// One that may be handed out repeatedly, if asked for.
    pub last_resort: Option<Vec<u8>>,
    /// Every package above, as the device keeps track of it.
    pub issued: Vec<IssuedKeyPackage>,
    /// When they all stop being valid (Unix seconds).
    pub not_after: u64,
}

/// A key package this device made, remembered until its private keys are
/// deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedKeyPackage {
    /// Its MLS hash reference, TLS-encoded (the key under which OpenMLS
    /// keeps its private keys).
    pub hash_ref: Vec<u8>,
    /// When it was made (Unix seconds).
    pub created_at: u64,
    /// When it stops being valid (Unix seconds).
    pub not_after: u64,
    /// True for a last-resort package.
    pub last_resort: bool,
    /// When a newer last-resort package replaced it at the relay.
    pub retired_at: Option<u64>,
}

impl IssuedKeyPackage {
    /// Encodes the record for the device's store.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(25 + self.hash_ref.len());
        bytes.extend_from_slice(&self.created_at.to_be_bytes());
        bytes.extend_from_slice(&self.not_after.to_be_bytes());
        bytes.extend_from_slice(&self.retired_at.unwrap_or(0).to_be_bytes());
        bytes.push(u8::from(self.last_resort));
        bytes.extend_from_slice(&self.hash_ref);
        bytes
    }

    /// Decodes a record written by [`Self::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let number = |at: usize| Some(u64::from_be_bytes(bytes.get(at..at + 8)?.try_into().ok()?));
        Some(Self {
            created_at: number(0)?,
            not_after: number(8)?,
            retired_at: Some(number(16)?).filter(|at| *at != 0),
            last_resort: *bytes.get(24)? == 1,
            hash_ref: bytes.get(25..).filter(|r| !r.is_empty())?.to_vec(),
        })
    }
}

/// When to make, replace and delete key packages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyPackagePolicy {
    /// Replace the last-resort package this often (seconds).
    pub rotate_last_resort_secs: u64,
    /// Keep private keys this long after a package expires or is replaced,
    /// for Welcomes still in flight (seconds; the relay's retention).
    pub grace_secs: u64,
    /// Upload more one-time packages when the relay holds fewer than this.
    pub low_water: u32,
    /// How many one-time packages to upload then.
    pub batch: usize,
}

impl Default for KeyPackagePolicy {
    fn default() -> Self {
        Self { rotate_last_resort_secs: 7 * 24 * 3600, grace_secs: 14 * 24 * 3600, low_water: 5, batch: 10 }
    }
}

/// What [`KeyPackagePolicy::plan`] decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPackagePlan {
    /// One-time packages to make and upload.
    pub one_time: usize,
    /// Make and upload a new last-resort package; once the relay has it,
    /// mark the packages in `retire` as replaced.
    pub last_resort: bool,
    /// Last-resort packages the new one replaces.
    pub retire: Vec<Vec<u8>>,
    /// Packages whose private keys to delete now.
    pub delete: Vec<Vec<u8>>,
}

impl KeyPackagePlan {
    /// True if something must be uploaded.
    pub fn uploads(&self) -> bool {
        self.one_time > 0 || self.last_resort
    }
}

impl KeyPackagePolicy {
    /// Decides, at `now`, given the packages the device made and the
    /// number of one-time packages the relay still holds.
    pub fn plan(&self, now: u64, issued: &[IssuedKeyPackage], held_by_relay: u32) -> KeyPackagePlan {
        let current: Vec<&IssuedKeyPackage> =
            issued.iter().filter(|p| p.last_resort && p.retired_at.is_none()).collect();
        let newest = current.iter().map(|p| p.created_at).max();
        let last_resort =
            newest.is_none_or(|created| now >= created.saturating_add(self.rotate_last_resort_secs));
        let retire =
            if last_resort { current.iter().map(|p| p.hash_ref.clone()).collect() } else { Vec::new() };
        let delete = issued
            .iter()
            .filter(|p| {
                let expired = now >= p.not_after.saturating_add(self.grace_secs);
                let replaced = p.retired_at.is_some_and(|at| now >= at.saturating_add(self.grace_secs));
                expired || replaced
            })
            .map(|p| p.hash_ref.clone())
            .collect();
        let one_time = if held_by_relay < self.low_water { self.batch } else { 0 };
        KeyPackagePlan { one_time, last_resort, retire, delete }
    }
}

/// Makes `count` one-time key packages and, if `last_resort`, one more that
/// may be used repeatedly, valid for [`KEY_PACKAGE_LIFETIME_SECS`] from
/// `now`. Their private keys go to the provider's storage.
pub fn new_key_packages(
    provider: &impl OpenMlsProvider,
    identity: &Identity,
    count: usize,
    last_resort: bool,
    now: u64,
) -> Result<KeyPackageBatch, CoreError> {
    let mut issued = Vec::with_capacity(count + 1);
    let mut not_after = u64::MAX;
    let mut make = |last_resort: bool| -> Result<Vec<u8>, CoreError> {
        let mut builder =
            KeyPackage::builder().key_package_lifetime(Lifetime::new(KEY_PACKAGE_LIFETIME_SECS));
        if last_resort {
            // The leaf must list the extension it carries, or every
            // member who fetches the package refuses it.
            let capabilities = Capabilities::builder().extensions(vec![ExtensionType::LastResort]).build();
            builder = builder.mark_as_last_resort().leaf_node_capabilities(capabilities);
        }
        let bundle = builder
            .build(CIPHERSUITE, provider, identity.signer(), identity.credential())
            .map_err(CoreError::mls)?;
        let key_package = bundle.key_package();
        let hash_ref = key_package.hash_ref(provider.crypto()).map_err(CoreError::mls)?;
        let package_not_after = key_package.life_time().not_after();
        not_after = not_after.min(package_not_after);
        issued.push(IssuedKeyPackage {
            hash_ref: hash_ref.tls_serialize_detached().map_err(CoreError::mls)?,
            created_at: now,
            not_after: package_not_after,
            last_resort,
            retired_at: None,
        });
        key_package.tls_serialize_detached().map_err(CoreError::mls)
    };
    let one_time = (0..count).map(|_| make(false)).collect::<Result<Vec<_>, _>>()?;
    let last = if last_resort { Some(make(true)?) } else { None };
    Ok(KeyPackageBatch { one_time, last_resort: last, issued, not_after })
}

/// Deletes the private keys of one of our key packages (nothing happens if
/// they are gone already, e.g. because a Welcome used it).
pub fn delete_key_package(provider: &impl OpenMlsProvider, hash_ref: &[u8]) -> Result<(), CoreError> {
    use openmls_traits::storage::StorageProvider as _;
    let hash_ref = KeyPackageRef::tls_deserialize_exact(hash_ref).map_err(|_| CoreError::Malformed)?;
    provider.storage().delete_key_package(&hash_ref).map_err(CoreError::mls)
}

/// The account a credential certifies: the credential's identity must be the
/// leaf's signature key, and the id is derived from it.
pub(crate) fn credential_account(
    credential: &Credential,
    signature_key: &[u8],
) -> Result<AccountId, CoreError> {
    credential_member(credential, signature_key).map(|member| member.account)
}

/// The account and device of a leaf. Today a device's leaf key is its
/// account's identity key (one device per account); the device id is of the
/// leaf key, so devices with leaf keys of their own fit in later.
pub(crate) fn credential_member(
    credential: &Credential,
    signature_key: &[u8],
) -> Result<MemberId, CoreError> {
    let basic = BasicCredential::try_from(credential.clone()).map_err(|_| CoreError::BadCredential)?;
    let identity = basic.identity();
    if identity != signature_key {
        return Err(CoreError::BadCredential);
    }
    let key = <[u8; 32]>::try_from(identity).map_err(|_| CoreError::BadCredential)?;
    Ok(MemberId { account: IdentityKey(key).account(), device: DeviceId::of_leaf_key(signature_key) })
}

/// One member of a group: a device of an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MemberId {
    /// The account.
    pub account: AccountId,
    /// Its device in the group.
    pub device: DeviceId,
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
        let packages = new_key_packages(&provider, &bob, 1, false, 0).unwrap().one_time;
        assert!(verify_key_package(&provider, &packages[0], bob.account()).is_ok());
        let lie = verify_key_package(&provider, &packages[0], mallory.account());
        assert!(matches!(lie, Err(CoreError::KeySubstitution { expected }) if expected == mallory.account()));
    }

    #[test]
    fn the_last_resort_package_is_accepted_and_joins_several_groups() {
        // Handed out once the one-time packages run out, to everyone who
        // adds this account from then on.
        let (alice_provider, alice) = person();
        let (bob_provider, bob) = person();
        let package = new_key_packages(&bob_provider, &bob, 0, true, 0).unwrap().last_resort.unwrap();
        for _ in 0..2 {
            let verified = verify_key_package(&alice_provider, &package, bob.account()).unwrap();
            let mut group = Conversation::create(&alice_provider, &alice).unwrap();
            let commit = group.add(&alice_provider, &alice, &[verified]).unwrap();
            group.confirm_commit(&alice_provider).unwrap();
            let welcome = commit.welcome.unwrap().1;
            assert!(matches!(process_incoming(&bob_provider, &welcome).unwrap(), Incoming::Joined { .. }));
        }
    }

    #[test]
    fn a_message_whose_content_another_key_signed_is_refused() {
        let (alice_provider, alice) = person();
        let (bob_provider, bob) = person();
        let (_, mallory) = person();
        let mut group = Conversation::create(&alice_provider, &alice).unwrap();
        let kp = new_key_packages(&bob_provider, &bob, 1, false, 0).unwrap().one_time;
        let package = verify_key_package(&alice_provider, &kp[0], bob.account()).unwrap();
        let commit = group.add(&alice_provider, &alice, &[package]).unwrap();
        group.confirm_commit(&alice_provider).unwrap();
        let (_, welcome) = commit.welcome.unwrap();
        assert!(matches!(process_incoming(&bob_provider, &welcome).unwrap(), Incoming::Joined { .. }));
        let content =
            Content { id: [1; 16], sent_at_ms: 5, body: Body::Text("hi".into()), expires_after_secs: None };
        // Alice sends, in MLS, words that carry Mallory's signature: a
        // report of them would pin them on Mallory.
        let framed = crate::SignedContent::sign(&mallory, &content).unwrap().to_bytes();
        let payload = group.encrypt_raw(&alice_provider, &alice, &framed).unwrap();
        assert!(process_incoming(&bob_provider, &payload).is_err());
        // Unsigned content is refused too: nothing unreportable is shown.
        let payload = group.encrypt_raw(&alice_provider, &alice, &content.to_bytes()).unwrap();
        assert!(process_incoming(&bob_provider, &payload).is_err());
        // Her own signature passes.
        let framed = crate::SignedContent::sign(&alice, &content).unwrap().to_bytes();
        let payload = group.encrypt_raw(&alice_provider, &alice, &framed).unwrap();
        assert!(matches!(process_incoming(&bob_provider, &payload).unwrap(), Incoming::Message { .. }));
    }

    #[test]
    fn two_members_exchange_a_message_and_a_removed_member_reads_nothing() {
        let (alice_provider, alice) = person();
        let (bob_provider, bob) = person();
        let (carol_provider, carol) = person();
        let mut group = Conversation::create(&alice_provider, &alice).unwrap();
        let mut packages = Vec::new();
        for (provider, who) in [(&bob_provider, &bob), (&carol_provider, &carol)] {
            let kp = new_key_packages(provider, who, 1, false, 0).unwrap().one_time;
            packages.push(verify_key_package(&alice_provider, &kp[0], who.account()).unwrap());
        }
        let commit = group.add(&alice_provider, &alice, &packages).unwrap();
        group.confirm_commit(&alice_provider).unwrap();
        let (_, welcome) = commit.welcome.unwrap();
        for provider in [&bob_provider, &carol_provider] {
            let Incoming::Joined { members, by, .. } = process_incoming(provider, &welcome).unwrap() else {
                panic!()
            };
            assert_eq!(members.len(), 3);
            assert_eq!(by, alice.account(), "the Welcome names who added us");
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
        let kp = new_key_packages(&carol_provider, &carol, 1, false, 0).unwrap().one_time;
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
        let kp = new_key_packages(&bob_provider, &bob, 1, false, 0).unwrap().one_time;
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

    fn issued(created_at: u64, last_resort: bool, retired_at: Option<u64>) -> IssuedKeyPackage {
        IssuedKeyPackage {
            hash_ref: created_at.to_be_bytes().to_vec(),
            created_at,
            not_after: created_at + KEY_PACKAGE_LIFETIME_SECS,
            last_resort,
            retired_at,
        }
    }

    #[test]
    fn the_last_resort_package_rotates_and_old_private_keys_are_deleted_after_the_grace() {
        let policy = KeyPackagePolicy::default();
        let day = 24 * 3600;
        // A new device: a full batch and a last-resort package.
        let plan = policy.plan(100 * day, &[], 0);
        assert_eq!((plan.one_time, plan.last_resort), (policy.batch, true));
        assert!(plan.retire.is_empty() && plan.delete.is_empty());

        // A last-resort package made 6 days ago, the relay well stocked: nothing to do.
        let current = issued(94 * day, true, None);
        assert!(!policy.plan(100 * day, std::slice::from_ref(&current), 10).uploads());
        // A week after it was made, it is replaced; the relay running low
        // adds one-time packages.
        let plan = policy.plan(101 * day, std::slice::from_ref(&current), 2);
        assert_eq!((plan.one_time, plan.last_resort), (policy.batch, true));
        assert_eq!(plan.retire, vec![current.hash_ref.clone()]);
        assert!(plan.delete.is_empty(), "a package is not deleted the moment it is replaced");

        // Replaced at day 101: its private keys go once the grace is over.
        let replaced = issued(94 * day, true, Some(101 * day));
        let newer = issued(101 * day, true, None);
        let both = [replaced.clone(), newer];
        assert!(policy.plan(101 * day + policy.grace_secs - 1, &both, 10).delete.is_empty());
        assert_eq!(policy.plan(101 * day + policy.grace_secs, &both, 10).delete, vec![replaced.hash_ref]);

        // A one-time package nobody used goes once it has expired and the
        // grace is over.
        let unused = issued(50 * day, false, None);
        let expiry = unused.not_after + policy.grace_secs;
        assert!(!policy
            .plan(expiry - 1, std::slice::from_ref(&unused), 10)
            .delete
            .contains(&unused.hash_ref));
        assert!(policy.plan(expiry, std::slice::from_ref(&unused), 10).delete.contains(&unused.hash_ref));

        // Records survive the store.
        for record in [replaced_record(), issued(7, false, None)] {
            assert_eq!(IssuedKeyPackage::from_bytes(&record.to_bytes()), Some(record));
        }
        assert_eq!(IssuedKeyPackage::from_bytes(&[1, 2, 3]), None);
    }

    fn replaced_record() -> IssuedKeyPackage {
        issued(3, true, Some(9))
    }

    #[test]
    fn a_deleted_key_package_can_no_longer_be_joined_with() {
        let (alice_provider, alice) = person();
        let (bob_provider, bob) = person();
        let batch = new_key_packages(&bob_provider, &bob, 2, true, 0).unwrap();
        assert_eq!((batch.one_time.len(), batch.issued.len()), (2, 3));
        assert!(batch.issued[2].last_resort && !batch.issued[0].last_resort);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        assert!(batch.not_after > now + KEY_PACKAGE_LIFETIME_SECS - 60);
        delete_key_package(&bob_provider, &batch.issued[0].hash_ref).unwrap();
        // Deleting again (as after a Welcome used it) is fine.
        delete_key_package(&bob_provider, &batch.issued[0].hash_ref).unwrap();
        for (bytes, joins) in [(&batch.one_time[0], false), (&batch.one_time[1], true)] {
            let package = verify_key_package(&alice_provider, bytes, bob.account()).unwrap();
            let mut group = Conversation::create(&alice_provider, &alice).unwrap();
            let commit = group.add(&alice_provider, &alice, &[package]).unwrap();
            group.confirm_commit(&alice_provider).unwrap();
            let (_, welcome) = commit.welcome.unwrap();
            assert_eq!(process_incoming(&bob_provider, &welcome).is_ok(), joins);
        }
    }

    #[test]
    fn a_false_relay_key_is_proven_against_its_committer_and_a_relay_edit_is_not() {
        use crate::group::RelayKeyCheck;
        use openmls_traits::signatures::Signer as _;
        let (alice_provider, alice) = person();
        let (bob_provider, bob) = person();
        let (carol_provider, carol) = person();
        let (dave_provider, dave) = person();
        let mut group = Conversation::create(&alice_provider, &alice).unwrap();
        let mut packages = Vec::new();
        for (provider, who) in [(&bob_provider, &bob), (&carol_provider, &carol), (&dave_provider, &dave)] {
            let kp = new_key_packages(provider, who, 1, false, 0).unwrap().one_time;
            packages.push(verify_key_package(&alice_provider, &kp[0], who.account()).unwrap());
        }
        let create = group.add(&alice_provider, &alice, &packages).unwrap();
        group.confirm_commit(&alice_provider).unwrap();
        let (_, welcome) = create.welcome.unwrap();
        for provider in [&bob_provider, &carol_provider, &dave_provider] {
            // Those the commit adds check the key with its Welcome.
            assert!(matches!(
                process_incoming(provider, &welcome).unwrap(),
                Incoming::Joined { relay_key: RelayKeyCheck::Confirmed, .. }
            ));
        }
        let mut bobs = Conversation::load(&bob_provider, &group.id()).unwrap().unwrap();
        let update = bobs.self_update(&bob_provider, &bob).unwrap();
        let (announced, mls) =
            hush_proto::split_announced_payload(hush_proto::COMMIT_PAYLOAD_TAG, &update.commit).unwrap();
        assert_eq!(
            announced.next_key, update.next_key,
            "the payload carries the key the frame gives the relay"
        );
        // Alice gets the commit as made.
        assert!(matches!(
            process_incoming(&alice_provider, &update.commit).unwrap(),
            Incoming::Changed { relay_key: RelayKeyCheck::Confirmed, .. }
        ));
        // Carol gets one where bob signed a key of his own choosing.
        let false_key = [7; 32];
        let context = bobs.announcement_context(&bob_provider, true).unwrap();
        let statement = hush_proto::key_announcement(&group.id(), update.epoch + 1, &false_key, &context);
        let signature: [u8; 64] = bob.signer().sign(&statement).unwrap().try_into().unwrap();
        let lie = hush_proto::KeyAnnouncement { next_key: false_key, signature };
        let lie = hush_proto::announced_payload(hush_proto::COMMIT_PAYLOAD_TAG, &lie, mls);
        assert!(matches!(
            process_incoming(&carol_provider, &lie).unwrap(),
            Incoming::Changed { relay_key: RelayKeyCheck::Wrong, sender, .. } if sender == bob.account()
        ));
        // Dave gets one the relay edited: nothing is proven against bob.
        let edited = hush_proto::KeyAnnouncement { next_key: false_key, signature: announced.signature };
        let edited = hush_proto::announced_payload(hush_proto::COMMIT_PAYLOAD_TAG, &edited, mls);
        assert!(matches!(
            process_incoming(&dave_provider, &edited).unwrap(),
            Incoming::Changed { relay_key: RelayKeyCheck::Unverified, .. }
        ));
    }
}

//! Conversations as MLS groups. A one-to-one chat is a two-member group.
//! Commits are returned as [`SentCommit`]s and merged only once the relay
//! has ordered them; a commit that lost its epoch is abandoned and retried.

use hush_proto::{AccountId, DeviceId};
use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::{
    GroupId, LeafNodeIndex, LeafNodeParameters, Member, MlsGroup, MlsGroupCreateConfig, MlsGroupJoinConfig,
    MlsMessageBodyIn, MlsMessageIn, MlsMessageOut, OpenMlsProvider, ProcessedMessageContent, ProtocolMessage,
    Sender, StagedWelcome,
};
use openmls_traits::random::OpenMlsRand;

use crate::content::{Content, SignedContent};
use crate::error::CoreError;
use crate::identity::Identity;
use crate::keys::{credential_account, credential_member, MemberId, VerifiedKeyPackage};
use crate::{CIPHERSUITE, MAX_PAST_EPOCHS};

/// An application message ready for the relay.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The other members.
    pub recipients: Vec<AccountId>,
    /// The MLS ciphertext.
    pub payload: Vec<u8>,
}

/// A commit ready for the relay, pending until the relay accepts it.
#[derive(Debug, Clone)]
pub struct SentCommit {
    /// The group.
    pub group_id: Vec<u8>,
    /// The epoch the commit was made in.
    pub epoch: u64,
    /// Existing members (other than us) who must process it.
    pub recipients: Vec<AccountId>,
    /// The MLS commit.
    pub commit: Vec<u8>,
    /// New members and their Welcome.
    pub welcome: Option<(Vec<AccountId>, Vec<u8>)>,
    /// The next epoch's public relay key.
    pub next_key: [u8; 32],
    /// Signature with this epoch's relay key, which proves to the relay
    /// that the commit comes from a current member.
    pub signature: [u8; 64],
}

/// What a received payload turned out to be.
pub enum Incoming {
    /// We were added to a group.
    Joined {
        /// The new conversation.
        conversation: Box<Conversation>,
        /// Every member, us included.
        members: Vec<AccountId>,
        /// Who added us (the member who signed the Welcome's group info).
        by: AccountId,
        /// Whether `by` gave the relay the key the members derive.
        relay_key: RelayKeyCheck,
    },
    /// An application message.
    Message {
        /// The group.
        group_id: Vec<u8>,
        /// Who sent it (checked against the credential).
        sender: AccountId,
        /// What it says.
        content: Content,
        /// What it says, as the sender signed it.
        signed: SignedContent,
    },
    /// A commit changed the group.
    Changed {
        /// The group.
        group_id: Vec<u8>,
        /// Who committed.
        sender: AccountId,
        /// Members added.
        added: Vec<AccountId>,
        /// Members removed.
        removed: Vec<AccountId>,
        /// True if we were removed.
        self_removed: bool,
        /// The group's epoch after the commit.
        epoch: u64,
        /// Whether the committer gave the relay the key the members derive
        /// for the new epoch (see [`hush_proto::key_announcement`]).
        relay_key: RelayKeyCheck,
    },
    /// Nothing to show: a message for a group we are not (or no longer) in,
    /// or one we processed already.
    Ignored,
}

/// What a commit or Welcome said about the relay key of the epoch it leads
/// to, checked against the key this device derives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayKeyCheck {
    /// Announced and signed by the committer, and the key every member
    /// derives: the relay will accept the members' next commit.
    Confirmed,
    /// The committer signed an announcement of another key: it gave the
    /// relay a key only it holds, so from now on only it can change the
    /// group at the relay. Proven against the committer.
    Wrong,
    /// No announcement, or one whose signature does not verify: the relay
    /// altered the payload, or the committer sent the commit around the
    /// relay's ordering. Nothing is proven against the committer.
    Unverified,
    /// Nothing to check (we were removed by this commit).
    NotApplicable,
}

fn check_announcement(
    announcement: Option<hush_proto::KeyAnnouncement>,
    group_id: &[u8],
    epoch: u64,
    derived: &[u8; 32],
    signer: &[u8],
    context: &[u8; 32],
) -> RelayKeyCheck {
    let Some(announcement) = announcement else { return RelayKeyCheck::Unverified };
    let Ok(signer) = <[u8; 32]>::try_from(signer) else { return RelayKeyCheck::Unverified };
    let Ok(signer) = ed25519_dalek::VerifyingKey::from_bytes(&signer) else {
        return RelayKeyCheck::Unverified;
    };
    let statement = hush_proto::key_announcement(group_id, epoch, &announcement.next_key, context);
    let signature = ed25519_dalek::Signature::from_bytes(&announcement.signature);
    if signer.verify_strict(&statement, &signature).is_err() {
        return RelayKeyCheck::Unverified;
    }
    if &announcement.next_key == derived {
        RelayKeyCheck::Confirmed
    } else {
        RelayKeyCheck::Wrong
    }
}

/// MLS exporter label of the secret key announcements are signed with.
pub const ANNOUNCEMENT_LABEL: &str = "hush announcement v1";

/// One MLS group.
pub struct Conversation {
    group: MlsGroup,
}

fn create_config() -> MlsGroupCreateConfig {
    MlsGroupCreateConfig::builder()
        .ciphersuite(CIPHERSUITE)
        .use_ratchet_tree_extension(true)
        .max_past_epochs(MAX_PAST_EPOCHS)
        .build()
}

fn join_config() -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder().use_ratchet_tree_extension(true).max_past_epochs(MAX_PAST_EPOCHS).build()
}

fn relay_key_from(seed: Vec<u8>) -> Result<ed25519_dalek::SigningKey, CoreError> {
    let seed = zeroize::Zeroizing::new(seed);
    let seed: &[u8; 32] = seed
        .as_slice()
        .try_into()
        .map_err(|_| CoreError::Mls("exported relay key seed has the wrong length".into()))?;
    Ok(ed25519_dalek::SigningKey::from_bytes(seed))
}

fn serialize(message: &MlsMessageOut) -> Result<Vec<u8>, CoreError> {
    message.tls_serialize_detached().map_err(CoreError::mls)
}

fn member_of(member: &Member) -> Result<MemberId, CoreError> {
    credential_member(&member.credential, &member.signature_key)
}

fn account_of(member: &Member) -> Result<AccountId, CoreError> {
    member_of(member).map(|member| member.account)
}

/// The accounts of a list of members, each once however many of its
/// devices are in; fails if any credential is not a self-certifying Hush
/// identity.
pub fn member_accounts(members: impl Iterator<Item = Member>) -> Result<Vec<AccountId>, CoreError> {
    let mut accounts = Vec::new();
    for member in members {
        let account = account_of(&member)?;
        if !accounts.contains(&account) {
            accounts.push(account);
        }
    }
    Ok(accounts)
}

impl Conversation {
    /// Creates a new group with only us in it.
    pub fn create(provider: &impl OpenMlsProvider, identity: &Identity) -> Result<Self, CoreError> {
        let id = provider.rand().random_vec(16).map_err(CoreError::mls)?;
        let group = MlsGroup::new_with_group_id(
            provider,
            identity.signer(),
            &create_config(),
            GroupId::from_slice(&id),
            identity.credential(),
        )
        .map_err(CoreError::mls)?;
        Ok(Self { group })
    }

    /// Loads a group from storage.
    pub fn load(provider: &impl OpenMlsProvider, group_id: &[u8]) -> Result<Option<Self>, CoreError> {
        let group =
            MlsGroup::load(provider.storage(), &GroupId::from_slice(group_id)).map_err(CoreError::mls)?;
        Ok(group.map(|group| Self { group }))
    }

    /// The group id.
    pub fn id(&self) -> Vec<u8> {
        self.group.group_id().as_slice().to_vec()
    }

    /// The current epoch.
    pub fn epoch(&self) -> u64 {
        self.group.epoch().as_u64()
    }

    /// True while we are a member.
    pub fn is_active(&self) -> bool {
        self.group.is_active()
    }

    /// Every member's account, us included.
    pub fn members(&self) -> Result<Vec<AccountId>, CoreError> {
        member_accounts(self.group.members())
    }

    /// Every member device (one per account today).
    pub fn devices(&self) -> Result<Vec<MemberId>, CoreError> {
        self.group.members().map(|member| member_of(&member)).collect()
    }

    /// Every member but `me`.
    pub fn others(&self, me: AccountId) -> Result<Vec<AccountId>, CoreError> {
        Ok(self.members()?.into_iter().filter(|account| *account != me).collect())
    }

    /// Encrypts content for the group.
    pub fn encrypt(
        &mut self,
        provider: &impl OpenMlsProvider,
        identity: &Identity,
        content: &Content,
    ) -> Result<Outgoing, CoreError> {
        let recipients = self.others(identity.account())?;
        let message = self
            .group
            .create_message(provider, identity.signer(), &SignedContent::sign(identity, content)?.to_bytes())
            .map_err(CoreError::mls)?;
        Ok(Outgoing { recipients, payload: serialize(&message)? })
    }

    /// Encrypts application bytes as they are, whatever they hold: for
    /// tests that play a member who signs with someone else's key.
    #[cfg(test)]
    pub(crate) fn encrypt_raw(
        &mut self,
        provider: &impl OpenMlsProvider,
        identity: &Identity,
        bytes: &[u8],
    ) -> Result<Vec<u8>, CoreError> {
        let message =
            self.group.create_message(provider, identity.signer(), bytes).map_err(CoreError::mls)?;
        serialize(&message)
    }

    /// Adds members; the commit stays pending until [`Self::confirm_commit`].
    pub fn add(
        &mut self,
        provider: &impl OpenMlsProvider,
        identity: &Identity,
        new_members: &[VerifiedKeyPackage],
    ) -> Result<SentCommit, CoreError> {
        let recipients = self.others(identity.account())?;
        let epoch = self.epoch();
        let key_packages: Vec<_> = new_members.iter().map(|m| m.key_package.clone()).collect();
        let (commit, welcome, _) =
            self.group.add_members(provider, identity.signer(), &key_packages).map_err(CoreError::mls)?;
        let added = new_members.iter().map(|m| m.account).collect();
        self.seal(
            provider,
            identity,
            epoch,
            recipients,
            serialize(&commit)?,
            Some((added, serialize(&welcome)?)),
        )
    }

    /// Removes members; the commit goes to them too, so they learn of it.
    pub fn remove(
        &mut self,
        provider: &impl OpenMlsProvider,
        identity: &Identity,
        accounts: &[AccountId],
    ) -> Result<SentCommit, CoreError> {
        let recipients = self.others(identity.account())?;
        let epoch = self.epoch();
        let mut leaves: Vec<LeafNodeIndex> = Vec::new();
        for member in self.group.members() {
            if accounts.contains(&account_of(&member)?) {
                leaves.push(member.index);
            }
        }
        if leaves.is_empty() {
            return Err(CoreError::Mls("none of those accounts is a member".into()));
        }
        let (commit, _, _) =
            self.group.remove_members(provider, identity.signer(), &leaves).map_err(CoreError::mls)?;
        self.seal(provider, identity, epoch, recipients, serialize(&commit)?, None)
    }

    /// A self-update commit: fresh leaf keys (post-compromise security).
    pub fn self_update(
        &mut self,
        provider: &impl OpenMlsProvider,
        identity: &Identity,
    ) -> Result<SentCommit, CoreError> {
        let recipients = self.others(identity.account())?;
        let epoch = self.epoch();
        let bundle = self
            .group
            .self_update(provider, identity.signer(), LeafNodeParameters::default())
            .map_err(CoreError::mls)?;
        self.seal(provider, identity, epoch, recipients, serialize(bundle.commit())?, None)
    }

    /// A 32-byte secret exported from this epoch (`next`: from the epoch
    /// our pending commit leads to).
    fn exported(
        &self,
        provider: &impl OpenMlsProvider,
        label: &str,
        context: &[u8],
        next: bool,
    ) -> Result<zeroize::Zeroizing<[u8; 32]>, CoreError> {
        let bytes = if next {
            let staged =
                self.group.pending_commit().ok_or_else(|| CoreError::Mls("no pending commit".into()))?;
            staged.export_secret(provider.crypto(), label, context, 32).map_err(CoreError::mls)?
        } else {
            self.group.export_secret(provider.crypto(), label, context, 32).map_err(CoreError::mls)?
        };
        let bytes = zeroize::Zeroizing::new(bytes);
        let mut secret = zeroize::Zeroizing::new([0u8; 32]);
        if bytes.len() != 32 {
            return Err(CoreError::Mls("exported secret has the wrong length".into()));
        }
        secret.copy_from_slice(&bytes);
        Ok(secret)
    }

    /// The write secret of `device`'s queue for this group in this epoch
    /// (`next`: in the epoch our pending commit leads to); see
    /// [`crate::route`].
    pub fn write_secret(
        &self,
        provider: &impl OpenMlsProvider,
        device: &DeviceId,
        next: bool,
    ) -> Result<zeroize::Zeroizing<[u8; 32]>, CoreError> {
        self.exported(provider, crate::route::WRITE_LABEL, &device.0, next)
    }

    /// The owner key of a queue made for new member `device` by the commit
    /// pending now (it replaces the key with its own at once).
    pub fn new_member_owner_key(
        &self,
        provider: &impl OpenMlsProvider,
        device: &DeviceId,
    ) -> Result<ed25519_dalek::SigningKey, CoreError> {
        let seed = self.exported(provider, crate::route::OWNER_LABEL, &device.0, true)?;
        Ok(ed25519_dalek::SigningKey::from_bytes(&seed))
    }

    /// The owner key of the queue made for us when we were added: derived
    /// from the epoch we joined in, so call it before any commit.
    pub fn joined_owner_key(
        &self,
        provider: &impl OpenMlsProvider,
        device: &DeviceId,
    ) -> Result<ed25519_dalek::SigningKey, CoreError> {
        let seed = self.exported(provider, crate::route::OWNER_LABEL, &device.0, false)?;
        Ok(ed25519_dalek::SigningKey::from_bytes(&seed))
    }

    /// The secret a key announcement of this epoch (`next`: of the epoch our
    /// pending commit leads to) is signed with (see
    /// [`hush_proto::key_announcement`]).
    pub fn announcement_context(
        &self,
        provider: &impl OpenMlsProvider,
        next: bool,
    ) -> Result<[u8; 32], CoreError> {
        Ok(*self.exported(provider, ANNOUNCEMENT_LABEL, &[], next)?)
    }

    /// This epoch's transport key (`next`: the pending commit's epoch's).
    pub fn transport_key(
        &self,
        provider: &impl OpenMlsProvider,
        next: bool,
    ) -> Result<zeroize::Zeroizing<[u8; 32]>, CoreError> {
        self.exported(provider, crate::route::TRANSPORT_LABEL, &[], next)
    }

    /// This epoch's relay key: an Ed25519 key whose seed is exported from
    /// the epoch's secrets, so only its members can derive it.
    fn relay_key(&self, provider: &impl OpenMlsProvider) -> Result<ed25519_dalek::SigningKey, CoreError> {
        let seed = self
            .group
            .export_secret(provider.crypto(), hush_proto::COMMIT_KEY_LABEL, &[], 32)
            .map_err(CoreError::mls)?;
        relay_key_from(seed)
    }

    /// The public relay key of the epoch our pending commit leads to.
    fn next_relay_key(&self, provider: &impl OpenMlsProvider) -> Result<[u8; 32], CoreError> {
        let staged = self.group.pending_commit().ok_or_else(|| CoreError::Mls("no pending commit".into()))?;
        let seed = staged
            .export_secret(provider.crypto(), hush_proto::COMMIT_KEY_LABEL, &[], 32)
            .map_err(CoreError::mls)?;
        Ok(relay_key_from(seed)?.verifying_key().to_bytes())
    }

    /// Signs a freshly made (pending) commit for the relay.
    fn seal(
        &self,
        provider: &impl OpenMlsProvider,
        identity: &Identity,
        epoch: u64,
        recipients: Vec<AccountId>,
        commit: Vec<u8>,
        welcome: Option<(Vec<AccountId>, Vec<u8>)>,
    ) -> Result<SentCommit, CoreError> {
        use ed25519_dalek::Signer as _;
        use openmls_traits::signatures::Signer as _;
        let group_id = self.id();
        let next_key = self.next_relay_key(provider)?;
        // Announce the key to the group, signed with our identity key, so
        // that everyone in the new epoch can check what we told the relay.
        let context = self.announcement_context(provider, true)?;
        let statement = hush_proto::key_announcement(&group_id, epoch + 1, &next_key, &context);
        let signature = identity.signer().sign(&statement).map_err(CoreError::mls)?;
        let signature = <[u8; 64]>::try_from(signature.as_slice())
            .map_err(|_| CoreError::Mls("identity signature of the wrong length".into()))?;
        let announcement = hush_proto::KeyAnnouncement { next_key, signature };
        let commit = hush_proto::announced_payload(hush_proto::COMMIT_PAYLOAD_TAG, &announcement, &commit);
        let welcome = welcome.map(|(to, bytes)| {
            (to, hush_proto::announced_payload(hush_proto::WELCOME_PAYLOAD_TAG, &announcement, &bytes))
        });
        let message = hush_proto::commit_auth_message(
            &hush_proto::GroupId(group_id.clone()),
            epoch,
            &commit,
            welcome.as_ref().map(|(_, bytes)| &bytes[..]),
            &next_key,
        );
        let signature = self.relay_key(provider)?.sign(&message).to_bytes();
        Ok(SentCommit { group_id, epoch, recipients, commit, welcome, next_key, signature })
    }

    /// The devices our pending commit removes.
    pub fn pending_removals(&self) -> Result<Vec<DeviceId>, CoreError> {
        let staged = self.group.pending_commit().ok_or_else(|| CoreError::Mls("no pending commit".into()))?;
        staged
            .remove_proposals()
            .filter_map(|queued| self.group.member_at(queued.remove_proposal().removed()))
            .map(|member| member_of(&member).map(|member| member.device))
            .collect()
    }

    /// Signs a commit for the relay with this epoch's relay key (see
    /// [`hush_proto::commit_auth_message`]).
    pub fn relay_signature(
        &self,
        provider: &impl OpenMlsProvider,
        epoch: u64,
        payload: &[u8],
        welcome: Option<&[u8]>,
        next_key: &[u8; 32],
    ) -> Result<[u8; 64], CoreError> {
        use ed25519_dalek::Signer as _;
        let message = hush_proto::commit_auth_message(
            &hush_proto::GroupId(self.id()),
            epoch,
            payload,
            welcome,
            next_key,
        );
        Ok(self.relay_key(provider)?.sign(&message).to_bytes())
    }

    /// The public relay key of the current epoch (what the relay holds for
    /// the group once it has ordered the commit that led here).
    pub fn relay_public_key(&self, provider: &impl OpenMlsProvider) -> Result<[u8; 32], CoreError> {
        Ok(self.relay_key(provider)?.verifying_key().to_bytes())
    }

    /// Deletes this group's MLS state from the device (declining a request:
    /// its secrets are of no further use here).
    pub fn forget(mut self, provider: &impl OpenMlsProvider) -> Result<(), CoreError> {
        self.group.delete(provider.storage()).map_err(CoreError::mls)
    }

    /// True while one of our commits waits for the relay's verdict.
    pub fn has_pending_commit(&self) -> bool {
        self.group.pending_commit().is_some()
    }

    /// The relay accepted our pending commit: move to the next epoch.
    pub fn confirm_commit(&mut self, provider: &impl OpenMlsProvider) -> Result<(), CoreError> {
        self.group.merge_pending_commit(provider).map_err(CoreError::mls)
    }

    /// Our pending commit lost its epoch: forget it.
    pub fn abandon_commit(&mut self, provider: &impl OpenMlsProvider) -> Result<(), CoreError> {
        self.group.clear_pending_commit(provider.storage()).map_err(CoreError::mls)
    }

    fn sender_account(&self, sender: &Sender) -> Result<AccountId, CoreError> {
        let Sender::Member(index) = sender else { return Err(CoreError::BadCredential) };
        let member = self.group.member_at(*index).ok_or(CoreError::BadCredential)?;
        account_of(&member)
    }

    fn process(
        mut self,
        provider: &impl OpenMlsProvider,
        message: ProtocolMessage,
        announced: Option<hush_proto::KeyAnnouncement>,
    ) -> Result<Incoming, CoreError> {
        let processed = self.group.process_message(provider, message).map_err(CoreError::mls)?;
        let sender = self.sender_account(processed.sender())?;
        let signer = match processed.sender() {
            Sender::Member(index) => {
                self.group.member_at(*index).map(|m| m.signature_key).unwrap_or_default()
            }
            _ => Vec::new(),
        };
        let group_id = self.id();
        match processed.into_content() {
            ProcessedMessageContent::ApplicationMessage(message) => {
                // Signed with the identity key the sender's leaf holds (the
                // one its account id is derived from).
                let signed = SignedContent::from_bytes(&message.into_bytes())?;
                let content = signed.verify(&signer)?;
                Ok(Incoming::Message { group_id, sender, content, signed })
            }
            ProcessedMessageContent::StagedCommitMessage(staged) => {
                let mut added = Vec::new();
                for proposal in staged.add_proposals() {
                    let leaf = proposal.add_proposal().key_package().leaf_node();
                    added.push(credential_account(leaf.credential(), leaf.signature_key().as_slice())?);
                }
                if let Some(leaf) = staged.update_path_leaf_node() {
                    // A member may refresh its keys, never swap its identity.
                    if credential_account(leaf.credential(), leaf.signature_key().as_slice())? != sender {
                        return Err(CoreError::BadCredential);
                    }
                }
                let mut removed = Vec::new();
                for proposal in staged.remove_proposals() {
                    let index = proposal.remove_proposal().removed();
                    if let Some(member) = self.group.member_at(index) {
                        removed.push(account_of(&member)?);
                    }
                }
                let self_removed = staged.self_removed();
                self.group.merge_staged_commit(provider, *staged).map_err(CoreError::mls)?;
                let epoch = self.epoch();
                // The key the committer gave the relay for this epoch must
                // be the one every member derives.
                let relay_key = if self_removed {
                    RelayKeyCheck::NotApplicable
                } else {
                    check_announcement(
                        announced,
                        &group_id,
                        epoch,
                        &self.relay_public_key(provider)?,
                        &signer,
                        &self.announcement_context(provider, false)?,
                    )
                };
                if self_removed {
                    // Removed: this group's secrets have no further use here,
                    // and a later Welcome back into it must find no old state.
                    self.group.delete(provider.storage()).map_err(CoreError::mls)?;
                }
                Ok(Incoming::Changed { group_id, sender, added, removed, self_removed, epoch, relay_key })
            }
            _ => Ok(Incoming::Ignored),
        }
    }
}

/// Before joining a group again: deletes the state of an earlier membership
/// of it that ended (profiles from before removal deleted it). A Welcome
/// into a group we are still in is refused.
fn forget_left_group(provider: &impl OpenMlsProvider, group_id: &GroupId) -> Result<(), CoreError> {
    match MlsGroup::load(provider.storage(), group_id).map_err(CoreError::mls)? {
        Some(group) if group.is_active() => Err(CoreError::AlreadyMember),
        Some(mut group) => group.delete(provider.storage()).map_err(CoreError::mls),
        None => Ok(()),
    }
}

/// The group and epoch a group message (not a Welcome) says it belongs to,
/// read from its unencrypted header without processing it.
pub fn peek(bytes: &[u8]) -> Option<(Vec<u8>, u64)> {
    let bytes = hush_proto::split_announced_payload(hush_proto::COMMIT_PAYLOAD_TAG, bytes)
        .map_or(bytes, |(_, commit)| commit);
    let message = MlsMessageIn::tls_deserialize_exact(bytes).ok()?;
    let message: ProtocolMessage = match message.extract() {
        MlsMessageBodyIn::PrivateMessage(message) => message.into(),
        MlsMessageBodyIn::PublicMessage(message) => message.into(),
        _ => return None,
    };
    Some((message.group_id().as_slice().to_vec(), message.epoch().as_u64()))
}

/// Processes one payload from the mailbox: a Welcome, or a message or commit
/// for a group we are in.
pub fn process_incoming(provider: &impl OpenMlsProvider, bytes: &[u8]) -> Result<Incoming, CoreError> {
    let tagged = hush_proto::split_announced_payload(hush_proto::COMMIT_PAYLOAD_TAG, bytes)
        .or_else(|| hush_proto::split_announced_payload(hush_proto::WELCOME_PAYLOAD_TAG, bytes));
    let (announced, bytes) = match tagged {
        Some((announcement, message)) => (Some(announcement), message),
        None => (None, bytes),
    };
    let message = MlsMessageIn::tls_deserialize_exact(bytes).map_err(|_| CoreError::Malformed)?;
    match message.extract() {
        MlsMessageBodyIn::Welcome(welcome) => {
            if welcome.ciphersuite() != CIPHERSUITE {
                return Err(CoreError::WrongCiphersuite);
            }
            let staged = StagedWelcome::new_from_welcome(provider, &join_config(), welcome, None)
                .map_err(CoreError::mls)?;
            forget_left_group(provider, staged.group_context().group_id())?;
            let members = member_accounts(staged.members())?;
            let sender = staged.welcome_sender().map_err(CoreError::mls)?;
            let by = credential_account(sender.credential(), sender.signature_key().as_slice())?;
            let signer = sender.signature_key().as_slice().to_vec();
            let conversation = Conversation { group: staged.into_group(provider).map_err(CoreError::mls)? };
            let derived = conversation.relay_public_key(provider)?;
            let context = conversation.announcement_context(provider, false)?;
            let relay_key = check_announcement(
                announced,
                &conversation.id(),
                conversation.epoch(),
                &derived,
                &signer,
                &context,
            );
            Ok(Incoming::Joined { conversation: Box::new(conversation), members, by, relay_key })
        }
        MlsMessageBodyIn::PrivateMessage(message) => {
            let message: ProtocolMessage = message.into();
            let group_id = message.group_id().as_slice().to_vec();
            match Conversation::load(provider, &group_id)? {
                Some(conversation) if conversation.is_active() => {
                    conversation.process(provider, message, announced)
                }
                _ => Ok(Incoming::Ignored),
            }
        }
        _ => Err(CoreError::Malformed),
    }
}

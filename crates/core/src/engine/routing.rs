//! Routing through queues (protocol version 3): every member device has
//! one queue per group, the members know each other's queues (the group's
//! *directory*), and payloads are sealed under the epoch's transport key
//! and padded (see [`crate::route`]).
//!
//! - **Sending**: a message goes to every other member's queue, with the
//!   write secret of the current epoch for each ([`Engine::encrypt_sealed`]).
//! - **Committing**: a commit goes to every other member's queue and
//!   replaces the write hash of every queue of the next epoch's members
//!   with that epoch's (the relay does it only if it orders the commit). A
//!   member being added gets a queue the adder made for it beforehand (a
//!   [`QueuePlan`]): the commit tells the existing members which queue is
//!   whose (sealed, beside the MLS commit), and the Welcome tells the new
//!   member the whole directory and the owner key of its queue, which it
//!   replaces with its own ([`Engine::rekeys`]).
//! - **Receiving**: a queue belongs to one group, so its payloads are
//!   opened with that group's transport keys (the current epoch's, then
//!   the few past epochs' this device kept); Welcomes come to the contact
//!   queue or the account's introduction mailbox ([`Engine::deliver_introduction`]).

use std::borrow::Cow;

use ed25519_dalek::SigningKey;
use hush_proto::{AccountId, Capability, ClientFrame, Destination, DeviceId, GroupId, QueueId};
use rand::RngCore;
use zeroize::Zeroizing;

use super::{hex, DeviceStore, Engine, EngineError, StorageError, UnresolvedCommit};
use crate::content::Content;
use crate::error::CoreError;
use crate::group::{Conversation, SentCommit};
use crate::identity::Identity;
use crate::route;
use crate::MAX_PAST_EPOCHS;

/// First byte of a sealed application message on the wire (a sealed
/// payload starts with a random nonce, which must not be taken for a
/// commit's tag).
pub const MESSAGE_TAG: u8 = 0xa1;
/// First byte of an opened commit as the device keeps it while it waits
/// for its epoch: the announcement and MLS commit with the queues of the
/// members it adds. Never on the wire.
const OPENED_COMMIT_TAG: u8 = 0xd1;

/// First byte of a queued payload the device holds sealed until its group
/// reaches the epoch it was sent in. Never on the wire.
const OPAQUE_TAG: u8 = 0xfe;

/// The epoch a queued payload says it was sealed in (in the clear after
/// its tag: the relay orders the group's commits, so it knows the epoch
/// anyway), if it is a sealed message or commit at all.
fn queued_epoch(payload: &[u8]) -> Option<u64> {
    let at = match *payload.first()? {
        MESSAGE_TAG => 1,
        hush_proto::COMMIT_PAYLOAD_TAG => 33,
        _ => return None,
    };
    // The epoch, then at least a nonce and a tag.
    if payload.len() < at + 8 + 40 {
        return None;
    }
    Some(u64::from_be_bytes(payload.get(at..at + 8)?.try_into().ok()?))
}

const OWN_QUEUE_PREFIX: &str = "own_queue:";
const QUEUE_GROUP_PREFIX: &str = "queue_group:";
const DIRECTORY_PREFIX: &str = "directory:";
const NEXT_DIRECTORY_PREFIX: &str = "next_directory:";
const ROUTE_PLAN_PREFIX: &str = "route_plan:";
const TRANSPORT_PREFIX: &str = "transport:";
const REKEY_PREFIX: &str = "queue_rekey:";
const DROP_PREFIX: &str = "queue_drop:";
const CONTACT_QUEUE: &str = "contact_queue";

/// The secrets of a queue about to be made at the relay: its owner key and
/// its first write secret (which the first commit that names it replaces).
#[derive(Clone)]
pub struct QueueSecrets {
    owner_seed: Zeroizing<[u8; 32]>,
    first_secret: Zeroizing<[u8; 32]>,
}

impl QueueSecrets {
    /// Fresh random secrets.
    pub fn generate(rng: &mut impl RngCore) -> Self {
        let mut owner_seed = Zeroizing::new([0u8; 32]);
        let mut first_secret = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut owner_seed[..]);
        rng.fill_bytes(&mut first_secret[..]);
        Self { owner_seed, first_secret }
    }

    /// The public owner key, for `CreateQueue`.
    pub fn owner_public(&self) -> [u8; 32] {
        SigningKey::from_bytes(&self.owner_seed).verifying_key().to_bytes()
    }

    /// The hash of the first write secret, for `CreateQueue`.
    pub fn write_hash(&self) -> [u8; 32] {
        hush_proto::write_hash(&self.first_secret)
    }

    /// The first write secret.
    pub fn first_secret(&self) -> [u8; 32] {
        *self.first_secret
    }
}

/// A queue made at the relay for a device about to be added to a group
/// (or for us, when we create one), and where its Welcome goes.
#[derive(Clone)]
pub struct QueuePlan {
    /// The device it is for.
    pub device: DeviceId,
    /// The queue the relay made.
    pub queue: QueueId,
    /// Its secrets.
    pub secrets: QueueSecrets,
    /// Where the Welcome goes (none for our own queue).
    pub welcome_to: Option<Destination>,
}

/// A sealed application message and the queues it goes to.
#[derive(Debug, Clone)]
pub struct SealedOutgoing {
    /// Every other member device's queue, with this epoch's write secret.
    pub targets: Vec<Capability>,
    /// The devices of `targets`, in the same order.
    pub devices: Vec<DeviceId>,
    /// The sealed, padded payload.
    pub payload: Vec<u8>,
}

/// What a payload carried beside its MLS message for the group's routing.
pub(super) enum RouteUpdate {
    /// A commit's: the queues of the members it adds.
    Added(Vec<(DeviceId, QueueId)>),
    /// A Welcome's: the whole directory, sealed under the joined epoch's
    /// transport key, with the owner key of our queue.
    Welcome(Vec<u8>),
}

/// A device, its queue, and the queue's owner seed (for a new member's).
type Entry = (DeviceId, QueueId, Option<Zeroizing<[u8; 32]>>);

/// A group's directory: which queue is whose, and for the queues made for
/// new members, their owner seeds (only in a Welcome).
#[derive(Default, Clone)]
struct Directory {
    entries: Vec<Entry>,
}

impl Directory {
    fn encode(&self, with_seeds: bool) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(self.entries.len() * 65));
        for (device, queue, seed) in &self.entries {
            out.extend_from_slice(&device.0);
            out.extend_from_slice(&queue.0);
            match seed.as_ref().filter(|_| with_seeds) {
                Some(seed) => {
                    out.push(1);
                    out.extend_from_slice(&seed[..]);
                }
                None => out.push(0),
            }
        }
        out
    }

    fn decode(mut bytes: &[u8]) -> Option<Self> {
        let mut entries = Vec::new();
        while !bytes.is_empty() {
            let device = DeviceId(bytes.get(..16)?.try_into().ok()?);
            let queue = QueueId(bytes.get(16..32)?.try_into().ok()?);
            let (seed, rest) = match bytes.get(32)? {
                0 => (None, bytes.get(33..)?),
                1 => (Some(Zeroizing::new(bytes.get(33..65)?.try_into().ok()?)), bytes.get(65..)?),
                _ => return None,
            };
            entries.push((device, queue, seed));
            bytes = rest;
        }
        Some(Self { entries })
    }

    fn queue_of(&self, device: &DeviceId) -> Option<QueueId> {
        self.entries.iter().find(|(d, _, _)| d == device).map(|(_, queue, _)| *queue)
    }

    fn set(&mut self, device: DeviceId, queue: QueueId) {
        self.entries.retain(|(d, _, _)| *d != device);
        self.entries.push((device, queue, None));
    }

    /// Keeps only the devices in `members`.
    fn keep(&mut self, members: &[DeviceId]) {
        self.entries.retain(|(device, _, _)| members.contains(device));
    }
}

/// The parts of a commit or Welcome as sent: the announcement's signature,
/// the MLS message and what follows it.
fn join_parts(signature: &[u8; 64], message: &[u8], rest: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(68 + message.len() + rest.len()));
    out.extend_from_slice(signature);
    out.extend_from_slice(&u32::try_from(message.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(message);
    out.extend_from_slice(rest);
    out
}

fn split_parts(bytes: &[u8]) -> Option<([u8; 64], &[u8], &[u8])> {
    let signature = bytes.get(..64)?.try_into().ok()?;
    let len = u32::from_be_bytes(bytes.get(64..68)?.try_into().ok()?) as usize;
    let message = bytes.get(68..68usize.checked_add(len)?)?;
    Some((signature, message, &bytes[68 + len..]))
}

fn announced(tag: u8, next_key: [u8; 32], signature: [u8; 64], message: &[u8]) -> Vec<u8> {
    hush_proto::announced_payload(tag, &hush_proto::KeyAnnouncement { next_key, signature }, message)
}

fn encode_added(added: &[(DeviceId, QueueId)]) -> Vec<u8> {
    added.iter().flat_map(|(device, queue)| device.0.iter().chain(&queue.0).copied()).collect()
}

fn decode_added(bytes: &[u8]) -> Option<Vec<(DeviceId, QueueId)>> {
    if !bytes.len().is_multiple_of(32) {
        return None;
    }
    bytes
        .chunks_exact(32)
        .map(|chunk| Some((DeviceId(chunk[..16].try_into().ok()?), QueueId(chunk[16..].try_into().ok()?))))
        .collect()
}

/// A payload as the engine processes it: an opened commit (kept while it
/// waits for its epoch) becomes the announced commit plus the queues it
/// adds; anything else is itself.
pub(super) fn split_opened(payload: &[u8]) -> (Cow<'_, [u8]>, Option<RouteUpdate>) {
    let opened = payload.split_first().filter(|(tag, _)| **tag == OPENED_COMMIT_TAG).and_then(|(_, rest)| {
        let next_key: [u8; 32] = rest.get(..32)?.try_into().ok()?;
        let (signature, message, added) = split_parts(rest.get(32..)?)?;
        let added = decode_added(added)?;
        Some((announced(hush_proto::COMMIT_PAYLOAD_TAG, next_key, signature, message), added))
    });
    match opened {
        Some((message, added)) => (Cow::Owned(message), Some(RouteUpdate::Added(added))),
        None => (Cow::Borrowed(payload), None),
    }
}

fn own_queue_key(group_id: &[u8]) -> String {
    format!("{OWN_QUEUE_PREFIX}{}", hex(group_id))
}

fn queue_group_key(queue: &QueueId) -> String {
    format!("{QUEUE_GROUP_PREFIX}{}", hex(&queue.0))
}

fn directory_key(group_id: &[u8]) -> String {
    format!("{DIRECTORY_PREFIX}{}", hex(group_id))
}

fn next_directory_key(group_id: &[u8]) -> String {
    format!("{NEXT_DIRECTORY_PREFIX}{}", hex(group_id))
}

fn route_plan_key(group_id: &[u8]) -> String {
    format!("{ROUTE_PLAN_PREFIX}{}", hex(group_id))
}

fn transport_key(group_id: &[u8]) -> String {
    format!("{TRANSPORT_PREFIX}{}", hex(group_id))
}

fn seed_of(bytes: &[u8]) -> Option<Zeroizing<[u8; 32]>> {
    Some(Zeroizing::new(bytes.get(..32)?.try_into().ok()?))
}

/// Our queue in one group: its id, owner seed and, until the first commit
/// that names it is ordered, its first write secret.
struct OwnQueue {
    queue: QueueId,
    owner_seed: Zeroizing<[u8; 32]>,
    first_secret: Option<Zeroizing<[u8; 32]>>,
}

impl OwnQueue {
    fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(self.queue.0.to_vec());
        out.extend_from_slice(&self.owner_seed[..]);
        if let Some(first) = &self.first_secret {
            out.extend_from_slice(&first[..]);
        }
        out
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let queue = QueueId(bytes.get(..16)?.try_into().ok()?);
        let owner_seed = seed_of(bytes.get(16..)?)?;
        let first_secret = bytes.get(48..).filter(|rest| !rest.is_empty()).and_then(seed_of);
        Some(Self { queue, owner_seed, first_secret })
    }
}

/// A route plan as kept between making the queues and the commit being
/// ordered: each plan's device, queue, secrets and Welcome destination.
fn encode_plans(plans: &[QueuePlan]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::new());
    for plan in plans {
        out.extend_from_slice(&plan.device.0);
        out.extend_from_slice(&plan.queue.0);
        out.extend_from_slice(&plan.secrets.owner_seed[..]);
        out.extend_from_slice(&plan.secrets.first_secret[..]);
        match &plan.welcome_to {
            None => out.push(0),
            Some(Destination::Account(account)) => {
                out.push(1);
                out.extend_from_slice(&account.0);
            }
            Some(Destination::Queue(capability)) => {
                out.push(2);
                out.extend_from_slice(&capability.queue.0);
                out.extend_from_slice(&capability.secret);
            }
        }
    }
    out
}

fn decode_plans(mut bytes: &[u8]) -> Option<Vec<QueuePlan>> {
    let mut plans = Vec::new();
    while !bytes.is_empty() {
        let device = DeviceId(bytes.get(..16)?.try_into().ok()?);
        let queue = QueueId(bytes.get(16..32)?.try_into().ok()?);
        let secrets =
            QueueSecrets { owner_seed: seed_of(bytes.get(32..)?)?, first_secret: seed_of(bytes.get(64..)?)? };
        let (welcome_to, rest) = match bytes.get(96)? {
            0 => (None, bytes.get(97..)?),
            1 => (
                Some(Destination::Account(hush_proto::AccountId(bytes.get(97..117)?.try_into().ok()?))),
                bytes.get(117..)?,
            ),
            2 => {
                let queue = QueueId(bytes.get(97..113)?.try_into().ok()?);
                let secret = bytes.get(113..145)?.try_into().ok()?;
                (Some(Destination::Queue(Capability { queue, secret })), bytes.get(145..)?)
            }
            _ => return None,
        };
        plans.push(QueuePlan { device, queue, secrets, welcome_to });
        bytes = rest;
    }
    Some(plans)
}

impl<S: DeviceStore> Engine<'_, S> {
    // ----- our queues -----

    /// The contact queue (where Welcomes from people who have our contact
    /// code arrive), if made: its id and write secret.
    pub fn contact_queue(&self) -> Result<Option<(QueueId, [u8; 32])>, StorageError> {
        let Some(bytes) = self.store.setting(CONTACT_QUEUE)? else { return Ok(None) };
        let Some(own) = OwnQueue::decode(&bytes) else { return Ok(None) };
        Ok(own.first_secret.map(|secret| (own.queue, *secret)))
    }

    /// Records the contact queue made at the relay with `secrets`.
    pub fn set_contact_queue(&self, queue: QueueId, secrets: &QueueSecrets) -> Result<(), StorageError> {
        let own = OwnQueue {
            queue,
            owner_seed: secrets.owner_seed.clone(),
            first_secret: Some(secrets.first_secret.clone()),
        };
        self.store.set_setting(CONTACT_QUEUE, &own.encode())
    }

    /// Every queue this device receives from, with its owner key: its
    /// queue in each group and its contact queue.
    pub fn own_queues(&self) -> Result<Vec<(QueueId, SigningKey)>, StorageError> {
        let mut queues = Vec::new();
        let contact = self.store.setting(CONTACT_QUEUE)?.into_iter();
        for bytes in
            contact.chain(self.store.settings_with_prefix(OWN_QUEUE_PREFIX)?.into_iter().map(|(_, v)| v))
        {
            if let Some(own) = OwnQueue::decode(&bytes) {
                queues.push((own.queue, SigningKey::from_bytes(&own.owner_seed)));
            }
        }
        Ok(queues)
    }

    /// Records our queue in a group we are creating, made at the relay
    /// with `secrets` before the group's first commit (which names it).
    pub fn adopt_queue(
        &self,
        group_id: &[u8],
        queue: QueueId,
        secrets: &QueueSecrets,
    ) -> Result<(), StorageError> {
        let own = OwnQueue {
            queue,
            owner_seed: secrets.owner_seed.clone(),
            first_secret: Some(secrets.first_secret.clone()),
        };
        self.store.transaction(|store| {
            store.set_setting(&own_queue_key(group_id), &own.encode())?;
            store.set_setting(&queue_group_key(&queue), group_id)
        })
    }

    /// The group a queue of ours belongs to.
    pub fn queue_group(&self, queue: &QueueId) -> Result<Option<Vec<u8>>, StorageError> {
        self.store.setting(&queue_group_key(queue))
    }

    /// Queues made for us by whoever added us, whose owner key we must
    /// replace with our own: (queue, the key it has, the key to give it).
    pub fn rekeys(&self) -> Result<Vec<(QueueId, SigningKey, SigningKey)>, StorageError> {
        let mut rekeys = Vec::new();
        for (name, next) in self.store.settings_with_prefix(REKEY_PREFIX)? {
            let Some(group_id) =
                self.store.setting(&format!("{QUEUE_GROUP_PREFIX}{}", &name[REKEY_PREFIX.len()..]))?
            else {
                continue;
            };
            let own = self.store.setting(&own_queue_key(&group_id))?.and_then(|b| OwnQueue::decode(&b));
            if let (Some(own), Some(next)) = (own, seed_of(&next)) {
                rekeys.push((
                    own.queue,
                    SigningKey::from_bytes(&own.owner_seed),
                    SigningKey::from_bytes(&next),
                ));
            }
        }
        Ok(rekeys)
    }

    /// The relay took our owner key for `queue`.
    pub fn rekeyed(&self, queue: &QueueId) -> Result<(), StorageError> {
        let name = format!("{REKEY_PREFIX}{}", hex(&queue.0));
        let Some(next) = self.store.setting(&name)? else { return Ok(()) };
        let Some(group_id) = self.queue_group(queue)? else { return self.store.delete_setting(&name) };
        self.store.transaction(|store| {
            let key = own_queue_key(&group_id);
            if let Some(mut own) = store.setting(&key)?.and_then(|b| OwnQueue::decode(&b)) {
                if let Some(seed) = seed_of(&next) {
                    own.owner_seed = seed;
                    store.set_setting(&key, &own.encode())?;
                }
            }
            store.delete_setting(&name)
        })
    }

    /// Queues of groups we left, to delete at the relay: (queue, owner key).
    pub fn queues_to_drop(&self) -> Result<Vec<(QueueId, SigningKey)>, StorageError> {
        let mut drops = Vec::new();
        for (name, seed) in self.store.settings_with_prefix(DROP_PREFIX)? {
            let queue = data_encoding::HEXLOWER.decode(&name.as_bytes()[DROP_PREFIX.len()..]).ok();
            let queue = queue.and_then(|q| <[u8; 16]>::try_from(q.as_slice()).ok()).map(QueueId);
            if let (Some(queue), Some(seed)) = (queue, seed_of(&seed)) {
                drops.push((queue, SigningKey::from_bytes(&seed)));
            }
        }
        Ok(drops)
    }

    /// Forgets a queue of ours that no longer proves at the relay (its
    /// group can no longer reach this device through it; the contact queue
    /// is made again at the next login).
    pub fn forget_queue(&self, queue: &QueueId) -> Result<(), StorageError> {
        self.store.transaction(|store| {
            if self.contact_queue()?.is_some_and(|(contact, _)| contact == *queue) {
                store.delete_setting(CONTACT_QUEUE)?;
            }
            if let Some(group_id) = store.setting(&queue_group_key(queue))? {
                store.delete_setting(&own_queue_key(&group_id))?;
            }
            store.delete_setting(&queue_group_key(queue))?;
            store.delete_setting(&format!("{REKEY_PREFIX}{}", hex(&queue.0)))
        })
    }

    /// The relay deleted `queue`.
    pub fn queue_dropped(&self, queue: &QueueId) -> Result<(), StorageError> {
        self.store.delete_setting(&format!("{DROP_PREFIX}{}", hex(&queue.0)))
    }

    /// The accounts of a group's member devices among `devices`.
    pub fn members_of_devices(
        &self,
        group_id: &[u8],
        devices: &[DeviceId],
    ) -> Result<Vec<AccountId>, EngineError> {
        let mut accounts = Vec::new();
        for member in self.devices(group_id)? {
            if devices.contains(&member.device) && !accounts.contains(&member.account) {
                accounts.push(member.account);
            }
        }
        Ok(accounts)
    }

    /// The accounts of a group's members whose queues are among `queues`.
    pub fn members_of_queues(
        &self,
        group_id: &[u8],
        queues: &[QueueId],
    ) -> Result<Vec<AccountId>, EngineError> {
        let directory = self.directory(group_id)?;
        let devices: Vec<DeviceId> = directory
            .entries
            .iter()
            .filter(|(_, queue, _)| queues.contains(queue))
            .map(|(device, _, _)| *device)
            .collect();
        self.members_of_devices(group_id, &devices)
    }

    // ----- sending -----

    /// The write capability of `device`'s queue in a group at its current
    /// epoch (for us: our first secret until a commit names our queue).
    fn capability(
        &self,
        conversation: &Conversation,
        directory: &Directory,
        device: &DeviceId,
    ) -> Result<Option<Capability>, EngineError> {
        let Some(queue) = directory.queue_of(device) else { return Ok(None) };
        if *device == self.device() {
            let own =
                self.store.setting(&own_queue_key(&conversation.id()))?.and_then(|b| OwnQueue::decode(&b));
            if let Some(first) = own.and_then(|own| own.first_secret) {
                return Ok(Some(Capability { queue, secret: *first }));
            }
        }
        let secret = conversation.write_secret(&self.store.provider(), device, false)?;
        Ok(Some(Capability { queue, secret: *secret }))
    }

    fn directory(&self, group_id: &[u8]) -> Result<Directory, StorageError> {
        Ok(self
            .store
            .setting(&directory_key(group_id))?
            .and_then(|b| Directory::decode(&b))
            .unwrap_or_default())
    }

    /// Encrypts content for a group and seals it for every other member's
    /// queue. As [`Engine::encrypt`]: writing into a request accepts it.
    pub fn encrypt_sealed(&self, group_id: &[u8], content: &Content) -> Result<SealedOutgoing, EngineError> {
        let outgoing = self.encrypt(group_id, content)?;
        let provider = self.store.provider();
        let conversation = Conversation::load(&provider, group_id)?
            .ok_or_else(|| EngineError::Invalid("conversation state is missing".into()))?;
        let directory = self.directory(group_id)?;
        let me = self.device();
        let mut targets = Vec::new();
        let mut devices = Vec::new();
        for member in conversation.devices()? {
            if member.device == me {
                continue;
            }
            if let Some(capability) = self.capability(&conversation, &directory, &member.device)? {
                targets.push(capability);
                devices.push(member.device);
            }
        }
        let key = conversation.transport_key(&provider, false)?;
        let mut prefix = vec![MESSAGE_TAG];
        prefix.extend_from_slice(&conversation.epoch().to_be_bytes());
        let payload = route::seal(&key, &prefix, &outgoing.payload);
        Ok(SealedOutgoing { targets, devices, payload })
    }

    /// The write capabilities, at the current epoch, of `devices`' queues
    /// in a group (to send a message again to targets the relay refused,
    /// once the device has caught up).
    pub fn capabilities(
        &self,
        group_id: &[u8],
        devices: &[DeviceId],
    ) -> Result<Vec<(DeviceId, Capability)>, EngineError> {
        let conversation = Conversation::load(&self.store.provider(), group_id)?
            .ok_or_else(|| EngineError::Invalid("conversation state is missing".into()))?;
        let directory = self.directory(group_id)?;
        let mut capabilities = Vec::new();
        for device in devices {
            if let Some(capability) = self.capability(&conversation, &directory, device)? {
                capabilities.push((*device, capability));
            }
        }
        Ok(capabilities)
    }

    // ----- commits -----

    /// Keeps the queues made at the relay for the members a commit in this
    /// group is about to add (and our own, creating the group), until that
    /// commit is ordered: [`Engine::stage_sealed_commit`] names them, and
    /// a commit made again after losing its epoch names the same ones.
    /// A plan for our own device (creating the group) adopts that queue as
    /// ours in the group.
    pub fn plan_route(&self, group_id: &[u8], plans: &[QueuePlan]) -> Result<(), StorageError> {
        if let Some(own) = plans.iter().find(|plan| plan.device == self.device()) {
            self.adopt_queue(group_id, own.queue, &own.secrets)?;
        }
        self.store.set_setting(&route_plan_key(group_id), &encode_plans(plans))
    }

    /// As [`Engine::stage_commit`], for queues: the commit goes to every
    /// other member's queue, rotates every next-epoch member's write
    /// secret, names the queues of the members it adds (from
    /// [`Engine::plan_route`]) and sends their Welcome to where each plan
    /// says.
    pub fn stage_sealed_commit(
        &self,
        group_id: &[u8],
        make: impl FnOnce(&mut Conversation, &S::Provider<'_>, &Identity) -> Result<SentCommit, CoreError>,
    ) -> Result<ClientFrame, EngineError> {
        let identity = self.identity;
        let me = self.device();
        self.store.transaction(|store| {
            store.delete_setting(&super::request_key(group_id))?;
            let plans = match store.setting(&route_plan_key(group_id))? {
                Some(bytes) => {
                    decode_plans(&bytes).ok_or_else(|| EngineError::Invalid("damaged route plan".into()))?
                }
                None => Vec::new(),
            };
            let provider = store.provider();
            let mut conversation = Conversation::load(&provider, group_id)?
                .ok_or_else(|| EngineError::Invalid("conversation state is missing".into()))?;
            let directory = self.directory(group_id)?;
            let before = conversation.devices()?;
            // Capabilities at the current epoch, before the commit exists.
            let mut current = Vec::new();
            for member in &before {
                if let Some(capability) = self.capability(&conversation, &directory, &member.device)? {
                    current.push((member.device, capability));
                }
            }
            let sent = make(&mut conversation, &provider, identity)?;
            let epoch = sent.epoch;
            let removed = conversation.pending_removals()?;
            let (announcement, commit) =
                hush_proto::split_announced_payload(hush_proto::COMMIT_PAYLOAD_TAG, &sent.commit)
                    .ok_or_else(|| EngineError::Invalid("a commit without its announcement".into()))?;
            let next_key = announcement.next_key;

            // The next epoch's directory: who stays, and the planned queues.
            let mut next = directory.clone();
            let stays: Vec<DeviceId> =
                before.iter().map(|m| m.device).filter(|device| !removed.contains(device)).collect();
            let mut members = stays.clone();
            for plan in &plans {
                next.entries.retain(|(device, _, _)| *device != plan.device);
                // Only a new member is told its queue's owner seed (and
                // replaces it at once); ours is never sent.
                let seed = (plan.device != me).then(|| plan.secrets.owner_seed.clone());
                next.entries.push((plan.device, plan.queue, seed));
                if !members.contains(&plan.device) {
                    members.push(plan.device);
                }
            }
            next.keep(&members);
            let added: Vec<(DeviceId, QueueId)> =
                plans.iter().map(|plan| (plan.device, plan.queue)).collect();

            // To every other member (the removed ones learn of it too).
            let targets: Vec<Capability> =
                current.iter().filter(|(device, _)| *device != me).map(|(_, c)| c.clone()).collect();
            // Every queue of the next epoch gets the next epoch's secret.
            let mut rotate = Vec::new();
            for device in &members {
                let now = match plans.iter().find(|plan| plan.device == *device) {
                    Some(plan) => Some(Capability { queue: plan.queue, secret: plan.secrets.first_secret() }),
                    None => current.iter().find(|(d, _)| d == device).map(|(_, c)| c.clone()),
                };
                if let Some(now) = now {
                    let next_secret = conversation.write_secret(&provider, device, true)?;
                    rotate.push((now, hush_proto::write_hash(&next_secret)));
                }
            }

            let transport = conversation.transport_key(&provider, false)?;
            let mut prefix = vec![hush_proto::COMMIT_PAYLOAD_TAG];
            prefix.extend_from_slice(&next_key);
            prefix.extend_from_slice(&epoch.to_be_bytes());
            let inner = join_parts(&announcement.signature, commit, &encode_added(&added));
            let payload = route::seal(&transport, &prefix, &inner);

            let welcome = match &sent.welcome {
                Some((_, welcome)) => {
                    let (_, message) =
                        hush_proto::split_announced_payload(hush_proto::WELCOME_PAYLOAD_TAG, welcome)
                            .ok_or_else(|| {
                                EngineError::Invalid("a Welcome without its announcement".into())
                            })?;
                    let next_transport = conversation.transport_key(&provider, true)?;
                    let directory = route::seal(&next_transport, b"", &next.encode(true));
                    let inner = join_parts(&announcement.signature, message, &directory);
                    let mut prefix = vec![hush_proto::WELCOME_PAYLOAD_TAG];
                    prefix.extend_from_slice(&next_key);
                    let welcome = route::pad(&prefix, &inner);
                    let to: Vec<Destination> =
                        plans.iter().filter_map(|plan| plan.welcome_to.clone()).collect();
                    Some((to, welcome))
                }
                None => None,
            };
            let signature = conversation.relay_signature(
                &provider,
                epoch,
                &payload,
                welcome.as_ref().map(|(_, bytes)| &bytes[..]),
                &next_key,
            )?;
            let frame = ClientFrame::SealedCommit {
                request: 0,
                group: GroupId(group_id.to_vec()),
                epoch,
                targets,
                rotate,
                payload,
                welcome,
                next_key,
                signature,
            };
            let unresolved = UnresolvedCommit { group_id: group_id.to_vec(), epoch, frame };
            store.set_setting(&super::unresolved_key(group_id), &unresolved.frame.encode())?;
            store.set_setting(&next_directory_key(group_id), &next.encode(false))?;
            Ok(unresolved.frame)
        })
    }

    /// Our commit was ordered (or lost): the next epoch's directory takes
    /// over (or is forgotten). Called inside the settling transaction.
    pub(super) fn settle_route(&self, store: &S, group_id: &[u8], won: bool) -> Result<(), EngineError> {
        let next = store.setting(&next_directory_key(group_id))?;
        store.delete_setting(&next_directory_key(group_id))?;
        if !won {
            return Ok(());
        }
        if let Some(next) = next {
            store.set_setting(&directory_key(group_id), &next)?;
            store.delete_setting(&route_plan_key(group_id))?;
        }
        // Our queue's first secret was replaced by the commit, if it named it.
        let key = own_queue_key(group_id);
        if let Some(mut own) = store.setting(&key)?.and_then(|b| OwnQueue::decode(&b)) {
            if own.first_secret.take().is_some() {
                store.set_setting(&key, &own.encode())?;
            }
        }
        Ok(())
    }

    // ----- receiving -----

    /// Remembers the current epoch's transport key of a group (with the few
    /// before it), for payloads sent in an epoch we have since left.
    pub(super) fn remember_transport(&self, store: &S, group_id: &[u8]) -> Result<(), EngineError> {
        let provider = store.provider();
        let Some(conversation) = Conversation::load(&provider, group_id)? else { return Ok(()) };
        if !conversation.is_active() {
            return Ok(());
        }
        let epoch = conversation.epoch();
        let key = conversation.transport_key(&provider, false)?;
        let name = transport_key(group_id);
        let old = Zeroizing::new(store.setting(&name)?.unwrap_or_default());
        let mut kept: Vec<(u64, [u8; 32])> = old
            .chunks_exact(40)
            .filter_map(|chunk| {
                Some((u64::from_be_bytes(chunk[..8].try_into().ok()?), chunk[8..].try_into().ok()?))
            })
            .filter(|(e, _)| *e != epoch)
            .collect();
        kept.push((epoch, *key));
        kept.sort_by_key(|(e, _)| *e);
        let drop = kept.len().saturating_sub(MAX_PAST_EPOCHS + 1);
        let mut out = Zeroizing::new(Vec::with_capacity(40 * kept.len()));
        for (e, k) in kept.into_iter().skip(drop) {
            out.extend_from_slice(&e.to_be_bytes());
            out.extend_from_slice(&k);
        }
        Ok(store.set_setting(&name, &out)?)
    }

    /// The transport key of a group's `epoch`: the current epoch's, or one
    /// of the few before it this device kept.
    fn transport_key_of(
        &self,
        group_id: &[u8],
        epoch: u64,
    ) -> Result<Option<Zeroizing<[u8; 32]>>, EngineError> {
        let provider = self.store.provider();
        if let Some(conversation) = Conversation::load(&provider, group_id)?.filter(|c| c.is_active()) {
            if conversation.epoch() == epoch {
                return Ok(Some(conversation.transport_key(&provider, false)?));
            }
        }
        let kept = Zeroizing::new(self.store.setting(&transport_key(group_id))?.unwrap_or_default());
        Ok(kept
            .chunks_exact(40)
            .find(|chunk| chunk[..8] == epoch.to_be_bytes())
            .and_then(|chunk| <[u8; 32]>::try_from(&chunk[8..]).ok())
            .map(Zeroizing::new))
    }

    /// Processes one payload delivered from our queue `queue`: a sealed
    /// message or commit of that queue's group. One for an epoch a few
    /// ahead of ours waits for the commit that leads there, as in
    /// [`Engine::deliver`]; one that cannot be opened is shown as lost.
    /// Only a failure of the device's store is an error.
    pub fn deliver_queued(&mut self, queue: &QueueId, payload: &[u8]) -> Result<(), StorageError> {
        // Our contact queue holds introductions.
        if self.contact_queue()?.is_some_and(|(contact, _)| contact == *queue) {
            return self.deliver_introduction(payload);
        }
        // A queue of no group of ours (one we left): nothing to do.
        let Some(group_id) = self.queue_group(queue)? else { return Ok(()) };
        let current = match self.active_epoch(&group_id) {
            Ok(Some(current)) => current,
            Ok(None) => return Ok(()),
            Err(EngineError::Storage(error)) => return Err(error),
            Err(_) => return self.store.transaction(|_| self.note_unreadable_in(&group_id)),
        };
        let Some(epoch) = queued_epoch(payload) else {
            return self.store.transaction(|_| self.note_unreadable_in(&group_id));
        };
        if epoch > current {
            // The epoch in the clear is not authenticated: only a few
            // epochs ahead is believable.
            if epoch - current > super::HOLD_EPOCHS {
                return self.store.transaction(|_| self.note_unreadable_in(&group_id));
            }
            let hash: [u8; 32] =
                sha2::Digest::finalize(sha2::Digest::chain_update(sha2::Sha256::default(), payload)).into();
            let now = self.now;
            let held = self.store.transaction(|store| {
                if !store.first_sighting(&hash, now)? {
                    return Ok(());
                }
                let mut opaque = vec![OPAQUE_TAG];
                opaque.extend_from_slice(payload);
                self.hold(&group_id, &opaque)
            });
            return match held {
                Ok(()) => Ok(()),
                Err(EngineError::Storage(error)) => Err(error),
                Err(_) => self.store.transaction(|_| self.note_unreadable_in(&group_id)),
            };
        }
        let sealed: [u8; 32] =
            sha2::Digest::finalize(sha2::Digest::chain_update(sha2::Sha256::default(), payload)).into();
        let inner = match self.unseal(&group_id, payload) {
            Ok(Some(inner)) => inner,
            Ok(None) | Err(EngineError::Core(_) | EngineError::Invalid(_)) => {
                // A copy of one processed already, whose epoch's key is
                // gone by now, is not lost: it was read.
                let now = self.now;
                return self.store.transaction(|store| {
                    if !store.first_sighting(&sealed, now)? {
                        return Ok(());
                    }
                    self.note_unreadable_in(&group_id)
                });
            }
            Err(EngineError::Storage(error)) => return Err(error),
        };
        if let Some(group_id) = self.accept_payload(&inner, None, Some(&sealed), None)? {
            self.retry_held(&group_id)?;
        }
        Ok(())
    }

    /// A held payload, and whether it waited sealed for its epoch and is
    /// opened now that the group reached it (`None`: still ahead; an
    /// error: it cannot be read).
    pub(super) fn open_held(
        &self,
        group_id: &[u8],
        current: u64,
        held: &[u8],
    ) -> Result<Option<(Vec<u8>, bool)>, EngineError> {
        let Some(queued) = held.strip_prefix(&[OPAQUE_TAG]) else { return Ok(Some((held.to_vec(), false))) };
        match queued_epoch(queued) {
            Some(epoch) if epoch > current => Ok(None),
            Some(_) => self
                .unseal(group_id, queued)?
                .map(|opened| Some((opened, true)))
                .ok_or_else(|| EngineError::Invalid("unreadable".into())),
            None => Err(EngineError::Invalid("unreadable".into())),
        }
    }

    /// A queued payload made ready for [`Engine::deliver`]: a message's MLS
    /// bytes, or an opened commit with the queues it adds.
    fn unseal(&self, group_id: &[u8], payload: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        let Some(epoch) = queued_epoch(payload) else { return Ok(None) };
        let Some(key) = self.transport_key_of(group_id, epoch)? else { return Ok(None) };
        match payload.split_first() {
            Some((&MESSAGE_TAG, rest)) => Ok(route::open(&key, &rest[8..]).ok()),
            Some((&hush_proto::COMMIT_PAYLOAD_TAG, rest)) => {
                let (next_key, sealed) = rest.split_at(32);
                let Ok(opened) = route::open(&key, &sealed[8..]) else { return Ok(None) };
                let opened = Zeroizing::new(opened);
                let mut out = vec![OPENED_COMMIT_TAG];
                out.extend_from_slice(next_key);
                out.extend_from_slice(&opened);
                Ok(Some(out))
            }
            _ => Ok(None),
        }
    }

    /// Processes a payload from our contact queue or introduction mailbox:
    /// a Welcome into a group, with its directory and our queue in it.
    pub fn deliver_introduction(&mut self, payload: &[u8]) -> Result<(), StorageError> {
        let parsed = payload
            .split_first()
            .filter(|(tag, _)| **tag == hush_proto::WELCOME_PAYLOAD_TAG)
            .and_then(|(_, rest)| {
                let next_key: [u8; 32] = rest.get(..32)?.try_into().ok()?;
                let inner = route::unpad(rest.get(32..)?).ok()?;
                let (signature, message, directory) = split_parts(&inner)?;
                let welcome = announced(hush_proto::WELCOME_PAYLOAD_TAG, next_key, signature, message);
                Some((welcome, directory.to_vec()))
            });
        // Anything but a Welcome is junk here (anyone with our contact code
        // can write to the queue): dropped.
        let Some((welcome, directory)) = parsed else { return Ok(()) };
        if let Some(group_id) =
            self.accept_payload(&welcome, None, None, Some(RouteUpdate::Welcome(directory)))?
        {
            self.retry_held(&group_id)?;
        }
        Ok(())
    }

    /// Applies what a payload carried for routing, once its MLS message
    /// moved `group_id` (inside the processing transaction).
    pub(super) fn apply_route(
        &self,
        store: &S,
        group_id: &[u8],
        update: Option<RouteUpdate>,
    ) -> Result<(), EngineError> {
        let provider = store.provider();
        let conversation = Conversation::load(&provider, group_id)?.filter(|c| c.is_active());
        let Some(conversation) = conversation else {
            // Removed: our queue is of no use any more.
            if let Some(own) = store.setting(&own_queue_key(group_id))?.and_then(|b| OwnQueue::decode(&b)) {
                store.set_setting(&format!("{DROP_PREFIX}{}", hex(&own.queue.0)), &own.owner_seed[..])?;
                store.delete_setting(&own_queue_key(group_id))?;
                store.delete_setting(&queue_group_key(&own.queue))?;
            }
            store.delete_setting(&directory_key(group_id))?;
            store.delete_setting(&transport_key(group_id))?;
            return Ok(());
        };
        let mut directory = self.directory(group_id)?;
        match update {
            Some(RouteUpdate::Added(added)) => {
                // Only devices with no queue yet: a commit must not point an
                // existing member's entry elsewhere (a committer could then
                // take its messages, or lose them for good).
                for (device, queue) in added {
                    if directory.queue_of(&device).is_none() {
                        directory.set(device, queue);
                    }
                }
            }
            Some(RouteUpdate::Welcome(sealed)) => {
                let key = conversation.transport_key(&provider, false)?;
                let opened = Zeroizing::new(
                    route::open(&key, &sealed)
                        .map_err(|_| EngineError::Invalid("a Welcome without a directory".into()))?,
                );
                let full = Directory::decode(&opened)
                    .ok_or_else(|| EngineError::Invalid("a damaged directory".into()))?;
                let me = self.device();
                let Some((_, queue, Some(seed))) = full.entries.iter().find(|(device, _, _)| *device == me)
                else {
                    return Err(EngineError::Invalid("a Welcome without a queue for us".into()));
                };
                let mut next_seed = Zeroizing::new([0u8; 32]);
                rand::rngs::OsRng.fill_bytes(&mut next_seed[..]);
                let own = OwnQueue { queue: *queue, owner_seed: seed.clone(), first_secret: None };
                store.set_setting(&own_queue_key(group_id), &own.encode())?;
                store.set_setting(&queue_group_key(queue), group_id)?;
                store.set_setting(&format!("{REKEY_PREFIX}{}", hex(&queue.0)), &next_seed[..])?;
                directory = Directory {
                    entries: full.entries.iter().map(|(device, queue, _)| (*device, *queue, None)).collect(),
                };
            }
            None => {}
        }
        let members: Vec<DeviceId> = conversation.devices()?.into_iter().map(|m| m.device).collect();
        directory.keep(&members);
        store.set_setting(&directory_key(group_id), &directory.encode(false))?;
        self.remember_transport(store, group_id)
    }
}

//! The device's side of the protocol over its storage, without I/O: what a
//! delivered payload does to the device's conversations, the lifecycle of
//! a commit whose outcome is not known yet, payloads that wait for their
//! epoch, the self-update and key-package policies, conversation requests
//! and the events shown in a conversation.
//!
//! Key design decision: the engine is handed its storage, the time and a
//! random source, and returns frames to send and decisions to act on; it
//! never touches a socket or reads a clock. The driver (`hush-client`)
//! owns the connection and decides when to call it; tests and simulations
//! call it directly over a [`MemoryStore`].

mod commit;
mod memory;
mod routing;
#[cfg(test)]
mod routing_tests;
mod store;
#[cfg(test)]
mod tests;

use std::time::Duration;

use hush_proto::{AccountId, ClientFrame, DeviceId, GroupId};
use rand::RngCore;
use sha2::{Digest, Sha256};

pub use commit::{CommitAnswer, CommitRun, CommitStep, Resolution, COMMIT_ATTEMPTS};
pub use memory::{MemoryProvider, MemoryStore};
pub use routing::{QueuePlan, QueueSecrets, SealedOutgoing, MESSAGE_TAG};
pub use store::{DeviceStore, StorageError};

use crate::content::{Body, Content};
use crate::error::CoreError;
use crate::group::{peek, process_incoming, Conversation, Incoming, Outgoing, RelayKeyCheck, SentCommit};
use crate::identity::Identity;
use crate::keys::{delete_key_package, new_key_packages, IssuedKeyPackage, KeyPackagePolicy, MemberId};
use crate::record::{ConversationKind, ConversationRecord, Event, MessageRecord};

/// How long payload hashes are remembered for de-duplication.
const SIGHTING_MEMORY: Duration = Duration::from_secs(30 * 24 * 3600);
/// How long a group whose self-update failed waits before the next try.
const UPDATE_RETRY: Duration = Duration::from_secs(3600);
/// Most payloads, and bytes, held back per group; past that they are
/// treated as unreadable (no one can fill the device's store with them).
const MAX_HELD: u64 = 256;
const MAX_HELD_BYTES: u64 = 16 << 20;
/// How far ahead of the group's epoch a payload may claim to be and still
/// be held (its header's epoch is not authenticated).
pub const HOLD_EPOCHS: u64 = 4;
/// How long a payload is held before it is given up (the relay's default
/// retention: the commit it waits for would be gone by then).
pub const HELD_FOR: Duration = Duration::from_secs(14 * 24 * 3600);

const HELD_PREFIX: &str = "held:";
const UNRESOLVED_PREFIX: &str = "unresolved_commit:";
const KEY_PACKAGE_PREFIX: &str = "key_package:";
const REQUEST_PREFIX: &str = "request:";
/// Set once this device's last-resort key package can be used by others.
const LAST_RESORT_USABLE: &str = "last_resort_usable";

/// What can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The device's own storage failed: nothing was changed, and a
    /// delivery that met this is not acknowledged.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The protocol refused (a bad payload, an MLS failure).
    #[error(transparent)]
    Core(CoreError),
    /// The operation does not apply (no such conversation, not a member).
    #[error("{0}")]
    Invalid(String),
}

impl From<CoreError> for EngineError {
    /// OpenMLS's storage failing is the device's storage failing.
    fn from(error: CoreError) -> Self {
        match error {
            CoreError::Storage(text) => Self::Storage(StorageError::new(std::io::Error::other(text))),
            error => Self::Core(error),
        }
    }
}

/// When a device self-updates a group: after this many messages it sent,
/// or this long after its last self-update, whichever comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdatePolicy {
    /// Sent messages between self-updates.
    pub after_messages: u64,
    /// Longest time between self-updates.
    pub after: Duration,
}

impl Default for UpdatePolicy {
    fn default() -> Self {
        Self { after_messages: 100, after: Duration::from_secs(24 * 3600) }
    }
}

/// A payload held for a later epoch, by its key in the store.
#[derive(Clone, Copy)]
enum Held<'a> {
    /// Kept as it arrived (and recorded as seen then).
    AsArrived(&'a str),
    /// Kept sealed, as it came from a queue, and opened now.
    Opened(&'a str),
}

/// A commit sent to the relay whose outcome is not known yet. It is kept
/// (as its frame) until an answer, or another member's commit for the same
/// epoch, settles it, so that it survives a lost connection or a restart.
#[derive(Debug, Clone)]
pub struct UnresolvedCommit {
    /// The group.
    pub group_id: Vec<u8>,
    /// The epoch it was made in.
    pub epoch: u64,
    /// The frame to send (again); its request id is the caller's to set.
    pub frame: ClientFrame,
}

impl UnresolvedCommit {
    fn new(sent: SentCommit) -> Self {
        let frame = ClientFrame::Commit {
            request: 0,
            group: GroupId(sent.group_id.clone()),
            epoch: sent.epoch,
            recipients: sent.recipients,
            payload: sent.commit,
            welcome: sent.welcome,
            next_key: sent.next_key,
            signature: sent.signature,
        };
        Self { group_id: sent.group_id, epoch: sent.epoch, frame }
    }

    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let frame = ClientFrame::decode(bytes).ok()?;
        let (ClientFrame::Commit { group, epoch, .. } | ClientFrame::SealedCommit { group, epoch, .. }) =
            &frame
        else {
            return None;
        };
        Some(Self { group_id: group.0.clone(), epoch: *epoch, frame })
    }
}

/// Key packages to upload, and what to do once the relay has them.
#[derive(Debug, Default)]
pub struct KeyPackageWork {
    /// The upload (request id 0), if any is due.
    pub upload: Option<ClientFrame>,
    retire: Vec<Vec<u8>>,
    last_resort: bool,
}

/// A conversation waiting to be accepted or declined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRequest {
    /// Its group.
    pub group_id: Vec<u8>,
    /// Who added us.
    pub by: AccountId,
}

/// The engine of one device, over its store, at one moment.
pub struct Engine<'a, S: DeviceStore> {
    store: &'a S,
    identity: &'a Identity,
    now: u64,
    rng: Box<dyn RngCore + 'a>,
}

impl<'a, S: DeviceStore> Engine<'a, S> {
    /// The engine of the device whose identity and store these are, at
    /// `now_ms` (Unix ms), drawing ids from `rng`.
    pub fn new(store: &'a S, identity: &'a Identity, now_ms: u64, rng: impl RngCore + 'a) -> Self {
        Self { store, identity, now: now_ms, rng: Box::new(rng) }
    }

    /// The store.
    pub fn store(&self) -> &'a S {
        self.store
    }

    /// The time the engine runs at (Unix ms).
    pub fn now_ms(&self) -> u64 {
        self.now
    }

    /// Our account.
    pub fn account(&self) -> AccountId {
        self.identity.account()
    }

    /// This device.
    pub fn device(&self) -> DeviceId {
        self.identity.device()
    }

    // ----- deliveries -----

    /// Processes one payload from the mailbox, then whatever it unlocked
    /// among the payloads held for a later epoch. Only a failure of the
    /// device's store is an error (the payload must be delivered again); a
    /// payload that cannot be processed becomes an [`Event::Unreadable`]
    /// in its conversation, so one broken payload never blocks the others.
    pub fn deliver(&mut self, payload: &[u8]) -> Result<(), StorageError> {
        if let Some(group_id) = self.accept_payload(payload, None, None, None)? {
            self.retry_held(&group_id)?;
        }
        Ok(())
    }

    /// Processes whatever waits for an epoch its group has reached, in
    /// every group. The driver calls it at login: a failure may have
    /// stopped [`Engine::deliver`] between a commit and what it unlocked,
    /// and the commit, already processed, is not processed again.
    pub fn retry_all_held(&mut self) -> Result<(), StorageError> {
        let mut groups: Vec<Vec<u8>> = Vec::new();
        for (key, _) in self.store.setting_heads_with_prefix(HELD_PREFIX, 0)? {
            let group = key[HELD_PREFIX.len()..]
                .split(':')
                .next()
                .and_then(|hex| data_encoding::HEXLOWER.decode(hex.as_bytes()).ok());
            if let Some(group) = group.filter(|group| !groups.contains(group)) {
                groups.push(group);
            }
        }
        for group_id in groups {
            self.retry_held(&group_id)?;
        }
        Ok(())
    }

    /// Processes a payload, fresh from the mailbox or held back earlier
    /// (`held`); one fresh from a queue comes with the hash of its sealed
    /// bytes (`sealed`), recorded as seen with it. A group message for an
    /// epoch we have not reached is held until the commit that leads there
    /// is processed. Returns the group whose epoch the payload moved (or
    /// that it made us join).
    fn accept_payload(
        &mut self,
        original: &[u8],
        held: Option<Held<'_>>,
        sealed: Option<&[u8; 32]>,
        route: Option<routing::RouteUpdate>,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        let store = self.store;
        let now = self.now;
        let hash: [u8; 32] = Sha256::digest(original).into();
        // An opened commit carries the queues it adds beside the commit.
        let (payload, opened_route) = routing::split_opened(original);
        let route = route.or(opened_route);
        let payload = &payload[..];
        let outcome = store.transaction(|store| {
            match held {
                // Recorded as seen when it was held.
                Some(Held::AsArrived(key)) => store.delete_setting(key)?,
                // Held sealed (from a queue), so recorded by its sealed
                // bytes: from now on seen as what it unseals to, which a
                // copy delivered again also unseals to. If such a copy
                // was processed first, this one is done.
                Some(Held::Opened(key)) => {
                    store.delete_setting(key)?;
                    if !store.first_sighting(&hash, now)? {
                        return Ok(None);
                    }
                }
                None => {
                    // Seen by its sealed bytes as well: a copy that comes
                    // again once its epoch's key is forgotten cannot be
                    // opened to be recognised.
                    // The sealed bytes first: seen sealed, it may be held
                    // still, unopened, and must not be taken for read.
                    if let Some(sealed) = sealed {
                        if !store.first_sighting(sealed, now)? {
                            return Ok(None);
                        }
                    }
                    if !store.first_sighting(&hash, now)? {
                        return Ok(None);
                    }
                }
            }
            if let Some((group_id, epoch)) = peek(payload) {
                let current = self.active_epoch(&group_id)?;
                if let Some(current) = current.filter(|current| epoch > *current) {
                    // The epoch in the header is not authenticated: only a
                    // few epochs ahead is believable, the rest is junk.
                    if epoch - current > HOLD_EPOCHS {
                        return Err(EngineError::Invalid("a message far ahead of its group's epoch".into()));
                    }
                    self.hold(&group_id, original)?;
                    return Ok(None);
                }
                // Before the epoch moves: its transport key, for payloads
                // still on their way in it.
                if store.setting(&routing_directory_key(&group_id))?.is_some() {
                    self.remember_transport(store, &group_id)?;
                }
            }
            let incoming = process_incoming(&store.provider(), payload)?;
            let changed = match &incoming {
                Incoming::Changed { group_id, .. } => Some(group_id.clone()),
                Incoming::Joined { conversation, .. } => Some(conversation.id()),
                _ => None,
            };
            let moved = match &incoming {
                Incoming::Changed { self_removed: true, .. } => None,
                _ => changed.clone(),
            };
            self.record(incoming)?;
            if let Some(group_id) = changed {
                if route.is_some() || store.setting(&routing_directory_key(&group_id))?.is_some() {
                    self.apply_route(store, &group_id, route)?;
                }
            }
            Ok::<_, EngineError>(moved)
        });
        match outcome {
            Ok(moved) => Ok(moved),
            Err(EngineError::Storage(error)) => Err(error),
            Err(_) => {
                store.transaction(|store| {
                    if let Some(Held::AsArrived(key) | Held::Opened(key)) = held {
                        store.delete_setting(key)?;
                    }
                    // Shown as lost once, however often it comes again.
                    let _seen = store.first_sighting(&hash, now)?;
                    if let Some(sealed) = sealed {
                        let _seen = store.first_sighting(sealed, now)?;
                    }
                    self.note_unreadable(payload)
                })?;
                Ok(None)
            }
        }
    }

    /// The epoch of a group we are an active member of.
    fn active_epoch(&self, group_id: &[u8]) -> Result<Option<u64>, EngineError> {
        let conversation = Conversation::load(&self.store.provider(), group_id)?;
        Ok(conversation.filter(|c| c.is_active()).map(|c| c.epoch()))
    }

    /// Processes what was held for `group_id` once its epoch has moved,
    /// oldest first, for as long as that makes progress (a held commit can
    /// unlock more).
    fn retry_held(&mut self, group_id: &[u8]) -> Result<(), StorageError> {
        let store = self.store;
        'passes: loop {
            let current = match self.active_epoch(group_id) {
                Ok(current) => current,
                Err(EngineError::Storage(error)) => return Err(error),
                // The group's state cannot be read: keep what is held (it
                // expires, shown as lost, if that never changes).
                Err(_) => return Ok(()),
            };
            let Some(current) = current else {
                // We left the group: what was held for it is of no use.
                store.delete_settings_with_prefix(&held_prefix(group_id))?;
                return Ok(());
            };
            for (key, value) in store.settings_with_prefix(&held_prefix(group_id))? {
                let Some(payload) = value.get(8..) else {
                    store.delete_setting(&key)?;
                    continue;
                };
                // One held sealed (from a queue) is opened once its epoch
                // is reached; one that then cannot be read is lost.
                let (payload, opened) = match self.open_held(group_id, current, payload) {
                    Ok(Some(payload)) => payload,
                    Ok(None) => continue,
                    Err(EngineError::Storage(error)) => return Err(error),
                    Err(_) => {
                        store.transaction(|store| {
                            store.delete_setting(&key)?;
                            self.note_unreadable_in(group_id)
                        })?;
                        continue;
                    }
                };
                let payload = &payload[..];
                if peek(&routing::split_opened(payload).0).is_some_and(|(_, epoch)| epoch > current) {
                    continue;
                }
                // Processing it may move the epoch: look again from the start.
                let held = if opened { Held::Opened(&key) } else { Held::AsArrived(&key) };
                if self.accept_payload(payload, Some(held), None, None)?.is_some() {
                    continue 'passes;
                }
            }
            return Ok(());
        }
    }

    /// Keeps a payload for a later epoch of `group_id`, in arrival order,
    /// with the time it arrived.
    fn hold(&self, group_id: &[u8], payload: &[u8]) -> Result<(), EngineError> {
        let store = self.store;
        let (count, bytes) = store.count_settings_with_prefix(&held_prefix(group_id))?;
        if count >= MAX_HELD || bytes.saturating_add(payload.len() as u64) > MAX_HELD_BYTES {
            return Err(EngineError::Invalid("too many messages ahead of this group's epoch".into()));
        }
        let seq = number_setting(store, "held_seq")?.unwrap_or(0).wrapping_add(1);
        store.set_setting("held_seq", &seq.to_be_bytes())?;
        let mut value = self.now.to_be_bytes().to_vec();
        value.extend_from_slice(payload);
        store.set_setting(&format!("{}{seq:016x}", held_prefix(group_id)), &value)?;
        Ok(())
    }

    /// Gives up on payloads held longer than the relay keeps anything:
    /// the commit they wait for is not coming. Each is shown as lost.
    pub fn expire_held(&mut self) -> Result<(), StorageError> {
        let store = self.store;
        let now = self.now;
        // Only the 8-byte arrival time of each, not the payloads.
        for (key, head) in store.setting_heads_with_prefix(HELD_PREFIX, 8)? {
            let held_at = head.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes).unwrap_or(0);
            // A clock set back must not keep a payload forever.
            let held_at = held_at.min(now);
            if now.saturating_sub(held_at) < HELD_FOR.as_millis() as u64 {
                continue;
            }
            store.transaction(|store| {
                store.delete_setting(&key)?;
                // The group is in the key: a payload held sealed does not
                // say whose it is.
                let group = key[HELD_PREFIX.len()..]
                    .split(':')
                    .next()
                    .and_then(|hex| data_encoding::HEXLOWER.decode(hex.as_bytes()).ok());
                match group {
                    Some(group_id) => self.note_unreadable_in(&group_id),
                    None => Ok(()),
                }
            })?;
        }
        Ok(())
    }

    /// Shows, in its conversation, that a payload could not be read, so
    /// nothing is lost without the user knowing. (A payload for no
    /// conversation of ours is only logged: there is nobody to tell.)
    fn note_unreadable(&mut self, payload: &[u8]) -> Result<(), StorageError> {
        let Some((group_id, _)) = peek(&routing::split_opened(payload).0) else { return Ok(()) };
        self.note_unreadable_in(&group_id)
    }

    /// As [`Engine::note_unreadable`], for a payload known to be `group_id`'s.
    fn note_unreadable_in(&mut self, group_id: &[u8]) -> Result<(), StorageError> {
        let store = self.store;
        let group_id = group_id.to_vec();
        if !store.conversation(&group_id)?.is_some_and(|c| c.active) {
            return Ok(());
        }
        // One notice per group and epoch: anyone who knows a group's id can
        // send it junk, and must not be able to flood it with notices.
        let epoch =
            Conversation::load(&store.provider(), &group_id).ok().flatten().map(|c| c.epoch()).unwrap_or(0);
        let noted = format!("unreadable:{}", hex(&group_id));
        if number_setting(store, &noted)? == Some(epoch) {
            return Ok(());
        }
        store.set_setting(&noted, &epoch.to_be_bytes())?;
        self.note_event(&group_id, AccountId([0; 20]), &Event::Unreadable, false)
    }

    fn record(&mut self, incoming: Incoming) -> Result<(), EngineError> {
        let store = self.store;
        let now = self.now;
        match incoming {
            Incoming::Joined { conversation, by, relay_key, .. } => {
                let group_id = conversation.id();
                // A Welcome into a group we were removed from, at or before
                // the epoch of the removal, is a replay: refused (and the
                // join rolled back with the transaction).
                if number_setting(store, &left_key(&group_id))?
                    .is_some_and(|left| conversation.epoch() <= left)
                {
                    return Err(EngineError::Invalid("a replayed Welcome into a group we left".into()));
                }
                // A group we left and are added to again starts afresh: its
                // creator describes it again, and its timer is off.
                store.insert_conversation(&group_id, &ConversationKind::Pending, now)?;
                store.set_conversation_active(&group_id, true)?;
                store.set_timer(&group_id, None)?;
                store.set_needs_update(&group_id, true)?;
                self.note_relay_key(&group_id, by, relay_key)?;
                // Added by someone we never chose to talk to: a request.
                if self.knows(&by)? {
                    store.delete_setting(&request_key(&group_id))?;
                } else {
                    store.set_setting(&request_key(&group_id), &by.0)?;
                }
            }
            Incoming::Message { group_id, sender, content, signed } => match content.body {
                Body::Text(text) => {
                    let expires_at_ms = content.expires_after_secs.map(|secs| now + u64::from(secs) * 1000);
                    let record = MessageRecord {
                        message_id: content.id,
                        group_id,
                        sender,
                        text,
                        sent_at_ms: content.sent_at_ms,
                        event: false,
                        expires_at_ms,
                        proof: Some(signed),
                    };
                    store.insert_message(&record, now, false)?;
                }
                Body::Timer { secs } => {
                    store.set_timer(&group_id, secs)?;
                    let record = event_record(
                        content.id,
                        group_id,
                        sender,
                        content.sent_at_ms,
                        &Event::Timer { secs },
                    );
                    store.insert_message(&record, now, false)?;
                }
                Body::Info { group_name } => {
                    let members = self.members(&group_id)?;
                    let kind = described_kind(group_name, &group_id, sender, self.account(), &members);
                    let kind = self.unambiguous(kind, &group_id, sender)?;
                    let current = store.conversation(&group_id)?.map(|c| c.kind);
                    if matches!(current, None | Some(ConversationKind::Pending)) {
                        store.insert_conversation(&group_id, &kind, now)?;
                        if matches!(kind, ConversationKind::Group { .. }) {
                            let event = Event::Joined { by: sender };
                            let record =
                                event_record(content.id, group_id, sender, content.sent_at_ms, &event);
                            store.insert_message(&record, now, true)?;
                        }
                    }
                }
            },
            Incoming::Changed { group_id, sender, added, removed, self_removed, epoch, relay_key } => {
                // Another member's commit won the epoch of our unresolved
                // one (merging it dropped ours).
                store.delete_setting(&unresolved_key(&group_id))?;
                self.record_membership(&group_id, sender, &added, &removed)?;
                self.note_relay_key(&group_id, sender, relay_key)?;
                if self_removed {
                    store.set_conversation_active(&group_id, false)?;
                    store.set_setting(&left_key(&group_id), &epoch.to_be_bytes())?;
                    store.delete_settings_with_prefix(&held_prefix(&group_id))?;
                }
            }
            Incoming::Ignored => {}
        }
        store.forget_sightings(now.saturating_sub(SIGHTING_MEMORY.as_millis() as u64))?;
        Ok(())
    }

    /// Shows a problem with the relay key a commit or Welcome announced:
    /// changing the group may fail from now on, and the members should
    /// know whose doing it is (or that it cannot be told).
    fn note_relay_key(
        &mut self,
        group_id: &[u8],
        by: AccountId,
        check: RelayKeyCheck,
    ) -> Result<(), StorageError> {
        let event = match check {
            RelayKeyCheck::Confirmed | RelayKeyCheck::NotApplicable => return Ok(()),
            RelayKeyCheck::Wrong => Event::RelayKeyWrong { by },
            RelayKeyCheck::Unverified => Event::RelayKeyUnverified { by },
        };
        self.note_event(group_id, by, &event, false)
    }

    /// Notes a member change in a group's history as events ("alice added
    /// bob"), shown (not unread). A one-to-one conversation that gains or
    /// loses a member is one no longer: it is shown as a group from now
    /// on, with the change, so no one joins a private conversation unseen.
    pub fn record_membership(
        &mut self,
        group_id: &[u8],
        by: AccountId,
        added: &[AccountId],
        removed: &[AccountId],
    ) -> Result<(), EngineError> {
        let store = self.store;
        match store.conversation(group_id)?.map(|c| c.kind) {
            Some(ConversationKind::Group { .. }) => {}
            Some(ConversationKind::Direct { peer }) if !added.is_empty() || !removed.is_empty() => {
                let members = self.members(group_id)?;
                let kind = described_kind(None, group_id, peer, self.account(), &members);
                let kind = self.unambiguous(kind, group_id, peer)?;
                store.insert_conversation(group_id, &kind, self.now)?;
            }
            _ => return Ok(()),
        }
        if !added.is_empty() {
            self.note_event(group_id, by, &Event::Added { by, members: added.to_vec() }, true)?;
        }
        if !removed.is_empty() {
            self.note_event(group_id, by, &Event::Removed { by, members: removed.to_vec() }, true)?;
        }
        Ok(())
    }

    /// A received group name made unambiguous: a name that could be taken
    /// for an account id, a contact or another active group (so that
    /// `hush send NAME` would reach the wrong people) gets the creator's
    /// name and the group id's start added.
    fn unambiguous(
        &self,
        kind: ConversationKind,
        group_id: &[u8],
        creator: AccountId,
    ) -> Result<ConversationKind, EngineError> {
        let ConversationKind::Group { name } = kind else { return Ok(kind) };
        let store = self.store;
        let taken = |name: &str| -> Result<bool, EngineError> {
            Ok(name.parse::<AccountId>().is_ok()
                || store.contact(name)?.is_some()
                || store.group_by_name(name)?.is_some_and(|g| g.group_id != group_id))
        };
        if !taken(&name)? {
            return Ok(ConversationKind::Group { name });
        }
        let by = store.contact_name(&creator)?.unwrap_or_else(|| creator.to_string());
        let short = hex(group_id.get(..4).unwrap_or(group_id));
        Ok(ConversationKind::Group { name: format!("{name} (from {by}, {short})") })
    }

    /// Stores an event in a conversation's history (`shown`: not counted
    /// as unread, `recv` skips it).
    fn note_event(
        &mut self,
        group_id: &[u8],
        sender: AccountId,
        event: &Event,
        shown: bool,
    ) -> Result<(), StorageError> {
        let mut id = [0u8; 16];
        self.rng.fill_bytes(&mut id);
        let record = event_record(id, group_id.to_vec(), sender, self.now, event);
        self.store.insert_message(&record, self.now, shown)?;
        Ok(())
    }

    // ----- conversations -----

    /// The members of a conversation we hold the state of, us included.
    pub fn members(&self, group_id: &[u8]) -> Result<Vec<AccountId>, EngineError> {
        Ok(Conversation::load(&self.store.provider(), group_id)?
            .map(|conversation| conversation.members())
            .transpose()?
            .unwrap_or_default())
    }

    /// Every member device of a group (one per account today).
    pub fn devices(&self, group_id: &[u8]) -> Result<Vec<MemberId>, EngineError> {
        Ok(Conversation::load(&self.store.provider(), group_id)?
            .map(|conversation| conversation.devices())
            .transpose()?
            .unwrap_or_default())
    }

    /// True for people this device chose to talk to: contacts, and peers
    /// of one-to-one conversations it started or accepted.
    pub fn knows(&self, account: &AccountId) -> Result<bool, StorageError> {
        if *account == self.account() || self.store.contact_name(account)?.is_some() {
            return Ok(true);
        }
        for conversation in self.store.direct_conversations(account)? {
            if conversation.active && !self.is_request(&conversation.group_id)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// A new group with only us in it; [`Engine::describe`] records it once
    /// the first commit adding the others is accepted.
    pub fn create_group(&self) -> Result<Vec<u8>, EngineError> {
        Ok(Conversation::create(&self.store.provider(), self.identity)?.id())
    }

    /// Records a conversation we made, as `kind`.
    pub fn describe(&self, group_id: &[u8], kind: &ConversationKind) -> Result<(), StorageError> {
        self.store.insert_conversation(group_id, kind, self.now)?;
        self.store.updated(group_id, self.now)
    }

    /// Content to send now, with a fresh id.
    pub fn content(&mut self, body: Body) -> Content {
        let mut id = [0u8; 16];
        self.rng.fill_bytes(&mut id);
        Content { id, sent_at_ms: self.now, body, expires_after_secs: None }
    }

    /// Encrypts content for a group we are in. Writing into a conversation
    /// request accepts it. Call only with no unresolved commit in the
    /// group: never write at an epoch whose successor may be ordered.
    pub fn encrypt(&self, group_id: &[u8], content: &Content) -> Result<Outgoing, EngineError> {
        self.store.delete_setting(&request_key(group_id))?;
        let provider = self.store.provider();
        let mut conversation = Conversation::load(&provider, group_id)?
            .ok_or_else(|| EngineError::Invalid("conversation state is missing".into()))?;
        Ok(conversation.encrypt(&provider, self.identity, content)?)
    }

    /// Records what we sent, once the relay has accepted it: a text in
    /// our history (counted for the self-update policy), a timer change as
    /// an event.
    pub fn sent(&mut self, group_id: &[u8], content: &Content) -> Result<(), StorageError> {
        let me = self.account();
        let now = self.now;
        self.store.transaction(|store| match &content.body {
            Body::Text(text) => {
                let record = MessageRecord {
                    message_id: content.id,
                    group_id: group_id.to_vec(),
                    sender: me,
                    text: text.clone(),
                    sent_at_ms: content.sent_at_ms,
                    event: false,
                    expires_at_ms: content
                        .expires_after_secs
                        .map(|secs| content.sent_at_ms + u64::from(secs) * 1000),
                    proof: None,
                };
                store.insert_message(&record, now, true)?;
                store.count_sent(group_id)
            }
            Body::Timer { secs } => {
                store.set_timer(group_id, *secs)?;
                let event = Event::Timer { secs: *secs };
                let record = event_record(content.id, group_id.to_vec(), me, content.sent_at_ms, &event);
                store.insert_message(&record, now, true).map(drop)
            }
            Body::Info { .. } => Ok(()),
        })
    }

    // ----- commits -----

    /// Makes a commit with `make` and keeps it as unresolved until
    /// [`Engine::settle_commit`]; returns the frame to send (request id
    /// 0). Changing a conversation request's members accepts it.
    pub fn stage_commit(
        &self,
        group_id: &[u8],
        make: impl FnOnce(&mut Conversation, &S::Provider<'_>, &Identity) -> Result<SentCommit, CoreError>,
    ) -> Result<ClientFrame, EngineError> {
        let identity = self.identity;
        self.store.transaction(|store| {
            store.delete_setting(&request_key(group_id))?;
            let provider = store.provider();
            let mut conversation = Conversation::load(&provider, group_id)?
                .ok_or_else(|| EngineError::Invalid("conversation state is missing".into()))?;
            let unresolved = UnresolvedCommit::new(make(&mut conversation, &provider, identity)?);
            store.set_setting(&unresolved_key(group_id), &unresolved.frame.encode())?;
            Ok(unresolved.frame)
        })
    }

    /// True if a commit of ours in this group awaits its outcome.
    pub fn has_unresolved(&self, group_id: &[u8]) -> Result<bool, StorageError> {
        Ok(self.store.setting(&unresolved_key(group_id))?.is_some())
    }

    /// Every commit of ours whose outcome is not known (damaged records are
    /// dropped).
    pub fn unresolved_commits(&self) -> Result<Vec<UnresolvedCommit>, StorageError> {
        let mut commits = Vec::new();
        for (key, bytes) in self.store.settings_with_prefix(UNRESOLVED_PREFIX)? {
            match UnresolvedCommit::from_bytes(&bytes) {
                Some(commit) => commits.push(commit),
                None => self.store.delete_setting(&key)?,
            }
        }
        Ok(commits)
    }

    /// Forgets an unresolved commit that cannot be settled.
    pub fn drop_unresolved(&self, group_id: &[u8]) -> Result<(), StorageError> {
        self.store.delete_setting(&unresolved_key(group_id))
    }

    /// Settles our unresolved commit in a group: merged if it `won` its
    /// epoch, dropped if it lost. Does nothing if it was settled already
    /// (another member's commit for the same epoch was processed) or if
    /// the group has moved past it. What arrived for the new epoch while
    /// the outcome was unknown is processed then. Returns true if merged.
    pub fn settle_commit(&mut self, group_id: &[u8], won: bool) -> Result<bool, EngineError> {
        let merged = self.store.transaction(|store| {
            let key = unresolved_key(group_id);
            let Some(bytes) = store.setting(&key)? else { return Ok(false) };
            store.delete_setting(&key)?;
            let Some(unresolved) = UnresolvedCommit::from_bytes(&bytes) else { return Ok(false) };
            let provider = store.provider();
            let Some(mut conversation) = Conversation::load(&provider, group_id)? else { return Ok(false) };
            if conversation.epoch() != unresolved.epoch || !conversation.has_pending_commit() {
                return Ok(false);
            }
            if won {
                conversation.confirm_commit(&provider)?;
            } else {
                conversation.abandon_commit(&provider)?;
            }
            if matches!(unresolved.frame, ClientFrame::SealedCommit { .. }) {
                self.settle_route(store, group_id, won)?;
                if won {
                    self.remember_transport(store, group_id)?;
                }
            }
            Ok::<_, EngineError>(won)
        })?;
        if merged {
            self.retry_held(group_id)?;
        }
        Ok(merged)
    }

    /// The epoch of a group and whether we are still in it.
    pub fn epoch(&self, group_id: &[u8]) -> Result<Option<(u64, bool)>, EngineError> {
        Ok(Conversation::load(&self.store.provider(), group_id)?.map(|c| (c.epoch(), c.is_active())))
    }

    // ----- self-updates -----

    /// Once per profile: every group owes a self-update, so the relay
    /// learns each group's epoch key from a member (a group ordered before
    /// relays checked commits has none, and its next commit sets it).
    pub fn key_groups_at_the_relay(&self) -> Result<(), StorageError> {
        if self.store.setting("commit_keys")?.is_some() {
            return Ok(());
        }
        self.store.transaction(|store| {
            for conversation in store.conversations()? {
                if conversation.active {
                    store.set_needs_update(&conversation.group_id, true)?;
                }
            }
            store.set_setting("commit_keys", b"v2")
        })
    }

    /// True if we owe this group a self-update before writing to it (just
    /// joined, 100 messages sent, or the interval passed).
    pub fn update_due_before_sending(
        &self,
        group_id: &[u8],
        policy: &UpdatePolicy,
    ) -> Result<bool, StorageError> {
        let Some(record) = self.store.conversation(group_id)? else { return Ok(false) };
        let due = update_due(&record, policy, self.now) || record.sent_since_update >= policy.after_messages;
        Ok(due && record.active)
    }

    /// Every group owed a self-update now (just joined, or the last one is
    /// older than the policy allows), also groups we only read:
    /// post-compromise security must not depend on talking. Requests are
    /// left alone until accepted, and a group whose last try failed waits.
    pub fn updates_due(&self, policy: &UpdatePolicy) -> Result<Vec<Vec<u8>>, StorageError> {
        let mut due = Vec::new();
        for conversation in self.store.conversations()? {
            let retry_at = number_setting(self.store, &retry_key(&conversation.group_id))?.unwrap_or(0);
            if conversation.active
                && !self.is_request(&conversation.group_id)?
                && update_due(&conversation, policy, self.now)
                && self.now >= retry_at
            {
                due.push(conversation.group_id);
            }
        }
        Ok(due)
    }

    /// Notes a self-update made.
    pub fn updated(&self, group_id: &[u8]) -> Result<(), StorageError> {
        self.store.updated(group_id, self.now)
    }

    /// Notes a failed self-update: tried again in an hour.
    pub fn defer_update(&self, group_id: &[u8]) -> Result<(), StorageError> {
        let retry_at = self.now.saturating_add(UPDATE_RETRY.as_millis() as u64);
        self.store.set_setting(&retry_key(group_id), &retry_at.to_be_bytes())
    }

    // ----- deactivated members -----

    /// Who to remove from a group because the relay reported their account
    /// deactivated: members other than us, never more than half of the
    /// others at once (so a lying relay cannot empty a group with one
    /// answer), never in a request. A one-to-one conversation is not
    /// changed: it says so, once.
    pub fn deactivated(
        &mut self,
        group_id: &[u8],
        accounts: &[AccountId],
    ) -> Result<Vec<AccountId>, EngineError> {
        let store = self.store;
        let Some(record) = store.conversation(group_id)?.filter(|c| c.active) else { return Ok(Vec::new()) };
        if self.is_request(group_id)? {
            return Ok(Vec::new());
        }
        let members = self.members(group_id)?;
        let me = self.account();
        let gone: Vec<AccountId> =
            accounts.iter().filter(|account| **account != me && members.contains(account)).copied().collect();
        if gone.is_empty() || matches!(record.kind, ConversationKind::Direct { .. }) {
            let noted = format!("inactive_noted:{}", hex(group_id));
            let first = if store.setting(&noted)?.is_none() { gone.first() } else { None };
            if let Some(first) = first {
                store.set_setting(&noted, &[1])?;
                self.note_event(group_id, *first, &Event::Deactivated { account: *first }, false)?;
            }
            return Ok(Vec::new());
        }
        let others = members.len().saturating_sub(1);
        if gone.len() * 2 > others {
            return Err(EngineError::Invalid(
                "the relay reports most of a group deactivated; not removing".into(),
            ));
        }
        Ok(gone)
    }

    // ----- key packages -----

    /// The key packages this device made and still keeps private keys for.
    pub fn issued_key_packages(&self) -> Result<Vec<IssuedKeyPackage>, StorageError> {
        Ok(self
            .store
            .settings_with_prefix(KEY_PACKAGE_PREFIX)?
            .into_iter()
            .filter_map(|(_, bytes)| IssuedKeyPackage::from_bytes(&bytes))
            .collect())
    }

    /// Makes the key packages the policy asks for (more one-time packages
    /// when the relay holds fewer than `held_by_relay` says, a new
    /// last-resort package every week) and deletes the private keys of
    /// packages that expired or were replaced, once the grace for Welcomes
    /// still in flight is over. The upload it returns is the caller's to
    /// send; [`Engine::key_packages_accepted`] follows its acceptance.
    pub fn key_package_work(&self, held_by_relay: u32) -> Result<KeyPackageWork, EngineError> {
        let now = self.now / 1000;
        let mut policy = KeyPackagePolicy::default();
        if self.store.setting(LAST_RESORT_USABLE)?.is_none() {
            // Last-resort packages made before this setting existed lacked
            // the capability that lets others use them: replace them now,
            // and until the relay takes one, try again hourly (not at every
            // upkeep: a relay that refuses must not make a key a minute).
            policy.rotate_last_resort_secs = 3600;
        }
        let plan = policy.plan(now, &self.issued_key_packages()?, held_by_relay);
        let identity = self.identity;
        self.store.transaction(|store| {
            for hash_ref in &plan.delete {
                delete_key_package(&store.provider(), hash_ref)?;
                store.delete_setting(&key_package_key(hash_ref))?;
            }
            if !plan.uploads() {
                return Ok(KeyPackageWork::default());
            }
            let batch = new_key_packages(&store.provider(), identity, plan.one_time, plan.last_resort, now)?;
            for record in &batch.issued {
                store.set_setting(&key_package_key(&record.hash_ref), &record.to_bytes())?;
            }

            let upload = ClientFrame::UploadKeyPackages {
                request: 0,
                one_time: batch.one_time,
                last_resort: batch.last_resort,
                expires_at: batch.not_after,
            };
            let last_resort = plan.last_resort;
            Ok::<_, EngineError>(KeyPackageWork {
                upload: Some(upload),
                retire: plan.retire.clone(),
                last_resort,
            })
        })
    }

    /// The relay has the new key packages: the ones they replace are
    /// retired (their private keys go once the grace is over).
    pub fn key_packages_accepted(&self, work: &KeyPackageWork) -> Result<(), StorageError> {
        for hash_ref in &work.retire {
            let key = key_package_key(hash_ref);
            if let Some(mut record) = self.store.setting(&key)?.and_then(|b| IssuedKeyPackage::from_bytes(&b))
            {
                record.retired_at = Some(self.now / 1000);
                self.store.set_setting(&key, &record.to_bytes())?;
            }
        }
        if work.last_resort {
            self.store.set_setting(LAST_RESORT_USABLE, &[1])?;
        }
        Ok(())
    }

    // ----- conversation requests -----

    /// True if `group_id` is a conversation request not yet accepted.
    pub fn is_request(&self, group_id: &[u8]) -> Result<bool, StorageError> {
        Ok(self.store.setting(&request_key(group_id))?.is_some())
    }

    /// Conversations waiting to be accepted or declined.
    pub fn requests(&self) -> Result<Vec<PendingRequest>, StorageError> {
        let mut requests = Vec::new();
        for (name, by) in self.store.settings_with_prefix(REQUEST_PREFIX)? {
            let group = data_encoding::HEXLOWER.decode(&name.as_bytes()[REQUEST_PREFIX.len()..]);
            let by = <[u8; 20]>::try_from(by.as_slice()).map(AccountId);
            if let (Ok(group_id), Ok(by)) = (group, by) {
                requests.push(PendingRequest { group_id, by });
            }
        }
        Ok(requests)
    }

    /// Accepts a request: the conversation becomes an ordinary one.
    pub fn accept_request(&self, group_id: &[u8]) -> Result<(), StorageError> {
        self.store.delete_setting(&request_key(group_id))
    }

    /// Declines a request: the group's keys and messages are deleted from
    /// this device and anything later sent to it is ignored (a Welcome
    /// replayed into it is refused; a new one makes a new request).
    pub fn decline_request(&self, group_id: &[u8]) -> Result<(), EngineError> {
        self.store.transaction(|store| {
            let provider = store.provider();
            if let Some(conversation) = Conversation::load(&provider, group_id)? {
                store.set_setting(&left_key(group_id), &conversation.epoch().to_be_bytes())?;
                conversation.forget(&provider)?;
            }
            store.set_conversation_active(group_id, false)?;
            store.delete_messages(group_id)?;
            store.delete_setting(&request_key(group_id))?;
            store.delete_settings_with_prefix(&held_prefix(group_id))?;
            Ok(())
        })
    }
}

fn routing_directory_key(group_id: &[u8]) -> String {
    format!("directory:{}", hex(group_id))
}

fn hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(bytes)
}

fn held_prefix(group_id: &[u8]) -> String {
    format!("{HELD_PREFIX}{}:", hex(group_id))
}

fn key_package_key(hash_ref: &[u8]) -> String {
    format!("{KEY_PACKAGE_PREFIX}{}", hex(hash_ref))
}

fn unresolved_key(group_id: &[u8]) -> String {
    format!("{UNRESOLVED_PREFIX}{}", hex(group_id))
}

fn request_key(group_id: &[u8]) -> String {
    format!("{REQUEST_PREFIX}{}", hex(group_id))
}

fn retry_key(group_id: &[u8]) -> String {
    format!("update_retry:{}", hex(group_id))
}

fn left_key(group_id: &[u8]) -> String {
    format!("left_epoch:{}", hex(group_id))
}

fn number_setting(store: &impl DeviceStore, name: &str) -> Result<Option<u64>, StorageError> {
    Ok(store
        .setting(name)?
        .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_slice()).ok())
        .map(u64::from_be_bytes))
}

/// Owed a self-update: just joined, or the last one is older than the
/// policy's longest interval.
fn update_due(record: &ConversationRecord, policy: &UpdatePolicy, now_ms: u64) -> bool {
    let interval = u64::try_from(policy.after.as_millis()).unwrap_or(u64::MAX);
    record.needs_update || now_ms.saturating_sub(record.last_update_ms) >= interval
}

/// What a conversation is, given how its creator described it (a group
/// name, or none for one-to-one) and who is actually in it: one-to-one only
/// with exactly the creator and us. Anything else is shown as a group
/// (named after its id), so a hidden third member cannot pass for a
/// private conversation.
fn described_kind(
    group_name: Option<String>,
    group_id: &[u8],
    creator: AccountId,
    me: AccountId,
    members: &[AccountId],
) -> ConversationKind {
    let just_us = members.len() == 2 && members.contains(&creator) && members.contains(&me) && creator != me;
    match group_name {
        Some(name) => ConversationKind::Group { name },
        None if just_us => ConversationKind::Direct { peer: creator },
        None => {
            ConversationKind::Group { name: format!("group-{}", hex(group_id.get(..4).unwrap_or(group_id))) }
        }
    }
}

fn event_record(
    id: [u8; 16],
    group_id: Vec<u8>,
    sender: AccountId,
    at_ms: u64,
    event: &Event,
) -> MessageRecord {
    MessageRecord {
        message_id: id,
        group_id,
        sender,
        text: event.encode(),
        sent_at_ms: at_ms,
        event: true,
        expires_at_ms: None,
        proof: None,
    }
}

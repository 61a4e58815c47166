//! An unlocked profile: identity, relay settings and the local store.

use std::path::Path;
use std::time::Duration;

use hush_core::engine::PendingRequest;
use hush_core::{Engine, Event, Identity};
use hush_proto::{AccountId, CertificatePin, IdentityKey, Invite, WipeCode};
use hush_store::{ConversationKind, ConversationRecord, KdfParams, MessageRecord, Rekey, Store, StoreError};
use openmls_traits::OpenMlsProvider;

use crate::error::ClientError;

/// A message as shown to the person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// The message id (hex).
    pub id: String,
    /// The contact or group name (or the peer's account id).
    pub conversation: String,
    /// The sender's account id.
    pub from: AccountId,
    /// The text.
    pub text: String,
    /// The sender's clock, Unix milliseconds.
    pub sent_at_ms: u64,
    /// A system event (such as a timer change) rather than a message.
    pub event: bool,
    /// In a conversation someone who is not a contact added us to, not
    /// accepted yet (see [`Client::requests`]).
    pub request: bool,
    /// When the message disappears (Unix ms), if it does.
    pub expires_at_ms: Option<u64>,
}

/// A conversation someone who is not a contact added us to. Its messages
/// are shown (marked as a request), but the device sends nothing into it,
/// not even a self-update, so the stranger learns nothing (not even that
/// this device is alive) until it is accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The conversation's name as it is shown.
    pub conversation: String,
    /// Who added us.
    pub from: AccountId,
    /// How many members the group has, us included.
    pub members: usize,
    /// The group id.
    pub group_id: Vec<u8>,
}

impl Request {
    /// The request's id (the group id, hex); `accept` and `decline` take
    /// it, or any start of it of 8 characters or more that no other
    /// request shares.
    pub fn id(&self) -> String {
        data_encoding::HEXLOWER.encode(&self.group_id)
    }
}

/// One conversation as a conversation list shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationSummary {
    /// The contact or group name (or the peer's account id).
    pub name: String,
    /// A named group rather than a one-to-one conversation.
    pub group: bool,
    /// Messages that arrived and were not shown yet.
    pub unread: u64,
    /// When the last message arrived or was sent (Unix ms; 0 if none).
    pub last_activity_ms: u64,
    /// The disappearing-message timer, if set.
    pub timer_secs: Option<u32>,
    /// A conversation request not accepted yet (see [`Client::requests`]).
    pub request: bool,
}

/// A member of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    /// Its account.
    pub account: AccountId,
    /// Its contact name here, if it is a contact.
    pub name: Option<String>,
    /// This profile's own account.
    pub you: bool,
}

/// What `send` and `history` were pointed at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A person, by account id.
    Account(AccountId),
    /// A named group.
    Group(ConversationRecord),
}

pub use hush_core::UpdatePolicy;

/// Where a client's time comes from: milliseconds since the Unix epoch.
pub type Clock = std::sync::Arc<dyn Fn() -> u64 + Send + Sync>;

/// An unlocked profile.
pub struct Client {
    pub(crate) store: Store,
    pub(crate) identity: Identity,
    pub(crate) relay_address: String,
    pub(crate) relay_pin: CertificatePin,
    clock: Clock,
}

pub(crate) use hush_store::now_ms;

/// How long a panic wipe waits for the relay to take its notice.
const PANIC_NOTICE_TIMEOUT: Duration = Duration::from_millis(400);

/// A wipe by the panic passphrase is announced to the relay (which
/// deactivates the account) before the caller hears of it.
fn announce_wipe(error: StoreError) -> ClientError {
    match error {
        StoreError::Wiped(Some(code)) => {
            notify_relay_of_wipe(*code, PANIC_NOTICE_TIMEOUT);
            ClientError::Store(StoreError::Wiped(None))
        }
        error => error.into(),
    }
}

/// Tells the relay about a wipe, on a thread of its own (callers may
/// already be inside a runtime), waiting at most `timeout` for it: a name
/// lookup that hangs is left behind, not waited for.
fn notify_relay_of_wipe(code: WipeCode, timeout: Duration) {
    let (done, finished) = std::sync::mpsc::channel();
    let notice = std::thread::Builder::new().name("hush-wipe-notice".into()).spawn(move || {
        if let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
            let _ = runtime.block_on(crate::session::send_wipe_order(&code, timeout));
            runtime.shutdown_background();
        }
        let _ = done.send(());
    });
    if notice.is_ok() {
        let _ = finished.recv_timeout(timeout + Duration::from_millis(50));
    }
}

fn system_clock() -> Clock {
    std::sync::Arc::new(now_ms)
}

fn text_setting(store: &Store, name: &str) -> Result<String, ClientError> {
    let bytes = store.setting(name)?.ok_or_else(|| ClientError::Invalid(format!("profile lacks {name}")))?;
    String::from_utf8(bytes).map_err(|_| ClientError::Invalid(format!("profile's {name} is damaged")))
}

impl Client {
    /// Creates a profile for an invite (not yet registered: see
    /// [`crate::Session::register`]). `max_attempts` wrong passphrases in a
    /// row wipe it (0: never).
    pub fn create(
        dir: &Path,
        passphrase: &[u8],
        params: KdfParams,
        max_attempts: u32,
        invite: &Invite,
        name: &str,
    ) -> Result<Self, ClientError> {
        let store = Store::create(dir, passphrase, params, max_attempts)?;
        let identity = store.transaction(|store| {
            let identity = Identity::generate(store.provider().storage())?;
            let mut wipe_secret = zeroize::Zeroizing::new([0u8; 32]);
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, wipe_secret.as_mut());
            store.set_setting("wipe_secret", wipe_secret.as_ref())?;
            store.set_setting("identity_key", &identity.key().0)?;
            store.set_setting("name", name.as_bytes())?;
            store.set_setting("relay_address", invite.address.as_bytes())?;
            store.set_setting("relay_pin", &invite.pin.0)?;
            Ok::<_, ClientError>(identity)
        })?;
        Ok(Self {
            store,
            identity,
            relay_address: invite.address.clone(),
            relay_pin: invite.pin,
            clock: system_clock(),
        })
    }

    /// True if `dir` holds a profile.
    pub fn exists(dir: &Path) -> bool {
        Store::exists(dir)
    }

    /// Deletes what a profile directory holds, unlocked or not (a join that
    /// failed half-way).
    pub fn discard(dir: &Path) -> Result<(), ClientError> {
        Ok(hush_store::wipe(dir)?)
    }

    /// Unlocks the profile in `dir`. The panic passphrase wipes it, and
    /// the relay is told at once (within 400 ms, whether it answers or
    /// not), so it deactivates the account; the error is then the one a
    /// missing profile gives.
    pub fn open(dir: &Path, passphrase: &[u8]) -> Result<Self, ClientError> {
        let store = Store::open(dir, passphrase).map_err(announce_wipe)?;
        let key = store
            .setting("identity_key")?
            .ok_or_else(|| ClientError::Invalid("profile is incomplete".into()))?;
        let key = IdentityKey(
            <[u8; 32]>::try_from(key.as_slice())
                .map_err(|_| ClientError::Invalid("profile is damaged".into()))?,
        );
        let identity = Identity::load(store.provider().storage(), &key)?;
        let relay_address = text_setting(&store, "relay_address")?;
        let pin = store.setting("relay_pin")?.unwrap_or_default();
        let relay_pin = CertificatePin(
            <[u8; 32]>::try_from(pin.as_slice())
                .map_err(|_| ClientError::Invalid("profile is damaged".into()))?,
        );
        Ok(Self { store, identity, relay_address, relay_pin, clock: system_clock() })
    }

    /// The wipe code: whoever holds it can order this device to wipe itself.
    pub fn wipe_code(&self) -> Result<WipeCode, ClientError> {
        let secret = self.wipe_secret()?;
        Ok(WipeCode {
            address: self.relay_address.clone(),
            pin: self.relay_pin,
            account: self.account(),
            secret: *secret,
        })
    }

    pub(crate) fn wipe_secret(&self) -> Result<zeroize::Zeroizing<[u8; 32]>, ClientError> {
        let bytes = zeroize::Zeroizing::new(self.store.setting("wipe_secret")?.unwrap_or_default());
        let mut secret = zeroize::Zeroizing::new([0u8; 32]);
        if bytes.len() != 32 {
            return Err(ClientError::Invalid("profile is damaged".into()));
        }
        secret.copy_from_slice(&bytes);
        Ok(secret)
    }

    /// Sets or changes the panic passphrase.
    pub fn set_panic_passphrase(&self, panic: &[u8]) -> Result<(), ClientError> {
        Ok(self.store.set_panic_passphrase(panic, &self.wipe_code()?)?)
    }

    /// Changes the passphrase, then replaces the database key (so an
    /// earlier copy of the key file opens nothing current with the old
    /// passphrase), and gives back the client on the re-keyed profile. The
    /// caller applies the strength floor ([`crate::strength::check`]); the
    /// panic passphrase is refused. While another process has the profile
    /// open the re-key waits for the next unlock ([`Rekey::Busy`]).
    pub fn change_passphrase(self, passphrase: &[u8]) -> Result<(Self, Rekey), ClientError> {
        self.store.change_passphrase(passphrase)?;
        let now = self.now_ms();
        let Client { store, identity, relay_address, relay_pin, clock } = self;
        let (store, outcome) = store.rekeyed(now)?;
        Ok((Client { store, identity, relay_address, relay_pin, clock }, outcome))
    }

    /// Wipes this profile (after a verified wipe order).
    pub fn wipe(self) -> Result<(), ClientError> {
        Ok(self.store.wipe()?)
    }

    /// Deletes messages whose timer ran out.
    pub fn purge_expired(&self) -> Result<usize, ClientError> {
        Ok(self.store.purge_expired(self.now_ms())?)
    }

    /// Replaces the clock this client reads (the system clock by default):
    /// for simulations and tests that move time on, and for devices whose
    /// time comes from elsewhere. Every policy (self-updates, key-package
    /// rotation, disappearing messages) reads it.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Now, by this client's clock (Unix milliseconds).
    pub fn now_ms(&self) -> u64 {
        (self.clock)()
    }

    /// True if `group_id` is a conversation request not yet accepted.
    pub fn is_request(&self, group_id: &[u8]) -> Result<bool, ClientError> {
        Ok(self.engine().is_request(group_id)?)
    }

    /// The protocol engine over this profile, at this moment.
    pub(crate) fn engine(&self) -> Engine<'_, Store> {
        Engine::new(&self.store, &self.identity, self.now_ms(), rand::rngs::OsRng)
    }

    /// Conversations waiting to be accepted or declined, oldest first.
    pub fn requests(&self) -> Result<Vec<Request>, ClientError> {
        let mut requests = Vec::new();
        for PendingRequest { group_id, by: from } in self.engine().requests()? {
            let Some(conversation) = hush_core::Conversation::load(&self.store.provider(), &group_id)? else {
                continue;
            };
            requests.push(Request {
                conversation: self.conversation_name(&group_id)?,
                from,
                members: conversation.members()?.len(),
                group_id,
            });
        }
        Ok(requests)
    }

    /// The request called `name`: its id (as [`Request::id`] shows it),
    /// its conversation name, or the account id of who added us.
    fn request(&self, name: &str) -> Result<Request, ClientError> {
        let requests = self.requests()?;
        let pick = |matches: &dyn Fn(&Request) -> bool| -> Vec<Request> {
            requests.iter().filter(|r| matches(r)).cloned().collect()
        };
        let start = |r: &Request| name.len() >= 8 && r.id().starts_with(name);
        for mut matching in [
            pick(&|r| r.id() == name),
            pick(&start),
            pick(&|r| r.conversation == name),
            pick(&|r| r.from.to_string() == name),
        ] {
            match matching.len() {
                0 => continue,
                1 => return Ok(matching.remove(0)),
                _ => {
                    return Err(ClientError::Invalid(format!(
                        "several requests match '{name}': use the id `hush requests` shows"
                    )))
                }
            }
        }
        Err(ClientError::Unknown(format!("no conversation request called '{name}'")))
    }

    /// Accepts a request: the conversation becomes an ordinary one (its
    /// owed self-update goes out at the next receive). Sending into it
    /// accepts it too.
    pub fn accept_request(&self, name: &str) -> Result<(), ClientError> {
        let request = self.request(name)?;
        Ok(self.engine().accept_request(&request.group_id)?)
    }

    /// Declines a request: the group's keys and messages are deleted from
    /// this device and anything later sent to it is ignored. The others are
    /// not told (nothing is sent to a stranger); they can add us again,
    /// which makes a new request.
    pub fn decline_request(&self, name: &str) -> Result<(), ClientError> {
        let request = self.request(name)?;
        Ok(self.engine().decline_request(&request.group_id)?)
    }

    /// The key packages this device made and still keeps private keys for.
    pub fn issued_key_packages(&self) -> Result<Vec<hush_core::IssuedKeyPackage>, ClientError> {
        Ok(self.engine().issued_key_packages()?)
    }

    /// The account id.
    pub fn account(&self) -> AccountId {
        self.identity.account()
    }

    /// This device (its account has one device today).
    pub fn device(&self) -> hush_proto::DeviceId {
        self.identity.device()
    }

    /// The self-update policy of this profile.
    pub fn update_policy(&self) -> Result<UpdatePolicy, ClientError> {
        let default = UpdatePolicy::default();
        let number = |name: &str, fallback: u64| -> Result<u64, ClientError> {
            Ok(self
                .store
                .setting(name)?
                .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_slice()).ok())
                .map(u64::from_be_bytes)
                .unwrap_or(fallback))
        };
        Ok(UpdatePolicy {
            after_messages: number("update_after_messages", default.after_messages)?.max(1),
            after: Duration::from_secs(number("update_after_secs", default.after.as_secs())?.max(1)),
        })
    }

    /// Changes the self-update policy.
    pub fn set_update_policy(&self, policy: UpdatePolicy) -> Result<(), ClientError> {
        self.store.set_setting("update_after_messages", &policy.after_messages.max(1).to_be_bytes())?;
        self.store.set_setting("update_after_secs", &policy.after.as_secs().max(1).to_be_bytes())?;
        Ok(())
    }

    /// The profile's display name.
    pub fn name(&self) -> Result<String, ClientError> {
        text_setting(&self.store, "name")
    }

    /// The relay this profile uses.
    pub fn relay(&self) -> (&str, CertificatePin) {
        (&self.relay_address, self.relay_pin)
    }

    /// Adds a contact.
    pub fn add_contact(&self, name: &str, account: AccountId) -> Result<(), ClientError> {
        if name.trim().is_empty() || name.parse::<AccountId>().is_ok() {
            return Err(ClientError::Invalid(
                "a contact name must not be empty or look like an account id".into(),
            ));
        }
        self.store.add_contact(name, &account)?;
        // Conversations this person started are no longer requests.
        for request in self.requests()? {
            if request.from == account {
                self.engine().accept_request(&request.group_id)?;
            }
        }
        Ok(())
    }

    /// Adds a contact from their contact code: a conversation with them
    /// starts through their contact queue, so the relay does not learn who
    /// added whom. Returns their account.
    pub fn add_contact_code(
        &self,
        name: &str,
        code: &hush_proto::ContactCode,
    ) -> Result<AccountId, ClientError> {
        self.add_contact(name, code.account)?;
        let mut route = code.queue.queue.0.to_vec();
        route.extend_from_slice(&code.queue.secret);
        self.store.set_setting(&contact_route_key(&code.account), &route)?;
        Ok(code.account)
    }

    /// Where a Welcome for `account` goes: its contact queue, if we have
    /// its contact code.
    pub(crate) fn contact_route(
        &self,
        account: &AccountId,
    ) -> Result<Option<hush_proto::Capability>, ClientError> {
        let Some(route) = self.store.setting(&contact_route_key(account))? else { return Ok(None) };
        let queue = route.get(..16).and_then(|b| b.try_into().ok()).map(hush_proto::QueueId);
        let secret = route.get(16..48).and_then(|b| b.try_into().ok());
        Ok(queue.zip(secret).map(|(queue, secret)| hush_proto::Capability { queue, secret }))
    }

    /// The queue this device receives a conversation's payloads in (for
    /// tools and tests that look at the relay's side).
    pub fn queue_of(&self, to: &str) -> Result<Option<hush_proto::QueueId>, ClientError> {
        let group_id = match self.resolve(to)? {
            Target::Group(group) => group.group_id,
            Target::Account(peer) => match self.store.direct_conversations(&peer)?.into_iter().next() {
                Some(conversation) => conversation.group_id,
                None => return Ok(None),
            },
        };
        let engine = self.engine();
        for (queue, _) in engine.own_queues()? {
            if engine.queue_group(&queue)?.as_deref() == Some(&group_id[..]) {
                return Ok(Some(queue));
            }
        }
        Ok(None)
    }

    /// Our contact code, once the first login made the contact queue.
    pub fn contact_code(&self) -> Result<Option<hush_proto::ContactCode>, ClientError> {
        let queue = self.engine().contact_queue()?;
        Ok(queue.map(|(queue, secret)| hush_proto::ContactCode {
            account: self.account(),
            queue: hush_proto::Capability { queue, secret },
        }))
    }

    /// All contacts.
    pub fn contacts(&self) -> Result<Vec<(String, AccountId)>, ClientError> {
        Ok(self.store.contacts()?)
    }

    /// Every active group.
    pub fn groups(&self) -> Result<Vec<(String, ConversationRecord)>, ClientError> {
        Ok(self
            .store
            .conversations()?
            .into_iter()
            .filter(|c| c.active)
            .filter_map(|c| match &c.kind {
                ConversationKind::Group { name } => Some((name.clone(), c.clone())),
                _ => None,
            })
            .collect())
    }

    /// The members of an active group, as the group's own MLS state has
    /// them (not a list the relay could change), each with its contact
    /// name if it has one; this profile's own account is marked.
    pub fn group_members(&self, name: &str) -> Result<Vec<GroupMember>, ClientError> {
        let record = self
            .store
            .group_by_name(name)?
            .ok_or_else(|| ClientError::Unknown(format!("'{name}' is not a group")))?;
        self.members_of(&record.group_id)
    }

    /// The members of a conversation (a group by name, or the one-to-one
    /// conversation with a contact or account id), from its own MLS state.
    pub fn conversation_members(&self, to: &str) -> Result<Vec<GroupMember>, ClientError> {
        let group_id = match self.resolve(to)? {
            Target::Group(record) => record.group_id,
            Target::Account(peer) => self
                .store
                .direct_conversations(&peer)?
                .into_iter()
                .next()
                .map(|record| record.group_id)
                .ok_or_else(|| ClientError::Unknown(format!("no conversation with '{to}' yet")))?,
        };
        self.members_of(&group_id)
    }

    fn members_of(&self, group_id: &[u8]) -> Result<Vec<GroupMember>, ClientError> {
        let group = hush_core::Conversation::load(&self.store.provider(), group_id)?
            .ok_or_else(|| ClientError::Invalid("the group's state is missing from this profile".into()))?;
        let me = self.account();
        group
            .members()?
            .into_iter()
            .map(|account| {
                Ok(GroupMember { account, name: self.store.contact_name(&account)?, you: account == me })
            })
            .collect()
    }

    /// Resolves a contact name, group name or account id.
    pub fn resolve(&self, to: &str) -> Result<Target, ClientError> {
        if let Some(account) = self.store.contact(to)? {
            return Ok(Target::Account(account));
        }
        // An account id before group names: a group someone else named
        // after an account id must not catch what is sent to that account.
        if let Ok(account) = to.parse::<AccountId>() {
            return Ok(Target::Account(account));
        }
        self.store
            .group_by_name(to)?
            .map(Target::Group)
            .ok_or_else(|| ClientError::Unknown(format!("'{to}' is not a contact, a group or an account id")))
    }

    /// Resolves a member (contact name or account id).
    pub fn resolve_member(&self, member: &str) -> Result<AccountId, ClientError> {
        if let Some(account) = self.store.contact(member)? {
            return Ok(account);
        }
        member
            .parse::<AccountId>()
            .map_err(|_| ClientError::Unknown(format!("'{member}' is not a contact or an account id")))
    }

    /// The stored messages of a conversation, oldest first.
    pub fn history(&self, to: &str) -> Result<Vec<ReceivedMessage>, ClientError> {
        self.purge_expired()?;
        let ids = self.group_ids(to)?;
        self.store.history(&ids)?.iter().map(|m| self.present(m)).collect()
    }

    /// The latest `limit` messages of a conversation, oldest first.
    pub fn recent_history(&self, to: &str, limit: usize) -> Result<Vec<ReceivedMessage>, ClientError> {
        self.purge_expired()?;
        let ids = self.group_ids(to)?;
        self.store.recent_history(&ids, limit)?.iter().map(|m| self.present(m)).collect()
    }

    /// A received message that can be reported, by its id (hex, as
    /// `ReceivedMessage::id` shows it): the message and its sender's
    /// signature. Our own messages, events and expired messages cannot be.
    pub fn reportable(&self, id: &str) -> Result<(ReceivedMessage, hush_core::SignedContent), ClientError> {
        self.purge_expired()?;
        let unknown = || ClientError::Unknown(format!("no message with id '{id}' on this device"));
        let message_id = data_encoding::HEXLOWER_PERMISSIVE
            .decode(id.trim().as_bytes())
            .ok()
            .and_then(|bytes| <[u8; 16]>::try_from(bytes).ok())
            .ok_or_else(unknown)?;
        let message = self.store.message(&message_id)?.ok_or_else(unknown)?;
        let Some(proof) = message.proof.clone() else {
            let why = if message.sender == self.account() {
                "it is your own message"
            } else if message.event {
                "it is an event, not a message"
            } else {
                "it arrived before messages carried their sender's signature"
            };
            return Err(ClientError::Invalid(format!("this message cannot be reported: {why}")));
        };
        Ok((self.present(&message)?, proof))
    }

    /// The id of the latest message someone else wrote in a conversation
    /// that can be reported (what `/report` in `hush chat` reports).
    pub fn last_reportable(&self, to: &str) -> Result<Option<String>, ClientError> {
        self.purge_expired()?;
        let ids = self.group_ids(to)?;
        let messages = self.store.recent_history(&ids, 200)?;
        Ok(messages
            .iter()
            .rev()
            .find(|message| message.proof.is_some())
            .map(|message| data_encoding::HEXLOWER.encode(&message.message_id)))
    }

    /// Messages received but not yet shown; marks them shown.
    pub fn take_unshown(&self) -> Result<Vec<ReceivedMessage>, ClientError> {
        self.purge_expired()?;
        let mut shown = Vec::new();
        for (seq, message) in self.store.unshown_messages()? {
            shown.push(self.present(&message)?);
            self.store.mark_shown(seq)?;
        }
        Ok(shown)
    }

    /// Every active conversation, most recent activity first. Two groups
    /// with the same peer (a simultaneous start) show as one conversation.
    pub fn conversation_summaries(&self) -> Result<Vec<ConversationSummary>, ClientError> {
        let activity: std::collections::HashMap<Vec<u8>, (u64, u64)> = self
            .store
            .activity()?
            .into_iter()
            .map(|(group_id, unread, last)| (group_id, (unread, last)))
            .collect();
        let mut summaries: Vec<ConversationSummary> = Vec::new();
        for record in self.store.conversations()? {
            if !record.active || record.kind == ConversationKind::Pending {
                continue;
            }
            let name = self.conversation_name(&record.group_id)?;
            let (unread, last) = activity.get(&record.group_id).copied().unwrap_or((0, 0));
            match summaries.iter_mut().find(|s| s.name == name) {
                Some(existing) => {
                    existing.unread += unread;
                    existing.last_activity_ms = existing.last_activity_ms.max(last);
                }
                None => summaries.push(ConversationSummary {
                    name,
                    group: matches!(record.kind, ConversationKind::Group { .. }),
                    unread,
                    last_activity_ms: last,
                    timer_secs: record.timer_secs,
                    request: self.is_request(&record.group_id)?,
                }),
            }
        }
        summaries.sort_by(|a, b| b.last_activity_ms.cmp(&a.last_activity_ms).then(a.name.cmp(&b.name)));
        Ok(summaries)
    }

    /// Marks every message of a conversation as shown (read).
    pub fn mark_read(&self, to: &str) -> Result<(), ClientError> {
        for group_id in self.group_ids(to)? {
            self.store.mark_group_shown(&group_id)?;
        }
        Ok(())
    }

    /// Checks the passphrase again (a lock screen). Same rules as
    /// [`Client::open`]: the panic passphrase wipes the profile.
    pub fn check_passphrase(&self, passphrase: &[u8]) -> Result<(), ClientError> {
        self.store.check_passphrase(passphrase).map_err(announce_wipe)
    }

    /// A contact's name, else the account id.
    pub fn display_name(&self, account: &AccountId) -> Result<String, ClientError> {
        Ok(self.store.contact_name(account)?.unwrap_or_else(|| account.to_string()))
    }

    fn group_ids(&self, to: &str) -> Result<Vec<Vec<u8>>, ClientError> {
        Ok(match self.resolve(to)? {
            Target::Account(peer) => {
                self.store.direct_conversations_any(&peer)?.into_iter().map(|c| c.group_id).collect()
            }
            Target::Group(group) => vec![group.group_id],
        })
    }

    /// The name a conversation is shown under.
    pub fn conversation_name(&self, group_id: &[u8]) -> Result<String, ClientError> {
        let Some(record) = self.store.conversation(group_id)? else { return Ok("unknown".into()) };
        Ok(match record.kind {
            ConversationKind::Direct { peer } => {
                self.store.contact_name(&peer)?.unwrap_or_else(|| peer.to_string())
            }
            ConversationKind::Group { name } => name,
            ConversationKind::Pending => "unknown".into(),
        })
    }

    /// A message's text; an event put into words with today's names.
    fn message_text(&self, message: &MessageRecord) -> Result<String, ClientError> {
        let Some(event) = message.event.then(|| Event::decode(&message.text)).flatten() else {
            return Ok(message.text.clone());
        };
        let me = self.account();
        let contacts = self.store.contacts()?;
        let name = |account: &AccountId| {
            if *account == me {
                return "you".to_owned();
            }
            contacts
                .iter()
                .find(|(_, known)| known == account)
                .map_or_else(|| account.to_string(), |(n, _)| n.clone())
        };
        Ok(event.describe(&name))
    }

    fn present(&self, message: &MessageRecord) -> Result<ReceivedMessage, ClientError> {
        Ok(ReceivedMessage {
            id: data_encoding::HEXLOWER.encode(&message.message_id),
            conversation: self.conversation_name(&message.group_id)?,
            from: message.sender,
            text: self.message_text(message)?,
            sent_at_ms: message.sent_at_ms,
            event: message.event,
            expires_at_ms: message.expires_at_ms,
            request: self.is_request(&message.group_id)?,
        })
    }
}

fn contact_route_key(account: &AccountId) -> String {
    format!("contact_route:{}", data_encoding::HEXLOWER.encode(&account.0))
}

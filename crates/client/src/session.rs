//! A logged-in connection for one profile: requests with answers, deliveries
//! processed as they arrive, commits retried when they lose their epoch.

use std::time::{Duration, Instant};

use hush_core::{
    delete_key_package, new_key_packages, process_incoming, verify_key_package, Body, Content, Conversation,
    Incoming, IssuedKeyPackage, KeyPackagePolicy, RelayKeyCheck, SentCommit, VerifiedKeyPackage,
};
use hush_proto::{AccountId, ClientFrame, ErrorCode, GroupId, RelayFrame};
use hush_store::{ConversationKind, ConversationRecord, MessageRecord};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::client::{now_ms, request_key, Client, Target, UpdatePolicy};
use crate::error::ClientError;
use crate::handshake::{handshake, Admission, Credentials};
use crate::transport::Connection;

/// How long a request may wait for its answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts for a commit that keeps losing its epoch.
const COMMIT_ATTEMPTS: usize = 8;
/// How long payload hashes are remembered for de-duplication.
const SIGHTING_MEMORY: Duration = Duration::from_secs(30 * 24 * 3600);

enum Answer {
    /// Done; recipients the relay skipped as deactivated.
    Accepted(Vec<AccountId>),
    KeyPackage(Vec<u8>),
    Stale(u64),
}

/// A frame the relay pushed, taken by [`Session::next_push`] and processed
/// by [`Session::handle_push`].
pub struct Push(RelayFrame);

/// A text message before it is sent. Its id and time are fixed once, so
/// sending it again after a lost connection cannot show it twice: every
/// member stores a message id once.
#[derive(Debug, Clone)]
pub struct Draft {
    id: [u8; 16],
    sent_at_ms: u64,
    text: String,
    expire_secs: Option<u32>,
}

impl Draft {
    /// A new message; `expire_secs` overrides the conversation's timer.
    pub fn new(text: &str, expire_secs: Option<u32>) -> Self {
        let mut id = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut id);
        Self { id, sent_at_ms: now_ms(), text: text.to_owned(), expire_secs }
    }

    /// The message id (hex), as [`crate::ReceivedMessage::id`] will show it.
    pub fn id(&self) -> String {
        data_encoding::HEXLOWER.encode(&self.id)
    }
}

/// A logged-in connection.
pub struct Session<'a> {
    client: &'a Client,
    connection: Connection,
    next_request: u32,
    subscribed: bool,
    queue_empty: bool,
    received: usize,
    /// Members the relay reported deactivated, by group, to be removed.
    inactive: Vec<(Vec<u8>, Vec<AccountId>)>,
}

impl<'a> Session<'a> {
    fn new(client: &'a Client, connection: Connection) -> Self {
        Self {
            client,
            connection,
            next_request: 1,
            subscribed: false,
            queue_empty: false,
            received: 0,
            inactive: Vec::new(),
        }
    }

    /// Opens a connection to the profile's relay and runs the handshake.
    async fn admit(client: &Client, credentials: Credentials) -> Result<(Connection, u32), ClientError> {
        let (address, pin) = client.relay();
        let mut connection = Connection::open(address, pin).await?;
        let sign = |purpose, nonce: &[u8; 32], pin: &hush_proto::CertificatePin| {
            Ok(client.identity.sign_challenge(purpose, nonce, pin)?)
        };
        match handshake(&mut connection, &pin, credentials, sign).await? {
            Admission::Ready { key_packages } => Ok((connection, key_packages)),
            Admission::WipeOrder(secret) => Err(wipe_order(client, &secret)),
        }
    }

    /// A raw logged-in connection for this profile, for tools that speak
    /// frames themselves. Nothing is received or processed on it.
    pub async fn connect(client: &Client) -> Result<Connection, ClientError> {
        Ok(Self::admit(client, Credentials::Login { account: client.account() }).await?.0)
    }

    /// Registers a new profile's account with an invite code, then uploads
    /// key packages.
    pub async fn register(client: &'a Client, invite_code: &str) -> Result<Session<'a>, ClientError> {
        let wipe_hash: [u8; 32] = Sha256::digest(client.wipe_secret()?.as_ref()).into();
        let credentials = Credentials::Register {
            invite_code: invite_code.to_owned(),
            identity_key: client.identity.key(),
            wipe_hash,
        };
        let (connection, _) = Self::admit(client, credentials).await?;
        let mut session = Self::new(client, connection);
        session.maintain_key_packages(0).await?;
        Ok(session)
    }

    /// Logs in; resolves commits whose answer was lost before anything else.
    pub async fn login(client: &'a Client) -> Result<Session<'a>, ClientError> {
        let (connection, key_packages) =
            Self::admit(client, Credentials::Login { account: client.account() }).await?;
        let mut session = Self::new(client, connection);
        match session.maintain_key_packages(key_packages).await {
            Ok(()) => {}
            // Refused (an upload already expired: this device's clock is
            // wrong): say so, and still let the user in.
            Err(ClientError::Relay(code)) => {
                tracing::warn!(?code, "the relay refused this device's key packages: is its clock right?");
            }
            Err(error) => return Err(error),
        }
        session.resolve_commits().await?;
        session.key_groups_at_the_relay()?;
        Ok(session)
    }

    /// Once per profile: every group owes a self-update, so the relay
    /// learns each group's epoch key from a member (a group ordered before
    /// relays checked commits has none, and its next commit sets it; that
    /// commit should be ours, soon).
    fn key_groups_at_the_relay(&self) -> Result<(), ClientError> {
        let store = &self.client.store;
        if store.setting("commit_keys")?.is_some() {
            return Ok(());
        }
        store.transaction(|store| {
            for conversation in store.conversations()? {
                if conversation.active {
                    store.set_needs_update(&conversation.group_id, true)?;
                }
            }
            store.set_setting("commit_keys", b"v2")?;
            Ok::<_, ClientError>(())
        })
    }

    fn wipe_order(&self, secret: &[u8; 32]) -> ClientError {
        wipe_order(self.client, secret)
    }

    /// Makes, replaces and deletes our key packages by the policy: more
    /// one-time packages when the relay holds fewer than `held_by_relay`
    /// says, a new last-resort package every week, and the private keys of
    /// packages that expired or were replaced, once the grace for Welcomes
    /// still in flight is over.
    pub async fn maintain_key_packages(&mut self, held_by_relay: u32) -> Result<(), ClientError> {
        let now = self.client.now_ms() / 1000;
        let store = &self.client.store;
        let issued = self.client.issued_key_packages()?;
        let plan = KeyPackagePolicy::default().plan(now, &issued, held_by_relay);
        if plan.uploads() {
            let batch = store.transaction(|store| {
                let batch = new_key_packages(
                    &store.provider(),
                    &self.client.identity,
                    plan.one_time,
                    plan.last_resort,
                    now,
                )?;
                for record in &batch.issued {
                    store.set_setting(&key_package_key(&record.hash_ref), &record.to_bytes())?;
                }
                Ok::<_, ClientError>(batch)
            })?;
            let request = self.request_id();
            let frame = ClientFrame::UploadKeyPackages {
                request,
                one_time: batch.one_time,
                last_resort: batch.last_resort,
                expires_at: batch.not_after,
            };
            self.connection.send(&frame).await?;
            match self.answer(request).await? {
                Answer::Accepted(_) => {}
                _ => return Err(ClientError::Protocol("unexpected answer to a key package upload".into())),
            }
            // The relay hands out the new last-resort package from now on.
            let store = &self.client.store;
            for hash_ref in &plan.retire {
                let key = key_package_key(hash_ref);
                if let Some(mut record) = store.setting(&key)?.and_then(|b| IssuedKeyPackage::from_bytes(&b))
                {
                    record.retired_at = Some(now);
                    store.set_setting(&key, &record.to_bytes())?;
                }
            }
        }
        if !plan.delete.is_empty() {
            self.client.store.transaction(|store| {
                for hash_ref in &plan.delete {
                    delete_key_package(&store.provider(), hash_ref)?;
                    store.delete_setting(&key_package_key(hash_ref))?;
                }
                Ok::<_, ClientError>(())
            })?;
        }
        Ok(())
    }

    /// Closes the connection.
    pub async fn close(self) {
        self.connection.close().await;
    }

    fn request_id(&mut self) -> u32 {
        let id = self.next_request;
        self.next_request = self.next_request.wrapping_add(1);
        id
    }

    /// Waits for the answer to `request`, processing deliveries meanwhile.
    async fn answer(&mut self, request: u32) -> Result<Answer, ClientError> {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = tokio::time::timeout(left, self.connection.recv())
                .await
                .map_err(|_| ClientError::Transport("the relay did not answer in time".into()))??;
            match frame {
                RelayFrame::Accepted { request: r, inactive } if r == request => {
                    return Ok(Answer::Accepted(inactive))
                }
                RelayFrame::KeyPackage { request: r, key_package } if r == request => {
                    return Ok(Answer::KeyPackage(key_package))
                }
                RelayFrame::StaleEpoch { request: r, epoch } if r == request => {
                    return Ok(Answer::Stale(epoch))
                }
                RelayFrame::Rejected { request: r, code } if r == request => {
                    return Err(ClientError::Relay(code))
                }
                other => self.handle_unsolicited(other).await?,
            }
        }
    }

    async fn handle_unsolicited(&mut self, frame: RelayFrame) -> Result<(), ClientError> {
        match frame {
            RelayFrame::Deliver { id, payload, .. } => self.deliver(id, &payload).await,
            RelayFrame::QueueEmpty => {
                self.queue_empty = true;
                Ok(())
            }
            RelayFrame::WipeOrder { secret } => Err(self.wipe_order(&secret)),
            // Answers to requests we no longer wait for, and anything else:
            // nothing in the allow-list asks the client to act.
            _ => Ok(()),
        }
    }

    /// Asks the relay for queued and live deliveries (once per session).
    pub async fn subscribe(&mut self) -> Result<(), ClientError> {
        if !self.subscribed {
            self.connection.send(&ClientFrame::Subscribe).await?;
            self.subscribed = true;
        }
        Ok(())
    }

    /// Processes everything queued so far (once subscribed and drained,
    /// live pushes are processed as they come, so this is free).
    async fn drain(&mut self) -> Result<(), ClientError> {
        self.subscribe().await?;
        while !self.queue_empty {
            let frame = self.connection.recv().await?;
            self.handle_unsolicited(frame).await?;
        }
        Ok(())
    }

    /// Takes everything queued, then keeps listening until `wait` passes
    /// with nothing new. Returns how many payloads were processed.
    pub async fn receive(&mut self, wait: Duration) -> Result<usize, ClientError> {
        self.subscribe().await?;
        while !self.queue_empty {
            let frame = self.connection.recv().await?;
            self.handle_unsolicited(frame).await?;
        }
        while let Ok(frame) = tokio::time::timeout(wait, self.connection.recv()).await {
            self.handle_unsolicited(frame?).await?;
        }
        self.pay_owed_updates().await?;
        Ok(self.received)
    }

    /// Waits for the next frame the relay pushes. Cancel-safe: nothing is
    /// lost if the future is dropped, so it can race other work in
    /// `tokio::select!`. Call [`Session::subscribe`] first.
    pub async fn next_push(&mut self) -> Result<Push, ClientError> {
        self.connection.recv().await.map(Push)
    }

    /// Processes a pushed frame: a delivery is decrypted, stored and
    /// acknowledged; once the queue is drained, owed self-updates are sent.
    pub async fn handle_push(&mut self, push: Push) -> Result<(), ClientError> {
        let drained = matches!(push.0, RelayFrame::QueueEmpty);
        self.handle_unsolicited(push.0).await?;
        if drained {
            self.pay_owed_updates().await?;
        }
        Ok(())
    }

    /// Processes one delivered payload and acknowledges it once its result
    /// is stored. Only a failure of our own store leaves it unacknowledged
    /// (the relay delivers it again); a payload that cannot be processed is
    /// shown as an event and acknowledged, so one broken payload or
    /// conversation never blocks the mailbox or the others.
    async fn deliver(&mut self, id: u64, payload: &[u8]) -> Result<(), ClientError> {
        self.received += 1;
        if let Some(group_id) = self.accept_payload(payload, None)? {
            self.retry_held(&group_id)?;
        }
        self.connection.send(&ClientFrame::Ack { ids: vec![id] }).await
    }

    /// Processes a payload, fresh from the mailbox or (`held`: its key)
    /// held back earlier. A group message for an epoch we have not reached
    /// is held until the commit that leads there is processed. Returns the
    /// group whose epoch the payload moved (or that it made us join), whose
    /// held payloads may now be processed.
    fn accept_payload(&self, payload: &[u8], held: Option<&str>) -> Result<Option<Vec<u8>>, ClientError> {
        let store = &self.client.store;
        let hash: [u8; 32] = Sha256::digest(payload).into();
        let now = self.client.now_ms();
        let outcome = store.transaction(|store| {
            match held {
                Some(key) => store.delete_setting(key)?,
                None if !store.first_sighting(&hash, now)? => return Ok(None),
                None => {}
            }
            if let Some((group_id, epoch)) = hush_core::peek(payload) {
                let current = Conversation::load(&store.provider(), &group_id)?.filter(|c| c.is_active());
                if let Some(current) = current.map(|c| c.epoch()).filter(|current| epoch > *current) {
                    // The epoch in the header is not authenticated: only a
                    // few epochs ahead is believable, the rest is junk.
                    if epoch - current > HOLD_EPOCHS {
                        return Err(ClientError::Invalid("a message far ahead of its group's epoch".into()));
                    }
                    hold(store, &group_id, payload, now)?;
                    return Ok(None);
                }
            }
            let incoming = process_incoming(&store.provider(), payload)?;
            let moved = match &incoming {
                Incoming::Changed { group_id, self_removed: false, .. } => Some(group_id.clone()),
                Incoming::Joined { conversation, .. } => Some(conversation.id()),
                _ => None,
            };
            self.record(incoming, now)?;
            Ok::<_, ClientError>(moved)
        });
        match outcome {
            Ok(moved) => Ok(moved),
            // Our own store failed: nothing is acknowledged or lost.
            Err(error @ ClientError::Store(_)) => Err(error),
            Err(error) => {
                tracing::warn!(%error, "a payload could not be processed");
                store.transaction(|store| {
                    match held {
                        Some(key) => store.delete_setting(key)?,
                        None => drop(store.first_sighting(&hash, now)?),
                    }
                    self.note_unreadable(store, payload, now)
                })?;
                Ok(None)
            }
        }
    }

    /// Processes what was held for `group_id` once its epoch has moved,
    /// oldest first, for as long as that makes progress (a held commit can
    /// unlock more).
    fn retry_held(&self, group_id: &[u8]) -> Result<(), ClientError> {
        let store = &self.client.store;
        'passes: loop {
            let current = Conversation::load(&store.provider(), group_id)?.filter(|c| c.is_active());
            let Some(current) = current.map(|c| c.epoch()) else {
                // We left the group: what was held for it is of no use.
                store.delete_settings_with_prefix(&held_prefix(group_id))?;
                return Ok(());
            };
            for (key, value) in store.settings_with_prefix(&held_prefix(group_id))? {
                let Some(payload) = value.get(8..) else {
                    store.delete_setting(&key)?;
                    continue;
                };
                if hush_core::peek(payload).is_some_and(|(_, epoch)| epoch > current) {
                    continue;
                }
                // Processing it may move the epoch: look again from the start.
                if self.accept_payload(payload, Some(&key))?.is_some() {
                    continue 'passes;
                }
            }
            return Ok(());
        }
    }

    /// Gives up on payloads held longer than the relay keeps anything:
    /// the commit they wait for is not coming. Each is shown as lost.
    fn expire_held(&self) -> Result<(), ClientError> {
        let store = &self.client.store;
        let now = self.client.now_ms();
        // Only the 8-byte arrival time of each, not the payloads.
        for (key, head) in store.setting_heads_with_prefix(HELD_PREFIX, 8)? {
            let held_at = head.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes).unwrap_or(0);
            // A clock set back must not keep a payload forever.
            let held_at = held_at.min(now);
            if now.saturating_sub(held_at) < HELD_FOR.as_millis() as u64 {
                continue;
            }
            store.transaction(|store| {
                let value = store.setting(&key)?.unwrap_or_default();
                store.delete_setting(&key)?;
                self.note_unreadable(store, value.get(8..).unwrap_or_default(), now)
            })?;
        }
        Ok(())
    }

    /// Shows, in its conversation, that a payload could not be read, so
    /// nothing is lost without the user knowing. (A payload for no
    /// conversation of ours is only logged: there is nobody to tell.)
    fn note_unreadable(
        &self,
        store: &hush_store::Store,
        payload: &[u8],
        now: u64,
    ) -> Result<(), ClientError> {
        let Some((group_id, _)) = hush_core::peek(payload) else { return Ok(()) };
        if !store.conversation(&group_id)?.is_some_and(|c| c.active) {
            return Ok(());
        }
        // One notice per group and epoch: anyone who knows a group's id can
        // send it junk, and must not be able to flood it with notices.
        let epoch =
            Conversation::load(&store.provider(), &group_id).ok().flatten().map(|c| c.epoch()).unwrap_or(0);
        let noted = format!("unreadable:{}", data_encoding::HEXLOWER.encode(&group_id));
        if number_setting(store, &noted)? == Some(epoch) {
            return Ok(());
        }
        store.set_setting(&noted, &epoch.to_be_bytes())?;
        let text = "a message could not be decrypted and is lost".to_owned();
        note_event(store, group_id, AccountId([0; 20]), text, now, false)
    }

    fn record(&self, incoming: Incoming, now: u64) -> Result<(), ClientError> {
        let store = &self.client.store;
        match incoming {
            Incoming::Joined { conversation, by, relay_key, .. } => {
                let group_id = conversation.id();
                // A Welcome into a group we were removed from, at or before
                // the epoch of the removal, is a replay: refused (and the
                // join rolled back with the transaction).
                if left_epoch(store, &group_id)?.is_some_and(|left| conversation.epoch() <= left) {
                    return Err(ClientError::Invalid("a replayed Welcome into a group we left".into()));
                }
                // A group we left and are added to again starts afresh: its
                // creator describes it again, and its timer is off.
                store.insert_conversation(&group_id, &ConversationKind::Pending, now)?;
                store.set_conversation_active(&group_id, true)?;
                store.set_timer(&group_id, None)?;
                store.set_needs_update(&group_id, true)?;
                self.note_relay_key(&group_id, by, relay_key, now)?;
                // Added by someone we never chose to talk to: a request.
                if self.client.knows(&by)? {
                    store.delete_setting(&request_key(&group_id))?;
                } else {
                    store.set_setting(&request_key(&group_id), &by.0)?;
                }
            }
            Incoming::Message { group_id, sender, content } => match content.body {
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
                    };
                    store.insert_message(&record, now, false)?;
                }
                Body::Timer { secs } => {
                    store.set_timer(&group_id, secs)?;
                    let record = timer_event(content.id, group_id, sender, content.sent_at_ms, secs);
                    store.insert_message(&record, now, false)?;
                }
                Body::Info { group_name } => {
                    let members = Conversation::load(&store.provider(), &group_id)?
                        .map(|conversation| conversation.members())
                        .transpose()?
                        .unwrap_or_default();
                    let kind = described_kind(group_name, &group_id, sender, self.client.account(), &members);
                    let kind = self.unambiguous(kind, &group_id, sender)?;
                    let current = store.conversation(&group_id)?.map(|c| c.kind);
                    if matches!(current, None | Some(ConversationKind::Pending)) {
                        store.insert_conversation(&group_id, &kind, now)?;
                        if matches!(kind, ConversationKind::Group { .. }) {
                            let by = self.client.display_name(&sender)?;
                            let record = MessageRecord {
                                message_id: content.id,
                                group_id: group_id.clone(),
                                sender,
                                text: format!("{by} added you"),
                                sent_at_ms: content.sent_at_ms,
                                event: true,
                                expires_at_ms: None,
                            };
                            store.insert_message(&record, now, true)?;
                        }
                    }
                }
            },
            Incoming::Changed { group_id, sender, added, removed, self_removed, epoch, relay_key } => {
                // Another member's commit won the epoch of our unresolved
                // one (merging it dropped ours).
                store.delete_setting(&unresolved_key(&group_id))?;
                self.record_membership(&group_id, sender, &added, &removed, now)?;
                self.note_relay_key(&group_id, sender, relay_key, now)?;
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
        &self,
        group_id: &[u8],
        by: AccountId,
        check: RelayKeyCheck,
        now: u64,
    ) -> Result<(), ClientError> {
        let who = self.client.display_name(&by)?;
        let text = match check {
            RelayKeyCheck::Confirmed | RelayKeyCheck::NotApplicable => return Ok(()),
            RelayKeyCheck::Wrong => format!(
                "warning: {who} gave the relay a key the other members do not have (signed by {who}): only \
                 {who} can change this group from now on; start a new group without {who}"
            ),
            RelayKeyCheck::Unverified => format!(
                "warning: a change by {who} came without a valid key announcement: the relay altered it, or \
                 {who} sent it around the relay; changing this group may fail from now on"
            ),
        };
        note_event(&self.client.store, group_id.to_vec(), by, text, now, false)
    }

    /// Notes a member change in a group's history as an event ("alice
    /// added bob"). Events are not unread messages: `recv` skips them.
    fn record_membership(
        &self,
        group_id: &[u8],
        by: AccountId,
        added: &[AccountId],
        removed: &[AccountId],
        now: u64,
    ) -> Result<(), ClientError> {
        let store = &self.client.store;
        match store.conversation(group_id)?.map(|c| c.kind) {
            Some(ConversationKind::Group { .. }) => {}
            Some(ConversationKind::Direct { peer }) if !added.is_empty() || !removed.is_empty() => {
                // A one-to-one conversation that gains or loses a member is
                // one no longer: it is shown as a group from now on, with
                // the change, so no one joins a private conversation unseen.
                let members = Conversation::load(&store.provider(), group_id)?
                    .map(|conversation| conversation.members())
                    .transpose()?
                    .unwrap_or_default();
                let kind = described_kind(None, group_id, peer, self.client.account(), &members);
                let kind = self.unambiguous(kind, group_id, peer)?;
                store.insert_conversation(group_id, &kind, now)?;
            }
            _ => return Ok(()),
        }
        let names = |accounts: &[AccountId]| -> Result<String, ClientError> {
            let names: Result<Vec<_>, _> = accounts.iter().map(|a| self.client.display_name(a)).collect();
            Ok(names?.join(", "))
        };
        let who =
            if by == self.client.account() { "you".to_owned() } else { self.client.display_name(&by)? };
        for (verb, members) in [("added", added), ("removed", removed)] {
            if members.is_empty() {
                continue;
            }
            let text = format!("{who} {verb} {}", names(members)?);
            note_event(store, group_id.to_vec(), by, text, now, true)?;
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
    ) -> Result<ConversationKind, ClientError> {
        let ConversationKind::Group { name } = kind else { return Ok(kind) };
        let store = &self.client.store;
        let taken = |name: &str| -> Result<bool, ClientError> {
            Ok(name.parse::<AccountId>().is_ok()
                || store.contact(name)?.is_some()
                || store.group_by_name(name)?.is_some_and(|group| group.group_id != group_id))
        };
        if !taken(&name)? {
            return Ok(ConversationKind::Group { name });
        }
        let short = data_encoding::HEXLOWER.encode(group_id.get(..4).unwrap_or(group_id));
        let by = self.client.display_name(&creator)?;
        Ok(ConversationKind::Group { name: format!("{name} (from {by}, {short})") })
    }

    /// Fetches and verifies a key package of `account`.
    async fn key_package(&mut self, account: AccountId) -> Result<VerifiedKeyPackage, ClientError> {
        let request = self.request_id();
        self.connection.send(&ClientFrame::FetchKeyPackage { request, account }).await?;
        match self.answer(request).await {
            Ok(Answer::KeyPackage(bytes)) => {
                let store = &self.client.store;
                Ok(verify_key_package(&store.provider(), &bytes, account)?)
            }
            Ok(_) => Err(ClientError::Protocol("unexpected answer to a key package request".into())),
            Err(ClientError::Relay(ErrorCode::UnknownAccount)) => {
                Err(ClientError::Unknown(format!("account {account} is unknown to the relay or deactivated")))
            }
            Err(error) => Err(error),
        }
    }

    /// Makes a commit with `make`, submits it, merges it once accepted, and
    /// retries (after catching up) when another commit won the epoch.
    ///
    /// A commit whose answer is lost (the connection drops, the relay does
    /// not answer in time) is neither merged nor abandoned: it is kept as an
    /// unresolved commit until its outcome is known (see
    /// [`Self::resolve_commits`]), because the relay may have ordered it.
    async fn commit(
        &mut self,
        group_id: &[u8],
        make: impl Fn(&mut Conversation, &hush_store::HushProvider<'_>) -> Result<SentCommit, ClientError>,
    ) -> Result<(), ClientError> {
        if self.client.store.setting(&unresolved_key(group_id))?.is_some() {
            self.resolve_commits().await?;
        }
        // Catch up first: moving the group on while messages of its current
        // epoch wait unread in our mailbox would leave them more than a few
        // epochs behind after several commits, and unreadable.
        self.drain().await?;
        // Changing a conversation request's members accepts it.
        self.client.store.delete_setting(&request_key(group_id))?;
        for _ in 0..COMMIT_ATTEMPTS {
            let frame = self.client.store.transaction(|store| {
                let provider = store.provider();
                let mut conversation = Conversation::load(&provider, group_id)?
                    .ok_or_else(|| ClientError::Invalid("conversation state is missing".into()))?;
                let sent = make(&mut conversation, &provider)?;
                let unresolved = Unresolved::new(sent);
                store.set_setting(&unresolved_key(group_id), &unresolved.to_bytes())?;
                Ok::<_, ClientError>(unresolved.frame)
            })?;
            match self.submit(frame).await {
                Ok(Answer::Accepted(inactive)) => {
                    self.settle_commit(group_id, true)?;
                    self.note_inactive(group_id, inactive);
                    return Ok(());
                }
                Ok(Answer::Stale(epoch)) => {
                    self.settle_commit(group_id, false)?;
                    self.catch_up(group_id, epoch).await?;
                }
                Ok(Answer::KeyPackage(_)) => {
                    self.settle_commit(group_id, false)?;
                    return Err(ClientError::Protocol("unexpected answer to a commit".into()));
                }
                Err(error @ ClientError::Relay(_)) => {
                    self.settle_commit(group_id, false)?;
                    return Err(error);
                }
                // The outcome is unknown: the commit stays unresolved.
                Err(error) => return Err(error),
            }
        }
        Err(ClientError::Invalid("the group is too busy: the commit kept losing to others; try again".into()))
    }

    /// Sends a commit frame under a fresh request id and waits for its answer.
    async fn submit(&mut self, mut frame: ClientFrame) -> Result<Answer, ClientError> {
        let request = self.request_id();
        if let ClientFrame::Commit { request: r, .. } = &mut frame {
            *r = request;
        }
        self.connection.send(&frame).await?;
        self.answer(request).await
    }

    /// Settles our unresolved commit in a group: merged if it `won` its
    /// epoch, dropped if it lost. Does nothing if it was settled already
    /// (another member's commit for the same epoch was processed) or if
    /// the group has moved past it.
    fn settle_commit(&self, group_id: &[u8], won: bool) -> Result<(), ClientError> {
        let merged = self.client.store.transaction(|store| {
            let key = unresolved_key(group_id);
            let Some(bytes) = store.setting(&key)? else { return Ok(false) };
            store.delete_setting(&key)?;
            let Some(unresolved) = Unresolved::from_bytes(&bytes) else { return Ok(false) };
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
            Ok::<_, ClientError>(won)
        })?;
        // What arrived for the new epoch while the outcome was unknown.
        if merged {
            self.retry_held(group_id)?;
        }
        Ok(())
    }

    /// Resolves every commit whose answer was lost, by submitting it again:
    /// the relay keeps the digest of the commit it ordered at each epoch
    /// (as long as it keeps the commit), so it answers "accepted" for a
    /// commit it ordered already, without queueing it twice, and "stale"
    /// for one that lost its epoch.
    pub async fn resolve_commits(&mut self) -> Result<(), ClientError> {
        for (key, bytes) in self.client.store.settings_with_prefix(UNRESOLVED_PREFIX)? {
            let Some(unresolved) = Unresolved::from_bytes(&bytes) else {
                self.client.store.delete_setting(&key)?;
                continue;
            };
            let group_id = unresolved.group_id.clone();
            let settled = match self.submit(unresolved.frame).await {
                Ok(Answer::Accepted(_)) => self.settle_commit(&group_id, true),
                Ok(Answer::Stale(_)) => self.settle_commit(&group_id, false),
                Ok(Answer::KeyPackage(_)) | Err(ClientError::Relay(_)) => {
                    tracing::warn!("the relay refused a commit sent again; dropping it");
                    self.settle_commit(&group_id, false)
                }
                // The connection failed: try again at the next login.
                Err(error) => return Err(error),
            };
            // One group's trouble must not stop every login: drop what
            // cannot be settled, and say so.
            if let Err(error) = settled {
                tracing::warn!(%error, "an unresolved commit could not be settled; dropping it");
                self.client.store.delete_setting(&key)?;
            }
        }
        Ok(())
    }

    /// Processes deliveries until the group reaches `epoch`.
    async fn catch_up(&mut self, group_id: &[u8], epoch: u64) -> Result<(), ClientError> {
        self.subscribe().await?;
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        loop {
            let current = Conversation::load(&self.client.store.provider(), group_id)?
                .map(|c| (c.epoch(), c.is_active()));
            match current {
                Some((current, true)) if current < epoch => {}
                Some((_, true)) => return Ok(()),
                _ => {
                    return Err(ClientError::Invalid("we are no longer a member of this conversation".into()))
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = tokio::time::timeout(left, self.connection.recv())
                .await
                .map_err(|_| ClientError::GroupStuck)??;
            self.handle_unsolicited(frame).await?;
        }
    }

    /// Sends one application message to a group we are in.
    async fn send_content(
        &mut self,
        group_id: &[u8],
        content: &Content,
        ttl_secs: u32,
    ) -> Result<(), ClientError> {
        // Writing into a conversation request accepts it.
        self.client.store.delete_setting(&request_key(group_id))?;
        // Never write at an epoch whose successor may already be ordered.
        if self.client.store.setting(&unresolved_key(group_id))?.is_some() {
            self.resolve_commits().await?;
        }
        let outgoing = {
            let store = &self.client.store;
            let provider = store.provider();
            let mut conversation = Conversation::load(&provider, group_id)?
                .ok_or_else(|| ClientError::Invalid("conversation state is missing".into()))?;
            conversation.encrypt(&provider, &self.client.identity, content)?
        };
        if outgoing.recipients.is_empty() {
            return Ok(());
        }
        let request = self.request_id();
        let frame = ClientFrame::Send {
            request,
            recipients: outgoing.recipients,
            payload: outgoing.payload,
            ttl_secs,
        };
        self.connection.send(&frame).await?;
        match self.answer(request).await? {
            Answer::Accepted(inactive) => {
                self.note_inactive(group_id, inactive);
                Ok(())
            }
            _ => Err(ClientError::Protocol("unexpected answer to a send".into())),
        }
    }

    fn note_inactive(&mut self, group_id: &[u8], accounts: Vec<AccountId>) {
        if !accounts.is_empty() {
            self.inactive.push((group_id.to_vec(), accounts));
        }
    }

    /// Removes from their groups the members the relay reported as
    /// deactivated (a wiped device, or closed by the operator), so no one
    /// has to notice. Best effort: a failure is logged and the caller goes
    /// on. The relay could make this up, but no more than it could withhold
    /// every message from that member; the removal is shown to everyone.
    async fn remove_inactive(&mut self) -> Result<(), ClientError> {
        while let Some((group_id, accounts)) = self.inactive.pop() {
            match self.remove_inactive_from(&group_id, &accounts).await {
                Ok(()) => {}
                // This group's trouble (a race, a refusal) is logged; a lost
                // connection, a failing store or a wipe order end the caller.
                Err(error) if error.is_local_to_group() => {
                    tracing::warn!(%error, "could not remove deactivated members from a group");
                }
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    async fn remove_inactive_from(
        &mut self,
        group_id: &[u8],
        accounts: &[AccountId],
    ) -> Result<(), ClientError> {
        let store = &self.client.store;
        let Some(record) = store.conversation(group_id)?.filter(|c| c.active) else { return Ok(()) };
        if self.client.is_request(group_id)? {
            return Ok(());
        }
        let members = Conversation::load(&store.provider(), group_id)?.map(|c| c.members()).transpose()?;
        let me = self.client.account();
        let gone: Vec<AccountId> = accounts
            .iter()
            .filter(|account| **account != me && members.as_ref().is_some_and(|m| m.contains(account)))
            .copied()
            .collect();
        // A one-to-one conversation is not changed: it just says so, once.
        if gone.is_empty() || matches!(record.kind, ConversationKind::Direct { .. }) {
            let noted = format!("inactive_noted:{}", data_encoding::HEXLOWER.encode(group_id));
            if !gone.is_empty() && store.setting(&noted)?.is_none() {
                store.set_setting(&noted, &[1])?;
                let who = self.client.display_name(&gone[0])?;
                let text = format!("the relay reports {who}'s account deactivated: nothing reaches them");
                note_event(store, group_id.to_vec(), gone[0], text, self.client.now_ms(), false)?;
            }
            return Ok(());
        }
        // The relay's word alone: never more than half of the others at
        // once, so a lying relay cannot empty a group with one answer.
        let others = members.as_ref().map_or(0, |m| m.len().saturating_sub(1));
        if gone.len() * 2 > others {
            tracing::warn!(count = gone.len(), "the relay reports most of a group deactivated; not removing");
            return Ok(());
        }
        let identity = &self.client.identity;
        let removed = std::cell::RefCell::new(Vec::new());
        self.commit(group_id, |conversation, provider| {
            // Another member may have removed them meanwhile.
            let members = conversation.members()?;
            let still: Vec<AccountId> = gone.iter().filter(|a| members.contains(a)).copied().collect();
            let commit = conversation.remove(provider, identity, &still)?;
            *removed.borrow_mut() = still;
            Ok(commit)
        })
        .await?;
        let removed = removed.into_inner();
        self.record_membership(group_id, me, &[], &removed, self.client.now_ms())
    }

    fn content(&self, body: Body) -> Content {
        let mut id = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut id);
        Content { id, sent_at_ms: self.client.now_ms(), body, expires_after_secs: None }
    }

    async fn conversation_for(&mut self, to: &str) -> Result<Vec<u8>, ClientError> {
        match self.client.resolve(to)? {
            Target::Account(peer) => self.direct_conversation(peer).await,
            Target::Group(group) => Ok(group.group_id),
        }
    }

    /// Starts the conversation with a contact or account (no-op if it
    /// exists), so it shows in both people's lists before anything is sent.
    pub async fn start_conversation(&mut self, to: &str) -> Result<(), ClientError> {
        self.conversation_for(to).await.map(|_| ())
    }

    /// Sets (or turns off) a conversation's disappearing-message timer for
    /// every member, announced as an event in the conversation.
    pub async fn set_timer(&mut self, to: &str, secs: Option<u32>) -> Result<(), ClientError> {
        let group_id = self.conversation_for(to).await?;
        let content = self.content(Body::Timer { secs });
        self.send_content(&group_id, &content, 0).await?;
        let store = &self.client.store;
        store.set_timer(&group_id, secs)?;
        let record = timer_event(content.id, group_id, self.client.account(), content.sent_at_ms, secs);
        store.insert_message(&record, self.client.now_ms(), true)?;
        Ok(())
    }

    /// Creates a group with us and `members`, and tells them what it is.
    async fn create_group(
        &mut self,
        members: &[AccountId],
        kind: ConversationKind,
    ) -> Result<Vec<u8>, ClientError> {
        let mut packages = Vec::new();
        for member in members {
            packages.push(self.key_package(*member).await?);
        }
        let group_id = {
            let store = &self.client.store;
            Conversation::create(&store.provider(), &self.client.identity)?.id()
        };
        let identity = &self.client.identity;
        self.commit(&group_id, |conversation, provider| Ok(conversation.add(provider, identity, &packages)?))
            .await?;
        let store = &self.client.store;
        store.insert_conversation(&group_id, &kind, self.client.now_ms())?;
        store.updated(&group_id, self.client.now_ms())?;
        let group_name = match kind {
            ConversationKind::Group { name } => Some(name),
            _ => None,
        };
        self.send_content(&group_id, &self.content(Body::Info { group_name }), 0).await?;
        Ok(group_id)
    }

    /// The conversation to use for `peer`, started if there is none.
    async fn direct_conversation(&mut self, peer: AccountId) -> Result<Vec<u8>, ClientError> {
        if peer == self.client.account() {
            return Err(ClientError::Invalid("you cannot start a conversation with yourself".into()));
        }
        if let Some(existing) = self.client.store.direct_conversations(&peer)?.into_iter().next() {
            return Ok(existing.group_id);
        }
        self.create_group(&[peer], ConversationKind::Direct { peer }).await
    }

    /// Sends a text to a contact, account or group; returns once the relay
    /// has durably accepted it. `expire_secs` (else the conversation's
    /// timer) makes it disappear everywhere: from every member's store and,
    /// if still undelivered, from the relay.
    pub async fn send_text(
        &mut self,
        to: &str,
        text: &str,
        expire_secs: Option<u32>,
    ) -> Result<(), ClientError> {
        self.send_draft(to, &Draft::new(text, expire_secs)).await
    }

    /// Sends a draft, as [`Session::send_text`]. Sending the same draft
    /// again (after a lost connection) shows it once to every member.
    pub async fn send_draft(&mut self, to: &str, draft: &Draft) -> Result<(), ClientError> {
        // Catch up first: a message written at an epoch the group has left
        // more than a few commits behind cannot be read by the others.
        self.drain().await?;
        let group_id = self.conversation_for(to).await?;
        self.maybe_self_update(&group_id).await?;
        let timer = self.client.store.conversation(&group_id)?.and_then(|c| c.timer_secs);
        let expires_after_secs = draft.expire_secs.or(timer).filter(|secs| *secs > 0);
        let content = Content {
            id: draft.id,
            sent_at_ms: draft.sent_at_ms,
            body: Body::Text(draft.text.clone()),
            expires_after_secs,
        };
        self.send_content(&group_id, &content, expires_after_secs.unwrap_or(0)).await?;
        self.remove_inactive().await?;
        let store = &self.client.store;
        let record = MessageRecord {
            message_id: content.id,
            group_id: group_id.clone(),
            sender: self.client.account(),
            text: draft.text.clone(),
            sent_at_ms: content.sent_at_ms,
            event: false,
            expires_at_ms: expires_after_secs.map(|secs| content.sent_at_ms + u64::from(secs) * 1000),
        };
        store.insert_message(&record, self.client.now_ms(), true)?;
        store.count_sent(&group_id)?;
        Ok(())
    }

    /// Self-updates if the policy says so (just joined, 100 messages, 24 h).
    async fn maybe_self_update(&mut self, group_id: &[u8]) -> Result<(), ClientError> {
        let Some(record) = self.client.store.conversation(group_id)? else { return Ok(()) };
        let policy = self.client.update_policy()?;
        let due = update_due(&record, &policy, self.client.now_ms())
            || record.sent_since_update >= policy.after_messages;
        if due && record.active {
            self.self_update(group_id).await?;
        }
        Ok(())
    }

    /// A self-update commit for one group.
    pub async fn self_update(&mut self, group_id: &[u8]) -> Result<(), ClientError> {
        let identity = &self.client.identity;
        self.commit(group_id, |conversation, provider| Ok(conversation.self_update(provider, identity)?))
            .await?;
        self.client.store.updated(group_id, self.client.now_ms())?;
        Ok(())
    }

    /// Self-updates every group that is owed one (just joined) or whose
    /// last self-update is older than the policy allows, also in groups
    /// this device only reads: post-compromise security must not depend on
    /// talking. `recv` runs it once the queue is drained; `hush chat` runs
    /// it then and every minute. A group whose update the relay or the
    /// engine refuses is left for the next run, so one broken conversation
    /// does not stop the others or the caller. Returns how many updated.
    pub async fn self_update_due(&mut self) -> Result<usize, ClientError> {
        let policy = self.client.update_policy()?;
        let now = self.client.now_ms();
        let store = &self.client.store;
        let mut due = Vec::new();
        for conversation in store.conversations()? {
            let retry_at = number_setting(store, &retry_key(&conversation.group_id))?.unwrap_or(0);
            // Nothing goes into a request before it is accepted.
            let request = self.client.is_request(&conversation.group_id)?;
            if conversation.active && !request && update_due(&conversation, &policy, now) && now >= retry_at {
                due.push(conversation);
            }
        }
        let mut updated = 0;
        for conversation in due {
            match self.self_update(&conversation.group_id).await {
                Ok(()) => updated += 1,
                // Failures of this one group (stuck at the relay, refused by
                // the engine) wait an hour; a lost connection, a relay that
                // closes the session or a wipe order still end the caller.
                Err(error) if error.is_local_to_group() => {
                    tracing::warn!(%error, "a self-update failed; it is tried again in an hour");
                    let retry_at = self.client.now_ms().saturating_add(UPDATE_RETRY.as_millis() as u64);
                    self.client
                        .store
                        .set_setting(&retry_key(&conversation.group_id), &retry_at.to_be_bytes())?;
                }
                Err(error) => return Err(error),
            }
        }
        Ok(updated)
    }

    async fn pay_owed_updates(&mut self) -> Result<(), ClientError> {
        self.housekeeping().await
    }

    /// What a long-running session does now and then (`hush chat`: every
    /// minute): self-updates that are due, and key-package rotation and
    /// deletion (the relay's count is only known at login, so no refill).
    pub async fn housekeeping(&mut self) -> Result<(), ClientError> {
        self.expire_held()?;
        self.self_update_due().await?;
        self.remove_inactive().await?;
        self.maintain_key_packages(u32::MAX).await
    }

    /// Creates a named group.
    pub async fn group_create(&mut self, name: &str, members: &[AccountId]) -> Result<(), ClientError> {
        if self.client.store.group_by_name(name)?.is_some() {
            return Err(ClientError::Invalid(format!("a group named '{name}' exists already")));
        }
        if name.parse::<AccountId>().is_ok() || self.client.store.contact(name)?.is_some() {
            return Err(ClientError::Invalid(
                "a group name must differ from contact names and account ids".into(),
            ));
        }
        let group_id = self.create_group(members, ConversationKind::Group { name: name.to_owned() }).await?;
        self.record_membership(&group_id, self.client.account(), members, &[], self.client.now_ms())
    }

    fn group(&self, name: &str) -> Result<Vec<u8>, ClientError> {
        Ok(self
            .client
            .store
            .group_by_name(name)?
            .ok_or_else(|| ClientError::Unknown(format!("no group named '{name}'")))?
            .group_id)
    }

    /// Adds members to a group.
    pub async fn group_add(&mut self, name: &str, members: &[AccountId]) -> Result<(), ClientError> {
        let group_id = self.group(name)?;
        let mut packages = Vec::new();
        for member in members {
            packages.push(self.key_package(*member).await?);
        }
        let identity = &self.client.identity;
        self.commit(&group_id, |conversation, provider| Ok(conversation.add(provider, identity, &packages)?))
            .await?;
        self.record_membership(&group_id, self.client.account(), members, &[], self.client.now_ms())?;
        let info = self.content(Body::Info { group_name: Some(name.to_owned()) });
        self.send_content(&group_id, &info, 0).await
    }

    /// Removes members from a group.
    pub async fn group_remove(&mut self, name: &str, members: &[AccountId]) -> Result<(), ClientError> {
        let group_id = self.group(name)?;
        let identity = &self.client.identity;
        self.commit(
            &group_id,
            |conversation, provider| Ok(conversation.remove(provider, identity, members)?),
        )
        .await?;
        self.record_membership(&group_id, self.client.account(), &[], members, self.client.now_ms())
    }
}

/// How long a group whose self-update failed waits before the next try.
const UPDATE_RETRY: Duration = Duration::from_secs(3600);

const UNRESOLVED_PREFIX: &str = "unresolved_commit:";
/// Most payloads, and bytes, held back per group; past that they are
/// treated as unreadable (no one can fill the device's store with them).
const MAX_HELD: u64 = 256;
const MAX_HELD_BYTES: u64 = 16 << 20;
/// How far ahead of the group's epoch a payload may claim to be and still
/// be held (its header's epoch is not authenticated).
const HOLD_EPOCHS: u64 = 4;
/// How long a payload is held before it is given up (the relay's default
/// retention: the commit it waits for would be gone by then).
const HELD_FOR: Duration = Duration::from_secs(14 * 24 * 3600);
const HELD_PREFIX: &str = "held:";

pub(crate) fn held_prefix(group_id: &[u8]) -> String {
    format!("{HELD_PREFIX}{}:", data_encoding::HEXLOWER.encode(group_id))
}

/// Keeps a payload for a later epoch of `group_id`, in arrival order, with
/// the time it arrived.
fn hold(store: &hush_store::Store, group_id: &[u8], payload: &[u8], now: u64) -> Result<(), ClientError> {
    let (count, bytes) = store.count_settings_with_prefix(&held_prefix(group_id))?;
    if count >= MAX_HELD || bytes.saturating_add(payload.len() as u64) > MAX_HELD_BYTES {
        return Err(ClientError::Invalid("too many messages ahead of this group's epoch".into()));
    }
    let seq = number_setting(store, "held_seq")?.unwrap_or(0).wrapping_add(1);
    store.set_setting("held_seq", &seq.to_be_bytes())?;
    let mut value = now.to_be_bytes().to_vec();
    value.extend_from_slice(payload);
    store.set_setting(&format!("{}{seq:016x}", held_prefix(group_id)), &value)?;
    Ok(())
}

pub(crate) const KEY_PACKAGE_PREFIX: &str = "key_package:";

fn key_package_key(hash_ref: &[u8]) -> String {
    format!("{KEY_PACKAGE_PREFIX}{}", data_encoding::HEXLOWER.encode(hash_ref))
}

fn unresolved_key(group_id: &[u8]) -> String {
    format!("{UNRESOLVED_PREFIX}{}", data_encoding::HEXLOWER.encode(group_id))
}

/// A commit sent to the relay whose outcome we do not know yet: kept in
/// the profile (as its frame) so that it survives a lost connection or a
/// restart.
struct Unresolved {
    group_id: Vec<u8>,
    epoch: u64,
    frame: ClientFrame,
}

impl Unresolved {
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

    fn to_bytes(&self) -> Vec<u8> {
        self.frame.encode()
    }

    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let frame = ClientFrame::decode(bytes).ok()?;
        let ClientFrame::Commit { group, epoch, .. } = &frame else { return None };
        Some(Self { group_id: group.0.clone(), epoch: *epoch, frame })
    }
}

/// Checks a wipe order against our own secret. Only a real one (which the
/// relay cannot make without the wipe code) is obeyed.
fn wipe_order(client: &Client, secret: &[u8; 32]) -> ClientError {
    use subtle::ConstantTimeEq;
    match client.wipe_secret() {
        Ok(own) if bool::from(own.as_slice().ct_eq(secret)) => ClientError::WipeOrdered,
        _ => ClientError::Protocol("the relay sent a wipe order that does not match this device".into()),
    }
}

fn retry_key(group_id: &[u8]) -> String {
    format!("update_retry:{}", data_encoding::HEXLOWER.encode(group_id))
}

pub(crate) fn left_key(group_id: &[u8]) -> String {
    format!("left_epoch:{}", data_encoding::HEXLOWER.encode(group_id))
}

fn number_setting(store: &hush_store::Store, name: &str) -> Result<Option<u64>, ClientError> {
    Ok(store
        .setting(name)?
        .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_slice()).ok())
        .map(u64::from_be_bytes))
}

/// The epoch at which we were removed from a group, if we were.
fn left_epoch(store: &hush_store::Store, group_id: &[u8]) -> Result<Option<u64>, ClientError> {
    number_setting(store, &left_key(group_id))
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
            let short = data_encoding::HEXLOWER.encode(group_id.get(..4).unwrap_or(group_id));
            ConversationKind::Group { name: format!("group-{short}") }
        }
    }
}

/// Stores a system event in a conversation's history (`shown`: not counted
/// as unread, `recv` skips it).
fn note_event(
    store: &hush_store::Store,
    group_id: Vec<u8>,
    sender: AccountId,
    text: String,
    now: u64,
    shown: bool,
) -> Result<(), ClientError> {
    let record = MessageRecord {
        message_id: Draft::new("", None).id,
        group_id,
        sender,
        text,
        sent_at_ms: now,
        event: true,
        expires_at_ms: None,
    };
    store.insert_message(&record, now, shown)?;
    Ok(())
}

fn timer_event(
    id: [u8; 16],
    group_id: Vec<u8>,
    sender: AccountId,
    sent_at_ms: u64,
    secs: Option<u32>,
) -> MessageRecord {
    let text = match secs {
        Some(secs) => format!(
            "disappearing messages: {}",
            humantime::format_duration(Duration::from_secs(u64::from(secs)))
        ),
        None => "disappearing messages: off".to_owned(),
    };
    MessageRecord { message_id: id, group_id, sender, text, sent_at_ms, event: true, expires_at_ms: None }
}

/// Orders the device of `code.account` to wipe itself, through the relay
/// named in the code. Used by `hush remote-wipe` and by the panic
/// passphrase; bounded by `timeout` so a wipe never waits on the network.
pub async fn send_wipe_order(code: &hush_proto::WipeCode, timeout: Duration) -> Result<(), ClientError> {
    tokio::time::timeout(timeout, async {
        let mut connection = Connection::open(&code.address, code.pin).await?;
        crate::handshake::hello(&mut connection).await?;
        connection
            .send(&ClientFrame::RemoteWipe { request: 1, account: code.account, secret: code.secret })
            .await?;
        match connection.recv().await? {
            RelayFrame::Accepted { request: 1, .. } => Ok(()),
            RelayFrame::Rejected { code, .. } => Err(ClientError::Relay(code)),
            _ => Err(ClientError::Protocol("unexpected answer to a wipe order".into())),
        }
    })
    .await
    .map_err(|_| ClientError::Unreachable(format!("{}: timed out", code.address)))?
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: AccountId = AccountId([1; 20]);
    const BOB: AccountId = AccountId([2; 20]);
    const MALLORY: AccountId = AccountId([3; 20]);

    #[test]
    fn direct_means_exactly_the_creator_and_us() {
        let id = [0xab, 0xcd, 0xef, 0x01, 0x02];
        assert_eq!(
            described_kind(None, &id, ALICE, BOB, &[ALICE, BOB]),
            ConversationKind::Direct { peer: ALICE }
        );
        let hidden = described_kind(None, &id, ALICE, BOB, &[ALICE, BOB, MALLORY]);
        assert_eq!(hidden, ConversationKind::Group { name: "group-abcdef01".into() });
        assert!(matches!(
            described_kind(None, &id, ALICE, BOB, &[ALICE, MALLORY]),
            ConversationKind::Group { .. }
        ));
        assert!(matches!(described_kind(None, &id, BOB, BOB, &[BOB, BOB]), ConversationKind::Group { .. }));
        assert_eq!(
            described_kind(Some("crew".into()), &id, ALICE, BOB, &[ALICE, BOB]),
            ConversationKind::Group { name: "crew".into() }
        );
    }
}

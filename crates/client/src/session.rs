//! A logged-in connection for one profile: requests with answers, deliveries
//! processed as they arrive, commits retried when they lose their epoch.

use std::time::{Duration, Instant};

use hush_core::{
    verify_key_package, Body, CommitAnswer, CommitRun, CommitStep, Content, Conversation, ConversationKind,
    CoreError, Identity, Resolution, SentCommit, VerifiedKeyPackage,
};
use hush_proto::{AccountId, ClientFrame, ErrorCode, RelayFrame};
use hush_store::HushProvider;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::client::{now_ms, Client, Target};
use crate::error::ClientError;
use crate::handshake::{handshake, Admission, Credentials};
use crate::transport::Connection;

/// How long a request may wait for its answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A commit's answer in the engine's terms.
struct Submitted {
    answer: CommitAnswer,
    /// Recipients the relay skipped as deactivated.
    inactive: Vec<AccountId>,
    /// The error behind an answer other than acceptance.
    failure: Option<ClientError>,
}

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

    /// The text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The draft as kept in an outbox: id, time, timer (0: the
    /// conversation's), text.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = self.id.to_vec();
        bytes.extend_from_slice(&self.sent_at_ms.to_be_bytes());
        bytes.extend_from_slice(&self.expire_secs.unwrap_or(0).to_be_bytes());
        bytes.extend_from_slice(self.text.as_bytes());
        bytes
    }

    /// A draft kept by [`Draft::to_bytes`].
    pub(crate) fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let id = bytes.get(..16)?.try_into().ok()?;
        let sent_at_ms = u64::from_be_bytes(bytes.get(16..24)?.try_into().ok()?);
        let expire_secs = Some(u32::from_be_bytes(bytes.get(24..28)?.try_into().ok()?)).filter(|s| *s > 0);
        let text = String::from_utf8(bytes.get(28..)?.to_vec()).ok()?;
        Some(Self { id, sent_at_ms, text, expire_secs })
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
        session.client.engine().retry_all_held()?;
        session.key_groups_at_the_relay()?;
        Ok(session)
    }

    /// Once per profile: every group owes a self-update, so the relay
    /// learns each group's epoch key from a member.
    fn key_groups_at_the_relay(&self) -> Result<(), ClientError> {
        Ok(self.client.engine().key_groups_at_the_relay()?)
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
        let engine = self.client.engine();
        let mut work = engine.key_package_work(held_by_relay)?;
        let Some(mut frame) = work.upload.take() else { return Ok(()) };
        let request = self.request_id();
        if let ClientFrame::UploadKeyPackages { request: r, .. } = &mut frame {
            *r = request;
        }
        self.connection.send(&frame).await?;
        match self.answer(request).await? {
            Answer::Accepted(_) => {}
            _ => return Err(ClientError::Protocol("unexpected answer to a key package upload".into())),
        }
        // The relay hands out the new last-resort package from now on.
        Ok(engine.key_packages_accepted(&work)?)
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
        self.client.engine().deliver(payload)?;
        self.connection.send(&ClientFrame::Ack { ids: vec![id] }).await
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

    /// Takes a commit made with `make` through its lifecycle
    /// ([`CommitRun`]): the engine decides each step, this drives it over
    /// the connection.
    ///
    /// A commit whose answer is lost (the connection drops, the relay does
    /// not answer in time) is neither merged nor abandoned: it is kept as an
    /// unresolved commit until its outcome is known (see
    /// [`Self::resolve_commits`]), because the relay may have ordered it.
    async fn commit(
        &mut self,
        group_id: &[u8],
        make: impl Fn(&mut Conversation, &HushProvider<'_>, &Identity) -> Result<SentCommit, CoreError>,
    ) -> Result<(), ClientError> {
        let (mut run, mut step) = CommitRun::start(&self.client.engine(), group_id, make)?;
        let mut failure = None;
        loop {
            step = match step {
                CommitStep::Resolve => {
                    self.resolve_commits().await?;
                    run.resume(&mut self.client.engine())?
                }
                CommitStep::Drain => {
                    self.drain().await?;
                    run.resume(&mut self.client.engine())?
                }
                CommitStep::CatchUp { epoch } => {
                    self.catch_up(group_id, epoch).await?;
                    run.resume(&mut self.client.engine())?
                }
                CommitStep::Submit(frame) => {
                    let submitted = self.submit(*frame).await;
                    self.note_inactive(group_id, submitted.inactive);
                    failure = submitted.failure;
                    run.answer(&mut self.client.engine(), submitted.answer)?
                }
                CommitStep::Merged => return Ok(()),
                CommitStep::Refused | CommitStep::Unresolved => {
                    return Err(failure.take().unwrap_or_else(|| {
                        ClientError::Transport(
                            "an earlier commit in this conversation awaits its outcome".into(),
                        )
                    }))
                }
                CommitStep::GaveUp => {
                    return Err(ClientError::Invalid(
                        "the group is too busy: the commit kept losing to others; try again".into(),
                    ))
                }
            };
        }
    }

    /// Sends a commit frame under a fresh request id and puts the relay's
    /// answer (or its absence) in the engine's terms, keeping the error
    /// behind anything but an acceptance for the caller.
    async fn submit(&mut self, mut frame: ClientFrame) -> Submitted {
        let request = self.request_id();
        if let ClientFrame::Commit { request: r, .. } = &mut frame {
            *r = request;
        }
        let answered = match self.connection.send(&frame).await {
            Ok(()) => self.answer(request).await,
            Err(error) => Err(error),
        };
        let (answer, failure) = match answered {
            Ok(Answer::Accepted(inactive)) => {
                return Submitted { answer: CommitAnswer::Accepted, inactive, failure: None }
            }
            Ok(Answer::Stale(epoch)) => (CommitAnswer::Stale { epoch }, None),
            Ok(Answer::KeyPackage(_)) => {
                (CommitAnswer::Refused, Some(ClientError::Protocol("unexpected answer to a commit".into())))
            }
            Err(
                error @ ClientError::Relay(
                    ErrorCode::RateLimited | ErrorCode::Internal | ErrorCode::ShuttingDown,
                ),
            ) => (CommitAnswer::Busy, Some(error)),
            Err(error @ ClientError::Relay(_)) => (CommitAnswer::Refused, Some(error)),
            Err(error) => (CommitAnswer::Lost, Some(error)),
        };
        Submitted { answer, inactive: Vec::new(), failure }
    }

    /// Resolves every commit whose answer was lost, by submitting it again:
    /// the relay keeps the digest of the commit it ordered at each epoch
    /// (as long as it keeps the commit), so it answers "accepted" for a
    /// commit it ordered already, without queueing it twice, and "stale"
    /// for one that lost its epoch. Stops at the first that stays unknown.
    pub async fn resolve_commits(&mut self) -> Result<(), ClientError> {
        for unresolved in self.client.engine().unresolved_commits()? {
            let submitted = self.submit(unresolved.frame).await;
            match self.client.engine().resolve(&unresolved.group_id, submitted.answer)? {
                Resolution::Settled => {}
                Resolution::Refused => {
                    tracing::warn!("the relay refused a commit sent again; it was dropped")
                }
                Resolution::Dropped(error) => {
                    tracing::warn!(%error, "an unresolved commit could not be settled; it was dropped")
                }
                Resolution::Pending => {
                    return Err(submitted.failure.unwrap_or_else(|| {
                        ClientError::Transport("the relay could not settle a commit".into())
                    }))
                }
            }
        }
        Ok(())
    }

    /// Processes deliveries until the group reaches `epoch`.
    async fn catch_up(&mut self, group_id: &[u8], epoch: u64) -> Result<(), ClientError> {
        self.subscribe().await?;
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        while !self.client.engine().reached(group_id, epoch)? {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = tokio::time::timeout(left, self.connection.recv())
                .await
                .map_err(|_| ClientError::GroupStuck)??;
            self.handle_unsolicited(frame).await?;
        }
        Ok(())
    }

    /// Sends one application message to a group we are in.
    async fn send_content(
        &mut self,
        group_id: &[u8],
        content: &Content,
        ttl_secs: u32,
    ) -> Result<(), ClientError> {
        // Never write at an epoch whose successor may already be ordered.
        if self.client.engine().has_unresolved(group_id)? {
            self.resolve_commits().await?;
        }
        // Writing into a conversation request accepts it.
        let outgoing = self.client.engine().encrypt(group_id, content)?;
        if outgoing.recipients.is_empty() {
            return Err(ClientError::Invalid("no one else is in this conversation".into()));
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
        let gone = match self.client.engine().deactivated(group_id, accounts) {
            Ok(gone) => gone,
            Err(hush_core::EngineError::Invalid(reason)) => {
                tracing::warn!(count = accounts.len(), "{reason}");
                return Ok(());
            }
            Err(error) => return Err(error.into()),
        };
        if gone.is_empty() {
            return Ok(());
        }
        let removed = std::cell::RefCell::new(Vec::new());
        self.commit(group_id, |conversation, provider, identity| {
            // Another member may have removed them meanwhile.
            let members = conversation.members()?;
            let still: Vec<AccountId> = gone.iter().filter(|a| members.contains(a)).copied().collect();
            let commit = conversation.remove(provider, identity, &still)?;
            *removed.borrow_mut() = still;
            Ok(commit)
        })
        .await?;
        let removed = removed.into_inner();
        Ok(self.client.engine().record_membership(group_id, self.client.account(), &[], &removed)?)
    }

    fn content(&self, body: Body) -> Content {
        self.client.engine().content(body)
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
        Ok(self.client.engine().sent(&group_id, &content)?)
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
        let group_id = self.client.engine().create_group()?;
        self.commit(&group_id, |conversation, provider, identity| {
            conversation.add(provider, identity, &packages)
        })
        .await?;
        self.client.engine().describe(&group_id, &kind)?;
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
        Ok(self.client.engine().sent(&group_id, &content)?)
    }

    /// Self-updates if the policy says so (just joined, 100 messages, 24 h).
    async fn maybe_self_update(&mut self, group_id: &[u8]) -> Result<(), ClientError> {
        let policy = self.client.update_policy()?;
        if self.client.engine().update_due_before_sending(group_id, &policy)? {
            self.self_update(group_id).await?;
        }
        Ok(())
    }

    /// A self-update commit for one group.
    pub async fn self_update(&mut self, group_id: &[u8]) -> Result<(), ClientError> {
        self.commit(group_id, |conversation, provider, identity| {
            conversation.self_update(provider, identity)
        })
        .await?;
        Ok(self.client.engine().updated(group_id)?)
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
        let due = self.client.engine().updates_due(&policy)?;
        let mut updated = 0;
        for group_id in due {
            match self.self_update(&group_id).await {
                Ok(()) => updated += 1,
                // Failures of this one group (stuck at the relay, refused by
                // the engine) wait an hour; a lost connection, a relay that
                // closes the session or a wipe order still end the caller.
                Err(error) if error.is_local_to_group() => {
                    tracing::warn!(%error, "a self-update failed; it is tried again in an hour");
                    self.client.engine().defer_update(&group_id)?;
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
        self.client.engine().expire_held()?;
        self.self_update_due().await?;
        self.remove_inactive().await?;
        match self.maintain_key_packages(u32::MAX).await {
            // Refused (as at login: is this device's clock right?): tried
            // again at the next upkeep, without ending the session.
            Err(ClientError::Relay(code)) => {
                tracing::warn!(?code, "the relay refused this device's key packages: is its clock right?");
                Ok(())
            }
            other => other,
        }
    }

    /// Creates a named group.
    ///
    /// The group is named before its first commit (and marked as being
    /// created), so a creation cut off (the connection dropped, the answer
    /// was lost) is found and finished by the next `group_create` with that
    /// name: only a group this device is creating, never one someone else
    /// named, and only if everyone in it was asked for.
    pub async fn group_create(&mut self, name: &str, members: &[AccountId]) -> Result<(), ClientError> {
        let me = self.client.account();
        if let Some(record) = self.client.store.group_by_name(name)? {
            let ours = self.client.store.setting(&creating_key(&record.group_id))?.is_some();
            let present = self.client.engine().members(&record.group_id)?;
            let asked = present.iter().all(|member| *member == me || members.contains(member));
            if !ours || present.is_empty() || !asked {
                return Err(ClientError::Invalid(format!("a group named '{name}' exists already")));
            }
            return self.finish_group(name, &record.group_id, members).await;
        }
        if name.parse::<AccountId>().is_ok() || self.client.store.contact(name)?.is_some() {
            return Err(ClientError::Invalid(
                "a group name must differ from contact names and account ids".into(),
            ));
        }
        // Everyone's key package first: an unknown or deactivated account
        // leaves nothing behind.
        let mut packages = Vec::new();
        for member in members {
            packages.push(self.key_package(*member).await?);
        }
        let engine = self.client.engine();
        let group_id = engine.create_group()?;
        engine.describe(&group_id, &ConversationKind::Group { name: name.to_owned() })?;
        self.client.store.set_setting(&creating_key(&group_id), b"1")?;
        self.client.store.set_setting(&unnamed_key(&group_id), b"1")?;
        self.commit(&group_id, |conversation, provider, identity| {
            conversation.add(provider, identity, &packages)
        })
        .await?;
        self.client.engine().record_membership(&group_id, me, members, &[])?;
        self.tell_name(name, &group_id).await
    }

    /// Adds whichever of `members` are not in the group yet (after
    /// resolving a commit of an earlier try), then tells every member the
    /// group's name if someone has not been told it yet.
    async fn finish_group(
        &mut self,
        name: &str,
        group_id: &[u8],
        members: &[AccountId],
    ) -> Result<(), ClientError> {
        if self.client.engine().is_request(group_id)? {
            return Err(ClientError::Invalid(format!(
                "'{name}' is a conversation request: accept it before changing its members"
            )));
        }
        if self.client.engine().has_unresolved(group_id)? {
            self.resolve_commits().await?;
        }
        let present = self.client.engine().members(group_id)?;
        let missing: Vec<AccountId> =
            members.iter().filter(|member| !present.contains(member)).copied().collect();
        if !missing.is_empty() {
            let mut packages = Vec::new();
            for member in &missing {
                packages.push(self.key_package(*member).await?);
            }
            self.client.store.set_setting(&unnamed_key(group_id), b"1")?;
            self.commit(group_id, |conversation, provider, identity| {
                conversation.add(provider, identity, &packages)
            })
            .await?;
            self.client.engine().record_membership(group_id, self.client.account(), &missing, &[])?;
        } else if self.client.store.setting(&unnamed_key(group_id))?.is_none() {
            return Err(ClientError::Invalid("they are all in the group already".into()));
        }
        self.tell_name(name, group_id).await
    }

    /// Tells every member the group's name; the group is then made.
    async fn tell_name(&mut self, name: &str, group_id: &[u8]) -> Result<(), ClientError> {
        let info = self.content(Body::Info { group_name: Some(name.to_owned()) });
        self.send_content(group_id, &info, 0).await?;
        self.client.store.delete_setting(&unnamed_key(group_id))?;
        Ok(self.client.store.delete_setting(&creating_key(group_id))?)
    }

    fn group(&self, name: &str) -> Result<Vec<u8>, ClientError> {
        Ok(self
            .client
            .store
            .group_by_name(name)?
            .ok_or_else(|| ClientError::Unknown(format!("no group named '{name}'")))?
            .group_id)
    }

    /// Adds members to a group (those already in it stay as they are, so
    /// an add tried again after its answer was lost finishes rather than
    /// fails), and tells everyone the group's name.
    pub async fn group_add(&mut self, name: &str, members: &[AccountId]) -> Result<(), ClientError> {
        let group_id = self.group(name)?;
        self.finish_group(name, &group_id, members).await
    }

    /// Removes members from a group.
    pub async fn group_remove(&mut self, name: &str, members: &[AccountId]) -> Result<(), ClientError> {
        let group_id = self.group(name)?;
        self.commit(&group_id, |conversation, provider, identity| {
            conversation.remove(provider, identity, members)
        })
        .await?;
        Ok(self.client.engine().record_membership(&group_id, self.client.account(), &[], members)?)
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

/// Set while this device is creating a group, until every member has been
/// told its name.
fn creating_key(group_id: &[u8]) -> String {
    format!("creating:{}", data_encoding::HEXLOWER.encode(group_id))
}

/// Set while members were added to a group and not all told its name yet.
fn unnamed_key(group_id: &[u8]) -> String {
    format!("unnamed:{}", data_encoding::HEXLOWER.encode(group_id))
}

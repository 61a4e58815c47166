//! The relay's side of the protocol, apart from any socket: the version
//! check, login by signed challenge (or a remote wipe order), then requests
//! and deliveries until the client leaves, the account is deactivated or the
//! relay shuts down. Frames come in through a [`FrameSource`] and go out
//! through an [`Outbound`] queue, so the whole exchange is tested without
//! TLS or WebSockets (see `tests.rs`); `super` plugs in the real ones.
//!
//! Requests that touch the store run as their own tasks so one connection can
//! keep many sends in flight; their answers and pushed deliveries share the
//! one outbound queue.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hush_proto::{
    auth_message, AccountId, AuthPurpose, ClientFrame, ErrorCode, IdentityKey, RelayFrame, PROTOCOL_VERSION,
};
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use super::ConnectionError;
use crate::hub::Control;
use crate::server::Shared;
use crate::store::{Mailbox, StoreError};
use crate::tokens::Refusal;
use delivery::Delivery;

/// Where a connection's client frames come from: the next frame, a frame
/// that could not be decoded (as the error code to refuse it with), or why
/// there are no more.
pub(crate) trait FrameSource: Send {
    /// The next frame. Cancel-safe: it is raced against shutdown.
    fn next_frame(
        &mut self,
    ) -> impl Future<Output = Result<Result<ClientFrame, ErrorCode>, ConnectionError>> + Send;
}

/// Answers and pushes queued per connection before the reader waits.
pub(crate) const OUTBOUND_QUEUE: usize = 256;
/// Requests one connection may have in flight at the store.
pub(crate) const IN_FLIGHT: usize = 256;
/// The longest a key package is kept at the relay, whatever its upload says.
const MAX_KEY_PACKAGE_SECS: u64 = 90 * 24 * 3600;

/// What the writer task sends. The frame is boxed so the channel's
/// preallocated block of slots stays small on every idle connection.
pub(crate) enum Outbound {
    Frame(Box<OutFrame>),
    Close,
}

/// A frame to send, and for a delivery its share of the connection's
/// delivery window, given back once the frame is written.
pub(crate) struct OutFrame {
    pub(crate) frame: RelayFrame,
    pub(crate) _window: Option<OwnedSemaphorePermit>,
}

impl Outbound {
    pub(crate) fn frame(frame: RelayFrame) -> Self {
        Self::Frame(Box::new(OutFrame { frame, _window: None }))
    }
}

/// Runs the protocol on one connection: login, then the session, frames
/// from `incoming`, answers and deliveries into `outbound`. The transport
/// calls the two halves itself, to raise its frame size limit in between.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) async fn run(
    shared: Arc<Shared>,
    incoming: &mut impl FrameSource,
    outbound: mpsc::Sender<Outbound>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ConnectionError> {
    let deadline = Instant::now() + shared.config.handshake_timeout();
    let opened = Box::pin(login(&shared, incoming, &outbound, deadline)).await?;
    session(shared, opened, incoming, outbound, &mut shutdown).await
}

/// What a connection proved first, which decides what it may do: log in
/// to an account, own queues to receive from them, or hold a token to send
/// without saying who it is. A connection is only ever one of the three.
pub(crate) enum Opened {
    /// Logged in (or registered) as this account.
    Account(AccountId),
    /// Proved ownership of these queues, under this challenge.
    Queues(queues::Proved),
    /// Spent a token: a sealed connection with this budget.
    Sealed(sealed::Budget),
}

impl Opened {
    /// The largest message a client may send on this kind of connection.
    pub(crate) fn message_limit(&self) -> usize {
        use hush_proto::limits::{MAX_FRAME_BYTES, MAX_KEY_PACKAGES_PER_UPLOAD, MAX_KEY_PACKAGE_BYTES};
        match self {
            // Key packages: a full upload, with room for its framing.
            Opened::Account(_) => (MAX_KEY_PACKAGES_PER_UPLOAD + 2) * (MAX_KEY_PACKAGE_BYTES + 8),
            // Acknowledgements and queue proofs: tens of kilobytes at most.
            Opened::Queues(_) => QUEUE_MESSAGE_LIMIT,
            // Sends and commits, up to the largest payload.
            Opened::Sealed(_) => MAX_FRAME_BYTES,
        }
    }
}

/// The largest message on a queue connection: a full acknowledgement
/// (1,000 items of 24 bytes) or proof of 32 queues, with room to spare.
pub(crate) const QUEUE_MESSAGE_LIMIT: usize = 64 * 1024;

/// Serves a client that proved something until it leaves, its account is
/// deactivated or the relay shuts down.
pub(crate) async fn session(
    shared: Arc<Shared>,
    opened: Opened,
    incoming: &mut impl FrameSource,
    outbound: mpsc::Sender<Outbound>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), ConnectionError> {
    match opened {
        Opened::Account(account) => Session::new(shared, account, outbound).run(incoming, shutdown).await,
        Opened::Queues(proved) => {
            queues::QueueSession::new(shared, proved, outbound).run(incoming, shutdown).await
        }
        Opened::Sealed(budget) => {
            sealed::SealedSession::new(shared, budget, outbound).run(incoming, shutdown).await
        }
    }
}

async fn refuse(outbound: &mpsc::Sender<Outbound>, code: ErrorCode) -> ConnectionError {
    let frame = RelayFrame::Error { code, message: code.describe().to_owned() };
    let _ = outbound.send(Outbound::frame(frame)).await;
    let _ = outbound.send(Outbound::Close).await;
    ConnectionError::Refused(code)
}

async fn next_frame_before(
    incoming: &mut impl FrameSource,
    deadline: Instant,
) -> Result<Result<ClientFrame, ErrorCode>, ConnectionError> {
    let left = deadline.saturating_duration_since(Instant::now());
    tokio::time::timeout(left, incoming.next_frame()).await.map_err(|_| ConnectionError::Timeout)?
}

/// The version check, then login, registration, a wipe order, proofs of
/// owning queues or a token, before `deadline`; queues the answer and
/// returns what the connection proved.
pub(crate) async fn login(
    shared: &Shared,
    incoming: &mut impl FrameSource,
    outbound: &mpsc::Sender<Outbound>,
    deadline: Instant,
) -> Result<Opened, ConnectionError> {
    match next_frame_before(incoming, deadline).await? {
        Ok(ClientFrame::Hello { version }) if version == PROTOCOL_VERSION => {}
        Ok(ClientFrame::Hello { .. }) => return Err(refuse(outbound, ErrorCode::UnsupportedVersion).await),
        Ok(_) => return Err(refuse(outbound, ErrorCode::Unexpected).await),
        Err(code) => return Err(refuse(outbound, code).await),
    }
    let mut nonce = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let _ = outbound.send(Outbound::frame(RelayFrame::Challenge { nonce })).await;
    // The day's token key, for anyone who asks before proving anything (a
    // device compares it with the key its tokens were issued under): twice
    // at most (today's and yesterday's), the rest is out of place.
    let mut first = next_frame_before(incoming, deadline).await?;
    let mut asked = 0;
    while let Ok(ClientFrame::TokenKey { request, day }) = first {
        asked += 1;
        if asked > 2 {
            return Err(refuse(outbound, ErrorCode::Unexpected).await);
        }
        let answer = match shared.tokens.public_key(day, shared.now()) {
            Some(public_key) => RelayFrame::TokenKey { request, day, public_key },
            None => RelayFrame::Rejected { request, code: ErrorCode::Malformed },
        };
        let _ = outbound.send(Outbound::frame(answer)).await;
        first = next_frame_before(incoming, deadline).await?;
    }
    let (account, key_packages) = match first {
        Ok(ClientFrame::RemoteWipe { request, account, secret }) => {
            return Err(remote_wipe(shared, outbound, request, account, secret).await);
        }
        Ok(ClientFrame::SubscribeQueues { request, proofs }) => {
            return match queues::prove(shared, &nonce, &proofs).await {
                Ok(queues) => {
                    let answer = RelayFrame::Accepted { request, inactive: Vec::new() };
                    let _ = outbound.send(Outbound::frame(answer)).await;
                    Ok(Opened::Queues(queues::Proved { nonce, queues }))
                }
                Err(code) => Err(refuse(outbound, code).await),
            };
        }
        Ok(ClientFrame::Spend { request, token }) => {
            return match sealed::spend(shared, token).await {
                Ok(budget) => {
                    let answer = RelayFrame::Accepted { request, inactive: Vec::new() };
                    let _ = outbound.send(Outbound::frame(answer)).await;
                    Ok(Opened::Sealed(budget))
                }
                Err(code) => Err(refuse(outbound, code).await),
            };
        }
        Ok(ClientFrame::Register { invite_code, identity_key, signature, wipe_hash }) => {
            let message = auth_message(AuthPurpose::Register, &nonce, &shared.pin);
            if !verify(&identity_key, &message, &signature) {
                return Err(refuse(outbound, ErrorCode::BadSignature).await);
            }
            let invite_hash: [u8; 32] = Sha256::digest(invite_code.as_bytes()).into();
            match shared.store.register(invite_hash, identity_key, wipe_hash, shared.now()).await {
                Ok(account) => {
                    tracing::info!("account registered");
                    (account, 0)
                }
                Err(error) => return Err(refuse(outbound, store_error_code(&error)).await),
            }
        }
        Ok(ClientFrame::Login { account, signature }) => {
            let record = match shared.store.account(account).await {
                Ok(record) => record,
                Err(error) => return Err(refuse(outbound, store_error_code(&error)).await),
            };
            // An unknown account is refused exactly as a bad signature is,
            // after the same verification, so that a caller who has
            // proved nothing learns nothing of which accounts exist.
            let message = auth_message(AuthPurpose::Login, &nonce, &shared.pin);
            let key = record.as_ref().map_or(*NO_ACCOUNT_KEY, |record| record.identity_key);
            let verified = verify(&key, &message, &signature);
            let Some(record) = record.filter(|_| verified) else {
                return Err(refuse(outbound, ErrorCode::BadSignature).await);
            };
            if let Some(secret) = record.wipe_order {
                return Err(pass_wipe_order(outbound, secret).await);
            }
            if record.deactivated {
                return Err(refuse(outbound, ErrorCode::Deactivated).await);
            }
            let count = shared.store.count_key_packages(account, shared.now()).await.unwrap_or(0);
            (account, count)
        }
        Ok(_) => return Err(refuse(outbound, ErrorCode::Unexpected).await),
        Err(code) => return Err(refuse(outbound, code).await),
    };
    let _ = outbound.send(Outbound::frame(RelayFrame::Ready { account, key_packages })).await;
    Ok(Opened::Account(account))
}

/// Checks a wipe code and, if it matches, orders the wipe: the account is
/// deactivated, and its live connections, logged in or receiving from the
/// queues the order deleted, get it at once.
async fn remote_wipe(
    shared: &Shared,
    outbound: &mpsc::Sender<Outbound>,
    request: u32,
    account: AccountId,
    secret: [u8; 32],
) -> ConnectionError {
    let answer = match shared.store.remote_wipe(account, secret, shared.now()).await {
        Ok(deleted) => {
            tracing::info!("remote wipe ordered");
            shared.hub.wipe(&account, secret);
            shared.hub.wipe_queues(&deleted, secret);
            RelayFrame::Accepted { request, inactive: Vec::new() }
        }
        Err(error) => RelayFrame::Rejected { request, code: store_error_code(&error) },
    };
    let _ = outbound.send(Outbound::frame(answer)).await;
    let _ = outbound.send(Outbound::Close).await;
    ConnectionError::Closed
}

async fn pass_wipe_order(outbound: &mpsc::Sender<Outbound>, secret: [u8; 32]) -> ConnectionError {
    let _ = outbound.send(Outbound::frame(RelayFrame::WipeOrder { secret })).await;
    let _ = outbound.send(Outbound::Close).await;
    ConnectionError::Refused(ErrorCode::Deactivated)
}

/// The key a login for an unknown account is checked against, only so that
/// it takes as long as any other login: whatever the outcome, the login is
/// refused.
static NO_ACCOUNT_KEY: std::sync::LazyLock<IdentityKey> = std::sync::LazyLock::new(|| {
    let seed: [u8; 32] = Sha256::digest(b"hush relay: no such account").into();
    IdentityKey(ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key().to_bytes())
});

/// Whether an account is named twice.
fn has_duplicates(accounts: &[AccountId]) -> bool {
    let mut sorted = accounts.to_vec();
    sorted.sort_unstable();
    sorted.windows(2).any(|pair| pair[0] == pair[1])
}

fn verify(key: &IdentityKey, message: &[u8], signature: &[u8; 64]) -> bool {
    verify_with(&key.0, message, signature)
}

fn verify_with(key: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> bool {
    let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(key) else { return false };
    let signature = ed25519_dalek::Signature::from_bytes(signature);
    key.verify_strict(message, &signature).is_ok()
}

fn store_error_code(error: &StoreError) -> ErrorCode {
    match error {
        StoreError::BadInvite => ErrorCode::BadInvite,
        StoreError::AlreadyRegistered => ErrorCode::AlreadyRegistered,
        StoreError::UnknownAccount => ErrorCode::UnknownAccount,
        StoreError::NoKeyPackage => ErrorCode::NoKeyPackage,
        StoreError::BadWipeCode => ErrorCode::BadWipeCode,
        StoreError::NotAMember => ErrorCode::NotAMember,
        StoreError::QueueIdTaken => ErrorCode::Internal,
        StoreError::Full => ErrorCode::RateLimited,
        _ if error.is_unavailable() => {
            tracing::warn!(%error, "the store is unavailable");
            ErrorCode::Unavailable
        }
        StoreError::Database(_)
        | StoreError::Postgres(_)
        | StoreError::Unreachable { .. }
        | StoreError::Unavailable
        | StoreError::BadUrl(_)
        | StoreError::NewerSchema { .. }
        | StoreError::Batch(_) => {
            tracing::error!(%error, "store operation failed");
            ErrorCode::Internal
        }
        StoreError::Closed => ErrorCode::ShuttingDown,
    }
}

/// What a session does next, boxed (see the sessions' loops).
type Work<'a> = std::pin::Pin<Box<dyn Future<Output = Result<(), ConnectionError>> + Send + 'a>>;

/// Ends a session the hub closed (passing on the wipe order it was given,
/// if any, else refusing with `code`) or the relay's shutdown did.
fn closed<'a>(outbound: &'a mpsc::Sender<Outbound>, control: &Control, code: ErrorCode) -> Work<'a> {
    let wipe = match code {
        ErrorCode::ShuttingDown => None,
        _ => control.wipe.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take(),
    };
    Box::pin(async move {
        Err(match wipe {
            Some(secret) => pass_wipe_order(outbound, secret).await,
            None => refuse(outbound, code).await,
        })
    })
}

/// A token bucket: a hostile or buggy client is slowed down, never the relay.
struct RateLimit {
    tokens: f64,
    burst: f64,
    per_sec: f64,
    last: Instant,
}

impl RateLimit {
    fn new(shared: &Shared) -> Self {
        let (per_sec, burst) = (shared.config.frames_per_sec, shared.config.frame_burst);
        let burst = f64::from(burst.max(1));
        Self { tokens: burst, burst, per_sec: f64::from(per_sec.max(1)), last: Instant::now() }
    }

    /// Takes a token; returns how long to sleep first if there was none.
    fn take(&mut self) -> Option<Duration> {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.per_sec).min(self.burst);
        self.last = now;
        let mut wait = None;
        if self.tokens < 1.0 {
            // Sleep for a refill of at least 10 ms worth of frames: timers
            // are coarse, and sleeping per frame would cap the rate far
            // below `per_sec`.
            let refill = (self.per_sec * 0.01).max(1.0).min(self.burst);
            let seconds = (refill - self.tokens) / self.per_sec;
            wait = Some(Duration::from_secs_f64(seconds));
            self.tokens = refill;
            self.last = now + Duration::from_secs_f64(seconds);
        }
        self.tokens -= 1.0;
        wait
    }
}

/// A logged-in connection: the account plane.
struct Session {
    shared: Arc<Shared>,
    account: AccountId,
    outbound: mpsc::Sender<Outbound>,
    in_flight: Arc<Semaphore>,
    connection_id: u64,
    control: Arc<Control>,
    delivery: Option<tokio::task::JoinHandle<()>>,
}

impl Session {
    fn new(shared: Arc<Shared>, account: AccountId, outbound: mpsc::Sender<Outbound>) -> Self {
        let (connection_id, control) = shared.hub.register(Some(account));
        Self {
            shared,
            account,
            outbound,
            in_flight: Arc::new(Semaphore::new(IN_FLIGHT)),
            connection_id,
            control,
            delivery: None,
        }
    }

    async fn run(
        mut self,
        incoming: &mut impl FrameSource,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), ConnectionError> {
        let mut limit = RateLimit::new(&self.shared);
        let control = Arc::clone(&self.control);
        loop {
            // Each branch makes the work to do, boxed, and nothing is
            // awaited inside the select: an idle connection's task is as big
            // as its largest await point, and it spends its life waiting
            // for the next frame here, so neither a frame (a few hundred
            // bytes) nor its handling may stay reserved beside that wait.
            let work: Work<'_> = tokio::select! {
                frame = incoming.next_frame() => Box::pin(self.take(frame?)),
                _ = control.close.notified() => closed(&self.outbound, &control, ErrorCode::Deactivated),
                _ = shutdown.changed() => closed(&self.outbound, &control, ErrorCode::ShuttingDown),
            };
            work.await?;
            if let Some(wait) = limit.take() {
                Box::pin(tokio::time::sleep(wait)).await;
            }
        }
    }

    /// Handles a frame, or refuses what could not be decoded (which ends
    /// the connection).
    async fn take(&mut self, frame: Result<ClientFrame, ErrorCode>) -> Result<(), ConnectionError> {
        match frame {
            Ok(frame) => {
                self.handle(frame).await;
                Ok(())
            }
            Err(code) => Err(refuse(&self.outbound, code).await),
        }
    }

    async fn handle(&mut self, frame: ClientFrame) {
        let store = &self.shared.store;
        match frame {
            ClientFrame::Subscribe if self.delivery.is_none() => self.subscribe(),
            ClientFrame::Subscribe => {}
            ClientFrame::Ack { ids } => {
                let acked = store.ack(self.account, ids);
                self.spawn_request(None, async move { acked.await.map(|_| Answer::Done) }).await;
            }
            ClientFrame::UploadKeyPackages { request, one_time, last_resort, expires_at } => {
                // Never kept past the relay's longest retention of anything.
                let now = self.shared.now();
                if expires_at <= now {
                    // Expired on arrival: the client's clock is wrong, and it
                    // must hear so rather than publish nothing usable.
                    let refused = Answer::Rejected(ErrorCode::Malformed);
                    self.spawn_request(Some(request), async move { Ok(refused) }).await;
                    return;
                }
                let expires = expires_at.min(now.saturating_add(MAX_KEY_PACKAGE_SECS));
                let added = store.add_key_packages(self.account, one_time, last_resort, expires, now);
                self.spawn_request(Some(request), async move { added.await.map(|_| Answer::Done) }).await;
            }
            ClientFrame::IssueTokens { request, blinded } => {
                let shared = Arc::clone(&self.shared);
                let account = self.account;
                let metrics = Arc::clone(&self.shared.metrics);
                // Each element is a scalar multiplication: off the async
                // threads, and only once the request holds one of the
                // connection's in-flight slots.
                let answer = async move {
                    let issued = tokio::task::spawn_blocking(move || {
                        shared.tokens.issue(account, &blinded, shared.now())
                    });
                    Ok(match issued.await {
                        Ok(Ok(issued)) => {
                            metrics.tokens_issued(issued.evaluated.len());
                            Answer::Tokens(issued)
                        }
                        Ok(Err(Refusal::Quota)) => {
                            metrics.token_request_refused();
                            Answer::Rejected(ErrorCode::RateLimited)
                        }
                        Ok(Err(Refusal::Malformed)) => Answer::Rejected(ErrorCode::Malformed),
                        Err(_) => Answer::Rejected(ErrorCode::Internal),
                    })
                };
                self.spawn_request(Some(request), answer).await;
            }
            // A request, so it is answered as one: the client is waiting
            // for its request number.
            ClientFrame::RemoteWipe { request, .. } => {
                let refused = Answer::Rejected(ErrorCode::Unexpected);
                self.spawn_request(Some(request), async move { Ok(refused) }).await;
            }
            // Sealed and queue frames never go on a logged-in connection,
            // which would link them to the account; nor does fetching
            // someone's key package. `Send` and `Commit` named recipients
            // by account: retired in protocol 3.
            ClientFrame::Send { request, .. }
            | ClientFrame::Commit { request, .. }
            | ClientFrame::FetchKeyPackage { request, .. }
            | ClientFrame::Spend { request, .. }
            | ClientFrame::CreateQueue { request, .. }
            | ClientFrame::SubscribeQueues { request, .. }
            | ClientFrame::SealedSend { request, .. }
            | ClientFrame::SealedCommit { request, .. }
            | ClientFrame::RekeyQueue { request, .. }
            | ClientFrame::DeleteQueue { request, .. }
            | ClientFrame::Report { request, .. }
            | ClientFrame::TokenKey { request, .. } => {
                let refused = Answer::Rejected(ErrorCode::Unexpected);
                self.spawn_request(Some(request), async move { Ok(refused) }).await;
            }
            ClientFrame::Hello { .. }
            | ClientFrame::Register { .. }
            | ClientFrame::Login { .. }
            | ClientFrame::AckQueues { .. } => {
                let frame = RelayFrame::Error {
                    code: ErrorCode::Unexpected,
                    message: "already logged in".to_owned(),
                };
                let _ = self.outbound.send(Outbound::frame(frame)).await;
            }
        }
    }

    /// Waits for a store operation (already handed to the worker, so
    /// operations keep the order their frames arrived in) as its own task
    /// and answers `request` with its result. Stored payloads were already
    /// pushed to connected recipients by the store worker, in order.
    async fn spawn_request(
        &self,
        request: Option<u32>,
        result: impl std::future::Future<Output = Result<Answer, StoreError>> + Send + 'static,
    ) {
        spawn_answer(&self.in_flight, &self.outbound, request, result).await;
    }

    /// Starts delivery of the account's introduction mailbox.
    fn subscribe(&mut self) {
        let mailbox = Mailbox::Account(self.account);
        self.shared.hub.subscribe(mailbox, self.connection_id, &self.control);
        let delivery = Delivery::new(
            Arc::clone(&self.shared),
            Arc::clone(&self.control),
            self.outbound.clone(),
            [mailbox],
        );
        self.delivery = Some(tokio::spawn(delivery.run()));
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let mailboxes = self.delivery.is_some().then_some(Mailbox::Account(self.account));
        self.shared.hub.unregister(Some(self.account), self.connection_id, mailboxes);
        if let Some(delivery) = self.delivery.take() {
            delivery.abort();
        }
    }
}

/// Answers a frame that has no place on this kind of connection: a request
/// is refused by its number (the client waits for it), anything else gets an
/// `Error` frame.
async fn not_here(
    in_flight: &Arc<Semaphore>,
    outbound: &mpsc::Sender<Outbound>,
    frame: &ClientFrame,
    message: &str,
) {
    match frame.request() {
        Some(request) => {
            let refused = Answer::Rejected(ErrorCode::Unexpected);
            spawn_answer(in_flight, outbound, Some(request), async move { Ok(refused) }).await;
        }
        None => {
            let frame = RelayFrame::Error { code: ErrorCode::Unexpected, message: message.to_owned() };
            let _ = outbound.send(Outbound::frame(frame)).await;
        }
    }
}

/// Waits for `result` (a store operation already handed to the worker,
/// so operations keep the order their frames arrived in) as its own task,
/// holding one of the connection's in-flight slots, and answers `request`.
async fn spawn_answer(
    in_flight: &Arc<Semaphore>,
    outbound: &mpsc::Sender<Outbound>,
    request: Option<u32>,
    result: impl std::future::Future<Output = Result<Answer, StoreError>> + Send + 'static,
) {
    let Ok(permit) = Arc::clone(in_flight).acquire_owned().await else { return };
    let outbound = outbound.clone();
    tokio::spawn(async move {
        let answer = result.await.unwrap_or_else(|error| Answer::Rejected(store_error_code(&error)));
        if let Some(request) = request {
            let _ = outbound.send(Outbound::frame(answer.into_frame(request))).await;
        }
        drop(permit);
    });
}

enum Answer {
    /// Done, nothing to report.
    Done,
    KeyPackage(Vec<u8>),
    Tokens(hush_proto::tokens::Issued),
    /// Stored in every target but these (by index).
    Sent(Vec<u32>),
    QueueCreated(hush_proto::QueueId),
    Stale(u64),
    Rejected(ErrorCode),
}

impl Answer {
    fn into_frame(self, request: u32) -> RelayFrame {
        match self {
            Self::Done => RelayFrame::Accepted { request, inactive: Vec::new() },
            Self::KeyPackage(key_package) => RelayFrame::KeyPackage { request, key_package },
            Self::Tokens(issued) => RelayFrame::Tokens { request, issued },
            Self::Sent(refused) => RelayFrame::Sent { request, refused },
            Self::QueueCreated(queue) => RelayFrame::QueueCreated { request, queue },
            Self::Stale(epoch) => RelayFrame::StaleEpoch { request, epoch },
            Self::Rejected(code) => RelayFrame::Rejected { request, code },
        }
    }
}

mod delivery;
mod queues;
mod sealed;

#[cfg(test)]
mod queue_tests;
#[cfg(test)]
mod tests;

#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod harness;

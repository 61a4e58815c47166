//! A session of one profile with its relay (protocol 3): requests with
//! answers, deliveries processed as they arrive, commits retried when they
//! lose their epoch, over three connections the relay cannot link by what
//! it is told (see [`Session`]).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use hush_core::engine::{QueuePlan, QueueSecrets};
use hush_core::{
    verify_key_package, Body, CommitAnswer, CommitRun, CommitStep, Content, Conversation, ConversationKind,
    CoreError, Identity, Resolution, SentCommit, VerifiedKeyPackage,
};
use hush_proto::limits::MAX_QUEUES_PER_SUBSCRIBE;
use hush_proto::tokens::{day_of, Token, TokenRequest};
use hush_proto::{AccountId, Capability, ClientFrame, Destination, DeviceId, ErrorCode, QueueId, RelayFrame};
use hush_store::HushProvider;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::client::{now_ms, Client, ReceivedMessage, Target};
use crate::error::ClientError;
use crate::handshake::{handshake, Admission, Credentials};
use crate::transport::Connection;

/// How long a request may wait for its answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a long-running client (the messenger) keeps an unused sealed
/// connection before closing it: an idle device then holds no sending
/// connection at the relay (about 14 KiB of the relay's memory each), and
/// the next send opens one again with a token.
pub const SEALED_IDLE: Duration = Duration::from_secs(60);
/// How long a long-running client keeps an unused logged-in connection
/// before closing it: an idle device then holds one connection at the
/// relay, its queue connection, and logs in again to check in (see
/// [`Session::check_in`]) or when it needs the account plane.
pub const ACCOUNT_IDLE: Duration = Duration::from_secs(30);
/// How long a send whose targets were refused waits for the commit that
/// may have moved their queues on.
const CATCH_UP_AFTER_REFUSAL: Duration = Duration::from_secs(3);

/// A commit's answer in the engine's terms.
struct Submitted {
    answer: CommitAnswer,
    /// Recipients the relay skipped as deactivated.
    inactive: Vec<AccountId>,
    /// The error behind an answer other than acceptance.
    failure: Option<ClientError>,
}

enum Answer {
    /// Done.
    Accepted,
    /// Stored in every target but these (by index).
    Sent(Vec<u32>),
    KeyPackage(Vec<u8>),
    Stale(u64),
    Tokens(hush_proto::tokens::Issued),
    QueueCreated(QueueId),
}

/// The answer to `request` in `frame`, if it is one; a refusal is an error.
fn answer_to(frame: RelayFrame, request: u32) -> Result<Option<Answer>, ClientError> {
    Ok(Some(match frame {
        RelayFrame::Accepted { request: r, .. } if r == request => Answer::Accepted,
        RelayFrame::Sent { request: r, refused } if r == request => Answer::Sent(refused),
        RelayFrame::KeyPackage { request: r, key_package } if r == request => Answer::KeyPackage(key_package),
        RelayFrame::StaleEpoch { request: r, epoch } if r == request => Answer::Stale(epoch),
        RelayFrame::Tokens { request: r, issued } if r == request => Answer::Tokens(issued),
        RelayFrame::QueueCreated { request: r, queue } if r == request => Answer::QueueCreated(queue),
        RelayFrame::Rejected { request: r, code } if r == request => return Err(ClientError::Relay(code)),
        RelayFrame::Error { code, .. } => return Err(ClientError::Relay(code)),
        _ => return Ok(None),
    }))
}

fn create_queue_frame(secrets: &QueueSecrets) -> ClientFrame {
    ClientFrame::CreateQueue {
        request: 0,
        owner_key: secrets.owner_public(),
        write_hash: secrets.write_hash(),
    }
}

/// Gives a request frame its request id.
fn set_request(frame: &mut ClientFrame, id: u32) {
    match frame {
        ClientFrame::SealedSend { request, .. }
        | ClientFrame::SealedCommit { request, .. }
        | ClientFrame::CreateQueue { request, .. }
        | ClientFrame::FetchKeyPackage { request, .. }
        | ClientFrame::Report { request, .. }
        | ClientFrame::Commit { request, .. }
        | ClientFrame::Send { request, .. } => *request = id,
        _ => {}
    }
}

/// The longest start of `text` of at most `max` bytes that ends on a
/// character boundary.
fn truncated(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// One request on a sealed connection opened for it alone with `token`.
async fn sealed_exchange(
    client: &Client,
    token: Token,
    mut frame: ClientFrame,
) -> Result<Answer, ClientError> {
    let (address, pin) = client.relay();
    let mut connection = Connection::open(address, pin).await?;
    crate::handshake::hello(&mut connection).await?;
    check_token_key(&mut connection, client, token.day).await?;
    // The request only once the token is taken: sent before, it would be
    // read under the relay's budget for connections that proved nothing.
    connection.send(&ClientFrame::Spend { request: 0, token }).await?;
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    answer_on(&mut connection, 0, deadline).await?;
    set_request(&mut frame, 1);
    connection.send(&frame).await?;
    let answer = answer_on(&mut connection, 1, deadline).await?;
    connection.close().await;
    Ok(answer)
}

/// The answer to `request` on `connection`, before `deadline`.
async fn answer_on(
    connection: &mut Connection,
    request: u32,
    deadline: Instant,
) -> Result<Answer, ClientError> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = tokio::time::timeout(left, connection.recv())
            .await
            .map_err(|_| ClientError::Transport("the relay did not answer in time".into()))??;
        if let Some(answer) = answer_to(frame, request)? {
            return Ok(answer);
        }
    }
}

/// The `Report` frame for a received message, and the message.
fn report_frame(
    client: &Client,
    id: &str,
    reason: &str,
) -> Result<(ReceivedMessage, ClientFrame), ClientError> {
    let (message, proof) = client.reportable(id)?;
    let reason = truncated(reason, hush_proto::limits::MAX_REPORT_REASON_BYTES);
    let frame = ClientFrame::Report {
        request: 0,
        account: message.from,
        content: proof.content,
        signature: proof.signature,
        reason: reason.to_owned(),
    };
    Ok((message, frame))
}

/// Reports a received message to the relay's operator (see
/// [`Session::report`]) without logging in, so that the relay sees no
/// account connect just before the report: with a token from the wallet,
/// on a connection of its own. With an empty wallet it logs in for tokens
/// first, then waits a few random seconds before reporting.
pub async fn report(client: &Client, id: &str, reason: &str) -> Result<ReceivedMessage, ClientError> {
    let (message, frame) = report_frame(client, id, reason)?;
    let token = match Wallet::take(client)? {
        Some(token) => token,
        None => {
            let mut session = Session::login(client).await?;
            session.refill_tokens().await?;
            session.close().await;
            let pause = Duration::from_millis(1_000 + rand::thread_rng().next_u64() % 4_000);
            tokio::time::sleep(pause).await;
            Wallet::take(client)?.ok_or(ClientError::Relay(ErrorCode::RateLimited))?
        }
    };
    match sealed_exchange(client, token, frame).await? {
        Answer::Accepted => Ok(message),
        _ => Err(ClientError::Protocol("unexpected answer to a report".into())),
    }
}

/// Below this many of today's send tokens, a session asks for more.
const TOKENS_LOW: usize = 8;
/// How many a session holds after asking.
const TOKENS_BATCH: usize = 32;
/// The device's unspent send tokens, in its encrypted store.
const WALLET: &str = "send_tokens";

/// The token keys the device's tokens were issued under, by day.
const TOKEN_KEYS: &str = "send_token_keys";

/// What a device says when a relay tried to tag its tokens.
const TAGGED: &str = "the relay issued this device's send tokens under a key it does not show to \
                      others, so it could recognise them when spent: they were thrown away";

/// The token keys this device's tokens were issued under: (day, key).
fn token_keys(client: &Client) -> Result<Vec<(u64, [u8; 32])>, ClientError> {
    let bytes = client.store.setting(TOKEN_KEYS)?.unwrap_or_default();
    Ok(bytes
        .chunks_exact(40)
        .filter_map(|chunk| {
            Some((u64::from_be_bytes(chunk[..8].try_into().ok()?), chunk[8..].try_into().ok()?))
        })
        .collect())
}

/// Records the key of `day`'s tokens; a second, different key for a day
/// is the relay singling this device out, and refused.
fn record_token_key(client: &Client, day: u64, key: [u8; 32], today: u64) -> Result<(), ClientError> {
    let mut keys = token_keys(client)?;
    keys.retain(|(known, _)| known + 1 >= today);
    match keys.iter().find(|(known, _)| *known == day) {
        Some((_, known)) if *known != key => {
            tracing::warn!("the relay issued send tokens under a second key for one day; refused");
            return Err(ClientError::Protocol(TAGGED.into()));
        }
        Some(_) => {}
        None => keys.push((day, key)),
    }
    save_token_keys(client, &keys)
}

fn save_token_keys(client: &Client, keys: &[(u64, [u8; 32])]) -> Result<(), ClientError> {
    let bytes: Vec<u8> =
        keys.iter().flat_map(|(day, key)| day.to_be_bytes().into_iter().chain(key.iter().copied())).collect();
    Ok(client.store.set_setting(TOKEN_KEYS, &bytes)?)
}

/// Before a token of `day` is shown to the relay, on the connection that
/// will show it and has proved nothing yet: asks for the day's key, which
/// the relay shows without knowing who asks, and compares it with the key
/// the token was issued under. A relay that issued this device's tokens
/// under a key of their own (to recognise them when spent) is caught here:
/// the day's tokens are thrown away unspent, and the day is marked so that
/// no more are taken under that key. A day the relay no longer takes (the
/// clocks disagree about midnight) only loses its tokens. (A relay that
/// tells this connection from others by its address can still lie to it;
/// see the README on addresses.)
async fn check_token_key(connection: &mut Connection, client: &Client, day: u64) -> Result<(), ClientError> {
    let issued_under = token_keys(client)?.into_iter().find(|(known, _)| *known == day).map(|(_, key)| key);
    connection.send(&ClientFrame::TokenKey { request: 0, day }).await?;
    let answer = tokio::time::timeout(REQUEST_TIMEOUT, connection.recv())
        .await
        .map_err(|_| ClientError::Transport("the relay did not answer in time".into()))??;
    let today = day_of(client.now_ms() / 1000);
    let drop_day = || -> Result<(), ClientError> {
        let mut wallet = Wallet::load(client, today)?;
        wallet.tokens.retain(|token| token.day != day);
        wallet.save(client)
    };
    match answer {
        RelayFrame::TokenKey { request: 0, day: shown, public_key } if shown == day => {
            if Some(public_key) == issued_under {
                return Ok(());
            }
            tracing::warn!("the relay's token key for this device's tokens is not the one it shows; refused");
            drop_day()?;
            poison_token_day(client, day, today)?;
            Err(ClientError::Protocol(TAGGED.into()))
        }
        RelayFrame::Rejected { request: 0, .. } => {
            drop_day()?;
            Err(ClientError::Relay(ErrorCode::NeedToken))
        }
        _ => Err(ClientError::Protocol("unexpected answer to a token key request".into())),
    }
}

/// Marks `day` as one whose tokens the relay tried to tag: its recorded
/// key becomes one no issuance can match, so no more are taken that day.
fn poison_token_day(client: &Client, day: u64, today: u64) -> Result<(), ClientError> {
    let mut keys = token_keys(client)?;
    keys.retain(|(known, _)| *known != day && known + 1 >= today);
    keys.push((day, POISONED));
    save_token_keys(client, &keys)
}

/// The key recorded for a day whose tokens were tagged.
const POISONED: [u8; 32] = [0; 32];

/// Unspent send tokens of today and yesterday (the relay takes no older),
/// each of a day whose key is recorded (see [`check_token_key`]).
struct Wallet {
    tokens: Vec<Token>,
}

impl Wallet {
    fn load(client: &Client, today: u64) -> Result<Self, ClientError> {
        let keys = token_keys(client)?;
        let bytes = zeroize::Zeroizing::new(client.store.setting(WALLET)?.unwrap_or_default());
        let tokens = bytes
            .chunks_exact(104)
            .filter_map(|chunk| {
                Some(Token {
                    day: u64::from_be_bytes(chunk[..8].try_into().ok()?),
                    nonce: chunk[8..40].try_into().ok()?,
                    output: chunk[40..].try_into().ok()?,
                })
            })
            .filter(|token| token.day + 1 >= today && token.day <= today)
            .filter(|token| keys.iter().any(|(day, _)| *day == token.day))
            .collect();
        Ok(Self { tokens })
    }

    /// Takes one of today's or yesterday's tokens out of the wallet, if
    /// there is one (gone from the store before it is shown to the relay).
    fn take(client: &Client) -> Result<Option<Token>, ClientError> {
        let today = day_of(client.now_ms() / 1000);
        let mut wallet = Self::load(client, today)?;
        let token = wallet.tokens.pop();
        wallet.save(client)?;
        Ok(token)
    }

    fn save(&self, client: &Client) -> Result<(), ClientError> {
        let mut bytes = zeroize::Zeroizing::new(Vec::with_capacity(self.tokens.len() * 104));
        for token in &self.tokens {
            bytes.extend_from_slice(&token.day.to_be_bytes());
            bytes.extend_from_slice(&token.nonce);
            bytes.extend_from_slice(&token.output);
        }
        Ok(client.store.set_setting(WALLET, &bytes)?)
    }
}

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

/// Where a frame came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plane {
    /// The logged-in connection: the introduction mailbox, wipe orders.
    Account,
    /// The queue connection: our queues.
    Queues,
}

/// A frame the relay pushed, taken by [`Session::next_push`] and processed
/// by [`Session::handle_push`].
pub struct Push(Plane, RelayFrame);

/// The connection that receives from our queues: it proved each of them
/// under its challenge, and never logs in or sends.
struct QueueLink {
    connection: Connection,
    nonce: [u8; 32],
    proved: HashSet<QueueId>,
    /// `Subscribe` was sent on it: delivery runs.
    delivering: bool,
}

/// A connection a long-running client closes while unused (the logged-in
/// one, the sealed one), and when it was last used.
struct Resting {
    connection: Option<Connection>,
    used: Instant,
}

impl Resting {
    fn new(connection: Option<Connection>) -> Self {
        Self { connection, used: Instant::now() }
    }

    /// The connection, marked as used now.
    fn used(&mut self) -> Result<&mut Connection, ClientError> {
        self.used = Instant::now();
        self.connection.as_mut().ok_or(ClientError::Disconnected)
    }

    /// When it will have been unused for `idle`, if it is open.
    fn idle_at(&self, idle: Duration) -> Option<Instant> {
        self.connection.as_ref().map(|_| self.used + idle)
    }

    /// Closes it if it has been unused for `idle` (a relay that does not
    /// answer the close is not waited for).
    async fn rest(&mut self, idle: Duration) {
        if self.used.elapsed() >= idle {
            if let Some(connection) = self.connection.take() {
                let _ = tokio::time::timeout(Duration::from_secs(2), connection.close()).await;
            }
        }
    }
}

/// A session of one profile with its relay, on three connections that the
/// relay cannot link by anything it is told: the logged-in one (key
/// packages, send tokens, introductions, wipe orders), the queue one
/// (receiving, and wipe orders too), and a sealed one (sending, opened
/// with a token when first needed). A long-running client closes the
/// logged-in and sealed ones while unused; they are opened again when
/// needed.
pub struct Session<'a> {
    client: &'a Client,
    /// The logged-in connection, unless it rests.
    account: Resting,
    /// How many key packages the relay held at the last login, until they
    /// are topped up.
    held_key_packages: Option<u32>,
    queues: Option<QueueLink>,
    /// The sealed connection, opened when first needed.
    sealed: Resting,
    next_request: u32,
    subscribed: bool,
    /// `QueueEmpty`s the queue connection owes: one for `Subscribe`, one
    /// for each proof accepted after it (each drains its queues and says
    /// so). Drained when none are owed.
    queue_empties_owed: usize,
    intro_empty: bool,
    received: usize,
    /// Members whose queues stayed refused, by group, to be removed.
    inactive: Vec<(Vec<u8>, Vec<AccountId>)>,
    /// The relay's tokens did not verify for this device's day: the upkeep
    /// asks again only at the next check-in (or when a send needs one), not
    /// with a login every minute.
    tokens_refused: bool,
}

impl<'a> Session<'a> {
    fn new(client: &'a Client, account: Connection) -> Self {
        Self {
            client,
            account: Resting::new(Some(account)),
            held_key_packages: None,
            queues: None,
            sealed: Resting::new(None),
            next_request: 1,
            subscribed: false,
            queue_empties_owed: 0,
            intro_empty: false,
            received: 0,
            inactive: Vec::new(),
            tokens_refused: false,
        }
    }

    /// Opens a connection to the profile's relay and runs the handshake.
    pub(crate) async fn admit(
        client: &Client,
        credentials: Credentials,
    ) -> Result<(Connection, u32), ClientError> {
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
    /// key packages and sets up its queues.
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
        session.open_planes().await?;
        Ok(session)
    }

    /// Logs in; resolves commits whose answer was lost before anything else.
    /// An account the operator deactivated deletes its queues (best effort),
    /// so that its contacts' sends fail rather than pile up unread.
    pub async fn login(client: &'a Client) -> Result<Session<'a>, ClientError> {
        let admitted = Self::admit(client, Credentials::Login { account: client.account() }).await;
        if let Err(ClientError::Relay(ErrorCode::Deactivated)) = &admitted {
            if let Err(error) = delete_own_queues(client).await {
                tracing::warn!(%error, "could not delete the queues of a deactivated account");
            }
        }
        let (connection, key_packages) = admitted?;
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
        session.open_planes().await?;
        session.resolve_commits().await?;
        session.client.engine().retry_all_held()?;
        Ok(session)
    }

    /// Send tokens for the day, the contact queue, and the queue
    /// connection with every queue of ours proved on it.
    async fn open_planes(&mut self) -> Result<(), ClientError> {
        self.top_up_tokens().await?;
        // Twice at most: a contact queue the relay no longer has is
        // forgotten while proving, and made again.
        for _ in 0..2 {
            if self.client.engine().contact_queue()?.is_none() {
                let secrets = QueueSecrets::generate(&mut rand::rngs::OsRng);
                let queue = self.create_own_queue(&secrets).await?;
                self.client.engine().set_contact_queue(queue, &secrets)?;
            }
            self.prove_queues().await?;
            if self.queues.is_some() {
                break;
            }
        }
        self.queue_upkeep().await
    }

    fn wipe_order(&self, secret: &[u8; 32]) -> ClientError {
        wipe_order(self.client, secret)
    }

    // ----- the logged-in connection -----

    /// The logged-in connection, logging in again if it rests (then the
    /// introduction mailbox is asked for again, if it was, and the key
    /// packages the relay holds are noted for the next upkeep). A wipe
    /// order or a deactivation found at that login ends the session.
    async fn account(&mut self) -> Result<&mut Connection, ClientError> {
        if self.account.connection.is_none() {
            let credentials = Credentials::Login { account: self.client.account() };
            // A relay that takes the connection and then says nothing is a
            // lost connection, not a wait for ever.
            let admitted = tokio::time::timeout(REQUEST_TIMEOUT, Self::admit(self.client, credentials)).await;
            let (mut connection, key_packages) = admitted
                .map_err(|_| ClientError::Transport("the relay did not answer the login in time".into()))??;
            if self.subscribed {
                connection.send(&ClientFrame::Subscribe).await?;
                self.intro_empty = false;
            }
            self.account.connection = Some(connection);
            self.held_key_packages = Some(key_packages);
        }
        self.account.used()
    }

    /// Whether the logged-in connection is open.
    pub fn account_open(&self) -> bool {
        self.account.connection.is_some()
    }

    /// When the logged-in connection will have been unused for `idle`, if
    /// it is open.
    pub fn account_idle_at(&self, idle: Duration) -> Option<Instant> {
        self.account.idle_at(idle)
    }

    /// Closes the logged-in connection if it has been unused for `idle`.
    /// Nothing waiting for it is lost: introductions not acknowledged are
    /// delivered again at the next login, and a wipe order reaches the
    /// queue connection.
    pub async fn rest_account(&mut self, idle: Duration) {
        self.account.rest(idle).await;
    }

    /// Logs in again if the logged-in connection rests, takes what waits
    /// in the introduction mailbox, and replaces the key packages others
    /// took: what a long-running client does now and then while its
    /// logged-in connection rests. A deactivation, and introductions from
    /// those who know only this account's id, are learnt then.
    pub async fn check_in(&mut self) -> Result<(), ClientError> {
        self.tokens_refused = false;
        self.account().await?;
        self.drain().await?;
        self.top_up_key_packages().await
    }

    /// Replaces the key packages others took since the last login.
    async fn top_up_key_packages(&mut self) -> Result<(), ClientError> {
        let held = self.held_key_packages.take().unwrap_or(u32::MAX);
        match self.maintain_key_packages(held).await {
            // Refused (an upload already expired: this device's clock is
            // wrong): said, tried again at the next upkeep, and the session
            // goes on.
            Err(ClientError::Relay(code)) => {
                tracing::warn!(?code, "the relay refused this device's key packages: is its clock right?");
                Ok(())
            }
            other => other,
        }
    }

    // ----- tokens -----

    /// Asks for send tokens when fewer than [`TOKENS_LOW`] of today's are
    /// left. The proof that the relay evaluated them all with the day's
    /// key, and that the day is today's, is checked by `finish`.
    async fn refill_tokens(&mut self) -> Result<(), ClientError> {
        let today = day_of(self.client.now_ms() / 1000);
        let wallet = Wallet::load(self.client, today)?;
        if wallet.tokens.len() >= TOKENS_LOW {
            return Ok(());
        }
        let wanted = TOKENS_BATCH.saturating_sub(wallet.tokens.len());
        let tokens = TokenRequest::new(wanted, &mut rand::rngs::OsRng);
        let request = self.request_id();
        let frame = ClientFrame::IssueTokens { request, blinded: tokens.blinded().to_vec() };
        self.account().await?.send(&frame).await?;
        let Answer::Tokens(issued) = self.account_answer(request).await? else {
            return Err(ClientError::Protocol("unexpected answer to a token request".into()));
        };
        let fresh =
            tokens.finish(&issued, today).map_err(|error| ClientError::Protocol(error.to_string()))?;
        // One key a day: a second one would be a key for this device alone.
        record_token_key(self.client, issued.day, issued.public_key, today)?;
        let mut wallet = Wallet::load(self.client, today)?;
        wallet.tokens.extend(fresh);
        wallet.save(self.client)
    }

    /// As [`Self::refill_tokens`], but a relay whose day is not ours (this
    /// device's clock is wrong, or the relay tries to give this device a
    /// key of its own) only leaves the device without tokens: it cannot
    /// send, and still receives.
    async fn top_up_tokens(&mut self) -> Result<(), ClientError> {
        if self.tokens_refused {
            return Ok(());
        }
        match self.refill_tokens().await {
            Err(ClientError::Protocol(reason)) => {
                tracing::warn!(%reason, "no send tokens: is this device's clock right?");
                self.tokens_refused = true;
                Ok(())
            }
            other => other,
        }
    }

    /// Takes one token, asking for more first if the wallet is empty.
    async fn take_token(&mut self) -> Result<Token, ClientError> {
        let today = day_of(self.client.now_ms() / 1000);
        if Wallet::load(self.client, today)?.tokens.is_empty() {
            self.refill_tokens().await?;
        }
        let mut wallet = Wallet::load(self.client, today)?;
        let token = wallet.tokens.pop().ok_or_else(|| ClientError::Relay(ErrorCode::RateLimited))?;
        // Gone from the wallet before it is spent: a token is never shown
        // to the relay twice.
        wallet.save(self.client)?;
        Ok(token)
    }

    // ----- the sealed connection -----

    /// The sealed connection, opened with a token if there is none (or the
    /// relay ended the one there was: restarted, say).
    async fn sealed(&mut self) -> Result<&mut Connection, ClientError> {
        // Twice at most: a day the relay no longer takes (the clocks
        // disagree about midnight) loses its tokens, and the next is today's.
        for tries_left in (0..2).rev() {
            if self.sealed_open() {
                break;
            }
            let token = self.take_token().await?;
            let (address, pin) = self.client.relay();
            let mut connection = Connection::open(address, pin).await?;
            crate::handshake::hello(&mut connection).await?;
            match check_token_key(&mut connection, self.client, token.day).await {
                Ok(()) => {}
                Err(ClientError::Relay(ErrorCode::NeedToken)) if tries_left > 0 => {
                    connection.close().await;
                    continue;
                }
                Err(error) => return Err(error),
            }
            connection.send(&ClientFrame::Spend { request: 0, token }).await?;
            match connection.recv().await? {
                RelayFrame::Accepted { request: 0, .. } => {}
                RelayFrame::Error { code, .. } => return Err(ClientError::Relay(code)),
                _ => return Err(ClientError::Protocol("unexpected answer to a token".into())),
            }
            self.sealed.connection = Some(connection);
        }
        self.sealed.connection.as_mut().ok_or(ClientError::Disconnected)
    }

    /// Whether a sealed (sending) connection is open; one the relay ended
    /// is let go here.
    pub fn sealed_open(&mut self) -> bool {
        if self.sealed.connection.as_mut().is_some_and(Connection::ended) {
            self.sealed.connection = None;
        }
        self.sealed.connection.is_some()
    }

    /// When the sealed connection will have been unused for `idle`, if one
    /// is open.
    pub fn sealed_idle_at(&self, idle: Duration) -> Option<Instant> {
        self.sealed.idle_at(idle)
    }

    /// Closes the sealed connection if it has been unused for `idle` (what
    /// was left of its token's budget goes with it).
    pub async fn rest_sealed(&mut self, idle: Duration) {
        self.sealed.rest(idle).await;
    }

    /// Sends a request on the sealed connection (setting its request id)
    /// and waits for the answer; a spent budget is topped up with another
    /// token and the request sent again.
    async fn sealed_request(&mut self, mut frame: ClientFrame) -> Result<Answer, ClientError> {
        for _ in 0..2 {
            let request = self.request_id();
            set_request(&mut frame, request);
            let sent = self.sealed().await?.send(&frame).await;
            let answered = match sent {
                Ok(()) => self.sealed_answer(request).await,
                Err(error) => Err(error),
            };
            match answered {
                // The budget is spent: the request goes again on a new
                // connection, opened with a token whose key is checked
                // first. (Spending another on this one would skip that
                // check, and link the requests of both tokens.)
                Err(ClientError::Relay(ErrorCode::NeedToken)) => {
                    self.sealed.rest(Duration::ZERO).await;
                }
                Err(error @ (ClientError::Disconnected | ClientError::Transport(_))) => {
                    // The next request opens a new one.
                    self.sealed.connection = None;
                    return Err(error);
                }
                other => return other,
            }
        }
        Err(ClientError::Relay(ErrorCode::NeedToken))
    }

    async fn sealed_answer(&mut self, request: u32) -> Result<Answer, ClientError> {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let connection = self.sealed.used()?;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = tokio::time::timeout(left, connection.recv())
                .await
                .map_err(|_| ClientError::Transport("the relay did not answer in time".into()))??;
            if let Some(answer) = answer_to(frame, request)? {
                return Ok(answer);
            }
        }
    }

    /// Makes a queue at the relay, for another member, on the sealed
    /// connection (the commit that names it goes there too).
    async fn create_queue(&mut self, secrets: &QueueSecrets) -> Result<QueueId, ClientError> {
        match self.sealed_request(create_queue_frame(secrets)).await? {
            Answer::QueueCreated(queue) => Ok(queue),
            _ => Err(ClientError::Protocol("unexpected answer to a queue creation".into())),
        }
    }

    /// Makes a queue of our own at the relay, on a sealed connection of its
    /// own: made on the one that sends, the relay would see the sender's
    /// queue proved on the receiving connection, and link the two.
    async fn create_own_queue(&mut self, secrets: &QueueSecrets) -> Result<QueueId, ClientError> {
        match self.sealed_once(create_queue_frame(secrets)).await? {
            Answer::QueueCreated(queue) => Ok(queue),
            _ => Err(ClientError::Protocol("unexpected answer to a queue creation".into())),
        }
    }

    /// Reports a received message (by id, see [`Client::reportable`]) to
    /// the relay's operator, with `reason`: its content as the sender
    /// signed it, which the relay checks against the sender's identity key.
    /// Sent on a sealed connection of its own: the operator learns what was
    /// said and by whom, not who reported it.
    pub async fn report(&mut self, id: &str, reason: &str) -> Result<ReceivedMessage, ClientError> {
        let (message, frame) = report_frame(self.client, id, reason)?;
        match self.sealed_once(frame).await? {
            Answer::Accepted => Ok(message),
            _ => Err(ClientError::Protocol("unexpected answer to a report".into())),
        }
    }

    /// One request on a sealed connection opened for it alone (one token),
    /// so it cannot be linked to anything else this device does.
    async fn sealed_once(&mut self, frame: ClientFrame) -> Result<Answer, ClientError> {
        let token = self.take_token().await?;
        sealed_exchange(self.client, token, frame).await
    }

    // ----- the queue connection -----

    /// Proves every queue of ours not proved yet, opening the queue
    /// connection if there is none.
    async fn prove_queues(&mut self) -> Result<(), ClientError> {
        let own = self.client.engine().own_queues()?;
        let rekeys = self.client.engine().rekeys()?;
        let proved = self.queues.as_ref().map(|link| link.proved.clone()).unwrap_or_default();
        let mut missing: Vec<_> = own.into_iter().filter(|(queue, _)| !proved.contains(queue)).collect();
        // The proof that opens the connection is of one queue alone: a
        // refusal there closes the connection, and one queue that no longer
        // proves (a rekey whose answer was lost, a Welcome that named a
        // queue that is not ours) must not lock the device out of the rest.
        while self.queues.as_ref().is_none_or(|link| link.proved.is_empty()) {
            let Some((queue, owner)) = missing.first().cloned() else { break };
            missing.remove(0);
            let next = rekeys.iter().find(|(q, _, _)| *q == queue).map(|(_, _, next)| next.clone());
            self.prove_one(queue, owner, next).await?;
        }
        for chunk in missing.chunks(MAX_QUEUES_PER_SUBSCRIBE) {
            match self.prove_batch(chunk).await {
                Ok(()) => {}
                Err(ClientError::Relay(ErrorCode::BadQueue)) => {
                    for (queue, owner) in chunk {
                        let next =
                            rekeys.iter().find(|(q, _, _)| q == queue).map(|(_, _, next)| next.clone());
                        self.prove_one(*queue, owner.clone(), next).await?;
                    }
                }
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    async fn prove_batch(
        &mut self,
        queues: &[(QueueId, ed25519_dalek::SigningKey)],
    ) -> Result<(), ClientError> {
        use ed25519_dalek::Signer as _;
        let pin = self.client.relay().1;
        let link = self.queues.as_ref().ok_or(ClientError::Disconnected)?;
        let nonce = link.nonce;
        let proofs: Vec<_> = queues
            .iter()
            .map(|(queue, owner)| {
                (*queue, owner.sign(&hush_proto::queue_auth_message(&nonce, &pin, queue)).to_bytes())
            })
            .collect();
        self.queue_request(|request| ClientFrame::SubscribeQueues { request, proofs }).await?;
        let link = self.queues.as_mut().ok_or(ClientError::Disconnected)?;
        link.proved.extend(queues.iter().map(|(queue, _)| *queue));
        // Once delivery runs, the relay drains queues proved later and says
        // so with a `QueueEmpty` of this proof's own, after its answer.
        if link.delivering {
            self.queue_empties_owed += 1;
        }
        Ok(())
    }

    /// Proves one queue, with its owner key or, for a queue whose rekey's
    /// answer was lost, the key it was being given. A queue neither proves
    /// is forgotten (false): it is not ours, or no longer exists.
    async fn prove_one(
        &mut self,
        queue: QueueId,
        owner: ed25519_dalek::SigningKey,
        next: Option<ed25519_dalek::SigningKey>,
    ) -> Result<bool, ClientError> {
        for (key, is_next) in std::iter::once((owner, false)).chain(next.map(|next| (next, true))) {
            if self.queues.is_none() {
                let (address, pin) = self.client.relay();
                let mut connection = Connection::open(address, pin).await?;
                let nonce = crate::handshake::hello(&mut connection).await?;
                let link = QueueLink { connection, nonce, proved: HashSet::new(), delivering: false };
                self.queues = Some(link);
            }
            match self.prove_batch(&[(queue, key)]).await {
                Ok(()) => {
                    // A connection opened after the session subscribed (the
                    // last one's opening proof was refused) delivers too.
                    self.start_delivery().await?;
                    if is_next {
                        self.client.engine().rekeyed(&queue)?;
                    }
                    return Ok(true);
                }
                Err(ClientError::Relay(ErrorCode::BadQueue)) => {
                    // A refused opening proof closed the connection.
                    if self.queues.as_ref().is_some_and(|link| link.proved.is_empty()) {
                        if let Some(link) = self.queues.take() {
                            link.connection.close().await;
                        }
                    }
                }
                Err(error) => return Err(error),
            }
        }
        self.forget_queue(queue).map(|()| false)
    }

    fn forget_queue(&self, queue: QueueId) -> Result<(), ClientError> {
        tracing::warn!("a queue of this device no longer proves at the relay; it is forgotten");
        Ok(self.client.engine().forget_queue(&queue)?)
    }

    /// Takes over queues made for us (a new owner key of our own) and
    /// deletes the queues of groups we left.
    async fn queue_upkeep(&mut self) -> Result<(), ClientError> {
        let engine = self.client.engine();
        let rekeys = engine.rekeys()?;
        let own = engine.own_queues()?;
        let drops = engine.queues_to_drop()?;
        drop(engine);
        // Every queue of ours gets its wipe tag once (taking over a queue
        // made for us sets our own owner key at the same time).
        for (queue, owner) in own {
            let next = rekeys.iter().find(|(q, _, _)| *q == queue).map(|(_, _, next)| next);
            let tagged = self.client.store.setting(&tagged_key(&queue))?.is_some();
            if tagged && next.is_none() {
                continue;
            }
            let owner_key = next.unwrap_or(&owner).verifying_key().to_bytes();
            let wipe_tag = hush_proto::wipe_tag(&*self.client.wipe_secret()?, &queue);
            let frame = |request| ClientFrame::RekeyQueue { request, queue, owner_key, wipe_tag };
            match self.queue_request(frame).await {
                Ok(()) => {
                    self.client.store.set_setting(&tagged_key(&queue), &[1])?;
                    if next.is_some() {
                        self.client.engine().rekeyed(&queue)?;
                    }
                }
                Err(ClientError::Relay(code)) => {
                    tracing::warn!(?code, "the relay refused to set a queue's owner key")
                }
                Err(error) => return Err(error),
            }
        }
        if !drops.is_empty() {
            // A queue must be proved on the connection to be deleted.
            let pin = self.client.relay().1;
            for (queue, owner) in drops {
                use ed25519_dalek::Signer as _;
                let link = self.queues.as_mut().ok_or(ClientError::Disconnected)?;
                let proof = owner.sign(&hush_proto::queue_auth_message(&link.nonce, &pin, &queue)).to_bytes();
                let proved = self
                    .queue_request(|request| ClientFrame::SubscribeQueues {
                        request,
                        proofs: vec![(queue, proof)],
                    })
                    .await;
                let deleted = match proved {
                    Ok(()) => {
                        // Proved while delivery runs: the relay drains it
                        // and owes a `QueueEmpty` for it.
                        if self.queues.as_ref().is_some_and(|link| link.delivering) {
                            self.queue_empties_owed += 1;
                        }
                        self.queue_request(|request| ClientFrame::DeleteQueue { request, queue }).await
                    }
                    Err(error) => Err(error),
                };
                match deleted {
                    // Gone either way: it is not ours to keep.
                    Ok(()) | Err(ClientError::Relay(_)) => self.client.engine().queue_dropped(&queue)?,
                    Err(error) => return Err(error),
                }
            }
        }
        Ok(())
    }

    /// A request on the queue connection; deliveries that arrive meanwhile
    /// are processed.
    async fn queue_request(&mut self, frame: impl FnOnce(u32) -> ClientFrame) -> Result<(), ClientError> {
        let request = self.request_id();
        let link = self.queues.as_mut().ok_or(ClientError::Disconnected)?;
        link.connection.send(&frame(request)).await?;
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let link = self.queues.as_mut().ok_or(ClientError::Disconnected)?;
            let frame = tokio::time::timeout(left, link.connection.recv())
                .await
                .map_err(|_| ClientError::Transport("the relay did not answer in time".into()))??;
            match frame {
                RelayFrame::Accepted { request: r, .. } if r == request => return Ok(()),
                RelayFrame::Rejected { request: r, code } if r == request => {
                    return Err(ClientError::Relay(code))
                }
                other => Box::pin(self.handle(Plane::Queues, other)).await?,
            }
        }
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
        self.account().await?.send(&frame).await?;
        match self.account_answer(request).await? {
            Answer::Accepted => {}
            _ => return Err(ClientError::Protocol("unexpected answer to a key package upload".into())),
        }
        // The relay hands out the new last-resort package from now on.
        Ok(engine.key_packages_accepted(&work)?)
    }

    /// Closes the connections.
    pub async fn close(mut self) {
        self.account.rest(Duration::ZERO).await;
        if let Some(link) = self.queues {
            link.connection.close().await;
        }
        self.sealed.rest(Duration::ZERO).await;
    }

    fn request_id(&mut self) -> u32 {
        let id = self.next_request;
        self.next_request = self.next_request.wrapping_add(1);
        id
    }

    /// Waits for the answer to `request` on the logged-in connection,
    /// processing introductions meanwhile.
    async fn account_answer(&mut self, request: u32) -> Result<Answer, ClientError> {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let account = self.account.connection.as_mut().ok_or(ClientError::Disconnected)?;
            let frame = tokio::time::timeout(left, account.recv())
                .await
                .map_err(|_| ClientError::Transport("the relay did not answer in time".into()))??;
            match frame {
                RelayFrame::Deliver { .. } | RelayFrame::QueueEmpty | RelayFrame::WipeOrder { .. } => {
                    Box::pin(self.handle(Plane::Account, frame)).await?
                }
                other => {
                    if let Some(answer) = answer_to(other, request)? {
                        return Ok(answer);
                    }
                }
            }
        }
    }

    async fn handle(&mut self, plane: Plane, frame: RelayFrame) -> Result<(), ClientError> {
        match (plane, frame) {
            (_, RelayFrame::WipeOrder { secret }) => Err(self.wipe_order(&secret)),
            (Plane::Account, RelayFrame::Deliver { id, payload, .. }) => {
                self.received += 1;
                self.client.engine().deliver_introduction(&payload)?;
                self.account().await?.send(&ClientFrame::Ack { ids: vec![id] }).await?;
                // A Welcome gave us a queue in a new group: receive from it.
                self.prove_queues().await?;
                self.queue_upkeep().await
            }
            (Plane::Account, RelayFrame::QueueEmpty) => {
                self.intro_empty = true;
                Ok(())
            }
            (Plane::Queues, RelayFrame::QueueDeliver { queue, seq, payload, .. }) => {
                self.deliver(queue, seq, &payload).await
            }
            (Plane::Queues, RelayFrame::QueueEmpty) => {
                self.queue_empties_owed = self.queue_empties_owed.saturating_sub(1);
                Ok(())
            }
            (_, RelayFrame::Error { code, .. }) => Err(ClientError::Relay(code)),
            // Answers to requests we no longer wait for, and anything else:
            // nothing in the allow-list asks the client to act.
            _ => Ok(()),
        }
    }

    /// Asks the relay for queued and live deliveries (once per session):
    /// our queues, and the introduction mailbox (again at each login).
    pub async fn subscribe(&mut self) -> Result<(), ClientError> {
        if !self.subscribed {
            if let Some(account) = self.account.connection.as_mut() {
                account.send(&ClientFrame::Subscribe).await?;
            }
            self.subscribed = true;
            self.start_delivery().await?;
        }
        Ok(())
    }

    /// Starts delivery on the queue connection, once the session has
    /// subscribed, if it is not running there yet.
    async fn start_delivery(&mut self) -> Result<(), ClientError> {
        let link = self.queues.as_mut().ok_or(ClientError::Disconnected)?;
        if self.subscribed && !link.delivering {
            link.connection.send(&ClientFrame::Subscribe).await?;
            link.delivering = true;
            self.queue_empties_owed += 1;
        }
        Ok(())
    }

    /// The next frame of either receiving connection (the queue one alone
    /// while the logged-in one rests).
    async fn next_frame(&mut self) -> Result<(Plane, RelayFrame), ClientError> {
        let link = self.queues.as_mut().ok_or(ClientError::Disconnected)?;
        let Some(account) = self.account.connection.as_mut() else {
            return Ok((Plane::Queues, link.connection.recv().await?));
        };
        tokio::select! {
            frame = account.recv() => Ok((Plane::Account, frame?)),
            frame = link.connection.recv() => Ok((Plane::Queues, frame?)),
        }
    }

    /// Processes everything queued so far in our queues and introduction
    /// mailbox (once subscribed and drained, live pushes are processed as
    /// they come, so this is free).
    async fn drain(&mut self) -> Result<(), ClientError> {
        self.subscribe().await?;
        while self.queue_empties_owed > 0 || !(self.intro_empty || self.account.connection.is_none()) {
            let (plane, frame) = self.next_frame().await?;
            self.handle(plane, frame).await?;
        }
        Ok(())
    }

    /// Takes everything queued, then keeps listening until `wait` passes
    /// with nothing new. Returns how many payloads were processed.
    pub async fn receive(&mut self, wait: Duration) -> Result<usize, ClientError> {
        self.drain().await?;
        while let Ok(next) = tokio::time::timeout(wait, self.next_frame()).await {
            let (plane, frame) = next?;
            self.handle(plane, frame).await?;
        }
        self.pay_owed_updates().await?;
        Ok(self.received)
    }

    /// Waits for the next frame the relay pushes. Cancel-safe: nothing is
    /// lost if the future is dropped, so it can race other work in
    /// `tokio::select!`. Call [`Session::subscribe`] first.
    pub async fn next_push(&mut self) -> Result<Push, ClientError> {
        let (plane, frame) = self.next_frame().await?;
        Ok(Push(plane, frame))
    }

    /// Processes a pushed frame: a delivery is decrypted, stored and
    /// acknowledged; once the queues are drained, owed self-updates are
    /// sent.
    pub async fn handle_push(&mut self, push: Push) -> Result<(), ClientError> {
        let drained = matches!(push, Push(Plane::Queues, RelayFrame::QueueEmpty));
        self.handle(push.0, push.1).await?;
        if drained {
            self.pay_owed_updates().await?;
        }
        Ok(())
    }

    /// Processes one payload from a queue of ours and acknowledges it once
    /// its result is stored. Only a failure of our own store leaves it
    /// unacknowledged (the relay delivers it again); a payload that cannot
    /// be processed is shown as an event and acknowledged, so one broken
    /// payload or conversation never blocks the others.
    async fn deliver(&mut self, queue: QueueId, seq: u64, payload: &[u8]) -> Result<(), ClientError> {
        self.received += 1;
        let before = self.client.engine().own_queues()?.len();
        self.client.engine().deliver_queued(&queue, payload)?;
        let link = self.queues.as_mut().ok_or(ClientError::Disconnected)?;
        link.connection.send(&ClientFrame::AckQueues { items: vec![(queue, seq)] }).await?;
        // A Welcome on our contact queue gave us a queue in a new group:
        // receive from it. Removed from a group: its queue goes.
        if self.client.engine().own_queues()?.len() != before {
            self.prove_queues().await?;
            self.queue_upkeep().await?;
        } else if !self.client.engine().queues_to_drop()?.is_empty() {
            self.queue_upkeep().await?;
        }
        Ok(())
    }

    /// Fetches and verifies a key package of `account` (sealed: the relay
    /// learns that someone asked for it, not who).
    async fn key_package(&mut self, account: AccountId) -> Result<VerifiedKeyPackage, ClientError> {
        // Alone on its connection: beside the commit that adds the account,
        // it would tell the relay whose queue the commit makes.
        match self.sealed_once(ClientFrame::FetchKeyPackage { request: 0, account }).await {
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

    /// Makes queues at the relay for `members` about to be added to a
    /// group (and for us, when `creating`), and plans the commit's route:
    /// each member's Welcome goes to the contact queue its contact code
    /// gave, else to its account's introduction mailbox.
    async fn plan_members(
        &mut self,
        group_id: &[u8],
        packages: &[VerifiedKeyPackage],
        creating: bool,
    ) -> Result<(), ClientError> {
        let mut plans = Vec::new();
        if creating {
            let secrets = QueueSecrets::generate(&mut rand::rngs::OsRng);
            let queue = self.create_own_queue(&secrets).await?;
            plans.push(QueuePlan { device: self.client.device(), queue, secrets, welcome_to: None });
        }
        for package in packages {
            let secrets = QueueSecrets::generate(&mut rand::rngs::OsRng);
            let queue = self.create_queue(&secrets).await?;
            let welcome_to = match self.client.contact_route(&package.account)? {
                Some(capability) => Destination::Queue(capability),
                None => Destination::Account(package.account),
            };
            plans.push(QueuePlan { device: package.device(), queue, secrets, welcome_to: Some(welcome_to) });
        }
        self.client.engine().plan_route(group_id, &plans)?;
        if creating {
            // Our own queue in the group: receive from it from now on.
            self.prove_queues().await?;
            self.queue_upkeep().await?;
        }
        Ok(())
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
        let (mut run, mut step) = CommitRun::start_sealed(&self.client.engine(), group_id, make)?;
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
    async fn submit(&mut self, frame: ClientFrame) -> Submitted {
        let group_id = match &frame {
            ClientFrame::SealedCommit { group, .. } | ClientFrame::Commit { group, .. } => group.0.clone(),
            _ => Vec::new(),
        };
        let answered = self.sealed_request(frame.clone()).await;
        let (answer, failure) = match answered {
            Ok(Answer::Accepted) => {
                return Submitted { answer: CommitAnswer::Accepted, inactive: Vec::new(), failure: None }
            }
            Ok(Answer::Sent(refused)) => {
                // Queues the commit could not reach or rotate: members
                // whose queue is gone (a wiped device, one that left).
                let inactive = self.refused_members(&group_id, &frame, &refused);
                return Submitted { answer: CommitAnswer::Accepted, inactive, failure: None };
            }
            Ok(Answer::Stale(epoch)) => (CommitAnswer::Stale { epoch }, None),
            Ok(_) => {
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

    /// The members of a group behind a commit's refused targets (the
    /// targets of a commit come first, then its Welcome's destinations,
    /// then its rotations: only the first and last name members' queues).
    fn refused_members(&self, group_id: &[u8], frame: &ClientFrame, refused: &[u32]) -> Vec<AccountId> {
        let ClientFrame::SealedCommit { targets, rotate, welcome, .. } = frame else { return Vec::new() };
        let welcomed = welcome.as_ref().map_or(0, |(to, _)| to.len());
        let queues: Vec<QueueId> = refused
            .iter()
            .filter_map(|index| {
                let index = *index as usize;
                if index < targets.len() {
                    Some(targets[index].queue)
                } else {
                    let at = index.checked_sub(targets.len() + welcomed)?;
                    rotate.get(at).map(|(capability, _)| capability.queue)
                }
            })
            .collect();
        self.client.engine().members_of_queues(group_id, &queues).unwrap_or_default()
    }

    /// Processes deliveries until the group reaches `epoch`, or `wait`
    /// passes (a refusal may also mean a queue that is gone, with no commit
    /// to wait for).
    async fn catch_up_within(
        &mut self,
        group_id: &[u8],
        epoch: u64,
        wait: Duration,
    ) -> Result<(), ClientError> {
        self.subscribe().await?;
        let deadline = Instant::now() + wait;
        while !self.client.engine().reached(group_id, epoch)? {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(next) = tokio::time::timeout(left, self.next_frame()).await else { return Ok(()) };
            let (plane, frame) = next?;
            self.handle(plane, frame).await?;
        }
        Ok(())
    }

    /// Processes deliveries until the group reaches `epoch`.
    async fn catch_up(&mut self, group_id: &[u8], epoch: u64) -> Result<(), ClientError> {
        self.subscribe().await?;
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        while !self.client.engine().reached(group_id, epoch)? {
            let left = deadline.saturating_duration_since(Instant::now());
            let (plane, frame) = tokio::time::timeout(left, self.next_frame())
                .await
                .map_err(|_| ClientError::GroupStuck)??;
            self.handle(plane, frame).await?;
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
        if self.client.engine().members(group_id)?.len() < 2 {
            return Err(ClientError::Invalid("no one else is in this conversation".into()));
        }
        let epoch = self.client.engine().epoch(group_id)?.map_or(0, |(epoch, _)| epoch);
        // Writing into a conversation request accepts it.
        let outgoing = self.client.engine().encrypt_sealed(group_id, content)?;
        if outgoing.targets.is_empty() {
            return Err(ClientError::Invalid(
                "this conversation has no queues (it was made before queues, or its members' queues are \
                 unknown): start a new one"
                    .into(),
            ));
        }
        let mut refused = self.send_sealed(outgoing.targets, &outgoing.payload, ttl_secs).await?;
        let mut devices: Vec<DeviceId> =
            refused.iter().filter_map(|i| outgoing.devices.get(*i as usize)).copied().collect();
        if !devices.is_empty() {
            // A commit the relay ordered after we wrote moved the queues
            // on: catch up with it, then the same payload again (a past
            // epoch's message stays readable) with the new write secrets.
            self.catch_up_within(group_id, epoch + 1, CATCH_UP_AFTER_REFUSAL).await?;
            let again = self.client.engine().capabilities(group_id, &devices)?;
            let targets: Vec<Capability> = again.iter().map(|(_, capability)| capability.clone()).collect();
            refused = if targets.is_empty() {
                Vec::new()
            } else {
                self.send_sealed(targets, &outgoing.payload, ttl_secs).await?
            };
            devices =
                refused.iter().filter_map(|i| again.get(*i as usize)).map(|(device, _)| *device).collect();
        }
        if !devices.is_empty() {
            let everyone = devices.len() == outgoing.devices.len();
            let gone = self.client.engine().members_of_devices(group_id, &devices)?;
            self.note_inactive(group_id, gone);
            if everyone {
                return Err(ClientError::Unknown(
                    "no one in this conversation can receive it: their devices are gone (wiped or left)"
                        .into(),
                ));
            }
        }
        Ok(())
    }

    async fn send_sealed(
        &mut self,
        targets: Vec<Capability>,
        payload: &[u8],
        ttl_secs: u32,
    ) -> Result<Vec<u32>, ClientError> {
        let frame = ClientFrame::SealedSend { request: 0, targets, payload: payload.to_vec(), ttl_secs };
        match self.sealed_request(frame).await? {
            Answer::Sent(refused) => Ok(refused),
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
        self.client.engine().plan_route(group_id, &[])?;
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
        self.plan_members(&group_id, &packages, true).await?;
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
        self.client.engine().plan_route(group_id, &[])?;
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
    /// deletion (the relay's count is only known at a login, so a refill
    /// only after one).
    pub async fn housekeeping(&mut self) -> Result<(), ClientError> {
        self.client.engine().expire_held()?;
        self.top_up_tokens().await?;
        self.queue_upkeep().await?;
        self.self_update_due().await?;
        self.remove_inactive().await?;
        self.top_up_key_packages().await
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
        self.plan_members(&group_id, &packages, true).await?;
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
            self.plan_members(group_id, &packages, false).await?;
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
        self.client.engine().plan_route(&group_id, &[])?;
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

/// Deletes every queue of this device at the relay, on a queue connection
/// of its own (no login needed: owning a queue is proved by its key).
async fn delete_own_queues(client: &Client) -> Result<(), ClientError> {
    use ed25519_dalek::Signer as _;
    let own = client.engine().own_queues()?;
    if own.is_empty() {
        return Ok(());
    }
    let (address, pin) = client.relay();
    let mut connection = Connection::open(address, pin).await?;
    let nonce = crate::handshake::hello(&mut connection).await?;
    let mut request = 0;
    for chunk in own.chunks(MAX_QUEUES_PER_SUBSCRIBE) {
        let proofs = chunk
            .iter()
            .map(|(queue, owner)| {
                (*queue, owner.sign(&hush_proto::queue_auth_message(&nonce, &pin, queue)).to_bytes())
            })
            .collect();
        request += 1;
        connection.send(&ClientFrame::SubscribeQueues { request, proofs }).await?;
        for (queue, _) in chunk {
            request += 1;
            connection.send(&ClientFrame::DeleteQueue { request, queue: *queue }).await?;
        }
    }
    // Every answer, so the deletions are done before this returns.
    let last = request;
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, connection.recv()).await {
            Ok(Ok(RelayFrame::Accepted { request, .. } | RelayFrame::Rejected { request, .. }))
                if request == last =>
            {
                break
            }
            Ok(Ok(RelayFrame::Error { code, .. })) => return Err(ClientError::Relay(code)),
            Ok(Ok(_)) => {}
            Ok(Err(error)) => return Err(error),
            Err(_) => return Err(ClientError::Transport("the relay did not answer in time".into())),
        }
    }
    connection.close().await;
    Ok(())
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

/// Set once a queue of ours carries its wipe tag at the relay.
fn tagged_key(queue: &QueueId) -> String {
    format!("queue_tagged:{}", data_encoding::HEXLOWER.encode(&queue.0))
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    async fn registered(relay: &hush_testkit::TestRelay, name: &str) -> Client {
        let invite: hush_proto::Invite = relay.invite().unwrap().parse().unwrap();
        let dir = relay.profile_dir(name);
        let client = Client::create(&dir, b"pw", hush_store::KdfParams::FAST, 0, &invite, name).unwrap();
        Session::register(&client, &invite.code).await.unwrap().close().await;
        client
    }

    /// A relay that issued this device's tokens under a key other than the
    /// one it shows everyone (here: the device holds another key for the
    /// day than the relay shows) is caught on the connection that would
    /// spend one, before any is shown: the send fails and the day's tokens
    /// are thrown away.
    #[tokio::test]
    async fn tokens_under_a_key_the_relay_does_not_show_everyone_are_never_spent() {
        let relay = hush_testkit::TestRelay::start().unwrap();
        let alice = registered(&relay, "alice").await;
        let bob = registered(&relay, "bob").await;
        alice.add_contact("bob", bob.account()).unwrap();
        let today = day_of(alice.now_ms() / 1000);
        assert!(!Wallet::load(&alice, today).unwrap().tokens.is_empty());
        let mut keys = token_keys(&alice).unwrap();
        assert!(!keys.is_empty(), "no token key recorded at issuance");
        for (_, key) in &mut keys {
            key[0] ^= 1;
        }
        let bytes: Vec<u8> = keys
            .iter()
            .flat_map(|(day, key)| day.to_be_bytes().into_iter().chain(key.iter().copied()))
            .collect();
        alice.store.set_setting(TOKEN_KEYS, &bytes).unwrap();

        let mut session = Session::login(&alice).await.unwrap();
        let sent = session.send_text("bob", "hello", None).await;
        assert!(matches!(&sent, Err(ClientError::Protocol(reason)) if reason == TAGGED), "{sent:?}");
        assert!(Wallet::load(&alice, today).unwrap().tokens.is_empty(), "tagged tokens kept");
        session.close().await;
        // A second key for a day the device already has one for is refused
        // at issuance too.
        let recorded = token_keys(&alice).unwrap()[0];
        let refused = record_token_key(&alice, recorded.0, [9; 32], today);
        assert!(matches!(refused, Err(ClientError::Protocol(_))));
    }
}

//! The relay's durable state and the operations on it.
//!
//! Everything the relay knows lives behind [`RelayStore`]: accounts (id,
//! identity key, created, deactivated), public key packages, mailboxes of
//! opaque ciphertext (no sender), per-group commit epochs and hashed invites.
//! Operations arrive in batches; a store applies a batch in one durable
//! transaction, so one fsync covers many sends.
//!
//! Two backends implement it: [`SqliteStore`], embedded, the default; and
//! [`PostgresStore`], for several relays sharing one database. One
//! contract test suite runs against both.

#[cfg(test)]
mod contract;
mod postgresql;
mod sqlite;

pub use postgresql::{redact_url, PostgresStore, Target};
pub use sqlite::SqliteStore;

use std::sync::Arc;

use hush_proto::{AccountId, Capability, Destination, GroupId, IdentityKey, QueueId};
use thiserror::Error;

/// Errors of the store layer.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The invite code is unknown, used up or expired.
    #[error("invite is unknown, used up or expired")]
    BadInvite,
    /// An account with this identity key exists already.
    #[error("account already registered")]
    AlreadyRegistered,
    /// The account (a recipient, or the one asked for) does not exist or is deactivated.
    #[error("unknown or deactivated account")]
    UnknownAccount,
    /// The account has no key package left.
    #[error("no key package left")]
    NoKeyPackage,
    /// The wipe secret does not match the account.
    #[error("wipe code does not match")]
    BadWipeCode,
    /// A commit not signed with the group's current epoch key.
    #[error("commit not signed by a current member")]
    NotAMember,
    /// A new queue's random id is taken already (choose another).
    #[error("queue id taken")]
    QueueIdTaken,
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] rusqlite::Error),
    /// PostgreSQL failed, or the connection to it did.
    #[error("database: {0}")]
    Postgres(#[from] PostgresError),
    /// The database cannot be reached (the URL shown has no password).
    #[error("cannot reach the database at {url}: {reason}")]
    Unreachable {
        /// Where, without its password.
        url: String,
        /// Why not.
        reason: String,
    },
    /// The store URL is not one this relay understands.
    #[error("bad store URL: {0}")]
    BadUrl(String),
    /// The database was set up by a newer relay.
    #[error("the database's schema is version {found}; this relay knows up to {known}: please upgrade Hush")]
    NewerSchema {
        /// The database's version.
        found: i32,
        /// The newest this relay knows.
        known: i32,
    },
    /// The batch this operation was part of could not be committed.
    #[error("batch commit failed: {0}")]
    Batch(String),
    /// The store holds as many reports as it keeps ([`MAX_REPORTS`]).
    #[error("the store holds as many reports as it keeps")]
    Full,
    /// The store's worker has stopped.
    #[error("store is closed")]
    Closed,
    /// The database went away during the operation: nothing of it was
    /// stored.
    #[error("the database is unavailable")]
    Unavailable,
}

impl StoreError {
    /// True if the database could not be reached (rather than refusing the
    /// operation): the relay says so to clients, who try again.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::Unavailable => true,
            Self::Postgres(PostgresError(error)) => {
                let io = std::error::Error::source(error).is_some_and(|source| source.is::<std::io::Error>());
                let retryable = error.as_db_error().is_some_and(|db| {
                    let code = db.code().code();
                    // Connection exceptions, the server shutting down or
                    // starting up, a deadlock or serialization victim, a
                    // lock not granted in time: nothing was stored.
                    code.starts_with("08")
                        || code.starts_with("57P")
                        || matches!(code, "40P01" | "40001" | "55P03" | "57014")
                });
                error.is_closed() || io || retryable
            }
            _ => false,
        }
    }
}

/// A PostgreSQL error, shown without the server's detail lines (which can
/// quote the key values of a row: ids that must not reach a log).
#[derive(Debug)]
pub struct PostgresError(postgres::Error);

impl From<postgres::Error> for StoreError {
    fn from(error: postgres::Error) -> Self {
        Self::Postgres(PostgresError(error))
    }
}

impl std::fmt::Display for PostgresError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.as_db_error() {
            Some(db) => write!(f, "{} {}: {}", db.severity(), db.code().code(), db.message()),
            None if self.0.is_closed() => f.write_str("the connection to PostgreSQL is closed"),
            None => write!(f, "{}", self.0),
        }
    }
}

impl std::error::Error for PostgresError {}

/// Seconds since the Unix epoch.
pub type UnixSeconds = u64;

/// What is known of an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountRecord {
    /// Its identity public key.
    pub identity_key: IdentityKey,
    /// True once an operator (or a wipe) has deactivated it.
    pub deactivated: bool,
    /// A wipe order waiting for the device, if one was given.
    pub wipe_order: Option<[u8; 32]>,
}

/// Where payloads wait: a queue (a device's end of one conversation), or an
/// account's introduction mailbox (Welcomes from people who know only the
/// account id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mailbox {
    /// An account's introduction mailbox.
    Account(AccountId),
    /// A queue.
    Queue(QueueId),
}

/// One payload waiting in a mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// Delivery id (a queue's sequence number), increasing per mailbox.
    pub id: u64,
    /// Which mailbox.
    pub to: Mailbox,
    /// When it was stored.
    pub arrived_at: UnixSeconds,
    /// The opaque ciphertext.
    pub payload: Arc<[u8]>,
}

/// A commit as the relay orders it.
#[derive(Debug, Clone)]
pub struct CommitRequest {
    /// The group.
    pub group: GroupId,
    /// The epoch the commit was made in.
    pub epoch: u64,
    /// The opaque commit.
    pub payload: Arc<[u8]>,
    /// The Welcome for new members, if it adds any.
    pub welcome: Option<Arc<[u8]>>,
    /// The next epoch's public relay key.
    pub next_key: [u8; 32],
    /// Signature with the current epoch's relay key.
    pub signature: [u8; 64],
}

/// What the relay keeps of a group: its epoch and the key that signs its
/// next commit. Nothing else: not its members, not its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupRecord {
    /// The current epoch.
    pub epoch: u64,
    /// The current epoch's public relay key (None for groups ordered before
    /// relays checked commits; their next commit sets it).
    pub key: Option<[u8; 32]>,
}

/// What to do with a commit, given the group's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Order it: the group moves to `epoch + 1`.
    Accept,
    /// It is the commit that was ordered for its epoch, sent again because
    /// its answer was lost: say it was accepted, store nothing.
    Repeated,
    /// Another commit won this epoch (or the group is past it).
    Stale(u64),
    /// The signature does not verify with the current epoch's key.
    NotAMember,
}

impl CommitRequest {
    /// True if the commit is well formed: its payload announces the same
    /// next-epoch key as the frame (so every member checks it), and that key
    /// is a usable Ed25519 key (not one no signature could ever match).
    pub fn well_formed(&self) -> bool {
        let announced = hush_proto::split_announced_payload(hush_proto::COMMIT_PAYLOAD_TAG, &self.payload)
            .map(|(announcement, _)| announcement.next_key);
        let usable = ed25519_dalek::VerifyingKey::from_bytes(&self.next_key).is_ok_and(|key| !key.is_weak());
        announced == Some(self.next_key) && usable
    }

    /// SHA-256 of the commit payload.
    pub fn digest(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        Sha256::digest(&self.payload).into()
    }

    /// Decides the commit against the group's record and the digest of the
    /// commit ordered at this commit's epoch, if the relay still keeps it
    /// (it does until the relay's retention limit). Every backend calls
    /// this inside the transaction that read them and will write them, so
    /// the check and the move to the next epoch are one atomic step.
    pub fn decide(&self, group: Option<&GroupRecord>, ordered_at_epoch: Option<[u8; 32]>) -> Decision {
        // A group the relay has never seen starts at its first commit; its
        // id is random and unknown to anyone before that commit.
        let Some(group) = group else { return Decision::Accept };
        if group.epoch != self.epoch {
            if ordered_at_epoch == Some(self.digest()) {
                return Decision::Repeated;
            }
            return Decision::Stale(group.epoch);
        }
        match group.key {
            None => Decision::Accept,
            Some(key) if self.signed_by(&key) => Decision::Accept,
            Some(_) => Decision::NotAMember,
        }
    }
    fn signed_by(&self, key: &[u8; 32]) -> bool {
        let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(key) else { return false };
        let message = hush_proto::commit_auth_message(
            &self.group,
            self.epoch,
            &self.payload,
            self.welcome.as_deref(),
            &self.next_key,
        );
        key.verify_strict(&message, &ed25519_dalek::Signature::from_bytes(&self.signature)).is_ok()
    }
}

/// Payloads queued by a send or commit.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Enqueued {
    /// One entry per mailbox written, in id order.
    pub queued: Vec<Queued>,
    /// Of a sealed send or commit, the indexes of the targets not written
    /// (see `RelayFrame::Sent`).
    pub refused: Vec<u32>,
}

/// A commit sent on a sealed connection: the commit as the relay orders it
/// (with no accounts in it), where it goes and which write secrets it
/// replaces.
#[derive(Debug, Clone)]
pub struct SealedCommitRequest {
    /// The commit.
    pub commit: CommitRequest,
    /// Queues that receive the commit.
    pub targets: Vec<Capability>,
    /// Where the Welcome goes.
    pub welcome_to: Vec<Destination>,
    /// Queues whose write hash becomes the given one if the commit is
    /// accepted.
    pub rotate: Vec<(Capability, [u8; 32])>,
}

/// A sealed commit's Welcome destinations, split by kind, each with its
/// index among the request's targets (as `RelayFrame::Sent` counts them:
/// the commit's targets, then the Welcome's, then the rotations).
pub(crate) struct WelcomeTargets {
    /// Queues, and their indexes.
    pub queues: Vec<Capability>,
    /// The index of each of `queues`.
    pub queue_indexes: Vec<u32>,
    /// Introduction mailboxes, each with its index. One copy of the
    /// Welcome each: a payload row shared by two introduction mailboxes
    /// would link the two accounts.
    pub accounts: Vec<(AccountId, u32)>,
}

impl SealedCommitRequest {
    /// The Welcome's destinations, split (see [`WelcomeTargets`]).
    pub(crate) fn welcome_targets(&self) -> WelcomeTargets {
        let mut targets =
            WelcomeTargets { queues: Vec::new(), queue_indexes: Vec::new(), accounts: Vec::new() };
        for (index, destination) in (self.targets.len() as u32..).zip(&self.welcome_to) {
            match destination {
                Destination::Queue(capability) => {
                    targets.queues.push(capability.clone());
                    targets.queue_indexes.push(index);
                }
                Destination::Account(account) => targets.accounts.push((*account, index)),
            }
        }
        targets
    }

    /// The rotations, each with its index among the request's targets.
    pub(crate) fn rotations(&self) -> impl Iterator<Item = (u32, &(Capability, [u8; 32]))> {
        ((self.targets.len() + self.welcome_to.len()) as u32..).zip(&self.rotate)
    }
}

/// What makes two reports the same report: the reported account and the
/// content it signed.
pub(crate) fn report_digest(account: &AccountId, content: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::new().chain_update(account.0).chain_update(content).finalize().into()
}

/// Most payloads waiting in one queue: a queue over it refuses new ones
/// (the sender hears it as a refused target) until its owner drains it.
pub const MAX_QUEUE_ENTRIES: u64 = 100_000;
/// Most payload bytes waiting in one queue.
pub const MAX_QUEUE_BYTES: u64 = 256 * 1024 * 1024;
/// Days a queue nobody received from is kept; then it is deleted with
/// everything in it.
pub const QUEUE_IDLE_DAYS: u64 = 60;

/// Result of a commit submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Stored; the group moved to the next epoch.
    Accepted(Enqueued),
    /// The same commit was ordered before; nothing new was stored.
    Repeated,
    /// Another commit won this epoch; the group is at `current`.
    Stale {
        /// The group's epoch at the relay.
        current: u64,
    },
}

/// Most reports kept: past that, reports are refused until the operator
/// dismisses some (`hush admin reports --dismiss`) or they expire.
pub const MAX_REPORTS: u64 = 10_000;
/// Most bytes of reported content kept, all reports together.
pub const MAX_REPORT_BYTES: u64 = 64 * 1024 * 1024;
/// Most reports kept about one account: past that, more about it are
/// answered as kept but only counted (`Report::more`), so that no account
/// (reporting its own signed words, say) fills the store and silences
/// reports about others.
pub const MAX_REPORTS_PER_ACCOUNT: u64 = 50;
/// Days a report is kept.
pub const REPORT_DAYS: u64 = 90;

/// A message a recipient reported to the operator, its signature checked
/// against the sender's identity key when it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The report's number, for dismissing it.
    pub id: u64,
    /// Who wrote the message.
    pub account: AccountId,
    /// The message's content, as its sender signed it (opaque here: the
    /// relay does not read it; `hush admin reports` does).
    pub content: Vec<u8>,
    /// The sender's signature over [`hush_proto::content_signature_message`].
    pub signature: [u8; 64],
    /// The reporter's words.
    pub reason: String,
    /// When the report arrived (to the hour).
    pub received: UnixSeconds,
    /// Further reports about the same account not kept, past
    /// [`MAX_REPORTS_PER_ACCOUNT`] (counted on its oldest report).
    pub more: u64,
}

/// Counts for `hush admin stats`: numbers only, no ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Accounts ever registered and not purged.
    pub accounts: u64,
    /// Accounts not deactivated.
    pub active_accounts: u64,
    /// Payloads waiting in mailboxes.
    pub queued_messages: u64,
    /// Their total size (each payload counted once).
    pub queued_bytes: u64,
    /// Queues.
    pub queues: u64,
}

/// Most payload bytes one page of a mailbox read returns (see
/// [`Operations::pending`]): twice the largest payload, so a page cut by
/// size is known by holding more than one largest payload's worth.
pub const PAGE_BYTES: usize = 2 * hush_proto::limits::MAX_PAYLOAD_BYTES;

/// One of the relay's most frequent writes, described rather than done,
/// so that a store can send a batch's run of them to its database at once
/// (see [`Operations::write_each`]).
#[derive(Debug, Clone)]
pub enum Write {
    /// [`Operations::enqueue_sealed`] to one queue.
    Enqueue {
        /// The queue, with its write secret.
        target: Capability,
        /// What to queue.
        payload: Arc<[u8]>,
        /// When it arrived.
        now: UnixSeconds,
        /// When it is deleted, delivered or not.
        expires: UnixSeconds,
    },
    /// [`Operations::ack_queue`].
    Ack {
        /// The queue.
        queue: QueueId,
        /// The delivered entries.
        seqs: Vec<u64>,
    },
    /// [`Operations::spend_token`].
    Spend {
        /// The token's day.
        day: u64,
        /// Its nonce.
        nonce: [u8; 32],
    },
}

/// What a [`Write`] did: what the operation it describes answers.
#[derive(Debug)]
pub enum Written {
    /// From [`Write::Enqueue`].
    Enqueued(Enqueued),
    /// From [`Write::Ack`]: entries deleted.
    Acked(u64),
    /// From [`Write::Spend`]: false if the token was spent already.
    Spent(bool),
}

impl Write {
    /// Does this write on its own, through the operation it describes.
    pub fn run<S: Operations + ?Sized>(&self, store: &mut S) -> Result<Written, StoreError> {
        match self {
            Self::Enqueue { target, payload, now, expires } => store
                .enqueue_sealed(std::slice::from_ref(target), payload, *now, *expires)
                .map(Written::Enqueued),
            Self::Ack { queue, seqs } => store.ack_queue(queue, seqs).map(Written::Acked),
            Self::Spend { day, nonce } => store.spend_token(*day, nonce).map(Written::Spent),
        }
    }
}

/// The operations on the relay's state, one method per operation. Each
/// call is atomic on its own: one that fails leaves no trace, whatever else
/// the batch it belongs to does.
pub trait Operations {
    /// Does `writes` in order, each as its operation would, and answers
    /// each. A store whose writes wait for a database's answers may send
    /// them all before reading any (PostgreSQL does): then one that fails
    /// fails the batch, as it would have alone.
    fn write_each(&mut self, writes: &[&Write]) -> Vec<Result<Written, StoreError>> {
        writes.iter().map(|write| write.run(self)).collect()
    }
    /// Creates an account with an invite whose code hashes to `invite_hash`.
    fn register(
        &mut self,
        invite_hash: &[u8; 32],
        identity_key: &IdentityKey,
        wipe_hash: &[u8; 32],
        now: UnixSeconds,
    ) -> Result<AccountId, StoreError>;
    /// Checks a wipe secret; on a match deactivates the account, keeps
    /// the order for its device and deletes the queues the secret tags,
    /// answering which (their subscribers get the order at once).
    fn remote_wipe(
        &mut self,
        account: &AccountId,
        secret: &[u8; 32],
        now: UnixSeconds,
    ) -> Result<Vec<QueueId>, StoreError>;
    /// Looks an account up.
    fn account(&mut self, account: &AccountId) -> Result<Option<AccountRecord>, StoreError>;
    /// Stores key packages valid until `expires` (replacing the
    /// last-resort one if given); answers how many one-time packages are
    /// held.
    fn add_key_packages(
        &mut self,
        account: &AccountId,
        one_time: &[Vec<u8>],
        last_resort: Option<&[u8]>,
        expires: UnixSeconds,
        now: UnixSeconds,
    ) -> Result<u32, StoreError>;
    /// Counts unexpired one-time key packages.
    fn count_key_packages(&mut self, account: &AccountId, now: UnixSeconds) -> Result<u32, StoreError>;
    /// Takes one unexpired key package: a one-time one first, else the
    /// last-resort one.
    fn take_key_package(&mut self, account: &AccountId, now: UnixSeconds) -> Result<Vec<u8>, StoreError>;
    /// Creates a queue with a fresh random `id`; fails with
    /// [`StoreError::QueueIdTaken`] if the id exists.
    fn create_queue(
        &mut self,
        id: &QueueId,
        owner_key: &[u8; 32],
        write_hash: &[u8; 32],
        now: UnixSeconds,
    ) -> Result<(), StoreError>;
    /// The owner key of a queue.
    fn queue_owner(&mut self, queue: &QueueId) -> Result<Option<[u8; 32]>, StoreError>;
    /// Notes that queues were proved today (queues unused for
    /// [`QUEUE_IDLE_DAYS`] are deleted).
    fn touch_queues(&mut self, queues: &[QueueId], now: UnixSeconds) -> Result<(), StoreError>;
    /// Stores `payload` once and queues it in every target whose write
    /// secret matches and that has room; the others are refused by index.
    fn enqueue_sealed(
        &mut self,
        targets: &[Capability],
        payload: &Arc<[u8]>,
        now: UnixSeconds,
        expires: UnixSeconds,
    ) -> Result<Enqueued, StoreError>;
    /// Orders a sealed commit (see [`CommitRequest::decide`]); if
    /// accepted, queues it and its Welcome, then rotates write secrets.
    fn commit_sealed(
        &mut self,
        commit: &SealedCommitRequest,
        now: UnixSeconds,
        expires: UnixSeconds,
    ) -> Result<CommitOutcome, StoreError>;
    /// Deletes delivered entries of `queue`; answers how many.
    fn ack_queue(&mut self, queue: &QueueId, seqs: &[u64]) -> Result<u64, StoreError>;
    /// Replaces a queue's owner key and wipe tag; false if there is no
    /// such queue.
    fn rekey_queue(
        &mut self,
        queue: &QueueId,
        owner_key: &[u8; 32],
        wipe_tag: &[u8; 32],
    ) -> Result<bool, StoreError>;
    /// Deletes a queue and everything in it; false if there was none.
    fn delete_queue(&mut self, queue: &QueueId) -> Result<bool, StoreError>;
    /// Keeps a report whose signature was checked; the same message
    /// reported again is kept once.
    fn add_report(
        &mut self,
        account: &AccountId,
        content: &[u8],
        signature: &[u8; 64],
        reason: &str,
        now: UnixSeconds,
    ) -> Result<(), StoreError>;
    /// Marks a token's nonce spent; false if it was spent already.
    fn spend_token(&mut self, day: u64, nonce: &[u8; 32]) -> Result<bool, StoreError>;
    /// Reads unexpired queued payloads after `after` (exclusive), at most
    /// `limit` of them and at most [`PAGE_BYTES`] of payload in all (a first
    /// payload larger than that comes alone), so a drain holds a bounded
    /// amount of memory whatever the mailbox holds.
    fn pending(
        &mut self,
        mailbox: &Mailbox,
        after: u64,
        limit: u32,
        now: UnixSeconds,
    ) -> Result<Vec<Queued>, StoreError>;
    /// Deletes acknowledged payloads of `account`; answers how many.
    fn ack(&mut self, account: &AccountId, ids: &[u64]) -> Result<u64, StoreError>;
    /// Deletes everything past its expiry (payloads, key packages, commit
    /// digests); answers how many payloads.
    fn purge_expired(&mut self, now: UnixSeconds) -> Result<u64, StoreError>;
}

/// Durable storage for the relay.
pub trait RelayStore: Send + 'static {
    /// Runs `work` in one transaction that is durable when this returns
    /// `Ok`: one fsync covers every operation `work` makes. On `Err`
    /// nothing `work` did is kept.
    fn batch(&mut self, work: &mut dyn FnMut(&mut dyn Operations)) -> Result<(), StoreError>;
}

/// What the operator's commands (`hush admin`) do to a store, each in a
/// transaction of its own, while relays run.
pub trait Admin {
    /// Stores a new invite (by the hash of its code).
    fn add_invite(&mut self, code_hash: &[u8; 32], uses: u32, expires: UnixSeconds)
        -> Result<(), StoreError>;
    /// Deactivates an account and deletes its introduction mailbox and key
    /// packages; false if there is no such account.
    fn deactivate(&mut self, account: &AccountId, now: UnixSeconds) -> Result<bool, StoreError>;
    /// Pre-enrols accounts (identity key, SHA-256 of the wipe secret)
    /// without invites, in one transaction; answers how many were new.
    fn provision(
        &mut self,
        accounts: &[(IdentityKey, [u8; 32])],
        now: UnixSeconds,
    ) -> Result<usize, StoreError>;
    /// Counts for the operator.
    fn stats(&mut self) -> Result<Stats, StoreError>;
    /// Every report kept, oldest first.
    fn reports(&mut self) -> Result<Vec<Report>, StoreError>;
    /// Deletes a report the operator has dealt with; false if there was
    /// none with this id.
    fn dismiss_report(&mut self, id: u64) -> Result<bool, StoreError>;
}

/// A whole store: what relays and operators do with it.
pub trait Store: RelayStore + Operations + Admin {}

impl<T: RelayStore + Operations + Admin> Store for T {}

impl RelayStore for Box<dyn Store> {
    fn batch(&mut self, work: &mut dyn FnMut(&mut dyn Operations)) -> Result<(), StoreError> {
        (**self).batch(work)
    }
}

/// Where a relay keeps its state.
#[derive(Clone)]
pub enum Backend {
    /// The embedded SQLite file at this path.
    Sqlite(std::path::PathBuf),
    /// A PostgreSQL database, shared by every relay of a cluster.
    Postgres(Box<Target>),
}

impl Backend {
    /// Parses a `--store` value: a `postgresql://` (or `postgres://`) URL.
    pub fn postgres(url: &str) -> Result<Self, StoreError> {
        Ok(Self::Postgres(Box::new(Target::parse(url)?)))
    }

    /// Opens a connection of its own to the store (creating or migrating
    /// its schema if needed).
    pub fn open(&self) -> Result<Box<dyn Store>, StoreError> {
        Ok(match self {
            Self::Sqlite(path) => Box::new(SqliteStore::open(path)?),
            Self::Postgres(target) => Box::new(PostgresStore::connect(target)?),
        })
    }

    /// How to name the store in logs and errors (never a password).
    pub fn describe(&self) -> String {
        match self {
            Self::Sqlite(path) => path.display().to_string(),
            Self::Postgres(target) => target.shown().to_owned(),
        }
    }
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

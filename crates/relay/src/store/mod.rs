//! The relay's durable state and the operations on it.
//!
//! Everything the relay knows lives behind [`RelayStore`]: accounts (id,
//! identity key, created, deactivated), public key packages, mailboxes of
//! opaque ciphertext (no sender), per-group commit epochs and hashed invites.
//! Operations arrive in batches; a store applies a batch in one durable
//! transaction, so one fsync covers many sends.

mod sqlite;

pub use sqlite::SqliteStore;

use std::sync::Arc;

use hush_proto::{AccountId, GroupId, IdentityKey};
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
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] rusqlite::Error),
    /// The batch this operation was part of could not be committed.
    #[error("batch commit failed: {0}")]
    Batch(String),
    /// The store's worker has stopped.
    #[error("store is closed")]
    Closed,
}

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

/// One payload waiting in a mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// Delivery id, increasing per mailbox.
    pub id: u64,
    /// Whose mailbox.
    pub recipient: AccountId,
    /// When it was stored.
    pub arrived_at: UnixSeconds,
    /// The opaque ciphertext.
    pub payload: Arc<[u8]>,
}

/// Result of a commit submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Stored; the group moved to the next epoch.
    Accepted(Vec<Queued>),
    /// Another commit won this epoch; the group is at `current`.
    Stale {
        /// The group's epoch at the relay.
        current: u64,
    },
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
    /// Their total size.
    pub queued_bytes: u64,
}

/// One operation in a batch. (Fields are named for what they hold.)
#[allow(missing_docs)]
#[derive(Debug)]
pub enum Op {
    /// Create an account with an invite whose code hashes to `invite_hash`.
    Register { invite_hash: [u8; 32], identity_key: IdentityKey, wipe_hash: [u8; 32], now: UnixSeconds },
    /// Check a wipe secret; on a match deactivate the account and keep the order.
    RemoteWipe { account: AccountId, secret: [u8; 32], now: UnixSeconds },
    /// Look an account up.
    Account { account: AccountId },
    /// Store key packages; answers the count of one-time packages held.
    AddKeyPackages { account: AccountId, one_time: Vec<Vec<u8>>, last_resort: Option<Vec<u8>> },
    /// Count one-time key packages.
    CountKeyPackages { account: AccountId },
    /// Take one key package (one-time first, else the last-resort one).
    TakeKeyPackage { account: AccountId },
    /// Queue a payload for each recipient.
    Enqueue { recipients: Vec<AccountId>, payload: Arc<[u8]>, now: UnixSeconds, expires: UnixSeconds },
    /// Order a commit and queue it (and its Welcome).
    Commit {
        group: GroupId,
        epoch: u64,
        recipients: Vec<AccountId>,
        payload: Arc<[u8]>,
        welcome: Option<(Vec<AccountId>, Arc<[u8]>)>,
        now: UnixSeconds,
        expires: UnixSeconds,
    },
    /// Read unexpired queued payloads after `after` (exclusive), at most `limit`.
    Pending { account: AccountId, after: u64, limit: u32, now: UnixSeconds },
    /// Delete acknowledged payloads of `account`.
    Ack { account: AccountId, ids: Vec<u64> },
    /// Delete everything past its expiry.
    PurgeExpired { now: UnixSeconds },
}

/// The answer to one [`Op`].
#[derive(Debug)]
pub enum Output {
    /// The new account.
    Registered(AccountId),
    /// An account lookup (None: unknown).
    Account(Option<AccountRecord>),
    /// A count of one-time key packages.
    KeyPackageCount(u32),
    /// A key package.
    KeyPackage(Vec<u8>),
    /// Queued copies, one per recipient, in id order.
    Enqueued(Vec<Queued>),
    /// A commit's outcome.
    Commit(CommitOutcome),
    /// Pending payloads.
    Pending(Vec<Queued>),
    /// Rows deleted.
    Deleted(u64),
}

/// Durable storage for the relay. A batch is applied atomically per
/// operation and made durable once for the whole batch.
pub trait RelayStore: Send + 'static {
    /// Applies `ops` in order; one result per op; durable when it returns.
    fn apply(&mut self, ops: Vec<Op>) -> Vec<Result<Output, StoreError>>;
}

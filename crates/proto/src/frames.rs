//! Every frame of the protocol. One WebSocket binary message holds exactly
//! one frame: a type byte followed by its fields.
//!
//! The relay-to-client frames are a short allow-list. None of them asks a
//! client for anything: they carry challenges, acknowledgements, public key
//! packages and opaque ciphertext. No frame exists that could make a client
//! reveal, export, re-create or change a key.

use crate::codec::{DecodeError, Reader, Writer};
use crate::ids::{AccountId, CertificatePin, GroupId, IdentityKey};
use crate::limits::*;
use crate::queues::{Capability, Destination, QueueId};
use crate::tokens::{Issued, Token, ELEMENT_BYTES};

/// What a client may send to the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    /// First frame on a connection: the protocol version the client speaks.
    Hello {
        /// Must equal [`crate::PROTOCOL_VERSION`].
        version: u16,
    },
    /// Creates an account with an invite code; signs the challenge.
    Register {
        /// The secret code from the invite.
        invite_code: String,
        /// The new account's identity public key.
        identity_key: IdentityKey,
        /// Signature over [`auth_message`] with [`AuthPurpose::Register`].
        signature: [u8; 64],
        /// SHA-256 of the account's remote-wipe secret. The relay keeps only
        /// this hash, so it cannot order a wipe on its own.
        wipe_hash: [u8; 32],
    },
    /// Logs in to an existing account by signing the challenge.
    Login {
        /// The account.
        account: AccountId,
        /// Signature over [`auth_message`] with [`AuthPurpose::Login`].
        signature: [u8; 64],
    },
    /// Adds one-time key packages and optionally replaces the last-resort one.
    UploadKeyPackages {
        /// Echoed in the answer.
        request: u32,
        /// Key packages each handed out once.
        one_time: Vec<Vec<u8>>,
        /// Handed out when no one-time package is left.
        last_resort: Option<Vec<u8>>,
        /// When these packages stop being valid (Unix seconds): the relay
        /// hands none out after that and deletes them.
        expires_at: u64,
    },
    /// Asks for one key package of another account.
    FetchKeyPackage {
        /// Echoed in the answer.
        request: u32,
        /// Whose key package.
        account: AccountId,
    },
    /// Queues an opaque payload for each recipient.
    Send {
        /// Echoed in the answer.
        request: u32,
        /// Who receives the payload.
        recipients: Vec<AccountId>,
        /// Opaque ciphertext.
        payload: Vec<u8>,
        /// Seconds after which the relay drops the payload if undelivered
        /// (0: the relay's retention limit).
        ttl_secs: u32,
    },
    /// Submits an MLS commit for a group at a given epoch; the relay accepts
    /// only one commit per epoch.
    Commit {
        /// Echoed in the answer.
        request: u32,
        /// The group.
        group: GroupId,
        /// The epoch the commit was made in.
        epoch: u64,
        /// Existing members who receive the commit.
        recipients: Vec<AccountId>,
        /// The opaque commit.
        payload: Vec<u8>,
        /// An opaque Welcome for new members, if the commit adds any.
        welcome: Option<(Vec<AccountId>, Vec<u8>)>,
        /// The public half of the next epoch's relay key, which only
        /// members of the next epoch can derive (see [`commit_auth_message`]).
        next_key: [u8; 32],
        /// Signature over [`commit_auth_message`] with this epoch's relay
        /// key, which only members of this epoch can derive.
        signature: [u8; 64],
    },
    /// Starts delivery of the mailbox: queued payloads, then `QueueEmpty`,
    /// then live pushes.
    Subscribe,
    /// Confirms that delivered payloads are stored; the relay deletes them.
    Ack {
        /// Delivery ids.
        ids: Vec<u64>,
    },
    /// Orders the device of `account` to wipe itself (sent without logging
    /// in, by whoever holds the wipe code). The relay checks the secret
    /// against the stored hash, deactivates the account and passes the
    /// secret on to the device, which checks it again.
    RemoteWipe {
        /// Echoed in the answer.
        request: u32,
        /// The account to wipe.
        account: AccountId,
        /// The wipe secret from the wipe code.
        secret: [u8; 32],
    },
    /// Asks for anonymous send tokens (see [`crate::tokens`]): the relay
    /// evaluates these blinded elements under today's key, within the
    /// account's daily quota.
    IssueTokens {
        /// Echoed in the answer.
        request: u32,
        /// Blinded elements, at most [`MAX_TOKENS_PER_REQUEST`].
        blinded: Vec<[u8; ELEMENT_BYTES]>,
    },
    /// Opens or tops up a sealed connection's budget with one token: the
    /// first frame after the challenge on a connection that sends without
    /// logging in (see [`SEALED_REQUESTS_PER_TOKEN`]).
    Spend {
        /// Echoed in the answer.
        request: u32,
        /// An unspent token of today or yesterday.
        token: Token,
    },
    /// Creates a queue (sealed connections only); answered `QueueCreated`.
    CreateQueue {
        /// Echoed in the answer.
        request: u32,
        /// The public owner key, whose holder may receive from the queue.
        owner_key: [u8; 32],
        /// [`crate::write_hash`] of the queue's first write secret.
        write_hash: [u8; 32],
    },
    /// Proves ownership of queues (signatures over
    /// [`crate::queue_auth_message`]) to receive from them on this
    /// connection, which then never logs in or sends. Once all are named,
    /// `Subscribe` starts delivery; queues named later join it.
    SubscribeQueues {
        /// Echoed in the answer.
        request: u32,
        /// Each queue and its owner's signature; at most
        /// [`MAX_QUEUES_PER_SUBSCRIBE`].
        proofs: Vec<(QueueId, [u8; 64])>,
    },
    /// Confirms that delivered queue payloads are stored; the relay deletes
    /// them.
    AckQueues {
        /// Each queue and delivery sequence number.
        items: Vec<(QueueId, u64)>,
    },
    /// Queues one payload in every target queue (sealed connections only).
    /// Stored once, whatever the number of targets.
    SealedSend {
        /// Echoed in the answer.
        request: u32,
        /// The queues, each with its write secret.
        targets: Vec<Capability>,
        /// Opaque ciphertext.
        payload: Vec<u8>,
        /// As in `Send`.
        ttl_secs: u32,
    },
    /// A commit, as `Commit`, sent to queues (sealed connections only). The
    /// relay orders it against the group's epoch key, and if it is
    /// accepted replaces the write secrets of `rotate` in the same
    /// transaction, so that the queues of a group follow its epochs.
    SealedCommit {
        /// Echoed in the answer.
        request: u32,
        /// The group.
        group: GroupId,
        /// The epoch the commit was made in.
        epoch: u64,
        /// The queues that receive the commit.
        targets: Vec<Capability>,
        /// Queues whose write secret changes if the commit is accepted:
        /// the current capability and the hash of the next secret.
        rotate: Vec<(Capability, [u8; 32])>,
        /// The opaque commit, as in `Commit`.
        payload: Vec<u8>,
        /// Where the Welcome goes, and the Welcome, as in `Commit`.
        welcome: Option<(Vec<Destination>, Vec<u8>)>,
        /// As in `Commit`.
        next_key: [u8; 32],
        /// As in `Commit`.
        signature: [u8; 64],
    },
    /// Sets the owner key and wipe tag of a queue this connection proved
    /// (a device takes over a queue another member made for it, and tags
    /// every queue of its own so that a wipe order deletes them).
    RekeyQueue {
        /// Echoed in the answer.
        request: u32,
        /// The queue.
        queue: QueueId,
        /// The public owner key from now on.
        owner_key: [u8; 32],
        /// [`crate::wipe_tag`] of the account's wipe secret and the queue.
        wipe_tag: [u8; 32],
    },
    /// Deletes a queue this connection proved, with everything in it.
    DeleteQueue {
        /// Echoed in the answer.
        request: u32,
        /// The queue.
        queue: QueueId,
    },
    /// Reports a message to the relay's operator (sealed connections only):
    /// the message's content as its sender signed it. The relay checks the
    /// signature against the sender's identity key before keeping it; it
    /// does not learn who reports.
    Report {
        /// Echoed in the answer.
        request: u32,
        /// The sender, whose identity key signed the content.
        account: AccountId,
        /// The signed content, exactly as signed.
        content: Vec<u8>,
        /// Signature over [`content_signature_message`] of `content`.
        signature: [u8; 64],
        /// The reporter's words for the operator.
        reason: String,
    },
    /// Asks for the public token key of `day` (today's or yesterday's), on
    /// a connection that has not proved anything yet: the key anyone is
    /// shown, to compare with the one this device's tokens were issued
    /// under before spending one (a relay that issued them under a key of
    /// their own would know them when spent).
    TokenKey {
        /// Echoed in the answer.
        request: u32,
        /// The key day.
        day: u64,
    },
}

/// Sealed requests (sends, commits, queue creations, key package fetches)
/// one spent token pays for on its connection. A token check costs about
/// twice the relay's whole work for one message, so a token buys a budget
/// rather than one send; the sends of one connection are linkable by the
/// connection anyway.
pub const SEALED_REQUESTS_PER_TOKEN: u32 = 64;
/// Payload bytes one spent token pays for (each payload counted once,
/// whatever its number of targets).
pub const SEALED_BYTES_PER_TOKEN: u64 = 16 * 1024 * 1024;

/// What the relay may send to a client. This is the whole allow-list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayFrame {
    /// A fresh nonce for the client to sign.
    Challenge {
        /// Random bytes, new for every connection.
        nonce: [u8; 32],
    },
    /// Registration or login succeeded.
    Ready {
        /// The account now logged in.
        account: AccountId,
        /// One-time key packages the relay still holds for it.
        key_packages: u32,
    },
    /// A request is done; a send or commit is durably stored.
    Accepted {
        /// The request being answered.
        request: u32,
        /// Recipients of a send or commit who were skipped because their
        /// account is deactivated (a wiped device) or unknown, so that the
        /// sender can remove them from the group.
        inactive: Vec<AccountId>,
    },
    /// A key package of the account asked for (public data).
    KeyPackage {
        /// The request being answered.
        request: u32,
        /// The serialized MLS key package.
        key_package: Vec<u8>,
    },
    /// A request failed; the connection stays open.
    Rejected {
        /// The request being answered.
        request: u32,
        /// Why.
        code: ErrorCode,
    },
    /// A commit lost the race for its epoch.
    StaleEpoch {
        /// The request being answered.
        request: u32,
        /// The group's current epoch at the relay.
        epoch: u64,
    },
    /// The answer to `IssueTokens`.
    Tokens {
        /// Echoed from the request.
        request: u32,
        /// The key day, the day's public key, the evaluated elements in
        /// request order and the proof that the key evaluated them all.
        issued: Issued,
    },
    /// One queued payload.
    Deliver {
        /// Delivery id, increasing per mailbox; acknowledge it.
        id: u64,
        /// When the relay stored it (Unix seconds).
        arrived_at: u64,
        /// Opaque ciphertext.
        payload: Vec<u8>,
    },
    /// Everything queued so far has been delivered.
    QueueEmpty,
    /// The answer to `CreateQueue`.
    QueueCreated {
        /// The request being answered.
        request: u32,
        /// The new queue's id.
        queue: QueueId,
    },
    /// A sealed send or commit is durably stored in every target queue
    /// except those listed.
    Sent {
        /// The request being answered.
        request: u32,
        /// Indexes (into `targets`, then the Welcome's destinations) that
        /// were not written to: no such queue, a wrong write secret, a full
        /// queue, or an unknown or deactivated account. The relay does not
        /// say which.
        refused: Vec<u32>,
    },
    /// One payload of a subscribed queue.
    QueueDeliver {
        /// The queue.
        queue: QueueId,
        /// Sequence number, increasing per queue; acknowledge it.
        seq: u64,
        /// When the relay stored it (Unix seconds).
        arrived_at: u64,
        /// Opaque ciphertext.
        payload: Vec<u8>,
    },
    /// A wipe ordered with the account's wipe code. The device wipes itself
    /// only if the secret hashes to the value it keeps; the relay cannot
    /// produce it without the code.
    WipeOrder {
        /// The secret presented with the order.
        secret: [u8; 32],
    },
    /// A fatal error; the relay closes the connection after it.
    Error {
        /// Why.
        code: ErrorCode,
        /// Detail for a person (no user data).
        message: String,
    },
    /// The public token key of a day (the answer to `TokenKey`).
    TokenKey {
        /// The request it answers.
        request: u32,
        /// The key day.
        day: u64,
        /// The key, as `Tokens` names it.
        public_key: [u8; 32],
    },
}

/// Error codes shared by `Rejected` and `Error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum ErrorCode {
    /// The frame could not be decoded.
    Malformed = 1,
    /// The frame or a field is over its limit.
    TooLarge = 2,
    /// The protocol version is not spoken here.
    UnsupportedVersion = 3,
    /// The invite code is unknown, used up or expired.
    BadInvite = 4,
    /// The challenge signature does not verify.
    BadSignature = 5,
    /// No such account.
    UnknownAccount = 6,
    /// The account has been deactivated.
    Deactivated = 7,
    /// The frame needs a logged-in connection.
    NotLoggedIn = 8,
    /// Too many frames too fast.
    RateLimited = 9,
    /// The account has no key package left.
    NoKeyPackage = 10,
    /// The relay is at its connection limit.
    TooManyConnections = 11,
    /// An account with this identity key already exists.
    AlreadyRegistered = 12,
    /// The frame is not allowed at this point of the conversation.
    Unexpected = 13,
    /// The relay failed internally; try again.
    Internal = 14,
    /// The relay is shutting down.
    ShuttingDown = 15,
    /// The wipe code does not match the account.
    BadWipeCode = 16,
    /// The commit is not signed with the key of the group's current epoch:
    /// it does not come from a current member.
    NotAMember = 17,
    /// The token is not valid today, or was spent already.
    BadToken = 18,
    /// The sealed connection's budget is spent: spend another token.
    NeedToken = 19,
    /// The queue does not exist, or the proof of owning it does not verify.
    BadQueue = 20,
    /// The relay cannot reach its database: nothing was stored; try again
    /// (or another relay of the cluster).
    Unavailable = 21,
}

impl ErrorCode {
    const ALL: [ErrorCode; 21] = [
        Self::Malformed,
        Self::TooLarge,
        Self::UnsupportedVersion,
        Self::BadInvite,
        Self::BadSignature,
        Self::UnknownAccount,
        Self::Deactivated,
        Self::NotLoggedIn,
        Self::RateLimited,
        Self::NoKeyPackage,
        Self::TooManyConnections,
        Self::AlreadyRegistered,
        Self::Unexpected,
        Self::Internal,
        Self::ShuttingDown,
        Self::BadWipeCode,
        Self::NotAMember,
        Self::BadToken,
        Self::NeedToken,
        Self::BadQueue,
        Self::Unavailable,
    ];

    fn from_u16(value: u16) -> Result<Self, DecodeError> {
        Self::ALL.into_iter().find(|code| *code as u16 == value).ok_or(DecodeError::Invalid("error code"))
    }

    /// A short description for people.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Malformed => "malformed frame",
            Self::TooLarge => "frame or field too large",
            Self::UnsupportedVersion => "unsupported protocol version: please upgrade Hush",
            Self::BadInvite => "invite code is unknown, used up or expired",
            Self::BadSignature => "refused: unknown account or bad signature",
            Self::UnknownAccount => "unknown account",
            Self::Deactivated => "account is deactivated",
            Self::NotLoggedIn => "not logged in",
            Self::RateLimited => "rate limited",
            Self::NoKeyPackage => "the account has no key package left",
            Self::TooManyConnections => "relay is at its connection limit",
            Self::AlreadyRegistered => "account already registered",
            Self::Unexpected => "frame not allowed here",
            Self::Internal => "relay internal error",
            Self::ShuttingDown => "relay is shutting down",
            Self::BadWipeCode => "the wipe code does not match the account",
            Self::NotAMember => "the commit does not come from a member of the group's current epoch",
            Self::BadToken => "the send token is not valid or was spent already",
            Self::NeedToken => "this connection's send budget is spent",
            Self::BadQueue => "unknown queue or bad queue proof",
            Self::Unavailable => "the relay cannot reach its database: nothing was stored; try again",
        }
    }
}

/// What a challenge signature is for; part of the signed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthPurpose {
    /// Creating an account.
    Register = 1,
    /// Logging in.
    Login = 2,
}

/// The exact bytes a client signs to answer a challenge. Binding the relay's
/// certificate pin stops one relay from replaying a login at another.
pub fn auth_message(purpose: AuthPurpose, nonce: &[u8; 32], relay: &CertificatePin) -> Vec<u8> {
    let mut message = b"hush-auth-v1\0".to_vec();
    message.push(purpose as u8);
    message.extend_from_slice(nonce);
    message.extend_from_slice(&relay.0);
    message
}

/// The exact bytes a sender's identity key signs over a message's content
/// (inside MLS), so that a recipient can show the relay's operator who
/// wrote a message it reports, and nothing else can be passed off as one.
pub fn content_signature_message(content: &[u8]) -> Vec<u8> {
    let mut message = b"hush-content-v1\0".to_vec();
    message.extend_from_slice(content);
    message
}

/// Label of the MLS exporter secret from which each epoch's relay key is
/// derived: an Ed25519 key whose seed is
/// `MLS-Exporter(COMMIT_KEY_LABEL, "", 32)` of that epoch.
pub const COMMIT_KEY_LABEL: &str = "hush relay commit key v1";

/// The exact bytes a commit's `signature` covers: the group, the epoch the
/// commit was made in, digests of the commit and its Welcome, and the next
/// epoch's public key. The relay checks it against the key the previous
/// accepted commit announced, so only members of the group's current epoch
/// can move it on; a removed member, or anyone else who knows the group id,
/// cannot.
pub fn commit_auth_message(
    group: &GroupId,
    epoch: u64,
    payload: &[u8],
    welcome: Option<&[u8]>,
    next_key: &[u8; 32],
) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut message = b"hush-commit-v1\0".to_vec();
    message.extend_from_slice(&(group.0.len() as u64).to_be_bytes());
    message.extend_from_slice(&group.0);
    message.extend_from_slice(&epoch.to_be_bytes());
    message.extend_from_slice(&Sha256::digest(payload));
    match welcome {
        None => message.push(0),
        Some(welcome) => {
            message.push(1);
            message.extend_from_slice(&Sha256::digest(welcome));
        }
    }
    message.extend_from_slice(next_key);
    message
}

/// First byte of a commit's payload: it is followed by the next epoch's
/// public relay key (the frame's `next_key`), the committer's signature of
/// that key (see [`key_announcement`]) and then the MLS commit. (An MLS
/// message starts with its version, 0x0001, so the two never mix.)
pub const COMMIT_PAYLOAD_TAG: u8 = 0xc1;

/// First byte of a Welcome's payload, laid out like a commit's.
pub const WELCOME_PAYLOAD_TAG: u8 = 0xc2;

/// The next epoch's relay key, as a committer announces it to the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyAnnouncement {
    /// The public relay key the committer gave the relay for the new epoch.
    pub next_key: [u8; 32],
    /// The committer's signature, with its identity (MLS leaf) key, over
    /// [`key_announcement`].
    pub signature: [u8; 64],
}

/// The bytes a committer signs to announce the relay key of `group`'s
/// `epoch` (the epoch its commit leads to). Every member of that epoch can
/// check it against the key it derives; with the signature, a member who
/// gave the relay another key is proven to have done so, and a relay that
/// altered the announcement is caught instead of the committer.
///
/// `context` is a secret of that epoch (`MLS-Exporter("hush announcement
/// v1", "", 32)`): without it the relay cannot rebuild the signed bytes,
/// so it cannot try the signature against the identity keys it holds and
/// learn who committed, or who added whom.
pub fn key_announcement(group: &[u8], epoch: u64, next_key: &[u8; 32], context: &[u8; 32]) -> Vec<u8> {
    let mut message = b"hush-relay-key-v2\0".to_vec();
    message.extend_from_slice(&(group.len() as u64).to_be_bytes());
    message.extend_from_slice(group);
    message.extend_from_slice(&epoch.to_be_bytes());
    message.extend_from_slice(next_key);
    message.extend_from_slice(context);
    message
}

/// A commit's or Welcome's payload: the tag, the announcement, the MLS
/// message. The key travels with the commit, to every member who processes
/// it and to every member it adds.
pub fn announced_payload(tag: u8, announcement: &KeyAnnouncement, message: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(97 + message.len());
    payload.push(tag);
    payload.extend_from_slice(&announcement.next_key);
    payload.extend_from_slice(&announcement.signature);
    payload.extend_from_slice(message);
    payload
}

/// Splits a payload made by [`announced_payload`] with `tag`; `None` for
/// anything else.
pub fn split_announced_payload(tag: u8, payload: &[u8]) -> Option<(KeyAnnouncement, &[u8])> {
    let (&first, rest) = payload.split_first()?;
    if first != tag || rest.len() < 96 {
        return None;
    }
    let (key, rest) = rest.split_at(32);
    let (signature, message) = rest.split_at(64);
    Some((KeyAnnouncement { next_key: key.try_into().ok()?, signature: signature.try_into().ok()? }, message))
}

fn write_accounts(w: &mut Writer, accounts: &[AccountId]) {
    w.list(accounts, |w, a| w.array(&a.0));
}

fn read_accounts(r: &mut Reader<'_>) -> Result<Vec<AccountId>, DecodeError> {
    r.list("recipients", MAX_RECIPIENTS, |r| r.array().map(AccountId))
}

fn write_capability(w: &mut Writer, capability: &Capability) {
    w.array(&capability.queue.0);
    w.array(&capability.secret);
}

fn read_capability(r: &mut Reader<'_>) -> Result<Capability, DecodeError> {
    Ok(Capability { queue: QueueId(r.array()?), secret: r.array()? })
}

fn read_targets(r: &mut Reader<'_>) -> Result<Vec<Capability>, DecodeError> {
    r.list("targets", MAX_RECIPIENTS, read_capability)
}

fn write_destination(w: &mut Writer, destination: &Destination) {
    match destination {
        Destination::Queue(capability) => {
            w.u8(0);
            write_capability(w, capability);
        }
        Destination::Account(account) => {
            w.u8(1);
            w.array(&account.0);
        }
    }
}

fn read_destination(r: &mut Reader<'_>) -> Result<Destination, DecodeError> {
    match r.u8()? {
        0 => Ok(Destination::Queue(read_capability(r)?)),
        1 => Ok(Destination::Account(AccountId(r.array()?))),
        _ => Err(DecodeError::Invalid("destination")),
    }
}

impl ClientFrame {
    /// The request number a request carries (its answer echoes it); `None`
    /// for frames that are not answered by number.
    pub fn request(&self) -> Option<u32> {
        match self {
            Self::UploadKeyPackages { request, .. }
            | Self::FetchKeyPackage { request, .. }
            | Self::Send { request, .. }
            | Self::Commit { request, .. }
            | Self::RemoteWipe { request, .. }
            | Self::IssueTokens { request, .. }
            | Self::Spend { request, .. }
            | Self::CreateQueue { request, .. }
            | Self::SubscribeQueues { request, .. }
            | Self::SealedSend { request, .. }
            | Self::SealedCommit { request, .. }
            | Self::RekeyQueue { request, .. }
            | Self::DeleteQueue { request, .. }
            | Self::Report { request, .. }
            | Self::TokenKey { request, .. } => Some(*request),
            Self::Hello { .. }
            | Self::Register { .. }
            | Self::Login { .. }
            | Self::Subscribe
            | Self::Ack { .. }
            | Self::AckQueues { .. } => None,
        }
    }

    /// Encodes the frame.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Self::Hello { version } => {
                let mut w = Writer::with_tag(0x01);
                w.u16(*version);
                w.finish()
            }
            Self::Register { invite_code, identity_key, signature, wipe_hash } => {
                let mut w = Writer::with_tag(0x02);
                w.bytes(invite_code.as_bytes());
                w.array(&identity_key.0);
                w.array(signature);
                w.array(wipe_hash);
                w.finish()
            }
            Self::Login { account, signature } => {
                let mut w = Writer::with_tag(0x03);
                w.array(&account.0);
                w.array(signature);
                w.finish()
            }
            Self::UploadKeyPackages { request, one_time, last_resort, expires_at } => {
                let mut w = Writer::with_tag(0x04);
                w.u32(*request);
                w.list(one_time, |w, kp| w.bytes(kp));
                match last_resort {
                    None => w.u8(0),
                    Some(kp) => {
                        w.u8(1);
                        w.bytes(kp);
                    }
                }
                w.u64(*expires_at);
                w.finish()
            }
            Self::FetchKeyPackage { request, account } => {
                let mut w = Writer::with_tag(0x05);
                w.u32(*request);
                w.array(&account.0);
                w.finish()
            }
            Self::Send { request, recipients, payload, ttl_secs } => {
                let mut w = Writer::with_tag(0x06);
                w.u32(*request);
                write_accounts(&mut w, recipients);
                w.bytes(payload);
                w.u32(*ttl_secs);
                w.finish()
            }
            Self::Commit { request, group, epoch, recipients, payload, welcome, next_key, signature } => {
                let mut w = Writer::with_tag(0x07);
                w.u32(*request);
                w.bytes(&group.0);
                w.u64(*epoch);
                write_accounts(&mut w, recipients);
                w.bytes(payload);
                match welcome {
                    None => w.u8(0),
                    Some((to, bytes)) => {
                        w.u8(1);
                        write_accounts(&mut w, to);
                        w.bytes(bytes);
                    }
                }
                w.array(next_key);
                w.array(signature);
                w.finish()
            }
            Self::Subscribe => Writer::with_tag(0x08).finish(),
            Self::Ack { ids } => {
                let mut w = Writer::with_tag(0x09);
                w.list(ids, |w, id| w.u64(*id));
                w.finish()
            }
            Self::RemoteWipe { request, account, secret } => {
                let mut w = Writer::with_tag(0x0a);
                w.u32(*request);
                w.array(&account.0);
                w.array(secret);
                w.finish()
            }
            Self::IssueTokens { request, blinded } => {
                let mut w = Writer::with_tag(0x0b);
                w.u32(*request);
                w.list(blinded, |w, element| w.array(element));
                w.finish()
            }
            Self::Spend { request, token } => {
                let mut w = Writer::with_tag(0x0c);
                w.u32(*request);
                w.u64(token.day);
                w.array(&token.nonce);
                w.array(&token.output);
                w.finish()
            }
            Self::CreateQueue { request, owner_key, write_hash } => {
                let mut w = Writer::with_tag(0x0d);
                w.u32(*request);
                w.array(owner_key);
                w.array(write_hash);
                w.finish()
            }
            Self::SubscribeQueues { request, proofs } => {
                let mut w = Writer::with_tag(0x0e);
                w.u32(*request);
                w.list(proofs, |w, (queue, signature)| {
                    w.array(&queue.0);
                    w.array(signature);
                });
                w.finish()
            }
            Self::AckQueues { items } => {
                let mut w = Writer::with_tag(0x0f);
                w.list(items, |w, (queue, seq)| {
                    w.array(&queue.0);
                    w.u64(*seq);
                });
                w.finish()
            }
            Self::SealedSend { request, targets, payload, ttl_secs } => {
                let mut w = Writer::with_tag(0x10);
                w.u32(*request);
                w.list(targets, write_capability);
                w.bytes(payload);
                w.u32(*ttl_secs);
                w.finish()
            }
            Self::SealedCommit {
                request,
                group,
                epoch,
                targets,
                rotate,
                payload,
                welcome,
                next_key,
                signature,
            } => {
                let mut w = Writer::with_tag(0x11);
                w.u32(*request);
                w.bytes(&group.0);
                w.u64(*epoch);
                w.list(targets, write_capability);
                w.list(rotate, |w, (capability, next)| {
                    write_capability(w, capability);
                    w.array(next);
                });
                w.bytes(payload);
                match welcome {
                    None => w.u8(0),
                    Some((to, bytes)) => {
                        w.u8(1);
                        w.list(to, write_destination);
                        w.bytes(bytes);
                    }
                }
                w.array(next_key);
                w.array(signature);
                w.finish()
            }
            Self::RekeyQueue { request, queue, owner_key, wipe_tag } => {
                let mut w = Writer::with_tag(0x12);
                w.u32(*request);
                w.array(&queue.0);
                w.array(owner_key);
                w.array(wipe_tag);
                w.finish()
            }
            Self::DeleteQueue { request, queue } => {
                let mut w = Writer::with_tag(0x13);
                w.u32(*request);
                w.array(&queue.0);
                w.finish()
            }
            Self::Report { request, account, content, signature, reason } => {
                let mut w = Writer::with_tag(0x14);
                w.u32(*request);
                w.array(&account.0);
                w.bytes(content);
                w.array(signature);
                w.bytes(reason.as_bytes());
                w.finish()
            }
            Self::TokenKey { request, day } => {
                let mut w = Writer::with_tag(0x15);
                w.u32(*request);
                w.u64(*day);
                w.finish()
            }
        }
    }

    /// Decodes one frame, refusing anything over a limit or left over.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_FRAME_BYTES {
            return Err(DecodeError::TooLong { field: "frame", len: bytes.len(), max: MAX_FRAME_BYTES });
        }
        let mut r = Reader::new(bytes);
        let frame = match r.u8()? {
            0x01 => Self::Hello { version: r.u16()? },
            0x02 => Self::Register {
                invite_code: r.string("invite code", MAX_INVITE_CODE_BYTES)?,
                identity_key: IdentityKey(r.array()?),
                signature: r.array()?,
                wipe_hash: r.array()?,
            },
            0x03 => Self::Login { account: AccountId(r.array()?), signature: r.array()? },
            0x04 => Self::UploadKeyPackages {
                request: r.u32()?,
                one_time: r.list("key packages", MAX_KEY_PACKAGES_PER_UPLOAD, |r| {
                    r.bytes("key package", MAX_KEY_PACKAGE_BYTES)
                })?,
                last_resort: r.option(|r| r.bytes("key package", MAX_KEY_PACKAGE_BYTES))?,
                expires_at: r.u64()?,
            },
            0x05 => Self::FetchKeyPackage { request: r.u32()?, account: AccountId(r.array()?) },
            0x06 => Self::Send {
                request: r.u32()?,
                recipients: read_accounts(&mut r)?,
                payload: r.bytes("payload", MAX_PAYLOAD_BYTES)?,
                ttl_secs: r.u32()?,
            },
            0x07 => Self::Commit {
                request: r.u32()?,
                group: GroupId(r.bytes("group id", MAX_GROUP_ID_BYTES)?),
                epoch: r.u64()?,
                recipients: read_accounts(&mut r)?,
                payload: r.bytes("payload", MAX_PAYLOAD_BYTES)?,
                welcome: r.option(|r| Ok((read_accounts(r)?, r.bytes("welcome", MAX_PAYLOAD_BYTES)?)))?,
                next_key: r.array()?,
                signature: r.array()?,
            },
            0x08 => Self::Subscribe,
            0x09 => Self::Ack { ids: r.list("ack ids", MAX_ACK_IDS, |r| r.u64())? },
            0x0a => {
                Self::RemoteWipe { request: r.u32()?, account: AccountId(r.array()?), secret: r.array()? }
            }
            0x0b => Self::IssueTokens {
                request: r.u32()?,
                blinded: r.list("blinded elements", MAX_TOKENS_PER_REQUEST, |r| r.array())?,
            },
            0x0c => Self::Spend {
                request: r.u32()?,
                token: Token { day: r.u64()?, nonce: r.array()?, output: r.array()? },
            },
            0x0d => Self::CreateQueue { request: r.u32()?, owner_key: r.array()?, write_hash: r.array()? },
            0x0e => Self::SubscribeQueues {
                request: r.u32()?,
                proofs: r.list("queue proofs", MAX_QUEUES_PER_SUBSCRIBE, |r| {
                    Ok((QueueId(r.array()?), r.array()?))
                })?,
            },
            0x0f => Self::AckQueues {
                items: r.list("ack ids", MAX_ACK_IDS, |r| Ok((QueueId(r.array()?), r.u64()?)))?,
            },
            0x10 => Self::SealedSend {
                request: r.u32()?,
                targets: read_targets(&mut r)?,
                payload: r.bytes("payload", MAX_PAYLOAD_BYTES)?,
                ttl_secs: r.u32()?,
            },
            0x11 => Self::SealedCommit {
                request: r.u32()?,
                group: GroupId(r.bytes("group id", MAX_GROUP_ID_BYTES)?),
                epoch: r.u64()?,
                targets: read_targets(&mut r)?,
                rotate: r.list("rotations", MAX_RECIPIENTS, |r| Ok((read_capability(r)?, r.array()?)))?,
                payload: r.bytes("payload", MAX_PAYLOAD_BYTES)?,
                welcome: r.option(|r| {
                    Ok((
                        r.list("welcome destinations", MAX_RECIPIENTS, read_destination)?,
                        r.bytes("welcome", MAX_PAYLOAD_BYTES)?,
                    ))
                })?,
                next_key: r.array()?,
                signature: r.array()?,
            },
            0x12 => Self::RekeyQueue {
                request: r.u32()?,
                queue: QueueId(r.array()?),
                owner_key: r.array()?,
                wipe_tag: r.array()?,
            },
            0x13 => Self::DeleteQueue { request: r.u32()?, queue: QueueId(r.array()?) },
            0x14 => Self::Report {
                request: r.u32()?,
                account: AccountId(r.array()?),
                content: r.bytes("reported content", MAX_REPORTED_CONTENT_BYTES)?,
                signature: r.array()?,
                reason: r.string("report reason", MAX_REPORT_REASON_BYTES)?,
            },
            0x15 => Self::TokenKey { request: r.u32()?, day: r.u64()? },
            other => return Err(DecodeError::UnknownFrame(other)),
        };
        r.finish()?;
        Ok(frame)
    }
}

impl RelayFrame {
    /// Encodes the frame.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Self::Challenge { nonce } => {
                let mut w = Writer::with_tag(0x81);
                w.array(nonce);
                w.finish()
            }
            Self::Ready { account, key_packages } => {
                let mut w = Writer::with_tag(0x82);
                w.array(&account.0);
                w.u32(*key_packages);
                w.finish()
            }
            Self::Accepted { request, inactive } => {
                let mut w = Writer::with_tag(0x83);
                w.u32(*request);
                write_accounts(&mut w, inactive);
                w.finish()
            }
            Self::KeyPackage { request, key_package } => {
                let mut w = Writer::with_tag(0x84);
                w.u32(*request);
                w.bytes(key_package);
                w.finish()
            }
            Self::Rejected { request, code } => {
                let mut w = Writer::with_tag(0x85);
                w.u32(*request);
                w.u16(*code as u16);
                w.finish()
            }
            Self::StaleEpoch { request, epoch } => {
                let mut w = Writer::with_tag(0x86);
                w.u32(*request);
                w.u64(*epoch);
                w.finish()
            }
            Self::Deliver { id, arrived_at, payload } => {
                let mut w = Writer::with_tag(0x87);
                w.u64(*id);
                w.u64(*arrived_at);
                w.bytes(payload);
                w.finish()
            }
            Self::QueueEmpty => Writer::with_tag(0x88).finish(),
            Self::QueueCreated { request, queue } => {
                let mut w = Writer::with_tag(0x8c);
                w.u32(*request);
                w.array(&queue.0);
                w.finish()
            }
            Self::Sent { request, refused } => {
                let mut w = Writer::with_tag(0x8d);
                w.u32(*request);
                w.list(refused, |w, index| w.u32(*index));
                w.finish()
            }
            Self::QueueDeliver { queue, seq, arrived_at, payload } => {
                let mut w = Writer::with_tag(0x8e);
                w.array(&queue.0);
                w.u64(*seq);
                w.u64(*arrived_at);
                w.bytes(payload);
                w.finish()
            }
            Self::Tokens { request, issued } => {
                let mut w = Writer::with_tag(0x8b);
                w.u32(*request);
                w.u64(issued.day);
                w.array(&issued.public_key);
                w.list(&issued.evaluated, |w, element| w.array(element));
                w.array(&issued.proof);
                w.finish()
            }
            Self::WipeOrder { secret } => {
                let mut w = Writer::with_tag(0x8a);
                w.array(secret);
                w.finish()
            }
            Self::TokenKey { request, day, public_key } => {
                let mut w = Writer::with_tag(0x8f);
                w.u32(*request);
                w.u64(*day);
                w.array(public_key);
                w.finish()
            }
            Self::Error { code, message } => {
                let mut w = Writer::with_tag(0x89);
                w.u16(*code as u16);
                let end = floor_char_boundary(message, MAX_ERROR_MESSAGE_BYTES);
                w.bytes(&message.as_bytes()[..end]);
                w.finish()
            }
        }
    }

    /// Decodes one frame, refusing anything over a limit or left over.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_FRAME_BYTES {
            return Err(DecodeError::TooLong { field: "frame", len: bytes.len(), max: MAX_FRAME_BYTES });
        }
        let mut r = Reader::new(bytes);
        let frame = match r.u8()? {
            0x81 => Self::Challenge { nonce: r.array()? },
            0x82 => Self::Ready { account: AccountId(r.array()?), key_packages: r.u32()? },
            0x83 => Self::Accepted { request: r.u32()?, inactive: read_accounts(&mut r)? },
            0x84 => Self::KeyPackage {
                request: r.u32()?,
                key_package: r.bytes("key package", MAX_KEY_PACKAGE_BYTES)?,
            },
            0x85 => Self::Rejected { request: r.u32()?, code: ErrorCode::from_u16(r.u16()?)? },
            0x86 => Self::StaleEpoch { request: r.u32()?, epoch: r.u64()? },
            0x87 => Self::Deliver {
                id: r.u64()?,
                arrived_at: r.u64()?,
                payload: r.bytes("payload", MAX_PAYLOAD_BYTES)?,
            },
            0x88 => Self::QueueEmpty,
            0x8c => Self::QueueCreated { request: r.u32()?, queue: QueueId(r.array()?) },
            0x8d => Self::Sent {
                request: r.u32()?,
                refused: r.list("refused targets", 2 * MAX_RECIPIENTS, |r| r.u32())?,
            },
            0x8e => Self::QueueDeliver {
                queue: QueueId(r.array()?),
                seq: r.u64()?,
                arrived_at: r.u64()?,
                payload: r.bytes("payload", MAX_PAYLOAD_BYTES)?,
            },
            0x8a => Self::WipeOrder { secret: r.array()? },
            0x8b => Self::Tokens {
                request: r.u32()?,
                issued: Issued {
                    day: r.u64()?,
                    public_key: r.array()?,
                    evaluated: r.list("evaluated elements", MAX_TOKENS_PER_REQUEST, |r| r.array())?,
                    proof: r.array()?,
                },
            },
            0x89 => Self::Error {
                code: ErrorCode::from_u16(r.u16()?)?,
                message: r.string("error message", MAX_ERROR_MESSAGE_BYTES)?,
            },
            0x8f => Self::TokenKey { request: r.u32()?, day: r.u64()?, public_key: r.array()? },
            other => return Err(DecodeError::UnknownFrame(other)),
        };
        r.finish()?;
        Ok(frame)
    }
}

fn floor_char_boundary(text: &str, max: usize) -> usize {
    if text.len() <= max {
        return text.len();
    }
    (0..=max).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn account() -> impl Strategy<Value = AccountId> {
        any::<[u8; 20]>().prop_map(AccountId)
    }

    fn blob() -> impl Strategy<Value = Vec<u8>> {
        vec(any::<u8>(), 0..64)
    }

    fn queue() -> impl Strategy<Value = QueueId> {
        any::<[u8; 16]>().prop_map(QueueId)
    }

    fn capability() -> impl Strategy<Value = Capability> {
        (queue(), any::<[u8; 32]>()).prop_map(|(queue, secret)| Capability { queue, secret })
    }

    fn destination() -> impl Strategy<Value = Destination> {
        prop_oneof![capability().prop_map(Destination::Queue), account().prop_map(Destination::Account)]
    }

    fn client_frame() -> impl Strategy<Value = ClientFrame> {
        prop_oneof![
            any::<u16>().prop_map(|version| ClientFrame::Hello { version }),
            ("[a-z2-7]{0,64}", any::<[u8; 32]>(), any::<[u8; 32]>(), any::<[u8; 32]>(), any::<[u8; 32]>())
                .prop_map(|(invite_code, key, s1, s2, wipe_hash)| {
                    let mut signature = [0u8; 64];
                    signature[..32].copy_from_slice(&s1);
                    signature[32..].copy_from_slice(&s2);
                    ClientFrame::Register {
                        invite_code,
                        identity_key: IdentityKey(key),
                        signature,
                        wipe_hash,
                    }
                }),
            (account(), any::<[u8; 32]>()).prop_map(|(account, half)| {
                let mut signature = [7u8; 64];
                signature[..32].copy_from_slice(&half);
                ClientFrame::Login { account, signature }
            }),
            (any::<u32>(), vec(blob(), 0..5), proptest::option::of(blob()), any::<u64>()).prop_map(
                |(request, one_time, last_resort, expires_at)| ClientFrame::UploadKeyPackages {
                    request,
                    one_time,
                    last_resort,
                    expires_at
                }
            ),
            (any::<u32>(), account())
                .prop_map(|(request, account)| ClientFrame::FetchKeyPackage { request, account }),
            (any::<u32>(), vec(account(), 0..5), blob(), any::<u32>()).prop_map(
                |(request, recipients, payload, ttl_secs)| ClientFrame::Send {
                    request,
                    recipients,
                    payload,
                    ttl_secs
                }
            ),
            (
                any::<u32>(),
                vec(any::<u8>(), 0..32),
                any::<u64>(),
                vec(account(), 0..5),
                blob(),
                proptest::option::of((vec(account(), 0..3), blob())),
                any::<[u8; 32]>(),
                any::<[u8; 32]>(),
            )
                .prop_map(
                    |(request, group, epoch, recipients, payload, welcome, next_key, half)| {
                        let mut signature = [3u8; 64];
                        signature[32..].copy_from_slice(&half);
                        ClientFrame::Commit {
                            request,
                            group: GroupId(group),
                            epoch,
                            recipients,
                            payload,
                            welcome,
                            next_key,
                            signature,
                        }
                    }
                ),
            Just(ClientFrame::Subscribe),
            vec(any::<u64>(), 0..20).prop_map(|ids| ClientFrame::Ack { ids }),
            (any::<u32>(), account(), any::<[u8; 32]>())
                .prop_map(|(request, account, secret)| ClientFrame::RemoteWipe { request, account, secret }),
            (any::<u32>(), vec(any::<[u8; 32]>(), 0..5))
                .prop_map(|(request, blinded)| ClientFrame::IssueTokens { request, blinded }),
            (any::<u32>(), any::<u64>(), any::<[u8; 32]>(), any::<[u8; 32]>()).prop_map(
                |(request, day, nonce, half)| {
                    let mut output = [5; 64];
                    output[..32].copy_from_slice(&half);
                    ClientFrame::Spend { request, token: Token { day, nonce, output } }
                }
            ),
            (any::<u32>(), any::<[u8; 32]>(), any::<[u8; 32]>()).prop_map(
                |(request, owner_key, write_hash)| ClientFrame::CreateQueue {
                    request,
                    owner_key,
                    write_hash
                }
            ),
            (any::<u32>(), vec((queue(), any::<[u8; 32]>()), 0..4)).prop_map(|(request, proofs)| {
                let proofs = proofs
                    .into_iter()
                    .map(|(queue, half)| {
                        let mut signature = [4; 64];
                        signature[..32].copy_from_slice(&half);
                        (queue, signature)
                    })
                    .collect();
                ClientFrame::SubscribeQueues { request, proofs }
            }),
            vec((queue(), any::<u64>()), 0..6).prop_map(|items| ClientFrame::AckQueues { items }),
            (any::<u32>(), vec(capability(), 0..4), blob(), any::<u32>()).prop_map(
                |(request, targets, payload, ttl_secs)| ClientFrame::SealedSend {
                    request,
                    targets,
                    payload,
                    ttl_secs
                }
            ),
            (
                (any::<u32>(), vec(any::<u8>(), 0..32), any::<u64>()),
                vec(capability(), 0..4),
                vec((capability(), any::<[u8; 32]>()), 0..4),
                blob(),
                proptest::option::of((vec(destination(), 0..3), blob())),
                any::<[u8; 32]>(),
                any::<[u8; 32]>(),
            )
                .prop_map(
                    |((request, group, epoch), targets, rotate, payload, welcome, next_key, half)| {
                        let mut signature = [6u8; 64];
                        signature[32..].copy_from_slice(&half);
                        ClientFrame::SealedCommit {
                            request,
                            group: GroupId(group),
                            epoch,
                            targets,
                            rotate,
                            payload,
                            welcome,
                            next_key,
                            signature,
                        }
                    }
                ),
            (any::<u32>(), queue(), any::<[u8; 32]>(), any::<[u8; 32]>()).prop_map(
                |(request, queue, owner_key, wipe_tag)| ClientFrame::RekeyQueue {
                    request,
                    queue,
                    owner_key,
                    wipe_tag
                }
            ),
            (any::<u32>(), queue()).prop_map(|(request, queue)| ClientFrame::DeleteQueue { request, queue }),
            (any::<u32>(), account(), blob(), any::<[u8; 32]>(), ".{0,40}").prop_map(
                |(request, account, content, half, reason)| {
                    let mut signature = [8u8; 64];
                    signature[..32].copy_from_slice(&half);
                    ClientFrame::Report { request, account, content, signature, reason }
                }
            ),
            (any::<u32>(), any::<u64>()).prop_map(|(request, day)| ClientFrame::TokenKey { request, day }),
        ]
    }

    fn error_code() -> impl Strategy<Value = ErrorCode> {
        proptest::sample::select(ErrorCode::ALL.to_vec())
    }

    fn relay_frame() -> impl Strategy<Value = RelayFrame> {
        prop_oneof![
            any::<[u8; 32]>().prop_map(|nonce| RelayFrame::Challenge { nonce }),
            (account(), any::<u32>())
                .prop_map(|(account, key_packages)| RelayFrame::Ready { account, key_packages }),
            (any::<u32>(), vec(account(), 0..3))
                .prop_map(|(request, inactive)| RelayFrame::Accepted { request, inactive }),
            (any::<u32>(), blob())
                .prop_map(|(request, key_package)| RelayFrame::KeyPackage { request, key_package }),
            (any::<u32>(), error_code()).prop_map(|(request, code)| RelayFrame::Rejected { request, code }),
            (any::<u32>(), any::<u64>())
                .prop_map(|(request, epoch)| RelayFrame::StaleEpoch { request, epoch }),
            (any::<u64>(), any::<u64>(), blob()).prop_map(|(id, arrived_at, payload)| RelayFrame::Deliver {
                id,
                arrived_at,
                payload
            }),
            Just(RelayFrame::QueueEmpty),
            any::<[u8; 32]>().prop_map(|secret| RelayFrame::WipeOrder { secret }),
            (any::<u32>(), any::<u64>(), any::<[u8; 32]>(), vec(any::<[u8; 32]>(), 0..5), any::<[u8; 32]>())
                .prop_map(|(request, day, public_key, evaluated, half)| {
                    let mut proof = [1; 64];
                    proof[..32].copy_from_slice(&half);
                    RelayFrame::Tokens { request, issued: Issued { day, public_key, evaluated, proof } }
                }),
            (error_code(), "[ -~]{0,100}").prop_map(|(code, message)| RelayFrame::Error { code, message }),
            (any::<u32>(), queue()).prop_map(|(request, queue)| RelayFrame::QueueCreated { request, queue }),
            (any::<u32>(), vec(any::<u32>(), 0..5))
                .prop_map(|(request, refused)| RelayFrame::Sent { request, refused }),
            (queue(), any::<u64>(), any::<u64>(), blob()).prop_map(|(queue, seq, arrived_at, payload)| {
                RelayFrame::QueueDeliver { queue, seq, arrived_at, payload }
            }),
            (any::<u32>(), any::<u64>(), any::<[u8; 32]>())
                .prop_map(|(request, day, public_key)| RelayFrame::TokenKey { request, day, public_key }),
        ]
    }

    proptest! {
        #[test]
        fn client_frames_round_trip(frame in client_frame()) {
            prop_assert_eq!(ClientFrame::decode(&frame.encode()), Ok(frame));
        }

        #[test]
        fn relay_frames_round_trip(frame in relay_frame()) {
            prop_assert_eq!(RelayFrame::decode(&frame.encode()), Ok(frame));
        }

        #[test]
        fn arbitrary_bytes_never_panic_the_decoders(bytes in vec(any::<u8>(), 0..256)) {
            let _ = ClientFrame::decode(&bytes);
            let _ = RelayFrame::decode(&bytes);
        }

        #[test]
        fn truncated_frames_are_errors(frame in client_frame(), cut in 1usize..8) {
            let bytes = frame.encode();
            if bytes.len() > cut {
                prop_assert!(ClientFrame::decode(&bytes[..bytes.len() - cut]).is_err());
            }
        }
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes = ClientFrame::Subscribe.encode();
        bytes.push(0);
        assert_eq!(ClientFrame::decode(&bytes), Err(DecodeError::TrailingBytes(1)));
    }

    #[test]
    fn oversized_error_message_is_cut_on_a_char_boundary() {
        let frame = RelayFrame::Error { code: ErrorCode::Internal, message: "é".repeat(200) };
        let RelayFrame::Error { message, .. } = RelayFrame::decode(&frame.encode()).unwrap() else {
            unreachable!()
        };
        assert!(message.len() <= MAX_ERROR_MESSAGE_BYTES);
    }
}

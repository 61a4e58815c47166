//! The Hush wire format: every frame that crosses the relay's WebSocket, the
//! ids they carry, the limits on every length, and the one codec that reads
//! and writes them.
//!
//! Key design decision: this crate has no I/O and no message keys. The
//! relay, the client and the load generator all depend on it, and the relay
//! depends on nothing else of ours, so the crate graph alone shows that the
//! server holds no means to decrypt anything. Payloads are opaque bytes here.
//! The one piece of cryptography is the relay's own: anonymous send tokens
//! ([`tokens`]), which both sides need.

mod codec;
mod frames;
mod ids;
mod invite;
pub mod limits;
mod queues;
pub mod tokens;
mod wipe_code;

pub use codec::DecodeError;
pub use frames::{
    announced_payload, auth_message, commit_auth_message, content_signature_message, key_announcement,
    split_announced_payload, AuthPurpose, ClientFrame, ErrorCode, KeyAnnouncement, RelayFrame,
    COMMIT_KEY_LABEL, COMMIT_PAYLOAD_TAG, SEALED_BYTES_PER_TOKEN, SEALED_REQUESTS_PER_TOKEN,
    WELCOME_PAYLOAD_TAG,
};
pub use ids::{AccountId, CertificatePin, DeviceId, GroupId, IdError, IdentityKey};
pub use invite::{is_relay_address, is_relay_addresses, Invite, InviteError, MAX_RELAY_ADDRESSES};
pub use queues::{queue_auth_message, wipe_tag, write_hash, Capability, ContactCode, Destination, QueueId};
pub use wipe_code::WipeCode;

/// The protocol version spoken by this build; a relay refuses any other.
/// 4: WebSocket frames of at most [`limits::MAX_WIRE_FRAME_BYTES`].
/// 5: `TokenKey`, asked before a token is spent.
pub const PROTOCOL_VERSION: u16 = 5;

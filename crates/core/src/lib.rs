//! The Hush client protocol engine: identities, key packages, MLS
//! conversations and the content carried inside them.
//!
//! Key design decision: no I/O. Every function takes an OpenMLS provider
//! (crypto, randomness and storage come in as arguments) and returns bytes to
//! send or events to show; the caller owns sockets and disks. The only
//! ciphersuite is MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519 (X-Wing
//! hybrid KEM), so there is nothing to downgrade to. Every credential is
//! checked against the self-certifying account id it claims.

mod content;
pub mod engine;
mod error;
mod group;
mod identity;
mod keys;
mod record;
pub mod route;

pub use content::{Body, Content, MessageId, SignedContent, MAX_CONTENT_BYTES};
pub use engine::{
    CommitAnswer, CommitRun, CommitStep, DeviceStore, Engine, EngineError, Resolution, StorageError,
    UpdatePolicy,
};
pub use error::CoreError;
pub use group::{
    member_accounts, peek, process_incoming, Conversation, Incoming, Outgoing, RelayKeyCheck, SentCommit,
};
pub use identity::Identity;
pub use keys::{
    delete_key_package, new_key_packages, verify_key_package, IssuedKeyPackage, KeyPackageBatch,
    KeyPackagePlan, KeyPackagePolicy, MemberId, VerifiedKeyPackage, KEY_PACKAGE_LIFETIME_SECS,
};
pub use openmls;
pub use record::{ConversationKind, ConversationRecord, Event, MessageRecord};

use openmls::prelude::Ciphersuite;

/// The one ciphersuite Hush speaks: X-Wing (ML-KEM-768 + X25519) hybrid KEM,
/// AES-128-GCM, SHA-256, Ed25519.
pub const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519;

/// Past epochs whose secrets are kept for messages still in flight.
pub const MAX_PAST_EPOCHS: usize = 4;

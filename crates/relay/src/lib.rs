//! The Hush relay: invite-only accounts, public key packages, mailboxes of
//! opaque ciphertext, and per-group commit ordering, served over TLS 1.3
//! WebSockets.
//!
//! Key design decision: the relay depends on `hush-proto` only, never on the
//! client's crypto, so it cannot read what it carries. It stores no sender on
//! a queued payload, no contact or membership lists and no addresses. One
//! store worker applies operations in batches so a send is acknowledged only
//! after a durable commit, with one fsync covering many sends.

mod actor;
pub mod admin;
pub mod cluster;
mod config;
mod connection;
mod data_dir;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod hub;
pub mod metrics;
mod server;
pub mod store;
mod tls;
mod tokens;

pub use actor::{spawn as spawn_store, StoreHandle, StoreWorker};
pub use config::RelayConfig;
pub use data_dir::{DataDir, DataDirError};
pub use hub::Hub;
pub use server::Relay;
pub use tls::{TlsError, TlsIdentity};

//! The Hush client driver: opens the encrypted profile, talks to the relay
//! over pinned TLS WebSockets and runs the protocol engine on what arrives.
//!
//! Key design decision: the relay is treated as an adversary. Nothing it
//! sends can make the client reveal or change a key: the only frames acted
//! upon are acknowledgements, public key packages (checked against the
//! self-certifying account id asked for) and opaque MLS payloads.

mod client;
pub mod display;
mod error;
mod handshake;
mod hardening;
mod messenger;
mod session;
pub mod strength;
mod transport;

pub use client::{
    Client, Clock, ConversationSummary, GroupMember, ReceivedMessage, Request, Target, UpdatePolicy,
};
pub use error::ClientError;
pub use handshake::{handshake, hello, Admission, Credentials};
pub use hardening::harden_process;
pub use hush_store::now_ms;
pub use hush_store::{KdfParams, Rekey};
pub use messenger::{Job, Link, Messenger, Ticket, Update};
pub use session::{report, send_wipe_order, Draft, Push, Session, ACCOUNT_IDLE, SEALED_IDLE};
pub use transport::{Connection, FrameReceiver, FrameSender};

//! `hush chat`: the interactive terminal client.
//!
//! Key design decision: the client is a pure state machine,
//! [`App::update`]`(now, event) -> effects`, with drawing ([`view`]) and all
//! I/O outside it. A worker thread owns the unlocked profile and the relay
//! connection (reconnecting with backoff, keeping an outbox), and talks to
//! the screen only through [`model::Request`] and [`model::Report`], so the
//! screen never waits on the network.

mod app;
mod command;
mod editor;
pub mod model;
mod terminal;
pub mod view;
mod worker;

pub use app::{App, Delivery, Effect, Event, Focus, Overlay};
pub use terminal::{run, Options, Outcome, TuiError};

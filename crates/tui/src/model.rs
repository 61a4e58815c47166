//! What the screen and the network worker say to each other.

use hush_client::{ConversationSummary, Job, ReceivedMessage};
use zeroize::Zeroizing;

/// Who is using the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Me {
    /// Own account id.
    pub account: String,
    /// Own display name.
    pub name: String,
}

pub use hush_client::Link;

/// Everything the screen shows, read from the profile after each change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Contacts: (name, account id).
    pub contacts: Vec<(String, String)>,
    /// Active conversations, most recent first.
    pub conversations: Vec<ConversationSummary>,
    /// The open conversation's messages, oldest first.
    pub open: Option<OpenConversation>,
    /// Our contact code, once the device has its contact queue.
    pub contact_code: Option<String>,
}

/// The conversation on screen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenConversation {
    /// Its name (contact, group or account id).
    pub name: String,
    /// The latest messages, oldest first.
    pub messages: Vec<ReceivedMessage>,
}

/// Something to change: work for the relay (carried out by the messenger,
/// in order, when online), or a change on this device alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Work for the relay.
    Relay(Job),
    /// Save a contact.
    Contact {
        /// Name.
        name: String,
        /// Account id.
        account: String,
    },
    /// List a conversation's members.
    Members {
        /// Conversation.
        to: String,
    },
    /// Accept a conversation request.
    Accept {
        /// Conversation.
        to: String,
    },
    /// Decline a conversation request.
    Decline {
        /// Conversation.
        to: String,
    },
}

/// What the screen asks of the worker.
#[derive(Debug)]
pub enum Request {
    /// Show this conversation (and mark it read), or none.
    Open(Option<String>),
    /// Send a text; answered with `Sent` or `SendFailed` carrying `local_id`.
    Send {
        /// The screen's id for it.
        local_id: u64,
        /// Conversation.
        to: String,
        /// Text.
        text: String,
    },
    /// Carry out an action; answered with `Done` or `Failed`.
    Act(Action),
    /// The screen is locked: send no more snapshots.
    Lock,
    /// Check the passphrase to unlock the screen.
    CheckPassphrase(Zeroizing<String>),
}

/// What the worker tells the screen.
#[derive(Debug)]
pub enum Report {
    /// The profile is open (or the lock screen's passphrase was right).
    Unlocked(Me),
    /// The passphrase was wrong (one attempt used up).
    WrongPassphrase,
    /// The connection changed.
    Link(Link),
    /// The profile changed.
    Snapshot(Snapshot),
    /// The relay durably accepted a message.
    Sent(u64),
    /// A message could not be sent (and will not be retried).
    SendFailed(u64, String),
    /// An action was carried out.
    Done(String),
    /// An action failed.
    Failed(String),
    /// The profile is gone: a panic passphrase (announced to the relay
    /// already), too many wrong passphrases, or a verified remote wipe order.
    Wiped,
    /// Something broke that the client cannot go on from.
    Fatal(String),
}

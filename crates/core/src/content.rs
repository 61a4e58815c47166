//! What travels inside MLS application messages. The relay never sees it.

use serde::{Deserialize, Serialize};

use crate::error::CoreError;

/// A random per-message id used to show each message once.
pub type MessageId = [u8; 16];

/// One application message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Content {
    /// Unique id, chosen by the sender.
    pub id: MessageId,
    /// Sender's clock, Unix milliseconds.
    pub sent_at_ms: u64,
    /// What it says.
    pub body: Body,
    /// Seconds after receipt (after sending, on the sender's device) at
    /// which every member deletes the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_after_secs: Option<u32>,
}

/// The kinds of application message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// A text message.
    Text(String),
    /// Sets (or, with None, turns off) the conversation's
    /// disappearing-message timer for every member.
    Timer {
        /// Seconds, or None for off.
        secs: Option<u32>,
    },
    /// Describes the conversation to new members: a named group, or (None) a
    /// one-to-one conversation.
    Info {
        /// The group's name, or None for a one-to-one conversation.
        group_name: Option<String>,
    },
}

/// Largest serialized content accepted.
pub const MAX_CONTENT_BYTES: usize = 64 * 1024;

impl Content {
    /// Serializes for encryption.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses decrypted bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CoreError> {
        if bytes.len() > MAX_CONTENT_BYTES {
            return Err(CoreError::BadContent);
        }
        serde_json::from_slice(bytes).map_err(|_| CoreError::BadContent)
    }
}

//! What travels inside MLS application messages. The relay never sees it.

use openmls_traits::signatures::Signer;
use serde::{Deserialize, Serialize};

use crate::error::CoreError;
use crate::identity::Identity;

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

/// A message's content as its sender signed it with the identity key,
/// inside MLS: the proof a report carries to the relay's operator, who
/// checks it against the sender's identity key without MLS. Members
/// already hold the sender's MLS signature on every message; this one
/// stands on its own outside the group, and is kept with the message (and
/// deleted with it) only so that a recipient can report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedContent {
    /// The serialized [`Content`], exactly as signed.
    pub content: Vec<u8>,
    /// Ed25519 signature over [`hush_proto::content_signature_message`].
    pub signature: [u8; 64],
}

/// First byte of a signed application message. A bare content (JSON, as
/// protocol 2 clients sent) starts with `{` and is refused: a message that
/// could not be reported is not shown.
const SIGNED_TAG: u8 = 0x01;

impl SignedContent {
    /// Signs `content` with the identity key.
    pub fn sign(identity: &Identity, content: &Content) -> Result<Self, CoreError> {
        let content = content.to_bytes();
        let signature = identity
            .signer()
            .sign(&hush_proto::content_signature_message(&content))
            .map_err(CoreError::mls)?;
        let signature = <[u8; 64]>::try_from(signature.as_slice())
            .map_err(|_| CoreError::Mls("bad signature length".into()))?;
        Ok(Self { content, signature })
    }

    /// What goes inside the MLS application message.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(1 + 64 + self.content.len());
        bytes.push(SIGNED_TAG);
        bytes.extend_from_slice(&self.signature);
        bytes.extend_from_slice(&self.content);
        bytes
    }

    /// Reads what [`Self::to_bytes`] wrote.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CoreError> {
        let (&SIGNED_TAG, rest) = bytes.split_first().ok_or(CoreError::BadContent)? else {
            return Err(CoreError::BadContent);
        };
        if rest.len() < 64 || rest.len() - 64 > MAX_CONTENT_BYTES {
            return Err(CoreError::BadContent);
        }
        let (signature, content) = rest.split_at(64);
        let signature = <[u8; 64]>::try_from(signature).map_err(|_| CoreError::BadContent)?;
        Ok(Self { content: content.to_vec(), signature })
    }

    /// Checks the signature against the sender's identity key (`key`, the
    /// public key of its MLS leaf) and parses the content.
    pub fn verify(&self, key: &[u8]) -> Result<Content, CoreError> {
        let key = <[u8; 32]>::try_from(key).map_err(|_| CoreError::BadCredential)?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&key).map_err(|_| CoreError::BadCredential)?;
        let signature = ed25519_dalek::Signature::from_bytes(&self.signature);
        key.verify_strict(&hush_proto::content_signature_message(&self.content), &signature)
            .map_err(|_| CoreError::BadContent)?;
        Content::from_bytes(&self.content)
    }
}

#[cfg(test)]
mod tests {
    use openmls::prelude::OpenMlsProvider as _;

    use super::*;
    use crate::engine::{DeviceStore as _, MemoryStore};

    fn content(text: &str) -> Content {
        Content { id: [7; 16], sent_at_ms: 5, body: Body::Text(text.into()), expires_after_secs: None }
    }

    #[test]
    fn signed_content_verifies_only_with_its_signer_and_unchanged() {
        let store = MemoryStore::new();
        let alice = Identity::generate(store.provider().storage()).unwrap();
        let mallory = Identity::generate(store.provider().storage()).unwrap();
        let signed = SignedContent::sign(&alice, &content("hello")).unwrap();
        let read = SignedContent::from_bytes(&signed.to_bytes()).unwrap();
        assert_eq!(read, signed);
        assert_eq!(read.verify(&alice.key().0).unwrap(), content("hello"));
        assert!(read.verify(&mallory.key().0).is_err(), "another key");
        let mut changed = read.clone();
        changed.content = content("hellO").to_bytes();
        assert!(changed.verify(&alice.key().0).is_err(), "changed content");
        assert!(SignedContent::from_bytes(&content("hello").to_bytes()).is_err(), "unsigned content");
        assert!(SignedContent::from_bytes(&[SIGNED_TAG; 10]).is_err(), "truncated");
    }
}

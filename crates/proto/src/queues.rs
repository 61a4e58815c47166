//! Queues: where a device receives one conversation's payloads, addressed by
//! a random id the relay chose, not by any account.
//!
//! Three secrets belong to a queue, and the relay keeps none of them:
//! - the **owner key** (Ed25519), whose public half the relay keeps: the
//!   device proves it to receive from the queue ([`queue_auth_message`]);
//! - the **write secret**, of which the relay keeps only the SHA-256
//!   ([`write_hash`]): a sender names it with each send, so only those the
//!   owner gave it to can write;
//! - nothing else: a queue is not linked to an account, to a group or to the
//!   other queues of its device at the relay.

use std::fmt;

use data_encoding::HEXLOWER;
use sha2::{Digest, Sha256};

use crate::ids::{AccountId, CertificatePin};

/// A queue's id, chosen at random by the relay that created it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueId(pub [u8; QueueId::LEN]);

impl QueueId {
    /// Bytes in a queue id (128 bits).
    pub const LEN: usize = 16;
}

impl fmt::Debug for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QueueId({})", HEXLOWER.encode(&self.0))
    }
}

/// The capability to write to a queue: its id and its write secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Capability {
    /// The queue.
    pub queue: QueueId,
    /// The secret whose SHA-256 the relay keeps for the queue.
    pub secret: [u8; 32],
}

impl fmt::Debug for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The secret lets anyone write to the queue: never in a log.
        f.debug_struct("Capability").field("queue", &self.queue).finish_non_exhaustive()
    }
}

impl Drop for Capability {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.secret);
    }
}

impl Capability {
    /// SHA-256 of the write secret, as the relay keeps it.
    pub fn write_hash(&self) -> [u8; 32] {
        write_hash(&self.secret)
    }
}

/// SHA-256 of a write secret, as the relay keeps it.
pub fn write_hash(secret: &[u8; 32]) -> [u8; 32] {
    Sha256::new().chain_update(b"hush queue write v1\0").chain_update(secret).finalize().into()
}

/// A queue's wipe tag: the relay keeps it with the queue, and when a wipe
/// order for the account arrives (the only time the relay sees the wipe
/// secret) it deletes every queue whose tag matches, so the wiped device's
/// conversations see its queues gone. Until then the tag links the queue
/// to nothing: the relay keeps only the SHA-256 of the secret.
pub fn wipe_tag(wipe_secret: &[u8; 32], queue: &QueueId) -> [u8; 32] {
    Sha256::new()
        .chain_update(b"hush queue wipe v1\0")
        .chain_update(wipe_secret)
        .chain_update(queue.0)
        .finalize()
        .into()
}

/// Where a Welcome goes: a queue the new member gave out (in a contact
/// code), or, for someone known only by account id, that account's
/// introduction mailbox (the relay then learns that the account was
/// introduced to someone, not by whom).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A queue, with the capability to write to it.
    Queue(Capability),
    /// An account's introduction mailbox.
    Account(AccountId),
}

/// The exact bytes a device signs with a queue's owner key to receive from
/// it on a connection: the connection's challenge, the relay's certificate
/// pin (so no other relay can replay it) and the queue.
pub fn queue_auth_message(nonce: &[u8; 32], relay: &CertificatePin, queue: &QueueId) -> Vec<u8> {
    let mut message = b"hush-queue-v1\0".to_vec();
    message.extend_from_slice(nonce);
    message.extend_from_slice(&relay.0);
    message.extend_from_slice(&queue.0);
    message
}

/// A contact code: an account id and the capability to write to its
/// device's contact queue, so that whoever has it can start a
/// conversation without the relay learning who adds whom. Shown as
/// `hush-contact:` and 109 base32 characters.
#[derive(Clone, PartialEq, Eq)]
pub struct ContactCode {
    /// Whose code it is.
    pub account: AccountId,
    /// Its contact queue.
    pub queue: Capability,
}

impl fmt::Debug for ContactCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContactCode").field("account", &self.account).finish_non_exhaustive()
    }
}

const CONTACT_PREFIX: &str = "hush-contact:";

impl fmt::Display for ContactCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut bytes = Vec::with_capacity(68);
        bytes.extend_from_slice(&self.account.0);
        bytes.extend_from_slice(&self.queue.queue.0);
        bytes.extend_from_slice(&self.queue.secret);
        write!(f, "{CONTACT_PREFIX}{}", data_encoding::BASE32_NOPAD.encode(&bytes).to_ascii_lowercase())
    }
}

impl std::str::FromStr for ContactCode {
    type Err = crate::IdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        // Any case: a QR code carries it in capitals (the compact
        // alphanumeric mode).
        let text = text.trim();
        let body = text
            .get(..CONTACT_PREFIX.len())
            .filter(|prefix| prefix.eq_ignore_ascii_case(CONTACT_PREFIX))
            .and_then(|_| text.get(CONTACT_PREFIX.len()..))
            .ok_or(crate::IdError::ContactCode)?;
        let bytes = data_encoding::BASE32_NOPAD
            .decode(body.to_ascii_uppercase().as_bytes())
            .map_err(|_| crate::IdError::ContactCode)?;
        if bytes.len() != 68 {
            return Err(crate::IdError::ContactCode);
        }
        let account = AccountId(bytes[..20].try_into().map_err(|_| crate::IdError::ContactCode)?);
        let queue = QueueId(bytes[20..36].try_into().map_err(|_| crate::IdError::ContactCode)?);
        let secret = bytes[36..].try_into().map_err(|_| crate::IdError::ContactCode)?;
        Ok(Self { account, queue: Capability { queue, secret } })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contact_codes_round_trip_and_refuse_anything_else() {
        let code = ContactCode {
            account: AccountId([1; 20]),
            queue: Capability { queue: QueueId([2; 16]), secret: [3; 32] },
        };
        let text = code.to_string();
        assert!(text.starts_with("hush-contact:"));
        assert_eq!(text.parse::<ContactCode>().unwrap(), code);
        assert_eq!(
            text.to_ascii_uppercase()
                .replace("HUSH-CONTACT:", "hush-contact:")
                .parse::<ContactCode>()
                .unwrap(),
            code
        );
        // All capitals, as a QR code carries it.
        assert_eq!(text.to_ascii_uppercase().parse::<ContactCode>().unwrap(), code);
        for bad in [
            "",
            "hush-contact:",
            "hush-contact:abc",
            &text[..text.len() - 1],
            &text.replace("hush-contact:", "hush://"),
        ] {
            assert!(bad.parse::<ContactCode>().is_err(), "{bad}");
        }
        assert!(!format!("{code:?}").contains("aaaa"));
    }

    #[test]
    fn capabilities_keep_their_secret_out_of_logs() {
        let capability = Capability { queue: QueueId([1; 16]), secret: [0xcd; 32] };
        assert!(!format!("{capability:?}").contains("cdcd"));
    }

    #[test]
    fn write_hashes_differ_per_secret_and_are_not_plain_sha256() {
        assert_ne!(write_hash(&[1; 32]), write_hash(&[2; 32]));
        let plain: [u8; 32] = Sha256::digest([1u8; 32]).into();
        assert_ne!(write_hash(&[1; 32]), plain);
    }

    #[test]
    fn queue_proofs_are_bound_to_nonce_relay_and_queue() {
        let (nonce, pin, queue) = ([1; 32], CertificatePin([2; 32]), QueueId([3; 16]));
        let message = queue_auth_message(&nonce, &pin, &queue);
        assert_ne!(message, queue_auth_message(&[9; 32], &pin, &queue));
        assert_ne!(message, queue_auth_message(&nonce, &CertificatePin([9; 32]), &queue));
        assert_ne!(message, queue_auth_message(&nonce, &pin, &QueueId([9; 16])));
    }
}

//! How a group's payloads travel to its members' queues without the relay
//! learning who they are, what kind they are or how long they are.
//!
//! Every secret here is exported from the group's MLS epoch, so exactly its
//! members can derive it, and it changes with every commit:
//! - a member device's **write secret** for an epoch, whose hash the relay
//!   keeps for that member's queue: every commit replaces each member
//!   queue's hash with the next epoch's, so a removed member, who never
//!   learns the next epoch, cannot write to the group's queues any more;
//! - the **owner key** of a queue made for a new member by the member who
//!   adds it (the new member replaces it with its own at once);
//! - the **transport key**, under which each payload is sealed after
//!   padding, so the relay sees neither the MLS header (group id, epoch,
//!   content type) nor the length of what was written: every sealed
//!   payload is one of the sizes [`padme`] allows.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use zeroize::Zeroizing;

/// MLS exporter label of a member device's write secret (context: the
/// device id).
pub const WRITE_LABEL: &str = "hush queue write v1";
/// MLS exporter label of the owner-key seed of a queue made for a new
/// member (context: the device id).
pub const OWNER_LABEL: &str = "hush queue owner v1";
/// MLS exporter label of an epoch's transport key (empty context).
pub const TRANSPORT_LABEL: &str = "hush transport v1";

/// The smallest padded size: shorter payloads are padded up to it.
pub const PAD_FLOOR: usize = 256;
const NONCE: usize = 24;
const TAG: usize = 16;
const LENGTH: usize = 4;
const AD: &[u8] = b"hush transport v1";

/// The padded size of a payload of `len` bytes (Padmé, from "Reducing
/// Metadata Leakage from Encrypted Files and Communication with PURBs",
/// PETS 2019): at most 12% larger, and a length of `E` bits leaks
/// `O(log E)` bits, not `E`. At least [`PAD_FLOOR`].
pub fn padme(len: usize) -> usize {
    let len = len.max(PAD_FLOOR);
    // E = floor(log2 len); S = floor(log2 E) + 1; the last E - S bits
    // are rounded up.
    let exponent = usize::BITS - 1 - len.leading_zeros();
    let size_bits = u32::BITS - exponent.leading_zeros();
    let last_bits = exponent - size_bits;
    let mask = (1usize << last_bits) - 1;
    (len + mask) & !mask
}

/// Whether `len` is a size [`padme`] pads to.
pub fn is_padded_size(len: usize) -> bool {
    len >= PAD_FLOOR && padme(len) == len
}

/// Why a sealed payload could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Not sealed under this key, or altered.
    #[error("the payload is not sealed under this key")]
    Unsealed,
    /// Opened, but its framing is wrong.
    #[error("the payload's framing is invalid")]
    Framing,
}

/// `prefix` (sent in the clear), then `plaintext` padded and sealed under
/// `key` (XChaCha20-Poly1305, random nonce): the whole is a size [`padme`]
/// allows, whatever the plaintext's length.
pub fn seal(key: &[u8; 32], prefix: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let total = padme(prefix.len() + NONCE + TAG + LENGTH + plaintext.len());
    let mut framed = Zeroizing::new(Vec::with_capacity(total - prefix.len() - NONCE - TAG));
    framed.extend_from_slice(&u32::try_from(plaintext.len()).unwrap_or(u32::MAX).to_be_bytes());
    framed.extend_from_slice(plaintext);
    framed.resize(total - prefix.len() - NONCE - TAG, 0);
    let mut nonce = [0u8; NONCE];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let cipher = XChaCha20Poly1305::new(key.into());
    // Encryption of a buffer this size under a valid key cannot fail.
    let sealed =
        cipher.encrypt(XNonce::from_slice(&nonce), Payload { msg: &framed, aad: AD }).unwrap_or_default();
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(prefix);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    out
}

/// Opens what [`seal`] sealed under `key` (without its prefix).
pub fn open(key: &[u8; 32], sealed: &[u8]) -> Result<Vec<u8>, RouteError> {
    if sealed.len() < NONCE + TAG + LENGTH {
        return Err(RouteError::Unsealed);
    }
    let (nonce, body) = sealed.split_at(NONCE);
    let cipher = XChaCha20Poly1305::new(key.into());
    let framed = Zeroizing::new(
        cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: body, aad: AD })
            .map_err(|_| RouteError::Unsealed)?,
    );
    unframe(&framed)
}

/// `prefix`, then `bytes` padded in the clear (a length, the bytes, zeros):
/// the whole is a size [`padme`] allows. For what is encrypted already and
/// must only not give its length away (a Welcome).
pub fn pad(prefix: &[u8], bytes: &[u8]) -> Vec<u8> {
    let total = padme(prefix.len() + LENGTH + bytes.len());
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(prefix);
    out.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(bytes);
    out.resize(total, 0);
    out
}

/// Undoes [`pad`] (given what follows the prefix).
pub fn unpad(padded: &[u8]) -> Result<Vec<u8>, RouteError> {
    unframe(padded)
}

fn unframe(framed: &[u8]) -> Result<Vec<u8>, RouteError> {
    let (length, rest) = framed.split_at_checked(LENGTH).ok_or(RouteError::Framing)?;
    let length = u32::from_be_bytes(length.try_into().map_err(|_| RouteError::Framing)?) as usize;
    let body = rest.get(..length).ok_or(RouteError::Framing)?;
    // The padding must be zeros: nothing else may ride along unseen.
    if rest[length..].iter().any(|byte| *byte != 0) {
        return Err(RouteError::Framing);
    }
    Ok(body.to_vec())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn padme_pads_little_and_to_few_sizes() {
        assert_eq!(padme(0), PAD_FLOOR);
        assert_eq!(padme(256), 256);
        assert_eq!(padme(257), 272);
        assert_eq!(padme(1000), 1024);
        assert_eq!(padme(1025), 1088);
        let mut sizes = std::collections::BTreeSet::new();
        for len in 0..=70_000usize {
            let padded = padme(len);
            assert!(padded >= len && is_padded_size(padded));
            // At most 12% more, above the floor.
            assert!(len < PAD_FLOOR || padded * 100 <= len * 112 + 100, "{len} -> {padded}");
            sizes.insert(padded);
        }
        // 70,000 lengths fall into a few hundred sizes.
        assert!(sizes.len() < 400, "{} sizes", sizes.len());
        assert!(!is_padded_size(257));
    }

    #[test]
    fn sealed_payloads_have_padded_sizes_and_open_only_under_their_key() {
        let key = [7u8; 32];
        for len in [0, 1, 200, 300, 5_000, 70_000] {
            let plaintext = vec![0xa5; len];
            let sealed = seal(&key, b"", &plaintext);
            assert!(is_padded_size(sealed.len()), "{len} sealed into {}", sealed.len());
            assert_eq!(open(&key, &sealed).unwrap(), plaintext);
            let tagged = seal(&key, &[0xc1; 33], &plaintext);
            assert!(is_padded_size(tagged.len()), "{len} sealed after a prefix into {}", tagged.len());
            assert_eq!(tagged[..33], [0xc1; 33]);
            assert_eq!(open(&key, &tagged[33..]).unwrap(), plaintext);
            assert_eq!(open(&[8; 32], &sealed), Err(RouteError::Unsealed));
            let mut altered = sealed.clone();
            *altered.last_mut().unwrap() ^= 1;
            assert_eq!(open(&key, &altered), Err(RouteError::Unsealed));
        }
        // The same plaintext twice does not seal to the same bytes.
        assert_ne!(seal(&key, b"", b"x"), seal(&key, b"", b"x"));
    }

    #[test]
    fn clear_padding_round_trips_and_refuses_anything_riding_along() {
        let prefixed = pad(&[0xc2; 33], b"welcome");
        assert!(is_padded_size(prefixed.len()));
        assert_eq!(unpad(&prefixed[33..]).unwrap(), b"welcome");
        let padded = pad(b"", b"welcome");
        assert!(is_padded_size(padded.len()));
        assert_eq!(unpad(&padded).unwrap(), b"welcome");
        let mut extra = padded.clone();
        *extra.last_mut().unwrap() = 1;
        assert_eq!(unpad(&extra), Err(RouteError::Framing));
        let mut long = padded;
        long[3] = 255;
        assert_eq!(unpad(&long), Err(RouteError::Framing));
        assert_eq!(unpad(&[0, 0]), Err(RouteError::Framing));
    }
}

//! The fuzz targets: every decoder that reads bytes an attacker controls,
//! each behind one function that must never panic, whatever its input.
//!
//! Run one under AFL++ (coverage-guided, on the stable toolchain):
//!
//! ```sh
//! cargo install cargo-afl && cargo afl config --build
//! cargo afl build -p hush-fuzz --features afl
//! cargo afl fuzz -i crates/fuzz/corpus/client_frame -o /tmp/afl-client_frame \
//!     target/debug/hush-fuzz client_frame
//! ```
//!
//! `scripts/fuzz.sh` runs a campaign over every target. The test command
//! replays every corpus file and a few thousand seeded mutations of each
//! through the same functions (`tests/targets.rs`).
//!
//! Where a decoder has an encoder, the target also checks that what
//! decodes encodes back to something that decodes to the same value.

use hush_proto::{ClientFrame, Invite, RelayFrame, WipeCode};

/// A target: its name (the corpus directory) and its function.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: &[Target] = &[
    ("client_frame", client_frame),
    ("relay_frame", relay_frame),
    ("invite", invite),
    ("wipe_code", wipe_code),
    ("content", content),
    ("mls_message", mls_message),
    ("key_file_slot", key_file_slot),
    ("relay_config", relay_config),
];

/// The target called `name`.
pub fn target(name: &str) -> Option<fn(&[u8])> {
    TARGETS.iter().find(|(target, _)| *target == name).map(|(_, run)| *run)
}

/// A frame a client sends: the relay decodes it from anyone connected.
pub fn client_frame(data: &[u8]) {
    if let Ok(frame) = ClientFrame::decode(data) {
        assert_eq!(
            ClientFrame::decode(&frame.encode()).ok(),
            Some(frame),
            "a client frame does not round-trip"
        );
    }
}

/// A frame the relay sends: the client decodes it from a relay it does not
/// trust.
pub fn relay_frame(data: &[u8]) {
    if let Ok(frame) = RelayFrame::decode(data) {
        assert_eq!(
            RelayFrame::decode(&frame.encode()).ok(),
            Some(frame),
            "a relay frame does not round-trip"
        );
    }
}

/// An invite, pasted by a person from wherever they got it.
pub fn invite(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(invite) = text.parse::<Invite>() {
        assert_eq!(invite.to_string().parse::<Invite>().ok(), Some(invite), "an invite does not round-trip");
    }
}

/// A wipe code, typed or pasted.
pub fn wipe_code(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(code) = text.parse::<WipeCode>() {
        assert!(code.to_string().parse::<WipeCode>().ok() == Some(code), "a wipe code does not round-trip");
    }
}

/// Decrypted message content, written by any member of a group.
pub fn content(data: &[u8]) {
    if let Ok(content) = hush_core::Content::from_bytes(data) {
        // (JSON also accepts a struct written as an array, which encodes
        // back longer: past the size limit it cannot be read back.)
        let bytes = content.to_bytes();
        if bytes.len() <= hush_core::MAX_CONTENT_BYTES {
            let again = hush_core::Content::from_bytes(&bytes).ok();
            assert_eq!(again, Some(content), "content does not round-trip");
        }
    }
}

/// A payload from the mailbox, before decryption: the commit envelope
/// (epoch key announcement), then the MLS message header the device routes
/// it by (OpenMLS's own parser).
pub fn mls_message(data: &[u8]) {
    let _ = hush_core::peek(data);
}

/// A slot of the device's key file, once decrypted.
pub fn key_file_slot(data: &[u8]) {
    hush_store::fuzzing::key_file_slot(data);
}

/// The relay's settings file.
pub fn relay_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = hush_relay::RelayConfig::from_json(text);
}

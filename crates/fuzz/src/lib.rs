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
//!
//! Two targets are structure-aware: `relay_session` drives the relay's
//! protocol handling with arbitrary frame sequences from a hostile client
//! next to honest ones, and `group_schedule` runs the group simulation (the
//! real engine on four devices, the relay's real store and ordering) with
//! every choice of its schedule (who does what, which deliveries are lost,
//! reordered, replayed or corrupted) read from the input. Both check their
//! invariants, not only that nothing panics, and are slow (milliseconds to a
//! second per input), so the test command runs fewer mutations of them.

use hush_proto::{AccountId, ClientFrame, Invite, RelayFrame, WipeCode};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

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
    ("key_package", key_package),
    ("relay_session", relay_session),
    ("group_schedule", group_schedule),
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

/// A payload from the mailbox: the commit envelope (epoch key
/// announcement), the MLS message header the device routes it by, then
/// OpenMLS's own parsing and processing.
pub fn mls_message(data: &[u8]) {
    let _ = hush_core::peek(data);
    // Then processed by a device in no group (OpenMLS's full parser, and
    // the Welcome path up to finding no key package of its own).
    let provider = openmls_rust_crypto::OpenMlsRustCrypto::default();
    let _ = hush_core::process_incoming(&provider, data);
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

/// A key package fetched from the relay, parsed and verified (signature,
/// ciphersuite, that it is the expected account's) before anyone is added.
/// The input is the expected account (20 bytes), then the package. One that
/// verifies for one account must not verify for any other.
pub fn key_package(data: &[u8]) {
    let Some((account, package)) = data.split_first_chunk::<20>() else { return };
    let provider = openmls_rust_crypto::OpenMlsRustCrypto::default();
    let expected = AccountId(*account);
    if hush_core::verify_key_package(&provider, package, expected).is_ok() {
        let mut other = expected;
        other.0[0] ^= 1;
        assert!(
            hush_core::verify_key_package(&provider, package, other).is_err(),
            "a key package verified for two accounts"
        );
    }
}

/// Arbitrary frames from a hostile client, before or after login, next to
/// two honest clients (see `hush_relay::fuzzing`).
pub fn relay_session(data: &[u8]) {
    hush_relay::fuzzing::session(data);
}

/// The group simulation with its schedule read from `data`
/// (`hush_testkit::simulation`).
pub fn group_schedule(data: &[u8]) {
    hush_testkit::simulation::run(InputRng::new(data));
}

/// Random numbers read from a fuzz input, so the fuzzer steers each choice;
/// once the input runs out, a generator seeded from it takes over (zeros
/// would make every later choice the same one).
pub struct InputRng<'a> {
    data: &'a [u8],
    rest: StdRng,
}

impl<'a> InputRng<'a> {
    /// Numbers from `data`, then from a generator seeded with it.
    pub fn new(data: &'a [u8]) -> Self {
        let seed = data.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
        });
        Self { data, rest: StdRng::seed_from_u64(seed) }
    }
}

impl RngCore for InputRng<'_> {
    fn next_u32(&mut self) -> u32 {
        let mut bytes = [0; 4];
        self.fill_bytes(&mut bytes);
        u32::from_le_bytes(bytes)
    }

    fn next_u64(&mut self) -> u64 {
        let mut bytes = [0; 8];
        self.fill_bytes(&mut bytes);
        u64::from_le_bytes(bytes)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        let take = dest.len().min(self.data.len());
        let (now, later) = self.data.split_at(take);
        dest[..take].copy_from_slice(now);
        self.data = later;
        self.rest.fill_bytes(&mut dest[take..]);
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

//! Upper bounds on every length that crosses the wire.
//!
//! A decoder checks each length against these before it allocates.

/// Largest WebSocket message either side accepts (a whole frame).
pub const MAX_FRAME_BYTES: usize = 8 * 1024 * 1024;
/// Largest single WebSocket frame either side sends or accepts: a message
/// longer than this goes as several frames (fragments). The WebSocket
/// implementation keeps each buffer at the largest frame it ever held, so
/// one large payload in one frame would leave a connection holding that
/// many bytes for as long as it idles (measured: 100 idle pairs that had
/// each carried one 3 MB message held 193 MB of live relay memory in
/// single frames, 36 MB in fragments, 21 MB after 300-byte messages).
pub const MAX_WIRE_FRAME_BYTES: usize = 16 * 1024;
/// Most bytes a client may send before it has logged in (the WebSocket
/// upgrade request and its frames together; a login is a few hundred
/// bytes): a connection that has proved nothing must not make the relay
/// read or hold megabytes.
pub const MAX_PREAUTH_BYTES: usize = 4 * 1024;
/// Largest opaque payload in one send or commit. MLS commits in freshly
/// created 1,000-member post-quantum groups reach ~1.2 MB; Welcomes ~1.3 MB.
pub const MAX_PAYLOAD_BYTES: usize = 4 * 1024 * 1024;
/// Most recipients of one send or commit.
pub const MAX_RECIPIENTS: usize = 1_000;
/// Largest serialized MLS key package (an X-Wing one is ~2.7 KB).
pub const MAX_KEY_PACKAGE_BYTES: usize = 16 * 1024;
/// Most key packages in one upload.
pub const MAX_KEY_PACKAGES_PER_UPLOAD: usize = 100;
/// Most delivery ids in one acknowledgement.
pub const MAX_ACK_IDS: usize = 1_000;
/// Longest invite code.
pub const MAX_INVITE_CODE_BYTES: usize = 64;
/// Longest group id.
pub const MAX_GROUP_ID_BYTES: usize = 32;
/// Longest human-readable error message from the relay.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 256;
/// Most tokens one issuance request asks for.
pub const MAX_TOKENS_PER_REQUEST: usize = 256;
/// Most queues one `SubscribeQueues` frame names (its proofs must fit in
/// the bytes a connection may send before it has proved anything).
pub const MAX_QUEUES_PER_SUBSCRIBE: usize = 32;
/// Largest reported message content (a message's whole signed content).
pub const MAX_REPORTED_CONTENT_BYTES: usize = 64 * 1024;
/// Longest reason given with a report.
pub const MAX_REPORT_REASON_BYTES: usize = 1024;

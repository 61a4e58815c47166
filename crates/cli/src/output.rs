//! Printing messages for people and for scripts.

use std::time::{Duration, UNIX_EPOCH};

use hush_client::ReceivedMessage;
use serde_json::json;

pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// One message: a JSON object per line, or a line for people (events, such
/// as a timer change, are marked with `*`).
pub fn print_message(message: &ReceivedMessage, json: bool) {
    if json {
        let mut value = json!({
            "id": message.id,
            "conversation": message.conversation,
            "from": message.from.to_string(),
            "text": message.text,
            "sent_at": rfc3339(message.sent_at_ms),
        });
        if message.event {
            value["event"] = json!(true);
        }
        if let Some(expires) = message.expires_at_ms {
            value["expires_at"] = json!(rfc3339(expires));
        }
        println!("{value}");
    } else {
        let mark = if message.event { "* " } else { "" };
        let when = rfc3339(message.sent_at_ms);
        println!("{when} [{}] {mark}{}: {}", message.conversation, message.from, message.text);
    }
}

//! Printing messages for people and for scripts.

use std::time::{Duration, UNIX_EPOCH};

use hush_client::ReceivedMessage;
use serde_json::json;

pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

pub fn print_message(message: &ReceivedMessage, json: bool) {
    if json {
        let value = json!({
            "id": message.id,
            "conversation": message.conversation,
            "from": message.from.to_string(),
            "text": message.text,
            "sent_at": rfc3339(message.sent_at_ms),
        });
        println!("{value}");
    } else {
        println!(
            "{} [{}] {}: {}",
            rfc3339(message.sent_at_ms),
            message.conversation,
            message.from,
            message.text
        );
    }
}

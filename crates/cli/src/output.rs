//! Printing messages for people and for scripts.
//!
//! Names and texts come from other people, so nothing of theirs reaches
//! the terminal raw: for people, newlines and control characters are
//! written out visibly ([`visible`]); for scripts, JSON escapes them, and
//! [`json_line`] also escapes the few that JSON leaves raw (DEL, C1
//! controls, bidirectional overrides).

use std::borrow::Cow;
use std::time::{Duration, UNIX_EPOCH};

use hush_client::{display, ReceivedMessage};
use serde_json::{json, Value};

pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// Text from someone else, safe to print on one line.
pub fn visible(text: &str) -> Cow<'_, str> {
    display::escape(text)
}

/// One JSON object on one line, with every character a terminal could act
/// on escaped as `\uXXXX` (the same value to any JSON reader).
pub fn json_line(value: &Value) -> String {
    let text = value.to_string();
    if !text.chars().any(display::is_unsafe) {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if display::is_unsafe(c) {
            // Unsafe characters are all in the Basic Multilingual Plane.
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// One message: a JSON object per line, or a line for people (events, such
/// as a timer change, are marked with `*`; messages in a conversation
/// request say so after the conversation's name).
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
        if message.request {
            value["request"] = json!(true);
        }
        if let Some(expires) = message.expires_at_ms {
            value["expires_at"] = json!(rfc3339(expires));
        }
        println!("{}", json_line(&value));
    } else {
        let mark = if message.event { "* " } else { "" };
        let request = if message.request { " (request: hush requests)" } else { "" };
        let when = rfc3339(message.sent_at_ms);
        let (conversation, text) = (visible(&message.conversation), visible(&message.text));
        println!("{when} [{conversation}]{request} {mark}{}: {text}", message.from);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_escape_what_json_leaves_raw_and_parse_back_to_the_same_text() {
        let text = "a\u{7f}b\u{9b}2J\u{202e}c\n\u{1b}[31m";
        let line = json_line(&json!({ "text": text }));
        assert!(!line.chars().any(display::is_unsafe), "{line:?}");
        let back: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(back["text"], text);
    }
}

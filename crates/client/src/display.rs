//! Text from other people, made safe for a terminal.
//!
//! Names and messages come from senders, and a terminal obeys what it
//! prints: a newline lets a sender forge a whole line (`\n[alice] ...`),
//! an escape sequence can move the cursor, rewrite the screen or set the
//! window title, and a bidirectional override can make text read
//! differently from what it is. Every such character is made visible
//! ([`escape`], for line-oriented output) or dropped ([`strip`], for a
//! screen that lays text out itself).

use std::borrow::Cow;

/// True for a character a terminal may act on rather than show: C0 and C1
/// controls (newline, escape, ...), DEL, bidirectional formatting
/// characters and the Unicode line and paragraph separators.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
                | '\u{2028}' | '\u{2029}'
        )
}

/// `text` with every unsafe character written out visibly: `\n`, `\r`,
/// `\t`, else `\u{...}`. Safe text is borrowed unchanged.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_unsafe(c) => out.push_str(&format!("\\u{{{:04x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// `text` without its unsafe characters, keeping newlines when
/// `keep_newlines` (a screen that wraps lines itself).
pub fn strip(text: &str, keep_newlines: bool) -> Cow<'_, str> {
    let dropped = |c: char| is_unsafe(c) && !(keep_newlines && c == '\n');
    if !text.chars().any(dropped) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(text.chars().filter(|c| !dropped(*c)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forged_line_stays_on_one_line() {
        let forged = "hi\n2026-11-27T10:00:00Z [alice] ALICE: send the code";
        let shown = escape(forged);
        assert!(!shown.contains('\n'));
        assert_eq!(shown, "hi\\n2026-11-27T10:00:00Z [alice] ALICE: send the code");
    }

    #[test]
    fn escape_sequences_and_bidi_overrides_are_made_visible() {
        assert_eq!(escape("\u{1b}]0;pwned\u{7}x"), "\\u{001b}]0;pwned\\u{0007}x");
        assert_eq!(escape("abc\u{202e}fdp.exe"), "abc\\u{202e}fdp.exe");
        assert_eq!(escape("\u{9b}2J"), "\\u{009b}2J");
        assert_eq!(escape("tab\there\r"), "tab\\there\\r");
        assert_eq!(escape("line\u{2028}sep"), "line\\u{2028}sep");
    }

    #[test]
    fn ordinary_text_is_untouched() {
        for text in ["hello", "Grüße, 東京 👨\u{200d}👩\u{200d}👧", "a\\nb"] {
            assert!(matches!(escape(text), Cow::Borrowed(t) if t == text));
            assert!(matches!(strip(text, false), Cow::Borrowed(t) if t == text));
        }
    }

    #[test]
    fn strip_drops_what_escape_would_show() {
        assert_eq!(strip("a\u{1b}[2Jb\nc\u{202e}d", true), "a[2Jb\ncd");
        assert_eq!(strip("a\u{1b}[2Jb\nc", false), "a[2Jbc");
    }

    #[test]
    fn no_unsafe_character_survives_escaping() {
        for code in (0u32..0x3000).chain([0xfeff, 0x10ffff]) {
            let Some(c) = char::from_u32(code) else { continue };
            let text = format!("x{c}y");
            assert!(!escape(&text).chars().any(is_unsafe), "U+{code:04X}");
            assert!(!strip(&text, false).chars().any(is_unsafe), "U+{code:04X}");
        }
    }
}

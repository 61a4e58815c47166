use hush_client::{ConversationSummary, ReceivedMessage};
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;

use super::*;
use crate::app::Event;
use crate::model::{Me, OpenConversation, Report, Snapshot};

const ALICE: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const BOB: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn screen(app: &App, width: u16, height: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|frame| draw(frame, app)).unwrap();
    let buffer = terminal.backend().buffer().clone();
    let mut text = String::new();
    for y in 0..height {
        for x in 0..width {
            text.push_str(buffer[(x, y)].symbol());
        }
        text.push('\n');
    }
    text
}

fn message(from: &str, text: &str, event: bool) -> ReceivedMessage {
    ReceivedMessage {
        id: "00".into(),
        conversation: "bob".into(),
        from: from.parse().unwrap(),
        text: text.into(),
        sent_at_ms: 1_700_000_000_000,
        event,
        expires_at_ms: None,
        request: false,
    }
}

fn chatting() -> App {
    let mut app = App::new(1_700_000_000_000, Some("bob".into()), None);
    app.update(0, Event::Report(Report::Unlocked(Me { account: ALICE.into(), name: "alice".into() })));
    let snapshot = Snapshot {
        contacts: vec![("bob".into(), BOB.into())],
        conversations: vec![
            ConversationSummary {
                name: "bob".into(),
                group: false,
                unread: 0,
                last_activity_ms: 1_700_000_000_000,
                timer_secs: Some(300),
                request: false,
            },
            ConversationSummary {
                name: "team".into(),
                group: true,
                unread: 3,
                last_activity_ms: 0,
                timer_secs: None,
                request: false,
            },
            ConversationSummary {
                name: "stranger".into(),
                group: true,
                unread: 1,
                last_activity_ms: 0,
                timer_secs: None,
                request: true,
            },
        ],
        open: Some(OpenConversation {
            name: "bob".into(),
            messages: vec![
                message(BOB, "hello alice", false),
                message(ALICE, "hi bob", false),
                message(ALICE, "disappearing messages: 5m", true),
            ],
        }),
        contact_code: None,
    };
    app.update(1_700_000_000_000, Event::Report(Report::Snapshot(snapshot)));
    app
}

#[test]
fn the_lock_screen_shows_nothing_typed() {
    let mut app = App::new(0, None, None);
    for c in "hunter2".chars() {
        app.update(0, Event::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)));
    }
    let text = screen(&app, 80, 24);
    assert!(text.contains("Passphrase"));
    assert!(!text.contains("hunter2") && !text.contains('*'));
}

#[test]
fn a_conversation_fits_80_by_24_with_marks_for_state_and_events() {
    let mut app = chatting();
    for c in "typing".chars() {
        app.update(0, Event::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)));
    }
    app.update(0, Event::Key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE)));
    let text = screen(&app, 80, 24);
    assert!(text.contains("bob: hello alice"), "{text}");
    assert!(text.contains("you: hi bob [sent]"), "{text}");
    assert!(text.contains("* disappearing messages: 5m"), "{text}");
    assert!(text.contains("you: typing [sending...]"), "{text}");
    assert!(text.contains("#team (3)"), "{text}");
    assert!(text.contains("timer 5m"), "{text}");
}

#[test]
fn a_conversation_request_is_marked_and_says_how_to_answer_it() {
    let mut app = chatting();
    let text = screen(&app, 80, 24);
    assert!(text.contains("?stranger (1)"), "{text}");
    assert!(!text.contains("/accept"), "{text}");
    app.open = Some("stranger".into());
    let text = screen(&app, 80, 24);
    assert!(text.contains("request: /accept or /decline"), "{text}");
}

#[test]
fn narrow_screens_show_the_conversation_alone() {
    let app = chatting();
    let text = screen(&app, 40, 12);
    assert!(text.contains("hello alice"));
    assert!(!text.contains("#team"));
}

#[test]
fn help_and_qr_code_fit_80_by_24() {
    let mut app = chatting();
    app.overlay = Some(Overlay::Help);
    let text = screen(&app, 80, 24);
    assert!(text.contains("/timer DURATION|off") && text.contains("Ctrl-L"), "{text}");
    app.overlay = Some(Overlay::AccountId { title: "bob".into(), account: BOB.into() });
    let text = screen(&app, 80, 24);
    assert!(text.contains(BOB), "{text}");
    assert!(qr_lines(BOB).len() + 4 <= 24);
}

#[test]
fn the_contact_code_and_its_qr_code_fit_80_by_24() {
    let mut app = chatting();
    let code = hush_proto::ContactCode {
        account: BOB.parse().unwrap(),
        queue: hush_proto::Capability { queue: hush_proto::QueueId([0xa5; 16]), secret: [0x5a; 32] },
    }
    .to_string();
    app.overlay = Some(Overlay::ContactCode { title: "You (alice)".into(), code: code.clone() });
    // Every line of the QR code is on screen whole, in 80 by 24 too.
    for height in [24, 30] {
        let text = screen(&app, 80, height);
        for row in contact_qr_lines(&code) {
            assert!(text.contains(row.trim()), "{row} missing from\n{text}");
        }
    }
    // With room, the code as text too, split over two lines.
    let text = screen(&app, 80, 30);
    let (first, second) = code.split_at(code.len().div_ceil(2));
    assert!(text.contains(first) && text.contains(second), "{text}");
    assert!(!screen(&app, 80, 24).contains(first));
}

#[test]
fn expired_messages_are_not_drawn_even_before_the_purge() {
    let mut app = chatting();
    if let Some(open) = &mut app.snapshot.open {
        open.messages[0].expires_at_ms = Some(1_700_000_000_001);
    }
    app.now_ms = 1_700_000_000_002;
    assert!(!screen(&app, 80, 24).contains("hello alice"));
}

#[test]
fn wrap_breaks_at_words_and_indents_continuations() {
    assert_eq!(wrap("aaa bbb ccc", 8), vec!["aaa bbb", "  ccc"]);
    assert_eq!(wrap("one\ntwo", 20), vec!["one", "  two"]);
    assert_eq!(wrap("abcdefghij", 6), vec!["abcdef", "  ghij"]);
}

#[test]
fn escape_sequences_and_overrides_from_a_sender_never_reach_the_terminal() {
    let mut app = chatting();
    let hostile = "hi\u{1b}]0;owned\u{7}\u{1b}[2J\u{9b}31m\u{202e}olleh\rX";
    let mut snapshot = app.snapshot.clone();
    snapshot.conversations[1].name = "te\u{1b}[5mam".into();
    if let Some(open) = snapshot.open.as_mut() {
        open.messages.push(message(BOB, hostile, false));
    }
    app.update(1_700_000_000_000, Event::Report(Report::Snapshot(snapshot)));
    let text = screen(&app, 80, 24);
    assert!(text.contains("hi]0;owned[2J31molleh"), "{text}");
    assert!(text.contains("#te[5mam"), "{text}");
    let unsafe_drawn = text.chars().any(|c| c != '\n' && hush_client::display::is_unsafe(c));
    assert!(!unsafe_drawn, "{text:?}");
}

use hush_client::{ConversationSummary, ReceivedMessage};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::*;
use crate::model::OpenConversation;

const BOB: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn key(code: KeyCode) -> Event {
    Event::Key(KeyEvent::new(code, KeyModifiers::NONE))
}

fn ctrl_key(c: char) -> Event {
    Event::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL))
}

fn type_text(app: &mut App, text: &str) -> Vec<Effect> {
    text.chars().flat_map(|c| app.update(0, key(KeyCode::Char(c)))).collect()
}

fn summary(name: &str, group: bool) -> ConversationSummary {
    ConversationSummary {
        name: name.into(),
        group,
        unread: 0,
        last_activity_ms: 0,
        timer_secs: None,
        request: false,
    }
}

fn unlocked(open: Option<&str>) -> App {
    let mut app = App::new(0, open.map(str::to_owned), Some(60_000));
    let me = Me { account: "a".repeat(32), name: "alice".into() };
    app.update(0, Event::Report(Report::Unlocked(me)));
    let snapshot = Snapshot {
        contacts: vec![("bob".into(), BOB.into())],
        conversations: vec![summary("bob", false), summary("team", true)],
        open: None,
        contact_code: Some("hush-contact:abc".into()),
    };
    app.update(0, Event::Report(Report::Snapshot(snapshot)));
    app
}

#[test]
fn the_passphrase_goes_to_unlock_and_is_not_kept() {
    let mut app = App::new(0, None, None);
    assert!(type_text(&mut app, "secret").is_empty());
    let effects = app.update(0, key(KeyCode::Enter));
    match effects.as_slice() {
        [Effect::Unlock(passphrase)] => assert_eq!(passphrase.as_str(), "secret"),
        other => panic!("expected an unlock, got {other:?}"),
    }
    let lock = app.lock.as_ref().unwrap();
    assert!(lock.passphrase.is_empty() && lock.checking);
    app.update(0, Event::Report(Report::WrongPassphrase));
    assert_eq!(app.lock.as_ref().unwrap().error.as_deref(), Some("wrong passphrase"));
}

#[test]
fn typing_a_passphrase_never_moves_its_buffer() {
    // A buffer that grows is copied, and the old copy is freed unzeroed.
    let mut app = App::new(0, None, None);
    let at = app.lock.as_ref().unwrap().passphrase.as_ptr();
    type_text(&mut app, &"x".repeat(900));
    app.update(0, Event::Paste("y".repeat(900)));
    let lock = app.lock.as_ref().unwrap();
    assert_eq!(lock.passphrase.as_ptr(), at, "the passphrase buffer was reallocated");
    assert!(lock.passphrase.len() <= lock.passphrase.capacity());
    assert_eq!(lock.passphrase.len(), 1024);
}

#[test]
fn keys_while_locked_reach_nothing_but_the_passphrase() {
    let mut app = unlocked(Some("bob"));
    app.update(0, ctrl_key('l'));
    assert!(app.lock.is_some());
    assert!(app.snapshot.conversations.is_empty(), "locking drops what was on screen");
    type_text(&mut app, "/quit");
    assert!(app.editor.is_empty());
    assert!(!app.quit);
    // Snapshots that arrive while locked are not kept.
    let snapshot = Snapshot { conversations: vec![summary("bob", false)], ..Snapshot::default() };
    app.update(0, Event::Report(Report::Snapshot(snapshot)));
    assert!(app.snapshot.conversations.is_empty());
}

#[test]
fn unlocking_asks_for_the_open_conversation() {
    let mut app = App::new(0, Some("bob".into()), None);
    let me = Me { account: "a".repeat(32), name: "alice".into() };
    let effects = app.update(0, Event::Report(Report::Unlocked(me)));
    assert!(matches!(effects.as_slice(), [Effect::Request(Request::Open(Some(name)))] if name == "bob"));
    assert_eq!(app.focus, Focus::Input);
}

#[test]
fn idle_time_locks_the_screen() {
    let mut app = unlocked(None);
    assert!(app.update(59_000, Event::Tick).is_empty());
    app.update(59_500, key(KeyCode::Down));
    assert!(app.update(100_000, Event::Tick).is_empty(), "a key press restarts the idle clock");
    let effects = app.update(119_500, Event::Tick);
    assert!(matches!(effects.as_slice(), [Effect::Request(Request::Lock)]));
    assert!(app.lock.is_some());
}

#[test]
fn enter_sends_and_the_reply_settles_the_outbox() {
    let mut app = unlocked(Some("bob"));
    type_text(&mut app, "hi bob");
    let effects = app.update(0, key(KeyCode::Enter));
    let local_id = match effects.as_slice() {
        [Effect::Request(Request::Send { local_id, to, text })] => {
            assert_eq!((to.as_str(), text.as_str()), ("bob", "hi bob"));
            *local_id
        }
        other => panic!("expected a send, got {other:?}"),
    };
    assert!(app.editor.is_empty());
    assert_eq!(app.outbox[0].state, Delivery::Sending);
    app.update(0, Event::Report(Report::SendFailed(local_id, "offline".into())));
    assert_eq!(app.outbox[0].state, Delivery::Failed("offline".into()));
    app.update(0, Event::Report(Report::Sent(local_id)));
    assert!(app.outbox.is_empty());
}

#[test]
fn alt_enter_makes_a_second_line() {
    let mut app = unlocked(Some("bob"));
    type_text(&mut app, "one");
    app.update(0, Event::Key(KeyEvent::new(KeyCode::Enter, KeyModifiers::ALT)));
    type_text(&mut app, "two");
    let effects = app.update(0, key(KeyCode::Enter));
    assert!(
        matches!(effects.as_slice(), [Effect::Request(Request::Send { text, .. })] if text == "one\ntwo")
    );
}

#[test]
fn text_without_a_conversation_is_kept_with_a_hint() {
    let mut app = unlocked(None);
    app.update(0, key(KeyCode::Char('i')));
    type_text(&mut app, "hello");
    assert!(app.update(0, key(KeyCode::Enter)).is_empty());
    assert_eq!(app.editor.text(), "hello");
    assert!(app.notice.as_ref().is_some_and(|(_, error)| *error));
}

#[test]
fn the_list_opens_the_selected_conversation() {
    let mut app = unlocked(None);
    app.update(0, key(KeyCode::Char('j')));
    let effects = app.update(0, key(KeyCode::Enter));
    assert!(matches!(effects.as_slice(), [Effect::Request(Request::Open(Some(name)))] if name == "team"));
    assert_eq!(app.open.as_deref(), Some("team"));
    assert_eq!(app.focus, Focus::Input);
}

#[test]
fn commands_become_actions() {
    let mut app = unlocked(Some("team"));
    type_text(&mut app, "/add carol");
    let effects = app.update(0, key(KeyCode::Enter));
    assert!(matches!(
        effects.as_slice(),
        [Effect::Request(Request::Act(Action::Relay(Job::GroupAdd { name, members })))] if name == "team" && members == &["carol"]
    ));
    type_text(&mut app, &format!("/new {BOB} robert"));
    let effects = app.update(0, key(KeyCode::Enter));
    assert!(matches!(effects.as_slice(), [
        Effect::Request(Request::Act(Action::Relay(Job::Start { .. }))),
        Effect::Request(Request::Open(Some(name)))
    ] if name == "robert"));
    for (command, expected) in [
        ("/members", Action::Members { to: "robert".into() }),
        ("/accept", Action::Accept { to: "robert".into() }),
        ("/decline", Action::Decline { to: "robert".into() }),
    ] {
        type_text(&mut app, command);
        let effects = app.update(0, key(KeyCode::Enter));
        assert!(
            matches!(effects.as_slice(), [Effect::Request(Request::Act(action))] if *action == expected),
            "{command}: {effects:?}"
        );
    }
}

#[test]
fn add_outside_a_group_is_refused_and_bad_usage_keeps_the_text() {
    let mut app = unlocked(Some("bob"));
    type_text(&mut app, "/add carol");
    assert!(app.update(0, key(KeyCode::Enter)).is_empty());
    assert_eq!(app.notice.as_ref().map(|(text, _)| text.as_str()), Some("open a group first"));
    type_text(&mut app, "/timer");
    assert!(app.update(0, key(KeyCode::Enter)).is_empty());
    assert_eq!(app.editor.text(), "/timer");
}

#[test]
fn double_slash_sends_a_literal_slash() {
    let mut app = unlocked(Some("bob"));
    type_text(&mut app, "//shrug");
    let effects = app.update(0, key(KeyCode::Enter));
    assert!(matches!(effects.as_slice(), [Effect::Request(Request::Send { text, .. })] if text == "/shrug"));
}

#[test]
fn id_shows_the_contacts_account_and_any_key_closes_it() {
    let mut app = unlocked(Some("bob"));
    type_text(&mut app, "/id");
    app.update(0, key(KeyCode::Enter));
    assert_eq!(app.overlay, Some(Overlay::AccountId { title: "bob".into(), account: BOB.into() }));
    app.update(0, key(KeyCode::Char('x')));
    assert_eq!(app.overlay, None);
    assert!(app.editor.is_empty(), "the key that closes the window is not typed");
}

#[test]
fn whoami_shows_the_contact_code() {
    let mut app = unlocked(Some("bob"));
    type_text(&mut app, "/whoami");
    app.update(0, key(KeyCode::Enter));
    assert_eq!(
        app.overlay,
        Some(Overlay::ContactCode { title: "You (alice)".into(), code: "hush-contact:abc".into() })
    );
}

#[test]
fn report_names_the_last_message_someone_else_wrote_here() {
    let mut app = unlocked(Some("bob"));
    let message = |id: &str, from: &str, event: bool| hush_client::ReceivedMessage {
        id: id.into(),
        conversation: "bob".into(),
        from: from.parse().unwrap(),
        text: "text".into(),
        sent_at_ms: 0,
        event,
        expires_at_ms: None,
        request: false,
    };
    let mut snapshot = app.snapshot.clone();
    snapshot.open = Some(crate::model::OpenConversation {
        name: "bob".into(),
        messages: vec![
            message("01", BOB, false),
            message("02", BOB, true),
            message("03", &"a".repeat(32), false),
        ],
    });
    app.update(0, Event::Report(Report::Snapshot(snapshot)));
    type_text(&mut app, "/report spam and threats");
    let effects = app.update(0, key(KeyCode::Enter));
    let expected = Job::Report { id: "01".into(), reason: "spam and threats".into() };
    assert!(
        matches!(effects.as_slice(), [Effect::Request(Request::Act(Action::Relay(job)))] if *job == expected),
        "{effects:?}"
    );
}

#[test]
fn names_resolve_to_you_contacts_or_a_short_id() {
    let app = unlocked(None);
    assert_eq!(app.name_of(&"a".repeat(32)), "you");
    assert_eq!(app.name_of(BOB), "bob");
    assert_eq!(app.name_of(&"c".repeat(32)), "cccccccc");
}

#[test]
fn a_wipe_report_quits() {
    let mut app = unlocked(Some("bob"));
    app.snapshot.open = Some(OpenConversation {
        name: "bob".into(),
        messages: vec![ReceivedMessage {
            id: "00".into(),
            conversation: "bob".into(),
            from: BOB.parse().unwrap(),
            text: "hi".into(),
            sent_at_ms: 0,
            event: false,
            expires_at_ms: None,
            request: false,
        }],
    });
    app.update(0, Event::Report(Report::Wiped));
    assert!(app.quit);
}

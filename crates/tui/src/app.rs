//! The client's state and everything it does with a key press or a report
//! from the worker: `App::update(now, event) -> effects`, no I/O, so every
//! behaviour is a unit test.

use hush_client::Job;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use zeroize::Zeroizing;

use crate::command::{self, Command};
use crate::editor::Editor;
use crate::model::{Action, Link, Me, Report, Request, Snapshot};

/// Something that happened.
#[derive(Debug)]
pub enum Event {
    /// A key was pressed.
    Key(KeyEvent),
    /// Text was pasted.
    Paste(String),
    /// Time passed (for the idle lock and expiring messages).
    Tick,
    /// The worker reported.
    Report(Report),
}

/// Something the runtime must do.
#[derive(Debug)]
pub enum Effect {
    /// Open the profile, or check the passphrase at the lock screen.
    Unlock(Zeroizing<String>),
    /// Pass a request to the worker.
    Request(Request),
    /// Leave the client.
    Quit,
}

/// Which part of the screen keys go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    /// The conversation list.
    List,
    /// The message pane (scrolling).
    Messages,
    /// The input line.
    Input,
}

/// A window over the screen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Overlay {
    /// Keys and commands.
    Help,
    /// An account id and its QR code, for checking it in person.
    AccountId {
        /// Whose.
        title: String,
        /// The id.
        account: String,
    },
    /// Our contact code and its QR code, for someone to add us with.
    ContactCode {
        /// Whose.
        title: String,
        /// The code.
        code: String,
    },
}

/// Where a message of ours is on its way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Waiting for the relay (or for the connection to come back).
    Sending,
    /// Not sent; why.
    Failed(String),
}

/// A message typed here that the relay has not accepted yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The screen's id.
    pub local_id: u64,
    /// Conversation.
    pub to: String,
    /// Text.
    pub text: String,
    /// When typed (Unix ms).
    pub at_ms: u64,
    /// Where it is.
    pub state: Delivery,
}

/// The lock screen.
#[derive(Debug)]
pub struct LockScreen {
    /// What is typed (never drawn).
    pub passphrase: Zeroizing<String>,
    /// Waiting for the check.
    pub checking: bool,
    /// The last check's outcome.
    pub error: Option<String>,
}

/// The most a typed passphrase may hold. Its buffer is allocated once at
/// this size, so typing never moves it and leaves no copy behind.
const PASSPHRASE_CAPACITY: usize = 1024;

impl Default for LockScreen {
    fn default() -> Self {
        Self::new()
    }
}

impl LockScreen {
    fn new() -> Self {
        Self { passphrase: empty_passphrase(), checking: false, error: None }
    }
}

fn empty_passphrase() -> Zeroizing<String> {
    Zeroizing::new(String::with_capacity(PASSPHRASE_CAPACITY))
}

/// Appends typed text to the passphrase, never beyond its buffer.
fn type_into(passphrase: &mut Zeroizing<String>, text: &str) {
    for c in text.chars() {
        if passphrase.len() + c.len_utf8() > PASSPHRASE_CAPACITY {
            break;
        }
        passphrase.push(c);
    }
}

/// The whole client state.
#[derive(Debug)]
pub struct App {
    /// `Some` while locked (also before the first unlock).
    pub lock: Option<LockScreen>,
    /// Set once unlocked.
    pub me: Option<Me>,
    /// Profile data from the last snapshot (cleared when locking).
    pub snapshot: Snapshot,
    /// The open conversation's name.
    pub open: Option<String>,
    /// Selected row of the conversation list.
    pub selected: usize,
    /// Messages on their way.
    pub outbox: Vec<Outgoing>,
    /// The input line.
    pub editor: Editor,
    /// Where keys go.
    pub focus: Focus,
    /// Lines scrolled up from the newest message.
    pub scroll: usize,
    /// The connection.
    pub link: Link,
    /// A one-line message for the status bar: (text, is an error).
    pub notice: Option<(String, bool)>,
    /// A window over the screen.
    pub overlay: Option<Overlay>,
    /// The time of the last event (Unix ms).
    pub now_ms: u64,
    last_activity_ms: u64,
    lock_after_ms: Option<u64>,
    next_local_id: u64,
    /// Set when the client should leave.
    pub quit: bool,
}

/// Lines that PageUp and PageDown scroll.
const PAGE: usize = 10;

fn ctrl(key: &KeyEvent, c: char) -> bool {
    key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char(c)
}

impl App {
    /// A locked client; `open` is the conversation to show first;
    /// `lock_after_ms` the idle time before the screen locks itself.
    pub fn new(now_ms: u64, open: Option<String>, lock_after_ms: Option<u64>) -> Self {
        let focus = if open.is_some() { Focus::Input } else { Focus::List };
        Self {
            lock: Some(LockScreen::new()),
            me: None,
            snapshot: Snapshot::default(),
            open,
            selected: 0,
            outbox: Vec::new(),
            editor: Editor::new(),
            focus,
            scroll: 0,
            link: Link::Connecting,
            notice: None,
            overlay: None,
            now_ms,
            last_activity_ms: now_ms,
            lock_after_ms,
            next_local_id: 1,
            quit: false,
        }
    }

    /// Handles one event at time `now_ms`; returns what the runtime must do.
    pub fn update(&mut self, now_ms: u64, event: Event) -> Vec<Effect> {
        self.now_ms = now_ms;
        match event {
            Event::Key(key) if key.kind != KeyEventKind::Release => {
                self.last_activity_ms = now_ms;
                self.key(key)
            }
            Event::Key(_) => Vec::new(),
            Event::Paste(text) => {
                self.last_activity_ms = now_ms;
                self.paste(&text);
                Vec::new()
            }
            Event::Tick => self.tick(),
            Event::Report(report) => self.report(report),
        }
    }

    fn tick(&mut self) -> Vec<Effect> {
        match self.lock_after_ms {
            Some(after)
                if self.lock.is_none() && self.now_ms.saturating_sub(self.last_activity_ms) >= after =>
            {
                self.lock_screen()
            }
            _ => Vec::new(),
        }
    }

    fn paste(&mut self, text: &str) {
        match &mut self.lock {
            Some(lock) => type_into(&mut lock.passphrase, text.trim_end_matches(['\r', '\n'])),
            None => {
                self.focus = Focus::Input;
                self.editor.insert(text);
            }
        }
    }

    fn report(&mut self, report: Report) -> Vec<Effect> {
        match report {
            Report::Unlocked(me) => {
                self.me = Some(me);
                self.lock = None;
                self.last_activity_ms = self.now_ms;
                return vec![Effect::Request(Request::Open(self.open.clone()))];
            }
            Report::WrongPassphrase => {
                if let Some(lock) = &mut self.lock {
                    lock.checking = false;
                    lock.error = Some("wrong passphrase".into());
                }
            }
            Report::Link(link) => self.link = link,
            Report::Snapshot(snapshot) => {
                if self.lock.is_none() {
                    self.snapshot = snapshot;
                    self.selected = self.selected.min(self.snapshot.conversations.len().saturating_sub(1));
                }
            }
            Report::Sent(local_id) => self.outbox.retain(|o| o.local_id != local_id),
            Report::SendFailed(local_id, error) => {
                if let Some(outgoing) = self.outbox.iter_mut().find(|o| o.local_id == local_id) {
                    outgoing.state = Delivery::Failed(error);
                }
            }
            Report::Done(text) => self.notice = Some((text, false)),
            Report::Failed(text) => self.notice = Some((text, true)),
            Report::Wiped | Report::Fatal(_) => self.quit = true,
        }
        Vec::new()
    }

    fn key(&mut self, key: KeyEvent) -> Vec<Effect> {
        if ctrl(&key, 'c') || ctrl(&key, 'q') {
            self.quit = true;
            return vec![Effect::Quit];
        }
        if self.lock.is_some() {
            return self.lock_key(key);
        }
        if self.overlay.take().is_some() {
            return Vec::new();
        }
        if ctrl(&key, 'l') {
            return self.lock_screen();
        }
        if key.code == KeyCode::F(1) {
            self.overlay = Some(Overlay::Help);
            return Vec::new();
        }
        if key.code == KeyCode::Tab || key.code == KeyCode::BackTab {
            self.focus = match self.focus {
                Focus::List => Focus::Input,
                Focus::Input | Focus::Messages => Focus::List,
            };
            return Vec::new();
        }
        match self.focus {
            Focus::List => self.list_key(key),
            Focus::Messages => self.messages_key(key),
            Focus::Input => self.input_key(key),
        }
    }

    fn lock_key(&mut self, key: KeyEvent) -> Vec<Effect> {
        let Some(lock) = &mut self.lock else { return Vec::new() };
        if lock.checking {
            return Vec::new();
        }
        match key.code {
            KeyCode::Enter if !lock.passphrase.is_empty() => {
                lock.checking = true;
                lock.error = None;
                let passphrase = std::mem::replace(&mut lock.passphrase, empty_passphrase());
                return vec![Effect::Unlock(passphrase)];
            }
            KeyCode::Backspace => {
                lock.passphrase.pop();
            }
            KeyCode::Esc => lock.passphrase.clear(),
            _ if ctrl(&key, 'u') => lock.passphrase.clear(),
            KeyCode::Char(c) if !key.modifiers.contains(KeyModifiers::CONTROL) => {
                type_into(&mut lock.passphrase, c.encode_utf8(&mut [0; 4]))
            }
            _ => {}
        }
        Vec::new()
    }

    /// Hides everything until the passphrase is entered again. Typed text
    /// and messages on their way stay; what was read is dropped.
    fn lock_screen(&mut self) -> Vec<Effect> {
        self.lock = Some(LockScreen::new());
        self.snapshot = Snapshot::default();
        self.overlay = None;
        self.notice = None;
        vec![Effect::Request(Request::Lock)]
    }

    fn list_key(&mut self, key: KeyEvent) -> Vec<Effect> {
        let count = self.snapshot.conversations.len();
        match key.code {
            KeyCode::Char('j') | KeyCode::Down if count > 0 => {
                self.selected = (self.selected + 1).min(count - 1)
            }
            KeyCode::Char('k') | KeyCode::Up => self.selected = self.selected.saturating_sub(1),
            KeyCode::Char('g') | KeyCode::Home => self.selected = 0,
            KeyCode::Char('G') | KeyCode::End => self.selected = count.saturating_sub(1),
            KeyCode::Enter | KeyCode::Char('l') | KeyCode::Right => {
                if let Some(conversation) = self.snapshot.conversations.get(self.selected) {
                    let name = conversation.name.clone();
                    self.focus = Focus::Input;
                    return self.open_conversation(name);
                }
            }
            _ => return self.browse_key(key),
        }
        Vec::new()
    }

    fn messages_key(&mut self, key: KeyEvent) -> Vec<Effect> {
        match key.code {
            KeyCode::Char('k') | KeyCode::Up => self.scroll += 1,
            KeyCode::Char('j') | KeyCode::Down => self.scroll = self.scroll.saturating_sub(1),
            KeyCode::PageUp => self.scroll += PAGE,
            KeyCode::PageDown => self.scroll = self.scroll.saturating_sub(PAGE),
            _ if ctrl(&key, 'u') => self.scroll += PAGE,
            _ if ctrl(&key, 'd') => self.scroll = self.scroll.saturating_sub(PAGE),
            KeyCode::Char('g') | KeyCode::Home => self.scroll = usize::MAX / 2,
            KeyCode::Char('G') | KeyCode::End => self.scroll = 0,
            KeyCode::Char('h') | KeyCode::Left | KeyCode::Esc => self.focus = Focus::List,
            KeyCode::Enter => self.focus = Focus::Input,
            _ => return self.browse_key(key),
        }
        Vec::new()
    }

    /// Keys shared by the list and the message pane.
    fn browse_key(&mut self, key: KeyEvent) -> Vec<Effect> {
        match key.code {
            KeyCode::Char('i') | KeyCode::Char('a') => self.focus = Focus::Input,
            KeyCode::Char('/') | KeyCode::Char(':') => self.command_mode(),
            KeyCode::Char('?') => self.overlay = Some(Overlay::Help),
            KeyCode::Char('q') => {
                self.quit = true;
                return vec![Effect::Quit];
            }
            _ => {}
        }
        Vec::new()
    }

    fn command_mode(&mut self) {
        self.focus = Focus::Input;
        if self.editor.is_empty() {
            self.editor.insert("/");
        }
    }

    fn input_key(&mut self, key: KeyEvent) -> Vec<Effect> {
        let alt = key.modifiers.contains(KeyModifiers::ALT);
        let shift = key.modifiers.contains(KeyModifiers::SHIFT);
        match key.code {
            KeyCode::Enter if alt || shift => self.editor.newline(),
            _ if ctrl(&key, 'j') => self.editor.newline(),
            KeyCode::Enter => return self.submit(),
            KeyCode::Esc => {
                self.focus = if self.open.is_some() { Focus::Messages } else { Focus::List };
            }
            KeyCode::Backspace => self.editor.backspace(),
            KeyCode::Delete => self.editor.delete(),
            KeyCode::Left => self.editor.left(),
            KeyCode::Right => self.editor.right(),
            KeyCode::Up => self.editor.up(),
            KeyCode::Down => self.editor.down(),
            KeyCode::Home => self.editor.home(),
            KeyCode::End => self.editor.end(),
            KeyCode::PageUp => self.scroll += PAGE,
            KeyCode::PageDown => self.scroll = self.scroll.saturating_sub(PAGE),
            _ if ctrl(&key, 'a') => self.editor.home(),
            _ if ctrl(&key, 'e') => self.editor.end(),
            _ if ctrl(&key, 'w') => self.editor.delete_word(),
            _ if ctrl(&key, 'u') => self.editor.clear(),
            KeyCode::Char(c) if !key.modifiers.contains(KeyModifiers::CONTROL) => {
                self.editor.insert(&c.to_string())
            }
            _ => {}
        }
        Vec::new()
    }

    fn submit(&mut self) -> Vec<Effect> {
        let text = self.editor.text();
        if text.trim().is_empty() {
            return Vec::new();
        }
        if text.starts_with('/') && !text.starts_with("//") {
            return match command::parse(&text) {
                Ok(command) => {
                    self.editor.take();
                    self.notice = None;
                    self.run(command)
                }
                Err(usage) => {
                    self.notice = Some((usage, true));
                    Vec::new()
                }
            };
        }
        let Some(to) = self.open.clone() else {
            self.notice = Some(("open a conversation first: pick one in the list, or /open TO".into(), true));
            return Vec::new();
        };
        let text = self.editor.take();
        let text = text.strip_prefix('/').filter(|_| text.starts_with("//")).unwrap_or(&text).to_owned();
        let local_id = self.next_local_id;
        self.next_local_id += 1;
        self.scroll = 0;
        self.outbox.push(Outgoing {
            local_id,
            to: to.clone(),
            text: text.clone(),
            at_ms: self.now_ms,
            state: Delivery::Sending,
        });
        vec![Effect::Request(Request::Send { local_id, to, text })]
    }

    fn open_conversation(&mut self, name: String) -> Vec<Effect> {
        self.open = Some(name.clone());
        self.scroll = 0;
        if let Some(index) = self.snapshot.conversations.iter().position(|c| c.name == name) {
            self.selected = index;
        }
        vec![Effect::Request(Request::Open(Some(name)))]
    }

    fn act(action: Action) -> Vec<Effect> {
        vec![Effect::Request(Request::Act(action))]
    }

    /// An action on the open conversation, or a notice that none is open.
    fn on_open(&mut self, action: impl FnOnce(String) -> Action) -> Vec<Effect> {
        match self.open.clone() {
            Some(to) => Self::act(action(to)),
            None => {
                self.notice = Some(("open a conversation first".into(), true));
                Vec::new()
            }
        }
    }

    fn open_group(&mut self) -> Option<String> {
        let open = self.open.clone()?;
        self.snapshot.conversations.iter().any(|c| c.name == open && c.group).then_some(open)
    }

    fn run(&mut self, command: Command) -> Vec<Effect> {
        match command {
            Command::Help => {
                self.overlay = Some(Overlay::Help);
                Vec::new()
            }
            Command::Open(to) => self.open_conversation(to),
            Command::New { account, name } => {
                let mut effects =
                    Self::act(Action::Relay(Job::Start { account: account.clone(), name: name.clone() }));
                effects.extend(self.open_conversation(name.unwrap_or(account)));
                effects
            }
            Command::Contact { name, account } => Self::act(Action::Contact { name, account }),
            Command::GroupCreate { name, members } => {
                let mut effects = Self::act(Action::Relay(Job::GroupCreate { name: name.clone(), members }));
                effects.extend(self.open_conversation(name));
                effects
            }
            Command::Add(members) | Command::Remove(members) if self.open_group().is_none() => {
                let _ = members;
                self.notice = Some(("open a group first".into(), true));
                Vec::new()
            }
            Command::Add(members) => {
                let name = self.open_group().unwrap_or_default();
                Self::act(Action::Relay(Job::GroupAdd { name, members }))
            }
            Command::Remove(members) => {
                let name = self.open_group().unwrap_or_default();
                Self::act(Action::Relay(Job::GroupRemove { name, members }))
            }
            Command::Timer(secs) => self.on_open(|to| Action::Relay(Job::Timer { to, secs })),
            Command::Members => self.on_open(|to| Action::Members { to }),
            Command::Accept => self.on_open(|to| Action::Accept { to }),
            Command::Decline => self.on_open(|to| Action::Decline { to }),
            Command::Whoami => {
                if let Some(me) = &self.me {
                    let title = format!("You ({})", me.name);
                    self.overlay = Some(match &self.snapshot.contact_code {
                        Some(code) => Overlay::ContactCode { title, code: code.clone() },
                        // Before the first connection made the contact queue.
                        None => Overlay::AccountId { title, account: me.account.clone() },
                    });
                }
                Vec::new()
            }
            Command::Report(reason) => self.report_last(reason),
            Command::Id(to) => {
                self.show_id(to);
                Vec::new()
            }
            Command::Lock => self.lock_screen(),
            Command::Quit => {
                self.quit = true;
                vec![Effect::Quit]
            }
        }
    }

    /// Reports the open conversation's last message from someone else.
    fn report_last(&mut self, reason: String) -> Vec<Effect> {
        let me = self.me.as_ref().map(|me| me.account.clone());
        let last = self.snapshot.open.as_ref().and_then(|open| {
            open.messages.iter().rev().find(|m| !m.event && Some(m.from.to_string()) != me).cloned()
        });
        match last {
            Some(message) => Self::act(Action::Relay(Job::Report { id: message.id, reason })),
            None => {
                self.notice = Some(("no message from someone else here to report".into(), true));
                Vec::new()
            }
        }
    }

    fn show_id(&mut self, to: Option<String>) {
        let Some(to) = to.or_else(|| self.open.clone()) else {
            self.notice = Some(("usage: /id CONTACT (or open a conversation)".into(), true));
            return;
        };
        let contact = self.snapshot.contacts.iter().find(|(name, _)| *name == to);
        let account = match contact {
            Some((_, account)) => account.clone(),
            None if to.parse::<hush_proto::AccountId>().is_ok() => to.clone(),
            None => {
                self.notice = Some((format!("'{to}' is not a contact or an account id"), true));
                return;
            }
        };
        self.overlay = Some(Overlay::AccountId { title: to, account });
    }

    /// A name for an account: "you", the contact name, or the id.
    pub fn name_of(&self, account: &str) -> String {
        if self.me.as_ref().is_some_and(|me| me.account == account) {
            return "you".into();
        }
        self.snapshot
            .contacts
            .iter()
            .find(|(_, id)| id == account)
            .map(|(name, _)| name.clone())
            .unwrap_or_else(|| account.chars().take(8).collect())
    }
}

#[cfg(test)]
mod tests;

//! `hush chat` in a real pseudo-terminal (tmux), against a real relay:
//! what one person types shows up on the other person's screen.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{wait_until, Relay, User, HUSH};

/// One terminal: a tmux session of its own (own server socket), 80x24.
struct Terminal {
    socket: PathBuf,
}

impl Terminal {
    /// Runs `hush chat ARGS` for `user`; `passphrase` goes in the
    /// environment (else it must be typed at the unlock screen). When the
    /// client exits, the shell prints its exit status and stays, so the
    /// screen after exit can be read.
    fn open(dir: &Path, user: &User, args: &str, passphrase: Option<&str>) -> Terminal {
        assert!(
            Command::new("tmux").arg("-V").output().is_ok_and(|o| o.status.success()),
            "tmux is missing: run scripts/setup.sh"
        );
        let name = user.home.file_name().unwrap().to_string_lossy().into_owned();
        let socket = dir.join(format!("tmux-{name}"));
        let env = passphrase.map(|p| format!("HUSH_PASSPHRASE={p}")).unwrap_or_default();
        let script = format!(
            "env -u HUSH_PASSPHRASE -u HUSH_HOME {env} {HUSH} --home {} chat {args}; echo \"chat exited $?\"; sleep 600",
            user.home.display()
        );
        let status = Command::new("tmux")
            .arg("-S")
            .arg(&socket)
            .args(["new-session", "-d", "-x", "80", "-y", "24", &script])
            .status()
            .unwrap();
        assert!(status.success());
        Terminal { socket }
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux").arg("-S").arg(&self.socket).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Types text literally, then presses Enter.
    fn line(&self, text: &str) {
        self.tmux(&["send-keys", "-l", text]);
        self.key("Enter");
    }

    fn key(&self, key: &str) {
        self.tmux(&["send-keys", key]);
    }

    /// The visible screen.
    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p"])
    }

    /// The screen and everything scrolled off it.
    fn scrollback(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-S", "-"])
    }

    fn wait_for(&self, text: &str) -> String {
        let mut last = String::new();
        let mut found = false;
        wait_until(&format!("'{text}' on screen"), || {
            last = self.screen();
            found = last.contains(text);
            found
        });
        last
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = Command::new("tmux").arg("-S").arg(&self.socket).arg("kill-server").output();
    }
}

#[test]
fn two_people_chat_live_then_a_group_with_a_third() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(&dir.path().join("relay"), "127.0.0.1:0");
    let alice = User::join(dir.path(), "alice", &relay);
    let bob = User::join(dir.path(), "bob", &relay);
    let carol = User::join(dir.path(), "carol", &relay);
    alice.ok(&["contact", "add", "carol", &carol.account]);
    bob.ok(&["contact", "add", "alice", &alice.account]);

    // Alice types her passphrase at the unlock screen; it is never shown.
    let alice_screen = Terminal::open(dir.path(), &alice, "", None);
    alice_screen.wait_for("Passphrase");
    alice_screen.line(&alice.passphrase);
    alice_screen.wait_for("online");
    let bob_screen = Terminal::open(dir.path(), &bob, "", Some(&bob.passphrase));
    bob_screen.wait_for("online");

    // Alice starts a conversation with Bob's account id, naming him.
    alice_screen.line(&format!("/new {} bob", bob.account));
    alice_screen.wait_for("conversation with bob started");
    alice_screen.line("hello bob, this is live");
    alice_screen.wait_for("you: hello bob, this is live [sent]");

    // It arrives on Bob's screen while his client is open: unread first.
    bob_screen.wait_for("alice (1)");
    bob_screen.key("Enter");
    bob_screen.wait_for("alice: hello bob, this is live");
    bob_screen.line("hi alice, got it");
    alice_screen.wait_for("bob: hi alice, got it");

    // A group with a third person, who opens straight into it.
    alice_screen.line("/group team bob carol");
    alice_screen.wait_for("* you added bob, carol");
    alice_screen.line("welcome, both");
    alice_screen.wait_for("you: welcome, both [sent]");
    let carol_screen = Terminal::open(dir.path(), &carol, "team", Some(&carol.passphrase));
    carol_screen.wait_for("welcome, both");
    carol_screen.line("hello team");
    alice_screen.wait_for("carol: hello team");
    bob_screen.wait_for("#team (2)");
    alice_screen.line("/members");
    let members = alice_screen.wait_for("members: ");
    assert!(["you", "bob", "carol"].iter().all(|name| members.contains(name)), "{members}");

    let screens = [alice_screen.scrollback(), bob_screen.scrollback(), carol_screen.scrollback()];
    for screen in &screens {
        assert!(!screen.contains(&alice.passphrase), "a passphrase was echoed:\n{screen}");
    }

    // Leaving restores the terminal: no message text stays in its scrollback.
    alice_screen.line("/quit");
    let after = alice_screen.wait_for("chat exited 0");
    let scrollback = alice_screen.scrollback();
    assert!(!scrollback.contains("hello team") && !scrollback.contains("welcome, both"), "{after}");
}

#[test]
fn typed_while_the_relay_is_down_is_sent_once_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut relay = Relay::start(&dir.path().join("relay"), "127.0.0.1:0");
    let alice = User::join(dir.path(), "alice", &relay);
    let bob = User::join(dir.path(), "bob", &relay);
    alice.ok(&["contact", "add", "bob", &bob.account]);
    alice.ok(&["send", "bob", "before"]);

    let screen = Terminal::open(dir.path(), &alice, "bob", Some(&alice.passphrase));
    screen.wait_for("you: before [sent]");
    relay.signal("-KILL");
    screen.wait_for("OFFLINE");
    screen.line("typed while offline");
    screen.wait_for("you: typed while offline [sending...]");
    relay.restart();
    screen.wait_for("you: typed while offline [sent]");
    assert!(screen.screen().contains("online"));

    let texts = bob.texts();
    assert_eq!(texts, vec!["before", "typed while offline"]);
}

#[test]
fn idle_lock_then_the_panic_passphrase_wipes_like_no_profile() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(&dir.path().join("relay"), "127.0.0.1:0");
    let alice = User::join(dir.path(), "alice", &relay);
    let panic = "burn-it-all";
    let out = Command::new(HUSH)
        .arg("--home")
        .arg(&alice.home)
        .args(["panic", "set"])
        .env("HUSH_PASSPHRASE", &alice.passphrase)
        .env("HUSH_PANIC_PASSPHRASE", panic)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let screen = Terminal::open(dir.path(), &alice, "--lock-after 2s", Some(&alice.passphrase));
    screen.wait_for("online");
    screen.wait_for("Hush is locked");
    screen.line("not my passphrase");
    screen.wait_for("wrong passphrase");
    screen.line(panic);
    let after = screen.wait_for("chat exited 1");
    assert!(after.contains("no profile in"), "{after}");
    assert!(!alice.home.join("key").exists(), "the profile survived the panic passphrase");
}

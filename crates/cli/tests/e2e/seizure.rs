//! A seized device, examined as a forensic lab would: the raw disk image
//! carved after a panic wipe, the process list while commands run, file
//! modes, and what received text can do to a terminal.

use std::collections::HashSet;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use super::{hush, hush_command, hush_with_stdin, Relay, User};

/// A 64 MiB ext4 file system in a file, loop-mounted (root only).
struct Ext4Image {
    image: PathBuf,
    mount: PathBuf,
    mounted: bool,
}

impl Ext4Image {
    /// None, with the reason, where it cannot be made (not root, no loop
    /// devices, no mkfs.ext4).
    fn make(dir: &Path) -> Result<Self, String> {
        let image = dir.join("disk.img");
        let mount = dir.join("mnt");
        std::fs::create_dir_all(&mount).map_err(|e| e.to_string())?;
        let file = std::fs::File::create(&image).map_err(|e| e.to_string())?;
        file.set_len(64 << 20).map_err(|e| e.to_string())?;
        let ok = |command: &mut Command| {
            command.output().map_err(|e| e.to_string()).and_then(|out| {
                if out.status.success() {
                    Ok(())
                } else {
                    Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
                }
            })
        };
        ok(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image))
            .map_err(|e| format!("mkfs.ext4: {e}"))?;
        ok(Command::new("mount").args(["-o", "loop"]).arg(&image).arg(&mount))
            .map_err(|e| format!("mount -o loop: {e}"))?;
        Ok(Self { image, mount, mounted: true })
    }

    /// Flushes everything to the image file, so reading it shows the disk.
    fn sync(&self) {
        assert!(Command::new("sync").arg("-f").arg(&self.mount).status().unwrap().success());
        assert!(Command::new("sync").status().unwrap().success());
    }

    fn raw(&self) -> Vec<u8> {
        self.sync();
        std::fs::read(&self.image).unwrap()
    }

    fn unmount(&mut self) {
        if self.mounted {
            let status = Command::new("umount").arg(&self.mount).status().unwrap();
            assert!(status.success(), "umount failed");
            self.mounted = false;
        }
    }
}

impl Drop for Ext4Image {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
        }
    }
}

/// The disk blocks a file occupies, as `filefrag -v` reports them.
fn physical_extents(path: &Path) -> String {
    let out = Command::new("filefrag").arg("-v").arg(path).output().unwrap();
    assert!(out.status.success(), "filefrag: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    // Lines "  0:  0..  7:  34816..  34823:  8: last,eof": keep the physical range.
    let ranges: Vec<String> = text
        .lines()
        .filter(|line| line.trim_start().chars().next().is_some_and(|c| c.is_ascii_digit()))
        .filter_map(|line| line.split(':').nth(2).map(|range| range.trim().to_owned()))
        .collect();
    assert!(!ranges.is_empty(), "filefrag printed no extents: {text}");
    ranges.join(" ")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(haystack, needle).is_some()
}

/// Every 64-byte piece of a file version at a 64-byte offset: file data
/// starts block-aligned on ext4, so a surviving piece of an old version
/// sits at a 64-byte-aligned offset of the image too.
const PIECE: usize = 64;

fn pieces(version: &[u8]) -> impl Iterator<Item = [u8; PIECE]> + '_ {
    version.chunks_exact(PIECE).map(|chunk| chunk.try_into().unwrap())
}

fn surviving_pieces(image: &[u8], versions: &HashSet<[u8; PIECE]>) -> usize {
    image.chunks_exact(PIECE).filter(|chunk| versions.contains(*chunk)).count()
}

#[test]
fn a_carved_disk_image_holds_no_key_file_version_and_no_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let mut disk = match Ext4Image::make(dir.path()) {
        Ok(disk) => disk,
        Err(reason) => {
            eprintln!("SKIPPED: cannot loop-mount an ext4 image here ({reason}); run as root to examine the raw disk");
            return;
        }
    };
    let relay = Relay::start(&dir.path().join("relay"), "127.0.0.1:0");
    let home = disk.mount.join("alice");
    let alice =
        User::join_with_panic(&home, &relay, "alice-passphrase", "duress words", &["--max-attempts", "5"]);
    let bob = User::join(dir.path(), "bob", &relay);

    let secrets: [&[u8]; 7] = [
        b"bobthebuilder",
        b"meet at the old mill",
        b"the ledger is in locker 17",
        b"gone in two seconds",
        b"alice-passphrase",
        b"alice-new-passphrase",
        b"duress words",
    ];
    let mut versions = Vec::new();
    let mut extents = Vec::new();
    let step = |what: &str, versions: &mut Vec<Vec<u8>>, extents: &mut Vec<String>| {
        versions.push(std::fs::read(home.join("key")).unwrap());
        disk.sync();
        extents.push(physical_extents(&home.join("key")));
        let raw = disk.raw();
        for secret in secrets {
            assert!(
                !contains(&raw, secret),
                "after {what}, the raw disk holds {:?}",
                String::from_utf8_lossy(secret)
            );
        }
    };
    step("join", &mut versions, &mut extents);
    alice.ok(&["contact", "add", "bobthebuilder", &bob.account]);
    step("contact add", &mut versions, &mut extents);
    bob.ok(&["send", &alice.account, "meet at the old mill"]);
    assert_eq!(alice.texts(), ["meet at the old mill"]);
    step("recv", &mut versions, &mut extents);
    let out = hush_with_stdin(
        &["send", "bobthebuilder"],
        Some(&home),
        Some("alice-passphrase"),
        b"the ledger is in locker 17\n",
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    step("send", &mut versions, &mut extents);
    for _ in 0..2 {
        let out = hush(&["whoami"], Some(&home), Some("not the passphrase"));
        assert!(String::from_utf8_lossy(&out.stderr).contains("wrong passphrase"));
        step("a wrong passphrase", &mut versions, &mut extents);
    }
    alice.ok(&["whoami"]);
    step("an unlock", &mut versions, &mut extents);
    bob.ok(&["send", &alice.account, "--expire", "2s", "gone in two seconds"]);
    assert_eq!(alice.texts(), ["gone in two seconds"]);
    super::wait_until("the message to expire", || {
        !alice.ok(&["history", "bobthebuilder"]).contains("gone in two seconds")
    });
    step("a purge", &mut versions, &mut extents);
    // A new passphrase, which also replaces the database key (the export
    // and the rename happen on this disk too).
    let out = hush_command(&["passphrase", "change"], Some(&home), Some("alice-passphrase"))
        .env("HUSH_NEW_PASSPHRASE", "alice-new-passphrase")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("database key replaced"));
    let alice = User { passphrase: "alice-new-passphrase".into(), ..alice };
    alice.ok(&["whoami"]);
    step("a passphrase change and re-key", &mut versions, &mut extents);
    // Every version was written to the same disk blocks.
    assert!(extents.iter().all(|e| *e == extents[0]), "the key file moved on the disk: {extents:?}");

    // The panic passphrase.
    let out = hush(&["whoami"], Some(&home), Some("duress words"));
    assert!(!out.status.success());
    assert!(!home.exists());
    let raw = disk.raw();
    disk.unmount();
    let raw_after_unmount = std::fs::read(&disk.image).unwrap();
    for raw in [&raw, &raw_after_unmount] {
        for secret in secrets {
            assert!(
                !contains(raw, secret),
                "after the wipe the raw disk holds {:?}",
                String::from_utf8_lossy(secret)
            );
        }
        let known: HashSet<[u8; PIECE]> = versions.iter().flat_map(|v| pieces(v)).collect();
        let found = surviving_pieces(raw, &known);
        assert_eq!(
            found,
            0,
            "{found} pieces of {} earlier key files survive on the raw disk",
            versions.len()
        );
    }
}

#[test]
fn messages_invites_and_wipe_codes_can_stay_off_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(&dir.path().join("relay"), "127.0.0.1:0");
    // The invite on standard input.
    let home = dir.path().join("alice");
    let invite = relay.invite();
    let out = hush_with_stdin(
        &["join", "--json"],
        Some(&home),
        Some("alice-pass"),
        format!("{invite}\n").as_bytes(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let joined: Value = serde_json::from_slice(&out.stdout).unwrap();
    let alice = User {
        home: home.clone(),
        passphrase: "alice-pass".into(),
        account: joined["account"].as_str().unwrap().into(),
    };
    let bob = User::join(dir.path(), "bob", &relay);

    // While `hush send` waits for its message, the process list shows no text.
    let mut child = hush_command(&["send", &bob.account], Some(&home), Some("alice-pass"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let cmdline_path = format!("/proc/{}/cmdline", child.id());
    let cmdline = || std::fs::read(&cmdline_path).unwrap();
    super::wait_until("the process to show its command line", || contains(&cmdline(), b"send"));
    assert!(!contains(&cmdline(), b"first line"), "{:?}", String::from_utf8_lossy(&cmdline()));
    child.stdin.take().unwrap().write_all(b"first line\nsecond line\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = hush_with_stdin(&["send", &bob.account], Some(&home), Some("alice-pass"), b"one line\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(bob.texts(), ["first line\nsecond line", "one line"]);
    // An empty message is refused, not sent.
    let out = hush_with_stdin(&["send", &bob.account], Some(&home), Some("alice-pass"), b"\n");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty"));

    // Contact names and group members on standard input.
    let line = format!("bobby tables {}\n", bob.account);
    let out = hush_with_stdin(&["contact", "add"], Some(&home), Some("alice-pass"), line.as_bytes());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(alice.ok(&["contact", "list"]).trim(), format!("bobby tables {}", bob.account));
    let out =
        hush_with_stdin(&["group", "create", "crew"], Some(&home), Some("alice-pass"), b"bobby tables\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(alice.ok(&["group", "list"]).trim(), "crew");

    // The wipe code on standard input.
    let code = joined["wipe_code"].as_str().unwrap();
    let out = hush_with_stdin(&["remote-wipe"], None, None, format!("{code}\n").as_bytes());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!alice.run(&["recv"]).status.success());
    assert!(!home.exists());
}

#[test]
fn client_processes_cannot_dump_core() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(&dir.path().join("relay"), "127.0.0.1:0");
    let alice = User::join(dir.path(), "alice", &relay);
    let mut child = hush_command(&["send", &alice.account], Some(&alice.home), Some(&alice.passphrase))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    // The limit is set before anything else; wait for it without sleeping blindly.
    super::wait_until("the core limit to drop", || {
        std::fs::read_to_string(format!("/proc/{pid}/limits"))
            .map(|limits| {
                limits.lines().any(|l| {
                    l.starts_with("Max core file size")
                        && l.split_whitespace().nth(4) == Some("0")
                        && l.split_whitespace().nth(5) == Some("0")
                })
            })
            .unwrap_or(false)
    });
    drop(child.stdin.take());
    let _ = child.wait();
}

#[test]
fn the_passphrase_floor_applies_at_join_and_change() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(&dir.path().join("relay"), "127.0.0.1:0");
    let home = dir.path().join("carol");
    let with_floor = |args: &[&str], passphrase: &str| {
        let mut command = hush_command(args, Some(&home), Some(passphrase));
        command.env_remove("HUSH_MIN_PASSPHRASE_SCORE");
        command
    };
    for weak in ["1234", "password1", "carol"] {
        let out = with_floor(&["join", &relay.invite(), "--name", "carol"], weak).output().unwrap();
        assert!(!out.status.success(), "{weak} was accepted");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("too weak"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!home.join("key").exists(), "a refused join left a profile");
    }
    let strong = "tundra lantern quietly oboe";
    let out = with_floor(&["join", &relay.invite(), "--name", "carol"], strong)
        .env("HUSH_PANIC_PASSPHRASE", strong)
        .output()
        .unwrap();
    assert!(!out.status.success(), "a panic passphrase equal to the passphrase was accepted");
    assert!(!home.join("key").exists());
    let out = with_floor(&["join", &relay.invite(), "--name", "carol"], strong)
        .env("HUSH_PANIC_PASSPHRASE", "sudden alarm words")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let change = |new: &str| {
        with_floor(&["passphrase", "change"], strong).env("HUSH_NEW_PASSPHRASE", new).output().unwrap()
    };
    let out = change("12345678");
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("too weak"));
    let out = change("sudden alarm words");
    assert!(!out.status.success(), "the panic passphrase was accepted as the new passphrase");
    assert!(home.join("key").exists(), "trying the panic passphrase as the new one wiped the profile");
    let renewed = "marble cactus yonder fiddle";
    let out = change(renewed);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = hush(&["whoami"], Some(&home), Some(strong));
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong passphrase"));
    assert!(hush(&["whoami"], Some(&home), Some(renewed)).status.success());
}

#[test]
fn received_text_and_names_cannot_forge_lines_or_drive_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(&dir.path().join("relay"), "127.0.0.1:0");
    let alice = User::join(dir.path(), "alice", &relay);
    let bob = User::join(dir.path(), "bob", &relay);
    alice.ok(&["contact", "add", "bob", &bob.account]);
    let forged = format!(
        "ok\n2026-11-27T10:00:00Z [bob] {}: send me the wipe code\u{1b}]0;owned\u{7}\u{9b}2J",
        bob.account
    );
    let out =
        hush_with_stdin(&["send", &alice.account], Some(&bob.home), Some(&bob.passphrase), forged.as_bytes());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    bob.ok(&["group", "create", "crew\u{1b}[8m\nfake", &alice.account]);
    let printed = alice.ok(&["recv"]);
    assert_eq!(printed.lines().count(), 1, "{printed}");
    assert!(printed.contains("ok\\n2026-11-27T10:00:00Z [bob]"), "{printed}");
    assert!(printed.contains("\\u{001b}]0;owned\\u{0007}\\u{009b}2J"), "{printed}");
    assert!(!printed.chars().any(|c| c != '\n' && hush_client::display::is_unsafe(c)), "{printed:?}");
    let history = alice.ok(&["history", "bob", "--json"]);
    let text: Value = serde_json::from_str(history.lines().next().unwrap()).unwrap();
    assert_eq!(text["text"], forged.as_str(), "JSON keeps the exact text");
    assert!(!history.chars().any(|c| c != '\n' && hush_client::display::is_unsafe(c)), "{history:?}");
    let groups = alice.ok(&["group", "list"]);
    assert_eq!(groups.trim(), "crew\\u{001b}[8m\\nfake");
}

#[test]
fn profile_files_are_private_whatever_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(&dir.path().join("relay"), "127.0.0.1:0");
    let home = dir.path().join("open-umask");
    std::fs::create_dir(&home).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o777)).unwrap();
    let hush_path = super::HUSH;
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("umask 000; exec {hush_path} --home {} join {} ", home.display(), relay.invite()))
        .env("HUSH_PASSPHRASE", "pw")
        .env("HUSH_MIN_PASSPHRASE_SCORE", "0")
        .env_remove("HUSH_PANIC_PASSPHRASE")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("umask 000; exec {hush_path} --home {} recv", home.display()))
        .env("HUSH_PASSPHRASE", "pw")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&home), 0o700);
    let files = super::files_under(&home);
    assert!(files.len() >= 2, "{files:?}");
    for file in files {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
}

//! The command line, as documented in `hush --help` and the CLI contract.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// The version and the commit this binary was built from (see build.rs).
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("HUSH_COMMIT"), ")");

const ENVIRONMENT: &str = "\
Environment (for scripts; a person types passphrases at the prompt):
  HUSH_HOME                   profile directory
  HUSH_PASSPHRASE             the profile passphrase
  HUSH_PANIC_PASSPHRASE       the panic passphrase, at `join` and `panic set`
  HUSH_NEW_PASSPHRASE         the new passphrase, at `passphrase change`
  HUSH_MIN_PASSPHRASE_SCORE   the passphrase strength floor, 0-4 (default 3; 0: off)
A variable set on the command line (`HUSH_PASSPHRASE=... hush recv`) is kept
in the shell's history: set it from a prompt (`read -rs HUSH_PASSPHRASE;
export HUSH_PASSPHRASE`) or a file only you can read.";

/// Hush: end-to-end encrypted messaging through a relay that learns nothing.
#[derive(Debug, Parser)]
#[command(name = "hush", version = VERSION, about, long_about = None, after_help = ENVIRONMENT)]
pub struct Cli {
    /// Profile directory (default: $HUSH_HOME, else the platform data directory).
    #[arg(long, global = true, value_name = "DIR")]
    pub home: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the relay.
    Serve {
        /// Data directory (created on first start).
        #[arg(long, default_value = "./hush-data", value_name = "DIR")]
        data: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7443", value_name = "ADDR")]
        listen: String,
        /// Keep the relay's state in this PostgreSQL database
        /// (postgresql://USER:PASSWORD@HOST/DB) instead of the embedded
        /// store, so several relays can share it. Remembered in the data
        /// directory (store.url, mode 0600) for later starts and for `hush
        /// admin`.
        #[arg(long, env = "HUSH_STORE", value_name = "URL", hide_env_values = true)]
        store: Option<String>,
        /// Serve Prometheus metrics (totals only, nothing per user) on this
        /// address, e.g. 127.0.0.1:9464.
        #[arg(long, value_name = "ADDR")]
        metrics: Option<String>,
        /// Log lines as text or as JSON objects (one per line).
        #[arg(long, value_enum, default_value_t = LogFormat::Text, value_name = "FORMAT")]
        log_format: LogFormat,
    },
    /// Operator commands on a relay's data directory (work while it runs).
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Create a profile from an invite and register with the relay.
    Join {
        /// The invite string from the relay's operator. Leave it out to be
        /// asked for it (or to pipe it in): a command line is kept in your
        /// shell's history and shown to other users in the process list.
        invite: Option<String>,
        /// Your display name (stays on this device).
        #[arg(long)]
        name: Option<String>,
        /// Wrong passphrases in a row that wipe the profile (0: never).
        #[arg(long, default_value_t = 10, value_name = "N")]
        max_attempts: u32,
        /// Self-update (refresh your keys) in a conversation after this many sent messages.
        #[arg(long, default_value_t = 100, value_name = "N")]
        update_every_messages: u64,
        /// ...or after this long, whichever comes first.
        #[arg(long, default_value = "24h", value_name = "DURATION")]
        update_every: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show this profile's account id.
    Whoami {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Manage contacts (names stay on this device).
    Contact {
        #[command(subcommand)]
        command: ContactCommand,
    },
    /// Send a message to a contact, an account id or a group.
    Send {
        /// Contact name, account id or group name.
        to: String,
        /// The message. Leave it out to read it from standard input (one
        /// line or many), which keeps it out of your shell's history and
        /// the process list: `echo text | hush send bob`.
        text: Vec<String>,
        /// Make this message disappear this long after it is sent (on your
        /// device) or received (on theirs), and from the relay if undelivered.
        #[arg(long, value_name = "DURATION")]
        expire: Option<String>,
    },
    /// Report a message you received to the relay's operator, with its
    /// sender's signature as proof of who wrote it. The relay does not
    /// learn who reports.
    Report {
        /// The message's id: the "id" field of `hush recv --json` or
        /// `hush history TO --json`.
        id: String,
        /// Why, in your words, for the operator.
        reason: Vec<String>,
    },
    /// Set a conversation's disappearing-message timer for every member.
    Timer {
        /// Contact name, account id or group name.
        to: String,
        /// A duration (30s, 5m, 2h, 7d) or `off`.
        duration: String,
    },
    /// The panic passphrase: entered anywhere, it silently wipes this device.
    Panic {
        #[command(subcommand)]
        command: PanicCommand,
    },
    /// Order the device holding an account to wipe itself (from any machine).
    RemoteWipe {
        /// The wipe code printed by `hush join`. Leave it out to be asked
        /// for it (or to pipe it in).
        wipe_code: Option<String>,
    },
    /// The profile passphrase.
    Passphrase {
        #[command(subcommand)]
        command: PassphraseCommand,
    },
    /// Receive queued messages.
    Recv {
        /// Keep listening until this many seconds pass with nothing new.
        #[arg(long, default_value_t = 0, value_name = "SECS")]
        wait: u64,
        /// Print JSON, one object per message.
        #[arg(long)]
        json: bool,
    },
    /// Show the stored messages of a conversation.
    History {
        /// Contact name, account id or group name.
        to: String,
        /// Print JSON, one object per message.
        #[arg(long)]
        json: bool,
    },
    /// Manage groups.
    Group {
        #[command(subcommand)]
        command: GroupCommand,
    },
    /// Conversations that people who are not your contacts added you to.
    /// Their messages are shown, but nothing is sent into them (not even a
    /// key update) until you accept, or write into them.
    Requests {
        #[command(subcommand)]
        command: Option<RequestCommand>,
        /// Print JSON, one object per request.
        #[arg(long)]
        json: bool,
    },
    /// The interactive terminal client (keys and commands: F1 or /help inside).
    Chat {
        /// Open straight into this conversation (contact, group or account id).
        to: Option<String>,
        /// Lock the screen after this long without a key press ("off": never).
        #[arg(long, default_value = "5m", value_name = "DURATION")]
        lock_after: String,
    },
    /// Check downloaded release files against the signed release manifest.
    Release {
        #[command(subcommand)]
        command: ReleaseCommand,
    },
    /// Print a shell completion script (e.g. `hush completions bash >
    /// /etc/bash_completion.d/hush`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page hush(1) in roff, or write it and one page per
    /// subcommand (hush-serve(1), hush-admin-invite(1), ...) into a
    /// directory.
    Man {
        /// Write every page into this directory (e.g.
        /// /usr/local/share/man/man1) instead of printing hush(1).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ReleaseCommand {
    /// Verify MANIFEST's minisign signature against the Hush release key
    /// pinned in this binary, then each FILE's SHA-256 against MANIFEST
    /// (no FILE: every file it lists, next to it). Exits 0 only if all
    /// verify; otherwise says what does not.
    Verify {
        /// The release manifest (MANIFEST).
        manifest: PathBuf,
        /// Its signature (MANIFEST.minisig).
        signature: PathBuf,
        /// Files to check (matched by file name).
        files: Vec<PathBuf>,
        /// Check against this minisign public key file instead of the
        /// pinned release key (a fork's releases, a test key).
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Pre-enrol accounts without invites, from lines of
    /// `IDENTITY_KEY_HEX WIPE_HASH_HEX` (a prepared device's public key and
    /// the SHA-256 of its wipe secret). Prints how many were new.
    Provision {
        /// File of accounts, one per line ("-": standard input).
        file: PathBuf,
        /// Relay data directory.
        #[arg(long, default_value = "./hush-data", value_name = "DIR")]
        data: PathBuf,
    },
    /// Print invite strings, one per line.
    Invite {
        /// Relay data directory.
        #[arg(long, default_value = "./hush-data", value_name = "DIR")]
        data: PathBuf,
        /// How many invites.
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// Registrations each invite allows.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// How long the invites stay valid.
        #[arg(long, default_value = "7d", value_name = "DURATION")]
        expires: String,
        /// Address clients should dial (default: the address the relay
        /// listens on); the relays of a cluster as HOST:PORT,HOST:PORT:
        /// clients fail over among them.
        #[arg(long, value_name = "HOST:PORT[,HOST:PORT...]")]
        address: Option<String>,
    },
    /// Lock an account out and delete its queued messages and key packages.
    Deactivate {
        /// The account id.
        account: String,
        /// Relay data directory.
        #[arg(long, default_value = "./hush-data", value_name = "DIR")]
        data: PathBuf,
    },
    /// Messages users reported, with the account that wrote each (its
    /// signature checked); `hush admin deactivate` locks an account out.
    Reports {
        /// Relay data directory.
        #[arg(long, default_value = "./hush-data", value_name = "DIR")]
        data: PathBuf,
        /// Print JSON, one object per report.
        #[arg(long)]
        json: bool,
        /// Delete this report (its number), once dealt with.
        #[arg(long, value_name = "N")]
        dismiss: Option<u64>,
    },
    /// Counts: accounts, active accounts, queued messages, queued bytes.
    Stats {
        /// Relay data directory.
        #[arg(long, default_value = "./hush-data", value_name = "DIR")]
        data: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum PanicCommand {
    /// Set or change the panic passphrase (asked on the terminal, or from
    /// HUSH_PANIC_PASSPHRASE).
    Set,
}

#[derive(Debug, Subcommand)]
pub enum PassphraseCommand {
    /// Change the passphrase (asked on the terminal, or from
    /// HUSH_NEW_PASSPHRASE); the strength floor applies.
    Change,
}

#[derive(Debug, Subcommand)]
pub enum ContactCommand {
    /// Add (or rename) a contact. Leave out both to give `NAME ACCOUNT`
    /// on standard input (or at a prompt), out of your shell's history.
    Add {
        /// The name you will use.
        name: Option<String>,
        /// Their account id (as printed by `hush whoami`).
        account: Option<String>,
    },
    /// List contacts.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum RequestCommand {
    /// Accept a request: it becomes an ordinary conversation.
    Accept {
        /// The request's id or conversation name as `hush requests` shows
        /// them, or the account id of who added you.
        name: String,
    },
    /// Decline a request: its keys and messages are deleted from this
    /// device, and nothing more from it is shown. The others are not told.
    Decline {
        /// The request's id or conversation name as `hush requests` shows
        /// them, or the account id of who added you.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Create a group with the given members.
    Create {
        /// Group name.
        name: String,
        /// Contact names or account ids (left out: read from standard
        /// input, one per line).
        members: Vec<String>,
    },
    /// Add members to a group.
    Add {
        /// Group name.
        name: String,
        /// Contact names or account ids (left out: read from standard
        /// input, one per line).
        members: Vec<String>,
    },
    /// Remove members from a group.
    Remove {
        /// Group name.
        name: String,
        /// Contact names or account ids (left out: read from standard
        /// input, one per line).
        members: Vec<String>,
    },
    /// List groups.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List a group's members (from the group's own encrypted state).
    Members {
        /// Group name.
        name: String,
        /// Print JSON, one object per member.
        #[arg(long)]
        json: bool,
    },
}

/// How the relay writes its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for journald, Loki, Elasticsearch...).
    Json,
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod reference {
    use std::fmt::Write as _;

    use clap::CommandFactory;

    use super::Cli;

    const HEADER: &str = "\
# Command-line reference

Every `hush` command, exactly as its `--help` prints it: this file is made
from the same definition (`crates/cli/src/cli.rs`), and a test fails when
the two differ (`HUSH_BLESS=1 cargo test -p hush-cli --bin hush reference`
writes it anew). The same definition gives the manual pages (`hush man`,
`hush man --dir DIR`) and shell completions (`hush completions SHELL`).
What scripts may rely on (output formats, exit codes) is in the README.

";

    fn walk(command: &clap::Command, path: &str, out: &mut String) {
        let help = command.clone().render_long_help().to_string();
        let _ = write!(out, "## `{path}`\n\n```text\n{}\n```\n\n", help.trim_end());
        for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set() && sub.get_name() != "help") {
            walk(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    /// docs/cli.md, made from the command-line definition.
    fn reference() -> String {
        let mut command = Cli::command();
        command.build();
        let mut out = HEADER.to_owned();
        walk(&command, "hush", &mut out);
        out.trim_end().to_owned() + "\n"
    }

    #[test]
    fn docs_cli_md_is_the_reference_made_from_the_definition() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/cli.md");
        let made = reference();
        if std::env::var_os("HUSH_BLESS").is_some() {
            std::fs::write(path, &made).unwrap();
        }
        let stored = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            stored == made,
            "docs/cli.md differs from the command-line definition: \
             HUSH_BLESS=1 cargo test -p hush-cli --bin hush reference"
        );
    }
}

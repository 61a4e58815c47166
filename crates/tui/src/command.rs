//! The `/commands` typed in the input line.

use std::time::Duration;

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Show the keys and commands.
    Help,
    /// Open a conversation by contact, group or account id.
    Open(String),
    /// Start a conversation with an account id, naming the contact.
    New {
        /// The account id.
        account: String,
        /// A contact name to save it under.
        name: Option<String>,
    },
    /// Save a contact.
    Contact {
        /// The name.
        name: String,
        /// The account id.
        account: String,
    },
    /// Create a group.
    GroupCreate {
        /// The group's name.
        name: String,
        /// Contact names or account ids.
        members: Vec<String>,
    },
    /// Add members to the open group.
    Add(Vec<String>),
    /// Remove members from the open group.
    Remove(Vec<String>),
    /// Set the open conversation's disappearing timer (`None`: off).
    Timer(Option<u32>),
    /// Show one's own account id and its QR code.
    Whoami,
    /// Show a contact's account id and its QR code (default: the open
    /// conversation's).
    Id(Option<String>),
    /// List the open conversation's members.
    Members,
    /// Accept the open conversation request.
    Accept,
    /// Decline the open conversation request.
    Decline,
    /// Report the open conversation's last message from someone else to
    /// the relay's operator, with a reason.
    Report(String),
    /// Lock the screen.
    Lock,
    /// Leave the client.
    Quit,
}

/// The `/help` text: every command, one per line.
pub const COMMANDS: &[(&str, &str)] = &[
    ("/open TO", "open a conversation (contact, group or account id)"),
    ("/new ACCOUNT [NAME]", "start a conversation with an account id"),
    ("/contact NAME ACCOUNT", "save a contact"),
    ("/group NAME MEMBER...", "create a group"),
    ("/add MEMBER...", "add members to the open group"),
    ("/remove MEMBER...", "remove members from the open group"),
    ("/timer DURATION|off", "disappearing messages here (30s, 5m, 1d)"),
    ("/whoami", "your contact code and its QR code"),
    ("/id [TO]", "a contact's account id and QR code"),
    ("/members", "the open conversation's members"),
    ("/accept, /decline", "the open conversation request (marked ?)"),
    ("/report [REASON]", "report the last message someone else wrote here"),
    ("/lock", "lock the screen"),
    ("/quit", "leave"),
];

/// Parses a line starting with `/`. The error says how to use it.
pub fn parse(line: &str) -> Result<Command, String> {
    let mut words = line.split_whitespace();
    let name = words.next().unwrap_or("/").trim_start_matches('/');
    let args: Vec<String> = words.map(str::to_owned).collect();
    let usage = |form: &str| Err(format!("usage: {form}"));
    match (name, args.as_slice()) {
        ("help" | "h" | "?", _) => Ok(Command::Help),
        ("open" | "o", [to]) => Ok(Command::Open(to.clone())),
        ("open" | "o", _) => usage("/open TO"),
        ("new" | "n", [account]) => Ok(Command::New { account: account.clone(), name: None }),
        ("new" | "n", [account, name]) => {
            Ok(Command::New { account: account.clone(), name: Some(name.clone()) })
        }
        ("new" | "n", _) => usage("/new ACCOUNT [NAME]"),
        ("contact", [name, account]) => Ok(Command::Contact { name: name.clone(), account: account.clone() }),
        ("contact", _) => usage("/contact NAME ACCOUNT"),
        ("group", [name, members @ ..]) if !members.is_empty() => {
            Ok(Command::GroupCreate { name: name.clone(), members: members.to_vec() })
        }
        ("group", _) => usage("/group NAME MEMBER..."),
        ("add", members) if !members.is_empty() => Ok(Command::Add(members.to_vec())),
        ("add", _) => usage("/add MEMBER..."),
        ("remove", members) if !members.is_empty() => Ok(Command::Remove(members.to_vec())),
        ("remove", _) => usage("/remove MEMBER..."),
        ("timer", [off]) if off == "off" || off == "0" => Ok(Command::Timer(None)),
        ("timer", [duration]) => parse_timer(duration).map(|secs| Command::Timer(Some(secs))),
        ("timer", _) => usage("/timer DURATION|off"),
        ("whoami" | "me", []) => Ok(Command::Whoami),
        ("id", []) => Ok(Command::Id(None)),
        ("id", [to]) => Ok(Command::Id(Some(to.clone()))),
        ("members", []) => Ok(Command::Members),
        ("accept", []) => Ok(Command::Accept),
        ("decline", []) => Ok(Command::Decline),
        ("report", reason) => Ok(Command::Report(reason.join(" "))),
        ("lock", []) => Ok(Command::Lock),
        ("quit" | "q", []) => Ok(Command::Quit),
        _ => Err(format!("unknown command /{name}: /help lists them")),
    }
}

fn parse_timer(text: &str) -> Result<u32, String> {
    let duration: Duration = humantime::parse_duration(text)
        .map_err(|_| format!("'{text}' is not a duration (like 30s, 5m, 2h, 7d)"))?;
    match u32::try_from(duration.as_secs()) {
        Ok(0) => Err("use at least one second, or /timer off".into()),
        Ok(secs) => Ok(secs),
        Err(_) => Err(format!("'{text}' is too long")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_command() {
        assert_eq!(parse("/help"), Ok(Command::Help));
        assert_eq!(parse("/open bob"), Ok(Command::Open("bob".into())));
        assert_eq!(
            parse("/new abc bob"),
            Ok(Command::New { account: "abc".into(), name: Some("bob".into()) })
        );
        assert_eq!(
            parse("/group team bob carol"),
            Ok(Command::GroupCreate { name: "team".into(), members: vec!["bob".into(), "carol".into()] })
        );
        assert_eq!(parse("/add dave"), Ok(Command::Add(vec!["dave".into()])));
        assert_eq!(parse("/remove dave"), Ok(Command::Remove(vec!["dave".into()])));
        assert_eq!(parse("/timer 5m"), Ok(Command::Timer(Some(300))));
        assert_eq!(parse("/timer off"), Ok(Command::Timer(None)));
        assert_eq!(parse("/id"), Ok(Command::Id(None)));
        assert_eq!(parse("/whoami"), Ok(Command::Whoami));
        assert_eq!(parse("/members"), Ok(Command::Members));
        assert_eq!(parse("/accept"), Ok(Command::Accept));
        assert_eq!(parse("/decline"), Ok(Command::Decline));
        assert_eq!(parse("/lock"), Ok(Command::Lock));
        assert_eq!(parse("/quit"), Ok(Command::Quit));
    }

    #[test]
    fn bad_usage_says_how() {
        assert_eq!(parse("/open"), Err("usage: /open TO".into()));
        assert_eq!(parse("/group team"), Err("usage: /group NAME MEMBER...".into()));
        assert!(parse("/timer soon").unwrap_err().contains("not a duration"));
        assert!(parse("/frobnicate").unwrap_err().contains("/help"));
    }
}

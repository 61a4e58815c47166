//! What a device keeps about its conversations and messages, and the
//! events it shows in them. Events are stored as data (who did what to
//! whom) and put into words only when shown, under the names the user
//! knows at that moment.

use std::time::Duration;

use hush_proto::AccountId;
use serde::{Deserialize, Serialize};

/// A one-to-one conversation or a named group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConversationKind {
    /// Two members; shown under the other person's name.
    Direct {
        /// The other member.
        peer: AccountId,
    },
    /// A named group.
    Group {
        /// Its name.
        name: String,
    },
    /// Joined, but the creator's description has not arrived yet.
    Pending,
}

/// A conversation row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationRecord {
    /// The MLS group id.
    pub group_id: Vec<u8>,
    /// What kind.
    pub kind: ConversationKind,
    /// False once we left or were removed.
    pub active: bool,
    /// Messages we sent since our last self-update.
    pub sent_since_update: u64,
    /// When we last self-updated (Unix ms).
    pub last_update_ms: u64,
    /// True if we owe the group a self-update (e.g. just joined).
    pub needs_update: bool,
    /// The disappearing-message timer, if set.
    pub timer_secs: Option<u32>,
}

/// A stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRecord {
    /// The sender's random message id.
    pub message_id: [u8; 16],
    /// The group it belongs to.
    pub group_id: Vec<u8>,
    /// Who sent it.
    pub sender: AccountId,
    /// The text; for an event, the event encoded by [`Event::encode`].
    pub text: String,
    /// Sender's clock (Unix ms).
    pub sent_at_ms: u64,
    /// A system event (timer changed, ...) rather than a message.
    pub event: bool,
    /// When this message disappears (Unix ms), if it does.
    pub expires_at_ms: Option<u64>,
    /// A received text as its sender signed it, so that it can be
    /// reported; deleted with the message.
    pub proof: Option<crate::SignedContent>,
}

/// Something that happened in a conversation, shown in its history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// `by` added us to the group.
    Joined {
        /// Who added us.
        #[serde(with = "account")]
        by: AccountId,
    },
    /// `by` added members.
    Added {
        /// Who committed the change.
        #[serde(with = "account")]
        by: AccountId,
        /// Who was added.
        #[serde(with = "accounts")]
        members: Vec<AccountId>,
    },
    /// `by` removed members.
    Removed {
        /// Who committed the change.
        #[serde(with = "account")]
        by: AccountId,
        /// Who was removed.
        #[serde(with = "accounts")]
        members: Vec<AccountId>,
    },
    /// The disappearing-message timer was set or turned off.
    Timer {
        /// The new timer, if any.
        secs: Option<u32>,
    },
    /// A payload for this conversation could not be processed.
    Unreadable,
    /// `by` gave the relay a key the other members do not have.
    RelayKeyWrong {
        /// Who signed the false announcement.
        #[serde(with = "account")]
        by: AccountId,
    },
    /// A change by `by` came without a valid key announcement.
    RelayKeyUnverified {
        /// Whose change it was.
        #[serde(with = "account")]
        by: AccountId,
    },
    /// The relay reports `account` deactivated.
    Deactivated {
        /// The member it reports.
        #[serde(with = "account")]
        account: AccountId,
    },
}

impl Event {
    /// The event as stored in a [`MessageRecord`]'s text.
    pub fn encode(&self) -> String {
        // A plain enum of ids and numbers always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// An event stored by [`Event::encode`]; `None` for anything else (an
    /// event stored as words by an older version).
    pub fn decode(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }

    /// The event in words, naming accounts with `name` (which says "you"
    /// for the device's own account if the caller wants that).
    pub fn describe(&self, name: &dyn Fn(&AccountId) -> String) -> String {
        let names = |accounts: &[AccountId]| accounts.iter().map(name).collect::<Vec<_>>().join(", ");
        match self {
            Self::Joined { by } => format!("{} added you", name(by)),
            Self::Added { by, members } => format!("{} added {}", name(by), names(members)),
            Self::Removed { by, members } => format!("{} removed {}", name(by), names(members)),
            Self::Timer { secs: Some(secs) } => format!(
                "disappearing messages: {}",
                humantime::format_duration(Duration::from_secs(u64::from(*secs)))
            ),
            Self::Timer { secs: None } => "disappearing messages: off".to_owned(),
            Self::Unreadable => "a message could not be decrypted and is lost".to_owned(),
            Self::RelayKeyWrong { by } => {
                let who = name(by);
                format!(
                    "warning: {who} gave the relay a key the other members do not have (signed by {who}): \
                     only {who} can change this group from now on; start a new group without {who}"
                )
            }
            Self::RelayKeyUnverified { by } => {
                let who = name(by);
                format!(
                    "warning: a change by {who} came without a valid key announcement: the relay altered it, \
                     or {who} sent it around the relay; changing this group may fail from now on"
                )
            }
            Self::Deactivated { account } => {
                format!("the relay reports {}'s account deactivated: nothing reaches them", name(account))
            }
        }
    }
}

/// Account ids in events are stored in their printed form.
mod account {
    use hush_proto::AccountId;
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(account: &AccountId, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(account)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<AccountId, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(|_| D::Error::custom("not an account id"))
    }
}

mod accounts {
    use hush_proto::AccountId;
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(accounts: &[AccountId], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(accounts.iter().map(ToString::to_string))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<AccountId>, D::Error> {
        Vec::<String>::deserialize(deserializer)?
            .iter()
            .map(|text| text.parse().map_err(|_| D::Error::custom("not an account id")))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_and_read_with_current_names() {
        let alice = AccountId([1; 20]);
        let bob = AccountId([2; 20]);
        let event = Event::Added { by: alice, members: vec![bob, AccountId([3; 20])] };
        let decoded = Event::decode(&event.encode()).expect("decodes");
        assert_eq!(decoded, event);
        let name = |a: &AccountId| match a {
            a if *a == alice => "you".to_owned(),
            a if *a == bob => "bob".to_owned(),
            a => a.to_string(),
        };
        assert_eq!(decoded.describe(&name), format!("you added bob, {}", AccountId([3; 20])));
        assert_eq!(Event::Timer { secs: Some(3600) }.describe(&name), "disappearing messages: 1h");
        // Words stored by an older version are not events.
        assert_eq!(Event::decode("alice added bob"), None);
    }
}

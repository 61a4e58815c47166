//! Relays sharing one PostgreSQL store hear of each other's writes through
//! `LISTEN`/`NOTIFY`: a recipient connected to relay B gets at once what
//! relay A stored.
//!
//! Key design decisions:
//! - One notification per committed transaction (a whole batch), never one
//!   per message: it lists the mailboxes the batch wrote to, or says
//!   "everything" when the list would not fit.
//! - Notifications are hints; the database is the truth. A woken relay
//!   re-reads the named mailboxes from its cursors, so a notification that
//!   is lost, repeated or late costs a read, never a message. After its
//!   listening connection is re-made, a relay re-reads every mailbox.
//! - The same channel carries the operator's actions that other relays
//!   must apply to their own connections: an account deactivated (close
//!   its connections), a remote wipe (pass the order on, read from the
//!   store, never carried in the notification, and close the connections
//!   receiving from the queues it deleted, whose devices then log in and
//!   get the order there).
//! - PostgreSQL sends a notification only when its transaction commits,
//!   so no relay is woken for a batch that was rolled back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use data_encoding::{BASE64URL_NOPAD, HEXLOWER};
use hush_proto::{AccountId, QueueId};
use postgres::fallible_iterator::FallibleIterator;

use crate::hub::Hub;
use crate::store::{Mailbox, Target};

/// The notification channel.
pub const CHANNEL: &str = "hush";

/// Most bytes of mailbox names in one notification.
const MAX_MESSAGE: usize = 7_000;
/// Longest notification sent at all (PostgreSQL's limit is 8000 bytes).
const MAX_NOTIFICATION: usize = 7_900;

/// How long the listener waits for a notification before checking that it
/// should go on and that its connection is alive.
const POLL: Duration = Duration::from_secs(1);

/// How long the listener waits before connecting again.
const RECONNECT: Duration = Duration::from_secs(1);

/// What one relay tells the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Note {
    /// Something was stored in this mailbox.
    Stored(Mailbox),
    /// This account was deactivated: close its connections.
    Close(AccountId),
    /// This account was wiped: pass its wipe order on, then close.
    Wipe(AccountId),
    /// A wipe deleted this queue: close the connections receiving from it.
    Gone(QueueId),
    /// Accounts were deactivated or wiped, too many to name: check every
    /// account this relay serves.
    Recheck,
}

/// The notifications for a transaction's notes, each naming the sending
/// relay: one for what was stored and the operator's actions (mailboxes
/// past [`MAX_MESSAGE`] become `*`, every mailbox), and as many more as the
/// queues a wipe deleted need (they are never summed up: only their names
/// tell the other relays which connections to close).
pub fn encode(node: u64, notes: &[Note]) -> Vec<String> {
    let prefix = format!("{node:016x}");
    let mut message = prefix.clone();
    let mut everything = false;
    let mut named = std::collections::HashSet::new();
    let mut gone: Vec<String> = Vec::new();
    for note in notes {
        let item = match note {
            Note::Stored(mailbox) => format!(" {}", tag(mailbox)),
            Note::Close(account) => format!(" c{}", HEXLOWER.encode(&account.0)),
            Note::Wipe(account) => format!(" w{}", HEXLOWER.encode(&account.0)),
            Note::Gone(queue) => format!(" g{}", BASE64URL_NOPAD.encode(&tag_key(&Mailbox::Queue(*queue)).1)),
            Note::Recheck => " !".to_owned(),
        };
        if !named.insert(item.clone()) {
            continue;
        }
        if matches!(note, Note::Gone(_)) {
            match gone.last_mut() {
                Some(last) if last.len() + item.len() <= MAX_NOTIFICATION => last.push_str(&item),
                _ => gone.push(format!("{prefix}{item}")),
            }
            continue;
        }
        if matches!(note, Note::Stored(_)) && (everything || message.len() + item.len() > MAX_MESSAGE) {
            everything = true;
            continue;
        }
        message.push_str(&item);
    }
    if everything {
        message.push_str(" *");
    }
    if message.len() > MAX_NOTIFICATION {
        // Too many operator actions for one notification: every relay
        // re-reads everything and re-checks every account it serves.
        message = format!("{prefix} * !");
    }
    let mut messages = Vec::with_capacity(1 + gone.len());
    if message.len() > prefix.len() {
        messages.push(message);
    }
    messages.extend(gone);
    messages
}

/// A mailbox as notifications name it: a kind letter and the first 8 bytes
/// of its id (base64url), so about 580 fit in one notification. Two
/// mailboxes sharing a tag only cost an extra read.
pub fn tag(mailbox: &Mailbox) -> String {
    let (kind, id) = tag_key(mailbox);
    format!("{}{}", char::from(kind), BASE64URL_NOPAD.encode(&id))
}

/// A [`tag`] as the hub indexes it: the kind letter and the 8 bytes.
pub type TagKey = (u8, [u8; 8]);

/// The [`TagKey`] of a mailbox.
pub fn tag_key(mailbox: &Mailbox) -> TagKey {
    let mut id = [0u8; 8];
    match mailbox {
        Mailbox::Queue(queue) => {
            id.copy_from_slice(&queue.0[..8]);
            (b'q', id)
        }
        Mailbox::Account(account) => {
            id.copy_from_slice(&account.0[..8]);
            (b'a', id)
        }
    }
}

/// A notification as heard.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Heard {
    /// The relay that sent it.
    pub node: u64,
    /// Mailboxes written, by [`tag`].
    pub stored: std::collections::HashSet<TagKey>,
    /// Every mailbox was written to, or may have been.
    pub everything: bool,
    /// The operator's actions: [`Note::Close`], [`Note::Wipe`], [`Note::Recheck`].
    pub actions: Vec<Note>,
    /// Queues a wipe deleted ([`Note::Gone`]), by [`tag`].
    pub gone: std::collections::HashSet<TagKey>,
}

/// Reads a notification back. Items that do not parse are skipped.
pub fn decode(message: &str) -> Option<Heard> {
    let mut items = message.split(' ');
    let mut heard = Heard { node: u64::from_str_radix(items.next()?, 16).ok()?, ..Heard::default() };
    for item in items {
        let Some(kind) = item.chars().next() else { continue };
        let rest = &item[kind.len_utf8()..];
        match kind {
            '*' => heard.everything = true,
            '!' => heard.actions.push(Note::Recheck),
            'q' | 'a' | 'g' => {
                let Some(id) =
                    BASE64URL_NOPAD.decode(rest.as_bytes()).ok().and_then(|id| <[u8; 8]>::try_from(id).ok())
                else {
                    continue;
                };
                match kind {
                    'g' => heard.gone.insert((b'q', id)),
                    _ => heard.stored.insert((kind as u8, id)),
                };
            }
            'c' | 'w' => {
                let Some(id) = HEXLOWER.decode(rest.as_bytes()).ok().and_then(account) else { continue };
                heard.actions.push(if kind == 'c' { Note::Close(id) } else { Note::Wipe(id) });
            }
            _ => {}
        }
    }
    Some(heard)
}

fn account(bytes: Vec<u8>) -> Option<AccountId> {
    <[u8; AccountId::LEN]>::try_from(bytes).ok().map(AccountId)
}

/// The listening thread of one relay.
pub struct Listener {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Listener {
    /// Starts listening for relay `node` (whose own notifications it
    /// ignores), applying what it hears to `hub`.
    pub fn spawn(target: Target, node: u64, hub: Arc<Hub>) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("hush-listen".into())
            .spawn(move || listen(&target, node, &hub, &stopping))?;
        Ok(Self { stop, thread })
    }

    /// Stops the thread (within a second).
    pub fn stop(self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.thread.join();
    }
}

fn listen(target: &Target, node: u64, hub: &Hub, stop: &AtomicBool) {
    let mut first = true;
    while !stop.load(Ordering::Acquire) {
        let mut client = match target.connect_blocking().and_then(|mut client| {
            client.batch_execute(&format!("LISTEN {CHANNEL}"))?;
            Ok(client)
        }) {
            Ok(client) => client,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for other relays' writes; retrying");
                std::thread::sleep(RECONNECT);
                continue;
            }
        };
        // What was stored, deactivated or wiped while we did not listen
        // (or before we first did): read every mailbox again, check every
        // account we serve.
        if !first {
            tracing::info!("listening for other relays' writes again; re-reading every mailbox");
        }
        first = false;
        hub.wake_all();
        recheck(&mut client, hub);
        while !stop.load(Ordering::Acquire) {
            let mut received = Vec::new();
            let mut failed = false;
            {
                // Wait for one notification, then take those already
                // here, and apply them at once.
                let mut notifications = client.notifications();
                match notifications.timeout_iter(POLL).next() {
                    Ok(Some(notification)) => received.push(notification.payload().to_owned()),
                    Ok(None) => {}
                    Err(_) => failed = true,
                }
                let mut pending = notifications.iter();
                while !failed && received.len() < 256 {
                    match pending.next() {
                        Ok(Some(notification)) => received.push(notification.payload().to_owned()),
                        Ok(None) => break,
                        Err(_) => failed = true,
                    }
                }
            }
            for message in &received {
                apply(&mut client, node, hub, message);
            }
            // A connection that died without a word is found out here.
            if failed || client.is_closed() || client.batch_execute("").is_err() {
                tracing::warn!("the connection listening for other relays' writes was lost");
                break;
            }
        }
    }
}

/// Closes the connections of accounts this relay serves that were
/// deactivated, passing on wipe orders first.
fn recheck(client: &mut postgres::Client, hub: &Hub) {
    let served: Vec<Vec<u8>> = hub.accounts().iter().map(|account| account.0.to_vec()).collect();
    if served.is_empty() {
        return;
    }
    let Ok(rows) = client.query(
        "SELECT a.id, w.secret FROM accounts a LEFT JOIN wipe_orders w ON w.account = a.id
         WHERE a.id = ANY($1) AND a.deactivated IS NOT NULL",
        &[&served],
    ) else {
        return;
    };
    for row in rows {
        let Some(account) = row.try_get::<_, Vec<u8>>(0).ok().and_then(account) else { continue };
        let secret = row.try_get::<_, Option<Vec<u8>>>(1).ok().flatten();
        match secret.and_then(|secret| <[u8; 32]>::try_from(secret).ok()) {
            Some(secret) => hub.wipe(&account, secret),
            None => {
                hub.close(&account);
            }
        }
    }
}

/// Applies one notification from another relay.
fn apply(client: &mut postgres::Client, node: u64, hub: &Hub, message: &str) {
    let Some(heard) = decode(message) else { return };
    if heard.node == node {
        return;
    }
    if heard.everything {
        hub.wake_all();
    } else if !heard.stored.is_empty() {
        hub.wake_tagged(&heard.stored);
    }
    if !heard.gone.is_empty() {
        hub.close_tagged(&heard.gone);
    }
    for action in heard.actions {
        match action {
            Note::Recheck | Note::Stored(_) | Note::Gone(_) => recheck(client, hub),
            Note::Close(account) => {
                hub.close(&account);
            }
            Note::Wipe(account) => {
                let order = client
                    .query_opt("SELECT secret FROM wipe_orders WHERE account = $1", &[&&account.0[..]])
                    .ok()
                    .flatten()
                    .and_then(|row| row.try_get::<_, Vec<u8>>(0).ok())
                    .and_then(|secret| <[u8; 32]>::try_from(secret).ok());
                match order {
                    Some(secret) => hub.wipe(&account, secret),
                    None => {
                        hub.close(&account);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_round_trip_and_a_long_list_becomes_everything() {
        let queue = Mailbox::Queue(QueueId([7; 16]));
        let intro = Mailbox::Account(AccountId([8; 20]));
        let account = AccountId([9; 20]);
        let notes = [
            Note::Stored(queue),
            Note::Stored(queue),
            Note::Stored(intro),
            Note::Close(account),
            Note::Wipe(account),
            Note::Gone(QueueId([6; 16])),
        ];
        let messages = encode(42, &notes);
        assert_eq!(messages.len(), 2, "{messages:?}");
        let (message, heard) = (&messages[0], decode(&messages[0]).unwrap());
        assert_eq!(heard.node, 42);
        assert_eq!(heard.stored, [tag_key(&queue), tag_key(&intro)].into_iter().collect());
        assert_eq!(heard.actions, [Note::Close(account), Note::Wipe(account)]);
        let gone = decode(&messages[1]).unwrap();
        assert_eq!(gone.node, 42);
        assert_eq!(gone.gone, [tag_key(&Mailbox::Queue(QueueId([6; 16])))].into_iter().collect());
        assert!(!heard.everything);
        assert!(message.matches(&tag(&queue)).count() == 1, "repeats go once: {message}");

        // A full batch of one-queue sends fits by name.
        let queue_n = |n: u16| {
            let mut id = [0u8; 16];
            id[..2].copy_from_slice(&n.to_be_bytes());
            Note::Stored(Mailbox::Queue(QueueId(id)))
        };
        let batch: Vec<Note> = (0..512).map(queue_n).collect();
        let heard = decode(&encode(1, &batch)[0]).unwrap();
        assert!(!heard.everything && heard.stored.len() == 512, "{}", heard.stored.len());

        let many: Vec<Note> = (0..1000).map(queue_n).chain([Note::Close(account)]).collect();
        let message = encode(1, &many).remove(0);
        assert!(message.len() <= MAX_NOTIFICATION, "{}", message.len());
        let heard = decode(&message).unwrap();
        assert!(heard.everything, "mailboxes that do not fit must mean every mailbox");
        assert_eq!(heard.actions, [Note::Close(account)], "an operator's action is never dropped");

        let wipes: Vec<Note> = (0..400u16)
            .map(|n| {
                let mut id = [0u8; 20];
                id[..2].copy_from_slice(&n.to_be_bytes());
                Note::Wipe(AccountId(id))
            })
            .collect();
        let message = encode(1, &wipes).remove(0);
        assert!(message.len() <= MAX_NOTIFICATION, "{}", message.len());
        let heard = decode(&message).unwrap();
        assert!(heard.everything);
        assert_eq!(heard.actions, [Note::Recheck]);

        // The queues of a wipe are all named, however many, in as many
        // notifications as they need.
        let gone: Vec<Note> = (0..2000u16)
            .map(|n| {
                let mut id = [0u8; 16];
                id[..2].copy_from_slice(&n.to_be_bytes());
                Note::Gone(QueueId(id))
            })
            .chain([Note::Wipe(account)])
            .collect();
        let messages = encode(1, &gone);
        assert!(messages.len() > 2 && messages.iter().all(|message| message.len() <= MAX_NOTIFICATION));
        let heard: Vec<Heard> = messages.iter().map(|message| decode(message).unwrap()).collect();
        assert_eq!(heard[0].actions, [Note::Wipe(account)]);
        assert_eq!(heard.iter().map(|heard| heard.gone.len()).sum::<usize>(), 2000);
        assert!(decode("not hex").is_none());
        let junk = decode("01 qzz x1 q00 cAA").unwrap();
        assert!(junk.stored.is_empty() && junk.actions.is_empty());
    }
}

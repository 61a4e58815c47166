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
//!   store, never carried in the notification).
//! - PostgreSQL sends a notification only when its transaction commits,
//!   so no relay is woken for a batch that was rolled back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use data_encoding::HEXLOWER;
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
    /// Accounts were deactivated or wiped, too many to name: check every
    /// account this relay serves.
    Recheck,
}

/// One notification: the sending relay, then the notes. Mailboxes past
/// [`MAX_MESSAGE`] become `*`: every mailbox.
pub fn encode(node: u64, notes: &[Note]) -> String {
    let mut message = format!("{node:016x}");
    let mut everything = false;
    for note in notes {
        let item = match note {
            Note::Stored(Mailbox::Queue(queue)) => format!(" q{}", HEXLOWER.encode(&queue.0)),
            Note::Stored(Mailbox::Account(account)) => format!(" a{}", HEXLOWER.encode(&account.0)),
            Note::Close(account) => format!(" c{}", HEXLOWER.encode(&account.0)),
            Note::Wipe(account) => format!(" w{}", HEXLOWER.encode(&account.0)),
            Note::Recheck => " !".to_owned(),
        };
        if matches!(note, Note::Stored(_)) && (everything || message.len() + item.len() > MAX_MESSAGE) {
            everything = true;
            continue;
        }
        if !message.contains(&item) {
            message.push_str(&item);
        }
    }
    if everything {
        message.push_str(" *");
    }
    if message.len() > MAX_NOTIFICATION {
        // Too many operator actions for one notification: every relay
        // re-reads everything and re-checks every account it serves.
        return format!("{node:016x} * !");
    }
    message
}

/// A notification read back: who sent it, what it says, and whether it
/// means every mailbox. Items that do not parse are skipped.
pub fn decode(message: &str) -> Option<(u64, Vec<Note>, bool)> {
    let mut items = message.split(' ');
    let node = u64::from_str_radix(items.next()?, 16).ok()?;
    let mut notes = Vec::new();
    let mut everything = false;
    for item in items {
        if item == "*" {
            everything = true;
            continue;
        }
        if item == "!" {
            notes.push(Note::Recheck);
            continue;
        }
        let Some(kind) = item.chars().next() else { continue };
        let Ok(bytes) = HEXLOWER.decode(&item.as_bytes()[kind.len_utf8()..]) else { continue };
        let note = match kind {
            'q' => {
                <[u8; QueueId::LEN]>::try_from(bytes).ok().map(|id| Note::Stored(Mailbox::Queue(QueueId(id))))
            }
            'a' => account(bytes).map(|id| Note::Stored(Mailbox::Account(id))),
            'c' => account(bytes).map(Note::Close),
            'w' => account(bytes).map(Note::Wipe),
            _ => None,
        };
        notes.extend(note);
    }
    Some((node, notes, everything))
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
        let mut client = match target.connect().and_then(|mut client| {
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
    let Some((from, notes, everything)) = decode(message) else { return };
    if from == node {
        return;
    }
    if everything {
        hub.wake_all();
    }
    let mut woken = Vec::new();
    for note in notes {
        match note {
            Note::Recheck => recheck(client, hub),
            Note::Stored(mailbox) => woken.push(mailbox),
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
    if !woken.is_empty() {
        hub.wake(&woken);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_round_trip_and_a_long_list_becomes_everything() {
        let queue = Mailbox::Queue(QueueId([7; 16]));
        let account = AccountId([9; 20]);
        let notes = [Note::Stored(queue), Note::Stored(queue), Note::Close(account), Note::Wipe(account)];
        let message = encode(42, &notes);
        let (node, decoded, everything) = decode(&message).unwrap();
        assert_eq!(node, 42);
        assert_eq!(
            decoded,
            [Note::Stored(queue), Note::Close(account), Note::Wipe(account)],
            "repeats go once"
        );
        assert!(!everything);

        let many: Vec<Note> = (0..1000u16)
            .map(|n| {
                Note::Stored(Mailbox::Queue(QueueId([
                    (n % 256) as u8,
                    (n / 256) as u8,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                ])))
            })
            .chain([Note::Close(account)])
            .collect();
        let message = encode(1, &many);
        assert!(message.len() <= MAX_MESSAGE + 64, "{}", message.len());
        let (_, decoded, everything) = decode(&message).unwrap();
        assert!(everything, "mailboxes that do not fit must mean every mailbox");
        assert!(decoded.contains(&Note::Close(account)), "an operator's action is never dropped");
        let wipes: Vec<Note> = (0..400u16)
            .map(|n| {
                Note::Wipe(AccountId([
                    (n % 256) as u8,
                    (n / 256) as u8,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                ]))
            })
            .collect();
        let message = encode(1, &wipes);
        assert!(message.len() <= MAX_NOTIFICATION, "{}", message.len());
        assert_eq!(decode(&message).map(|(_, notes, all)| (notes, all)), Some((vec![Note::Recheck], true)));
        assert!(decode("not hex").is_none());
        assert_eq!(decode("01 qzz x1 q00").map(|(_, notes, _)| notes.len()), Some(0));
    }
}

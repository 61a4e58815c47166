//! Who is connected: live subscriptions per mailbox (a queue, or an
//! account's introduction mailbox), so a stored payload can be pushed at
//! once, and the logged-in connections per account, so deactivation can
//! close them.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use hush_proto::{AccountId, QueueId};
use tokio::sync::Notify;

use crate::store::{Mailbox, Queued};

/// Pushes buffered per connection before it counts as lagging.
pub const PUSH_BUFFER: usize = 1024;
/// Payload bytes buffered per connection before it counts as lagging: a
/// connection that does not keep up holds at most this much of payloads the
/// store has already written, not `PUSH_BUFFER` payloads of the largest size.
pub const PUSH_BYTES: usize = 8 * 1024 * 1024;

/// Signals from the hub to one connection, and the payloads pushed to it.
#[derive(Default)]
pub struct Control {
    /// Payloads stored for its mailboxes, waiting for its delivery (at most
    /// [`PUSH_BUFFER`]). A queue here rather than a channel: a channel
    /// allocates a block of slots up front, on every idle connection.
    pub pushes: Mutex<VecDeque<Push>>,
    /// Wakes the delivery after `pushes` grew.
    pub pushed: Notify,
    /// Set when a push was dropped because the buffer was full: the
    /// connection must re-read its mailboxes from the store.
    pub lagged: AtomicBool,
    /// Wakes the delivery task after `lagged` was set.
    pub lag: Notify,
    /// Payload bytes pushed and not yet taken by the delivery task.
    pub buffered: AtomicUsize,
    /// Wakes the connection when its account was deactivated.
    pub close: Notify,
    /// A wipe order to pass on before closing.
    pub wipe: Mutex<Option<[u8; 32]>>,
    /// Mailboxes another relay wrote to (see [`crate::cluster`]), for the
    /// delivery to read again from its cursors.
    pub added: Mutex<Vec<Mailbox>>,
    /// Queues proved after delivery started, one batch per proof (perhaps
    /// empty: queues proved before), for the delivery to drain, each batch
    /// followed by its own `QueueEmpty`.
    pub proved: Mutex<Vec<Vec<Mailbox>>>,
    /// Wakes the delivery task after `added` or `proved` grew.
    pub add: Notify,
}

/// A payload pushed to a connection. Boxed: the queue of pushes keeps its
/// largest size, and should not keep it in slots of the payload's full size.
pub type Push = Box<Queued>;

/// A logged-in connection: its id and its signals.
type Connection = (u64, Arc<Control>);

struct Subscriber {
    id: u64,
    control: Arc<Control>,
}

/// The registry of live connections.
#[derive(Default)]
pub struct Hub {
    next_id: AtomicU64,
    connections: AtomicUsize,
    accounts: Mutex<HashMap<AccountId, Vec<Connection>>>,
    mailboxes: Mutex<HashMap<Mailbox, Vec<Subscriber>>>,
    /// The subscribed mailboxes by [`crate::cluster::tag_key`] (other
    /// relays name the mailboxes they wrote to by tag).
    tags: Mutex<HashMap<crate::cluster::TagKey, Vec<Mailbox>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means another thread panicked while holding
    // it; the map itself stays consistent, so keep serving.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Hub {
    /// Registers a connection, logged in to `account` or not (queue and
    /// sealed connections are not); only logged-in ones can be closed by
    /// account. Pair with [`Hub::unregister`].
    pub fn register(&self, account: Option<AccountId>) -> (u64, Arc<Control>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let control = Arc::new(Control::default());
        if let Some(account) = account {
            lock(&self.accounts).entry(account).or_default().push((id, Arc::clone(&control)));
        }
        self.connections.fetch_add(1, Ordering::Relaxed);
        (id, control)
    }

    /// Starts pushing what is stored for `mailbox` to connection `id`.
    pub fn subscribe(&self, mailbox: Mailbox, id: u64, control: &Arc<Control>) {
        let subscriber = Subscriber { id, control: Arc::clone(control) };
        let mut subscribed = lock(&self.mailboxes);
        let subscribers = subscribed.entry(mailbox).or_default();
        if subscribers.is_empty() {
            lock(&self.tags).entry(crate::cluster::tag_key(&mailbox)).or_default().push(mailbox);
        }
        subscribers.push(subscriber);
    }

    /// Closes every connection subscribed to `mailbox` but `id` (a queue
    /// was handed over: those who proved it with the old key lose it).
    pub fn close_others(&self, mailbox: Mailbox, id: u64) {
        let subscribed = lock(&self.mailboxes);
        for subscriber in subscribed.get(&mailbox).into_iter().flatten() {
            if subscriber.id != id {
                subscriber.control.close.notify_one();
            }
        }
    }

    /// Ends connection `id`'s subscription to one mailbox.
    pub fn unregister_mailbox(&self, mailbox: Mailbox, id: u64) {
        let mut subscribed = lock(&self.mailboxes);
        if let Some(subscribers) = subscribed.get_mut(&mailbox) {
            subscribers.retain(|subscriber| subscriber.id != id);
            if subscribers.is_empty() {
                subscribed.remove(&mailbox);
                let key = crate::cluster::tag_key(&mailbox);
                let mut tags = lock(&self.tags);
                if let Some(tagged) = tags.get_mut(&key) {
                    tagged.retain(|other| *other != mailbox);
                    if tagged.is_empty() {
                        tags.remove(&key);
                    }
                }
            }
        }
    }

    /// Removes connection `id`, with its subscriptions to `mailboxes`.
    pub fn unregister(
        &self,
        account: Option<AccountId>,
        id: u64,
        mailboxes: impl IntoIterator<Item = Mailbox>,
    ) {
        for mailbox in mailboxes {
            self.unregister_mailbox(mailbox, id);
        }
        if let Some(account) = account {
            let mut accounts = lock(&self.accounts);
            if let Some(entries) = accounts.get_mut(&account) {
                entries.retain(|(entry, _)| *entry != id);
                if entries.is_empty() {
                    accounts.remove(&account);
                }
            }
        }
        self.connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// Pushes stored payloads to their mailboxes' subscribed connections.
    pub fn push(&self, queued: &[Queued]) {
        let mailboxes = lock(&self.mailboxes);
        for item in queued {
            for subscriber in mailboxes.get(&item.to).into_iter().flatten() {
                let len = item.payload.len();
                let control = &subscriber.control;
                let before = control.buffered.fetch_add(len, Ordering::AcqRel);
                // The first push is taken whatever its size, so one
                // payload larger than the cap still gets through.
                let over = before > 0 && before + len > PUSH_BYTES;
                let taken = !over && {
                    let mut pushes = lock(&control.pushes);
                    let room = pushes.len() < PUSH_BUFFER;
                    if room {
                        pushes.push_back(Box::new(item.clone()));
                    }
                    room
                };
                if taken {
                    control.pushed.notify_one();
                } else {
                    control.buffered.fetch_sub(len, Ordering::AcqRel);
                    control.lagged.store(true, Ordering::Release);
                    control.lag.notify_one();
                }
            }
        }
    }

    /// Tells the connections subscribed to `mailboxes` to read them again
    /// from the store: another relay wrote to them.
    pub fn wake(&self, mailboxes: &[Mailbox]) {
        let subscribed = lock(&self.mailboxes);
        for mailbox in mailboxes {
            for subscriber in subscribed.get(mailbox).into_iter().flatten() {
                lock(&subscriber.control.added).push(*mailbox);
                subscriber.control.add.notify_one();
            }
        }
    }

    /// Like [`Hub::wake`], for the mailboxes whose [`crate::cluster::tag`]
    /// is in `tags`.
    pub fn wake_tagged(&self, tags: &std::collections::HashSet<crate::cluster::TagKey>) {
        let mailboxes: Vec<Mailbox> = {
            let index = lock(&self.tags);
            tags.iter().filter_map(|key| index.get(key)).flatten().copied().collect()
        };
        self.wake(&mailboxes);
    }

    /// Tells every subscribed connection to read all its mailboxes again
    /// (what other relays wrote while this one was not listening).
    pub fn wake_all(&self) {
        let subscribed = lock(&self.mailboxes);
        for subscriber in subscribed.values().flatten() {
            subscriber.control.lagged.store(true, Ordering::Release);
            subscriber.control.lag.notify_one();
        }
    }

    /// Closes every logged-in connection of `account`.
    pub fn close(&self, account: &AccountId) -> usize {
        let accounts = lock(&self.accounts);
        let entries = accounts.get(account).map(Vec::as_slice).unwrap_or_default();
        for (_, control) in entries {
            control.close.notify_one();
        }
        entries.len()
    }

    /// Passes a wipe order to every logged-in connection of `account`, then
    /// closes them.
    pub fn wipe(&self, account: &AccountId, secret: [u8; 32]) {
        let accounts = lock(&self.accounts);
        for (_, control) in accounts.get(account).map(Vec::as_slice).unwrap_or_default() {
            *lock(&control.wipe) = Some(secret);
            control.close.notify_one();
        }
    }

    /// Passes a wipe order to every connection receiving from `queues`
    /// (which the order's secret tagged, and which are gone), then closes
    /// them: a device that is not logged in hears of its wipe at once.
    pub fn wipe_queues(&self, queues: &[QueueId], secret: [u8; 32]) {
        let subscribed = lock(&self.mailboxes);
        for queue in queues {
            for subscriber in subscribed.get(&Mailbox::Queue(*queue)).into_iter().flatten() {
                *lock(&subscriber.control.wipe) = Some(secret);
                subscriber.control.close.notify_one();
            }
        }
    }

    /// Closes the connections receiving from the queues whose
    /// [`crate::cluster::tag`] is in `tags` (another relay's wipe deleted
    /// them: their devices log in again and get the order there).
    pub fn close_tagged(&self, tags: &std::collections::HashSet<crate::cluster::TagKey>) {
        let mailboxes: Vec<Mailbox> = {
            let index = lock(&self.tags);
            tags.iter().filter_map(|key| index.get(key)).flatten().copied().collect()
        };
        let subscribed = lock(&self.mailboxes);
        for mailbox in mailboxes.iter().filter(|mailbox| matches!(mailbox, Mailbox::Queue(_))) {
            for subscriber in subscribed.get(mailbox).into_iter().flatten() {
                subscriber.control.close.notify_one();
            }
        }
    }

    /// The accounts with logged-in connections here.
    pub fn accounts(&self) -> Vec<AccountId> {
        lock(&self.accounts).keys().copied().collect()
    }

    /// Connections currently registered.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(id: u64, account: AccountId, len: usize) -> Queued {
        Queued { id, to: Mailbox::Account(account), arrived_at: 0, payload: Arc::from(vec![0u8; len]) }
    }

    fn subscribed(hub: &Hub, account: AccountId) -> Arc<Control> {
        let (id, control) = hub.register(Some(account));
        hub.subscribe(Mailbox::Account(account), id, &control);
        control
    }

    /// A subscriber that does not read holds at most `PUSH_BYTES` of pushed
    /// payloads (plus the one that went over); the rest is left to the
    /// store and the connection is told to re-read it.
    #[test]
    fn pushes_to_a_slow_reader_are_bounded_in_bytes() {
        let hub = Hub::default();
        let account = AccountId([1; 20]);
        let control = subscribed(&hub, account);
        let len = 1024 * 1024;
        let batch: Vec<Queued> = (1..=64).map(|id| queued(id, account, len)).collect();
        hub.push(&batch);

        assert!(control.lagged.load(Ordering::Acquire), "the reader was not told it lags");
        let held: usize = lock(&control.pushes).iter().map(|item| item.payload.len()).sum();
        assert!(held <= PUSH_BYTES, "{held} bytes buffered for one connection");
        assert_eq!(control.buffered.load(Ordering::Acquire), held);
    }

    /// One payload larger than the cap still gets through to a reader that
    /// has nothing buffered.
    #[test]
    fn one_large_push_gets_through() {
        let hub = Hub::default();
        let account = AccountId([2; 20]);
        let control = subscribed(&hub, account);
        hub.push(&[queued(1, account, PUSH_BYTES + 1)]);
        assert!(!control.lagged.load(Ordering::Acquire));
        assert_eq!(lock(&control.pushes).pop_front().expect("pushed").id, 1);
    }
}

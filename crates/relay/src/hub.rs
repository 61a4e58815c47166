//! Who is connected: live subscriptions per account, so a stored payload can
//! be pushed at once, and deactivation can close every connection of an
//! account.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use hush_proto::AccountId;
use tokio::sync::{mpsc, Notify};

use crate::store::Queued;

/// Pushes buffered per connection before it counts as lagging.
const PUSH_BUFFER: usize = 1024;
/// Payload bytes buffered per connection before it counts as lagging: a
/// connection that does not keep up holds at most this much of payloads the
/// store has already written, not `PUSH_BUFFER` payloads of the largest size.
pub const PUSH_BYTES: usize = 8 * 1024 * 1024;

/// Signals from the hub to one connection.
#[derive(Default)]
pub struct Control {
    /// Set when a push was dropped because the buffer was full: the
    /// connection must re-read its mailbox from the store.
    pub lagged: AtomicBool,
    /// Wakes the delivery task after `lagged` was set.
    pub lag: Notify,
    /// Payload bytes pushed and not yet taken by the delivery task.
    pub buffered: AtomicUsize,
    /// Wakes the connection when its account was deactivated.
    pub close: Notify,
    /// A wipe order to pass on before closing.
    pub wipe: Mutex<Option<[u8; 32]>>,
}

struct Entry {
    id: u64,
    pushes: Option<mpsc::Sender<Queued>>,
    control: Arc<Control>,
}

/// The registry of live connections.
#[derive(Default)]
pub struct Hub {
    next_id: AtomicU64,
    accounts: Mutex<HashMap<AccountId, Vec<Entry>>>,
}

impl Hub {
    /// Registers a logged-in connection. Pushes go only to connections that
    /// `subscribe`; every connection can be closed.
    pub fn register(&self, account: AccountId) -> (u64, Arc<Control>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let control = Arc::new(Control::default());
        let entry = Entry { id, pushes: None, control: Arc::clone(&control) };
        self.lock().entry(account).or_default().push(entry);
        (id, control)
    }

    /// Starts pushing payloads for `account` to connection `id`.
    pub fn subscribe(&self, account: AccountId, id: u64) -> Option<mpsc::Receiver<Queued>> {
        let (sender, receiver) = mpsc::channel(PUSH_BUFFER);
        let mut accounts = self.lock();
        let entry = accounts.get_mut(&account)?.iter_mut().find(|entry| entry.id == id)?;
        entry.pushes = Some(sender);
        Some(receiver)
    }

    /// Removes a connection.
    pub fn unregister(&self, account: AccountId, id: u64) {
        let mut accounts = self.lock();
        if let Some(entries) = accounts.get_mut(&account) {
            entries.retain(|entry| entry.id != id);
            if entries.is_empty() {
                accounts.remove(&account);
            }
        }
    }

    /// Pushes stored payloads to their recipients' subscribed connections.
    pub fn push(&self, queued: &[Queued]) {
        let accounts = self.lock();
        for item in queued {
            for entry in accounts.get(&item.recipient).into_iter().flatten() {
                let Some(pushes) = &entry.pushes else { continue };
                let len = item.payload.len();
                let control = &entry.control;
                let before = control.buffered.fetch_add(len, Ordering::AcqRel);
                // The first push is taken whatever its size, so one
                // payload larger than the cap still gets through.
                let over = before > 0 && before + len > PUSH_BYTES;
                if over || pushes.try_send(item.clone()).is_err() {
                    control.buffered.fetch_sub(len, Ordering::AcqRel);
                    control.lagged.store(true, Ordering::Release);
                    control.lag.notify_one();
                }
            }
        }
    }

    /// Closes every connection of `account`.
    pub fn close(&self, account: &AccountId) -> usize {
        let accounts = self.lock();
        let entries = accounts.get(account).map(Vec::as_slice).unwrap_or_default();
        for entry in entries {
            entry.control.close.notify_one();
        }
        entries.len()
    }

    /// Passes a wipe order to every connection of `account`, then closes them.
    pub fn wipe(&self, account: &AccountId, secret: [u8; 32]) {
        let accounts = self.lock();
        for entry in accounts.get(account).map(Vec::as_slice).unwrap_or_default() {
            *entry.control.wipe.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(secret);
            entry.control.close.notify_one();
        }
    }

    /// Connections currently registered.
    pub fn connections(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<AccountId, Vec<Entry>>> {
        // A poisoned lock only means another thread panicked while holding
        // it; the map itself stays consistent, so keep serving.
        self.accounts.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(id: u64, recipient: AccountId, len: usize) -> Queued {
        Queued { id, recipient, arrived_at: 0, payload: Arc::from(vec![0u8; len]) }
    }

    /// A subscriber that does not read holds at most `PUSH_BYTES` of pushed
    /// payloads (plus the one that went over); the rest is left to the
    /// store and the connection is told to re-read it.
    #[test]
    fn pushes_to_a_slow_reader_are_bounded_in_bytes() {
        let hub = Hub::default();
        let account = AccountId([1; 20]);
        let (id, control) = hub.register(account);
        let mut pushes = hub.subscribe(account, id).expect("registered");
        let len = 1024 * 1024;
        let batch: Vec<Queued> = (1..=64).map(|id| queued(id, account, len)).collect();
        hub.push(&batch);

        assert!(control.lagged.load(Ordering::Acquire), "the reader was not told it lags");
        let mut held = 0;
        while let Ok(item) = pushes.try_recv() {
            held += item.payload.len();
        }
        assert!(held <= PUSH_BYTES, "{held} bytes buffered for one connection");
        assert_eq!(control.buffered.load(Ordering::Acquire), held);
    }

    /// One payload larger than the cap still gets through to a reader that
    /// has nothing buffered.
    #[test]
    fn one_large_push_gets_through() {
        let hub = Hub::default();
        let account = AccountId([2; 20]);
        let (id, control) = hub.register(account);
        let mut pushes = hub.subscribe(account, id).expect("registered");
        hub.push(&[queued(1, account, PUSH_BYTES + 1)]);
        assert!(!control.lagged.load(Ordering::Acquire));
        assert_eq!(pushes.try_recv().expect("pushed").id, 1);
    }
}

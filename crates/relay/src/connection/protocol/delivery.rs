//! Delivering mailboxes to one connection: everything stored, then
//! `QueueEmpty`, then live pushes; re-reads the store whenever pushes were
//! dropped. A queue connection's mailboxes are its queues (more can join
//! while it runs); a logged-in connection's is its introduction mailbox.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use hush_proto::RelayFrame;
use tokio::sync::{mpsc, Semaphore};

use super::{refuse, store_error_code, OutFrame, Outbound};
use crate::hub::Control;
use crate::server::Shared;
use crate::store::{Mailbox, Queued, PAGE_BYTES};

/// Pushes delivered per turn of the delivery loop.
const PUSH_BATCH: usize = 64;

/// Payloads read from the store per page while draining a mailbox.
const DRAIN_PAGE: u32 = 512;

/// Payload bytes of deliveries one connection may have queued and not yet
/// written: a client that stops reading holds at most this much of the
/// relay's memory in deliveries, whatever the size of its mailbox's payloads.
const DELIVERY_WINDOW: usize = 8 * 1024 * 1024;

pub(super) struct Delivery {
    shared: Arc<Shared>,
    control: Arc<Control>,
    outbound: mpsc::Sender<Outbound>,
    window: Arc<Semaphore>,
    /// The last id delivered of each mailbox.
    cursors: HashMap<Mailbox, u64>,
}

impl Delivery {
    pub(super) fn new(
        shared: Arc<Shared>,
        control: Arc<Control>,
        outbound: mpsc::Sender<Outbound>,
        mailboxes: impl IntoIterator<Item = Mailbox>,
    ) -> Self {
        Self {
            shared,
            control,
            outbound,
            window: Arc::new(Semaphore::new(DELIVERY_WINDOW)),
            cursors: mailboxes.into_iter().map(|mailbox| (mailbox, 0)).collect(),
        }
    }

    /// Runs until the connection ends. Mailboxes added to the control's
    /// `added` (already subscribed at the hub) are drained, then followed
    /// live.
    pub(super) async fn run(mut self) {
        // What each wake-up does is boxed, and nothing is awaited inside
        // the select: an idle connection's delivery is as big as its
        // largest await point, and it spends its life waiting here.
        let mut first = true;
        loop {
            if Box::pin(self.drain_all(first)).await.is_err() {
                return;
            }
            first = false;
            loop {
                let woke: Pin<Box<dyn Future<Output = Result<(), ()>> + Send + '_>> = tokio::select! {
                    _ = self.control.pushed.notified() => Box::pin(self.take_pushes()),
                    _ = self.control.add.notified() => Box::pin(self.take_added()),
                    _ = self.control.lag.notified() => break,
                };
                if woke.await.is_err() {
                    return;
                }
            }
        }
    }

    /// Every mailbox from its cursor, then (the first time) `QueueEmpty`.
    async fn drain_all(&mut self, first: bool) -> Result<(), ()> {
        self.control.lagged.store(false, Ordering::Release);
        let mailboxes: Vec<Mailbox> = self.cursors.keys().copied().collect();
        for mailbox in mailboxes {
            self.drain(mailbox).await?;
        }
        // Once: a client counts one `QueueEmpty` for `Subscribe` and one
        // per proof after it, and a re-read after a lag is neither.
        if first {
            self.send(RelayFrame::QueueEmpty).await?;
        }
        Ok(())
    }

    /// Delivers what was pushed, a batch at a time: the rest waits for the
    /// next turn, so that queues added and lags are seen meanwhile.
    async fn take_pushes(&mut self) -> Result<(), ()> {
        for _ in 0..PUSH_BATCH {
            let Some(queued) = self.next_push() else {
                // Emptied: a queue that grew in a burst gives its room back.
                let mut pushes =
                    self.control.pushes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if pushes.is_empty() && pushes.capacity() > PUSH_BATCH {
                    *pushes = std::collections::VecDeque::new();
                }
                return Ok(());
            };
            self.control.buffered.fetch_sub(queued.payload.len(), Ordering::AcqRel);
            // Pushes of a mailbox not drained yet are ignored: the drain
            // reads them from the store. A mailbox numbers its entries one
            // after another, so a push past the next number means an entry
            // between (another relay's, its wake-up still on the way): read
            // on from the store, which has both, in order.
            let Some(&last) = self.cursors.get(&queued.to) else { continue };
            match queued.id {
                id if id == last + 1 => self.deliver(&queued).await?,
                id if id > last => self.drain(queued.to).await?,
                _ => {}
            }
        }
        self.control.pushed.notify_one();
        Ok(())
    }

    /// Reads the mailboxes another relay wrote to on from their cursors
    /// (one not drained yet is left to its batch), then drains each batch
    /// of queues proved from the start, each ending with a `QueueEmpty` of
    /// its own.
    async fn take_added(&mut self) -> Result<(), ()> {
        let woken = std::mem::take(&mut *lock(&self.control.added));
        for mailbox in woken {
            if self.cursors.contains_key(&mailbox) {
                self.drain(mailbox).await?;
            }
        }
        let batches = std::mem::take(&mut *lock(&self.control.proved));
        for batch in batches {
            for mailbox in batch {
                self.cursors.entry(mailbox).or_insert(0);
                self.drain(mailbox).await?;
            }
            self.send(RelayFrame::QueueEmpty).await?;
        }
        Ok(())
    }

    /// The oldest payload pushed and not taken yet.
    fn next_push(&self) -> Option<crate::hub::Push> {
        self.control.pushes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop_front()
    }

    /// Sends everything queued in `mailbox`, page by page; the next page is
    /// read while the current one goes out.
    async fn drain(&mut self, mailbox: Mailbox) -> Result<(), ()> {
        let after = self.cursors.get(&mailbox).copied().unwrap_or(0);
        let mut page = self.read_page(mailbox, after).await?;
        loop {
            // A page is the last one unless it is full by count, or holds
            // enough bytes that the store may have cut it by size (a page
            // cut by size holds more than PAGE_BYTES less one payload).
            let bytes: usize = page.iter().map(|queued| queued.payload.len()).sum();
            let maybe_cut = bytes > PAGE_BYTES - hush_proto::limits::MAX_PAYLOAD_BYTES;
            let next = match page.last() {
                Some(last) if page.len() == DRAIN_PAGE as usize || maybe_cut => {
                    Some(self.read_page(mailbox, last.id))
                }
                _ => None,
            };
            for queued in &page {
                self.deliver(queued).await?;
            }
            match next {
                Some(next) => page = next.await?,
                None => return Ok(()),
            }
        }
    }

    /// Reads the next page. A read that fails ends the connection with an
    /// error, so the client reconnects and drains again, rather than
    /// staying connected to a delivery that has stopped.
    fn read_page(
        &self,
        mailbox: Mailbox,
        after: u64,
    ) -> impl std::future::Future<Output = Result<Vec<Queued>, ()>> {
        let page = self.shared.reader.pending(mailbox, after, DRAIN_PAGE, self.shared.now());
        let outbound = self.outbound.clone();
        async move {
            match page.await {
                Ok(page) => Ok(page),
                Err(error) => {
                    let _ = refuse(&outbound, store_error_code(&error)).await;
                    Err(())
                }
            }
        }
    }

    async fn deliver(&mut self, queued: &Queued) -> Result<(), ()> {
        self.cursors.insert(queued.to, queued.id);
        self.shared.metrics.delivered(queued.payload.len());
        // Permits count payload bytes (one alone may exceed the window:
        // it then waits for the window to be empty).
        let bytes = queued.payload.len().clamp(1, DELIVERY_WINDOW);
        let permits = u32::try_from(bytes).unwrap_or(u32::MAX);
        let window = Arc::clone(&self.window).acquire_many_owned(permits).await.map_err(|_| ())?;
        let payload = queued.payload.to_vec();
        let frame = match queued.to {
            Mailbox::Account(_) => {
                RelayFrame::Deliver { id: queued.id, arrived_at: queued.arrived_at, payload }
            }
            Mailbox::Queue(queue) => {
                RelayFrame::QueueDeliver { queue, seq: queued.id, arrived_at: queued.arrived_at, payload }
            }
        };
        let out = OutFrame { frame, _window: Some(window) };
        self.outbound.send(Outbound::Frame(Box::new(out))).await.map_err(|_| ())
    }

    async fn send(&self, frame: RelayFrame) -> Result<(), ()> {
        self.outbound.send(Outbound::frame(frame)).await.map_err(|_| ())
    }
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

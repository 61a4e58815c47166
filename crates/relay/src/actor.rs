//! The store worker: one thread owns the store and applies operations in
//! batches, so one durable commit (one fsync) covers every operation that
//! arrived while the previous batch was being written.

use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use crate::store::{CommitOutcome, Op, Output, Queued, RelayStore, StoreError};

/// Most operations in one batch.
const MAX_BATCH: usize = 512;

type Reply = oneshot::Sender<Result<Output, StoreError>>;

/// A cheap, cloneable handle to the store worker.
#[derive(Clone)]
pub struct StoreHandle {
    sender: std_mpsc::Sender<(Op, Reply)>,
}

/// The worker thread; joining it waits until every queued operation is durable.
pub struct StoreWorker {
    thread: JoinHandle<()>,
}

impl StoreWorker {
    /// Waits for the worker to finish the operations already sent. The worker
    /// stops once every [`StoreHandle`] is dropped.
    pub fn join(self) {
        let _ = self.thread.join();
    }
}

/// Starts the worker thread over `store`. `stored` is called with every
/// payload queued, after its batch is durable and in commit order (so pushes
/// to connected recipients never overtake each other), before any reply.
pub fn spawn(
    store: impl RelayStore,
    stored: impl Fn(&[Queued]) + Send + 'static,
) -> std::io::Result<(StoreHandle, StoreWorker)> {
    let (sender, receiver) = std_mpsc::channel();
    let thread =
        std::thread::Builder::new().name("hush-store".into()).spawn(move || run(store, receiver, stored))?;
    Ok((StoreHandle { sender }, StoreWorker { thread }))
}

fn run(mut store: impl RelayStore, receiver: std_mpsc::Receiver<(Op, Reply)>, stored: impl Fn(&[Queued])) {
    while let Ok(first) = receiver.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let (ops, replies): (Vec<Op>, Vec<Reply>) = batch.into_iter().unzip();
        let results = store.apply(ops);
        for result in &results {
            if let Ok(Output::Enqueued(queued) | Output::Commit(CommitOutcome::Accepted(queued))) = result {
                stored(queued);
            }
        }
        for (reply, result) in replies.into_iter().zip(results) {
            let _ = reply.send(result);
        }
    }
}

/// Starts a reader thread over a connection of its own: it answers
/// [`Op::Pending`] (mailbox drains) from the last committed state, so a
/// drain never waits behind write batches and their fsyncs. WAL mode lets it
/// read while the worker writes. It stops once every handle is dropped.
pub fn spawn_reader(store: crate::store::SqliteStore) -> std::io::Result<StoreHandle> {
    let (sender, receiver) = std_mpsc::channel::<(Op, Reply)>();
    std::thread::Builder::new().name("hush-reader".into()).spawn(move || {
        while let Ok((op, reply)) = receiver.recv() {
            let _ = reply.send(store.read(op));
        }
    })?;
    Ok(StoreHandle { sender })
}

impl StoreHandle {
    /// Runs one operation; resolves once it is durable.
    pub async fn run(&self, op: Op) -> Result<Output, StoreError> {
        self.start(op).await
    }

    /// Hands the operation to the worker now (not when first polled), so
    /// the caller can do other work while it runs; the future resolves
    /// with its result.
    pub fn start(&self, op: Op) -> impl std::future::Future<Output = Result<Output, StoreError>> {
        let (reply, answer) = oneshot::channel();
        let sent = self.sender.send((op, reply));
        async move {
            sent.map_err(|_| StoreError::Closed)?;
            answer.await.map_err(|_| StoreError::Closed)?
        }
    }
}

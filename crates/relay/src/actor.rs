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

impl StoreHandle {
    /// Runs one operation; resolves once it is durable.
    pub async fn run(&self, op: Op) -> Result<Output, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.sender.send((op, reply)).map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

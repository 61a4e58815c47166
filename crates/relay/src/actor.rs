//! The store worker: one thread owns the store and applies operations in
//! batches, so one durable commit (one fsync) covers every operation that
//! arrived while the previous batch was being written.
//!
//! Callers use [`StoreHandle`]'s typed methods, one per operation; each
//! hands its operation to the worker at once and returns a future of its
//! own result type, so the pairing of request and answer is checked by the
//! compiler.

use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use futures_util::future::Either;
use hush_proto::{AccountId, Capability, IdentityKey, QueueId};
use tokio::sync::oneshot;

use crate::metrics::Metrics;
use crate::store::{
    AccountRecord, CommitOutcome, Enqueued, Mailbox, Operations, Queued, RelayStore, SealedCommitRequest,
    Stats, Store, StoreError, UnixSeconds, Write, Written,
};

/// Most operations in one batch.
const MAX_BATCH: usize = 512;

/// One operation waiting for the worker: run inside the batch, then
/// answered once the batch's fate is known.
trait Job: Send {
    /// Runs the operation and keeps its result.
    fn run(&mut self, store: &mut dyn Operations);
    /// The write this job is, if it is one the store may do together with
    /// its neighbours in the batch ([`Operations::write_each`]).
    fn write(&self) -> Option<&Write> {
        None
    }
    /// Keeps the result of the job's [`Job::write`], done by the batch.
    fn written(&mut self, _result: Result<Written, StoreError>) {}
    /// Payloads this job stored (pushed to recipients once durable).
    fn stored(&self) -> &[Queued];
    /// Sends the result, or the batch's failure if it was not made durable.
    fn answer(self: Box<Self>, batch: &Result<(), StoreError>);
}

/// An operation's answer once its batch's fate is known: its own result
/// if the batch was made durable, else why not.
fn settle<T>(batch: &Result<(), StoreError>, result: Option<Result<T, StoreError>>) -> Result<T, StoreError> {
    match (batch, result) {
        (Ok(()), Some(result)) => result,
        (Err(error), _) if error.is_unavailable() => Err(StoreError::Unavailable),
        (Err(error), _) => Err(StoreError::Batch(error.to_string())),
        (Ok(()), None) => Err(StoreError::Batch("operation did not run".into())),
    }
}

/// A job that is a [`Write`].
struct Described {
    write: Write,
    result: Option<Result<Written, StoreError>>,
    reply: oneshot::Sender<Result<Written, StoreError>>,
}

impl Job for Described {
    fn run(&mut self, store: &mut dyn Operations) {
        self.result = Some(self.write.run(store));
    }

    fn write(&self) -> Option<&Write> {
        Some(&self.write)
    }

    fn written(&mut self, result: Result<Written, StoreError>) {
        self.result = Some(result);
    }

    fn stored(&self) -> &[Queued] {
        match &self.result {
            Some(Ok(Written::Enqueued(enqueued))) => &enqueued.queued,
            _ => &[],
        }
    }

    fn answer(self: Box<Self>, batch: &Result<(), StoreError>) {
        let _ = self.reply.send(settle(batch, self.result));
    }
}

/// The error for a [`Written`] of another kind than its [`Write`]'s (a
/// store that answered out of order).
fn mismatched(written: &Written) -> StoreError {
    StoreError::Batch(format!("the store answered a write with {written:?}"))
}

struct Call<T, F> {
    work: Option<F>,
    stored: fn(&T) -> &[Queued],
    result: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Job for Call<T, F>
where
    T: Send + 'static,
    F: FnOnce(&mut dyn Operations) -> Result<T, StoreError> + Send + 'static,
{
    fn run(&mut self, store: &mut dyn Operations) {
        if let Some(work) = self.work.take() {
            self.result = Some(work(store));
        }
    }

    fn stored(&self) -> &[Queued] {
        match &self.result {
            Some(Ok(value)) => (self.stored)(value),
            _ => &[],
        }
    }

    fn answer(self: Box<Self>, batch: &Result<(), StoreError>) {
        let _ = self.reply.send(settle(batch, self.result));
    }
}

fn nothing_stored<T>(_: &T) -> &[Queued] {
    &[]
}

fn enqueued(enqueued: &Enqueued) -> &[Queued] {
    &enqueued.queued
}

fn committed(outcome: &CommitOutcome) -> &[Queued] {
    match outcome {
        CommitOutcome::Accepted(enqueued) => &enqueued.queued,
        CommitOutcome::Repeated | CommitOutcome::Stale { .. } => &[],
    }
}

/// Where one worker takes its jobs.
type Lane = std_mpsc::Sender<Box<dyn Job>>;

/// A cheap, cloneable handle to the store worker (or workers: lanes, each
/// with a connection of its own, for a store that takes several writers).
/// Every write to one queue, and every commit of one group, goes through
/// the same lane, so they reach the store in the order they came.
#[derive(Clone)]
pub struct StoreHandle {
    senders: Arc<[Lane]>,
}

/// A read, run on a reader thread.
type Read = Box<dyn FnOnce(&mut dyn Store) + Send>;

/// A handle to a reader thread: it can only read.
#[derive(Clone)]
pub struct ReadHandle {
    sender: std_mpsc::Sender<Read>,
}

/// The worker threads; joining them waits until every queued operation is
/// durable.
pub struct StoreWorker {
    threads: Vec<JoinHandle<()>>,
}

impl StoreWorker {
    /// Waits for the workers to finish the operations already sent. They
    /// stop once every [`StoreHandle`] is dropped.
    pub fn join(self) {
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

/// Starts the worker thread over the store `open` opens there (a store's
/// connection is made, used and closed on its own thread, never on the
/// async runtime's). `stored` is called with every payload queued, after
/// its batch is durable and in commit order (so pushes to connected
/// recipients never overtake each other), before any reply.
pub fn spawn<S: RelayStore>(
    open: impl FnOnce() -> Result<S, StoreError> + Send + 'static,
    stored: impl Fn(&[Queued]) + Send + 'static,
    metrics: Arc<Metrics>,
) -> Result<(StoreHandle, StoreWorker), StoreError> {
    let (sender, thread) = start_worker(open, stored, metrics)?;
    Ok((StoreHandle { senders: Arc::from([sender]) }, StoreWorker { threads: vec![thread] }))
}

/// Like [`spawn`], with `lanes` workers, each on a store `open` opens for
/// it (PostgreSQL: a connection each, so one batch's round trips do not
/// wait for another's).
pub fn spawn_lanes<S: RelayStore>(
    lanes: usize,
    open: impl Fn() -> Result<S, StoreError> + Send + Sync + 'static,
    stored: impl Fn(&[Queued]) + Send + Sync + 'static,
    metrics: Arc<Metrics>,
) -> Result<(StoreHandle, StoreWorker), StoreError> {
    let open = Arc::new(open);
    let stored = Arc::new(stored);
    let mut senders = Vec::new();
    let mut threads = Vec::new();
    for _ in 0..lanes.max(1) {
        let (open, stored) = (Arc::clone(&open), Arc::clone(&stored));
        let (sender, thread) =
            start_worker(move || open(), move |queued| stored(queued), Arc::clone(&metrics))?;
        senders.push(sender);
        threads.push(thread);
    }
    Ok((StoreHandle { senders: Arc::from(senders) }, StoreWorker { threads }))
}

fn start_worker<S: RelayStore>(
    open: impl FnOnce() -> Result<S, StoreError> + Send + 'static,
    stored: impl Fn(&[Queued]) + Send + 'static,
    metrics: Arc<Metrics>,
) -> Result<(Lane, JoinHandle<()>), StoreError> {
    let (sender, receiver) = std_mpsc::channel();
    let (opened, outcome) = std_mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("hush-store".into())
        .spawn(move || match open() {
            Ok(store) => {
                let _ = opened.send(Ok(()));
                run(store, receiver, stored, &metrics);
            }
            Err(error) => {
                let _ = opened.send(Err(error));
            }
        })
        .map_err(|error| StoreError::Batch(error.to_string()))?;
    outcome.recv().map_err(|_| StoreError::Closed)??;
    Ok((sender, thread))
}

fn run(
    mut store: impl RelayStore,
    receiver: std_mpsc::Receiver<Box<dyn Job>>,
    stored: impl Fn(&[Queued]),
    metrics: &Metrics,
) {
    while let Ok(first) = receiver.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let outcome = store.batch(&mut |operations| {
            let mut next = 0;
            while next < batch.len() {
                // A run of jobs that are writes goes to the store at once.
                let run = batch[next..].iter().take_while(|job| job.write().is_some()).count();
                if run == 0 {
                    batch[next].run(operations);
                    next += 1;
                    continue;
                }
                let end = next + run;
                let results = {
                    let writes: Vec<&Write> = batch[next..end].iter().filter_map(|job| job.write()).collect();
                    operations.write_each(&writes)
                };
                for (job, result) in batch[next..end].iter_mut().zip(results) {
                    job.written(result);
                }
                next = end;
            }
        });
        metrics.batch(batch.len(), started.elapsed(), outcome.is_ok());
        if outcome.is_ok() {
            for job in &batch {
                let queued = job.stored();
                if !queued.is_empty() {
                    for copy in queued {
                        metrics.queued(1, copy.payload.len());
                    }
                    stored(queued);
                }
            }
        }
        for job in batch {
            job.answer(&outcome);
        }
    }
}

/// Starts a reader thread over a connection of its own (opened there by
/// `open`): it answers [`ReadHandle::pending`] (mailbox drains) from the
/// last committed state, so a drain never waits behind write batches and
/// their fsyncs (SQLite's WAL mode, or PostgreSQL's snapshots, let it read
/// while the worker writes). It stops once every handle is dropped.
pub fn spawn_reader(
    open: impl FnOnce() -> Result<Box<dyn Store>, StoreError> + Send + 'static,
) -> Result<ReadHandle, StoreError> {
    let (sender, receiver) = std_mpsc::channel::<Read>();
    let (opened, outcome) = std_mpsc::channel();
    std::thread::Builder::new()
        .name("hush-reader".into())
        .spawn(move || match open() {
            Ok(mut store) => {
                let _ = opened.send(Ok(()));
                while let Ok(read) = receiver.recv() {
                    read(&mut *store);
                }
            }
            Err(error) => {
                let _ = opened.send(Err(error));
            }
        })
        .map_err(|error| StoreError::Batch(error.to_string()))?;
    outcome.recv().map_err(|_| StoreError::Closed)??;
    Ok(ReadHandle { sender })
}

impl ReadHandle {
    fn read<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut dyn Store) -> Result<T, StoreError> + Send + 'static,
    ) -> impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let sent = self.sender.send(Box::new(move |store: &mut dyn Store| {
            let _ = reply.send(work(store));
        }));
        async move {
            sent.map_err(|_| StoreError::Closed)?;
            answer.await.map_err(|_| StoreError::Closed)?
        }
    }

    /// See [`Operations::queue_owner`].
    pub fn queue_owner(
        &self,
        queue: QueueId,
    ) -> impl std::future::Future<Output = Result<Option<[u8; 32]>, StoreError>> + Send + 'static {
        self.read(move |s| s.queue_owner(&queue))
    }

    /// See [`Operations::pending`].
    pub fn pending(
        &self,
        mailbox: Mailbox,
        after: u64,
        limit: u32,
        now: UnixSeconds,
    ) -> impl std::future::Future<Output = Result<Vec<Queued>, StoreError>> + Send + 'static {
        self.read(move |s| s.pending(&mailbox, after, limit, now))
    }

    /// See [`crate::store::Admin::stats`].
    pub fn stats(&self) -> impl std::future::Future<Output = Result<Stats, StoreError>> + Send + 'static {
        self.read(|s| s.stats())
    }
}

/// Hands `work` to a thread now (not when first polled), so the caller can
/// do other work while it runs and operations reach the store in the order
/// they were started; the future resolves with its result once it is
/// durable.
fn call<T, F>(
    sender: &std_mpsc::Sender<Box<dyn Job>>,
    stored: fn(&T) -> &[Queued],
    work: F,
) -> impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static
where
    T: Send + 'static,
    F: FnOnce(&mut dyn Operations) -> Result<T, StoreError> + Send + 'static,
{
    let (reply, answer) = oneshot::channel();
    let job = Box::new(Call { work: Some(work), stored, result: None, reply });
    let sent = sender.send(job);
    async move {
        sent.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

impl StoreHandle {
    fn call<T, F>(
        &self,
        stored: fn(&T) -> &[Queued],
        work: F,
    ) -> impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn Operations) -> Result<T, StoreError> + Send + 'static,
    {
        self.call_on(0, stored, work)
    }

    /// Like `call`, on the lane of `key` (a queue's or a group's first byte).
    fn call_on<T, F>(
        &self,
        key: u8,
        stored: fn(&T) -> &[Queued],
        work: F,
    ) -> impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn Operations) -> Result<T, StoreError> + Send + 'static,
    {
        call(&self.senders[usize::from(key) % self.senders.len()], stored, work)
    }

    /// Hands `write` to the lane of `key` now, as [`call`] does.
    fn write_on(
        &self,
        key: u8,
        write: Write,
    ) -> impl std::future::Future<Output = Result<Written, StoreError>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Described { write, result: None, reply });
        let sent = self.senders[usize::from(key) % self.senders.len()].send(job);
        async move {
            sent.map_err(|_| StoreError::Closed)?;
            answer.await.map_err(|_| StoreError::Closed)?
        }
    }

    /// See [`Operations::register`].
    pub fn register(
        &self,
        invite_hash: [u8; 32],
        identity_key: IdentityKey,
        wipe_hash: [u8; 32],
        now: UnixSeconds,
    ) -> impl std::future::Future<Output = Result<AccountId, StoreError>> + Send + 'static {
        self.call(nothing_stored, move |s| s.register(&invite_hash, &identity_key, &wipe_hash, now))
    }

    /// See [`Operations::remote_wipe`].
    pub fn remote_wipe(
        &self,
        account: AccountId,
        secret: [u8; 32],
        now: UnixSeconds,
    ) -> impl std::future::Future<Output = Result<Vec<QueueId>, StoreError>> + Send + 'static {
        self.call(nothing_stored, move |s| s.remote_wipe(&account, &secret, now))
    }

    /// See [`Operations::account`].
    pub fn account(
        &self,
        account: AccountId,
    ) -> impl std::future::Future<Output = Result<Option<AccountRecord>, StoreError>> + Send + 'static {
        self.call(nothing_stored, move |s| s.account(&account))
    }

    /// See [`Operations::add_key_packages`].
    pub fn add_key_packages(
        &self,
        account: AccountId,
        one_time: Vec<Vec<u8>>,
        last_resort: Option<Vec<u8>>,
        expires: UnixSeconds,
        now: UnixSeconds,
    ) -> impl std::future::Future<Output = Result<u32, StoreError>> + Send + 'static {
        self.call(nothing_stored, move |s| {
            s.add_key_packages(&account, &one_time, last_resort.as_deref(), expires, now)
        })
    }

    /// See [`Operations::count_key_packages`].
    pub fn count_key_packages(
        &self,
        account: AccountId,
        now: UnixSeconds,
    ) -> impl std::future::Future<Output = Result<u32, StoreError>> + Send + 'static {
        self.call(nothing_stored, move |s| s.count_key_packages(&account, now))
    }

    /// See [`Operations::take_key_package`].
    pub fn take_key_package(
        &self,
        account: AccountId,
        now: UnixSeconds,
    ) -> impl std::future::Future<Output = Result<Vec<u8>, StoreError>> + Send + 'static {
        self.call(nothing_stored, move |s| s.take_key_package(&account, now))
    }

    /// See [`Operations::ack`].
    pub fn ack(
        &self,
        account: AccountId,
        ids: Vec<u64>,
    ) -> impl std::future::Future<Output = Result<u64, StoreError>> + Send + 'static {
        self.call(nothing_stored, move |s| s.ack(&account, &ids))
    }

    /// See [`Operations::create_queue`].
    pub fn create_queue(
        &self,
        id: QueueId,
        owner_key: [u8; 32],
        write_hash: [u8; 32],
        now: UnixSeconds,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send + 'static {
        self.call(nothing_stored, move |s| s.create_queue(&id, &owner_key, &write_hash, now))
    }

    /// See [`Operations::touch_queues`].
    pub fn touch_queues(
        &self,
        queues: Vec<QueueId>,
        now: UnixSeconds,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send + 'static {
        self.call(nothing_stored, move |s| s.touch_queues(&queues, now))
    }

    /// See [`Operations::enqueue_sealed`].
    pub fn enqueue_sealed(
        &self,
        targets: Vec<Capability>,
        payload: Arc<[u8]>,
        now: UnixSeconds,
        expires: UnixSeconds,
    ) -> impl std::future::Future<Output = Result<Enqueued, StoreError>> + Send + 'static {
        let lane = targets.first().map_or(0, |target| target.queue.0[0]);
        if let [target] = &targets[..] {
            let written =
                self.write_on(lane, Write::Enqueue { target: target.clone(), payload, now, expires });
            return Either::Left(async move {
                match written.await? {
                    Written::Enqueued(enqueued) => Ok(enqueued),
                    other => Err(mismatched(&other)),
                }
            });
        }
        Either::Right(
            self.call_on(lane, enqueued, move |s| s.enqueue_sealed(&targets, &payload, now, expires)),
        )
    }

    /// See [`Operations::commit_sealed`].
    pub fn commit_sealed(
        &self,
        commit: SealedCommitRequest,
        now: UnixSeconds,
        expires: UnixSeconds,
    ) -> impl std::future::Future<Output = Result<CommitOutcome, StoreError>> + Send + 'static {
        let lane = commit.commit.group.0.first().copied().unwrap_or(0);
        self.call_on(lane, committed, move |s| s.commit_sealed(&commit, now, expires))
    }

    /// See [`Operations::ack_queue`].
    pub fn ack_queue(
        &self,
        queue: QueueId,
        seqs: Vec<u64>,
    ) -> impl std::future::Future<Output = Result<u64, StoreError>> + Send + 'static {
        let written = self.write_on(queue.0[0], Write::Ack { queue, seqs });
        async move {
            match written.await? {
                Written::Acked(deleted) => Ok(deleted),
                other => Err(mismatched(&other)),
            }
        }
    }

    /// See [`Operations::rekey_queue`].
    pub fn rekey_queue(
        &self,
        queue: QueueId,
        owner_key: [u8; 32],
        wipe_tag: [u8; 32],
    ) -> impl std::future::Future<Output = Result<bool, StoreError>> + Send + 'static {
        self.call(nothing_stored, move |s| s.rekey_queue(&queue, &owner_key, &wipe_tag))
    }

    /// See [`Operations::delete_queue`].
    pub fn delete_queue(
        &self,
        queue: QueueId,
    ) -> impl std::future::Future<Output = Result<bool, StoreError>> + Send + 'static {
        self.call(nothing_stored, move |s| s.delete_queue(&queue))
    }

    /// See [`Operations::spend_token`].
    pub fn spend_token(
        &self,
        day: u64,
        nonce: [u8; 32],
    ) -> impl std::future::Future<Output = Result<bool, StoreError>> + Send + 'static {
        let written = self.write_on(0, Write::Spend { day, nonce });
        async move {
            match written.await? {
                Written::Spent(fresh) => Ok(fresh),
                other => Err(mismatched(&other)),
            }
        }
    }

    /// See [`Operations::add_report`].
    pub fn add_report(
        &self,
        account: AccountId,
        content: Vec<u8>,
        signature: [u8; 64],
        reason: String,
        now: UnixSeconds,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send + 'static {
        self.call(nothing_stored, move |s| s.add_report(&account, &content, &signature, &reason, now))
    }

    /// See [`Operations::purge_expired`].
    pub fn purge_expired(
        &self,
        now: UnixSeconds,
    ) -> impl std::future::Future<Output = Result<u64, StoreError>> + Send + 'static {
        self.call(nothing_stored, move |s| s.purge_expired(now))
    }
}

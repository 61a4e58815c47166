//! A queue connection: a device proves it owns queues (a signature with
//! each queue's owner key over the connection's challenge) and receives
//! from them. It never logs in and never sends, so the relay sees queues
//! received together, not whose they are.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use hush_proto::limits::MAX_QUEUES_PER_SUBSCRIBE;
use hush_proto::{queue_auth_message, ClientFrame, ErrorCode, QueueId, RelayFrame};
use tokio::sync::{mpsc, watch, Semaphore};

use super::delivery::Delivery;
use super::{refuse, spawn_answer, Answer, ConnectionError, FrameSource, Outbound, RateLimit, IN_FLIGHT};
use crate::hub::Control;
use crate::server::Shared;
use crate::store::Mailbox;

/// Most queues one connection receives from.
pub(crate) const MAX_QUEUES_PER_CONNECTION: usize = 4096;

/// What a queue connection proved at its start.
pub(crate) struct Proved {
    /// The connection's challenge, which later proofs sign too.
    pub(crate) nonce: [u8; 32],
    /// The queues proved.
    pub(crate) queues: Vec<QueueId>,
}

/// Checks proofs of owning queues: every queue must exist and its owner
/// key must have signed [`queue_auth_message`]. All or nothing; an unknown
/// queue and a bad signature are refused alike.
pub(super) async fn prove(
    shared: &Shared,
    nonce: &[u8; 32],
    proofs: &[(QueueId, [u8; 64])],
) -> Result<Vec<QueueId>, ErrorCode> {
    let queues: Vec<QueueId> = proofs.iter().map(|(queue, _)| *queue).collect();
    let unique: HashSet<&QueueId> = queues.iter().collect();
    if queues.is_empty() || unique.len() != queues.len() || queues.len() > MAX_QUEUES_PER_SUBSCRIBE {
        return Err(ErrorCode::Malformed);
    }
    // Every lookup is handed to the reader at once, then awaited: proving
    // writes nothing until the proofs verify.
    let lookups: Vec<_> = queues.iter().map(|queue| shared.reader.queue_owner(*queue)).collect();
    let mut owners = Vec::with_capacity(lookups.len());
    for lookup in lookups {
        owners.push(lookup.await.map_err(|error| super::store_error_code(&error))?);
    }
    let pin = shared.pin;
    let nonce = *nonce;
    let proofs = proofs.to_vec();
    let verified = tokio::task::spawn_blocking(move || {
        proofs.iter().zip(&owners).all(|((queue, signature), owner)| {
            owner.is_some_and(|key| {
                super::verify_with(&key, &queue_auth_message(&nonce, &pin, queue), signature)
            })
        })
    })
    .await
    .unwrap_or(false);
    if verified {
        let touched = shared.store.touch_queues(queues.clone(), shared.now());
        touched.await.map_err(|error| super::store_error_code(&error))?;
        Ok(queues)
    } else {
        Err(ErrorCode::BadQueue)
    }
}

pub(super) struct QueueSession {
    shared: Arc<Shared>,
    outbound: mpsc::Sender<Outbound>,
    nonce: [u8; 32],
    in_flight: Arc<Semaphore>,
    connection_id: u64,
    control: Arc<Control>,
    subscribed: HashSet<QueueId>,
    delivery: Option<tokio::task::JoinHandle<()>>,
}

impl QueueSession {
    pub(super) fn new(shared: Arc<Shared>, proved: Proved, outbound: mpsc::Sender<Outbound>) -> Self {
        let (connection_id, control) = shared.hub.register(None);
        let mut session = Self {
            shared,
            outbound,
            nonce: proved.nonce,
            in_flight: Arc::new(Semaphore::new(IN_FLIGHT)),
            connection_id,
            control,
            subscribed: HashSet::new(),
            delivery: None,
        };
        session.add(&proved.queues);
        session
    }

    pub(super) async fn run(
        mut self,
        incoming: &mut impl FrameSource,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), ConnectionError> {
        let mut limit = RateLimit::new(&self.shared);
        let control = Arc::clone(&self.control);
        loop {
            // Each branch makes the work to do, boxed, and nothing is
            // awaited inside the select: an idle connection's task is as big
            // as its largest await point, and it spends its life waiting
            // for the next frame here, so neither a frame (a few hundred
            // bytes) nor its handling may stay reserved beside that wait.
            let work: super::Work<'_> = tokio::select! {
                frame = incoming.next_frame() => Box::pin(self.take(frame?)),
                // A queue it proved was handed over to another owner key,
                // or deleted by a wipe order (passed on, if it came here).
                _ = control.close.notified() => super::closed(&self.outbound, &control, ErrorCode::BadQueue),
                _ = shutdown.changed() => super::closed(&self.outbound, &control, ErrorCode::ShuttingDown),
            };
            work.await?;
            if let Some(wait) = limit.take() {
                Box::pin(tokio::time::sleep(wait)).await;
            }
        }
    }

    /// Subscribes queues at the hub (pushes are kept until delivery runs)
    /// and tells a running delivery to drain them: one batch, answered by
    /// one `QueueEmpty` once drained, even if every queue in it was proved
    /// before (a client counts on one per proof).
    fn add(&mut self, queues: &[QueueId]) {
        let mut batch = Vec::new();
        for queue in queues {
            if self.subscribed.insert(*queue) {
                let mailbox = Mailbox::Queue(*queue);
                self.shared.hub.subscribe(mailbox, self.connection_id, &self.control);
                batch.push(mailbox);
            }
        }
        if self.delivery.is_some() {
            self.control.proved.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(batch);
            self.control.add.notify_one();
        }
    }

    /// Handles a frame, or refuses what could not be decoded (which ends
    /// the connection).
    async fn take(&mut self, frame: Result<ClientFrame, ErrorCode>) -> Result<(), ConnectionError> {
        match frame {
            Ok(frame) => {
                self.handle(frame).await;
                Ok(())
            }
            Err(code) => Err(refuse(&self.outbound, code).await),
        }
    }

    async fn handle(&mut self, frame: ClientFrame) {
        match frame {
            ClientFrame::SubscribeQueues { request, proofs } => {
                let answer = if self.subscribed.len() + proofs.len() > MAX_QUEUES_PER_CONNECTION {
                    Answer::Rejected(ErrorCode::TooLarge)
                } else {
                    match prove(&self.shared, &self.nonce, &proofs).await {
                        Ok(queues) => {
                            // Answered before the queues join delivery, so
                            // the answer comes before what they hold.
                            let accepted = RelayFrame::Accepted { request, inactive: Vec::new() };
                            let _ = self.outbound.send(Outbound::frame(accepted)).await;
                            self.add(&queues);
                            return;
                        }
                        Err(code) => Answer::Rejected(code),
                    }
                };
                self.answer(Some(request), answer).await;
            }
            ClientFrame::Subscribe => {
                if self.delivery.is_none() {
                    let mailboxes = self.subscribed.iter().map(|queue| Mailbox::Queue(*queue));
                    let delivery = Delivery::new(
                        Arc::clone(&self.shared),
                        Arc::clone(&self.control),
                        self.outbound.clone(),
                        mailboxes,
                    );
                    self.delivery = Some(tokio::spawn(delivery.run()));
                }
            }
            ClientFrame::AckQueues { items } => {
                // Only the queues this connection proved.
                let mut per_queue: HashMap<QueueId, Vec<u64>> = HashMap::new();
                for (queue, seq) in items {
                    if self.subscribed.contains(&queue) {
                        per_queue.entry(queue).or_default().push(seq);
                    }
                }
                for (queue, seqs) in per_queue {
                    let acked = self.shared.store.ack_queue(queue, seqs);
                    spawn_answer(&self.in_flight, &self.outbound, None, async move {
                        acked.await.map(|_| Answer::Done)
                    })
                    .await;
                }
            }
            ClientFrame::RekeyQueue { request, queue, owner_key, wipe_tag } => {
                if !self.subscribed.contains(&queue) {
                    return self.answer(Some(request), Answer::Rejected(ErrorCode::BadQueue)).await;
                }
                self.shared.hub.close_others(Mailbox::Queue(queue), self.connection_id);
                let rekeyed = self.shared.store.rekey_queue(queue, owner_key, wipe_tag);
                let answer = async move {
                    rekeyed.await.map(|found| {
                        if found {
                            Answer::Done
                        } else {
                            Answer::Rejected(ErrorCode::BadQueue)
                        }
                    })
                };
                spawn_answer(&self.in_flight, &self.outbound, Some(request), answer).await;
            }
            ClientFrame::DeleteQueue { request, queue } => {
                if !self.subscribed.remove(&queue) {
                    return self.answer(Some(request), Answer::Rejected(ErrorCode::BadQueue)).await;
                }
                self.shared.hub.unregister_mailbox(Mailbox::Queue(queue), self.connection_id);
                let deleted = self.shared.store.delete_queue(queue);
                let answer = async move { deleted.await.map(|_| Answer::Done) };
                spawn_answer(&self.in_flight, &self.outbound, Some(request), answer).await;
            }
            other => {
                super::not_here(&self.in_flight, &self.outbound, &other, "not on a queue connection").await
            }
        }
    }

    async fn answer(&self, request: Option<u32>, answer: Answer) {
        spawn_answer(&self.in_flight, &self.outbound, request, async move { Ok(answer) }).await;
    }
}

impl Drop for QueueSession {
    fn drop(&mut self) {
        let mailboxes = self.subscribed.iter().map(|queue| Mailbox::Queue(*queue));
        self.shared.hub.unregister(None, self.connection_id, mailboxes);
        if let Some(delivery) = self.delivery.take() {
            delivery.abort();
        }
    }
}

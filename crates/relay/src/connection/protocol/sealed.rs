//! A sealed connection: it spends a token instead of logging in, then sends,
//! commits, creates queues and fetches key packages without the relay
//! learning who it is. Each token buys a budget of requests and bytes
//! ([`SEALED_REQUESTS_PER_TOKEN`], [`SEALED_BYTES_PER_TOKEN`]); a spent
//! budget is topped up with another token on the same connection.

use std::collections::HashSet;
use std::sync::Arc;

use hush_proto::tokens::Token;
use hush_proto::{
    ClientFrame, Destination, ErrorCode, QueueId, SEALED_BYTES_PER_TOKEN, SEALED_REQUESTS_PER_TOKEN,
};
use rand::RngCore;
use tokio::sync::{mpsc, watch, Semaphore};

use super::{refuse, spawn_answer, Answer, ConnectionError, FrameSource, Outbound, RateLimit, IN_FLIGHT};
use crate::server::Shared;
use crate::store::{CommitOutcome, CommitRequest, SealedCommitRequest, StoreError};

/// What is left of a sealed connection's paid-for budget.
pub(crate) struct Budget {
    requests: u32,
    bytes: u64,
}

impl Budget {
    fn one_token() -> Self {
        Self { requests: SEALED_REQUESTS_PER_TOKEN, bytes: SEALED_BYTES_PER_TOKEN }
    }

    fn top_up(&mut self) {
        self.requests = self.requests.saturating_add(SEALED_REQUESTS_PER_TOKEN);
        self.bytes = self.bytes.saturating_add(SEALED_BYTES_PER_TOKEN);
    }

    /// Takes one request and `bytes` from the budget, if it has them.
    fn charge(&mut self, bytes: usize) -> bool {
        self.charge_requests(1, bytes)
    }

    /// Takes `requests` requests and `bytes` from the budget, if it has
    /// them.
    fn charge_requests(&mut self, requests: u32, bytes: usize) -> bool {
        let bytes = bytes as u64;
        if self.requests < requests || self.bytes < bytes {
            return false;
        }
        self.requests -= requests;
        self.bytes -= bytes;
        true
    }
}

/// Checks a token (one of today's or yesterday's keys) and marks it spent.
pub(super) async fn spend(shared: &Shared, token: Token) -> Result<Budget, ErrorCode> {
    if !shared.tokens.check(&token, shared.now()) {
        shared.metrics.token_refused();
        return Err(ErrorCode::BadToken);
    }
    match shared.store.spend_token(token.day, token.nonce).await {
        Ok(true) => {
            shared.metrics.token_spent();
            Ok(Budget::one_token())
        }
        Ok(false) => {
            shared.metrics.token_refused();
            Err(ErrorCode::BadToken)
        }
        Err(error) => Err(super::store_error_code(&error)),
    }
}

fn has_duplicate_queues<'a>(queues: impl IntoIterator<Item = &'a QueueId>) -> bool {
    let mut seen = HashSet::new();
    queues.into_iter().any(|queue| !seen.insert(*queue))
}

pub(super) struct SealedSession {
    shared: Arc<Shared>,
    outbound: mpsc::Sender<Outbound>,
    in_flight: Arc<Semaphore>,
    budget: Budget,
    connection_id: u64,
}

impl SealedSession {
    pub(super) fn new(shared: Arc<Shared>, budget: Budget, outbound: mpsc::Sender<Outbound>) -> Self {
        let (connection_id, _) = shared.hub.register(None);
        Self { shared, outbound, in_flight: Arc::new(Semaphore::new(IN_FLIGHT)), budget, connection_id }
    }

    pub(super) async fn run(
        mut self,
        incoming: &mut impl FrameSource,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), ConnectionError> {
        let mut limit = RateLimit::new(&self.shared);
        loop {
            // Each branch makes the work to do, boxed, and nothing is
            // awaited inside the select: an idle connection's task is as big
            // as its largest await point, and it spends its life waiting
            // for the next frame here, so neither a frame (a few hundred
            // bytes) nor its handling may stay reserved beside that wait.
            let work: super::Work<'_> = tokio::select! {
                frame = incoming.next_frame() => Box::pin(self.take(frame?)),
                _ = shutdown.changed() => {
                    let outbound = &self.outbound;
                    Box::pin(async move { Err(refuse(outbound, ErrorCode::ShuttingDown).await) })
                }
            };
            work.await?;
            if let Some(wait) = limit.take() {
                Box::pin(tokio::time::sleep(wait)).await;
            }
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
        let store = &self.shared.store;
        match frame {
            ClientFrame::Spend { request, token } => {
                let answer = match spend(&self.shared, token).await {
                    Ok(_) => {
                        self.budget.top_up();
                        Answer::Done
                    }
                    Err(code) => Answer::Rejected(code),
                };
                self.answer(request, answer).await;
            }
            ClientFrame::CreateQueue { request, owner_key, write_hash } => {
                if !self.budget.charge(0) {
                    return self.answer(request, Answer::Rejected(ErrorCode::NeedToken)).await;
                }
                let store = store.clone();
                let now = self.shared.now();
                let created = async move {
                    // A random 128-bit id is taken again only by a broken
                    // random source; try a few before failing.
                    for _ in 0..3 {
                        let mut id = QueueId([0; QueueId::LEN]);
                        rand::rngs::OsRng.fill_bytes(&mut id.0);
                        match store.create_queue(id, owner_key, write_hash, now).await {
                            Ok(()) => return Ok(Answer::QueueCreated(id)),
                            Err(StoreError::QueueIdTaken) => continue,
                            Err(error) => return Err(error),
                        }
                    }
                    Err(StoreError::QueueIdTaken)
                };
                spawn_answer(&self.in_flight, &self.outbound, Some(request), created).await;
            }
            ClientFrame::SealedSend { request, targets, payload, ttl_secs } => {
                // A commit must be ordered, as on a logged-in connection.
                let tagged = matches!(
                    payload.first(),
                    Some(&(hush_proto::COMMIT_PAYLOAD_TAG | hush_proto::WELCOME_PAYLOAD_TAG))
                );
                if tagged || targets.is_empty() || has_duplicate_queues(targets.iter().map(|t| &t.queue)) {
                    return self.answer(request, Answer::Rejected(ErrorCode::Malformed)).await;
                }
                if !self.budget.charge(payload.len()) {
                    return self.answer(request, Answer::Rejected(ErrorCode::NeedToken)).await;
                }
                let (now, expires) = self.shared.expiry(ttl_secs);
                let len = payload.len();
                let queued = store.enqueue_sealed(targets, payload.into(), now, expires);
                let metrics = Arc::clone(&self.shared.metrics);
                let answer = async move {
                    queued.await.map(|enqueued| {
                        metrics.message_accepted(len);
                        Answer::Sent(enqueued.refused)
                    })
                };
                spawn_answer(&self.in_flight, &self.outbound, Some(request), answer).await;
            }
            ClientFrame::SealedCommit {
                request,
                group,
                epoch,
                targets,
                rotate,
                payload,
                welcome,
                next_key,
                signature,
            } => {
                let welcome_queues = welcome.iter().flat_map(|(to, _)| to).filter_map(|to| match to {
                    Destination::Queue(capability) => Some(&capability.queue),
                    Destination::Account(_) => None,
                });
                let welcome_accounts: Vec<_> = welcome
                    .iter()
                    .flat_map(|(to, _)| to)
                    .filter_map(|to| match to {
                        Destination::Account(account) => Some(*account),
                        Destination::Queue(_) => None,
                    })
                    .collect();
                let duplicates = has_duplicate_queues(targets.iter().map(|t| &t.queue).chain(welcome_queues))
                    || has_duplicate_queues(rotate.iter().map(|(t, _)| &t.queue))
                    || super::has_duplicates(&welcome_accounts);
                // A Welcome is stored once for its queues and once per
                // account it goes to: each copy is paid for.
                let copies = 1 + welcome_accounts.len();
                let bytes = payload.len() + welcome.as_ref().map_or(0, |(_, bytes)| bytes.len() * copies);
                let (welcome_to, welcome) = match welcome {
                    Some((to, bytes)) => (to, Some(bytes.into())),
                    None => (Vec::new(), None),
                };
                let commit =
                    CommitRequest { group, epoch, payload: payload.into(), welcome, next_key, signature };
                if duplicates || !commit.well_formed() {
                    return self.answer(request, Answer::Rejected(ErrorCode::Malformed)).await;
                }
                if !self.budget.charge(bytes) {
                    return self.answer(request, Answer::Rejected(ErrorCode::NeedToken)).await;
                }
                let (now, expires) = self.shared.expiry(0);
                let len = commit.payload.len();
                let sealed = SealedCommitRequest { commit, targets, welcome_to, rotate };
                let ordered = store.commit_sealed(sealed, now, expires);
                let metrics = Arc::clone(&self.shared.metrics);
                let answer = async move {
                    ordered.await.map(|outcome| match outcome {
                        CommitOutcome::Accepted(enqueued) => {
                            metrics.commit_accepted(len);
                            Answer::Sent(enqueued.refused)
                        }
                        CommitOutcome::Repeated => Answer::Done,
                        CommitOutcome::Stale { current } => Answer::Stale(current),
                    })
                };
                spawn_answer(&self.in_flight, &self.outbound, Some(request), answer).await;
            }
            ClientFrame::FetchKeyPackage { request, account } => {
                if !self.budget.charge(0) {
                    return self.answer(request, Answer::Rejected(ErrorCode::NeedToken)).await;
                }
                let taken = store.take_key_package(account, self.shared.now());
                let answer = async move { taken.await.map(Answer::KeyPackage) };
                spawn_answer(&self.in_flight, &self.outbound, Some(request), answer).await;
            }
            ClientFrame::Report { request, account, content, signature, reason } => {
                // A whole token's worth of requests: reports are rare, and
                // each costs the relay a signature check and storage.
                if !self.budget.charge_requests(SEALED_REQUESTS_PER_TOKEN, content.len() + reason.len()) {
                    return self.answer(request, Answer::Rejected(ErrorCode::NeedToken)).await;
                }
                let store = store.clone();
                let now = self.shared.now();
                let metrics = Arc::clone(&self.shared.metrics);
                let kept = async move {
                    // Kept only if the reported sender's identity key signed
                    // exactly this content: no one can report words into
                    // someone else's mouth. An unknown account is refused as
                    // a bad signature is.
                    let key = store.account(account).await?.map(|record| record.identity_key);
                    let message = hush_proto::content_signature_message(&content);
                    if !key.is_some_and(|key| super::verify(&key, &message, &signature)) {
                        return Ok(Answer::Rejected(ErrorCode::BadSignature));
                    }
                    store.add_report(account, content, signature, reason, now).await?;
                    metrics.report_received();
                    tracing::info!("message reported");
                    Ok(Answer::Done)
                };
                spawn_answer(&self.in_flight, &self.outbound, Some(request), kept).await;
            }
            other => {
                super::not_here(&self.in_flight, &self.outbound, &other, "not on a sealed connection").await
            }
        }
    }

    async fn answer(&self, request: u32, answer: Answer) {
        spawn_answer(&self.in_flight, &self.outbound, Some(request), async move { Ok(answer) }).await;
    }
}

impl Drop for SealedSession {
    fn drop(&mut self) {
        self.shared.hub.unregister(None, self.connection_id, []);
    }
}

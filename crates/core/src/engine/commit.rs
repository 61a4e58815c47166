//! The lifecycle of a commit, as a state machine the driver steps through:
//! the engine says what to do next ([`CommitStep`]), the driver does it
//! over its connection and feeds back what happened ([`CommitAnswer`] or
//! "done"), until the commit is merged or ends.
//!
//! Key design decision: every rule of the lifecycle lives here, not in the
//! driver, so the client and the simulation tests run the same rules:
//! - earlier commits of ours whose outcome is unknown are resolved before
//!   a new one is made (never write at an epoch whose successor may be
//!   ordered already);
//! - the mailbox is drained before a commit is made (moving a group on
//!   while messages of its current epoch wait unread would leave them
//!   several epochs behind, and unreadable);
//! - a commit that lost its epoch is dropped, the device catches up to the
//!   winner's epoch and makes it again, a bounded number of times;
//! - a commit whose answer is lost stays unresolved (persisted since it
//!   was made) until an answer settles it: the relay may have ordered it.
//!   A refusal of any kind, temporary ones included, settles a commit sent
//!   for the first time (the relay answers only once the store's
//!   transaction is decided, and nothing was ordered); only a commit sent
//!   *again* stays unresolved on a temporary refusal, since its first
//!   sending may have been ordered.

use std::marker::PhantomData;

use hush_proto::ClientFrame;

use super::{DeviceStore, Engine, EngineError, StorageError};
use crate::error::CoreError;
use crate::group::{Conversation, SentCommit};
use crate::identity::Identity;

/// Attempts for a commit that keeps losing its epoch to other members'.
pub const COMMIT_ATTEMPTS: u32 = 8;

/// What the relay answered to a commit (or that it did not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitAnswer {
    /// Ordered at its epoch, now or before (the relay recognises a commit
    /// sent again).
    Accepted,
    /// Another commit won the epoch; the group is at `epoch` now.
    Stale {
        /// The group's epoch at the relay.
        epoch: u64,
    },
    /// Refused for good (not a member, malformed): it was not ordered.
    Refused,
    /// Refused for now (busy, failing, shutting down): this sending was
    /// not ordered, but an earlier sending of the same commit may have
    /// been.
    Busy,
    /// No answer came (the connection failed or timed out).
    Lost,
}

/// What the driver does next for a commit in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitStep {
    /// Resolve the unresolved commits of ours ([`Engine::resolve`] for each
    /// answer), then [`CommitRun::resume`].
    Resolve,
    /// Process the deliveries waiting in the mailbox, then
    /// [`CommitRun::resume`].
    Drain,
    /// Send this commit (its request id is the driver's to set) and feed
    /// its answer to [`CommitRun::answer`].
    Submit(Box<ClientFrame>),
    /// Process deliveries until [`Engine::reached`] says the group is at
    /// `epoch`, then [`CommitRun::resume`].
    CatchUp {
        /// The epoch another member's commit moved the group to.
        epoch: u64,
    },
    /// Done: the commit is the group's new epoch.
    Merged,
    /// The relay refused the commit (for good, or for now: the caller may
    /// try the whole operation again later); it was dropped and nothing
    /// changed.
    Refused,
    /// The outcome is unknown: the commit stays unresolved, to be resolved
    /// at the next login.
    Unresolved,
    /// The commit lost its epoch [`COMMIT_ATTEMPTS`] times: the group is
    /// too busy. Nothing changed.
    GaveUp,
}

/// What an answer to a commit sent again (after a lost answer) did.
#[derive(Debug)]
pub enum Resolution {
    /// Merged, or dropped because it lost its epoch.
    Settled,
    /// The relay refused it: dropped (worth a warning in the log).
    Refused,
    /// Still unknown (no answer, or the relay could not decide): keep it
    /// and stop resolving for now.
    Pending,
    /// It could not be settled (its group is damaged or gone) and was
    /// dropped, for this reason.
    Dropped(EngineError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Resolving,
    Draining,
    Submitted,
    CatchingUp,
    Ended,
}

/// One commit on its way through the lifecycle. `make` makes the commit
/// from the group's current state; it is called again for each attempt.
pub struct CommitRun<S, F> {
    group_id: Vec<u8>,
    make: F,
    /// Through queues (protocol 3): see [`Engine::stage_sealed_commit`].
    sealed: bool,
    attempts: u32,
    phase: Phase,
    store: PhantomData<fn(&S)>,
}

impl<S: DeviceStore, F> CommitRun<S, F> {
    /// Starts a commit in a group: the first step is resolving or draining.
    pub fn start(
        engine: &Engine<'_, S>,
        group_id: &[u8],
        make: F,
    ) -> Result<(Self, CommitStep), StorageError> {
        let mut run = Self {
            group_id: group_id.to_vec(),
            make,
            sealed: false,
            attempts: 0,
            phase: Phase::Draining,
            store: PhantomData,
        };
        if engine.has_unresolved(group_id)? {
            run.phase = Phase::Resolving;
            return Ok((run, CommitStep::Resolve));
        }
        Ok((run, CommitStep::Drain))
    }

    /// As [`CommitRun::start`], for a commit through queues: the queues of
    /// the members it adds must be planned first ([`Engine::plan_route`]).
    pub fn start_sealed(
        engine: &Engine<'_, S>,
        group_id: &[u8],
        make: F,
    ) -> Result<(Self, CommitStep), StorageError> {
        let (mut run, step) = Self::start(engine, group_id, make)?;
        run.sealed = true;
        Ok((run, step))
    }

    /// The group.
    pub fn group_id(&self) -> &[u8] {
        &self.group_id
    }

    /// Continues after the driver did what a [`CommitStep::Resolve`],
    /// [`CommitStep::Drain`] or [`CommitStep::CatchUp`] asked.
    pub fn resume(&mut self, engine: &mut Engine<'_, S>) -> Result<CommitStep, EngineError>
    where
        F: Fn(&mut Conversation, &S::Provider<'_>, &Identity) -> Result<SentCommit, CoreError>,
    {
        match self.phase {
            Phase::Resolving => {
                if engine.has_unresolved(&self.group_id)? {
                    // The driver stopped resolving before this group's.
                    self.phase = Phase::Ended;
                    return Ok(CommitStep::Unresolved);
                }
                self.phase = Phase::Draining;
                Ok(CommitStep::Drain)
            }
            Phase::Draining | Phase::CatchingUp => {
                match engine.epoch(&self.group_id)? {
                    Some((_, true)) => {}
                    _ => {
                        self.phase = Phase::Ended;
                        return Err(EngineError::Invalid(
                            "we are no longer a member of this conversation".into(),
                        ));
                    }
                }
                if self.attempts == COMMIT_ATTEMPTS {
                    self.phase = Phase::Ended;
                    return Ok(CommitStep::GaveUp);
                }
                self.attempts += 1;
                let frame = if self.sealed {
                    engine.stage_sealed_commit(&self.group_id, &self.make)?
                } else {
                    engine.stage_commit(&self.group_id, &self.make)?
                };
                self.phase = Phase::Submitted;
                Ok(CommitStep::Submit(Box::new(frame)))
            }
            Phase::Submitted | Phase::Ended => {
                Err(EngineError::Invalid("the commit is not waiting to be resumed".into()))
            }
        }
    }

    /// Continues with the relay's answer to the commit last submitted.
    pub fn answer(
        &mut self,
        engine: &mut Engine<'_, S>,
        answer: CommitAnswer,
    ) -> Result<CommitStep, EngineError> {
        if self.phase != Phase::Submitted {
            return Err(EngineError::Invalid("no commit is waiting for an answer".into()));
        }
        self.phase = Phase::Ended;
        match answer {
            CommitAnswer::Accepted => {
                engine.settle_commit(&self.group_id, true)?;
                Ok(CommitStep::Merged)
            }
            CommitAnswer::Stale { epoch } => {
                engine.settle_commit(&self.group_id, false)?;
                self.phase = Phase::CatchingUp;
                Ok(CommitStep::CatchUp { epoch })
            }
            CommitAnswer::Refused | CommitAnswer::Busy => {
                engine.settle_commit(&self.group_id, false)?;
                Ok(CommitStep::Refused)
            }
            // Unless another member's commit for the same epoch, processed
            // while we waited, settled ours already (it lost): then the
            // commit is made again at the new epoch.
            CommitAnswer::Lost if !engine.has_unresolved(&self.group_id)? => {
                self.phase = Phase::CatchingUp;
                let epoch = engine.epoch(&self.group_id)?.map_or(0, |(epoch, _)| epoch);
                Ok(CommitStep::CatchUp { epoch })
            }
            CommitAnswer::Lost => Ok(CommitStep::Unresolved),
        }
    }
}

impl<S: DeviceStore> Engine<'_, S> {
    /// Settles an unresolved commit of ours by the answer to sending it
    /// again. One group's trouble does not stop the others: a commit that
    /// cannot be settled is dropped (only a failure of our store is an
    /// error).
    pub fn resolve(&mut self, group_id: &[u8], answer: CommitAnswer) -> Result<Resolution, StorageError> {
        let (won, settled) = match answer {
            CommitAnswer::Accepted => (true, Resolution::Settled),
            CommitAnswer::Stale { .. } => (false, Resolution::Settled),
            CommitAnswer::Refused => (false, Resolution::Refused),
            CommitAnswer::Busy | CommitAnswer::Lost => return Ok(Resolution::Pending),
        };
        match self.settle_commit(group_id, won) {
            Ok(_) => Ok(settled),
            Err(EngineError::Storage(error)) => Err(error),
            Err(error) => {
                self.drop_unresolved(group_id)?;
                Ok(Resolution::Dropped(error))
            }
        }
    }

    /// True once the group is at `epoch` or past it; an error once we are
    /// no longer in it (a catch-up that can never end).
    pub fn reached(&self, group_id: &[u8], epoch: u64) -> Result<bool, EngineError> {
        match self.epoch(group_id)? {
            Some((current, true)) => Ok(current >= epoch),
            _ => Err(EngineError::Invalid("we are no longer a member of this conversation".into())),
        }
    }
}

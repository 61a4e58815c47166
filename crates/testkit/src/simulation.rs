//! A seeded simulation of one group: the real engine (`hush_core::Engine`)
//! on every device, each over its own in-memory store, and the relay's real
//! store and ordering rules (`SqliteStore`, `CommitRequest::decide`), on
//! queues and sealed sends as in protocol 3 (every member receives from a
//! queue of its own, written with the epoch's write secrets, which every
//! ordered commit rotates), driven the way the client drives them, by a
//! schedule that
//!
//! - loses the answers to commits (the device keeps them unresolved and
//!   sends them again later),
//! - reorders, duplicates and withholds deliveries (a hostile relay),
//! - makes a device's store fail in the middle of an operation (a crash:
//!   the transaction is rolled back, the delivery is not acknowledged, the
//!   device reconnects and the relay delivers everything unacknowledged
//!   again), and restarts the relay (every device reconnects; the relay's
//!   own crash safety is tested by `hush-loadgen crash`),
//! - has a removed member inject junk commits (refused by the relay), and
//!   a hostile relay replay old payloads and corrupt fresh ones, in any
//!   member's queue (a relay can write where it likes).
//!
//! After every run, once every answer has arrived and every mailbox has
//! been read: honest devices are at the relay's epoch, hold nothing back,
//! and show every message sent by another member exactly once; a device
//! shows no more "could not be decrypted" notices than the junk and replays
//! the relay sent it.
//!
//! The schedule's every choice comes from the random source given to [`run`]:
//! a seeded generator in the test command (`tests/simulation.rs`), the
//! input's bytes under the fuzzer (`hush-fuzz group_schedule`). MLS's own
//! randomness differs between runs, and nothing the schedule decides
//! depends on it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::Arc;

use hush_core::engine::{MemoryProvider, MemoryStore, QueuePlan, QueueSecrets, HELD_FOR};
use hush_core::openmls::prelude::OpenMlsProvider as _;
use hush_core::{
    verify_key_package, Body, CommitAnswer, CommitRun, CommitStep, Conversation, ConversationKind,
    DeviceStore, Engine, EngineError, Event, Identity, Resolution,
};
use hush_proto::{AccountId, Capability, ClientFrame, Destination, GroupId, KeyAnnouncement, QueueId};
use hush_relay::store::{
    Admin as _, CommitOutcome, CommitRequest, Mailbox, Operations, SealedCommitRequest, SqliteStore,
    StoreError,
};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

const EXPIRES: u64 = u64::MAX / 4;
const STEPS: usize = 30;
/// Honest devices: alice (0), bob (1), carol (2). Eve (3) was removed.
const HONEST: usize = 3;
const EVE: usize = 3;

struct Device {
    store: MemoryStore,
    identity: Identity,
    /// The relay's cursor in each of this device's mailboxes (its
    /// introduction mailbox and its queues) for its connections; none after
    /// a reconnect, when everything unacknowledged comes again.
    cursors: HashMap<Mailbox, u64>,
    /// Junk and replays the relay sent this device: each may show as one
    /// "could not be decrypted" notice (a replay of its own message, say),
    /// never more.
    attacks: usize,
    /// Connected: the commits whose answers were lost are resolved.
    logged_in: bool,
}

impl Device {
    fn account(&self) -> AccountId {
        self.identity.account()
    }
}

struct Sim<R> {
    rng: R,
    now: u64,
    relay: SqliteStore,
    devices: Vec<Device>,
    group: Vec<u8>,
    /// Epoch at the relay, counted from the commits it accepted.
    epoch: u64,
    /// Message ids sent, with their sender and whether the sender
    /// recorded its own copy.
    sent: Vec<([u8; 16], usize, bool)>,
    /// Payloads the relay queued, for the hostile relay to replay.
    history: Vec<Vec<u8>>,
    /// Faults are over: every answer arrives.
    calm: bool,
    log: Vec<String>,
}

/// A storage failure ends what the device was doing, as a crash would.
type Step = Result<(), Crashed>;
struct Crashed;

/// A sealed commit frame as the relay's store takes it (as the relay's
/// sealed connection builds it).
fn request(frame: &ClientFrame) -> SealedCommitRequest {
    let ClientFrame::SealedCommit {
        group,
        epoch,
        targets,
        rotate,
        payload,
        welcome,
        next_key,
        signature,
        ..
    } = frame
    else {
        panic!("not a sealed commit frame")
    };
    let (welcome_to, welcome) = match welcome {
        Some((to, bytes)) => (to.clone(), Some(Arc::from(&bytes[..]))),
        None => (Vec::new(), None),
    };
    let commit = CommitRequest {
        group: group.clone(),
        epoch: *epoch,
        payload: Arc::from(&payload[..]),
        welcome,
        next_key: *next_key,
        signature: *signature,
    };
    assert!(commit.well_formed(), "an honest device made a malformed commit");
    SealedCommitRequest { commit, targets: targets.clone(), welcome_to, rotate: rotate.clone() }
}

impl<R: RngCore> Sim<R> {
    /// Alice makes the group "crew" with bob, carol and eve (a queue for
    /// each made at the relay, their Welcomes through their introduction
    /// mailboxes), tells them its name, then removes eve.
    fn new(rng: R) -> Self {
        let mut relay = SqliteStore::in_memory().unwrap();
        relay.add_invite(&[1; 32], 10, EXPIRES).unwrap();
        let devices: Vec<Device> = (0..4)
            .map(|_| {
                let store = MemoryStore::new();
                let identity = Identity::generate(store.provider().storage()).unwrap();
                Operations::register(&mut relay, &[1; 32], &identity.key(), &[0; 32], 1).unwrap();
                Device { store, identity, cursors: HashMap::new(), attacks: 0, logged_in: false }
            })
            .collect();
        let mut sim = Sim {
            rng,
            now: 1_000_000,
            relay,
            devices,
            group: Vec::new(),
            epoch: 0,
            sent: Vec::new(),
            history: Vec::new(),
            calm: false,
            log: Vec::new(),
        };
        let packages: Vec<_> = (1..4)
            .map(|d| {
                let work = sim.engine(d).key_package_work(0).unwrap();
                let Some(ClientFrame::UploadKeyPackages { one_time, .. }) = work.upload else { panic!() };
                let alice = &sim.devices[0];
                verify_key_package(&alice.store.provider(), &one_time[0], sim.devices[d].account()).unwrap()
            })
            .collect();
        let group = sim.engine(0).create_group().unwrap();
        sim.group = group.clone();
        let plans: Vec<QueuePlan> = (0..4).map(|d| sim.queue_for(d)).collect();
        sim.engine(0).plan_route(&group, &plans).unwrap();
        let add = sim
            .engine(0)
            .stage_sealed_commit(&group, |c, provider, identity| c.add(provider, identity, &packages))
            .unwrap();
        assert!(matches!(sim.order(&request(&add)), Ok(CommitOutcome::Accepted(_))));
        let mut alice = sim.engine(0);
        alice.settle_commit(&group, true).unwrap();
        alice.describe(&group, &ConversationKind::Group { name: "crew".into() }).unwrap();
        let info = alice.content(Body::Info { group_name: Some("crew".into()) });
        let info = alice.encrypt_sealed(&group, &info).unwrap();
        drop(alice);
        sim.enqueue(&info.targets, &info.payload);
        for d in 1..4 {
            sim.receive(d, usize::MAX, false).ok().unwrap();
            sim.take_over_queues(d);
        }
        let eve = sim.devices[EVE].account();
        let remove = sim
            .engine(0)
            .stage_sealed_commit(&group, |c, provider, identity| c.remove(provider, identity, &[eve]))
            .unwrap();
        assert!(matches!(sim.order(&request(&remove)), Ok(CommitOutcome::Accepted(_))));
        sim.engine(0).settle_commit(&group, true).unwrap();
        sim
    }

    fn engine(&mut self, d: usize) -> Engine<'_, MemoryStore> {
        self.now += 1;
        let rng = StdRng::seed_from_u64(self.rng.r#gen());
        let device = &self.devices[d];
        Engine::new(&device.store, &device.identity, self.now, rng)
    }

    /// A queue made at the relay for device `d`, with a plan for the
    /// group's first commit (its Welcome by `d`'s introduction mailbox).
    fn queue_for(&mut self, d: usize) -> QueuePlan {
        let secrets = QueueSecrets::generate(&mut StdRng::seed_from_u64(self.rng.r#gen()));
        let queue = QueueId(self.rng.r#gen());
        Operations::create_queue(
            &mut self.relay,
            &queue,
            &secrets.owner_public(),
            &secrets.write_hash(),
            self.now / 1000,
        )
        .unwrap();
        let welcome_to = (d != 0).then(|| Destination::Account(self.devices[d].account()));
        QueuePlan { device: self.devices[d].identity.device(), queue, secrets, welcome_to }
    }

    /// A new member takes over the queue made for it (the relay's owner
    /// key becomes its own), as the client does at its next connection.
    fn take_over_queues(&mut self, d: usize) {
        let rekeys = self.engine(d).rekeys().unwrap();
        for (queue, _, next) in rekeys {
            let owner = next.verifying_key().to_bytes();
            assert!(Operations::rekey_queue(&mut self.relay, &queue, &owner, &[0; 32]).unwrap());
            self.engine(d).rekeyed(&queue).unwrap();
        }
    }

    fn epoch_of(&mut self, d: usize) -> Option<u64> {
        let group = self.group.clone();
        self.engine(d).epoch(&group).unwrap().filter(|(_, active)| *active).map(|(epoch, _)| epoch)
    }

    fn order(&mut self, commit: &SealedCommitRequest) -> Result<CommitOutcome, StoreError> {
        let outcome = Operations::commit_sealed(&mut self.relay, commit, self.now / 1000, EXPIRES);
        if let Ok(CommitOutcome::Accepted(enqueued)) = &outcome {
            // Every current member's queue takes the commit, and rotates.
            assert_eq!(enqueued.refused, Vec::<u32>::new(), "an honest commit was refused a target");
            self.epoch = commit.commit.epoch + 1;
            self.history.push(commit.commit.payload.to_vec());
        }
        outcome
    }

    fn enqueue(&mut self, targets: &[Capability], payload: &[u8]) {
        let shared: Arc<[u8]> = Arc::from(payload);
        let enqueued =
            Operations::enqueue_sealed(&mut self.relay, targets, &shared, self.now / 1000, EXPIRES).unwrap();
        assert_eq!(enqueued.refused, Vec::<u32>::new(), "a send at the relay's epoch was refused");
        self.history.push(payload.to_vec());
    }

    /// A crash: the device reconnects, and the relay delivers everything
    /// not acknowledged again; the engine finishes what the crash cut off.
    fn restart(&mut self, d: usize) {
        self.log.push(format!("{d} restarts"));
        self.devices[d].cursors.clear();
        self.devices[d].logged_in = false;
        self.devices[d].store.heal();
        self.engine(d).retry_all_held().ok().unwrap();
    }

    /// What a failed engine call means: a storage failure is a crash (the
    /// device restarts); anything else must not happen to an honest device.
    fn crash(&mut self, d: usize, error: EngineError) -> Crashed {
        match error {
            EngineError::Storage(_) => {
                self.restart(d);
                Crashed
            }
            error => panic!("an honest operation of device {d} failed: {error}"),
        }
    }

    /// Takes up to `max` queued payloads from each of the device's
    /// mailboxes (with `faults`: perhaps out of order and with a
    /// duplicate), processes them and acknowledges what was processed.
    fn receive(&mut self, d: usize, max: usize, faults: bool) -> Step {
        self.login(d)?;
        let account = self.devices[d].account();
        let queues = self.engine(d).own_queues().unwrap();
        let mailboxes = std::iter::once(Mailbox::Account(account))
            .chain(queues.into_iter().map(|(queue, _)| Mailbox::Queue(queue)));
        for mailbox in mailboxes.collect::<Vec<_>>() {
            self.receive_from(d, mailbox, max, faults)?;
        }
        Ok(())
    }

    fn receive_from(&mut self, d: usize, mailbox: Mailbox, max: usize, faults: bool) -> Step {
        let limit = u32::try_from(max.min(1_000)).unwrap();
        let cursor = self.devices[d].cursors.get(&mailbox).copied().unwrap_or(0);
        let page = Operations::pending(&mut self.relay, &mailbox, cursor, limit, self.now / 1000).unwrap();
        let Some(last) = page.last().map(|q| q.id) else { return Ok(()) };
        let mut payloads: Vec<(u64, Vec<u8>)> = page.iter().map(|q| (q.id, q.payload.to_vec())).collect();
        if faults && payloads.len() >= 2 && self.rng.gen_bool(0.3) {
            let i = self.rng.gen_range(0..payloads.len() - 1);
            payloads.swap(i, i + 1);
            self.log.push(format!("{d}: delivered out of order at {i}"));
        }
        if faults && self.rng.gen_bool(0.2) {
            let i = self.rng.gen_range(0..payloads.len());
            payloads.push(payloads[i].clone());
        }
        let mut processed = Vec::new();
        for (id, payload) in payloads {
            let delivered = match &mailbox {
                Mailbox::Account(_) => self.engine(d).deliver_introduction(&payload),
                Mailbox::Queue(queue) => self.engine(d).deliver_queued(queue, &payload),
            };
            if delivered.is_err() {
                // Acknowledged only what was processed; the rest comes again.
                self.ack(&mailbox, &processed);
                self.restart(d);
                return Err(Crashed);
            }
            processed.push(id);
        }
        self.devices[d].cursors.insert(mailbox, last);
        self.ack(&mailbox, &processed);
        Ok(())
    }

    fn ack(&mut self, mailbox: &Mailbox, ids: &[u64]) {
        match mailbox {
            Mailbox::Account(account) => Operations::ack(&mut self.relay, account, ids).unwrap(),
            Mailbox::Queue(queue) => Operations::ack_queue(&mut self.relay, queue, ids).unwrap(),
        };
    }

    /// The relay's answer in the engine's terms, unless it is lost (the
    /// connection breaks and the device reconnects).
    fn answer(
        &mut self,
        d: usize,
        outcome: Result<CommitOutcome, StoreError>,
    ) -> Result<CommitAnswer, Crashed> {
        let answer = match outcome {
            Ok(CommitOutcome::Accepted(_) | CommitOutcome::Repeated) => CommitAnswer::Accepted,
            Ok(CommitOutcome::Stale { current }) => CommitAnswer::Stale { epoch: current },
            Err(error) => panic!("device {d}'s commit was refused: {error}"),
        };
        if !self.calm && self.rng.gen_bool(0.25) {
            self.log.push(format!("{d}: the answer ({answer:?}) was lost"));
            self.restart(d);
            return Err(Crashed);
        }
        Ok(answer)
    }

    /// Logs in: first of all, the commits whose answers were lost are sent
    /// again and settled, as the client does.
    fn login(&mut self, d: usize) -> Step {
        if self.devices[d].logged_in {
            return Ok(());
        }
        self.resend(d)?;
        self.devices[d].logged_in = true;
        Ok(())
    }

    /// Sends again the commits whose answers were lost, and resolves them
    /// by the answers.
    fn resend(&mut self, d: usize) -> Step {
        let unresolved = self.engine(d).unresolved_commits().ok().unwrap();
        for unresolved in unresolved {
            let outcome = self.order(&request(&unresolved.frame));
            let answer = self.answer(d, outcome)?;
            let resolved = self.engine(d).resolve(&unresolved.group_id, answer);
            match resolved {
                Ok(Resolution::Settled) => {}
                Ok(other) => panic!("device {d}'s commit sent again was not settled: {other:?}"),
                Err(error) => return Err(self.crash(d, error.into())),
            }
        }
        Ok(())
    }

    /// A self-update, through the engine's commit lifecycle as the client
    /// drives it: resolve, drain, submit, catch up and make it again.
    fn self_update(&mut self, d: usize) -> Step {
        self.login(d)?;
        if self.epoch_of(d).is_none() {
            return Ok(());
        }
        let group = self.group.clone();
        let make = |c: &mut Conversation, provider: &MemoryProvider<'_>, identity: &Identity| {
            c.self_update(provider, identity)
        };
        let started = CommitRun::start_sealed(&self.engine(d), &group, make);
        let (mut run, mut step) = started.map_err(|error| self.crash(d, error.into()))?;
        loop {
            let next = match step {
                CommitStep::Resolve => {
                    self.resend(d)?;
                    run.resume(&mut self.engine(d))
                }
                CommitStep::Drain => {
                    self.receive(d, usize::MAX, true)?;
                    run.resume(&mut self.engine(d))
                }
                CommitStep::CatchUp { epoch } => {
                    // The winner's commit is in the queue: reading it must
                    // get there (as the client checks).
                    self.receive(d, usize::MAX, true)?;
                    let reached = self.engine(d).reached(&group, epoch);
                    assert!(
                        matches!(reached, Ok(true)),
                        "device {d} did not catch up to {epoch}: {reached:?}"
                    );
                    run.resume(&mut self.engine(d))
                }
                CommitStep::Submit(frame) => {
                    let outcome = self.order(&request(&frame));
                    let answer = self.answer(d, outcome)?;
                    run.answer(&mut self.engine(d), answer)
                }
                CommitStep::Merged => return Ok(()),
                // Devices act one at a time here: a commit made after
                // catching up cannot keep losing.
                step @ (CommitStep::GaveUp | CommitStep::Refused | CommitStep::Unresolved) => {
                    panic!("device {d}'s self-update ended as {step:?}")
                }
            };
            step = next.map_err(|error| self.crash(d, error))?;
        }
    }

    fn write(&mut self, d: usize) -> Step {
        self.login(d)?;
        self.receive(d, usize::MAX, true)?;
        let group = self.group.clone();
        if self.engine(d).has_unresolved(&group).unwrap() {
            return Ok(());
        }
        let mut engine = self.engine(d);
        let content = engine.content(Body::Text(format!("from {d}")));
        let encrypted = engine.encrypt_sealed(&group, &content);
        drop(engine);
        let outgoing = match encrypted {
            Ok(outgoing) => outgoing,
            Err(error) => return Err(self.crash(d, error)),
        };
        self.enqueue(&outgoing.targets, &outgoing.payload);
        // The relay accepted it: recorded as sent. A crash just then loses
        // the sender's own copy (as it would in the client); the others
        // still get it.
        let recorded = self.engine(d).sent(&group, &content).is_ok();
        self.sent.push((content.id, d, recorded));
        if !recorded {
            self.restart(d);
            return Err(Crashed);
        }
        Ok(())
    }

    /// The removed member's junk commit at the relay's epoch (it knows the
    /// group's id and epoch, not the epoch's key): refused.
    fn junk_commit(&mut self) {
        let mut next_key = [0x66; 32];
        next_key[0] = 0x58;
        let announcement = KeyAnnouncement { next_key, signature: [0; 64] };
        let payload = hush_proto::announced_payload(hush_proto::COMMIT_PAYLOAD_TAG, &announcement, b"junk");
        let junk = CommitRequest {
            group: GroupId(self.group.clone()),
            epoch: self.epoch,
            payload: Arc::from(&payload[..]),
            welcome: None,
            next_key,
            signature: [self.rng.r#gen(); 64],
        };
        let sealed = SealedCommitRequest {
            commit: junk,
            targets: Vec::new(),
            welcome_to: Vec::new(),
            rotate: Vec::new(),
        };
        match Operations::commit_sealed(&mut self.relay, &sealed, self.now / 1000, EXPIRES) {
            Err(StoreError::NotAMember) => {}
            other => panic!("a removed member's junk commit was not refused: {other:?}"),
        }
    }

    /// The hostile relay replays an old payload, or a corrupted copy of
    /// one, into an honest device's queue (a relay writes where it likes).
    fn hostile_relay(&mut self) {
        let d = self.rng.gen_range(0..HONEST);
        let Some(mut payload) = self.history.get(self.rng.gen_range(0..self.history.len())).cloned() else {
            return;
        };
        if self.rng.gen_bool(0.5) {
            let at = self.rng.gen_range(0..payload.len());
            payload[at] ^= 1 << self.rng.gen_range(0..8);
            self.log.push(format!("relay corrupts a payload for {d}"));
        } else {
            self.log.push(format!("relay replays a payload to {d}"));
        }
        // Straight to the device, as a push on its queue connection: the
        // relay is the one that checks write secrets, and it need not.
        let queues = self.engine(d).own_queues().unwrap();
        let Some((queue, _)) = queues.first().cloned() else { return };
        self.devices[d].attacks += 1;
        if self.engine(d).deliver_queued(&queue, &payload).is_err() {
            self.restart(d);
        }
    }

    fn step(&mut self) {
        let d = self.rng.gen_range(0..HONEST);
        if self.rng.gen_bool(0.1) {
            // The device's store fails a few writes from now.
            let writes = self.rng.gen_range(0..12);
            self.log.push(format!("{d}'s store fails in {writes} writes"));
            self.devices[d].store.fail_write_in(writes);
        }
        let _crashed = match self.rng.gen_range(0..13) {
            0..=3 => {
                let epoch = self.epoch_of(d);
                self.log.push(format!("{d} writes at {epoch:?}"));
                self.write(d)
            }
            4..=5 => {
                let epoch = self.epoch_of(d);
                self.log.push(format!("{d} self-updates at {epoch:?}"));
                self.self_update(d)
            }
            6 => {
                self.log.push(format!("{d} reconnects"));
                self.restart(d);
                self.login(d)
            }
            7 => {
                self.junk_commit();
                Ok(())
            }
            8 => {
                self.hostile_relay();
                Ok(())
            }
            9 => {
                // The relay restarts: every connection drops, every device
                // logs in again and gets everything unacknowledged again.
                self.log.push("the relay restarts".into());
                for d in 0..HONEST {
                    self.restart(d);
                }
                Ok(())
            }
            _ => {
                let max = self.rng.gen_range(1..6);
                self.log.push(format!("{d} receives {max}"));
                self.receive(d, max, true)
            }
        };
    }

    /// Faults end; every answer arrives, every mailbox is read; then time
    /// passes until what junk made a device hold back is given up.
    fn quiesce(&mut self) {
        self.calm = true;
        for d in 0..HONEST {
            self.devices[d].store.heal();
            self.restart(d);
        }
        for _ in 0..4 {
            for d in 0..HONEST {
                self.receive(d, usize::MAX, false).ok().unwrap();
            }
        }
        self.now += HELD_FOR.as_millis() as u64 + 1;
        for d in 0..HONEST {
            self.engine(d).expire_held().ok().unwrap();
        }
    }

    fn check(&mut self) {
        let group = self.group.clone();
        for d in 0..HONEST {
            let epoch = self.epoch_of(d);
            assert_eq!(epoch, Some(self.epoch), "device {d} is not at the relay's epoch");
            let (held, _) = self.devices[d].store.count_settings_with_prefix("held:").unwrap();
            assert_eq!(held, 0, "device {d} still holds payloads");
            let messages = self.devices[d].store.messages(&group);
            for (id, sender, recorded) in &self.sent {
                let times = messages.iter().filter(|m| m.message_id == *id && !m.event).count();
                let expected = usize::from(*sender != d || *recorded);
                assert_eq!(times, expected, "device {d} shows a message of {sender} {times} times");
            }
            let notices = messages
                .iter()
                .filter(|m| m.event && Event::decode(&m.text) == Some(Event::Unreadable))
                .count();
            assert!(
                notices <= self.devices[d].attacks,
                "device {d} shows {notices} lost messages after {} attacks",
                self.devices[d].attacks
            );
        }
    }
}

/// Runs one schedule, its choices drawn from `rng`, and checks the outcome;
/// panics, after printing the last steps, if an invariant does not hold.
pub fn run(rng: impl RngCore) {
    let mut sim = Sim::new(rng);
    for _ in 0..STEPS {
        sim.step();
    }
    sim.quiesce();
    let last: Vec<String> = sim.log.iter().rev().take(16).cloned().collect();
    let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sim.check()));
    if let Err(panic) = checked {
        eprintln!("last steps, newest first: {last:#?}");
        std::panic::resume_unwind(panic);
    }
}

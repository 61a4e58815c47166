//! Groups through queues, with the relay's side played by [`Queues`]: the
//! same checks as the relay's store (write hashes, rotation only for an
//! ordered commit), every payload's length recorded.

use std::cell::RefCell;
use std::collections::HashMap;

use hush_proto::{AccountId, Capability, ClientFrame, Destination, QueueId};
use openmls::prelude::OpenMlsProvider;
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::*;
use crate::keys::verify_key_package;
use crate::route::is_padded_size;

struct Device {
    store: MemoryStore,
    identity: Identity,
}

impl Device {
    fn new() -> Self {
        let store = MemoryStore::new();
        let identity = Identity::generate(store.provider().storage()).expect("identity");
        Self { store, identity }
    }

    fn engine(&self) -> Engine<'_, MemoryStore> {
        Engine::new(&self.store, &self.identity, 1_000, StdRng::from_entropy())
    }

    fn account(&self) -> AccountId {
        self.identity.account()
    }

    fn key_package_for(&self, checker: &Device) -> crate::VerifiedKeyPackage {
        let work = self.engine().key_package_work(0).expect("key packages");
        let Some(ClientFrame::UploadKeyPackages { one_time, .. }) = work.upload else { panic!("an upload") };
        verify_key_package(&checker.store.provider(), &one_time[0], self.account()).expect("verifies")
    }

    fn texts(&self, group_id: &[u8]) -> Vec<String> {
        self.store.messages(group_id).into_iter().filter(|m| !m.event).map(|m| m.text).collect()
    }
}

/// The relay's queues and introduction mailboxes.
#[derive(Default)]
struct Queues {
    next: RefCell<u8>,
    hashes: RefCell<HashMap<QueueId, [u8; 32]>>,
    waiting: RefCell<HashMap<QueueId, Vec<Vec<u8>>>>,
    introductions: RefCell<HashMap<AccountId, Vec<Vec<u8>>>>,
    lengths: RefCell<Vec<usize>>,
}

impl Queues {
    fn create(&self, secrets: &QueueSecrets) -> QueueId {
        let mut next = self.next.borrow_mut();
        *next += 1;
        let queue = QueueId([*next; 16]);
        self.hashes.borrow_mut().insert(queue, secrets.write_hash());
        queue
    }

    fn writable(&self, capability: &Capability) -> bool {
        self.hashes.borrow().get(&capability.queue) == Some(&hush_proto::write_hash(&capability.secret))
    }

    fn store(&self, queue: QueueId, payload: &[u8]) {
        self.lengths.borrow_mut().push(payload.len());
        self.waiting.borrow_mut().entry(queue).or_default().push(payload.to_vec());
    }

    /// A sealed send: the indexes refused.
    fn send(&self, targets: &[Capability], payload: &[u8]) -> Vec<usize> {
        let mut refused = Vec::new();
        for (index, target) in targets.iter().enumerate() {
            if self.writable(target) {
                self.store(target.queue, payload);
            } else {
                refused.push(index);
            }
        }
        refused
    }

    /// An ordered sealed commit: delivered, Welcomed, rotated.
    fn commit(&self, frame: &ClientFrame) -> Vec<usize> {
        let ClientFrame::SealedCommit { targets, rotate, payload, welcome, .. } = frame else {
            panic!("a sealed commit")
        };
        let mut refused = self.send(targets, payload);
        if let Some((to, welcome)) = welcome {
            for destination in to {
                match destination {
                    Destination::Account(account) => {
                        self.lengths.borrow_mut().push(welcome.len());
                        self.introductions.borrow_mut().entry(*account).or_default().push(welcome.clone());
                    }
                    Destination::Queue(capability) => {
                        assert!(self.send(std::slice::from_ref(capability), welcome).is_empty())
                    }
                }
            }
        }
        for (index, (capability, next)) in rotate.iter().enumerate() {
            if self.writable(capability) {
                self.hashes.borrow_mut().insert(capability.queue, *next);
            } else {
                refused.push(targets.len() + index);
            }
        }
        refused
    }

    fn take(&self, queue: &QueueId) -> Vec<Vec<u8>> {
        self.waiting.borrow_mut().remove(queue).unwrap_or_default()
    }

    /// Delivers everything waiting for `device`: introductions, then its
    /// queues.
    fn deliver_to(&self, device: &Device) {
        let introductions = self.introductions.borrow_mut().remove(&device.account()).unwrap_or_default();
        for payload in introductions {
            device.engine().deliver_introduction(&payload).expect("introduction");
        }
        for (queue, _) in device.engine().own_queues().expect("queues") {
            for payload in self.take(&queue) {
                device.engine().deliver_queued(&queue, &payload).expect("delivered");
            }
        }
    }
}

/// A plan for `device`'s queue in a group, made at the relay.
fn plan(queues: &Queues, device: &Device, welcome_to: Option<Destination>) -> QueuePlan {
    let secrets = QueueSecrets::generate(&mut rand::rngs::OsRng);
    let queue = queues.create(&secrets);
    QueuePlan { device: device.identity.device(), queue, secrets, welcome_to }
}

/// `creator` makes a group with `others` through queues; everyone reads
/// what arrived. Returns the group id.
fn routed_group(queues: &Queues, creator: &Device, others: &[&Device]) -> Vec<u8> {
    let packages: Vec<_> = others.iter().map(|d| d.key_package_for(creator)).collect();
    let mut engine = creator.engine();
    let group_id = engine.create_group().expect("group");
    let mut plans = vec![plan(queues, creator, None)];
    for other in others {
        plans.push(plan(queues, other, Some(Destination::Account(other.account()))));
    }
    engine.plan_route(&group_id, &plans).expect("planned");
    let frame = engine
        .stage_sealed_commit(&group_id, |conversation, provider, identity| {
            conversation.add(provider, identity, &packages)
        })
        .expect("commit");
    assert_eq!(queues.commit(&frame), Vec::<usize>::new());
    assert!(engine.settle_commit(&group_id, true).expect("settles"));
    engine.describe(&group_id, &ConversationKind::Group { name: "crew".into() }).expect("described");
    for other in others {
        queues.deliver_to(other);
    }
    group_id
}

fn say(queues: &Queues, device: &Device, group_id: &[u8], text: &str) -> Vec<usize> {
    let mut engine = device.engine();
    let content = engine.content(Body::Text(text.into()));
    let outgoing = engine.encrypt_sealed(group_id, &content).expect("encrypts");
    engine.sent(group_id, &content).expect("recorded");
    queues.send(&outgoing.targets, &outgoing.payload)
}

#[test]
fn a_group_made_through_queues_carries_messages_both_ways_and_every_length_is_padded() {
    let queues = Queues::default();
    let (alice, bob, carol) = (Device::new(), Device::new(), Device::new());
    let crew = routed_group(&queues, &alice, &[&bob, &carol]);
    // Each of them receives from one queue in the group, and was told
    // the others'.
    for device in [&bob, &carol] {
        let own = device.engine().own_queues().unwrap();
        assert_eq!(own.len(), 1);
        assert_eq!(device.engine().queue_group(&own[0].0).unwrap(), Some(crew.clone()));
        assert_eq!(device.engine().rekeys().unwrap().len(), 1, "the queue made for it is taken over");
    }
    assert!(say(&queues, &alice, &crew, "hello crew").is_empty());
    queues.deliver_to(&bob);
    queues.deliver_to(&carol);
    assert_eq!(bob.texts(&crew), ["hello crew"]);
    assert_eq!(carol.texts(&crew), ["hello crew"]);
    assert!(say(&queues, &bob, &crew, "hi alice").is_empty());
    queues.deliver_to(&alice);
    queues.deliver_to(&carol);
    assert_eq!(alice.texts(&crew), ["hello crew", "hi alice"]);
    assert_eq!(carol.texts(&crew), ["hello crew", "hi alice"]);
    let lengths = queues.lengths.borrow().clone();
    assert!(lengths.iter().all(|len| is_padded_size(*len)), "{lengths:?}");
    // A long message is padded too, and still arrives.
    let long = "x".repeat(3_000);
    assert!(say(&queues, &carol, &crew, &long).is_empty());
    queues.deliver_to(&alice);
    assert_eq!(alice.texts(&crew).last(), Some(&long));
    assert!(queues.lengths.borrow().iter().all(|len| is_padded_size(*len)));
}

#[test]
fn a_received_text_keeps_its_senders_signature_so_that_it_can_be_reported() {
    let queues = Queues::default();
    let (alice, bob) = (Device::new(), Device::new());
    let chat = routed_group(&queues, &alice, &[&bob]);
    assert!(say(&queues, &alice, &chat, "you will regret this").is_empty());
    queues.deliver_to(&bob);
    let received = bob.store.messages(&chat).into_iter().find(|m| !m.event).expect("a message");
    let proof = received.proof.expect("a proof");
    let content = proof.verify(&alice.identity.key().0).expect("alice signed it");
    assert_eq!(content.body, Body::Text("you will regret this".into()));
    assert_eq!(content.id, received.message_id);
    assert!(proof.verify(&bob.identity.key().0).is_err(), "only alice's key verifies it");
    // Our own messages carry none: there is nothing to report.
    let sent = alice.store.messages(&chat).into_iter().find(|m| !m.event).expect("a message");
    assert!(sent.proof.is_none());
}

#[test]
fn a_removal_rotates_every_remaining_queue_and_leaves_the_removed_member_unable_to_write() {
    let queues = Queues::default();
    let (alice, bob, carol) = (Device::new(), Device::new(), Device::new());
    let crew = routed_group(&queues, &alice, &[&bob, &carol]);
    // What Carol could write to Bob with before she is removed.
    let before = carol.engine().capabilities(&crew, &[bob.identity.device()]).unwrap();
    let before: Vec<Capability> = before.into_iter().map(|(_, capability)| capability).collect();
    assert!(queues.writable(&before[0]));
    let carol_account = carol.account();
    let mut engine = alice.engine();
    let removal = engine
        .stage_sealed_commit(&crew, |conversation, provider, identity| {
            conversation.remove(provider, identity, &[carol_account])
        })
        .unwrap();
    let ClientFrame::SealedCommit { targets, rotate, .. } = &removal else { panic!() };
    assert_eq!(targets.len(), 2, "Bob, and Carol so she learns of it");
    assert_eq!(rotate.len(), 2, "Alice's and Bob's queues; not Carol's");
    assert!(queues.commit(&removal).is_empty());
    assert!(engine.settle_commit(&crew, true).unwrap());
    queues.deliver_to(&bob);
    queues.deliver_to(&carol);
    // Carol's old capability writes no more; she is out and drops her queue.
    assert!(!queues.writable(&before[0]));
    assert!(carol.engine().encrypt_sealed(&crew, &carol.engine().content(Body::Text("x".into()))).is_err());
    assert_eq!(carol.engine().queues_to_drop().unwrap().len(), 1);
    assert!(carol.engine().own_queues().unwrap().is_empty());
    // Alice and Bob carry on, at the new epoch's secrets.
    assert!(say(&queues, &bob, &crew, "just us").is_empty());
    queues.deliver_to(&alice);
    assert_eq!(alice.texts(&crew), ["just us"]);
}

#[test]
fn a_message_sent_before_a_commit_is_read_after_it() {
    let queues = Queues::default();
    let (alice, bob) = (Device::new(), Device::new());
    let crew = routed_group(&queues, &alice, &[&bob]);
    // Bob writes at the current epoch; Alice self-updates and Bob's
    // message only reaches her after she moved on.
    let mut engine = bob.engine();
    let content = engine.content(Body::Text("late".into()));
    let late = engine.encrypt_sealed(&crew, &content).unwrap();
    let mut alice_engine = alice.engine();
    let update = alice_engine
        .stage_sealed_commit(&crew, |conversation, provider, identity| {
            conversation.self_update(provider, identity)
        })
        .unwrap();
    assert!(queues.commit(&update).is_empty());
    assert!(alice_engine.settle_commit(&crew, true).unwrap());
    // The relay took Alice's commit first: Bob's write secret is stale.
    assert_eq!(queues.send(&late.targets, &late.payload), [0]);
    // Bob catches up and sends the same payload again with the new secret.
    queues.deliver_to(&bob);
    let again: Vec<Capability> =
        bob.engine().capabilities(&crew, &late.devices).unwrap().into_iter().map(|(_, c)| c).collect();
    assert!(queues.send(&again, &late.payload).is_empty());
    queues.deliver_to(&alice);
    assert_eq!(alice.texts(&crew), ["late"]);
}

#[test]
fn junk_in_a_queue_is_shown_as_unreadable_and_blocks_nothing() {
    let queues = Queues::default();
    let (alice, bob) = (Device::new(), Device::new());
    let crew = routed_group(&queues, &alice, &[&bob]);
    let (bob_queue, _) = bob.engine().own_queues().unwrap()[0].clone();
    for junk in [vec![], vec![MESSAGE_TAG; 300], vec![hush_proto::COMMIT_PAYLOAD_TAG; 300], vec![7; 10]] {
        bob.engine().deliver_queued(&bob_queue, &junk).unwrap();
    }
    // Junk on the contact queue or in the introduction mailbox: dropped.
    bob.engine().deliver_introduction(&[hush_proto::WELCOME_PAYLOAD_TAG; 400]).unwrap();
    assert!(say(&queues, &alice, &crew, "still here").is_empty());
    queues.deliver_to(&bob);
    assert_eq!(bob.texts(&crew), ["still here"]);
    let events = bob.store.messages(&crew).into_iter().filter(|m| m.event).count();
    assert!(events >= 1, "the junk was not shown");
}

#[test]
fn a_message_ahead_of_its_commit_waits_for_it_and_one_far_ahead_is_lost() {
    let queues = Queues::default();
    let (alice, bob) = (Device::new(), Device::new());
    let crew = routed_group(&queues, &alice, &[&bob]);
    let mut engine = bob.engine();
    let update = engine
        .stage_sealed_commit(&crew, |conversation, provider, identity| {
            conversation.self_update(provider, identity)
        })
        .unwrap();
    assert!(queues.commit(&update).is_empty());
    assert!(engine.settle_commit(&crew, true).unwrap());
    assert!(say(&queues, &bob, &crew, "after the update").is_empty());
    // The relay hands Alice the message before the commit.
    let (alice_queue, _) = alice
        .engine()
        .own_queues()
        .unwrap()
        .into_iter()
        .find(|(q, _)| alice.engine().queue_group(q).unwrap().is_some())
        .unwrap();
    let mut waiting = queues.take(&alice_queue);
    assert_eq!(waiting.len(), 2);
    waiting.reverse();
    // A copy claiming an epoch far ahead (the epoch is in the clear).
    let mut far = waiting[0].clone();
    far[1..9].copy_from_slice(&1_000u64.to_be_bytes());
    alice.engine().deliver_queued(&alice_queue, &far).unwrap();
    alice.engine().deliver_queued(&alice_queue, &waiting[0]).unwrap();
    assert!(alice.texts(&crew).is_empty(), "shown before its commit");
    alice.engine().deliver_queued(&alice_queue, &waiting[1]).unwrap();
    assert_eq!(alice.texts(&crew), ["after the update"]);
    // Delivered again (its acknowledgement was lost): the held message,
    // read once its commit came, is known, not shown as lost.
    alice.engine().deliver_queued(&alice_queue, &waiting[0]).unwrap();
    assert_eq!(alice.texts(&crew), ["after the update"]);
    let notices = alice.store.messages(&crew).into_iter().filter(|m| m.event).count();
    assert_eq!(notices, 1, "the far one is shown as lost, once");
}

#[test]
fn a_payload_delivered_again_after_its_epoch_key_is_forgotten_is_not_shown_as_lost() {
    let queues = Queues::default();
    let (alice, bob) = (Device::new(), Device::new());
    let crew = routed_group(&queues, &alice, &[&bob]);
    let alice_queue = alice
        .engine()
        .own_queues()
        .unwrap()
        .into_iter()
        .find(|(q, _)| alice.engine().queue_group(q).unwrap().is_some())
        .unwrap()
        .0;
    let mut delivered = Vec::new();
    // More commits than the transport keys a device remembers.
    for _ in 0..8 {
        let mut engine = bob.engine();
        let update = engine
            .stage_sealed_commit(&crew, |conversation, provider, identity| {
                conversation.self_update(provider, identity)
            })
            .unwrap();
        assert!(queues.commit(&update).is_empty());
        assert!(engine.settle_commit(&crew, true).unwrap());
        for payload in queues.take(&alice_queue) {
            alice.engine().deliver_queued(&alice_queue, &payload).unwrap();
            delivered.push(payload);
        }
    }
    let lost = |device: &Device| device.store.messages(&crew).into_iter().filter(|m| m.event).count();
    let before = lost(&alice);
    // The relay hands every one of them over again (a lost acknowledgement,
    // a hostile relay): they were read, none is lost.
    for payload in &delivered {
        alice.engine().deliver_queued(&alice_queue, payload).unwrap();
    }
    assert_eq!(lost(&alice), before);
}

//! The engine over in-memory stores, devices exchanging payloads by hand
//! in the order a relay would (or would not) deliver them.

use hush_proto::{AccountId, ClientFrame};
use openmls::prelude::OpenMlsProvider;
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::*;
use crate::group::SentCommit;
use crate::keys::verify_key_package;

const HOUR: u64 = 3600 * 1000;

struct Device {
    store: MemoryStore,
    identity: Identity,
    name: &'static str,
    /// Seeds each engine's ids apart: two engines at the same moment must
    /// not draw the same ids.
    engines: std::cell::Cell<u64>,
}

impl Device {
    fn new(name: &'static str) -> Self {
        let store = MemoryStore::new();
        let identity = Identity::generate(store.provider().storage()).expect("identity");
        Self { store, identity, name, engines: std::cell::Cell::new(0) }
    }

    fn account(&self) -> AccountId {
        self.identity.account()
    }

    fn engine(&self, now: u64) -> Engine<'_, MemoryStore> {
        let count = self.engines.get() + 1;
        self.engines.set(count);
        let seed = u64::from_be_bytes(self.account().0[..8].try_into().expect("8 bytes")) ^ count;
        Engine::new(&self.store, &self.identity, now, StdRng::seed_from_u64(seed))
    }

    /// A verified key package of `self`, as `checker` fetched it.
    fn key_package_for(&self, checker: &Device) -> crate::VerifiedKeyPackage {
        let work = self.engine(0).key_package_work(0).expect("key packages");
        let Some(ClientFrame::UploadKeyPackages { one_time, .. }) = work.upload else { panic!("an upload") };
        verify_key_package(&checker.store.provider(), &one_time[0], self.account()).expect("verifies")
    }

    /// The last-resort key package of `self` (its private key stays after
    /// a join, so a replayed Welcome made with it can be processed again).
    fn last_resort_for(&self, checker: &Device) -> crate::VerifiedKeyPackage {
        let work = self.engine(0).key_package_work(0).expect("key packages");
        let Some(ClientFrame::UploadKeyPackages { last_resort: Some(package), .. }) = work.upload else {
            panic!("an upload with a last-resort package")
        };
        verify_key_package(&checker.store.provider(), &package, self.account()).expect("verifies")
    }

    /// The texts of a conversation, events put into words.
    fn history(&self, group_id: &[u8], names: &[&Device]) -> Vec<String> {
        let name = |account: &AccountId| {
            names
                .iter()
                .find(|d| d.account() == *account)
                .map_or_else(|| account.to_string(), |d| d.name.into())
        };
        self.store
            .messages(group_id)
            .iter()
            .map(|m| match m.event.then(|| Event::decode(&m.text)).flatten() {
                Some(event) => format!("* {}", event.describe(&name)),
                None => m.text.clone(),
            })
            .collect()
    }

    fn epoch(&self, group_id: &[u8]) -> u64 {
        self.engine(0).epoch(group_id).expect("epoch").expect("a member").0
    }

    /// Encrypts a text; the payload the relay would queue.
    fn write(&self, group_id: &[u8], text: &str, now: u64) -> Vec<u8> {
        let mut engine = self.engine(now);
        let content = engine.content(Body::Text(text.into()));
        let outgoing = engine.encrypt(group_id, &content).expect("encrypts");
        engine.sent(group_id, &content).expect("recorded");
        outgoing.payload
    }

    /// Stages a self-update; the commit payload.
    fn self_update(&self, group_id: &[u8]) -> Vec<u8> {
        let frame = self
            .engine(0)
            .stage_commit(group_id, |conversation, provider, identity| {
                conversation.self_update(provider, identity)
            })
            .expect("commit");
        commit_payload(&frame)
    }
}

fn commit_payload(frame: &ClientFrame) -> Vec<u8> {
    let ClientFrame::Commit { payload, .. } = frame else { panic!("a commit frame") };
    payload.clone()
}

fn welcome(frame: &ClientFrame) -> Vec<u8> {
    let ClientFrame::Commit { welcome: Some((_, welcome)), .. } = frame else { panic!("a Welcome") };
    welcome.clone()
}

/// `creator` makes a group with `others` (accepted by the relay at once)
/// and describes it; every other member joins and reads the description.
/// Returns the group id.
fn group(creator: &Device, others: &[&Device], name: Option<&str>) -> Vec<u8> {
    let packages: Vec<_> = others.iter().map(|d| d.key_package_for(creator)).collect();
    let mut engine = creator.engine(0);
    let group_id = engine.create_group().expect("group");
    let frame = engine
        .stage_commit(&group_id, |conversation, provider, identity| {
            conversation.add(provider, identity, &packages)
        })
        .expect("commit");
    assert!(engine.settle_commit(&group_id, true).expect("settles"));
    let kind = match name {
        Some(name) => ConversationKind::Group { name: name.into() },
        None => ConversationKind::Direct { peer: others[0].account() },
    };
    engine.describe(&group_id, &kind).expect("described");
    let info = engine.content(Body::Info { group_name: name.map(Into::into) });
    let info = engine.encrypt(&group_id, &info).expect("info").payload;
    for other in others {
        other.engine(0).deliver(&welcome(&frame)).expect("joins");
        other.engine(0).deliver(&info).expect("reads the description");
    }
    group_id
}

#[test]
fn a_new_member_joins_and_a_stranger_s_group_is_a_request_until_accepted() {
    let alice = Device::new("alice");
    let bob = Device::new("bob");
    let carol = Device::new("carol");
    // Carol knows Alice; Bob does not.
    carol.store.add_contact("alice", alice.account());
    let crew = group(&alice, &[&bob, &carol], Some("crew"));
    let hello = alice.write(&crew, "hello", 1);
    bob.engine(2).deliver(&hello).expect("delivered");
    carol.engine(2).deliver(&hello).expect("delivered");

    assert_eq!(bob.history(&crew, &[&alice]), ["* alice added you", "hello"]);
    assert!(bob.engine(3).is_request(&crew).expect("read"));
    assert_eq!(
        bob.engine(3).requests().expect("read"),
        [PendingRequest { group_id: crew.clone(), by: alice.account() }]
    );
    assert!(!carol.engine(3).is_request(&crew).expect("read"));
    // A request owes no self-update until accepted: the stranger learns
    // nothing, not even that the device is alive.
    let policy = UpdatePolicy::default();
    assert!(bob.engine(3).updates_due(&policy).expect("read").is_empty());
    assert_eq!(carol.engine(3).updates_due(&policy).expect("read"), std::slice::from_ref(&crew));
    bob.engine(4).accept_request(&crew).expect("accepted");
    assert_eq!(bob.engine(4).updates_due(&policy).expect("read"), [crew]);
}

#[test]
fn a_message_ahead_of_its_epoch_waits_for_the_commit_that_leads_there() {
    let alice = Device::new("alice");
    let bob = Device::new("bob");
    let chat = group(&alice, &[&bob], None);
    let commit = alice.self_update(&chat);
    assert!(alice.engine(1).settle_commit(&chat, true).expect("settles"));
    let early = alice.write(&chat, "after the update", 2);

    // The relay delivers the message before the commit (or the commit was
    // lost and is sent again later).
    bob.engine(3).deliver(&early).expect("held");
    assert_eq!(bob.history(&chat, &[&alice]), Vec::<String>::new());
    bob.engine(4).deliver(&commit).expect("processed");
    assert_eq!(bob.epoch(&chat), alice.epoch(&chat));
    assert_eq!(bob.history(&chat, &[&alice]), ["after the update"]);
    // Delivered again (a lost acknowledgement): shown once.
    bob.engine(5).deliver(&early).expect("duplicate");
    bob.engine(5).deliver(&commit).expect("duplicate");
    assert_eq!(bob.history(&chat, &[&alice]), ["after the update"]);
}

#[test]
fn a_message_far_ahead_or_corrupted_is_shown_as_lost_once_per_epoch() {
    let alice = Device::new("alice");
    let bob = Device::new("bob");
    let chat = group(&alice, &[&bob], None);
    let mut broken = alice.write(&chat, "one", 1);
    let last = broken.len() - 1;
    broken[last] ^= 1;
    let mut also_broken = alice.write(&chat, "two", 2);
    let last = also_broken.len() - 1;
    also_broken[last] ^= 1;
    bob.engine(3).deliver(&broken).expect("acknowledged");
    bob.engine(3).deliver(&also_broken).expect("acknowledged");
    let lost = "* a message could not be decrypted and is lost";
    assert_eq!(bob.history(&chat, &[&alice]), [lost]);
    // Readable messages still get through.
    let fine = alice.write(&chat, "three", 4);
    bob.engine(5).deliver(&fine).expect("delivered");
    assert_eq!(bob.history(&chat, &[&alice]), [lost, "three"]);
}

#[test]
fn held_payloads_expire_as_lost_when_their_commit_never_comes() {
    let alice = Device::new("alice");
    let bob = Device::new("bob");
    let chat = group(&alice, &[&bob], None);
    let _withheld = alice.self_update(&chat);
    alice.engine(1).settle_commit(&chat, true).expect("settles");
    let early = alice.write(&chat, "never readable", 2);
    bob.engine(3).deliver(&early).expect("held");
    let held_for = HELD_FOR.as_millis() as u64;
    bob.engine(3 + held_for - 1).expire_held().expect("expiry");
    assert!(bob.history(&chat, &[&alice]).is_empty(), "still waiting");
    bob.engine(3 + held_for).expire_held().expect("expiry");
    assert_eq!(bob.history(&chat, &[&alice]), ["* a message could not be decrypted and is lost"]);
}

#[test]
fn an_unresolved_commit_survives_a_restart_and_is_settled_by_the_answer() {
    let alice = Device::new("alice");
    let bob = Device::new("bob");
    let chat = group(&alice, &[&bob], None);
    let epoch = alice.epoch(&chat);
    let commit = alice.self_update(&chat);
    // The answer was lost; the device restarts (a new engine over the same
    // store): the commit is still there, neither merged nor dropped.
    let engine = alice.engine(10);
    let unresolved = engine.unresolved_commits().expect("read");
    assert_eq!(unresolved.len(), 1);
    assert_eq!(commit_payload(&unresolved[0].frame), commit);
    assert_eq!(alice.epoch(&chat), epoch);
    // Meanwhile Bob moved on and wrote at the new epoch: Alice holds it.
    bob.engine(11).deliver(&commit).expect("processed");
    let reply = bob.write(&chat, "got it", 12);
    alice.engine(13).deliver(&reply).expect("held");
    // Sent again, the relay answers "accepted": merged, and what waited is read.
    assert!(alice.engine(14).settle_commit(&chat, true).expect("settles"));
    assert_eq!(alice.epoch(&chat), epoch + 1);
    assert_eq!(alice.history(&chat, &[&bob]), ["got it"]);
    assert!(alice.engine(15).unresolved_commits().expect("read").is_empty());
}

#[test]
fn a_commit_that_lost_its_epoch_is_dropped_for_the_winner() {
    let alice = Device::new("alice");
    let bob = Device::new("bob");
    let chat = group(&alice, &[&bob], None);
    let _ours = alice.self_update(&chat);
    let theirs = bob.self_update(&chat);
    bob.engine(1).settle_commit(&chat, true).expect("settles");
    // The relay ordered Bob's: processing it settles Alice's.
    alice.engine(2).deliver(&theirs).expect("processed");
    assert!(alice.engine(2).unresolved_commits().expect("read").is_empty());
    assert!(!alice.engine(3).settle_commit(&chat, false).expect("nothing left"));
    assert_eq!(alice.epoch(&chat), bob.epoch(&chat));
    let text = bob.write(&chat, "same epoch", 4);
    alice.engine(5).deliver(&text).expect("read");
    assert_eq!(alice.history(&chat, &[&bob]), ["same epoch"]);
}

#[test]
fn a_removed_member_is_not_brought_back_by_a_replayed_welcome() {
    let alice = Device::new("alice");
    let bob = Device::new("bob");
    let carol = Device::new("carol");
    bob.store.add_contact("alice", alice.account());
    let packages = [bob.last_resort_for(&alice), carol.key_package_for(&alice)];
    let mut engine = alice.engine(0);
    let crew = engine.create_group().expect("group");
    let add = engine
        .stage_commit(&crew, |conversation, provider, identity| {
            conversation.add(provider, identity, &packages)
        })
        .expect("commit");
    engine.settle_commit(&crew, true).expect("settles");
    engine.describe(&crew, &ConversationKind::Group { name: "crew".into() }).expect("described");
    bob.engine(1).deliver(&welcome(&add)).expect("joins");
    let bob_account = bob.account();
    let removal = engine
        .stage_commit(&crew, |conversation, provider, identity| {
            conversation.remove(provider, identity, &[bob_account])
        })
        .expect("commit");
    engine.settle_commit(&crew, true).expect("settles");
    bob.engine(2).deliver(&commit_payload(&removal)).expect("removed");
    assert!(!bob.store.conversation(&crew).expect("read").expect("known").active);

    // The relay (or anyone who kept it) replays the old Welcome once the
    // device no longer remembers seeing it: refused, and Bob stays out.
    bob.engine(3).deliver(&welcome(&add)).expect("a duplicate");
    bob.store.forget_sightings(u64::MAX).expect("forgotten");
    bob.engine(3).deliver(&welcome(&add)).expect("refused, acknowledged");
    assert!(!bob.store.conversation(&crew).expect("read").expect("known").active);
    assert!(bob.engine(3).epoch(&crew).expect("read").is_none_or(|(_, active)| !active));
}

#[test]
fn membership_changes_are_stored_as_data_and_a_direct_chat_that_grows_becomes_a_group() {
    let alice = Device::new("alice");
    let bob = Device::new("bob");
    let mallory = Device::new("mallory");
    bob.store.add_contact("alice", alice.account());
    let chat = group(&alice, &[&bob], None);
    assert_eq!(
        bob.store.conversation(&chat).expect("read").expect("known").kind,
        ConversationKind::Direct { peer: alice.account() }
    );
    let package = mallory.key_package_for(&alice);
    let add = alice
        .engine(1)
        .stage_commit(&chat, |conversation, provider, identity| {
            conversation.add(provider, identity, &[package])
        })
        .expect("commit");
    alice.engine(1).settle_commit(&chat, true).expect("settles");
    bob.engine(2).deliver(&commit_payload(&add)).expect("processed");

    let kind = bob.store.conversation(&chat).expect("read").expect("known").kind;
    assert!(matches!(kind, ConversationKind::Group { .. }), "{kind:?}");
    let stored = bob.store.messages(&chat);
    let event = stored.iter().find(|m| m.event).expect("an event");
    assert_eq!(
        Event::decode(&event.text),
        Some(Event::Added { by: alice.account(), members: vec![mallory.account()] })
    );
    // Put into words with the names known when shown.
    assert_eq!(bob.history(&chat, &[&alice, &mallory]), ["* alice added mallory"]);
}

#[test]
fn a_reader_only_member_owes_self_updates_on_schedule() {
    let alice = Device::new("alice");
    let bob = Device::new("bob");
    bob.store.add_contact("alice", alice.account());
    let chat = group(&alice, &[&bob], None);
    let policy = UpdatePolicy { after_messages: 100, after: std::time::Duration::from_secs(24 * 3600) };
    // Just joined: owed at once.
    assert_eq!(bob.engine(1).updates_due(&policy).expect("read"), std::slice::from_ref(&chat));
    bob.engine(1).updated(&chat).expect("noted");
    assert!(bob.engine(2).updates_due(&policy).expect("read").is_empty());
    assert!(bob.engine(1 + 24 * HOUR - 1).updates_due(&policy).expect("read").is_empty());
    assert_eq!(bob.engine(1 + 24 * HOUR).updates_due(&policy).expect("read"), std::slice::from_ref(&chat));
    // A failed try waits an hour, then is owed again.
    bob.engine(1 + 24 * HOUR).defer_update(&chat).expect("noted");
    assert!(bob.engine(1 + 25 * HOUR - 1).updates_due(&policy).expect("read").is_empty());
    assert_eq!(bob.engine(1 + 25 * HOUR).updates_due(&policy).expect("read"), std::slice::from_ref(&chat));
    // A member who writes owes one after 100 messages.
    let busy = UpdatePolicy { after_messages: 3, ..policy };
    alice.engine(2).updated(&chat).expect("noted");
    for n in 0..3 {
        assert!(!alice.engine(3).update_due_before_sending(&chat, &busy).expect("read"), "after {n}");
        alice.write(&chat, "hi", 3);
    }
    assert!(alice.engine(3).update_due_before_sending(&chat, &busy).expect("read"));
}

#[test]
fn deactivated_members_are_removed_but_never_most_of_a_group_at_once() {
    let alice = Device::new("alice");
    let others: Vec<Device> = ["bob", "carol", "dave"].into_iter().map(Device::new).collect();
    let crew = group(&alice, &others.iter().collect::<Vec<_>>(), Some("crew"));
    let [bob, carol, dave] = [0, 1, 2].map(|i| others[i].account());
    let stranger = Device::new("eve").account();
    let mut engine = alice.engine(1);
    assert_eq!(engine.deactivated(&crew, &[bob, stranger, alice.account()]).expect("decided"), [bob]);
    assert!(matches!(engine.deactivated(&crew, &[bob, carol, dave]), Err(EngineError::Invalid(_))));

    // A one-to-one conversation is not changed: it says so, once.
    let peer = Device::new("peer");
    let chat = group(&alice, &[&peer], None);
    for _ in 0..2 {
        assert!(alice.engine(2).deactivated(&chat, &[peer.account()]).expect("decided").is_empty());
    }
    assert_eq!(
        alice.history(&chat, &[&peer]),
        ["* the relay reports peer's account deactivated: nothing reaches them"]
    );
}

#[test]
fn a_declined_request_is_forgotten_and_its_replayed_welcome_refused() {
    let alice = Device::new("alice");
    let bob = Device::new("bob");
    let package = bob.last_resort_for(&alice);
    let engine = alice.engine(0);
    let chat = engine.create_group().expect("group");
    let add = engine
        .stage_commit(&chat, |conversation, provider, identity| {
            conversation.add(provider, identity, &[package])
        })
        .expect("commit");
    bob.engine(1).deliver(&welcome(&add)).expect("joins");
    assert!(bob.engine(1).is_request(&chat).expect("read"));
    bob.engine(2).decline_request(&chat).expect("declined");
    assert!(bob.engine(2).requests().expect("read").is_empty());
    assert!(bob.engine(2).epoch(&chat).expect("read").is_none());
    bob.store.forget_sightings(u64::MAX).expect("forgotten");
    bob.engine(3).deliver(&welcome(&add)).expect("refused, acknowledged");
    assert!(bob.engine(3).epoch(&chat).expect("read").is_none());
}

#[test]
fn a_failed_transaction_leaves_nothing_behind() {
    let device = Device::new("alice");
    let store = &device.store;
    let chat = group(&device, &[&Device::new("bob")], None);
    let epoch = device.epoch(&chat);
    let outcome: Result<(), EngineError> = store.transaction(|store| {
        store.set_setting("half", b"done")?;
        let provider = store.provider();
        let mut conversation = Conversation::load(&provider, &chat)?.expect("a member");
        let _ = conversation.self_update(&provider, &device.identity)?;
        conversation.confirm_commit(&provider)?;
        Err(EngineError::Invalid("the rest failed".into()))
    });
    assert!(outcome.is_err());
    assert_eq!(store.setting("half").expect("read"), None);
    assert_eq!(device.epoch(&chat), epoch, "the MLS state was rolled back too");
}

#[test]
fn direct_means_exactly_the_creator_and_us() {
    const ALICE: AccountId = AccountId([1; 20]);
    const BOB: AccountId = AccountId([2; 20]);
    const MALLORY: AccountId = AccountId([3; 20]);
    let id = [0xab, 0xcd, 0xef, 0x01, 0x02];
    assert_eq!(
        described_kind(None, &id, ALICE, BOB, &[ALICE, BOB]),
        ConversationKind::Direct { peer: ALICE }
    );
    let hidden = described_kind(None, &id, ALICE, BOB, &[ALICE, BOB, MALLORY]);
    assert_eq!(hidden, ConversationKind::Group { name: "group-abcdef01".into() });
    assert!(matches!(
        described_kind(None, &id, ALICE, BOB, &[ALICE, MALLORY]),
        ConversationKind::Group { .. }
    ));
    assert!(matches!(described_kind(None, &id, BOB, BOB, &[BOB, BOB]), ConversationKind::Group { .. }));
    assert_eq!(
        described_kind(Some("crew".into()), &id, ALICE, BOB, &[ALICE, BOB]),
        ConversationKind::Group { name: "crew".into() }
    );
}

#[test]
fn last_resort_packages_from_before_the_fix_are_replaced_at_once() {
    let device = Device::new("alice");
    let uploads_last_resort = |work: &KeyPackageWork| {
        matches!(&work.upload, Some(ClientFrame::UploadKeyPackages { last_resort: Some(_), .. }))
    };
    let work = device.engine(1000).key_package_work(0).expect("work");
    assert!(uploads_last_resort(&work));
    device.engine(1000).key_packages_accepted(&work).expect("accepted");
    let work = device.engine(2000).key_package_work(100).expect("work");
    assert!(work.upload.is_none(), "nothing due a second later");
    // A profile whose last-resort package was made by an older version.
    device.store.delete_setting(LAST_RESORT_USABLE).expect("deleted");
    let later = 2 * HOUR;
    let work = device.engine(later).key_package_work(100).expect("work");
    assert!(uploads_last_resort(&work));
    assert_eq!(work.retire.len(), 1, "the old package is retired once the relay has the new one");
    device.engine(later).key_packages_accepted(&work).expect("accepted");
    assert!(device.engine(later + HOUR).key_package_work(100).expect("work").upload.is_none());
}

#[test]
fn a_refused_upload_does_not_make_a_new_last_resort_package_at_every_try() {
    let device = Device::new("alice");
    let work = device.engine(1000).key_package_work(0).expect("work");
    assert!(matches!(&work.upload, Some(ClientFrame::UploadKeyPackages { last_resort: Some(_), .. })));
    // The relay refused it (a wrong clock): nothing was accepted. The next
    // upkeeps make no new last-resort package; an hour later one is tried.
    let again = device.engine(61_000).key_package_work(100).expect("work");
    assert!(again.upload.is_none());
    assert_eq!(device.engine(61_000).issued_key_packages().expect("read").len(), 11);
    let hour_later = device.engine(1000 + HOUR).key_package_work(100).expect("work");
    assert!(matches!(&hour_later.upload, Some(ClientFrame::UploadKeyPackages { last_resort: Some(_), .. })));
}

type Make = fn(&mut Conversation, &MemoryProvider<'_>, &Identity) -> Result<SentCommit, CoreError>;

fn self_update_commit(
    conversation: &mut Conversation,
    provider: &MemoryProvider<'_>,
    identity: &Identity,
) -> Result<SentCommit, CoreError> {
    conversation.self_update(provider, identity)
}

#[test]
fn a_commit_that_loses_its_epoch_catches_up_and_is_made_again_at_the_winner_s_epoch() {
    let alice = Device::new("alice");
    let bob = Device::new("bob");
    let chat = group(&alice, &[&bob], None);
    let (mut run, step) =
        CommitRun::start(&alice.engine(1), &chat, self_update_commit as Make).expect("start");
    assert_eq!(step, CommitStep::Drain, "nothing unresolved: drain first");
    let CommitStep::Submit(first) = run.resume(&mut alice.engine(2)).expect("staged") else {
        panic!("submit")
    };
    // Bob's commit won the epoch.
    let theirs = bob.self_update(&chat);
    bob.engine(3).settle_commit(&chat, true).expect("settles");
    let winner = bob.epoch(&chat);
    let step = run.answer(&mut alice.engine(4), CommitAnswer::Stale { epoch: winner }).expect("answer");
    assert_eq!(step, CommitStep::CatchUp { epoch: winner });
    assert!(alice.engine(4).unresolved_commits().expect("read").is_empty(), "the loser is dropped");
    assert!(!alice.engine(4).reached(&chat, winner).expect("a member"));
    alice.engine(5).deliver(&theirs).expect("processed");
    assert!(alice.engine(5).reached(&chat, winner).expect("a member"));
    let CommitStep::Submit(second) = run.resume(&mut alice.engine(6)).expect("staged") else {
        panic!("submit")
    };
    let ClientFrame::Commit { epoch, .. } = &*second else { panic!("a commit") };
    assert_eq!(*epoch, winner, "made again at the winner's epoch");
    assert_ne!(commit_payload(&first), commit_payload(&second));
    assert_eq!(run.answer(&mut alice.engine(7), CommitAnswer::Accepted).expect("answer"), CommitStep::Merged);
    assert_eq!(alice.epoch(&chat), winner + 1);
    bob.engine(8).deliver(&commit_payload(&second)).expect("processed");
    assert_eq!(bob.epoch(&chat), winner + 1);
}

#[test]
fn a_commit_without_an_answer_stays_unresolved_and_the_next_commit_resolves_it_first() {
    let alice = Device::new("alice");
    let bob = Device::new("bob");
    let chat = group(&alice, &[&bob], None);
    let epoch = alice.epoch(&chat);
    let (mut run, _) = CommitRun::start(&alice.engine(1), &chat, self_update_commit as Make).expect("start");
    let CommitStep::Submit(sent) = run.resume(&mut alice.engine(2)).expect("staged") else {
        panic!("submit")
    };
    assert_eq!(run.answer(&mut alice.engine(3), CommitAnswer::Lost).expect("answer"), CommitStep::Unresolved);
    assert!(run.resume(&mut alice.engine(3)).is_err(), "an ended run does not go on");
    assert_eq!(alice.epoch(&chat), epoch, "neither merged");
    assert_eq!(alice.engine(3).unresolved_commits().expect("read").len(), 1, "nor dropped");
    // The next commit in the group resolves it first.
    let (mut next, step) =
        CommitRun::start(&alice.engine(4), &chat, self_update_commit as Make).expect("start");
    assert_eq!(step, CommitStep::Resolve);
    assert!(matches!(alice.engine(5).resolve(&chat, CommitAnswer::Busy), Ok(Resolution::Pending)));
    assert_eq!(next.resume(&mut alice.engine(5)).expect("step"), CommitStep::Unresolved, "still unknown");
    // Sent again, the relay recognises it: merged, and Bob reads it.
    assert!(matches!(alice.engine(6).resolve(&chat, CommitAnswer::Accepted), Ok(Resolution::Settled)));
    assert_eq!(alice.epoch(&chat), epoch + 1);
    bob.engine(7).deliver(&commit_payload(&sent)).expect("processed");
    assert_eq!(bob.epoch(&chat), epoch + 1);
    let (mut next, step) =
        CommitRun::start(&alice.engine(8), &chat, self_update_commit as Make).expect("start");
    assert_eq!(step, CommitStep::Drain);
    assert!(matches!(next.resume(&mut alice.engine(9)), Ok(CommitStep::Submit(_))));
}

#[test]
fn a_refused_commit_is_dropped_and_a_busy_group_gives_up_after_its_attempts() {
    let alice = Device::new("alice");
    let bob = Device::new("bob");
    let chat = group(&alice, &[&bob], None);
    let epoch = alice.epoch(&chat);
    let (mut run, _) = CommitRun::start(&alice.engine(1), &chat, self_update_commit as Make).expect("start");
    assert!(run.answer(&mut alice.engine(1), CommitAnswer::Accepted).is_err(), "nothing was submitted");
    let CommitStep::Submit(_) = run.resume(&mut alice.engine(2)).expect("staged") else { panic!("submit") };
    assert_eq!(run.answer(&mut alice.engine(3), CommitAnswer::Refused).expect("answer"), CommitStep::Refused);
    assert!(alice.engine(3).unresolved_commits().expect("read").is_empty());
    assert_eq!(alice.epoch(&chat), epoch);
    // A busy relay did not order a commit sent for the first time either.
    let (mut run, _) = CommitRun::start(&alice.engine(3), &chat, self_update_commit as Make).expect("start");
    let CommitStep::Submit(_) = run.resume(&mut alice.engine(3)).expect("staged") else { panic!("submit") };
    assert_eq!(run.answer(&mut alice.engine(3), CommitAnswer::Busy).expect("answer"), CommitStep::Refused);
    assert!(alice.engine(3).unresolved_commits().expect("read").is_empty());
    assert_eq!(alice.epoch(&chat), epoch);
    // Losing every time (the catch-up never gets anywhere): bounded.
    let (mut run, _) = CommitRun::start(&alice.engine(4), &chat, self_update_commit as Make).expect("start");
    for attempt in 0..COMMIT_ATTEMPTS {
        let step = run.resume(&mut alice.engine(5)).expect("step");
        assert!(matches!(step, CommitStep::Submit(_)), "attempt {attempt}: {step:?}");
        let step = run.answer(&mut alice.engine(6), CommitAnswer::Stale { epoch }).expect("answer");
        assert_eq!(step, CommitStep::CatchUp { epoch });
    }
    assert_eq!(run.resume(&mut alice.engine(7)).expect("step"), CommitStep::GaveUp);
    assert!(alice.engine(7).unresolved_commits().expect("read").is_empty());
    assert_eq!(alice.epoch(&chat), epoch);
}

#[test]
fn a_member_removed_while_catching_up_stops_committing() {
    let alice = Device::new("alice");
    let bob = Device::new("bob");
    let carol = Device::new("carol");
    let crew = group(&alice, &[&bob, &carol], Some("crew"));
    let (mut run, _) = CommitRun::start(&bob.engine(1), &crew, self_update_commit as Make).expect("start");
    let CommitStep::Submit(_) = run.resume(&mut bob.engine(2)).expect("staged") else { panic!("submit") };
    // Alice removed Bob at this epoch and won it.
    let bob_id = bob.account();
    let removal = alice
        .engine(3)
        .stage_commit(&crew, |conversation, provider, identity| {
            conversation.remove(provider, identity, &[bob_id])
        })
        .expect("commit");
    alice.engine(3).settle_commit(&crew, true).expect("settles");
    let winner = alice.epoch(&crew);
    let step = run.answer(&mut bob.engine(4), CommitAnswer::Stale { epoch: winner }).expect("answer");
    assert_eq!(step, CommitStep::CatchUp { epoch: winner });
    bob.engine(5).deliver(&commit_payload(&removal)).expect("processed");
    assert!(bob.engine(6).reached(&crew, winner).is_err(), "no longer a member");
    assert!(matches!(run.resume(&mut bob.engine(6)), Err(EngineError::Invalid(_))));
}

#[test]
fn every_member_is_a_device_of_an_account_and_each_account_is_listed_once() {
    let alice = Device::new("alice");
    let bob = Device::new("bob");
    let chat = group(&alice, &[&bob], None);
    let engine = alice.engine(1);
    assert_eq!(engine.device(), alice.identity.device());
    assert_ne!(alice.identity.device(), bob.identity.device());
    let mut devices = engine.devices(&chat).expect("devices");
    devices.sort_by_key(|member| member.account);
    let mut expected = vec![
        MemberId { account: alice.account(), device: alice.identity.device() },
        MemberId { account: bob.account(), device: bob.identity.device() },
    ];
    expected.sort_by_key(|member| member.account);
    assert_eq!(devices, expected);
    assert_eq!(bob.engine(1).devices(&chat).expect("devices").len(), 2);
    assert_eq!(engine.members(&chat).expect("members").len(), 2);
}

#[test]
fn a_lost_answer_for_a_commit_another_member_s_commit_already_beat_leads_to_a_new_commit() {
    let alice = Device::new("alice");
    let bob = Device::new("bob");
    let chat = group(&alice, &[&bob], None);
    let (mut run, _) = CommitRun::start(&alice.engine(1), &chat, self_update_commit as Make).expect("start");
    let CommitStep::Submit(_) = run.resume(&mut alice.engine(2)).expect("staged") else { panic!("submit") };
    // While Alice waited, Bob's commit for the same epoch arrived: hers lost.
    let theirs = bob.self_update(&chat);
    bob.engine(3).settle_commit(&chat, true).expect("settles");
    alice.engine(4).deliver(&theirs).expect("processed");
    assert!(alice.engine(4).unresolved_commits().expect("read").is_empty());
    // Then the connection dropped: nothing is left to resolve, so the
    // commit is made again (not reported as unresolved).
    let winner = bob.epoch(&chat);
    let step = run.answer(&mut alice.engine(5), CommitAnswer::Lost).expect("answer");
    assert_eq!(step, CommitStep::CatchUp { epoch: winner });
    let CommitStep::Submit(again) = run.resume(&mut alice.engine(6)).expect("staged") else {
        panic!("submit")
    };
    let ClientFrame::Commit { epoch, .. } = &*again else { panic!("a commit") };
    assert_eq!(*epoch, winner);
}

#[test]
fn member_accounts_lists_an_account_once_whatever_its_devices() {
    use openmls::prelude::{LeafNodeIndex, Member};
    let alice = Device::new("alice");
    let bob = Device::new("bob");
    let leaf = |device: &Device, index: u32| {
        let credential = device.identity.credential();
        Member::new(
            LeafNodeIndex::new(index),
            vec![index as u8; 32],
            credential.signature_key.as_slice().to_vec(),
            credential.credential,
        )
    };
    let members = vec![leaf(&alice, 0), leaf(&bob, 1), leaf(&alice, 2)];
    assert_eq!(
        crate::member_accounts(members.into_iter()).expect("accounts"),
        [alice.account(), bob.account()]
    );
}

#[test]
fn route_secrets_are_shared_by_the_epoch_s_members_and_a_removal_leaves_the_removed_behind() {
    let (alice, bob, carol) = (Device::new("alice"), Device::new("bob"), Device::new("carol"));
    let crew = group(&alice, &[&bob, &carol], Some("crew"));
    let load = |device: &Device| Conversation::load(&device.store.provider(), &crew).unwrap().unwrap();
    let bob_device = bob.identity.device();
    let secrets = |device: &Device| {
        let conversation = load(device);
        let provider = device.store.provider();
        (
            *conversation.write_secret(&provider, &bob_device, false).unwrap(),
            *conversation.transport_key(&provider, false).unwrap(),
        )
    };
    assert_eq!(secrets(&alice), secrets(&bob));
    assert_eq!(secrets(&alice), secrets(&carol));
    // Alice removes Carol: the commit's next secrets are what Bob derives
    // once he processes it, and neither is what Carol still holds.
    let carol_account = carol.account();
    let mut engine = alice.engine(1);
    let removal = engine
        .stage_commit(&crew, |conversation, provider, identity| {
            conversation.remove(provider, identity, &[carol_account])
        })
        .unwrap();
    let next = {
        let conversation = load(&alice);
        let provider = alice.store.provider();
        (
            *conversation.write_secret(&provider, &bob_device, true).unwrap(),
            *conversation.transport_key(&provider, true).unwrap(),
        )
    };
    assert_ne!(next, secrets(&alice), "the secrets change with the epoch");
    engine.settle_commit(&crew, true).unwrap();
    bob.engine(2).deliver(&commit_payload(&removal)).unwrap();
    carol.engine(2).deliver(&commit_payload(&removal)).unwrap();
    assert_eq!(secrets(&alice), next);
    assert_eq!(secrets(&bob), next);
    assert!(Conversation::load(&carol.store.provider(), &crew).unwrap().is_none_or(|conversation| {
        conversation
            .write_secret(&carol.store.provider(), &bob_device, false)
            .map_or(true, |secret| *secret != next.0)
    }));
    // Owner keys for a queue made for a new member: the adder's, from its
    // pending commit, is the one the new member derives on joining.
    let dave = Device::new("dave");
    let package = [dave.key_package_for(&alice)];
    let dave_device = dave.identity.device();
    let add = engine
        .stage_commit(&crew, |conversation, provider, identity| {
            conversation.add(provider, identity, &package)
        })
        .unwrap();
    let made = load(&alice).new_member_owner_key(&alice.store.provider(), &dave_device).unwrap();
    engine.settle_commit(&crew, true).unwrap();
    dave.engine(3).deliver(&welcome(&add)).unwrap();
    let joined = load(&dave).joined_owner_key(&dave.store.provider(), &dave_device).unwrap();
    assert_eq!(made.verifying_key(), joined.verifying_key());
}

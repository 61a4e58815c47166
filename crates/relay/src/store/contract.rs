//! The store contract: every test here runs against both backends, the
//! embedded SQLite store and PostgreSQL (a private server started for the
//! test binary, a fresh database per test), so the two cannot drift.

use ed25519_dalek::{Signer, SigningKey};
use sha2::{Digest, Sha256};

use super::*;
use crate::store::{
    MAX_QUEUE_BYTES, MAX_QUEUE_ENTRIES, MAX_REPORTS_PER_ACCOUNT, MAX_REPORT_BYTES, QUEUE_IDLE_DAYS,
    REPORT_DAYS,
};
use hush_proto::{Capability, Destination, GroupId};

/// Adds an invite good for two registrations; answers its hash.
pub(super) fn with_invite(store: &mut dyn TestStore) -> [u8; 32] {
    let hash = [5u8; 32];
    store.add_invite(&hash, 2, 1_000).unwrap();
    hash
}

pub(super) fn register(store: &mut dyn Operations, hash: [u8; 32], key: u8) -> AccountId {
    Operations::register(store, &hash, &IdentityKey([key; 32]), &[0; 32], 10).expect("register")
}

pub(super) fn payload(bytes: &[u8]) -> Arc<[u8]> {
    Arc::from(bytes)
}

/// The relay key of epoch `epoch` in a test group (members derive theirs
/// from the MLS exporter; any distinct keys do here).
pub(super) fn epoch_key(epoch: u64) -> SigningKey {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&epoch.to_be_bytes());
    seed[8] = 0xee;
    SigningKey::from_bytes(&seed)
}

/// A commit made at `epoch`, signed with `signer` and announcing the next
/// epoch's key.
pub(super) fn commit(group: &GroupId, epoch: u64, body: &[u8], signer: &SigningKey) -> CommitRequest {
    let next_key = epoch_key(epoch + 1).verifying_key().to_bytes();
    let message = hush_proto::commit_auth_message(group, epoch, body, None, &next_key);
    CommitRequest {
        group: group.clone(),
        epoch,
        payload: payload(body),
        welcome: None,
        next_key,
        signature: signer.sign(&message).to_bytes(),
    }
}

/// A one-queue send of `body`, arrived at 1 and kept until 100.
pub(super) fn send_to(target: &Capability, body: &[u8]) -> Write {
    Write::Enqueue { target: target.clone(), payload: payload(body), now: 1, expires: 100 }
}

/// Does `writes` together, in one batch: the batch's outcome, and each
/// write's answer.
pub(super) fn write_together<S: RelayStore + ?Sized>(
    store: &mut S,
    writes: &[Write],
) -> (Result<(), StoreError>, Vec<Result<Written, StoreError>>) {
    let mut results = Vec::new();
    let outcome = store.batch(&mut |ops| {
        let writes: Vec<&Write> = writes.iter().collect();
        results = ops.write_each(&writes);
    });
    (outcome, results)
}

/// The queue every test commit goes to (made on first use).
pub(super) const MEMBER_QUEUE: QueueId = QueueId([0x51; 16]);
pub(super) const MEMBER_SECRET: [u8; 32] = [0x52; 32];

/// Orders a commit, sent to [`MEMBER_QUEUE`].
pub(super) fn order(store: &mut dyn Operations, commit: &CommitRequest) -> Result<CommitOutcome, StoreError> {
    match Operations::create_queue(store, &MEMBER_QUEUE, &[1; 32], &hush_proto::write_hash(&MEMBER_SECRET), 1)
    {
        Ok(()) | Err(StoreError::QueueIdTaken) => {}
        Err(error) => return Err(error),
    }
    let sealed = SealedCommitRequest {
        commit: commit.clone(),
        targets: vec![Capability { queue: MEMBER_QUEUE, secret: MEMBER_SECRET }],
        welcome_to: Vec::new(),
        rotate: Vec::new(),
    };
    Operations::commit_sealed(store, &sealed, 1, 100)
}

/// Puts `body` in the introduction mailboxes of `to`, as a Welcome with
/// the first commit of a new group: the one way payloads get there.
pub(super) fn introduce(
    ops: &mut dyn Operations,
    to: &[AccountId],
    body: &Arc<[u8]>,
    now: UnixSeconds,
    expires: UnixSeconds,
) -> Result<Enqueued, StoreError> {
    let group = GroupId(rand::random::<[u8; 16]>().to_vec());
    let mut commit = commit(&group, 0, b"create", &epoch_key(0));
    commit.welcome = Some(Arc::clone(body));
    let sealed = SealedCommitRequest {
        commit,
        targets: Vec::new(),
        welcome_to: to.iter().copied().map(Destination::Account).collect(),
        rotate: Vec::new(),
    };
    match ops.commit_sealed(&sealed, now, expires)? {
        CommitOutcome::Accepted(enqueued) => Ok(enqueued),
        other => panic!("a new group's first commit was {other:?}"),
    }
}

/// A store under test, with the few looks inside it the tests need.
pub(super) trait TestStore: Store {
    /// Rows in `table`.
    fn count(&mut self, table: &str) -> i64;
    /// Payloads stored (each once, however many queues it went to).
    fn payloads(&mut self) -> i64;
    /// A queue's entry and byte counters.
    fn queue_counters(&mut self, queue: &QueueId) -> (i64, i64);
    /// Sets a queue's counters (to test its quotas without filling it).
    fn set_queue_counters(&mut self, queue: &QueueId, entries: i64, bytes: i64);
}

impl TestStore for SqliteStore {
    fn count(&mut self, table: &str) -> i64 {
        self.connection.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |row| row.get(0)).unwrap()
    }

    fn payloads(&mut self) -> i64 {
        self.count("payloads")
    }

    fn queue_counters(&mut self, queue: &QueueId) -> (i64, i64) {
        self.connection
            .query_row("SELECT entries, bytes FROM queues WHERE id = ?1", [&queue.0[..]], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .unwrap()
    }

    fn set_queue_counters(&mut self, queue: &QueueId, entries: i64, bytes: i64) {
        self.connection
            .execute(
                "UPDATE queues SET entries = ?2, bytes = ?3 WHERE id = ?1",
                rusqlite::params![&queue.0[..], entries, bytes],
            )
            .unwrap();
    }
}

impl TestStore for PostgresStore {
    fn count(&mut self, table: &str) -> i64 {
        PostgresStore::count(self, table)
    }

    /// Shared payload rows, and payloads held by their one entry.
    fn payloads(&mut self) -> i64 {
        PostgresStore::count(self, "payloads")
            + PostgresStore::count(self, "queue_entries WHERE data IS NOT NULL")
    }

    fn queue_counters(&mut self, queue: &QueueId) -> (i64, i64) {
        self.queue_counters_raw(queue).unwrap()
    }

    fn set_queue_counters(&mut self, queue: &QueueId, entries: i64, bytes: i64) {
        self.execute_raw(
            "UPDATE queues SET entries = $2, bytes = $3 WHERE id = $1",
            &[&&queue.0[..], &entries, &bytes],
        )
        .unwrap();
    }
}

/// A fresh PostgreSQL store: a new database on the test binary's server.
pub(super) fn postgres() -> PostgresStore {
    let url = hush_pgtest::Cluster::shared().database();
    PostgresStore::connect(&Target::parse(&url).unwrap()).unwrap()
}

/// Runs each named test on a fresh store of each backend.
macro_rules! contract {
    ($($test:ident),* $(,)?) => {
        mod on_sqlite {
            $(#[test]
            fn $test() {
                super::$test(&mut super::SqliteStore::in_memory().unwrap());
            })*
        }
        mod on_postgres {
            $(#[test]
            fn $test() {
                super::$test(&mut super::postgres());
            })*
        }
    };
}

contract! {
    invite_is_used_up_after_its_uses,
    expired_invite_is_refused,
    one_time_key_packages_are_consumed_then_last_resort_is_reused,
    expired_key_packages_are_neither_counted_nor_handed_out_and_are_purged,
    second_commit_for_an_epoch_is_stale,
    only_the_holder_of_the_current_epoch_key_moves_a_group_on,
    a_commit_s_signature_covers_its_welcome,
    a_commit_sent_again_after_its_answer_was_lost_is_recognised,
    a_failing_op_does_not_undo_its_batch_neighbours,
    a_welcome_to_a_deactivated_account_is_refused_by_index_and_the_commit_still_orders,
    ack_deletes_only_the_owners_rows_and_purge_drops_expired,
    deactivation_drops_mailbox_and_key_packages,
    only_the_right_wipe_secret_orders_a_wipe,
    expired_payloads_are_not_delivered_even_before_the_purge,
    a_mailbox_page_is_bounded_in_bytes_as_well_as_count,
    a_payload_to_many_queues_is_stored_once_and_goes_with_its_last_entry,
    expiry_and_idle_queues_leave_no_rows_and_counters_follow,
    a_full_queue_refuses_more_and_the_others_still_get_theirs,
    one_account_cannot_fill_the_report_store_and_reports_expire,
    the_report_store_is_bounded_in_bytes,
    writes_done_together_answer_as_each_would_alone,
    many_writes_done_together_keep_each_queue_s_order,
}

fn invite_is_used_up_after_its_uses(store: &mut dyn TestStore) {
    let hash = with_invite(store);
    register(store, hash, 1);
    register(store, hash, 2);
    let third = Operations::register(store, &hash, &IdentityKey([3; 32]), &[0; 32], 10);
    assert!(matches!(third, Err(StoreError::BadInvite)));
}

fn expired_invite_is_refused(store: &mut dyn TestStore) {
    let hash = with_invite(store);
    let late = Operations::register(store, &hash, &IdentityKey([3; 32]), &[0; 32], 5_000);
    assert!(matches!(late, Err(StoreError::BadInvite)));
}

fn one_time_key_packages_are_consumed_then_last_resort_is_reused(store: &mut dyn TestStore) {
    let hash = with_invite(store);
    let alice = register(store, hash, 1);
    Operations::add_key_packages(store, &alice, &[vec![1]], Some(&[9]), 500, 10).unwrap();
    let mut take = || Operations::take_key_package(store, &alice, 20).unwrap();
    assert_eq!(take(), vec![1]);
    assert_eq!(take(), vec![9]);
    assert_eq!(take(), vec![9]);
}

fn expired_key_packages_are_neither_counted_nor_handed_out_and_are_purged(store: &mut dyn TestStore) {
    let hash = with_invite(store);
    let alice = register(store, hash, 1);
    Operations::add_key_packages(store, &alice, &[vec![1], vec![2]], Some(&[9]), 100, 10).unwrap();
    Operations::add_key_packages(store, &alice, &[vec![3]], None, 200, 10).unwrap();
    assert_eq!(Operations::count_key_packages(store, &alice, 50).unwrap(), 3);
    assert_eq!(Operations::count_key_packages(store, &alice, 100).unwrap(), 1);
    assert_eq!(Operations::take_key_package(store, &alice, 100).unwrap(), vec![3]);
    // Only the expired last-resort package is left: none is handed out.
    assert!(matches!(Operations::take_key_package(store, &alice, 100), Err(StoreError::NoKeyPackage)));
    Operations::purge_expired(store, 100).unwrap();
    let left = store.count("key_packages");
    assert_eq!(left, 0, "expired key packages were kept");
}

fn second_commit_for_an_epoch_is_stale(store: &mut dyn TestStore) {
    with_invite(store);
    let group = GroupId(vec![1, 2, 3]);
    let first = commit(&group, 0, b"a", &epoch_key(0));
    assert!(matches!(order(store, &first), Ok(CommitOutcome::Accepted(_))));
    let rival = commit(&group, 0, b"b", &epoch_key(0));
    assert!(matches!(order(store, &rival), Ok(CommitOutcome::Stale { current: 1 })));
    let next = commit(&group, 1, b"c", &epoch_key(1));
    assert!(matches!(order(store, &next), Ok(CommitOutcome::Accepted(_))));
}

fn only_the_holder_of_the_current_epoch_key_moves_a_group_on(store: &mut dyn TestStore) {
    with_invite(store);
    let group = GroupId(vec![9; 16]);
    // The group's first commit announces epoch 1's key.
    assert!(order(store, &commit(&group, 0, b"create", &epoch_key(0))).is_ok());
    // Someone who knows the group id and its epoch, but not the key: a
    // removed member, say, signing with the key of the epoch it last saw
    // or with any key of its own.
    for forger in [epoch_key(0), epoch_key(2), SigningKey::from_bytes(&[7; 32])] {
        let junk = commit(&group, 1, b"junk", &forger);
        assert!(matches!(order(store, &junk), Err(StoreError::NotAMember)));
    }
    // A valid signature over other bytes does not verify either.
    let mut tampered = commit(&group, 1, b"real", &epoch_key(1));
    tampered.payload = payload(b"swapped");
    assert!(matches!(order(store, &tampered), Err(StoreError::NotAMember)));
    let mut rekeyed = commit(&group, 1, b"real", &epoch_key(1));
    rekeyed.next_key = SigningKey::from_bytes(&[8; 32]).verifying_key().to_bytes();
    assert!(matches!(order(store, &rekeyed), Err(StoreError::NotAMember)));
    assert_eq!(store.stats().unwrap().queued_messages, 1, "refused commits queued nothing");
    // The members carry on.
    let real = commit(&group, 1, b"real", &epoch_key(1));
    assert!(matches!(order(store, &real), Ok(CommitOutcome::Accepted(q)) if q.queued.len() == 1));
}

fn a_commit_s_signature_covers_its_welcome(store: &mut dyn TestStore) {
    let hash = with_invite(store);
    let dave = register(store, hash, 4);
    let group = GroupId(vec![10; 16]);
    assert!(order(store, &commit(&group, 0, b"create", &epoch_key(0))).is_ok());
    // An addition at epoch 1, signed over its Welcome as clients sign it.
    let welcome = payload(b"welcome for dave");
    let mut add = commit(&group, 1, b"add dave", &epoch_key(1));
    let message = hush_proto::commit_auth_message(&group, 1, b"add dave", Some(&welcome), &add.next_key);
    add.signature = epoch_key(1).sign(&message).to_bytes();
    let sealed = |welcome: &Arc<[u8]>| SealedCommitRequest {
        commit: CommitRequest { welcome: Some(Arc::clone(welcome)), ..add.clone() },
        targets: vec![Capability { queue: MEMBER_QUEUE, secret: MEMBER_SECRET }],
        welcome_to: vec![Destination::Account(dave)],
        rotate: Vec::new(),
    };
    // A relay (or anyone) swapping the Welcome breaks the signature, and
    // nothing moves; the Welcome as signed goes through.
    let swapped = Operations::commit_sealed(store, &sealed(&payload(b"another welcome")), 1, 100);
    assert!(matches!(swapped, Err(StoreError::NotAMember)), "{swapped:?}");
    let without = SealedCommitRequest { commit: add.clone(), ..sealed(&welcome) };
    assert!(matches!(Operations::commit_sealed(store, &without, 1, 100), Err(StoreError::NotAMember)));
    let Ok(CommitOutcome::Accepted(queued)) = Operations::commit_sealed(store, &sealed(&welcome), 1, 100)
    else {
        panic!("the signed addition was refused")
    };
    assert!(queued.queued.iter().any(|q| q.to == Mailbox::Account(dave) && q.payload[..] == welcome[..]));
}

fn a_commit_sent_again_after_its_answer_was_lost_is_recognised(store: &mut dyn TestStore) {
    with_invite(store);
    let group = GroupId(vec![4; 16]);
    let sent = commit(&group, 0, b"update", &epoch_key(0));
    assert!(matches!(order(store, &sent), Ok(CommitOutcome::Accepted(_))));
    // The same bytes again: accepted in effect, nothing stored twice.
    assert!(matches!(order(store, &sent), Ok(CommitOutcome::Repeated)));
    assert_eq!(store.stats().unwrap().queued_messages, 1);
    // Also once the group has moved on.
    assert!(order(store, &commit(&group, 1, b"next", &epoch_key(1))).is_ok());
    assert!(matches!(order(store, &sent), Ok(CommitOutcome::Repeated)));
    // A rival for an ordered epoch is stale, whatever its signature.
    let rival = commit(&group, 0, b"rival", &epoch_key(0));
    assert!(matches!(order(store, &rival), Ok(CommitOutcome::Stale { current: 2 })));
    assert_eq!(store.stats().unwrap().queued_messages, 2);
    // Until the commit's retention ends: then it is just stale.
    assert_eq!(Operations::purge_expired(store, 100).unwrap(), 2);
    assert!(matches!(order(store, &sent), Ok(CommitOutcome::Stale { current: 2 })));
}

fn a_failing_op_does_not_undo_its_batch_neighbours(store: &mut dyn TestStore) {
    let hash = with_invite(store);
    let alice = register(store, hash, 1);
    let group = GroupId(vec![6; 16]);
    assert!(order(store, &commit(&group, 0, b"create", &epoch_key(0))).is_ok());
    let before = store.stats().unwrap().queued_messages;
    let body = payload(b"x");
    let junk = SealedCommitRequest {
        commit: commit(&group, 1, b"junk", &epoch_key(9)),
        targets: vec![Capability { queue: MEMBER_QUEUE, secret: MEMBER_SECRET }],
        welcome_to: vec![Destination::Account(alice)],
        rotate: Vec::new(),
    };
    let mut results = Vec::new();
    store
        .batch(&mut |ops| {
            results.push(introduce(ops, &[alice], &body, 1, 100).map(|q| q.queued.len()));
            results.push(ops.commit_sealed(&junk, 1, 100).map(|_| 0));
        })
        .unwrap();
    assert!(matches!(results[0], Ok(1)));
    assert!(matches!(results[1], Err(StoreError::NotAMember)));
    assert_eq!(store.stats().unwrap().queued_messages, before + 1);
}

fn a_welcome_to_a_deactivated_account_is_refused_by_index_and_the_commit_still_orders(
    store: &mut dyn TestStore,
) {
    let hash = with_invite(store);
    let alice = register(store, hash, 1);
    let carol = register(store, hash, 2);
    store.deactivate(&carol, 5).unwrap();
    let body = payload(b"welcome");
    let queued = introduce(store, &[alice, carol], &body, 6, 100).unwrap();
    assert_eq!(queued.queued.iter().map(|q| q.to).collect::<Vec<_>>(), [Mailbox::Account(alice)]);
    assert_eq!(queued.refused, [1], "the sender is told which destination was refused");
    assert_eq!(store.stats().unwrap().queued_messages, 1);
}

fn ack_deletes_only_the_owners_rows_and_purge_drops_expired(store: &mut dyn TestStore) {
    let hash = with_invite(store);
    let alice = register(store, hash, 1);
    let bob = register(store, hash, 2);
    let queued = introduce(store, &[alice, bob], &payload(b"x"), 1, 50).unwrap();
    let ids: Vec<u64> = queued.queued.iter().map(|q| q.id).collect();
    assert_eq!(Operations::ack(store, &alice, &ids).unwrap(), 1);
    assert_eq!(Operations::purge_expired(store, 50).unwrap(), 1);
    assert_eq!(store.stats().unwrap().queued_messages, 0);
}

fn deactivation_drops_mailbox_and_key_packages(store: &mut dyn TestStore) {
    let hash = with_invite(store);
    let alice = register(store, hash, 1);
    Operations::add_key_packages(store, &alice, &[vec![1]], None, 100, 10).unwrap();
    introduce(store, &[alice], &payload(b"x"), 1, 9).unwrap();
    assert!(store.deactivate(&alice, 2).unwrap());
    let stats = store.stats().unwrap();
    assert_eq!((stats.active_accounts, stats.queued_messages), (0, 0));
    assert!(matches!(Operations::take_key_package(store, &alice, 3), Err(StoreError::UnknownAccount)));
}

fn only_the_right_wipe_secret_orders_a_wipe(store: &mut dyn TestStore) {
    store.add_invite(&[1; 32], 1, 100).unwrap();
    let secret = [42u8; 32];
    let wipe_hash: [u8; 32] = Sha256::digest(secret).into();
    let alice = Operations::register(store, &[1; 32], &IdentityKey([1; 32]), &wipe_hash, 1).unwrap();
    let wrong = Operations::remote_wipe(store, &alice, &[41; 32], 2);
    assert!(matches!(wrong, Err(StoreError::BadWipeCode)));
    let record = Operations::account(store, &alice).unwrap().unwrap();
    assert!(!record.deactivated && record.wipe_order.is_none());
    Operations::remote_wipe(store, &alice, &secret, 2).unwrap();
    let record = Operations::account(store, &alice).unwrap().unwrap();
    assert!(record.deactivated);
    assert_eq!(record.wipe_order, Some(secret));
}

fn expired_payloads_are_not_delivered_even_before_the_purge(store: &mut dyn TestStore) {
    let hash = with_invite(store);
    let alice = register(store, hash, 1);
    introduce(store, &[alice], &payload(b"x"), 1, 10).unwrap();
    let mut pending = |now| Operations::pending(store, &Mailbox::Account(alice), 0, 10, now).unwrap().len();
    assert_eq!(pending(9), 1);
    assert_eq!(pending(10), 0);
}

fn a_mailbox_page_is_bounded_in_bytes_as_well_as_count(store: &mut dyn TestStore) {
    let hash = with_invite(store);
    let bob = register(store, hash, 1);
    let big = payload(&vec![7; 3 * 1024 * 1024]);
    for _ in 0..5 {
        introduce(store, &[bob], &big, 10, 1_000).unwrap();
    }
    introduce(store, &[bob], &payload(b"small"), 10, 1_000).unwrap();
    // A third 3 MiB payload would pass the 8 MiB page: two at a time.
    let first = Operations::pending(store, &Mailbox::Account(bob), 0, 512, 20).unwrap();
    assert_eq!(first.len(), 2);
    let second = Operations::pending(store, &Mailbox::Account(bob), first[1].id, 512, 20).unwrap();
    assert_eq!(second.len(), 2);
    // The last big one and the small one fit together.
    let third = Operations::pending(store, &Mailbox::Account(bob), second[1].id, 512, 20).unwrap();
    assert_eq!(third.iter().map(|q| q.payload.len()).collect::<Vec<_>>(), vec![3 * 1024 * 1024, 5]);
    // And the count limit still applies.
    assert_eq!(Operations::pending(store, &Mailbox::Account(bob), second[1].id, 1, 20).unwrap().len(), 1);
}

fn queue(store: &mut dyn TestStore, seed: u8) -> (QueueId, Capability) {
    let id = QueueId([seed; 16]);
    let secret = [seed; 32];
    Operations::create_queue(store, &id, &[seed; 32], &hush_proto::write_hash(&secret), 0).unwrap();
    (id, Capability { queue: id, secret })
}

fn a_payload_to_many_queues_is_stored_once_and_goes_with_its_last_entry(store: &mut dyn TestStore) {
    let (a, to_a) = queue(store, 1);
    let (b, to_b) = queue(store, 2);
    let (c, to_c) = queue(store, 3);
    assert!(matches!(
        Operations::create_queue(store, &a, &[9; 32], &[9; 32], 0),
        Err(StoreError::QueueIdTaken)
    ));
    let body = payload(&[7; 300]);
    let sent = Operations::enqueue_sealed(store, &[to_a, to_b, to_c], &body, 5, 100).unwrap();
    assert!(sent.refused.is_empty());
    assert_eq!(sent.queued.len(), 3);
    assert_eq!((store.payloads(), store.count("queue_entries")), (1, 3));
    assert_eq!(store.stats().unwrap().queued_bytes, 300, "counted once");
    // Sequence numbers are per queue.
    let (_, again_a) = (a, Capability { queue: a, secret: [1; 32] });
    let more = Operations::enqueue_sealed(store, &[again_a], &payload(b"second"), 6, 100).unwrap();
    assert_eq!(more.queued[0].id, 2);
    let page = Operations::pending(store, &Mailbox::Queue(b), 0, 10, 7).unwrap();
    assert_eq!(page.iter().map(|queued| queued.id).collect::<Vec<_>>(), [1]);
    // Acknowledged by two of three: still stored; by the third: gone.
    assert_eq!(Operations::ack_queue(store, &a, &[1]).unwrap(), 1);
    assert_eq!(Operations::ack_queue(store, &b, &[1, 1, 9]).unwrap(), 1);
    assert_eq!(store.payloads(), 2);
    assert_eq!(Operations::ack_queue(store, &c, &[1]).unwrap(), 1);
    assert_eq!(store.payloads(), 1, "only the second payload is left");
    let counters = store.queue_counters(&a);
    assert_eq!(counters, (1, 6));
}

fn expiry_and_idle_queues_leave_no_rows_and_counters_follow(store: &mut dyn TestStore) {
    let (a, to_a) = queue(store, 1);
    let (_, to_b) = queue(store, 2);
    Operations::enqueue_sealed(store, &[to_a.clone(), to_b], &payload(b"soon"), 5, 50).unwrap();
    Operations::enqueue_sealed(store, &[to_a], &payload(b"later"), 5, 500).unwrap();
    assert!(Operations::spend_token(store, 0, &[4; 32]).unwrap());
    assert!(!Operations::spend_token(store, 0, &[4; 32]).unwrap(), "spent twice");
    assert_eq!(Operations::purge_expired(store, 60).unwrap(), 2);
    assert_eq!((store.payloads(), store.count("queue_entries")), (1, 1));
    assert_eq!(store.queue_counters(&a).0, 1);
    // Days later: the spent token's day is past (it can no longer be
    // spent, so its record goes) and queues nobody received from go with
    // what they hold.
    let later = (QUEUE_IDLE_DAYS + 2) * hush_proto::tokens::DAY_SECS;
    Operations::purge_expired(store, later.min(400)).unwrap();
    assert_eq!(store.count("queues"), 2, "not idle yet");
    Operations::purge_expired(store, later).unwrap();
    assert_eq!(store.count("spent_tokens"), 0);
    assert_eq!((store.count("queues"), store.payloads(), store.count("queue_entries")), (0, 0, 0));
}

fn a_full_queue_refuses_more_and_the_others_still_get_theirs(store: &mut dyn TestStore) {
    let (a, to_a) = queue(store, 1);
    let (_, to_b) = queue(store, 2);
    store.set_queue_counters(&a, MAX_QUEUE_ENTRIES as i64, 0);
    let sent = Operations::enqueue_sealed(store, &[to_a.clone(), to_b], &payload(b"x"), 5, 50).unwrap();
    assert_eq!(sent.refused, [0]);
    store.set_queue_counters(&a, 0, (MAX_QUEUE_BYTES - 1) as i64);
    let sent = Operations::enqueue_sealed(store, &[to_a], &payload(b"xy"), 5, 50).unwrap();
    assert_eq!(sent.refused, [0], "over the byte quota");
}

fn one_account_cannot_fill_the_report_store_and_reports_expire(store: &mut dyn TestStore) {
    let (mallory, alice) = (AccountId([1; 20]), AccountId([2; 20]));
    let now = 1_000_000_000;
    // Mallory reports her own signed words, over and over.
    for n in 0..MAX_REPORTS_PER_ACCOUNT + 25 {
        Operations::add_report(store, &mallory, &n.to_be_bytes(), &[0; 64], "spam", now).unwrap();
    }
    let reports = store.reports().unwrap();
    assert_eq!(reports.len() as u64, MAX_REPORTS_PER_ACCOUNT);
    assert_eq!(reports[0].more, 25, "the extras are counted, not kept");
    // A report about someone else is still kept, at the hour.
    Operations::add_report(store, &alice, b"threat", &[0; 64], "threats", now + 5).unwrap();
    let about_alice: Vec<_> = store.reports().unwrap().into_iter().filter(|r| r.account == alice).collect();
    assert_eq!(about_alice.len(), 1);
    assert_eq!(about_alice[0].received, now - now % 3600);
    // The same message again is the same report.
    Operations::add_report(store, &alice, b"threat", &[0; 64], "again", now + 9).unwrap();
    assert_eq!(store.reports().unwrap().len() as u64, MAX_REPORTS_PER_ACCOUNT + 1);
    // All of them go after REPORT_DAYS.
    Operations::purge_expired(store, now + REPORT_DAYS * 24 * 3600 + 3600).unwrap();
    assert!(store.reports().unwrap().is_empty());
}

fn the_report_store_is_bounded_in_bytes(store: &mut dyn TestStore) {
    let big = vec![7u8; 64 * 1024];
    let per = MAX_REPORT_BYTES / big.len() as u64;
    for n in 0..per {
        let account = AccountId([(n % 200) as u8; 20]);
        let mut content = big.clone();
        content[..8].copy_from_slice(&n.to_be_bytes());
        Operations::add_report(store, &account, &content, &[0; 64], "", 0).unwrap();
    }
    let refused = Operations::add_report(store, &AccountId([250; 20]), &big, &[0; 64], "", 0);
    assert!(matches!(refused, Err(StoreError::Full)), "{refused:?}");
}

fn writes_done_together_answer_as_each_would_alone(store: &mut dyn TestStore) {
    let (a, to_a) = queue(store, 1);
    let (b, to_b) = queue(store, 2);
    // Entry 1 of both queues shares one payload.
    Operations::enqueue_sealed(store, &[to_a.clone(), to_b.clone()], &payload(b"shared"), 5, 100).unwrap();
    let wrong = Capability { queue: a, secret: [9; 32] };
    let writes = [
        send_to(&to_a, b"one"),
        send_to(&wrong, b"refused"),
        Write::Spend { day: 0, nonce: [4; 32] },
        Write::Spend { day: 0, nonce: [4; 32] },
        Write::Ack { queue: a, seqs: vec![1] },
        Write::Ack { queue: b, seqs: vec![1, 7] },
        send_to(&to_b, b"two"),
        send_to(&to_a, b"three"),
    ];
    let (outcome, results) = write_together(store, &writes);
    outcome.unwrap();
    let answered: Vec<String> = results
        .iter()
        .map(|result| match result {
            Ok(Written::Enqueued(enqueued)) => {
                let ids: Vec<u64> = enqueued.queued.iter().map(|queued| queued.id).collect();
                format!("queued {ids:?} refused {:?}", enqueued.refused)
            }
            Ok(Written::Acked(deleted)) => format!("acked {deleted}"),
            Ok(Written::Spent(fresh)) => format!("spent {fresh}"),
            Err(error) => format!("error {error}"),
        })
        .collect();
    assert_eq!(
        answered,
        [
            "queued [2] refused []",
            "queued [] refused [0]",
            "spent true",
            "spent false",
            "acked 1",
            "acked 1",
            "queued [2] refused []",
            "queued [3] refused []",
        ]
    );
    let bodies = |store: &mut dyn TestStore, queue: QueueId| -> Vec<(u64, Vec<u8>)> {
        Operations::pending(store, &Mailbox::Queue(queue), 0, 10, 7)
            .unwrap()
            .into_iter()
            .map(|queued| (queued.id, queued.payload.to_vec()))
            .collect()
    };
    assert_eq!(bodies(store, a), [(2, b"one".to_vec()), (3, b"three".to_vec())]);
    assert_eq!(bodies(store, b), [(2, b"two".to_vec())]);
    assert_eq!(store.payloads(), 3, "the shared payload went with its last entry");
    assert_eq!(store.queue_counters(&a), (2, 8));
    assert_eq!(store.queue_counters(&b), (1, 3));
}

fn many_writes_done_together_keep_each_queue_s_order(store: &mut dyn TestStore) {
    // More writes than a small join keeps inline, interleaved over two
    // queues, acknowledgements among them.
    let (a, to_a) = queue(store, 1);
    let (b, to_b) = queue(store, 2);
    let mut writes = Vec::new();
    for n in 0..40u8 {
        let target = if n % 2 == 0 { &to_a } else { &to_b };
        writes.push(send_to(target, &[n]));
        if n == 20 {
            writes.push(Write::Ack { queue: a, seqs: vec![1, 2] });
        }
    }
    let (outcome, results) = write_together(store, &writes);
    outcome.unwrap();
    let mut numbers = Vec::new();
    for result in results {
        match result.unwrap() {
            Written::Enqueued(enqueued) => numbers.push(enqueued.queued[0].id),
            Written::Acked(deleted) => assert_eq!(deleted, 2),
            other => panic!("{other:?}"),
        }
    }
    let expected: Vec<u64> = (1..=20).flat_map(|n| [n, n]).collect();
    assert_eq!(numbers, expected, "each queue numbers its writes in their order");
    let bodies = |store: &mut dyn TestStore, queue: QueueId| -> Vec<u8> {
        Operations::pending(store, &Mailbox::Queue(queue), 0, 100, 7)
            .unwrap()
            .into_iter()
            .map(|queued| queued.payload[0])
            .collect()
    };
    assert_eq!(bodies(store, a), (4..40).step_by(2).collect::<Vec<u8>>());
    assert_eq!(bodies(store, b), (1..40).step_by(2).collect::<Vec<u8>>());
}

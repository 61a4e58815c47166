//! Tests of the embedded store alone; the behaviour both backends share
//! is in the contract suite (`store::contract`).

use super::*;
use crate::store::contract::{commit, epoch_key, introduce, order, payload, register, with_invite};
use hush_proto::GroupId;

#[test]
fn a_group_ordered_by_an_older_relay_takes_its_key_from_its_next_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.db");
    {
        let old = Connection::open(&path).unwrap();
        old.execute_batch(
            "CREATE TABLE group_epochs (id BLOB PRIMARY KEY, epoch INTEGER NOT NULL);
             INSERT INTO group_epochs (id, epoch) VALUES (x'0505', 3);",
        )
        .unwrap();
    }
    let mut store = SqliteStore::open(&path).unwrap();
    store.add_invite(&[5; 32], 1, 1_000).unwrap();
    let group = GroupId(vec![5, 5]);
    assert!(matches!(
        order(&mut store, &commit(&group, 2, b"old", &epoch_key(2))),
        Ok(CommitOutcome::Stale { current: 3 })
    ));
    assert!(order(&mut store, &commit(&group, 3, b"first", &epoch_key(3))).is_ok());
    // From then on the key is checked.
    let junk = commit(&group, 4, b"junk", &epoch_key(9));
    assert!(matches!(order(&mut store, &junk), Err(StoreError::NotAMember)));
}

#[test]
fn after_sqlite_rolls_a_batch_back_nothing_more_of_it_runs() {
    let mut store = SqliteStore::in_memory().unwrap();
    let hash = with_invite(&mut store);
    let alice = register(&mut store, hash, 1);
    let body = payload(b"x");
    // A batch (see RelayStore::batch) in which one operation hits an error
    // on which SQLite rolls the whole transaction back (a full disk, say).
    store.connection.execute_batch("BEGIN IMMEDIATE").unwrap();
    introduce(&mut store, &[alice], &body, 1, 100).unwrap();
    let failed = store.atomic(|store| {
        store.connection.execute_batch("ROLLBACK")?;
        Err::<(), _>(StoreError::NoKeyPackage)
    });
    assert!(matches!(failed, Err(StoreError::Batch(_))), "{failed:?}");
    // The rest of the batch must not run, committing piece by piece.
    let later = introduce(&mut store, &[alice], &body, 1, 100);
    assert!(matches!(later, Err(StoreError::Batch(_))), "{later:?}");
    assert_eq!(store.stats().unwrap().queued_messages, 0);
    // The next batch starts afresh.
    store.batch(&mut |ops| assert!(introduce(ops, &[alice], &body, 1, 100).is_ok())).unwrap();
    assert_eq!(store.stats().unwrap().queued_messages, 1);
}

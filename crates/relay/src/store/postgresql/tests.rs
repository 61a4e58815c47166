//! What several relays writing to one database at once must not break:
//! per-queue numbering in commit order, one winner per group epoch, one
//! spend per token, no payload left behind, one migration. Each test runs
//! real concurrent transactions on separate connections.

use std::sync::{mpsc, Arc, Barrier};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use hush_proto::{AccountId, GroupId};

use super::*;
use crate::store::contract::{commit, epoch_key, payload, send_to, write_together};

fn database() -> String {
    hush_pgtest::Cluster::shared().database()
}

fn connect(url: &str) -> PostgresStore {
    PostgresStore::connect(&Target::parse(url).unwrap()).unwrap()
}

fn queue(store: &mut PostgresStore, seed: u8) -> Capability {
    let id = QueueId([seed; 16]);
    let secret = [seed; 32];
    store.create_queue(&id, &[seed; 32], &hush_proto::write_hash(&secret), 0).unwrap();
    Capability { queue: id, secret }
}

/// The server process behind `store`'s connection.
fn backend_pid(store: &mut PostgresStore) -> i32 {
    store.client().unwrap().query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0)
}

/// Waits until `sessions` connections of this database wait for a lock.
fn wait_for_lock_waiters(url: &str, sessions: i64) {
    let mut watcher = connect(url);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let waiting: i64 = watcher
            .client()
            .unwrap()
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
                &[],
            )
            .unwrap()
            .get(0);
        if waiting >= sessions {
            return;
        }
        assert!(Instant::now() < deadline, "no session waited for the lock");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_queue_numbers_entries_in_commit_order_so_a_reader_never_skips_one() {
    let url = database();
    let mut setup = connect(&url);
    let to = queue(&mut setup, 1);
    // Relay A writes to the queue and holds its batch open.
    let (wrote, written) = mpsc::channel();
    let (go, release) = mpsc::channel::<()>();
    let a = {
        let (url, to) = (url.clone(), to.clone());
        std::thread::spawn(move || {
            let mut store = connect(&url);
            let mut seq = 0;
            store
                .batch(&mut |ops| {
                    seq = ops
                        .enqueue_sealed(std::slice::from_ref(&to), &payload(b"from a"), 1, 100)
                        .unwrap()
                        .queued[0]
                        .id;
                    wrote.send(()).unwrap();
                    release.recv().unwrap();
                })
                .unwrap();
            seq
        })
    };
    written.recv().unwrap();
    // Relay B writes to the same queue: it must wait for A's batch.
    let b = {
        let (url, to) = (url.clone(), to.clone());
        std::thread::spawn(move || {
            let mut store = connect(&url);
            let mut seq = 0;
            store
                .batch(&mut |ops| {
                    seq = ops
                        .enqueue_sealed(std::slice::from_ref(&to), &payload(b"from b"), 1, 100)
                        .unwrap()
                        .queued[0]
                        .id;
                })
                .unwrap();
            seq
        })
    };
    wait_for_lock_waiters(&url, 1);
    // Meanwhile a reader sees neither: nothing is committed.
    let mut reader = connect(&url);
    assert!(reader.pending(&Mailbox::Queue(to.queue), 0, 10, 2).unwrap().is_empty());
    go.send(()).unwrap();
    let (first, second) = (a.join().unwrap(), b.join().unwrap());
    assert_eq!((first, second), (1, 2), "numbers follow the order of commits");
    let page = reader.pending(&Mailbox::Queue(to.queue), 0, 10, 2).unwrap();
    assert_eq!(
        page.iter().map(|q| (q.id, &q.payload[..])).collect::<Vec<_>>(),
        [(1, &b"from a"[..]), (2, &b"from b"[..])]
    );
}

#[test]
fn many_writers_on_many_connections_number_a_queue_without_gaps_or_repeats() {
    let url = database();
    let mut setup = connect(&url);
    let to = queue(&mut setup, 2);
    let writers = 4;
    let each = 50;
    let start = Arc::new(Barrier::new(writers));
    let threads: Vec<_> = (0..writers)
        .map(|writer| {
            let (url, to, start) = (url.clone(), to.clone(), Arc::clone(&start));
            std::thread::spawn(move || {
                let mut store = connect(&url);
                start.wait();
                for n in 0..each {
                    let body = payload(format!("{writer}/{n}").as_bytes());
                    store
                        .batch(&mut |ops| {
                            ops.enqueue_sealed(std::slice::from_ref(&to), &body, 1, 100).unwrap();
                        })
                        .unwrap();
                }
            })
        })
        .collect();
    // A reader follows the queue with a cursor while they write.
    let mut reader = connect(&url);
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < writers * each {
        let after = seen.last().copied().unwrap_or(0);
        for queued in reader.pending(&Mailbox::Queue(to.queue), after, 100, 2).unwrap() {
            seen.push(queued.id);
        }
        assert!(Instant::now() < deadline, "the reader saw {} of {}", seen.len(), writers * each);
    }
    for thread in threads {
        thread.join().unwrap();
    }
    let expected: Vec<u64> = (1..=(writers * each) as u64).collect();
    assert_eq!(seen, expected, "the cursor skipped or repeated an entry");
}

#[test]
fn rival_commits_on_two_relays_order_exactly_one_per_epoch() {
    let url = database();
    let mut setup = connect(&url);
    let to = queue(&mut setup, 3);
    let group = GroupId(vec![3; 16]);
    for epoch in 0..20u64 {
        let start = Arc::new(Barrier::new(2));
        let threads: Vec<_> = (0..2u8)
            .map(|relay| {
                let (url, to, group, start) = (url.clone(), to.clone(), group.clone(), Arc::clone(&start));
                std::thread::spawn(move || {
                    let mut store = connect(&url);
                    let rival = commit(&group, epoch, &[relay, epoch as u8], &epoch_key(epoch));
                    let request = SealedCommitRequest {
                        commit: rival,
                        targets: vec![to],
                        welcome_to: Vec::new(),
                        rotate: Vec::new(),
                    };
                    start.wait();
                    store.commit_sealed(&request, 1, 100).unwrap()
                })
            })
            .collect();
        let outcomes: Vec<CommitOutcome> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let accepted = outcomes.iter().filter(|o| matches!(o, CommitOutcome::Accepted(_))).count();
        let stale = outcomes
            .iter()
            .filter(|o| matches!(o, CommitOutcome::Stale { current } if *current == epoch + 1));
        assert_eq!((accepted, stale.count()), (1, 1), "epoch {epoch}: {outcomes:?}");
    }
    assert_eq!(setup.count("queue_entries"), 20, "one commit queued per epoch");
    // And the winner's key is the one that signs the next epoch.
    let forged = commit(&group, 20, b"x", &SigningKey::from_bytes(&[9; 32]));
    let request =
        SealedCommitRequest { commit: forged, targets: vec![to], welcome_to: vec![], rotate: vec![] };
    assert!(matches!(setup.commit_sealed(&request, 1, 100), Err(StoreError::NotAMember)));
}

#[test]
fn a_token_spent_on_two_relays_at_once_is_spent_once() {
    let url = database();
    connect(&url);
    for round in 0..20u8 {
        let start = Arc::new(Barrier::new(2));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (url, start) = (url.clone(), Arc::clone(&start));
                std::thread::spawn(move || {
                    let mut store = connect(&url);
                    start.wait();
                    store.spend_token(1, &[round; 32]).unwrap()
                })
            })
            .collect();
        let spent: Vec<bool> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(spent.iter().filter(|s| **s).count(), 1, "round {round}: {spent:?}");
    }
}

#[test]
fn the_last_two_entries_acknowledged_on_two_relays_at_once_take_their_payload_with_them() {
    let url = database();
    let mut setup = connect(&url);
    for round in 0..10u8 {
        let (a, b) = (queue(&mut setup, 100 + 2 * round), queue(&mut setup, 101 + 2 * round));
        setup.enqueue_sealed(&[a.clone(), b.clone()], &payload(b"shared"), 1, 100).unwrap();
        let start = Arc::new(Barrier::new(2));
        let threads: Vec<_> = [a, b]
            .into_iter()
            .map(|to| {
                let (url, start) = (url.clone(), Arc::clone(&start));
                std::thread::spawn(move || {
                    let mut store = connect(&url);
                    start.wait();
                    store.ack_queue(&to.queue, &[1]).unwrap()
                })
            })
            .collect();
        for thread in threads {
            assert_eq!(thread.join().unwrap(), 1);
        }
        assert_eq!(setup.count("payloads"), 0, "round {round}: a payload no queue refers to was kept");
    }
}

#[test]
fn relays_starting_together_migrate_once() {
    let url = database();
    let start = Arc::new(Barrier::new(3));
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let (url, start) = (url.clone(), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                PostgresStore::connect(&Target::parse(&url).unwrap()).map(drop)
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap().unwrap();
    }
    assert_eq!(connect(&url).count("hush_schema"), MIGRATIONS.len() as i64);
}

#[test]
fn a_database_from_a_newer_relay_is_refused_clearly() {
    let url = database();
    let mut store = connect(&url);
    store.execute_raw("INSERT INTO hush_schema (version) VALUES (99)", &[]).unwrap();
    let refused = PostgresStore::connect(&Target::parse(&url).unwrap()).err().map(|e| e.to_string());
    assert!(
        refused.as_deref().is_some_and(|e| e.contains("version 99") && e.contains("upgrade")),
        "{refused:?}"
    );
}

#[test]
fn an_unreachable_database_is_a_clear_error_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().display().to_string().replace('/', "%2F");
    let url = format!("postgresql://hush:s3cret@{socket}/hush");
    let error = PostgresStore::connect(&Target::parse(&url).unwrap()).err().map(|e| e.to_string());
    let error = error.unwrap_or_default();
    assert!(error.starts_with("cannot reach the database at postgresql://hush:***@"), "{error}");
    assert!(!error.contains("s3cret"), "{error}");
    let bad = Target::parse("postgresql://hush:s3cret@db:notaport/hush").err().map(|e| e.to_string());
    let bad = bad.unwrap_or_default();
    assert!(bad.starts_with("bad store URL: postgresql://hush:***@") && !bad.contains("s3cret"), "{bad}");
}

#[test]
fn passwords_never_show() {
    assert_eq!(
        redact_url("postgresql://hush:s3cret@db.example:5432/hush?sslmode=require"),
        "postgresql://hush:***@db.example:5432/hush?sslmode=require"
    );
    assert_eq!(redact_url("postgres://hush@db/hush"), "postgres://hush@db/hush");
    assert_eq!(redact_url("host=db user=hush password=s3cret"), "host=db user=hush password=***");
    // Passwords with the characters that end a URL's parts, or given as a
    // parameter, or quoted: hidden whether or not the URL parses.
    for (url, secret) in [
        ("postgresql://hush:pa/ss?w#rd@db.example/hush", "pa/ss?w#rd"),
        ("postgresql://hush:p%40ss%2Fword@db.example/hush", "p%40ss%2Fword"),
        ("postgresql://hush@db.example/hush?password=s3cret&sslmode=require", "s3cret"),
        ("host=db user=hush password='a b c'", "a b c"),
        ("host=db password = s3cret user=hush", "s3cret"),
    ] {
        let shown = match Target::parse(url) {
            Ok(target) => target.shown().to_owned(),
            Err(error) => error.to_string(),
        };
        assert!(!shown.contains(secret), "{url} shown as {shown}");
        assert!(!redact_url(url).contains(secret), "{url} redacted as {}", redact_url(url));
    }
}

#[test]
fn a_batch_whose_connection_dies_midway_fails_and_keeps_nothing() {
    let url = database();
    let mut store = connect(&url);
    let to = queue(&mut store, 7);
    let pid = backend_pid(&mut store);
    let mut killer = connect(&url);
    let mut written = None;
    let mut read = None;
    let outcome = store.batch(&mut |ops| {
        written = Some(ops.enqueue_sealed(std::slice::from_ref(&to), &payload(b"x"), 1, 100).is_ok());
        killer.client().unwrap().execute("SELECT pg_terminate_backend($1)", &[&pid]).unwrap();
        // A read after the connection died must not reconnect and carry
        // on outside the transaction (then "commit" on a new connection).
        read = Some(ops.account(&AccountId([1; 20])).is_ok());
    });
    assert_eq!(written, Some(true));
    assert_eq!(read, Some(false), "a read went on, on a new connection, as if in the batch");
    assert!(outcome.is_err(), "a batch whose connection died was reported committed");
    assert_eq!(connect(&url).count("queue_entries"), 0);
    // The next batch reconnects.
    store
        .batch(&mut |ops| {
            assert!(ops.enqueue_sealed(std::slice::from_ref(&to), &payload(b"y"), 1, 100).is_ok())
        })
        .unwrap();
    assert_eq!(connect(&url).count("queue_entries"), 1);
}

#[test]
fn a_transaction_an_error_aborted_does_not_report_a_commit() {
    let url = database();
    let mut store = connect(&url);
    let to = queue(&mut store, 8);
    store.begin().unwrap();
    store.in_batch = true;
    assert!(store.enqueue_sealed(std::slice::from_ref(&to), &payload(b"x"), 1, 100).is_ok());
    store.in_batch = false;
    // A statement that fails outside any savepoint (a read cancelled by a
    // timeout, say) aborts the transaction; COMMIT alone would then answer
    // with a quiet rollback.
    assert!(store.simple("SELECT 1 / 0").is_err());
    assert!(store.commit().is_err(), "an aborted transaction was reported committed");
    assert_eq!(connect(&url).count("queue_entries"), 0);
}

#[test]
fn pipelined_writes_fail_together_when_one_fails_and_keep_nothing() {
    let url = database();
    let mut store = connect(&url);
    let to_a = queue(&mut store, 7);
    let to_b = queue(&mut store, 8);
    store.simple("SET lock_timeout = '200ms'").unwrap();
    // Another connection holds queue a's row: the first write sent (a's
    // come first, in queue order) waits for it, then fails; the two sent
    // behind it fail with the aborted transaction.
    let mut holder = connect(&url);
    holder.simple("BEGIN").unwrap();
    holder.execute_raw("SELECT 1 FROM queues WHERE id = $1 FOR UPDATE", &[&&to_a.queue.0[..]]).unwrap();
    let writes = [send_to(&to_b, b"x"), send_to(&to_a, b"x"), send_to(&to_b, b"x")];
    let (outcome, results) = write_together(&mut store, &writes);
    assert_eq!(results.len(), 3);
    assert!(results.iter().all(Result::is_err), "{results:?}");
    assert!(
        results.iter().any(|result| matches!(result, Err(StoreError::Postgres(_)))),
        "the lock timeout itself is not among the answers: {results:?}"
    );
    assert!(matches!(outcome, Err(StoreError::Unavailable)), "a lock timeout is worth a retry: {outcome:?}");
    holder.simple("ROLLBACK").unwrap();
    assert_eq!(connect(&url).count("queue_entries"), 0);
    // Nothing is left over for the next batch.
    let (outcome, results) = write_together(&mut store, &writes);
    assert!(outcome.is_ok() && results.iter().all(Result::is_ok), "{outcome:?} {results:?}");
    assert_eq!(connect(&url).count("queue_entries"), 3);
}

#[test]
fn pipelined_writes_on_a_dead_connection_fail_and_keep_nothing() {
    let url = database();
    let mut store = connect(&url);
    let to = queue(&mut store, 7);
    let pid = backend_pid(&mut store);
    let mut killer = connect(&url);
    let write = send_to(&to, b"x");
    let mut results = Vec::new();
    let outcome = store.batch(&mut |ops| {
        assert!(ops.write_each(&[&write, &write]).iter().all(Result::is_ok));
        killer.client().unwrap().execute("SELECT pg_terminate_backend($1)", &[&pid]).unwrap();
        results = ops.write_each(&[&write, &write]);
    });
    assert!(results.iter().all(Result::is_err), "{results:?}");
    assert!(matches!(outcome, Err(StoreError::Unavailable)), "{outcome:?}");
    assert_eq!(connect(&url).count("queue_entries"), 0);
}

#[test]
fn two_relays_writing_the_same_queues_in_opposite_orders_do_not_deadlock() {
    let url = database();
    let mut setup = connect(&url);
    let (q1, q2, q3) = (queue(&mut setup, 1), queue(&mut setup, 2), queue(&mut setup, 3));
    // A third connection holds q3, which both batches need half-way
    // through: arrived in these orders, relay A would hold q1 and relay B
    // q2 when it is released, and each would then wait for the other's.
    let mut holder = connect(&url);
    holder.simple("BEGIN").unwrap();
    holder.execute_raw("SELECT 1 FROM queues WHERE id = $1 FOR UPDATE", &[&&q3.queue.0[..]]).unwrap();
    let relays: Vec<_> = [[&q1, &q3, &q2], [&q2, &q3, &q1]]
        .into_iter()
        .map(|targets| {
            let writes: Vec<Write> = targets.into_iter().map(|target| send_to(target, b"x")).collect();
            let mut store = connect(&url);
            std::thread::spawn(move || {
                let (outcome, results) = write_together(&mut store, &writes);
                (outcome, results.iter().all(Result::is_ok))
            })
        })
        .collect();
    wait_for_lock_waiters(&url, 2);
    holder.simple("ROLLBACK").unwrap();
    for relay in relays {
        let (outcome, all_ok) = relay.join().unwrap();
        assert!(outcome.is_ok() && all_ok, "a batch failed: {outcome:?}");
    }
    assert_eq!(connect(&url).count("queue_entries"), 6);
}

#[test]
fn a_connection_lost_between_batches_is_replaced_before_the_next_one() {
    let url = database();
    let mut store = connect(&url);
    let to = queue(&mut store, 7);
    let pid = backend_pid(&mut store);
    let mut killer = connect(&url);
    killer.client().unwrap().execute("SELECT pg_terminate_backend($1)", &[&pid]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let alive: i64 = killer
            .client()
            .unwrap()
            .query_one("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", &[&pid])
            .unwrap()
            .get(0);
        if alive == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the backend did not end");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The store has not noticed yet; its next batch must not fail for it.
    store
        .batch(&mut |ops| {
            assert!(ops.enqueue_sealed(std::slice::from_ref(&to), &payload(b"x"), 1, 100).is_ok())
        })
        .unwrap();
    assert_eq!(connect(&url).count("queue_entries"), 1);
}

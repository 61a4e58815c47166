//! What replacing the database key costs as a profile grows: the figure
//! behind the re-key schedule (docs/device-security.md).
//!
//! `cargo bench -p hush-store --bench rekey` (also times one wipe of a
//! profile of each size).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use hush_proto::AccountId;
use hush_store::{KdfParams, MessageRecord, Store};

/// A profile holding `count` messages of 200 bytes in 50 conversations.
fn profile(dir: &std::path::Path, count: u32) -> Store {
    let store = Store::create(dir, b"bench passphrase", KdfParams::FAST, 10).unwrap();
    store
        .transaction(|store| {
            for n in 0..count {
                let message = MessageRecord {
                    message_id: u128::from(n).to_be_bytes(),
                    group_id: vec![(n % 50) as u8; 16],
                    sender: AccountId([7; 20]),
                    text: format!("{n:>8} {}", "x".repeat(191)),
                    sent_at_ms: u64::from(n),
                    event: false,
                    expires_at_ms: None,
                    proof: None,
                };
                store.insert_message(&message, u64::from(n), true)?;
            }
            Ok::<_, hush_store::StoreError>(())
        })
        .unwrap();
    store
}

fn rekey(c: &mut Criterion) {
    let mut group = c.benchmark_group("rekey");
    group.sample_size(10);
    for count in [10_000u32, 100_000] {
        let dir = tempfile::tempdir().unwrap();
        let store = profile(&dir.path().join("profile"), count);
        let (store, _) = store.rekeyed(hush_store::now_ms()).unwrap();
        let size = std::fs::metadata(dir.path().join("profile/hush.db")).unwrap().len();
        eprintln!("{count} messages: database {:.1} MiB", size as f64 / (1 << 20) as f64);
        let mut store = Some(store);
        group.bench_with_input(BenchmarkId::new("messages", count), &count, |b, _| {
            b.iter(|| {
                let rekeyed = store.take().map(|s| s.rekeyed(hush_store::now_ms()).unwrap());
                assert_eq!(rekeyed.as_ref().map(|r| &r.1), Some(&hush_store::Rekey::Replaced));
                store = rekeyed.map(|r| r.0);
            });
        });
    }
    group.finish();
}

/// The wipe of a large profile, once (a wipe cannot be repeated on one
/// profile): the key file first, then the database files zeroed in place.
fn wipe_once(_: &mut Criterion) {
    for count in [10_000u32, 100_000] {
        let dir = tempfile::tempdir().unwrap();
        let profile_dir = dir.path().join("profile");
        drop(profile(&profile_dir, count));
        let started = std::time::Instant::now();
        hush_store::wipe(&profile_dir).unwrap();
        eprintln!("wipe of a profile with {count} messages: {:?}", started.elapsed());
    }
}

criterion_group!(benches, rekey, wipe_once);
criterion_main!(benches);

//! Client-side MLS costs with Hush's ciphersuite (X-Wing hybrid KEM):
//! a 200-byte message encrypted and decrypted, joining from a Welcome, and
//! add-member and self-update commits in groups of 2, 100 and 1,000.
//!
//! Run: `cargo bench -p hush-core --bench mls`. In-memory storage, so these
//! are the protocol's own costs; SQLCipher persistence adds to them.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use hush_core::{
    new_key_packages, process_incoming, verify_key_package, Body, Content, Conversation, Identity,
    VerifiedKeyPackage,
};
use openmls_rust_crypto::OpenMlsRustCrypto;
use openmls_traits::OpenMlsProvider;

struct Member {
    provider: OpenMlsRustCrypto,
    identity: Identity,
}

fn member() -> Member {
    let provider = OpenMlsRustCrypto::default();
    let identity = Identity::generate(provider.storage()).unwrap();
    Member { provider, identity }
}

fn key_package(of: &Member, checker: &Member) -> VerifiedKeyPackage {
    let packages = new_key_packages(&of.provider, &of.identity, 1, false, 0).unwrap().one_time;
    verify_key_package(&checker.provider, &packages[0], of.identity.account()).unwrap()
}

/// A group of `size` made by `creator`; the first other member is returned
/// as a real member, the rest exist only as key packages.
fn group(size: usize) -> (Member, Conversation, Member) {
    let creator = member();
    let second = member();
    let mut conversation = Conversation::create(&creator.provider, &creator.identity).unwrap();
    let mut packages = vec![key_package(&second, &creator)];
    for _ in 2..size {
        packages.push(key_package(&member(), &creator));
    }
    let commit = conversation.add(&creator.provider, &creator.identity, &packages).unwrap();
    conversation.confirm_commit(&creator.provider).unwrap();
    process_incoming(&second.provider, &commit.welcome.unwrap().1).unwrap();
    (creator, conversation, second)
}

fn text() -> Content {
    Content { id: [7; 16], sent_at_ms: 1, body: Body::Text("x".repeat(200)), expires_after_secs: None }
}

fn message(c: &mut Criterion) {
    let (alice, mut conversation, bob) = group(2);
    c.bench_function("message 200 B encrypt+decrypt, group of 2", |b| {
        b.iter(|| {
            let outgoing = conversation.encrypt(&alice.provider, &alice.identity, &text()).unwrap();
            black_box(process_incoming(&bob.provider, &outgoing.payload).unwrap());
        })
    });
}

fn join(c: &mut Criterion) {
    c.bench_function("join a group of 2 from its Welcome", |b| {
        b.iter_batched(
            || {
                let creator = member();
                let joiner = member();
                let mut conversation = Conversation::create(&creator.provider, &creator.identity).unwrap();
                let package = key_package(&joiner, &creator);
                let commit = conversation.add(&creator.provider, &creator.identity, &[package]).unwrap();
                (joiner, commit.welcome.unwrap().1)
            },
            |(joiner, welcome)| black_box(process_incoming(&joiner.provider, &welcome).unwrap()),
            BatchSize::PerIteration,
        )
    });
}

fn commits(c: &mut Criterion) {
    let mut commits = c.benchmark_group("commits");
    commits.sample_size(10).measurement_time(Duration::from_secs(5));
    for size in [2, 100, 1000] {
        let (creator, mut conversation, _) = group(size);
        // Each timed add is undone (untimed) so the group stays at `size`.
        commits.bench_function(format!("add member, group of {size}"), |b| {
            b.iter_custom(|iterations| {
                let mut timed = Duration::ZERO;
                for _ in 0..iterations {
                    let newcomer = member();
                    let package = key_package(&newcomer, &creator);
                    let start = Instant::now();
                    conversation.add(&creator.provider, &creator.identity, &[package]).unwrap();
                    conversation.confirm_commit(&creator.provider).unwrap();
                    timed += start.elapsed();
                    let account = newcomer.identity.account();
                    conversation.remove(&creator.provider, &creator.identity, &[account]).unwrap();
                    conversation.confirm_commit(&creator.provider).unwrap();
                }
                timed
            })
        });
        commits.bench_function(format!("self-update, group of {size}"), |b| {
            b.iter(|| {
                black_box(conversation.self_update(&creator.provider, &creator.identity).unwrap());
                conversation.confirm_commit(&creator.provider).unwrap();
            })
        });
    }
    commits.finish();
}

criterion_group!(benches, message, join, commits);
criterion_main!(benches);

//! Anonymous send tokens: what each step costs. The relay's parts are
//! issuing (per element, batched 100 to a request, with its proof) and
//! checking a spent token; the device's are blinding and finishing.
//!
//! Run: `cargo bench -p hush-proto --bench tokens`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use hush_proto::tokens::{TokenIssuer, TokenRequest};
use rand_core::OsRng;

const BATCH: usize = 100;

fn tokens(c: &mut Criterion) {
    let issuer = TokenIssuer::for_day(&[7; 32], 20_000).unwrap();
    let mut group = c.benchmark_group("tokens");
    group.sample_size(20);
    group.bench_function("device: blind 100", |b| b.iter(|| black_box(TokenRequest::new(BATCH, &mut OsRng))));
    group.bench_function("relay: issue 100 (evaluate and prove)", |b| {
        b.iter_batched(
            || TokenRequest::new(BATCH, &mut OsRng),
            |request| black_box(issuer.issue(request.blinded(), &mut OsRng).unwrap()),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("device: verify proof and finish 100", |b| {
        b.iter_batched(
            || {
                let request = TokenRequest::new(BATCH, &mut OsRng);
                let issued = issuer.issue(request.blinded(), &mut OsRng).unwrap();
                (request, issued)
            },
            |(request, issued)| black_box(request.finish(&issued, 20_000).unwrap()),
            BatchSize::SmallInput,
        )
    });
    let request = TokenRequest::new(1, &mut OsRng);
    let issued = issuer.issue(request.blinded(), &mut OsRng).unwrap();
    let token = request.finish(&issued, 20_000).unwrap().remove(0);
    group.bench_function("relay: check one spent token", |b| {
        b.iter(|| assert!(issuer.check(black_box(&token))))
    });
    group.bench_function("relay: derive the day's key", |b| {
        b.iter(|| black_box(TokenIssuer::for_day(&[7; 32], 20_001).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, tokens);
criterion_main!(benches);

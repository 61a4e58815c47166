//! Every fuzz target, run in the test command: each file of its corpus
//! (crates/fuzz/corpus/TARGET, the seeds AFL++ starts from, and every
//! crash found, kept as a regression), then seeded random mutations of
//! them. A panic in a target fails the test and names the input.
//!
//! `HUSH_BLESS=1` writes the seed corpora anew from real encoders.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use hush_core::openmls::prelude::OpenMlsProvider as _;
use hush_core::{new_key_packages, verify_key_package, Body, Content, Conversation, Identity};
use hush_proto::{
    CertificatePin, ClientFrame, ErrorCode, GroupId, IdentityKey, Invite, RelayFrame, WipeCode,
};
use openmls_rust_crypto::OpenMlsRustCrypto;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Mutations of the corpus per target, per run of the test command.
const MUTATIONS: usize = 20_000;
/// Mutations of the slow targets' corpora: a relay session takes ~20 ms,
/// a group schedule ~1 s (and the test command runs 2,000 seeded ones in
/// `hush-testkit`'s simulation test).
fn mutations(target: &str) -> usize {
    match target {
        "relay_session" => 400,
        "group_schedule" => 8,
        _ => MUTATIONS,
    }
}

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target)
}

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(corpus_dir(target))
        .unwrap_or_else(|_| panic!("no corpus for {target}"))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    files.into_iter().map(|path| (path.clone(), std::fs::read(&path).unwrap())).collect()
}

/// One mutation as AFL++'s havoc stage would make: flips, byte sets,
/// interesting values, deletions, duplications, splices with another seed.
fn mutate(rng: &mut StdRng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut data = input.to_vec();
    for _ in 0..rng.gen_range(1..8) {
        let len = data.len();
        match rng.gen_range(0..7) {
            0 if len > 0 => {
                let at = rng.gen_range(0..len);
                data[at] ^= 1 << rng.gen_range(0..8);
            }
            1 if len > 0 => {
                let at = rng.gen_range(0..len);
                data[at] = [0, 1, 0x7f, 0x80, 0xff][rng.gen_range(0..5)];
            }
            2 if len >= 4 => {
                let at = rng.gen_range(0..len - 3);
                let value: u32 = [0, 1, 0xffff, 0x7fff_ffff, 0xffff_ffff, 65_536][rng.gen_range(0..6)];
                data[at..at + 4].copy_from_slice(&value.to_be_bytes());
            }
            3 if len > 0 => {
                let from = rng.gen_range(0..len);
                let to = rng.gen_range(from..=len);
                data.drain(from..to);
            }
            4 if len > 0 => {
                let from = rng.gen_range(0..len);
                let to = rng.gen_range(from..=len.min(from + 64));
                let copy = data[from..to].to_vec();
                let at = rng.gen_range(0..=data.len());
                data.splice(at..at, copy);
            }
            5 if !other.is_empty() => {
                let cut = rng.gen_range(0..=data.len());
                let from = rng.gen_range(0..other.len());
                data.truncate(cut);
                data.extend_from_slice(&other[from..]);
            }
            _ => data.push(rng.r#gen()),
        }
    }
    data
}

fn run_caught(target: &str, run: fn(&[u8]), data: &[u8], what: &str) {
    if std::panic::catch_unwind(|| run(data)).is_err() {
        panic!("fuzz target {target} panicked on {what}: {data:02x?}");
    }
}

#[test]
fn every_target_survives_its_corpus_and_mutations_of_it() {
    if std::env::var_os("HUSH_BLESS").is_some() {
        write_seed_corpora();
    }
    for (target, run) in hush_fuzz::TARGETS {
        let started = std::time::Instant::now();
        let seeds = corpus(target);
        assert!(!seeds.is_empty(), "{target} has no seeds");
        for (path, data) in &seeds {
            run_caught(target, *run, data, &path.display().to_string());
        }
        let mut rng = StdRng::seed_from_u64(0x4855_5348);
        let mutations = mutations(target);
        for i in 0..mutations {
            let input = &seeds[i % seeds.len()].1;
            let other = &seeds[rng.gen_range(0..seeds.len())].1;
            let data = mutate(&mut rng, input, other);
            run_caught(target, *run, &data, &format!("mutation {i}"));
        }
        eprintln!("{target}: {} seeds, {mutations} mutations in {:.1?}", seeds.len(), started.elapsed());
    }
}

#[test]
fn the_runner_names_every_target() {
    for (name, _) in hush_fuzz::TARGETS {
        assert!(hush_fuzz::target(name).is_some());
        assert!(corpus_dir(name).is_dir(), "{name} has no corpus directory");
    }
    assert!(hush_fuzz::target("nonsense").is_none());
}

/// Seeds from the real encoders: one file per shape of input.
fn write_seed_corpora() {
    let account = IdentityKey([7; 32]).account();
    let other = IdentityKey([8; 32]).account();
    let client = vec![
        ClientFrame::Hello { version: hush_proto::PROTOCOL_VERSION },
        ClientFrame::Register {
            invite_code: "abcdefghijklmnop".into(),
            identity_key: IdentityKey([7; 32]),
            signature: [1; 64],
            wipe_hash: [2; 32],
        },
        ClientFrame::Login { account, signature: [3; 64] },
        ClientFrame::UploadKeyPackages {
            request: 1,
            one_time: vec![vec![4; 40], vec![5; 12]],
            last_resort: Some(vec![6; 30]),
            expires_at: 1_800_000_000,
        },
        ClientFrame::FetchKeyPackage { request: 2, account },
        ClientFrame::Send {
            request: 3,
            recipients: vec![account, other],
            payload: vec![9; 64],
            ttl_secs: 60,
        },
        ClientFrame::Commit {
            request: 4,
            group: GroupId(vec![1; 16]),
            epoch: 3,
            recipients: vec![other],
            payload: vec![2; 80],
            welcome: Some((vec![account], vec![3; 50])),
            next_key: [4; 32],
            signature: [5; 64],
        },
        ClientFrame::Subscribe,
        ClientFrame::Ack { ids: vec![1, 2, 3, u64::MAX] },
        ClientFrame::RemoteWipe { request: 5, account, secret: [6; 32] },
        ClientFrame::IssueTokens { request: 6, blinded: vec![[7; 32], [8; 32]] },
        ClientFrame::Spend {
            request: 7,
            token: hush_proto::tokens::Token { day: 20_000, nonce: [1; 32], output: [2; 64] },
        },
        ClientFrame::CreateQueue { request: 8, owner_key: [3; 32], write_hash: [4; 32] },
        ClientFrame::SubscribeQueues { request: 9, proofs: vec![(hush_proto::QueueId([5; 16]), [6; 64])] },
        ClientFrame::AckQueues { items: vec![(hush_proto::QueueId([5; 16]), 7)] },
        ClientFrame::SealedSend {
            request: 10,
            targets: vec![hush_proto::Capability { queue: hush_proto::QueueId([5; 16]), secret: [8; 32] }],
            payload: vec![9; 40],
            ttl_secs: 0,
        },
        ClientFrame::SealedCommit {
            request: 11,
            group: GroupId(vec![1; 16]),
            epoch: 3,
            targets: vec![hush_proto::Capability { queue: hush_proto::QueueId([5; 16]), secret: [8; 32] }],
            rotate: vec![(
                hush_proto::Capability { queue: hush_proto::QueueId([5; 16]), secret: [8; 32] },
                [9; 32],
            )],
            payload: vec![2; 80],
            welcome: Some((vec![hush_proto::Destination::Account(account)], vec![3; 50])),
            next_key: [4; 32],
            signature: [5; 64],
        },
        ClientFrame::Report {
            request: 12,
            account: other,
            content: br#"{"id":[1],"body":{"Text":"x"}}"#.to_vec(),
            signature: [6; 64],
            reason: "spam".into(),
        },
        ClientFrame::TokenKey { request: 13, day: 20_000 },
    ];
    write_seeds("client_frame", client.iter().map(ClientFrame::encode));
    let relay = vec![
        RelayFrame::Challenge { nonce: [1; 32] },
        RelayFrame::Ready { account, key_packages: 10 },
        RelayFrame::Accepted { request: 1, inactive: vec![other] },
        RelayFrame::KeyPackage { request: 2, key_package: vec![7; 90] },
        RelayFrame::Rejected { request: 3, code: ErrorCode::UnknownAccount },
        RelayFrame::StaleEpoch { request: 4, epoch: 9 },
        RelayFrame::Deliver { id: 5, arrived_at: 1_800_000_000, payload: vec![8; 70] },
        RelayFrame::QueueEmpty,
        RelayFrame::WipeOrder { secret: [9; 32] },
        RelayFrame::Tokens {
            request: 6,
            issued: hush_proto::tokens::Issued {
                day: 20_000,
                public_key: [1; 32],
                evaluated: vec![[2; 32], [3; 32]],
                proof: [4; 64],
            },
        },
        RelayFrame::Error { code: ErrorCode::Malformed, message: "bad frame".into() },
        RelayFrame::QueueCreated { request: 7, queue: hush_proto::QueueId([1; 16]) },
        RelayFrame::Sent { request: 8, refused: vec![0, 2] },
        RelayFrame::QueueDeliver {
            queue: hush_proto::QueueId([1; 16]),
            seq: 3,
            arrived_at: 1_800_000_000,
            payload: vec![4; 60],
        },
        RelayFrame::TokenKey { request: 9, day: 20_000, public_key: [5; 32] },
    ];
    write_seeds("relay_frame", relay.iter().map(RelayFrame::encode));
    let pin = CertificatePin([0xab; 32]);
    let invite = Invite {
        address: "relay.example.org:7443".into(),
        pin,
        code: "abcdefghijklmnopqrstuvwxyz234567".into(),
    };
    write_seeds("invite", [invite.to_string().into_bytes(), b"hush://127.0.0.1:7443/00/x".to_vec()]);
    let code = WipeCode { account, secret: [5; 32], pin, address: "relay.example.org:7443".into() };
    write_seeds("wipe_code", [code.to_string().into_bytes()]);
    let contents = [
        Body::Text("hello".into()),
        Body::Timer { secs: Some(30) },
        Body::Info { group_name: Some("crew".into()) },
    ];
    write_seeds(
        "content",
        contents.into_iter().enumerate().map(|(i, body)| {
            let expires_after_secs = (i == 0).then_some(60);
            Content { id: [i as u8; 16], sent_at_ms: 1_800_000_000_000, body, expires_after_secs }.to_bytes()
        }),
    );
    let mut commit = vec![hush_proto::COMMIT_PAYLOAD_TAG];
    commit.extend_from_slice(&[0u8; 96]);
    commit.extend_from_slice(&[0, 1, 0, 2, 0, 0, 0, 16]);
    write_seeds("mls_message", [vec![0, 1, 0, 1, 0, 0, 0, 16, 1, 2, 3], commit]);
    let mut keys = vec![1u8];
    keys.extend_from_slice(&[7; 32]);
    keys.extend_from_slice(&10u32.to_be_bytes());
    keys.push(1);
    keys.extend_from_slice(&[8; 32]);
    let mut wipe = vec![2u8];
    wipe.extend_from_slice(&account.0);
    wipe.extend_from_slice(&[5; 64]);
    wipe.push(9);
    wipe.extend_from_slice(b"localhost");
    write_seeds("key_file_slot", [keys, wipe]);
    write_mls_seeds();
    write_relay_session_seeds();
    // Any bytes are a schedule; these are long enough that a whole run's
    // choices come from the input.
    let mut rng = StdRng::seed_from_u64(7);
    write_seeds(
        "group_schedule",
        (0..3).map(|_| {
            let mut schedule = vec![0u8; 1024];
            rng.fill(&mut schedule[..]);
            schedule
        }),
    );
    write_seeds(
        "relay_config",
        [br#"{"retention_secs":1209600,"max_connections":0,"frames_per_sec":2000,"frame_burst":4000,"handshake_timeout_secs":15}"#.to_vec()],
    );
}

fn write_seeds(target: &str, seeds: impl IntoIterator<Item = Vec<u8>>) {
    let dir = corpus_dir(target);
    std::fs::create_dir_all(&dir).unwrap();
    for (i, seed) in seeds.into_iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i:02}")), seed).unwrap();
    }
}

/// Real MLS seeds: key packages (after the account they belong to), and a
/// Welcome, a commit and an application message of a real group.
fn write_mls_seeds() {
    let person = || {
        let provider = OpenMlsRustCrypto::default();
        let identity = Identity::generate(provider.storage()).unwrap();
        (provider, identity)
    };
    let (alice_provider, alice) = person();
    let (bob_provider, bob) = person();
    let packages = new_key_packages(&bob_provider, &bob, 1, true, 0).unwrap();
    let last_resort = packages.last_resort.unwrap();
    let one_time = packages.one_time[0].clone();
    write_seeds(
        "key_package",
        [&one_time, &last_resort].map(|package| [&bob.account().0[..], package].concat()),
    );
    let verified = verify_key_package(&alice_provider, &one_time, bob.account()).unwrap();
    let mut group = Conversation::create(&alice_provider, &alice).unwrap();
    let commit = group.add(&alice_provider, &alice, &[verified]).unwrap();
    group.confirm_commit(&alice_provider).unwrap();
    let content = Content {
        id: [1; 16],
        sent_at_ms: 1_800_000_000_000,
        body: Body::Text("hello".into()),
        expires_after_secs: None,
    };
    let message = group.encrypt(&alice_provider, &alice, &content).unwrap().payload;
    let dir = corpus_dir("mls_message");
    for (name, seed) in [
        ("real-welcome", commit.welcome.unwrap().1),
        ("real-commit", commit.commit),
        ("real-message", message),
    ] {
        std::fs::write(dir.join(name), seed).unwrap();
    }
}

/// The hostile client's frames: every kind, addressed to the honest
/// clients' real accounts, before and after login.
fn write_relay_session_seeds() {
    use hush_proto::{Capability, Destination};
    use hush_relay::fuzzing::{account, input, Start, BOB, CAROL, CAROL_QUEUE, CAROL_QUEUE_SECRET, MALLORY};
    let (bob, carol, mallory) = (account(BOB), account(CAROL), account(MALLORY));
    let group = GroupId(vec![1; 16]);
    let mut announced = vec![hush_proto::COMMIT_PAYLOAD_TAG];
    announced.extend_from_slice(&[4; 32]);
    announced.extend_from_slice(&[0; 64]);
    announced.extend_from_slice(b"commit");
    let after_login = vec![
        ClientFrame::Send { request: 1, recipients: vec![bob, carol], payload: vec![9; 40], ttl_secs: 0 },
        ClientFrame::Send { request: 2, recipients: vec![bob, bob], payload: vec![8; 10], ttl_secs: 5 },
        ClientFrame::Commit {
            request: 3,
            group: group.clone(),
            epoch: 0,
            recipients: vec![bob],
            payload: announced.clone(),
            welcome: Some((vec![carol], vec![3; 50])),
            next_key: [4; 32],
            signature: [5; 64],
        },
        ClientFrame::UploadKeyPackages {
            request: 4,
            one_time: vec![vec![4; 40]],
            last_resort: Some(vec![6; 30]),
            expires_at: u64::MAX,
        },
        ClientFrame::FetchKeyPackage { request: 5, account: mallory },
        ClientFrame::FetchKeyPackage { request: 6, account: bob },
        ClientFrame::Subscribe,
        ClientFrame::Ack { ids: vec![1, 2, 3] },
        ClientFrame::Login { account: bob, signature: [3; 64] },
        ClientFrame::RemoteWipe { request: 7, account: bob, secret: [6; 32] },
        ClientFrame::IssueTokens {
            request: 8,
            blinded: hush_proto::tokens::TokenRequest::new(2, &mut rand::rngs::OsRng).blinded().to_vec(),
        },
    ];
    let before_login = vec![
        ClientFrame::Hello { version: hush_proto::PROTOCOL_VERSION },
        ClientFrame::TokenKey { request: 1, day: 20_000 },
        ClientFrame::Login { account: bob, signature: [3; 64] },
    ];
    let wipe = vec![
        ClientFrame::Hello { version: hush_proto::PROTOCOL_VERSION },
        ClientFrame::RemoteWipe { request: 1, account: carol, secret: [6; 32] },
    ];
    let to_carol = Capability { queue: CAROL_QUEUE, secret: CAROL_QUEUE_SECRET };
    let wrong = Capability { queue: CAROL_QUEUE, secret: [1; 32] };
    let sealed = vec![
        ClientFrame::SealedSend {
            request: 1,
            targets: vec![to_carol.clone()],
            payload: vec![7; 30],
            ttl_secs: 0,
        },
        ClientFrame::SealedSend {
            request: 2,
            targets: vec![wrong.clone()],
            payload: vec![6; 30],
            ttl_secs: 0,
        },
        ClientFrame::SealedCommit {
            request: 3,
            group: GroupId(vec![2; 16]),
            epoch: 0,
            targets: vec![to_carol.clone()],
            rotate: vec![(to_carol.clone(), [9; 32])],
            payload: announced,
            welcome: Some((vec![Destination::Account(bob), Destination::Queue(wrong)], vec![5; 20])),
            next_key: [4; 32],
            signature: [5; 64],
        },
        ClientFrame::SealedSend { request: 4, targets: vec![to_carol], payload: vec![8; 30], ttl_secs: 0 },
        ClientFrame::CreateQueue { request: 5, owner_key: [1; 32], write_hash: [2; 32] },
        ClientFrame::FetchKeyPackage { request: 6, account: bob },
        ClientFrame::SubscribeQueues { request: 7, proofs: vec![(CAROL_QUEUE, [0; 64])] },
        ClientFrame::AckQueues { items: vec![(CAROL_QUEUE, 1)] },
        ClientFrame::Login { account: bob, signature: [3; 64] },
        ClientFrame::Report {
            request: 8,
            account: bob,
            content: br#"{"id":[1],"body":{"Text":"x"}}"#.to_vec(),
            signature: [6; 64],
            reason: "spam".into(),
        },
    ];
    write_seeds(
        "relay_session",
        [
            input(Start::LoggedIn, &after_login),
            input(Start::LoggedIn, &after_login[..3]),
            input(Start::Fresh, &before_login),
            input(Start::Fresh, &wipe),
            input(Start::Sealed, &sealed),
            input(Start::Sealed, &sealed[..2]),
        ],
    );
}

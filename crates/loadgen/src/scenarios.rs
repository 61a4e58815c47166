//! The five scenarios. Each message carries (pair, sequence, send time), so
//! every delivery is checked: exactly once, none lost, and how long it took.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use hush_proto::tokens::Token;
use hush_proto::{Capability, ClientFrame, RelayFrame};
use tokio::sync::{Barrier, Semaphore};

use crate::accounts::{provision, source_address, Link};
use crate::mosquitto::Figures;
use crate::progress::{Counter, Progress};
use crate::queues::{make_inboxes, receive_from, sealed, tokens, tokens_for, Inbox};
use crate::relay::RelayUnderTest;
use crate::report::{quantile, Report};
use crate::Options;

const HEADER: usize = 4 + 8 + 8;
/// Registrations in flight while provisioning.
const PROVISION_PARALLEL: usize = 64;

pub async fn run(options: &Options) -> Result<Report> {
    if options.vs_mosquitto && !matches!(options.scenario.as_str(), "throughput" | "latency" | "drain") {
        bail!("--vs-mosquitto covers throughput, latency and drain");
    }
    let baseline = match options.vs_sqlite {
        true => {
            eprintln!("first on the embedded store...");
            let embedded = Options { store: None, relays: 1, vs_sqlite: false, ..options.clone() };
            Some(run_hush(&embedded).await?)
        }
        false => None,
    };
    let mut report = run_hush(options).await?;
    if let Some(baseline) = baseline {
        for name in
            ["msgs_per_s", "drain_s", "p50_ms", "p99_ms", "relay_cpu_us_per_msg", "lost", "duplicates"]
        {
            if let Some(value) = baseline.number(name) {
                report.set(&format!("sqlite_{name}"), value);
            }
        }
        if let (Some(store), Some(embedded)) = (report.number("msgs_per_s"), baseline.number("msgs_per_s")) {
            report.set("vs_sqlite", store / embedded.max(f64::MIN_POSITIVE));
        }
    }
    if options.vs_mosquitto {
        let number = |name: &str| report.number(name).unwrap_or(0.0);
        let hush = Figures {
            msgs_per_s: number("msgs_per_s"),
            p50_ms: number("p50_ms"),
            p99_ms: number("p99_ms"),
            drain_s: number("drain_s"),
            ..Figures::default()
        };
        crate::mosquitto::compare(options, &mut report, hush).await?;
    }
    Ok(report)
}

/// The pacing of the latency scenario: `rate` messages per second in total,
/// spread over the pairs, for `seconds`.
pub fn latency_pace(options: &Options) -> (Pace, usize) {
    let pairs_count = options.pairs.max(1) as f64;
    let interval = Duration::from_secs_f64(pairs_count / options.rate.max(1) as f64);
    let messages = ((options.rate * options.seconds) as f64 / pairs_count).max(1.0) as usize;
    (Pace::Every(interval, Duration::ZERO), messages)
}

async fn run_hush(options: &Options) -> Result<Report> {
    if options.size < HEADER {
        bail!("--size must be at least {HEADER} bytes");
    }
    let mut relay = match (&options.relay, &options.data) {
        (Some(address), Some(data)) => RelayUnderTest::attach(address, data)?,
        _ => RelayUnderTest::start_cluster(options.store.as_deref(), options.relays)?,
    };
    if options.scenario == "crash" && relay.relays() > 1 {
        bail!("the crash scenario runs on one relay");
    }
    if options.accounts > 0 {
        eprintln!("enrolling {} offline accounts...", options.accounts);
        let began = Instant::now();
        relay.provision(options.accounts)?;
        eprintln!("enrolled in {:.1} s", began.elapsed().as_secs_f64());
    }
    let mut report = match options.scenario.as_str() {
        "idle" => idle(&relay, options).await,
        "throughput" => pairs(&relay, options, Pace::Window(options.window), options.messages).await,
        "latency" => {
            let (pace, messages) = latency_pace(options);
            pairs(&relay, options, pace, messages).await
        }
        "drain" => drain(&relay, options).await,
        "crash" => crash(&mut relay, options).await,
        other => bail!("unknown scenario {other}"),
    }?;
    if options.accounts > 0 {
        report.set("offline_accounts", options.accounts);
    }
    Ok(report)
}

pub fn now_ns(start: Instant) -> u64 {
    start.elapsed().as_nanos() as u64
}

pub fn payload(size: usize, pair: u32, seq: u64, sent_ns: u64) -> Vec<u8> {
    let mut bytes = vec![0x5a; size];
    bytes[..4].copy_from_slice(&pair.to_be_bytes());
    bytes[4..12].copy_from_slice(&seq.to_be_bytes());
    bytes[12..20].copy_from_slice(&sent_ns.to_be_bytes());
    bytes
}

pub fn parse(payload: &[u8]) -> Option<(u32, u64, u64)> {
    let pair = u32::from_be_bytes(payload.get(..4)?.try_into().ok()?);
    let seq = u64::from_be_bytes(payload.get(4..12)?.try_into().ok()?);
    let sent = u64::from_be_bytes(payload.get(12..20)?.try_into().ok()?);
    Some((pair, seq, sent))
}

/// CPU seconds so far of the relays and of the run's own database.
type CpuMark = (Option<f64>, Option<f64>);

fn cpu_mark(relay: &RelayUnderTest) -> CpuMark {
    (relay.cpu_seconds(), relay.database_cpu_seconds())
}

fn relay_figures(report: &mut Report, relay: &RelayUnderTest, before: CpuMark, delivered: usize) {
    report.set("relays", relay.relays());
    report.set("relay_rss_kib", relay.rss_kib());
    let (relays_before, database_before) = before;
    for (name, before, after) in [
        ("relay", relays_before, relay.cpu_seconds()),
        ("database", database_before, relay.database_cpu_seconds()),
    ] {
        if let (Some(before), Some(after)) = (before, after) {
            let used = after - before;
            report.set(&format!("{name}_cpu_s"), used);
            if delivered > 0 {
                report.set(&format!("{name}_cpu_us_per_msg"), used * 1e6 / delivered as f64);
            }
        }
    }
}

#[derive(Clone, Copy)]
pub enum Pace {
    /// As fast as possible with this many sends in flight.
    Window(usize),
    /// One send per interval, starting after the given phase (pairs are
    /// spread evenly over the interval, so the load is smooth rather than
    /// a burst from every pair at the same instant).
    Every(Duration, Duration),
}

impl Pace {
    /// Sends in flight at most.
    pub fn window(self) -> usize {
        match self {
            Pace::Window(window) => window.max(1),
            Pace::Every(..) => 10_000,
        }
    }

    /// The clock of a paced sender (none when windowed).
    pub fn ticker(self) -> Option<tokio::time::Interval> {
        match self {
            Pace::Every(interval, phase) => {
                Some(tokio::time::interval_at(tokio::time::Instant::now() + phase, interval))
            }
            Pace::Window(_) => None,
        }
    }
}

/// What one recipient saw.
#[derive(Default)]
pub struct Received {
    pub unique: usize,
    pub duplicates: usize,
    pub latencies_ms: Vec<f64>,
}

async fn receive(
    (mut sender, mut receiver): Link,
    (ack_every, expected): (usize, usize),
    start: Instant,
    ready: Arc<Barrier>,
    deadline: Instant,
    progress: Counter,
) -> Result<Received> {
    sender.send(&ClientFrame::Subscribe).await?;
    let mut seen = vec![false; expected];
    let mut got = Received::default();
    let mut acks = Vec::new();
    let mut announced = false;
    while got.unique < expected || !announced {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(frame) = tokio::time::timeout(left, receiver.recv()).await else { break };
        match frame? {
            RelayFrame::QueueDeliver { queue, seq, payload, .. } => {
                acks.push((queue, seq));
                if let Some((_, seq, sent)) = parse(&payload) {
                    match seen.get_mut(seq as usize) {
                        Some(slot) if !*slot => {
                            *slot = true;
                            got.unique += 1;
                            progress.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            got.latencies_ms.push((now_ns(start).saturating_sub(sent)) as f64 / 1e6);
                        }
                        _ => got.duplicates += 1,
                    }
                }
                if acks.len() >= ack_every {
                    sender.send(&ClientFrame::AckQueues { items: std::mem::take(&mut acks) }).await?;
                }
            }
            RelayFrame::QueueEmpty => {
                if !acks.is_empty() {
                    sender.send(&ClientFrame::AckQueues { items: std::mem::take(&mut acks) }).await?;
                }
                if !announced {
                    announced = true;
                    ready.wait().await;
                }
            }
            _ => {}
        }
    }
    if !acks.is_empty() {
        sender.send(&ClientFrame::AckQueues { items: acks }).await?;
    }
    Ok(got)
}

/// Sends sequence numbers `first..first + messages` of `pair` to `to`, paced
/// or windowed; returns how many the relay acknowledged.
#[allow(clippy::too_many_arguments)]
async fn send(
    (mut sender, mut receiver): Link,
    to: Capability,
    pair: u32,
    first: u64,
    messages: usize,
    pace: Pace,
    size: usize,
    start: Instant,
) -> Result<usize> {
    let permits = Arc::new(Semaphore::new(pace.window()));
    let acked = tokio::spawn({
        let permits = Arc::clone(&permits);
        async move {
            let mut acked = 0;
            while acked < messages {
                match receiver.recv().await? {
                    RelayFrame::Sent { refused, .. } if refused.is_empty() => {
                        acked += 1;
                        permits.add_permits(1);
                    }
                    RelayFrame::Sent { .. } => return Err(anyhow!("the queue refused a send")),
                    RelayFrame::Rejected { code, .. } => return Err(anyhow!("send rejected: {code:?}")),
                    _ => {}
                }
            }
            Ok::<_, anyhow::Error>(acked)
        }
    });
    let mut ticker = pace.ticker();
    for seq in first..first + messages as u64 {
        if let Some(ticker) = ticker.as_mut() {
            ticker.tick().await;
        }
        let permit = match permits.try_acquire() {
            Ok(permit) => permit,
            Err(_) => {
                sender.flush().await?;
                permits.acquire().await?
            }
        };
        permit.forget();
        let frame = ClientFrame::SealedSend {
            request: seq as u32,
            targets: vec![to.clone()],
            payload: payload(size, pair, seq, now_ns(start)),
            ttl_secs: 0,
        };
        sender.send(&frame).await?;
    }
    sender.flush().await?;
    acked.await?
}

/// Sealed connections for `senders` accounts (each logs in, takes the
/// tokens `messages` sends need, and opens its sealed connection), and
/// `inboxes` queues made by one more account: the devices of a run.
async fn devices(
    relay: &RelayUnderTest,
    senders: usize,
    messages: usize,
    inboxes: usize,
) -> Result<(Vec<Link>, Vec<Inbox>)> {
    eprintln!("provisioning {} accounts...", senders + 1);
    let mut accounts = provision(relay, senders + 1, PROVISION_PARALLEL).await?;
    let (_, mut maker) = accounts.pop().ok_or_else(|| anyhow!("no account"))?;
    let maker_tokens = tokens(&mut maker, tokens_for(inboxes)).await?;
    let mut making = sealed(relay, 0, maker_tokens, source_address(0)).await?;
    let inboxes = make_inboxes(&mut making, inboxes).await?;
    let mut links = Vec::with_capacity(senders);
    for (chunk, accounts) in accounts.chunks_mut(PROVISION_PARALLEL).enumerate() {
        let opening = accounts.iter_mut().enumerate().map(|(i, (_, link))| async move {
            let tokens: Vec<Token> = tokens(link, tokens_for(messages)).await?;
            // Sender k writes through relay k of the cluster.
            sealed(relay, chunk * PROVISION_PARALLEL + i, tokens, source_address(i)).await
        });
        for link in futures_util::future::join_all(opening).await {
            links.push(link?);
        }
    }
    Ok((links, inboxes))
}

/// Sender/recipient pairs: throughput (windowed) or latency (paced).
async fn pairs(relay: &RelayUnderTest, options: &Options, pace: Pace, messages: usize) -> Result<Report> {
    let pairs = options.pairs.max(1);
    let (senders, inboxes) = devices(relay, pairs, messages, pairs).await?;
    let start = Instant::now();
    let ready = Arc::new(Barrier::new(pairs + 1));
    let budget = Duration::from_secs(120) + Duration::from_millis((messages * pairs) as u64 / 2);
    let deadline = Instant::now() + budget;
    let mut receiving = Vec::new();
    let mut recipients = Vec::new();
    let counter = Counter::default();
    for (index, inbox) in inboxes.iter().enumerate() {
        // Recipient k listens on the relay after sender k's.
        let link = receive_from(relay, index + 1, &[inbox], source_address(index)).await?;
        recipients.push(inbox.capability());
        // Paced runs acknowledge each message as the real client does;
        // throughput runs batch acknowledgements.
        let ack_every = if matches!(pace, Pace::Every(..)) { 1 } else { 64 };
        let counter = Arc::clone(&counter);
        let ready = Arc::clone(&ready);
        receiving.push(tokio::spawn(receive(link, (ack_every, messages), start, ready, deadline, counter)));
    }
    ready.wait().await;
    let cpu_before = cpu_mark(relay);
    let progress = Progress::watch(&options.scenario, messages * pairs, Arc::clone(&counter));
    eprintln!("{pairs} pairs x {messages} messages of {} bytes...", options.size);
    let began = Instant::now();
    let mut sending = Vec::new();
    for (pair, (link, to)) in senders.into_iter().zip(recipients).enumerate() {
        let pace = match pace {
            Pace::Every(interval, _) => Pace::Every(interval, interval.mul_f64(pair as f64 / pairs as f64)),
            window => window,
        };
        sending.push(tokio::spawn(send(link, to, pair as u32, 0, messages, pace, options.size, start)));
    }
    let mut acked = 0;
    for task in sending {
        acked += task.await??;
    }
    let mut total = Received::default();
    for task in receiving {
        let got = task.await??;
        total.unique += got.unique;
        total.duplicates += got.duplicates;
        total.latencies_ms.extend(got.latencies_ms);
    }
    let elapsed = began.elapsed().as_secs_f64();
    drop(progress);
    let mut report = Report::new(&options.scenario);
    report.set("pairs", pairs);
    report.set("messages", messages * pairs);
    report.set("size", options.size);
    report.set("acked", acked);
    report.set("delivered", total.unique);
    report.set("lost", acked.saturating_sub(total.unique));
    report.set("duplicates", total.duplicates);
    report.set("elapsed_s", elapsed);
    report.set("msgs_per_s", total.unique as f64 / elapsed);
    total.latencies_ms.sort_by(f64::total_cmp);
    for (name, q) in [("p50_ms", 0.5), ("p90_ms", 0.9), ("p99_ms", 0.99), ("p999_ms", 0.999), ("max_ms", 1.0)]
    {
        report.set(name, quantile(&total.latencies_ms, q));
    }
    relay_figures(&mut report, relay, cpu_before, total.unique);
    Ok(report)
}

/// Holds many idle devices, each on the connection that receives its queues
/// (subscribed, its queue empty), and measures the relay's memory.
async fn idle(relay: &RelayUnderTest, options: &Options) -> Result<Report> {
    let (_, inboxes) = devices(relay, 0, 0, options.connections).await?;
    let before = relay.rss_kib();
    let cpu_before = relay.cpu_seconds();
    eprintln!("opening {} connections...", options.connections);
    let mut links = Vec::with_capacity(inboxes.len());
    for (chunk, inboxes) in inboxes.chunks(256).enumerate() {
        let opening = inboxes.iter().enumerate().map(|(i, inbox)| async move {
            let (mut sender, mut receiver) =
                receive_from(relay, chunk * 256 + i, &[inbox], source_address(chunk * 256 + i)).await?;
            sender.send(&ClientFrame::Subscribe).await?;
            match receiver.recv().await? {
                RelayFrame::QueueEmpty => Ok::<_, anyhow::Error>((sender, receiver)),
                other => Err(anyhow!("unexpected {other:?}")),
            }
        });
        for link in futures_util::future::join_all(opening).await {
            links.push(link?);
        }
    }
    // What opening one cost the relay: a TLS handshake with the hybrid key
    // exchange, a queue proved (a signature checked, a store read and a
    // write) and drained: about what a device's check-in costs.
    let cpu_after = relay.cpu_seconds();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = relay.rss_kib();
    let mut report = Report::new("idle");
    report.set("connections", links.len());
    if let (Some(before), Some(after)) = (cpu_before, cpu_after) {
        report.set("relay_cpu_us_per_connection", (after - before) * 1e6 / links.len().max(1) as f64);
    }
    report.set("relay_rss_before_kib", before);
    report.set("relay_rss_kib", after);
    if let (Some(before), Some(after)) = (before, after) {
        report.set("kib_per_connection", (after.saturating_sub(before)) as f64 / links.len().max(1) as f64);
    }
    drop(links);
    Ok(report)
}

/// One offline recipient accumulates M messages from P senders, then
/// connects and takes them all.
async fn drain(relay: &RelayUnderTest, options: &Options) -> Result<Report> {
    let senders = options.pairs.clamp(1, options.messages.max(1));
    let (links, inboxes) = devices(relay, senders, options.messages / senders + 1, 1).await?;
    let inbox = inboxes.first().ok_or_else(|| anyhow!("no inbox"))?;
    let start = Instant::now();
    let rss_before = relay.rss_kib();
    let cpu_before = cpu_mark(relay);
    eprintln!("queueing {} messages from {senders} senders for an offline recipient...", options.messages);
    let began = Instant::now();
    let mut sending = Vec::new();
    for (index, link) in links.into_iter().enumerate() {
        // Sequence numbers are global, so each sender takes its own range.
        let share = options.messages / senders + usize::from(index < options.messages % senders);
        let first = index * (options.messages / senders) + index.min(options.messages % senders);
        let pace = Pace::Window(options.window);
        sending.push(tokio::spawn(send(
            link,
            inbox.capability(),
            0,
            first as u64,
            share,
            pace,
            options.size,
            start,
        )));
    }
    let mut acked = 0;
    for task in sending {
        acked += task.await??;
    }
    let publish_s = began.elapsed().as_secs_f64();
    let rss_queued = relay.rss_kib();
    // The recipient comes back to the relay after the first sender's.
    let link = receive_from(relay, 1, &[inbox], source_address(0)).await?;
    let ready = Arc::new(Barrier::new(1));
    let deadline = Instant::now() + Duration::from_secs(300);
    let began = Instant::now();
    let counter = Counter::default();
    let progress = Progress::watch("drain", options.messages, Arc::clone(&counter));
    let got = receive(link, (256, options.messages), start, ready, deadline, counter).await?;
    drop(progress);
    let drain_s = began.elapsed().as_secs_f64();
    let mut report = Report::new("drain");
    report.set("messages", options.messages);
    report.set("senders", senders);
    report.set("acked", acked);
    report.set("publish_msgs_per_s", acked as f64 / publish_s);
    report.set("delivered", got.unique);
    report.set("lost", acked.saturating_sub(got.unique));
    report.set("duplicates", got.duplicates);
    report.set("drain_s", drain_s);
    report.set("msgs_per_s", got.unique as f64 / drain_s);
    // CPU for queueing and draining each message.
    relay_figures(&mut report, relay, cpu_before, got.unique);
    report.set("relay_rss_kib", rss_queued);
    if let (Some(before), Some(queued)) = (rss_before, rss_queued) {
        let per_message = queued.saturating_sub(before) as f64 * 1024.0 / acked.max(1) as f64;
        report.set("relay_bytes_per_queued_msg", per_message);
    }
    Ok(report)
}

type Acked = Arc<Mutex<Vec<bool>>>;

/// Sustained load; the relay is killed with SIGKILL halfway and restarted.
/// Every acknowledged message must still arrive, none twice after
/// de-duplication.
async fn crash(relay: &mut RelayUnderTest, options: &Options) -> Result<Report> {
    let pairs = options.pairs.max(1);
    let per_pair = (options.rate as usize * options.seconds as usize / pairs).max(1);
    eprintln!("provisioning {} accounts...", pairs + 1);
    let mut accounts = provision(relay, pairs + 1, PROVISION_PARALLEL).await?;
    let (_, mut maker) = accounts.pop().ok_or_else(|| anyhow!("no account"))?;
    let maker_tokens = tokens(&mut maker, tokens_for(pairs)).await?;
    let mut making = sealed(relay, 0, maker_tokens, source_address(0)).await?;
    let receivers = make_inboxes(&mut making, pairs).await?;
    // Enough tokens for every message and a few reconnections.
    let mut wallets = Vec::with_capacity(pairs);
    for (_, link) in &mut accounts {
        wallets.push(tokens(link, 4 * tokens_for(per_pair)).await?);
    }
    let interval = Duration::from_secs_f64(pairs as f64 / options.rate.max(1) as f64);
    let acked: Vec<Acked> = (0..pairs).map(|_| Arc::new(Mutex::new(vec![false; per_pair]))).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let target = (relay.address.clone(), relay.pin);
    let mut tasks = Vec::new();
    for (pair, (wallet, to)) in wallets.into_iter().zip(receivers.iter().map(Inbox::capability)).enumerate() {
        let job = SenderJob {
            relay: RelayUnderTest::detached(&target.0, target.1),
            wallet,
            to,
            pair: pair as u32,
            messages: per_pair,
            interval,
            size: options.size,
            acked: Arc::clone(&acked[pair]),
            stop: Arc::clone(&stop),
        };
        tasks.push(tokio::spawn(job.run()));
    }
    tokio::time::sleep(Duration::from_secs(options.seconds) / 2).await;
    eprintln!("killing the relay with SIGKILL and restarting it...");
    relay.kill_and_restart()?;
    for task in tasks {
        task.await??;
    }
    stop.store(true, Ordering::Release);
    let mut lost = 0;
    let mut redelivered = 0;
    let mut acked_total = 0;
    for (pair, inbox) in receivers.iter().enumerate() {
        let expected: Vec<bool> = acked[pair].lock().map(|v| v.clone()).unwrap_or_default();
        acked_total += expected.iter().filter(|a| **a).count();
        let link = receive_from(relay, 0, &[inbox], source_address(pair)).await?;
        let (seen, duplicates) = collect_all(link, per_pair).await?;
        lost += expected.iter().zip(&seen).filter(|(was_acked, got)| **was_acked && !**got).count();
        redelivered += duplicates;
    }
    let mut report = Report::new("crash");
    report.set("pairs", pairs);
    report.set("acked", acked_total);
    report.set("lost", lost);
    report.set("redelivered", redelivered);
    report.set("duplicates", 0);
    report.set("relay_rss_kib", relay.rss_kib());
    Ok(report)
}

/// A sender that keeps going across relay restarts, resending whatever was
/// not acknowledged before its connection died.
struct SenderJob {
    relay: RelayUnderTest,
    wallet: Vec<Token>,
    to: Capability,
    pair: u32,
    messages: usize,
    interval: Duration,
    size: usize,
    acked: Acked,
    stop: Arc<AtomicBool>,
}

impl SenderJob {
    async fn run(mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(600);
        let mut next = 0u64;
        while !self.done(next) && Instant::now() < deadline && !self.stop.load(Ordering::Acquire) {
            // A sealed connection with the tokens the rest of the messages
            // need (those spent on a connection the crash cut are lost).
            let needed = tokens_for(self.messages.saturating_sub(next as usize)).min(self.wallet.len());
            if needed == 0 {
                bail!("a sender ran out of tokens");
            }
            let spend: Vec<Token> = self.wallet.drain(..needed).collect();
            let Ok((mut sender, mut receiver)) =
                sealed(&self.relay, 0, spend, source_address(self.pair as usize)).await
            else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let acked = Arc::clone(&self.acked);
            let listener = tokio::spawn(async move {
                while let Ok(frame) = receiver.recv().await {
                    if let (RelayFrame::Sent { request, refused }, Ok(mut acked)) = (frame, acked.lock()) {
                        if let Some(slot) = acked.get_mut(request as usize).filter(|_| refused.is_empty()) {
                            *slot = true;
                        }
                    }
                }
            });
            let mut ticker = tokio::time::interval(self.interval);
            while (next as usize) < self.messages {
                ticker.tick().await;
                let frame = ClientFrame::SealedSend {
                    request: next as u32,
                    targets: vec![self.to.clone()],
                    payload: payload(self.size, self.pair, next, 0),
                    ttl_secs: 0,
                };
                if sender.send(&frame).await.is_err() {
                    break;
                }
                next += 1;
            }
            // Give the last acknowledgements time to arrive, then resend from
            // the first message that has none.
            tokio::time::sleep(Duration::from_millis(500)).await;
            listener.abort();
            if let Some(missing) = self.first_unacked() {
                next = next.min(missing as u64);
            }
        }
        Ok(())
    }

    fn first_unacked(&self) -> Option<usize> {
        self.acked.lock().ok().and_then(|acked| acked.iter().position(|a| !a))
    }

    fn done(&self, next: u64) -> bool {
        next as usize >= self.messages && self.first_unacked().is_none()
    }
}

/// Logs in and takes everything queued: (seen per sequence, redeliveries).
async fn collect_all((mut sender, mut receiver): Link, size: usize) -> Result<(Vec<bool>, usize)> {
    sender.send(&ClientFrame::Subscribe).await?;
    let mut seen = vec![false; size];
    let mut duplicates = 0;
    let mut acks = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(30), receiver.recv()).await {
            Ok(Ok(RelayFrame::QueueDeliver { queue, seq, payload, .. })) => {
                acks.push((queue, seq));
                if let Some((_, seq, _)) = parse(&payload) {
                    match seen.get_mut(seq as usize) {
                        Some(slot) if !*slot => *slot = true,
                        _ => duplicates += 1,
                    }
                }
            }
            Ok(Ok(RelayFrame::QueueEmpty)) => break,
            Ok(Ok(_)) => {}
            Ok(Err(error)) => return Err(error.into()),
            Err(_) => bail!("timed out collecting queued messages"),
        }
        if acks.len() >= 256 {
            sender.send(&ClientFrame::AckQueues { items: std::mem::take(&mut acks) }).await?;
        }
    }
    if !acks.is_empty() {
        sender.send(&ClientFrame::AckQueues { items: acks }).await?;
    }
    Ok((seen, duplicates))
}

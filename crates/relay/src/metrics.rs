//! Prometheus metrics on an optional local address (`hush serve --metrics
//! 127.0.0.1:9464`): connections, queued messages and bytes, traffic,
//! store batch sizes and commit latency.
//!
//! Key design decision: only totals over the whole relay, never anything
//! per account, group or connection, so a scraper (or whoever reads its
//! time series) learns the relay's load and nothing about who uses it.
//! Rates ("messages per second") are the scraper's to compute from the
//! counters, e.g. `rate(hush_messages_accepted_total[1m])`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::actor::ReadHandle;
use crate::hub::Hub;
use crate::store::Stats;

/// Longest request head read from a scraper.
const MAX_REQUEST: usize = 8 * 1024;
/// How long a scraper may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Scrapes answered at once; more are closed at once, so the endpoint can
/// never take the descriptors or threads the relay's clients need.
const MAX_SCRAPES: usize = 4;
/// How long the queue gauges (a count over the mailbox table) are reused.
const STATS_FRESH_FOR: Duration = Duration::from_secs(5);

/// Operations per store batch.
const BATCH_BUCKETS: &[u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256, 512];
/// Durable commit latency of a store batch, in microseconds.
const COMMIT_BUCKETS_US: &[u64] =
    &[250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000];

/// A histogram with fixed buckets over whole numbers. The count is the
/// sum of the buckets (the last one is past every bound), so a scrape
/// that races an observation still sees cumulative counts that never
/// exceed the total.
struct Histogram {
    bounds: &'static [u64],
    buckets: Vec<AtomicU64>,
    sum: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [u64]) -> Self {
        Self {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
        }
    }

    fn observe(&self, value: u64) {
        let i = self.bounds.iter().position(|bound| value <= *bound).unwrap_or(self.bounds.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum.fetch_add(value, Relaxed);
    }

    /// Writes the histogram, its bounds and sum divided by `scale` (e.g.
    /// microseconds as seconds).
    fn render(&self, out: &mut String, name: &str, help: &str, scale: f64) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, bucket) in self.bounds.iter().zip(&self.buckets) {
            cumulative += bucket.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {cumulative}", *bound as f64 / scale);
        }
        let count = cumulative + self.buckets[self.bounds.len()].load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.sum.load(Relaxed) as f64 / scale);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// The relay's counters. Cheap to update from any thread.
pub struct Metrics {
    connections_accepted: AtomicU64,
    connections_refused: AtomicU64,
    tokens_issued: AtomicU64,
    token_requests_refused: AtomicU64,
    tokens_spent: AtomicU64,
    reports: AtomicU64,
    tokens_refused: AtomicU64,
    messages_accepted: AtomicU64,
    message_bytes_accepted: AtomicU64,
    commits_accepted: AtomicU64,
    queued: AtomicU64,
    queued_bytes: AtomicU64,
    delivered: AtomicU64,
    delivered_bytes: AtomicU64,
    batch_failures: AtomicU64,
    batch_size: Histogram,
    commit_latency: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            connections_accepted: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            tokens_issued: AtomicU64::new(0),
            token_requests_refused: AtomicU64::new(0),
            tokens_spent: AtomicU64::new(0),
            reports: AtomicU64::new(0),
            tokens_refused: AtomicU64::new(0),
            messages_accepted: AtomicU64::new(0),
            message_bytes_accepted: AtomicU64::new(0),
            commits_accepted: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            queued_bytes: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            delivered_bytes: AtomicU64::new(0),
            batch_failures: AtomicU64::new(0),
            batch_size: Histogram::new(BATCH_BUCKETS),
            commit_latency: Histogram::new(COMMIT_BUCKETS_US),
        }
    }
}

fn bytes(len: usize) -> u64 {
    u64::try_from(len).unwrap_or(u64::MAX)
}

impl Metrics {
    pub(crate) fn connection_accepted(&self) {
        self.connections_accepted.fetch_add(1, Relaxed);
    }

    /// A TCP connection closed before TLS: the relay, or its source
    /// address, was at its connection limit.
    pub(crate) fn connection_refused(&self) {
        self.connections_refused.fetch_add(1, Relaxed);
    }

    /// Anonymous send tokens issued.
    pub(crate) fn tokens_issued(&self, count: usize) {
        self.tokens_issued.fetch_add(count as u64, Relaxed);
    }

    /// A token request refused for the account's daily quota.
    pub(crate) fn token_request_refused(&self) {
        self.token_requests_refused.fetch_add(1, Relaxed);
    }

    /// A token spent to open or top up a sealed connection.
    pub(crate) fn token_spent(&self) {
        self.tokens_spent.fetch_add(1, Relaxed);
    }

    /// A reported message kept for the operator.
    pub(crate) fn report_received(&self) {
        self.reports.fetch_add(1, Relaxed);
    }

    /// A token refused: not valid today, or spent already.
    pub(crate) fn token_refused(&self) {
        self.tokens_refused.fetch_add(1, Relaxed);
    }

    /// A message (not a commit) the store accepted.
    pub(crate) fn message_accepted(&self, len: usize) {
        self.messages_accepted.fetch_add(1, Relaxed);
        self.message_bytes_accepted.fetch_add(bytes(len), Relaxed);
    }

    /// A commit the store ordered.
    pub(crate) fn commit_accepted(&self, len: usize) {
        self.commits_accepted.fetch_add(1, Relaxed);
        self.message_bytes_accepted.fetch_add(bytes(len), Relaxed);
    }

    /// Copies of a payload put in mailboxes (one per recipient).
    pub(crate) fn queued(&self, copies: usize, len: usize) {
        self.queued.fetch_add(bytes(copies), Relaxed);
        self.queued_bytes.fetch_add(bytes(copies).saturating_mul(bytes(len)), Relaxed);
    }

    /// A payload sent to a client.
    pub(crate) fn delivered(&self, len: usize) {
        self.delivered.fetch_add(1, Relaxed);
        self.delivered_bytes.fetch_add(bytes(len), Relaxed);
    }

    /// A store batch of `operations`, made durable (or not) in `took`.
    pub(crate) fn batch(&self, operations: usize, took: Duration, durable: bool) {
        self.batch_size.observe(bytes(operations));
        self.commit_latency.observe(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
        if !durable {
            self.batch_failures.fetch_add(1, Relaxed);
        }
    }

    /// The Prometheus text format (version 0.0.4) of every metric, with the
    /// live gauges given.
    pub fn render(&self, connections: usize, stats: Option<&Stats>) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        };
        metric("hush_connections", "gauge", "Client connections open now.", bytes(connections));
        let counters = [
            ("hush_connections_accepted_total", "Client connections accepted.", &self.connections_accepted),
            (
                "hush_connections_refused_total",
                "Connections closed before TLS at the relay's or an address's connection limit.",
                &self.connections_refused,
            ),
            ("hush_tokens_issued_total", "Anonymous send tokens issued.", &self.tokens_issued),
            ("hush_tokens_spent_total", "Send tokens spent on sealed connections.", &self.tokens_spent),
            ("hush_reports_total", "Reported messages received (signature checked).", &self.reports),
            (
                "hush_tokens_refused_total",
                "Send tokens refused (invalid or spent already).",
                &self.tokens_refused,
            ),
            (
                "hush_token_requests_refused_total",
                "Token requests refused for an account's daily quota.",
                &self.token_requests_refused,
            ),
            (
                "hush_messages_accepted_total",
                "Messages (not commits) stored durably.",
                &self.messages_accepted,
            ),
            (
                "hush_commits_accepted_total",
                "Group commits ordered and stored durably.",
                &self.commits_accepted,
            ),
            (
                "hush_message_bytes_accepted_total",
                "Payload bytes of accepted messages and commits.",
                &self.message_bytes_accepted,
            ),
            ("hush_queued_total", "Payload copies put in mailboxes (one per recipient).", &self.queued),
            ("hush_queued_bytes_total", "Bytes of payload copies put in mailboxes.", &self.queued_bytes),
            ("hush_delivered_total", "Payloads sent to clients.", &self.delivered),
            ("hush_delivered_bytes_total", "Payload bytes sent to clients.", &self.delivered_bytes),
            (
                "hush_store_batch_failures_total",
                "Store batches that could not be made durable.",
                &self.batch_failures,
            ),
        ];
        for (name, help, counter) in counters {
            metric(name, "counter", help, counter.load(Relaxed));
        }
        if let Some(stats) = stats {
            metric(
                "hush_queued_messages",
                "gauge",
                "Payloads waiting in mailboxes now.",
                stats.queued_messages,
            );
            metric("hush_queued_bytes", "gauge", "Bytes waiting in mailboxes now.", stats.queued_bytes);
            metric("hush_accounts_active", "gauge", "Accounts not deactivated.", stats.active_accounts);
        }
        self.batch_size.render(&mut out, "hush_store_batch_operations", "Operations per store batch.", 1.0);
        self.commit_latency.render(
            &mut out,
            "hush_store_commit_seconds",
            "Time to apply a store batch and make it durable (fsync).",
            1_000_000.0,
        );
        out
    }
}

/// The queue gauges and when they were counted.
type Counted = (Instant, Stats);

/// What the metrics endpoint reads from.
pub(crate) struct Source {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) hub: Arc<Hub>,
    /// A reader thread (and store connection) of its own for the queue
    /// gauges.
    pub(crate) store: ReadHandle,
    /// The last reading of the gauges.
    pub(crate) last: Mutex<Option<Counted>>,
}

impl Source {
    /// The queue gauges, counted at most every few seconds, on the
    /// metrics reader's thread (never the relay's), one count at a time.
    async fn stats(&self) -> Option<Stats> {
        if let Some((at, stats)) = *self.last.lock().ok()? {
            if at.elapsed() < STATS_FRESH_FOR {
                return Some(stats);
            }
        }
        let stats = self.store.stats().await.ok()?;
        *self.last.lock().ok()? = Some((Instant::now(), stats));
        Some(stats)
    }

    async fn render(&self) -> String {
        let stats = self.stats().await;
        self.metrics.render(self.hub.connections(), stats.as_ref())
    }
}

/// Binds the metrics address (before the relay says it is ready, so a bad
/// address is a clear error at start).
pub(crate) async fn bind(address: &str) -> std::io::Result<TcpListener> {
    let listener = TcpListener::bind(address).await?;
    let bound: SocketAddr = listener.local_addr()?;
    if !bound.ip().is_loopback() {
        tracing::warn!(%bound, "metrics are served on a non-loopback address; restrict who can reach it");
    }
    Ok(listener)
}

/// Serves `GET /metrics` (and nothing else) until the task is dropped,
/// to at most [`MAX_SCRAPES`] scrapers at once.
pub(crate) async fn serve(listener: TcpListener, source: Arc<Source>) {
    let slots = Arc::new(Semaphore::new(MAX_SCRAPES));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Over the limit: closed at once (dropped).
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else { continue };
        let source = Arc::clone(&source);
        tokio::spawn(async move {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, &source)).await;
            drop(slot);
        });
    }
}

async fn answer(mut stream: TcpStream, source: &Source) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let read = stream.read(&mut chunk).await?;
        if read == 0 || head.len() + read > MAX_REQUEST {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..read]);
    }
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let mut words = line.split(|b| *b == b' ');
    let response = match (words.next(), words.next()) {
        (Some(b"GET"), Some(b"/metrics")) => {
            let body = source.render().await;
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        }
        _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned(),
    };
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use crate::store::SqliteStore;

    use super::*;

    async fn scrape(address: SocketAddr) -> String {
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    #[tokio::test]
    async fn idle_scrapers_beyond_the_limit_are_turned_away_and_the_endpoint_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.db");
        let store = crate::actor::spawn_reader(move || Ok(Box::new(SqliteStore::open(&path)?))).unwrap();
        let source = Source {
            metrics: Arc::new(Metrics::default()),
            hub: Arc::new(Hub::default()),
            store,
            last: Mutex::new(None),
        };
        let listener = bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, Arc::new(source)));
        assert!(scrape(address).await.starts_with("HTTP/1.1 200 OK"));
        // Scrapers that connect and say nothing hold every slot...
        let mut idle = Vec::new();
        for _ in 0..MAX_SCRAPES {
            idle.push(TcpStream::connect(address).await.unwrap());
        }
        // ...so the next one is closed at once, unanswered (not after the
        // request timeout).
        let mut turned_away = TcpStream::connect(address).await.unwrap();
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(REQUEST_TIMEOUT / 2, turned_away.read(&mut byte)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "not closed at once: {read:?}");
        // Once they go, scrapes are answered again.
        drop(idle);
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        loop {
            let response = scrape(address).await;
            if response.starts_with("HTTP/1.1 200 OK") {
                assert!(response.contains("hush_queued_messages 0"), "{response}");
                break;
            }
            assert!(Instant::now() < deadline, "the endpoint did not recover");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server.abort();
    }

    #[test]
    fn counters_and_histograms_render_in_the_text_format() {
        let metrics = Metrics::default();
        metrics.message_accepted(300);
        metrics.commit_accepted(1000);
        metrics.queued(2, 300);
        metrics.batch(3, Duration::from_micros(700), true);
        metrics.batch(600, Duration::from_secs(2), false);
        let stats =
            Stats { accounts: 5, active_accounts: 4, queued_messages: 7, queued_bytes: 2100, queues: 3 };
        let text = metrics.render(2, Some(&stats));
        for line in [
            "hush_connections 2",
            "hush_messages_accepted_total 1",
            "hush_commits_accepted_total 1",
            "hush_message_bytes_accepted_total 1300",
            "hush_queued_total 2",
            "hush_queued_bytes_total 600",
            "hush_queued_messages 7",
            "hush_queued_bytes 2100",
            "hush_store_batch_failures_total 1",
            "hush_store_batch_operations_bucket{le=\"2\"} 0",
            "hush_store_batch_operations_bucket{le=\"4\"} 1",
            "hush_store_batch_operations_bucket{le=\"512\"} 1",
            "hush_store_batch_operations_bucket{le=\"+Inf\"} 2",
            "hush_store_batch_operations_sum 603",
            "hush_store_commit_seconds_bucket{le=\"0.0005\"} 0",
            "hush_store_commit_seconds_bucket{le=\"0.001\"} 1",
            "hush_store_commit_seconds_bucket{le=\"1\"} 1",
            "hush_store_commit_seconds_count 2",
            "# TYPE hush_store_commit_seconds histogram",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
        }
        // Every sample line is a name (with labels) and a number.
        for sample in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = sample.rsplit_once(' ').expect("name and value");
            assert!(value.parse::<f64>().is_ok(), "{sample}");
        }
    }
}

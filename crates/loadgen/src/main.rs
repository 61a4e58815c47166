//! `hush-loadgen`: drives a real Hush relay over TLS WebSockets with many
//! simulated clients and reports throughput, latency, drain time, crash
//! safety and memory per connection. Payloads are opaque bytes of the chosen
//! size (the relay cannot tell them from MLS ciphertext).
//!
//! Key design decision: by default it starts its own relay from the
//! workspace's `hush` binary, so the relay's CPU and RSS are sampled from
//! /proc beside the client-side figures, and the crash scenario can kill it.

mod accounts;
mod mosquitto;
mod mqtt;
mod progress;
mod queues;
mod relay;
mod report;
mod scenarios;

use anyhow::Result;
use clap::Parser;

/// Load generator for the Hush relay.
#[derive(Debug, Clone, Parser)]
#[command(name = "hush-loadgen", version, about)]
pub struct Options {
    /// idle, throughput, latency, drain or crash.
    #[arg(value_parser = ["idle", "throughput", "latency", "drain", "crash"])]
    pub scenario: String,
    /// Use a running relay at this address instead of starting one (needs --data).
    #[arg(long, value_name = "ADDR", requires = "data")]
    pub relay: Option<String>,
    /// The running relay's data directory (for invites).
    #[arg(long, value_name = "DIR")]
    pub data: Option<std::path::PathBuf>,
    /// Connections to hold (idle).
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Sender/recipient pairs.
    #[arg(long, default_value_t = 100)]
    pub pairs: usize,
    /// Messages per pair (throughput, crash), or in total (drain).
    #[arg(long, default_value_t = 1000)]
    pub messages: usize,
    /// Messages per second in total (latency, crash).
    #[arg(long, default_value_t = 2000)]
    pub rate: u64,
    /// Seconds to run (latency, crash).
    #[arg(long, default_value_t = 15)]
    pub seconds: u64,
    /// Payload bytes.
    #[arg(long, default_value_t = 300)]
    pub size: usize,
    /// Sends in flight per sender (throughput, drain).
    #[arg(long, default_value_t = 64)]
    pub window: usize,
    /// Offline accounts to enrol before the run (growth: throughput with a
    /// big store).
    #[arg(long, default_value_t = 0)]
    pub accounts: usize,
    /// Run the same scenario (throughput, latency or drain) against
    /// Mosquitto in the same invocation and report Hush/Mosquitto ratios.
    #[arg(long)]
    pub vs_mosquitto: bool,
    /// Keep the relay's state in PostgreSQL: a URL, or `private` for a
    /// server of the run's own in a temporary directory (whose CPU time is
    /// then reported too). Without it, the embedded store.
    #[arg(long, value_name = "URL|private")]
    pub store: Option<String>,
    /// Relays started on the store (more than one needs --store): senders
    /// are spread over them, and each recipient listens on the relay after
    /// its sender's, so every message crosses from one relay to another.
    #[arg(long, default_value_t = 1)]
    pub relays: usize,
    /// Run the same scenario on the embedded store first, in the same
    /// invocation, and report PostgreSQL/SQLite ratios (with --store).
    #[arg(long, requires = "store")]
    pub vs_sqlite: bool,
    /// Print the figures as one JSON object (the last line).
    #[arg(long)]
    pub json: bool,
}

fn main() {
    let options = Options::parse();
    if let Err(error) = run(options) {
        eprintln!("hush-loadgen: {error:#}");
        std::process::exit(1);
    }
}

fn run(options: Options) -> Result<()> {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = runtime.block_on(scenarios::run(&options))?;
    report.print(options.json);
    Ok(())
}

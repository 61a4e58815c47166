//! `--vs-mosquitto`: the same scenario against Mosquitto in the same run,
//! configured as the reference measurements were (persistence on, a
//! snapshot every second, QoS 1, persistent sessions, plain TCP on
//! loopback: its fastest durable-ish setting). Messages carry the same
//! header as the Hush runs and are checked the same way.

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::sync::{Barrier, Semaphore};

use crate::accounts::source_address;
use crate::mqtt::{self, Packet};
use crate::relay::{process_cpu_seconds, process_rss_kib};
use crate::report::{quantile, Report};
use crate::scenarios::{now_ns, parse, payload, Pace, Received};
use crate::Options;

/// A Mosquitto broker on a fresh data directory.
pub struct Broker {
    address: String,
    child: Child,
    dir: PathBuf,
}

fn mosquitto_binary() -> Result<PathBuf> {
    for candidate in ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"] {
        if std::path::Path::new(candidate).exists() {
            return Ok(PathBuf::from(candidate));
        }
    }
    bail!("mosquitto is not installed: run bench/mosquitto.sh (or apt-get install mosquitto)")
}

fn running_as_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status.lines().find(|line| line.starts_with("Uid:"));
    uid.and_then(|line| line.split_whitespace().nth(2)) == Some("0")
}

impl Broker {
    /// Starts Mosquitto on a free loopback port.
    pub fn start() -> Result<Self> {
        let binary = mosquitto_binary()?;
        let dir = std::env::temp_dir().join(format!("hush-loadgen-mosquitto-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        // Started as root, mosquitto would switch to its own user, who cannot
        // write our temporary directory; as anyone else it stays who it is.
        let user = if running_as_root() { "root" } else { "mosquitto" };
        let config = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\n\
             autosave_interval 1\nautosave_on_changes false\nmax_queued_messages 0\nmax_inflight_messages 20\n\
             set_tcp_nodelay true\nlog_dest none\nuser {user}\n",
            dir.display()
        );
        let config_path = dir.join("mosquitto.conf");
        std::fs::write(&config_path, config)?;
        let child = Command::new(binary)
            .arg("-c")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting mosquitto")?;
        let address = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&address).is_err() {
            if Instant::now() > deadline {
                bail!("mosquitto did not start listening on {address}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Self { address, child, dir })
    }

    fn rss_kib(&self) -> Option<u64> {
        process_rss_kib(self.child.id())
    }

    fn cpu_seconds(&self) -> Option<f64> {
        process_cpu_seconds(self.child.id())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs the scenario against Mosquitto and adds its figures and the ratio
/// (Hush over Mosquitto, higher is better) to `report`.
pub async fn compare(options: &Options, report: &mut Report, hush: Figures) -> Result<()> {
    let broker = Broker::start()?;
    eprintln!("the same against mosquitto at {}...", broker.address);
    match options.scenario.as_str() {
        "throughput" => {
            let theirs = pairs(&broker, options, Pace::Window(options.window), options.messages).await?;
            report.set("mosquitto_msgs_per_s", theirs.msgs_per_s);
            report.set("mosquitto_cpu_us_per_msg", theirs.cpu_us_per_msg);
            report.set("mosquitto_lost", theirs.lost);
            report.set("ratio", hush.msgs_per_s / theirs.msgs_per_s.max(f64::MIN_POSITIVE));
        }
        "latency" => {
            let (pace, messages) = crate::scenarios::latency_pace(options);
            let theirs = pairs(&broker, options, pace, messages).await?;
            report.set("mosquitto_p50_ms", theirs.p50_ms);
            report.set("mosquitto_p99_ms", theirs.p99_ms);
            report.set("mosquitto_cpu_us_per_msg", theirs.cpu_us_per_msg);
            report.set("ratio", theirs.p99_ms / hush.p99_ms.max(f64::MIN_POSITIVE));
        }
        "drain" => {
            let theirs = drain(&broker, options).await?;
            report.set("mosquitto_drain_s", theirs.drain_s);
            report.set("mosquitto_bytes_per_queued_msg", theirs.bytes_per_queued);
            report.set("mosquitto_lost", theirs.lost);
            report.set("ratio", theirs.drain_s / hush.drain_s.max(f64::MIN_POSITIVE));
        }
        other => bail!("--vs-mosquitto covers throughput, latency and drain, not {other}"),
    }
    Ok(())
}

/// The figures a comparison needs from either side.
#[derive(Default, Clone, Copy)]
pub struct Figures {
    /// Delivered messages per second.
    pub msgs_per_s: f64,
    /// 50th percentile latency.
    pub p50_ms: f64,
    /// 99th percentile latency.
    pub p99_ms: f64,
    /// Drain time.
    pub drain_s: f64,
    /// Acknowledged but never delivered.
    pub lost: usize,
    /// Broker CPU per delivered message.
    pub cpu_us_per_msg: f64,
    /// Broker RAM per queued message.
    pub bytes_per_queued: f64,
}

const TOPIC: &str = "hush-bench";

/// Receives `expected` messages on a persistent session, acknowledging each.
async fn receive(
    mut reader: mqtt::Reader,
    mut writer: mqtt::Writer,
    expected: usize,
    start: Instant,
) -> Result<Received> {
    let mut seen = vec![false; expected];
    let mut got = Received::default();
    while got.unique < expected {
        let Packet::Publish { id, payload } = reader.next().await? else { continue };
        writer.puback(id).await?;
        if let Some((_, seq, sent)) = parse(&payload) {
            match seen.get_mut(seq as usize) {
                Some(slot) if !*slot => {
                    *slot = true;
                    got.unique += 1;
                    got.latencies_ms.push(now_ns(start).saturating_sub(sent) as f64 / 1e6);
                }
                _ => got.duplicates += 1,
            }
        }
        writer.flush().await?;
    }
    writer.flush().await?;
    Ok(got)
}

/// Publishes sequence numbers `first..first + messages` to `topic`, paced or
/// windowed; returns how many the broker acknowledged.
async fn publish(
    (mut writer, mut reader): (mqtt::Writer, mqtt::Reader),
    topic: String,
    pair: u32,
    (first, messages): (u64, usize),
    pace: Pace,
    size: usize,
    start: Instant,
) -> Result<usize> {
    // Packet ids are 16 bits: keep the window well inside them.
    let permits = Arc::new(Semaphore::new(pace.window().min(1000)));
    let acks = tokio::spawn({
        let permits = Arc::clone(&permits);
        async move {
            let mut acked = 0;
            while acked < messages {
                if let Packet::Puback = reader.next().await? {
                    acked += 1;
                    permits.add_permits(1);
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
        if permits.available_permits() == 0 {
            writer.flush().await?;
        }
        permits.acquire().await?.forget();
        let id = (seq % 65_535) as u16 + 1;
        writer.publish(&topic, id, &payload(size, pair, seq, now_ns(start))).await?;
        if ticker.is_some() {
            writer.flush().await?;
        }
    }
    writer.flush().await?;
    let acked = acks.await??;
    writer.disconnect().await?;
    Ok(acked)
}

async fn subscribed(
    broker: &Broker,
    client_id: &str,
    topic: &str,
    source: IpAddr,
) -> Result<(mqtt::Writer, mqtt::Reader)> {
    let (mut writer, mut reader) = mqtt::connect(&broker.address, source, client_id).await?;
    writer.subscribe(topic).await?;
    // A fresh session has nothing queued: the first packet is the SUBACK.
    reader.next().await?;
    Ok((writer, reader))
}

async fn pairs(broker: &Broker, options: &Options, pace: Pace, messages: usize) -> Result<Figures> {
    let pairs = options.pairs.max(1);
    let start = Instant::now();
    let mut receiving = Vec::new();
    for pair in 0..pairs {
        let topic = format!("{TOPIC}/{pair}");
        let (writer, reader) = subscribed(broker, &format!("r{pair}"), &topic, source_address(pair)).await?;
        receiving.push(tokio::spawn(receive(reader, writer, messages, start)));
    }
    let mut publishers = Vec::new();
    for pair in 0..pairs {
        publishers
            .push(mqtt::connect(&broker.address, source_address(pairs + pair), &format!("s{pair}")).await?);
    }
    let cpu_before = broker.cpu_seconds();
    let ready = Arc::new(Barrier::new(pairs));
    let began = Instant::now();
    let mut sending = Vec::new();
    for (pair, link) in publishers.into_iter().enumerate() {
        let pace = match pace {
            Pace::Every(interval, _) => Pace::Every(interval, interval.mul_f64(pair as f64 / pairs as f64)),
            window => window,
        };
        let (topic, size, ready) = (format!("{TOPIC}/{pair}"), options.size, Arc::clone(&ready));
        sending.push(tokio::spawn(async move {
            ready.wait().await;
            publish(link, topic, pair as u32, (0, messages), pace, size, start).await
        }));
    }
    let mut acked = 0;
    for task in sending {
        acked += task.await??;
    }
    let mut total = Received::default();
    for task in receiving {
        let got = tokio::time::timeout(Duration::from_secs(300), task)
            .await
            .context("mosquitto lost messages")???;
        total.unique += got.unique;
        total.latencies_ms.extend(got.latencies_ms);
    }
    let elapsed = began.elapsed().as_secs_f64();
    total.latencies_ms.sort_by(f64::total_cmp);
    let cpu = broker.cpu_seconds().zip(cpu_before).map(|(after, before)| after - before).unwrap_or(0.0);
    Ok(Figures {
        msgs_per_s: total.unique as f64 / elapsed,
        p50_ms: quantile(&total.latencies_ms, 0.5).unwrap_or(0.0),
        p99_ms: quantile(&total.latencies_ms, 0.99).unwrap_or(0.0),
        lost: acked.saturating_sub(total.unique),
        cpu_us_per_msg: cpu * 1e6 / total.unique.max(1) as f64,
        ..Figures::default()
    })
}

async fn drain(broker: &Broker, options: &Options) -> Result<Figures> {
    let senders = options.pairs.clamp(1, options.messages.max(1));
    let topic = format!("{TOPIC}/drain");
    let (writer, _) = subscribed(broker, "drain-recipient", &topic, source_address(0)).await?;
    writer.disconnect().await?;
    let rss_before = broker.rss_kib();
    let start = Instant::now();
    let mut sending = Vec::new();
    for index in 0..senders {
        let share = options.messages / senders + usize::from(index < options.messages % senders);
        let first = index * (options.messages / senders) + index.min(options.messages % senders);
        let link = mqtt::connect(&broker.address, source_address(index + 1), &format!("d{index}")).await?;
        let (topic, pace, size) = (topic.clone(), Pace::Window(options.window), options.size);
        sending.push(tokio::spawn(publish(link, topic, 0, (first as u64, share), pace, size, start)));
    }
    let mut acked = 0;
    for task in sending {
        acked += task.await??;
    }
    let rss_queued = broker.rss_kib();
    let began = Instant::now();
    let source = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let (writer, reader) = mqtt::connect(&broker.address, source, "drain-recipient").await?;
    let got =
        tokio::time::timeout(Duration::from_secs(300), receive(reader, writer, options.messages, start))
            .await
            .context("mosquitto lost queued messages")??;
    let drain_s = began.elapsed().as_secs_f64();
    let bytes_per_queued = match (rss_before, rss_queued) {
        (Some(before), Some(queued)) => queued.saturating_sub(before) as f64 * 1024.0 / acked.max(1) as f64,
        _ => 0.0,
    };
    Ok(Figures {
        drain_s,
        msgs_per_s: got.unique as f64 / drain_s,
        lost: acked.saturating_sub(got.unique),
        bytes_per_queued,
        ..Figures::default()
    })
}

//! Measures PostgreSQL client crates on the relay's write path, on a
//! private PostgreSQL server (`hush-pgtest`), so the choice of client in
//! docs/scaling.md rests on a measurement rather than on reputation.
//!
//! A "send" is what the relay's PostgreSQL store does for a message to one
//! queue: spend the message's token (an insert that must not conflict),
//! then number the entry under its queue's row lock and insert it, in one
//! statement. A batch of sends is one transaction, committed with
//! `synchronous_commit = on`, as the relay does. The schema is the relay's,
//! cut down to the tables this touches.
//!
//! The clients, each with `writers` connections working at once:
//! - `postgres`: the blocking facade over tokio-postgres (what the relay
//!   uses), one thread per connection;
//! - `tokio-postgres + deadpool`: async, a connection taken from the pool
//!   for each batch, statements awaited one after another;
//! - the same, pipelined: a batch's statements are all sent before the
//!   first answer is read;
//! - `sqlx`: async, its own pool, statements awaited one after another
//!   (sqlx has no pipelining).
//!
//! ```text
//! cargo run --release --manifest-path bench/pg-clients/Cargo.toml -- [--messages N] [--rounds R]
//! ```

use std::error::Error;
use std::time::{Duration, Instant};

use futures_util::future::try_join_all;
use hush_pgtest::Cluster;

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

/// Queues the sends are spread over (one per simulated conversation).
const QUEUES: usize = 1000;
/// Bytes of each payload: a padded size of a short message.
const PAYLOAD: usize = 512;
/// The queue quotas the relay checks in the same statement.
const MAX_ENTRIES: i64 = 10_000;
const MAX_BYTES: i64 = 64 << 20;

const SCHEMA: &str = "
CREATE TABLE queues (
    id bytea PRIMARY KEY,
    write_hash bytea NOT NULL,
    next_seq bigint NOT NULL,
    entries bigint NOT NULL,
    bytes bigint NOT NULL
);
CREATE TABLE queue_entries (
    queue bytea NOT NULL,
    seq bigint NOT NULL,
    len bigint NOT NULL,
    arrived bigint NOT NULL,
    expires bigint NOT NULL,
    data bytea,
    PRIMARY KEY (queue, seq)
);
ALTER TABLE queue_entries ALTER COLUMN data SET STORAGE EXTERNAL;
CREATE INDEX queue_entries_by_expiry ON queue_entries (expires);
CREATE TABLE spent_tokens (
    nonce bytea PRIMARY KEY,
    day bigint NOT NULL
);
CREATE INDEX spent_tokens_by_day ON spent_tokens (day);
";

/// The relay's two statements for a send to one queue.
const SPEND: &str = "INSERT INTO spent_tokens (nonce, day) VALUES ($1, $2) ON CONFLICT (nonce) DO NOTHING";
const WRITE: &str = "WITH q AS (
         UPDATE queues SET next_seq = next_seq + 1, entries = entries + 1, bytes = bytes + $2
         WHERE id = $1 AND write_hash = $3 AND entries < $4 AND bytes + $2 <= $5
         RETURNING next_seq - 1 AS seq)
     INSERT INTO queue_entries (queue, seq, len, arrived, expires, data)
     SELECT $1, q.seq, $2, $6, $7, $8 FROM q RETURNING seq";

const WRITE_HASH: [u8; 32] = [7; 32];
const DAY: i64 = 20_000;
const NOW: i64 = 1_700_000_000;
const EXPIRES: i64 = NOW + 86_400;

/// How the load is shaped: connections at work at once, sends per batch.
#[derive(Clone, Copy)]
struct Shape {
    writers: usize,
    batch: usize,
}

/// One writer's share of a run.
#[derive(Clone, Copy)]
struct Share {
    /// Distinguishes this run's and this writer's token nonces.
    namespace: u64,
    writer: usize,
    batches: usize,
    batch: usize,
}

/// The `n`th send of a share: its token nonce and its queue.
fn send(share: &Share, n: usize) -> ([u8; 32], [u8; 32]) {
    let mut nonce = [0u8; 32];
    nonce[..8].copy_from_slice(&share.namespace.to_be_bytes());
    nonce[8..16].copy_from_slice(&(share.writer as u64).to_be_bytes());
    nonce[16..24].copy_from_slice(&(n as u64).to_be_bytes());
    (nonce, queue_id((share.writer * 7919 + n * 13) % QUEUES))
}

fn queue_id(index: usize) -> [u8; 32] {
    let mut id = [0u8; 32];
    id[..8].copy_from_slice(&(index as u64).to_be_bytes());
    id
}

/// A client crate under test, connected with its writers' connections.
trait Client {
    fn name(&self) -> &'static str;
    /// Runs every share at once; returns each batch's commit latency.
    fn run(&mut self, shares: &[Share]) -> Result<Vec<Duration>>;
}

/// The `postgres` crate: one blocking client per writer thread.
struct Blocking {
    clients: Vec<postgres::Client>,
}

impl Blocking {
    fn connect(config: &postgres::Config, writers: usize) -> Result<Self> {
        let clients =
            (0..writers).map(|_| config.connect(postgres::NoTls)).collect::<std::result::Result<_, _>>()?;
        Ok(Self { clients })
    }
}

impl Client for Blocking {
    fn name(&self) -> &'static str {
        "postgres (blocking, a thread per connection)"
    }

    fn run(&mut self, shares: &[Share]) -> Result<Vec<Duration>> {
        let payload = vec![0x5a_u8; PAYLOAD];
        let payload = &payload[..];
        std::thread::scope(|scope| {
            let workers: Vec<_> = self
                .clients
                .iter_mut()
                .zip(shares)
                .map(|(client, share)| {
                    scope.spawn(move || -> Result<Vec<Duration>> {
                        let spend = client.prepare(SPEND)?;
                        let write = client.prepare(WRITE)?;
                        let mut latencies = Vec::with_capacity(share.batches);
                        for b in 0..share.batches {
                            let started = Instant::now();
                            let mut transaction = client.transaction()?;
                            for n in b * share.batch..(b + 1) * share.batch {
                                let (nonce, queue) = send(share, n);
                                transaction.execute(&spend, &[&&nonce[..], &DAY])?;
                                let row = transaction.query_opt(
                                    &write,
                                    &[
                                        &&queue[..],
                                        &(PAYLOAD as i64),
                                        &&WRITE_HASH[..],
                                        &MAX_ENTRIES,
                                        &MAX_BYTES,
                                        &NOW,
                                        &EXPIRES,
                                        &payload,
                                    ],
                                )?;
                                row.ok_or("a send was refused")?;
                            }
                            transaction.commit()?;
                            latencies.push(started.elapsed());
                        }
                        Ok(latencies)
                    })
                })
                .collect();
            let mut all = Vec::new();
            for worker in workers {
                all.extend(worker.join().map_err(|_| "a writer panicked")??);
            }
            Ok(all)
        })
    }
}

/// A two-thread tokio runtime, as on the relay's two cores.
fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}

/// Waits for every writer task; their batches' latencies.
fn join(
    runtime: &tokio::runtime::Runtime,
    tasks: Vec<tokio::task::JoinHandle<Result<Vec<Duration>>>>,
) -> Result<Vec<Duration>> {
    runtime.block_on(async {
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await??);
        }
        Ok(all)
    })
}

/// tokio-postgres with a deadpool pool; statements one after another, or
/// pipelined.
struct Pooled {
    runtime: tokio::runtime::Runtime,
    pool: deadpool_postgres::Pool,
    pipelined: bool,
}

impl Pooled {
    fn connect(config: tokio_postgres::Config, writers: usize, pipelined: bool) -> Result<Self> {
        let manager = deadpool_postgres::Manager::from_config(
            config,
            tokio_postgres::NoTls,
            deadpool_postgres::ManagerConfig { recycling_method: deadpool_postgres::RecyclingMethod::Fast },
        );
        let runtime = runtime()?;
        let pool = {
            let _entered = runtime.enter();
            deadpool_postgres::Pool::builder(manager).max_size(writers).build()?
        };
        Ok(Self { runtime, pool, pipelined })
    }

    async fn share(pool: deadpool_postgres::Pool, share: Share, pipelined: bool) -> Result<Vec<Duration>> {
        let payload = vec![0x5a_u8; PAYLOAD];
        let mut latencies = Vec::with_capacity(share.batches);
        for b in 0..share.batches {
            let started = Instant::now();
            let mut client = pool.get().await?;
            let transaction = client.transaction().await?;
            let spend = transaction.prepare_cached(SPEND).await?;
            let write = transaction.prepare_cached(WRITE).await?;
            let sends: Vec<_> = (b * share.batch..(b + 1) * share.batch).map(|n| send(&share, n)).collect();
            if pipelined {
                // Futures polled together: tokio-postgres writes every
                // statement before it reads the first answer.
                // (All the tokens are spent first, then all the entries
                // written: one transaction either way.)
                let (transaction, spend, write, payload) = (&transaction, &spend, &write, &payload[..]);
                let spends = sends.iter().map(|(nonce, _)| async move {
                    let nonce: &[u8] = nonce;
                    transaction.execute(spend, &[&nonce, &DAY]).await
                });
                let writes = sends.iter().map(|(_, queue)| async move {
                    let queue: &[u8] = queue;
                    transaction
                        .query_opt(
                            write,
                            &[
                                &queue,
                                &(PAYLOAD as i64),
                                &&WRITE_HASH[..],
                                &MAX_ENTRIES,
                                &MAX_BYTES,
                                &NOW,
                                &EXPIRES,
                                &payload,
                            ],
                        )
                        .await
                });
                let (_, rows) =
                    futures_util::future::try_join(try_join_all(spends), try_join_all(writes)).await?;
                if rows.iter().any(Option::is_none) {
                    return Err("a send was refused".into());
                }
            } else {
                for (nonce, queue) in &sends {
                    transaction.execute(&spend, &[&&nonce[..], &DAY]).await?;
                    let row = transaction
                        .query_opt(
                            &write,
                            &[
                                &&queue[..],
                                &(PAYLOAD as i64),
                                &&WRITE_HASH[..],
                                &MAX_ENTRIES,
                                &MAX_BYTES,
                                &NOW,
                                &EXPIRES,
                                &&payload[..],
                            ],
                        )
                        .await?;
                    row.ok_or("a send was refused")?;
                }
            }
            transaction.commit().await?;
            latencies.push(started.elapsed());
        }
        Ok(latencies)
    }
}

impl Client for Pooled {
    fn name(&self) -> &'static str {
        if self.pipelined {
            "tokio-postgres + deadpool, pipelined"
        } else {
            "tokio-postgres + deadpool"
        }
    }

    fn run(&mut self, shares: &[Share]) -> Result<Vec<Duration>> {
        let tasks: Vec<_> = shares
            .iter()
            .map(|share| self.runtime.spawn(Self::share(self.pool.clone(), *share, self.pipelined)))
            .collect();
        join(&self.runtime, tasks)
    }
}

/// sqlx with its own pool.
struct Sqlx {
    runtime: tokio::runtime::Runtime,
    pool: sqlx::PgPool,
}

impl Sqlx {
    fn connect(options: sqlx::postgres::PgConnectOptions, writers: usize) -> Result<Self> {
        let runtime = runtime()?;
        let pool = runtime.block_on(
            sqlx::postgres::PgPoolOptions::new()
                .max_connections(writers as u32)
                .min_connections(writers as u32)
                // No ping before each transaction: the others send none.
                .test_before_acquire(false)
                .connect_with(options),
        )?;
        Ok(Self { runtime, pool })
    }

    async fn share(pool: sqlx::PgPool, share: Share) -> Result<Vec<Duration>> {
        let payload = vec![0x5a_u8; PAYLOAD];
        let mut latencies = Vec::with_capacity(share.batches);
        for b in 0..share.batches {
            let started = Instant::now();
            let mut transaction = pool.begin().await?;
            for n in b * share.batch..(b + 1) * share.batch {
                let (nonce, queue) = send(&share, n);
                sqlx::query(SPEND).bind(&nonce[..]).bind(DAY).execute(&mut *transaction).await?;
                let row = sqlx::query(WRITE)
                    .bind(&queue[..])
                    .bind(PAYLOAD as i64)
                    .bind(&WRITE_HASH[..])
                    .bind(MAX_ENTRIES)
                    .bind(MAX_BYTES)
                    .bind(NOW)
                    .bind(EXPIRES)
                    .bind(&payload[..])
                    .fetch_optional(&mut *transaction)
                    .await?;
                row.ok_or("a send was refused")?;
            }
            transaction.commit().await?;
            latencies.push(started.elapsed());
        }
        Ok(latencies)
    }
}

impl Client for Sqlx {
    fn name(&self) -> &'static str {
        "sqlx (its pool)"
    }

    fn run(&mut self, shares: &[Share]) -> Result<Vec<Duration>> {
        let tasks: Vec<_> =
            shares.iter().map(|share| self.runtime.spawn(Self::share(self.pool.clone(), *share))).collect();
        join(&self.runtime, tasks)
    }
}

/// CPU seconds (user + system) of a process, from /proc.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// CPU seconds of the server: the postmaster and its children, living
/// and (through the postmaster's children counters) ended.
fn server_cpu_seconds(postmaster: u32) -> f64 {
    let mut total = 0.0;
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{postmaster}/stat")) {
        if let Some((_, rest)) = stat.rsplit_once(')') {
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // utime, stime, cutime, cstime
            for index in 11..15 {
                total += fields.get(index).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0) / 100.0;
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str() else { continue };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
            let parent = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1));
            if parent == Some(&postmaster.to_string()) {
                total += cpu_seconds(pid).unwrap_or(0.0);
            }
        }
    }
    total
}

/// One measured run of a client.
struct Run {
    messages_per_second: f64,
    client_us: f64,
    server_us: f64,
    p50: Duration,
    p99: Duration,
}

fn measure(
    admin: &mut postgres::Client,
    postmaster: u32,
    client: &mut dyn Client,
    shape: Shape,
    messages: usize,
    namespace: &mut u64,
) -> Result<Run> {
    let mut shares = |batches: usize| -> Vec<Share> {
        *namespace += 1;
        (0..shape.writers)
            .map(|writer| Share { namespace: *namespace, writer, batches, batch: shape.batch })
            .collect()
    };
    // Warm up (connections made, statements prepared), then start from
    // empty tables.
    client.run(&shares(2))?;
    admin.batch_execute(
        "TRUNCATE queue_entries, spent_tokens; UPDATE queues SET next_seq = 1, entries = 0, bytes = 0; CHECKPOINT",
    )?;
    let batches = messages / shape.writers / shape.batch;
    let shares = shares(batches);
    let sent = batches * shape.writers * shape.batch;
    let client_before = cpu_seconds("self").unwrap_or(0.0);
    let server_before = server_cpu_seconds(postmaster);
    let started = Instant::now();
    let mut latencies = client.run(&shares)?;
    let elapsed = started.elapsed();
    let client_cpu = cpu_seconds("self").unwrap_or(0.0) - client_before;
    let server_cpu = server_cpu_seconds(postmaster) - server_before;
    // Nothing lost: every send is stored and every token spent.
    let stored: i64 = admin.query_one("SELECT count(*) FROM queue_entries", &[])?.get(0);
    let spent: i64 = admin.query_one("SELECT count(*) FROM spent_tokens", &[])?.get(0);
    if stored != sent as i64 || spent != sent as i64 {
        return Err(format!("{} stored {stored} and spent {spent} of {sent}", client.name()).into());
    }
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    Ok(Run {
        messages_per_second: sent as f64 / elapsed.as_secs_f64(),
        client_us: client_cpu * 1e6 / sent as f64,
        server_us: server_cpu * 1e6 / sent as f64,
        p50: at(0.5),
        p99: at(0.99),
    })
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() -> Result<()> {
    let mut messages = 60_000;
    let mut rounds = 3;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().ok_or_else(|| format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--messages" => messages = value.parse()?,
            "--rounds" => rounds = value.parse()?,
            _ => return Err(format!("unknown option {arg}").into()),
        }
    }

    let cluster = Cluster::start()?;
    let postmaster = cluster.postmaster_pid().ok_or("the server did not start")?;
    let url = cluster.database();
    let mut admin = postgres::Client::connect(&url, postgres::NoTls)?;
    admin.batch_execute(SCHEMA)?;
    for index in 0..QUEUES {
        admin.execute(
            "INSERT INTO queues (id, write_hash, next_seq, entries, bytes) VALUES ($1, $2, 1, 0, 0)",
            &[&&queue_id(index)[..], &&WRITE_HASH[..]],
        )?;
    }
    let version: String = admin.query_one("SHOW server_version", &[])?.get(0);
    println!("PostgreSQL {version}, fsync and synchronous_commit on, Unix socket; {PAYLOAD}-byte payloads over {QUEUES} queues; median of {rounds} rounds\n");

    let config: postgres::Config = url.parse()?;
    let async_config: tokio_postgres::Config = url.parse()?;
    let sqlx_options: sqlx::postgres::PgConnectOptions = sqlx::postgres::PgConnectOptions::new()
        .socket(cluster.socket_dir())
        .port(5432)
        .username(hush_pgtest::USER)
        .database(url.rsplit('/').next().ok_or("no database name")?);

    let shapes = [
        Shape { writers: 2, batch: 32 },
        Shape { writers: 8, batch: 32 },
        Shape { writers: 2, batch: 1 },
        Shape { writers: 8, batch: 1 },
    ];
    println!("| writers | sends per batch | client | msg/s | client CPU us/msg | server CPU us/msg | batch p50 | batch p99 |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut namespace = 0;
    for shape in shapes {
        // Unbatched sends wait for a disk flush each: fewer of them.
        let messages = if shape.batch == 1 { messages / 10 } else { messages };
        let mut clients: Vec<Box<dyn Client>> = vec![
            Box::new(Blocking::connect(&config, shape.writers)?),
            Box::new(Pooled::connect(async_config.clone(), shape.writers, false)?),
            Box::new(Pooled::connect(async_config.clone(), shape.writers, true)?),
            Box::new(Sqlx::connect(sqlx_options.clone(), shape.writers)?),
        ];
        let mut runs: Vec<Vec<Run>> = clients.iter().map(|_| Vec::new()).collect();
        // Rounds interleave the clients, so a drift of the machine does not
        // fall on one of them.
        for _ in 0..rounds {
            for (client, runs) in clients.iter_mut().zip(&mut runs) {
                runs.push(measure(&mut admin, postmaster, client.as_mut(), shape, messages, &mut namespace)?);
            }
        }
        for (client, runs) in clients.iter().zip(&runs) {
            let mut rate: Vec<f64> = runs.iter().map(|run| run.messages_per_second).collect();
            let mut client_us: Vec<f64> = runs.iter().map(|run| run.client_us).collect();
            let mut server_us: Vec<f64> = runs.iter().map(|run| run.server_us).collect();
            let mut p50: Vec<f64> = runs.iter().map(|run| run.p50.as_secs_f64() * 1e3).collect();
            let mut p99: Vec<f64> = runs.iter().map(|run| run.p99.as_secs_f64() * 1e3).collect();
            println!(
                "| {} | {} | {} | {:.0} | {:.1} | {:.1} | {:.2} ms | {:.2} ms |",
                shape.writers,
                shape.batch,
                client.name(),
                median(&mut rate),
                median(&mut client_us),
                median(&mut server_us),
                median(&mut p50),
                median(&mut p99),
            );
        }
    }
    cluster.stop();
    Ok(())
}

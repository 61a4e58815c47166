//! Operator actions on a data directory: start the relay, mint invites,
//! deactivate accounts, count things. They work while the relay runs: the
//! store is shared through SQLite's locking, and a running relay is told
//! through its admin socket to close a deactivated account's connections.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use data_encoding::BASE32_NOPAD;
use hush_proto::{AccountId, CertificatePin, Invite};
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

use crate::data_dir::{DataDir, DataDirError};
use crate::hub::Hub;
use crate::metrics::{Metrics, Source};
use crate::server::{now, Relay};
use crate::store::{Backend, Report, SqliteStore, Stats};

/// Store workers of a relay on PostgreSQL, each with a connection of its
/// own: one batch's round trips to the database need not wait for
/// another's. (SQLite takes one writer.)
const STORE_LANES: usize = 2;

/// Descriptors kept back for the store, the admin socket and logs.
const RESERVED_DESCRIPTORS: u64 = 64;

/// What a started relay reports once it accepts clients.
#[derive(Debug, Clone, Copy)]
pub struct Ready {
    /// The bound address.
    pub address: SocketAddr,
    /// The certificate pin clients must see.
    pub pin: CertificatePin,
    /// Most client connections.
    pub max_connections: usize,
}

/// How a relay is started.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServeOptions<'a> {
    /// A PostgreSQL URL: keep the relay's state there (and remember it in
    /// the data directory) instead of in the embedded store.
    pub store: Option<&'a str>,
    /// Serve Prometheus metrics on this address.
    pub metrics: Option<&'a str>,
}

/// Opens (creating on first start) `data`, binds `listen` (and the metrics
/// address, if given), calls `ready`, and serves until `shutdown`
/// resolves. Waits until every accepted send is durable before returning.
pub async fn serve(
    data: &Path,
    listen: &str,
    options: ServeOptions<'_>,
    ready: impl FnOnce(Ready),
    shutdown: impl Future<Output = ()>,
) -> Result<(), DataDirError> {
    let dir = DataDir::create(data)?;
    let config = dir.config()?;
    let tls = dir.tls()?;
    let backend = match options.store {
        Some(url) => dir.postgres_store(url)?,
        None => dir.backend()?,
    };
    tracing::info!(store = %backend.describe(), "opening the store");
    let hub = Arc::new(Hub::default());
    let pushes = Arc::clone(&hub);
    let counters = Arc::new(Metrics::default());
    let mut listener_thread = None;
    let (handle, worker, checkpoints) = match &backend {
        Backend::Sqlite(path) => {
            let path = path.clone();
            let store = SqliteStore::open(&path)?;
            store.disable_auto_checkpoint()?;
            let checkpoints = spawn_checkpointer(SqliteStore::open(&path)?)?;
            let (handle, worker) = crate::actor::spawn(
                move || Ok(store),
                move |queued| pushes.push(queued),
                Arc::clone(&counters),
            )?;
            (handle, worker, Some(checkpoints))
        }
        Backend::Postgres(target) => {
            // This relay's name in the notes relays send each other.
            let node: u64 = rand::random();
            listener_thread =
                Some(crate::cluster::Listener::spawn((**target).clone(), node, Arc::clone(&hub))?);
            let target = (**target).clone();
            let (handle, worker) = crate::actor::spawn_lanes(
                STORE_LANES,
                move || crate::store::PostgresStore::connect_as(&target, node),
                move |queued| pushes.push(queued),
                Arc::clone(&counters),
            )?;
            (handle, worker, None)
        }
    };
    // The database answered: from now on this directory names it.
    if let Some(url) = options.store {
        dir.remember_store(url)?;
    }
    let opening = backend.clone();
    let reader = crate::actor::spawn_reader(move || opening.open())?;
    // Tokens issued by one relay of a cluster are spent at another: on a
    // shared store, the secret they come from is kept there.
    let token_secret = match &backend {
        Backend::Sqlite(_) => dir.token_secret()?,
        Backend::Postgres(target) => {
            let target = (**target).clone();
            tokio::task::spawn_blocking(move || {
                crate::store::PostgresStore::connect(&target)?.shared_secret("token")
            })
            .await
            .map_err(std::io::Error::other)??
        }
    };
    let listener = TcpListener::bind(listen).await?;
    let metrics = match options.metrics {
        Some(address) => {
            let listener = crate::metrics::bind(address)
                .await
                .map_err(|error| DataDirError::Metrics { address: address.to_owned(), error })?;
            let source = Source {
                metrics: Arc::clone(&counters),
                hub: Arc::clone(&hub),
                store: {
                    let opening = backend.clone();
                    crate::actor::spawn_reader(move || opening.open())?
                },
                last: std::sync::Mutex::new(None),
            };
            tracing::info!(address = %listener.local_addr()?, "metrics served");
            Some(tokio::spawn(crate::metrics::serve(listener, Arc::new(source))))
        }
        None => None,
    };
    let address = listener.local_addr()?;
    std::fs::write(dir.address_file(), address.to_string())?;
    let max_connections = match config.max_connections {
        0 => descriptor_capacity(),
        configured => configured,
    };
    let relay = Relay {
        listener,
        tls: tls.server_config()?,
        pin: tls.pin(),
        config,
        store: handle,
        reader,
        hub,
        admin_socket: Some(dir.admin_socket()),
        max_connections,
        metrics: counters,
        token_secret,
    };
    tracing::info!(max_connections, "relay ready");
    ready(Ready { address, pin: tls.pin(), max_connections });
    relay.run(shutdown).await?;
    if let Some(metrics) = metrics {
        metrics.abort();
    }
    // The relay dropped its store handle; wait for the last batch to be durable.
    tokio::task::spawn_blocking(move || worker.join()).await.map_err(std::io::Error::other)?;
    if let Some(checkpoints) = checkpoints {
        checkpoints.stop();
    }
    if let Some(listener) = listener_thread {
        tokio::task::spawn_blocking(move || listener.stop()).await.map_err(std::io::Error::other)?;
    }
    Ok(())
}

/// How often the checkpointer copies the WAL into the database.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(500);

struct Checkpointer {
    stop: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Checkpointer {
    fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

/// Checkpoints on a thread and connection of its own, so the store worker
/// never pays for them inside a batch.
fn spawn_checkpointer(store: SqliteStore) -> std::io::Result<Checkpointer> {
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::Builder::new().name("hush-checkpoint".into()).spawn(move || {
        while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_INTERVAL)
        {
            if let Err(error) = store.checkpoint_passive() {
                tracing::warn!(%error, "checkpoint failed");
            }
        }
        let _ = store.checkpoint();
    })?;
    Ok(Checkpointer { stop, thread })
}

/// Raises the soft descriptor limit to the hard one and returns how many
/// connections fit.
fn descriptor_capacity() -> usize {
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    usize::try_from(limit.saturating_sub(RESERVED_DESCRIPTORS).max(16)).unwrap_or(usize::MAX)
}

/// Mints `count` invites, each good for `uses` registrations until `expires`
/// from now. `address` overrides the address the relay last listened on.
pub fn create_invites(
    data: &Path,
    count: u32,
    uses: u32,
    expires: Duration,
    address: Option<&str>,
) -> Result<Vec<Invite>, DataDirError> {
    let dir = DataDir::existing(data)?;
    let pin = dir.tls()?.pin();
    let address = match address {
        Some(address) => address.to_owned(),
        None => std::fs::read_to_string(dir.address_file()).unwrap_or_else(|_| "127.0.0.1:7443".to_owned()),
    };
    let mut store = dir.store()?;
    let deadline = now().saturating_add(expires.as_secs());
    let mut invites = Vec::new();
    for _ in 0..count {
        let mut secret = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let code = BASE32_NOPAD.encode(&secret).to_ascii_lowercase();
        let hash: [u8; 32] = Sha256::digest(code.as_bytes()).into();
        store.add_invite(&hash, uses, deadline)?;
        invites.push(Invite { address: address.trim().to_owned(), pin, code });
    }
    Ok(invites)
}

/// Deactivates `account`: locked out, mailbox and key packages deleted, live
/// connections closed. Returns false if the account is unknown.
pub fn deactivate(data: &Path, account: &AccountId) -> Result<bool, DataDirError> {
    let dir = DataDir::existing(data)?;
    let known = dir.store()?.deactivate(account, now())?;
    if known {
        tell_running_relay(&dir, &format!("close {account}\n"));
    }
    Ok(known)
}

/// Pre-enrols accounts without invites: each is an identity key and the
/// SHA-256 of its wipe secret, as a device exports them (for handing out
/// prepared devices, and for the growth benchmark). Returns how many were
/// new; already known keys are skipped.
pub fn provision(
    data: &Path,
    accounts: &[(hush_proto::IdentityKey, [u8; 32])],
) -> Result<usize, DataDirError> {
    let dir = DataDir::existing(data)?;
    let mut store = dir.store()?;
    let mut added = 0;
    for chunk in accounts.chunks(10_000) {
        added += store.provision(chunk, now())?;
    }
    Ok(added)
}

/// A report as the operator sees it.
#[derive(Debug, Clone)]
pub struct CheckedReport {
    /// The report.
    pub report: Report,
    /// Whether its signature still verifies against the account's identity
    /// key (it did when it arrived; this checks the row was not altered).
    pub verified: bool,
}

impl std::ops::Deref for CheckedReport {
    type Target = Report;

    fn deref(&self) -> &Report {
        &self.report
    }
}

/// The reported messages waiting for the operator, oldest first, each
/// checked again against its account's identity key.
pub fn reports(data: &Path) -> Result<Vec<CheckedReport>, DataDirError> {
    let mut store = DataDir::existing(data)?.store()?;
    let mut checked = Vec::new();
    for report in store.reports()? {
        let key = store.account(&report.account)?.map(|record| record.identity_key);
        let message = hush_proto::content_signature_message(&report.content);
        let verified = key.is_some_and(|key| {
            ed25519_dalek::VerifyingKey::from_bytes(&key.0).is_ok_and(|key| {
                key.verify_strict(&message, &ed25519_dalek::Signature::from_bytes(&report.signature)).is_ok()
            })
        });
        checked.push(CheckedReport { report, verified });
    }
    Ok(checked)
}

/// Deletes a report the operator has dealt with; false if there is none
/// with this number.
pub fn dismiss_report(data: &Path, id: u64) -> Result<bool, DataDirError> {
    Ok(DataDir::existing(data)?.store()?.dismiss_report(id)?)
}

/// Counts for the operator.
pub fn stats(data: &Path) -> Result<Stats, DataDirError> {
    Ok(DataDir::existing(data)?.store()?.stats()?)
}

fn tell_running_relay(dir: &DataDir, command: &str) {
    use std::io::{Read, Write};
    let Ok(mut socket) = std::os::unix::net::UnixStream::connect(dir.admin_socket()) else { return };
    let _ = socket.set_read_timeout(Some(Duration::from_secs(5)));
    if socket.write_all(command.as_bytes()).is_ok() {
        let mut reply = [0u8; 64];
        let _ = socket.read(&mut reply);
    }
}

//! The accept loop, the admin socket and the retention purge. The listener
//! and the shutdown signal come in as arguments, so tests run many relays on
//! port 0 at once.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hush_proto::{AccountId, CertificatePin};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{watch, Semaphore};
use zeroize::Zeroizing;

use crate::actor::{ReadHandle, StoreHandle};
use crate::config::RelayConfig;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::store::UnixSeconds;
use crate::tokens::TokenDesk;

/// How often expired payloads are purged.
const PURGE_INTERVAL: Duration = Duration::from_secs(5);
/// How long shutdown waits for connections to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// State shared by every connection.
pub(crate) struct Shared {
    pub(crate) store: StoreHandle,
    pub(crate) reader: ReadHandle,
    pub(crate) hub: Arc<Hub>,
    pub(crate) pin: CertificatePin,
    pub(crate) config: RelayConfig,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) tokens: TokenDesk,
}

impl Shared {
    pub(crate) fn now(&self) -> UnixSeconds {
        now()
    }

    /// Arrival and expiry times for a payload with the given time-to-live
    /// (0, or anything longer than retention, means the retention limit).
    pub(crate) fn expiry(&self, ttl_secs: u32) -> (UnixSeconds, UnixSeconds) {
        let now = self.now();
        let retention = self.config.retention_secs;
        let ttl = match u64::from(ttl_secs) {
            0 => retention,
            ttl => ttl.min(retention),
        };
        (now, now.saturating_add(ttl))
    }
}

pub(crate) fn now() -> UnixSeconds {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Everything a running relay needs.
pub struct Relay {
    /// Where clients connect.
    pub listener: TcpListener,
    /// TLS server configuration.
    pub tls: Arc<rustls::ServerConfig>,
    /// The certificate pin (bound into login signatures).
    pub pin: CertificatePin,
    /// Operator settings.
    pub config: RelayConfig,
    /// The store worker's handle.
    pub store: StoreHandle,
    /// The mailbox reader's handle (see [`crate::actor::spawn_reader`]).
    pub reader: ReadHandle,
    /// Live connections (the store worker pushes stored payloads to it).
    pub hub: Arc<Hub>,
    /// Where the admin socket goes (None: no admin socket).
    pub admin_socket: Option<PathBuf>,
    /// Most client connections.
    pub max_connections: usize,
    /// The counters (shared with the store worker and the metrics endpoint).
    pub metrics: Arc<Metrics>,
    /// The secret send tokens are derived from (`token.key`).
    pub token_secret: Zeroizing<[u8; 32]>,
}

impl Relay {
    /// Serves until `shutdown` resolves, then stops accepting, tells clients,
    /// and waits (bounded) for in-flight requests to finish.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        let tokens = TokenDesk::new(self.token_secret, self.config.tokens_per_day);
        let shared = Arc::new(Shared {
            store: self.store,
            reader: self.reader,
            hub: self.hub,
            pin: self.pin,
            config: self.config,
            metrics: self.metrics,
            tokens,
        });
        let (stop, stopped) = watch::channel(false);
        let admin = match &self.admin_socket {
            Some(path) => Some(tokio::spawn(admin_loop(bind_admin(path)?, Arc::clone(&shared)))),
            None => None,
        };
        let purge = tokio::spawn(purge_loop(Arc::clone(&shared)));
        let tls = self.tls;
        let slots = Arc::new(Semaphore::new(self.max_connections));
        let addresses = PerAddress::new(shared.config.max_connections_per_address);
        let mut tasks = tokio::task::JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = self.listener.accept() => {
                    let (stream, _) = match accepted {
                        Ok(accepted) => accepted,
                        Err(error) => {
                            tracing::warn!(%error, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    // Past a limit, the connection is closed before TLS: a
                    // flood costs the relay no handshake.
                    let slot = Arc::clone(&slots).try_acquire_owned().ok();
                    let per_address = addresses.admit(&stream);
                    let (Some(slot), Some(per_address)) = (slot, per_address) else {
                        shared.metrics.connection_refused();
                        drop(stream);
                        continue;
                    };
                    shared.metrics.connection_accepted();
                    let connection =
                        crate::connection::serve(Arc::clone(&shared), Arc::clone(&tls), stream, stopped.clone());
                    tasks.spawn(async move {
                        connection.await;
                        drop((slot, per_address));
                    });
                }
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                _ = &mut shutdown => break,
            }
        }
        tracing::info!(connections = tasks.len(), "shutting down");
        drop(self.listener);
        let _ = stop.send(true);
        let _ =
            tokio::time::timeout(DRAIN_TIMEOUT, async { while tasks.join_next().await.is_some() {} }).await;
        tasks.abort_all();
        purge.abort();
        if let Some(admin) = admin {
            admin.abort();
        }
        if let Some(path) = &self.admin_socket {
            let _ = std::fs::remove_file(path);
        }
        Ok(())
    }
}

async fn purge_loop(shared: Arc<Shared>) {
    let mut interval = tokio::time::interval(PURGE_INTERVAL);
    loop {
        interval.tick().await;
        if let Ok(count) = shared.store.purge_expired(now()).await {
            if count > 0 {
                tracing::info!(count, "purged expired payloads");
            }
        }
    }
}

fn bind_admin(path: &std::path::Path) -> std::io::Result<UnixListener> {
    if path.exists() {
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// The admin socket: the operator's commands change the store themselves and
/// then tell the running relay what to do about live connections.
async fn admin_loop(listener: UnixListener, shared: Arc<Shared>) {
    while let Ok((stream, _)) = listener.accept().await {
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let reply = admin_command(&shared, &line);
                if write.write_all(reply.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
    }
}

fn admin_command(shared: &Shared, line: &str) -> String {
    let mut words = line.split_whitespace();
    match (words.next(), words.next()) {
        (Some("close"), Some(account)) => match account.parse::<AccountId>() {
            Ok(account) => format!("ok {}\n", shared.hub.close(&account)),
            Err(_) => "error bad account id\n".to_owned(),
        },
        (Some("connections"), None) => format!("ok {}\n", shared.hub.connections()),
        _ => "error unknown command\n".to_owned(),
    }
}

/// What one "address" is for the per-address limit: an IPv4 address (also
/// when it reaches an IPv6 listener as `::ffff:a.b.c.d`), or an IPv6 /64,
/// the least a single host or subscriber is given.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            octets[8..].fill(0);
            IpAddr::from(octets)
        }
        v4 => v4,
    }
}

/// Live connections per source address.
type Counts = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// Connections per source IP address, capped.
struct PerAddress {
    limit: usize,
    counts: Counts,
}

/// One admitted connection; counts off its address when dropped.
struct AddressSlot {
    address: IpAddr,
    counts: Counts,
}

impl PerAddress {
    fn new(limit: usize) -> Self {
        Self { limit, counts: Arc::default() }
    }

    /// A slot for `stream`'s source address, unless it is at the limit (an
    /// address that cannot be read counts as one address of its own).
    fn admit(&self, stream: &tokio::net::TcpStream) -> Option<AddressSlot> {
        let address = stream.peer_addr().map_or(IpAddr::from([0, 0, 0, 0]), |peer| address_key(peer.ip()));
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(address).or_insert(0);
        if self.limit != 0 && *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(AddressSlot { address, counts: Arc::clone(&self.counts) })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn one_ipv6_host_or_a_mapped_ipv4_address_counts_as_one_address() {
        let key = |text: &str| address_key(text.parse().unwrap());
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:bbbb::2"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:192.0.2.7"), key("192.0.2.7"));
        assert_ne!(key("192.0.2.7"), key("192.0.2.8"));
    }
}

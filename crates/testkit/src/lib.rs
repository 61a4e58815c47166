//! Test-only helpers for Hush: a real relay in-process on port 0 with its
//! own temporary data directory, shut down when dropped.
//!
//! Key design decision: nothing here fakes the relay; tests get the same
//! `hush_relay::admin::serve` the binary runs, so many relays can run at once.
//!
//! [`simulation`] is the group simulation that the test command runs over
//! seeded schedules and the fuzzer over schedules read from its inputs.

pub mod simulation;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tokio::sync::oneshot;

/// A relay running in a background thread.
pub struct TestRelay {
    /// Where it listens.
    pub address: SocketAddr,
    /// Its certificate pin (hex).
    pub pin: String,
    data: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestRelay {
    /// Starts a relay on 127.0.0.1 port 0.
    pub fn start() -> std::io::Result<Self> {
        Self::start_with(&hush_relay::RelayConfig::default())
    }

    /// Starts a relay with these operator settings.
    pub fn start_with(config: &hush_relay::RelayConfig) -> std::io::Result<Self> {
        Self::start_inner(config, None, None)
    }

    /// Starts a relay on the PostgreSQL database at `store`; given
    /// `joining`, it joins that relay's cluster: its data directory starts
    /// with copies of that relay's certificate, key and token secret, as
    /// an operator's would.
    pub fn start_on(store: &str, joining: Option<&TestRelay>) -> std::io::Result<Self> {
        Self::start_inner(&hush_relay::RelayConfig::default(), Some(store.to_owned()), joining)
    }

    fn start_inner(
        config: &hush_relay::RelayConfig,
        store: Option<String>,
        joining: Option<&TestRelay>,
    ) -> std::io::Result<Self> {
        let data = tempfile::tempdir()?;
        let path: PathBuf = data.path().join("relay");
        std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700).create(&path)?;
        let settings = serde_json::to_string_pretty(config).map_err(std::io::Error::other)?;
        std::fs::write(path.join("relay.json"), settings)?;
        if let Some(first) = joining {
            for file in hush_relay::DataDir::CLUSTER_FILES {
                std::fs::copy(first.data().join(file), path.join(file))?;
            }
        }
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let Ok(runtime) =
                tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()
            else {
                return;
            };
            let result = runtime.block_on(hush_relay::admin::serve(
                &path,
                "127.0.0.1:0",
                hush_relay::admin::ServeOptions { store: store.as_deref(), metrics: None },
                |ready| {
                    let _ = ready_tx.send((ready.address, ready.pin.to_string()));
                },
                async {
                    let _ = stopped.await;
                },
            ));
            if let Err(error) = result {
                eprintln!("test relay failed: {error}");
            }
        });
        let (address, pin) = ready_rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .map_err(|_| std::io::Error::other("relay did not start"))?;
        Ok(Self { address, pin, data, stop: Some(stop), thread: Some(thread) })
    }

    /// The relay's data directory.
    pub fn data(&self) -> PathBuf {
        self.data.path().join("relay")
    }

    /// Mints one single-use invite string (on a thread of its own: a
    /// PostgreSQL store's client must not run on an async runtime).
    pub fn invite(&self) -> std::io::Result<String> {
        self.invite_for(&self.address.to_string())
    }

    /// Mints one single-use invite that lists `addresses` (a cluster's
    /// relays, comma-separated).
    pub fn invite_for(&self, addresses: &str) -> std::io::Result<String> {
        let (data, address) = (self.data(), addresses.to_owned());
        let invites = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    hush_relay::admin::create_invites(
                        &data,
                        1,
                        1,
                        std::time::Duration::from_secs(3600),
                        Some(&address),
                    )
                })
                .join()
        })
        .map_err(|_| std::io::Error::other("invite thread panicked"))?
        .map_err(std::io::Error::other)?;
        invites.first().map(ToString::to_string).ok_or_else(|| std::io::Error::other("no invite"))
    }

    /// A fresh directory for a client profile, inside the relay's temp dir.
    pub fn profile_dir(&self, name: &str) -> PathBuf {
        self.data.path().join("profiles").join(name)
    }

    /// The temp root (for scans).
    pub fn root(&self) -> &Path {
        self.data.path()
    }
}

impl Drop for TestRelay {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

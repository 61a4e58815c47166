//! The relay's data directory: settings, TLS identity, store and the admin
//! socket, all in one place the operator owns.

use std::path::{Path, PathBuf};

use crate::config::RelayConfig;
use crate::store::{Backend, Store, StoreError};
use crate::tls::{TlsError, TlsIdentity};

/// Errors opening the data directory.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// A file could not be read or written.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The TLS identity could not be loaded or made.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The store could not be opened.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The metrics address could not be bound.
    #[error("cannot serve metrics on {address}: {error}")]
    Metrics {
        /// The address asked for.
        address: String,
        /// Why not.
        error: std::io::Error,
    },
}

/// The file naming a relay's PostgreSQL database.
const STORE_FILE: &str = "store.url";

/// The paths inside a relay data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// The files every relay of a cluster must share, copied from the
    /// first node's data directory into each new one: the TLS certificate
    /// and key (clients pin the certificate). What else they share (the
    /// send-token secret) is in the database.
    pub const CLUSTER_FILES: [&'static str; 2] = ["cert.pem", "key.pem"];

    /// Opens `root`, creating it (mode 0700) if needed.
    pub fn create(root: &Path) -> Result<Self, DataDirError> {
        use std::os::unix::fs::DirBuilderExt;
        if !root.exists() {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(root)?;
        }
        Ok(Self { root: root.to_path_buf() })
    }

    /// Opens an existing data directory (for admin commands).
    pub fn existing(root: &Path) -> Result<Self, DataDirError> {
        if !root.join("relay.db").exists() && !root.join(STORE_FILE).exists() {
            return Err(DataDirError::Io(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "{} is not a relay data directory (run `hush serve --data DIR` once)",
                    root.display()
                ),
            )));
        }
        Ok(Self { root: root.to_path_buf() })
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Settings, creating the defaults on first start.
    pub fn config(&self) -> Result<RelayConfig, DataDirError> {
        Ok(RelayConfig::load_or_create(&self.root.join("relay.json"))?)
    }

    /// The TLS identity, made on first start.
    pub fn tls(&self) -> Result<TlsIdentity, DataDirError> {
        Ok(TlsIdentity::load_or_create(&self.root)?)
    }

    /// Where this relay's state is: the PostgreSQL database named in
    /// `store.url` if there is one (a relay of a cluster), else the
    /// embedded `relay.db`.
    pub fn backend(&self) -> Result<Backend, DataDirError> {
        match std::fs::read_to_string(self.root.join(STORE_FILE)) {
            Ok(url) => Ok(Backend::postgres(url.trim())?),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                Ok(Backend::Sqlite(self.root.join("relay.db")))
            }
            Err(error) => Err(error.into()),
        }
    }

    /// The PostgreSQL database at `url`, for this relay. Refuses a
    /// directory that already holds an embedded store, whose data would
    /// silently be left behind.
    pub fn postgres_store(&self, url: &str) -> Result<Backend, DataDirError> {
        let backend = Backend::postgres(url)?;
        if self.root.join("relay.db").exists() {
            return Err(DataDirError::Io(std::io::Error::other(format!(
                "{} holds an embedded store (relay.db); use a new data directory for a PostgreSQL relay",
                self.root.display()
            ))));
        }
        Ok(backend)
    }

    /// Records the PostgreSQL database this relay (and `hush admin` on this
    /// directory) uses from now on, in `store.url` (mode 0600: the URL may
    /// hold a password).
    pub fn remember_store(&self, url: &str) -> Result<(), DataDirError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        // A new file, made 0600 before it holds anything, then renamed
        // over the old one: never a moment with the URL readable by others
        // or half written.
        let path = self.root.join(STORE_FILE);
        let fresh = self.root.join(format!("{STORE_FILE}.new"));
        let _ = std::fs::remove_file(&fresh);
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&fresh)?;
        file.write_all(url.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&fresh, &path)?;
        Ok(())
    }

    /// Opens a connection of its own to the store. PostgreSQL's client
    /// blocks: call this off the async runtime.
    pub fn store(&self) -> Result<Box<dyn Store>, DataDirError> {
        Ok(self.backend()?.open()?)
    }

    /// The secret send tokens are derived from, made on first start
    /// (`token.key`; a relay on a shared PostgreSQL store keeps it in the
    /// database instead, for every relay of the cluster).
    pub fn token_secret(&self) -> Result<zeroize::Zeroizing<[u8; 32]>, DataDirError> {
        Ok(crate::tokens::TokenDesk::load_or_create_secret(&self.root.join("token.key"))?)
    }

    /// The path of the admin socket a running relay listens on.
    pub fn admin_socket(&self) -> PathBuf {
        self.root.join("admin.sock")
    }

    /// The address the relay last listened on (for invites).
    pub fn address_file(&self) -> PathBuf {
        self.root.join("address")
    }
}

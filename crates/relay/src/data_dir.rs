//! The relay's data directory: settings, TLS identity, store and the admin
//! socket, all in one place the operator owns.

use std::path::{Path, PathBuf};

use crate::config::RelayConfig;
use crate::store::{SqliteStore, StoreError};
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

/// The paths inside a relay data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
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
        if !root.join("relay.db").exists() {
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

    /// Opens the store.
    pub fn store(&self) -> Result<SqliteStore, DataDirError> {
        Ok(SqliteStore::open(&self.root.join("relay.db"))?)
    }

    /// The secret send tokens are derived from, made on first start
    /// (`token.key`; every relay of a cluster needs the same one).
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

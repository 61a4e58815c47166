//! The relay's operator settings, kept as `relay.json` in the data directory.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Operator settings. Missing fields take their defaults.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct RelayConfig {
    /// Seconds an undelivered payload is kept (default 14 days).
    pub retention_secs: u64,
    /// Most simultaneous client connections (0: as many as the file
    /// descriptor limit allows).
    pub max_connections: usize,
    /// Most simultaneous connections from one IPv4 address or IPv6 /64 (0:
    /// no limit).
    /// Carrier-grade NAT puts many users behind one address: raise it
    /// rather than lower it for a large mobile user base.
    pub max_connections_per_address: usize,
    /// Sustained frames per second one connection may send.
    pub frames_per_sec: u32,
    /// Frames one connection may send in a burst.
    pub frame_burst: u32,
    /// Anonymous send tokens one account may get per day.
    pub tokens_per_day: u32,
    /// Seconds a client has to finish TLS, WebSocket and login, all together.
    pub handshake_timeout_secs: u64,
    /// Seconds a message sent in fragments may take from its first
    /// fragment to its last (a client that trickles one in holds memory
    /// meanwhile); past them the connection ends.
    pub fragmented_message_timeout_secs: u64,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            retention_secs: 14 * 24 * 3600,
            max_connections: 0,
            max_connections_per_address: 256,
            frames_per_sec: 2_000,
            frame_burst: 4_000,
            tokens_per_day: 2_000,
            handshake_timeout_secs: 15,
            // 4 MiB at 300 kbit/s takes about 110 s.
            fragmented_message_timeout_secs: 120,
        }
    }
}

impl RelayConfig {
    /// Reads `path`, writing the defaults there first if it does not exist.
    pub fn load_or_create(path: &Path) -> std::io::Result<Self> {
        if !path.exists() {
            let defaults = serde_json::to_string_pretty(&Self::default()).map_err(std::io::Error::other)?;
            std::fs::write(path, defaults + "\n")?;
        }
        let text = std::fs::read_to_string(path)?;
        Self::from_json(&text).map_err(|error| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {error}", path.display()))
        })
    }

    /// Parses the settings file's text (`relay.json`).
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The retention limit.
    pub fn retention(&self) -> Duration {
        Duration::from_secs(self.retention_secs)
    }

    /// The handshake timeout.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.handshake_timeout_secs.max(1))
    }

    /// The fragmented-message timeout.
    pub fn fragmented_message_timeout(&self) -> Duration {
        Duration::from_secs(self.fragmented_message_timeout_secs.max(1))
    }
}

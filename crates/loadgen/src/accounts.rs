//! Simulated accounts: an Ed25519 identity each, registered with an invite
//! and logged in exactly as the real client does.

use std::net::IpAddr;

use anyhow::{bail, Result};
use ed25519_dalek::{Signer, SigningKey};
use hush_client::{handshake, Admission, Connection, Credentials, FrameReceiver, FrameSender};
use hush_proto::{auth_message, CertificatePin, IdentityKey};

use crate::relay::RelayUnderTest;

/// One simulated account.
pub struct Account {
    key: SigningKey,
}

/// A logged-in connection, split for pipelining.
pub type Link = (FrameSender, FrameReceiver);

/// Loopback source addresses, so the load is not limited by one address's
/// ephemeral ports.
pub fn source_address(index: usize) -> IpAddr {
    IpAddr::from([127, 0, 0, 1 + (index % 8) as u8])
}

impl Account {
    /// A fresh identity.
    pub fn generate() -> Self {
        Self { key: SigningKey::generate(&mut rand::rngs::OsRng) }
    }

    /// Connects and runs the client's handshake with this identity.
    async fn admit(&self, relay: &RelayUnderTest, source: IpAddr, credentials: Credentials) -> Result<Link> {
        let mut connection = Connection::open_from(&relay.address, relay.pin, source).await?;
        let sign = |purpose, nonce: &[u8; 32], pin: &CertificatePin| {
            Ok(self.key.sign(&auth_message(purpose, nonce, pin)).to_bytes())
        };
        match handshake(&mut connection, &relay.pin, credentials, sign).await? {
            Admission::Ready { .. } => Ok(connection.split()),
            Admission::WipeOrder(_) => bail!("a simulated account was ordered to wipe"),
        }
    }

    /// Registers with `invite_code` and stays logged in.
    pub async fn register(&self, relay: &RelayUnderTest, invite_code: &str, source: IpAddr) -> Result<Link> {
        let credentials = Credentials::Register {
            invite_code: invite_code.to_owned(),
            identity_key: IdentityKey(self.key.verifying_key().to_bytes()),
            wipe_hash: rand::random(),
        };
        self.admit(relay, source, credentials).await
    }
}

/// Registers `count` accounts, at most `parallel` at a time; returns them
/// with their (still open) connections.
pub async fn provision(
    relay: &RelayUnderTest,
    count: usize,
    parallel: usize,
) -> Result<Vec<(Account, Link)>> {
    let invite = relay.invite(count.max(1))?;
    let mut done = Vec::with_capacity(count);
    let mut next = 0;
    while next < count {
        let batch = (next..(next + parallel).min(count)).map(|i| {
            let code = invite.code.clone();
            async move {
                let account = Account::generate();
                let link = account.register(relay, &code, source_address(i)).await?;
                Ok::<_, anyhow::Error>((account, link))
            }
        });
        for result in futures_util::future::join_all(batch).await {
            done.push(result?);
        }
        next += parallel;
    }
    Ok(done)
}

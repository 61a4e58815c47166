//! Queues and sealed sends (protocol part 7), as the real client uses them:
//! send tokens from a logged-in connection, a sealed connection that spends
//! them, queues made on it, and connections that prove queues and receive.

use std::net::IpAddr;

use anyhow::{anyhow, bail, Result};
use ed25519_dalek::{Signer, SigningKey};
use hush_client::Connection;
use hush_proto::limits::{MAX_QUEUES_PER_SUBSCRIBE, MAX_TOKENS_PER_REQUEST};
use hush_proto::tokens::{day_of, Token, TokenRequest};
use hush_proto::{
    queue_auth_message, Capability, ClientFrame, QueueId, RelayFrame, SEALED_REQUESTS_PER_TOKEN,
};

use crate::accounts::Link;
use crate::relay::RelayUnderTest;

/// A queue this load generator made, with what receiving from it and
/// writing to it take.
pub struct Inbox {
    pub queue: QueueId,
    pub owner: SigningKey,
    pub secret: [u8; 32],
}

impl Inbox {
    pub fn capability(&self) -> Capability {
        Capability { queue: self.queue, secret: self.secret }
    }
}

/// Tokens a connection needs to send `messages` (and one more request).
pub fn tokens_for(messages: usize) -> usize {
    messages / SEALED_REQUESTS_PER_TOKEN as usize + 1
}

/// `count` send tokens, asked for on a logged-in connection.
pub async fn tokens((sender, receiver): &mut Link, count: usize) -> Result<Vec<Token>> {
    let mut tokens = Vec::with_capacity(count);
    let mut request = 1_000_000;
    while tokens.len() < count {
        let batch = (count - tokens.len()).min(MAX_TOKENS_PER_REQUEST);
        let asked = TokenRequest::new(batch, &mut rand::rngs::OsRng);
        request += 1;
        sender.send(&ClientFrame::IssueTokens { request, blinded: asked.blinded().to_vec() }).await?;
        let issued = loop {
            match receiver.recv().await? {
                RelayFrame::Tokens { request: r, issued } if r == request => break issued,
                RelayFrame::Rejected { code, .. } => bail!("tokens refused: {code:?}"),
                _ => {}
            }
        };
        let today = day_of(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs());
        tokens.extend(asked.finish(&issued, today)?);
    }
    Ok(tokens)
}

/// A sealed connection to relay `node` of the cluster that spent every
/// token given (its budget is their sum).
pub async fn sealed(relay: &RelayUnderTest, node: usize, tokens: Vec<Token>, source: IpAddr) -> Result<Link> {
    let mut connection = Connection::open_from(relay.node(node), relay.pin, source).await?;
    hush_client::hello(&mut connection).await?;
    let count = tokens.len() as u32;
    for (request, token) in (0..).zip(tokens) {
        connection.send(&ClientFrame::Spend { request, token }).await?;
    }
    let mut spent = 0;
    while spent < count {
        match connection.recv().await? {
            RelayFrame::Accepted { .. } => spent += 1,
            other => bail!("a token was refused: {other:?}"),
        }
    }
    Ok(connection.split())
}

/// Makes `count` queues on a sealed connection, pipelined.
pub async fn make_inboxes((sender, receiver): &mut Link, count: usize) -> Result<Vec<Inbox>> {
    let mut made: Vec<Option<Inbox>> = (0..count).map(|_| None).collect();
    let mut pending = Vec::with_capacity(count);
    for request in 0..count as u32 {
        let owner = SigningKey::generate(&mut rand::rngs::OsRng);
        let secret: [u8; 32] = rand::random();
        let frame = ClientFrame::CreateQueue {
            request: 2_000_000 + request,
            owner_key: owner.verifying_key().to_bytes(),
            write_hash: hush_proto::write_hash(&secret),
        };
        sender.send(&frame).await?;
        pending.push((owner, secret));
    }
    sender.flush().await?;
    let mut left = count;
    let mut pending: Vec<Option<(SigningKey, [u8; 32])>> = pending.into_iter().map(Some).collect();
    while left > 0 {
        match receiver.recv().await? {
            RelayFrame::QueueCreated { request, queue } => {
                let index = request.checked_sub(2_000_000).ok_or_else(|| anyhow!("a stray answer"))? as usize;
                let (owner, secret) =
                    pending.get_mut(index).and_then(Option::take).ok_or_else(|| anyhow!("a stray answer"))?;
                made[index] = Some(Inbox { queue, owner, secret });
                left -= 1;
            }
            other => bail!("a queue was not made: {other:?}"),
        }
    }
    Ok(made.into_iter().flatten().collect())
}

/// A connection to relay `node` of the cluster receiving from `inboxes`
/// (proved, delivery not started).
pub async fn receive_from(
    relay: &RelayUnderTest,
    node: usize,
    inboxes: &[&Inbox],
    source: IpAddr,
) -> Result<Link> {
    let mut connection = Connection::open_from(relay.node(node), relay.pin, source).await?;
    let nonce = hush_client::hello(&mut connection).await?;
    for (request, chunk) in (0..).zip(inboxes.chunks(MAX_QUEUES_PER_SUBSCRIBE)) {
        let proofs = chunk
            .iter()
            .map(|inbox| {
                (
                    inbox.queue,
                    inbox.owner.sign(&queue_auth_message(&nonce, &relay.pin, &inbox.queue)).to_bytes(),
                )
            })
            .collect();
        connection.send(&ClientFrame::SubscribeQueues { request, proofs }).await?;
        match connection.recv().await? {
            RelayFrame::Accepted { request: r, .. } if r == request => {}
            other => bail!("queues were not proved: {other:?}"),
        }
    }
    Ok(connection.split())
}

//! Just enough MQTT 3.1.1 to drive Mosquitto the way the Hush scenarios
//! drive the relay: CONNECT with a persistent session, SUBSCRIBE at QoS 1,
//! PUBLISH at QoS 1 (each acknowledged with PUBACK), and PUBACK for what
//! arrives. Plain TCP on loopback: Mosquitto's fastest setting.

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpSocket;

const CONNECT: u8 = 0x10;
const CONNACK: u8 = 0x20;
const PUBLISH: u8 = 0x30;
const PUBACK: u8 = 0x40;
const SUBSCRIBE: u8 = 0x82;
const SUBACK: u8 = 0x90;
/// PUBLISH with QoS 1.
const PUBLISH_QOS1: u8 = PUBLISH | 0x02;
/// Largest packet accepted (the payloads here are a few hundred bytes).
const MAX_PACKET: usize = 1 << 20;

/// A packet from the broker.
pub enum Packet {
    /// A message for us; acknowledge `id` with [`Writer::puback`].
    Publish {
        /// Packet id (QoS 1).
        id: u16,
        /// The payload.
        payload: Vec<u8>,
    },
    /// The broker stored one of our publishes.
    Puback,
    /// Anything else (SUBACK, PINGRESP...).
    Other,
}

/// The reading half.
pub struct Reader {
    stream: BufReader<OwnedReadHalf>,
}

/// The writing half (buffered: call [`Writer::flush`]).
pub struct Writer {
    stream: BufWriter<OwnedWriteHalf>,
}

fn string(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&(text.len() as u16).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
}

fn length(out: &mut Vec<u8>, mut len: usize) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            return;
        }
    }
}

fn packet(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(kind);
    length(&mut out, body.len());
    out.extend_from_slice(body);
    out
}

/// Connects as `client_id` with a persistent session (clean session off),
/// from `source` (a loopback address, to spread connections).
pub async fn connect(address: &str, source: std::net::IpAddr, client_id: &str) -> Result<(Writer, Reader)> {
    let target: std::net::SocketAddr = address.parse().context("broker address")?;
    let socket = TcpSocket::new_v4()?;
    socket.bind(std::net::SocketAddr::new(source, 0))?;
    let stream = socket.connect(target).await.with_context(|| format!("connecting to {address}"))?;
    stream.set_nodelay(true)?;
    let (read, write) = stream.into_split();
    let mut writer = Writer { stream: BufWriter::new(write) };
    let mut reader = Reader { stream: BufReader::new(read) };
    let mut body = Vec::new();
    string(&mut body, "MQTT");
    body.push(4); // protocol level 3.1.1
    body.push(0x00); // flags: clean session off
    body.extend_from_slice(&600u16.to_be_bytes()); // keep-alive seconds
    string(&mut body, client_id);
    writer.stream.write_all(&packet(CONNECT, &body)).await?;
    writer.flush().await?;
    let (kind, body) = reader.packet().await?;
    if kind != CONNACK || body.get(1) != Some(&0) {
        bail!("the broker refused the connection (packet {kind:#x}, {body:?})");
    }
    Ok((writer, reader))
}

impl Writer {
    /// Subscribes to `topic` at QoS 1.
    pub async fn subscribe(&mut self, topic: &str) -> Result<()> {
        let mut body = 1u16.to_be_bytes().to_vec();
        string(&mut body, topic);
        body.push(1);
        self.stream.write_all(&packet(SUBSCRIBE, &body)).await?;
        self.flush().await
    }

    /// Queues a QoS 1 publish.
    pub async fn publish(&mut self, topic: &str, id: u16, payload: &[u8]) -> Result<()> {
        let mut body = Vec::with_capacity(topic.len() + payload.len() + 4);
        string(&mut body, topic);
        body.extend_from_slice(&id.to_be_bytes());
        body.extend_from_slice(payload);
        self.stream.write_all(&packet(PUBLISH_QOS1, &body)).await?;
        Ok(())
    }

    /// Queues a PUBACK.
    pub async fn puback(&mut self, id: u16) -> Result<()> {
        let [high, low] = id.to_be_bytes();
        self.stream.write_all(&[PUBACK, 2, high, low]).await?;
        Ok(())
    }

    /// Sends what is queued.
    pub async fn flush(&mut self) -> Result<()> {
        self.stream.flush().await?;
        Ok(())
    }

    /// Disconnects politely (the session stays on the broker).
    pub async fn disconnect(mut self) -> Result<()> {
        self.stream.write_all(&[0xe0, 0]).await?;
        self.flush().await
    }
}

impl Reader {
    async fn packet(&mut self) -> Result<(u8, Vec<u8>)> {
        let kind = self.stream.read_u8().await?;
        let mut len = 0usize;
        for shift in 0..4 {
            let byte = self.stream.read_u8().await?;
            len |= usize::from(byte & 0x7f) << (7 * shift);
            if byte & 0x80 == 0 {
                break;
            }
        }
        if len > MAX_PACKET {
            bail!("packet of {len} bytes from the broker");
        }
        let mut body = vec![0; len];
        self.stream.read_exact(&mut body).await?;
        Ok((kind, body))
    }

    /// The next packet.
    pub async fn next(&mut self) -> Result<Packet> {
        let (kind, body) = self.packet().await?;
        let id_at = |at: usize| -> Result<u16> {
            let bytes = body.get(at..at + 2).ok_or_else(|| anyhow!("short packet"))?;
            Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
        };
        Ok(match kind & 0xf0 {
            PUBLISH => {
                let topic_len = usize::from(id_at(0)?);
                let qos = (kind >> 1) & 0x03;
                let (id, start) =
                    if qos > 0 { (id_at(2 + topic_len)?, 4 + topic_len) } else { (0, 2 + topic_len) };
                Packet::Publish { id, payload: body.get(start..).unwrap_or_default().to_vec() }
            }
            PUBACK => Packet::Puback,
            SUBACK => Packet::Other,
            _ => Packet::Other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_length_uses_seven_bits_a_byte() {
        let mut out = Vec::new();
        length(&mut out, 321);
        assert_eq!(out, vec![0xc1, 0x02]);
        let mut out = Vec::new();
        length(&mut out, 127);
        assert_eq!(out, vec![0x7f]);
    }
}

//! Getting rid of an inbound message too large for the connection ("poison").
//!
//! rumqttc refuses a packet over its incoming limit by dropping the connection before
//! reading it (rumqttc `mqttbytes::check`), so it can never acknowledge it; with a
//! persistent session the broker sends the same message again on every reconnect — a
//! loop that also starves every command queued behind it. When that happens the driver
//! connects once more with the agent's client id and session on a connection of its own
//! (this module: a minimal MQTT 3.1.1 client, OASIS MQTT 3.1.1 §3.1 CONNECT, §3.3
//! PUBLISH, §3.4 PUBACK), reads what the broker delivers, streams each oversized PUBLISH
//! past without holding it in memory, acknowledges it (so the broker considers it
//! delivered, for good), and leaves every other message unacknowledged: the broker
//! delivers those again to the next rumqttc connection.

use crate::config::BrokerUrl;
use rumqttc::tokio_rustls::{rustls, TlsConnector};
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// One oversized message that was acknowledged and discarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Discarded {
    pub(super) topic: String,
    /// Its payload's size in bytes.
    pub(super) bytes: usize,
}

/// How to reach the broker as the agent.
pub(super) struct Access<'a> {
    pub(super) url: &'a BrokerUrl,
    pub(super) client_id: &'a str,
    pub(super) username: &'a str,
    pub(super) password: &'a str,
    pub(super) tls: Option<Arc<rustls::ClientConfig>>,
}

/// The broker delivers what it holds for the session right after CONNACK; this long
/// without a packet means it has nothing more.
const IDLE: Duration = Duration::from_secs(2);
/// The whole drain never takes longer than this.
const LIMIT: Duration = Duration::from_secs(30);

/// Connect as the agent, acknowledge and discard every PUBLISH whose payload is over
/// `max_payload` bytes, and disconnect cleanly.
pub(super) async fn drain(access: &Access<'_>, max_payload: usize) -> io::Result<Vec<Discarded>> {
    let addr = (access.url.host.as_str(), access.url.port);
    let tcp = tokio::time::timeout(IDLE * 5, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    match &access.tls {
        None => session(tcp, access, max_payload).await,
        Some(cfg) => {
            let name = rustls::pki_types::ServerName::try_from(access.url.host.clone())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let tls = TlsConnector::from(cfg.clone()).connect(name, tcp).await?;
            session(tls, access, max_payload).await
        }
    }
}

async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    access: &Access<'_>,
    max_payload: usize,
) -> io::Result<Vec<Discarded>> {
    s.write_all(&connect_packet(access)).await?;
    let (kind, len) = read_header(&mut s).await?;
    let mut connack = vec![0; len];
    s.read_exact(&mut connack).await?;
    // §3.2.2.3: return code 0 is "connection accepted".
    if kind >> 4 != 2 || connack.get(1) != Some(&0) {
        return Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!("broker refused the drain connection: {connack:?}"),
        ));
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(LIMIT, async {
        loop {
            let (kind, len) = match tokio::time::timeout(IDLE, read_header(&mut s)).await {
                Ok(h) => h?,
                Err(_) => return Ok::<(), io::Error>(()),
            };
            if kind >> 4 != 3 {
                skip(&mut s, len).await?;
                continue;
            }
            // §3.3.2: topic name (u16 length + UTF-8), then a packet id for QoS > 0.
            let qos = (kind >> 1) & 3;
            let tlen = usize::from(s.read_u16().await?);
            let mut topic = vec![0; tlen];
            s.read_exact(&mut topic).await?;
            let pkid = if qos > 0 {
                Some(s.read_u16().await?)
            } else {
                None
            };
            let payload = len
                .checked_sub(2 + tlen + if pkid.is_some() { 2 } else { 0 })
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad PUBLISH"))?;
            skip(&mut s, payload).await?;
            if payload <= max_payload {
                // A message the link can read itself: left unacknowledged, it comes back.
                continue;
            }
            if let Some(id) = pkid {
                // §3.4: PUBACK, remaining length 2, the packet id.
                let [hi, lo] = id.to_be_bytes();
                s.write_all(&[0x40, 0x02, hi, lo]).await?;
            }
            out.push(Discarded {
                topic: String::from_utf8_lossy(&topic).into_owned(),
                bytes: payload,
            });
        }
    })
    .await;
    // §3.14 DISCONNECT: a clean end; the session stays for the next connection.
    let _ = s.write_all(&[0xE0, 0x00]).await;
    let _ = s.shutdown().await;
    Ok(out)
}

/// Read and drop `n` bytes without holding them.
async fn skip<S: AsyncRead + Unpin>(s: &mut S, n: usize) -> io::Result<()> {
    let copied = tokio::io::copy(&mut s.take(n as u64), &mut tokio::io::sink()).await?;
    if copied < n as u64 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// The fixed header: packet type and flags, and the remaining length (§2.2.3: up to
/// four bytes, seven bits each, least significant first).
async fn read_header<S: AsyncRead + Unpin>(s: &mut S) -> io::Result<(u8, usize)> {
    let kind = s.read_u8().await?;
    let mut len = 0usize;
    for i in 0..4 {
        let b = s.read_u8().await?;
        len |= usize::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((kind, len));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "remaining length longer than 4 bytes",
    ))
}

/// CONNECT (§3.1) for the agent's session: clean session 0, no will (the will belongs to
/// the agent's own connection), keepalive 30 s.
fn connect_packet(a: &Access<'_>) -> Vec<u8> {
    fn string(v: &mut Vec<u8>, s: &[u8]) {
        v.extend_from_slice(&(s.len() as u16).to_be_bytes());
        v.extend_from_slice(s);
    }
    let mut flags = 0u8;
    let mut body = Vec::new();
    string(&mut body, b"MQTT");
    body.push(4); // protocol level 4 = 3.1.1
    let flags_at = body.len();
    body.push(0);
    body.extend_from_slice(&30u16.to_be_bytes());
    string(&mut body, a.client_id.as_bytes());
    if !a.username.is_empty() {
        flags |= 0x80;
        string(&mut body, a.username.as_bytes());
        flags |= 0x40;
        string(&mut body, a.password.as_bytes());
    }
    body[flags_at] = flags;
    let mut v = vec![0x10];
    let mut n = body.len();
    loop {
        let mut b = (n & 0x7F) as u8;
        n >>= 7;
        if n > 0 {
            b |= 0x80;
        }
        v.push(b);
        if n == 0 {
            break;
        }
    }
    v.extend_from_slice(&body);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_oversized_publish_is_acknowledged_unread_and_a_small_one_left_alone() {
        let (mut broker, agent) = tokio::io::duplex(64 * 1024);
        let url = BrokerUrl {
            tls: false,
            host: "127.0.0.1".into(),
            port: 1883,
        };
        let access = Access {
            url: &url,
            client_id: "gw-1",
            username: "",
            password: "",
            tls: None,
        };
        let fake = async move {
            let (kind, len) = read_header(&mut broker).await.unwrap();
            assert_eq!(kind, 0x10);
            let mut connect = vec![0; len];
            broker.read_exact(&mut connect).await.unwrap();
            assert_eq!(&connect[..6], b"\x00\x04MQTT");
            assert_eq!(connect[7] & 0x02, 0, "clean session must be 0");
            broker.write_all(&[0x20, 0x02, 0x01, 0x00]).await.unwrap();
            // A small command (pkid 1), then a 200 000-byte one (pkid 2, remaining
            // length 200 000 + 2 + 3 + 2 as three varint bytes).
            let publish = |pkid: u16, payload: usize| {
                let mut body = vec![0x00, 0x03, b'c', b'm', b'd'];
                body.extend_from_slice(&pkid.to_be_bytes());
                body.extend(std::iter::repeat_n(b'x', payload));
                let mut v = vec![0x32];
                let mut n = body.len();
                while n > 0x7F {
                    v.push((n & 0x7F) as u8 | 0x80);
                    n >>= 7;
                }
                v.push(n as u8);
                v.extend(body);
                v
            };
            broker.write_all(&publish(1, 10)).await.unwrap();
            broker.write_all(&publish(2, 200_000)).await.unwrap();
            let mut ack = [0u8; 4];
            broker.read_exact(&mut ack).await.unwrap();
            assert_eq!(ack, [0x40, 0x02, 0x00, 0x02], "only the big one is acked");
            // End of what the broker holds (a real one goes quiet instead).
            broker.shutdown().await.unwrap();
            let mut disconnect = [0u8; 2];
            broker.read_exact(&mut disconnect).await.unwrap();
            assert_eq!(disconnect, [0xE0, 0x00]);
        };
        let (found, ()) = tokio::join!(session(agent, &access, 1000), fake);
        assert_eq!(
            found.unwrap(),
            [Discarded {
                topic: "cmd".into(),
                bytes: 200_000
            }]
        );
    }
}

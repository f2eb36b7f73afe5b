//! vpcd's protocol, card side (vsmartcard's virtual reader driver for pcscd).
//!
//! The card is the TCP client. Every message, both ways, is a 2-byte big-endian length
//! and that many bytes. From vpcd a 1-byte message is a control byte (0x00 power off,
//! 0x01 power on, 0x02 reset, 0x04 "send your ATR"); anything longer is a command APDU,
//! answered with response data + SW1 SW2. Connecting inserts the card; closing the
//! connection removes it.

use super::card::Reply;
use super::VirtualCard;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// vpcd control bytes (vsmartcard, virtualsmartcard/src/vpcd/vpcd.h).
const VPCD_CTRL_OFF: u8 = 0x00;
const VPCD_CTRL_ON: u8 = 0x01;
const VPCD_CTRL_RESET: u8 = 0x02;
const VPCD_CTRL_ATR: u8 = 0x04;

#[derive(Debug, thiserror::Error)]
pub enum VpcdError {
    #[error("cannot reach vpcd at {addr}: {source} (is pcscd running with the vpcd driver? package vsmartcard-vpcd)")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("vpcd connection: {0}")]
    Io(#[from] std::io::Error),
}

/// How the card session ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// We were asked to stop: the card was pulled.
    Removed,
    /// vpcd closed the connection (pcscd stopped).
    ReaderGone,
    /// The image's fault pulled the card in the middle of an exchange.
    Pulled,
}

/// Options for a card session.
#[derive(Debug, Clone, Default)]
pub struct Session {
    /// Added before every APDU answer, to emulate a real reader and card.
    pub latency: Duration,
}

fn set_quickack(stream: &TcpStream) {
    // TESTRIG.md: vpcd writes the length and the APDU separately; without immediate
    // ACKs every APDU pays Nagle + delayed ACK (~50 ms). QUICKACK is reset by the kernel
    // after use, hence re-armed before every read. Failure only costs latency.
    let _ = socket2::SockRef::from(stream).set_tcp_quickack(true);
}

/// Insert `card` into vpcd at `addr` and serve it until `cancel` fires or vpcd goes
/// away. `on_powered` is called the first time vpcd asks for the ATR: from then on,
/// pcscd shows the card as present.
pub async fn serve(
    addr: &str,
    card: &mut VirtualCard,
    session: &Session,
    cancel: &CancellationToken,
    mut on_powered: impl FnMut(),
) -> Result<Ended, VpcdError> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|source| VpcdError::Connect {
            addr: addr.to_string(),
            source,
        })?;
    stream.set_nodelay(true)?;
    let mut powered_once = false;
    let mut buf = Vec::with_capacity(512);
    loop {
        // Armed before each of vpcd's two writes (length, then APDU) arrives: the kernel
        // leaves quick-ACK mode after we send (it sees an interactive exchange and delays
        // ACKs again), and vpcd's Nagle holds the APDU until the length is ACKed.
        set_quickack(&stream);
        let mut len = [0u8; 2];
        tokio::select! {
            _ = cancel.cancelled() => {
                stream.shutdown().await.ok();
                return Ok(Ended::Removed);
            }
            r = stream.read_exact(&mut len) => match r {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(Ended::ReaderGone),
                Err(e) => return Err(e.into()),
            },
        }
        // The body follows only once vpcd saw the length ACKed (Nagle on its side).
        set_quickack(&stream);
        let n = usize::from(u16::from_be_bytes(len));
        buf.resize(n, 0);
        stream.read_exact(&mut buf).await?;
        let reply: Option<Vec<u8>> = match buf.as_slice() {
            [VPCD_CTRL_OFF] => None,
            [VPCD_CTRL_ON] => {
                card.reset();
                None
            }
            [VPCD_CTRL_RESET] => {
                card.warm_reset();
                None
            }
            [VPCD_CTRL_ATR] => {
                if !powered_once {
                    powered_once = true;
                    on_powered();
                }
                Some(card.atr())
            }
            [other] => {
                tracing::debug!(control = other, "unknown vpcd control byte ignored");
                None
            }
            apdu => {
                if !session.latency.is_zero() {
                    tokio::time::sleep(session.latency).await;
                }
                match card.respond(apdu) {
                    Reply::Answer(resp) => {
                        tracing::trace!(command = %hex::encode_upper(apdu), response = %hex::encode_upper(&resp), "apdu");
                        Some(resp)
                    }
                    // A mute card: vpcd waits for an answer that never comes.
                    Reply::Mute => {
                        tracing::debug!(command = %hex::encode_upper(apdu), "mute: not answering");
                        None
                    }
                    Reply::Pull => {
                        stream.shutdown().await.ok();
                        return Ok(Ended::Pulled);
                    }
                }
            }
        };
        if let Some(data) = reply {
            // One write for length and data: a split write would itself trigger Nagle.
            let mut out = Vec::with_capacity(2 + data.len());
            // APDU responses are at most 258 bytes; an ATR at most 33.
            out.extend_from_slice(&(data.len() as u16).to_be_bytes());
            out.extend_from_slice(&data);
            stream.write_all(&out).await?;
            // Sending switches the kernel back to delayed ACKs (interactive mode): re-arm
            // so the next command's length is ACKed at once.
            set_quickack(&stream);
        }
    }
}

//! The virtual card's APDU behaviour: pure, no I/O. `process` takes a command APDU and
//! returns the response APDU a real card of the image's kind would give.

use super::image::{parse_path, CardImage, ImageKind};
use std::collections::BTreeMap;

type Path = Vec<[u8; 2]>;

const MF: [u8; 2] = [0x3F, 0x00];

/// Short file identifiers known to the virtual card: (parent DF path, SFI, FID).
/// TS 102 221 §13 (EF.ICCID '02', EF.DIR '1E', EF.PL '05').
type SfiEntry = (&'static [[u8; 2]], u8, [u8; 2]);
const SFIS: &[SfiEntry] = &[
    (&[MF], 0x02, [0x2F, 0xE2]),
    (&[MF], 0x1E, [0x2F, 0x00]),
    (&[MF], 0x05, [0x2F, 0x05]),
];

/// A card brought to life from an image.
#[derive(Debug, Clone)]
pub struct VirtualCard {
    image: CardImage,
    files: BTreeMap<Path, Vec<u8>>,
    /// The current DF and the current EF (if one is selected).
    current_df: Path,
    current_ef: Option<Path>,
    /// Response data waiting for GET RESPONSE (T=0, TS 102 221 §7.3.1.1.4).
    pending: Vec<u8>,
    /// APDUs processed since power-on, for logs and tests.
    apdus: u64,
}

fn sw(data: &[u8], sw1: u8, sw2: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 2);
    out.extend_from_slice(data);
    out.extend_from_slice(&[sw1, sw2]);
    out
}

impl VirtualCard {
    pub fn new(image: CardImage) -> VirtualCard {
        let files = image
            .files
            .iter()
            // Images are validated by CardImage::parse; an entry that still fails is
            // skipped rather than trusted.
            .filter_map(|(p, c)| Some((parse_path(p).ok()?, hex::decode(c).ok()?)))
            .collect();
        VirtualCard {
            image,
            files,
            current_df: vec![MF],
            current_ef: None,
            pending: Vec::new(),
            apdus: 0,
        }
    }

    pub fn image(&self) -> &CardImage {
        &self.image
    }

    pub fn atr(&self) -> Vec<u8> {
        // Validated at load time.
        hex::decode(&self.image.atr).unwrap_or_default()
    }

    pub fn apdus(&self) -> u64 {
        self.apdus
    }

    /// Power-on or reset: the MF becomes the current DF (TS 102 221 §8.2).
    pub fn reset(&mut self) {
        self.current_df = vec![MF];
        self.current_ef = None;
        self.pending.clear();
    }

    fn is_df(&self, path: &Path) -> bool {
        path.as_slice() == [MF]
            || self
                .files
                .keys()
                .any(|k| k.len() > path.len() && k.starts_with(path))
    }

    fn exists(&self, path: &Path) -> bool {
        self.files.contains_key(path) || self.is_df(path)
    }

    /// Process one command APDU.
    pub fn process(&mut self, apdu: &[u8]) -> Vec<u8> {
        self.apdus += 1;
        if apdu.len() < 4 {
            // ISO/IEC 7816-4: wrong length.
            return sw(&[], 0x67, 0x00);
        }
        let (cla, ins, p1, p2) = (apdu[0], apdu[1], apdu[2], apdu[3]);
        let body = &apdu[4..];
        let (data, le) = match body.len() {
            0 => (&[][..], None),
            1 => (&[][..], Some(body[0])),
            n => {
                let lc = usize::from(body[0]);
                if n == 1 + lc {
                    (&body[1..], None)
                } else if n == 2 + lc {
                    (&body[1..1 + lc], Some(body[1 + lc]))
                } else {
                    return sw(&[], 0x67, 0x00);
                }
            }
        };
        let class_ok = match self.image.kind {
            // UICC: CLA 00-03 (basic and logical channels 1-3, TS 102 221 §10.1.1).
            ImageKind::Uicc => cla & 0xFC == 0x00,
            ImageKind::Gsm => cla == 0xA0,
        };
        if !class_ok {
            return sw(&[], 0x6E, 0x00);
        }
        match ins {
            0xA4 => self.select(p1, p2, data),
            0xB0 => self.read_binary(p1, p2, le),
            0xC0 => self.get_response(le),
            _ => sw(&[], 0x6D, 0x00),
        }
    }

    fn select(&mut self, p1: u8, p2: u8, data: &[u8]) -> Vec<u8> {
        let ids: Vec<[u8; 2]> = data
            .chunks(2)
            .filter_map(|c| <[u8; 2]>::try_from(c).ok())
            .collect();
        if ids.is_empty() || data.len() % 2 != 0 {
            return sw(&[], 0x67, 0x00);
        }
        let target: Option<Path> = match (self.image.kind, p1) {
            (_, 0x00) => {
                let fid = ids[0];
                if ids.len() != 1 {
                    return sw(&[], 0x67, 0x00);
                }
                let mut child = self.current_df.clone();
                child.push(fid);
                if fid == MF {
                    Some(vec![MF])
                } else if self.exists(&child) {
                    Some(child)
                } else {
                    // A sibling of the current DF, or its parent (TS 102 221 §8.4.1).
                    let parent: Path =
                        self.current_df[..self.current_df.len().saturating_sub(1)].to_vec();
                    let mut sibling = parent.clone();
                    sibling.push(fid);
                    if parent.last() == Some(&fid) {
                        Some(parent)
                    } else if !parent.is_empty() && self.exists(&sibling) {
                        Some(sibling)
                    } else {
                        None
                    }
                }
            }
            // Select by path from the MF (TS 102 221 §11.1.1.2, P1 = 08), UICC only.
            (ImageKind::Uicc, 0x08) => {
                let mut path = vec![MF];
                path.extend(ids);
                self.exists(&path).then_some(path)
            }
            // TS 102 221 §10.2.1.5: incorrect parameters P1-P2.
            _ => return sw(&[], 0x6A, 0x86),
        };
        let Some(path) = target else {
            // File not found (TS 102 221 §10.2.1.5).
            return sw(&[], 0x6A, 0x82);
        };
        let size = self.files.get(&path).map(Vec::len);
        if self.is_df(&path) && size.is_none() {
            self.current_df = path.clone();
            self.current_ef = None;
        } else {
            self.current_df = path[..path.len() - 1].to_vec();
            self.current_ef = Some(path.clone());
        }
        // A minimal FCP template (TS 102 221 §11.1.1.3): file id and, for an EF, its size.
        let fid = path[path.len() - 1];
        let mut fcp = vec![0x83, 0x02, fid[0], fid[1]];
        if let Some(n) = size {
            fcp.extend_from_slice(&[0x80, 0x02, (n >> 8) as u8, n as u8]);
        }
        let mut out = vec![0x62, fcp.len() as u8];
        out.extend(fcp);
        match self.image.kind {
            ImageKind::Uicc if p2 & 0x0C == 0x0C => sw(&[], 0x90, 0x00),
            ImageKind::Uicc => {
                let n = out.len() as u8;
                self.pending = out;
                sw(&[], 0x61, n)
            }
            // GSM SIMs always have a response waiting (TS 51.011 §9.4.1).
            ImageKind::Gsm => {
                let n = out.len() as u8;
                self.pending = out;
                sw(&[], 0x9F, n)
            }
        }
    }

    fn read_binary(&mut self, p1: u8, p2: u8, le: Option<u8>) -> Vec<u8> {
        let (path, offset) = if p1 & 0x80 != 0 {
            if self.image.kind == ImageKind::Gsm {
                return sw(&[], 0x6B, 0x00);
            }
            let sfi = p1 & 0x1F;
            let found = SFIS
                .iter()
                .find(|(parent, s, _)| *s == sfi && *parent == self.current_df.as_slice())
                .map(|(parent, _, fid)| {
                    let mut p = parent.to_vec();
                    p.push(*fid);
                    p
                });
            match found {
                Some(p) if self.files.contains_key(&p) => {
                    // Addressing by SFI selects the file (TS 102 221 §11.1.3.2).
                    self.current_ef = Some(p.clone());
                    (p, usize::from(p2))
                }
                _ => return sw(&[], 0x6A, 0x82),
            }
        } else {
            match &self.current_ef {
                Some(p) => (p.clone(), usize::from(p1) << 8 | usize::from(p2)),
                // No EF selected (TS 102 221 §10.2.1.5: 6986 command not allowed).
                None => return sw(&[], 0x69, 0x86),
            }
        };
        let contents = self.files.get(&path).cloned().unwrap_or_default();
        if offset > contents.len() {
            return sw(&[], 0x6B, 0x00);
        }
        let available = contents.len() - offset;
        let wanted = match le {
            Some(0) | None => 256,
            Some(n) => usize::from(n),
        };
        if wanted > available && le.is_some() && le != Some(0) {
            // Wrong Le: tell the terminal how many bytes there are (TS 102 221 §7.3.1.1.4).
            return sw(&[], 0x6C, available as u8);
        }
        let n = wanted.min(available);
        sw(&contents[offset..offset + n], 0x90, 0x00)
    }

    fn get_response(&mut self, le: Option<u8>) -> Vec<u8> {
        if self.pending.is_empty() {
            return sw(&[], 0x69, 0x85);
        }
        let n = match le {
            Some(0) | None => self.pending.len(),
            Some(n) => usize::from(n).min(self.pending.len()),
        };
        let out: Vec<u8> = self.pending.drain(..n).collect();
        if self.pending.is_empty() {
            sw(&out, 0x90, 0x00)
        } else {
            let rest = self.pending.len().min(255) as u8;
            sw(&out, 0x61, rest)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::card::{identify, CardError, CardKind, CardTransport};

    impl CardTransport for VirtualCard {
        fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, CardError> {
            Ok(self.process(command))
        }
    }

    fn card(kind: &str) -> VirtualCard {
        let text = format!(
            "name = \"t\"\nkind = \"{kind}\"\natr = \"3B00\"\n[files]\n\"3F00/2FE2\" = \"988812010000400310F0\"\n"
        );
        VirtualCard::new(CardImage::parse(&text).unwrap())
    }

    #[test]
    fn uicc_iccid_takes_one_apdu_by_sfi() {
        let mut c = card("uicc");
        let id = identify(&mut c).unwrap();
        assert_eq!(
            (id.kind, id.iccid.as_str(), id.apdus),
            (CardKind::Uicc, "8988211000000430010", 1)
        );
    }

    #[test]
    fn gsm_sim_is_read_with_cla_a0_after_class_refusal() {
        let mut c = card("gsm");
        let id = identify(&mut c).unwrap();
        assert_eq!(
            (id.kind, id.iccid.as_str(), id.apdus),
            (CardKind::Gsm, "8988211000000430010", 3)
        );
    }
}

//! The durable outbox: every message simgate sends to the platform is written here and
//! flushed before the MQTT client sees it, and leaves only when the broker acknowledged
//! that very message (DESIGN.md, "The platform link"). rumqttc's own session is not the
//! queue: it drops unacknowledged publishes on a clean reconnect and forgets everything
//! on a restart.
//!
//! Layout (three trees, so no multi-tree transaction is needed):
//! - `outbox`: seq (u64 big-endian, from sled's monotonic id generator) → entry. Key
//!   order is send order.
//! - `outbox_coalesce`: coalescing key (a SIM's state topic) → the seq holding its
//!   latest version. A newer version replaces the older one and goes to the tail, so per
//!   SIM the order of state and events is kept.
//! - `outbox_shed`: class byte + seq → (), the entries that may be shed when the cap is
//!   reached, oldest first per class.
//!
//! Writes are ordered so a crash between them leaves only harmless leftovers: an index
//! pointing at a missing seq is skipped; an entry missing from an index is merely not
//! coalesced or not sheddable.

use super::{Store, StoreError};
use std::sync::{Arc, Mutex};

const MAIN: &str = "outbox";
const COALESCE: &str = "outbox_coalesce";
const SHED: &str = "outbox_shed";
const META: &str = "outbox_meta";

/// What a message is, which decides whether it may be shed when the outbox is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A SIM's retained state: coalesced per SIM, never shed.
    State,
    /// A command's lifecycle status: never shed (the platform waits for it).
    Outcome,
    /// An event (inserted, removed, error ...): shed only when no telemetry is left.
    Event,
    /// Usage telemetry: shed first.
    Telemetry,
    /// A notice about the link itself (e.g. the shed counter): coalesced, never shed.
    Notice,
}

impl Class {
    fn byte(self) -> u8 {
        match self {
            Class::State => b's',
            Class::Outcome => b'o',
            Class::Event => b'e',
            Class::Telemetry => b't',
            Class::Notice => b'n',
        }
    }

    fn from_byte(b: u8) -> Option<Class> {
        Some(match b {
            b's' => Class::State,
            b'o' => Class::Outcome,
            b'e' => Class::Event,
            b't' => Class::Telemetry,
            b'n' => Class::Notice,
            _ => return None,
        })
    }

    fn sheddable(self) -> bool {
        matches!(self, Class::Event | Class::Telemetry)
    }
}

/// One queued message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub class: Class,
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

impl Entry {
    // Compact binary: class, retain, topic length (u16 BE), topic, payload. The outbox
    // may hold many thousands of entries on a small gateway's flash.
    fn encode(&self) -> Vec<u8> {
        let topic = self.topic.as_bytes();
        let mut v = Vec::with_capacity(4 + topic.len() + self.payload.len());
        v.push(self.class.byte());
        v.push(u8::from(self.retain));
        v.extend_from_slice(&(topic.len().min(usize::from(u16::MAX)) as u16).to_be_bytes());
        v.extend_from_slice(topic);
        v.extend_from_slice(&self.payload);
        v
    }

    fn decode(seq: u64, v: &[u8]) -> Result<Entry, StoreError> {
        let corrupt = |why: &str| StoreError::Corrupt {
            tree: MAIN,
            detail: format!("entry {seq}: {why}"),
        };
        if v.len() < 4 {
            return Err(corrupt("too short"));
        }
        let class = Class::from_byte(v[0]).ok_or_else(|| corrupt("unknown class"))?;
        let tlen = usize::from(u16::from_be_bytes([v[2], v[3]]));
        let topic = v
            .get(4..4 + tlen)
            .ok_or_else(|| corrupt("truncated topic"))?;
        Ok(Entry {
            class,
            retain: v[1] != 0,
            topic: String::from_utf8(topic.to_vec()).map_err(|_| corrupt("topic not UTF-8"))?,
            payload: v[4 + tlen..].to_vec(),
        })
    }
}

/// What a push had to shed to stay within the cap (counted, never silent).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Shed {
    pub telemetry: u64,
    pub events: u64,
}

impl Shed {
    pub fn any(&self) -> bool {
        self.telemetry + self.events > 0
    }
}

/// Handle on the outbox; cheap to clone. All operations take one lock: the outbox has
/// one producer side (the daemon) and one consumer (the link), and the lock keeps the
/// entry count exact without scanning.
#[derive(Debug, Clone)]
pub struct Outbox {
    db: sled::Db,
    main: sled::Tree,
    coalesce: sled::Tree,
    shed: sled::Tree,
    meta: sled::Tree,
    inner: Arc<Mutex<Meta>>,
}

#[derive(Debug)]
struct Meta {
    len: u64,
    cap: u64,
}

impl Store {
    /// Open the outbox, holding at most `cap` entries before shedding (state and
    /// command outcomes are kept even beyond it).
    pub fn outbox(&self, cap: u64) -> Result<Outbox, StoreError> {
        let main = self.tree(MAIN)?;
        let len = main.len() as u64;
        Ok(Outbox {
            db: self.db.clone(),
            coalesce: self.tree(COALESCE)?,
            shed: self.tree(SHED)?,
            meta: self.tree(META)?,
            main,
            inner: Arc::new(Mutex::new(Meta { len, cap })),
        })
    }
}

fn key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

fn seq_of(k: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(k).ok().map(u64::from_be_bytes)
}

fn shed_key(class: Class, seq: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = class.byte();
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

impl Outbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, Meta> {
        // A panic while holding the lock leaves the trees consistent (each write is
        // atomic); the counter may be off by one at worst, so keep going.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue a message and flush to disk before returning: only then may it be handed
    /// to the MQTT client. The message gets the next sequence number — strictly greater
    /// than every earlier one, also across restarts (sled persists its id generator) —
    /// which `payload` may embed so the platform can drop a replayed duplicate. Numbering
    /// and queueing happen under one lock, so send order is numbering order.
    ///
    /// With `coalesce`, an older queued entry under the same key is dropped (only the
    /// latest version must survive, e.g. a SIM's state).
    pub fn push(
        &self,
        class: Class,
        topic: &str,
        retain: bool,
        coalesce: Option<&str>,
        payload: impl FnOnce(u64) -> Vec<u8>,
    ) -> Result<(u64, Shed), StoreError> {
        let mut meta = self.lock();
        // sled's ids start at 0; keep 0 free as "nothing".
        let seq = self.db.generate_id()? + 1;
        let entry = Entry {
            class,
            topic: topic.to_string(),
            payload: payload(seq),
            retain,
        };
        let mut shed = Shed::default();
        // A notice (the shed counter itself) is one coalesced entry: it never makes
        // room, or its own count would be stale the moment it is written.
        if meta.len >= meta.cap && class != Class::Notice {
            // Make room: telemetry first, then events. State, outcomes and notices are
            // never shed, so the cap is a target, not a hard limit, for them.
            let victim = self
                .oldest(Class::Telemetry)?
                .map(|s| (Class::Telemetry, s))
                .or(if entry.class == Class::Telemetry {
                    None
                } else {
                    self.oldest(Class::Event)?.map(|s| (Class::Event, s))
                });
            match victim {
                Some((class, s)) => {
                    self.remove_locked(&mut meta, s)?;
                    self.shed.remove(shed_key(class, s))?;
                    if class == Class::Telemetry {
                        shed.telemetry += 1;
                    } else {
                        shed.events += 1;
                    }
                }
                // Nothing older may go: a new telemetry or event message is the one shed.
                None if entry.class.sheddable() => {
                    if entry.class == Class::Telemetry {
                        shed.telemetry += 1;
                    } else {
                        shed.events += 1;
                    }
                    self.count_shed(shed)?;
                    self.db.flush()?;
                    return Ok((seq, shed));
                }
                None => {}
            }
        }
        self.main.insert(key(seq), entry.encode())?;
        meta.len += 1;
        if entry.class.sheddable() {
            self.shed.insert(shed_key(entry.class, seq), &[])?;
        }
        if let Some(ck) = coalesce {
            if let Some(old) = self.coalesce.insert(ck.as_bytes(), &key(seq))? {
                if let Some(old) = seq_of(&old) {
                    if old != seq {
                        self.remove_locked(&mut meta, old)?;
                    }
                }
            }
        }
        if shed.any() {
            self.count_shed(shed)?;
        }
        self.db.flush()?;
        Ok((seq, shed))
    }

    fn oldest(&self, class: Class) -> Result<Option<u64>, StoreError> {
        match self.shed.scan_prefix([class.byte()]).next() {
            Some(r) => Ok(seq_of(&r?.0[1..])),
            None => Ok(None),
        }
    }

    fn count_shed(&self, shed: Shed) -> Result<(), StoreError> {
        for (k, n) in [("telemetry", shed.telemetry), ("events", shed.events)] {
            if n > 0 {
                self.meta.update_and_fetch(k, |old| {
                    let prev = old
                        .and_then(|o| <[u8; 8]>::try_from(o).ok())
                        .map(u64::from_be_bytes)
                        .unwrap_or(0);
                    Some((prev + n).to_be_bytes().to_vec())
                })?;
            }
        }
        Ok(())
    }

    /// Everything shed since the store was created.
    pub fn shed_totals(&self) -> Result<Shed, StoreError> {
        let get = |k: &str| -> Result<u64, StoreError> {
            Ok(self
                .meta
                .get(k)?
                .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0))
        };
        Ok(Shed {
            telemetry: get("telemetry")?,
            events: get("events")?,
        })
    }

    /// The first entry after `cursor` (None: from the head), in send order.
    pub fn next_after(&self, cursor: Option<u64>) -> Result<Option<(u64, Entry)>, StoreError> {
        let _meta = self.lock();
        let from = match cursor {
            None => 0,
            Some(c) => match c.checked_add(1) {
                Some(n) => n,
                None => return Ok(None),
            },
        };
        match self.main.range(key(from)..).next() {
            None => Ok(None),
            Some(r) => {
                let (k, v) = r?;
                let seq = seq_of(&k).ok_or(StoreError::Corrupt {
                    tree: MAIN,
                    detail: "key is not a sequence number".into(),
                })?;
                Ok(Some((seq, Entry::decode(seq, &v)?)))
            }
        }
    }

    /// The broker acknowledged `seq`: forget it. Not flushed: a deletion lost in a power
    /// cut means one redelivery, which the contract allows (at least once, with `seq`
    /// for deduplication); flushing here would double the writes to flash.
    pub fn acknowledged(&self, seq: u64) -> Result<(), StoreError> {
        let mut meta = self.lock();
        if let Some(v) = self.main.get(key(seq))? {
            if let Some(class) = v.first().copied().and_then(Class::from_byte) {
                if class.sheddable() {
                    self.shed.remove(shed_key(class, seq))?;
                }
            }
            self.remove_locked(&mut meta, seq)?;
        }
        Ok(())
    }

    fn remove_locked(&self, meta: &mut Meta, seq: u64) -> Result<(), StoreError> {
        if self.main.remove(key(seq))?.is_some() {
            meta.len = meta.len.saturating_sub(1);
        }
        Ok(())
    }

    /// Make every acknowledgement so far durable (at a clean shutdown).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// Entries queued now.
    pub fn len(&self) -> u64 {
        self.lock().len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (Store, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "simgate-outbox-{}-{}",
            std::process::id(),
            crate::time::unix_now() ^ rand_tag()
        ));
        (Store::open(&dir).unwrap(), dir)
    }

    fn rand_tag() -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(1);
        N.fetch_add(1, Ordering::Relaxed) << 40
    }

    fn push(
        ob: &Outbox,
        class: Class,
        topic: &str,
        payload: &str,
        ck: Option<&str>,
    ) -> (u64, Shed) {
        ob.push(class, topic, class == Class::State, ck, |_| {
            payload.as_bytes().to_vec()
        })
        .unwrap()
    }

    fn drain(ob: &Outbox) -> Vec<String> {
        let mut out = Vec::new();
        let mut cur = None;
        while let Some((s, e)) = ob.next_after(cur).unwrap() {
            out.push(String::from_utf8(e.payload).unwrap());
            cur = Some(s);
        }
        out
    }

    #[test]
    fn entries_come_back_in_push_order_and_leave_only_when_acknowledged() {
        let (st, dir) = store();
        let ob = st.outbox(100).unwrap();
        let mut seqs = vec![];
        for p in ["a", "b", "c"] {
            seqs.push(push(&ob, Class::Event, "t/e", p, None).0);
        }
        assert_eq!(drain(&ob), ["a", "b", "c"]);
        ob.acknowledged(seqs[1]).unwrap();
        assert_eq!(drain(&ob), ["a", "c"]);
        assert_eq!(ob.len(), 2);
        drop((ob, st));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_newer_state_replaces_the_queued_one_and_moves_behind_later_events() {
        let (st, dir) = store();
        let ob = st.outbox(100).unwrap();
        push(&ob, Class::State, "sim/1/state", "s1", Some("sim/1/state"));
        push(&ob, Class::Event, "events", "removed", None);
        push(&ob, Class::State, "sim/2/state", "x1", Some("sim/2/state"));
        push(&ob, Class::State, "sim/1/state", "s2", Some("sim/1/state"));
        assert_eq!(drain(&ob), ["removed", "x1", "s2"]);
        assert_eq!(ob.len(), 3);
        drop((ob, st));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_full_outbox_sheds_telemetry_first_then_events_and_never_state() {
        let (st, dir) = store();
        let ob = st.outbox(3).unwrap();
        let push = |c, p| push(&ob, c, "t", p, None).1;
        push(Class::Event, "e1");
        push(Class::Telemetry, "u1");
        push(Class::State, "s1");
        // Full: an event pushes out the telemetry, not the older event.
        assert_eq!(
            push(Class::Event, "e2"),
            Shed {
                telemetry: 1,
                events: 0
            }
        );
        assert_eq!(drain(&ob), ["e1", "s1", "e2"]);
        // Telemetry with no telemetry left to shed is itself shed.
        assert_eq!(push(Class::Telemetry, "u2").telemetry, 1);
        // An outcome sheds the oldest event.
        assert_eq!(push(Class::Outcome, "o1").events, 1);
        assert_eq!(drain(&ob), ["s1", "e2", "o1"]);
        // State beyond the cap with nothing sheddable left of its kind: kept anyway.
        push(Class::Event, "e3"); // sheds e2
        push(Class::State, "s2"); // sheds e3
        push(Class::State, "s3"); // nothing sheddable: over the cap, kept
        assert_eq!(drain(&ob), ["s1", "o1", "s2", "s3"]);
        assert_eq!(
            ob.shed_totals().unwrap(),
            Shed {
                telemetry: 2,
                events: 3
            }
        );
        drop((ob, st));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_outbox_survives_reopening_with_its_count() {
        let (st, dir) = store();
        let ob = st.outbox(10).unwrap();
        for p in ["a", "b"] {
            push(&ob, Class::Telemetry, "u", p, None);
        }
        drop((ob, st));
        let st = Store::open(&dir).unwrap();
        let ob = st.outbox(10).unwrap();
        assert_eq!(ob.len(), 2);
        assert_eq!(drain(&ob), ["a", "b"]);
        let (s, _) = push(&ob, Class::Telemetry, "u", "c", None);
        assert!(s > 2, "numbering continues across a reopen");
        assert_eq!(drain(&ob), ["a", "b", "c"]);
        drop((ob, st));
        let _ = std::fs::remove_dir_all(dir);
    }
}

//! The durable outbox: every message simgate sends to the platform is written here and
//! flushed before the MQTT client sees it, and leaves only when the broker acknowledged
//! that very message (MQTT.md, "Durability"). rumqttc's own session is not the
//! queue: it drops unacknowledged publishes on a clean reconnect and forgets everything
//! on a restart.
//!
//! Layout (four trees; a push writes the entry, its number and what it displaces in
//! one sled transaction over the first and the last, then the two indexes):
//! - `outbox`: seq (u64 big-endian, from sled's monotonic id generator) → entry. Key
//!   order is send order.
//! - `outbox_coalesce`: coalescing key (a SIM's state topic, a command's status topic,
//!   the shed notice) → the seq holding its latest version and the number its payload
//!   carries. A newer version replaces the older one and goes to the tail, so per SIM
//!   the order of state and events is kept, and a replay never sends an older status of
//!   a command after a newer one.
//! - `outbox_shed`: class byte + seq → (), the entries that may be shed when a bound is
//!   reached, oldest first per class.
//! - `outbox_meta`: the shed totals, and the last number given to an event and to a
//!   usage batch (the `seq` in their payloads: contiguous, see [`Outbox::push`]).
//!
//! The indexes are written after the transaction, and an acknowledgement removes an
//! entry alone: a crash in between leaves only harmless leftovers. An index pointing at
//! a missing seq is skipped (and dropped); an entry missing from an index is merely not
//! coalesced (an older status or state is then sent before the newer one, in order) or
//! not sheddable.

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

/// What bounds the outbox. Sheddable messages (telemetry, then events) make room when
/// any bound is reached; SIM states, command statuses and notices are kept beyond them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Messages queued.
    pub messages: u64,
    /// Bytes of the queued messages as stored (topic, payload and 12 bytes of framing
    /// each); sled's files take about 2.6 times that on disk (benches/store.rs).
    pub bytes: u64,
    /// Free space the state directory's file system must keep while messages queue up
    /// (see [`Outbox::set_passing`]): below it, the outbox counts as full, so telemetry
    /// is shed before the disk fills up. See [`disk_reserve`].
    pub disk_reserve: u64,
}

/// The least disk reserve, whatever the fraction: sled writes in segments of 512 KiB;
/// this leaves room for a few, and for the states and statuses never shed.
pub const DISK_RESERVE_FLOOR: u64 = 2 * 1024 * 1024;

/// The most disk reserve, whatever the fraction: what the outbox needs to go on
/// writing is a few sled segments, not a share of a large disk (5 % of a 250 GB server
/// disk is 12.5 GB: with less free than that, every queued event was shed).
pub const DISK_RESERVE_CEILING: u64 = 256 * 1024 * 1024;

/// The disk reserve for a store in `dir`: `percent` of its file system's size, at least
/// [`DISK_RESERVE_FLOOR`] and at most [`DISK_RESERVE_CEILING`]. A fixed figure fits no
/// disk: 8 MiB was a sixth of a small gateway's partition and nothing on a server's.
pub fn disk_reserve(dir: &std::path::Path, percent: u8) -> u64 {
    let total = fs2::total_space(dir).unwrap_or(0);
    reserve_of(total, percent)
}

fn reserve_of(total: u64, percent: u8) -> u64 {
    (total / 100)
        .saturating_mul(u64::from(percent))
        .clamp(DISK_RESERVE_FLOOR, DISK_RESERVE_CEILING)
}

impl Limits {
    /// Only a message count (tests and tools): no byte bound, no disk reserve.
    pub fn messages(messages: u64) -> Limits {
        Limits {
            messages,
            bytes: u64::MAX,
            disk_reserve: 0,
        }
    }
}

/// Handle on the outbox; cheap to clone. All operations take one lock: the outbox has
/// one producer side (the daemon) and one consumer (the link), and the lock keeps the
/// entry count exact without scanning.
#[derive(Debug, Clone)]
pub struct Outbox {
    db: sled::Db,
    dir: std::path::PathBuf,
    main: sled::Tree,
    coalesce: sled::Tree,
    shed: sled::Tree,
    meta: sled::Tree,
    inner: Arc<Mutex<Meta>>,
    /// While the broker link is up, how many queued messages still count as passing
    /// through (the link's in-flight window); 0 while it is down.
    passing: Arc<std::sync::atomic::AtomicU64>,
}

#[derive(Debug)]
struct Meta {
    len: u64,
    bytes: u64,
    limits: Limits,
    /// When messages were queued, for the oldest one's age (`Outbox::oldest_age`):
    /// (the first key queued in a second, that second), in key order. Keys are given in
    /// increasing order, so every key from one checkpoint up to the next was queued no
    /// earlier than the first's second: the age read from it is never too young. Kept
    /// in memory only; what an earlier run queued counts from this run's start.
    since: std::collections::VecDeque<(u64, u64)>,
}

impl Meta {
    /// A message queued now under key `seq`: a checkpoint for the oldest one's age,
    /// one per second at most, halved past `MAX_CHECKPOINTS`.
    fn checkpoint(&mut self, seq: u64) {
        let now = crate::time::unix_now();
        if self.since.back().is_none_or(|(_, t)| *t != now) {
            self.since.push_back((seq, now));
        }
        if self.since.len() > MAX_CHECKPOINTS {
            let mut i = 0;
            self.since.retain(|_| {
                i += 1;
                i % 2 == 1
            });
        }
    }
}

/// Where a pushed message goes (`Outbox::place`).
struct Place {
    /// The version queued before under the same coalescing key: its key and number.
    previous: Option<(u64, u64)>,
    /// A queued notice updated where it stands, keeping its key and number.
    in_place: bool,
    seq: u64,
    number: u64,
    /// The counter the message's number advances, and its new value.
    bump: Option<(&'static str, u64)>,
}

/// What a pushed message displaces (`Outbox::room`).
#[derive(Default)]
struct Room {
    shed: Shed,
    /// The oldest sheddable message that goes for it.
    victim: Option<(Class, u64)>,
    /// Nothing older may go: the new message itself is shed.
    shed_self: bool,
    /// The shed counters' new totals, when something is shed.
    totals: Option<Shed>,
}

/// At most this many checkpoints: past it every other one goes (ages then read up to
/// a few seconds older than they are, never younger). 4096 × 16 bytes.
const MAX_CHECKPOINTS: usize = 4096;

/// The numbering a message's payload carries (its `seq`), per kind: events (with the
/// notices, which are events too) and usage batches are numbered 1, 2, 3 … each,
/// contiguous for the life of the store, so a gap means a message was lost (or shed,
/// which `outbox_shed` counts). States and statuses carry no number.
fn counter(class: Class) -> Option<&'static str> {
    match class {
        Class::Event | Class::Notice => Some("number/events"),
        Class::Telemetry => Some("number/usage"),
        Class::State | Class::Outcome => None,
    }
}

impl Store {
    /// Open the outbox, bounded by `limits` before shedding (state and command outcomes
    /// are kept even beyond them).
    pub fn outbox(&self, limits: Limits) -> Result<Outbox, StoreError> {
        let main = self.tree(MAIN)?;
        let (mut len, mut bytes) = (0, 0);
        for item in main.iter() {
            let (k, v) = item?;
            len += 1;
            bytes += (k.len() + v.len()) as u64;
        }
        Ok(Outbox {
            db: self.db.clone(),
            dir: self.dir.clone(),
            coalesce: self.tree(COALESCE)?,
            shed: self.tree(SHED)?,
            meta: self.tree(META)?,
            main,
            inner: Arc::new(Mutex::new(Meta {
                len,
                bytes,
                limits,
                since: match len {
                    0 => Default::default(),
                    _ => [(0, crate::time::unix_now())].into(),
                },
            })),
            passing: Arc::default(),
        })
    }
}

fn key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

fn seq_of(k: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(k).ok().map(u64::from_be_bytes)
}

/// A coalescing index value: the outbox key of the latest version, then the number its
/// payload carries.
fn index_value(seq: u64, number: u64) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&seq.to_be_bytes());
    v[8..].copy_from_slice(&number.to_be_bytes());
    v
}

fn parse_index(v: &[u8]) -> Option<(u64, u64)> {
    match v.len() {
        // Written by an older simgate: the key alone.
        8 => seq_of(v).map(|s| (s, 0)),
        16 => Some((seq_of(&v[..8])?, seq_of(&v[8..])?)),
        _ => None,
    }
}

fn be(v: Option<sled::IVec>) -> u64 {
    v.and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

fn shed_key(class: Class, seq: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = class.byte();
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

type TxResult<T> = sled::transaction::ConflictableTransactionResult<T, ()>;

fn tx_error(e: sled::transaction::TransactionError<()>) -> StoreError {
    match e {
        sled::transaction::TransactionError::Storage(e) => StoreError::Db(e),
        // The closures below never abort.
        sled::transaction::TransactionError::Abort(()) => StoreError::Corrupt {
            tree: MAIN,
            detail: "transaction aborted".into(),
        },
    }
}

impl Outbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, Meta> {
        // A panic while holding the lock leaves the trees consistent (each push is one
        // transaction); the counters may be off by one at worst, so keep going.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The broker link is up and hands up to `window` messages to the broker at once
    /// (0: it is down). While fewer than that are queued, a new message passes through:
    /// it is written, sent at once and gone on its acknowledgement, so the disk reserve
    /// does not stop it (MQTT.md, "Durability").
    pub fn set_passing(&self, window: u64) {
        self.passing
            .store(window, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether a sheddable message must make room: a bound is reached, or the disk is
    /// nearly full while messages queue up. The reserve guards the queue, not the send.
    fn full(&self, meta: &Meta, adding: u64) -> bool {
        let queueing = meta.len >= self.passing.load(std::sync::atomic::Ordering::Relaxed);
        meta.len >= meta.limits.messages
            || meta.bytes.saturating_add(adding) > meta.limits.bytes
            || (queueing
                && meta.limits.disk_reserve > 0
                && fs2::available_space(&self.dir)
                    .map(|free| free < meta.limits.disk_reserve)
                    // Unknown free space: rely on the other bounds.
                    .unwrap_or(false))
    }

    /// Queue a message and flush to disk before returning: only then may it be handed
    /// to the MQTT client. Returns its outbox key (send order: strictly greater than
    /// every earlier one, also across restarts, as sled persists its id generator).
    ///
    /// `payload` gets the message's number (see [`counter`]: events and usage batches
    /// 1, 2, 3 …; 0 for the others), assigned in the same transaction that queues the
    /// message, so a number is never given twice nor skipped by a crash.
    ///
    /// With `coalesce`, an older queued entry under the same key is dropped (only the
    /// latest version must survive: a SIM's state, a command's status) and the new one
    /// goes to the tail. A notice still queued is instead updated where it stands,
    /// keeping its number, so notices never leave a gap in the events' numbers.
    pub fn push(
        &self,
        class: Class,
        topic: &str,
        retain: bool,
        coalesce: Option<&str>,
        payload: impl FnOnce(u64) -> Vec<u8>,
    ) -> Result<(u64, Shed), StoreError> {
        let mut meta = self.lock();
        let place = self.place(class, coalesce)?;
        let entry = Entry {
            class,
            topic: topic.to_string(),
            payload: payload(place.number),
            retain,
        };
        let value = entry.encode();
        let size = (8 + value.len()) as u64;
        let room = self.room(&meta, class, coalesce, &place, size)?;
        let (removed, removed_bytes) = self.write(&place, &room, coalesce.is_some(), &value)?;
        // The indexes follow the transaction, ordered so that a crash in between leaves
        // only harmless leftovers (module note).
        if let Some((c, s)) = room.victim {
            self.shed.remove(shed_key(c, s))?;
        }
        if !room.shed_self {
            if class.sheddable() {
                self.shed.insert(shed_key(class, place.seq), &[])?;
            }
            if let Some(ck) = coalesce {
                self.coalesce
                    .insert(ck.as_bytes(), &index_value(place.seq, place.number))?;
            }
            meta.len += 1;
            meta.bytes += size;
            if !place.in_place {
                meta.checkpoint(place.seq);
            }
        }
        meta.len = meta.len.saturating_sub(removed);
        meta.bytes = meta.bytes.saturating_sub(removed_bytes);
        self.db.flush()?;
        Ok((place.seq, room.shed))
    }

    /// Where a new message goes: a fresh key and the next number of its counter, or,
    /// for a notice still queued under its coalescing key, that one's key and number.
    fn place(&self, class: Class, coalesce: Option<&str>) -> Result<Place, StoreError> {
        // sled's ids start at 0; keep 0 free as "nothing".
        let fresh = self.db.generate_id()? + 1;
        let previous = match coalesce {
            Some(ck) => self
                .coalesce
                .get(ck.as_bytes())?
                .and_then(|v| parse_index(&v)),
            None => None,
        };
        let in_place = match previous {
            Some((s, n))
                if class == Class::Notice && n > 0 && self.main.contains_key(key(s))? =>
            {
                Some((s, n))
            }
            _ => None,
        };
        let (seq, number, bump) = match (in_place, counter(class)) {
            (Some((s, n)), _) => (s, n, None),
            (None, Some(c)) => {
                let n = be(self.meta.get(c)?) + 1;
                (fresh, n, Some((c, n)))
            }
            (None, None) => (fresh, 0, None),
        };
        Ok(Place {
            previous,
            in_place: in_place.is_some(),
            seq,
            number,
            bump,
        })
    }

    /// What a new message of `size` bytes displaces to stay within the bounds, and the
    /// shed totals it brings.
    fn room(
        &self,
        meta: &Meta,
        class: Class,
        coalesce: Option<&str>,
        place: &Place,
        size: u64,
    ) -> Result<Room, StoreError> {
        let mut room = Room::default();
        // A notice (the shed counter itself) never makes room, or its own count would
        // be stale the moment it is written. Nor does a coalesced message replacing a
        // queued version of itself: it takes that one's place, and shedding another
        // message for it would lose one for nothing (a SIM's state republished while
        // the outbox is full would shed an event each time).
        let replaces = match (coalesce, place.previous) {
            (Some(_), Some((old, _))) if old != place.seq => self.main.contains_key(key(old))?,
            _ => false,
        };
        if class != Class::Notice && !replaces && self.full(meta, size) {
            // Make room: telemetry first, then events. State, outcomes and notices are
            // never shed, so the bounds are targets, not hard limits, for them.
            room.victim = self
                .oldest(Class::Telemetry)?
                .map(|s| (Class::Telemetry, s))
                .or(if class == Class::Telemetry {
                    None
                } else {
                    self.oldest(Class::Event)?.map(|s| (Class::Event, s))
                });
            match room.victim {
                Some((Class::Telemetry, _)) => room.shed.telemetry += 1,
                Some(_) => room.shed.events += 1,
                // Nothing older may go: a new telemetry or event message is the one shed.
                None if class == Class::Telemetry => {
                    room.shed.telemetry += 1;
                    room.shed_self = true;
                }
                None if class == Class::Event => {
                    room.shed.events += 1;
                    room.shed_self = true;
                }
                None => {}
            }
        }
        if room.shed.any() {
            let t = self.shed_totals()?;
            room.totals = Some(Shed {
                telemetry: t.telemetry + room.shed.telemetry,
                events: t.events + room.shed.events,
            });
        }
        Ok(room)
    }

    /// The message, its number and what it displaces, in one transaction over the
    /// entries and the counters. Returns the entries and bytes that went.
    fn write(
        &self,
        place: &Place,
        room: &Room,
        coalesced: bool,
        value: &[u8],
    ) -> Result<(u64, u64), StoreError> {
        use sled::Transactional;
        (&self.main, &self.meta)
            .transaction(|(main, me)| -> TxResult<(u64, u64)> {
                // A shed message keeps its number: the gap it leaves is counted.
                if let Some((c, n)) = place.bump {
                    me.insert(c, &n.to_be_bytes())?;
                }
                if let Some(t) = room.totals {
                    me.insert("telemetry", &t.telemetry.to_be_bytes())?;
                    me.insert("events", &t.events.to_be_bytes())?;
                }
                let (mut removed, mut removed_bytes) = (0, 0);
                let mut remove = |s: u64| -> TxResult<()> {
                    if let Some(v) = main.remove(&key(s))? {
                        removed += 1;
                        removed_bytes += 8 + v.len() as u64;
                    }
                    Ok(())
                };
                if let Some((_, s)) = room.victim {
                    remove(s)?;
                }
                if room.shed_self {
                    return Ok((removed, removed_bytes));
                }
                if let Some((old, _)) = place.previous.filter(|(old, _)| *old != place.seq) {
                    if coalesced {
                        remove(old)?;
                    }
                }
                if let Some(old) = main.insert(&key(place.seq), value)? {
                    // Updated in place: the old version's bytes go.
                    removed += 1;
                    removed_bytes += 8 + old.len() as u64;
                }
                Ok((removed, removed_bytes))
            })
            .map_err(tx_error)
    }

    /// Queue a message once per `key`, ever: `Ok(false)` when a message under this key
    /// was queued before (still queued, or sent and acknowledged since). The key is
    /// the coalescing index's, which outlives the message: what makes an SMS taken
    /// from a modem again after a kill (queued, killed before the modem deleted it)
    /// reach the platform once. The index is written after the message (and flushed
    /// with it), so a crash between the two can only repeat, never lose. A message the
    /// bounds shed at once (the outbox full of what may not go) is `OutboxFull`, not a
    /// success: its caller still holds the original (an SMS stays on the modem).
    pub fn push_once(
        &self,
        class: Class,
        topic: &str,
        key: &str,
        payload: impl FnOnce(u64) -> Vec<u8>,
    ) -> Result<bool, StoreError> {
        if self.coalesce.contains_key(key.as_bytes())? {
            return Ok(false);
        }
        let (seq, _) = self.push(class, topic, false, Some(key), payload)?;
        if !self.main.contains_key(self::key(seq))? {
            return Err(StoreError::OutboxFull);
        }
        Ok(true)
    }

    /// The oldest queued entry of a sheddable class. An index entry whose message is
    /// gone (a crash between a push and its index update) is dropped on the way.
    fn oldest(&self, class: Class) -> Result<Option<u64>, StoreError> {
        for r in self.shed.scan_prefix([class.byte()]) {
            let (k, _) = r?;
            match seq_of(&k[1..]) {
                Some(s) if self.main.contains_key(key(s))? => return Ok(Some(s)),
                _ => {
                    self.shed.remove(k)?;
                }
            }
        }
        Ok(None)
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
        Ok(self.entries_after(cursor, 1)?.pop())
    }

    /// Up to `max` entries after `cursor` (None: from the head), in send order, read
    /// with one iterator: sled 0.34 copies the whole leaf an iterator starts in, so a
    /// window refilled entry by entry paid that copy once per message.
    pub fn entries_after(
        &self,
        cursor: Option<u64>,
        max: usize,
    ) -> Result<Vec<(u64, Entry)>, StoreError> {
        let _meta = self.lock();
        let from = match cursor {
            None => 0,
            Some(c) => match c.checked_add(1) {
                Some(n) => n,
                None => return Ok(Vec::new()),
            },
        };
        let mut out = Vec::new();
        if max == 0 {
            return Ok(out);
        }
        for r in self.main.range(key(from)..) {
            let (k, v) = r?;
            let seq = seq_of(&k).ok_or(StoreError::Corrupt {
                tree: MAIN,
                detail: "key is not a sequence number".into(),
            })?;
            out.push((seq, Entry::decode(seq, &v)?));
            if out.len() == max {
                break;
            }
        }
        Ok(out)
    }

    /// The broker acknowledged `seq`: forget it. Not flushed: a deletion lost in a power
    /// cut means one redelivery, which the contract allows (at least once, with `seq`
    /// for deduplication); flushing here would double the writes to flash.
    pub fn acknowledged(&self, seq: u64) -> Result<(), StoreError> {
        let mut meta = self.lock();
        // One lookup: the removal hands back the entry, whose class says whether a
        // shedding index entry goes too (a get first doubled the tree walks per PUBACK).
        if let Some(v) = self.main.remove(key(seq))? {
            meta.len = meta.len.saturating_sub(1);
            meta.bytes = meta.bytes.saturating_sub(8 + v.len() as u64);
            if let Some(class) = v.first().copied().and_then(Class::from_byte) {
                if class.sheddable() {
                    self.shed.remove(shed_key(class, seq))?;
                }
            }
        }
        Ok(())
    }

    /// How long the oldest queued message has waited at `now` (Unix seconds), in whole
    /// seconds; None when nothing waits. See `Meta::since`.
    pub fn oldest_age(&self, now: u64) -> Option<u64> {
        let mut meta = self.lock();
        let head = match self.main.first() {
            Ok(Some((k, _))) => seq_of(&k)?,
            Ok(None) | Err(_) => return None,
        };
        while meta.since.get(1).is_some_and(|(s, _)| *s <= head) {
            meta.since.pop_front();
        }
        meta.since.front().map(|(_, t)| now.saturating_sub(*t))
    }

    /// Bytes of the messages queued now (as counted against [`Limits::bytes`]).
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
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
        let ob = st.outbox(Limits::messages(100)).unwrap();
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
    fn a_batch_after_a_cursor_holds_at_most_max_entries_in_push_order() {
        let (st, dir) = store();
        let ob = st.outbox(Limits::messages(100)).unwrap();
        let seqs: Vec<u64> = ["a", "b", "c", "d"]
            .iter()
            .map(|p| push(&ob, Class::Event, "t/e", p, None).0)
            .collect();
        let payloads = |b: Vec<(u64, Entry)>| -> Vec<String> {
            b.into_iter()
                .map(|(_, e)| String::from_utf8(e.payload).unwrap())
                .collect()
        };
        assert_eq!(
            payloads(ob.entries_after(None, 3).unwrap()),
            ["a", "b", "c"]
        );
        assert_eq!(
            payloads(ob.entries_after(Some(seqs[1]), 16).unwrap()),
            ["c", "d"]
        );
        assert!(ob.entries_after(Some(seqs[3]), 16).unwrap().is_empty());
        assert!(ob.entries_after(None, 0).unwrap().is_empty());
        drop((ob, st));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_newer_state_replaces_the_queued_one_and_moves_behind_later_events() {
        let (st, dir) = store();
        let ob = st.outbox(Limits::messages(100)).unwrap();
        push(&ob, Class::State, "sim/1/state", "s1", Some("sim/1/state"));
        push(&ob, Class::Event, "events", "removed", None);
        push(&ob, Class::State, "sim/2/state", "x1", Some("sim/2/state"));
        push(&ob, Class::State, "sim/1/state", "s2", Some("sim/1/state"));
        assert_eq!(drain(&ob), ["removed", "x1", "s2"]);
        assert_eq!(ob.len(), 3);
        drop((ob, st));
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Regression: a once-per-key event shed at once by a full outbox was reported
    /// queued, and its SMS was deleted from the modem: lost for good.
    #[test]
    fn a_once_per_key_event_the_outbox_cannot_take_is_refused_not_reported_queued() {
        let (st, dir) = store();
        let ob = st.outbox(Limits::messages(2)).unwrap();
        let s1 = push(&ob, Class::State, "sim/1/state", "s1", Some("sim/1/state")).0;
        push(&ob, Class::State, "sim/2/state", "s2", Some("sim/2/state"));
        let once = || ob.push_once(Class::Event, "events", "once/sms-1", |_| b"sms".to_vec());
        assert!(matches!(once(), Err(StoreError::OutboxFull)));
        assert_eq!(drain(&ob), ["s1", "s2"]);
        // Room again: the same key is new, queued once.
        ob.acknowledged(s1).unwrap();
        assert!(once().unwrap());
        assert!(!once().unwrap());
        assert_eq!(drain(&ob), ["s2", "sms"]);
        drop((ob, st));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_full_outbox_sheds_telemetry_first_then_events_and_never_state() {
        let (st, dir) = store();
        let ob = st.outbox(Limits::messages(3)).unwrap();
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
        let ob = st.outbox(Limits::messages(10)).unwrap();
        for p in ["a", "b"] {
            push(&ob, Class::Telemetry, "u", p, None);
        }
        drop((ob, st));
        let st = Store::open(&dir).unwrap();
        let ob = st.outbox(Limits::messages(10)).unwrap();
        assert_eq!(ob.len(), 2);
        assert_eq!(drain(&ob), ["a", "b"]);
        let (s, _) = push(&ob, Class::Telemetry, "u", "c", None);
        assert!(s > 2, "numbering continues across a reopen");
        assert_eq!(drain(&ob), ["a", "b", "c"]);
        drop((ob, st));
        let _ = std::fs::remove_dir_all(dir);
    }

    fn number(ob: &Outbox, class: Class, topic: &str, ck: Option<&str>) -> u64 {
        let mut got = 0;
        ob.push(class, topic, false, ck, |n| {
            got = n;
            n.to_string().into_bytes()
        })
        .unwrap();
        got
    }

    #[test]
    fn events_are_numbered_one_by_one_across_reopens_apart_from_everything_else() {
        let (st, dir) = store();
        let ob = st.outbox(Limits::messages(100)).unwrap();
        assert_eq!(number(&ob, Class::Event, "e", None), 1);
        assert_eq!(number(&ob, Class::State, "s", Some("s")), 0);
        assert_eq!(number(&ob, Class::Outcome, "o", Some("o")), 0);
        assert_eq!(number(&ob, Class::Telemetry, "u", None), 1);
        assert_eq!(number(&ob, Class::Event, "e", None), 2);
        drop((ob, st));
        let st = Store::open(&dir).unwrap();
        let ob = st.outbox(Limits::messages(100)).unwrap();
        assert_eq!(
            number(&ob, Class::Event, "e", None),
            3,
            "no jump at a reopen"
        );
        assert_eq!(number(&ob, Class::Telemetry, "u", None), 2);
        drop((ob, st));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_queued_notice_is_updated_where_it_stands_and_keeps_its_number() {
        let (st, dir) = store();
        let ob = st.outbox(Limits::messages(100)).unwrap();
        assert_eq!(number(&ob, Class::Event, "e", None), 1);
        assert_eq!(number(&ob, Class::Notice, "e", Some("n")), 2);
        assert_eq!(number(&ob, Class::Event, "e", None), 3);
        assert_eq!(
            number(&ob, Class::Notice, "e", Some("n")),
            2,
            "still queued"
        );
        assert_eq!(drain(&ob), ["1", "2", "3"]);
        assert_eq!(ob.len(), 3);
        // Once it was sent, the next notice is a new event.
        let (s, _) = ob
            .next_after(Some(ob.next_after(None).unwrap().unwrap().0))
            .unwrap()
            .unwrap();
        ob.acknowledged(s).unwrap();
        assert_eq!(number(&ob, Class::Notice, "e", Some("n")), 4);
        drop((ob, st));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_newer_status_of_a_command_replaces_its_queued_older_ones() {
        let (st, dir) = store();
        let ob = st.outbox(Limits::messages(100)).unwrap();
        let c1 = Some("cmd/c1/status");
        push(&ob, Class::Outcome, "cmd/c1/status", "c1 received", c1);
        push(
            &ob,
            Class::Outcome,
            "cmd/c2/status",
            "c2 received",
            Some("cmd/c2/status"),
        );
        push(&ob, Class::Outcome, "cmd/c1/status", "c1 executing", c1);
        push(&ob, Class::Outcome, "cmd/c1/status", "c1 successful", c1);
        assert_eq!(drain(&ob), ["c2 received", "c1 successful"]);
        assert_eq!(ob.len(), 2);
        drop((ob, st));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_byte_bound_sheds_telemetry_first_and_counts_bytes_exactly() {
        let (st, dir) = store();
        let one = (8 + 4 + 1 + 100) as u64; // key, framing, topic "t", payload
        let ob = st
            .outbox(Limits {
                messages: u64::MAX,
                bytes: 3 * one,
                disk_reserve: 0,
            })
            .unwrap();
        let p = "x".repeat(100);
        push(&ob, Class::Telemetry, "t", &p, None);
        push(&ob, Class::Event, "t", &p, None);
        push(&ob, Class::State, "t", &p, Some("s"));
        assert_eq!(ob.bytes(), 3 * one);
        let (_, shed) = push(&ob, Class::Event, "t", &p, None);
        assert_eq!(shed.telemetry, 1, "the usage batch made room");
        assert_eq!((ob.len(), ob.bytes()), (3, 3 * one));
        drop((ob, st));
        // Reopened: the bytes are counted again from what is stored.
        let st = Store::open(&dir).unwrap();
        let ob = st.outbox(Limits::messages(100)).unwrap();
        assert_eq!(ob.bytes(), 3 * one);
        drop((ob, st));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_nearly_full_disk_sheds_telemetry_and_events_but_keeps_states_and_statuses() {
        let (st, dir) = store();
        // A reserve larger than any disk: the disk always counts as nearly full.
        let ob = st
            .outbox(Limits {
                messages: u64::MAX,
                bytes: u64::MAX,
                disk_reserve: u64::MAX,
            })
            .unwrap();
        assert_eq!(push(&ob, Class::Telemetry, "u", "u1", None).1.telemetry, 1);
        assert_eq!(push(&ob, Class::Event, "e", "e1", None).1.events, 1);
        push(&ob, Class::State, "s", "s1", Some("s"));
        push(&ob, Class::Outcome, "o", "o1", Some("o"));
        assert_eq!(drain(&ob), ["s1", "o1"]);
        assert_eq!(
            ob.shed_totals().unwrap(),
            Shed {
                telemetry: 1,
                events: 1
            }
        );
        drop((ob, st));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_disk_reserve_is_a_fraction_of_the_disk_between_its_floor_and_its_ceiling() {
        const GB: u64 = 1_000_000_000;
        // A small gateway's 32 MB partition: the floor.
        assert_eq!(reserve_of(32_000_000, 5), DISK_RESERVE_FLOOR);
        // A 1 GB card: 5 %.
        assert_eq!(reserve_of(GB, 5), 50_000_000);
        // A 250 GB server disk: the ceiling, not 12.5 GB (regression: every queued event
        // was shed with 12 GB free).
        assert_eq!(reserve_of(250 * GB, 5), DISK_RESERVE_CEILING);
    }

    #[test]
    fn with_the_link_up_an_event_passes_a_nearly_full_disk_until_a_queue_builds() {
        let (st, dir) = store();
        let ob = st
            .outbox(Limits {
                messages: u64::MAX,
                bytes: u64::MAX,
                disk_reserve: u64::MAX,
            })
            .unwrap();
        // Connected, a window of 2: two queued messages still pass through.
        ob.set_passing(2);
        assert!(!push(&ob, Class::Event, "e", "e1", None).1.any());
        assert!(!push(&ob, Class::Event, "e", "e2", None).1.any());
        // A third waits behind a full window: a queue, which the reserve guards.
        assert_eq!(push(&ob, Class::Event, "e", "e3", None).1.events, 1);
        // The link down: nothing passes.
        ob.set_passing(0);
        drain(&ob);
        assert_eq!(push(&ob, Class::Event, "e", "e4", None).1.events, 1);
        drop((ob, st));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_shed_index_entry_left_by_a_crash_is_skipped_not_counted_as_shed() {
        let (st, dir) = store();
        let ob = st.outbox(Limits::messages(2)).unwrap();
        let (gone, _) = push(&ob, Class::Telemetry, "u", "u1", None);
        push(&ob, Class::Telemetry, "u", "u2", None);
        // A crash between removing an entry and its index entry.
        ob.main.remove(key(gone)).unwrap();
        ob.lock().len -= 1;
        push(&ob, Class::Event, "e", "e1", None);
        let (_, shed) = push(&ob, Class::Event, "e", "e2", None);
        assert_eq!(shed.telemetry, 1, "u2 made room, not the missing u1");
        assert_eq!(drain(&ob), ["e1", "e2"]);
        drop((ob, st));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_oldest_age_follows_the_head_and_an_earlier_run_s_entries_count_from_the_start() {
        let (st, dir) = store();
        let ob = st.outbox(Limits::messages(100)).unwrap();
        assert_eq!(ob.oldest_age(crate::time::unix_now()), None);
        let (first, _) = push(&ob, Class::Event, "e", "e1", None);
        let now = crate::time::unix_now();
        // Queued now or a second before (the clock may tick in between).
        let age = ob.oldest_age(now + 30).unwrap();
        assert!((30..=31).contains(&age), "{age}");
        // Make the first one 100 s old; the second is queued now.
        ob.lock().since.front_mut().unwrap().1 -= 100;
        let (second, _) = push(&ob, Class::Event, "e", "e2", None);
        assert!(ob.oldest_age(now).unwrap() >= 100);
        // The first acknowledged: the head is the second, just queued.
        ob.acknowledged(first).unwrap();
        assert!(ob.oldest_age(now + 1).unwrap() <= 2);
        ob.acknowledged(second).unwrap();
        assert_eq!(ob.oldest_age(now), None);
        // Reopened with a message waiting: it counts from the reopening.
        push(&ob, Class::Event, "e", "e3", None);
        drop(ob);
        let ob = st.outbox(Limits::messages(100)).unwrap();
        let now = crate::time::unix_now();
        assert!(ob.oldest_age(now + 5).unwrap() >= 5);
        assert!(ob.oldest_age(now + 5).unwrap() <= 6);
        drop((ob, st));
        let _ = std::fs::remove_dir_all(dir);
    }
}

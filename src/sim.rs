//! The SIM record: what simgate observes about a SIM and what it caches from the
//! platform (README.md, "The SIM record"). Shared vocabulary of every subsystem; holds no
//! I/O.

use serde::{Deserialize, Serialize};

/// An enum whose variants each have exactly one wire word: the word serde writes and
/// reads, `Display` shows and `from_word` parses, declared once beside the variant. Every
/// closed vocabulary of the contract and the CLI is declared through it, so no code
/// turns an enum into its word any other way.
macro_rules! wire_words {
    ($(#[$m:meta])* pub enum $name:ident { $($(#[$vm:meta])* $var:ident = $word:literal,)+ }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vm])* $var,)+ }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$var),+];

            /// The one word for this variant on the wire and on screen.
            pub fn word(self) -> &'static str {
                match self { $($name::$var => $word,)+ }
            }

            pub fn from_word(s: &str) -> Option<$name> {
                match s { $($word => Some($name::$var),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.word())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.word())
            }
        }

        /// The words as a command-line flag's values: shells complete them, and a
        /// wrong one is refused naming the flag and the words.
        impl clap::ValueEnum for $name {
            fn value_variants<'a>() -> &'a [Self] {
                $name::ALL
            }

            fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
                Some(clap::builder::PossibleValue::new(self.word()))
            }
        }

        /// A string, one of the words (the schemas of schema/, MQTT.md).
        #[cfg(feature = "schema")]
        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({"type": "string", "enum": [$($word),+]})
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $name::from_word(&s)
                    .ok_or_else(|| serde::de::Error::unknown_variant(&s, &[$($word),+]))
            }
        }
    };
}
pub(crate) use wire_words;

wire_words! {
    /// Physical SIM or eSIM (an eUICC answered SELECT of its ISD-R).
    pub enum FormFactor {
        Physical = "physical",
        Esim = "esim",
    }
}

wire_words! {
    /// Whether the SIM is in a data session. `NotApplicable`: the integration cannot
    /// tell (a card in a PC/SC reader has no network session at all).
    #[derive(Default)]
    pub enum InSession {
        Yes = "yes",
        No = "no",
        #[default]
        NotApplicable = "n/a",
    }
}

wire_words! {
    /// Platform statuses, in the platform's own words (README.md, "The SIM record").
    /// simgate sets only `Pending` and `Invalid` itself; every other value comes from the
    /// platform.
    pub enum Status {
        NotAvailable = "Not available",
        Pending = "Pending",
        Blank = "Blank",
        ActivationReady = "Activation ready",
        Active = "Active",
        Suspended = "Suspended",
        Invalid = "Invalid",
    }
}

/// A key that may become an MQTT topic level and an idempotency key (command ids, rule
/// ids, firing and refill request ids): 1 to 64 of letters, digits, '-', '_', '.'.
pub fn valid_key(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Where a SIM sits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Location {
    /// A PC/SC reader, by its PC/SC name.
    Reader { reader: String },
    /// An AT modem, by its port, and the SIM slot when the modem has several.
    Modem {
        port: String,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        slot: Option<u8>,
    },
}

impl Location {
    /// A short human label: the reader name or `port[#slot]`.
    pub fn label(&self) -> String {
        match self {
            Location::Reader { reader } => reader.clone(),
            Location::Modem {
                port,
                slot: Some(s),
            } => format!("{port}#{s}"),
            Location::Modem { port, slot: None } => port.clone(),
        }
    }
}

/// What simgate itself observed about one SIM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Observed {
    pub iccid: String,
    /// The ICCID's Luhn check (ITU-T E.118). A failing ICCID is reported, never fixed;
    /// on the wire only when it fails (with `problem` and status Invalid).
    #[serde(skip_serializing_if = "is_true", default = "yes")]
    pub iccid_luhn_ok: bool,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub form_factor: Option<FormFactor>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub eid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub imsi: Option<String>,
    /// Service provider name from the SIM (EF.SPN).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub spn: Option<String>,
    /// An eUICC with no enabled profile (a Blank eSIM).
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub blank_esim: bool,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub imei: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub operator: Option<String>,
    /// MCC+MNC of the serving network (PAYGO prices differ by country).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub mcc_mnc: Option<String>,
    pub in_session: InSession,
    /// Answer-to-reset, hex, for cards in a reader.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub atr: Option<String>,
    pub location: Location,
    /// Present now (false once the card was removed or the modem lost it).
    pub present: bool,
    /// The modem this SIM sits in stopped answering (or its port vanished): what was
    /// last seen of the SIM stands, its session is unknown (`in_session` "n/a") until
    /// the modem answers again.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub modem_silent: bool,
    /// Unix seconds of the observation.
    pub observed_at: u64,
    /// Why simgate marks this SIM Invalid locally (Luhn failure, unreadable card ...).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub problem: Option<String>,
    /// Why simgate shows this SIM Pending: an operation on it is under way (a guided SIM
    /// swap, MQTT.md "Swap"). Set from the store's swap record each time the row is
    /// recorded, and gone once the operation ended.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pending: Option<String>,
    /// Batch attributes given at a reader station (--label, --company, --note), flat:
    /// `labels`, `company`, `note`.
    #[serde(flatten, default)]
    pub batch: Batch,
    /// Rows stored by simgate before the batch went flat kept it nested under "batch":
    /// read (see `store::sims`), never written.
    #[serde(rename = "batch", default, skip_serializing)]
    pub nested_batch: Option<Batch>,
    /// An eUICC's profiles as last listed (GSMA SGP.22 GetProfilesInfo): the enabled
    /// one's ICCID is this row's `iccid`. Absent on a physical SIM, and where the list
    /// could not be read.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub esim_profiles: Option<Vec<EsimProfile>>,
    /// The SIM's PIN lock as last seen (absent where it could not be told, e.g. a GSM
    /// SIM in a reader). The ICCID is read before any PIN, so a locked SIM has its row.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub lock: Option<Lock>,
}

/// A PIN or a PUK: digits only, never shown (Debug and Display print asterisks), so it
/// cannot reach a log line, an event or the store by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

/// A PIN or PUK that is not one, by what is wrong (never by its digits).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} must be {min} to 8 digits")]
pub struct SecretError {
    pub what: &'static str,
    pub min: usize,
}

impl Secret {
    /// A PIN: 4 to 8 decimal digits (TS 102 221 §9.5.2; TS 27.007 §8.3 carries the same).
    pub fn pin(s: &str) -> Result<Secret, SecretError> {
        Self::digits(s, 4, "a PIN")
    }

    /// A PUK (unblock PIN): 8 digits (TS 102 221 §9.5.2: the unblock key is 8 bytes).
    pub fn puk(s: &str) -> Result<Secret, SecretError> {
        Self::digits(s, 8, "a PUK")
    }

    fn digits(s: &str, min: usize, what: &'static str) -> Result<Secret, SecretError> {
        if (min..=8).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Secret(s.to_string()))
        } else {
            Err(SecretError { what, min })
        }
    }

    /// The digits, for the one place that sends them (an APDU, an AT line).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

wire_words! {
    /// The PIN operations, by their command names (MQTT.md, "PIN and PUK").
    pub enum PinOp {
        Verify = "pin_verify",
        Enable = "pin_enable",
        Disable = "pin_disable",
        Change = "pin_change",
        Unblock = "pin_unblock",
    }
}

/// A PIN operation asked for by the platform or a person: the PIN (the PUK of an
/// unblock), the new PIN of a change or an unblock, and whether the last attempt may
/// be spent (`force`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinRequest {
    pub op: PinOp,
    pub first: Secret,
    pub second: Option<Secret>,
    pub force: bool,
}

wire_words! {
    /// Whether the SIM lets its subscriber data and network be used now (TS 102 221
    /// §9.5: PIN1 and its unblock key; TS 27.007 §8.3 +CPIN's codes).
    pub enum LockState {
        /// PIN disabled, or verified since the SIM was powered.
        Ready = "ready",
        /// PIN1 enabled and not verified: IMSI and network are out of reach.
        PinRequired = "pin_required",
        /// PIN1 blocked (no attempt left): only the PUK unblocks it.
        PukRequired = "puk_required",
        /// The PUK too is exhausted: the SIM is dead for good.
        Blocked = "blocked",
    }
}

/// A SIM's PIN lock: its state, whether PIN1 is enabled, and the attempts left where
/// the hardware tells (a VERIFY or UNBLOCK PIN with no data in a reader, TS 102 221
/// §11.1.9 and §11.1.13; the family's counter command in a modem). Never a PIN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Lock {
    pub state: LockState,
    /// `None`: not told (a ready SIM in a reader: disabled or verified look alike).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pin_enabled: Option<bool>,
    /// PIN1 attempts left (3 on a fresh SIM).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pin_attempts: Option<u8>,
    /// PUK1 attempts left (10 on a fresh SIM).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub puk_attempts: Option<u8>,
}

impl Lock {
    /// A SIM that is usable now, with nothing else known.
    pub fn ready() -> Lock {
        Lock {
            state: LockState::Ready,
            pin_enabled: None,
            pin_attempts: None,
            puk_attempts: None,
        }
    }

    /// One line for people: "pin_required (3 attempts left)".
    pub fn summary(&self) -> String {
        let left = match (self.state, self.pin_attempts, self.puk_attempts) {
            (LockState::PukRequired | LockState::Blocked, _, Some(n)) => {
                format!(" ({n} PUK attempts left)")
            }
            (_, Some(n), _) => format!(" ({n} PIN attempts left)"),
            _ => String::new(),
        };
        let enabled = match (self.state, self.pin_enabled) {
            (LockState::Ready, Some(true)) => ", PIN enabled",
            (LockState::Ready, Some(false)) => ", PIN disabled",
            _ => "",
        };
        format!("{}{left}{enabled}", self.state)
    }
}

wire_words! {
    /// An eSIM profile's state (SGP.22 Annex H ProfileState: disabled(0), enabled(1)).
    pub enum ProfileState {
        Disabled = "disabled",
        Enabled = "enabled",
    }
}

wire_words! {
    /// An eSIM profile's class (SGP.22 Annex H ProfileClass: test(0), provisioning(1),
    /// operational(2)).
    pub enum ProfileClass {
        Test = "test",
        Provisioning = "provisioning",
        Operational = "operational",
    }
}

/// One profile on an eUICC (SGP.22 §5.7.15 ProfileInfo, the fields simgate shows).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct EsimProfile {
    pub iccid: String,
    pub state: ProfileState,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub provider: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub nickname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub class: Option<ProfileClass>,
}

fn is_true(b: &bool) -> bool {
    *b
}

fn yes() -> bool {
    true
}

/// Attributes a reader station attaches to every SIM of a batch; the platform's
/// labels, company and note (README.md, "The SIM record").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Batch {
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub labels: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub company: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub note: Option<String>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.company.is_none() && self.note.is_none()
    }
}

impl Observed {
    /// A SIM seen present at `location` now, with a Luhn-checked `iccid` and nothing
    /// else known yet: callers fill in what they observed.
    pub fn new(iccid: &str, iccid_luhn_ok: bool, location: Location, observed_at: u64) -> Observed {
        Observed {
            iccid: iccid.to_string(),
            iccid_luhn_ok,
            form_factor: None,
            eid: None,
            imsi: None,
            spn: None,
            blank_esim: false,
            imei: None,
            operator: None,
            mcc_mnc: None,
            in_session: InSession::NotApplicable,
            atr: None,
            location,
            present: true,
            modem_silent: false,
            observed_at,
            problem: None,
            pending: None,
            batch: Batch::default(),
            nested_batch: None,
            esim_profiles: None,
            lock: None,
        }
    }

    /// The status simgate may set on its own (README.md, "The SIM record": Pending and Invalid only). A
    /// Blank eSIM is an observation (`blank_esim`), not a status: "Blank" is the
    /// platform's word for a SIM without a line, and the platform says it. A broken
    /// card stays Invalid even while an operation is under way on it.
    pub fn local_status(&self) -> Option<Status> {
        if !self.iccid_luhn_ok || self.problem.is_some() {
            Some(Status::Invalid)
        } else if self.pending.is_some() {
            Some(Status::Pending)
        } else {
            None
        }
    }
}

/// simgate's local estimate of the platform's data and days left: the platform's figures
/// as of its record, less what simgate counted since, and days counted down by the
/// calendar (MQTT.md, "SIM state"). Replaced when a newer record arrives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Estimate {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub data_left_mb: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub days_left: Option<f64>,
    /// When the platform's figures were taken as the base (Unix seconds).
    pub since: u64,
}

wire_words! {
    /// SIM types (README.md, "The SIM record").
    pub enum SimType {
        Prepaid = "Prepaid",
        Subscription = "Subscription",
        Paygo = "PAYGO",
    }
}

/// What the platform owns about a SIM and simgate caches, so the local view and the
/// rules work offline (README.md, "The SIM record"). Every field is optional: the
/// platform sends what it knows. Unknown fields are ignored (a newer platform may send
/// more); sizes are checked by `link::contract` before a record is cached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PlatformRecord {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub status: Option<Status>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub plan: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub company: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub end_user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub data_left_mb: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub days_left: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sim_type: Option<SimType>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub labels: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub note: Option<String>,
    /// The platform's rules for this SIM, kept verbatim (evaluated in a later issue).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub rules: Vec<serde_json::Value>,
    /// Platform's own timestamp of this version (Unix seconds), when it sends one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub updated_at: Option<u64>,
    /// An eSIM's activation code, `LPA:1$<SM-DP+ address>$<matching id>` (GSMA SGP.22
    /// §4.1): what the station page's QR code carries (else the EID).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub activation_code: Option<String>,
    /// A Prepaid SIM's balance may be asked of its operator by USSD every this many
    /// hours (devices/operators; MQTT.md, "USSD and SMS"); absent or 0: never.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub operator_balance_hours: Option<u32>,
}

/// Test helper: every variant of a `wire_words!` vocabulary is its word on the wire, and
/// its word parses back to it.
#[cfg(test)]
pub(crate) fn check_wire_words<T>(all: &[T], word: fn(T) -> &'static str)
where
    T: Copy + PartialEq + std::fmt::Debug + Serialize + serde::de::DeserializeOwned,
{
    for &v in all {
        let json = serde_json::to_value(v).unwrap();
        assert_eq!(json, serde_json::Value::from(word(v)));
        assert_eq!(serde_json::from_value::<T>(json).unwrap(), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_wire_word_round_trips_through_serde_and_from_word() {
        check_wire_words(FormFactor::ALL, FormFactor::word);
        check_wire_words(InSession::ALL, InSession::word);
        check_wire_words(Status::ALL, Status::word);
        check_wire_words(SimType::ALL, SimType::word);
        check_wire_words(LockState::ALL, LockState::word);

        assert_eq!(
            Status::from_word("Activation ready"),
            Some(Status::ActivationReady)
        );
        assert!(serde_json::from_str::<Status>("\"active\"").is_err());
    }
}

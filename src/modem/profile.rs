//! Modem families as data: the schema of devices/modems/*.toml, its loader and its
//! checks. Every shipped file is compiled in (a gateway needs no data directory) and
//! loaded by a test; a user's override directory goes through the same checks, and an
//! error names the file and the field.

use crate::at::command::{expand, AtCommand};
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;

/// The profiles shipped in devices/modems, compiled in.
const SHIPPED: &[(&str, &str)] = &[
    (
        "quectel-ec2x.toml",
        include_str!("../../devices/modems/quectel-ec2x.toml"),
    ),
    (
        "quectel-bg9x.toml",
        include_str!("../../devices/modems/quectel-bg9x.toml"),
    ),
    (
        "simcom-sim76xx.toml",
        include_str!("../../devices/modems/simcom-sim76xx.toml"),
    ),
    (
        "ublox-sara-r5.toml",
        include_str!("../../devices/modems/ublox-sara-r5.toml"),
    ),
    (
        "telit-le910.toml",
        include_str!("../../devices/modems/telit-le910.toml"),
    ),
    (
        "sierra-at.toml",
        include_str!("../../devices/modems/sierra-at.toml"),
    ),
    (
        "generic-csim.toml",
        include_str!("../../devices/modems/generic-csim.toml"),
    ),
    (
        "generic-3gpp.toml",
        include_str!("../../devices/modems/generic-3gpp.toml"),
    ),
];

/// The profile used when no other matches.
pub const GENERIC: &str = "generic-3gpp";

/// One modem family. Every section says where its facts came from (`source`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Unique, used on the command line (`--profile quectel-ec2x`).
    pub name: String,
    /// Human description of the family.
    pub family: String,
    /// The document the file is based on as a whole (manual and revision, firmware).
    pub source: String,
    /// How to recognise the model from +CGMI / +CGMM (TS 27.007 §5.1, §5.2).
    #[serde(rename = "match", default)]
    pub matcher: Option<Matcher>,
    /// Final result codes beyond V.250's, if the family has any.
    #[serde(default)]
    pub vendor_finals: Vec<String>,
    /// URC prefixes the family sends beyond TS 27.007's.
    #[serde(default)]
    pub urcs: Vec<String>,
    /// URCs the modem sends when it has (re)started: its counters restarted and its
    /// settings are gone, so simgate identifies it again.
    #[serde(default)]
    pub boot_urcs: Vec<String>,
    pub init: Init,
    pub iccid: Iccid,
    pub registration: Sourced,
    pub session: Session,
    #[serde(default)]
    pub counters: Option<Counters>,
    #[serde(default)]
    pub hotplug: Option<Hotplug>,
    #[serde(default)]
    pub slots: Option<Slots>,
    /// How the family tells PIN1's and PUK1's attempts left; absent: TS 27.007 §8.65
    /// `AT+CPINR`.
    #[serde(default)]
    pub pin: Option<PinCounters>,
    pub euicc: Euicc,
    /// How the family takes a USSD string (src/modem/ussd.rs); absent: as text in the
    /// modem's character set (TS 27.007 §7.15).
    #[serde(default)]
    pub ussd: Option<UssdDialect>,
    pub timeouts: Timeouts,
    /// What the emulator pretends to be (`simgate emulate modem`).
    pub emulator: EmulatorIdentity,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Matcher {
    /// Case-insensitive substrings of the +CGMI answer.
    pub manufacturer: Vec<String>,
    /// Case-insensitive prefixes of the +CGMM answer.
    pub model: Vec<String>,
}

/// Command lines sent once the model is known: URC enables and the like.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Init {
    pub commands: Vec<String>,
    pub source: String,
}

/// A single command line and its provenance.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sourced {
    pub command: String,
    pub source: String,
}

/// How the family reports the ICCID. Absent vendor command: EF.ICCID through +CRSM.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Iccid {
    /// Vendor command, e.g. "AT+QCCID"; empty: use only +CRSM.
    pub command: Option<String>,
    /// Prefix of the reply line, e.g. "+QCCID:"; absent when the reply is the bare
    /// number.
    pub prefix: Option<String>,
    pub source: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Session {
    /// The context simgate suspends and resumes (TS 27.007 §10.1.1 <cid>).
    pub cid: u8,
    pub source: String,
}

/// A vendor data counter: one command, one reply line, two fields.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Counters {
    pub command: String,
    pub prefix: String,
    /// Zero-based index of the bytes-sent field in the reply.
    pub sent: usize,
    /// Zero-based index of the bytes-received field.
    pub received: usize,
    pub source: String,
}

/// SIM hot-plug reporting by URC.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hotplug {
    /// The URC's prefix, e.g. "+QSIMSTAT:".
    pub urc: String,
    /// Zero-based field of the URC holding the state.
    pub field: usize,
    /// Values of that field meaning "SIM removed".
    pub removed: Vec<String>,
    /// The value sent on insertion (what the emulator sends; any value not in
    /// `removed` means inserted to simgate).
    pub inserted: String,
    pub source: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slots {
    pub count: u8,
    /// The number the modem gives the first slot (0 or 1).
    pub first: u8,
    pub query: String,
    pub prefix: String,
    /// Template with `{slot}`, the modem's own number.
    pub select: String,
    pub source: String,
}

/// The family's PIN counter command: one reply line with the PIN1 and PUK1 attempts
/// left at `pin_field` and `puk_field` (zero-based); without them, the reply is
/// TS 27.007 §8.65's, a line per code (`+CPINR: SIM PIN,3,3`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinCounters {
    pub command: String,
    pub prefix: String,
    #[serde(default)]
    pub pin_field: Option<usize>,
    #[serde(default)]
    pub puk_field: Option<usize>,
    pub source: String,
}

impl PinCounters {
    /// TS 27.007 §8.65: `+CPINR[=<sel_code>]`, every code without one.
    pub fn standard() -> PinCounters {
        PinCounters {
            command: "AT+CPINR".into(),
            prefix: "+CPINR:".into(),
            pin_field: None,
            puk_field: None,
            source: "TS 27.007 §8.65".into(),
        }
    }
}

/// How a USSD string goes in +CUSD's <str> (TS 27.007 §7.15 leaves its coding to the
/// character set, and firmwares differ).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UssdSend {
    /// In the TE character set (+CSCS): plain text, or UCS2 hex when it is "UCS2".
    #[default]
    Text,
    /// GSM 7-bit packed, as hex (TS 23.038 §6.1.2.3), whatever +CSCS says; replies in
    /// GSM 7-bit come back packed the same way.
    PackedHex,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UssdDialect {
    #[serde(default)]
    pub send: UssdSend,
    pub source: String,
}

/// How the eUICC's ISD-R can be reached through this family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EuiccAccess {
    /// +CCHO / +CGLA / +CCHC (TS 27.007 §8.45, §8.43, §8.46).
    Ccho,
    /// The family refuses or mangles logical channels: form factor stays unknown.
    None,
}

/// Which AT command carries the APDUs to the ISD-R.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum EuiccTransport {
    /// +CCHO opens a logical channel to the ISD-R, +CGLA carries the APDUs on it (TS
    /// 27.007 §8.45, §8.43).
    #[default]
    Cgla,
    /// +CSIM carries whole command APDUs (TS 27.007 §8.17): MANAGE CHANNEL, SELECT and
    /// STORE DATA go as they are, the channel in their CLA; 61xx comes back to the TE,
    /// which sends GET RESPONSE itself. For families without a working +CGLA.
    Csim,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Euicc {
    pub access: EuiccAccess,
    /// The command the ISD-R's APDUs travel in (default +CGLA).
    #[serde(default)]
    pub transport: EuiccTransport,
    /// The family answers +CCHO with a `+CCHO: ` prefix instead of the bare session id
    /// of TS 27.007 §8.45 (simgate reads both; the emulator imitates this).
    #[serde(default)]
    pub ccho_prefixed: bool,
    /// The longest command APDU the family's +CGLA carries, in bytes (TS 27.007 §8.43
    /// leaves it to the MT; default 255, a short APDU's data).
    #[serde(default = "default_cgla_max")]
    pub cgla_max_apdu: usize,
    /// What makes the modem read its SIM again after a profile switch (SGP.22 §3.2.1:
    /// without refreshFlag the device must reset the eUICC): AT lines sent in order.
    #[serde(default = "default_refresh")]
    pub refresh: Vec<String>,
    pub source: String,
}

fn default_cgla_max() -> usize {
    260
}

/// A radio cycle (TS 27.007 §8.2: +CFUN=0 minimum functionality, +CFUN=1 full), which
/// every family shipped here re-reads its SIM on.
fn default_refresh() -> Vec<String> {
    vec!["AT+CFUN=0".into(), "AT+CFUN=1".into()]
}

/// Per-command timeouts, milliseconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// Plain queries (+CGMI, +CSQ ...).
    pub default_ms: u64,
    /// SIM access (ICCID, +CRSM, +CGLA): the SIM may be slow.
    pub sim_ms: u64,
    /// Network operations (+COPS, +CGACT=): the network decides.
    pub network_ms: u64,
    /// Radio on/off (+CFUN) and slot switching.
    pub radio_ms: u64,
    pub source: String,
}

impl Timeouts {
    pub fn default(&self) -> Duration {
        Duration::from_millis(self.default_ms)
    }
    pub fn sim(&self) -> Duration {
        Duration::from_millis(self.sim_ms)
    }
    pub fn network(&self) -> Duration {
        Duration::from_millis(self.network_ms)
    }
    pub fn radio(&self) -> Duration {
        Duration::from_millis(self.radio_ms)
    }
}

/// What the emulator answers to +CGMI / +CGMM / +CGMR.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmulatorIdentity {
    pub manufacturer: String,
    pub model: String,
    pub revision: String,
}

/// A profile that cannot be used, naming the file and the field.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("{file}: cannot read: {source}")]
    Io {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Syntax { file: String, message: String },
    #[error("{file}: field `{field}`: {message}")]
    Field {
        file: String,
        field: String,
        message: String,
    },
    /// An operator file (devices/operators, `<profile_dir>/operators`).
    #[error(transparent)]
    Operator(#[from] crate::operators::OperatorError),
}

impl Profile {
    /// Parse and check one profile; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Profile, ProfileError> {
        let p: Profile = toml::from_str(text).map_err(|e| {
            let (file, message) = crate::toml_error::toml_error_at(&e, text, file);
            ProfileError::Syntax { file, message }
        })?;
        p.check().map_err(|(field, message)| ProfileError::Field {
            file: file.to_string(),
            field,
            message,
        })?;
        Ok(p)
    }

    /// The named checks serde cannot express.
    fn check(&self) -> Result<(), (String, String)> {
        let cmd = |field: &str, text: &str| {
            AtCommand::new(text)
                .map(|_| ())
                .map_err(|e| (field.to_string(), e.to_string()))
        };
        let prefix = |field: &str, text: &str| {
            if text.ends_with(':') && text.len() > 1 {
                Ok(())
            } else {
                Err((
                    field.to_string(),
                    format!("{text:?}: a reply prefix ends with ':'"),
                ))
            }
        };
        let source = |field: &str, text: &str| {
            if text.trim().is_empty() {
                Err((
                    field.to_string(),
                    "every fact says where it came from".to_string(),
                ))
            } else {
                Ok(())
            }
        };
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err((
                "name".into(),
                "lowercase letters, digits and '-' only".into(),
            ));
        }
        source("source", &self.source)?;
        if let Some(m) = &self.matcher {
            if m.manufacturer.is_empty() || m.model.is_empty() {
                return Err((
                    "match".into(),
                    "needs at least one manufacturer and one model".into(),
                ));
            }
        } else if self.name != GENERIC {
            return Err((
                "match".into(),
                format!("only {GENERIC} may match every modem"),
            ));
        }
        for (i, c) in self.init.commands.iter().enumerate() {
            cmd(&format!("init.commands[{i}]"), c)?;
        }
        source("init.source", &self.init.source)?;
        for (i, u) in self.boot_urcs.iter().enumerate() {
            if !self.urcs.contains(u) {
                return Err((
                    format!("boot_urcs[{i}]"),
                    format!("{u:?} must also be listed in urcs"),
                ));
            }
        }
        for (i, u) in self.urcs.iter().enumerate() {
            // "+QSIMSTAT:" or a bare word such as Quectel's boot URC "RDY".
            if u.is_empty() || !u.bytes().all(|b| (0x20..0x7F).contains(&b)) {
                return Err((format!("urcs[{i}]"), "printable ASCII, not empty".into()));
            }
        }
        if let Some(c) = &self.iccid.command {
            cmd("iccid.command", c)?;
        }
        if let Some(p) = &self.iccid.prefix {
            prefix("iccid.prefix", p)?;
        }
        source("iccid.source", &self.iccid.source)?;
        cmd("registration.command", &self.registration.command)?;
        source("registration.source", &self.registration.source)?;
        source("session.source", &self.session.source)?;
        if let Some(c) = &self.counters {
            cmd("counters.command", &c.command)?;
            prefix("counters.prefix", &c.prefix)?;
            source("counters.source", &c.source)?;
            if c.sent == c.received {
                return Err((
                    "counters.received".into(),
                    "sent and received are the same field".into(),
                ));
            }
        }
        if let Some(h) = &self.hotplug {
            prefix("hotplug.urc", &h.urc)?;
            source("hotplug.source", &h.source)?;
            if h.removed.is_empty() {
                return Err((
                    "hotplug.removed".into(),
                    "at least one value means removed".into(),
                ));
            }
        }
        if let Some(s) = &self.slots {
            cmd("slots.query", &s.query)?;
            prefix("slots.prefix", &s.prefix)?;
            source("slots.source", &s.source)?;
            if !s.select.contains("{slot}") {
                return Err(("slots.select".into(), "needs the {slot} placeholder".into()));
            }
            expand(&s.select, &[("slot", u64::from(s.first))])
                .map_err(|e| ("slots.select".to_string(), e.to_string()))?;
            if s.count < 2 || s.first > 1 {
                return Err((
                    "slots.count".into(),
                    "two or more slots, numbered from 0 or 1".into(),
                ));
            }
        }
        if let Some(p) = &self.pin {
            cmd("pin.command", &p.command)?;
            prefix("pin.prefix", &p.prefix)?;
            source("pin.source", &p.source)?;
            if p.pin_field.is_some() != p.puk_field.is_some()
                || (p.pin_field.is_some() && p.pin_field == p.puk_field)
            {
                return Err((
                    "pin.puk_field".into(),
                    "pin_field and puk_field: both (different fields) or neither (the +CPINR form)"
                        .into(),
                ));
            }
        }
        source("euicc.source", &self.euicc.source)?;
        source("timeouts.source", &self.timeouts.source)?;
        let t = &self.timeouts;
        for (field, ms) in [
            ("timeouts.default_ms", t.default_ms),
            ("timeouts.sim_ms", t.sim_ms),
            ("timeouts.network_ms", t.network_ms),
            ("timeouts.radio_ms", t.radio_ms),
        ] {
            // Below 50 ms a healthy modem on a busy USB hub times out; above 10 min a
            // dead one blocks the port for too long (the longest TS 27.007 operation,
            // +COPS network scan, is bounded by 3 min in vendor manuals).
            if !(50..=600_000).contains(&ms) {
                return Err((field.into(), format!("{ms} ms: between 50 and 600000")));
            }
        }
        Ok(())
    }

    /// The PIN counter command: the family's, else TS 27.007's +CPINR.
    pub fn pin_counters(&self) -> PinCounters {
        self.pin.clone().unwrap_or_else(PinCounters::standard)
    }

    /// Whether this profile describes the modem that answered +CGMI / +CGMM.
    pub fn matches(&self, manufacturer: &str, model: &str) -> bool {
        let Some(m) = &self.matcher else {
            return false;
        };
        let manu = manufacturer.to_ascii_lowercase();
        let model = model.to_ascii_lowercase();
        m.manufacturer
            .iter()
            .any(|x| manu.contains(&x.to_ascii_lowercase()))
            && m.model
                .iter()
                .any(|x| model.starts_with(&x.to_ascii_lowercase()))
    }
}

/// The loaded set: shipped profiles, then user overrides replacing them by name.
#[derive(Debug, Clone)]
pub struct Profiles {
    list: Vec<Profile>,
    /// The operators' channels (src/operators.rs): shipped, and `operators/` of the
    /// override directory.
    operators: crate::operators::Operators,
}

impl Profiles {
    /// The shipped profiles only.
    pub fn shipped() -> Result<Profiles, ProfileError> {
        let list = SHIPPED
            .iter()
            .map(|(file, text)| Profile::parse(&format!("devices/modems/{file}"), text))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Profiles {
            list,
            operators: crate::operators::Operators::shipped()?,
        })
    }

    /// Shipped profiles plus every `*.toml` in `dir`, each validated the same way; a
    /// user file with a shipped name replaces it.
    pub fn with_overrides(dir: &Path) -> Result<Profiles, ProfileError> {
        let mut set = Self::shipped()?;
        let shown = dir.display().to_string();
        let paths = crate::toml_error::toml_files(dir).map_err(|source| ProfileError::Io {
            file: shown.clone(),
            source,
        })?;
        for path in paths {
            let file = path.display().to_string();
            let text = std::fs::read_to_string(&path).map_err(|source| ProfileError::Io {
                file: file.clone(),
                source,
            })?;
            set.replace(Profile::parse(&file, &text)?);
        }
        set.operators = crate::operators::Operators::with_overrides(&dir.join("operators"))?;
        Ok(set)
    }

    /// The operators' channels: balance queries, top-up patterns, emulated replies.
    pub fn operators(&self) -> &crate::operators::Operators {
        &self.operators
    }

    /// The same profiles with the ISD-R reached through `transport` whatever each family
    /// says: one port's override (`[modems] euicc_transport`), for a module whose
    /// firmware breaks the family's usual path (+CGLA failing inside a BPP on some
    /// releases, where only +CSIM works).
    pub fn with_euicc_transport(&self, transport: EuiccTransport) -> Profiles {
        let mut list = self.list.clone();
        for p in &mut list {
            p.euicc.transport = transport;
        }
        Profiles {
            list,
            operators: self.operators.clone(),
        }
    }

    /// Add a checked profile, replacing one of the same name.
    pub fn replace(&mut self, p: Profile) {
        self.list.retain(|q| q.name != p.name);
        self.list.push(p);
    }

    pub fn get(&self, name: &str) -> Option<&Profile> {
        self.list.iter().find(|p| p.name == name)
    }

    pub fn names(&self) -> Vec<&str> {
        self.list.iter().map(|p| p.name.as_str()).collect()
    }

    /// The profile for a modem, the generic one when nothing matches.
    pub fn recognise(&self, manufacturer: &str, model: &str) -> &Profile {
        self.list
            .iter()
            .find(|p| p.matches(manufacturer, model))
            .or_else(|| self.get(GENERIC))
            // `shipped()` always loads the generic profile and overrides only replace
            // it with another generic one; an empty set cannot be built.
            .unwrap_or(&self.list[0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped_text(name: &str) -> &'static str {
        SHIPPED
            .iter()
            .find(|(f, _)| *f == name)
            .map(|(_, t)| *t)
            .expect("shipped file")
    }

    #[test]
    fn every_shipped_profile_loads_and_names_are_unique() {
        let set = Profiles::shipped().unwrap();
        let mut names = set.names();
        assert_eq!(names.len(), SHIPPED.len());
        names.sort();
        names.dedup();
        assert_eq!(names.len(), SHIPPED.len());
        assert!(set.get(GENERIC).is_some());
    }

    #[test]
    fn models_are_recognised_and_unknown_ones_fall_back_to_generic() {
        let set = Profiles::shipped().unwrap();
        assert_eq!(set.recognise("Quectel", "EC25").name, "quectel-ec2x");
        assert_eq!(set.recognise("Quectel", "BG96").name, "quectel-bg9x");
        assert_eq!(
            set.recognise("SIMCOM INCORPORATED", "SIMCOM_SIM7600G-H")
                .name,
            "simcom-sim76xx"
        );
        assert_eq!(
            set.recognise("u-blox", "SARA-R510M8S").name,
            "ublox-sara-r5"
        );
        assert_eq!(set.recognise("Telit", "LE910C1-EU").name, "telit-le910");
        assert_eq!(
            set.recognise("Sierra Wireless, Incorporated", "EM7455")
                .name,
            "sierra-at"
        );
        assert_eq!(set.recognise("ACME", "X1").name, GENERIC);
    }

    #[test]
    fn unknown_key_is_rejected_with_file_and_field() {
        let text = shipped_text("quectel-ec2x.toml").replace("[iccid]", "[iccid]\nspeed = 3");
        let err = Profile::parse("my.toml", &text).unwrap_err().to_string();
        assert!(err.starts_with("my.toml:"), "{err}");
        assert!(err.contains("speed"), "{err}");
    }

    #[test]
    fn a_command_with_a_control_character_is_rejected_naming_the_field() {
        let text = shipped_text("quectel-ec2x.toml").replace(
            "command = \"AT+QCCID\"",
            "command = \"AT+QCCID\\rAT+CFUN=0\"",
        );
        let err = Profile::parse("my.toml", &text).unwrap_err().to_string();
        assert!(err.contains("field `iccid.command`"), "{err}");
    }

    #[test]
    fn a_fact_without_source_is_rejected() {
        let text = shipped_text("telit-le910.toml").replacen("source = \"", "source = \" \" #", 1);
        let err = Profile::parse("t.toml", &text).unwrap_err().to_string();
        assert!(err.contains("`source`"), "{err}");
    }

    #[test]
    fn override_directory_replaces_by_name_and_is_validated() {
        let dir = std::env::temp_dir().join(format!("simgate-prof-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good =
            shipped_text("generic-3gpp.toml").replace("default_ms = 1000", "default_ms = 2000");
        std::fs::write(dir.join("generic.toml"), good).unwrap();
        let set = Profiles::with_overrides(&dir).unwrap();
        assert_eq!(set.get(GENERIC).unwrap().timeouts.default_ms, 2000);
        std::fs::write(dir.join("zz-bad.toml"), "name = 3").unwrap();
        let err = Profiles::with_overrides(&dir).unwrap_err().to_string();
        assert!(err.contains("zz-bad.toml"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

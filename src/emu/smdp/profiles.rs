//! The test SM-DP+'s profiles, as data (devices/smdp/profiles.toml): what each matching
//! ID releases, and the SAIP profile package built from it.
//!
//! The package (the plaintext of the BPP's 86 segments, SGP.22 §2.5.2) is a sequence of
//! ProfileElements of the TCA eUICC Profile Package: Interoperable Format (SAIP) v2.3,
//! DER of its PEDefinitions ASN.1 module (AUTOMATIC TAGS): the ProfileHeader with the
//! ICCID, the MF with EF.ICCID, a USIM with EF.IMSI, optionally a non-standard filler,
//! and the End element. Template files not listed are created with the templates'
//! defaults by the eUICC (SAIP §8.3); nothing here is a working network profile (no keys).

use crate::card::iccid::Iccid;
use crate::emu::rsp::der::encode;
use serde::Deserialize;
use std::collections::HashSet;
use std::path::Path;

/// The profiles file: `[[profile]]` tables.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfilesFile {
    #[serde(default, rename = "profile")]
    pub profiles: Vec<Profile>,
}

/// One downloadable profile.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// The activation code's matching ID (SGP.22 §4.1) that releases this profile.
    pub matching_id: String,
    /// ICCID digits (18–20, ITU-T E.118).
    pub iccid: String,
    /// IMSI digits (6–15, 3GPP TS 23.003 §2.2), written to the USIM's EF.IMSI.
    pub imsi: String,
    /// profileName of the metadata (StoreMetadataRequest tag 92, at most 64 characters).
    pub name: String,
    /// serviceProviderName (tag 91, at most 32 characters).
    pub provider: String,
    /// profileClass (tag 95): `test`, `provisioning` or `operational` (the default).
    #[serde(default)]
    pub class: ProfileClass,
    /// When set, the download needs this confirmation code (SGP.22 §3.1.3.1: hashCc).
    pub confirmation_code: Option<String>,
    /// Grow the profile package to about this many bytes with a non-standard filler
    /// element (real operational profiles are 10–30 KB: a BPP of many 86 segments).
    pub package_bytes: Option<usize>,
}

/// SGP.22 ProfileClass ::= INTEGER {test(0), provisioning(1), operational(2)}.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProfileClass {
    Test,
    Provisioning,
    #[default]
    Operational,
}

impl ProfileClass {
    fn value(self) -> u8 {
        match self {
            ProfileClass::Test => 0,
            ProfileClass::Provisioning => 1,
            ProfileClass::Operational => 2,
        }
    }
}

/// A profiles file that cannot be used: the file, and the field with what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ProfilesError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl ProfilesFile {
    pub fn load(path: &Path) -> Result<ProfilesFile, ProfilesError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ProfilesError::Io {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&text).map_err(|message| ProfilesError::Invalid {
            path: shown,
            message,
        })
    }

    /// Parse and validate; the error names the field (`profile[1].imsi: …`).
    pub fn parse(text: &str) -> Result<ProfilesFile, String> {
        let file: ProfilesFile = crate::toml_error::from_str(text)?;
        let mut ids = HashSet::new();
        let mut iccids = HashSet::new();
        for (i, p) in file.profiles.iter().enumerate() {
            let at = |field: &str, why: String| format!("profile[{i}].{field}: {why}");
            if p.matching_id.is_empty() || !p.matching_id.is_ascii() {
                return Err(at("matching_id", "must be non-empty ASCII".into()));
            }
            if !ids.insert(p.matching_id.as_str()) {
                return Err(at(
                    "matching_id",
                    format!("{:?} given twice", p.matching_id),
                ));
            }
            let iccid = Iccid::from_digits(&p.iccid).map_err(|e| at("iccid", e.to_string()))?;
            if !iccid.as_str().chars().all(|c| c.is_ascii_digit()) || iccid.as_str() != p.iccid {
                return Err(at("iccid", "must be 18 to 20 decimal digits".into()));
            }
            if !iccids.insert(p.iccid.as_str()) {
                return Err(at("iccid", format!("{} given twice", p.iccid)));
            }
            if !(6..=15).contains(&p.imsi.len()) || !p.imsi.chars().all(|c| c.is_ascii_digit()) {
                return Err(at(
                    "imsi",
                    "must be 6 to 15 decimal digits (TS 23.003 §2.2)".into(),
                ));
            }
            // SGP.22 StoreMetadataRequest: profileName SIZE(0..64), serviceProviderName
            // SIZE(0..32), in characters of a UTF8String.
            if p.name.chars().count() > 64 {
                return Err(at(
                    "name",
                    "at most 64 characters (SGP.22 profileName)".into(),
                ));
            }
            if p.provider.chars().count() > 32 {
                return Err(at(
                    "provider",
                    "at most 32 characters (SGP.22 serviceProviderName)".into(),
                ));
            }
            if p.confirmation_code.as_deref() == Some("") {
                return Err(at(
                    "confirmation_code",
                    "empty; leave it out for none".into(),
                ));
            }
            if p.package_bytes.is_some_and(|n| n > 1 << 20) {
                return Err(at("package_bytes", "at most 1 MiB".into()));
            }
        }
        Ok(file)
    }

    /// The profile a matching ID releases.
    pub fn by_matching_id(&self, id: &str) -> Option<&Profile> {
        self.profiles.iter().find(|p| p.matching_id == id)
    }
}

/// ICCID digits to the 10 bytes of EF.ICCID (TS 102 221 §13.2: swapped nibbles,
/// F-padded), the coding of SGP.22's Iccid (tag 5A).
pub fn iccid_bytes(digits: &str) -> Vec<u8> {
    crate::emu::vcard::iccid_to_ef(digits)
}

/// ICCID digits to the ProfileHeader's iccid: BCD in written order, F-padded to 10
/// bytes, as GSMA's TS.48 test packages code it (8949449999999990049 → 89 49 44 99 99
/// 99 99 90 04 9F), unlike EF.ICCID's swapped nibbles.
fn header_iccid(digits: &str) -> Vec<u8> {
    let mut nibbles: Vec<u8> = digits
        .bytes()
        .map(|b| b.wrapping_sub(b'0') & 0x0F)
        .collect();
    nibbles.resize(20, 0xF);
    nibbles.chunks(2).map(|p| p[0] << 4 | p[1]).collect()
}

/// EF.IMSI (TS 31.102 §4.2.2): length byte, then the parity nibble (9 odd, 1 even digit
/// count, with type "IMSI") and the digits in swapped-nibble BCD, F-padded to 9 bytes.
pub fn imsi_ef(imsi: &str) -> Vec<u8> {
    let mut nibbles = vec![if imsi.len() % 2 == 1 { 0x9 } else { 0x1 }];
    nibbles.extend(imsi.bytes().map(|b| b.wrapping_sub(b'0') & 0x0F));
    if nibbles.len() % 2 == 1 {
        nibbles.push(0xF);
    }
    let mut out = vec![(nibbles.len() / 2) as u8];
    out.extend(nibbles.chunks(2).map(|p| p[1] << 4 | p[0]));
    out.resize(9, 0xFF);
    out
}

// TCA SAIP v2.3 §8.3 template OIDs (2.23.143.1.2.x), DER contents.
const TEMPLATE_MF: &[u8] = &[0x67, 0x81, 0x0F, 0x01, 0x02, 0x01];
const TEMPLATE_USIM: &[u8] = &[0x67, 0x81, 0x0F, 0x01, 0x02, 0x04];
/// The USIM application's AID (ETSI TS 101 220 Annex E: RID A000000087, 3GPP USIM
/// 1002), with the commonly used extension FF33FF01 89000001 00.
const USIM_AID: &[u8] = &[
    0xA0, 0x00, 0x00, 0x00, 0x87, 0x10, 0x02, 0xFF, 0x33, 0xFF, 0x01, 0x89, 0x00, 0x00, 0x01, 0x00,
];
/// issuerID of the filler element: 2.999 (ITU-T X.660's example arc).
const FILLER_ISSUER: &[u8] = &[0x88, 0x37];

fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

/// PEHeader ::= SEQUENCE { mandated [0] NULL OPTIONAL, identification [1] UInt15 }.
fn pe_header(id: u8) -> Vec<u8> {
    encode(0xA0, &encode(0x81, &[id]))
}

/// File ::= SEQUENCE OF CHOICE { …, fillFileContent [3] OCTET STRING }: one file with
/// its contents.
fn file_with(tag: u32, contents: &[u8]) -> Vec<u8> {
    encode(tag, &encode(0x83, contents))
}

impl Profile {
    /// The SAIP profile package (unprotected), as the SM-DP+ binds it.
    pub fn package(&self) -> Vec<u8> {
        let iccid = iccid_bytes(&self.iccid);
        // ProfileElement ::= CHOICE { header [0], …, nonStandard [9], end [10], …,
        // mf [16], …, usim [19], … } (AUTOMATIC TAGS: A0, A9, AA, B0, B3).
        let header = encode(
            0xA0,
            &cat(&[
                encode(0x80, &[2]),                 // major-version: SAIP v2.3
                encode(0x81, &[3]),                 // minor-version
                encode(0x82, self.name.as_bytes()), // profileType
                encode(0x83, &header_iccid(&self.iccid)),
                // eUICC-Mandatory-services: usim [1], milenage [4].
                encode(0xA5, &cat(&[encode(0x81, &[]), encode(0x84, &[])])),
                // eUICC-Mandatory-GFSTEList: the templates this package uses.
                encode(
                    0xA6,
                    &cat(&[encode(0x06, TEMPLATE_MF), encode(0x06, TEMPLATE_USIM)]),
                ),
            ]),
        );
        // PE-MF { mf-header [0], templateID [1], mf [2], ef-pl [3], ef-iccid [4],
        // ef-dir [5], ef-arr [6] }.
        let mf = encode(
            0xB0,
            &cat(&[
                pe_header(1),
                encode(0x81, TEMPLATE_MF),
                encode(0xA2, &[]),
                file_with(0xA4, &iccid),
                encode(0xA5, &[]),
                encode(0xA6, &[]),
            ]),
        );
        // PE-USIM { usim-header [0], templateID [1], adf-usim [2], ef-imsi [3],
        // ef-arr [4], …, ef-ust [8], …, ef-spn [13], ef-est [14], …, ef-acc [18], …,
        // ef-ecc [22] }; the ADF's fileDescriptor [1] Fcp carries its AID as dfName [4].
        let usim = encode(
            0xB3,
            &cat(&[
                pe_header(2),
                encode(0x81, TEMPLATE_USIM),
                encode(0xA2, &encode(0xA1, &encode(0x84, USIM_AID))),
                file_with(0xA3, &imsi_ef(&self.imsi)),
                encode(0xA4, &[]),
                encode(0xA8, &[]),
                encode(0xAD, &[]),
                encode(0xAE, &[]),
                encode(0xB2, &[]),
                encode(0xB6, &[]),
            ]),
        );
        let end = encode(0xAA, &pe_header(4));
        let mut package = cat(&[header, mf, usim]);
        if let Some(want) = self.package_bytes {
            // PE-NonStandard { nonStandard-header [0], issuerID [1], content [2] }.
            let room = want.saturating_sub(package.len() + end.len() + 24);
            if room > 0 {
                let content: Vec<u8> = (0..room).map(|i| (i % 251) as u8).collect();
                package.extend(encode(
                    0xA9,
                    &cat(&[
                        pe_header(3),
                        encode(0x81, FILLER_ISSUER),
                        encode(0x82, &content),
                    ]),
                ));
            }
        }
        package.extend(end);
        package
    }

    /// The StoreMetadataRequest (BF25, SGP.22 §5.5.3): ICCID, provider, name, class,
    /// and — when `notify` is given — notificationConfigurationInfo asking the eUICC for
    /// enable, disable and delete notifications to that SM-DP+ address (as osmo-smdpp
    /// does: one entry per operation).
    pub fn metadata(&self, notify: Option<&str>) -> Vec<u8> {
        let mut fields = vec![
            encode(0x5A, &iccid_bytes(&self.iccid)),
            encode(0x91, self.provider.as_bytes()),
            encode(0x92, self.name.as_bytes()),
            encode(0x95, &[self.class.value()]),
        ];
        if let Some(address) = notify {
            // NotificationConfigurationInformation ::= SEQUENCE { profileManagementOperation
            // NotificationEvent, notificationAddress UTF8String } (AUTOMATIC TAGS: 80,
            // 81); NotificationEvent ::= BIT STRING {install(0), enable(1), disable(2),
            // delete(3)}, one bit set, in DER's shortest form (unused bits, then the byte).
            let events: [&[u8]; 3] = [&[0x06, 0x40], &[0x05, 0x20], &[0x04, 0x10]];
            let list: Vec<u8> = events
                .iter()
                .flat_map(|bits| {
                    encode(
                        0x30,
                        &[encode(0x80, bits), encode(0x81, address.as_bytes())].concat(),
                    )
                })
                .collect();
            fields.push(encode(0xB6, &list));
        }
        encode(0xBF25, &cat(&fields))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::card::subscriber::decode_imsi;
    use crate::emu::rsp::der;

    const ONE: &str = r#"
[[profile]]
matching_id = "A"
iccid = "8900101000000000019"
imsi = "001010000000001"
name = "Test"
provider = "simgate"
"#;

    #[test]
    fn a_profile_builds_a_package_with_its_iccid_and_imsi() {
        let f = ProfilesFile::parse(ONE).unwrap();
        let p = f.by_matching_id("A").unwrap();
        assert_eq!(p.class, ProfileClass::Operational);
        let pkg = p.package();
        let pes = der::all(&pkg).unwrap();
        let tags: Vec<u32> = pes.iter().map(|d| d.tag).collect();
        assert_eq!(tags, [0xA0, 0xB0, 0xB3, 0xAA]);
        let header = der::all(pes[0].value).unwrap();
        // The header codes the ICCID in written digit order (as TS.48's packages do),
        // EF.ICCID in the MF with swapped nibbles (TS 102 221 §13.2).
        let iccid = header.iter().find(|d| d.tag == 0x83).unwrap().value;
        assert_eq!(hex::encode_upper(iccid), "8900101000000000019F");
        let mf = der::all(pes[1].value).unwrap();
        let ef_iccid = der::one(mf.iter().find(|d| d.tag == 0xA4).unwrap().value).unwrap();
        assert_eq!(hex::encode_upper(ef_iccid.value), "980001010000000010F9");
        let usim = der::all(pes[2].value).unwrap();
        let ef_imsi = der::one(usim.iter().find(|d| d.tag == 0xA3).unwrap().value).unwrap();
        assert_eq!(ef_imsi.tag, 0x83);
        assert_eq!(
            decode_imsi(ef_imsi.value).as_deref(),
            Some("001010000000001")
        );
        let md = p.metadata(Some("127.0.0.1:1"));
        assert_eq!(der::one(&md).unwrap().tag, 0xBF25);
    }

    #[test]
    fn package_bytes_grows_the_package_with_a_filler_element() {
        let text = format!("{ONE}package_bytes = 20000\n");
        let f = ProfilesFile::parse(&text).unwrap();
        let pkg = f.profiles[0].package();
        assert!((19_900..=20_000).contains(&pkg.len()), "{}", pkg.len());
        let tags: Vec<u32> = der::all(&pkg).unwrap().iter().map(|d| d.tag).collect();
        assert_eq!(tags, [0xA0, 0xB0, 0xB3, 0xA9, 0xAA]);
    }

    #[test]
    fn a_bad_field_is_named() {
        let bad = ONE.replace("001010000000001", "00101x");
        let e = ProfilesFile::parse(&bad).unwrap_err();
        assert!(e.starts_with("profile[0].imsi:"), "{e}");
        let e = ProfilesFile::parse(&format!("{ONE}colour = 1\n")).unwrap_err();
        assert!(e.contains("colour"), "{e}");
        let twice = format!(
            "{ONE}{}",
            ONE.replace("8900101000000000019", "8900101000000000027")
        );
        let e = ProfilesFile::parse(&twice).unwrap_err();
        assert!(e.starts_with("profile[1].matching_id:"), "{e}");
    }

    #[test]
    fn the_shipped_profiles_load() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("devices/smdp/profiles.toml");
        let f = ProfilesFile::load(&path).unwrap();
        assert!(!f.profiles.is_empty());
        for p in &f.profiles {
            assert!(der::all(&p.package()).is_ok());
        }
    }
}

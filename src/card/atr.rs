//! What an answer-to-reset says about the card (ISO/IEC 7816-3 §8.2, ETSI TS 102 221
//! §6.3). Pure.

/// Does the ATR declare eUICC-related functions? ETSI TS 102 221 §6.3.3: in the first TB
/// of the group introduced by T=15 (global interface bytes), b8 and b2 both set. Android's
/// telephony stack reads the same bits. A card that does not say so may still be an
/// eUICC (older and removable ones often do not): this is a hint to look further, never
/// a reason to look less for the standard ISD-R.
pub fn declares_euicc(atr: &[u8]) -> bool {
    // ISO/IEC 7816-3 §8.2.2: TS, then T0 whose high nibble Y1 says which of TA1 TB1 TC1
    // TD1 follow; each TDi's high nibble says the same for group i+1 and its low nibble
    // names the protocol T of that group.
    let Some(&t0) = atr.get(1) else {
        return false;
    };
    let mut y = t0 >> 4;
    let mut at = 2;
    let mut protocol = None::<u8>;
    // At most 4 groups in practice; bounded by the ATR's own length anyway.
    while at < atr.len() {
        let has = |bit: u8| y & bit != 0;
        let ta = has(0x1);
        let tb = has(0x2);
        let tc = has(0x4);
        let td = has(0x8);
        if ta {
            at += 1;
        }
        if tb {
            if protocol == Some(15) {
                return atr.get(at).is_some_and(|b| b & 0x82 == 0x82);
            }
            at += 1;
        }
        if tc {
            at += 1;
        }
        if !td {
            return false;
        }
        let Some(&tdi) = atr.get(at) else {
            return false;
        };
        at += 1;
        if protocol == Some(15) {
            // The first T=15 group had no TB: no declaration.
            return false;
        }
        protocol = Some(tdi & 0x0F);
        y = tdi >> 4;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::declares_euicc;

    #[test]
    fn tb_after_t15_with_b8_and_b2_declares_an_euicc() {
        // TD2 = 3F (T=15, TA3 TB3 follow), TB3 = 82.
        let euicc = hex::decode("3B9F97C00A3FC6828031E073FE211F65D002341512810F51").unwrap();
        assert!(declares_euicc(&euicc));
    }

    #[test]
    fn a_plain_usim_atr_does_not() {
        // sysmoUSIM-SJS1: T=15 group with TA3 only.
        let usim = hex::decode("3B9F96801FC78031A073BE21136743200718000001A5").unwrap();
        assert!(!declares_euicc(&usim));
        // TB3 = A0: b8 set, b2 not.
        let other = hex::decode("3B9F96803FC7A08031E073FE211B6357AD810F6B").unwrap();
        assert!(!declares_euicc(&other));
        assert!(!declares_euicc(&[0x3B]));
        assert!(!declares_euicc(&hex::decode("3B1694718001050000").unwrap()));
    }
}

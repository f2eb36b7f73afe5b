//! What an observation changes, as the platform's events. Pure: no store, no link.

use crate::contract::EventKind;
use crate::sim::Observed;

/// Equal in everything the platform sees, the observation time aside.
pub fn same_but_time(a: &Observed, b: &Observed) -> bool {
    let mut b = b.clone();
    b.observed_at = a.observed_at;
    *a == b
}

/// The events `obs` implies, given the SIM's previous observation and the SIMs it
/// replaced at its location.
pub fn events(prev: Option<&Observed>, obs: &Observed, replaced: &[Observed]) -> Vec<EventKind> {
    let mut out = Vec::new();
    let was_present = prev.is_some_and(|p| p.present);
    match (was_present, obs.present) {
        (false, true) => {
            for old in replaced {
                out.push(EventKind::Swapped {
                    iccid: obs.iccid.clone(),
                    replaced: old.iccid.clone(),
                    location: obs.location.clone(),
                });
            }
            out.push(EventKind::Inserted {
                iccid: obs.iccid.clone(),
                location: obs.location.clone(),
            });
        }
        (true, false) => out.push(EventKind::Removed {
            iccid: obs.iccid.clone(),
            // Where it was, which is where the removal happened.
            location: prev.map_or_else(|| obs.location.clone(), |p| p.location.clone()),
        }),
        (true, true) => {
            let Some(p) = prev else { return out };
            if p.location != obs.location {
                out.push(EventKind::Removed {
                    iccid: obs.iccid.clone(),
                    location: p.location.clone(),
                });
                out.push(EventKind::Inserted {
                    iccid: obs.iccid.clone(),
                    location: obs.location.clone(),
                });
            }
            for (field, old, new) in [
                ("imsi", &p.imsi, &obs.imsi),
                ("imei", &p.imei, &obs.imei),
                ("eid", &p.eid, &obs.eid),
            ] {
                // Unknown → known is learning, not a change.
                if old.is_some() && old != new {
                    out.push(EventKind::IdentityChanged {
                        iccid: obs.iccid.clone(),
                        field: field.into(),
                        old: old.clone(),
                        new: new.clone(),
                    });
                }
            }
        }
        (false, false) => {}
    }
    if let Some(problem) = &obs.problem {
        if prev.and_then(|p| p.problem.as_ref()) != Some(problem) {
            out.push(EventKind::Error {
                iccid: Some(obs.iccid.clone()),
                code: crate::contract::RefusalCode::Failed,
                reason: problem.clone(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::Location;

    fn obs(iccid: &str, reader: &str, present: bool) -> Observed {
        let at = Location::Reader {
            reader: reader.into(),
        };
        Observed {
            present,
            ..Observed::new(iccid, true, at, 1)
        }
    }

    fn types(evs: &[EventKind]) -> Vec<String> {
        evs.iter()
            .map(|e| {
                serde_json::to_value(e).unwrap()["type"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn insertion_removal_and_swap_become_events() {
        let a = obs("8988211000000430010", "R0", true);
        assert_eq!(types(&events(None, &a, &[])), ["inserted"]);
        let gone = obs("8988211000000430010", "R0", false);
        assert_eq!(types(&events(Some(&a), &gone, &[])), ["removed"]);
        let b = obs("8988211000000430028", "R0", true);
        assert_eq!(
            types(&events(None, &b, std::slice::from_ref(&gone))),
            ["swapped", "inserted"]
        );
        assert!(events(Some(&gone), &gone, &[]).is_empty());
    }

    #[test]
    fn an_imsi_change_is_an_identity_change_but_learning_one_is_not() {
        let mut a = obs("8988211000000430010", "R0", true);
        let mut b = a.clone();
        b.imsi = Some("001010123456789".into());
        assert!(events(Some(&a), &b, &[]).is_empty());
        a.imsi = Some("001010000000001".into());
        assert_eq!(types(&events(Some(&a), &b, &[])), ["identity_changed"]);
    }

    #[test]
    fn only_the_time_differing_is_no_change() {
        let a = obs("8988211000000430010", "R0", true);
        let mut b = a.clone();
        b.observed_at = 99;
        assert!(same_but_time(&a, &b));
        b.present = false;
        assert!(!same_but_time(&a, &b));
    }
}

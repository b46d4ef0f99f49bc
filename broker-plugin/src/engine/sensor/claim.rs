//! What a PUBLISH's `devid-sensor*` properties claim (DEVID-S1), read once and checked for
//! form before the claim is looked at.

#![deny(unsafe_code)]

use crate::refusal::SensorRefusal;

use devid_sensor::PROP_SEQ as SENSOR_SEQ;
use devid_sensor::{PROP_MAC as SENSOR_MAC, PROP_SEAL as SENSOR_SEAL, PROP_SENSOR as SENSOR};

/// What a PUBLISH's `devid-sensor*` properties claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::engine) struct Claim<'a> {
    pub sensor: &'a str,
    pub seq: u64,
    pub proof: Proof,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::engine) enum Proof {
    Mac([u8; 16]),
    Seal,
}

/// Reads the sensor claim of a PUBLISH from its `devid-*` properties. None: no `devid-sensor*`
/// property at all (not a sensor reading). A claim that is present but malformed is refused,
/// and names the sensor when its ClientID could be read.
pub(in crate::engine) fn parse_claim<'a>(
    props: &[(&'a str, &'a str)],
) -> Option<Result<Claim<'a>, (Option<&'a str>, SensorRefusal)>> {
    let mut sensor = None;
    let mut seq = None;
    let mut mac = None;
    let mut seal = None;
    let mut own_claim = false;
    let mut any = false;
    let mut repeated = None;
    let mut unknown = false;
    for &(k, v) in props {
        let slot = match k {
            SENSOR => &mut sensor,
            SENSOR_SEQ => &mut seq,
            SENSOR_MAC => &mut mac,
            SENSOR_SEAL => &mut seal,
            "devid-seq" | "devid-mac" | "devid-seal" => {
                own_claim = true;
                continue;
            }
            _ => {
                if k.starts_with(SENSOR) {
                    any = true;
                    unknown = true;
                }
                continue;
            }
        };
        any = true;
        if slot.replace(v).is_some() {
            repeated = Some(k);
        }
    }
    if !any {
        return None;
    }
    let named = sensor.filter(|s| devid_core::clientid::validate(s).is_ok());
    let fail = |what: &'static str| Some(Err((named, SensorRefusal::Malformed(what))));
    if repeated.is_some() {
        return fail("a devid-sensor property is repeated");
    }
    if unknown {
        return fail("unknown devid-sensor property");
    }
    if own_claim {
        return fail("devid-seq, devid-mac or devid-seal with devid-sensor");
    }
    let Some(sensor) = named else {
        return fail("devid-sensor is not a ClientID");
    };
    let Some(Ok(seq)) = seq.map(|s| devid_sensor::parse_seq(s.as_bytes())) else {
        return fail("devid-sensor-seq is not a decimal 1..2^64");
    };
    let proof = match (mac, seal) {
        (Some(tag), None) => match devid_sensor::decode_b64url_16(tag.as_bytes()) {
            Ok(t) => Proof::Mac(t),
            Err(_) => return fail("devid-sensor-mac is not 16 bytes of base64url"),
        },
        (None, Some("1")) => Proof::Seal,
        (None, Some(_)) => return fail("devid-sensor-seal is not 1"),
        _ => return fail("exactly one of devid-sensor-mac and devid-sensor-seal"),
    };
    Some(Ok(Claim { sensor, seq, proof }))
}

//! A gateway's relay of sensor readings (DEVID-S1): each reading from the link becomes a
//! PUBLISH on the gateway's own connection with `devid-sensor`, `devid-sensor-seq` and
//! `devid-sensor-mac` or `devid-sensor-seal` = 1. The gateway copies what the sensor computed;
//! it holds no sensor key and verifies nothing (the broker does).

use std::collections::HashMap;

use devid_sensor::{encode_b64url, frame, PROP_MAC, PROP_SEAL, PROP_SENSOR, PROP_SEQ};

use crate::link::{LinkReading, SensorName, Target};
use crate::mqtt::QoS;
use crate::OutgoingMessage;

/// The ClientIDs of sensors that name themselves by a one-byte index on the link.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexTable(HashMap<u8, String>);

impl IndexTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses `N=CLIENTID` (N in 0..=255).
    pub fn add(&mut self, entry: &str) -> Result<(), RelayError> {
        let bad = || RelayError::BadIndexEntry(entry.to_owned());
        let (n, id) = entry.split_once('=').ok_or_else(bad)?;
        let n: u8 = n.parse().map_err(|_| bad())?;
        let mut topic = [0u8; 64];
        // A ClientID the frame format could carry itself (1-23 of [0-9A-Za-z]).
        frame::channel_topic(id.as_bytes(), b"x", &mut topic).map_err(|_| bad())?;
        if self.0.insert(n, id.to_owned()).is_some() {
            return Err(RelayError::DuplicateIndex(n));
        }
        Ok(())
    }

    pub fn get(&self, n: u8) -> Option<&str> {
        self.0.get(&n).map(String::as_str)
    }
}

/// Why a reading was not relayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    #[error("sensor index {0} is not in the index table")]
    UnknownIndex(u8),
    #[error("{0:?} is not N=CLIENTID")]
    BadIndexEntry(String),
    #[error("sensor index {0} given twice")]
    DuplicateIndex(u8),
}

/// The sensor's ClientID for a reading.
pub fn sensor_id<'a>(r: &'a LinkReading, table: &'a IndexTable) -> Result<&'a str, RelayError> {
    match &r.sensor {
        SensorName::Id(id) => Ok(id),
        SensorName::Index(n) => table.get(*n).ok_or(RelayError::UnknownIndex(*n)),
    }
}

/// The PUBLISH that carries a reading: to `devices/<id>/<channel>` or the frame's topic, the
/// payload as the sensor sent it, and the DEVID-S1 properties.
pub fn message_for(
    r: &LinkReading,
    table: &IndexTable,
    qos: QoS,
) -> Result<OutgoingMessage, RelayError> {
    let id = sensor_id(r, table)?;
    let topic = match &r.target {
        Target::Channel(c) => format!("devices/{id}/{c}"),
        Target::Topic(t) => t.clone(),
    };
    let mut msg = OutgoingMessage::new(topic, r.payload.clone(), qos);
    msg.user_properties = vec![
        (PROP_SENSOR.to_owned(), id.to_owned()),
        (PROP_SEQ.to_owned(), r.seq.to_string()),
        match &r.mac {
            Some(mac) => (
                PROP_MAC.to_owned(),
                String::from_utf8_lossy(&encode_b64url(mac)).into_owned(),
            ),
            None => (PROP_SEAL.to_owned(), "1".to_owned()),
        },
    ];
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(sensor: SensorName, target: Target, mac: Option<[u8; 16]>) -> LinkReading {
        LinkReading {
            sensor,
            seq: 42,
            target,
            payload: b"21.5".to_vec(),
            mac,
        }
    }

    #[test]
    fn a_mac_reading_becomes_a_publish_with_the_sensor_properties() {
        let r = reading(
            SensorName::Id("TMP0A1B2C3".into()),
            Target::Channel("temp".into()),
            Some([0xff; 16]),
        );
        let m = message_for(&r, &IndexTable::new(), QoS::AtLeastOnce).expect("message");
        assert_eq!(m.topic, "devices/TMP0A1B2C3/temp");
        assert_eq!(m.payload, b"21.5");
        assert_eq!(m.qos, QoS::AtLeastOnce);
        let props: Vec<(&str, &str)> = m
            .user_properties
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            props,
            [
                ("devid-sensor", "TMP0A1B2C3"),
                ("devid-sensor-seq", "42"),
                ("devid-sensor-mac", "_____________________w"),
            ]
        );
    }

    #[test]
    fn a_sealed_indexed_reading_uses_the_table_and_its_topic() {
        let mut table = IndexTable::new();
        table.add("3=SENSOR3").expect("entry");
        let r = reading(
            SensorName::Index(3),
            Target::Topic("plant/boiler".into()),
            None,
        );
        let m = message_for(&r, &table, QoS::AtMostOnce).expect("message");
        assert_eq!(m.topic, "plant/boiler");
        assert_eq!(m.user_properties[0].1, "SENSOR3");
        assert_eq!(
            m.user_properties[2],
            ("devid-sensor-seal".to_owned(), "1".to_owned())
        );
        let unknown = reading(SensorName::Index(4), Target::Channel("t".into()), None);
        assert_eq!(
            message_for(&unknown, &table, QoS::AtMostOnce).err(),
            Some(RelayError::UnknownIndex(4))
        );
    }

    #[test]
    fn index_entries_are_checked() {
        let mut t = IndexTable::new();
        for bad in ["3", "x=ID", "256=ID", "1=has/slash", "1="] {
            assert!(t.add(bad).is_err(), "{bad}");
        }
        t.add("1=A").expect("ok");
        assert_eq!(t.add("1=B"), Err(RelayError::DuplicateIndex(1)));
    }
}

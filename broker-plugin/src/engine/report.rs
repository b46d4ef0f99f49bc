//! What the engine tells the outside: log lines for the broker's log (`ffi` writes them after
//! each callback), and messages for the service thread (connection events, status fetches),
//! sent without ever blocking the broker.

#![deny(unsafe_code)]

use devid_core::api::{ConnectionEvent, ConnectionEventKind};

use super::{AuthOutcome, Engine, ServerSide};
use crate::refusal::{Refusal, SensorRefusal};
use crate::service::{LogLevel, ToService};

impl<S: ServerSide> Engine<S> {
    /// Log lines produced since the last call (`ffi` writes them to the broker log).
    pub fn take_logs(&mut self) -> Vec<(LogLevel, String)> {
        std::mem::take(&mut self.logs)
    }

    pub(super) fn log(&mut self, level: LogLevel, msg: String) {
        self.logs.push((level, msg));
    }

    pub(super) fn send(&self, msg: ToService) {
        // Never block the broker: when the queue is full the event is dropped.
        let _ = self.try_send(msg);
    }

    /// Sends without blocking; false when the queue is full or gone.
    pub(super) fn try_send(&self, msg: ToService) -> bool {
        match &self.to_service {
            Some(tx) => tx.try_send(msg).is_ok(),
            None => true,
        }
    }

    /// Logs and reports a refused sensor reading (an `auth_failure` event named for the
    /// sensor, from the gateway's address).
    pub(super) fn sensor_refused(
        &mut self,
        gateway: &str,
        address: Option<&str>,
        sensor: Option<&str>,
        topic: &str,
        reason: SensorRefusal,
    ) {
        self.log(
            LogLevel::Notice,
            format!(
                "devid: refused reading of sensor {} via {gateway} on {topic:?}: {reason} [{}]",
                sensor.unwrap_or("?"),
                reason.name()
            ),
        );
        self.send(ToService::Event(ConnectionEvent {
            kind: ConnectionEventKind::AuthFailure,
            client_id: sensor.unwrap_or("").to_string(),
            at: rfc3339_now(),
            address: address.map(str::to_string),
            reason: Some(format!("{reason} (relayed by {gateway})")),
            refusal: Some(reason.name().to_string()),
            broker: self.config.broker_name.clone(),
            auth: None,
            serial: None,
            sw_version: None,
        }));
    }

    pub(super) fn event(
        &self,
        kind: ConnectionEventKind,
        client_id: &str,
        address: Option<&str>,
        refusal: Option<&Refusal>,
    ) {
        self.send(ToService::Event(ConnectionEvent {
            kind,
            client_id: client_id.to_string(),
            at: rfc3339_now(),
            address: address.map(str::to_string),
            reason: refusal.map(Refusal::to_string),
            refusal: refusal.map(|r| r.name().to_string()),
            broker: self.config.broker_name.clone(),
            auth: None,
            serial: None,
            sw_version: None,
        }));
    }

    /// Logs and reports a refusal; the broker answers CONNACK 0x87.
    pub(super) fn refuse(
        &mut self,
        client_id: &str,
        address: Option<&str>,
        refusal: Refusal,
    ) -> AuthOutcome {
        self.log(
            LogLevel::Notice,
            format!(
                "devid: refused client {client_id:?} from {}: {refusal} [{}]",
                address.unwrap_or("?"),
                refusal.name()
            ),
        );
        self.event(
            ConnectionEventKind::AuthFailure,
            client_id,
            address,
            Some(&refusal),
        );
        AuthOutcome::Deny
    }
}

pub(crate) fn rfc3339_now() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_string())
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::METHOD;
    use devid_core::api::ConnectionEventKind;

    use crate::service::ToService;

    #[test]
    fn refusals_are_reported_and_logged_by_kind() {
        let (mut e, _s, mut rx) = engine();
        e.auth_start(
            1,
            Some(METHOD),
            b"hello:dev2:1",
            Some("dev1"),
            Some("10.0.0.9"),
        );
        e.auth_start(2, Some(METHOD), &[1, 2, 3], Some("dev1"), None);
        e.auth_continue(3, b"finish", Some("dev1"), None);
        let events: Vec<(Option<String>, Option<String>)> = drain(&mut rx)
            .into_iter()
            .filter_map(|m| match m {
                ToService::Event(ev) if ev.kind == ConnectionEventKind::AuthFailure => {
                    Some((ev.refusal, ev.reason))
                }
                _ => None,
            })
            .collect();
        let kinds: Vec<_> = events.iter().map(|(k, _)| k.as_deref()).collect();
        assert_eq!(
            kinds,
            [
                Some("client_id_mismatch"),
                Some("bad_auth_method"),
                Some("no_exchange")
            ]
        );
        // The reason text is what the service has always stored.
        assert_eq!(
            events[0].1.as_deref(),
            Some("ClientID differs from the certificate or ticket")
        );
        let logs = e.take_logs();
        assert!(
            logs.iter().any(|(_, l)| l
                == "devid: refused client \"dev1\" from 10.0.0.9: ClientID differs from the certificate or ticket [client_id_mismatch]"),
            "{logs:?}"
        );
    }
}

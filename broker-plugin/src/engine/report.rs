//! What the engine tells the outside: log lines for the broker's log (`ffi` writes them after
//! each callback), and messages for the service thread (connection events, status fetches),
//! sent without ever blocking the broker.

#![deny(unsafe_code)]

use devid_core::api::{AuthMethod, ConnectionEvent, ConnectionEventKind};
use devid_core::SwVersion;

use super::{AuthOutcome, Engine, ServerSide, Verified, Via};
use crate::refusal::{Refusal, SensorRefusal};
use crate::service::{LogLevel, ToService};
use crate::state::normalize_serial;

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

    /// Reports an admitted connection: how it authenticated, with which certificate, and the
    /// software version its CONNECT reported.
    pub(super) fn connected(
        &self,
        identity: &Verified,
        via: Via,
        address: Option<&str>,
        sw_version: Option<&SwVersion>,
    ) {
        self.send(ToService::Event(ConnectionEvent {
            kind: ConnectionEventKind::Connect,
            client_id: identity.client_id.clone(),
            at: rfc3339_now(),
            address: address.map(str::to_string),
            reason: None,
            refusal: None,
            broker: self.config.broker_name.clone(),
            auth: Some(match via {
                Via::Devid1 if identity.resumed => AuthMethod::Resumption,
                Via::Devid1 => AuthMethod::Devid1,
                Via::MutualTls => AuthMethod::MutualTls,
            }),
            serial: Some(normalize_serial(&identity.serial)),
            sw_version: sw_version.map(|v| v.as_str().to_string()),
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
    use super::super::{AuthOutcome, METHOD};
    use devid_core::api::{AuthMethod, ConnectionEvent, ConnectionEventKind};

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

    fn events(rx: &mut tokio::sync::mpsc::Receiver<ToService>) -> Vec<ConnectionEvent> {
        drain(rx)
            .into_iter()
            .filter_map(|m| match m {
                ToService::Event(ev) => Some(ev),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn connects_say_how_with_which_certificate_and_software() {
        let (mut e, _s, mut rx) = engine_with(|c| c.broker_name = Some("b1".into()));
        // DEVID-1 full exchange, with a software version in the User Name.
        e.connecting_with(Some("dev1"), Some("devid-sw=fw 1.2.3"));
        connect(&mut e, 1, "dev1", "0A1F");
        // A resumption, without one; mutual TLS with an invalid one (ignored, logged).
        e.connecting_with(Some("dev2"), None);
        e.auth_start(
            2,
            Some(METHOD),
            b"resume:dev2:00ff",
            Some("dev2"),
            Some("10.0.0.2"),
        );
        e.auth_continue(2, b"finish", Some("dev2"), Some("10.0.0.2"));
        e.connecting_with(Some("dev3"), Some("devid-sw=caf\u{e9}"));
        e.basic_auth(3, Some(b"hello:dev3:3c"), Some("dev3"), None);
        // A User Name that is not a version, on its own: nothing.
        e.connecting_with(Some("dev4"), Some("operator"));
        connect(&mut e, 4, "dev4", "4d");
        let got: Vec<_> = events(&mut rx)
            .into_iter()
            .map(|ev| {
                assert_eq!(ev.kind, ConnectionEventKind::Connect);
                assert_eq!(ev.broker.as_deref(), Some("b1"));
                (ev.client_id, ev.auth, ev.serial, ev.sw_version)
            })
            .collect();
        let s = |v: &str| Some(v.to_string());
        assert_eq!(
            got,
            vec![
                (
                    "dev1".into(),
                    Some(AuthMethod::Devid1),
                    s("0a1f"),
                    s("fw 1.2.3")
                ),
                ("dev2".into(), Some(AuthMethod::Resumption), s("ff"), None),
                ("dev3".into(), Some(AuthMethod::MutualTls), s("3c"), None),
                ("dev4".into(), Some(AuthMethod::Devid1), s("4d"), None),
            ]
        );
        assert!(e
            .take_logs()
            .iter()
            .any(|(_, l)| l.contains("\"dev3\" reported a software version that has U+00E9")));
    }

    #[test]
    fn every_authenticated_connection_that_ends_is_reported_once() {
        let (mut e, _s, mut rx) = engine_with(|c| c.broker_name = Some("b1".into()));
        connect(&mut e, 1, "dev1", "0a");
        connect(&mut e, 2, "dev2", "0b");
        connect(&mut e, 3, "dev3", "0c");
        // A handshake that never authenticated: no disconnect.
        e.auth_start(4, Some(METHOD), b"hello:dev4:0d", Some("dev4"), None);
        drain(&mut rx);
        e.disconnect(1);
        // A failed re-authentication ends the connection (the broker then closes it).
        assert_eq!(
            e.auth_start(2, Some(METHOD), b"hello:dev9:0b", Some("dev2"), None),
            AuthOutcome::Deny
        );
        e.disconnect(2);
        // A re-authentication abandoned by a closing client.
        assert!(matches!(
            e.auth_start(3, Some(METHOD), b"hello:dev3:0c", Some("dev3"), None),
            AuthOutcome::Continue(_)
        ));
        e.disconnect(3);
        e.disconnect(4);
        let got: Vec<_> = events(&mut rx)
            .into_iter()
            .filter(|ev| ev.kind == ConnectionEventKind::Disconnect)
            .map(|ev| (ev.client_id, ev.address, ev.broker))
            .collect();
        let addr = Some("127.0.0.1".to_string());
        let b = Some("b1".to_string());
        assert_eq!(
            got,
            vec![
                ("dev1".into(), addr.clone(), b.clone()),
                ("dev2".into(), addr.clone(), b.clone()),
                ("dev3".into(), addr, b),
            ]
        );
    }
}

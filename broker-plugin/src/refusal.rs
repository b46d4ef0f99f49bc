//! Why the plugin refuses a device or a message, as types: each refusal has the MQTT reason
//! code the client gets, a stable snake_case name (logs, the `refusal` field of `auth_failure`
//! events, anything that counts refusals by kind) and a `Display` text (the log line and the
//! event's `reason`, which the service stores: keep these texts stable).

#![deny(unsafe_code)]

use devid_core::clientid::ClientIdError;
use devid_core::protocol::{self, REASON_BAD_AUTH_METHOD, REASON_NOT_AUTHORIZED};

use crate::state::Denial;

/// Why a CONNECT, an AUTH or a live connection was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No TICK event since start: revocations cannot be applied.
    #[error("plugin misconfigured: no TICK (per_listener_settings true?)")]
    NoTick,
    /// The service has not been reached for longer than `max_staleness`.
    #[error("revocation state stale; failing closed")]
    StateStale,
    #[error("empty ClientID")]
    EmptyClientId,
    #[error("bad ClientID: {0}")]
    BadClientId(ClientIdError),
    /// `plugin_opt_max_pending_handshakes` reached.
    #[error("too many unfinished handshakes ({pending}, plugin_opt_max_pending_handshakes)")]
    TooManyPending { pending: usize },
    /// `plugin_opt_max_pending_per_address` reached for this source.
    #[error(
        "too many unfinished handshakes from {source_group} ({pending}, plugin_opt_max_pending_per_address)"
    )]
    TooManyPendingFromSource {
        source_group: String,
        pending: usize,
    },
    /// The source's ClientHello bucket is empty (`plugin_opt_hello_rate`).
    #[error(
        "ClientHello rate from {source_group} above {rate} per second (plugin_opt_hello_rate)"
    )]
    HelloRate { source_group: String, rate: u32 },
    /// The DEVID-1 protocol or the certificate check refused.
    #[error("{0}")]
    Protocol(protocol::Error),
    /// The CONNECT's ClientID is not the one in the certificate or ticket.
    #[error("ClientID differs from the certificate or ticket")]
    ClientIdMismatch,
    /// Mutual TLS: the CONNECT's ClientID is not the certificate's.
    #[error("ClientID differs from the certificate")]
    CertificateClientIdMismatch,
    #[error("re-authentication with another identity")]
    ReauthOtherIdentity,
    /// The revocation state refuses the device or its certificate.
    #[error("{}", .0.as_str())]
    Denied(Denial),
    #[error("source address {address} not in the device's allow-list")]
    AddressNotAllowed { address: String },
    /// The device's model admits LDevIDs only (`connect_with ldevid`) and the certificate is
    /// the IDevID (or, for a resumption, not known to be an LDevID).
    #[error("connect_with ldevid: certificate {serial} is {}", if *.known { "an IDevID, not an LDevID" } else { "not known to be an LDevID (resumed from a ticket)" })]
    LdevidRequired { serial: String, known: bool },
    #[error("AUTH without a DEVID-1 exchange in progress")]
    NoExchange,
    #[error("AUTH after authentication completed")]
    AuthAfterSuccess,
    /// The ClientFinish came after `auth_timeout`.
    #[error("authentication timed out")]
    TimedOut,
    /// No ClientFinish within `auth_timeout`: the plugin closes the connection.
    #[error("authentication timed out (no answer within {secs} s); closing the connection")]
    Abandoned { secs: u64 },
    /// A CONNECT without an authentication method and without a client certificate.
    #[error("no DEVID-1 authentication and no client certificate")]
    NoCredentials,
    /// `plugin_opt_max_refused_messages` refused PUBLISHes in a row.
    #[error("too many refused messages")]
    TooManyRefusedMessages,
}

impl Refusal {
    /// The MQTT v5 reason code of the refusal: 0x8C (Bad authentication method) for an
    /// unknown DEVID-1 version, 0x87 (Not authorized) for everything else. (For
    /// `TooManyRefusedMessages` the connection is dropped; 0x87 is what its PUBLISHes got.)
    pub fn reason_code(&self) -> u8 {
        match self {
            Refusal::Protocol(e) => e.reason_code(),
            _ => REASON_NOT_AUTHORIZED,
        }
    }

    /// True when the broker should answer CONNACK 0x8C (the plugin defers).
    pub fn is_bad_method(&self) -> bool {
        self.reason_code() == REASON_BAD_AUTH_METHOD
    }

    /// A stable snake_case name, for counting refusals by kind.
    pub fn name(&self) -> &'static str {
        match self {
            Refusal::NoTick => "no_tick",
            Refusal::StateStale => "state_stale",
            Refusal::EmptyClientId => "empty_client_id",
            Refusal::BadClientId(_) => "bad_client_id",
            Refusal::TooManyPending { .. } => "too_many_pending",
            Refusal::TooManyPendingFromSource { .. } => "too_many_pending_from_source",
            Refusal::HelloRate { .. } => "hello_rate",
            Refusal::Protocol(e) => protocol_name(e),
            Refusal::ClientIdMismatch | Refusal::CertificateClientIdMismatch => {
                "client_id_mismatch"
            }
            Refusal::ReauthOtherIdentity => "reauth_other_identity",
            Refusal::Denied(Denial::DeviceRevoked) => "device_revoked",
            Refusal::Denied(Denial::DeviceSuspended) => "device_suspended",
            Refusal::Denied(Denial::SerialRevoked) => "certificate_revoked",
            Refusal::Denied(Denial::SerialOnHold) => "certificate_on_hold",
            Refusal::Denied(Denial::IssuerRevoked) => "issuing_ca_revoked",
            Refusal::AddressNotAllowed { .. } => "address_not_allowed",
            Refusal::LdevidRequired { .. } => "ldevid_required",
            Refusal::NoExchange => "no_exchange",
            Refusal::AuthAfterSuccess => "auth_after_success",
            Refusal::TimedOut | Refusal::Abandoned { .. } => "timed_out",
            Refusal::NoCredentials => "no_credentials",
            Refusal::TooManyRefusedMessages => "too_many_refused_messages",
        }
    }
}

impl From<protocol::Error> for Refusal {
    fn from(e: protocol::Error) -> Self {
        Refusal::Protocol(e)
    }
}

impl From<Denial> for Refusal {
    fn from(d: Denial) -> Self {
        Refusal::Denied(d)
    }
}

/// Why one PUBLISH was refused (PUBACK/PUBREC 0x87, dropped for QoS 0).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageRefusal {
    /// A DEVID-1 connection without session keys (cannot happen after a completed exchange).
    #[error("no session keys")]
    NoSessionKeys,
    /// The device's policy says `message_auth = required` and the PUBLISH carries no claim.
    #[error("message authentication required")]
    AuthRequired,
    /// The `devid-*` properties are malformed, replayed or not authentic.
    #[error("{0}")]
    Invalid(protocol::Error),
    /// A gateway's own PUBLISH (no sensor claim) on a topic that only its sensors' policies
    /// allow: the ACL let it through for the sensors' sake.
    #[error("topic not allowed by the device's policy")]
    TopicNotAllowed,
}

impl MessageRefusal {
    /// A stable snake_case name, for counting refusals by kind.
    pub fn name(&self) -> &'static str {
        match self {
            MessageRefusal::NoSessionKeys => "no_session_keys",
            MessageRefusal::AuthRequired => "message_auth_required",
            MessageRefusal::Invalid(e) => protocol_name(e),
            MessageRefusal::TopicNotAllowed => "topic_not_allowed",
        }
    }
}

/// Why one sensor reading (a PUBLISH carrying `devid-sensor`, DEVID-S1) was refused: PUBACK/PUBREC
/// 0x87, dropped for QoS 0. The gateway that relayed it is never disconnected for it; the
/// refusal is counted per sensor and reported with the broker's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, thiserror::Error)]
pub enum SensorRefusal {
    /// The `devid-sensor*` properties are malformed: missing, repeated, not a ClientID, not a
    /// decimal seq, a tag that is not 22 base64url characters, neither or both of
    /// `devid-sensor-mac` and `devid-sensor-seal`, or mixed with the gateway's own `devid-seq`.
    #[error("malformed sensor properties ({0})")]
    Malformed(&'static str),
    /// The sensor material of the gateway has not arrived from the service yet.
    #[error("sensor keys of the gateway not fetched yet")]
    KeysPending,
    /// The sensor is not attached to the gateway that relayed it.
    #[error("sensor not attached to this gateway")]
    NotAttached,
    #[error("sensor revoked")]
    Revoked,
    #[error("sensor suspended")]
    Suspended,
    /// The topic is outside the sensor's own publish filters.
    #[error("topic not allowed by the sensor's policy")]
    TopicNotAllowed,
    /// seq already accepted (or at or below the floor the window started from).
    #[error("sensor seq replayed")]
    Replayed,
    /// seq more than 64 below the highest accepted.
    #[error("sensor seq too old")]
    TooOld,
    #[error("sensor MAC does not verify")]
    BadMac,
    #[error("sealed sensor reading does not open")]
    BadSeal,
}

impl SensorRefusal {
    /// A stable snake_case name: the key of the `refused` counts reported per sensor, and of
    /// the `refusal` field of the `auth_failure` event.
    pub fn name(&self) -> &'static str {
        match self {
            SensorRefusal::Malformed(_) => "malformed",
            SensorRefusal::KeysPending => "keys_pending",
            SensorRefusal::NotAttached => "not_attached",
            SensorRefusal::Revoked => "revoked",
            SensorRefusal::Suspended => "suspended",
            SensorRefusal::TopicNotAllowed => "topic_not_allowed",
            SensorRefusal::Replayed => "replayed",
            SensorRefusal::TooOld => "too_old",
            SensorRefusal::BadMac => "bad_mac",
            SensorRefusal::BadSeal => "bad_seal",
        }
    }
}

/// The stable name of a protocol error (core's `log_str` is prose; these are identifiers).
fn protocol_name(e: &protocol::Error) -> &'static str {
    use protocol::Error as E;
    match e {
        E::UnsupportedMethod | E::UnsupportedVersion(_) => "bad_auth_method",
        E::UnexpectedMessage { .. } => "unexpected_message",
        E::Decode(_) => "malformed_message",
        E::Timeout => "timed_out",
        E::EmptyClientId => "empty_client_id",
        E::BadClientId => "bad_client_id",
        E::ClientIdMismatch => "client_id_mismatch",
        E::CertificateNotBound | E::BadCertificate(_) => "bad_certificate",
        E::CertificateChain(_) => "certificate_chain",
        E::BrokerNameMismatch => "broker_name_mismatch",
        E::BadKeyShare => "bad_key_share",
        E::BadSignature => "bad_signature",
        E::BadMac => "bad_mac",
        E::BadTicket => "bad_ticket",
        E::TicketExpired => "ticket_expired",
        E::Replay { .. } => "replay",
        E::BadProperty(_) => "bad_property",
        E::SequenceExhausted => "sequence_exhausted",
        E::Internal(_) => "internal",
        _ => "protocol",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_names_and_texts_are_stable() {
        let version = Refusal::Protocol(protocol::Error::UnsupportedVersion(2));
        assert_eq!(version.reason_code(), 0x8C);
        assert!(version.is_bad_method());
        assert_eq!(version.name(), "bad_auth_method");
        let rate = Refusal::HelloRate {
            source_group: "10.0.0.1".into(),
            rate: 5,
        };
        assert_eq!(rate.reason_code(), 0x87);
        assert_eq!(rate.name(), "hello_rate");
        assert_eq!(
            rate.to_string(),
            "ClientHello rate from 10.0.0.1 above 5 per second (plugin_opt_hello_rate)"
        );
        assert_eq!(
            Refusal::Denied(Denial::SerialOnHold).to_string(),
            "certificate on hold"
        );
        let idevid = Refusal::LdevidRequired {
            serial: "0a".into(),
            known: true,
        };
        assert_eq!(idevid.name(), "ldevid_required");
        assert_eq!(idevid.reason_code(), 0x87);
        assert_eq!(
            idevid.to_string(),
            "connect_with ldevid: certificate 0a is an IDevID, not an LDevID"
        );
        assert_eq!(
            Refusal::TooManyRefusedMessages.to_string(),
            "too many refused messages"
        );
        assert_eq!(
            MessageRefusal::AuthRequired.to_string(),
            "message authentication required"
        );
    }
}

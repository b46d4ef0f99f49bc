//! What a refused registration means to the caller.

use super::DomainError;
use crate::store::RegConflict;

/// A conflict naming the device that holds what was asked for, or an invalid request for a key
/// revoked as compromised (no request with that key can ever succeed).
pub fn refusal(c: &RegConflict) -> DomainError {
    match c {
        RegConflict::SerialTaken { holder, differs } => DomainError::conflict(match *differs {
            "csr" => format!(
                "hardware_serial is already registered to device {holder} with a different CSR"
            ),
            "generate_key" => format!(
                "hardware_serial is already registered to device {holder}; a generate_key \
                 request makes a new key, so it never repeats a registration"
            ),
            field => format!(
                "hardware_serial is already registered to device {holder} with this CSR but \
                 another {field}; repeating a registration means repeating the whole request"
            ),
        }),
        RegConflict::ClientIdTaken => DomainError::conflict("client_id belongs to another device"),
        RegConflict::KeyTaken { holder } => DomainError::conflict(format!(
            "the public key belongs to device {holder}; every device needs a key pair of its own"
        )),
        RegConflict::KeyCompromised => DomainError::invalid_field(
            "csr",
            "the public key was revoked for keyCompromise and is never certified again",
        ),
    }
}

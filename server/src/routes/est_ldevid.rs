//! EST enrollment and re-enrollment authenticated by a device's certificate: the request goes
//! to the one LDevID issuance function, which applies every rule and audits.

use axum::response::Response;

use super::est::{EstError, Kind, Presented};
use crate::app::AppState;
use crate::error::ApiError;

/// Issues an LDevID for the device whose certificate was presented.
pub async fn issue(
    _state: &AppState,
    _presented: &Presented,
    _csr_der: Vec<u8>,
    _kind: Kind,
) -> Result<Response, EstError> {
    Err(EstError(ApiError::Unavailable(
        "LDevID issuance is not available in this build".into(),
    )))
}

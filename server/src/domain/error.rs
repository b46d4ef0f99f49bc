//! The domain's one error type. It speaks of the rules (not found, refused, invalid), never of
//! HTTP: `crate::error` maps it to a status and a problem document in one place.

use crate::store::StoreError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The thing named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with what is stored (in a batch: because of item `index`).
    #[error("{detail}")]
    Conflict {
        detail: String,
        index: Option<usize>,
    },
    /// The device or certificate is not in a state the action applies to.
    #[error("{0}")]
    InvalidTransition(String),
    /// The caller may not do this (in a batch: because of item `index`).
    #[error("{detail}")]
    Forbidden {
        detail: String,
        index: Option<usize>,
    },
    /// A value breaks a rule. `detail` is the whole public message (it names the field where
    /// there is one); `field` says which one, for code that wants to know.
    #[error("{detail}")]
    Invalid {
        field: Option<&'static str>,
        detail: String,
        index: Option<usize>,
    },
    /// The request does not match what it refers to (an EST re-enrollment whose CSR names
    /// another subject than the certificate it renews); `detail` says what differs.
    #[error("{0}")]
    Mismatch(String),
    /// Too many requests of this kind for the subject in a short time; `detail` says the limit.
    #[error("{0}")]
    RateLimited(String),
    /// No valid credential.
    #[error("no valid credential")]
    Unauthenticated,
    /// A dependency is not ready, or the service is shutting down.
    #[error("{0}")]
    Unavailable(String),
    /// Anything else: the cause is logged, never shown.
    #[error("internal error: {0}")]
    Internal(String),
}

impl DomainError {
    pub fn not_found(detail: impl Into<String>) -> Self {
        DomainError::NotFound(detail.into())
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        DomainError::Conflict {
            detail: detail.into(),
            index: None,
        }
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        DomainError::Forbidden {
            detail: detail.into(),
            index: None,
        }
    }

    /// A value that breaks a rule, not tied to one field.
    pub fn invalid(detail: impl Into<String>) -> Self {
        DomainError::Invalid {
            field: None,
            detail: detail.into(),
            index: None,
        }
    }

    /// `field` breaks a rule; `detail` is the whole message.
    pub fn invalid_field(field: &'static str, detail: impl Into<String>) -> Self {
        DomainError::Invalid {
            field: Some(field),
            detail: detail.into(),
            index: None,
        }
    }

    pub fn internal(cause: impl std::fmt::Display) -> Self {
        DomainError::Internal(cause.to_string())
    }

    /// The same error, attributed to item `index` of a batch (its message then names the item).
    pub fn at_index(self, index: usize) -> Self {
        let item = |detail: String| format!("item {index}: {detail}");
        match self {
            DomainError::Invalid { field, detail, .. } => DomainError::Invalid {
                field,
                detail: item(detail),
                index: Some(index),
            },
            DomainError::Conflict { detail, .. } => DomainError::Conflict {
                detail: item(detail),
                index: Some(index),
            },
            DomainError::Forbidden { detail, .. } => DomainError::Forbidden {
                detail: item(detail),
                index: Some(index),
            },
            other => other,
        }
    }
}

impl From<StoreError> for DomainError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => DomainError::NotFound("no such item".to_string()),
            StoreError::InvalidTransition(msg) => DomainError::InvalidTransition(msg),
            StoreError::BatchConflict { index, conflict } => {
                super::registration::refusal(&conflict).at_index(index)
            }
            other => DomainError::Internal(other.to_string()),
        }
    }
}

impl From<crate::ca::CaError> for DomainError {
    /// Errors caused by the request (e.g. a hardware serial the profile cannot carry) are
    /// invalid input; the rest are internal.
    fn from(e: crate::ca::CaError) -> Self {
        if e.is_client_error() {
            DomainError::invalid(e.to_string())
        } else if e.is_unavailable() {
            DomainError::Unavailable(e.to_string())
        } else {
            DomainError::Internal(e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_errors_name_the_item() {
        let e = DomainError::invalid_field("csr", "csr: bad").at_index(3);
        assert_eq!(
            e,
            DomainError::Invalid {
                field: Some("csr"),
                detail: "item 3: csr: bad".into(),
                index: Some(3)
            }
        );
        // Errors that are not about an item stay as they are.
        assert_eq!(
            DomainError::internal("x").at_index(3),
            DomainError::Internal("x".into())
        );
    }

    #[test]
    fn store_errors_keep_their_meaning() {
        assert_eq!(
            DomainError::from(StoreError::NotFound),
            DomainError::NotFound("no such item".into())
        );
        assert_eq!(
            DomainError::from(StoreError::InvalidTransition("device is revoked".into())),
            DomainError::InvalidTransition("device is revoked".into())
        );
    }
}

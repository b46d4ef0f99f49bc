//! The REST API's request and response types: one definition shared by the server, the CLI, the
//! broker plugin and the tests.
//!
//! Conventions:
//! - Times are RFC 3339 strings in UTC (`2026-11-25T13:00:00Z`).
//! - Certificate serial numbers are lowercase hex without separators; fingerprints are the
//!   lowercase hex SHA-256 of the certificate's DER.
//! - Errors are RFC 9457 problem documents ([`Problem`], media type `application/problem+json`).
//! - Authentication: `Authorization: Bearer <token>`.
//!
//! Routes (see `/openapi.json` on a running server for the full document):
//!
//! | method and path | roles | body -> response |
//! |---|---|---|
//! | `GET /healthz`, `GET /readyz`, `GET /metrics`, `GET /openapi.json` | public | |
//! | `GET /v1/ca` | public | PEM chain, issuing CA first, root last |
//! | `GET /v1/crl` | public | DER CRL (`application/pkix-crl`) |
//! | `POST /v1/devices` | admin, factory | [`RegisterRequest`] -> [`Registered`] (201 new, 200 existing) |
//! | `POST /v1/devices/batch` | admin, factory | [`BatchRequest`] -> [`BatchResponse`] |
//! | `GET /v1/devices` | admin, auditor | query [`DeviceListQuery`] -> [`DeviceList`] |
//! | `GET /v1/devices/{client_id}` | admin, auditor | [`Device`] |
//! | `GET /v1/devices/{client_id}/status` | admin, auditor, broker | [`DeviceStatus`] with ETag |
//! | `POST /v1/devices/{client_id}/revoke` | admin | [`RevokeRequest`] -> [`Device`] |
//! | `POST /v1/devices/{client_id}/suspend` | admin | optional [`ReasonRequest`] -> [`Device`] |
//! | `POST /v1/devices/{client_id}/resume` | admin | -> [`Device`] |
//! | `POST /v1/certificates/{serial}/revoke` | admin | [`RevokeRequest`] -> [`CertificateInfo`] |
//! | `GET /v1/certificates/{serial}` | admin, auditor, broker | [`CertificateInfo`] |
//! | `GET /v1/revocations?since=N&limit=L` | admin, auditor, broker | [`FeedPage`] |
//! | `GET /v1/revocations/stream` | admin, auditor, broker | SSE: `id: <seq>`, `event: revocation`, `data:` [`FeedEntry`]; honours `Last-Event-ID` |
//! | `POST /v1/tokens` | admin | [`CreateTokenRequest`] -> [`CreatedToken`] (secret shown once) |
//! | `GET /v1/tokens` | admin, auditor | [`TokenList`] |
//! | `DELETE /v1/tokens/{id}` | admin | -> [`TokenInfo`] (revoked) |
//! | `GET /v1/audit?since=&actor=&limit=&cursor=` | admin, auditor | [`AuditPage`] |
//! | `PUT /v1/devices/{client_id}/allowlist` | admin | [`AllowList`] -> [`DeviceStatus`] |
//! | `PUT /v1/devices/{client_id}/policy` | admin | [`PolicyUpdate`] -> [`DeviceStatus`] |
//! | `GET /v1/models`, `GET /v1/models/{model}` | admin, auditor, broker | [`ModelList`], [`ModelSettings`] |
//! | `PUT /v1/models/{model}` | admin | [`ModelSettings`] -> [`ModelSettings`] |
//! | `POST /v1/events` | admin, broker | [`EventBatch`] -> 202 |
//! | `POST /v1/brokers` | admin | [`BrokerEnrollRequest`] -> [`Registered`]-like [`BrokerCertificate`] |

mod audit;
mod brokers;
mod devices;
mod feed;
mod lifecycle;
mod policy;
mod problem;
mod tokens;

pub use audit::*;
pub use brokers::*;
pub use devices::*;
pub use feed::*;
pub use lifecycle::*;
pub use policy::*;
pub use problem::*;
pub use tokens::*;

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
//! Routes, by the types they carry. `/openapi.json` on a running server is the whole
//! reference: every route with the roles it admits, its parameters, bodies and problem
//! responses, derived from the server's route table and from these types (their schemas
//! derive with this crate's `openapi` feature).
//!
//! | method and path | body -> response |
//! |---|---|
//! | `GET /healthz`, `GET /readyz`, `GET /metrics`, `GET /openapi.json` | |
//! | `GET /v1/ca` | PEM chain, issuing CA first, root last |
//! | `GET /v1/crl` | DER CRL (`application/pkix-crl`) |
//! | `POST /v1/devices` | [`RegisterRequest`] -> [`Registered`] (201 new, 200 existing) |
//! | `POST /v1/devices/batch` | [`BatchRequest`] -> [`BatchResponse`] |
//! | `GET /v1/devices` | query [`DeviceListQuery`] -> [`DeviceList`] |
//! | `GET /v1/devices/{client_id}` | [`Device`] |
//! | `GET /v1/devices/{client_id}/status` | [`DeviceStatus`] with ETag |
//! | `POST /v1/devices/{client_id}/revoke` | [`RevokeRequest`] -> [`Device`] |
//! | `POST /v1/devices/{client_id}/suspend` | optional [`ReasonRequest`] -> [`Device`] |
//! | `POST /v1/devices/{client_id}/resume` | -> [`Device`] |
//! | `POST /v1/devices/revoke`, `/suspend`, `/resume` | [`BulkRequest`] -> [`BulkResult`] |
//! | `POST /v1/certificates/{serial}/revoke` | [`RevokeRequest`] -> [`CertificateInfo`] |
//! | `GET /v1/certificates/{serial}` | [`CertificateInfo`] |
//! | `GET /v1/revocations?since=N&limit=L` | [`FeedPage`] |
//! | `GET /v1/revocations/stream` | SSE: `id: <seq>`, `event: revocation`, `data:` [`FeedEntry`]; honours `Last-Event-ID` |
//! | `POST /v1/tokens` | [`CreateTokenRequest`] -> [`CreatedToken`] (secret shown once) |
//! | `GET /v1/tokens` | [`TokenList`] |
//! | `DELETE /v1/tokens/{id}` | -> [`TokenInfo`] (revoked) |
//! | `GET /v1/audit?since=&actor=&limit=&cursor=` | [`AuditPage`] |
//! | `PUT /v1/devices/{client_id}/allowlist` | [`AllowList`] -> [`DeviceStatus`] |
//! | `PUT /v1/devices/{client_id}/policy` | [`PolicyUpdate`] -> [`DeviceStatus`] |
//! | `GET /v1/models`, `GET /v1/models/{model}` | [`ModelList`], [`ModelSettings`] |
//! | `PUT /v1/models/{model}` | [`ModelSettings`] -> [`ModelSettings`] |
//! | `POST /v1/events` | [`EventBatch`] -> 202 |
//! | `POST /v1/brokers` | [`BrokerEnrollRequest`] -> [`BrokerCertificate`] |
//! | `PUT /v1/devices/{gateway}/sensors` | [`SensorAttachment`] -> [`GatewaySensors`] |
//! | `GET /v1/devices/{gateway}/sensors` | [`GatewaySensors`] |
//! | `POST /v1/devices/{gateway}/sensors/attach`, `.../detach` | [`SensorAttachment`] -> [`GatewaySensors`] |
//! | `GET /v1/devices/{gateway}/sensors/keys` | [`SensorKeys`] (broker role) |
//! | `POST /v1/devices/{sensor}/rekey` | [`SensorRekeyed`] |
//! | `POST /v1/brokers/renewals` | [`RenewalRequest`] -> [`RenewalAnswer`] |
//! | `GET /v1/events`, `GET /v1/events/stream` | [`AppEventPage`], [`AppEvent`]s (SSE) |
//! | `POST /v1/webhooks` | [`CreateWebhookRequest`] -> [`CreatedWebhook`] |
//! | `GET /v1/webhooks` | [`WebhookList`] |
//! | `GET /v1/webhooks/{id}/deliveries` | [`WebhookDeliveries`] |

mod audit;
mod brokers;
mod bulk;
mod devices;
mod events;
mod feed;
mod fleet;
mod lifecycle;
mod policy;
mod problem;
mod sensors;
mod tokens;
mod webhooks;

pub use audit::*;
pub use brokers::*;
pub use bulk::*;
pub use devices::*;
pub use events::*;
pub use feed::*;
pub use fleet::*;
pub use lifecycle::*;
pub use policy::*;
pub use problem::*;
pub use sensors::*;
pub use tokens::*;
pub use webhooks::*;

//! The HTTP API of aitbc: one axum `Router` per function group over shared state, each deployed
//! as its own Lambda (`src/bin/`, feature `lambda`) and all merged for local serving. Paths are
//! under `/v1`; errors are `application/problem+json` with a stable `code`.
//!
//! | group | routes |
//! | --- | --- |
//! | accounts | `POST /v1/accounts`, `GET /v1/accounts/{address}`, `GET /v1/accounts/{address}/ledger`, `POST /v1/accounts/{address}/deposits`, `POST /v1/accounts/{address}/withdrawals` |
//! | registry | `POST|GET /v1/providers/keys`, `GET /v1/providers/{address}/reputation`, `POST|GET /v1/contracts`, `POST /v1/contracts/{provider}/accept`, `GET /v1/contracts/{provider}/{client}`, `POST|GET /v1/reservations`, `GET /v1/reservations/{reservation_id}`, `POST /v1/reservations/{reservation_id}/accept`, `POST|GET /v1/listings`, `GET|PATCH|DELETE /v1/listings/{gpu_id}`, `GET /v1/listings/{gpu_id}/status`, `GET /v1/listings/{gpu_id}/earnings`, `POST /v1/listings/{gpu_id}/heartbeat` |
//! | pricing | `GET /v1/rate-card`, `POST /v1/quotes`, `GET /v1/market`, `GET /v1/openapi.json` |
//! | jobs | `POST|GET /v1/jobs`, `POST /v1/batches`, `GET /v1/jobs/{id}`, `GET /v1/jobs/{id}/result`, `POST /v1/jobs/{id}/{claim,start,heartbeat,complete,fail,release,cancel}`, `POST|GET /v1/jobs/{id}/rating` |
//! | receipts | `GET /v1/receipts`, `GET /v1/receipts/{id}`, `POST /v1/receipts/verify`, `GET /v1/keys` |
//! | chat | `GET /v1/models`, `POST /v1/chat/completions`, `POST /v1/completions` (streamed: on AWS a function URL, not API Gateway) |
//!
//! Every route's parameters, bodies, answers and errors are in the OpenAPI 3.1 document that
//! [`openapi`] builds from the handlers: served at `GET /v1/openapi.json`, committed as
//! `functions/openapi.json`.

pub mod app;
pub mod error;
pub mod extract;
pub mod lambda;
pub mod openapi;
pub mod routes;
pub mod telemetry;

pub use app::{local_router, router_for, serve, AppState, Group};

/// The function groups, each deployed as its own Lambda and merged for local serving.
pub const FUNCTION_GROUPS: [&str; 6] = ["registry", "pricing", "jobs", "receipts", "accounts", "chat"];

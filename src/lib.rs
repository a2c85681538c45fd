//! aside: a cache-aside JSON data API (see DESIGN.md for the architecture and docs/http-contract.md
//! for the HTTP contract; a module's `contract: "…"` names a section of that page). This file is the
//! table of contents.

/// `/data` operations: the cache-aside read path and the invalidating write path.
pub mod api;
/// Bearer-token check for writes (constant-time) and the OpenAPI security scheme.
pub mod auth;
/// Write guard middleware: auth before body, body size limit, JSON exactness checks.
pub mod body;
/// Read-through cache: generation tokens, single-flight, pending invalidations, Redis or in-process store.
pub mod cache;
/// The command line: serve, migrate, healthcheck, help.
pub mod cli;
/// Configuration from the environment, validated at start-up.
pub mod config;
/// The database wing: connection, the `records` entity, one executor and the five operations.
pub mod db;
/// `/openapi.json` and Swagger UI at `/docs`, with an example per error status.
pub mod docs;
/// The configuration error every variable reader returns.
pub mod env;
/// RFC 9457 problem+json: the only error body the service sends.
pub mod error;
/// `/health` and `/ready`.
pub mod health;
/// JSON log lines (request id from a task-local), batched to stdout.
pub mod logging;
/// OpenTelemetry meter, Prometheus exporter, `/metrics`.
pub mod metrics;
/// Migrations (run by `aside migrate` and at start-up, in one transaction under an advisory lock on Postgres).
pub mod migration;
/// Request and response bodies, key and value rules.
pub mod model;
/// Builds the app (routes, middleware) and runs it with the graceful drain.
pub mod startup;
/// Request ids, the access log and the HTTP metrics middleware.
pub mod telemetry;
/// OpenTelemetry traces over OTLP: configuration, the server span, child spans, W3C trace context.
pub mod traces;

//! What a database failure means, decided once: 503 or 500 (or 409 for a taken key), whether a read
//! may be retried, and the fixed words a span records.

use sea_orm::{DbErr, SqlErr, SqlxError};

use super::lanes;
use crate::{error::ApiError, traces};

fn sqlx_error(e: &DbErr) -> Option<&SqlxError> {
    match e {
        DbErr::Exec(sea_orm::RuntimeErr::SqlxError(s))
        | DbErr::Query(sea_orm::RuntimeErr::SqlxError(s))
        | DbErr::Conn(sea_orm::RuntimeErr::SqlxError(s)) => Some(s),
        _ => None,
    }
}

/// The connection died under the statement (server restart, admin termination, network): a fresh
/// connection may well succeed, so idempotent reads retry, and idle connections get checked.
pub(super) fn connection_lost(e: &DbErr) -> bool {
    sqlx_error(e).is_some_and(lanes::connection_class)
}

/// True when the database cannot serve right now (answer 503, not 500).
pub fn is_unavailable(e: &DbErr) -> bool {
    if matches!(e, DbErr::ConnectionAcquire(_) | DbErr::Conn(_)) || connection_lost(e) {
        return true;
    }
    match sqlx_error(e) {
        Some(SqlxError::PoolTimedOut | SqlxError::PoolClosed | SqlxError::Tls(_) | SqlxError::WorkerCrashed) => true,
        // Class 53: insufficient resources (too many connections, out of memory, disk full).
        Some(SqlxError::Database(d)) => d.code().is_some_and(|c| c.starts_with("53")),
        _ => false,
    }
}

fn unique_violation(e: &DbErr) -> bool {
    matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}

/// What kind of failure `e` is, in fixed words: spans record this, never the error's text (which can
/// carry SQL values, keys or connection details).
pub(super) fn failure_kind(e: &DbErr) -> &'static str {
    if unique_violation(e) {
        return "unique violation";
    }
    if matches!(e, DbErr::ConnectionAcquire(sea_orm::error::ConnAcquireErr::Timeout)) {
        return "timeout";
    }
    if connection_lost(e) {
        return "connection lost";
    }
    if is_unavailable(e) { "database unavailable" } else { "database error" }
}

/// A write's failure: a taken key is 409, the rest as any database error.
pub(super) fn write_error(e: DbErr) -> ApiError {
    if unique_violation(&e) { ApiError::key_exists() } else { e.into() }
}

impl From<DbErr> for ApiError {
    /// Connection trouble is 503, anything else 500; the full error goes to the log, never to the client.
    /// Here, not in `error`, so the error layer stays below the database layer (no import circle).
    fn from(e: DbErr) -> Self {
        traces::record_failure(|| failure_kind(&e));
        if is_unavailable(&e) {
            tracing::warn!(error = ?e, "database unavailable");
            Self::unavailable()
        } else {
            tracing::error!(error = ?e, "database error");
            Self::internal()
        }
    }
}

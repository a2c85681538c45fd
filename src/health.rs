//! Liveness and readiness (contract: "Operational endpoints"). `/health` never touches a dependency;
//! `/ready` pings the database and reports the cache, and answers 503 at once while draining.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use poem::http::StatusCode;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags, payload::Json, types::Example};

use crate::{cache::Cache, db::Store};

#[derive(Tags)]
enum OpsTag {
    /// Probes for orchestrators and load balancers.
    Operations,
}

/// Liveness answer.
#[derive(Object)]
#[oai(example)]
struct Health {
    /// Always `ok` while the process can serve.
    status: String,
}

/// What readiness checked.
#[derive(Object, Clone)]
pub struct ReadyChecks {
    /// `ok` or `error`.
    pub database: String,
    /// `ok`, `degraded` (unreachable: reads fall back to the database) or `disabled`; never fails readiness.
    pub cache: String,
}

/// Readiness answer.
#[derive(Object)]
#[oai(example)]
struct Ready {
    /// `ready`.
    status: String,
    checks: ReadyChecks,
}

/// A problem (RFC 9457) that also carries the readiness checks.
#[derive(Object)]
#[oai(example)]
struct NotReady {
    #[oai(rename = "type")]
    kind: String,
    title: String,
    status: u16,
    /// Names what is wrong: the database, or `draining` after SIGTERM.
    detail: String,
    checks: ReadyChecks,
}

impl Example for Health {
    fn example() -> Self {
        Health { status: "ok".into() }
    }
}

fn checks(database: &str, cache: &str) -> ReadyChecks {
    ReadyChecks { database: database.into(), cache: cache.into() }
}

impl Example for Ready {
    fn example() -> Self {
        Ready { status: "ready".into(), checks: checks("ok", "ok") }
    }
}

impl Example for NotReady {
    fn example() -> Self {
        NotReady::new("database unreachable", checks("error", "degraded"))
    }
}

impl NotReady {
    fn new(detail: &str, checks: ReadyChecks) -> Self {
        NotReady {
            kind: "about:blank".into(),
            title: "Service Unavailable".into(),
            status: StatusCode::SERVICE_UNAVAILABLE.as_u16(),
            detail: detail.into(),
            checks,
        }
    }
}

#[derive(ApiResponse)]
enum ReadyResponse {
    /// The process is ready for traffic.
    #[oai(status = 200)]
    Ready(Json<Ready>),
    /// Not ready: the database is unreachable or the process is draining.
    #[oai(status = 503, content_type = "application/problem+json")]
    NotReady(Json<NotReady>),
}

/// `/health` and `/ready`.
pub struct OpsApi {
    pub store: Store,
    pub cache: Arc<Cache>,
    pub draining: Arc<AtomicBool>,
}

#[OpenApi(tag = "OpsTag::Operations")]
impl OpsApi {
    /// Liveness probe
    ///
    /// 200 while the process can serve. Never checks dependencies, and stays 200 while draining.
    #[oai(path = "/health", method = "get")]
    async fn health(&self) -> Json<Health> {
        Json(Health { status: "ok".into() })
    }

    /// Readiness probe
    ///
    /// 200 when the database answers and the process is not draining; else 503 problem+json with the
    /// same `checks`. The cache status is informational and never makes the service unready.
    #[oai(path = "/ready", method = "get")]
    async fn ready(&self) -> ReadyResponse {
        let draining = self.draining.load(Ordering::Acquire);
        let db_ok = self.store.ping().await;
        let checks = ReadyChecks {
            database: if db_ok { "ok" } else { "error" }.into(),
            cache: self.cache.status().await.into(),
        };
        if db_ok && !draining {
            return ReadyResponse::Ready(Json(Ready { status: "ready".into(), checks }));
        }
        let detail = if draining { "draining: shutting down after SIGTERM" } else { "database unreachable" };
        ReadyResponse::NotReady(Json(NotReady::new(detail, checks)))
    }
}

//! Storage, the database wing (DESIGN.md, "The database wing"): the connection (Postgres, or SQLite as
//! the zero-setup default), the `records` entity and the five operations the API needs, each written
//! once against the one executor (`exec`), which was told at start-up how statements go out.
//! Every statement is bounded in time so a silent database becomes a fast 503 (contract: "Timing
//! promises"), and counted in `aside_db_queries_total`.
//!
//! - `record`  the entity            - `sql`     its statements, rendered once per backend
//! - `exec`    the executor          - `errors`  what a failure means (503/500/409, retry, span words)
//! - `lanes`   the hot statements' connections, and the check that heals every connection after an outage
//! - `pooler`  values inlined, for a transaction-pooling PgBouncer
//! - `batch`   grouped POSTs

mod batch;
mod errors;
mod exec;
mod lanes;
pub mod pooler;
pub mod record;
mod sql;

use std::{future::Future, sync::Arc, time::Duration};

use chrono::{DateTime, Timelike, Utc};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, FromQueryResult, QueryResult,
    sqlx::PgPool,
};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

pub use errors::is_unavailable;
use exec::{Arg, Engine, Route};
use lanes::{LANES, Lanes, Signs};

use crate::{
    config::{Config, DatabaseKind, DatabasePooler},
    error::ApiError,
    logging,
    metrics::Metrics,
    traces,
};

/// Connections to Postgres per process: the pool's plus the hot statements' lanes (`lanes`).
const MAX_CONNECTIONS: u32 = 16;
/// The pool's share (lists, grouped inserts, readiness; every statement behind a pooler).
const POOL_CONNECTIONS: u32 = MAX_CONNECTIONS - LANES as u32;
/// Longest a statement may take before the request gets a 503 (covers a black-holed Postgres).
const QUERY_DEADLINE: Duration = Duration::from_secs(4);
/// Longest a request waits for a connection (covers a Postgres refusing connections).
const ACQUIRE_TIMEOUT: Duration = Duration::from_millis(1500);

/// How the store sends its statements (DESIGN.md, "Behind PgBouncer").
#[derive(Clone, Debug)]
pub enum Statements {
    /// Prepared statements: sqlx's, cached per connection (Postgres itself, SQLite).
    Prepared,
    /// Values inlined, simple query protocol (`pooler`), on this pool: safe behind a transaction pooler.
    Inline(PgPool),
}

impl Statements {
    /// `prepared` or `inline`, for logs and tests.
    pub fn name(&self) -> &'static str {
        match self {
            Statements::Prepared => "prepared",
            Statements::Inline(_) => "inline",
        }
    }
}

/// SeaORM options every aside connection starts from (the store's pool and the migration's).
pub fn connect_options(config: &Config) -> ConnectOptions {
    let mut opts = ConnectOptions::new(config.database_url.clone());
    // sqlx asks for `extra_float_digits` at connect; PgBouncer before 1.20 refuses the whole connection
    // over it ("unsupported startup parameter") unless told to ignore it. aside stores no float
    // columns (jsonb numbers are not floats), so Postgres' own default (exact output since 12) is fine.
    opts.map_sqlx_postgres_opts(|o| o.extra_float_digits(None)).sqlx_logging(false);
    opts
}

/// The store's database: the pool, how statements go out, and the signs of broken connections its
/// pool and lanes share (`lanes::Signs`).
pub struct Connected {
    pub db: DatabaseConnection,
    pub statements: Statements,
    signs: Arc<Signs>,
}

/// Opens the pool with one connection ready, so the first request (or `/ready`) does not pay for a
/// connection set-up. Start-up needs Postgres anyway: migrations run first. Then settles how
/// statements go out (`DATABASE_POOLER`).
pub async fn connect(config: &Config) -> Result<Connected, DbErr> {
    let signs = Arc::new(Signs::default());
    let (db, statements) = connect_with(config, &signs).await?;
    Ok(Connected { db, statements, signs })
}

async fn connect_with(config: &Config, signs: &Arc<Signs>) -> Result<(DatabaseConnection, Statements), DbErr> {
    // Without a pooler the hot statements' lanes hold the other half of MAX_CONNECTIONS.
    let pool_size = match config.database_pooler {
        DatabasePooler::Transaction => MAX_CONNECTIONS,
        _ => POOL_CONNECTIONS,
    };
    let db = open(config, pool_size, signs).await?;
    if config.database_kind() == DatabaseKind::Sqlite {
        // WAL lets readers proceed during a write; busy_timeout waits instead of failing on a lock.
        db.execute_unprepared("PRAGMA journal_mode=WAL; PRAGMA busy_timeout=5000;").await?;
        return Ok((db, Statements::Prepared));
    }
    let pool = db.get_postgres_connection_pool().clone();
    let statements = match config.database_pooler {
        DatabasePooler::None => Statements::Prepared,
        DatabasePooler::Transaction => Statements::Inline(pool),
        DatabasePooler::Auto => match pooler::statements_move(&pool).await {
            Ok(false) => Statements::Prepared,
            Ok(true) => {
                tracing::info!("statements move between server connections (a transaction pooler): inlining values");
                // No lanes behind a pooler: the pool gets the whole budget (reopened, since sqlx pools
                // cannot grow; once, at start-up).
                db.close().await?;
                let db = open(config, MAX_CONNECTIONS, signs).await?;
                let pool = db.get_postgres_connection_pool().clone();
                return Ok((db, Statements::Inline(pool)));
            }
            // Inline is right behind any pooler and merely slower without one.
            Err(e) => {
                tracing::warn!(error = ?e, "could not tell whether a pooler is in between; inlining values");
                Statements::Inline(pool)
            }
        },
    };
    Ok((db, statements))
}

/// The pool, `max` connections on Postgres, with one ready.
async fn open(config: &Config, max: u32, signs: &Arc<Signs>) -> Result<DatabaseConnection, DbErr> {
    let mut opts = connect_options(config);
    opts.acquire_timeout(ACQUIRE_TIMEOUT).idle_timeout(Duration::from_secs(300));
    // No ping per checkout (sqlx's default, a round trip each); the lanes' rule instead: a ping only
    // for a connection idle past `lanes::CHECK_IF_IDLE` or since a sign (DESIGN.md, "After an outage").
    let signs = signs.clone();
    opts.test_before_acquire(false).map_sqlx_postgres_before_acquire(move |c, meta| signs.check_pooled(c, meta));
    match config.database_kind() {
        DatabaseKind::Postgres => {
            opts.max_connections(max).min_connections(1);
        }
        // One writer at a time is what SQLite allows anyway; a small pool serves concurrent reads.
        DatabaseKind::Sqlite => {
            opts.max_connections(4).min_connections(1);
        }
    }
    Database::connect(opts).await
}

/// Postgres keeps microseconds; truncating here makes a write's response equal a later read's.
fn now_micros() -> DateTime<Utc> {
    let now = Utc::now();
    now.with_nanosecond(now.nanosecond() / 1000 * 1000).unwrap_or(now)
}

fn decode(row: &QueryResult) -> Result<record::Model, DbErr> {
    record::Model::from_query_result(row, "")
}

/// The record operations, timed and counted.
#[derive(Clone)]
pub struct Store {
    engine: Arc<Engine>,
    sql: Arc<sql::Sql>,
    /// Connection-class errors seen here make idle connections (pool's and lanes') be checked first.
    signs: Arc<Signs>,
    metrics: Metrics,
    /// Where `insert` queues rows for the batching workers (None inside the workers themselves).
    inserts: Option<mpsc::Sender<batch::QueuedInsert>>,
}

impl Store {
    /// The store, with its insert workers running (they stop when the last `Store` clone is dropped).
    pub fn new(connected: Connected, metrics: Metrics) -> Self {
        let worker = Self::without_workers(connected, metrics);
        let (tx, rx) = mpsc::channel(4096);
        batch::spawn_workers(&worker, rx);
        Self { inserts: Some(tx), ..worker }
    }

    /// The store as a batch worker holds it: every insert goes out on its own.
    fn without_workers(connected: Connected, metrics: Metrics) -> Self {
        let Connected { db, statements, signs } = connected;
        let backend = db.get_database_backend();
        // The one place the way statements go out is decided.
        let engine = match (statements, backend) {
            (_, DbBackend::Sqlite) => Engine::Embedded(db),
            (Statements::Inline(pool), _) => Engine::Inline(pool),
            (Statements::Prepared, _) => {
                let pool = db.get_postgres_connection_pool().clone();
                Engine::Direct { lanes: Lanes::new(&pool, signs.clone(), ACQUIRE_TIMEOUT), pool }
            }
        };
        let sql = sql::Sql::new(backend);
        Self { engine: Arc::new(engine), sql: Arc::new(sql), signs, metrics, inserts: None }
    }

    /// One statement with its deadline, count, span, and the sign a lost connection leaves.
    async fn run<T>(&self, op: &'static str, q: impl Future<Output = Result<T, DbErr>>) -> Result<T, DbErr> {
        self.metrics.db_query(op);
        let mut span = self.span(op);
        let r = match tokio::time::timeout(QUERY_DEADLINE, q).await {
            Ok(r) => r,
            Err(_) => Err(DbErr::ConnectionAcquire(sea_orm::error::ConnAcquireErr::Timeout)),
        };
        if let Err(e) = &r
            && errors::connection_lost(e)
        {
            // The pool's statements report here (lanes note their own): its idle peers get checked.
            self.signs.broken();
        }
        if let (Some(span), Err(e)) = (&mut span, &r) {
            span.fail(errors::failure_kind(e));
        }
        r
    }

    /// The client span of one statement, when the request is traced: named and described by the
    /// operation and table only (database semantic conventions), never the statement's values.
    fn span(&self, op: &'static str) -> Option<traces::ChildSpan> {
        let (operation, name) = match op {
            "insert" => ("INSERT", "INSERT records"),
            "update" => ("UPDATE", "UPDATE records"),
            "delete" => ("DELETE", "DELETE records"),
            _ => ("SELECT", "SELECT records"),
        };
        traces::child(name, opentelemetry::trace::SpanKind::Client, || {
            vec![
                opentelemetry::KeyValue::new("db.system.name", self.engine.system()),
                opentelemetry::KeyValue::new("db.operation.name", operation),
                opentelemetry::KeyValue::new("db.collection.name", "records"),
                opentelemetry::KeyValue::new("aside.db.op", op),
            ]
        })
    }

    /// Runs an idempotent read, again on another connection while the pooled ones turn out dead (after a
    /// Postgres restart every idle pooled connection is; each fails at once, and without this each
    /// would cost a client a 503). Bounded by the pool size.
    async fn read<T, F, Fut>(&self, op: &'static str, q: F) -> Result<T, DbErr>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, DbErr>>,
    {
        let mut attempts = 0;
        loop {
            match self.run(op, q()).await {
                Err(e) if errors::connection_lost(&e) && attempts < MAX_CONNECTIONS => {
                    attempts += 1;
                    tracing::info!(error = ?e, attempts, "database connection lost; retrying the read");
                }
                other => return other,
            }
        }
    }

    /// One record by id.
    pub async fn get(&self, id: i64) -> Result<Option<record::Model>, ApiError> {
        let args = || vec![Arg::Int(id), Arg::Int(1)];
        let row = self.read("get", || self.engine.fetch_optional(Route::Lane, &self.sql.get, args())).await?;
        Ok(row.as_ref().map(decode).transpose()?)
    }

    /// Up to `limit + 1` records with id > `after` (the extra one tells whether another page follows).
    pub async fn list(&self, after: i64, limit: u64, key: Option<&str>) -> Result<Vec<record::Model>, ApiError> {
        let limit = Arg::Int(i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX));
        let (sql, args) = match key {
            Some(k) => (&self.sql.list_by_key, vec![Arg::Int(after), Arg::Text(k.to_owned()), limit]),
            None => (&self.sql.list, vec![Arg::Int(after), limit]),
        };
        let rows = self.read("list", || self.engine.fetch_all(Route::Pool, sql, args.clone())).await?;
        Ok(rows.iter().map(decode).collect::<Result<_, _>>()?)
    }

    /// Inserts a record; a duplicate key is 409. Concurrent POSTs share one statement (`batch`).
    pub async fn insert(&self, key: String, value: Value) -> Result<record::Model, ApiError> {
        let Some(queue) = &self.inserts else { return self.insert_one(key, value).await };
        let (reply, outcome) = oneshot::channel();
        let request_id = logging::current_request_id();
        // The grouped statement runs on a worker: this request's span for it covers the wait for a
        // batch and the statement, and the worker notes on it how many rows the batch carried.
        let mut span = self.span("insert");
        let trace = span.as_ref().map(traces::ChildSpan::joined);
        let trace_handle = trace.clone();
        if queue.send(batch::QueuedInsert { key, value, reply, request_id, trace }).await.is_err() {
            tracing::error!("insert workers are gone");
            return Err(ApiError::internal());
        }
        let result = outcome.await.unwrap_or_else(|_| {
            tracing::error!("insert worker dropped a row");
            Err(ApiError::internal())
        });
        if let (Some(span), Some(joined)) = (&mut span, &trace_handle) {
            span.note_rows(joined);
            if let Err(e) = &result {
                span.fail(match e {
                    ApiError::Conflict(_) => "unique violation",
                    ApiError::Unavailable(_) => "database unavailable",
                    _ => "database error",
                });
            }
        }
        result
    }

    async fn insert_one(&self, key: String, value: Value) -> Result<record::Model, ApiError> {
        let now = now_micros();
        let args = vec![Arg::Text(key), Arg::Json(value), Arg::Time(now), Arg::Time(now)];
        let row = self.run("insert", self.engine.fetch_optional(Route::Lane, &self.sql.insert, args)).await;
        match row {
            Ok(Some(row)) => Ok(decode(&row)?),
            Ok(None) => Err(DbErr::RecordNotInserted.into()),
            Err(e) => Err(errors::write_error(e)),
        }
    }

    /// Replaces a record's value; `None` when it does not exist.
    pub async fn update(&self, id: i64, value: Value) -> Result<Option<record::Model>, ApiError> {
        let args = vec![Arg::Json(value), Arg::Time(now_micros()), Arg::Int(id)];
        let row = self.run("update", self.engine.fetch_optional(Route::Lane, &self.sql.update, args)).await?;
        Ok(row.as_ref().map(decode).transpose()?)
    }

    /// Deletes a record; false when it did not exist.
    pub async fn delete(&self, id: i64) -> Result<bool, ApiError> {
        let args = vec![Arg::Int(id)];
        Ok(self.run("delete", self.engine.execute(Route::Lane, &self.sql.delete, args)).await? > 0)
    }

    /// Whether the database answers now, for `/ready` (`exec::Engine::ping`).
    pub async fn ping(&self) -> bool {
        self.engine.ping(&self.signs, MAX_CONNECTIONS).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lazy_store() -> Store {
        let pool = PgPool::connect_lazy("postgres://nobody@127.0.0.1:1/none").expect("lazy pool");
        let db = sea_orm::SqlxPostgresConnector::from_sqlx_postgres_pool(pool);
        let connected = Connected { db, statements: Statements::Prepared, signs: Arc::default() };
        Store::without_workers(connected, Metrics::new().expect("metrics"))
    }

    /// Every write task and miss carries a statement's future; poem and tokio move such futures by value
    /// (callgrind: memcpy was half of a PUT's instructions while sqlx's connect future was inline). The
    /// executor's other arms are boxed; inline, they made `update` 6 KiB and `insert_one` 8.6 KiB.
    #[tokio::test]
    async fn store_call_futures_stay_small() {
        let store = lazy_store();
        let lane = store.engine.fetch_optional(Route::Lane, &store.sql.get, vec![Arg::Int(1), Arg::Int(1)]);
        let sizes = [
            ("lane statement", std::mem::size_of_val(&lane)),
            ("get", std::mem::size_of_val(&store.get(1))),
            ("update", std::mem::size_of_val(&store.update(1, Value::Null))),
            ("delete", std::mem::size_of_val(&store.delete(1))),
            ("insert_one", std::mem::size_of_val(&store.insert_one("k".into(), Value::Null))),
        ];
        for (call, size) in sizes {
            assert!(size <= 2048, "{call} future is {size} bytes");
        }
    }
}

//! Storage: the SeaORM connection (Postgres, or SQLite as the zero-setup default), the `records` entity
//! and the five queries the API needs. Every query is bounded in time so a silent database becomes a
//! fast 503 (contract: "Timing promises"), and every query is counted in `aside_db_queries_total`.
//! Behind a transaction pooler the queries go out with their values inlined (`pooler`); whether one is
//! there is `DATABASE_POOLER`, found out here when it is `auto`.

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    sync::Arc,
    time::Duration,
};

use chrono::{DateTime, Timelike, Utc};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, EntityTrait,
    FromQueryResult, QueryFilter, QueryOrder, QuerySelect, QueryTrait, Statement,
    sea_query::{Expr, OnConflict},
    sqlx::{self, AssertSqlSafe, PgPool},
};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::{
    config::{Config, DatabaseKind, DatabasePooler},
    error::ApiError,
    lanes::{self, LANES, Lanes, Signs},
    logging::{self, in_request, in_request_async},
    metrics::Metrics,
    pooler, traces,
};

/// The `records` table.
pub mod record {
    use sea_orm::entity::prelude::*;

    /// One row of `records`.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "records")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        #[sea_orm(unique)]
        pub key: String,
        #[sea_orm(column_type = "JsonBinary")]
        pub value: Json,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Connections to Postgres per process: the pool's plus the hot statements' lanes (`lanes`).
const MAX_CONNECTIONS: u32 = 16;
/// The pool's share (lists, inserts, readiness; every statement behind a pooler).
const POOL_CONNECTIONS: u32 = MAX_CONNECTIONS - LANES as u32;
/// Longest a query may take before the request gets a 503 (covers a black-holed Postgres).
const QUERY_DEADLINE: Duration = Duration::from_secs(4);
/// Longest a request waits for a pooled connection (covers a Postgres refusing connections).
const ACQUIRE_TIMEOUT: Duration = Duration::from_millis(1500);

/// How the store sends its statements (DESIGN.md, "Behind PgBouncer").
#[derive(Clone, Debug)]
pub enum Statements {
    /// SeaORM as usual: sqlx's cached, named prepared statements (Postgres itself, SQLite).
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

/// Rows of an inlined statement as records.
async fn inline_records(pool: &PgPool, stmt: &Statement) -> Result<Vec<record::Model>, DbErr> {
    pooler::query_all(pool, stmt).await?.iter().map(|row| record::Model::from_query_result(row, "")).collect()
}

fn sqlx_error(e: &DbErr) -> Option<&sea_orm::SqlxError> {
    match e {
        DbErr::Exec(sea_orm::RuntimeErr::SqlxError(s))
        | DbErr::Query(sea_orm::RuntimeErr::SqlxError(s))
        | DbErr::Conn(sea_orm::RuntimeErr::SqlxError(s)) => Some(s),
        _ => None,
    }
}

/// The connection died under the query (server restart, admin termination, network): a fresh
/// connection may well succeed, so idempotent reads retry once.
fn connection_lost(e: &DbErr) -> bool {
    sqlx_error(e).is_some_and(lanes::connection_class)
}

/// True when the database cannot serve right now (answer 503, not 500).
pub fn is_unavailable(e: &DbErr) -> bool {
    if matches!(e, DbErr::ConnectionAcquire(_) | DbErr::Conn(_)) || connection_lost(e) {
        return true;
    }
    match sqlx_error(e) {
        Some(
            sea_orm::SqlxError::PoolTimedOut
            | sea_orm::SqlxError::PoolClosed
            | sea_orm::SqlxError::Tls(_)
            | sea_orm::SqlxError::WorkerCrashed,
        ) => true,
        // Class 53: insufficient resources (too many connections, out of memory, disk full).
        Some(sea_orm::SqlxError::Database(d)) => d.code().is_some_and(|c| c.starts_with("53")),
        _ => false,
    }
}

/// What kind of failure `e` is, in fixed words: spans record this, never the error's text (which can
/// carry SQL values, keys or connection details).
fn failure_kind(e: &DbErr) -> &'static str {
    if matches!(e.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(_))) {
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

/// The record queries, timed and counted.
#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
    statements: Statements,
    /// Postgres without a pooler: the hot statements, built once (issue 10).
    hot: Option<Arc<Hot>>,
    /// Connection-class errors seen here make idle connections (pool's and lanes') be checked first.
    signs: Arc<Signs>,
    metrics: Metrics,
    /// Where `insert` queues rows for the batching workers (None inside the workers themselves).
    inserts: Option<mpsc::Sender<QueuedInsert>>,
}

/// One POST's row waiting for a batch, and where its outcome goes.
struct QueuedInsert {
    key: String,
    value: Value,
    reply: oneshot::Sender<Result<record::Model, ApiError>>,
    /// The POST's request id: a worker logs what it does for this row under it.
    request_id: Option<Arc<str>>,
    /// When the request is traced: the worker notes the batch size for its span, and logs in its trace.
    trace: Option<traces::Joined>,
}

/// Insert statements in flight at once; each carries up to `MAX_BATCH` rows.
const INSERT_WORKERS: usize = 4;
const MAX_BATCH: usize = 64;

/// Waits for one queued insert, then takes whatever else is already queued (up to `MAX_BATCH`).
async fn next_batch(rx: &tokio::sync::Mutex<mpsc::Receiver<QueuedInsert>>) -> Option<Vec<QueuedInsert>> {
    let mut rx = rx.lock().await;
    let first = rx.recv().await?;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    batch.push(first);
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(q) => batch.push(q),
            Err(_) => break,
        }
    }
    Some(batch)
}

/// Runs a worker's part of a traced request in its trace, so its log lines carry the trace id.
async fn in_trace<F: Future>(trace: Option<&traces::Joined>, fut: F) -> F::Output {
    use opentelemetry::context::FutureExt as _;
    match trace {
        Some(t) => fut.with_context(t.context()).await,
        None => fut.await,
    }
}

/// Postgres keeps microseconds; truncating here makes a write's response equal a later read's.
fn now_micros() -> DateTime<Utc> {
    let now = Utc::now();
    now.with_nanosecond(now.nanosecond() / 1000 * 1000).unwrap_or(now)
}

/// The statements of GET-by-id, PUT, DELETE and a lone POST on Postgres (no pooler), as SeaORM renders
/// them, built once at start-up and run with sqlx on connections of their own ([`Lanes`]); rows still
/// decode through SeaORM (`FromQueryResult`). Measured with callgrind (docs/benchmarks.md): building and
/// rendering the query per call, and moving SeaORM's execution futures (tens of KiB, boxed and copied
/// several times per call), were ~57 k of the 240 k instructions of a cache miss.
struct Hot {
    lanes: Lanes,
    /// `SELECT … WHERE id = $1 LIMIT $2`
    get: Arc<str>,
    /// `UPDATE … SET value = $1, updated_at = $2 WHERE id = $3 RETURNING …`
    update: Arc<str>,
    /// `DELETE … WHERE id = $1`
    delete: Arc<str>,
    /// `INSERT … (key, value, created_at, updated_at) VALUES ($1, $2, $3, $4) RETURNING …` (a lone POST)
    insert: Arc<str>,
}

impl Hot {
    fn new(pool: &PgPool, signs: &Arc<Signs>) -> Self {
        let pg = DbBackend::Postgres;
        let get = record::Entity::find_by_id(0i64).limit(1).build(pg);
        let mut update = record::Entity::update_many()
            .col_expr(record::Column::Value, Expr::value(sea_orm::Value::Json(Some(Box::new(Value::Null)))))
            .col_expr(record::Column::UpdatedAt, Expr::value(now_micros()))
            .filter(record::Column::Id.eq(0i64));
        QueryTrait::query(&mut update).returning_all();
        let update = update.build(pg);
        let delete = record::Entity::delete_by_id(0i64).build(pg);
        let row = record::ActiveModel {
            key: Set(String::new()),
            value: Set(Value::Null),
            created_at: Set(now_micros()),
            updated_at: Set(now_micros()),
            ..Default::default()
        };
        let mut insert = record::Entity::insert(row);
        insert.query().returning_all();
        let insert = insert.build(pg);
        Self {
            lanes: Lanes::new(pool, signs.clone(), ACQUIRE_TIMEOUT),
            get: get.sql.into(),
            update: update.sql.into(),
            delete: delete.sql.into(),
            insert: insert.sql.into(),
        }
    }

    fn query(&self, sql: &Arc<str>) -> sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments> {
        sqlx::query(AssertSqlSafe(sql.clone()))
    }
}

fn decode(row: sqlx::postgres::PgRow) -> Result<record::Model, DbErr> {
    record::Model::from_query_result(&sea_orm::QueryResult::from(row), "")
}

impl Store {
    /// The store, with its insert workers running (they stop when the last `Store` clone is dropped).
    pub fn new(connected: Connected, metrics: Metrics) -> Self {
        let Connected { db, statements, signs } = connected;
        let hot = match statements {
            Statements::Prepared if db.get_database_backend() == DbBackend::Postgres => {
                Some(Arc::new(Hot::new(db.get_postgres_connection_pool(), &signs)))
            }
            _ => None,
        };
        let (tx, rx) = mpsc::channel::<QueuedInsert>(4096);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let worker = Self {
            db: db.clone(),
            statements: statements.clone(),
            hot: hot.clone(),
            signs: signs.clone(),
            metrics: metrics.clone(),
            inserts: None,
        };
        for _ in 0..INSERT_WORKERS {
            let (rx, worker) = (rx.clone(), worker.clone());
            tokio::spawn(async move {
                while let Some(batch) = next_batch(&rx).await {
                    worker.insert_batch(batch).await;
                }
            });
        }
        Self { db, statements, hot, signs, metrics, inserts: Some(tx) }
    }

    /// The connection (readiness checks, tests).
    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    async fn run<T>(&self, op: &'static str, q: impl Future<Output = Result<T, DbErr>>) -> Result<T, DbErr> {
        self.metrics.db_query(op);
        let mut span = self.span(op);
        let r = match tokio::time::timeout(QUERY_DEADLINE, q).await {
            Ok(r) => r,
            Err(_) => Err(DbErr::ConnectionAcquire(sea_orm::error::ConnAcquireErr::Timeout)),
        };
        if let Err(e) = &r
            && connection_lost(e)
        {
            // The pool's statements report here (lanes note their own): its idle peers get checked.
            self.signs.broken();
        }
        if let (Some(span), Err(e)) = (&mut span, &r) {
            span.fail(failure_kind(e));
        }
        r
    }

    /// The client span of one statement, when the request is traced: named and described by the
    /// operation and table only (database semantic conventions), never the statement's values.
    fn span(&self, op: &'static str) -> Option<traces::ChildSpan> {
        let operation = match op {
            "insert" => "INSERT",
            "update" => "UPDATE",
            "delete" => "DELETE",
            _ => "SELECT",
        };
        let name = match operation {
            "INSERT" => "INSERT records",
            "UPDATE" => "UPDATE records",
            "DELETE" => "DELETE records",
            _ => "SELECT records",
        };
        traces::child(name, opentelemetry::trace::SpanKind::Client, || {
            let system = match self.db.get_database_backend() {
                DbBackend::Sqlite => "sqlite",
                _ => "postgresql",
            };
            vec![
                opentelemetry::KeyValue::new("db.system.name", system),
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
                Err(e) if connection_lost(&e) && attempts < MAX_CONNECTIONS => {
                    attempts += 1;
                    tracing::info!(error = ?e, attempts, "database connection lost; retrying the read");
                }
                other => return other,
            }
        }
    }

    /// One record by id.
    pub async fn get(&self, id: i64) -> Result<Option<record::Model>, ApiError> {
        if let Some(hot) = &self.hot {
            let row = self
                .read("get", || async {
                    let q = hot.query(&hot.get).bind(id).bind(1i64);
                    hot.lanes.run(|c| Box::pin(q.fetch_optional(c))).await
                })
                .await?;
            return Ok(row.map(decode).transpose()?);
        }
        let q = record::Entity::find_by_id(id);
        Ok(self
            .read("get", || async {
                match &self.statements {
                    // Boxed (here and below): SeaORM's and the inlined path's futures are KiBs, and would
                    // size every call's future (and the write task carrying it) to match.
                    Statements::Prepared => Box::pin(q.clone().one(&self.db)).await,
                    Statements::Inline(pool) => {
                        let stmt = q.clone().limit(1).build(DbBackend::Postgres);
                        Ok(Box::pin(inline_records(pool, &stmt)).await?.into_iter().next())
                    }
                }
            })
            .await?)
    }

    /// Up to `limit + 1` records with id > `after` (the extra one tells whether another page follows).
    pub async fn list(&self, after: i64, limit: u64, key: Option<&str>) -> Result<Vec<record::Model>, ApiError> {
        let mut q = record::Entity::find().filter(record::Column::Id.gt(after));
        if let Some(k) = key {
            q = q.filter(record::Column::Key.eq(k));
        }
        let q = q.order_by_asc(record::Column::Id).limit(limit + 1);
        Ok(self
            .read("list", || async {
                match &self.statements {
                    Statements::Prepared => q.clone().all(&self.db).await,
                    Statements::Inline(pool) => inline_records(pool, &q.clone().build(DbBackend::Postgres)).await,
                }
            })
            .await?)
    }

    /// Inserts a record; a duplicate key is 409. Concurrent POSTs share one multi-row statement
    /// (group insert): with 64 clients that is ~1/10 of the statements, round trips and pool hand-offs
    /// per record (DESIGN.md, "Performance"). A lone POST goes out at once, never waits for company.
    pub async fn insert(&self, key: String, value: Value) -> Result<record::Model, ApiError> {
        // Boxed: SeaORM's statement future is tens of KiB, and this one is awaited inside every POST's
        // write task (which the batching path keeps small).
        let Some(queue) = &self.inserts else { return Box::pin(self.insert_one(key, value)).await };
        let (reply, outcome) = oneshot::channel();
        let request_id = logging::current_request_id();
        // The grouped statement runs on a worker: this request's span for it covers the wait for a
        // batch and the statement, and the worker notes on it how many rows the batch carried.
        let mut span = self.span("insert");
        let trace = span.as_ref().map(traces::ChildSpan::joined);
        let trace_handle = trace.clone();
        if queue.send(QueuedInsert { key, value, reply, request_id, trace }).await.is_err() {
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
        if let Some(hot) = &self.hot {
            let q = hot.query(&hot.insert).bind(key).bind(value).bind(now).bind(now);
            let res = self.run("insert", async { hot.lanes.run(|c| Box::pin(q.fetch_one(c))).await });
            return match res.await.and_then(decode) {
                Ok(m) => Ok(m),
                Err(e) if matches!(e.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(_))) => {
                    Err(ApiError::key_exists())
                }
                Err(e) => Err(e.into()),
            };
        }
        let row = record::ActiveModel {
            key: Set(key),
            value: Set(value),
            created_at: Set(now),
            updated_at: Set(now),
            ..Default::default()
        };
        let res = match &self.statements {
            Statements::Prepared => {
                self.run("insert", Box::pin(record::Entity::insert(row).exec_with_returning(&self.db))).await
            }
            Statements::Inline(pool) => {
                let mut q = record::Entity::insert(row);
                q.query().returning_all();
                let stmt = q.build(DbBackend::Postgres);
                let rows = self.run("insert", Box::pin(inline_records(pool, &stmt))).await;
                rows.and_then(|r| r.into_iter().next().ok_or(DbErr::RecordNotInserted))
            }
        };
        match res {
            Ok(m) => Ok(m),
            Err(e) if matches!(e.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(_))) => {
                Err(ApiError::key_exists())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// One `INSERT … ON CONFLICT (key) DO NOTHING RETURNING *` for the whole batch: a row missing from
    /// the result lost to an existing key (409). A key twice in one batch: the first one goes in the
    /// statement, the later ones are 409 (they would conflict with it). A failure that is not the
    /// database being unavailable is retried row by row, so one bad row cannot fail its neighbours.
    async fn insert_batch(&self, batch: Vec<QueuedInsert>) {
        for t in batch.iter().filter_map(|q| q.trace.as_ref()) {
            t.note_batch(batch.len());
        }
        if batch.len() == 1 {
            for q in batch {
                let one = in_request_async(q.request_id.as_ref(), self.insert_one(q.key, q.value));
                let _ = q.reply.send(in_trace(q.trace.as_ref(), one).await);
            }
            return;
        }
        let mut seen = HashSet::with_capacity(batch.len());
        let (mut first, mut repeats) = (Vec::with_capacity(batch.len()), Vec::new());
        for q in batch {
            if seen.insert(q.key.clone()) { first.push(q) } else { repeats.push(q) }
        }
        for q in repeats {
            let _ = q.reply.send(Err(ApiError::key_exists()));
        }
        let now = now_micros();
        let rows = first.iter().map(|q| record::ActiveModel {
            key: Set(q.key.clone()),
            value: Set(q.value.clone()),
            created_at: Set(now),
            updated_at: Set(now),
            ..Default::default()
        });
        let mut q = record::Entity::insert_many(rows)
            .on_conflict(OnConflict::column(record::Column::Key).do_nothing().to_owned());
        let inserted = match &self.statements {
            Statements::Prepared => self.run("insert", q.exec_with_returning(&self.db)).await,
            Statements::Inline(pool) => {
                q.query().returning_all();
                self.run("insert", inline_records(pool, &q.build(DbBackend::Postgres))).await
            }
        };
        match inserted {
            Ok(models) => {
                let mut by_key: HashMap<String, record::Model> =
                    models.into_iter().map(|m| (m.key.clone(), m)).collect();
                for q in first {
                    let _ = q.reply.send(by_key.remove(&q.key).ok_or_else(ApiError::key_exists));
                }
            }
            // One line per request, each under its id: the batch is an implementation detail, and a
            // request's log trail must show why it failed (contract: request id in every line).
            Err(e) if is_unavailable(&e) => {
                for q in first {
                    let err = in_request(q.request_id.as_ref(), || {
                        let _trace = q.trace.as_ref().map(|t| t.context().attach());
                        tracing::warn!(error = ?e, "database unavailable");
                        ApiError::unavailable()
                    });
                    let _ = q.reply.send(Err(err));
                }
            }
            Err(e) => {
                let rows = first.len();
                for q in first {
                    let one = in_request_async(q.request_id.as_ref(), async {
                        tracing::warn!(error = ?e, rows, "batch insert failed; inserting row by row");
                        self.insert_one(q.key, q.value).await
                    });
                    let _ = q.reply.send(in_trace(q.trace.as_ref(), one).await);
                }
            }
        }
    }

    /// Replaces a record's value; `None` when it does not exist.
    pub async fn update(&self, id: i64, value: Value) -> Result<Option<record::Model>, ApiError> {
        if let Some(hot) = &self.hot {
            let q = hot.query(&hot.update).bind(value).bind(now_micros()).bind(id);
            let row = self.run("update", async { hot.lanes.run(|c| Box::pin(q.fetch_optional(c))).await }).await?;
            return Ok(row.map(decode).transpose()?);
        }
        let mut q = record::Entity::update_many()
            .col_expr(record::Column::Value, Expr::value(sea_orm::Value::Json(Some(Box::new(value)))))
            .col_expr(record::Column::UpdatedAt, Expr::value(now_micros()))
            .filter(record::Column::Id.eq(id));
        let updated = match &self.statements {
            Statements::Prepared => self.run("update", Box::pin(q.exec_with_returning(&self.db))).await?,
            Statements::Inline(pool) => {
                QueryTrait::query(&mut q).returning_all();
                self.run("update", Box::pin(inline_records(pool, &q.build(DbBackend::Postgres)))).await?
            }
        };
        Ok(updated.into_iter().next())
    }

    /// Deletes a record; false when it did not exist.
    pub async fn delete(&self, id: i64) -> Result<bool, ApiError> {
        if let Some(hot) = &self.hot {
            let q = hot.query(&hot.delete).bind(id);
            let done = self.run("delete", async { hot.lanes.run(|c| Box::pin(q.execute(c))).await }).await?;
            return Ok(done.rows_affected() > 0);
        }
        let q = record::Entity::delete_by_id(id);
        let deleted = match &self.statements {
            Statements::Prepared => self.run("delete", Box::pin(q.exec(&self.db))).await?.rows_affected,
            Statements::Inline(pool) => {
                self.run("delete", Box::pin(pooler::execute(pool, &q.build(DbBackend::Postgres)))).await?
            }
        };
        Ok(deleted > 0)
    }

    /// A ping with a short deadline, for `/ready`. A pooled connection that died with an earlier server
    /// says nothing about the database now: the next one is tried (`/ready` flapped 200/503 for seconds
    /// after a restart). A failed acquire (connect refused, or timed out) is the database's answer.
    pub async fn ping(&self) -> bool {
        let ping = async {
            if self.db.get_database_backend() != DbBackend::Postgres {
                return self.db.ping().await.is_ok();
            }
            let pool = self.db.get_postgres_connection_pool();
            for _ in 0..=MAX_CONNECTIONS {
                let Ok(mut conn) = pool.acquire().await else { return false };
                match sqlx::Connection::ping(&mut *conn).await {
                    Ok(()) => return true,
                    // sqlx closes it on release (its own ping fails too); its idle peers get checked.
                    Err(e) if lanes::connection_class(&e) => self.signs.broken(),
                    Err(_) => return false,
                }
            }
            false
        };
        matches!(tokio::time::timeout(Duration::from_secs(1), ping).await, Ok(true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Every write task and miss carries a hot statement's future; poem and tokio move such futures by
    /// value (callgrind: memcpy was half of a PUT's instructions while sqlx's connect future was inline).
    #[tokio::test]
    async fn a_hot_statement_future_stays_small() {
        let pool = PgPool::connect_lazy("postgres://nobody@127.0.0.1:1/none").expect("lazy pool");
        let hot = Hot::new(&pool, &Arc::default());
        let q = hot.query(&hot.get).bind(1i64).bind(1i64);
        let run = hot.lanes.run(|c| Box::pin(q.fetch_optional(c)));
        assert!(std::mem::size_of_val(&run) <= 1024, "lane future is {} bytes", std::mem::size_of_val(&run));
    }

    /// The store's calls stay small too: the SeaORM paths in the same functions are boxed (inline, they
    /// made `update` 6 KiB and `insert_one` 8.6 KiB, copied into every PUT's and POST's write task).
    #[tokio::test]
    async fn store_call_futures_stay_small() {
        let pool = PgPool::connect_lazy("postgres://nobody@127.0.0.1:1/none").expect("lazy pool");
        let db = sea_orm::SqlxPostgresConnector::from_sqlx_postgres_pool(pool);
        let connected = Connected { db, statements: Statements::Prepared, signs: Arc::default() };
        let store = Store::new(connected, Metrics::new().expect("metrics"));
        let sizes = [
            ("get", std::mem::size_of_val(&store.get(1))),
            ("update", std::mem::size_of_val(&store.update(1, Value::Null))),
            ("delete", std::mem::size_of_val(&store.delete(1))),
            ("insert_one", std::mem::size_of_val(&store.insert_one("k".into(), Value::Null))),
        ];
        for (call, size) in sizes {
            assert!(size <= 2048, "{call} future is {size} bytes");
        }
    }

    #[tokio::test]
    async fn a_batch_inserts_each_new_key_once_and_answers_409_for_the_rest() {
        let file = std::env::temp_dir().join(format!("aside-batch-{}.db", uuid::Uuid::new_v4()));
        let mut cfg = Config::from_vars(&Default::default()).expect("defaults");
        cfg.database_url = format!("sqlite://{}?mode=rwc", file.display());
        crate::migration::run(&cfg).await.expect("migrate");
        let Connected { db, statements, signs } = connect(&cfg).await.expect("connect");
        let store = Store { db, statements, hot: None, signs, metrics: Metrics::new().expect("m"), inserts: None };
        store.insert_one("taken".into(), json!(0)).await.expect("first insert");

        let (mut batch, mut outcomes) = (Vec::new(), Vec::new());
        for key in ["a", "taken", "b", "a"] {
            let (reply, outcome) = oneshot::channel();
            batch.push(QueuedInsert {
                key: key.into(),
                value: json!({ "k": key }),
                reply,
                request_id: None,
                trace: None,
            });
            outcomes.push(outcome);
        }
        store.insert_batch(batch).await;
        let mut got = Vec::new();
        for o in outcomes {
            got.push(o.await.expect("every row gets an answer"));
        }
        let _ = std::fs::remove_file(&file);

        let (a, b) = (got[0].as_ref().expect("a inserted"), got[2].as_ref().expect("b inserted"));
        assert_eq!((a.key.as_str(), &a.value, b.key.as_str()), ("a", &json!({"k": "a"}), "b"));
        assert!(a.id < b.id, "ids follow the order the rows were queued in");
        assert!(matches!(got[1], Err(ApiError::Conflict(_))), "an existing key is 409");
        assert!(matches!(got[3], Err(ApiError::Conflict(_))), "a key repeated in one batch is 409");
    }
}

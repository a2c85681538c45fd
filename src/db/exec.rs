//! The one executor (DESIGN.md, "The database wing"): how a statement reaches the database is decided
//! once, at start-up, by the variant of [`Engine`]; operations (`db::Store`) hand it SQL rendered once
//! (`sql`) and their values in placeholder order, and get rows back as SeaORM `QueryResult`s, which
//! decode through the entity whichever way they came.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, DbErr, QueryResult, RuntimeErr, Statement,
    error::ConnAcquireErr,
    sqlx::{self, AssertSqlSafe, PgPool, Postgres, pool::PoolConnection, postgres::PgArguments},
};
use serde_json::Value;

use super::{
    lanes::{self, Lanes, Signs},
    pooler,
};

/// One value of a statement, in the types the `records` statements bind.
#[derive(Clone, Debug)]
pub(super) enum Arg {
    Int(i64),
    Text(String),
    Json(Value),
    Time(DateTime<Utc>),
}

impl From<Arg> for sea_orm::Value {
    fn from(a: Arg) -> Self {
        match a {
            Arg::Int(n) => n.into(),
            Arg::Text(s) => s.into(),
            Arg::Json(j) => j.into(),
            Arg::Time(t) => t.into(),
        }
    }
}

/// Which connections a statement takes when Postgres is reached directly: the hot single-row
/// statements a lane (`lanes`: no ping per checkout), the others the pool.
#[derive(Clone, Copy, Debug)]
pub(super) enum Route {
    Lane,
    Pool,
}

/// Where statements go, settled at start-up (`DATABASE_POOLER`, and the URL's scheme).
pub(super) enum Engine {
    /// Postgres itself: sqlx's prepared statements (cached per connection), on a lane or the pool.
    Direct { pool: PgPool, lanes: Lanes },
    /// Behind a transaction pooler: values inlined, simple query protocol, on the pool (`pooler`).
    Inline(PgPool),
    /// SQLite, the zero-setup default: SeaORM's connection.
    Embedded(DatabaseConnection),
}

/// A prepared statement with its values bound.
fn prepared(sql: &Arc<str>, args: Vec<Arg>) -> sqlx::query::Query<'static, sqlx::Postgres, PgArguments> {
    let mut q = sqlx::query(AssertSqlSafe(sql.clone()));
    for a in args {
        q = match a {
            Arg::Int(n) => q.bind(n),
            Arg::Text(s) => q.bind(s),
            Arg::Json(j) => q.bind(j),
            Arg::Time(t) => q.bind(t),
        };
    }
    q
}

fn statement(backend: DbBackend, sql: &str, args: Vec<Arg>) -> Statement {
    Statement::from_sql_and_values(backend, sql, args.into_iter().map(sea_orm::Value::from))
}

/// sqlx's failure of a statement, in the shape SeaORM gives its own (so `errors` maps both alike).
fn query_err(e: sqlx::Error) -> DbErr {
    DbErr::Query(RuntimeErr::SqlxError(e.into()))
}

/// A pooled connection. Acquired apart from the statement, so that a failure to get one is told apart
/// from the statement's own (as SeaORM does): a refused connect (e.g. 55000, the database not accepting
/// connections) is the database being unavailable (503), not an error of the statement (500).
async fn acquire(pool: &PgPool) -> Result<PoolConnection<Postgres>, DbErr> {
    pool.acquire().await.map_err(|e| match e {
        sqlx::Error::PoolTimedOut => DbErr::ConnectionAcquire(ConnAcquireErr::Timeout),
        sqlx::Error::PoolClosed => DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed),
        e => DbErr::Conn(RuntimeErr::SqlxError(e.into())),
    })
}

// The boxed arms below: SeaORM's and the inlined path's futures are KiBs, and inline they would size
// every statement's future (and the write task that carries it) to match. The lane arm stays inline.
impl Engine {
    /// At most one row (`get`, and statements `RETURNING` one row).
    pub async fn fetch_optional(
        &self,
        route: Route,
        sql: &Arc<str>,
        args: Vec<Arg>,
    ) -> Result<Option<QueryResult>, DbErr> {
        match (self, route) {
            (Engine::Direct { lanes, .. }, Route::Lane) => {
                let q = prepared(sql, args);
                Ok(lanes.run(|c| Box::pin(q.fetch_optional(c))).await?.map(QueryResult::from))
            }
            (Engine::Direct { pool, .. }, Route::Pool) => {
                let mut conn = Box::pin(acquire(pool)).await?;
                let row = Box::pin(prepared(sql, args).fetch_optional(&mut *conn)).await.map_err(query_err)?;
                Ok(row.map(QueryResult::from))
            }
            (Engine::Inline(_), _) => Ok(self.fetch_all(route, sql, args).await?.into_iter().next()),
            (Engine::Embedded(db), _) => Box::pin(db.query_one_raw(statement(DbBackend::Sqlite, sql, args))).await,
        }
    }

    /// Every row.
    pub async fn fetch_all(&self, route: Route, sql: &Arc<str>, args: Vec<Arg>) -> Result<Vec<QueryResult>, DbErr> {
        match (self, route) {
            (Engine::Direct { lanes, .. }, Route::Lane) => {
                let q = prepared(sql, args);
                Ok(lanes.run(|c| Box::pin(q.fetch_all(c))).await?.into_iter().map(QueryResult::from).collect())
            }
            (Engine::Direct { pool, .. }, Route::Pool) => {
                let mut conn = Box::pin(acquire(pool)).await?;
                let rows = Box::pin(prepared(sql, args).fetch_all(&mut *conn)).await.map_err(query_err)?;
                Ok(rows.into_iter().map(QueryResult::from).collect())
            }
            (Engine::Inline(pool), _) => {
                let mut conn = Box::pin(acquire(pool)).await?;
                Box::pin(pooler::query_all(&mut conn, &statement(DbBackend::Postgres, sql, args))).await
            }
            (Engine::Embedded(db), _) => Box::pin(db.query_all_raw(statement(DbBackend::Sqlite, sql, args))).await,
        }
    }

    /// For its effect: the number of rows it touched.
    pub async fn execute(&self, route: Route, sql: &Arc<str>, args: Vec<Arg>) -> Result<u64, DbErr> {
        match (self, route) {
            (Engine::Direct { lanes, .. }, Route::Lane) => {
                let q = prepared(sql, args);
                Ok(lanes.run(|c| Box::pin(q.execute(c))).await?.rows_affected())
            }
            (Engine::Direct { pool, .. }, Route::Pool) => {
                let mut conn = Box::pin(acquire(pool)).await?;
                Ok(Box::pin(prepared(sql, args).execute(&mut *conn)).await.map_err(query_err)?.rows_affected())
            }
            (Engine::Inline(pool), _) => {
                let mut conn = Box::pin(acquire(pool)).await?;
                Box::pin(pooler::execute(&mut conn, &statement(DbBackend::Postgres, sql, args))).await
            }
            (Engine::Embedded(db), _) => {
                Ok(Box::pin(db.execute_raw(statement(DbBackend::Sqlite, sql, args))).await?.rows_affected())
            }
        }
    }

    /// `db.system.name` of the statements' spans.
    pub fn system(&self) -> &'static str {
        match self {
            Engine::Embedded(_) => "sqlite",
            _ => "postgresql",
        }
    }

    /// A ping with a short deadline, for `/ready`. A pooled connection that died with an earlier server
    /// says nothing about the database now: the next one is tried (`/ready` flapped 200/503 for seconds
    /// after a restart). A failed acquire (connect refused, or timed out) is the database's answer.
    pub async fn ping(&self, signs: &Signs, attempts: u32) -> bool {
        let ping = async {
            let pool = match self {
                Engine::Direct { pool, .. } | Engine::Inline(pool) => pool,
                Engine::Embedded(db) => return db.ping().await.is_ok(),
            };
            for _ in 0..=attempts {
                let Ok(mut conn) = pool.acquire().await else { return false };
                match sqlx::Connection::ping(&mut *conn).await {
                    Ok(()) => return true,
                    // sqlx closes it on release (its own ping fails too); its idle peers get checked.
                    Err(e) if lanes::connection_class(&e) => signs.broken(),
                    Err(_) => return false,
                }
            }
            false
        };
        matches!(tokio::time::timeout(Duration::from_secs(1), ping).await, Ok(true))
    }
}

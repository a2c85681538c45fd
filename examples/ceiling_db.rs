//! Benchmark ceilings 3–5 (issue 10): the least a database read, a cache miss and a write can cost on
//! this machine with the raw clients aside uses (sqlx's pool, fred), and no token scheme, metrics,
//! logging or validation. Used by `scripts/bench.sh`.
//!
//! - `CEILING=db` (C_DB): `GET /data/{id}` runs exactly one prepared `SELECT … WHERE id = $1` and
//!   answers the row as JSON.
//! - `CEILING=miss` (C_MISS): `GET /data/{id}` does what a miss must: `MGET token entry`, the same
//!   `SELECT`, and one compare-and-set fill (`EVALSHA` of aside's fill script) under that token (set
//!   at start for ids 1..=`CEILING_KEYS`, default 10000, so the fill lands).
//!   `PUT /data/{id}` (C_PUT) does what a write must: one `UPDATE … RETURNING` with the body's `value`,
//!   then one pipelined round trip replacing the record's and the list's tokens and dropping the entry.
//!   `POST /data` (C_POST, issue 19) does what a create must: one single-row `INSERT … RETURNING` of the
//!   body's `key` and `value`, then one `SET` replacing the list's token (a new record changes lists
//!   only); 201 with the row. aside groups concurrent POSTs into one statement (src/db/batch.rs); this
//!   ceiling does not, so it is the cost of the plain way, which aside's grouping must at least match.
//!
//! Run: `DATABASE_URL=postgres://… REDIS_URL=redis://… CEILING=miss BIND_ADDR=127.0.0.1:8093 \
//!       cargo run --release --example ceiling_db`

use bytes::Bytes;
use fred::{
    prelude::*,
    types::{Expiration, scripts::Script},
};
use poem::http::StatusCode;
use poem::listener::TcpListener;
use poem::web::{Data, Json, Path};
use poem::{EndpointExt, Response, Route, Server, get, handler, post};
use sea_orm::sqlx::{self, PgPool, Row, postgres::PgPoolOptions};

const SELECT: &str = "SELECT id, key, value, created_at, updated_at FROM records WHERE id = $1";
const INSERT: &str = "INSERT INTO records (key, value, created_at, updated_at) VALUES ($1, $2, now(), now()) \
     RETURNING id, key, value, created_at, updated_at";
const UPDATE: &str =
    "UPDATE records SET value = $1, updated_at = now() WHERE id = $2 RETURNING id, key, value, created_at, updated_at";
/// aside's fill script (src/cache/redis.rs).
const FILL_IF_TOKEN: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0";

#[derive(serde::Serialize)]
struct Record {
    id: i64,
    key: String,
    value: serde_json::Value,
    created_at: String,
    updated_at: String,
}

fn record(row: &sqlx::postgres::PgRow) -> Result<Vec<u8>, sqlx::Error> {
    let at = |i| row.try_get::<chrono::DateTime<chrono::Utc>, _>(i).map(|t| t.to_rfc3339());
    let r = Record {
        id: row.try_get(0)?,
        key: row.try_get(1)?,
        value: row.try_get(2)?,
        created_at: at(3)?,
        updated_at: at(4)?,
    };
    Ok(serde_json::to_vec(&r).unwrap_or_default())
}

fn failed(e: impl std::fmt::Display) -> Response {
    Response::builder().status(StatusCode::SERVICE_UNAVAILABLE).body(e.to_string())
}

fn json(body: Vec<u8>) -> Response {
    Response::builder().content_type("application/json").body(body)
}

struct State {
    pg: PgPool,
    redis: Option<Pool>,
    fill: Script,
}

#[handler]
async fn read(Path(id): Path<i64>, state: Data<&std::sync::Arc<State>>) -> Response {
    let Some(redis) = &state.redis else {
        return match sqlx::query(SELECT).bind(id).fetch_optional(&state.pg).await {
            Ok(Some(row)) => record(&row).map_or_else(failed, json),
            Ok(None) => Response::builder().status(StatusCode::NOT_FOUND).finish(),
            Err(e) => failed(e),
        };
    };
    let (tok, body) = (format!("ceiling:{{rec:{id}}}:tok"), format!("ceiling:{{rec:{id}}}:body"));
    let found: Result<Vec<Option<Bytes>>, _> = redis.mget(vec![tok.as_str(), body.as_str()]).await;
    let token = match found {
        Ok(mut v) => v.swap_remove(0).unwrap_or_else(|| Bytes::from_static(b"none")),
        Err(e) => return failed(e),
    };
    let bytes = match sqlx::query(SELECT).bind(id).fetch_optional(&state.pg).await {
        Ok(Some(row)) => match record(&row) {
            Ok(b) => b,
            Err(e) => return failed(e),
        },
        Ok(None) => return Response::builder().status(StatusCode::NOT_FOUND).finish(),
        Err(e) => return failed(e),
    };
    let mut entry = token.to_vec();
    entry.extend_from_slice(&bytes);
    let args: Vec<Value> = vec![token.into(), Bytes::from(entry).into(), 3_600_000i64.into()];
    let filled: Result<i64, _> = state.fill.evalsha_with_reload(redis.next(), vec![tok, body], args).await;
    match filled {
        Ok(_) => json(bytes),
        Err(e) => failed(e),
    }
}

#[derive(serde::Deserialize)]
struct Update {
    value: serde_json::Value,
}

#[handler]
async fn write(Path(id): Path<i64>, body: Json<Update>, state: Data<&std::sync::Arc<State>>) -> Response {
    let bytes = match sqlx::query(UPDATE).bind(&body.0.value).bind(id).fetch_optional(&state.pg).await {
        Ok(Some(row)) => match record(&row) {
            Ok(b) => b,
            Err(e) => return failed(e),
        },
        Ok(None) => return Response::builder().status(StatusCode::NOT_FOUND).finish(),
        Err(e) => return failed(e),
    };
    let Some(redis) = &state.redis else { return json(bytes) };
    let token = uuid::Uuid::new_v4().simple().to_string();
    let pipe = redis.next().pipeline();
    let queued: Result<(), Error> = async {
        let () = pipe
            .set(format!("ceiling:{{rec:{id}}}:tok"), token.as_str(), Some(Expiration::EX(7210)), None, false)
            .await?;
        let () = pipe.set("ceiling:{list}:tok", token.as_str(), Some(Expiration::EX(7210)), None, false).await?;
        let () = pipe.del(format!("ceiling:{{rec:{id}}}:body")).await?;
        let _: Vec<Value> = pipe.all().await?;
        Ok(())
    }
    .await;
    match queued {
        Ok(()) => json(bytes),
        Err(e) => failed(e),
    }
}

#[derive(serde::Deserialize)]
struct Create {
    key: String,
    value: serde_json::Value,
}

#[handler]
async fn create(body: Json<Create>, state: Data<&std::sync::Arc<State>>) -> Response {
    let Create { key, value } = body.0;
    let bytes = match sqlx::query(INSERT).bind(key).bind(value).fetch_one(&state.pg).await {
        Ok(row) => match record(&row) {
            Ok(b) => b,
            Err(e) => return failed(e),
        },
        Err(e) => return failed(e),
    };
    if let Some(redis) = &state.redis {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let set: Result<(), Error> =
            redis.set("ceiling:{list}:tok", token.as_str(), Some(Expiration::EX(7210)), None, false).await;
        if let Err(e) = set {
            return failed(e);
        }
    }
    let mut created = json(bytes);
    created.set_status(StatusCode::CREATED);
    created
}

/// The allocator aside runs with (src/main.rs), so the ratio to aside measures code, not allocators.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::var("BIND_ADDR").unwrap_or_else(|_| "127.0.0.1:8093".into());
    let db = std::env::var("DATABASE_URL")?;
    let mode = std::env::var("CEILING").unwrap_or_else(|_| "db".into());
    // The same pool shape as aside's: 16 connections, no test before acquire.
    let pg = PgPoolOptions::new().max_connections(16).test_before_acquire(false).connect(&db).await?;
    let redis = match mode.as_str() {
        "db" => None,
        "miss" => {
            let url = std::env::var("REDIS_URL")?;
            let pool = Builder::from_config(Config::from_url(&url)?).build_pool(1)?;
            pool.init().await?;
            // Tokens for ids 1..=CEILING_KEYS, so each fill's compare-and-set succeeds (GET + SET), as a
            // real miss's does.
            let keys: i64 = std::env::var("CEILING_KEYS").map_or(Ok(10_000), |v| v.parse())?;
            for chunk in (1..=keys).collect::<Vec<_>>().chunks(1000) {
                let pairs: Vec<(String, &str)> =
                    chunk.iter().map(|id| (format!("ceiling:{{rec:{id}}}:tok"), "ceiling-token")).collect();
                let _: () = pool.mset(pairs).await?;
            }
            Some(pool)
        }
        other => return Err(format!("CEILING={other}: db or miss").into()),
    };
    let state = std::sync::Arc::new(State { pg, redis, fill: Script::from_lua(FILL_IF_TOKEN) });
    println!("ceiling_db ({mode}) listening on {addr}");
    let app = Route::new().at("/data", post(create)).at("/data/:id", get(read).put(write)).data(state);
    Server::new(TcpListener::bind(addr)).run(app).await?;
    Ok(())
}

//! Benchmark ceiling 2: the fastest possible Redis-backed cache hit. A poem server whose
//! `GET /data/{id}` does exactly one Redis `GET` (through fred, aside's client) of a stored JSON
//! string and returns the bytes: what any cache hit costs at least on this machine, with no
//! token check, no metrics and no logging. Used by `scripts/bench.sh`.
//!
//! Run: `REDIS_URL=redis://127.0.0.1:6379 BIND_ADDR=127.0.0.1:8092 cargo run --release --example ceiling_fred`
//! Env: `CEILING_KEYS` (default 10000) records stored at start as `ceiling:rec:{id}`;
//! `CEILING_POOL` (default 1) fred clients in a round-robin pool.

use bytes::Bytes;
use fred::prelude::*;
use poem::http::{StatusCode, header};
use poem::listener::TcpListener;
use poem::web::{Data, Path};
use poem::{EndpointExt, Response, Route, Server, get, handler};

fn body_for(id: i64) -> String {
    format!(
        r#"{{"id":{id},"key":"bench:{id:09}","value":{{"n":{id},"name":"record {id}","tags":["alpha","beta","gamma"],"ok":true}},"created_at":"2026-11-23T19:00:00.123456Z","updated_at":"2026-11-23T19:00:00.123456Z"}}"#
    )
}

#[handler]
async fn record(Path(id): Path<i64>, pool: Data<&Pool>) -> Response {
    match pool.get::<Option<Bytes>, _>(format!("ceiling:rec:{id}")).await {
        Ok(Some(bytes)) => {
            Response::builder().header(header::CONTENT_TYPE, "application/json; charset=utf-8").body(bytes)
        }
        Ok(None) => Response::builder().status(StatusCode::NOT_FOUND).finish(),
        Err(e) => Response::builder().status(StatusCode::SERVICE_UNAVAILABLE).body(e.to_string()),
    }
}

/// The allocator aside runs with (src/main.rs), so the ratio to aside measures code, not allocators.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::var("BIND_ADDR").unwrap_or_else(|_| "127.0.0.1:8092".into());
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let keys: i64 = std::env::var("CEILING_KEYS").map_or(Ok(10_000), |v| v.parse())?;
    let size: usize = std::env::var("CEILING_POOL").map_or(Ok(1), |v| v.parse())?;

    let pool = Builder::from_config(Config::from_url(&url)?).build_pool(size)?;
    pool.init().await?;
    for chunk in (1..=keys).collect::<Vec<_>>().chunks(1000) {
        let pairs: Vec<(String, String)> =
            chunk.iter().map(|id| (format!("ceiling:rec:{id}"), body_for(*id))).collect();
        let _: () = pool.mset(pairs).await?;
    }
    println!("ceiling_fred listening on {addr} ({keys} keys, pool {size})");
    let app = Route::new().at("/data/:id", get(record)).data(pool);
    Server::new(TcpListener::bind(addr)).run(app).await?;
    Ok(())
}

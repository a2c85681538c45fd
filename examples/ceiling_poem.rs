//! Benchmark ceiling 1: the bare web framework. A poem server whose `GET /data/{id}` answers a fixed
//! ~200-byte JSON record shaped like aside's, with no cache and no database behind it: no
//! data API built on poem can answer faster on this machine. Used by `scripts/bench.sh`.
//!
//! Run: `BIND_ADDR=127.0.0.1:8091 cargo run --release --example ceiling_poem`

use poem::http::header;
use poem::listener::TcpListener;
use poem::web::Path;
use poem::{Response, Route, Server, get, handler};

/// The body: the same shape and size as the records scripts/bench.sh seeds into aside.
const BODY: &str = r#"{"id":4242,"key":"bench:000004242","value":{"n":4242,"name":"record 4242","tags":["alpha","beta","gamma"],"ok":true},"created_at":"2026-11-23T19:00:00.123456Z","updated_at":"2026-11-23T19:00:00.123456Z"}"#;

#[handler]
fn record(Path(id): Path<i64>) -> Response {
    // Parse the id like the real route does, so routing + extraction are part of the ceiling.
    let _ = id;
    Response::builder().header(header::CONTENT_TYPE, "application/json; charset=utf-8").body(BODY)
}

/// The allocator aside runs with (src/main.rs), so the ratio to aside measures code, not allocators.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::var("BIND_ADDR").unwrap_or_else(|_| "127.0.0.1:8091".into());
    println!("ceiling_poem listening on {addr} ({} byte body)", BODY.len());
    let app = Route::new().at("/data/:id", get(record));
    Server::new(TcpListener::bind(addr)).run(app).await
}

//! The hot statements' own connections (`db/lanes.rs`, our component beside sqlx's pool): what they do
//! when all are busy and when the app stops. (After an outage: `outage.rs`.) Straight to Postgres with
//! prepared statements: that is where lanes are used (behind a pooler every statement takes the pool).

use std::time::{Duration, Instant};

use aside::config::DatabasePooler;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement, TransactionTrait};
use serde_json::json;

use crate::helpers::{TestApp, assert_problem, direct_url, start, test_config};

/// Lanes per process (`db::lanes::LANES`).
const LANES: usize = 8;

async fn direct_app() -> TestApp {
    let mut config = test_config().await;
    config.database_url = direct_url(&config.database_url);
    config.database_pooler = DatabasePooler::None;
    config.cache_enabled = false; // every read takes a lane
    start(config).await
}

async fn count(admin: &DatabaseConnection, sql: &str) -> i64 {
    let row = admin.query_one_raw(Statement::from_string(admin.get_database_backend(), sql)).await;
    row.expect("query").expect("a row").try_get_by_index::<i64>(0).expect("a count")
}

/// Backends of the app's database, as Postgres sees them (`waiting`: blocked on a lock).
async fn backends(admin: &DatabaseConnection, database: &str, waiting: bool) -> i64 {
    let lock = if waiting { " AND wait_event_type = 'Lock'" } else { "" };
    count(admin, &format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{database}'{lock}")).await
}

async fn until(what: &str, mut ok: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn database_of(url: &str) -> String {
    url.rsplit_once('/').expect("a database URL ends in /name").1.split('?').next().unwrap_or_default().to_owned()
}

/// Saturation: every lane held by a statement that waits on a row lock; the next hot statement gets a
/// clear 503 within the acquire timeout (never a hang) while the pool (lists, `/ready`) still serves;
/// once the lock goes, every held statement completes and the lanes serve again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_lane_busy_the_next_statement_is_a_fast_503_and_the_pool_still_serves() {
    let app = direct_app().await;
    let (locked, other) = (app.create("locked", json!(0)).await, app.create("other", json!(0)).await);
    let (locked, other) = (locked["id"].as_i64().expect("id"), other["id"].as_i64().expect("id"));
    let database = database_of(&app.config.database_url);
    let admin = Database::connect(app.config.database_url.clone()).await.expect("admin connection");
    let holder = admin.begin().await.expect("begin");
    holder
        .execute_unprepared(&format!("SELECT id FROM records WHERE id = {locked} FOR UPDATE"))
        .await
        .expect("row lock");

    // Arrange: one PUT per lane, each waiting on the lock inside its UPDATE (seen in pg_stat_activity).
    let puts: Vec<_> = (0..LANES)
        .map(|n| {
            let (client, url) = (app.client.clone(), app.url(&format!("/data/{locked}")));
            let token = app.config.api_token.clone();
            tokio::spawn(async move {
                let mut req = client.put(url).json(&json!({"value": n}));
                if let Some(t) = token {
                    req = req.bearer_auth(t);
                }
                req.send().await.expect("put").status()
            })
        })
        .collect();
    until("every lane waits on the lock", async || backends(&admin, &database, true).await == LANES as i64).await;

    // Act + assert: the ninth hot statement cannot get a lane.
    let asked = Instant::now();
    let r = app.get_data(other).await;
    let waited = asked.elapsed();
    let problem = assert_problem(r, 503).await;
    assert!(waited < Duration::from_secs(4), "a 503 within the acquire timeout, not a hang: {waited:?} ({problem})");
    assert!(waited >= Duration::from_millis(1000), "it waited for a lane first: {waited:?}");
    assert_eq!(app.list_data("?limit=5").await.status(), 200, "a list takes the pool, not a lane");
    assert_eq!(app.client.get(app.url("/ready")).send().await.expect("ready").status(), 200, "/ready: the pool");

    holder.rollback().await.expect("release the lock");
    for put in puts {
        assert_eq!(put.await.expect("put task"), 200, "a PUT that waited on the lock completes");
    }
    assert_eq!(app.get_data(other).await.status(), 200, "the lanes serve again");
}

/// Shutdown: once the app has stopped, none of its connections (lanes or pool) is left on Postgres.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_app_leaves_no_connection_behind() {
    let app = direct_app().await;
    let id = app.create("k", json!(0)).await["id"].as_i64().expect("id");
    // Several lanes at once, and the pool.
    futures::future::join_all((0..LANES).map(|_| app.get_data(id))).await;
    let app_ref = &app;
    futures::future::join_all((0..3).map(|n| async move { app_ref.put_data(id, &json!({"value": n})).await })).await;
    assert_eq!(app.list_data("?limit=5").await.status(), 200);
    let database = database_of(&app.config.database_url);
    let (server, _) = app.config.database_url.rsplit_once('/').expect("a database URL ends in /name");
    let admin = Database::connect(format!("{server}/postgres")).await.expect("admin connection");
    let open = backends(&admin, &database, false).await;
    assert!(open >= 2, "lanes and pool connections are open before the stop ({open})");

    app.stop.stop();
    tokio::time::timeout(Duration::from_secs(10), app.task).await.expect("stops").expect("joins").expect("runs");
    drop(app.db);
    until("no connection to the app's database is left", async || backends(&admin, &database, false).await == 0).await;
}

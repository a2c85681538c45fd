//! Behind a transaction-pooling PgBouncer (issue 8; DESIGN.md, "Behind PgBouncer"): the throwaway
//! PgBouncer of scripts/services.sh runs Debian's 1.18 with `pool_mode = transaction` and three server
//! connections per database, so consecutive statements of one client land on different server
//! connections. The whole suite runs through it a second time too (scripts/test.sh).

use std::process::Command;

use futures::future::join_all;
use serde_json::{Value, json};

use crate::helpers::{
    TestApp, assert_problem, direct_url, fresh_database_direct, pgbouncer_url, spawn_app_with, x_cache,
};

/// A value that must survive being written into SQL as a literal (quotes, backslashes, `$1`, non-ASCII).
fn awkward(n: usize) -> Value {
    json!({"n": n, "s": "it's \\ \"q\" $1 ünï'; --", "list": [1.5, null, true]})
}

/// Every query path, many at once, over two replicas (one without the cache, so every read is a query):
/// grouped inserts and 409s, reads by id, list pages and key lookups, updates, deletes, `/ready`.
async fn every_query_path_answers_right(app: &TestApp, peer: &TestApp) {
    let replica = |i: usize| if i.is_multiple_of(2) { app } else { peer };
    // Grouped inserts: concurrent POSTs share multi-row INSERTs.
    let created = join_all(
        (0..48)
            .map(|i| async move { replica(i).post_data(&json!({"key": format!("k{i}"), "value": awkward(i)})).await }),
    )
    .await;
    let mut ids = Vec::new();
    for (i, r) in created.into_iter().enumerate() {
        assert_eq!(r.status(), 201, "POST k{i}");
        let rec: Value = r.json().await.expect("record");
        assert_eq!((rec["key"].as_str(), &rec["value"]), (Some(format!("k{i}").as_str()), &awkward(i)));
        ids.push(rec["id"].as_i64().expect("id"));
    }
    let taken = join_all(
        (0..8).map(|i| async move { replica(i).post_data(&json!({"key": format!("k{i}"), "value": 0})).await }),
    )
    .await;
    for r in taken {
        assert_problem(r, 409).await;
    }
    // Reads by id, twice each (a MISS, then a HIT on the cached replica).
    for _ in 0..2 {
        let reads = join_all(ids.iter().enumerate().map(|(i, id)| replica(i).get_data(id))).await;
        for (i, r) in reads.into_iter().enumerate() {
            assert_eq!(r.status(), 200, "GET {}", ids[i]);
            assert_eq!(r.json::<Value>().await.expect("json")["value"], awkward(i));
        }
    }
    // List pages (keyset) and key lookups.
    let (mut listed, mut after) = (Vec::new(), 0);
    loop {
        let page = app.get_json(&format!("/data?limit=7&after={after}")).await;
        listed.extend(page["items"].as_array().expect("items").iter().map(|r| r["id"].as_i64().expect("id")));
        match page["next_after"].as_i64() {
            Some(next) => after = next,
            None => break,
        }
    }
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(listed, sorted);
    let lookups = join_all((0..12).map(|i| async move { replica(i).list_data(&format!("key=k{i}")).await })).await;
    for (i, r) in lookups.into_iter().enumerate() {
        let page: Value = r.json().await.expect("json");
        assert_eq!(page["items"][0]["id"], ids[i], "key=k{i}");
    }
    // Updates, then deletes, each seen at once by both replicas.
    let updates = join_all(ids.iter().step_by(3).enumerate().map(|(i, id)| async move {
        replica(i).put_data(id, &json!({"value": {"updated": *id, "note": "a 'quoted' \\ value"}})).await
    }))
    .await;
    for r in updates {
        assert_eq!(r.status(), 200);
    }
    for id in ids.iter().step_by(3) {
        for a in [app, peer] {
            assert_eq!(a.get_json(&format!("/data/{id}")).await["value"]["updated"], *id);
        }
    }
    let deletes = join_all(ids.iter().step_by(5).enumerate().map(|(i, id)| replica(i).delete_data(id))).await;
    for r in deletes {
        assert_eq!(r.status(), 204);
    }
    for id in ids.iter().step_by(5) {
        for a in [app, peer] {
            assert_problem(a.get_data(id).await, 404).await;
        }
        assert_problem(app.delete_data(id).await, 404).await;
    }
    for a in [app, peer] {
        let ready = a.get_json("/ready").await;
        assert_eq!(ready["checks"]["database"], "ok", "{ready}");
    }
}

/// The app and a cache-less second replica on one database, reached through `url`.
async fn two_replicas(url: String, pooler: &str) -> (TestApp, TestApp) {
    let pooler = pooler.to_owned();
    let app = spawn_app_with(|c| {
        c.database_url = url;
        c.database_pooler = aside_pooler(&pooler);
    })
    .await;
    let peer = app.peer_with(|c| c.cache_enabled = false).await;
    (app, peer)
}

fn pool_size(app: &TestApp) -> u32 {
    app.db.get_postgres_connection_pool().options().get_max_connections()
}

fn aside_pooler(word: &str) -> aside::config::DatabasePooler {
    let vars = [("DATABASE_POOLER".to_owned(), word.to_owned())].into_iter().collect();
    aside::config::Config::from_vars(&vars).expect("valid DATABASE_POOLER").database_pooler
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_query_path_works_through_a_transaction_pooling_pgbouncer() {
    // Arrange: no setting at all; aside finds out that statements move between server connections.
    let (app, peer) = two_replicas(pgbouncer_url(&fresh_database_direct().await), "auto").await;
    assert_eq!((app.statements, peer.statements), ("inline", "inline"));
    assert_eq!(pool_size(&app), 16, "behind a pooler the pool has the whole budget (no lanes there)");
    // Act + Assert
    every_query_path_answers_right(&app, &peer).await;
    // What a MISS stored is what a HIT serves.
    let rec = app.create("after", json!({"q": "'"})).await;
    let first = app.get_data(&rec["id"]).await;
    assert_eq!(x_cache(&first), "MISS");
    assert_eq!(x_cache(&app.get_data(&rec["id"]).await), "HIT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inlined_statements_also_work_directly_on_postgres() {
    // DATABASE_POOLER=transaction forces the pooler-safe path even where it is not needed.
    let (app, peer) = two_replicas(fresh_database_direct().await, "transaction").await;
    assert_eq!(app.statements, "inline");
    every_query_path_answers_right(&app, &peer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_itself_keeps_prepared_statements_and_none_forces_them() {
    let direct = fresh_database_direct().await;
    let (app, _) = two_replicas(direct.clone(), "auto").await;
    assert_eq!(app.statements, "prepared", "no pooler detected on a direct connection");
    assert_eq!(pool_size(&app), 8, "the hot statements' lanes hold the other 8 of the 16");
    let forced = spawn_app_with(|c| {
        c.database_url = pgbouncer_url(&direct);
        c.database_pooler = aside_pooler("none");
    })
    .await;
    assert_eq!(forced.statements, "prepared", "DATABASE_POOLER=none skips the detection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aside_migrate_through_pgbouncer_applies_once_even_twice_at_once() {
    let url = pgbouncer_url(&fresh_database_direct().await);
    let migrate = || {
        Command::new(env!("CARGO_BIN_EXE_aside"))
            .arg("migrate")
            .env("DATABASE_URL", &url)
            .env("LOG_FORMAT", "text")
            .output()
            .expect("run aside migrate")
    };
    // Two at once (the advisory lock through the pooler), then again (a no-op), then `serve`'s own run.
    let (first, second) = std::thread::scope(|s| {
        let other = s.spawn(migrate);
        (migrate(), other.join().expect("thread"))
    });
    for out in [first, second, migrate()] {
        assert!(out.status.success(), "aside migrate: {}", String::from_utf8_lossy(&out.stderr));
    }
    let app = spawn_app_with(|c| c.database_url = url.clone()).await;
    app.create("migrated", json!(1)).await;
    // Straight to Postgres: the migration is recorded once and the table is there.
    let db = sea_orm::Database::connect(direct_url(&url)).await.expect("connect");
    use sea_orm::ConnectionTrait;
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT (SELECT count(*) FROM seaql_migrations)::int8 AS m, (SELECT count(*) FROM records)::int8 AS r",
        ))
        .await
        .expect("query")
        .expect("row");
    assert_eq!((row.try_get::<i64>("", "m").expect("m"), row.try_get::<i64>("", "r").expect("r")), (1, 1));
    let _ = db.close().await;
}

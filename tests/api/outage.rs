//! Issue 19: after Postgres comes back from an outage (a restart, or every connection terminated), no
//! request fails on a connection that died before, writes included, and `/ready` says 200 at once and
//! stays there. Both ways statements go out are covered: the hot statements' own connections (lanes,
//! the default) and the pool alone (`DATABASE_POOLER=transaction`, values inlined).

use std::time::{Duration, Instant};

use aside::config::{Config, DatabasePooler};
use serde_json::{Value, json};

use crate::helpers::{BackendKiller, OwnPostgres, TestApp, direct_url, spawn_app_with, start, test_config};

/// Longer than the app's idle window (`CHECK_IF_IDLE`, 500 ms): a connection unused this long is checked
/// before its next use.
const PAST_IDLE_WINDOW: Duration = Duration::from_millis(600);

/// Every kind of statement once (and several at once, so more than one connection is in play), each of
/// which must succeed at its first try; then `/ready` ten times, each 200.
async fn every_statement_succeeds(app: &TestApp, round: &str) {
    let r = app.client.get(app.url("/ready")).send().await.expect("ready");
    assert_eq!(r.status(), 200, "{round}: the first /ready after the outage");
    let created = app.post_data(&json!({"key": format!("{round}-new"), "value": 1})).await;
    assert_eq!(created.status(), 201, "{round}: POST {}", created.text().await.unwrap_or_default());
    let created: Value = created.json().await.expect("json");
    let id = created["id"].as_i64().expect("id");
    let puts =
        futures::future::join_all((0..6).map(|n| async move { app.put_data(id, &json!({"value": n})).await })).await;
    for r in puts {
        assert_eq!(r.status(), 200, "{round}: PUT");
    }
    let gets = futures::future::join_all((0..6).map(|_| app.get_data(id))).await;
    for r in gets {
        assert_eq!(r.status(), 200, "{round}: GET");
    }
    assert_eq!(app.list_data("?limit=5").await.status(), 200, "{round}: list");
    let posts = futures::future::join_all(
        (0..6).map(|n| async move { app.post_data(&json!({"key": format!("{round}-batch-{n}"), "value": n})).await }),
    )
    .await;
    for r in posts {
        assert_eq!(r.status(), 201, "{round}: concurrent POST");
    }
    assert_eq!(app.delete_data(id).await.status(), 204, "{round}: DELETE");
    for _ in 0..10 {
        let r = app.client.get(app.url("/ready")).send().await.expect("ready");
        assert_eq!(r.status(), 200, "{round}: /ready flapped");
    }
}

/// Connections of every kind open and used: several at once, so the app holds more than one.
async fn warm(app: &TestApp, round: &str) -> i64 {
    let rec = app.create(&format!("{round}-warm"), json!(0)).await;
    let id = rec["id"].as_i64().expect("id");
    futures::future::join_all((0..6).map(|_| app.get_data(id))).await;
    futures::future::join_all((0..3).map(|n| async move { app.put_data(id, &json!({"value": n})).await })).await;
    assert_eq!(app.list_data("?limit=5").await.status(), 200);
    assert_eq!(app.client.get(app.url("/ready")).send().await.expect("ready").status(), 200);
    id
}

async fn restart_then_everything_works(pooler: DatabasePooler) {
    let pg = OwnPostgres::start().await;
    let mut config: Config = test_config().await;
    config.database_url = pg.url();
    config.database_pooler = pooler;
    config.cache_enabled = false; // every read goes to Postgres
    let app = start(config).await;
    for round in ["first", "second"] {
        warm(&app, round).await;
        let stopped = Instant::now();
        pg.stop().await;
        // While it is down: not ready. (No request that needs Postgres: after a quiet outage the app's
        // connections are all still there, dead, which is the case that failed.)
        let r = app.client.get(app.url("/ready")).send().await.expect("ready");
        assert_eq!(r.status(), 503, "{round}: /ready while down");
        pg.start_again().await;
        // The app's connections were last used before the stop; make sure the idle window has passed
        // (a restart usually takes longer anyway) so the outcome does not depend on the machine's speed.
        tokio::time::sleep(PAST_IDLE_WINDOW.saturating_sub(stopped.elapsed())).await;
        every_statement_succeeds(&app, round).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_postgres_restart_every_statement_succeeds_and_ready_does_not_flap() {
    restart_then_everything_works(DatabasePooler::None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_postgres_restart_every_statement_succeeds_through_the_pool_alone() {
    restart_then_everything_works(DatabasePooler::Transaction).await;
}

/// Every backend of the app's database terminated by an admin (57P01 on the next use), Postgres up all
/// along: once via the idle window, once right away after `/ready` saw a dead connection.
async fn terminated_backends_then_everything_works(pooler: DatabasePooler) {
    let app = spawn_app_with(|c| {
        c.cache_enabled = false;
        c.database_pooler = pooler;
        // Straight to Postgres in the PgBouncer run too: the backends terminated must be the app's own.
        c.database_url = direct_url(&c.database_url);
    })
    .await;
    let killer = BackendKiller::new(&app).await;
    for round in ["idle", "sign"] {
        let id = warm(&app, round).await;
        killer.kill_all().await;
        if round == "idle" {
            // Idle past the window: every connection is checked before its next use.
            tokio::time::sleep(PAST_IDLE_WINDOW).await;
        } else {
            // Right away: `/ready` meets a dead pooled connection (a sign), tries the next one and says
            // 200; every connection idle since then, the hot statements' too, is checked before use.
            let r = app.client.get(app.url("/ready")).send().await.expect("ready");
            assert_eq!(r.status(), 200, "/ready right after the backends were terminated");
            let r = app.put_data(id, &json!({"value": "after"})).await;
            assert_eq!(r.status(), 200, "the first write right after the backends were terminated");
        }
        every_statement_succeeds(&app, round).await;
    }
    killer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_every_backend_is_terminated_every_statement_succeeds() {
    terminated_backends_then_everything_works(DatabasePooler::None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_every_backend_is_terminated_every_statement_succeeds_through_the_pool_alone() {
    terminated_backends_then_everything_works(DatabasePooler::Transaction).await;
}

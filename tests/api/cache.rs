//! Contract: "The cache" — HIT/MISS/BYPASS, read-your-writes on every replica (including the slow-miss
//! race and token eviction), single-flight, Redis outages, the kill switch, and the cache metrics.

use std::time::{Duration, Instant};

use fred::prelude::{ClientLike, KeysInterface};
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};

use crate::helpers::{
    FillGate, OwnRedis, Proxy, TestApp, eventually, header, socket_of, spawn_app, spawn_app_with, spawn_embedded_app,
    start_hooked, test_config, via_proxy, x_cache,
};

async fn body(r: reqwest::Response) -> Value {
    r.json().await.expect("json")
}

pub(crate) async fn cache_aside_flow(app: &TestApp) {
    let rec = app.create("flow", json!({"v": 1})).await;
    let id = &rec["id"];
    let miss = app.get_data(id).await;
    assert_eq!(x_cache(&miss), "MISS");
    let (etag, miss_bytes) = (header(miss.headers(), "etag"), miss.bytes().await.expect("bytes"));
    let hit = app.get_data(id).await;
    assert_eq!(x_cache(&hit), "HIT");
    assert_eq!(header(hit.headers(), "etag"), etag);
    assert_eq!(hit.bytes().await.expect("bytes"), miss_bytes, "a HIT sends the bytes the MISS sent");
    // Lists and key lookups are cached too, and each write invalidates them.
    assert_eq!(x_cache(&app.list_data("limit=10").await), "MISS");
    assert_eq!(x_cache(&app.list_data("limit=10").await), "HIT");
    assert_eq!(x_cache(&app.list_data("key=flow").await), "MISS");
    assert_eq!(x_cache(&app.list_data("key=flow").await), "HIT");
    app.create("flow2", json!(2)).await;
    let page = app.list_data("limit=10").await;
    assert_eq!(x_cache(&page), "MISS", "POST invalidates every page");
    assert_eq!(body(page).await["items"].as_array().map(Vec::len), Some(2));
    app.put_data(id, &json!({"value": {"v": 2}})).await;
    let after_put = app.get_data(id).await;
    assert_eq!(x_cache(&after_put), "MISS");
    assert_eq!(body(after_put).await["value"], json!({"v": 2}));
    let by_key = app.list_data("key=flow").await;
    assert_eq!(body(by_key).await["items"][0]["value"], json!({"v": 2}), "PUT invalidates key lookups");
    app.delete_data(id).await;
    assert_eq!(app.get_data(id).await.status(), 404);
    assert_eq!(body(app.list_data("key=flow").await).await["items"], json!([]), "DELETE invalidates key lookups");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_miss_then_hit_and_writes_invalidate_with_postgres_and_redis() {
    cache_aside_flow(&spawn_app().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_miss_then_hit_and_writes_invalidate_embedded() {
    cache_aside_flow(&spawn_embedded_app().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_on_one_replica_are_seen_by_a_second_replica_at_once() {
    // Arrange: two replicas sharing Postgres and Redis; B has the record and page cached.
    let a = spawn_app().await;
    let b = a.peer().await;
    let rec = a.create("shared", json!("v1")).await;
    let id = &rec["id"];
    b.get_data(id).await;
    assert_eq!(x_cache(&b.get_data(id).await), "HIT");
    b.list_data("limit=5").await;
    b.list_data("key=shared").await;
    // Act + Assert: each write through A is visible on B's very next read.
    a.put_data(id, &json!({"value": "v2"})).await;
    assert_eq!(body(b.get_data(id).await).await["value"], "v2", "PUT seen by the peer");
    assert_eq!(body(b.list_data("key=shared").await).await["items"][0]["value"], "v2");
    a.create("shared-2", json!(2)).await;
    assert_eq!(body(b.list_data("limit=5").await).await["items"].as_array().map(Vec::len), Some(2), "POST seen");
    a.delete_data(id).await;
    assert_eq!(b.get_data(id).await.status(), 404, "DELETE seen by the peer");
    assert_eq!(body(b.list_data("key=shared").await).await["items"], json!([]));
    // And B's HIT carries the same ETag as A's MISS.
    let r = a.create("etag-shared", json!(1)).await;
    let a_miss = a.get_data(&r["id"]).await;
    b.get_data(&r["id"]).await;
    let b_hit = b.get_data(&r["id"]).await;
    assert_eq!(x_cache(&b_hit), "HIT");
    assert_eq!(header(a_miss.headers(), "etag"), header(b_hit.headers(), "etag"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_and_a_delete_invalidate_a_list_page_cached_on_a_second_replica() {
    // Arrange: B has the plain page cached (a HIT) before each write through A.
    let a = spawn_app().await;
    let b = a.peer().await;
    let first = a.create("page-1", json!("v1")).await;
    let second = a.create("page-2", json!("v1")).await;
    b.list_data("limit=10").await;
    assert_eq!(x_cache(&b.list_data("limit=10").await), "HIT");
    // Act + Assert: PUT through A; B's next read of that page shows the new value.
    assert_eq!(a.put_data(&first["id"], &json!({"value": "v2"})).await.status(), 200);
    let page = body(b.list_data("limit=10").await).await;
    assert_eq!(page["items"][0]["value"], "v2", "PUT seen on the peer's cached page: {page}");
    assert_eq!(x_cache(&b.list_data("limit=10").await), "HIT");
    // DELETE through A; the record disappears from B's cached page.
    assert_eq!(a.delete_data(&second["id"]).await.status(), 204);
    let page = body(b.list_data("limit=10").await).await;
    let ids: Vec<&Value> = page["items"].as_array().expect("items").iter().map(|r| &r["id"]).collect();
    assert_eq!(ids, [&first["id"]], "DELETE seen on the peer's cached page: {page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_counts_at_least_one_cache_invalidation() {
    let app = spawn_app().await;
    let invalidations = || app.metric("aside_cache_invalidations_total");
    let before = invalidations().await;
    let rec = app.create("inv", json!(1)).await;
    let after_post = invalidations().await;
    assert!(after_post - before >= 1.0, "POST: {before} -> {after_post}");
    assert_eq!(app.put_data(&rec["id"], &json!({"value": 2})).await.status(), 200);
    let after_put = invalidations().await;
    assert!(after_put - after_post >= 1.0, "PUT: {after_post} -> {after_put}");
    assert_eq!(app.delete_data(&rec["id"]).await.status(), 204);
    let after_delete = invalidations().await;
    assert!(after_delete - after_put >= 1.0, "DELETE: {after_put} -> {after_delete}");
}

/// Issue 10: each write replaces its own tokens only (record + list), however many writes overlap. Before,
/// a write queued its keys as pending and then delivered everything pending, so overlapping writes
/// re-sent each other's tokens (measured: ~4.6 token replacements per PUT at 8 connections).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_each_replace_only_their_own_tokens() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for i in 0..24 {
        ids.push(app.create(&format!("own-{i}"), json!(i)).await["id"].clone());
    }
    let before = app.metric("aside_cache_invalidations_total").await;
    let again = json!({"value": "again"});
    let puts = ids.iter().map(|id| app.put_data(id, &again));
    for r in futures::future::join_all(puts).await {
        assert_eq!(r.status(), 200);
    }
    let after = app.metric("aside_cache_invalidations_total").await;
    assert_eq!(after - before, 2.0 * ids.len() as f64, "two tokens per PUT (record, lists), never more");
}

pub(crate) async fn slow_miss_race(a: &TestApp, gate: FillGate, writer: &TestApp) {
    let rec = writer.create("race", json!("old")).await;
    let id = rec["id"].as_i64().expect("id");
    // R misses and reads "old" from the database, then parks just before filling the cache.
    let reader = {
        let (client, url) = (a.client.clone(), a.url(&format!("/data/{id}")));
        tokio::spawn(async move { client.get(url).send().await.expect("get").json::<Value>().await.expect("json") })
    };
    gate.reached.notified().await;
    // W commits "new" and answers while R is parked.
    let w = writer.put_data(id, &json!({"value": "new"})).await;
    assert_eq!(w.status(), 200);
    // R resumes and tries to fill with "old"; it may answer "old" (it began before W answered) ...
    gate.release.notify_one();
    let r = reader.await.expect("reader");
    assert_eq!(r["value"], "old");
    // ... but no read that starts after W answered may see "old", on either replica, ever.
    for app in [a, writer, a] {
        let resp = app.get_data(id).await;
        assert_eq!(body(resp).await["value"], "new");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_miss_that_began_before_a_write_never_fills_the_cache_after_it() {
    let (hook, gate) = FillGate::hook("}:body");
    let a = start_hooked(test_config().await, Some(hook)).await;
    let b = a.peer().await;
    slow_miss_race(&a, gate, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slow_miss_race_is_also_safe_in_process() {
    let (hook, gate) = FillGate::hook("}:body");
    let a = start_hooked(crate::helpers::embedded_config(), Some(hook)).await;
    // One process is both the slow reader and the writer.
    slow_miss_race(&a, gate, &a).await;
}

/// The slow-miss race on a list read (`path`): R misses and parks before its fill, W (a PUT) commits
/// and answers, R fills; no read of `path` that starts after W answered may show the old page.
async fn slow_list_miss_race(a: &TestApp, gate: FillGate, writer: &TestApp, key: &str, path: &str) {
    let rec = writer.create(key, json!("old")).await;
    let reader = {
        let (client, url) = (a.client.clone(), a.url(path));
        tokio::spawn(async move { client.get(url).send().await.expect("get").json::<Value>().await.expect("json") })
    };
    gate.reached.notified().await;
    assert_eq!(writer.put_data(&rec["id"], &json!({"value": "new"})).await.status(), 200);
    gate.release.notify_one();
    let r = reader.await.expect("reader");
    assert_eq!(r["items"][0]["value"], "old", "the parked read began before the write");
    for app in [a, writer, a] {
        let page = body(app.client.get(app.url(path)).send().await.expect("get")).await;
        assert_eq!(page["items"][0]["value"], "new", "{path} after the write: {page}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_list_page_miss_that_began_before_a_write_never_fills_the_cache_after_it() {
    let (hook, gate) = FillGate::hook("{list}:page:0:7");
    let a = start_hooked(test_config().await, Some(hook)).await;
    let b = a.peer().await;
    slow_list_miss_race(&a, gate, &b, "race-page", "/data?limit=7").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_key_lookup_miss_that_began_before_a_write_never_fills_the_cache_after_it() {
    let (hook, gate) = FillGate::hook("{list}:key:0:50:race-key");
    let a = start_hooked(test_config().await, Some(hook)).await;
    let b = a.peer().await;
    slow_list_miss_race(&a, gate, &b, "race-key", "/data?key=race-key").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slow_list_and_key_lookup_miss_races_are_also_safe_in_process() {
    for (entry, key, path) in [
        ("{list}:page:0:7", "race-page", "/data?limit=7"),
        ("{list}:key:0:50:race-key", "race-key", "/data?key=race-key"),
    ] {
        let (hook, gate) = FillGate::hook(entry);
        let a = start_hooked(crate::helpers::embedded_config(), Some(hook)).await;
        slow_list_miss_race(&a, gate, &a, key, path).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_on_one_key_cause_one_database_read() {
    // Arrange: the first miss parks before its fill until every other request has joined it.
    let (hook, gate) = FillGate::hook("}:body");
    let app = start_hooked(test_config().await, Some(hook)).await;
    stampede(&app, gate).await;
}

/// 25 concurrent GETs of one uncached record on `app` (whose fill hook `gate` holds the first miss until
/// the other 24 joined its flight): every one answers MISS with the record, one database read in all.
pub(crate) async fn stampede(app: &TestApp, gate: FillGate) {
    let rec = app.create("stampede", json!("hot")).await;
    let id = rec["id"].as_i64().expect("id");
    let before = app.metric("aside_db_queries_total{op=\"get\"}").await;
    const N: usize = 25;
    // Act
    let mut tasks = Vec::new();
    for _ in 0..N {
        let (client, url) = (app.client.clone(), app.url(&format!("/data/{id}")));
        tasks.push(tokio::spawn(async move {
            let r = client.get(url).send().await.expect("get");
            (x_cache(&r), r.json::<Value>().await.expect("json"))
        }));
    }
    gate.reached.notified().await;
    let joined = eventually(Duration::from_secs(10), || async { app.cache.followers() == N - 1 }).await;
    assert!(joined.is_some(), "followers joined: {}", app.cache.followers());
    gate.release.notify_one();
    // Assert
    for t in tasks {
        let (xc, v) = t.await.expect("task");
        assert_eq!(xc, "MISS");
        assert_eq!(v["value"], "hot");
    }
    let after = app.metric("aside_db_queries_total{op=\"get\"}").await;
    assert_eq!(after - before, 1.0, "{N} concurrent misses, one database read");
    assert_eq!((app.cache.flights(), app.cache.followers()), (0, 0), "no flight outlives its requests");
    assert_eq!(x_cache(&app.get_data(id).await), "HIT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicted_token_never_lets_an_old_entry_hit() {
    // Redis with allkeys-lru may evict a token while entries stamped with it survive (cache-design
    // trap 2). Evict tokens by hand, change the database behind the cache's back, and read.
    let app = spawn_app().await;
    let rec = app.create("evict", json!("v1")).await;
    let id = rec["id"].as_i64().expect("id");
    app.get_data(id).await;
    assert_eq!(x_cache(&app.get_data(id).await), "HIT");
    let redis = fred::prelude::Client::new(
        fred::prelude::Config::from_url(app.config.redis_url.as_deref().expect("redis")).expect("url"),
        None,
        None,
        None,
    );
    redis.init().await.expect("redis");
    let tok = format!("{}{{rec:{id}}}:tok", app.config.cache_prefix);
    for _ in 0..3 {
        let deleted: i64 = redis.del(&tok).await.expect("del");
        assert_eq!(deleted, 1, "the token key exists under the documented name");
        let r = app.get_data(id).await;
        assert_eq!(x_cache(&r), "MISS", "a recreated token never matches an entry stamped before");
        assert_eq!(x_cache(&app.get_data(id).await), "HIT");
    }
    // The same with a write that bypasses the cache: only a MISS could show it, and one does.
    app.db.execute_unprepared(&format!("UPDATE records SET value = '\"v2\"' WHERE id = {id}")).await.expect("update");
    let _: i64 = redis.del(&tok).await.expect("del");
    assert_eq!(body(app.get_data(id).await).await["value"], "v2");
    let _ = redis.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_test_gives_bypass_fast_then_hits_again_when_it_returns() {
    let mut redis = OwnRedis::start().await;
    let url = redis.url();
    let app = spawn_app_with(|c| c.redis_url = Some(url)).await;
    let rec = app.create("outage", json!("v1")).await;
    let id = rec["id"].as_i64().expect("id");
    eventually(Duration::from_secs(5), || async { x_cache(&app.get_data(id).await) == "HIT" })
        .await
        .expect("HIT while Redis is up");
    let errors_before = app.metric("aside_cache_errors_total").await;

    redis.kill();
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        let t = Instant::now();
        let r = app.get_data(id).await;
        worst = worst.max(t.elapsed());
        assert_eq!(r.status(), 200);
        assert_eq!(x_cache(&r), "BYPASS");
    }
    assert!(worst < Duration::from_millis(500), "BYPASS must be fast, worst was {worst:?}");
    // Writes still succeed while Redis is down, and this replica never serves the old value.
    let t = Instant::now();
    assert_eq!(app.put_data(id, &json!({"value": "v2"})).await.status(), 200);
    assert!(t.elapsed() < Duration::from_millis(500));
    assert_eq!(body(app.get_data(id).await).await["value"], "v2");
    let ready = app.client.get(app.url("/ready")).send().await.expect("ready");
    assert_eq!(ready.status(), 200, "a degraded cache never fails readiness");
    assert_eq!(body(ready).await["checks"]["cache"], "degraded");
    assert!(app.metric("aside_cache_errors_total").await > errors_before, "errors are counted");

    redis.restart().await;
    let back = eventually(Duration::from_secs(5), || async {
        let r = app.get_data(id).await;
        x_cache(&r) == "HIT" && body(r).await["value"] == "v2"
    })
    .await;
    assert!(back.is_some(), "cache used again within 5 s of Redis returning");
    assert_eq!(app.get_json("/ready").await["checks"]["cache"], "ok");
}

/// Issue 7: `/ready` used to read fred's connection flag, which lags the first failed command by
/// about half a second after a SIGKILL; it must say `degraded` as soon as a command has failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_says_degraded_from_the_first_failed_cache_command_until_one_succeeds() {
    // Arrange
    let mut redis = OwnRedis::start().await;
    let url = redis.url();
    let app = spawn_app_with(|c| c.redis_url = Some(url)).await;
    let rec = app.create("ready-truth", json!(1)).await;
    let id = rec["id"].as_i64().expect("id");
    eventually(Duration::from_secs(5), || async { x_cache(&app.get_data(id).await) == "HIT" })
        .await
        .expect("HIT while Redis is up");
    assert_eq!(app.get_json("/ready").await["checks"]["cache"], "ok");

    // Act: SIGKILL, then at once one read and one readiness probe (no waiting in between).
    redis.kill();
    let r = app.get_data(id).await;
    let ready = app.get_json("/ready").await;

    // Assert
    assert_eq!(x_cache(&r), "BYPASS");
    assert_eq!(ready["checks"]["cache"], "degraded", "the GET already failed its cache command: {ready}");
    assert_eq!(app.get_json("/ready").await["checks"]["cache"], "degraded", "still failing");
    // Back without any data traffic: readiness' own probe is the command that succeeds.
    redis.restart().await;
    let back =
        eventually(Duration::from_secs(5), || async { app.get_json("/ready").await["checks"]["cache"] == "ok" }).await;
    assert!(back.is_some(), "`ok` again once a cache command succeeds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_and_deletes_succeed_while_redis_is_down_and_bypasses_are_counted() {
    let mut redis = OwnRedis::start().await;
    let url = redis.url();
    let app = spawn_app_with(|c| c.redis_url = Some(url)).await;
    let rec = app.create("down-1", json!(1)).await;
    let id = rec["id"].as_i64().expect("id");
    app.get_data(id).await;
    let bypass = "aside_cache_lookups_total{outcome=\"bypass\"}";
    redis.kill();
    // Writes succeed from Postgres alone.
    let r = app.post_data(&json!({"key": "down-2", "value": 2})).await;
    assert_eq!(r.status(), 201, "POST while Redis is down");
    let created: Value = r.json().await.expect("json");
    assert_eq!(app.delete_data(id).await.status(), 204, "DELETE while Redis is down");
    // Reads see both writes, each answer a BYPASS, each BYPASS counted once.
    let before = app.metric(bypass).await;
    let page = app.list_data("limit=10").await;
    assert_eq!(x_cache(&page), "BYPASS");
    assert_eq!(body(page).await["items"], json!([created]));
    let r = app.get_data(&created["id"]).await;
    assert_eq!((r.status().as_u16(), x_cache(&r)), (200, "BYPASS".to_owned()));
    assert_eq!(app.metric(bypass).await - before, 2.0, "one bypass lookup per BYPASS answer");
    assert_eq!(app.get_data(id).await.status(), 404, "the deleted record is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_cannot_reach_redis_is_applied_before_the_writer_reads_the_cache_again() {
    // A reaches Redis through a proxy we can cut; B reaches it directly.
    let redis_url = std::env::var("TEST_REDIS_URL").expect("TEST_REDIS_URL (run scripts/test.sh)");
    let proxy = Proxy::start(socket_of(&redis_url)).await;
    let via = via_proxy(&redis_url, proxy.port);
    let a = spawn_app_with(|c| c.redis_url = Some(via)).await;
    let b = a.peer_with(|c| c.redis_url = Some(redis_url.clone())).await;
    let rec = a.create("pending", json!("v1")).await;
    let id = rec["id"].as_i64().expect("id");
    b.get_data(id).await;
    assert_eq!(x_cache(&b.get_data(id).await), "HIT");

    // Act: A loses Redis and writes; the invalidation cannot be delivered.
    proxy.refuse();
    assert_eq!(a.put_data(id, &json!({"value": "v2"})).await.status(), 200);
    // A itself never serves v1, even though v1 is still cached in Redis.
    for _ in 0..3 {
        let r = a.get_data(id).await;
        assert_eq!(x_cache(&r), "BYPASS");
        assert_eq!(body(r).await["value"], "v2");
    }
    // (B may serve v1 for at most the TTL: the contract's one exception.)

    // Redis reachable again: A delivers the pending invalidation promptly (background retry), so B
    // stops serving v1 without waiting for the TTL.
    proxy.forward();
    let healed =
        eventually(Duration::from_secs(5), || async { body(b.get_data(id).await).await["value"] == "v2" }).await;
    assert!(healed.is_some(), "pending invalidation delivered after Redis returned");
    let a_back = eventually(Duration::from_secs(5), || async {
        let r = a.get_data(id).await;
        x_cache(&r) != "BYPASS" && body(r).await["value"] == "v2"
    })
    .await;
    assert!(a_back.is_some(), "the writer uses the cache again within 5 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_disabled_bypasses_reads_but_still_invalidates() {
    let on = spawn_app().await;
    let off = on.peer_with(|c| c.cache_enabled = false).await;
    let rec = on.create("kill-switch", json!("v1")).await;
    let id = rec["id"].as_i64().expect("id");
    on.get_data(id).await;
    assert_eq!(x_cache(&on.get_data(id).await), "HIT");
    let bypass = "aside_cache_lookups_total{outcome=\"bypass\"}";
    let before = off.metric(bypass).await;
    for _ in 0..2 {
        assert_eq!(x_cache(&off.get_data(id).await), "BYPASS");
        assert_eq!(x_cache(&off.list_data("").await), "BYPASS");
    }
    assert_eq!(off.metric(bypass).await - before, 4.0, "one bypass lookup per GET");
    let ready = off.client.get(off.url("/ready")).send().await.expect("ready");
    assert_eq!(ready.status(), 200, "a disabled cache never fails readiness");
    assert_eq!(body(ready).await["checks"]["cache"], "disabled");
    // A write through the switched-off replica still invalidates the shared cache.
    off.put_data(id, &json!({"value": "v2"})).await;
    assert_eq!(body(on.get_data(id).await).await["value"], "v2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_metrics_match_x_cache_and_count_invalidations_and_queries() {
    let app = spawn_app().await;
    let m = |s: &'static str| app.metric(s);
    let (hit0, miss0, inv0, created0) = (
        m("aside_cache_lookups_total{outcome=\"hit\"}").await,
        m("aside_cache_lookups_total{outcome=\"miss\"}").await,
        m("aside_cache_invalidations_total").await,
        m("aside_records_created_total").await,
    );
    let rec = app.create("metrics", json!(1)).await;
    let id = rec["id"].as_i64().expect("id");
    let mut seen = std::collections::HashMap::<String, f64>::new();
    for _ in 0..3 {
        *seen.entry(x_cache(&app.get_data(id).await)).or_default() += 1.0;
    }
    *seen.entry(x_cache(&app.list_data("").await)).or_default() += 1.0;
    app.put_data(id, &json!({"value": 2})).await;
    app.delete_data(id).await;
    assert_eq!(m("aside_cache_lookups_total{outcome=\"hit\"}").await - hit0, seen["HIT"]);
    assert_eq!(m("aside_cache_lookups_total{outcome=\"miss\"}").await - miss0, seen["MISS"]);
    assert!(m("aside_cache_invalidations_total").await - inv0 >= 3.0, "at least one per write");
    assert_eq!(m("aside_records_created_total").await - created0, 1.0);
    for op in ["get", "list", "insert", "update", "delete"] {
        let series = format!("aside_db_queries_total{{op=\"{op}\"}}");
        assert!(app.metric(&series).await >= 1.0, "{series}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_costs_at_most_the_cache_timeout() {
    // Black-holed Redis (no RST, no answers): each cache command is capped by CACHE_TIMEOUT_MS.
    let redis_url = std::env::var("TEST_REDIS_URL").expect("TEST_REDIS_URL (run scripts/test.sh)");
    let proxy = Proxy::start(socket_of(&redis_url)).await;
    let via = via_proxy(&redis_url, proxy.port);
    let app = spawn_app_with(|c| {
        c.redis_url = Some(via);
        c.cache_timeout = Duration::from_millis(100);
    })
    .await;
    let rec = app.create("frozen", json!(1)).await;
    let id = rec["id"].as_i64().expect("id");
    app.get_data(id).await;
    proxy.blackhole();
    for _ in 0..5 {
        let t = Instant::now();
        let r = app.get_data(id).await;
        assert_eq!(r.status(), 200);
        assert_eq!(x_cache(&r), "BYPASS");
        assert!(t.elapsed() < Duration::from_millis(600), "took {:?}", t.elapsed());
    }
    let t = Instant::now();
    assert_eq!(app.put_data(id, &json!({"value": 2})).await.status(), 200);
    assert!(t.elapsed() < Duration::from_millis(600), "write took {:?}", t.elapsed());
    proxy.forward();
}

async fn entries_expire_after_the_ttl(app: TestApp) {
    let rec = app.create("ttl", json!(1)).await;
    let id = rec["id"].as_i64().expect("id");
    assert_eq!(x_cache(&app.get_data(id).await), "MISS");
    assert_eq!(x_cache(&app.get_data(id).await), "HIT");
    if let Some(url) = app.config.redis_url.as_deref() {
        let redis = fred::prelude::Client::new(fred::prelude::Config::from_url(url).expect("url"), None, None, None);
        redis.init().await.expect("redis");
        let key = format!("{}{{rec:{id}}}:body", app.config.cache_prefix);
        let pttl: i64 = redis.pttl(&key).await.expect("pttl");
        assert!((1..=1000).contains(&pttl), "entry TTL is CACHE_TTL_SECONDS, got {pttl} ms");
        let _ = redis.quit().await;
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(x_cache(&app.get_data(id).await), "MISS", "expired after CACHE_TTL_SECONDS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_expire_after_cache_ttl_seconds_in_redis() {
    entries_expire_after_the_ttl(spawn_app_with(|c| c.cache_ttl = Duration::from_secs(1)).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_expire_after_cache_ttl_seconds_in_process() {
    let mut c = crate::helpers::embedded_config();
    c.cache_ttl = Duration::from_secs(1);
    entries_expire_after_the_ttl(crate::helpers::start(c).await).await;
}

//! Contract: "Operational endpoints", "Timing promises", "Metrics" (HTTP histogram), "Command line",
//! and the OpenAPI document's promises to Swagger UI users.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::helpers::{
    BackendKiller, Proxy, TestApp, assert_problem, eventually, fresh_database, header, socket_of, spawn_app,
    spawn_app_with, spawn_embedded_app, start_ready, test_config, via_proxy,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_200_and_ready_reports_its_checks() {
    let app = spawn_app().await;
    let r = app.client.get(app.url("/health")).send().await.expect("health");
    assert_eq!(r.status(), 200);
    let r = app.client.get(app.url("/ready")).send().await.expect("ready");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v, json!({"status": "ready", "checks": {"database": "ok", "cache": "ok"}}));
}

/// The password a test app's database URL carries (a canary when the test server needs none: it
/// trusts local connections), so a response can be checked for leaking it.
const DB_PASSWORD_CANARY: &str = "canary-pw-8d1f";

/// An app whose Postgres connections go through a proxy the test can cut or silence; its database URL
/// carries a password (see `DB_PASSWORD_CANARY`), returned too.
async fn spawn_app_behind_postgres_proxy() -> (TestApp, Proxy, String) {
    let mut config = test_config().await;
    let proxy = Proxy::start(socket_of(&config.database_url)).await;
    let (scheme, rest) = config.database_url.split_once("://").expect("url");
    let (userinfo, host) = rest.rsplit_once('@').expect("TEST_DATABASE_URL names a user");
    let password = match userinfo.split_once(':') {
        Some((_, pw)) => pw.to_owned(),
        None => {
            config.database_url = format!("{scheme}://{userinfo}:{DB_PASSWORD_CANARY}@{host}");
            DB_PASSWORD_CANARY.to_owned()
        }
    };
    config.database_url = via_proxy(&config.database_url, proxy.port);
    (crate::helpers::start(config).await, proxy, password)
}

/// No SQL, driver names, connection strings or secrets in a problem body (contract: "Errors").
fn assert_no_internals(problem: &Value, password: &str) {
    let text = problem.to_string();
    let lower = text.to_lowercase();
    for leak in ["sqlx", "postgres://", "postgresql://", "password", "select ", "pg_"] {
        assert!(!lower.contains(leak), "problem leaks {leak:?}: {text}");
    }
    assert!(!text.contains(password), "problem leaks the database password: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_refusing_connections_is_a_fast_503_and_ready_recovers_without_restart() {
    // Arrange: the app reaches Postgres through a proxy we can cut.
    let (app, proxy, password) = spawn_app_behind_postgres_proxy().await;
    let rec = app.create("pg-down", json!(1)).await;
    let id = rec["id"].as_i64().expect("id");
    app.get_data(id).await; // cached now
    // Act
    proxy.refuse();
    // Assert: requests that need Postgres get a 503 problem within 2 s; cache hits are still served.
    for req in [app.client.get(app.url("/data/999")), app.client.get(app.url("/data?limit=7"))] {
        let t = Instant::now();
        let p = assert_problem(req.send().await.expect("send"), 503).await;
        assert!(t.elapsed() < Duration::from_secs(2), "took {:?}", t.elapsed());
        assert_no_internals(&p, &password);
    }
    let t = Instant::now();
    let p = assert_problem(app.post_data(&json!({"key": "x", "value": 1})).await, 503).await;
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_no_internals(&p, &password);
    let hit = app.get_data(id).await;
    assert_eq!((hit.status().as_u16(), crate::helpers::x_cache(&hit)), (200, "HIT".to_owned()));
    let r = app.client.get(app.url("/ready")).send().await.expect("ready");
    let p = assert_problem(r, 503).await;
    assert_eq!(p["checks"]["database"], "error");
    assert_no_internals(&p, &password);
    assert_eq!(app.client.get(app.url("/health")).send().await.expect("health").status(), 200);
    // Postgres returns: ready again within 15 s, same process.
    proxy.forward();
    let back = eventually(Duration::from_secs(15), || async {
        app.client.get(app.url("/ready")).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(back.is_some(), "/ready 200 within 15 s of Postgres returning");
    assert_eq!(app.get_data(999).await.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_postgres_is_a_503_within_5_seconds() {
    let (app, proxy, password) = spawn_app_behind_postgres_proxy().await;
    app.create("warm", json!(1)).await; // a pooled connection exists and will go silent
    proxy.blackhole();
    let t = Instant::now();
    let p = assert_problem(app.get_data(12345).await, 503).await;
    assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
    assert_no_internals(&p, &password);
    let t = Instant::now();
    assert_eq!(app.client.get(app.url("/ready")).send().await.expect("ready").status(), 503);
    assert!(t.elapsed() < Duration::from_secs(5));
    proxy.forward();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drain_fails_ready_at_once_keeps_serving_then_exits() {
    let app = spawn_app_with(|c| c.shutdown_drain = Duration::from_secs(2)).await;
    let rec = app.create("drain", json!(1)).await;
    let started = Instant::now();
    app.stop.stop();
    // /ready is 503 (naming `draining`) within 1 s; /health stays 200.
    let ready = eventually(Duration::from_secs(1), || async {
        app.client.get(app.url("/ready")).send().await.is_ok_and(|r| r.status() == 503)
    })
    .await;
    assert!(ready.is_some(), "/ready 503 within 1 s");
    let p = assert_problem(app.client.get(app.url("/ready")).send().await.expect("ready"), 503).await;
    assert!(p["detail"].as_str().is_some_and(|d| d.contains("draining")), "{p}");
    assert_eq!(p["checks"]["database"], "ok");
    assert_eq!(app.client.get(app.url("/health")).send().await.expect("health").status(), 200);
    // New connections are still accepted and served during the drain, with Connection: close.
    let fresh = reqwest::Client::new();
    let r = fresh.get(app.url(&format!("/data/{}", rec["id"]))).send().await.expect("served while draining");
    assert_eq!(r.status(), 200);
    assert_eq!(header(r.headers(), "connection"), "close");
    // Then it exits cleanly within drain + 5 s.
    let result = tokio::time::timeout(Duration::from_secs(7), app.task).await;
    assert!(matches!(result, Ok(Ok(Ok(())))), "clean exit");
    assert!(started.elapsed() >= Duration::from_secs(2), "served for the whole drain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_metrics_use_route_templates_never_raw_paths() {
    let app = spawn_app().await;
    let rec = app.create("m", json!(1)).await;
    app.get_data(&rec["id"]).await;
    app.get_data("abc").await;
    app.client.get(app.url("/no/such/route/12345")).send().await.expect("get");
    let r = app.client.get(app.url("/metrics")).send().await.expect("metrics");
    assert!(header(r.headers(), "content-type").starts_with("text/plain"));
    let text = r.text().await.expect("text");
    for series in [
        r#"http_server_request_duration_seconds_count{http_request_method="GET",http_response_status_code="200",http_route="/data/{id}"} 1"#,
        r#"http_server_request_duration_seconds_count{http_request_method="GET",http_response_status_code="400",http_route="/data/{id}"} 1"#,
        r#"http_server_request_duration_seconds_count{http_request_method="POST",http_response_status_code="201",http_route="/data"} 1"#,
        r#"http_server_request_duration_seconds_count{http_request_method="GET",http_response_status_code="404",http_route="unmatched"} 1"#,
        r#"http_server_request_duration_seconds_bucket{http_request_method="GET",http_response_status_code="200",http_route="/data/{id}",le="0.0005"}"#,
    ] {
        assert!(text.contains(series), "missing {series}\n{text}");
    }
    let id = rec["id"].to_string();
    assert!(!text.contains(&format!("/data/{id}\"")) && !text.contains("12345"), "raw paths leaked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_serves_swagger_ui_users() {
    let app = spawn_embedded_app().await;
    let spec: Value = app.client.get(app.url("/openapi.json")).send().await.expect("spec").json().await.expect("json");
    assert!(spec["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    assert_eq!(spec["servers"][0]["url"], "/", "relative server URL");
    let paths = spec["paths"].as_object().expect("paths");
    for (path, methods) in paths {
        for (method, op) in methods.as_object().expect("methods") {
            let name = format!("{method} {path}");
            assert!(op["summary"].as_str().is_some_and(|s| !s.is_empty()), "{name} summary");
            assert!(op["description"].as_str().is_some_and(|s| !s.is_empty()), "{name} description");
            let responses = op["responses"].as_object().expect("responses");
            assert!(!responses.contains_key("422"), "{name} documents 422");
            for (status, resp) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    let media = &resp["content"]["application/problem+json"];
                    assert!(media.is_object(), "{name} {status} is a problem");
                    if path != "/ready" {
                        assert_eq!(
                            media["example"]["status"].to_string(),
                            *status,
                            "{name}: example of its own status"
                        );
                    }
                }
            }
        }
    }
    for (path, method, statuses) in [
        ("/data", "post", &["201", "400", "401", "409", "413", "415"][..]),
        ("/data/{id}", "get", &["200", "304", "400", "404"][..]),
        ("/data", "get", &["200", "400"][..]),
        ("/data/{id}", "put", &["200", "400", "401", "404", "413", "415"][..]),
        ("/data/{id}", "delete", &["204", "400", "401", "404"][..]),
    ] {
        for s in statuses {
            assert!(spec["paths"][path][method]["responses"][*s].is_object(), "{method} {path} documents {s}");
        }
    }
    assert_eq!(spec["components"]["securitySchemes"]["BearerAuth"]["scheme"], "bearer");
    assert!(spec["paths"]["/data"]["post"]["security"].is_array());
    // Examples that work when sent as is: POST the documented request example.
    let example = &spec["components"]["schemas"]["NewRecord"]["example"];
    let r = app.post_data(example).await;
    assert_eq!(r.status(), 201, "the documented example is accepted: {example}");
    // Swagger UI is served by the service itself, nothing from the internet.
    let docs = app.client.get(app.url("/docs")).send().await.expect("docs");
    assert_eq!(docs.status(), 200);
    let html = docs.text().await.expect("html");
    assert!(html.contains("swagger-ui") || html.contains("SwaggerUI"), "Swagger UI page");
    for cdn in ["unpkg.com", "cdn.jsdelivr", "cdnjs", "googleapis"] {
        assert!(!html.contains(cdn), "loads {cdn}");
    }
    assert!(html.contains("a record with this key already exists"), "the page embeds the patched document");
}

fn aside_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_aside"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_documents_migrates_probes_and_rejects_bad_config() {
    let help = aside_bin().arg("--help").output().expect("run");
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for word in ["serve", "migrate", "healthcheck", "DATABASE_URL", "CACHE_TTL_SECONDS", "SHUTDOWN_DRAIN_SECONDS"] {
        assert!(text.contains(word), "--help mentions {word}");
    }
    // migrate: applies and exits 0; twice at once is safe (advisory lock), and again is a no-op.
    let db = fresh_database().await;
    let run = || aside_bin().arg("migrate").env("DATABASE_URL", &db).env("LOG_FORMAT", "text").spawn().expect("spawn");
    let (mut m1, mut m2) = (run(), run());
    assert!(m1.wait().expect("wait").success() && m2.wait().expect("wait").success());
    assert!(run().wait().expect("wait").success());
    // Bad configuration: one line naming the variable, non-zero exit.
    for (var, val) in [("CACHE_TTL_SECONDS", "0"), ("DATABASE_URL", "mysql://x"), ("BIND_ADDR", "nope")] {
        let out = aside_bin().env(var, val).output().expect("run");
        assert!(!out.status.success(), "{var}={val} must stop start-up");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(var), "{err}");
    }
    let out = aside_bin().arg("frobnicate").output().expect("run");
    assert!(!out.status.success());
    // healthcheck: 0 against a live server, 1 when nothing listens.
    let app = spawn_app().await;
    let ok = aside_bin().arg("healthcheck").env("BIND_ADDR", format!("0.0.0.0:{}", app.port)).status().expect("run");
    assert!(ok.success());
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let down = aside_bin().arg("healthcheck").env("BIND_ADDR", format!("127.0.0.1:{free}")).status().expect("run");
    assert!(!down.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_and_exits_zero_on_sigterm() {
    let db = fresh_database().await;
    let mut cmd = aside_bin();
    cmd.env("DATABASE_URL", &db)
        .env("REDIS_URL", std::env::var("TEST_REDIS_URL").expect("TEST_REDIS_URL"))
        .env("SHUTDOWN_DRAIN_SECONDS", "1");
    let (mut child, url, client) = start_ready(cmd).await;
    let r = client.get(format!("{url}/data/1")).header("x-request-id", "trace-me-123").send().await.expect("get");
    assert_eq!(r.status(), 404);
    let pid = child.id().to_string();
    let t = Instant::now();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
    let status = child.wait().expect("wait");
    assert!(status.success(), "exit 0 on SIGTERM, got {status}");
    assert!(t.elapsed() < Duration::from_secs(6), "exit within drain + 5 s");
    // JSON logs carry the request id, route template, status and latency.
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().expect("stdout"), &mut out).expect("read");
    let line = out.lines().find(|l| l.contains("trace-me-123") && l.contains("\"status\"")).expect("access log line");
    let log: Value = serde_json::from_str(line).expect("JSON log line");
    assert_eq!(log["route"], "/data/{id}");
    assert_eq!(log["status"], 404);
    assert!(log["latency_ms"].is_number());
    assert_eq!(log["request_id"], "trace-me-123");
    assert!(log["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(log["level"], "INFO");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_killed_by_postgres_are_retried_for_reads_and_replaced_before_writes() {
    // Postgres restarting (or an admin) terminates every pooled connection: SQLSTATE 57P01.
    let app = spawn_app_with(|c| c.cache_enabled = false).await;
    let rec = app.create("terminated", json!(1)).await;
    let killer = BackendKiller::new(&app).await;
    for _ in 0..3 {
        killer.kill_all().await;
        // Reads retry once on a fresh connection: the client never notices.
        assert_eq!(app.get_data(&rec["id"]).await.status(), 200);
        killer.kill_all().await;
        assert_eq!(app.list_data("").await.status(), 200);
        // A write is never sent on a connection known to be dead: the list just met one (a sign), so
        // the idle connection the write would use is checked first and replaced (issue 19).
        killer.kill_all().await;
        let r = app.put_data(&rec["id"], &json!({"value": 2})).await;
        assert_eq!(r.status(), 200);
    }
    killer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_bind_addr_moves_metrics_to_their_own_port() {
    let app = spawn_app_with(|c| c.metrics_bind_addr = Some("127.0.0.1:0".parse().expect("addr"))).await;
    let port = app.metrics_port.expect("metrics port bound");
    app.create("own-port", json!(1)).await;
    // Not on the API port any more (so a NetworkPolicy on the metrics port really limits who reads it).
    assert_problem(app.client.get(app.url("/metrics")).send().await.expect("get"), 404).await;
    let text = app.client.get(format!("http://127.0.0.1:{port}/metrics")).send().await.expect("get");
    assert_eq!(text.status(), 200);
    let text = text.text().await.expect("text");
    assert!(text.contains(r#"http_route="/data",le="#), "API traffic is measured: {text}");
    assert!(text.contains("aside_records_created_total 1"));
    let other = app.client.get(format!("http://127.0.0.1:{port}/data")).send().await.expect("get");
    assert_problem(other, 404).await;
}

/// Issue 7: the metrics port follows the API port's rules (X-Request-ID echoed or generated,
/// problem+json errors), and so does an encoding failure on either port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_port_echoes_request_ids_and_answers_problems() {
    // Arrange
    let app = spawn_app_with(|c| c.metrics_bind_addr = Some("127.0.0.1:0".parse().expect("addr"))).await;
    let metrics_url = format!("http://127.0.0.1:{}/metrics", app.metrics_port.expect("metrics port bound"));
    let get = |url: String, id: Option<&'static str>| {
        let mut r = app.client.get(url);
        if let Some(id) = id {
            r = r.header("x-request-id", id);
        }
        r.send()
    };

    // Act + Assert: echoed, generated, and on a 404 too.
    let r = get(metrics_url.clone(), Some("scrape-1")).await.expect("scrape");
    assert_eq!((r.status().as_u16(), header(r.headers(), "x-request-id")), (200, "scrape-1".to_owned()));
    let r = get(metrics_url.clone(), None).await.expect("scrape");
    assert!(uuid::Uuid::parse_str(&header(r.headers(), "x-request-id")).is_ok(), "a generated id");
    let r = get(metrics_url.replace("/metrics", "/nope"), Some("scrape-2")).await.expect("get");
    assert_eq!(header(r.headers(), "x-request-id"), "scrape-2");
    assert_problem(r, 404).await;

    // An encoding failure (the real encoder, handed a family it refuses) is a 500 problem, with an id.
    app.metrics.break_encoding().expect("hook");
    let r = get(metrics_url, Some("scrape-3")).await.expect("scrape");
    assert_eq!(header(r.headers(), "x-request-id"), "scrape-3");
    let problem = assert_problem(r, 500).await;
    assert!(problem["detail"].as_str().is_some_and(|d| d.contains("X-Request-ID")), "{problem}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metrics_encoding_failure_on_the_api_port_is_a_problem_too() {
    let app = spawn_embedded_app().await;
    app.metrics.break_encoding().expect("hook");
    let r = app.client.get(app.url("/metrics")).header("x-request-id", "scrape-4").send().await.expect("get");
    assert_eq!(header(r.headers(), "x-request-id"), "scrape-4");
    assert_problem(r, 500).await;
}

/// Runs the real binary with `LOG_FORMAT=format` (stdout piped, so `auto` means JSON), breaks its
/// database under it (the table is dropped, so queries fail with an ERROR line), sends a GET and a
/// POST (the POST's row goes through the grouped-insert workers) with known request ids, stops it and
/// returns everything it wrote to stdout.
async fn logs_of_two_failing_requests(format: &str, get_id: &str, post_id: &str) -> String {
    let db = fresh_database().await;
    let mut cmd = aside_bin();
    cmd.env("DATABASE_URL", &db).env("SHUTDOWN_DRAIN_SECONDS", "0").env("LOG_FORMAT", format).env("RUST_LOG", "info");
    let (mut child, url, client) = start_ready(cmd).await;
    let admin = sea_orm::Database::connect(crate::helpers::direct_url(&db)).await.expect("admin connection");
    use sea_orm::ConnectionTrait;
    admin.execute_unprepared("DROP TABLE records").await.expect("drop table");
    let _ = admin.close().await;
    let get = client.get(format!("{url}/data/1")).header("x-request-id", get_id).send().await.expect("get");
    assert_eq!(get.status(), 500);
    let post = client
        .post(format!("{url}/data"))
        .header("x-request-id", post_id)
        .json(&json!({"key": "k", "value": 1}))
        .send()
        .await
        .expect("post");
    assert_eq!(post.status(), 500);
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill").success());
    assert!(child.wait().expect("wait").success());
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().expect("stdout"), &mut out).expect("read");
    out
}

/// The lines that mention `id`; asserts the request logged an error line and its access line.
fn lines_of<'a>(out: &'a str, id: &str) -> Vec<&'a str> {
    let lines: Vec<&str> = out.lines().filter(|l| l.contains(id)).collect();
    assert!(
        lines.iter().any(|l| l.contains("ERROR") && l.contains("database error")),
        "no error line for {id}:\n{out}"
    );
    assert!(
        lines.iter().any(|l| l.contains("\"request\"") || l.contains(" request ")),
        "no access line for {id}:\n{out}"
    );
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_log_line_of_a_request_carries_its_id_in_json_and_in_text() {
    // JSON (`auto` with stdout not a terminal): each line parses, and each warning or error carries a
    // request id — the only ones logged here are the two failing requests' own.
    let out = logs_of_two_failing_requests("auto", "rid-get-json", "rid-post-json").await;
    for line in out.lines() {
        let log: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if log["level"] == "ERROR" || log["level"] == "WARN" {
            assert!(log["request_id"].is_string(), "a line without its request id: {line}");
        }
    }
    for id in ["rid-get-json", "rid-post-json"] {
        for line in lines_of(&out, id) {
            let log: Value = serde_json::from_str(line).expect("JSON");
            assert_eq!(log["request_id"], id, "{line}");
        }
    }

    // Text: the same lines, human-readable, the id as `request_id="…"`.
    let out = logs_of_two_failing_requests("text", "rid-get-text", "rid-post-text").await;
    assert!(out.lines().all(|l| !l.starts_with('{')), "text, not JSON:\n{out}");
    for line in out.lines().filter(|l| l.contains(" ERROR ") || l.contains(" WARN ")) {
        assert!(line.contains("request_id=\"rid-"), "a line without its request id: {line}");
    }
    for id in ["rid-get-text", "rid-post-text"] {
        for line in lines_of(&out, id) {
            assert!(line.contains(&format!("request_id=\"{id}\"")), "{line}");
        }
    }
}

/// Issue 7: the cache needs Redis >= 4.0 (`master_replid`, DESIGN.md §2). Against an older server aside says so once,
/// at connect, and every read is a BYPASS without a command sent; readiness reports `degraded`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_older_than_4_is_named_once_and_the_cache_stays_in_bypass() {
    // Arrange: the real binary, embedded SQLite, and a server that reports redis_version 3.2.12.
    let fake = crate::helpers::FakeRedis::start("3.2.12").await;
    let db = std::env::temp_dir().join(format!("aside-old-redis-{}.db", uuid::Uuid::new_v4().simple()));
    let mut cmd = aside_bin();
    cmd.env("DATABASE_URL", format!("sqlite://{}?mode=rwc", db.display()))
        .env("REDIS_URL", fake.url())
        .env("SHUTDOWN_DRAIN_SECONDS", "0")
        .env("LOG_FORMAT", "json");
    let (mut child, url, client) = start_ready(cmd).await;

    // Act
    let created: Value = client
        .post(format!("{url}/data"))
        .json(&json!({"key": "old", "value": 1}))
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("record");
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        let r = client.get(format!("{url}/data/{}", created["id"])).send().await.expect("get");
        outcomes.push((r.status().as_u16(), header(r.headers(), "x-cache")));
    }
    let ready: Value = client.get(format!("{url}/ready")).send().await.expect("ready").json().await.expect("json");
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill").success());
    assert!(child.wait().expect("wait").success());
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().expect("stdout"), &mut out).expect("read");
    let _ = std::fs::remove_file(&db);

    // Assert
    assert_eq!(outcomes, vec![(200, "BYPASS".to_owned()); 3]);
    assert_eq!(ready["checks"]["cache"], "degraded", "{ready}");
    assert_eq!(fake.data_commands.load(std::sync::atomic::Ordering::SeqCst), 0, "no lookup was sent to it");
    // Once, at connect, with the version; a deferred invalidation may repeat the reason in its `error`.
    let warnings: Vec<&str> = out.lines().filter(|l| l.contains("\"redis_version\"")).collect();
    assert_eq!(warnings.len(), 1, "said once:\n{out}");
    assert!(warnings[0].contains("older than 4.0"), "{}", warnings[0]);
    let line: Value = serde_json::from_str(warnings[0]).expect("JSON");
    assert_eq!((line["level"].as_str(), line["redis_version"].as_str()), (Some("WARN"), Some("3.2.12")));
}

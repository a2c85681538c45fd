//! Traces (contract: "Traces"): spans exported over OTLP to a real OpenTelemetry Collector that
//! scripts/test.sh builds from its Go modules (tools/otelcol) and starts on a free port
//! (`TEST_OTLP_ENDPOINT`); it writes every span it receives to `TEST_OTLP_FILE`, which these tests read.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    process::Command,
    sync::{Arc, Mutex},
    time::Duration,
};

use aside::{config::Config, traces::TraceConfig};
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};

use crate::helpers::{TestApp, eventually, spawn_app, spawn_app_with, start_ready};

fn otlp_endpoint() -> String {
    std::env::var("TEST_OTLP_ENDPOINT").expect(
        "TEST_OTLP_ENDPOINT is not set: run the tests through scripts/test.sh, which builds and starts the collector",
    )
}

/// Tracing configured exactly as from these environment variables.
fn trace_config(vars: &[(&str, &str)]) -> TraceConfig {
    let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    TraceConfig::from_vars(&|k: &str| vars.get(k).cloned()).expect("valid").expect("tracing on")
}

/// Exporting to the test collector with `sampler` (None = the default sampler).
async fn traced_app(sampler: Option<&str>) -> TestApp {
    let endpoint = otlp_endpoint();
    let mut vars = vec![("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())];
    if let Some(s) = sampler {
        vars.push(("OTEL_TRACES_SAMPLER", s));
    }
    let traces = trace_config(&vars);
    spawn_app_with(move |c: &mut Config| c.traces = Some(traces)).await
}

/// Exports every finished span now (the batch processor otherwise waits up to 5 s).
async fn flush(app: &TestApp) {
    let t = app.traces.clone().expect("tracing on");
    // Blocking: it waits for the export thread. Its result is the export's; the tests look at what
    // arrived (or at the drop counter) instead.
    let _ = tokio::task::spawn_blocking(move || t.flush()).await;
}

fn random_hex(len: usize) -> String {
    let mut s = uuid::Uuid::new_v4().simple().to_string();
    s.push_str(&uuid::Uuid::new_v4().simple().to_string());
    s.truncate(len);
    s
}

/// The spans of one trace the collector has written so far, with the resource of each.
fn spans_of(trace_id: &str) -> Vec<(Value, Value)> {
    let path = std::env::var("TEST_OTLP_FILE").expect("TEST_OTLP_FILE");
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = Vec::new();
    // One export request a line; the collector may be mid-line, so a line that does not parse yet is skipped.
    for line in text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()) {
        for rs in line["resourceSpans"].as_array().into_iter().flatten() {
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for span in ss["spans"].as_array().into_iter().flatten() {
                    if span["traceId"] == trace_id {
                        out.push((span.clone(), rs["resource"].clone()));
                    }
                }
            }
        }
    }
    out
}

/// Waits (bounded) until the collector has written `n` spans of the trace.
async fn wait_for_spans(trace_id: &str, n: usize) -> Vec<Value> {
    let arrived = eventually(Duration::from_secs(15), || async { spans_of(trace_id).len() >= n }).await;
    let spans: Vec<Value> = spans_of(trace_id).into_iter().map(|(s, _)| s).collect();
    assert!(arrived.is_some(), "expected {n} spans of trace {trace_id}, the collector has: {spans:#?}");
    spans
}

fn attr<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    let a = span["attributes"].as_array()?.iter().find(|a| a["key"] == key)?;
    let v = &a["value"];
    v.get("stringValue").or_else(|| v.get("intValue")).or_else(|| v.get("boolValue"))
}

fn attr_str<'a>(span: &'a Value, key: &str) -> Option<&'a str> {
    attr(span, key)?.as_str()
}

fn named<'a>(spans: &'a [Value], name: &str) -> Option<&'a Value> {
    spans.iter().find(|s| s["name"] == name)
}

const SERVER: i64 = 2;
const CLIENT: i64 = 3;
const STATUS_ERROR: i64 = 2;

/// `00-<trace>-<span>-<flags>`, split.
fn parse_traceparent(v: &str) -> (String, String, String) {
    let parts: Vec<&str> = v.split('-').collect();
    assert_eq!(parts.len(), 4, "{v}");
    assert_eq!(parts[0], "00", "{v}");
    (parts[1].to_owned(), parts[2].to_owned(), parts[3].to_owned())
}

async fn get_traced(app: &TestApp, path: &str, traceparent: &str, request_id: &str) -> reqwest::Response {
    app.client
        .get(format!("{}{path}", app.addr))
        .header("traceparent", traceparent)
        .header("x-request-id", request_id)
        .send()
        .await
        .expect("get")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_and_a_hit_continue_the_callers_trace_with_cache_and_database_spans() {
    // The default sampler (parentbased_traceidratio at 0.1) honours the caller's "sampled".
    let app = traced_app(None).await;
    let created: Value = app
        .client
        .post(format!("{}/data", app.addr))
        .json(&json!({"key": "traced:1", "value": {"secret-ish": "do-not-export"}}))
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    let path = format!("/data/{}", created["id"]);

    let (miss_trace, miss_parent) = (random_hex(32), random_hex(16));
    let r = get_traced(&app, &path, &format!("00-{miss_trace}-{miss_parent}-01"), "trace-miss-1").await;
    assert_eq!((r.status().as_u16(), r.headers()["x-cache"].to_str().expect("ascii")), (200, "MISS"));
    let (t, server_id, flags) = parse_traceparent(r.headers()["traceparent"].to_str().expect("ascii"));
    assert_eq!((t.as_str(), flags.as_str()), (miss_trace.as_str(), "01"), "the response names the caller's trace");
    assert_ne!(server_id, miss_parent, "and the server span, a child of the caller's");

    let (hit_trace, hit_parent) = (random_hex(32), random_hex(16));
    let r = get_traced(&app, &path, &format!("00-{hit_trace}-{hit_parent}-01"), "trace-hit-1").await;
    assert_eq!(r.headers()["x-cache"], "HIT");
    // tracestate travels with the trace and comes back on the response.
    let r = app
        .client
        .get(format!("{}/health", app.addr))
        .header("traceparent", format!("00-{hit_trace}-{hit_parent}-01"))
        .header("tracestate", "vendor=opaque-1,other=x")
        .send()
        .await
        .expect("get");
    assert_eq!(r.headers()["tracestate"], "vendor=opaque-1,other=x");
    flush(&app).await;

    // MISS: server span, then lookup, database read and fill as its children.
    let spans = wait_for_spans(&miss_trace, 4).await;
    let server = named(&spans, "GET /data/{id}").expect("server span named by route template");
    assert_eq!(server["kind"], SERVER);
    assert_eq!(server["spanId"], server_id.as_str(), "the span the response's traceparent names");
    assert_eq!(server["parentSpanId"], miss_parent.as_str(), "continues the caller's span");
    assert_eq!(attr_str(server, "http.request.method"), Some("GET"));
    assert_eq!(attr_str(server, "http.route"), Some("/data/{id}"));
    assert_eq!(attr(server, "http.response.status_code"), Some(&json!("200")));
    assert_eq!(attr_str(server, "url.path"), Some(path.as_str()));
    assert_eq!(attr_str(server, "aside.cache.outcome"), Some("miss"));
    assert_eq!(attr_str(server, "aside.request_id"), Some("trace-miss-1"), "X-Request-ID joins logs and traces");
    for name in ["cache lookup", "SELECT records", "cache fill"] {
        let child = named(&spans, name).unwrap_or_else(|| panic!("{name} span in {spans:#?}"));
        assert_eq!(child["parentSpanId"], server["spanId"], "{name} is a child of the server span");
        assert_eq!(child["kind"], CLIENT, "{name}");
    }
    let select = named(&spans, "SELECT records").expect("db span");
    assert_eq!(attr_str(select, "db.system.name"), Some("postgresql"));
    assert_eq!(attr_str(select, "db.operation.name"), Some("SELECT"));
    assert_eq!(attr(named(&spans, "cache fill").expect("fill"), "aside.cache.filled"), Some(&json!(true)));
    // No statement text and no stored values in any span.
    let all = serde_json::to_string(&spans).expect("json");
    assert!(!all.contains("do-not-export") && !all.contains("db.query.text"), "{all}");
    let (_, resource) = &spans_of(&miss_trace)[0];
    let service = resource["attributes"].as_array().expect("attrs").iter().find(|a| a["key"] == "service.name");
    assert_eq!(service.expect("service.name")["value"]["stringValue"], "aside");

    // HIT: the lookup and nothing else; above all no database span.
    let spans = wait_for_spans(&hit_trace, 2).await;
    let server = named(&spans, "GET /data/{id}").expect("server span");
    assert_eq!(attr_str(server, "aside.cache.outcome"), Some("hit"));
    assert_eq!(attr(named(&spans, "cache lookup").expect("lookup"), "aside.cache.hit"), Some(&json!(true)));
    let names: Vec<&str> =
        spans.iter().filter(|s| s["name"] != "GET /health").filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(names.len(), 2, "a HIT is the server span and its lookup only: {names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_trace_their_statement_the_grouped_insert_and_the_invalidation() {
    let app = traced_app(Some("always_on")).await;
    let post_trace = random_hex(32);
    let r = app
        .client
        .post(format!("{}/data", app.addr))
        .header("traceparent", format!("00-{post_trace}-{}-01", random_hex(16)))
        .json(&json!({"key": "traced:w", "value": 1}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.expect("json")["id"].clone();
    let put_trace = random_hex(32);
    let r = app
        .client
        .put(format!("{}/data/{id}", app.addr))
        .header("traceparent", format!("00-{put_trace}-{}-01", random_hex(16)))
        .json(&json!({"value": 2}))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), 200);
    flush(&app).await;

    let spans = wait_for_spans(&post_trace, 3).await;
    let server = named(&spans, "POST /data").expect("server span");
    let insert = named(&spans, "INSERT records").expect("insert span");
    assert_eq!(insert["parentSpanId"], server["spanId"]);
    assert_eq!(attr_str(insert, "db.operation.name"), Some("INSERT"));
    assert_eq!(attr(insert, "aside.db.batch.rows"), Some(&json!("1")), "the grouped insert it joined: one row");
    let inval = named(&spans, "cache invalidate").expect("invalidation span");
    assert_eq!(inval["parentSpanId"], server["spanId"]);

    let spans = wait_for_spans(&put_trace, 3).await;
    let server = named(&spans, "PUT /data/{id}").expect("server span");
    for name in ["UPDATE records", "cache invalidate"] {
        assert_eq!(named(&spans, name).expect(name)["parentSpanId"], server["spanId"], "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_marks_the_server_span_failed_and_a_4xx_does_not() {
    let app = traced_app(Some("always_on")).await;
    app.metrics.break_encoding().expect("hook");
    let (fail_trace, nf_trace) = (random_hex(32), random_hex(32));
    let r = get_traced(&app, "/metrics", &format!("00-{fail_trace}-{}-01", random_hex(16)), "t5xx").await;
    assert_eq!(r.status(), 500);
    let r = get_traced(&app, "/data/999999", &format!("00-{nf_trace}-{}-01", random_hex(16)), "t404").await;
    assert_eq!(r.status(), 404);
    flush(&app).await;
    let spans = wait_for_spans(&fail_trace, 1).await;
    let server = named(&spans, "GET /metrics").expect("server span");
    assert_eq!(server["status"]["code"], STATUS_ERROR, "{server:#?}");
    assert_eq!(attr_str(server, "error.type"), Some("500"));
    let spans = wait_for_spans(&nf_trace, 1).await;
    let server = named(&spans, "GET /data/{id}").expect("server span");
    assert_ne!(server["status"]["code"], STATUS_ERROR, "a 404 is the client's: {server:#?}");

    // A database failure: the statement's span and the server span say what kind, never the message
    // (Postgres' text names the relation here; in general it can carry values).
    app.db.execute_unprepared("DROP TABLE records").await.expect("drop");
    let db_trace = random_hex(32);
    let r = get_traced(&app, "/data/1", &format!("00-{db_trace}-{}-01", random_hex(16)), "tdb").await;
    assert_eq!(r.status(), 500);
    flush(&app).await;
    let spans = wait_for_spans(&db_trace, 3).await;
    let select = named(&spans, "SELECT records").expect("db span");
    assert_eq!(
        (select["status"]["code"].as_i64(), attr_str(select, "error.type")),
        (Some(STATUS_ERROR), Some("database error"))
    );
    let server = named(&spans, "GET /data/{id}").expect("server span");
    assert_eq!(server["status"]["code"], STATUS_ERROR);
    let event = &server["events"][0];
    assert_eq!(
        (event["name"].as_str(), attr_str(event, "exception.type")),
        (Some("exception"), Some("database error"))
    );
    let all = serde_json::to_string(&spans).expect("json");
    assert!(!all.contains("does not exist") && !all.contains("relation"), "no error text in spans: {all}");
}

/// The sampled flag of the response's `traceparent` for a request sent with `parent` (None = none).
async fn sampled(app: &TestApp, parent: Option<&str>) -> bool {
    let mut req = app.client.get(format!("{}/health", app.addr));
    if let Some(p) = parent {
        req = req.header("traceparent", p);
    }
    let r = req.send().await.expect("get");
    let (_, _, flags) = parse_traceparent(r.headers()["traceparent"].to_str().expect("ascii"));
    flags == "01"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samplers_behave_as_the_sdk_spec_says() {
    // TraceIdRatioBased keys on the trace id's low 63 bits: the first id is kept at ratio 0.5, the
    // second is not (so the outcome is deterministic, not luck).
    let low = format!("00-{}0000000000000001-{}-", random_hex(16), random_hex(16));
    let high = format!("00-{}ffffffffffffffff-{}-", random_hex(16), random_hex(16));
    let (low_sampled, low_unsampled) = (format!("{low}01"), format!("{low}00"));
    let (high_sampled, high_unsampled) = (format!("{high}01"), format!("{high}00"));
    // (sampler, its argument, [(the caller's traceparent, sampled?)]).
    type Case<'a> = (&'a str, Option<&'a str>, &'a [(Option<&'a str>, bool)]);
    let cases: &[Case] = &[
        ("always_on", None, &[(None, true), (Some(&low_unsampled), true)]),
        ("always_off", None, &[(None, false), (Some(&low_sampled), false)]),
        ("traceidratio", Some("0.5"), &[(Some(&low_unsampled), true), (Some(&high_sampled), false)]),
        ("parentbased_always_on", None, &[(None, true), (Some(&low_unsampled), false)]),
        ("parentbased_always_off", None, &[(None, false), (Some(&high_sampled), true), (Some(&low_unsampled), false)]),
        (
            "parentbased_traceidratio",
            Some("0.5"),
            &[(Some(&high_sampled), true), (Some(&low_unsampled), false), (Some(&high_unsampled), false)],
        ),
        ("parentbased_traceidratio", Some("0"), &[(None, false), (Some(&high_sampled), true)]),
    ];
    let endpoint = otlp_endpoint();
    for (sampler, arg, expect) in cases {
        let mut vars = vec![("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()), ("OTEL_TRACES_SAMPLER", *sampler)];
        if let Some(a) = arg {
            vars.push(("OTEL_TRACES_SAMPLER_ARG", a));
        }
        let traces = trace_config(&vars);
        let app = spawn_app_with(move |c| c.traces = Some(traces)).await;
        for (parent, want) in expect.iter() {
            assert_eq!(sampled(&app, *parent).await, *want, "{sampler} {arg:?} with parent {parent:?}");
        }
        app.stop.stop();
    }
    // An unsampled request exports nothing at all.
    let app = traced_app(Some("always_off")).await;
    assert!(!sampled(&app, None).await);
    flush(&app).await;
    let text = String::from_utf8(app.metrics.render().expect("render")).expect("utf8");
    assert!(text.contains("aside_traces_spans_exported_total 0"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tracing_off_there_is_no_traceparent_and_no_trace_id() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(format!("{}/data/1", app.addr))
        .header("traceparent", format!("00-{}-{}-01", random_hex(32), random_hex(16)))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 404);
    assert!(r.headers().get("traceparent").is_none(), "tracing is off without OTEL_EXPORTER_OTLP_ENDPOINT");
    assert!(app.traces.is_none());
}

/// A TCP server that accepts and never answers: a collector that hangs.
async fn black_hole() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    (port, task)
}

fn counter(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{series} missing in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_or_hanging_collector_never_fails_a_request_and_lost_spans_are_counted() {
    // Hanging: the export thread waits on a collector that never answers (30 s timeout). Requests are
    // answered all the same, so none waits for an export; the queue (8 spans) fills and turns spans away.
    let (port, hole) = black_hole().await;
    let endpoint = format!("http://127.0.0.1:{port}");
    let traces = trace_config(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_TRACES_SAMPLER", "always_on"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "30000"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "8"),
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "4"),
    ]);
    let app = spawn_app_with(move |c| c.traces = Some(traces)).await;
    // Bounded far below the export timeout: if requests waited for exports this would not finish.
    let all = tokio::time::timeout(Duration::from_secs(20), async {
        for _ in 0..30 {
            let r = app.client.get(format!("{}/data/1", app.addr)).send().await.expect("get");
            assert_eq!(r.status(), 404);
        }
    })
    .await;
    assert!(all.is_ok(), "requests must not wait for a hanging collector");
    let text = String::from_utf8(app.metrics.render().expect("render")).expect("utf8");
    assert!(counter(&text, "aside_traces_spans_dropped_total{reason=\"queue_full\"}") > 0, "{text}");
    app.stop.stop();
    hole.abort();

    // Down: nothing listens; every export fails at once and its spans are counted as lost.
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let endpoint = format!("http://127.0.0.1:{free}");
    let traces = trace_config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint), ("OTEL_TRACES_SAMPLER", "always_on")]);
    let app = spawn_app_with(move |c| c.traces = Some(traces)).await;
    for _ in 0..5 {
        let r = app.client.get(format!("{}/data/1", app.addr)).send().await.expect("get");
        assert_eq!(r.status(), 404);
        assert!(r.headers().get("traceparent").is_some());
    }
    flush(&app).await;
    let text = String::from_utf8(app.metrics.render().expect("render")).expect("utf8");
    assert!(counter(&text, "aside_traces_spans_dropped_total{reason=\"export_failed\"}") >= 5, "{text}");
    assert_eq!(counter(&text, "aside_traces_spans_exported_total"), 0);
}

/// Runs the real binary with the `OTEL_*` variables and `LOG_FORMAT=format`, sends one traced request,
/// and returns the log lines that carry its request id (stdout read until the access line appears).
async fn binary_log_lines(format: &str, trace: &str, request_id: &str) -> Vec<String> {
    let db = std::env::temp_dir().join(format!("aside-traces-{}.db", uuid::Uuid::new_v4()));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aside"));
    cmd.env("DATABASE_URL", format!("sqlite://{}?mode=rwc", db.display()))
        .env("LOG_FORMAT", format)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_endpoint())
        .env("OTEL_SERVICE_NAME", "aside-bin")
        .env("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=test")
        .env("OTEL_BSP_SCHEDULE_DELAY", "100");
    let (mut child, url, client) = start_ready(cmd).await;
    // Lines written before this point wait in the pipe.
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let stdout = child.stdout.take().expect("stdout");
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            sink.lock().expect("lines").push(line);
        }
    });
    let r = client
        .get(format!("{url}/data/1"))
        .header("traceparent", format!("00-{trace}-{}-01", random_hex(16)))
        .header("x-request-id", request_id)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 404);
    let has_access = || lines.lock().expect("lines").iter().any(|l| l.contains(request_id) && l.contains("request"));
    let logged = eventually(Duration::from_secs(10), || async { has_access() }).await;
    // The spans come from the binary's own export (OTEL_* read from its environment).
    let spans = wait_for_spans(trace, 3).await;
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&db);
    assert!(logged.is_some(), "the access line of {request_id}");
    let (_, resource) = &spans_of(trace)[0];
    let attrs = resource["attributes"].to_string();
    assert!(attrs.contains("aside-bin") && attrs.contains("deployment.environment.name"), "{attrs}");
    assert!(named(&spans, "GET /data/{id}").is_some() && named(&spans, "SELECT records").is_some(), "{spans:#?}");
    assert_eq!(attr_str(named(&spans, "SELECT records").expect("db"), "db.system.name"), Some("sqlite"));
    lines.lock().expect("lines").iter().filter(|l| l.contains(request_id)).cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_log_line_of_a_traced_request_carries_its_trace_id_in_both_formats() {
    for format in ["json", "text"] {
        let (trace, request_id) = (random_hex(32), format!("log-trace-{format}"));
        let lines = binary_log_lines(format, &trace, &request_id).await;
        assert!(!lines.is_empty());
        for line in &lines {
            if format == "json" {
                let v: Value = serde_json::from_str(line).expect("a JSON line");
                assert_eq!(
                    (v["request_id"].as_str(), v["trace_id"].as_str()),
                    (Some(request_id.as_str()), Some(trace.as_str())),
                    "{line}"
                );
            } else {
                assert!(line.contains(&format!("trace_id=\"{trace}\"")), "{line}");
            }
        }
    }
}

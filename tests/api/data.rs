//! Contract: "Resource: a record", "Data endpoints", "Errors", "Headers" (auth, request id).

use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem, header, spawn_app, spawn_app_with, spawn_embedded_app, x_cache};

/// Runs one contract test against Postgres + Redis and against the embedded SQLite + in-process cache.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres_and_redis() {
                super::$name(crate::helpers::spawn_app().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded_sqlite_and_in_process_cache() {
                super::$name(crate::helpers::spawn_embedded_app().await).await
            }
        }
    )*};
}

on_both!(
    post_returns_201_the_record_and_its_location,
    values_round_trip_exactly,
    put_moves_updated_at_and_keeps_created_at,
    delete_answers_204_then_the_record_is_gone,
    ids_that_cannot_exist_are_404_and_non_integers_400,
    a_duplicate_key_is_409,
    concurrent_posts_each_get_their_own_record_and_one_winner_per_key,
    the_pagination_chain_visits_every_record_exactly_once,
    the_default_limit_is_50,
    the_key_filter_matches_exactly_without_normalisation,
    bad_list_queries_are_400_and_unknown_parameters_ignored,
    every_bad_body_is_400_problem_json_and_stores_nothing,
    missing_or_non_json_content_type_is_415,
    etag_gives_304_on_record_and_page,
);

fn is_rfc3339_micros_utc(s: &str) -> bool {
    s.len() == 27 && s.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(s).is_ok() && s.as_bytes()[19] == b'.'
}

async fn post_returns_201_the_record_and_its_location(app: TestApp) {
    // Act
    let r = app.post_data(&json!({"key": "user:1001", "value": {"name": "Ada"}})).await;
    // Assert
    assert_eq!(r.status(), 201);
    let location = header(r.headers(), "location");
    let rec: Value = r.json().await.expect("json");
    assert_eq!(location, format!("/data/{}", rec["id"]));
    assert!(rec["id"].as_i64().is_some_and(|id| id > 0));
    assert_eq!(rec["key"], "user:1001");
    assert_eq!(rec["value"], json!({"name": "Ada"}));
    let (c, u) = (rec["created_at"].as_str().expect("created_at"), rec["updated_at"].as_str().expect("updated_at"));
    assert!(is_rfc3339_micros_utc(c), "{c}");
    assert_eq!(c, u);
    // The stored record reads back identical, and ids increase.
    let got: Value = app.get_data(rec["id"].clone()).await.json().await.expect("json");
    assert_eq!(got, rec);
    let second = app.create("user:1002", json!(1)).await;
    assert!(second["id"].as_i64() > rec["id"].as_i64());
}

async fn values_round_trip_exactly(app: TestApp) {
    let values = [
        json!(null),
        json!(true),
        json!("text with ünïcødé, \"quotes\", \\ and \n newline 🚀"),
        json!(0),
        json!(-9223372036854775808i64),
        json!(18446744073709551615u64),
        json!(0.1),
        json!(1.5e300),
        json!(-2.2250738585072014e-308),
        json!([1, "two", [3], {"four": 4}, null]),
        json!({"nested": {"deep": {"array": [[], {}], "empty": ""}}, "b": false, "a": 1}),
    ];
    for (i, value) in values.iter().enumerate() {
        let created = app.create(&format!("v{i}"), value.clone()).await;
        assert_eq!(&created["value"], value, "POST response of {value}");
        let id = &created["id"];
        let read: Value = app.get_data(id).await.json().await.expect("json");
        assert_eq!(&read["value"], value, "GET (miss) of {value}");
        let again: Value = app.get_data(id).await.json().await.expect("json");
        assert_eq!(&again["value"], value, "GET (hit) of {value}");
        let put: Value = app.put_data(id, &json!({"value": value})).await.json().await.expect("json");
        assert_eq!(&put["value"], value, "PUT of {value}");
    }
    // Text as sent, numbers compared as written: 1e2 is the number 100.
    let raw = app
        .client
        .post(app.url("/data"))
        .header("content-type", "application/json")
        .body(r#"{"key": "raw", "value": {"n": 1e2, "f": 100.25, "i": -7}}"#)
        .send()
        .await
        .expect("post");
    let rec: Value = raw.json().await.expect("json");
    assert_eq!(rec["value"]["n"].as_f64(), Some(100.0));
    assert_eq!(rec["value"]["f"].as_f64(), Some(100.25));
    assert_eq!(rec["value"]["i"].as_i64(), Some(-7));
}

async fn put_moves_updated_at_and_keeps_created_at(app: TestApp) {
    let rec = app.create("k", json!({"v": 1})).await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let r = app.put_data(&rec["id"], &json!({"value": {"v": 2}})).await;
    assert_eq!(r.status(), 200);
    let put: Value = r.json().await.expect("json");
    assert_eq!(put["value"], json!({"v": 2}));
    assert_eq!(put["created_at"], rec["created_at"]);
    assert_eq!(put["key"], rec["key"]);
    assert!(put["updated_at"].as_str() > rec["updated_at"].as_str(), "{put} vs {rec}");
    let got: Value = app.get_data(&rec["id"]).await.json().await.expect("json");
    assert_eq!(got, put);
    // `"value": null` is a value, not a missing field.
    let r = app.put_data(&rec["id"], &json!({"value": null})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.expect("json")["value"], Value::Null);
}

async fn delete_answers_204_then_the_record_is_gone(app: TestApp) {
    let rec = app.create("gone", json!(1)).await;
    let _warm = app.get_data(&rec["id"]).await;
    let r = app.delete_data(&rec["id"]).await;
    assert_eq!(r.status(), 204);
    assert!(r.bytes().await.expect("body").is_empty());
    assert_problem(app.get_data(&rec["id"]).await, 404).await;
    assert_problem(app.delete_data(&rec["id"]).await, 404).await;
    assert_problem(app.put_data(&rec["id"], &json!({"value": 1})).await, 404).await;
    let page: Value = app.list_data("key=gone").await.json().await.expect("json");
    assert_eq!(page["items"], json!([]));
}

async fn ids_that_cannot_exist_are_404_and_non_integers_400(app: TestApp) {
    for id in ["0", "-1", "-9223372036854775808", "9223372036854775807", "424242"] {
        assert_problem(app.get_data(id).await, 404).await;
        assert_problem(app.put_data(id, &json!({"value": 1})).await, 404).await;
        assert_problem(app.delete_data(id).await, 404).await;
    }
    for id in ["abc", "9223372036854775808", "1.5", "1e3", "%20"] {
        let p = assert_problem(app.get_data(id).await, 400).await;
        assert!(p["detail"].as_str().is_some_and(|d| d.contains("`id`")), "{p}");
        assert_problem(app.put_data(id, &json!({"value": 1})).await, 400).await;
        assert_problem(app.delete_data(id).await, 400).await;
    }
}

async fn a_duplicate_key_is_409(app: TestApp) {
    app.create("dup", json!(1)).await;
    let p = assert_problem(app.post_data(&json!({"key": "dup", "value": 2})).await, 409).await;
    // No SQL, table names or the key itself leak into the answer.
    let text = p.to_string();
    assert!(!text.contains("records") && !text.contains("UNIQUE") && !text.contains("duplicate key"), "{text}");
    let page: Value = app.list_data("key=dup").await.json().await.expect("json");
    assert_eq!(page["items"][0]["value"], 1, "the first value survives");
}

async fn concurrent_posts_each_get_their_own_record_and_one_winner_per_key(app: TestApp) {
    // Concurrent POSTs share multi-row INSERTs (db::Store::insert): each must still get exactly its own
    // record, and of several POSTs of one key exactly one wins.
    let posts = (0..30)
        .map(|i| json!({"key": format!("many:{i}"), "value": {"i": i}}))
        .chain((0..10).map(|i| json!({"key": "same", "value": i})));
    let answers = futures::future::join_all(posts.map(|body| {
        let app = &app;
        async move { (body.clone(), app.post_data(&body).await) }
    }))
    .await;
    let (mut ids, mut same_wins) = (std::collections::HashSet::new(), 0);
    for (body, r) in answers {
        if body["key"] == "same" && r.status() == 409 {
            continue;
        }
        assert_eq!(r.status(), 201, "{body}");
        let rec: Value = r.json().await.expect("json");
        assert_eq!((&rec["key"], &rec["value"]), (&body["key"], &body["value"]));
        assert!(ids.insert(rec["id"].as_i64().expect("id")), "ids are distinct");
        let stored: Value = app.get_data(rec["id"].clone()).await.json().await.expect("json");
        assert_eq!(stored, rec);
        same_wins += usize::from(body["key"] == "same");
    }
    assert_eq!((ids.len(), same_wins), (31, 1));
}

async fn the_pagination_chain_visits_every_record_exactly_once(app: TestApp) {
    let mut ids = Vec::new();
    for i in 0..23 {
        ids.push(app.create(&format!("p{i:02}"), json!(i)).await["id"].as_i64().expect("id"));
    }
    let mut seen = Vec::new();
    let mut after = 0;
    let mut pages = 0;
    loop {
        let r = app.list_data(&format!("limit=5&after={after}")).await;
        assert_eq!(r.status(), 200);
        let page: Value = r.json().await.expect("json");
        let items = page["items"].as_array().expect("items");
        seen.extend(items.iter().map(|r| r["id"].as_i64().expect("id")));
        pages += 1;
        match page["next_after"].as_i64() {
            Some(next) => {
                assert_eq!(Some(next), items.last().and_then(|r| r["id"].as_i64()), "next_after = last id");
                after = next;
            }
            None => {
                assert!(page["next_after"].is_null(), "next_after is present and null on the last page");
                break;
            }
        }
    }
    assert_eq!(seen, ids, "every record once, in id order");
    assert_eq!(pages, 5);
    // A page that ends exactly at the last record says null, not a dangling id.
    let exact: Value = app.list_data(&format!("limit=3&after={}", ids[19])).await.json().await.expect("json");
    assert_eq!(exact["items"].as_array().map(Vec::len), Some(3));
    assert!(exact["next_after"].is_null());
    // Default limit is 50.
    let all: Value = app.list_data("").await.json().await.expect("json");
    assert_eq!(all["items"].as_array().map(Vec::len), Some(23));
}

async fn the_default_limit_is_50(app: TestApp) {
    let mut ids = Vec::new();
    for i in 0..51 {
        ids.push(app.create(&format!("d{i:02}"), json!(i)).await["id"].as_i64().expect("id"));
    }
    let page: Value = app.list_data("").await.json().await.expect("json");
    let items = page["items"].as_array().expect("items");
    assert_eq!(items.len(), 50, "no limit means 50 items");
    assert_eq!(items.last().and_then(|r| r["id"].as_i64()), Some(ids[49]));
    assert_eq!(page["next_after"].as_i64(), Some(ids[49]), "a 51st record follows the default page");
}

async fn the_key_filter_matches_exactly_without_normalisation(app: TestApp) {
    let nfc = "caf\u{e9}";
    let nfd = "cafe\u{301}";
    let a = app.create(nfc, json!("nfc")).await;
    let b = app.create(nfd, json!("nfd")).await;
    app.create("Caf\u{e9}", json!("upper")).await;
    for (key, rec) in [(nfc, &a), (nfd, &b)] {
        let url = reqwest::Url::parse_with_params(&app.url("/data"), &[("key", key)]).expect("url");
        let page: Value = app.client.get(url).send().await.expect("get").json().await.expect("json");
        assert_eq!(page["items"], json!([rec]), "{key:?}");
        assert!(page["next_after"].is_null());
    }
    let none: Value = app.list_data("key=absent").await.json().await.expect("json");
    assert_eq!(none["items"], json!([]));
    // A key of exactly 200 scalar values (400 bytes) is fine.
    app.create(&"é".repeat(200), json!(1)).await;
}

async fn bad_list_queries_are_400_and_unknown_parameters_ignored(app: TestApp) {
    for q in
        ["limit=0", "limit=501", "limit=abc", "limit=-1", "after=-1", "after=x", "key=", "after=9223372036854775808"]
    {
        assert_problem(app.list_data(q).await, 400).await;
    }
    let key_201 = format!("key={}", "a".repeat(201));
    assert_problem(app.list_data(&key_201).await, 400).await;
    assert_problem(app.list_data("key=%07bell").await, 400).await;
    let r = app.list_data("limit=500&after=0&utm_source=x&sort=desc").await;
    assert_eq!(r.status(), 200);
}

async fn every_bad_body_is_400_problem_json_and_stores_nothing(app: TestApp) {
    let raw_bodies = [
        r#"{"key": "a", "value": "#,
        r#"not json"#,
        r#""#,
        r#"[]"#,
        r#"{"key": "a"}"#,
        r#"{"value": 1}"#,
        r#"{"key": "a", "value": 1, "extra": true}"#,
        r#"{"key": "", "value": 1}"#,
        r#"{"key": 5, "value": 1}"#,
        r#"{"key": null, "value": 1}"#,
        r#"{"key": "tab\there", "value": 1}"#,
        r#"{"key": "nul\u0000", "value": 1}"#,
        r#"{"key": "c1\u0085", "value": 1}"#,
        r#"{"key": "a", "value": 12345678901234567890123}"#,
        r#"{"key": "a", "value": 3.14159265358979323846264}"#,
        r#"{"key": "a", "value": 1e400}"#,
        r#"{"key": "a", "value": "x\u0000y"}"#,
        r#"{"key": "a", "value": {"k\u0000": 1}}"#,
        r#"{"key": "a", "value": "\ud800"}"#,
    ];
    let long_key = format!(r#"{{"key": "{}", "value": 1}}"#, "k".repeat(201));
    for body in raw_bodies.iter().copied().chain([long_key.as_str()]) {
        let r = app
            .client
            .post(app.url("/data"))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), 400, "{body}");
        let p = assert_problem(r, 400).await;
        assert!(!p["detail"].as_str().unwrap_or_default().is_empty(), "{body}");
    }
    let rec = app.create("ok", json!(1)).await;
    for body in [r#"{}"#, r#"{"value": 1, "key": "renamed"}"#, r#"{"value": 1e999}"#, r#"{"value": "\u0000"}"#] {
        let r = app
            .client
            .put(app.url(&format!("/data/{}", rec["id"])))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("put");
        assert_problem(r, 400).await;
    }
    // Nothing was stored or altered by any rejected request.
    let page: Value = app.list_data("").await.json().await.expect("json");
    assert_eq!(page["items"], json!([rec]));
}

async fn missing_or_non_json_content_type_is_415(app: TestApp) {
    let body = r#"{"key": "ct", "value": 1}"#;
    let no_ct = app.client.post(app.url("/data")).body(body).send().await.expect("post");
    assert_problem(no_ct, 415).await;
    let text = app.client.post(app.url("/data")).header("content-type", "text/plain").body(body).send().await;
    assert_problem(text.expect("post"), 415).await;
    let rec = app.create("ct0", json!(0)).await;
    let put = app.client.put(app.url(&format!("/data/{}", rec["id"]))).body(r#"{"value": 1}"#).send().await;
    assert_problem(put.expect("put"), 415).await;
    let ok = app
        .client
        .post(app.url("/data"))
        .header("content-type", "application/json; charset=utf-8")
        .body(body)
        .send()
        .await
        .expect("post");
    assert_eq!(ok.status(), 201);
}

async fn etag_gives_304_on_record_and_page(app: TestApp) {
    let rec = app.create("etag", json!({"v": 1})).await;
    let miss = app.get_data(&rec["id"]).await;
    let etag = header(miss.headers(), "etag");
    assert!(etag.starts_with('"') && etag.ends_with('"') && etag.len() > 2, "{etag}");
    let hit = app.get_data(&rec["id"]).await;
    assert_eq!(header(hit.headers(), "etag"), etag, "MISS and HIT carry the same ETag");
    let r = app.client.get(app.url(&format!("/data/{}", rec["id"]))).header("if-none-match", &etag).send().await;
    let r = r.expect("get");
    assert_eq!(r.status(), 304);
    assert_eq!(header(r.headers(), "etag"), etag);
    assert!(!x_cache(&r).is_empty());
    assert!(r.bytes().await.expect("body").is_empty());
    // A write changes the representation, so the old ETag no longer matches.
    app.put_data(&rec["id"], &json!({"value": {"v": 2}})).await;
    let r = app.client.get(app.url(&format!("/data/{}", rec["id"]))).header("if-none-match", &etag).send().await;
    let r = r.expect("get");
    assert_eq!(r.status(), 200);
    assert_ne!(header(r.headers(), "etag"), etag);
    // Pages too.
    let page = app.list_data("limit=10").await;
    let petag = header(page.headers(), "etag");
    let r = app.client.get(app.url("/data?limit=10")).header("if-none-match", &petag).send().await.expect("get");
    assert_eq!(r.status(), 304);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_max_body_bytes_are_413_even_when_chunked() {
    let app = spawn_app_with(|c| c.max_body_bytes = 1024).await;
    let big = json!({"key": "big", "value": "x".repeat(2000)});
    assert_problem(app.post_data(&big).await, 413).await;
    // Chunked: no Content-Length for the server to check up front.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        vec![Ok(br#"{"key": "big", "value": ""#.to_vec()), Ok(vec![b'x'; 2000]), Ok(br#""}"#.to_vec())];
    let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let r = app.client.post(app.url("/data")).header("content-type", "application/json").body(body).send().await;
    assert_problem(r.expect("post"), 413).await;
    let rec = app.create("small", json!("x".repeat(900))).await;
    assert_problem(app.put_data(&rec["id"], &json!({"value": "x".repeat(2000)})).await, 413).await;
    let page: Value = app.list_data("").await.json().await.expect("json");
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1), "nothing stored by the rejected POSTs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_need_the_bearer_token_and_401_wins_over_other_errors() {
    let app = spawn_app_with(|c| c.api_token = Some("s3cret-token".into())).await;
    let post = |auth: Option<&'static str>, ct: &'static str, body: String| {
        let mut r = app.client.post(app.url("/data")).header("content-type", ct).body(body);
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        r.send()
    };
    let good = json!({"key": "a", "value": 1}).to_string();
    for auth in [None, Some("Bearer wrong-token"), Some("Basic s3cret-token"), Some("s3cret-token")] {
        let r = post(auth, "application/json", good.clone()).await.expect("post");
        assert_eq!(header(r.headers(), "www-authenticate"), "Bearer");
        assert_problem(r, 401).await;
    }
    // 401 before 400, 413 and 415: the body is never looked at.
    for (ct, body) in [
        ("application/json", "{bad".to_owned()),
        ("text/plain", good.clone()),
        ("application/json", "x".repeat(2_000_000)),
    ] {
        assert_problem(post(None, ct, body).await.expect("post"), 401).await;
    }
    // Refusing an unread body closes the connection, and the answer says so (no broken keep-alive).
    let r = post(None, "application/json", "x".repeat(100_000)).await.expect("post");
    assert_eq!(header(r.headers(), "connection"), "close");
    let r = app.client.put(app.url("/data/1")).json(&json!({"value": 1})).send().await.expect("put");
    assert_problem(r, 401).await;
    let r = app.client.delete(app.url("/data/1")).send().await.expect("delete");
    assert_problem(r, 401).await;
    // The scheme name is case-insensitive; reads never need the token.
    let r = post(Some("bearer s3cret-token"), "application/json", good.clone()).await.expect("post");
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.expect("json")["id"].clone();
    assert_eq!(app.get_data(&id).await.status(), 200);
    assert_eq!(app.list_data("").await.status(), 200);
    assert_eq!(app.put_data(&id, &json!({"value": 2})).await.status(), 200);
    assert_eq!(app.delete_data(&id).await.status(), 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_echoed_when_sane_and_generated_otherwise() {
    let app = spawn_app().await;
    let sane = "req-42.abc_DEF";
    let r = app.client.get(app.url("/health")).header("x-request-id", sane).send().await.expect("get");
    assert_eq!(header(r.headers(), "x-request-id"), sane);
    for insane in ["has space", &"a".repeat(129), "semi;colon", ""] {
        let r = app.client.get(app.url("/data/1")).header("x-request-id", insane).send().await.expect("get");
        let id = header(r.headers(), "x-request-id");
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "generated UUID instead of {insane:?}: {id}");
    }
    // Present on errors and framework errors as well.
    for path in ["/data/abc", "/nope", "/data/999"] {
        let r = app.client.get(app.url(path)).send().await.expect("get");
        assert!(uuid::Uuid::parse_str(&header(r.headers(), "x-request-id")).is_ok(), "{path}");
    }
    let r = app.client.delete(app.url("/health")).send().await.expect("delete");
    assert_problem(r, 405).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_echoed_on_writes_and_on_the_write_guard_refusals() {
    let app = spawn_app_with(|c| {
        c.api_token = Some("s3cret-token".into());
        c.max_body_bytes = 1024;
    })
    .await;
    let send = |req: reqwest::RequestBuilder, id: &'static str, auth: bool| {
        let req = req.header("x-request-id", id);
        if auth { req.header("authorization", "Bearer s3cret-token") } else { req }.send()
    };
    let echoed = |r: &reqwest::Response, id: &str| {
        assert_eq!(header(r.headers(), "x-request-id"), id, "status {}", r.status());
    };
    let post = app.client.post(app.url("/data")).json(&json!({"key": "rid", "value": 1}));
    let r = send(post, "write-post.1", true).await.expect("post");
    assert_eq!(r.status(), 201);
    echoed(&r, "write-post.1");
    let id = r.json::<Value>().await.expect("json")["id"].clone();
    let put = app.client.put(app.url(&format!("/data/{id}"))).json(&json!({"value": 2}));
    let r = send(put, "write-put.2", true).await.expect("put");
    assert_eq!(r.status(), 200);
    echoed(&r, "write-put.2");
    let r = send(app.client.delete(app.url(&format!("/data/{id}"))), "write-delete.3", true).await.expect("delete");
    assert_eq!(r.status(), 204);
    echoed(&r, "write-delete.3");
    // The write guard's own answers, produced before the router runs.
    let post = app.client.post(app.url("/data")).json(&json!({"key": "rid", "value": 1}));
    let r = send(post, "guard-401_4", false).await.expect("post");
    echoed(&r, "guard-401_4");
    assert_problem(r, 401).await;
    let big = app.client.post(app.url("/data")).json(&json!({"key": "big", "value": "x".repeat(2000)}));
    let r = send(big, "guard-413_5", true).await.expect("post");
    echoed(&r, "guard-413_5");
    assert_problem(r, 413).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_are_404_problem_json() {
    let app = spawn_embedded_app().await;
    assert_problem(app.client.get(app.url("/nope")).send().await.expect("get"), 404).await;
    assert_problem(app.client.get(app.url("/data/1/extra")).send().await.expect("get"), 404).await;
}

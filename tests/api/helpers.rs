//! `spawn_app` and friends: real servers, fresh state per test, and the fault injectors the
//! resilience tests need (a TCP proxy that can refuse or black-hole, a killable redis-server).

use std::{
    collections::HashMap,
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::{
        Arc, LazyLock, Mutex,
        atomic::{AtomicU8, Ordering},
    },
    time::Duration,
};

use aside::{
    cache::Cache,
    cache::FillHook,
    config::Config,
    startup::{App, Hooks, StopHandle},
};
use reqwest::{Client, Response, header::HeaderMap};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

static TRACING: LazyLock<()> = LazyLock::new(|| {
    if std::env::var("TEST_LOG").is_ok() {
        // Leaked on purpose: the writer guard must outlive every test in the binary.
        std::mem::forget(aside::logging::init(aside::config::LogFormat::Text));
    }
});

fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests through scripts/test.sh, which starts throwaway Postgres and Redis")
    })
}

/// A running app and what a test needs to talk to it.
pub struct TestApp {
    pub addr: String,
    pub port: u16,
    pub metrics_port: Option<u16>,
    pub client: Client,
    pub config: Config,
    pub cache: Arc<Cache>,
    pub metrics: aside::metrics::Metrics,
    pub db: DatabaseConnection,
    /// How the app sends its database statements: `prepared` or `inline`.
    pub statements: &'static str,
    pub stop: StopHandle,
    pub task: JoinHandle<std::io::Result<()>>,
    /// The tracer, when the config has an OTLP endpoint (tests flush it).
    pub traces: Option<Arc<aside::traces::Traces>>,
}

/// True in scripts/test.sh's second run of this suite (`TEST_THROUGH_PGBOUNCER=1`): every app then
/// reaches its database through the throwaway PgBouncer (transaction pooling) instead of directly.
pub fn through_pgbouncer() -> bool {
    std::env::var("TEST_THROUGH_PGBOUNCER").is_ok_and(|v| v == "1")
}

/// A fresh Postgres database on the throwaway server, as the URL apps should use: directly, or through
/// PgBouncer in the second run. (CREATE DATABASE itself always goes directly to Postgres.)
pub async fn fresh_database() -> String {
    let url = fresh_database_direct().await;
    if through_pgbouncer() { pgbouncer_url(&url) } else { url }
}

/// A fresh Postgres database, as a URL straight to Postgres.
pub async fn fresh_database_direct() -> String {
    let admin_url = required_env("TEST_DATABASE_URL");
    let name = format!("aside_test_{}", uuid::Uuid::new_v4().simple());
    let admin = Database::connect(&admin_url).await.expect("connect to TEST_DATABASE_URL");
    admin.execute_unprepared(&format!("CREATE DATABASE \"{name}\"")).await.expect("create test database");
    let _ = admin.close().await;
    same_database_on(&admin_url, &name)
}

/// The same database as `url`, through the throwaway PgBouncer (`TEST_PGBOUNCER_URL`).
pub fn pgbouncer_url(url: &str) -> String {
    same_database_on(&required_env("TEST_PGBOUNCER_URL"), database_name(url))
}

/// The same database as `url`, straight to Postgres (`TEST_DATABASE_URL`).
pub fn direct_url(url: &str) -> String {
    same_database_on(&required_env("TEST_DATABASE_URL"), database_name(url))
}

fn database_name(url: &str) -> &str {
    url.rsplit_once('/').expect("a database URL ends in /name").1
}

fn same_database_on(server_url: &str, name: &str) -> String {
    let (base, _) = server_url.rsplit_once('/').expect("the server URL has a database path");
    format!("{base}/{name}")
}

/// Base configuration: fresh Postgres database, shared Redis under a fresh key prefix, random port.
pub async fn test_config() -> Config {
    let mut c = Config::from_vars(&HashMap::new()).expect("defaults");
    c.database_url = fresh_database().await;
    c.redis_url = Some(required_env("TEST_REDIS_URL"));
    c.bind_addr = "127.0.0.1:0".parse().expect("addr");
    c.cache_prefix = format!("aside:test:{}:", uuid::Uuid::new_v4().simple());
    c.shutdown_drain = Duration::from_millis(0);
    c
}

/// Postgres + Redis.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Postgres + Redis, with the configuration adjusted first.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    let mut c = test_config().await;
    tweak(&mut c);
    start(c).await
}

/// The embedded default: a fresh SQLite file + in-process cache, no services at all.
pub fn embedded_config() -> Config {
    let mut c = Config::from_vars(&HashMap::new()).expect("defaults");
    let file = std::env::temp_dir().join(format!("aside-test-{}.db", uuid::Uuid::new_v4().simple()));
    c.database_url = format!("sqlite://{}?mode=rwc", file.display());
    c.bind_addr = "127.0.0.1:0".parse().expect("addr");
    c.shutdown_drain = Duration::from_millis(0);
    c
}

pub async fn spawn_embedded_app() -> TestApp {
    start(embedded_config()).await
}

/// Starts an app with exactly this configuration.
pub async fn start(config: Config) -> TestApp {
    start_hooked(config, None).await
}

/// Starts an app whose cache fills first run `fill_hook` (FillGate::hook).
pub async fn start_hooked(config: Config, fill_hook: Option<FillHook>) -> TestApp {
    LazyLock::force(&TRACING);
    let app = App::build_with(config.clone(), Hooks { fill: fill_hook }).await.expect("app builds");
    let port = app.port();
    let metrics_port = app.metrics_port();
    let (cache, metrics, db) = (app.cache(), app.metrics(), app.db());
    let (stop, statements, traces) = (app.stop_handle(), app.statements(), app.traces());
    let pgbouncer = std::env::var("TEST_PGBOUNCER_URL").ok().and_then(|u| Some(format!("{}/", u.rsplit_once('/')?.0)));
    if pgbouncer.is_some_and(|base| config.database_url.starts_with(&base))
        && config.database_pooler == aside::config::DatabasePooler::Auto
    {
        // Otherwise the run through PgBouncer would quietly test the prepared path the pooler breaks.
        assert_eq!(statements, "inline", "behind PgBouncer aside must find the pooler");
    }
    let task = tokio::spawn(app.run_until_stopped());
    TestApp {
        addr: format!("http://127.0.0.1:{port}"),
        port,
        metrics_port,
        client: Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client"),
        config,
        cache,
        metrics,
        db,
        statements,
        stop,
        task,
        traces,
    }
}

impl TestApp {
    /// A second replica sharing this one's database, Redis and key prefix.
    pub async fn peer(&self) -> TestApp {
        self.peer_with(|_| {}).await
    }

    pub async fn peer_with(&self, tweak: impl FnOnce(&mut Config)) -> TestApp {
        let mut c = self.config.clone();
        tweak(&mut c);
        start(c).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.addr)
    }

    fn token_header(&self) -> Option<String> {
        self.config.api_token.as_ref().map(|t| format!("Bearer {t}"))
    }

    pub async fn post_data(&self, body: &Value) -> Response {
        let mut r = self.client.post(self.url("/data")).json(body);
        if let Some(t) = self.token_header() {
            r = r.header("Authorization", t);
        }
        r.send().await.expect("POST /data")
    }

    /// POSTs `{"key", "value"}` and returns the created record.
    pub async fn create(&self, key: &str, value: Value) -> Value {
        let r = self.post_data(&serde_json::json!({"key": key, "value": value})).await;
        assert_eq!(r.status(), 201, "create {key}");
        r.json().await.expect("record")
    }

    pub async fn get_data(&self, id: impl std::fmt::Display) -> Response {
        self.client.get(self.url(&format!("/data/{id}"))).send().await.expect("GET /data/{id}")
    }

    pub async fn list_data(&self, query: &str) -> Response {
        self.client.get(self.url(&format!("/data?{query}"))).send().await.expect("GET /data")
    }

    pub async fn put_data(&self, id: impl std::fmt::Display, body: &Value) -> Response {
        let mut r = self.client.put(self.url(&format!("/data/{id}"))).json(body);
        if let Some(t) = self.token_header() {
            r = r.header("Authorization", t);
        }
        r.send().await.expect("PUT /data/{id}")
    }

    pub async fn delete_data(&self, id: impl std::fmt::Display) -> Response {
        let mut r = self.client.delete(self.url(&format!("/data/{id}")));
        if let Some(t) = self.token_header() {
            r = r.header("Authorization", t);
        }
        r.send().await.expect("DELETE /data/{id}")
    }

    /// GETs a path and parses the JSON body whatever the status.
    pub async fn get_json(&self, path: &str) -> Value {
        self.client.get(self.url(path)).send().await.expect("get").json().await.expect("json")
    }

    /// The current value of one metric series from `/metrics` (0 when absent).
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.client.get(self.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
        metric_value(&text, series)
    }
}

/// Finds `series` (name plus labels exactly as exported, e.g. `aside_db_queries_total{op="get"}`).
pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map(|v| v.trim().parse().expect("metric value"))
        .unwrap_or(0.0)
}

/// `X-Cache` of a response.
pub fn x_cache(r: &Response) -> String {
    header(r.headers(), "x-cache")
}

pub fn header(h: &HeaderMap, name: &str) -> String {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
}

/// Asserts an RFC 9457 body with the given status and returns it.
pub async fn assert_problem(r: Response, status: u16) -> Value {
    assert_eq!(r.status(), status, "status");
    assert_eq!(header(r.headers(), "content-type"), "application/problem+json");
    let body: Value = r.json().await.expect("problem body is JSON");
    assert_eq!(body["status"], status);
    for field in ["type", "title", "detail"] {
        assert!(body[field].is_string(), "problem lacks `{field}`: {body}");
    }
    body
}

/// A fill hook that parks the first fill of `entry_suffix` until released (the slow-miss race).
pub struct FillGate {
    pub reached: Arc<tokio::sync::Notify>,
    pub release: Arc<tokio::sync::Notify>,
}

impl FillGate {
    pub fn hook(entry_suffix: &'static str) -> (FillHook, FillGate) {
        let reached = Arc::new(tokio::sync::Notify::new());
        let release = Arc::new(tokio::sync::Notify::new());
        let armed = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (r2, l2) = (reached.clone(), release.clone());
        let hook: FillHook = Arc::new(move |key: String| {
            let (reached, release, armed) = (r2.clone(), l2.clone(), armed.clone());
            Box::pin(async move {
                if key.ends_with(entry_suffix) && armed.swap(false, Ordering::SeqCst) {
                    reached.notify_one();
                    release.notified().await;
                }
            })
        });
        (hook, FillGate { reached, release })
    }
}

/// A TCP proxy in front of a dependency, to make it refuse connections or go silent on demand.
pub struct Proxy {
    pub port: u16,
    mode: Arc<AtomicU8>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    _accept: JoinHandle<()>,
}

const FORWARD: u8 = 0;
const REFUSE: u8 = 1;
const BLACKHOLE: u8 = 2;

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy bind");
        let port = listener.local_addr().expect("addr").port();
        let mode = Arc::new(AtomicU8::new(FORWARD));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (m, cs) = (mode.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                match m.load(Ordering::SeqCst) {
                    REFUSE => drop(client),
                    _ => {
                        let Ok(server) = TcpStream::connect(upstream).await else { continue };
                        let (cr, cw) = client.into_split();
                        let (sr, sw) = server.into_split();
                        let mut list = cs.lock().expect("conns");
                        list.push(tokio::spawn(pump(cr, sw, m.clone())));
                        list.push(tokio::spawn(pump(sr, cw, m.clone())));
                    }
                }
            }
        });
        Proxy { port, mode, conns, _accept: accept }
    }

    /// Refuses new connections and cuts the open ones (a dead or restarting server).
    pub fn refuse(&self) {
        self.mode.store(REFUSE, Ordering::SeqCst);
        for c in self.conns.lock().expect("conns").drain(..) {
            c.abort();
        }
    }

    /// Accepts and holds everything, answering nothing (packets dropped).
    pub fn blackhole(&self) {
        self.mode.store(BLACKHOLE, Ordering::SeqCst);
    }

    pub fn forward(&self) {
        self.mode.store(FORWARD, Ordering::SeqCst);
    }
}

async fn pump(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf, mode: Arc<AtomicU8>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        loop {
            match mode.load(Ordering::SeqCst) {
                FORWARD => break,
                BLACKHOLE => tokio::time::sleep(Duration::from_millis(20)).await,
                _ => return,
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// The host:port of a `postgres://…@host:port/db` URL.
pub fn socket_of(url: &str) -> SocketAddr {
    let after_at = url.rsplit_once('@').map(|(_, r)| r).unwrap_or_else(|| url.split_once("://").expect("url").1);
    let hostport = after_at.split('/').next().expect("host:port");
    tokio_addr(hostport)
}

fn tokio_addr(hostport: &str) -> SocketAddr {
    use std::net::ToSocketAddrs;
    hostport.to_socket_addrs().expect("resolvable").next().expect("an address")
}

/// Rewrites the host:port of a URL to go through a local proxy port.
pub fn via_proxy(url: &str, port: u16) -> String {
    let target = socket_of(url);
    url.replacen(&format!("{}:{}", target.ip(), target.port()), &format!("127.0.0.1:{port}"), 1).replacen(
        &format!("localhost:{}", target.port()),
        &format!("127.0.0.1:{port}"),
        1,
    )
}

/// A redis-server of the test's own, which the test may kill and restart on the same port.
pub struct OwnRedis {
    pub port: u16,
    child: Option<Child>,
    dir: std::path::PathBuf,
}

impl OwnRedis {
    pub async fn start() -> OwnRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("addr").port();
        let dir = std::env::temp_dir().join(format!("aside-redis-{port}"));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let mut r = OwnRedis { port, child: None, dir };
        r.restart().await;
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub async fn restart(&mut self) {
        let bin = std::env::var("REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".into());
        let child = Command::new(bin)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (set REDIS_SERVER_BIN or put it on PATH; scripts/test.sh does)");
        self.child = Some(child);
        for _ in 0..100 {
            if TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("redis-server did not start on {}", self.port);
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Postgres cluster of the test's own (initdb in a temp dir, `PG_BIN` from scripts/test.sh), which
/// the test may stop and start again on the same port and data: a real restart, without disturbing
/// the shared server the other tests use. Trusts local connections; superuser `postgres`.
pub struct OwnPostgres {
    pub port: u16,
    dir: std::path::PathBuf,
}

impl OwnPostgres {
    pub async fn start() -> OwnPostgres {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("addr").port();
        let dir = std::env::temp_dir().join(format!("aside-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(dir.join("sock")).expect("pg dir");
        let pg = OwnPostgres { port, dir };
        if Self::as_root() {
            // Postgres refuses to run as root; scripts/services.sh does the same.
            assert!(Command::new("chown").arg("-R").arg("postgres:").arg(&pg.dir).status().expect("chown").success());
        }
        let data = pg.dir.join("data");
        let init = pg
            .pg_command("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C"])
            .output()
            .expect("initdb");
        assert!(init.status.success(), "initdb: {}", String::from_utf8_lossy(&init.stderr));
        pg.start_again().await;
        pg
    }

    fn as_root() -> bool {
        Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"))
    }

    fn pg_command(&self, tool: &str) -> Command {
        let bin = std::path::Path::new(&required_env("PG_BIN")).join(tool);
        let mut c = if Self::as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(bin);
            c
        } else {
            Command::new(bin)
        };
        c.current_dir(&self.dir).stdin(Stdio::null());
        c
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// `pg_ctl start`, waiting until it accepts connections.
    pub async fn start_again(&self) {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off -c shared_buffers=16MB -c max_connections=60",
            self.port,
            self.dir.join("sock").display()
        );
        let log = self.dir.join("postgres.log");
        let mut c = self.pg_command("pg_ctl");
        c.arg("-D").arg(self.dir.join("data")).arg("-l").arg(&log).args(["-o", &opts, "-w", "-t", "60", "start"]);
        let out = tokio::task::spawn_blocking(move || c.output()).await.expect("join").expect("pg_ctl start");
        assert!(out.status.success(), "pg_ctl start: {}", std::fs::read_to_string(&log).unwrap_or_default());
    }

    /// `pg_ctl stop -m fast`: every backend is told to terminate (57P01) and the server exits, as in a
    /// restart by an operator or an orchestrator.
    pub async fn stop(&self) {
        let mut c = self.pg_command("pg_ctl");
        c.arg("-D").arg(self.dir.join("data")).args(["-m", "fast", "-w", "-t", "60", "stop"]);
        let out = tokio::task::spawn_blocking(move || c.output()).await.expect("join").expect("pg_ctl stop");
        assert!(out.status.success(), "pg_ctl stop: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ =
            self.pg_command("pg_ctl").arg("-D").arg(self.dir.join("data")).args(["-m", "immediate", "stop"]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Polls `f` every 50 ms until it returns true or `within` passes; returns how long it took.
pub async fn eventually<F, Fut>(within: Duration, mut f: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while start.elapsed() < within {
        if f().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// A server that speaks just enough RESP2 to pass fred's connection set-up while reporting an old
/// `redis_version` (the real redis-server here is newer): PING, CLIENT ID and INFO are answered, any
/// other command gets `-ERR` and is counted.
pub struct FakeRedis {
    pub port: u16,
    pub data_commands: Arc<std::sync::atomic::AtomicUsize>,
    _accept: JoinHandle<()>,
}

impl FakeRedis {
    pub async fn start(version: &'static str) -> FakeRedis {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("fake redis bind");
        let port = listener.local_addr().expect("addr").port();
        let data_commands = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = data_commands.clone();
        let accept = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(fake_redis_conn(conn, version, counter.clone()));
            }
        });
        FakeRedis { port, data_commands, _accept: accept }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

async fn fake_redis_conn(conn: TcpStream, version: &'static str, data_commands: Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::AsyncBufReadExt;
    let (read, mut write) = conn.into_split();
    let mut lines = tokio::io::BufReader::new(read).lines();
    // A command is `*<n>` then n times `$<len>` + the argument; only the command name matters here.
    while let Ok(Some(head)) = lines.next_line().await {
        let Some(n) = head.strip_prefix('*').and_then(|n| n.parse::<usize>().ok()) else { return };
        let mut args = Vec::with_capacity(n);
        for _ in 0..n {
            let (Ok(Some(_len)), Ok(Some(arg))) = (lines.next_line().await, lines.next_line().await) else { return };
            args.push(arg.to_ascii_uppercase());
        }
        let reply = match args.first().map(String::as_str) {
            Some("PING") => "+PONG\r\n".to_owned(),
            Some("CLIENT") => ":1\r\n".to_owned(),
            Some("INFO") => {
                let info = format!("# Server\r\nredis_version:{version}\r\n");
                format!("${}\r\n{info}\r\n", info.len())
            }
            _ => {
                data_commands.fetch_add(1, Ordering::SeqCst);
                "-ERR unknown command\r\n".to_owned()
            }
        };
        if write.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// `redis-cli -p PORT ARGS…` (blocking, so on the blocking pool): its stdout, trimmed. Panics when the
/// command cannot run: the HA tests drive their servers with it.
pub async fn redis_cli(port: u16, args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(&args)
            .output()
            .expect("redis-cli (scripts/test.sh installs redis-tools)");
        assert!(out.status.success(), "redis-cli -p {port} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    })
    .await
    .expect("redis-cli task")
}

/// The ports of the throwaway Redis Cluster's masters (scripts/services.sh: `REDIS_CLUSTER_PORTS`).
pub fn cluster_ports() -> Vec<u16> {
    required_env("REDIS_CLUSTER_PORTS").split_whitespace().map(|p| p.parse().expect("port")).collect()
}

/// A Redis master + replica watched by three sentinels, of the test's own (it may kill the master).
pub struct SentinelSet {
    pub master: u16,
    pub replica: u16,
    pub sentinels: Vec<u16>,
    children: Vec<Child>,
    dir: std::path::PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("addr").port()
}

impl SentinelSet {
    pub async fn start() -> SentinelSet {
        let bin = std::env::var("REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".into());
        let dir = std::env::temp_dir().join(format!("aside-sentinel-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("dir");
        let (master, replica) = (free_port(), free_port());
        let mut set = SentinelSet { master, replica, sentinels: Vec::new(), children: Vec::new(), dir };
        let node = |port: u16, extra: &[String]| {
            let d = set.dir.join(port.to_string());
            std::fs::create_dir_all(&d).expect("dir");
            Command::new(&bin)
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&d)
                .args(extra)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server (set REDIS_SERVER_BIN or put it on PATH; scripts/test.sh does)")
        };
        let m = node(master, &[]);
        let r = node(replica, &["--replicaof".into(), "127.0.0.1".into(), master.to_string()]);
        set.children.extend([m, r]);
        for _ in 0..3 {
            let port = free_port();
            let conf = set.dir.join(format!("sentinel-{port}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor aside 127.0.0.1 {master} 2\n\
                     sentinel down-after-milliseconds aside 1000\nsentinel failover-timeout aside 5000\n",
                    set.dir.display()
                ),
            )
            .expect("sentinel.conf");
            let child = Command::new(&bin)
                .arg(&conf)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server --sentinel");
            set.children.push(child);
            set.sentinels.push(port);
        }
        // Ready: the replica has synced, and every sentinel knows the master and the replica (a
        // failover needs the replica).
        let ready = eventually(Duration::from_secs(15), || async {
            let link = try_redis_cli(replica, &["info", "replication"]).await;
            if !link.contains("master_link_status:up") {
                return false;
            }
            for s in &set.sentinels {
                let replicas = try_redis_cli(*s, &["sentinel", "replicas", "aside"]).await;
                if !replicas.contains(&replica.to_string()) {
                    return false;
                }
            }
            true
        })
        .await;
        assert!(ready.is_some(), "sentinel set did not come up (dir {})", set.dir.display());
        set
    }

    /// `redis-sentinel://` URL in the form aside's config accepts.
    pub fn url(&self) -> String {
        let s = &self.sentinels;
        format!(
            "redis-sentinel://127.0.0.1:{}/0?node=127.0.0.1:{}&node=127.0.0.1:{}&sentinelServiceName=aside",
            s[0], s[1], s[2]
        )
    }

    fn signal(&self, port: u16, sig: &str) {
        let idx = if port == self.master { 0 } else { 1 };
        let pid = self.children[idx].id().to_string();
        let ok = Command::new("kill").args([sig, &pid]).status().expect("kill").success();
        assert!(ok, "kill {sig} {pid}");
    }

    pub fn pause_replica(&self) {
        self.signal(self.replica, "-STOP");
    }

    pub fn resume_replica(&self) {
        self.signal(self.replica, "-CONT");
    }

    pub fn kill_master(&mut self) {
        let _ = self.children[0].kill();
        let _ = self.children[0].wait();
    }

    /// Has the sentinels promote the replica (`SENTINEL FAILOVER`, retried while a sentinel still
    /// finds no good replica) and waits until they report it as the master.
    pub async fn fail_over_to_replica(&self) {
        let promoted = eventually(Duration::from_secs(20), || async {
            let addr = try_redis_cli(self.sentinels[0], &["sentinel", "get-master-addr-by-name", "aside"]).await;
            if addr.ends_with(&self.replica.to_string()) {
                return try_redis_cli(self.replica, &["role"]).await.starts_with("master");
            }
            let _ = try_redis_cli(self.sentinels[0], &["sentinel", "failover", "aside"]).await;
            false
        })
        .await;
        assert!(promoted.is_some(), "the sentinels did not promote the replica");
    }
}

impl Drop for SentinelSet {
    fn drop(&mut self) {
        for c in &mut self.children {
            // Quietly: the killed master is already gone.
            let _ = Command::new("kill").args(["-CONT", &c.id().to_string()]).stderr(Stdio::null()).status();
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Like `redis_cli`, but an unreachable server is an empty answer (for polling).
pub async fn try_redis_cli(port: u16, args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(&args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    })
    .await
    .unwrap_or_default()
}

/// Starts the real binary (`cmd`, its env set) on a free loopback port with stdout piped, and waits until
/// `/ready` answers 200: the child, the base URL and a client.
pub async fn start_ready(mut cmd: std::process::Command) -> (std::process::Child, String, reqwest::Client) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let child = cmd
        .env("BIND_ADDR", format!("127.0.0.1:{port}"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}");
    let up = eventually(Duration::from_secs(10), || async {
        client.get(format!("{url}/ready")).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(up.is_some(), "ready");
    (child, url, client)
}

/// An admin session that terminates every backend of one app's database, as Postgres restarting or an
/// operator would (SQLSTATE 57P01 on each connection's next use).
pub struct BackendKiller {
    admin: DatabaseConnection,
    sql: String,
}

impl BackendKiller {
    pub async fn new(app: &TestApp) -> Self {
        let db_name = app.config.database_url.rsplit('/').next().expect("db name").to_owned();
        let admin = Database::connect(std::env::var("TEST_DATABASE_URL").expect("TEST_DATABASE_URL"))
            .await
            .expect("admin connection");
        let sql = format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db_name}' AND pid <> pg_backend_pid()"
        );
        Self { admin, sql }
    }

    pub async fn kill_all(&self) {
        self.admin.execute_unprepared(&self.sql).await.expect("terminate");
    }

    pub async fn close(self) {
        let _ = self.admin.close().await;
    }
}

//! Builds the app and runs it (contract: "Timing promises" for SIGTERM). Request path, outermost first:
//! `Observe` (request id, metrics, access log, `Connection: close` while draining) → `HotRead` (answers
//! `GET /data/{id}` itself) → problem+json edge converter → write guard (auth, size limit, value checks)
//! → router → poem-openapi operations.

use std::{
    io,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use poem::{
    EndpointExt, Route, Server,
    endpoint::BoxEndpoint,
    get,
    listener::{Acceptor, Listener, TcpAcceptor, TcpListener},
};
use poem_openapi::OpenApiService;
use sea_orm::DatabaseConnection;
use tokio::sync::Notify;

use crate::{
    api::{DataApi, HotRead},
    body::WriteGuard,
    cache::Cache,
    config::Config,
    db::{self, Store},
    docs, error,
    health::OpsApi,
    metrics::{self, Metrics},
    migration,
    telemetry::Observe,
    traces::Traces,
};

/// Why the app could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("database: {0}")]
    Database(#[from] sea_orm::DbErr),
    #[error("cache: {0}")]
    Cache(String),
    #[error("metrics: {0}")]
    Metrics(String),
    #[error("traces: {0}")]
    Traces(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: std::net::SocketAddr, source: io::Error },
}

/// A built, bound, not yet running server.
pub struct App {
    acceptor: TcpAcceptor,
    port: u16,
    endpoint: BoxEndpoint<'static>,
    draining: Arc<AtomicBool>,
    drain: Duration,
    stop: Arc<Notify>,
    cache: Arc<Cache>,
    metrics: Metrics,
    db: DatabaseConnection,
    statements: &'static str,
    metrics_listener: Option<(TcpAcceptor, BoxEndpoint<'static>)>,
    traces: Option<Arc<Traces>>,
}

/// Triggers the same drain-then-exit path as SIGTERM (tests use it).
#[derive(Clone)]
pub struct StopHandle(Arc<Notify>);

impl StopHandle {
    pub fn stop(&self) {
        self.0.notify_one();
    }
}

const API_DESCRIPTION: &str = "JSON records in a database, read through a cache (cache-aside).\n\n\
Reads answer `X-Cache: HIT|MISS|BYPASS` and an `ETag`; every write invalidates what it changed, so \
once a write has answered, no replica serves older data. Errors are RFC 9457 `application/problem+json`. \
Writes need `Authorization: Bearer <token>` when the server has `API_TOKEN` set (use **Authorize**).";

/// Hooks the tests install into a running app (`App::build_with`); production builds none.
#[doc(hidden)]
#[derive(Default)]
pub struct Hooks {
    /// Runs before every cache fill, with the entry's key (cache/mod.rs `fill`).
    pub fill: Option<crate::cache::FillHook>,
}

impl App {
    /// Connects, migrates, builds routes and binds the listener.
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        Self::build_with(config, Hooks::default()).await
    }

    /// `build` with test hooks: what makes a race deterministic in the tests, never configuration.
    #[doc(hidden)]
    pub async fn build_with(config: Config, hooks: Hooks) -> Result<Self, StartupError> {
        let metrics = Metrics::new().map_err(|e| StartupError::Metrics(e.to_string()))?;
        let traces = match &config.traces {
            None => None,
            Some(t) => {
                tracing::info!(traces = ?t, "exporting traces over OTLP");
                Some(Traces::start(t, &metrics).map_err(StartupError::Traces)?)
            }
        };
        // Redis connects while the database migrates: start-up waits for the slower one, not both.
        let database = async {
            migration::run(&config).await?;
            db::connect(&config).await
        };
        let (db, cache) = tokio::join!(database, Cache::new(&config, metrics.clone(), hooks.fill));
        let (connected, cache) = (db?, cache.map_err(StartupError::Cache)?);
        let statements_name = connected.statements.name();
        tracing::info!(statements = statements_name, "database connected");
        let db = connected.db.clone();
        let store = Store::new(connected, metrics.clone());
        let draining = Arc::new(AtomicBool::new(false));

        let data = DataApi { store: store.clone(), cache: cache.clone(), metrics: metrics.clone() };
        let hot = Arc::new(HotRead { data: data.clone() });
        let ops = OpsApi { store, cache: cache.clone(), draining: draining.clone() };
        let api = OpenApiService::new((data, ops), "aside", env!("CARGO_PKG_VERSION"))
            .description(API_DESCRIPTION)
            // Relative: "Try it out" works behind any NodePort, port-forward or Ingress.
            .server("/");
        let (ui, spec) = docs::endpoints(api.spec(), api.swagger_ui_html());
        let guard = Arc::new(WriteGuard { api_token: config.api_token.clone(), max_body_bytes: config.max_body_bytes });
        let observe =
            Arc::new(Observe { metrics: metrics.clone(), draining: draining.clone(), traces: traces.clone() });
        let mut routes = Route::new().nest("/", api).nest("/docs", ui).at("/openapi.json", spec);
        // With METRICS_BIND_ADDR, /metrics lives only on its own port, which a NetworkPolicy can
        // restrict to Prometheus (policies see ports, not paths).
        let metrics_listener = match config.metrics_bind_addr {
            None => {
                routes = routes.at("/metrics", get(metrics::metrics_endpoint));
                None
            }
            Some(addr) => {
                let acceptor = TcpListener::bind(addr)
                    .into_acceptor()
                    .await
                    .map_err(|source| StartupError::Bind { addr, source })?;
                // The same edge as the API port: request ids, problem+json errors, measured and logged.
                let observe = observe.clone();
                let ep = Route::new()
                    .at("/metrics", get(metrics::metrics_endpoint))
                    .data(metrics.clone())
                    .catch_all_error(error::to_problem)
                    .around(move |ep, req| observe.clone().call(ep, req))
                    .boxed();
                Some((acceptor, ep))
            }
        };
        let endpoint = routes
            .data(metrics.clone())
            .around(move |ep, req| guard.clone().call(ep, req))
            .catch_all_error(error::to_problem)
            .around(move |ep, req| hot.clone().call(ep, req))
            .around(move |ep, req| observe.clone().call(ep, req))
            .boxed();

        let acceptor = TcpListener::bind(config.bind_addr)
            .into_acceptor()
            .await
            .map_err(|source| StartupError::Bind { addr: config.bind_addr, source })?;
        let port = acceptor.local_addr().first().and_then(|a| a.as_socket_addr().map(|s| s.port())).unwrap_or(0);
        Ok(Self {
            acceptor,
            port,
            endpoint,
            draining,
            drain: config.shutdown_drain,
            stop: Arc::new(Notify::new()),
            cache,
            metrics,
            db,
            statements: statements_name,
            metrics_listener,
            traces,
        })
    }

    /// The bound metrics port when `METRICS_BIND_ADDR` is set.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_listener.as_ref().and_then(|(a, _)| a.local_addr().first()?.as_socket_addr().map(|s| s.port()))
    }

    /// The bound port (useful with `BIND_ADDR=…:0`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle that starts the drain, as SIGTERM does.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(self.stop.clone())
    }

    #[doc(hidden)]
    pub fn cache(&self) -> Arc<Cache> {
        self.cache.clone()
    }

    #[doc(hidden)]
    pub fn metrics(&self) -> Metrics {
        self.metrics.clone()
    }

    #[doc(hidden)]
    pub fn db(&self) -> DatabaseConnection {
        self.db.clone()
    }

    /// The tracer, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (tests flush it).
    #[doc(hidden)]
    pub fn traces(&self) -> Option<Arc<Traces>> {
        self.traces.clone()
    }

    /// How database statements go out: `prepared` or `inline` (`DATABASE_POOLER`).
    pub fn statements(&self) -> &'static str {
        self.statements
    }

    /// Serves until SIGTERM/SIGINT (or the stop handle), then drains: `/ready` fails at once, serving
    /// continues for `SHUTDOWN_DRAIN_SECONDS` (responses carry `Connection: close`), then the listener
    /// closes and in-flight requests get up to 5 s to finish.
    pub async fn run_until_stopped(self) -> io::Result<()> {
        let (draining, drain, stop) = (self.draining, self.drain, self.stop);
        let signal = async move {
            wait_for_stop(&stop).await;
            draining.store(true, Ordering::Release);
            tracing::info!(drain_seconds = drain.as_secs(), "stop requested: draining");
            tokio::time::sleep(drain).await;
            tracing::info!("drain over: closing the listener");
        };
        // The metrics port serves until the main server has finished, so the drain stays observable.
        let metrics_server = self
            .metrics_listener
            .map(|(acceptor, ep)| tokio::spawn(async move { Server::new_with_acceptor(acceptor).run(ep).await }));
        let served = Server::new_with_acceptor(self.acceptor)
            .run_with_graceful_shutdown(self.endpoint, signal, Some(Duration::from_secs(5)))
            .await;
        if let Some(m) = metrics_server {
            m.abort();
        }
        if let Some(t) = self.traces {
            // The last spans go out before exit; a dead collector delays the exit by at most 2 s.
            let flushed = tokio::task::spawn_blocking(move || t.shutdown(Duration::from_secs(2))).await;
            if let Ok(Err(e)) = flushed {
                tracing::warn!(error = %e, "traces: the last spans were not exported");
            }
        }
        served?;
        let _ = self.db.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

async fn wait_for_stop(stop: &Notify) {
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = term => {}
        r = tokio::signal::ctrl_c() => { if r.is_err() { std::future::pending::<()>().await } }
        () = stop.notified() => {}
    }
}

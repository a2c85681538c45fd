//! Configuration from the environment only (contract: "Configuration"). Every variable is parsed and
//! validated here, once, at start-up; a bad value stops the process with one line naming it.

use std::{collections::HashMap, net::SocketAddr, time::Duration};

/// Where records live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatabaseKind {
    Postgres,
    Sqlite,
}

/// What sits between aside and Postgres (`DATABASE_POOLER`); DESIGN.md, "Behind PgBouncer".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatabasePooler {
    /// Find out at start-up whether statements can move between server connections.
    Auto,
    /// A transaction-pooling PgBouncer (or alike): never leave a prepared statement on a server connection.
    Transaction,
    /// Postgres itself, or a session-pooling proxy: cached prepared statements.
    None,
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Text when stdout is a terminal, JSON otherwise (`logging::init` decides).
    Auto,
    Json,
    Text,
}

/// The validated configuration.
#[derive(Clone)]
pub struct Config {
    pub database_url: String,
    pub database_pooler: DatabasePooler,
    pub redis_url: Option<String>,
    pub cache_ttl: Duration,
    pub cache_enabled: bool,
    pub cache_timeout: Duration,
    pub bind_addr: SocketAddr,
    pub metrics_bind_addr: Option<SocketAddr>,
    pub api_token: Option<String>,
    pub shutdown_drain: Duration,
    pub max_body_bytes: usize,
    pub log_format: LogFormat,
    /// OTLP trace export (`OTEL_*`); None = tracing off.
    pub traces: Option<crate::traces::TraceConfig>,
    /// Prefix of every cache key (`CACHE_KEY_PREFIX`). Its version part is the cache's format version: a
    /// release that changes what an entry holds moves it (aside:v2:), so no replica reads the old format.
    pub cache_prefix: String,
}

impl std::fmt::Debug for Config {
    // Hand-written so the token and URLs with passwords never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("database", &self.database_kind())
            .field("database_pooler", &self.database_pooler)
            .field("redis", &self.redis_url.is_some())
            .field("cache_ttl", &self.cache_ttl)
            .field("cache_enabled", &self.cache_enabled)
            .field("cache_timeout", &self.cache_timeout)
            .field("cache_prefix", &self.cache_prefix)
            .field("bind_addr", &self.bind_addr)
            .field("metrics_bind_addr", &self.metrics_bind_addr)
            .field("api_token", &self.api_token.is_some())
            .field("shutdown_drain", &self.shutdown_drain)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("traces", &self.traces)
            .finish()
    }
}

pub use crate::env::ConfigError;
use crate::env::{bad, parse_num};

/// The default `ENV_HELP` shows for `var`: each default is written there once, and parsed from there.
fn default_of(var: &'static str) -> Result<&'static str, ConfigError> {
    ENV_HELP
        .iter()
        .find(|(name, _, _)| *name == var)
        .map(|(_, default, _)| *default)
        .ok_or_else(|| bad(var, "has no default in ENV_HELP"))
}

/// The whole number in `var`, its `ENV_HELP` default when unset, refused outside `min..=max`.
fn num(get: &impl Fn(&str) -> Option<String>, var: &'static str, min: u64, max: u64) -> Result<u64, ConfigError> {
    let default = default_of(var)?;
    let default = default.parse().map_err(|_| bad(var, format!("default `{default}` is not a whole number")))?;
    parse_num(get, var, default, min, max)
}

/// The environment table printed by `aside --help` (name, default, meaning).
pub const ENV_HELP: &[(&str, &str, &str)] = &[
    ("DATABASE_URL", "sqlite://aside.db?mode=rwc", "postgres://user:pw@host:5432/db in real deployments"),
    ("DATABASE_POOLER", "auto", "auto, transaction (PgBouncer pool_mode=transaction) or none (Postgres itself)"),
    ("REDIS_URL", "(unset: in-process cache)", "redis://[:pw@]host:port/db, redis-sentinel://, redis-cluster://"),
    ("CACHE_TTL_SECONDS", "60", "TTL of every cache entry (>= 1)"),
    ("CACHE_ENABLED", "true", "false: every read goes to the database (X-Cache: BYPASS); writes still invalidate"),
    ("CACHE_TIMEOUT_MS", "100", "budget for one cache command before falling back to the database"),
    (
        "CACHE_KEY_PREFIX",
        "aside:v1:",
        "prefix of every cache key; move its version (aside:v2:) when a release changes the cached format, or give \
         deployments sharing one Redis their own",
    ),
    ("BIND_ADDR", "0.0.0.0:8080", "listen address"),
    ("METRICS_BIND_ADDR", "(unset: /metrics on BIND_ADDR)", "serve /metrics only on this address instead"),
    ("API_TOKEN", "(unset: writes open)", "bearer token required for POST/PUT/DELETE"),
    ("SHUTDOWN_DRAIN_SECONDS", "5", "after SIGTERM: /ready fails at once, serving continues this long"),
    ("MAX_BODY_BYTES", "1048576", "larger request bodies get 413"),
    ("LOG_FORMAT", "auto", "auto (text on a terminal, else json), json or text"),
    ("RUST_LOG", "info", "log filter (tracing EnvFilter syntax)"),
    (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "(unset: tracing off)",
        "OTLP http/protobuf collector base URL, e.g. http://otel-collector:4318",
    ),
    ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "(unset)", "full traces URL, used as given (wins over the base URL)"),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf", "the only protocol built in (also _TRACES_PROTOCOL)"),
    ("OTEL_EXPORTER_OTLP_HEADERS", "(unset)", "k=v,k2=v2 sent with every export, %-encoded (also _TRACES_HEADERS)"),
    ("OTEL_EXPORTER_OTLP_TIMEOUT", "10000", "ms one export may take (also _TRACES_TIMEOUT)"),
    ("OTEL_SERVICE_NAME", "aside", "service.name of every span"),
    ("OTEL_RESOURCE_ATTRIBUTES", "(unset)", "k=v,k2=v2 resource attributes, %-encoded"),
    (
        "OTEL_TRACES_SAMPLER",
        "parentbased_traceidratio",
        "always_on, always_off, traceidratio, parentbased_{always_on,always_off,traceidratio}",
    ),
    (
        "OTEL_TRACES_SAMPLER_ARG",
        "0.1",
        "sampling ratio 0..=1 for the *traceidratio samplers (1.0 when a ratio sampler is named without it)",
    ),
    (
        "OTEL_BSP_SCHEDULE_DELAY",
        "5000",
        "ms between span exports; OTEL_BSP_MAX_QUEUE_SIZE (2048) bounds memory, spans over it are dropped",
    ),
    ("OTEL_SDK_DISABLED", "false", "true: tracing off whatever else is set (so is OTEL_TRACES_EXPORTER=none)"),
];

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(&std::env::vars().collect())
    }

    /// Reads a given variable map (the tests use this; `from_env` passes the real environment).
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let get = |k: &str| vars.get(k).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());

        let or_default = |k: &'static str| get(k).map_or_else(|| default_of(k).map(str::to_owned), Ok);
        let database_url = or_default("DATABASE_URL")?;
        if !(database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://")
            || database_url.starts_with("sqlite:"))
        {
            return Err(bad("DATABASE_URL", "must start with postgres://, postgresql:// or sqlite:"));
        }
        if database_url.starts_with("postgres") && database_url.split_once("://").is_none_or(|(_, r)| r.is_empty()) {
            return Err(bad("DATABASE_URL", "has no host"));
        }

        let database_pooler = match or_default("DATABASE_POOLER")?.to_ascii_lowercase().as_str() {
            "auto" => DatabasePooler::Auto,
            "transaction" => DatabasePooler::Transaction,
            "none" => DatabasePooler::None,
            other => {
                return Err(bad("DATABASE_POOLER", format!("`{other}` is not auto, transaction or none")));
            }
        };

        let redis_url = get("REDIS_URL");
        if let Some(url) = &redis_url {
            let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or("");
            if !matches!(scheme, "redis" | "redis-sentinel" | "redis-cluster") {
                return Err(bad("REDIS_URL", "must start with redis://, redis-sentinel:// or redis-cluster://"));
            }
            // Parse with the same code the client will use, so start-up fails here, not on first use.
            fred::types::config::Config::from_url(url).map_err(|e| bad("REDIS_URL", e.details().to_string()))?;
        }

        let cache_ttl = Duration::from_secs(num(&get, "CACHE_TTL_SECONDS", 1, 86_400 * 30)?);
        let cache_enabled = match or_default("CACHE_ENABLED")?.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            other => return Err(bad("CACHE_ENABLED", format!("`{other}` is not true or false"))),
        };
        let cache_timeout = Duration::from_millis(num(&get, "CACHE_TIMEOUT_MS", 1, 10_000)?);
        let cache_prefix = or_default("CACHE_KEY_PREFIX")?;
        // Record keys carry a Redis Cluster hash tag ({rec:N}); braces in the prefix would become the tag.
        if cache_prefix.len() > 64
            || cache_prefix.chars().any(|c| c.is_whitespace() || c.is_control() || "{}".contains(c))
        {
            return Err(bad("CACHE_KEY_PREFIX", "must be at most 64 characters without whitespace or braces"));
        }
        let bind_addr =
            or_default("BIND_ADDR")?.parse().map_err(|_| bad("BIND_ADDR", "must be host:port, e.g. 0.0.0.0:8080"))?;
        let metrics_bind_addr = match get("METRICS_BIND_ADDR") {
            None => None,
            Some(raw) => {
                let addr: SocketAddr =
                    raw.parse().map_err(|_| bad("METRICS_BIND_ADDR", "must be host:port, e.g. 0.0.0.0:9091"))?;
                if addr == bind_addr && addr.port() != 0 {
                    return Err(bad("METRICS_BIND_ADDR", "must differ from BIND_ADDR"));
                }
                Some(addr)
            }
        };
        let api_token = get("API_TOKEN");
        if api_token.as_ref().is_some_and(|t| t.len() < 8 || t.chars().any(|c| c.is_whitespace())) {
            return Err(bad("API_TOKEN", "must be at least 8 characters without whitespace"));
        }
        let shutdown_drain = Duration::from_secs(num(&get, "SHUTDOWN_DRAIN_SECONDS", 0, 300)?);
        let max_body_bytes = num(&get, "MAX_BODY_BYTES", 64, 256 * 1_048_576)? as usize;
        let log_format = match or_default("LOG_FORMAT")?.as_str() {
            "auto" => LogFormat::Auto,
            "json" => LogFormat::Json,
            "text" => LogFormat::Text,
            other => return Err(bad("LOG_FORMAT", format!("`{other}` is not auto, json or text"))),
        };
        let traces = crate::traces::TraceConfig::from_vars(&get)?;

        Ok(Self {
            database_url,
            database_pooler,
            redis_url,
            cache_ttl,
            cache_enabled,
            cache_timeout,
            bind_addr,
            metrics_bind_addr,
            api_token,
            shutdown_drain,
            max_body_bytes,
            log_format,
            traces,
            cache_prefix,
        })
    }

    /// Which backend `database_url` points at.
    pub fn database_kind(&self) -> DatabaseKind {
        if self.database_url.starts_with("sqlite:") { DatabaseKind::Sqlite } else { DatabaseKind::Postgres }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_are_the_embedded_configuration() {
        let c = Config::from_vars(&vars(&[])).expect("defaults are valid");
        assert_eq!(c.database_kind(), DatabaseKind::Sqlite);
        assert!(c.redis_url.is_none());
        assert_eq!(c.cache_ttl, Duration::from_secs(60));
        assert_eq!(c.cache_timeout, Duration::from_millis(100));
        assert_eq!(c.bind_addr.port(), 8080);
        assert_eq!(c.max_body_bytes, 1_048_576);
        assert!(c.cache_enabled);
        assert_eq!(c.database_pooler, DatabasePooler::Auto);
        assert_eq!(c.cache_prefix, "aside:v1:");
        assert_eq!(c.shutdown_drain, Duration::from_secs(5));
        assert_eq!(c.database_url, "sqlite://aside.db?mode=rwc");
    }

    #[test]
    fn every_default_is_the_one_aside_help_prints() {
        // The defaults come from ENV_HELP; each one must also be a value the variable accepts.
        for (var, default, _) in ENV_HELP {
            if default.starts_with('(') || var.starts_with("OTEL_") || *var == "RUST_LOG" {
                continue; // "(unset: …)" is a description; OTEL_* and RUST_LOG are read elsewhere
            }
            let c = Config::from_vars(&vars(&[(var, default)])).unwrap_or_else(|e| panic!("{var}={default}: {e}"));
            assert_eq!(format!("{c:?}"), format!("{:?}", Config::from_vars(&vars(&[])).expect("defaults")), "{var}");
        }
    }

    #[test]
    fn the_cache_key_prefix_is_configurable() {
        let c = Config::from_vars(&vars(&[("CACHE_KEY_PREFIX", "shop-a:aside:v2:")])).expect("valid");
        assert_eq!(c.cache_prefix, "shop-a:aside:v2:");
    }

    #[test]
    fn database_pooler_takes_its_three_words() {
        for (raw, want) in [
            ("auto", DatabasePooler::Auto),
            ("transaction", DatabasePooler::Transaction),
            ("Transaction", DatabasePooler::Transaction),
            ("none", DatabasePooler::None),
        ] {
            let c = Config::from_vars(&vars(&[("DATABASE_POOLER", raw)])).expect(raw);
            assert_eq!(c.database_pooler, want, "{raw}");
        }
    }

    #[test]
    fn each_bad_value_names_its_variable() {
        for (var, val) in [
            ("CACHE_TTL_SECONDS", "0"),
            ("CACHE_TTL_SECONDS", "sixty"),
            ("CACHE_TIMEOUT_MS", "-1"),
            ("DATABASE_URL", "mysql://x"),
            ("REDIS_URL", "http://nope"),
            ("BIND_ADDR", "8080"),
            ("METRICS_BIND_ADDR", "9091"),
            ("CACHE_ENABLED", "maybe"),
            ("MAX_BODY_BYTES", "1"),
            ("LOG_FORMAT", "xml"),
            ("DATABASE_POOLER", "session"),
            ("API_TOKEN", "short"),
            ("CACHE_KEY_PREFIX", "has space:"),
            ("CACHE_KEY_PREFIX", "{tag}:"),
        ] {
            let err = Config::from_vars(&vars(&[(var, val)])).expect_err(var);
            assert_eq!(err.var, var, "{val}");
            assert!(err.to_string().contains(var));
        }
    }

    #[test]
    fn sentinel_and_cluster_redis_urls_are_accepted() {
        for url in [
            "redis://:pw@cache:6379/0",
            "redis-sentinel://:pw@s1:26379/0?node=s2:26379&sentinelServiceName=aside",
            "redis-cluster://:pw@c1:6379?node=c2:6379&node=c3:6379",
        ] {
            let c = Config::from_vars(&vars(&[("REDIS_URL", url)])).expect(url);
            assert_eq!(c.redis_url.as_deref(), Some(url));
        }
    }

    #[test]
    fn debug_output_hides_secrets() {
        let c =
            Config::from_vars(&vars(&[("API_TOKEN", "s3cret-token"), ("DATABASE_URL", "postgres://u:hunter2@db/x")]))
                .expect("valid");
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret") && !shown.contains("hunter2"), "{shown}");
    }
}

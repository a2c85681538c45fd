//! Metrics (contract: "Metrics"): OpenTelemetry instruments exported through opentelemetry-prometheus
//! into a private registry that `GET /metrics` encodes. Instrument names are the dotted OTel forms
//! without suffixes: the exporter appends `_total` and the unit (`_seconds`) itself, even when the name
//! already ends in them, and so gives the contract's names.

use std::sync::Arc;

use opentelemetry::{
    KeyValue,
    metrics::{Counter, Histogram, MeterProvider as _},
};
use opentelemetry_sdk::metrics::SdkMeterProvider;
use poem::{Response, handler, http::StatusCode, web::Data};
use prometheus::{Encoder, TextEncoder};

use crate::error::Problem;

/// Histogram buckets in seconds, fine-grained below a millisecond where cache hits live.
const LATENCY_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Handles to every instrument; cheap to clone.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

impl std::fmt::Debug for Metrics {
    // The span processor holds a handle (and must be Debug); the instruments have nothing to show.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

struct Inner {
    registry: prometheus::Registry,
    // Dropping the provider shuts the pipeline down; it lives as long as the app.
    _provider: SdkMeterProvider,
    http_duration: Histogram<f64>,
    cache_lookups: Counter<u64>,
    cache_errors: Counter<u64>,
    cache_invalidations: Counter<u64>,
    db_queries: Counter<u64>,
    records_created: Counter<u64>,
    spans_exported: Counter<u64>,
    spans_dropped: Counter<u64>,
}

impl Metrics {
    /// Builds the provider, the exporter and the instruments.
    pub fn new() -> Result<Self, opentelemetry_sdk::error::OTelSdkError> {
        let registry = prometheus::Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .without_target_info()
            .scope_info_enabled(false)
            .build()
            .map_err(|e| opentelemetry_sdk::error::OTelSdkError::InternalFailure(e.to_string()))?;
        let provider = SdkMeterProvider::builder().with_reader(exporter).build();
        let meter = provider.meter("aside");
        let m = Inner {
            http_duration: meter
                .f64_histogram("http.server.request.duration")
                .with_unit("s")
                .with_description("Duration of HTTP server requests.")
                .with_boundaries(LATENCY_BUCKETS.to_vec())
                .build(),
            cache_lookups: meter
                .u64_counter("aside.cache.lookups")
                .with_description("Cache lookups by data GETs, by outcome (matches X-Cache).")
                .build(),
            cache_errors: meter
                .u64_counter("aside.cache.errors")
                .with_description("Cache commands that failed or timed out.")
                .build(),
            cache_invalidations: meter
                .u64_counter("aside.cache.invalidations")
                .with_description("Cache invalidations issued by writes.")
                .build(),
            db_queries: meter
                .u64_counter("aside.db.queries")
                .with_description("Database queries, by operation.")
                .build(),
            records_created: meter.u64_counter("aside.records.created").with_description("Records created.").build(),
            spans_exported: meter
                .u64_counter("aside.traces.spans.exported")
                .with_description("Spans the OTLP collector accepted.")
                .build(),
            spans_dropped: meter
                .u64_counter("aside.traces.spans.dropped")
                .with_description("Spans lost, by reason: queue_full (export slower than spans end) or export_failed (collector down or refusing).")
                .build(),
            registry,
            _provider: provider,
        };
        // Export every series from the start so dashboards and alerts never see "no data".
        for outcome in ["hit", "miss", "bypass"] {
            m.cache_lookups.add(0, &[KeyValue::new("outcome", outcome)]);
        }
        for op in ["get", "list", "insert", "update", "delete"] {
            m.db_queries.add(0, &[KeyValue::new("op", op)]);
        }
        m.cache_errors.add(0, &[]);
        m.cache_invalidations.add(0, &[]);
        m.records_created.add(0, &[]);
        m.spans_exported.add(0, &[]);
        for reason in ["queue_full", "export_failed"] {
            m.spans_dropped.add(0, &[KeyValue::new("reason", reason)]);
        }
        Ok(Self(Arc::new(m)))
    }

    /// Records one HTTP request.
    pub fn http_request(&self, method: &poem::http::Method, route: &'static str, status: u16, seconds: f64) {
        // Static strings: no allocation per request; unknown methods are `_OTHER` (OTel semantic
        // conventions), so clients cannot mint new series.
        let method = method_name(method);
        self.0.http_duration.record(
            seconds,
            &[
                KeyValue::new("http.request.method", method),
                KeyValue::new("http.route", route),
                KeyValue::new("http.response.status_code", i64::from(status)),
            ],
        );
    }

    pub fn cache_lookup(&self, outcome: &'static str) {
        self.0.cache_lookups.add(1, &[KeyValue::new("outcome", outcome)]);
    }
    pub fn cache_error(&self) {
        self.0.cache_errors.add(1, &[]);
    }
    pub fn cache_invalidations(&self, n: u64) {
        self.0.cache_invalidations.add(n, &[]);
    }
    pub fn db_query(&self, op: &'static str) {
        self.0.db_queries.add(1, &[KeyValue::new("op", op)]);
    }
    pub fn record_created(&self) {
        self.0.records_created.add(1, &[]);
    }
    pub fn spans_exported(&self, n: u64) {
        self.0.spans_exported.add(n, &[]);
    }
    pub fn spans_dropped(&self, reason: &'static str, n: u64) {
        self.0.spans_dropped.add(n, &[KeyValue::new("reason", reason)]);
    }

    /// Test hook: registers a collector whose family has no name, so the real encoder fails on every
    /// later scrape (how `/metrics` answers an encoding failure is part of the contract).
    #[doc(hidden)]
    pub fn break_encoding(&self) -> Result<(), prometheus::Error> {
        self.0.registry.register(Box::new(Unencodable(prometheus::core::Desc::new(
            "aside_unencodable".into(),
            "a family the text encoder refuses".into(),
            vec![],
            Default::default(),
        )?)))
    }

    /// The Prometheus text exposition of every instrument.
    pub fn render(&self) -> Result<Vec<u8>, prometheus::Error> {
        let mut buf = Vec::with_capacity(8 * 1024);
        TextEncoder::new().encode(&self.0.registry.gather(), &mut buf)?;
        Ok(buf)
    }
}

struct Unencodable(prometheus::core::Desc);

impl prometheus::core::Collector for Unencodable {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        vec![&self.0]
    }
    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        // One metric (so `gather` keeps the family) and no name (so `encode` rejects it).
        let mut family = prometheus::proto::MetricFamily::default();
        family.mut_metric().push(prometheus::proto::Metric::default());
        vec![family]
    }
}

/// `GET /metrics`.
#[handler]
pub fn metrics_endpoint(metrics: Data<&Metrics>) -> Response {
    match metrics.render() {
        Ok(body) => Response::builder().content_type(TextEncoder::new().format_type()).body(body),
        Err(e) => {
            tracing::error!(error = %e, "metrics encoding failed");
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "metrics could not be encoded; the server log has details under this request's X-Request-ID",
            )
            .into_response()
        }
    }
}

/// Maps poem's matched route pattern to the contract's `http_route` label: templates spelled with
/// `{id}`, `unmatched` for no route, never a raw path (poem-openapi's pattern says `:param0`).
pub fn route_label(pattern: Option<&str>) -> &'static str {
    match pattern {
        Some("/data") => "/data",
        Some("/data/:param0") => "/data/{id}",
        Some("/health") => "/health",
        Some("/ready") => "/ready",
        Some("/metrics") => "/metrics",
        Some("/openapi.json") => "/openapi.json",
        Some(p) if p.starts_with("/docs") => "/docs",
        _ => "unmatched",
    }
}

/// The method as OpenTelemetry names it: the registered ones, else `_OTHER` (HTTP semantic conventions).
pub fn method_name(m: &poem::http::Method) -> &'static str {
    match *m {
        poem::http::Method::GET => "GET",
        poem::http::Method::POST => "POST",
        poem::http::Method::PUT => "PUT",
        poem::http::Method::DELETE => "DELETE",
        poem::http::Method::HEAD => "HEAD",
        poem::http::Method::OPTIONS => "OPTIONS",
        poem::http::Method::PATCH => "PATCH",
        poem::http::Method::TRACE => "TRACE",
        poem::http::Method::CONNECT => "CONNECT",
        _ => "_OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_templates_never_raw_paths() {
        assert_eq!(route_label(Some("/data/:param0")), "/data/{id}");
        assert_eq!(route_label(Some("")), "unmatched");
        assert_eq!(route_label(None), "unmatched");
        assert_eq!(route_label(Some("/data/42")), "unmatched");
    }

    #[test]
    fn exported_names_match_the_contract() {
        let m = Metrics::new().expect("metrics");
        m.http_request(&poem::http::Method::GET, "/data/{id}", 200, 0.001);
        let text = String::from_utf8(m.render().expect("render")).expect("utf8");
        for name in [
            "http_server_request_duration_seconds_bucket{http_request_method=\"GET\",http_response_status_code=\"200\",http_route=\"/data/{id}\"",
            "aside_cache_lookups_total{outcome=\"hit\"} 0",
            "aside_cache_errors_total 0",
            "aside_cache_invalidations_total 0",
            "aside_db_queries_total{op=\"get\"} 0",
            "aside_records_created_total 0",
            "aside_traces_spans_exported_total 0",
            "aside_traces_spans_dropped_total{reason=\"queue_full\"} 0",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
        assert!(!text.contains("_total_total") && !text.contains("otel_scope"), "{text}");
    }

    #[test]
    fn the_encoding_hook_makes_the_real_encoder_fail() {
        let m = Metrics::new().expect("metrics");
        m.break_encoding().expect("registered");
        assert!(m.render().is_err());
    }
}

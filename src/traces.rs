//! Distributed traces (contract: "Traces"; DESIGN.md, "Traces"): OpenTelemetry spans exported over
//! OTLP http/protobuf, configured by the standard `OTEL_*` variables, W3C trace context in and out.
//!
//! Off unless an OTLP endpoint is set, and then at no cost on the request path: every hook below first
//! reads one process-wide flag that only a started tracer sets. When on, `Observe` opens the server
//! span and runs the request with its `Context` as the current one (`FutureExt::with_context`); the
//! cache and the store open their child spans from whatever context is current, so nothing is passed
//! down the call chain. The tracer itself rides in that context, so apps in one process (the tests)
//! each keep their own.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use opentelemetry::{
    Context, KeyValue,
    propagation::{Extractor, TextMapPropagator},
    trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _},
};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    propagation::TraceContextPropagator,
    resource::TelemetryResourceDetector,
    trace::{
        BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider, SpanData, SpanExporter,
        SpanProcessor,
    },
};
use poem::http::{HeaderMap, HeaderName, HeaderValue};

use crate::{
    env::{ConfigError, bad, parse_num},
    metrics::Metrics,
};

/// Set once any tracer has started: until then every hook is one relaxed load and a branch.
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// How root spans (and, for the `parentbased_*` ones, spans with a remote parent) are sampled.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SamplerConfig {
    AlwaysOn,
    AlwaysOff,
    TraceIdRatio(f64),
    ParentBasedAlwaysOn,
    ParentBasedAlwaysOff,
    ParentBasedTraceIdRatio(f64),
}

/// The sampler when `OTEL_TRACES_SAMPLER` is unset: `parentbased_traceidratio` at this ratio (or at
/// `OTEL_TRACES_SAMPLER_ARG`). Why 0.1: DESIGN.md, "Traces".
pub const DEFAULT_RATIO: f64 = 0.1;

impl SamplerConfig {
    fn sampler(self) -> Sampler {
        match self {
            Self::AlwaysOn => Sampler::AlwaysOn,
            Self::AlwaysOff => Sampler::AlwaysOff,
            Self::TraceIdRatio(r) => Sampler::TraceIdRatioBased(r),
            Self::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
            Self::ParentBasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
            Self::ParentBasedTraceIdRatio(r) => Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(r))),
        }
    }
}

/// The validated trace configuration; `None` in `Config` when tracing is off.
#[derive(Clone)]
pub struct TraceConfig {
    /// The full URL spans are POSTed to (`…/v1/traces`).
    pub endpoint: String,
    /// Sent with every export (`OTEL_EXPORTER_OTLP_HEADERS`): often a credential, so never logged.
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    pub service_name: String,
    pub resource: Vec<(String, String)>,
    pub sampler: SamplerConfig,
    pub schedule_delay: Duration,
    pub max_queue_size: usize,
    pub max_export_batch_size: usize,
}

impl std::fmt::Debug for TraceConfig {
    // Headers carry credentials and the endpoint may carry a password: neither reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceConfig")
            .field("service_name", &self.service_name)
            .field("sampler", &self.sampler)
            .field("headers", &self.headers.len())
            .field("timeout", &self.timeout)
            .field("schedule_delay", &self.schedule_delay)
            .field("max_queue_size", &self.max_queue_size)
            .finish()
    }
}

/// `%XX` escapes (the W3C baggage encoding `OTEL_EXPORTER_OTLP_HEADERS` and `OTEL_RESOURCE_ATTRIBUTES`
/// use for their values).
fn percent_decode(s: &str) -> Option<String> {
    let (bytes, mut out, mut i) = (s.as_bytes(), Vec::with_capacity(s.len()), 0);
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `key1=value1,key2=value2` with percent-encoded values; empty members are skipped.
fn parse_pairs(var: &'static str, raw: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let mut pairs = Vec::new();
    for member in raw.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        let (k, v) = member.split_once('=').ok_or_else(|| bad(var, format!("`{member}` is not key=value")))?;
        let k = k.trim();
        if k.is_empty() {
            return Err(bad(var, format!("`{member}` has an empty key")));
        }
        let v = percent_decode(v.trim()).ok_or_else(|| bad(var, format!("the value of `{k}` has a bad %-escape")))?;
        pairs.push((k.to_owned(), v));
    }
    Ok(pairs)
}

impl TraceConfig {
    /// Reads the standard variables; `Ok(None)` = tracing off (no endpoint, `OTEL_SDK_DISABLED=true`
    /// or `OTEL_TRACES_EXPORTER=none`). Everything is checked even then, so a typo never waits for the
    /// day someone sets the endpoint.
    pub fn from_vars(get: &impl Fn(&str) -> Option<String>) -> Result<Option<Self>, ConfigError> {
        let disabled = match get("OTEL_SDK_DISABLED").as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => return Err(bad("OTEL_SDK_DISABLED", format!("`{other}` is not true or false"))),
        };
        let exporter_none = match get("OTEL_TRACES_EXPORTER").as_deref() {
            None | Some("otlp") => false,
            Some("none") => true,
            Some(other) => {
                return Err(bad(
                    "OTEL_TRACES_EXPORTER",
                    format!("`{other}` is not otlp or none (the only exporter built in)"),
                ));
            }
        };
        for var in ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"] {
            match get(var).as_deref() {
                None | Some("http/protobuf") => {}
                Some(p @ ("grpc" | "http/json")) => {
                    return Err(bad(
                        var,
                        format!("`{p}` is not built in: use http/protobuf (the collector's port 4318)"),
                    ));
                }
                Some(other) => return Err(bad(var, format!("`{other}` is not http/protobuf"))),
            }
        }
        let endpoint = match (get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), get("OTEL_EXPORTER_OTLP_ENDPOINT")) {
            // The per-signal URL is used as given; the base URL gets the signal's path (OTLP spec).
            (Some(url), _) => Some(("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url)),
            (None, Some(base)) => {
                Some(("OTEL_EXPORTER_OTLP_ENDPOINT", format!("{}/v1/traces", base.trim_end_matches('/'))))
            }
            (None, None) => None,
        };
        if let Some((var, url)) = &endpoint {
            let rest = url.strip_prefix("http://").ok_or_else(|| {
                if url.starts_with("https://") {
                    bad(var, "https is not built in: send to a collector over http:// (in-cluster or a local agent)")
                } else {
                    bad(var, "must start with http://, e.g. http://otel-collector:4318")
                }
            })?;
            let host = rest.split(['/', '?']).next().unwrap_or("");
            if host.is_empty() || url.parse::<poem::http::Uri>().is_err() {
                return Err(bad(var, "is not a URL with a host, e.g. http://otel-collector:4318"));
            }
        }
        let headers_var = if get("OTEL_EXPORTER_OTLP_TRACES_HEADERS").is_some() {
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS"
        } else {
            "OTEL_EXPORTER_OTLP_HEADERS"
        };
        let headers = parse_pairs(headers_var, &get(headers_var).unwrap_or_default())?;
        for (k, v) in &headers {
            if HeaderName::from_bytes(k.as_bytes()).is_err() || HeaderValue::from_str(v).is_err() {
                return Err(bad(headers_var, format!("`{k}` is not a valid HTTP header")));
            }
        }
        let timeout_var = if get("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT").is_some() {
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"
        } else {
            "OTEL_EXPORTER_OTLP_TIMEOUT"
        };
        let timeout = Duration::from_millis(parse_num(get, timeout_var, 10_000, 1, 60_000)?);
        let resource = parse_pairs("OTEL_RESOURCE_ATTRIBUTES", &get("OTEL_RESOURCE_ATTRIBUTES").unwrap_or_default())?;
        // OTEL_SERVICE_NAME wins over a service.name in OTEL_RESOURCE_ATTRIBUTES (SDK spec).
        let service_name = get("OTEL_SERVICE_NAME")
            .or_else(|| resource.iter().find(|(k, _)| k == "service.name").map(|(_, v)| v.clone()))
            .unwrap_or_else(|| "aside".into());
        let sampler = parse_sampler(get)?;
        let schedule_delay = Duration::from_millis(parse_num(get, "OTEL_BSP_SCHEDULE_DELAY", 5_000, 1, 600_000)?);
        let max_queue_size = parse_num(get, "OTEL_BSP_MAX_QUEUE_SIZE", 2_048, 1, 1_000_000)? as usize;
        let max_export_batch_size = parse_num(get, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512, 1, 1_000_000)? as usize;
        if max_export_batch_size > max_queue_size {
            return Err(bad("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "must not exceed OTEL_BSP_MAX_QUEUE_SIZE"));
        }
        let Some((_, endpoint)) = endpoint.filter(|_| !disabled && !exporter_none) else { return Ok(None) };
        Ok(Some(Self {
            endpoint,
            headers,
            timeout,
            service_name,
            resource,
            sampler,
            schedule_delay,
            max_queue_size,
            max_export_batch_size,
        }))
    }
}

fn parse_sampler(get: &impl Fn(&str) -> Option<String>) -> Result<SamplerConfig, ConfigError> {
    let arg = get("OTEL_TRACES_SAMPLER_ARG");
    let ratio = |default: f64| -> Result<f64, ConfigError> {
        let Some(raw) = &arg else { return Ok(default) };
        match raw.parse::<f64>() {
            Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
            _ => Err(bad("OTEL_TRACES_SAMPLER_ARG", format!("`{raw}` is not a ratio in 0..=1"))),
        }
    };
    Ok(match get("OTEL_TRACES_SAMPLER").as_deref() {
        None => SamplerConfig::ParentBasedTraceIdRatio(ratio(DEFAULT_RATIO)?),
        Some("always_on") => SamplerConfig::AlwaysOn,
        Some("always_off") => SamplerConfig::AlwaysOff,
        // A ratio sampler named without an argument samples everything (SDK spec).
        Some("traceidratio") => SamplerConfig::TraceIdRatio(ratio(1.0)?),
        Some("parentbased_always_on") => SamplerConfig::ParentBasedAlwaysOn,
        Some("parentbased_always_off") => SamplerConfig::ParentBasedAlwaysOff,
        Some("parentbased_traceidratio") => SamplerConfig::ParentBasedTraceIdRatio(ratio(1.0)?),
        Some(other) => {
            return Err(bad(
                "OTEL_TRACES_SAMPLER",
                format!(
                    "`{other}` is not always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio"
                ),
            ));
        }
    })
}

/// The tracer of the app a request belongs to, carried in the request's `Context`.
#[derive(Clone, Debug)]
struct AppTracer(SdkTracer);

/// A started tracer: the provider (batch export on its own thread) and what the request path needs.
pub struct Traces {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
}

impl Traces {
    /// Builds the exporter and the provider. Nothing connects yet: a collector that is down at start-up
    /// only costs dropped spans, counted in `aside_traces_spans_dropped_total`.
    pub fn start(config: &TraceConfig, metrics: &Metrics) -> Result<Arc<Self>, String> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(config.endpoint.clone())
            .with_timeout(config.timeout)
            .with_headers(config.headers.iter().cloned().collect::<HashMap<_, _>>())
            .build()
            .map_err(|e| format!("OTLP exporter: {e}"))?;
        let queued = Arc::new(AtomicUsize::new(0));
        let batch =
            BatchSpanProcessor::builder(Counted { inner: exporter, queued: queued.clone(), metrics: metrics.clone() })
                .with_batch_config(
                    BatchConfigBuilder::default()
                        .with_max_queue_size(config.max_queue_size)
                        .with_max_export_batch_size(config.max_export_batch_size)
                        .with_scheduled_delay(config.schedule_delay)
                        .build(),
                )
                .build();
        let processor = Bounded { inner: batch, queued, cap: config.max_queue_size, metrics: metrics.clone() };
        let resource = Resource::builder_empty()
            .with_detector(Box::new(TelemetryResourceDetector))
            .with_attributes(config.resource.iter().map(|(k, v)| KeyValue::new(k.clone(), v.clone())))
            .with_service_name(config.service_name.clone())
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(config.sampler.sampler())
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("aside");
        ACTIVE.store(true, Ordering::Release);
        Ok(Arc::new(Self { provider, tracer, propagator: TraceContextPropagator::new() }))
    }

    /// Opens the server span of a request, continuing the caller's `traceparent`/`tracestate` when sent
    /// and valid. The returned context is the request's current context while it is handled.
    pub fn server_span(&self, headers: &HeaderMap, method: &'static str, path: &str, request_id: &str) -> Context {
        let parent = self.propagator.extract(&Headers(headers));
        // Name and attributes cost allocations, so they are only built for a span that records (most
        // are not, at the default ratio); the sampler needs neither.
        let mut span =
            self.tracer.span_builder(method).with_kind(SpanKind::Server).start_with_context(&self.tracer, &parent);
        if span.is_recording() {
            span.set_attributes([
                KeyValue::new("http.request.method", method),
                KeyValue::new("url.path", path.to_owned()),
                KeyValue::new("url.scheme", "http"),
                KeyValue::new("aside.request_id", request_id.to_owned()),
            ]);
        }
        parent.with_span(span).with_value(AppTracer(self.tracer.clone()))
    }

    /// Closes the server span: route, status and cache outcome; a 5xx marks it failed. Writes
    /// `traceparent` (and `tracestate`) into the response so the client can find the trace.
    pub fn finish_server_span(
        &self,
        cx: &Context,
        method: &str,
        route: &'static str,
        status: u16,
        headers: &mut HeaderMap,
    ) {
        let span = cx.span();
        if span.is_recording() {
            let matched = route != "unmatched";
            // HTTP semantic conventions: `{method} {route}`, the method alone without a route, `HTTP` for
            // a method outside the registered set.
            let method = if method == "_OTHER" { "HTTP" } else { method };
            span.update_name(if matched { format!("{method} {route}") } else { method.to_owned() });
            if matched {
                span.set_attribute(KeyValue::new("http.route", route));
            }
            span.set_attribute(KeyValue::new("http.response.status_code", i64::from(status)));
            if let Some(outcome) = headers.get("x-cache").and_then(|v| v.to_str().ok()) {
                span.set_attribute(KeyValue::new("aside.cache.outcome", outcome.to_ascii_lowercase()));
            }
            // Server spans fail on 5xx only; a 4xx is the client's mistake (HTTP semantic conventions).
            if status >= 500 {
                let reason = poem::http::StatusCode::from_u16(status)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("server error");
                span.set_attribute(KeyValue::new("error.type", status.to_string()));
                span.set_status(Status::error(reason));
            }
        }
        // `traceparent` written by hand: the propagator's `format!` of the ids was most of the cost of an
        // unsampled request (callgrind).
        let sc = span.span_context();
        if sc.is_valid() {
            let mut tp = [0u8; 55];
            tp[..3].copy_from_slice(b"00-");
            push_hex(&mut tp[3..35], &sc.trace_id().to_bytes());
            tp[35] = b'-';
            push_hex(&mut tp[36..52], &sc.span_id().to_bytes());
            tp[52] = b'-';
            push_hex(&mut tp[53..55], &[sc.trace_flags().to_u8()]);
            if let Ok(v) = HeaderValue::from_bytes(&tp) {
                headers.insert(TRACEPARENT, v);
            }
            let state = sc.trace_state().header();
            if !state.is_empty()
                && let Ok(v) = HeaderValue::from_str(&state)
            {
                headers.insert(TRACESTATE, v);
            }
        }
        span.end();
    }

    /// Exports every finished span now (blocking; tests and shutdown).
    pub fn flush(&self) -> OTelSdkResult {
        self.provider.force_flush()
    }

    /// Exports what is queued, waiting at most `timeout` for the collector, then stops the exporter.
    pub fn shutdown(&self, timeout: Duration) -> OTelSdkResult {
        self.provider.shutdown_with_timeout(timeout)
    }
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Lower-case hex of `bytes` into `out` (twice as long).
fn push_hex(out: &mut [u8], bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 15)];
    }
}

/// The request's context when it is traced (for work it hands to another task); None when tracing is
/// off, at the cost of one load.
pub fn current() -> Option<Context> {
    if !ACTIVE.load(Ordering::Relaxed) {
        return None;
    }
    let cx = Context::current();
    cx.get::<AppTracer>().is_some().then_some(cx)
}

/// The trace id of the running request as 32 hex digits, for its log lines.
pub fn current_trace_id() -> Option<String> {
    if !ACTIVE.load(Ordering::Relaxed) {
        return None;
    }
    Context::map_current(trace_id_of)
}

/// The trace id of `cx` as 32 hex digits, when it has a valid span.
pub fn trace_id_of(cx: &Context) -> Option<String> {
    let span = cx.span();
    let sc = span.span_context();
    if !sc.is_valid() {
        return None;
    }
    let mut hex = [0u8; 32];
    push_hex(&mut hex, &sc.trace_id().to_bytes());
    // Hex digits are ASCII.
    Some(String::from_utf8_lossy(&hex).into_owned())
}

/// A child span of the running request's server span (ends when dropped); see [`child`].
/// Boxed: an SDK span is hundreds of bytes, and an `Option<ChildSpan>` lives in every statement's and
/// cache call's future (traced or not); one more allocation only when a span is actually recorded.
pub struct ChildSpan(Box<opentelemetry_sdk::trace::Span>);

impl ChildSpan {
    pub fn set(&mut self, kv: KeyValue) {
        self.0.set_attribute(kv);
    }
    /// A handle for another task that works for this span's request (the insert workers).
    pub fn joined(&self) -> Joined {
        let trace = Context::map_current(|cx| cx.span().span_context().clone());
        Joined { logs: Context::new().with_remote_span_context(trace), rows: Arc::new(AtomicUsize::new(0)) }
    }
    /// Records on this span how many rows the grouped statement it joined carried.
    pub fn note_rows(&mut self, joined: &Joined) {
        let rows = joined.rows.load(Ordering::Acquire);
        if rows > 0 {
            self.set(KeyValue::new("aside.db.batch.rows", rows as i64));
        }
    }
    /// Marks the span failed. `what` must be a fixed description, never a value from a request or an
    /// error message (those can carry keys, SQL values or credentials).
    pub fn fail(&mut self, what: &'static str) {
        self.0.set_attribute(KeyValue::new("error.type", what));
        self.0.set_status(Status::error(what));
    }
}

/// What a worker task gets of a traced request: a context for its log lines (the trace id, and no
/// tracer, so it opens no spans of its own) and where to note the size of the batch it ran.
#[derive(Clone)]
pub struct Joined {
    logs: Context,
    rows: Arc<AtomicUsize>,
}

impl Joined {
    pub fn note_batch(&self, rows: usize) {
        self.rows.store(rows, Ordering::Release);
    }
    /// The context to run the worker's part of this request in (its log lines carry the trace id).
    pub fn context(&self) -> Context {
        self.logs.clone()
    }
}

/// Opens a child span of the running request's span, when the request is traced and sampled; `attrs`
/// is only called then. With tracing off this is one load and a branch.
pub fn child(name: &'static str, kind: SpanKind, attrs: impl FnOnce() -> Vec<KeyValue>) -> Option<ChildSpan> {
    if !ACTIVE.load(Ordering::Relaxed) {
        return None;
    }
    Context::map_current(|cx| {
        let tracer = &cx.get::<AppTracer>()?.0;
        if !cx.span().is_recording() {
            return None;
        }
        let span = tracer.span_builder(name).with_kind(kind).with_attributes(attrs()).start_with_context(tracer, cx);
        Some(ChildSpan(Box::new(span)))
    })
}

/// Records on the running request's span what went wrong (an `exception` event): `kind` names the
/// failure class, never its message (DESIGN.md, "Traces": no secrets in spans).
pub fn record_failure(kind: impl FnOnce() -> &'static str) {
    if !ACTIVE.load(Ordering::Relaxed) {
        return;
    }
    Context::map_current(|cx| {
        let span = cx.span();
        if span.is_recording() {
            span.add_event("exception", vec![KeyValue::new("exception.type", kind())]);
        }
    });
}

/// Forwards to the batch processor unless its queue is full, and counts what it turns away: the
/// SDK's own processor drops silently (its count is private), so this one keeps the queue bound
/// itself. `queued` counts spans handed on and not yet through an export attempt.
#[derive(Debug)]
struct Bounded {
    inner: BatchSpanProcessor,
    queued: Arc<AtomicUsize>,
    cap: usize,
    metrics: Metrics,
}

impl SpanProcessor for Bounded {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }
    fn on_end(&self, span: SpanData) {
        // Never blocks: a full queue (a slow or dead collector) drops the span instead.
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.cap {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            self.metrics.spans_dropped("queue_full", 1);
            return;
        }
        self.inner.on_end(span);
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }
    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The OTLP exporter, counting what each export attempt delivered or lost.
#[derive(Debug)]
struct Counted<E> {
    inner: E,
    queued: Arc<AtomicUsize>,
    metrics: Metrics,
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        let result = self.inner.export(batch).await;
        self.queued.fetch_sub(n, Ordering::AcqRel);
        match &result {
            Ok(()) => self.metrics.spans_exported(n as u64),
            Err(_) => self.metrics.spans_dropped("export_failed", n as u64),
        }
        result
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }
    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(pairs: &[(&str, &str)]) -> Result<Option<TraceConfig>, ConfigError> {
        let vars: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        TraceConfig::from_vars(&|k: &str| vars.get(k).cloned())
    }

    const EP: (&str, &str) = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/");

    #[test]
    fn ids_are_lower_case_hex() {
        let mut out = [0u8; 6];
        push_hex(&mut out, &[0x0a, 0xf0, 0x01]);
        assert_eq!(&out, b"0af001");
    }

    #[test]
    fn no_endpoint_means_off_and_the_base_url_gets_the_traces_path() {
        assert!(from(&[]).expect("valid").is_none());
        assert!(from(&[EP, ("OTEL_SDK_DISABLED", "true")]).expect("valid").is_none());
        assert!(from(&[EP, ("OTEL_TRACES_EXPORTER", "none")]).expect("valid").is_none());
        let c = from(&[EP]).expect("valid").expect("on");
        assert_eq!(c.endpoint, "http://collector:4318/v1/traces");
        assert_eq!(c.service_name, "aside");
        assert_eq!(c.sampler, SamplerConfig::ParentBasedTraceIdRatio(DEFAULT_RATIO));
        let c = from(&[EP, ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://other:4318/custom")]).expect("valid");
        assert_eq!(c.expect("on").endpoint, "http://other:4318/custom", "the per-signal URL is used as given");
    }

    #[test]
    fn samplers_follow_the_sdk_spec() {
        let s = |name: &str, arg: Option<&str>| {
            let mut v = vec![EP, ("OTEL_TRACES_SAMPLER", name)];
            if let Some(a) = arg {
                v.push(("OTEL_TRACES_SAMPLER_ARG", a));
            }
            from(&v).map(|c| c.expect("on").sampler)
        };
        assert_eq!(s("always_on", None).expect("ok"), SamplerConfig::AlwaysOn);
        assert_eq!(s("always_off", Some("junk-is-ignored-by-non-ratio")).expect("ok"), SamplerConfig::AlwaysOff);
        assert_eq!(s("traceidratio", Some("0.25")).expect("ok"), SamplerConfig::TraceIdRatio(0.25));
        assert_eq!(s("traceidratio", None).expect("ok"), SamplerConfig::TraceIdRatio(1.0));
        assert_eq!(s("parentbased_always_on", None).expect("ok"), SamplerConfig::ParentBasedAlwaysOn);
        assert_eq!(s("parentbased_always_off", None).expect("ok"), SamplerConfig::ParentBasedAlwaysOff);
        assert_eq!(s("parentbased_traceidratio", Some("0")).expect("ok"), SamplerConfig::ParentBasedTraceIdRatio(0.0));
        assert_eq!(
            from(&[EP, ("OTEL_TRACES_SAMPLER_ARG", "0.5")]).expect("ok").expect("on").sampler,
            SamplerConfig::ParentBasedTraceIdRatio(0.5)
        );
        assert_eq!(s("traceidratio", Some("1.5")).expect_err("out of range").var, "OTEL_TRACES_SAMPLER_ARG");
        assert_eq!(s("jaeger_remote", None).expect_err("not built in").var, "OTEL_TRACES_SAMPLER");
    }

    #[test]
    fn each_bad_value_names_its_variable_even_with_tracing_off() {
        for (var, val) in [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4318"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "ftp://x"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "thrift"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "novalue"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "bad header=1"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s"),
            ("OTEL_RESOURCE_ATTRIBUTES", "a=%zz"),
            ("OTEL_TRACES_SAMPLER", "sometimes"),
            ("OTEL_SDK_DISABLED", "maybe"),
            ("OTEL_TRACES_EXPORTER", "jaeger"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "0"),
        ] {
            let err = from(&[(var, val)]).expect_err(var);
            assert_eq!(err.var, var, "{val}");
        }
    }

    #[test]
    fn headers_and_resource_attributes_are_decoded_and_service_name_wins() {
        let c = from(&[
            EP,
            ("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20s3cret, x-tenant=a"),
            ("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attrs,deployment.environment.name=dev%2C1"),
        ])
        .expect("valid")
        .expect("on");
        assert_eq!(c.headers, vec![("authorization".into(), "Bearer s3cret".into()), ("x-tenant".into(), "a".into())]);
        assert_eq!(c.service_name, "from-attrs", "service.name from OTEL_RESOURCE_ATTRIBUTES");
        assert!(c.resource.contains(&("deployment.environment.name".into(), "dev,1".into())));
        assert!(!format!("{c:?}").contains("s3cret"), "headers never reach a log line");
        let c = from(&[EP, ("OTEL_SERVICE_NAME", "svc"), ("OTEL_RESOURCE_ATTRIBUTES", "service.name=x")]).expect("ok");
        assert_eq!(c.expect("on").service_name, "svc");
    }
}

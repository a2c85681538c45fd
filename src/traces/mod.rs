//! Distributed traces (contract: "Traces"; DESIGN.md, "Traces"): OpenTelemetry spans exported over
//! OTLP http/protobuf, configured by the standard `OTEL_*` variables, W3C trace context in and out.
//!
//! Off unless an OTLP endpoint is set, and then at no cost on the request path: every hook (`spans`)
//! first reads one process-wide flag that only a started tracer sets. When on, `Observe` opens the server
//! span and runs the request with its `Context` as the current one (`FutureExt::with_context`); the
//! cache and the store open their child spans from whatever context is current, so nothing is passed
//! down the call chain. The tracer itself rides in that context, so apps in one process (the tests)
//! each keep their own.
//!
//! This file holds the tracer (`Traces`: start, the server span, flush, shutdown) and the public names;
//! `config` reads the `OTEL_*` variables, `spans` holds the request-path hooks (child spans, the current
//! trace), `export` the counting wrappers of the export pipeline. Imports run one way: this file uses the
//! three, they use none of it nor each other.

mod config;
mod export;
mod spans;

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
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
    trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider},
};
use poem::http::{HeaderMap, HeaderName, HeaderValue};

pub use config::{DEFAULT_RATIO, SamplerConfig, TraceConfig};
use export::{Bounded, Counted};
use spans::{ACTIVE, AppTracer, push_hex};
pub use spans::{ChildSpan, Joined, child, current, current_trace_id, record_failure, trace_id_of};

use crate::metrics::Metrics;

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

//! The export pipeline's two wrappers, which turn the SDK's silent span losses into the
//! `aside_traces_spans_*` counters: `Bounded` keeps the batch queue's bound itself (and counts what it
//! turns away), `Counted` counts what each export attempt delivered or lost. Separate from the tracer
//! because they only plug into the provider `Traces::start` builds; nothing on the request path uses them.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use opentelemetry::Context;
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    trace::{BatchSpanProcessor, SpanData, SpanExporter, SpanProcessor},
};

use crate::metrics::Metrics;

/// Forwards to the batch processor unless its queue is full, and counts what it turns away: the
/// SDK's own processor drops silently (its count is private), so this one keeps the queue bound
/// itself. `queued` counts spans handed on and not yet through an export attempt.
#[derive(Debug)]
pub(super) struct Bounded {
    pub(super) inner: BatchSpanProcessor,
    pub(super) queued: Arc<AtomicUsize>,
    pub(super) cap: usize,
    pub(super) metrics: Metrics,
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
pub(super) struct Counted<E> {
    pub(super) inner: E,
    pub(super) queued: Arc<AtomicUsize>,
    pub(super) metrics: Metrics,
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

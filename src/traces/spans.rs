//! Child spans and the current trace, as the request path sees them: every hook here first reads
//! `ACTIVE`, one process-wide flag that only a started tracer sets, so with tracing off each costs a
//! load and a branch. Separate from the tracer (`mod.rs`) because these are what the cache, the store
//! and the log lines call on every request; they find the tracer in the current `Context`.

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicUsize, Ordering},
};

use opentelemetry::{
    Context, KeyValue,
    trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _},
};
use opentelemetry_sdk::trace::SdkTracer;

/// Set once any tracer has started: until then every hook is one relaxed load and a branch.
pub(super) static ACTIVE: AtomicBool = AtomicBool::new(false);

/// The tracer of the app a request belongs to, carried in the request's `Context`.
#[derive(Clone, Debug)]
pub(super) struct AppTracer(pub(super) SdkTracer);

/// Lower-case hex of `bytes` into `out` (twice as long).
pub(super) fn push_hex(out: &mut [u8], bytes: &[u8]) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_lower_case_hex() {
        let mut out = [0u8; 6];
        push_hex(&mut out, &[0x0a, 0xf0, 0x01]);
        assert_eq!(&out, b"0af001");
    }
}

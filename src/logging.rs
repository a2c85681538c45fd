//! Structured logs to stdout (contract: "Configuration" `LOG_FORMAT`/`RUST_LOG`, "Headers": the request
//! id in every log line of a request). One JSON object per line, written by a small formatter of our
//! own, or tracing-subscriber's human-readable line with `request_id=…` appended (`LOG_FORMAT=auto`
//! picks text on a terminal, JSON otherwise). The request id comes from a task-local set by the
//! `Observe` middleware, so no tracing span is created per request (tracing-subscriber's JSON span
//! support re-parses span fields on every event — about 8 % of a cache hit's CPU when we profiled it);
//! work done for a request in another task re-enters it with `with_request_id`/`in_request`. Lines are
//! batched before they reach stdout.

use std::{
    fmt::{self, Write as _},
    future::Future,
    io::{IsTerminal, Write},
    sync::{Arc, Mutex},
};

use chrono::Utc;
use tracing::{Event, Subscriber, field::Field};
use tracing_subscriber::{
    EnvFilter,
    fmt::{
        FmtContext, FormatEvent, FormatFields,
        format::{Format, Writer},
    },
    registry::LookupSpan,
};

use crate::config::LogFormat;

tokio::task_local! {
    static REQUEST_ID: Arc<str>;
}

/// Runs `fut` with `id` as the request id of every line it logs.
pub async fn with_request_id<F: Future>(id: Arc<str>, fut: F) -> F::Output {
    REQUEST_ID.scope(id, fut).await
}

/// The request id of the running task, to carry it into tasks the request spawns.
pub fn current_request_id() -> Option<Arc<str>> {
    REQUEST_ID.try_with(Arc::clone).ok()
}

/// Runs `f` with `id` (when there is one) as the request id of every line it logs: for work another
/// task does on a request's behalf, such as the grouped-insert workers.
pub fn in_request<R>(id: Option<&Arc<str>>, f: impl FnOnce() -> R) -> R {
    match id {
        Some(id) => REQUEST_ID.sync_scope(id.clone(), f),
        None => f(),
    }
}

/// The async form of `in_request`.
pub async fn in_request_async<F: Future>(id: Option<&Arc<str>>, fut: F) -> F::Output {
    match id {
        Some(id) => REQUEST_ID.scope(id.clone(), fut).await,
        None => fut.await,
    }
}

impl LogFormat {
    /// `auto` becomes text on a terminal (a person is reading) and JSON otherwise (a collector is).
    pub fn resolve(self, stdout_is_terminal: bool) -> LogFormat {
        match self {
            LogFormat::Auto if stdout_is_terminal => LogFormat::Text,
            LogFormat::Auto => LogFormat::Json,
            other => other,
        }
    }

    /// The format this process writes in: `auto` resolved against the real stdout.
    pub fn for_this_stdout(self) -> LogFormat {
        self.resolve(std::io::stdout().is_terminal())
    }
}

/// Installs the global subscriber; later calls (tests) are no-ops. Keep the returned guard alive until
/// exit: dropping it flushes the log buffer.
pub fn init(format: LogFormat) -> Option<LogFlushGuard> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(|| BatchedStdout);
    let format = format.for_this_stdout();
    let installed = match format {
        LogFormat::Json => builder.event_format(JsonLine).try_init(),
        LogFormat::Text | LogFormat::Auto => {
            builder.with_ansi(false).event_format(TextLine(Format::default())).try_init()
        }
    };
    installed.ok()?;
    JSON_ACCESS_LOG.store(format == LogFormat::Json, std::sync::atomic::Ordering::Relaxed);
    // Lines wait at most this long in the buffer when traffic is too light to fill it.
    std::thread::Builder::new()
        .name("log-flush".into())
        .spawn(|| {
            loop {
                std::thread::sleep(std::time::Duration::from_millis(200));
                flush_logs();
            }
        })
        .ok()?;
    Some(LogFlushGuard)
}

/// Set once the JSON subscriber is installed: access lines then skip tracing's dispatch and field
/// visitors and are formatted straight into the log buffer (the same line `JsonLine` would write).
static JSON_ACCESS_LOG: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

thread_local! {
    static ACCESS_LINE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// The access log line of one request (target `aside::telemetry`, level INFO, message `request`).
pub fn access(request_id: &str, trace_id: Option<&str>, method: &str, route: &str, status: u16, latency_ms: f64) {
    if !tracing::enabled!(target: "aside::telemetry", tracing::Level::INFO) {
        return;
    }
    if !JSON_ACCESS_LOG.load(std::sync::atomic::Ordering::Relaxed) {
        match trace_id {
            None => {
                tracing::info!(target: "aside::telemetry", request_id, method, route, status, latency_ms, "request")
            }
            Some(trace_id) => tracing::info!(
                target: "aside::telemetry", request_id, trace_id, method, route, status, latency_ms, "request"
            ),
        }
        return;
    }
    ACCESS_LINE.with_borrow_mut(|line| {
        line.clear();
        push_line_start(line, "INFO", "aside::telemetry");
        line.push_str(",\"request_id\":");
        push_json_str(line, request_id);
        if let Some(t) = trace_id {
            line.push_str(",\"trace_id\":");
            push_json_str(line, t);
        }
        line.push_str(",\"method\":");
        push_json_str(line, method);
        line.push_str(",\"route\":");
        push_json_str(line, route);
        line.push_str(",\"status\":");
        line.push_str(itoa::Buffer::new().format(status));
        line.push_str(",\"latency_ms\":");
        push_f64(line, latency_ms);
        line.push_str(",\"message\":\"request\"}\n");
        let _ = BatchedStdout.write(line.as_bytes());
    });
}

/// `{"timestamp":…,"level":…,"target":…`: how every JSON line starts.
fn push_line_start(line: &mut String, level: &str, target: &str) {
    line.push_str("{\"timestamp\":\"");
    push_timestamp(line, Utc::now());
    line.push_str("\",\"level\":\"");
    line.push_str(level);
    line.push_str("\",\"target\":");
    push_json_str(line, target);
}

/// tracing-subscriber's default text line, plus ` request_id="…"` when the event runs for a request and
/// does not name one itself (the access line does).
struct TextLine(Format);

impl<S, N> FormatEvent<S, N> for TextLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let id = if event.fields().any(|f| f.name() == "request_id") { None } else { current_request_id() };
        let Some(id) = id else { return self.0.format_event(ctx, w, event) };
        // No ANSI colours: a String writer says it has none, and log files should not carry them.
        let mut line = String::with_capacity(256);
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        line.truncate(line.trim_end_matches('\n').len());
        // Quoted like the formatter's own string fields (the access line's `request_id="…"`); ids are
        // `[A-Za-z0-9._-]` (telemetry.rs checks client ids), so nothing inside needs escaping.
        match crate::traces::current_trace_id() {
            None => writeln!(w, "{line} request_id=\"{id}\""),
            Some(t) => writeln!(w, "{line} request_id=\"{id}\" trace_id=\"{t}\""),
        }
    }
}

/// `{"timestamp":…,"level":…,"target":…,"request_id":…,<fields>…,"message":…}`.
struct JsonLine;

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let meta = event.metadata();
        let mut line = String::with_capacity(256);
        push_line_start(&mut line, meta.level().as_str(), meta.target());
        let mut fields = JsonFields { out: line, message: None, has_request_id: false };
        event.record(&mut fields);
        let JsonFields { mut out, message, has_request_id } = fields;
        if !has_request_id && let Some(id) = current_request_id() {
            out.push_str(",\"request_id\":");
            push_json_str(&mut out, &id);
            if let Some(t) = crate::traces::current_trace_id() {
                out.push_str(",\"trace_id\":");
                push_json_str(&mut out, &t);
            }
        }
        if let Some(m) = message {
            out.push_str(",\"message\":");
            push_json_str(&mut out, &m);
        }
        out.push('}');
        writeln!(w, "{out}")
    }
}

struct JsonFields {
    out: String,
    message: Option<String>,
    has_request_id: bool,
}

impl JsonFields {
    fn key(&mut self, field: &Field) {
        if field.name() == "request_id" {
            self.has_request_id = true;
        }
        self.out.push(',');
        push_json_str(&mut self.out, field.name());
        self.out.push(':');
    }
}

impl tracing::field::Visit for JsonFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(value.to_owned());
            return;
        }
        self.key(field);
        push_json_str(&mut self.out, value);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        let _ = write!(self.out, "{value}");
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        let _ = write!(self.out, "{value}");
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        let _ = write!(self.out, "{value}");
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        push_f64(&mut self.out, value);
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = Some(text);
            return;
        }
        self.key(field);
        push_json_str(&mut self.out, &text);
    }
}

thread_local! {
    /// The formatted `YYYY-MM-DDTHH:MM:SS` of the last second this thread logged in: most lines only
    /// append their microseconds (chrono's RFC 3339 formatter was ~15 % of a logged request's CPU).
    static SECOND: std::cell::RefCell<(i64, String)> = const { std::cell::RefCell::new((i64::MIN, String::new())) };
}

/// Appends `now` as RFC 3339 UTC with microseconds, e.g. `2026-11-29T01:02:03.123456Z`.
fn push_timestamp(out: &mut String, now: chrono::DateTime<Utc>) {
    let secs = now.timestamp();
    SECOND.with_borrow_mut(|(cached, text)| {
        if *cached != secs {
            *text = now.format("%Y-%m-%dT%H:%M:%S").to_string();
            *cached = secs;
        }
        out.push_str(text);
    });
    let _ = write!(out, ".{:06}Z", now.timestamp_subsec_micros().min(999_999));
}

/// Three decimals via integers (latencies in ms are the usual f64 here): the shortest-float formatter
/// cost more than the rest of the line. Non-finite values are `null`.
fn push_f64(out: &mut String, value: f64) {
    if !value.is_finite() {
        out.push_str("null");
    } else if value.abs() < 1e12 {
        let thousandths = (value.abs() * 1000.0).round() as u64;
        let sign = if value < 0.0 && thousandths > 0 { "-" } else { "" };
        let _ = write!(out, "{sign}{}.{:03}", thousandths / 1000, thousandths % 1000);
    } else {
        let _ = write!(out, "{value}");
    }
}

fn push_json_str(out: &mut String, s: &str) {
    // Nothing to escape (the usual case): copy it as is.
    if !s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        out.push('"');
        out.push_str(s);
        out.push('"');
        return;
    }
    // serde_json's escaping: quotes, backslashes and control characters.
    match serde_json::to_string(s) {
        Ok(quoted) => out.push_str(&quoted),
        Err(_) => out.push_str("\"\""),
    }
}

/// Log lines are appended to one shared buffer and written to stdout 64 KiB at a time (or every
/// 200 ms): one `write(2)` per batch instead of one per line, and no channel or thread hand-off per
/// line (tracing-appender's cost a futex wake and `sched_yield` spins per request, seen with strace).
static LOG_BUFFER: Mutex<Vec<u8>> = Mutex::new(Vec::new());
const LOG_BATCH: usize = 64 * 1024;

struct BatchedStdout;

impl Write for BatchedStdout {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut buf = LOG_BUFFER.lock().unwrap_or_else(|p| p.into_inner());
        buf.extend_from_slice(line);
        if buf.len() >= LOG_BATCH {
            let batch = std::mem::take(&mut *buf);
            drop(buf);
            std::io::stdout().lock().write_all(&batch)?;
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes out whatever is buffered.
pub fn flush_logs() {
    let batch = std::mem::take(&mut *LOG_BUFFER.lock().unwrap_or_else(|p| p.into_inner()));
    if !batch.is_empty() {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&batch).and_then(|()| out.flush());
    }
}

/// Flushes the log buffer when dropped (at the end of `main`).
pub struct LogFlushGuard;

impl Drop for LogFlushGuard {
    fn drop(&mut self) {
        flush_logs();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_is_text_on_a_terminal_and_json_otherwise() {
        assert_eq!(LogFormat::Auto.resolve(true), LogFormat::Text);
        assert_eq!(LogFormat::Auto.resolve(false), LogFormat::Json);
        assert_eq!(LogFormat::Json.resolve(true), LogFormat::Json);
        assert_eq!(LogFormat::Text.resolve(false), LogFormat::Text);
    }

    #[test]
    fn strings_are_escaped_as_json() {
        let mut s = String::new();
        push_json_str(&mut s, "a\"b\\c\n\u{1}");
        assert_eq!(s, r#""a\"b\\c\n\u0001""#);
        s.clear();
        push_json_str(&mut s, "plain/text-1");
        assert_eq!(s, r#""plain/text-1""#);
    }

    #[test]
    fn floats_are_written_with_three_decimals() {
        let mut out = String::new();
        for v in [0.0, 1.5, 0.0004, 0.0006, 12.3456, -2.25, f64::NAN, 3e15] {
            push_f64(&mut out, v);
            out.push(' ');
        }
        assert_eq!(out, "0.000 1.500 0.000 0.001 12.346 -2.250 null 3000000000000000 ");
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds() {
        use chrono::TimeZone;
        let t = Utc.with_ymd_and_hms(2026, 11, 29, 1, 2, 3).single().expect("valid date");
        let mut s = String::new();
        push_timestamp(&mut s, t + chrono::Duration::microseconds(4_005));
        assert_eq!(s, "2026-11-29T01:02:03.004005Z");
        s.clear();
        // Same second again (cached prefix), then the next second.
        push_timestamp(&mut s, t + chrono::Duration::microseconds(999_999));
        push_timestamp(&mut s, t + chrono::Duration::seconds(1));
        assert_eq!(s, "2026-11-29T01:02:03.999999Z2026-11-29T01:02:04.000000Z");
    }
}

//! Request observation (contract: "Headers", "Metrics"). `Observe` is the outermost middleware: it
//! assigns the request id (and scopes it so every log line of the request carries it), records the
//! HTTP histogram under the route template, writes the access log and, while draining, asks clients to
//! reconnect elsewhere with `Connection: close`. With tracing on it also opens and closes the request's
//! server span (`traces`), running the request with that span's context as the current one.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use poem::{
    Endpoint, IntoResponse, PathPattern, Request, Response, Result,
    http::{HeaderValue, header},
};

use opentelemetry::context::FutureExt as _;

use crate::{body::RouteLabel, logging, metrics, traces::Traces};

const REQUEST_ID: &str = "x-request-id";

/// A client-sent id is kept when it is sane: 1..=128 chars of `[A-Za-z0-9._-]`.
fn sane_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The outermost middleware's shared state.
pub struct Observe {
    pub metrics: metrics::Metrics,
    pub draining: Arc<AtomicBool>,
    /// None = tracing off: then nothing below touches OpenTelemetry.
    pub traces: Option<Arc<Traces>>,
}

impl Observe {
    /// Wraps one request.
    pub async fn call<E: Endpoint>(self: Arc<Self>, ep: Arc<E>, req: Request) -> Result<Response> {
        let started = Instant::now();
        // A sane client id is echoed as the very header value it came in (a refcount, no copy).
        let client_id =
            req.headers().get(REQUEST_ID).and_then(|v| Some((v.to_str().ok().filter(|s| sane_request_id(s))?, v)));
        let (request_id, header_value): (Arc<str>, Option<HeaderValue>) = match client_id {
            Some((id, v)) => (id.into(), Some(v.clone())),
            None => {
                let mut buf = uuid::Uuid::encode_buffer();
                let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
                (id.into(), HeaderValue::from_str(id).ok())
            }
        };
        let method = req.method().clone();
        let trace = self.traces.as_ref().map(|t| {
            let cx = t.server_span(req.headers(), metrics::method_name(&method), req.uri().path(), &request_id);
            (t, cx)
        });
        // The id rides in a task-local that the log formatter reads: no tracing span per request.
        let handled = match &trace {
            None => logging::with_request_id(request_id.clone(), ep.call(req)).await,
            Some((_, cx)) => logging::with_request_id(request_id.clone(), ep.call(req)).with_context(cx.clone()).await,
        };
        let mut resp = match handled {
            Ok(r) => r.into_response(),
            Err(e) => e.into_response(),
        };
        let route = match resp.data::<RouteLabel>() {
            Some(l) => l.0,
            None => metrics::route_label(resp.data::<PathPattern>().map(|p| &*p.0)),
        };
        let status = resp.status().as_u16();
        let elapsed = started.elapsed();
        self.metrics.http_request(&method, route, status, elapsed.as_secs_f64());
        if let Some(v) = header_value {
            resp.headers_mut().insert(REQUEST_ID, v);
        }
        if self.draining.load(Ordering::Relaxed) {
            resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        let trace_id = match trace {
            None => None,
            Some((t, cx)) => {
                t.finish_server_span(&cx, metrics::method_name(&method), route, status, resp.headers_mut());
                crate::traces::trace_id_of(&cx)
            }
        };
        logging::access(
            &request_id,
            trace_id.as_deref(),
            method.as_str(),
            route,
            status,
            elapsed.as_secs_f64() * 1000.0,
        );
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_kept_only_when_sane() {
        assert!(sane_request_id("abc-123_X.y"));
        assert!(sane_request_id(&"a".repeat(128)));
        assert!(!sane_request_id(&"a".repeat(129)));
        assert!(!sane_request_id(""));
        assert!(!sane_request_id("has space"));
        assert!(!sane_request_id("semi;colon"));
    }
}

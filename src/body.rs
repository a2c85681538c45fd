//! The write guard: a middleware in front of every `/data` write that enforces, in this order, the
//! bearer token (401, before the body is read), `MAX_BODY_BYTES` (413, also for chunked bodies, which
//! poem's `SizeLimit` misses) and the JSON values jsonb cannot hold exactly (400). Contract: "Headers",
//! "Data endpoints".

use std::sync::Arc;

use poem::{
    Endpoint, IntoResponse, Request, Response, Result,
    http::{Method, StatusCode, header},
};

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::{auth, error::Problem, model};

/// How much of a rejected body is read and thrown away before the connection closes.
const LINGER_CAP: u64 = 16 * 1024 * 1024;

/// Discards up to `LINGER_CAP` bytes of an unwanted body, for at most two seconds.
async fn linger(body: impl AsyncRead + Unpin) {
    let (mut limited, mut sink) = (body.take(LINGER_CAP), tokio::io::sink());
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), tokio::io::copy(&mut limited, &mut sink)).await;
}

/// Route label for responses the guard produces itself (the router has not run yet).
#[derive(Clone, Copy, Debug)]
pub struct RouteLabel(pub &'static str);

/// The guard's settings.
pub struct WriteGuard {
    pub api_token: Option<String>,
    pub max_body_bytes: usize,
}

impl WriteGuard {
    /// Runs the checks, then the inner endpoint.
    pub async fn call<E: Endpoint>(self: Arc<Self>, ep: Arc<E>, mut req: Request) -> Result<Response> {
        let path = req.uri().path();
        let route = match path {
            "/data" => "/data",
            p if p.starts_with("/data/") && p.len() > 6 && !p[6..].contains('/') => "/data/{id}",
            _ => return ep.call(req).await.map(IntoResponse::into_response),
        };
        let method = req.method().clone();
        if !matches!(method, Method::POST | Method::PUT | Method::DELETE | Method::PATCH) {
            return ep.call(req).await.map(IntoResponse::into_response);
        }
        // Rejections that leave a body on the connection drain (discard, never buffer or parse) up to
        // LINGER_CAP of it first and answer `Connection: close`: closing a socket with unread data
        // makes the kernel send RST, and the client could lose our answer while still uploading.
        let reject = |status: StatusCode, detail: String, close: bool| {
            let mut resp = Problem::new(status, detail).into_response();
            resp.set_data(RouteLabel(route));
            if close {
                resp.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
            }
            Ok(resp)
        };
        let has_body = req.header(header::TRANSFER_ENCODING).is_some()
            || req.header(header::CONTENT_LENGTH).is_some_and(|v| v.trim() != "0");
        if !auth::authorized(self.api_token.as_deref(), req.headers().get(header::AUTHORIZATION)) {
            if has_body {
                linger(req.take_body().into_async_read()).await;
            }
            let detail = "writes need `Authorization: Bearer <API_TOKEN>`".into();
            return reject(StatusCode::UNAUTHORIZED, detail, has_body);
        }
        if method != Method::DELETE {
            let max = self.max_body_bytes;
            let too_large = || format!("request body is larger than MAX_BODY_BYTES ({max} bytes)");
            let declared = req.header(header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
            let mut reader = req.take_body().into_async_read();
            if declared.is_some_and(|n| n > max as u64) {
                linger(reader).await;
                return reject(StatusCode::PAYLOAD_TOO_LARGE, too_large(), true);
            }
            // Read at most one byte past the limit: chunked bodies have no Content-Length to check.
            let mut body = Vec::with_capacity(declared.map_or(8 * 1024, |n| n as usize));
            if let Err(e) = (&mut reader).take(max as u64 + 1).read_to_end(&mut body).await {
                return reject(StatusCode::BAD_REQUEST, format!("could not read the request body: {e}"), true);
            }
            if body.len() > max {
                linger(reader).await;
                return reject(StatusCode::PAYLOAD_TOO_LARGE, too_large(), true);
            }
            // Only JSON bodies are inspected; anything else reaches the handler and gets its 415.
            let is_json = req.content_type().and_then(|c| c.parse::<mime::Mime>().ok()).is_some_and(|m| {
                m.type_() == "application" && (m.subtype() == "json" || m.suffix().is_some_and(|s| s == "json"))
            });
            if is_json && let Some(detail) = model::json_text_problem(&body) {
                return reject(StatusCode::BAD_REQUEST, detail, false);
            }
            req.set_body(poem::Body::from(body));
        }
        ep.call(req).await.map(IntoResponse::into_response)
    }
}

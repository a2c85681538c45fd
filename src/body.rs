//! The write guard: a middleware in front of every `/data` write that enforces, in this order, the
//! bearer token (401, before the body is read), `MAX_BODY_BYTES` (413, also for chunked bodies, which
//! poem's `SizeLimit` misses) and the JSON values jsonb cannot hold exactly (400). Contract: "Headers",
//! "Data endpoints".

use std::sync::Arc;

use poem::{
    Endpoint, IntoResponse, Request, Response, Result,
    error::ReadBodyError,
    http::{Method, StatusCode, header},
};

use crate::{auth, error::Problem, model};

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
        // A body we refuse to read is left on the connection, so the server will close it; say so, so
        // clients do not reuse it for their next request.
        let unread_body = req.header(header::TRANSFER_ENCODING).is_some()
            || req.header(header::CONTENT_LENGTH).is_some_and(|v| v.trim() != "0");
        let reject = |status: StatusCode, detail: String, body_unread: bool| {
            let mut resp = Problem::new(status, detail).into_response();
            resp.set_data(RouteLabel(route));
            if body_unread {
                resp.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
            }
            Ok(resp)
        };
        if !auth::authorized(self.api_token.as_deref(), req.headers().get(header::AUTHORIZATION)) {
            return reject(
                StatusCode::UNAUTHORIZED,
                "writes need `Authorization: Bearer <API_TOKEN>`".into(),
                unread_body,
            );
        }
        if method != Method::DELETE {
            let too_large = || format!("request body is larger than MAX_BODY_BYTES ({} bytes)", self.max_body_bytes);
            let declared = req.header(header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|n| n > self.max_body_bytes as u64) {
                return reject(StatusCode::PAYLOAD_TOO_LARGE, too_large(), true);
            }
            let body = match req.take_body().into_bytes_limit(self.max_body_bytes).await {
                Ok(b) => b,
                Err(ReadBodyError::PayloadTooLarge) => return reject(StatusCode::PAYLOAD_TOO_LARGE, too_large(), true),
                Err(e) => {
                    return reject(StatusCode::BAD_REQUEST, format!("could not read the request body: {e}"), true);
                }
            };
            // Only JSON bodies are inspected; anything else reaches the handler and gets its 415.
            let is_json = req.content_type().and_then(|c| c.parse::<mime::Mime>().ok()).is_some_and(|m| {
                m.type_() == "application" && (m.subtype() == "json" || m.suffix().is_some_and(|s| s == "json"))
            });
            if is_json && let Some(detail) = model::json_text_problem(&body) {
                return reject(StatusCode::BAD_REQUEST, detail, false);
            }
            req.set_body(body);
        }
        ep.call(req).await.map(IntoResponse::into_response)
    }
}

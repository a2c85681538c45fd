//! RFC 9457 problem details (contract: "Errors"). `ApiError` is what handlers return; `to_problem` is
//! the edge converter that turns every framework error (bad JSON, bad id, unknown route, 405, 413, 415)
//! into the same problem+json shape, so no plain-text body ever leaves the service. The bottom layer:
//! it names no other module; what a database error means to a client is decided in `db`.

use poem::{
    PathPattern, Response,
    http::{StatusCode, header},
};
use poem_openapi::{ApiResponse, Object, payload::Json};
use serde::Serialize;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem: the only error body this service sends.
#[derive(Object, Serialize, Clone, Debug, PartialEq, Eq)]
#[oai(example)]
pub struct Problem {
    /// A URI reference naming the problem type (`about:blank`: the title is the HTTP status phrase).
    #[oai(rename = "type")]
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the problem type.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request, in words a client developer can act on.
    pub detail: String,
}

impl poem_openapi::types::Example for Problem {
    fn example() -> Self {
        Problem::new(StatusCode::NOT_FOUND, "record 42 does not exist")
    }
}

impl Problem {
    /// A problem for `status` with a specific `detail`.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            kind: "about:blank".into(),
            title: status.canonical_reason().unwrap_or("Error").into(),
            status: status.as_u16(),
            detail: detail.into(),
        }
    }

    /// Renders the problem as a response outside poem-openapi (middleware, edge converter).
    pub fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        // Serializing four plain fields cannot fail; fall back to an empty object rather than panic.
        let body = serde_json::to_vec(&self).unwrap_or_else(|_| b"{}".to_vec());
        let mut resp = Response::builder().status(status).content_type(PROBLEM_JSON).body(body);
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// Every error an operation can answer with, each documented with the problem schema.
#[derive(ApiResponse, Clone, Debug)]
pub enum ApiError {
    /// The request is malformed: bad JSON, unknown field, invalid key or value, id or query parameter.
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(Json<Problem>),
    /// A bearer token is required for writes and was missing or wrong.
    #[oai(status = 401, content_type = "application/problem+json")]
    Unauthorized(Json<Problem>, #[oai(header = "WWW-Authenticate")] String),
    /// The record does not exist.
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<Problem>),
    /// A record with this key already exists.
    #[oai(status = 409, content_type = "application/problem+json")]
    Conflict(Json<Problem>),
    /// The request body is larger than MAX_BODY_BYTES.
    #[oai(status = 413, content_type = "application/problem+json")]
    PayloadTooLarge(Json<Problem>),
    /// The request body is not JSON (Content-Type must be application/json).
    #[oai(status = 415, content_type = "application/problem+json")]
    UnsupportedMediaType(Json<Problem>),
    /// An unexpected internal error; details are in the server log under the request id.
    #[oai(status = 500, content_type = "application/problem+json")]
    Internal(Json<Problem>),
    /// The database is unreachable; retry later.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(Json<Problem>),
}

impl ApiError {
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::BadRequest(Json(Problem::new(StatusCode::BAD_REQUEST, detail)))
    }
    pub fn unauthorized() -> Self {
        Self::Unauthorized(
            Json(Problem::new(StatusCode::UNAUTHORIZED, "writes need `Authorization: Bearer <API_TOKEN>`")),
            "Bearer".into(),
        )
    }
    pub fn not_found(id: i64) -> Self {
        Self::NotFound(Json(Problem::new(StatusCode::NOT_FOUND, format!("record {id} does not exist"))))
    }
    pub fn key_exists() -> Self {
        Self::Conflict(Json(Problem::new(StatusCode::CONFLICT, "a record with this key already exists")))
    }
    pub fn unavailable() -> Self {
        Self::Unavailable(Json(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the database is unavailable; retry later",
        )))
    }
    pub fn internal() -> Self {
        Self::Internal(Json(Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error; the server log has details under this request's X-Request-ID",
        )))
    }
}

/// Edge converter for `catch_all_error`: our own `ApiError` responses pass through; every framework
/// error becomes a problem with a status-appropriate, sanitized detail.
pub async fn to_problem(err: poem::Error) -> Response {
    let pattern = err.data::<PathPattern>().cloned();
    let mut resp = if err.is_from_response() {
        err.into_response()
    } else {
        let status = err.status();
        Problem::new(status, framework_detail(&err)).into_response()
    };
    // Keep the matched route for the metrics/access-log middleware outside this converter.
    if let Some(p) = pattern {
        resp.set_data(p);
    }
    resp
}

fn framework_detail(err: &poem::Error) -> String {
    use poem_openapi::error::{ParseParamError, ParsePathError};
    if err.is::<ParsePathError>() {
        return "`id` must be an integer between -9223372036854775808 and 9223372036854775807".into();
    }
    let msg = err.to_string();
    match err.status() {
        StatusCode::NOT_FOUND => "no such route; see /docs for the API".into(),
        StatusCode::METHOD_NOT_ALLOWED => "method not allowed on this route; see /docs".into(),
        StatusCode::PAYLOAD_TOO_LARGE => "request body is larger than MAX_BODY_BYTES".into(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => format!("{msg}; send `Content-Type: application/json`"),
        _ if err.is::<ParseParamError>() => msg.replace("failed to parse parameter", "invalid query parameter"),
        _ => msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bottom layer names no other module of the crate: `db`, `metrics`, `cache` and `api` all
    /// import `ApiError`, so any import back from here would close a circle (issue 7).
    #[test]
    fn the_error_layer_imports_no_other_module() {
        let needle = concat!("crate", "::");
        let code = include_str!("error.rs").lines().filter(|l| !l.trim_start().starts_with("//"));
        assert_eq!(code.filter(|l| l.contains(needle)).collect::<Vec<_>>(), Vec::<&str>::new());
    }

    #[test]
    fn problem_uses_the_status_phrase_as_title() {
        let p = Problem::new(StatusCode::CONFLICT, "x");
        assert_eq!((p.title.as_str(), p.status, p.kind.as_str()), ("Conflict", 409, "about:blank"));
    }

    #[test]
    fn unauthorized_problem_carries_www_authenticate() {
        let r = Problem::new(StatusCode::UNAUTHORIZED, "x").into_response();
        assert_eq!(r.headers().get(header::WWW_AUTHENTICATE).map(|v| v.as_bytes()), Some(&b"Bearer"[..]));
        assert_eq!(r.content_type(), Some(PROBLEM_JSON));
    }
}

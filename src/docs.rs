//! `/openapi.json` and `/docs` (contract: "Operational endpoints", "The OpenAPI document").
//! poem-openapi attaches examples to schemas only, so every error status would show the one `Problem`
//! example (a 404). The document is patched once at start-up so each error response carries an example
//! of its own status, and Swagger UI is served with the same patched document.

use poem::{Endpoint, EndpointExt, Route, get, handler, http::StatusCode, web::Html};
use serde_json::Value;

use crate::error::{PROBLEM_JSON, Problem};

/// A realistic detail for each error status the API documents.
fn example_detail(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "`key` must be 1..=200 characters, got 0",
        401 => "writes need `Authorization: Bearer <API_TOKEN>`",
        404 => "record 42 does not exist",
        409 => "a record with this key already exists",
        413 => "request body is larger than MAX_BODY_BYTES (1048576 bytes)",
        415 => "the client request does not include the `Content-Type` header; send `Content-Type: application/json`",
        503 => "the database is unavailable; retry later",
        _ => "internal error; the server log has details under this request's X-Request-ID",
    }
}

/// Adds a per-status example to every problem+json response that has none of its own.
pub fn patch_spec(spec: &str) -> Result<String, serde_json::Error> {
    let mut doc: Value = serde_json::from_str(spec)?;
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, ops) in paths.iter_mut() {
            // /ready's 503 carries `checks` and has its own example.
            if path == "/ready" {
                continue;
            }
            for op in ops.as_object_mut().into_iter().flat_map(|o| o.values_mut()) {
                let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else { continue };
                for (code, resp) in responses.iter_mut() {
                    let Some(status) = code.parse::<u16>().ok().and_then(|c| StatusCode::from_u16(c).ok()) else {
                        continue;
                    };
                    if let Some(media) = resp.pointer_mut(&format!("/content/{}", PROBLEM_JSON.replace('/', "~1"))) {
                        let example = serde_json::to_value(Problem::new(status, example_detail(status)))?;
                        media["example"] = example;
                    }
                }
            }
        }
    }
    serde_json::to_string(&doc)
}

/// The `/docs` Swagger UI page and the `/openapi.json` document, both from the patched spec.
pub fn endpoints(spec: String, ui_html: String) -> (impl Endpoint + 'static, impl Endpoint + 'static) {
    let patched = patch_spec(&spec).unwrap_or_else(|e| {
        tracing::error!(error = %e, "could not add error examples to the OpenAPI document");
        spec.clone()
    });
    // The page embeds the document verbatim; swap in the patched one.
    let page = ui_html.replace(&spec, &patched);
    let docs = Route::new().at("/", get(serve_html.data(page)));
    let json = get(serve_json.data(patched));
    (docs, json)
}

#[handler]
fn serve_html(page: poem::web::Data<&String>) -> Html<String> {
    Html(page.0.clone())
}

#[handler]
fn serve_json(doc: poem::web::Data<&String>) -> poem::Response {
    poem::Response::builder().content_type("application/json; charset=utf-8").body(doc.0.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_problem_response_gets_an_example_of_its_own_status() {
        let spec = r#"{"paths":{"/data":{"post":{"responses":{
            "201":{"content":{"application/json":{}}},
            "409":{"content":{"application/problem+json":{"schema":{}}}},
            "415":{"content":{"application/problem+json":{"schema":{}}}}}}},
            "/ready":{"get":{"responses":{"503":{"content":{"application/problem+json":{}}}}}}}}"#;
        let doc: Value = serde_json::from_str(&patch_spec(spec).expect("patch")).expect("json");
        let ex = |code: &str| {
            doc["paths"]["/data"]["post"]["responses"][code]["content"]["application/problem+json"]["example"].clone()
        };
        assert_eq!(ex("409")["status"], 409);
        assert_eq!(ex("409")["title"], "Conflict");
        assert_eq!(ex("415")["status"], 415);
        assert!(doc["paths"]["/data"]["post"]["responses"]["201"]["content"]["application/json"]["example"].is_null());
        assert!(
            doc["paths"]["/ready"]["get"]["responses"]["503"]["content"]["application/problem+json"]["example"]
                .is_null()
        );
    }
}

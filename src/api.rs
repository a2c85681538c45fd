//! `/data` (contract: "Data endpoints", "The cache"). Reads go through [`Cache::read`], which serves
//! the exact bytes a miss serialized; writes commit to the database first, then invalidate, then answer.

use std::{future::Future, marker::PhantomData, sync::Arc};

use bytes::Bytes;
use poem::{
    Endpoint, IntoResponse, Request, Response,
    http::{HeaderValue, Method, StatusCode, header},
};
use poem_openapi::{
    ApiResponse, OpenApi, Tags,
    param::{Header, Path, Query},
    payload::{Json, Payload},
    registry::{MetaResponses, MetaSchemaRef, Registry},
    types::Type,
};

use crate::{
    auth::WriteAuth,
    body::RouteLabel,
    cache::{Cache, CacheOutcome, Cached, EntryKey},
    db::{Store, record},
    error::ApiError,
    metrics::Metrics,
    model::{Key, NewRecord, Record, RecordPage, RecordUpdate},
};

#[derive(Tags)]
enum DataTag {
    /// JSON records, read through the cache.
    Data,
}

/// Pre-serialized JSON documented with `T`'s schema: cache hits send stored bytes without re-encoding.
pub struct JsonBytes<T>(Bytes, PhantomData<fn() -> T>);

const APPLICATION_JSON: &str = "application/json";

impl<T: Type> Payload for JsonBytes<T> {
    const CONTENT_TYPE: &'static str = APPLICATION_JSON;
    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }
    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: Send> IntoResponse for JsonBytes<T> {
    fn into_response(self) -> Response {
        Response::builder().content_type(APPLICATION_JSON).body(self.0)
    }
}

impl<T> JsonBytes<T> {
    fn new(body: Bytes) -> Self {
        Self(body, PhantomData)
    }
}

#[derive(ApiResponse)]
enum CreateResponse {
    /// Created; `Location` names the new record.
    #[oai(status = 201)]
    Created(JsonBytes<Record>, #[oai(header = "Location")] String),
}

#[derive(ApiResponse)]
enum RecordResponse {
    /// The record.
    #[oai(status = 200)]
    Ok(JsonBytes<Record>),
}

#[derive(ApiResponse)]
enum DeleteResponse {
    /// Deleted.
    #[oai(status = 204)]
    Deleted,
}

/// The documentation of [`ReadReply`] (never constructed: the hot path builds the response itself).
#[allow(dead_code)]
#[derive(ApiResponse)]
enum ReadResponse<T: Type + Send> {
    /// Found. `X-Cache` says how it was served; `ETag` identifies the representation.
    #[oai(status = 200)]
    Ok(
        JsonBytes<T>,
        /// `HIT` (from cache), `MISS` (from the database, cache filled) or `BYPASS` (cache unreachable or disabled).
        #[oai(header = "X-Cache")]
        String,
        /// Strong validator; send it back in `If-None-Match` to get 304 while unchanged.
        #[oai(header = "ETag")]
        String,
    ),
    /// Unchanged since the `If-None-Match` ETag; no body.
    #[oai(status = 304)]
    NotModified(#[oai(header = "X-Cache")] String, #[oai(header = "ETag")] String),
}

/// The `/data` operations.
#[derive(Clone)]
pub struct DataApi {
    pub store: Store,
    pub cache: Arc<Cache>,
    pub metrics: Metrics,
}

fn to_record(m: record::Model) -> Record {
    Record { id: m.id, key: m.key, value: m.value, created_at: m.created_at, updated_at: m.updated_at }
}

fn serialize<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(v).map_err(|e| {
        tracing::error!(error = %e, "response serialization failed");
        ApiError::internal()
    })
}

/// True when an `If-None-Match` list names `etag` (or is `*`); weak comparison, as RFC 9110 asks for GET.
fn etag_matches(if_none_match: Option<&str>, etag: &[u8]) -> bool {
    let Some(inm) = if_none_match else { return false };
    inm.split(',').map(str::trim).any(|t| t == "*" || t.trim_start_matches("W/").as_bytes() == etag)
}

/// What both GET routes answer. Documented as [`ReadResponse`]; built by hand because this is the
/// cache-hit response and the derived conversion re-validated and copied both header values.
pub(crate) struct ReadReply<T>(Response, PhantomData<fn() -> T>);

impl<T: Type + Send> ApiResponse for ReadReply<T> {
    fn meta() -> MetaResponses {
        ReadResponse::<T>::meta()
    }
    fn register(registry: &mut Registry) {
        ReadResponse::<T>::register(registry);
    }
}

impl<T: Send> IntoResponse for ReadReply<T> {
    fn into_response(self) -> Response {
        self.0
    }
}

fn read_response<T>(found: (Cached, CacheOutcome), inm: Option<&str>) -> Result<ReadReply<T>, ApiError> {
    let (cached, outcome) = found;
    let matched = etag_matches(inm, &cached.etag);
    // The ETag is our own hex digest: always a valid header value.
    let etag = HeaderValue::from_maybe_shared(cached.etag).map_err(|_| ApiError::internal())?;
    // Static names and values: nothing parsed or validated per request.
    let mut resp = if matched {
        Response::builder().status(StatusCode::NOT_MODIFIED).finish()
    } else {
        let mut r = Response::builder().body(cached.body);
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(APPLICATION_JSON));
        r
    };
    let headers = resp.headers_mut();
    headers.insert(X_CACHE, HeaderValue::from_static(outcome.header()));
    headers.insert(header::ETAG, etag);
    Ok(ReadReply(resp, PhantomData))
}

const X_CACHE: header::HeaderName = header::HeaderName::from_static("x-cache");

impl DataApi {
    /// Commits a write, then (if it changed anything) invalidates, on a task of its own: if the request
    /// future is dropped (the shutdown timeout drops connections still open after drain + 5 s), a
    /// committed write must still get its invalidation.
    async fn write<T: Send + 'static>(
        &self,
        record: Option<i64>,
        commit: impl Future<Output = Result<Option<T>, ApiError>> + Send + 'static,
    ) -> Result<Option<T>, ApiError> {
        let cache = self.cache.clone();
        let work = async move {
            let done = commit.await?;
            if done.is_some() {
                cache.invalidate(record).await;
            }
            Ok(done)
        };
        // The spawned task logs under the request's id too, and its spans join the request's trace.
        // Boxed once: the two arms below would otherwise each hold the whole write future, and the task
        // (copied into tokio's task cell) would carry both (issue 10's profile: futures copied per PUT).
        let work = Box::pin(work);
        let trace = crate::traces::current();
        let work = async move {
            match trace {
                Some(cx) => opentelemetry::context::FutureExt::with_context(work, cx).await,
                None => work.await,
            }
        };
        let task = match crate::logging::current_request_id() {
            Some(id) => tokio::spawn(crate::logging::with_request_id(id, work)),
            None => tokio::spawn(work),
        };
        task.await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "write task failed");
            Err(ApiError::internal())
        })
    }

    /// `GET /data/{id}` once the id and `If-None-Match` are extracted: shared by the OpenAPI operation
    /// and the hot-path router ([`HotRead`]), so both answer byte for byte the same.
    pub(crate) async fn read_record(
        &self,
        id: i64,
        if_none_match: Option<&str>,
    ) -> Result<ReadReply<Record>, ApiError> {
        if id <= 0 {
            return Err(ApiError::not_found(id));
        }
        let found = self
            .cache
            .read(EntryKey::Record(id), || async {
                match self.store.get(id).await? {
                    Some(m) => Ok(Some(Cached::new(serialize(&to_record(m))?))),
                    None => Ok(None),
                }
            })
            .await?;
        let found = found.ok_or_else(|| ApiError::not_found(id))?;
        read_response(found, if_none_match)
    }
}

/// The id of a plain `GET /data/{id}` whose id is decimal digits (and `If-None-Match`, when it is
/// text); anything else (other methods, signs, escapes, non-UTF-8 headers) is left to poem-openapi.
fn hot_record_request(req: &Request) -> Option<(i64, Option<&str>)> {
    if req.method() != Method::GET {
        return None;
    }
    let digits = req.uri().path().strip_prefix("/data/")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let inm = match req.headers().get(header::IF_NONE_MATCH) {
        None => None,
        Some(v) => Some(v.to_str().ok()?),
    };
    // Too large for i64: poem-openapi answers its 400.
    Some((digits.parse().ok()?, inm))
}

/// The hot path: answers `GET /data/{id}` (the cache-hit route) straight from [`DataApi::read_record`],
/// skipping the router, poem-openapi's extractors and the write guard, which cost about as much CPU as
/// the cache hit itself (DESIGN.md, "Performance"). Every other request goes to `inner` unchanged.
pub struct HotRead {
    pub data: DataApi,
}

impl HotRead {
    pub async fn call<E: Endpoint>(self: Arc<Self>, inner: Arc<E>, req: Request) -> poem::Result<Response> {
        let Some((id, inm)) = hot_record_request(&req) else {
            // Boxed: the hot path's own future stays small (poem moves it by value between layers).
            return Box::pin(inner.call(req)).await.map(IntoResponse::into_response);
        };
        let mut resp = match self.data.read_record(id, inm).await {
            Ok(r) => r.into_response(),
            Err(e) => e.into_response(),
        };
        resp.set_data(RouteLabel("/data/{id}"));
        Ok(resp)
    }
}

#[OpenApi(tag = "DataTag::Data")]
impl DataApi {
    /// Create a record
    ///
    /// Stores `value` under a new unique `key` and answers 201 with the record and its `Location`.
    /// A key that already exists is 409. Needs the bearer token when the server has `API_TOKEN` set.
    #[oai(path = "/data", method = "post", operation_id = "createRecord")]
    async fn create(&self, _auth: WriteAuth, body: Json<NewRecord>) -> Result<CreateResponse, ApiError> {
        let NewRecord { key: Key(key), value } = body.0;
        let (store, metrics) = (self.store.clone(), self.metrics.clone());
        let row = self
            .write(None, async move {
                let row = store.insert(key, value).await?;
                metrics.record_created();
                Ok(Some(row))
            })
            .await?
            .ok_or_else(ApiError::internal)?;
        let location = format!("/data/{}", row.id);
        Ok(CreateResponse::Created(JsonBytes::new(serialize(&to_record(row))?.into()), location))
    }

    /// Get a record
    ///
    /// Served from the cache when possible (`X-Cache: HIT`). Ids that are not integers are 400;
    /// ids that cannot exist (0 or negative) and unknown ids are 404.
    #[oai(path = "/data/:id", method = "get", operation_id = "getRecord")]
    async fn get(
        &self,
        /// The record id.
        id: Path<i64>,
        /// An ETag from an earlier response: answers 304 while the record is unchanged.
        #[oai(name = "If-None-Match")]
        if_none_match: Header<Option<String>>,
    ) -> Result<ReadReply<Record>, ApiError> {
        self.read_record(id.0, if_none_match.0.as_deref()).await
    }

    /// List records
    ///
    /// Records ordered by id, one page at a time (keyset pagination): pass the previous page's
    /// `next_after` as `after` until it is null. `key` filters to the record with exactly that key.
    #[oai(path = "/data", method = "get", operation_id = "listRecords")]
    async fn list(
        &self,
        /// Page size, 1..=500.
        #[oai(default = "default_limit", validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<u64>,
        /// Return records with an id greater than this (the last id seen); 0 starts at the beginning.
        #[oai(default, validator(minimum(value = "0")))]
        after: Query<i64>,
        /// Exact-match key filter (1..=200 characters, no control characters).
        key: Query<Option<Key>>,
        /// An ETag from an earlier response: answers 304 while the page is unchanged.
        #[oai(name = "If-None-Match")]
        if_none_match: Header<Option<String>>,
    ) -> Result<ReadReply<RecordPage>, ApiError> {
        let (limit, after, key) = (limit.0, after.0, key.0.map(|k| k.0));
        let entry = EntryKey::Page { after, limit, key: key.clone() };
        let found = self
            .cache
            .read(entry, || async {
                let mut rows = self.store.list(after, limit, key.as_deref()).await?;
                let more = rows.len() as u64 > limit;
                rows.truncate(limit as usize);
                let next_after = if more { rows.last().map(|r| r.id) } else { None };
                let page = RecordPage { items: rows.into_iter().map(to_record).collect(), next_after };
                Ok(Some(Cached::new(serialize(&page)?)))
            })
            .await?
            .ok_or_else(ApiError::internal)?;
        read_response(found, if_none_match.0.as_deref())
    }

    /// Replace a record's value
    ///
    /// Sets `value`; `updated_at` moves, `created_at` and `key` stay. Every replica serves the new
    /// value once this answers. Needs the bearer token when the server has `API_TOKEN` set.
    #[oai(path = "/data/:id", method = "put", operation_id = "updateRecord")]
    async fn update(
        &self,
        _auth: WriteAuth,
        /// The record id.
        id: Path<i64>,
        body: Json<RecordUpdate>,
    ) -> Result<RecordResponse, ApiError> {
        let id = id.0;
        if id <= 0 {
            return Err(ApiError::not_found(id));
        }
        let (store, value) = (self.store.clone(), body.0.value);
        let row = self.write(Some(id), async move { store.update(id, value).await }).await?;
        let row = row.ok_or_else(|| ApiError::not_found(id))?;
        Ok(RecordResponse::Ok(JsonBytes::new(serialize(&to_record(row))?.into())))
    }

    /// Delete a record
    ///
    /// Answers 204; unknown ids are 404. Needs the bearer token when the server has `API_TOKEN` set.
    #[oai(path = "/data/:id", method = "delete", operation_id = "deleteRecord")]
    async fn delete(
        &self,
        _auth: WriteAuth,
        /// The record id.
        id: Path<i64>,
    ) -> Result<DeleteResponse, ApiError> {
        let id = id.0;
        if id <= 0 {
            return Err(ApiError::not_found(id));
        }
        let store = self.store.clone();
        let deleted = self.write(Some(id), async move { Ok(store.delete(id).await?.then_some(())) }).await?;
        deleted.map(|()| DeleteResponse::Deleted).ok_or_else(|| ApiError::not_found(id))
    }
}

fn default_limit() -> u64 {
    50
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_handles_lists_weak_tags_and_star() {
        let e = b"\"abc\"";
        assert!(etag_matches(Some("\"abc\""), e));
        assert!(etag_matches(Some("\"x\", W/\"abc\""), e));
        assert!(etag_matches(Some("*"), e));
        assert!(!etag_matches(Some("\"abd\""), e));
        assert!(!etag_matches(None, e));
    }
}

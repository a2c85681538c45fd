//! `/data` (contract: "Data endpoints", "The cache"). Reads go through [`Cache::read`], which serves
//! the exact bytes a miss serialized; writes commit to the database first, then invalidate, then answer.

use std::{future::Future, marker::PhantomData, sync::Arc};

use bytes::Bytes;
use poem::{IntoResponse, Response};
use poem_openapi::{
    ApiResponse, OpenApi, Tags,
    param::{Header, Path, Query},
    payload::{Json, Payload},
    registry::{MetaSchemaRef, Registry},
    types::Type,
};

use crate::{
    auth::WriteAuth,
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
fn etag_matches(if_none_match: Option<&str>, etag: &str) -> bool {
    let Some(inm) = if_none_match else { return false };
    inm.split(',').map(str::trim).any(|t| t == "*" || t.trim_start_matches("W/") == etag)
}

fn read_response<T: Type + Send>(found: (Cached, CacheOutcome), inm: Option<&str>) -> ReadResponse<T> {
    let (cached, outcome) = found;
    if etag_matches(inm, &cached.etag) {
        ReadResponse::NotModified(outcome.header().into(), cached.etag)
    } else {
        ReadResponse::Ok(JsonBytes::new(cached.body), outcome.header().into(), cached.etag)
    }
}

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
        // The spawned task logs under the request's id too.
        let task = match crate::logging::current_request_id() {
            Some(id) => tokio::spawn(crate::logging::with_request_id(id, work)),
            None => tokio::spawn(work),
        };
        task.await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "write task failed");
            Err(ApiError::internal())
        })
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
    ) -> Result<ReadResponse<Record>, ApiError> {
        let id = id.0;
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
        Ok(read_response(found, if_none_match.0.as_deref()))
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
    ) -> Result<ReadResponse<RecordPage>, ApiError> {
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
        Ok(read_response(found, if_none_match.0.as_deref()))
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
        let e = "\"abc\"";
        assert!(etag_matches(Some("\"abc\""), e));
        assert!(etag_matches(Some("\"x\", W/\"abc\""), e));
        assert!(etag_matches(Some("*"), e));
        assert!(!etag_matches(Some("\"abd\""), e));
        assert!(!etag_matches(None, e));
    }
}

//! Grouped inserts: concurrent POSTs share one multi-row statement (DESIGN.md, "Performance"). With 64
//! clients that is ~1/10 of the statements, round trips and pool hand-offs per record. A lone POST goes
//! out at once, never waits for company.

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    sync::Arc,
};

use serde_json::Value;
use tokio::sync::{Mutex, mpsc, oneshot};

use super::{
    Store,
    errors::is_unavailable,
    exec::{Arg, Route},
    now_micros, record,
};
use crate::{
    error::ApiError,
    logging::{in_request, in_request_async},
    traces,
};

/// Insert statements in flight at once; each carries up to `MAX_BATCH` rows.
pub(super) const INSERT_WORKERS: usize = 4;
const MAX_BATCH: usize = 64;

/// One POST's row waiting for a batch, and where its outcome goes.
pub(super) struct QueuedInsert {
    pub key: String,
    pub value: Value,
    pub reply: oneshot::Sender<Result<record::Model, ApiError>>,
    /// The POST's request id: a worker logs what it does for this row under it.
    pub request_id: Option<Arc<str>>,
    /// When the request is traced: the worker notes the batch size for its span, and logs in its trace.
    pub trace: Option<traces::Joined>,
}

/// Starts the workers that take queued rows off `rx`; they stop when every sender is dropped.
pub(super) fn spawn_workers(worker: &Store, rx: mpsc::Receiver<QueuedInsert>) {
    let rx = Arc::new(Mutex::new(rx));
    for _ in 0..INSERT_WORKERS {
        let (rx, worker) = (rx.clone(), worker.clone());
        tokio::spawn(async move {
            while let Some(batch) = next_batch(&rx).await {
                worker.insert_batch(batch).await;
            }
        });
    }
}

/// Waits for one queued insert, then takes whatever else is already queued (up to `MAX_BATCH`).
async fn next_batch(rx: &Mutex<mpsc::Receiver<QueuedInsert>>) -> Option<Vec<QueuedInsert>> {
    let mut rx = rx.lock().await;
    let first = rx.recv().await?;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    batch.push(first);
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(q) => batch.push(q),
            Err(_) => break,
        }
    }
    Some(batch)
}

/// Runs a worker's part of a traced request in its trace, so its log lines carry the trace id.
async fn in_trace<F: Future>(trace: Option<&traces::Joined>, fut: F) -> F::Output {
    use opentelemetry::context::FutureExt as _;
    match trace {
        Some(t) => fut.with_context(t.context()).await,
        None => fut.await,
    }
}

impl Store {
    /// One `INSERT … ON CONFLICT (key) DO NOTHING RETURNING *` for the whole batch: a row missing from
    /// the result lost to an existing key (409). A key twice in one batch: the first one goes in the
    /// statement, the later ones are 409 (they would conflict with it). A failure that is not the
    /// database being unavailable is retried row by row, so one bad row cannot fail its neighbours.
    pub(super) async fn insert_batch(&self, batch: Vec<QueuedInsert>) {
        for t in batch.iter().filter_map(|q| q.trace.as_ref()) {
            t.note_batch(batch.len());
        }
        if batch.len() == 1 {
            for q in batch {
                let one = in_request_async(q.request_id.as_ref(), self.insert_one(q.key, q.value));
                let _ = q.reply.send(in_trace(q.trace.as_ref(), one).await);
            }
            return;
        }
        let mut seen = HashSet::with_capacity(batch.len());
        let (mut first, mut repeats) = (Vec::with_capacity(batch.len()), Vec::new());
        for q in batch {
            if seen.insert(q.key.clone()) { first.push(q) } else { repeats.push(q) }
        }
        for q in repeats {
            let _ = q.reply.send(Err(ApiError::key_exists()));
        }
        let now = now_micros();
        let args = first
            .iter()
            .flat_map(|q| [Arg::Text(q.key.clone()), Arg::Json(q.value.clone()), Arg::Time(now), Arg::Time(now)])
            .collect();
        let sql = self.sql.insert_many(first.len());
        let inserted = self.run("insert", self.engine.fetch_all(Route::Pool, &sql, args)).await;
        let inserted = inserted.and_then(|rows| rows.iter().map(super::decode).collect::<Result<Vec<_>, _>>());
        match inserted {
            Ok(models) => {
                let mut by_key: HashMap<String, record::Model> =
                    models.into_iter().map(|m| (m.key.clone(), m)).collect();
                for q in first {
                    let _ = q.reply.send(by_key.remove(&q.key).ok_or_else(ApiError::key_exists));
                }
            }
            // One line per request, each under its id: the batch is an implementation detail, and a
            // request's log trail must show why it failed (contract: request id in every line).
            Err(e) if is_unavailable(&e) => {
                for q in first {
                    let err = in_request(q.request_id.as_ref(), || {
                        let _trace = q.trace.as_ref().map(|t| t.context().attach());
                        tracing::warn!(error = ?e, "database unavailable");
                        ApiError::unavailable()
                    });
                    let _ = q.reply.send(Err(err));
                }
            }
            Err(e) => {
                let rows = first.len();
                for q in first {
                    let one = in_request_async(q.request_id.as_ref(), async {
                        tracing::warn!(error = ?e, rows, "batch insert failed; inserting row by row");
                        self.insert_one(q.key, q.value).await
                    });
                    let _ = q.reply.send(in_trace(q.trace.as_ref(), one).await);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{config::Config, db::connect, metrics::Metrics};
    use serde_json::json;

    #[tokio::test]
    async fn a_batch_inserts_each_new_key_once_and_answers_409_for_the_rest() {
        let file = std::env::temp_dir().join(format!("aside-batch-{}.db", uuid::Uuid::new_v4()));
        let mut cfg = Config::from_vars(&Default::default()).expect("defaults");
        cfg.database_url = format!("sqlite://{}?mode=rwc", file.display());
        crate::migration::run(&cfg).await.expect("migrate");
        let store = Store::without_workers(connect(&cfg).await.expect("connect"), Metrics::new().expect("m"));
        store.insert_one("taken".into(), json!(0)).await.expect("first insert");

        let (mut batch, mut outcomes) = (Vec::new(), Vec::new());
        for key in ["a", "taken", "b", "a"] {
            let (reply, outcome) = oneshot::channel();
            batch.push(QueuedInsert {
                key: key.into(),
                value: json!({ "k": key }),
                reply,
                request_id: None,
                trace: None,
            });
            outcomes.push(outcome);
        }
        store.insert_batch(batch).await;
        let mut got = Vec::new();
        for o in outcomes {
            got.push(o.await.expect("every row gets an answer"));
        }
        let _ = std::fs::remove_file(&file);

        let (a, b) = (got[0].as_ref().expect("a inserted"), got[2].as_ref().expect("b inserted"));
        assert_eq!((a.key.as_str(), &a.value, b.key.as_str()), ("a", &json!({"k": "a"}), "b"));
        assert!(a.id < b.id, "ids follow the order the rows were queued in");
        assert!(matches!(got[1], Err(ApiError::Conflict(_))), "an existing key is 409");
        assert!(matches!(got[3], Err(ApiError::Conflict(_))), "a key repeated in one batch is 409");
    }
}

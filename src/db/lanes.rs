//! Connections for the hot statements, held outside sqlx's pool, and the rule that keeps every
//! connection to Postgres (these and the pool's) usable after an outage (DESIGN.md, "After an outage").
//!
//! Why outside the pool: sqlx's pool pings every connection it gets back (a `Sync` round trip to
//! Postgres, in a task it spawns) before reusing it; strace showed 2 writes to Postgres per cache miss
//! and per PUT, one of them that ping. Here a connection goes back to the idle list only when its
//! statement completed (or failed with an ordinary SQL error, after which sqlx leaves it ready);
//! cancelled mid-statement or broken, it is closed. At most `LANES` at once, opened on demand with the
//! pool's own options.
//!
//! Why they survive a Postgres restart or a network cut (HikariCP's rule, and the same for the pool via
//! `before_acquire`): a connection is checked with a ping before use when it sat idle longer than
//! `CHECK_IF_IDLE`, or since a connection-class error was last seen on any connection ([`Signs`]). A
//! connection that fails the check is closed and the next one tried, so the statement, whatever its
//! kind, goes out on a live connection. Under load a connection is back in use within milliseconds and
//! is never checked: no round trip on the hot path.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use sea_orm::{
    DbErr, RuntimeErr,
    error::ConnAcquireErr,
    sqlx::{self, Connection as _, PgPool, postgres::PgConnection},
};

/// A connection idle longer than this is checked before use (HikariCP's `aliveBypassWindowMs`): after
/// an outage every old connection has been idle at least as long as the outage lasted.
pub const CHECK_IF_IDLE: Duration = Duration::from_millis(500);

/// Hot statements in flight at once (each on its own connection).
pub const LANES: usize = 8;

/// When a connection to this database last showed a connection-class error. Connections idle since
/// before then may have died the same way (a restart or a cut kills them all at once), so they are
/// checked before their next use; healthy ones pass with one round trip instead of a reconnect.
pub struct Signs {
    epoch: Instant,
    /// Nanoseconds after `epoch` of the latest sign; 0 = none yet.
    broken_at: AtomicU64,
}

impl Default for Signs {
    fn default() -> Self {
        Self { epoch: Instant::now(), broken_at: AtomicU64::new(0) }
    }
}

impl Signs {
    /// Now, on this clock (nanoseconds after `epoch`; at least 1, so 0 can mean "never").
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX).max(1)
    }

    /// A connection-class error was just seen.
    pub fn broken(&self) {
        self.broken_at.fetch_max(self.now(), Ordering::Relaxed);
    }

    /// Whether a connection last known good `idle_for` ago must be checked before use.
    pub fn must_check(&self, idle_for: Duration) -> bool {
        if idle_for > CHECK_IF_IDLE {
            return true;
        }
        let last_ok = self.now().saturating_sub(u64::try_from(idle_for.as_nanos()).unwrap_or(u64::MAX));
        last_ok <= self.broken_at.load(Ordering::Relaxed)
    }

    /// The pool's `before_acquire`: the same rule for connections sqlx holds. A failed check is a sign
    /// too, and sqlx then closes that connection and opens a new one.
    pub fn check_pooled<'c>(
        self: &Arc<Self>,
        conn: &'c mut PgConnection,
        meta: sqlx::pool::PoolConnectionMetadata,
    ) -> Pin<Box<dyn Future<Output = Result<bool, sqlx::Error>> + Send + 'c>> {
        let signs = self.clone();
        Box::pin(async move {
            if signs.must_check(meta.idle_for)
                && let Err(e) = conn.ping().await
            {
                signs.broken();
                return Err(e);
            }
            Ok(true)
        })
    }
}

/// A connection-class failure: the connection cannot be used again, and others to the same server may
/// be dead too. I/O, TLS and protocol errors, SQLSTATE class 08 (connection exception) and 57P
/// (operator intervention: admin/crash shutdown, cannot connect now, idle-session timeout).
pub fn connection_class(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(d) => d.code().is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
        _ => false,
    }
}

/// The lanes: idle connections (last one returned is reused first, so under light load the same few
/// stay warm) and a permit per connection in use.
pub struct Lanes {
    options: Arc<sqlx::postgres::PgConnectOptions>,
    idle: Mutex<Vec<Idle>>,
    permits: tokio::sync::Semaphore,
    signs: Arc<Signs>,
    acquire_timeout: Duration,
}

struct Idle {
    conn: PgConnection,
    since: Instant,
}

/// One connection in use; returned to the idle list on drop only if marked `reusable`.
struct Lane<'a> {
    lanes: &'a Lanes,
    conn: Option<PgConnection>,
    reusable: bool,
    _permit: tokio::sync::SemaphorePermit<'a>,
}

impl Lanes {
    pub fn new(pool: &PgPool, signs: Arc<Signs>, acquire_timeout: Duration) -> Self {
        Self {
            options: pool.connect_options(),
            idle: Mutex::default(),
            permits: tokio::sync::Semaphore::new(LANES),
            signs,
            acquire_timeout,
        }
    }

    fn pop_idle(&self) -> Option<Idle> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    /// A lane; failing to get one is `DbErr::ConnectionAcquire` or `DbErr::Conn` (both 503, and a
    /// refused or failed connect is not mistaken for an error of the statement).
    async fn acquire(&self) -> Result<Lane<'_>, DbErr> {
        // One deadline for the permit, the checks and a connect: a silent Postgres is a fast 503.
        tokio::time::timeout(self.acquire_timeout, self.acquire_within())
            .await
            .map_err(|_| DbErr::ConnectionAcquire(ConnAcquireErr::Timeout))?
    }

    async fn acquire_within(&self) -> Result<Lane<'_>, DbErr> {
        let permit =
            self.permits.acquire().await.map_err(|_| DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed))?;
        // Each round either hands out a connection or closes a dead one, so it ends within the idle
        // list's length (at most LANES) plus one connect.
        let conn = loop {
            let Some(Idle { mut conn, since }) = self.pop_idle() else {
                use sqlx::ConnectOptions;
                // Boxed: sqlx's connect future is KiBs, and it would make every statement's future (and
                // the write task that carries it) that large; it is only polled when a lane is opened.
                break Box::pin(self.options.connect())
                    .await
                    .map_err(|e| DbErr::Conn(RuntimeErr::SqlxError(e.into())))?;
            };
            if !self.signs.must_check(since.elapsed()) {
                break conn;
            }
            // Boxed for the same reason; polled only for a connection that sat idle.
            match Box::pin(conn.ping()).await {
                Ok(()) => break conn,
                // Found dead before use: nothing of the statement was sent, so any statement may go
                // out on the next connection. Dropped, not closed: the socket is gone anyway.
                Err(e) => {
                    tracing::info!(error = %e, "idle database connection was dead; trying another");
                    self.signs.broken();
                }
            }
        };
        Ok(Lane { lanes: self, conn: Some(conn), reusable: false, _permit: permit })
    }

    /// Runs one statement on a lane; its failure is `DbErr::Query`.
    pub async fn run<T, F>(&self, f: F) -> Result<T, DbErr>
    where
        F: for<'c> FnOnce(&'c mut PgConnection) -> Pin<Box<dyn Future<Output = Result<T, sqlx::Error>> + Send + 'c>>,
    {
        let mut lane = self.acquire().await?;
        let Some(conn) = lane.conn.as_mut() else { return Err(DbErr::ConnectionAcquire(ConnAcquireErr::Timeout)) };
        let done = f(conn).await;
        match &done {
            Ok(_) => lane.reusable = true,
            Err(e) if connection_class(e) => self.signs.broken(),
            // An ordinary SQL error (a unique violation…): sqlx leaves the connection ready.
            Err(sqlx::Error::Database(_)) => lane.reusable = true,
            // Anything else (a row that does not decode…): not the connection's fault, but its state
            // is not known either; closed.
            Err(_) => {}
        }
        done.map_err(|e| DbErr::Query(RuntimeErr::SqlxError(e.into())))
    }
}

impl Drop for Lane<'_> {
    fn drop(&mut self) {
        if self.reusable
            && let Some(conn) = self.conn.take()
        {
            let idle = Idle { conn, since: Instant::now() };
            self.lanes.idle.lock().unwrap_or_else(|p| p.into_inner()).push(idle);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_checked_after_idling_past_the_window_or_since_a_sign() {
        let signs = Signs::default();
        std::thread::sleep(Duration::from_millis(5));
        assert!(!signs.must_check(Duration::from_millis(1)), "busy and no sign: used as is");
        assert!(signs.must_check(CHECK_IF_IDLE + Duration::from_millis(1)), "idle past the window");
        signs.broken();
        assert!(signs.must_check(Duration::from_millis(1)), "idle since before the sign");
        std::thread::sleep(Duration::from_millis(5));
        assert!(!signs.must_check(Duration::ZERO), "returned after the sign: proven alive since");
    }

    #[test]
    fn only_connection_class_errors_are_signs() {
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(connection_class(&io));
        assert!(connection_class(&sqlx::Error::Protocol("unexpected message".into())));
        assert!(!connection_class(&sqlx::Error::RowNotFound));
        assert!(!connection_class(&sqlx::Error::PoolTimedOut));
    }
}

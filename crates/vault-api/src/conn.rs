//! One client connection, from its first byte to its close: served by hyper-util (HTTP/1.1, or
//! HTTP/2 for REST and gRPC alike), closed gracefully when the replica stops, and closed when it
//! sits idle, with no call or stream in progress, for longer than its limit: HTTP/2 clients
//! (gRPC channels) keep connections open between calls, and every open one holds a descriptor.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};

/// Calls in progress on one connection, and when the last one ended.
pub(crate) struct Activity {
    started: Instant,
    open: AtomicUsize,
    /// Milliseconds after `started` when the last call ended (or the connection began).
    last_ms: AtomicU64,
}

impl Activity {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Activity {
            started: Instant::now(),
            open: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
        })
    }

    /// A call begins; it ends when the guard (held by its answer's body) is dropped.
    pub(crate) fn begin(self: &Arc<Self>) -> CallGuard {
        self.open.fetch_add(1, Ordering::SeqCst);
        CallGuard(self.clone())
    }

    /// How long the connection has had no call in progress (zero while one is).
    fn idle_for(&self) -> Duration {
        if self.open.load(Ordering::SeqCst) > 0 {
            return Duration::ZERO;
        }
        let last = Duration::from_millis(self.last_ms.load(Ordering::SeqCst));
        self.started.elapsed().saturating_sub(last)
    }
}

/// One call in progress on a connection.
pub(crate) struct CallGuard(Arc<Activity>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        let a = &self.0;
        a.last_ms
            .store(a.started.elapsed().as_millis() as u64, Ordering::SeqCst);
        a.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An answer's body that keeps its call counted as in progress until it is sent or dropped
/// (an event stream is a call for as long as it lasts).
pub(crate) struct GuardedBody {
    inner: Body,
    _call: CallGuard,
}

impl GuardedBody {
    pub(crate) fn wrap(inner: Body, call: CallGuard) -> Body {
        Body::new(GuardedBody { inner, _call: call })
    }
}

impl http_body::Body for GuardedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Serve `conn` until it ends: closed gracefully with `close` (GOAWAY for HTTP/2, after the
/// answer in flight for HTTP/1) when `stopping` turns true or when `activity` has been idle for
/// `idle`.
pub(crate) async fn drive<C, E>(
    conn: C,
    close: impl Fn(Pin<&mut C>),
    activity: Arc<Activity>,
    idle: Duration,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) -> Result<(), E>
where
    C: Future<Output = Result<(), E>>,
{
    let mut conn = std::pin::pin!(conn);
    let mut check =
        tokio::time::interval((idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(5)));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut closing = false;
    // An idle connection told to close (GOAWAY) that a client does not close itself (it ignores
    // the frame, or is gone) is dropped this long after.
    let mut hard_close: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            r = conn.as_mut() => return r,
            _ = tokio::time::sleep_until(hard_close.unwrap_or_else(tokio::time::Instant::now)), if hard_close.is_some() => {
                return Ok(());
            }
            _ = stopping.wait_for(|s| *s), if !closing => {
                close(conn.as_mut());
                closing = true;
            }
            _ = check.tick(), if !closing => {
                if activity.idle_for() >= idle {
                    metrics::counter!("tv_http_connections_closed_idle_total").increment(1);
                    close(conn.as_mut());
                    closing = true;
                    hard_close = Some(tokio::time::Instant::now() + idle.min(Duration::from_secs(5)));
                }
            }
        }
    }
}

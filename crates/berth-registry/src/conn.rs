//! Serving connections with limits: berth's own accept loop over hyper's
//! connection API (what `axum::serve` does, plus what it cannot):
//!
//! - **connection caps**: in total and per client address. A connection
//!   over a cap is accepted and answered at once with `503` (JSON error
//!   `TOOMANYREQUESTS`, `Retry-After`, `Connection: close`), never left to
//!   stall in the backlog;
//! - **header-read and idle timeouts** as one timer per connection
//!   ([`TimedIo`]): a new connection must deliver a complete request header
//!   within `header_read_timeout`; between requests a keep-alive
//!   connection gets `idle_timeout` for the next request to start, then
//!   `header_read_timeout` from its first byte for the header (Go's
//!   `ReadHeaderTimeout`/`IdleTimeout` semantics). hyper's own
//!   `header_read_timeout` is not used: it starts when the previous
//!   response ends, so idle time and header time would be one budget, and
//!   it does not cover HTTP/2;
//! - **a minimum body rate** ([`RateBody`]): a request body delivering
//!   less than the minimum during a window of the server *waiting for it*
//!   is cut with an error the handler answers (and a log line);
//! - **descriptor exhaustion** at `accept`: a spare descriptor is released
//!   to accept and refuse one connection, instead of the listener spinning
//!   (or, as in axum, sleeping a second per error) while clients stall.
//!
//! The timers are tokio timers, one per connection and one per slow body,
//! set only when a read is about to wait (a request arriving in one read
//! touches no timer); nothing polls on an interval.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http;
use axum::response::Response;
use bytes::Bytes;
use futures_util::task::AtomicWaker;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{watch, Semaphore};
use tokio::time::{Instant, Sleep};

use crate::limits::BodyRate;

/// A source of connections: TCP (peers keyed by address) or the local Unix
/// socket (no per-client key).
pub(crate) trait Accept: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Io, Option<String>)>> + Send;
}

impl Accept for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;

    async fn accept(&mut self) -> io::Result<(Self::Io, Option<String>)> {
        let (stream, peer) = tokio::net::TcpListener::accept(self).await?;
        // Small responses (manifests, 202s) must not wait for Nagle.
        let _ = stream.set_nodelay(true);
        Ok((stream, Some(crate::limits::client_key(peer.ip()))))
    }
}

/// What a listener enforces.
#[derive(Debug, Clone)]
pub(crate) struct ConnLimits {
    pub header_read_timeout: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    pub min_body_rate: Option<BodyRate>,
    /// 0: none.
    pub max_connections: usize,
    /// 0: none.
    pub max_connections_per_client: usize,
    /// Refusals answered at once; beyond, refused connections are closed.
    pub refusals: usize,
}

/// Per-request handler of a listener.
pub(crate) type Handler = Arc<
    dyn Fn(http::Request<Body>, Option<Arc<str>>) -> Pin<Box<dyn Future<Output = Response> + Send>>
        + Send
        + Sync,
>;

/// Serves `listener` until `stop` turns true, then lets the requests in
/// flight finish (graceful shutdown) and returns.
pub(crate) async fn serve<A: Accept>(
    mut listener: A,
    limits: ConnLimits,
    handler: Handler,
    mut stop: watch::Receiver<bool>,
) -> io::Result<()> {
    let tracker = Arc::new(Tracker::new(&limits));
    let refusals = Arc::new(Semaphore::new(limits.refusals.max(1)));
    let limits = Arc::new(limits);
    let (close_tx, close_rx) = watch::channel(());
    // A descriptor to give back when the process runs out, so that one
    // pending connection can be accepted and refused.
    let mut spare = std::fs::File::open("/dev/null").ok();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            a = listener.accept() => a,
        };
        let (io, client) = match accepted {
            Ok(a) => a,
            Err(e) if is_fd_exhaustion(&e) => {
                warn_limited(&LAST_FD_WARNING, || {
                    tracing::error!(
                        "accept: out of file descriptors ({e}); refusing connections until some close"
                    )
                });
                if spare.take().is_some() {
                    if let Ok(Ok((io, _))) =
                        tokio::time::timeout(Duration::from_millis(10), listener.accept()).await
                    {
                        refuse_now(io, Refusal::Total(limits.max_connections));
                    }
                    spare = std::fs::File::open("/dev/null").ok();
                } else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                continue;
            }
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                tracing::error!("accept error: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let client: Option<Arc<str>> = client.map(Into::into);
        let guard = match tracker.admit(client.clone()) {
            Ok(g) => g,
            Err(why) => {
                warn_limited(&LAST_REFUSAL_WARNING, || {
                    tracing::warn!(
                        client = client.as_deref().unwrap_or("local"),
                        "refusing connections (503): {why}"
                    )
                });
                match refusals.clone().try_acquire_owned() {
                    Ok(permit) => {
                        tokio::spawn(async move {
                            refuse(io, why).await;
                            drop(permit);
                        });
                    }
                    Err(_) => refuse_now(io, why),
                }
                continue;
            }
        };
        let state = Arc::new(ConnState::default());
        let io = TimedIo::new(io, state.clone(), &limits, guard);
        let handler = handler.clone();
        let rate = limits.min_body_rate;
        let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
            let state = state.clone();
            let handler = handler.clone();
            let client = client.clone();
            async move {
                let in_flight = InFlight::begin(state);
                let (parts, body) = req.into_parts();
                let body = match rate {
                    Some(rate) => Body::new(RateBody::new(body, rate, client.clone())),
                    None => Body::new(body),
                };
                let resp = handler(http::Request::from_parts(parts, body), client).await;
                Ok::<_, Infallible>(resp.map(|inner| DoneBody {
                    inner,
                    _in_flight: in_flight,
                }))
            }
        });
        let mut stop = stop.clone();
        let close_rx = close_rx.clone();
        tokio::spawn(async move {
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(io), service);
            tokio::pin!(conn);
            let mut stopping = false;
            loop {
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            tracing::trace!("connection ended: {e}");
                        }
                        break;
                    }
                    _ = stop.wait_for(|s| *s), if !stopping => {
                        stopping = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
            drop(close_rx);
        });
    }
    drop(close_rx);
    close_tx.closed().await;
    Ok(())
}

fn is_fd_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

static LAST_FD_WARNING: AtomicU64 = AtomicU64::new(0);
static LAST_REFUSAL_WARNING: AtomicU64 = AtomicU64::new(0);

/// Runs `log` at most once every 10 seconds per `last` (a flood must not
/// become a flood of log lines).
fn warn_limited(last: &AtomicU64, log: impl FnOnce()) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let prev = last.load(Ordering::Relaxed);
    if now >= prev + 10
        && last
            .compare_exchange(prev, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        log();
    }
}

/// Why a connection is refused.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Refusal {
    Total(usize),
    PerClient(usize),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Total(n) => write!(
                f,
                "the registry is serving its maximum of {n} connections: retry later"
            ),
            Refusal::PerClient(n) => write!(
                f,
                "this client address has {n} connections open, the most the registry allows: \
                 reuse them or retry later"
            ),
        }
    }
}

/// The whole 503 answer to a refused connection.
fn refusal_response(why: Refusal) -> Vec<u8> {
    let body = serde_json::json!({"errors": [{
        "code": "TOOMANYREQUESTS",
        "message": why.to_string(),
    }]})
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json; charset=utf-8\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\
         docker-distribution-api-version: registry/2.0\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Answers 503 and closes, reading what the client sent meanwhile (a
/// socket closed with unread data is reset, and the client would see the
/// reset instead of the answer). Bounded: 1 s, 64 KiB.
async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(mut io: S, why: Refusal) {
    let answer = refusal_response(why);
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        io.write_all(&answer).await?;
        io.shutdown().await?;
        let mut buf = [0u8; 4096];
        let mut total = 0;
        while total < 64 << 10 {
            match io.read(&mut buf).await? {
                0 => break,
                n => total += n,
            }
        }
        io::Result::Ok(())
    })
    .await;
}

/// Refuses without waiting for anything: when refusals themselves are at
/// their cap, or descriptors ran out.
fn refuse_now<S: AsyncWrite + Unpin + Send + 'static>(mut io: S, why: Refusal) {
    let answer = refusal_response(why);
    let waker = futures_util::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let _ = Pin::new(&mut io).poll_write(&mut cx, &answer);
    drop(io);
}

/// Open connections, in total and per client key.
struct Tracker {
    max_total: usize,
    max_per_client: usize,
    counts: Mutex<(usize, HashMap<Arc<str>, usize>)>,
}

impl Tracker {
    fn new(limits: &ConnLimits) -> Self {
        Tracker {
            max_total: limits.max_connections,
            max_per_client: limits.max_connections_per_client,
            counts: Mutex::new((0, HashMap::new())),
        }
    }

    fn admit(self: &Arc<Self>, client: Option<Arc<str>>) -> Result<ConnGuard, Refusal> {
        let mut c = self.counts.lock().expect("connection counts");
        if self.max_total > 0 && c.0 >= self.max_total {
            return Err(Refusal::Total(self.max_total));
        }
        if let Some(k) = &client {
            let n = c.1.get(k).copied().unwrap_or(0);
            if self.max_per_client > 0 && n >= self.max_per_client {
                return Err(Refusal::PerClient(self.max_per_client));
            }
            c.1.insert(k.clone(), n + 1);
        }
        c.0 += 1;
        Ok(ConnGuard {
            tracker: self.clone(),
            client,
        })
    }
}

/// One admitted connection; released when the connection is dropped.
pub(crate) struct ConnGuard {
    tracker: Arc<Tracker>,
    client: Option<Arc<str>>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut c = self.tracker.counts.lock().expect("connection counts");
        c.0 = c.0.saturating_sub(1);
        if let Some(k) = &self.client {
            if let Some(n) = c.1.get_mut(k) {
                *n -= 1;
                if *n == 0 {
                    c.1.remove(k);
                }
            }
        }
    }
}

/// Shared by a connection's I/O and its requests.
#[derive(Default)]
struct ConnState {
    /// Requests whose response has not been written completely.
    in_flight: AtomicUsize,
    /// Requests completed, so the I/O sees a new one end between its reads.
    completed: AtomicU64,
    /// The connection task's read, woken when the last request completes
    /// (the idle timer must start even if no byte arrives).
    reader: AtomicWaker,
}

/// A request in flight, until its response body is dropped (written or
/// abandoned).
struct InFlight(Arc<ConnState>);

impl InFlight {
    fn begin(state: Arc<ConnState>) -> Self {
        state.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(state)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.completed.fetch_add(1, Ordering::Relaxed);
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.reader.wake();
        }
    }
}

/// A response body that ends the request's [`InFlight`] when dropped.
pub(crate) struct DoneBody {
    inner: Body,
    _in_flight: InFlight,
}

impl http_body::Body for DoneBody {
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for (the rest of) a request header.
    Header,
    /// Between requests, waiting for the first byte of the next.
    Idle,
    /// A request is in flight: no timer here (bodies have their own).
    Busy,
}

/// A connection's I/O with its header and idle timer.
pub(crate) struct TimedIo<S> {
    inner: S,
    state: Arc<ConnState>,
    header_timeout: Option<Duration>,
    idle_timeout: Option<Duration>,
    timer: Option<Pin<Box<Sleep>>>,
    /// The current phase's deadline, if it has one.
    deadline: Option<Instant>,
    /// `timer` is not set to `deadline` yet: it is set only when a read is
    /// about to wait, so a request that arrives in one read (the common
    /// case) costs no timer update at all.
    stale: bool,
    phase: Phase,
    seen: u64,
    _guard: ConnGuard,
}

impl<S> TimedIo<S> {
    fn new(inner: S, state: Arc<ConnState>, limits: &ConnLimits, guard: ConnGuard) -> Self {
        let any = limits.header_read_timeout.is_some() || limits.idle_timeout.is_some();
        let mut io = TimedIo {
            inner,
            state,
            header_timeout: limits.header_read_timeout,
            idle_timeout: limits.idle_timeout,
            timer: any.then(|| Box::pin(tokio::time::sleep(Duration::ZERO))),
            deadline: None,
            stale: false,
            phase: Phase::Header,
            seen: 0,
            _guard: guard,
        };
        // A new connection must send its request header promptly (without
        // a header timeout, it gets the idle timeout for its first byte).
        if io.header_timeout.is_some() {
            io.arm(io.header_timeout);
        } else {
            io.phase = Phase::Idle;
            io.arm(io.idle_timeout);
        }
        io
    }

    fn arm(&mut self, timeout: Option<Duration>) {
        self.deadline = timeout.map(|t| Instant::now() + t);
        self.stale = self.deadline.is_some();
    }

    /// Called when a read is about to wait: sets the timer to the phase's
    /// deadline (registering the waker) and reports whether it passed.
    fn expired(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        let deadline = self.deadline?;
        let timer = self.timer.as_mut()?;
        if self.stale {
            timer.as_mut().reset(deadline);
            self.stale = false;
        }
        if timer.as_mut().poll(cx).is_pending() {
            return None;
        }
        self.deadline = None;
        let (what, after) = match self.phase {
            Phase::Header => ("no complete request header", self.header_timeout),
            _ => ("idle", self.idle_timeout),
        };
        let after = after.unwrap_or_default();
        if self.phase == Phase::Header {
            tracing::info!("closing a connection: {what} within {after:?} (header_read_timeout)");
        } else {
            tracing::debug!("closing a keep-alive connection idle for {after:?} (idle_timeout)");
        }
        Some(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{what} within {after:?}"),
        ))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TimedIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.timer.is_none() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        if this.state.in_flight.load(Ordering::Acquire) > 0 {
            this.phase = Phase::Busy;
            this.deadline = None;
            let r = Pin::new(&mut this.inner).poll_read(cx, buf);
            if r.is_pending() {
                this.state.reader.register(cx.waker());
                // The last request may have ended before the registration.
                if this.state.in_flight.load(Ordering::Acquire) == 0 {
                    cx.waker().wake_by_ref();
                }
            }
            return r;
        }
        let done = this.state.completed.load(Ordering::Relaxed);
        if this.phase == Phase::Busy || done != this.seen {
            // A request ended since the last read: wait for the next.
            this.seen = done;
            this.phase = Phase::Idle;
            this.arm(this.idle_timeout);
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if this.phase == Phase::Idle && buf.filled().len() > before {
                    // The next request started: its header has a deadline.
                    this.phase = Phase::Header;
                    this.arm(this.header_timeout);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match this.expired(cx) {
                Some(e) => Poll::Ready(Err(e)),
                None => {
                    // hyper does not read again when a response ends (it
                    // would only with its own header timer): the end of the
                    // request wakes this read, so the idle timer starts.
                    this.state.reader.register(cx.waker());
                    Poll::Pending
                }
            },
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TimedIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A request body with a minimum rate: fewer than `rate.min_bytes()` bytes
/// during `rate.window` of waiting for the client ends the body with an
/// error (the handler answers it; the connection closes, its body unread).
/// Only time spent waiting for the client counts, so a slow disk on the
/// server side never cuts an upload.
pub(crate) struct RateBody {
    inner: Incoming,
    rate: BodyRate,
    client: Option<Arc<str>>,
    /// Bytes in the current window.
    got: u64,
    /// Waiting time accumulated in the current window.
    waited: Duration,
    /// Since when we wait (the last poll was pending).
    waiting_since: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl RateBody {
    fn new(inner: Incoming, rate: BodyRate, client: Option<Arc<str>>) -> Self {
        RateBody {
            inner,
            rate,
            client,
            got: 0,
            waited: Duration::ZERO,
            waiting_since: None,
            timer: None,
        }
    }

    /// Ends a window of `rate.window` waiting: an error if it was too slow.
    fn end_window(&mut self) -> Result<(), axum::Error> {
        let min = self.rate.min_bytes();
        if self.got < min {
            let msg = format!(
                "request body too slow: {} bytes in {:?} of waiting, the minimum is {} bytes/s \
                 (min_body_rate over body_rate_window {:?})",
                self.got, self.rate.window, self.rate.bytes_per_sec, self.rate.window
            );
            tracing::warn!(
                client = self.client.as_deref().unwrap_or("local"),
                "cutting a request body: {msg}"
            );
            return Err(axum::Error::new(msg));
        }
        self.got = 0;
        self.waited = Duration::ZERO;
        Ok(())
    }
}

impl http_body::Body for RateBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(since) = this.waiting_since.take() {
                    this.waited += since.elapsed();
                }
                if let Some(d) = frame.data_ref() {
                    this.got += d.len() as u64;
                }
                if this.waited >= this.rate.window {
                    if let Err(e) = this.end_window() {
                        return Poll::Ready(Some(Err(e)));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(axum::Error::new(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let now = Instant::now();
                if this.waiting_since.is_none() {
                    this.waiting_since = Some(now);
                    let deadline = now + this.rate.window.saturating_sub(this.waited);
                    match this.timer.as_mut() {
                        Some(t) => t.as_mut().reset(deadline),
                        None => this.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
                    }
                }
                loop {
                    let timer = this.timer.as_mut().expect("armed above");
                    if timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    // A whole window of waiting has passed.
                    if let Err(e) = this.end_window() {
                        return Poll::Ready(Some(Err(e)));
                    }
                    let now = Instant::now();
                    this.waiting_since = Some(now);
                    let next = now + this.rate.window;
                    if let Some(t) = this.timer.as_mut() {
                        t.as_mut().reset(next);
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

//! Request bodies on their way upstream: streamed, never held whole. A
//! request its route may send again (it retries, or mirrors) keeps a replay
//! buffer of the chunks it streamed, up to [`Options::buffer_limit_bytes`]
//! (Envoy's `per_request_buffer_limit_bytes`); a body that outgrows it still
//! streams to the endpoint, but the buffer is dropped, the request is not
//! retried nor copied to mirrors, and the route's
//! `traffic_shift_http_retry_buffer_overflow_total` counts it (Envoy's
//! `retry_or_shadow_abandoned`).
//!
//! One attempt at a time owns the buffer and what is left of the client's
//! body ([`Replay`] takes it when made and puts it back when dropped), so a
//! chunk costs a reference count, not a lock.
//!
//! [`Options::buffer_limit_bytes`]: crate::Options::buffer_limit_bytes

use std::{
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use hyper::{
    body::{Body, Bytes, Frame, Incoming, SizeHint},
    header::HeaderMap,
};
use prometheus_client::metrics::counter::Counter;
use tokio::{sync::Notify, time::Sleep};

/// Why a request body could not be sent upstream.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    #[error("the client sent no request body bytes for {0:?}")]
    Idle(Duration),
    #[error("reading the request body from the client")]
    Client(#[source] hyper::Error),
    #[error("the request body failed earlier and cannot be sent again")]
    Failed,
}

/// The client's body, with a limit on the time between its chunks (the
/// proxy's `request_header_timeout`): a client that stalls mid-body does not
/// hold an upstream connection forever.
pub(crate) struct Source {
    incoming: Incoming,
    idle: Duration,
    /// Made the first time the body waits (once per request), re-armed
    /// when it waits again after a chunk.
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl Source {
    pub(crate) fn new(incoming: Incoming, idle: Duration) -> Self {
        Self {
            incoming,
            idle,
            timer: None,
            armed: false,
        }
    }

    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.incoming).poll_frame(cx) {
            self.armed = false;
            return Poll::Ready(frame.map(|f| f.map_err(BodyError::Client)));
        }
        if !self.armed {
            let deadline = tokio::time::Instant::now() + self.idle;
            match &mut self.timer {
                Some(timer) => timer.as_mut().reset(deadline),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            self.armed = true;
        }
        let expired = self
            .timer
            .as_mut()
            .is_some_and(|timer| timer.as_mut().poll(cx).is_ready());
        if expired {
            return Poll::Ready(Some(Err(BodyError::Idle(self.idle))));
        }
        Poll::Pending
    }
}

/// A request body as it goes to one upstream attempt.
pub(crate) enum RequestBody {
    Empty,
    /// Streamed once, kept nowhere.
    Stream(Source),
    Replay(Replay),
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            Self::Empty => Poll::Ready(None),
            Self::Stream(source) => source.poll_frame(cx),
            Self::Replay(replay) => replay.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Empty => true,
            Self::Stream(source) => source.incoming.is_end_stream(),
            Self::Replay(replay) => replay.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Empty => SizeHint::with_exact(0),
            Self::Stream(source) => source.incoming.size_hint(),
            Self::Replay(replay) => replay.shared.hint,
        }
    }
}

/// What a request that may be sent again shares between its attempts.
struct Shared {
    /// The buffer and the rest of the client's body, while no attempt
    /// holds them.
    state: Mutex<Option<State>>,
    /// An attempt put them back.
    returned: Notify,
    /// The body outgrew the limit: the buffer is gone.
    capped: AtomicBool,
    limit: usize,
    /// The route's overflow counter.
    overflow: Counter,
    hint: SizeHint,
}

struct State {
    source: Source,
    chunks: Vec<Bytes>,
    buffered: usize,
    /// The client's body ended (its trailers, if any, in `trailers`).
    done: bool,
    /// It failed: nothing more can be sent.
    failed: bool,
    trailers: Option<HeaderMap>,
}

/// A request body that can be sent again while it fits the replay buffer:
/// the handle the request keeps; [`Replayable::body`] gives each attempt
/// its body.
#[derive(Clone)]
pub(crate) struct Replayable {
    shared: Arc<Shared>,
}

impl Replayable {
    pub(crate) fn new(source: Source, limit: usize, overflow: Counter) -> Self {
        let hint = source.incoming.size_hint();
        let state = State {
            source,
            chunks: Vec::new(),
            buffered: 0,
            done: false,
            failed: false,
            trailers: None,
        };
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(Some(state)),
                returned: Notify::new(),
                capped: AtomicBool::new(false),
                limit,
                overflow,
                hint,
            }),
        }
    }

    /// Whether the body outgrew the replay buffer.
    pub(crate) fn overflowed(&self) -> bool {
        self.shared.capped.load(Ordering::Relaxed)
    }

    /// The body from its start, once the attempt before has let go of it
    /// (waiting up to `wait`); `None` if it outgrew the buffer, failed, or
    /// is still held.
    pub(crate) async fn body(&self, wait: Duration) -> Option<RequestBody> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if self.overflowed() {
                return None;
            }
            let returned = self.shared.returned.notified();
            tokio::pin!(returned);
            returned.as_mut().enable();
            match self.try_take() {
                Ok(body) => return body,
                Err(()) => {
                    if tokio::time::timeout_at(deadline, returned).await.is_err() {
                        return None;
                    }
                }
            }
        }
    }

    /// The body from its start if no attempt holds it (`None` if it
    /// cannot be sent again).
    pub(crate) fn take(&self) -> Option<RequestBody> {
        self.try_take().ok().flatten()
    }

    /// `Err`: an attempt holds the body.
    fn try_take(&self) -> Result<Option<RequestBody>, ()> {
        let state = self
            .shared
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .ok_or(())?;
        if state.failed || self.overflowed() {
            self.shared.put_back(state);
            return Ok(None);
        }
        Ok(Some(RequestBody::Replay(Replay {
            shared: Arc::clone(&self.shared),
            state: Some(state),
            next: 0,
            trailers_sent: false,
        })))
    }
}

impl Shared {
    fn put_back(&self, state: State) {
        *self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(state);
        self.returned.notify_waiters();
    }
}

/// One attempt's body: the buffered chunks again, then the rest of the
/// client's body (buffered on the way while it fits).
pub(crate) struct Replay {
    shared: Arc<Shared>,
    state: Option<State>,
    /// The next buffered chunk this attempt sends.
    next: usize,
    trailers_sent: bool,
}

impl Replay {
    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let Some(state) = self.state.as_mut() else {
            return Poll::Ready(None);
        };
        if state.failed {
            return Poll::Ready(Some(Err(BodyError::Failed)));
        }
        if let Some(chunk) = state.chunks.get(self.next) {
            self.next += 1;
            return Poll::Ready(Some(Ok(Frame::data(chunk.clone()))));
        }
        if !state.done {
            match ready!(state.source.poll_frame(cx)) {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        self.keep(data);
                    } else if let Some(trailers) = frame.trailers_ref() {
                        if let Some(state) = self.state.as_mut() {
                            state.trailers = Some(trailers.clone());
                        }
                        self.trailers_sent = true;
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Some(Err(err)) => {
                    state.failed = true;
                    return Poll::Ready(Some(Err(err)));
                }
                None => state.done = true,
            }
        }
        match (&state.trailers, self.trailers_sent) {
            (Some(trailers), false) => {
                self.trailers_sent = true;
                Poll::Ready(Some(Ok(Frame::trailers(trailers.clone()))))
            }
            _ => Poll::Ready(None),
        }
    }

    /// Buffers a chunk just read from the client while the buffer holds it;
    /// drops the buffer (and counts it) the first time it would not.
    fn keep(&mut self, data: &Bytes) {
        let Some(state) = self.state.as_mut() else {
            return;
        };
        if self.shared.capped.load(Ordering::Relaxed) {
            return;
        }
        if state.buffered + data.len() > self.shared.limit {
            self.shared.capped.store(true, Ordering::Relaxed);
            self.shared.overflow.inc();
            state.chunks = Vec::new();
            state.buffered = 0;
            self.next = 0;
        } else {
            state.chunks.push(data.clone());
            state.buffered += data.len();
            self.next += 1;
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state.as_ref().is_none_or(|state| {
            state.done
                && self.next >= state.chunks.len()
                && (self.trailers_sent || state.trailers.is_none())
        })
    }
}

impl Drop for Replay {
    fn drop(&mut self) {
        if let Some(state) = self.state.take() {
            self.shared.put_back(state);
        }
    }
}

/// A request's body as its attempts (and mirrors) get it.
pub(crate) enum Outbound {
    Empty,
    /// The route neither retries nor mirrors: streamed once, kept nowhere.
    Once(Option<Source>),
    Replayable(Replayable),
}

impl Outbound {
    /// The first attempt's body.
    pub(crate) fn first(&mut self) -> Option<RequestBody> {
        match self {
            Self::Empty => Some(RequestBody::Empty),
            Self::Once(source) => source.take().map(RequestBody::Stream),
            Self::Replayable(replayable) => replayable.take(),
        }
    }

    /// The body from its start again, waiting up to `wait` for the attempt
    /// before to let go of it; `None` if it is not kept (see
    /// [`Replayable::body`]).
    pub(crate) async fn again(&mut self, wait: Duration) -> Option<RequestBody> {
        match self {
            Self::Empty => Some(RequestBody::Empty),
            Self::Once(_) => None,
            Self::Replayable(replayable) => replayable.body(wait).await,
        }
    }

    pub(crate) fn overflowed(&self) -> bool {
        matches!(self, Self::Replayable(r) if r.overflowed())
    }
}

//! The socket's Server-Sent Events fallback, `GET /v1/analyses/{id}/stream`: the same hello,
//! replay and events as a socket's, as `text/event-stream`. A stream is an open response,
//! so it keeps the object awake; it ends after `STAGECAST_SSE_MAX_MS` (or at the token's
//! expiry) with a `retry:` hint, and the `EventSource` comes back with `Last-Event-ID`.

use std::cell::RefCell;
use std::pin::pin;
use std::time::Duration;

use futures_channel::mpsc;
use futures_util::future::{Either, select};
use futures_util::{Stream, StreamExt, stream};
use stagecast_shared::api::{ErrorBody, ErrorCode};
use stagecast_shared::stored::StoredEvent;
use worker::{Delay, Headers, Response, Result};

use super::AnalysisObject;
use crate::clock::now_ms;
use crate::config::Limits;
use crate::forward::Forwarded;
use crate::respond::{ALLOW_ORIGIN, retry_later_response};
use crate::sse;

/// Batches a stream may have queued; a reader that falls this far behind is cut, and
/// resumes with `Last-Event-ID` (losing nothing) instead of growing the object's memory.
const QUEUE: usize = 64;

/// A comment goes out after this long without an event.
const PING_MS: i64 = 15_000;

/// The open streams' senders.
#[derive(Default)]
pub struct Streams(RefCell<Vec<mpsc::Sender<Vec<u8>>>>);

impl Streams {
    /// Open streams; ones whose reader went away are dropped first.
    pub fn len(&self) -> usize {
        let mut streams = self.0.borrow_mut();
        streams.retain(|tx| !tx.is_closed());
        streams.len()
    }

    /// Sends a commit's events to every stream, as one chunk.
    pub fn send(&self, stored: &[StoredEvent], frames: &[String]) {
        let mut streams = self.0.borrow_mut();
        if streams.is_empty() || stored.is_empty() {
            return;
        }
        let chunk: String = stored
            .iter()
            .zip(frames)
            .map(|(event, text)| sse::event(event.seq, text))
            .collect();
        streams.retain_mut(|tx| tx.try_send(chunk.clone().into_bytes()).is_ok());
    }

    /// Ends every stream once it has sent what it holds.
    pub fn end_all(&self) {
        self.0.borrow_mut().clear();
    }
}

impl AnalysisObject {
    pub(super) async fn open_stream(
        &self,
        fwd: &Forwarded,
        since: Option<u64>,
        limits: &Limits,
    ) -> Result<Response> {
        if self.subscribers_full(limits) {
            let body = ErrorBody::new(
                ErrorCode::Unavailable,
                format!(
                    "too many subscribers ({}): try again later",
                    limits.max_sockets
                ),
            );
            return retry_later_response(&body, 5);
        }
        // The greeting and the registration happen with no await in between: the stream
        // gets every event committed after its replay, and none twice.
        let (hello, frames) = self.greeting(&fwd.analysis_id, since, limits)?;
        let mut head = sse::hello(&serde_json::to_string(&hello)?);
        for frame in &frames {
            head.push_str(&sse::event(frame.seq, &frame.text));
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        self.streams.0.borrow_mut().push(tx);
        let end_at_ms = fwd
            .principal
            .expires_at_ms
            .min(now_ms().saturating_add(limits.sse_max_ms as i64));
        tracing::info!(since, replayed = frames.len(), "stream opened");
        let headers = Headers::new();
        headers.set("content-type", sse::CONTENT_TYPE)?;
        headers.set("cache-control", "no-store")?;
        // proxies that buffer responses would hold events back
        headers.set("x-accel-buffering", "no")?;
        headers.set(ALLOW_ORIGIN.0, ALLOW_ORIGIN.1)?;
        Ok(Response::from_stream(body(head.into_bytes(), rx, end_at_ms))?.with_headers(headers))
    }
}

/// `head`, then the live chunks with a ping in every quiet spell, then the end.
fn body(
    head: Vec<u8>,
    rx: mpsc::Receiver<Vec<u8>>,
    end_at_ms: i64,
) -> impl Stream<Item = Result<Vec<u8>>> {
    let live = stream::unfold(Some(rx), move |rx| async move {
        let mut rx = rx?;
        let left = end_at_ms - now_ms();
        if left <= 0 {
            return Some((sse::end().into_bytes(), None));
        }
        let wait = pin!(Delay::from(Duration::from_millis(left.min(PING_MS) as u64)));
        let next = match select(rx.next(), wait).await {
            Either::Left((chunk, _)) => Some(chunk),
            Either::Right(_) => None,
        };
        Some(match next {
            Some(Some(chunk)) => (chunk, Some(rx)),
            // cut for falling behind, or the analysis was deleted
            Some(None) => (sse::end().into_bytes(), None),
            None => (sse::PING.as_bytes().to_vec(), Some(rx)),
        })
    });
    stream::once(async move { head }).chain(live).map(Ok)
}

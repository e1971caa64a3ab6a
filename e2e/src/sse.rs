//! A Server-Sent Events reader of `GET /v1/analyses/{id}/stream`, for tests and the
//! benchmark: the edge's answer when it refused, else its events as they arrive (parsed by
//! the `eventsource-stream` crate).

use std::pin::Pin;
use std::time::Duration;

pub use eventsource_stream::Event;
use eventsource_stream::{EventStreamError, Eventsource};
use futures_util::{Stream, StreamExt};
use serde_json::Value;
use stagecast_shared::stored::StoredEvent;

type Events = Pin<Box<dyn Stream<Item = Result<Event, EventStreamError<reqwest::Error>>> + Send>>;

/// One open stream.
pub struct SseStream {
    pub headers: reqwest::header::HeaderMap,
    events: Events,
}

/// What one `event:` said: its name, its `id:` (empty when none) and its JSON data.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub event: String,
    pub id: String,
    pub data: Value,
}

impl SseStream {
    /// Opens `url` with `token` in `Authorization` (none: the URL carries it) and
    /// `last_event_id`; the status and error body when the edge refused.
    pub async fn open(
        url: &str,
        token: Option<&str>,
        last_event_id: Option<&str>,
    ) -> anyhow::Result<Result<SseStream, (u16, Value)>> {
        let mut request = reqwest::Client::new().get(url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        if status != 200 {
            return Ok(Err((status, response.json().await.unwrap_or(Value::Null))));
        }
        let headers = response.headers().clone();
        let events = Box::pin(response.bytes_stream().eventsource());
        Ok(Ok(SseStream { headers, events }))
    }

    /// The next event but heartbeats (`pong`), as it came; None once the stream ended.
    pub async fn next_raw(&mut self) -> anyhow::Result<Option<Event>> {
        while let Some(item) = self.events.next().await {
            let event = item?;
            if event.event != "pong" {
                return Ok(Some(event));
            }
        }
        Ok(None)
    }

    /// The next event but heartbeats, its data parsed; None once the stream ended.
    pub async fn next(&mut self, timeout: Duration) -> anyhow::Result<Option<SseEvent>> {
        let Some(event) = tokio::time::timeout(timeout, self.next_raw()).await?? else {
            return Ok(None);
        };
        Ok(Some(SseEvent {
            data: serde_json::from_str(&event.data)?,
            event: event.event,
            id: event.id,
        }))
    }

    /// Stored events until seq `last` arrived; checks each one's `id:` is its seq.
    pub async fn events_until(
        &mut self,
        last: u64,
        timeout: Duration,
    ) -> anyhow::Result<Vec<StoredEvent>> {
        let mut got = Vec::new();
        while got.last().is_none_or(|e: &StoredEvent| e.seq < last) {
            let event = self
                .next(timeout)
                .await?
                .ok_or_else(|| anyhow::anyhow!("the stream ended before seq {last}"))?;
            anyhow::ensure!(event.event == "event", "not an event: {event:?}");
            let mut data = event.data;
            data.as_object_mut().map(|o| o.remove("type"));
            let stored: StoredEvent = serde_json::from_value(data)?;
            anyhow::ensure!(
                event.id == stored.seq.to_string(),
                "id {} for seq {}",
                event.id,
                stored.seq
            );
            got.push(stored);
        }
        Ok(got)
    }
}

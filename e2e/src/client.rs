//! Clients of the edge: token minting, publishing and WebSocket subscribers.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use stagecast_shared::EventKind;
use stagecast_shared::StoredEvent;
use stagecast_shared::stored::StoredEventBody;
use stagecast_shared::token::{Claims, Scope, SigningKey, mint};
use stagecast_shared::ws::ServerMessage;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The dev tenant's secret every test edge is started with.
pub const DEV_SECRET: &str = "e2e-dev-secret-0123456789abcdef0123";

pub fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Mints tokens of the dev tenant.
pub struct Tokens;

impl Tokens {
    pub fn key() -> SigningKey {
        SigningKey::dev(DEV_SECRET).unwrap()
    }
    pub fn claims(scopes: &[Scope], analyses: &[&str]) -> Claims {
        Claims::new("dev", "tester", scopes, analyses, now_s(), 600)
    }
    pub fn sign(claims: &Claims) -> String {
        mint(claims, &Self::key()).unwrap()
    }
    pub fn node(analysis: &str) -> String {
        Self::sign(&Self::claims(&[Scope::Publish], &[analysis]))
    }
    pub fn viewer(analysis: &str) -> String {
        Self::sign(&Self::claims(
            &[Scope::Subscribe, Scope::Cancel],
            &[analysis],
        ))
    }
}

/// Events of a small analysis: started, `n` progress events over two stages, completed.
pub fn sample_events(n: usize) -> Vec<Value> {
    let mut events = vec![json!({"id": "e-start", "type": "started",
        "stages": [{"name": "decode", "weight": 1.0}, {"name": "infer", "weight": 3.0}]})];
    for i in 1..=n {
        let (stage, p) = if i <= n / 2 {
            ("decode", i as f64 / (n / 2) as f64)
        } else {
            ("infer", (i - n / 2) as f64 / (n - n / 2) as f64)
        };
        events.push(json!({"id": format!("e-{i}"), "type": "progress", "stage": stage, "stage_progress": p}));
    }
    events.push(
        json!({"id": "e-done", "type": "completed", "result": {"score": 0.9, "flagged": true,
        "frames_processed": 10, "total_frames": 10, "regions": [], "validation_required": false}}),
    );
    events
}

/// `GET url` with `token`; the JSON answer (panics when there is none: for tests).
pub async fn get_json(url: &str, token: &str) -> Value {
    reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("the edge answers")
        .json()
        .await
        .expect("a JSON answer")
}

/// Posts a batch; returns the status and the JSON body.
pub async fn publish(base: &str, analysis: &str, token: &str, events: &[Value]) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{base}/v1/analyses/{analysis}/events"))
        .bearer_auth(token)
        .json(&json!({ "events": events }))
        .send()
        .await
        .expect("publish request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A browser-like subscriber.
pub struct Subscriber {
    pub ws: Ws,
}

impl Subscriber {
    pub async fn connect(url: &str) -> anyhow::Result<Subscriber> {
        let (ws, _) = tokio_tungstenite::connect_async(url).await?;
        Ok(Subscriber { ws })
    }

    /// The next text frame, skipping pings and pongs; fails after `timeout`.
    async fn next_text(&mut self, timeout: Duration) -> anyhow::Result<String> {
        loop {
            let msg = tokio::time::timeout(timeout, self.ws.next())
                .await?
                .ok_or_else(|| anyhow::anyhow!("socket ended"))??;
            match msg {
                Message::Text(t) => return Ok(t.to_string()),
                Message::Close(frame) => anyhow::bail!("closed: {frame:?}"),
                _ => continue,
            }
        }
    }

    /// The next message as raw JSON, for tests of the wire format itself.
    pub async fn next_json(&mut self, timeout: Duration) -> anyhow::Result<Value> {
        Ok(serde_json::from_str(&self.next_text(timeout).await?)?)
    }

    /// The next message, typed; fails on a frame that is not a v1 server message.
    pub async fn next_message(&mut self, timeout: Duration) -> anyhow::Result<ServerMessage> {
        let text = self.next_text(timeout).await?;
        serde_json::from_str(&text).with_context(|| format!("not a server message: {text}"))
    }

    /// Waits for the close frame; returns its code and reason.
    pub async fn closed(&mut self, timeout: Duration) -> anyhow::Result<(u16, String)> {
        loop {
            let msg = tokio::time::timeout(timeout, self.ws.next()).await?;
            match msg {
                Some(Ok(Message::Close(Some(CloseFrame { code, reason })))) => {
                    return Ok((code.into(), reason.to_string()));
                }
                Some(Ok(Message::Close(None))) | None => anyhow::bail!("closed without a code"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => anyhow::bail!("socket error before close: {e}"),
            }
        }
    }

    pub async fn send_json(&mut self, value: &Value) -> anyhow::Result<()> {
        self.ws
            .send(Message::Text(value.to_string().into()))
            .await?;
        Ok(())
    }

    /// Collects event frames until one with `seq == last`.
    pub async fn events_until(
        &mut self,
        last: u64,
        timeout: Duration,
    ) -> anyhow::Result<Vec<StoredEvent>> {
        let mut events = Vec::new();
        while events.last().map(|e: &StoredEvent| e.seq) != Some(last) {
            if let ServerMessage::Event(event) = self.next_message(timeout).await? {
                events.push(event);
            }
        }
        Ok(events)
    }

    /// Appends event frames to `into` until the analysis's terminal event; `Err` when the
    /// socket ends (or is silent for `timeout`) first, with what came until then kept.
    pub async fn until_terminal(
        &mut self,
        into: &mut Vec<StoredEvent>,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        loop {
            if let ServerMessage::Event(event) = self.next_message(timeout).await? {
                let done = is_terminal(&event);
                into.push(event);
                if done {
                    return Ok(());
                }
            }
        }
    }
}

/// The node event a stored event carries; `None` for the edge's own events.
pub fn node_event(e: &StoredEvent) -> Option<&EventKind> {
    match &e.event {
        StoredEventBody::Node(event) => Some(&event.kind),
        StoredEventBody::Edge(_) => None,
    }
}

/// The `type` of a stored event, e.g. `"progress"` or `"cancel_requested"`.
pub fn kind(e: &StoredEvent) -> &'static str {
    e.event.type_name()
}

/// Completed, failed or cancelled: the analysis's last event.
pub fn is_terminal(e: &StoredEvent) -> bool {
    node_event(e).is_some_and(EventKind::is_terminal)
}

/// The `(seq, event id)` of a stored event: what the exactly-once check compares.
pub fn seq_and_id(e: &StoredEvent) -> (u64, String) {
    (e.seq, e.event.id().to_owned())
}

/// How one subscriber's event frames compare with the log they should be exactly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Events of the log the subscriber never got.
    pub lost: u64,
    /// Frames of an event the subscriber already had.
    pub repeated: u64,
    /// The frames are exactly the log, in order: nothing lost, repeated, reordered or extra.
    pub exact: bool,
}

impl Delivery {
    /// Compares `seen` (`(seq, id)` in arrival order, repeats and gaps included) with `log`
    /// (what the edge or the publisher stored, as `(seq, id)`).
    pub fn check(seen: &[(u64, String)], log: &[(u64, String)]) -> Delivery {
        let mut counts: BTreeMap<&(u64, String), u64> = BTreeMap::new();
        for event in seen {
            *counts.entry(event).or_default() += 1;
        }
        Delivery {
            lost: log.iter().filter(|e| !counts.contains_key(e)).count() as u64,
            repeated: counts.values().map(|n| n - 1).sum(),
            exact: seen == log,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Delivery;

    fn events(seqs: &[u64]) -> Vec<(u64, String)> {
        seqs.iter().map(|s| (*s, format!("e-{s}"))).collect()
    }

    fn lost_and_repeated(seen: &[(u64, String)], log: &[(u64, String)]) -> (u64, u64) {
        let d = Delivery::check(seen, log);
        (d.lost, d.repeated)
    }

    #[test]
    fn lost_and_repeated_counts_what_is_missing_and_what_came_twice() {
        let truth = events(&[1, 2, 3, 4]);
        assert_eq!(lost_and_repeated(&events(&[1, 2, 3, 4]), &truth), (0, 0));
        assert_eq!(lost_and_repeated(&events(&[1, 3, 4]), &truth), (1, 0));
        assert_eq!(
            lost_and_repeated(&events(&[1, 2, 2, 3, 3, 3, 4]), &truth),
            (0, 3)
        );
        assert_eq!(lost_and_repeated(&events(&[2, 2]), &truth), (3, 1));
        // the same seq with another id is not the event the edge stored
        let mut other = events(&[1, 2, 3, 4]);
        other[3].1 = "x".into();
        assert_eq!(lost_and_repeated(&other, &truth), (1, 0));
    }

    #[test]
    fn only_the_log_itself_in_order_is_exact() {
        let truth = events(&[1, 2, 3]);
        assert!(Delivery::check(&truth, &truth).exact);
        let d = Delivery::check(&events(&[1, 3, 2]), &truth);
        assert_eq!((d.lost, d.repeated, d.exact), (0, 0, false));
        assert!(!Delivery::check(&events(&[1, 2]), &truth).exact);
        assert!(!Delivery::check(&events(&[1, 2, 3, 3]), &truth).exact);
    }
}

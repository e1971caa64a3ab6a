//! Clients of the edge: token minting, publishing and WebSocket subscribers.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use stagecast_shared::token::{Claims, Scope, SigningKey, mint};
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

    /// The next JSON message, skipping pongs; fails after `timeout`.
    pub async fn next_json(&mut self, timeout: Duration) -> anyhow::Result<Value> {
        loop {
            let msg = tokio::time::timeout(timeout, self.ws.next())
                .await?
                .ok_or_else(|| anyhow::anyhow!("socket ended"))??;
            match msg {
                Message::Text(t) => return Ok(serde_json::from_str(&t)?),
                Message::Close(frame) => anyhow::bail!("closed: {frame:?}"),
                _ => continue,
            }
        }
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
    ) -> anyhow::Result<Vec<Value>> {
        let mut events = Vec::new();
        while events.last().and_then(|e: &Value| e["seq"].as_u64()) != Some(last) {
            let msg = self.next_json(timeout).await?;
            if msg["type"] == "event" {
                events.push(msg);
            }
        }
        Ok(events)
    }
}

/// Events of `truth` (what the edge stored, as `(seq, id)`) that `seen` misses, and frames
/// of `seen` that repeat an event already seen: what exactly-once delivery must keep at 0.
pub fn lost_and_repeated(seen: &[(u64, String)], truth: &[(u64, String)]) -> (u64, u64) {
    let mut counts: BTreeMap<&(u64, String), u64> = BTreeMap::new();
    for event in seen {
        *counts.entry(event).or_default() += 1;
    }
    let lost = truth.iter().filter(|e| !counts.contains_key(e)).count() as u64;
    let repeated = counts.values().map(|n| n - 1).sum();
    (lost, repeated)
}

#[cfg(test)]
mod tests {
    use super::lost_and_repeated;

    fn events(seqs: &[u64]) -> Vec<(u64, String)> {
        seqs.iter().map(|s| (*s, format!("e-{s}"))).collect()
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
}

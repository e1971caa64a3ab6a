//! A scripted pool node: speaks the node side of `GET /v1/pools/{pool}/connect` message by
//! message, so edge tests can play well-behaved, slow, stale or hostile nodes. Real nodes
//! (`stagecast-node serve --pool`) are in [`crate::node`].

use std::time::Duration;

use anyhow::Context as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use stagecast_shared::dispatch::{NodeMessage, PoolMessage};
use stagecast_shared::token::{Claims, Scope};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use crate::client::{Tokens, now_s};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A dev tenant token for node `node_id`: it joins pools and publishes.
pub fn node_token(node_id: &str) -> String {
    Tokens::sign(&Claims::new(
        "dev",
        node_id,
        &[Scope::Node, Scope::Publish],
        &["*"],
        now_s(),
        600,
    ))
}

/// A backend's submit token for every analysis of the dev tenant.
pub fn submit_token() -> String {
    Tokens::sign(&Tokens::claims(&[Scope::Submit], &["*"]))
}

/// An operator's token for the pool views.
pub fn admin_token() -> String {
    Tokens::sign(&Tokens::claims(&[Scope::Admin], &["*"]))
}

/// `POST /v1/analyses` with `body`: the status and the JSON answer.
pub async fn submit(base: &str, token: &str, body: &Value) -> (u16, Value, Option<String>) {
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/analyses"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("the edge answers");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let json = response.json().await.unwrap_or(Value::Null);
    (status, json, retry_after)
}

/// One scripted node socket.
pub struct PoolNode {
    ws: Ws,
    last_beat: std::time::Instant,
}

impl PoolNode {
    /// Connects to `pool` with `token` (in the `Authorization` header).
    pub async fn connect(ws_base: &str, pool: &str, token: &str) -> anyhow::Result<PoolNode> {
        let mut request = format!("{ws_base}/v1/pools/{pool}/connect").into_client_request()?;
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
        let (ws, _) = tokio_tungstenite::connect_async(request).await?;
        Ok(PoolNode {
            ws,
            last_beat: std::time::Instant::now(),
        })
    }

    /// Connects with `token`, reads `welcome`, then declares `slots` for `models`.
    pub async fn join(
        ws_base: &str,
        pool: &str,
        token: &str,
        slots: u32,
        models: &[&str],
    ) -> anyhow::Result<PoolNode> {
        let mut node = Self::connect(ws_base, pool, token).await?;
        match node.next(Duration::from_secs(10)).await? {
            PoolMessage::Welcome { .. } => {}
            other => anyhow::bail!("expected welcome, got {other:?}"),
        }
        node.send(&NodeMessage::Ready {
            slots,
            models: models.iter().map(|m| m.to_string()).collect(),
            labels: Default::default(),
        })
        .await?;
        Ok(node)
    }

    pub async fn send(&mut self, message: &NodeMessage) -> anyhow::Result<()> {
        self.send_text(&serde_json::to_string(message)?).await
    }

    pub async fn send_text(&mut self, text: &str) -> anyhow::Result<()> {
        self.ws.send(Message::Text(text.to_owned().into())).await?;
        Ok(())
    }

    /// The next edge message; fails on a close or after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> anyhow::Result<PoolMessage> {
        loop {
            let message = tokio::time::timeout(timeout, self.ws.next())
                .await
                .context("no message in time")?
                .ok_or_else(|| anyhow::anyhow!("socket ended"))??;
            match message {
                Message::Text(text) => {
                    return serde_json::from_str(&text)
                        .with_context(|| format!("not a pool message: {text}"));
                }
                Message::Close(frame) => anyhow::bail!("closed: {frame:?}"),
                _ => continue,
            }
        }
    }

    /// The close code and reason.
    pub async fn closed(&mut self, timeout: Duration) -> anyhow::Result<(u16, String)> {
        loop {
            match tokio::time::timeout(timeout, self.ws.next()).await? {
                Some(Ok(Message::Close(Some(CloseFrame { code, reason })))) => {
                    return Ok((code.into(), reason.to_string()));
                }
                Some(Ok(Message::Close(None))) | None => anyhow::bail!("closed without a code"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => anyhow::bail!("socket error before close: {e}"),
            }
        }
    }

    /// Waits for a lease; accepts it; returns (lease id, analysis id, attempt).
    pub async fn take_lease(&mut self, timeout: Duration) -> anyhow::Result<(String, String, u32)> {
        loop {
            if let PoolMessage::Lease {
                lease_id,
                analysis_id,
                attempt,
                ..
            } = self.next(timeout).await?
            {
                self.send(&NodeMessage::Accept {
                    lease_id: lease_id.clone(),
                })
                .await?;
                return Ok((lease_id, analysis_id.to_string(), attempt));
            }
        }
    }

    /// A heartbeat listing `running`, if `every` has passed since the last one: a node that
    /// stops heartbeating loses its leases, one that heartbeats too often is closed (4008).
    pub async fn heartbeat_if_due(
        &mut self,
        every: Duration,
        running: &[stagecast_shared::AnalysisId],
    ) -> anyhow::Result<()> {
        if self.last_beat.elapsed() < every {
            return Ok(());
        }
        self.last_beat = std::time::Instant::now();
        self.send(&NodeMessage::Heartbeat {
            metrics: None,
            running: running.to_vec(),
        })
        .await
    }

    /// Drops the socket without a close frame (a killed process).
    pub fn kill(self) {
        drop(self);
    }
}

/// Publishes `events` for `analysis` with `attempt` (fencing).
pub async fn publish_attempt(
    base: &str,
    analysis: &str,
    token: &str,
    attempt: Option<u32>,
    events: &[Value],
) -> (u16, Value) {
    let mut body = json!({"events": events});
    if let Some(attempt) = attempt {
        body["attempt"] = attempt.into();
    }
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/analyses/{analysis}/events"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("the edge answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

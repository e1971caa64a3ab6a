//! The subscribers of a soak run: each analysis followed from the start by many of them,
//! like the browser client follows one, through forced drops and whatever the faults do.

use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::StreamExt;
use serde_json::json;
use stagecast_shared::close::{CloseCode, Reconnect};
use stagecast_shared::ws::ServerMessage;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use super::Plan;
use crate::Node;
use crate::client::{Tokens, Ws, is_terminal, seq_and_id};

/// One WebSocket handshake and its hello.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Silence after which a subscriber takes its socket for dead.
const SILENCE_TIMEOUT: Duration = Duration::from_secs(60);
/// Reconnect backoff ceiling (full jitter from 100 ms, doubling).
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What one subscriber saw of its analysis.
#[derive(Debug, Default)]
pub(super) struct Followed {
    /// `(seq, event id)` in arrival order, repeats and gaps included.
    pub events: Vec<(u64, String)>,
    pub connections: u64,
    pub forced_drops: u64,
    /// A hello with `recovered: false`, a refusal, or no end by the deadline.
    pub problem: Option<String>,
}

/// One analysis and its subscribers, as they ended.
pub(super) struct Run {
    pub id: String,
    pub started: Instant,
    pub ended: Instant,
    pub followers: Vec<Followed>,
}

/// Submits analysis `id` to the node with `plan.subscribers` following it from the start,
/// and waits until every subscriber saw its end (or `deadline`).
pub(super) async fn one_analysis(
    node: &Node,
    plan: &Plan,
    ws_base: &str,
    video: &str,
    id: String,
    seed: u64,
    deadline: Instant,
) -> anyhow::Result<Run> {
    let started = Instant::now();
    let mut followers = JoinSet::new();
    for s in 0..plan.subscribers {
        followers.spawn(follow(
            format!("{ws_base}/v1/analyses/{id}/ws"),
            Tokens::viewer(&id),
            plan.drop_mean,
            seed.wrapping_mul(1_000_003).wrapping_add(s as u64),
            deadline,
        ));
    }
    let (status, body) = node
        .submit(&json!({"input": video, "analysis_id": id, "fps": plan.fps, "batch_size": 2}))
        .await;
    if status != 202 {
        bail!("the node refused {id}: {status} {body}");
    }
    let followers = followers.join_all().await;
    Ok(Run {
        id,
        started,
        ended: Instant::now(),
        followers,
    })
}

/// The resume and close-code rules of one subscriber, all in this one place (the sans-IO
/// `stagecast_shared::follow` is to take them over): it resumes with `since` = the highest
/// seq it saw, keeps every event frame as it arrived (repeats are not dropped: the check
/// counts them), takes a hello without recovery as a broken promise, and stops for good on
/// a close that says retrying cannot help.
#[derive(Debug, Default)]
struct Resume {
    last: u64,
}

impl Resume {
    /// The `since` of the next connection.
    fn since(&self) -> u64 {
        self.last
    }

    /// A hello arrived; `Err` when the edge could not replay from `since`.
    fn on_hello(&self, recovered: bool, hello: &str) -> Result<(), String> {
        if recovered {
            Ok(())
        } else {
            Err(format!(
                "resumed from {} without recovery: {hello}",
                self.last
            ))
        }
    }

    /// An event with `seq` arrived.
    fn on_event(&mut self, seq: u64) {
        self.last = self.last.max(seq);
    }

    /// Whether a close with `code` ends following for good (a bad or forbidden token, a
    /// bad request, a deleted analysis) rather than calling for a reconnect.
    fn is_final(code: u16) -> bool {
        matches!(
            CloseCode::from_code(code).map(CloseCode::reconnect),
            Some(Reconnect::Never | Reconnect::WithNewToken)
        )
    }
}

/// How a connection of a subscriber ended.
enum End {
    /// The analysis's terminal event arrived.
    Terminal,
    /// This subscriber dropped it on purpose.
    Dropped,
    /// The edge closed it or went away: reconnect.
    Lost,
    /// The edge refused for good (see [`Resume::is_final`]) or broke the contract.
    Refused(String),
}

/// Follows one analysis like the browser client does: replays from the start, resumes with
/// `since=<last seq>` after every drop, backs off with full jitter, and drops its own socket
/// (without a close frame) at random, `drop_mean` apart on average.
async fn follow(
    url: String,
    token: String,
    drop_mean: Duration,
    seed: u64,
    deadline: Instant,
) -> Followed {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut seen = Followed::default();
    let mut resume = Resume::default();
    let mut failures = 0u32;
    loop {
        if Instant::now() >= deadline {
            seen.problem = Some(format!(
                "no terminal event by the deadline (last seq {})",
                resume.since()
            ));
            return seen;
        }
        let drop_at = Instant::now() + drop_mean.mul_f64(-(1.0 - rng.f64()).ln());
        let end = match connect(&url, &token, resume.since()).await {
            Ok(ws) => {
                seen.connections += 1;
                failures = 0;
                session(ws, &mut resume, &mut seen, drop_at.min(deadline)).await
            }
            Err(_) => End::Lost,
        };
        match end {
            End::Terminal => return seen,
            End::Refused(why) => {
                seen.problem = Some(why);
                return seen;
            }
            End::Dropped => seen.forced_drops += 1,
            End::Lost => {
                failures += 1;
                let ceiling =
                    (Duration::from_millis(100) * 2u32.pow(failures.min(5))).min(MAX_BACKOFF);
                tokio::time::sleep(ceiling.mul_f64(rng.f64())).await;
            }
        }
    }
}

async fn connect(url: &str, token: &str, since: u64) -> anyhow::Result<Ws> {
    let mut request = format!("{url}?since={since}").into_client_request()?;
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_str(&format!("stagecast.v1, bearer.{token}"))?,
    );
    let (ws, _) =
        tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(request)).await??;
    Ok(ws)
}

/// Reads one connection: its hello, then events, each recorded in `seen`.
async fn session(mut ws: Ws, resume: &mut Resume, seen: &mut Followed, drop_at: Instant) -> End {
    let mut hello = false;
    loop {
        let next = tokio::time::timeout_at(
            drop_at.into(),
            tokio::time::timeout(SILENCE_TIMEOUT, ws.next()),
        )
        .await;
        let message = match next {
            // Dropped without a close frame, as a phone losing its network would.
            Err(_) => return End::Dropped,
            Ok(Err(_) | Ok(None | Some(Err(_)))) => return End::Lost,
            Ok(Ok(Some(Ok(message)))) => message,
        };
        let text = match message {
            Message::Text(text) => text,
            Message::Close(Some(frame)) if Resume::is_final(u16::from(frame.code)) => {
                return End::Refused(format!("closed with {}: {}", frame.code, frame.reason));
            }
            Message::Close(_) => return End::Lost,
            _ => continue,
        };
        let Ok(frame) = serde_json::from_str::<ServerMessage>(&text) else {
            return End::Refused(format!("a frame that is not a server message: {text}"));
        };
        match frame {
            ServerMessage::Hello { recovered, .. } => {
                hello = true;
                if let Err(why) = resume.on_hello(recovered, &text) {
                    return End::Refused(why);
                }
            }
            ServerMessage::Event(event) if hello => {
                seen.events.push(seq_and_id(&event));
                resume.on_event(event.seq);
                if is_terminal(&event) {
                    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                    return End::Terminal;
                }
            }
            ServerMessage::Event(_) => {
                return End::Refused(format!("an event before the hello: {text}"));
            }
            _ => {}
        }
    }
}

//! Publish-to-delivery latency: subscribers connected, paced single-event publishes stamped
//! with their send instant, latency per (subscriber, event) pair.

use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{Stream, StreamExt, stream};
use serde_json::json;
use stagecast_e2e::Tokens;
use stagecast_e2e::client::Ws;
use stagecast_e2e::sse::SseStream;
use tokio_tungstenite::tungstenite::Message;

use crate::{Bench, CONNECT_CONCURRENCY, Target, ms, quantile};

/// Latency runs: single-event batches, one every `LATENCY_PACE`.
pub const LATENCY_EVENTS: usize = 200;
pub const LATENCY_PACE: Duration = Duration::from_millis(20);
/// How long subscribers may still wait for the last events after the last publish.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Latency {
    pub subscribers: usize,
    pub connect: Duration,
    pub published: usize,
    /// Microseconds from just before the publish request to the frame's arrival at one
    /// subscriber, over every (subscriber, event) pair received.
    pub samples: Vec<u64>,
    pub missing: usize,
    pub event_frame_bytes: f64,
    pub hello_bytes: usize,
    publish_rtt_p50_us: u64,
}

/// The send instant (µs since the bench's origin) a progress event's frame carries in its
/// `message`.
fn stamp(frame: &str) -> Option<u64> {
    const STAMP: &str = r#""message":""#;
    let at = frame.find(STAMP)?;
    frame[at + STAMP.len()..].split('"').next()?.parse().ok()
}

/// Reads event frames until `expected` arrived or `deadline`: each one's latency, and the
/// frames' bytes.
async fn collect(
    frames: impl Stream<Item = String>,
    origin: Instant,
    expected: usize,
    deadline: tokio::time::Instant,
) -> (Vec<u64>, u64) {
    let mut frames = std::pin::pin!(frames);
    let mut samples = Vec::with_capacity(expected);
    let mut bytes = 0u64;
    while samples.len() < expected {
        let Ok(Some(frame)) = tokio::time::timeout_at(deadline, frames.next()).await else {
            break;
        };
        let arrived = origin.elapsed().as_micros() as u64;
        let Some(sent) = stamp(&frame) else { continue };
        bytes += frame.len() as u64;
        samples.push(arrived.saturating_sub(sent));
    }
    (samples, bytes)
}

/// [`collect`] on a socket, which it closes afterwards.
pub async fn receive(
    mut ws: Ws,
    origin: Instant,
    expected: usize,
    deadline: tokio::time::Instant,
) -> (Vec<u64>, u64) {
    let frames = (&mut ws).filter_map(|msg| {
        std::future::ready(match msg {
            Ok(Message::Text(text)) if text.starts_with(r#"{"type":"event""#) => {
                Some(text.to_string())
            }
            _ => None,
        })
    });
    let measured = collect(frames, origin, expected, deadline).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
    measured
}

/// [`collect`] on a Server-Sent Events stream; the bytes are the `data:` lines'.
async fn receive_sse(
    sse: SseStream,
    origin: Instant,
    expected: usize,
    deadline: tokio::time::Instant,
) -> (Vec<u64>, u64) {
    let events = stream::unfold(sse, |mut sse| async move {
        let event = sse.next_raw().await.ok().flatten()?;
        Some((event, sse))
    });
    let frames = events.filter_map(|e| std::future::ready((e.event == "event").then_some(e.data)));
    collect(frames, origin, expected, deadline).await
}

/// Long enough for every publish and the drain after it.
fn receive_deadline() -> tokio::time::Instant {
    tokio::time::Instant::now()
        + LATENCY_PACE * LATENCY_EVENTS as u32
        + Duration::from_secs(20)
        + DRAIN_TIMEOUT
}

/// WebSocket subscribers.
pub async fn latency(
    bench: &Bench,
    target: &Target,
    subscribers: usize,
) -> anyhow::Result<Latency> {
    let id = format!("lat-{subscribers}");
    bench.start_analysis(target, &id).await?;
    let connecting = Instant::now();
    let sockets = bench.open_sockets(target, &id, subscribers).await?;
    let connect = connecting.elapsed();
    let hello_bytes = sockets[0].1;
    let deadline = receive_deadline();
    let receivers = sockets
        .into_iter()
        .map(|(ws, _)| tokio::spawn(receive(ws, bench.origin, LATENCY_EVENTS, deadline)))
        .collect();
    paced(bench, target, &id, receivers, connect, hello_bytes).await
}

/// Server-Sent Events subscribers (`GET /v1/analyses/{id}/stream`, Stagecast only).
pub async fn sse_latency(
    bench: &Bench,
    target: &Target,
    subscribers: usize,
) -> anyhow::Result<Latency> {
    let id = format!("sse-lat-{subscribers}");
    bench.start_analysis(target, &id).await?;
    let url = format!(
        "{}/v1/analyses/{id}/stream?token={}",
        target.http,
        Tokens::viewer(&id)
    );
    let connecting = Instant::now();
    let opened: Vec<anyhow::Result<(SseStream, usize)>> = stream::iter(0..subscribers)
        .map(|_| async {
            let mut stream = SseStream::open(&url, None, None)
                .await?
                .map_err(|(status, body)| anyhow::anyhow!("refused: {status} {body}"))?;
            let hello = stream
                .next_raw()
                .await?
                .context("the stream ended before its hello")?;
            Ok((stream, hello.data.len()))
        })
        .buffer_unordered(CONNECT_CONCURRENCY)
        .collect()
        .await;
    let streams = opened.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    let connect = connecting.elapsed();
    let hello_bytes = streams[0].1;
    let deadline = receive_deadline();
    let receivers = streams
        .into_iter()
        .map(|(s, _)| tokio::spawn(receive_sse(s, bench.origin, LATENCY_EVENTS, deadline)))
        .collect();
    paced(bench, target, &id, receivers, connect, hello_bytes).await
}

/// Publishes the paced, stamped events to `id` and gathers what `receivers` measured.
async fn paced(
    bench: &Bench,
    target: &Target,
    id: &str,
    receivers: Vec<tokio::task::JoinHandle<(Vec<u64>, u64)>>,
    connect: Duration,
    hello_bytes: usize,
) -> anyhow::Result<Latency> {
    let subscribers = receivers.len();
    let token = Tokens::node(id);
    let mut ticker = tokio::time::interval(LATENCY_PACE);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rtts = Vec::with_capacity(LATENCY_EVENTS);
    let mut published = 0;
    for i in 1..=LATENCY_EVENTS {
        ticker.tick().await;
        let sent = bench.now_us();
        let event = json!({"id": format!("p-{i}"), "type": "progress", "stage": "run",
            "stage_progress": i as f64 / LATENCY_EVENTS as f64, "message": sent.to_string()});
        match bench.publish(target, id, &token, &[event]).await {
            Ok(_) => published += 1,
            Err(e) => eprintln!("  {}: publish {i}: {e:#}", target.name),
        }
        rtts.push(bench.now_us() - sent);
    }

    let mut samples = Vec::with_capacity(subscribers * published);
    let mut bytes = 0u64;
    for receiver in receivers {
        let (s, b) = receiver.await?;
        samples.extend(s);
        bytes += b;
    }
    samples.sort_unstable();
    rtts.sort_unstable();
    let received = samples.len();
    Ok(Latency {
        subscribers,
        connect,
        published,
        missing: subscribers * published - received.min(subscribers * published),
        event_frame_bytes: bytes as f64 / received.max(1) as f64,
        samples,
        hello_bytes,
        publish_rtt_p50_us: quantile(&rtts, 0.5),
    })
}

pub fn print_latency(name: &str, rows: &[(usize, anyhow::Result<Latency>)]) {
    println!();
    println!("## Publish-to-delivery latency: {name}");
    println!();
    println!(
        "One analysis; subscribers connected (no replay) before the first publish; {LATENCY_EVENTS} single-event `progress` batches published one every {} ms by one sequential publisher, each stamped (in `message`) with the instant just before its HTTP request; latency is from that instant to the frame's arrival at a subscriber, over every (subscriber, event) pair.",
        LATENCY_PACE.as_millis()
    );
    println!();
    println!(
        "| subscribers | connect all (s) | events published | pairs received | pairs missing | p50 (ms) | p99 (ms) | max (ms) | publish round trip p50 (ms) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (subscribers, r) in rows {
        match r {
            Ok(r) => print_latency_row(r),
            Err(e) => println!(
                "| {subscribers} | failed: {} | | | | | | | |",
                format!("{e:#}").replace('|', "/")
            ),
        }
    }
}

fn print_latency_row(r: &Latency) {
    println!(
        "| {} | {:.2} | {} | {} | {} | {} | {} | {} | {} |",
        r.subscribers,
        r.connect.as_secs_f64(),
        r.published,
        r.samples.len(),
        r.missing,
        ms(quantile(&r.samples, 0.5)),
        ms(quantile(&r.samples, 0.99)),
        ms(r.samples.last().copied().unwrap_or(0)),
        ms(r.publish_rtt_p50_us),
    );
}

/// Stagecast's WebSocket rows beside its Server-Sent Events rows of the same run.
pub fn print_transports(
    websocket: &[(usize, anyhow::Result<Latency>)],
    sse: &[(usize, anyhow::Result<Latency>)],
) {
    println!();
    println!("## Stagecast: WebSocket and Server-Sent Events, same run");
    println!();
    println!(
        "The latency run above, on `GET /v1/analyses/{{id}}/stream` (each subscriber one HTTP response, read with `eventsource-stream`) beside the WebSocket rows with as many subscribers."
    );
    println!();
    println!(
        "| transport | subscribers | connect all (s) | pairs received | pairs missing | p50 (ms) | p99 (ms) | max (ms) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (n, sse) in sse {
        let ws = websocket.iter().find(|(m, _)| m == n).map(|(_, r)| r);
        for (name, r) in [("WebSocket", ws), ("Server-Sent Events", Some(sse))] {
            match r {
                Some(Ok(r)) => println!(
                    "| {name} | {n} | {:.2} | {} | {} | {} | {} | {} |",
                    r.connect.as_secs_f64(),
                    r.samples.len(),
                    r.missing,
                    ms(quantile(&r.samples, 0.5)),
                    ms(quantile(&r.samples, 0.99)),
                    ms(r.samples.last().copied().unwrap_or(0)),
                ),
                Some(Err(e)) => println!(
                    "| {name} | {n} | failed: {} | | | | | |",
                    format!("{e:#}").replace('|', "/")
                ),
                None => println!("| {name} | {n} | not run | | | | | |"),
            }
        }
    }
}

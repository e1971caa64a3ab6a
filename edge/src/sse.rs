//! Server-Sent Events framing of the socket's messages (docs/protocol.md §7): the same JSON
//! as on the socket, in `data:`, named by `event:`, with an event's seq as its `id:` so an
//! `EventSource` that reconnects sends it back as `Last-Event-ID`.

pub const CONTENT_TYPE: &str = "text/event-stream; charset=utf-8";

/// How long an `EventSource` waits before it reconnects once a stream ended.
pub const RETRY_MS: u64 = 1_000;

/// The heartbeat: the socket's `pong` message, as an event, so an `EventSource` (which
/// never shows comments) sees the stream alive, and proxies do not time it out.
pub const PING: &str = "event: pong\ndata: {\"type\":\"pong\"}\n\n";

/// The first message: the reconnect delay, then the hello.
pub fn hello(json: &str) -> String {
    debug_assert!(!json.contains('\n'), "a data line holds one line of JSON");
    format!("retry: {RETRY_MS}\nevent: hello\ndata: {json}\n\n")
}

/// A stored event's frame, under its seq.
pub fn event(seq: u64, json: &str) -> String {
    debug_assert!(!json.contains('\n'), "a data line holds one line of JSON");
    format!("event: event\nid: {seq}\ndata: {json}\n\n")
}

/// The last thing a stream says before the edge ends it.
pub fn end() -> String {
    format!("retry: {RETRY_MS}\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_complete_sse_events() {
        assert_eq!(
            hello(r#"{"type":"hello"}"#),
            "retry: 1000\nevent: hello\ndata: {\"type\":\"hello\"}\n\n"
        );
        assert_eq!(
            event(7, r#"{"type":"event","seq":7}"#),
            "event: event\nid: 7\ndata: {\"type\":\"event\",\"seq\":7}\n\n"
        );
        assert_eq!(PING, "event: pong\ndata: {\"type\":\"pong\"}\n\n");
        assert_eq!(end(), "retry: 1000\n\n");
    }
}

//! The query parameters (and the `Last-Event-ID` header) a reader may send, bounded.

use stagecast_shared::dispatch::wire::AnalysisFilter;
use stagecast_shared::limits::{DEFAULT_EVENTS_PAGE, MAX_EVENTS_PAGE};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{place} `{name}` must be {rule}, got {value:?}")]
pub struct QueryError {
    /// "query parameter" or "header".
    pub place: &'static str,
    pub name: &'static str,
    pub rule: &'static str,
    pub value: String,
}

fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn non_negative(name: &'static str, value: &str) -> Result<u64, QueryError> {
    value.parse::<u64>().map_err(|_| QueryError {
        place: "query parameter",
        name,
        rule: "a non-negative integer",
        value: value.chars().take(32).collect(),
    })
}

/// `since` of a WebSocket: absent means no replay.
pub fn ws_since(pairs: &[(String, String)]) -> Result<Option<u64>, QueryError> {
    param(pairs, "since")
        .map(|v| non_negative("since", v))
        .transpose()
}

/// Where a Server-Sent Events stream resumes: `Last-Event-ID` (the seq of the last event
/// an `EventSource` received, which it sends when it reconnects) wins over `since`; both
/// absent is no replay, as on the socket.
pub fn stream_since(
    pairs: &[(String, String)],
    last_event_id: Option<&str>,
) -> Result<Option<u64>, QueryError> {
    match last_event_id.map(str::trim).filter(|v| !v.is_empty()) {
        Some(v) => non_negative("Last-Event-ID", v)
            .map(Some)
            .map_err(|e| QueryError {
                place: "header",
                ..e
            }),
        None => ws_since(pairs),
    }
}

/// `since` (default 0) and `limit` (default and maximum from the contract's limits).
pub fn events_page(pairs: &[(String, String)]) -> Result<(u64, usize), QueryError> {
    let since = param(pairs, "since")
        .map(|v| non_negative("since", v))
        .transpose()?
        .unwrap_or(0);
    Ok((since, page_limit(pairs)?))
}

/// `state` (default `queued`) and `limit` of `GET /v1/pools/{pool}/analyses`.
pub fn pool_analyses(pairs: &[(String, String)]) -> Result<(AnalysisFilter, usize), QueryError> {
    let filter = match param(pairs, "state") {
        None | Some("queued") => AnalysisFilter::Queued,
        Some("leased") => AnalysisFilter::Leased,
        Some("finished") => AnalysisFilter::Finished,
        Some(other) => {
            return Err(QueryError {
                place: "query parameter",
                name: "state",
                rule: "queued, leased or finished",
                value: other.chars().take(32).collect(),
            });
        }
    };
    Ok((filter, page_limit(pairs)?))
}

/// `limit`: 1..=1000, default 100.
fn page_limit(pairs: &[(String, String)]) -> Result<usize, QueryError> {
    let limit = match param(pairs, "limit") {
        None => DEFAULT_EVENTS_PAGE,
        Some(v) => match non_negative("limit", v) {
            Ok(n) if (1..=MAX_EVENTS_PAGE as u64).contains(&n) => n as usize,
            _ => {
                return Err(QueryError {
                    place: "query parameter",
                    name: "limit",
                    rule: "an integer in 1..=1000",
                    value: v.chars().take(32).collect(),
                });
            }
        },
    };
    Ok(limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn since_is_optional_and_must_be_a_number() {
        assert_eq!(ws_since(&q(&[])), Ok(None));
        assert_eq!(ws_since(&q(&[("since", "0")])), Ok(Some(0)));
        assert_eq!(ws_since(&q(&[("since", "-1")])).unwrap_err().name, "since");
        assert!(ws_since(&q(&[("since", "abc")])).is_err());
    }

    #[test]
    fn a_stream_resumes_from_last_event_id_before_since() {
        let since = q(&[("since", "3")]);
        assert_eq!(stream_since(&since, None), Ok(Some(3)));
        assert_eq!(stream_since(&since, Some("7")), Ok(Some(7)));
        // an EventSource that received no id yet sends none; an empty one is the same
        assert_eq!(stream_since(&q(&[]), Some("")), Ok(None));
        let bad = stream_since(&since, Some("x")).unwrap_err();
        assert_eq!(
            bad.to_string(),
            r#"header `Last-Event-ID` must be a non-negative integer, got "x""#
        );
        assert_eq!(
            ws_since(&q(&[("since", "-1")])).unwrap_err().to_string(),
            r#"query parameter `since` must be a non-negative integer, got "-1""#
        );
    }

    #[test]
    fn pool_analyses_state_and_limit() {
        assert_eq!(
            pool_analyses(&q(&[])),
            Ok((AnalysisFilter::Queued, DEFAULT_EVENTS_PAGE))
        );
        assert_eq!(
            pool_analyses(&q(&[("state", "finished"), ("limit", "5")])),
            Ok((AnalysisFilter::Finished, 5))
        );
        assert_eq!(
            pool_analyses(&q(&[("state", "gone")])).unwrap_err().name,
            "state"
        );
        assert_eq!(
            pool_analyses(&q(&[("limit", "0")])).unwrap_err().name,
            "limit"
        );
    }

    #[test]
    fn events_page_defaults_and_bounds() {
        assert_eq!(events_page(&q(&[])), Ok((0, DEFAULT_EVENTS_PAGE)));
        assert_eq!(
            events_page(&q(&[("since", "5"), ("limit", "1000")])),
            Ok((5, 1000))
        );
        assert_eq!(
            events_page(&q(&[("limit", "0")])).unwrap_err().name,
            "limit"
        );
        assert_eq!(
            events_page(&q(&[("limit", "1001")])).unwrap_err().name,
            "limit"
        );
    }
}

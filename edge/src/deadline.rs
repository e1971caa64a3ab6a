//! When the analysis object's one alarm must fire, and whether retention is over: the
//! same arithmetic for `publish`, `subscribe` and `alarm`.

use stagecast_shared::Analysis;

use crate::config::Limits;

/// When a finished analysis (or an upload never submitted) is deleted; `None` while it
/// runs or waits.
pub fn retention_deadline(analysis: &Analysis, limits: &Limits) -> Option<i64> {
    let unsubmitted_upload = analysis
        .input()
        .filter(|_| analysis.check_upload().is_ok())
        .map(|input| input.uploaded_ts);
    analysis
        .terminal_ts()
        .or(unsubmitted_upload)
        .map(|t| t.saturating_add(limits.retention_ms))
}

/// Whether the analysis is due for deletion at `now_ms`.
pub fn retention_over(analysis: &Analysis, limits: &Limits, now_ms: i64) -> bool {
    retention_deadline(analysis, limits).is_some_and(|at| at <= now_ms)
}

/// The earliest of the stall deadline, the retention deadline and `socket_expiry` (the
/// earliest token expiry among the sockets), or `None` when nothing is pending.
pub fn next_alarm(
    analysis: Option<&Analysis>,
    limits: &Limits,
    socket_expiry: Option<i64>,
) -> Option<i64> {
    let analysis_deadlines = analysis.into_iter().flat_map(|a| {
        [
            a.next_deadline(limits.stall_timeout_ms as u64),
            retention_deadline(a, limits),
        ]
    });
    analysis_deadlines.flatten().chain(socket_expiry).min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use stagecast_shared::{AnalysisId, Event};

    fn limits() -> Limits {
        Limits::from_vars(|name| match name {
            "STAGECAST_STALL_TIMEOUT_MS" => Some("1000".into()),
            "STAGECAST_RETENTION_MS" => Some("50000".into()),
            _ => None,
        })
        .unwrap()
    }

    fn event(id: &str, json: serde_json::Value) -> Event {
        let mut value = json;
        value["id"] = id.into();
        serde_json::from_value(value).unwrap()
    }

    fn started(now: i64) -> Analysis {
        let mut a = Analysis::new(AnalysisId::parse("a1").unwrap());
        let start = event(
            "e1",
            serde_json::json!({"type": "started", "stages": [{"name": "s", "weight": 1}]}),
        );
        a.apply_batch(vec![start], now, |_| false).unwrap();
        a
    }

    #[test]
    fn a_running_analysis_wakes_at_its_stall_deadline_or_an_earlier_socket_expiry() {
        let a = started(10_000);
        assert_eq!(next_alarm(Some(&a), &limits(), None), Some(11_000));
        assert_eq!(next_alarm(Some(&a), &limits(), Some(10_500)), Some(10_500));
        assert_eq!(retention_deadline(&a, &limits()), None);
        assert!(!retention_over(&a, &limits(), i64::MAX));
    }

    #[test]
    fn a_finished_analysis_wakes_when_retention_ends() {
        let mut a = started(10_000);
        let done = event("e2", serde_json::json!({"type": "cancelled"}));
        a.apply_batch(vec![done], 20_000, |_| false).unwrap();
        assert_eq!(next_alarm(Some(&a), &limits(), None), Some(70_000));
        assert!(!retention_over(&a, &limits(), 69_999));
        assert!(retention_over(&a, &limits(), 70_000));
    }

    #[test]
    fn nothing_pending_sets_no_alarm() {
        assert_eq!(next_alarm(None, &limits(), None), None);
        assert_eq!(next_alarm(None, &limits(), Some(5)), Some(5));
    }
}

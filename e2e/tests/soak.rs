//! The short fault and soak run (`stagecast_e2e::soak::Plan::short`): two analyses at a
//! time on the real node, ten subscribers each dropped at random, the edge SIGKILLed and
//! restarted, the node's link to the edge cut. Every subscriber must end with every event
//! exactly once, in order; `make bench` runs the 10-minute version.

use stagecast_e2e::node_bin;
use stagecast_e2e::soak::{self, Plan};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analyses_through_drops_edge_restarts_and_link_cuts_lose_and_repeat_nothing() {
    // A different schedule of drops each run; the seed is in the report to replay one.
    let seed = std::env::var("STAGECAST_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    let node = node_bin().unwrap_or_else(|e| panic!("{e:#}"));
    let report = soak::run(&node, Plan::short(seed))
        .await
        .expect("the soak ran");
    let text = report.markdown();
    eprintln!("{text}");
    assert!(report.passed(), "{text}");
    assert_eq!((report.lost, report.repeated), (0, 0), "{text}");
    assert!(report.analyses.len() >= 2, "{text}");
    assert_eq!(report.edge_restarts.len(), 1, "{text}");
    assert_eq!(report.link_cuts, 1, "{text}");
    assert!(report.forced_drops > 0, "no subscriber was dropped: {text}");
    let events: usize = report.analyses.iter().map(|a| a.events).sum();
    assert_eq!(
        report.deliveries as usize,
        events * report.plan.subscribers,
        "{text}"
    );
}

//! The faults of a soak run, on its schedule: edge SIGKILLs and restarts, and cuts of the
//! node's link to the edge.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::Plan;
use crate::Edge;
use crate::proxy::CutProxy;

/// Restarts the edge and cuts the node's link to it (`proxy`) on `plan`'s schedule until `plan.duration` has passed
/// from `t0`; gives the edge back with how long each restart took and how many cuts ran.
pub(super) async fn inject_faults(
    mut edge: Edge,
    proxy: Arc<CutProxy>,
    plan: Plan,
    t0: Instant,
) -> anyhow::Result<(Edge, Vec<Duration>, usize)> {
    enum Fault {
        RestartEdge,
        Cut,
        Restore,
    }
    let mut schedule = Vec::new();
    if let Some(every) = plan.edge_restart_every {
        let mut at = every;
        while at < plan.duration {
            schedule.push((at, Fault::RestartEdge));
            at += every;
        }
    }
    for &(at, len) in &plan.link_cuts {
        schedule.push((at, Fault::Cut));
        schedule.push((at + len, Fault::Restore));
    }
    schedule.sort_by_key(|(at, _)| *at);
    let (mut restarts, mut cuts) = (Vec::new(), 0);
    for (at, fault) in schedule {
        tokio::time::sleep_until((t0 + at).into()).await;
        match fault {
            Fault::RestartEdge => {
                let killed = Instant::now();
                timeline(t0, "edge: SIGKILL and restart");
                edge.restart().await.context("restarting the edge")?;
                restarts.push(killed.elapsed());
                timeline(t0, "edge: ready again");
            }
            Fault::Cut => {
                proxy.cut();
                cuts += 1;
                timeline(t0, "link: cut");
            }
            Fault::Restore => {
                proxy.restore();
                timeline(t0, "link: restored");
            }
        }
    }
    Ok((edge, restarts, cuts))
}

/// One line on stderr with the time since the start, so a run's log reads as a timeline.
fn timeline(t0: Instant, what: &str) {
    eprintln!("soak {:>6.1} s: {what}", t0.elapsed().as_secs_f64());
}

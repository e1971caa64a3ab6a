//! The long fault and soak run (`stagecast_e2e::soak::Plan::long`), printed as markdown:
//! 10 minutes of 10 analyses at a time on the real node with 100 subscribers each, dropped
//! at random, the edge SIGKILLed and restarted every 2 minutes, the node's link to the edge
//! cut for 30 s twice. It exits non-zero when any event was lost or repeated, or any
//! analysis did not end.
//!
//! `cargo bench -p stagecast-e2e --bench soak` (run by `make bench`), against the release
//! build of the node: `cargo build --release -p stagecast-node`
//! first (`make bench` does), or name another binary in `STAGECAST_NODE_BIN`.
//! `STAGECAST_SOAK_SECS` shortens or lengthens the run, the faults kept in proportion;
//! `STAGECAST_SOAK_SEED` replays one schedule of drops.

use std::time::Duration;

use stagecast_e2e::soak::{self, Plan};
use stagecast_e2e::{host, node_bin};

const COMMAND: &str = "cargo bench -p stagecast-e2e --bench soak";

fn main() -> anyhow::Result<()> {
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let seed = env("STAGECAST_SOAK_SEED").unwrap_or_else(|| fastrand::u64(..));
    let mut plan = Plan::long(seed);
    if let Some(secs) = env("STAGECAST_SOAK_SECS") {
        plan = plan.scaled_to(Duration::from_secs(secs));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let node = node_bin()?;
    let report = runtime.block_on(soak::run(&node, plan))?;
    println!("# Fault and soak run");
    println!();
    println!("- command: `{COMMAND}`");
    println!("- machine: {}", host::describe());
    println!(
        "- everything on these cores: the edge (wrangler dev -> workerd), the node (`stagecast-node serve`, release build, ONNX Runtime on CPU, one thread per analysis) and the subscribers (this process, tokio, 2 worker threads)"
    );
    println!();
    print!("{}", report.markdown());
    anyhow::ensure!(
        report.passed(),
        "the soak run found {} problems",
        report.problems.len()
    );
    Ok(())
}

//! What a soak run does: its length, its load and its faults.

use std::time::Duration;

/// What to run and which faults to inject.
#[derive(Debug, Clone)]
pub struct Plan {
    /// New analyses start until this much time has passed.
    pub duration: Duration,
    /// Analyses running at once (the node's `--concurrency`).
    pub analyses: usize,
    /// Subscribers following each analysis.
    pub subscribers: usize,
    /// The edge is SIGKILLed and restarted this often, while analyses start.
    pub edge_restart_every: Option<Duration>,
    /// Cuts of the node's link to the edge: when, from the start, and for how long.
    pub link_cuts: Vec<(Duration, Duration)>,
    /// Mean time between a subscriber's forced drops (exponentially distributed).
    pub drop_mean: Duration,
    /// Length of each analysis's input video, sampled at `fps`.
    pub video_seconds: u32,
    pub fps: f64,
    /// After `duration`, how long the last analyses may take to end.
    pub finish_within: Duration,
    /// Seeds every random choice, so a failing run can be replayed.
    pub seed: u64,
}

impl Plan {
    /// The `make test` version: 2 analyses at a time with 10 subscribers each for 40 s, one
    /// edge restart, one 10 s link cut.
    pub fn short(seed: u64) -> Plan {
        Plan {
            duration: Duration::from_secs(40),
            analyses: 2,
            subscribers: 10,
            edge_restart_every: Some(Duration::from_secs(25)),
            link_cuts: vec![(Duration::from_secs(8), Duration::from_secs(10))],
            drop_mean: Duration::from_secs(5),
            video_seconds: 6,
            fps: 2.0,
            finish_within: Duration::from_secs(240),
            seed,
        }
    }

    /// The `make bench` version: 10 minutes of 10 analyses at a time with 100 subscribers
    /// each, the edge restarted every 2 minutes, the link cut for 30 s twice.
    pub fn long(seed: u64) -> Plan {
        Plan {
            duration: Duration::from_secs(600),
            analyses: 10,
            subscribers: 100,
            edge_restart_every: Some(Duration::from_secs(120)),
            link_cuts: vec![
                (Duration::from_secs(60), Duration::from_secs(30)),
                (Duration::from_secs(300), Duration::from_secs(30)),
            ],
            drop_mean: Duration::from_secs(30),
            video_seconds: 20,
            fps: 2.0,
            finish_within: Duration::from_secs(600),
            seed,
        }
    }

    /// `duration` replaced, with the faults scheduled inside it kept in proportion.
    pub fn scaled_to(mut self, duration: Duration) -> Plan {
        let k = duration.as_secs_f64() / self.duration.as_secs_f64();
        self.edge_restart_every = self.edge_restart_every.map(|d| d.mul_f64(k));
        for (at, _) in &mut self.link_cuts {
            *at = at.mul_f64(k);
        }
        self.duration = duration;
        self
    }
}

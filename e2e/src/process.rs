//! The processes the harness starts (edges, nodes, the benchmarks' peer relays): each in
//! its own process group with its output appended to a log file, waited on until a URL
//! answers, and killed as a group when dropped, or at exit when something (a static edge)
//! outlives every test.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How often a readiness wait asks again.
const POLL: Duration = Duration::from_millis(100);
/// One readiness request, so a hung answer cannot outlast the wait.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Lines of log in an error message.
const TAIL_LINES: usize = 30;

/// Process groups still running, killed at exit.
static LIVE_GROUPS: Mutex<Vec<i32>> = Mutex::new(Vec::new());

extern "C" fn kill_live_groups() {
    if let Ok(groups) = LIVE_GROUPS.lock() {
        for pgid in groups.iter() {
            // SAFETY: kill(2) on a process group we started; no memory is touched.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
    }
}

fn register_group(pgid: i32) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    // SAFETY: registers a plain extern "C" fn with no captured state.
    ONCE.call_once(|| unsafe {
        libc::atexit(kill_live_groups);
    });
    LIVE_GROUPS.lock().unwrap().push(pgid);
}

fn unregister_group(pgid: i32) {
    LIVE_GROUPS.lock().unwrap().retain(|g| *g != pgid);
}

/// The last lines of the log at `path`, for failure messages.
pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

/// One started process group.
pub struct Process {
    /// What it is, for messages ("the edge").
    name: String,
    child: Option<Child>,
    log: PathBuf,
    /// How long it gets between SIGTERM and SIGKILL; zero: SIGKILL at once, as a crash.
    grace: Duration,
}

impl Process {
    /// Spawns `cmd` as `name` in a process group of its own, stdin closed, stdout and
    /// stderr appended to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> anyhow::Result<Process> {
        let file = std::fs::File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", cmd.get_program()))?;
        register_group(child.id() as i32);
        Ok(Process {
            name: name.to_owned(),
            child: Some(child),
            log: log.to_owned(),
            grace: Duration::ZERO,
        })
    }

    /// Stops with SIGTERM first, then SIGKILL after `grace` (for what cleans up after itself).
    pub fn with_grace(mut self, grace: Duration) -> Process {
        self.grace = grace;
        self
    }

    /// Polls `url` until it answers 2xx; fails early if the process exits, and after
    /// `timeout`, with the log's tail either way.
    pub async fn wait_healthy(&mut self, url: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()?;
        loop {
            let Some(child) = self.child.as_mut() else {
                bail!("{} is not running", self.name);
            };
            if let Ok(Some(status)) = child.try_wait() {
                bail!(
                    "{} exited with {status} before {url} answered:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            if client
                .get(url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{}: {url} did not answer 2xx within {timeout:?}:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The process group (the first process's pid), while it runs.
    pub fn pgid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    pub fn log_tail(&self) -> String {
        log_tail(&self.log)
    }

    /// Stops the whole group (SIGKILL, or SIGTERM and SIGKILL after the grace) and reaps it.
    pub fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pgid = child.id() as i32;
        if !self.grace.is_zero() {
            // SAFETY: kill(2) on the process group we started; no memory is touched.
            unsafe { libc::kill(-pgid, libc::SIGTERM) };
            let deadline = Instant::now() + self.grace;
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // SAFETY: as above; whatever is left (or ignored SIGTERM) goes now.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = child.wait();
        unregister_group(pgid);
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

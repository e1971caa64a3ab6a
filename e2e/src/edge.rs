//! One edge process under test.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Process groups still running, killed at exit: a static edge outlives every test.
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

/// The repository root (this crate lives in `<root>/e2e`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Raises the soft open-files limit to the hard one and returns it: runs with 1000+
/// sockets need it here, and an edge started after it inherits it for the other ends.
pub fn raise_open_files_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit on a local struct; no other memory is touched.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        }
        limit.rlim_cur
    }
}

/// Settings of one edge; `vars` become wrangler `--var`s.
#[derive(Clone, Debug)]
pub struct EdgeConfig {
    pub port: u16,
    pub state_dir: PathBuf,
    pub vars: Vec<(String, String)>,
}

pub struct Edge {
    pub config: EdgeConfig,
    child: Option<Child>,
    _state: Option<tempfile::TempDir>,
}

impl Edge {
    /// Starts an edge with a fresh temporary state dir and the given `--var`s.
    pub async fn start(vars: &[(&str, &str)]) -> anyhow::Result<Edge> {
        let state = tempfile::tempdir()?;
        let config = EdgeConfig {
            port: free_port(),
            state_dir: state.path().to_path_buf(),
            vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let mut edge = Edge {
            config,
            child: None,
            _state: Some(state),
        };
        edge.spawn().await?;
        Ok(edge)
    }

    /// An edge with the dev tenant's secret [`DEV_SECRET`](crate::client::DEV_SECRET).
    pub async fn dev() -> anyhow::Result<Edge> {
        Self::start(&[("STAGECAST_DEV_SECRET", crate::client::DEV_SECRET)]).await
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.config.port)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{}", self.config.port, path)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let root = repo_root();
        let wrangler = root.join("node_modules/.bin/wrangler");
        if !root.join("edge/build/worker/shim.mjs").exists() {
            bail!("the edge is not built: run `make edge-build` (or `make test`) first");
        }
        let log = std::fs::File::create(self.config.state_dir.join("wrangler.log"))?;
        let mut cmd = Command::new(&wrangler);
        cmd.current_dir(&root)
            .args([
                "dev",
                "--config",
                "wrangler.toml",
                "--ip",
                "127.0.0.1",
                "--port",
            ])
            .arg(self.config.port.to_string())
            .arg("--persist-to")
            .arg(&self.config.state_dir)
            // Its own inspector port, so several edges can run side by side.
            .arg("--inspector-port")
            .arg(free_port().to_string())
            // "log" and not "info": the edge's own lines (console.log) are at level log.
            .args(["--log-level", "log", "--show-interactive-dev-session=false"])
            .env("WRANGLER_SEND_METRICS", "false")
            .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    root.join("node_modules/.bin").display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        for (k, v) in &self.config.vars {
            cmd.arg("--var").arg(format!("{k}:{v}"));
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", wrangler.display()))?;
        register_group(child.id() as i32);
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(90)).await
    }

    async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let url = format!("{}/healthz", self.base_url());
        let client = reqwest::Client::new();
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("wrangler exited with {status}: {}", self.log_tail());
            }
            if client
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!("edge not ready after {timeout:?}: {}", self.log_tail())
    }

    /// The process group of wrangler and the workerd it started (wrangler's pid), while
    /// the edge runs: benchmarks read the processes' memory through it.
    pub fn process_group(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// Everything wrangler and workerd printed so far (their console log lines included).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.config.state_dir.join("wrangler.log")).unwrap_or_default()
    }

    /// The last lines wrangler and workerd printed, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = self.log();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// SIGKILLs the edge (wrangler and workerd), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pgid = child.id() as i32;
            // SAFETY: kill(2) on the process group we started.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            let _ = child.wait();
            unregister_group(pgid);
        }
    }

    /// Starts the edge again on the same port and state dir.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn().await
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One edge shared by the tests of a binary, started on first use with the dev secret.
pub async fn shared_edge() -> &'static Edge {
    static EDGE: tokio::sync::OnceCell<Edge> = tokio::sync::OnceCell::const_new();
    EDGE.get_or_init(|| async { Edge::dev().await.expect("edge starts") })
        .await
}

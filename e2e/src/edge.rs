//! One edge process under test.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::bail;

use crate::process::{Process, log_tail};

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
    /// wrangler's `--log-level`.
    pub log_level: &'static str,
}

pub struct Edge {
    pub config: EdgeConfig,
    /// Killed when dropped, before the state dir goes (fields drop in order).
    process: Option<Process>,
    _state: Option<tempfile::TempDir>,
}

impl Edge {
    /// Starts an edge with a fresh temporary state dir and the given `--var`s, logging
    /// its own lines (`log`; [`Edge::log`] reads them).
    pub async fn start(vars: &[(&str, &str)]) -> anyhow::Result<Edge> {
        Self::start_logging(vars, "log").await
    }

    /// [`Edge::start`] with wrangler at `warn`, as the peer relays of the benchmarks run:
    /// no request line and no console line per request (each costs the local request
    /// path about 0.4 ms), so [`Edge::log`] holds only warnings.
    pub async fn start_quiet(vars: &[(&str, &str)]) -> anyhow::Result<Edge> {
        Self::start_logging(vars, "warn").await
    }

    async fn start_logging(vars: &[(&str, &str)], log_level: &'static str) -> anyhow::Result<Edge> {
        let state = tempfile::tempdir()?;
        let config = EdgeConfig {
            port: free_port(),
            state_dir: state.path().to_path_buf(),
            vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            log_level,
        };
        let mut edge = Edge {
            config,
            process: None,
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

    fn log_path(&self) -> PathBuf {
        self.config.state_dir.join("wrangler.log")
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let root = repo_root();
        let wrangler = root.join("node_modules/.bin/wrangler");
        if !root.join("edge/build/worker/shim.mjs").exists() {
            bail!("the edge is not built: run `make edge-build` (or `make test`) first");
        }
        // Each start's log begins empty.
        std::fs::write(self.log_path(), "")?;
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
            .args(["--log-level", self.config.log_level])
            .arg("--show-interactive-dev-session=false")
            .env("WRANGLER_SEND_METRICS", "false")
            .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    root.join("node_modules/.bin").display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            );
        for (k, v) in &self.config.vars {
            cmd.arg("--var").arg(format!("{k}:{v}"));
        }
        let (log, url) = (self.log_path(), format!("{}/healthz", self.base_url()));
        let process = self
            .process
            .insert(Process::spawn("the edge (wrangler dev)", cmd, &log)?);
        process.wait_healthy(&url, Duration::from_secs(90)).await
    }

    /// The process group of wrangler and the workerd it started (wrangler's pid), while
    /// the edge runs: benchmarks read the processes' memory through it.
    pub fn process_group(&self) -> Option<i32> {
        self.process.as_ref().and_then(Process::pgid)
    }

    /// Everything wrangler and workerd printed since the edge last started (their console
    /// log lines included).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The last lines wrangler and workerd printed, for failure messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log_path())
    }

    /// SIGKILLs the edge (wrangler and workerd), as a crash would.
    pub fn kill(&mut self) {
        self.process = None;
    }

    /// Starts the edge again on the same port and state dir.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn().await
    }
}

/// One edge shared by the tests of a binary, started on first use with the dev secret.
pub async fn shared_edge() -> &'static Edge {
    static EDGE: tokio::sync::OnceCell<Edge> = tokio::sync::OnceCell::const_new();
    EDGE.get_or_init(|| async { Edge::dev().await.expect("edge starts") })
        .await
}

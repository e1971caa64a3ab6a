//! One compute node under test: the real `stagecast-node serve` binary.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use serde_json::Value;
use stagecast_shared::token::{Claims, Scope, mint};

use crate::client::{DEV_SECRET, Tokens, now_s};
use crate::edge::{Edge, free_port, repo_root};
use crate::process::{Process, log_tail};

/// Names the `stagecast-node` binary to run instead of the workspace's own build.
pub const NODE_BIN_ENV: &str = "STAGECAST_NODE_BIN";

/// The `stagecast-node` binary the tests and benchmarks run: `STAGECAST_NODE_BIN` when set,
/// else the workspace's build in the target dir (`CARGO_TARGET_DIR`, or `<root>/target`) of
/// the profile this crate was built with: `debug` under `cargo test`, `release` under
/// `cargo bench`, as Cargo's own `CARGO_BIN_EXE_*` would be. Fails, saying how to build
/// it, when it is not there: this crate cannot make Cargo build another crate's binary.
pub fn node_bin() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os(NODE_BIN_ENV) {
        let bin = PathBuf::from(bin);
        ensure!(
            bin.is_file(),
            "{NODE_BIN_ENV}={} is not a file",
            bin.display()
        );
        return Ok(bin);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let (profile, flag) = if cfg!(debug_assertions) {
        ("debug", "")
    } else {
        ("release", " --release")
    };
    let bin = target.join(profile).join("stagecast-node");
    ensure!(
        bin.is_file(),
        "{} is not built: run `cargo build{flag} -p stagecast-node` \
         first (scripts/test.sh and scripts/bench.sh do), or set {NODE_BIN_ENV}",
        bin.display()
    );
    Ok(bin)
}

/// A node of [`node_bin`] publishing to `edge`, ready to take analyses.
pub async fn ready_node(edge: &Edge) -> Node {
    let bin = node_bin().unwrap_or_else(|e| panic!("{e:#}"));
    let mut node = Node::start(&bin, Some(&edge.base_url()), &[])
        .await
        .unwrap();
    node.ready(Duration::from_secs(180)).await.unwrap();
    node
}

pub struct Node {
    bin: PathBuf,
    pub port: u16,
    pub state_dir: PathBuf,
    args: Vec<String>,
    process: Option<Process>,
    _state: Option<tempfile::TempDir>,
}

impl Node {
    /// Starts `bin serve` on a free port with its own state dir, the dev secret, one
    /// ONNX Runtime thread, local paths allowed as inputs (the tests submit fixture files),
    /// publishing to `edge` (a base URL) when given, plus `args`; waits until `/healthz`
    /// answers.
    pub async fn start(bin: &Path, edge: Option<&str>, args: &[&str]) -> anyhow::Result<Node> {
        let state = tempfile::tempdir()?;
        let mut all: Vec<String> = ["--threads", "1", "--allow-local-inputs"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if let Some(edge) = edge {
            all.extend(["--edge".to_owned(), edge.to_owned()]);
        }
        all.extend(args.iter().map(|s| s.to_string()));
        let mut node = Node {
            bin: bin.to_owned(),
            port: free_port(),
            state_dir: state.path().to_owned(),
            args: all,
            process: None,
            _state: Some(state),
        };
        node.spawn().await?;
        Ok(node)
    }

    fn log_path(&self) -> PathBuf {
        self.state_dir.join("node.log")
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--state-dir")
            .arg(&self.state_dir)
            .args(&self.args)
            .env("STAGECAST_NODE_SECRET", DEV_SECRET)
            .env("RUST_LOG", "info,ort=warn");
        self.process = Some(Process::spawn("the node", cmd, &self.log_path())?);
        self.wait_ok("/healthz", Duration::from_secs(60)).await
    }

    /// Polls `path` until it answers 2xx; fails early if the node exits.
    async fn wait_ok(&mut self, path: &str, timeout: Duration) -> anyhow::Result<()> {
        let url = self.url(path);
        match self.process.as_mut() {
            Some(process) => process.wait_healthy(&url, timeout).await,
            None => bail!("the node is not running"),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Waits until `/readyz` says 200 (models loaded, edge reachable).
    pub async fn ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        self.wait_ok("/readyz", timeout).await
    }

    /// An admin token of the dev tenant for `analyses`.
    pub fn admin_token(analyses: &[&str]) -> String {
        let claims = Claims::new("dev", "operator", &[Scope::Admin], analyses, now_s(), 600);
        mint(&claims, &Tokens::key()).expect("mint")
    }

    /// `POST /v1/analyses` with `body`; the status and JSON answer.
    pub async fn submit(&self, body: &Value) -> (u16, Value) {
        let resp = reqwest::Client::new()
            .post(self.url("/v1/analyses"))
            .bearer_auth(Self::admin_token(&["*"]))
            .json(body)
            .send()
            .await
            .expect("submit");
        (
            resp.status().as_u16(),
            resp.json().await.unwrap_or(Value::Null),
        )
    }

    /// `GET /v1/analyses/{id}`.
    pub async fn status(&self, id: &str) -> Value {
        reqwest::Client::new()
            .get(self.url(&format!("/v1/analyses/{id}")))
            .bearer_auth(Self::admin_token(&[id]))
            .send()
            .await
            .expect("status")
            .json()
            .await
            .expect("status JSON")
    }

    /// Polls until the analysis is finished on the node; its view.
    pub async fn finished(&self, id: &str, timeout: Duration) -> anyhow::Result<Value> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let view = self.status(id).await;
            if view["state"] == "finished" {
                return Ok(view);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!("{id} did not finish: {}", self.log_tail())
    }

    pub fn log_tail(&self) -> String {
        log_tail(&self.log_path())
    }

    /// The node's process id while it runs (benchmarks read its memory).
    pub fn pid(&self) -> Option<i32> {
        self.process.as_ref().and_then(Process::pgid)
    }

    /// SIGKILLs the node, as a crash would.
    pub fn kill(&mut self) {
        self.process = None;
    }

    /// SIGTERMs the node, as a supervisor would, and waits until it exits (SIGKILL after
    /// `grace`).
    pub async fn terminate(&mut self, grace: Duration) {
        if let Some(process) = self.process.take() {
            let stop = move || drop(process.with_grace(grace));
            let _ = tokio::task::spawn_blocking(stop).await;
        }
    }

    /// Starts the node again with the same state dir and flags, `edge` replacing its edge.
    pub async fn restart(&mut self, edge: Option<&str>) -> anyhow::Result<()> {
        self.kill();
        if let Some(i) = self.args.iter().position(|a| a == "--edge") {
            self.args.drain(i..i + 2);
        }
        if let Some(edge) = edge {
            self.args.extend(["--edge".to_owned(), edge.to_owned()]);
        }
        self.spawn().await
    }
}

/// Prometheus's own `promtool check metrics` on a node's `/metrics` text: the exposition
/// format, and its lint rules (HELP on every metric, `_total` counters, base units). Fails
/// with what promtool printed.
pub fn promtool_check(metrics: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| anyhow::anyhow!("promtool (Debian's prometheus): run `make setup`: {e}"))?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(metrics.as_bytes())?;
    let out = child.wait_with_output()?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics ({}): {said}",
        out.status
    );
    Ok(())
}

//! One compute node under test: the real `stagecast-node serve` binary.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;
use stagecast_shared::token::{Claims, Scope, mint};

use crate::client::{DEV_SECRET, Tokens, now_s};
use crate::edge::free_port;

pub struct Node {
    bin: PathBuf,
    pub port: u16,
    pub state_dir: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    _state: Option<tempfile::TempDir>,
}

impl Node {
    /// Starts `bin serve` on a free port with its own state dir, the dev secret, one
    /// ONNX Runtime thread, publishing to `edge` (a base URL) when given, plus `args`;
    /// waits until `/healthz` answers.
    pub async fn start(bin: &Path, edge: Option<&str>, args: &[&str]) -> anyhow::Result<Node> {
        let state = tempfile::tempdir()?;
        let mut all: Vec<String> = ["--threads", "1"].iter().map(|s| s.to_string()).collect();
        if let Some(edge) = edge {
            all.extend(["--edge".to_owned(), edge.to_owned()]);
        }
        all.extend(args.iter().map(|s| s.to_string()));
        let mut node = Node {
            bin: bin.to_owned(),
            port: free_port(),
            state_dir: state.path().to_owned(),
            args: all,
            child: None,
            _state: Some(state),
        };
        node.spawn().await?;
        Ok(node)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.state_dir.join("node.log"))?;
        let child = Command::new(&self.bin)
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--state-dir")
            .arg(&self.state_dir)
            .args(&self.args)
            .env("STAGECAST_NODE_SECRET", DEV_SECRET)
            .env("RUST_LOG", "info,ort=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        self.child = Some(child);
        self.wait_ok("/healthz", Duration::from_secs(60)).await
    }

    /// Polls `path` until it answers 2xx; fails early if the node exits.
    async fn wait_ok(&mut self, path: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("the node exited with {status}: {}", self.log_tail());
            }
            if reqwest::get(self.url(path))
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("{path} did not answer 200: {}", self.log_tail())
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
        let text = std::fs::read_to_string(self.state_dir.join("node.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// SIGKILLs the node, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on the process group we started.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
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

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

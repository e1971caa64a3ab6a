//! The pages in a real headless Chromium: `e2e/browser/dashboard.mjs` (playwright-core and
//! axe-core) opens one, prints one JSON line per thing the page shows and a `final` line,
//! and takes commands on stdin. This is the Rust side the page tests drive it with, and
//! other drivers of that folder that speak the same way (`sse.mjs`).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::edge::repo_root;

/// Where a page test's screenshot `name` goes: `target/screenshots/<name>.png`.
pub fn screenshot(name: &str) -> PathBuf {
    let dir = repo_root().join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{name}.png"))
}

/// One page, open in Chromium.
pub struct Page {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    /// How long the page may take to show something.
    wait: Duration,
}

impl Page {
    /// Opens `url`, saving screenshot `name`, with the driver's `options` (`view`, `audit`,
    /// ...); waits for its `opened` line.
    pub async fn open(url: &str, name: &str, wait: Duration, options: Value) -> Page {
        let mut all = json!({"url": url, "screenshot": screenshot(name),
            "timeout_ms": 4 * wait.as_millis() as u64});
        all.as_object_mut()
            .unwrap()
            .extend(options.as_object().unwrap().clone());
        Self::run("dashboard.mjs", &all, wait).await
    }

    /// Runs driver `script` of `e2e/browser/` with `options`; waits for its `opened` line.
    pub async fn run(script: &str, options: &Value, wait: Duration) -> Page {
        let mut child = Command::new("node")
            .arg(repo_root().join("e2e/browser").join(script))
            .arg(options.to_string())
            .current_dir(repo_root())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node (Node.js) and playwright-core: run `make setup`");
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut page = Page {
            child,
            stdin,
            lines,
            wait,
        };
        let opened = page.next().await;
        assert_eq!(opened["type"], "opened", "{opened}");
        page
    }

    pub async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(self.wait, self.lines.next_line())
            .await
            .expect("the page said nothing")
            .unwrap()
            .expect("the browser driver ended early");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    /// Lines of type `kind` until one matches `done` (`what` it shows); returns it. Fails
    /// after the page's wait, with the last such line.
    pub async fn until(&mut self, kind: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        let wait = self.wait;
        let waited = tokio::time::timeout(wait, async {
            loop {
                let line = self.next().await;
                assert_ne!(line["type"], "final", "the page finished first: {line}");
                if line["type"] == kind {
                    if done(&line) {
                        return line;
                    }
                    last = line;
                }
            }
        })
        .await;
        waited.unwrap_or_else(|_| panic!("the page never showed {what}; last: {last:#}"))
    }

    /// Sends the driver a command line.
    pub async fn command(&mut self, command: Value) {
        let line = format!("{command}\n");
        self.stdin.write_all(line.as_bytes()).await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    /// Runs axe-core now; returns the violations.
    pub async fn audit(&mut self, at: &str) -> Value {
        self.command(json!({"audit": at})).await;
        loop {
            let line = self.next().await;
            assert_ne!(line["type"], "final", "the page finished first: {line}");
            if line["type"] == "audit" && line["at"] == at {
                return line["violations"].clone();
            }
        }
    }

    /// Tells the driver to end now; its final line.
    pub async fn finish(mut self) -> Value {
        self.command(json!({"finish": true})).await;
        self.ended().await
    }

    /// The final line of a driver that ends by itself.
    pub async fn ended(mut self) -> Value {
        loop {
            let line = self.next().await;
            if line["type"] == "final" {
                let status = self.child.wait().await.unwrap();
                assert!(status.success(), "the browser driver failed");
                return line;
            }
        }
    }
}

/// No error in the page's console but those containing one of `expected`.
pub fn assert_no_console_errors(last: &Value, expected: &[&str]) {
    let unexpected: Vec<&Value> = last["console_errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            !expected
                .iter()
                .any(|x| e.as_str().unwrap_or("").contains(x))
        })
        .collect();
    assert!(
        unexpected.is_empty(),
        "the page logged errors: {unexpected:?}"
    );
}

/// axe-core found no WCAG 2.1 AA violation at any of `moments`; otherwise lists them.
pub fn assert_accessible(last: &Value, moments: &[&str]) {
    for moment in moments {
        let violations = last["audits"][moment]
            .as_array()
            .unwrap_or_else(|| panic!("no audit at {moment}: {}", last["audits"]));
        let found: Vec<String> = violations
            .iter()
            .map(|v| {
                let targets: Vec<String> = v["nodes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|n| {
                        let summary = n["summary"].as_str().unwrap_or("");
                        let summary: Vec<&str> = summary.split_whitespace().collect();
                        format!("{} ({})", n["target"], summary.join(" "))
                    })
                    .collect();
                format!(
                    "{} [{}] {}:\n    {}",
                    v["id"].as_str().unwrap(),
                    v["impact"].as_str().unwrap_or("?"),
                    v["help"].as_str().unwrap_or(""),
                    targets.join("\n    ")
                )
            })
            .collect();
        assert!(
            found.is_empty(),
            "axe-core, WCAG 2.1 AA, at {moment}: {} violations\n  {}",
            found.len(),
            found.join("\n  ")
        );
    }
}

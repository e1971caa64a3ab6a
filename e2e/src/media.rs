//! Test media over HTTP on loopback: a leased analysis' input must be a URL (nodes fetch
//! pool inputs as untrusted, never from a local path), so tests serve their fixtures.

use std::path::{Path, PathBuf};

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::get;

/// Serves the files of one directory at `http://127.0.0.1:<port>/<name>` until dropped.
pub struct Media {
    base: String,
    task: tokio::task::JoinHandle<()>,
}

async fn file(
    State(dir): State<PathBuf>,
    UrlPath(name): UrlPath<String>,
) -> Result<Vec<u8>, StatusCode> {
    // One path segment: nothing outside the directory.
    if name.contains("..") {
        return Err(StatusCode::NOT_FOUND);
    }
    tokio::fs::read(dir.join(name))
        .await
        .map_err(|_| StatusCode::NOT_FOUND)
}

impl Media {
    pub async fn serve(dir: &Path) -> anyhow::Result<Media> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://127.0.0.1:{}", listener.local_addr()?.port());
        let app = Router::new()
            .route("/{name}", get(file))
            .with_state(dir.to_owned());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Media { base, task })
    }

    /// The URL of `file`, which must be in the served directory.
    pub fn url(&self, file: &Path) -> String {
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        format!("{}/{name}", self.base)
    }
}

impl Drop for Media {
    fn drop(&mut self) {
        self.task.abort();
    }
}

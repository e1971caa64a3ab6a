//! Clients of the edge's media routes (docs/protocol.md §15): uploads, the node's input
//! fetch, artifacts, and a look into the local R2 bucket the edge keeps in its state dir.

use std::path::Path;

use futures_util::stream;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderMap};
use serde_json::Value;

/// An answer: status, headers and body.
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The error body's `code`, or "" when there is none.
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    async fn read(response: reqwest::Response) -> Answer {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map(|b| b.to_vec())
            .unwrap_or_default();
        Answer {
            status,
            headers,
            body,
        }
    }
}

/// Deterministic bytes that do not compress (a seeded generator), `len` of them.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut bytes = vec![0u8; len];
    rng.fill(&mut bytes);
    bytes
}

/// `PUT /v1/analyses/{id}/input` with `body`, sent in 256 KiB chunks with its length.
pub async fn upload(
    base: &str,
    id: &str,
    token: &str,
    content_type: &str,
    body: Vec<u8>,
) -> Answer {
    let len = body.len();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        body.chunks(256 * 1024).map(|c| Ok(c.to_vec())).collect();
    let response = reqwest::Client::new()
        .put(format!("{base}/v1/analyses/{id}/input"))
        .bearer_auth(token)
        .header(CONTENT_TYPE, content_type)
        .header(CONTENT_LENGTH, len)
        .body(reqwest::Body::wrap_stream(stream::iter(chunks)))
        .send()
        .await
        .expect("the edge answers");
    Answer::read(response).await
}

/// `GET /v1/analyses/{id}/input` as a node, with extra headers (`Range`, `If-Range`).
pub async fn fetch_input(base: &str, id: &str, token: &str, headers: &[(&str, &str)]) -> Answer {
    let mut request = reqwest::Client::new()
        .get(format!("{base}/v1/analyses/{id}/input"))
        .bearer_auth(token);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    Answer::read(request.send().await.expect("the edge answers")).await
}

/// `PUT /v1/analyses/{id}/artifacts/{name}?{query}`.
pub async fn put_artifact(
    base: &str,
    id: &str,
    name: &str,
    query: &str,
    token: &str,
    content_type: &str,
    body: Vec<u8>,
) -> Answer {
    let response = reqwest::Client::new()
        .put(format!("{base}/v1/analyses/{id}/artifacts/{name}?{query}"))
        .bearer_auth(token)
        .header(CONTENT_TYPE, content_type)
        .body(body)
        .send()
        .await
        .expect("the edge answers");
    Answer::read(response).await
}

/// `GET /v1/analyses/{id}/artifacts/{name}` with the token in the query, as an `<img>`.
pub async fn get_artifact(
    base: &str,
    id: &str,
    name: &str,
    token: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let mut request = reqwest::Client::new().get(format!(
        "{base}/v1/analyses/{id}/artifacts/{name}?token={token}"
    ));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    Answer::read(request.send().await.expect("the edge answers")).await
}

/// The sizes of the local bucket's blobs under an edge's state dir: wrangler keeps each R2
/// object's bytes as a file in a `blobs` folder there (its metadata in SQLite beside it).
pub fn bucket_blobs(state_dir: &Path) -> Vec<u64> {
    fn walk(dir: &Path, out: &mut Vec<u64>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => walk(&path, out),
                Ok(_) if dir.file_name().is_some_and(|n| n == "blobs") => {
                    out.push(entry.metadata().map(|m| m.len()).unwrap_or(0));
                }
                _ => {}
            }
        }
    }
    let mut sizes = Vec::new();
    walk(&state_dir.join("v3/r2"), &mut sizes);
    sizes.sort_unstable();
    sizes
}

//! Harness for end-to-end tests: starts the real edge (workerd through `wrangler dev`) on a
//! free loopback port with its own state dir, starts real compute nodes beside it, mints
//! tokens, and speaks HTTP and WebSocket to both like a node or a browser would. It also
//! holds what the soak runs need: a TCP proxy that can be cut, and the fault and soak
//! scenario itself. Inputs are drawn by `stagecast-fixtures`.
//!
//! - [`process`]: one way to start a process group, wait until it is healthy, and kill it.
//! - [`edge`], [`node`]: the edge and the node on top of it; [`pool`]: a scripted pool node.
//! - [`browser`]: a page in headless Chromium, with axe-core.
//! - [`client`]: tokens, publishing, the typed subscriber, and the exactly-once check;
//!   [`sse`]: the same subscriber on Server-Sent Events.
//! - [`proxy`]: the cuttable TCP proxy; [`host`]: the machine, for benchmark headers;
//!   [`stats`]: quantiles; [`media`]: fixtures over HTTP, for pool inputs; [`uploads`]:
//!   the edge's upload, input and artifact routes.

pub mod browser;
pub mod client;
pub mod edge;
pub mod host;
pub mod media;
pub mod node;
pub mod pool;
pub mod process;
pub mod proxy;
pub mod soak;
pub mod sse;
pub mod stats;
pub mod uploads;

pub use client::{Subscriber, Tokens};
pub use edge::{Edge, shared_edge};
pub use node::{Node, node_bin, ready_node};

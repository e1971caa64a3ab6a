//! Harness for end-to-end tests: starts the real edge (workerd through `wrangler dev`) on a
//! free loopback port with its own state dir, starts real compute nodes beside it, mints
//! tokens, and speaks HTTP and WebSocket to both like a node or a browser would.

pub mod client;
pub mod edge;
pub mod node;

pub use client::{Subscriber, Tokens};
pub use edge::{Edge, shared_edge};
pub use node::Node;

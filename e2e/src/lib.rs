//! Harness for end-to-end tests: starts the real edge (workerd through `wrangler dev`) on a
//! free loopback port with its own state dir, mints tokens, and speaks HTTP and WebSocket
//! to it like a node or a browser would.

pub mod client;
pub mod edge;

pub use client::{Subscriber, Tokens};
pub use edge::{Edge, shared_edge};

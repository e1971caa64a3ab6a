//! Harness for end-to-end tests: starts the real edge (workerd through `wrangler dev`) on a
//! free loopback port with its own state dir, starts real compute nodes beside it, mints
//! tokens, and speaks HTTP and WebSocket to both like a node or a browser would. It also
//! holds what the soak runs need: a link that can be cut, inputs drawn with ffmpeg, and the
//! fault and soak scenario itself.

pub mod client;
pub mod edge;
pub mod link;
pub mod machine;
pub mod media;
pub mod node;
pub mod soak;

pub use client::{Subscriber, Tokens};
pub use edge::{Edge, shared_edge};
pub use node::Node;

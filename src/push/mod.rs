//! Push: a view's changes sent to WebSocket subscribers.
//!
//! [`message`] is the wire protocol (version 1), shared by the built-in Lambdas behind an API Gateway
//! WebSocket API and by the operator's own in-cluster endpoint.

pub mod message;

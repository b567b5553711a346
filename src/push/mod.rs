//! Push: a view's changes sent to WebSocket subscribers.
//!
//! [`message`] is the wire protocol (version 1), shared by the built-in Lambdas behind an API Gateway
//! WebSocket API and by the operator's own in-cluster endpoint. That endpoint, on the in-cluster runtime, is
//! [`server`] (`GET /v1/namespaces/{namespace}/watch`), fed by [`hub`] from one [`feed`] per views table's
//! stream; [`watch`] is its client, `kappa-operator watch`. On the Lambda runtime, the built-in functions
//! [`crate::functions::connections`] and [`crate::functions::notifier`] serve the API Gateway WebSocket
//! API. [`auth`] decides who may watch which namespace on the operator's endpoint.

pub mod auth;
pub mod feed;
pub mod hub;
pub mod message;
pub mod server;
pub mod watch;

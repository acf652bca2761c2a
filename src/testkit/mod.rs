//! Stand-ins for a cluster, for tests, demos and benchmarks: a fake API
//! server that the real kube-rs client talks to, and a kubelet-like writer
//! of container logs.

pub mod api_server;
pub mod kubelet;
pub mod messages;

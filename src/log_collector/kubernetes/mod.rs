//! The Kubernetes collector: container logs under `/var/log/containers`,
//! labelled with their pod.
//!
//! - [`names`]: what a container log's path says about its pod;
//! - [`format`]: CRI and Docker json-file lines, and joining split lines;
//! - [`metadata`]: the node's pods from one list+watch (kube-rs);
//! - [`rotated`]: lines rotated away while monitoring-rs was down;
//! - [`collector`]: the directory collector plus all of the above.

pub mod collector;
pub mod format;
pub mod metadata;
pub mod names;
pub mod rotated;

pub use collector::{KubernetesCollector, KubernetesConfig, KubernetesStats};

//! The Kubernetes collector: container logs under `/var/log/containers`,
//! labelled with their pod.
//!
//! - [`names`]: what a container log's path says about its pod;
//! - [`metadata`]: the node's pods from one list+watch (kube-rs);
//! - [`rotated`]: lines rotated away while monitoring-rs was down;
//! - [`collector`]: the directory collector plus the stages, in order:
//!   [`decode`] (CRI / Docker json-file) → [`join`] (split lines) →
//!   `wait` (for pod metadata) → `label` → `group` (into the store's
//!   write), with `sources` holding what is known per path.

pub mod collector;
pub mod decode;
mod group;
pub mod join;
mod label;
mod memo;
pub mod metadata;
pub mod names;
pub mod rotated;
mod sources;
mod wait;

pub use collector::{KubernetesCollector, KubernetesConfig, KubernetesStats};

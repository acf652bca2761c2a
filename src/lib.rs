//! monitoring-rs: a node-local log collector, store and query server.
//!
//! The data path runs top to bottom through these modules:
//! [`watcher`] (file-system events) → [`log_collector`] (files to lines with
//! checkpoints) → the store → the HTTP API. Each arrow is a narrow, typed
//! interface, so each piece is tested alone.

#![warn(missing_docs)]

pub mod api;
pub mod cluster;
pub mod daemon;
pub mod drain;
pub mod forward;
pub mod log_collector;
pub mod log_database;
pub mod logql;
pub mod memory;
pub mod outbound;
pub mod shutdown;
pub mod watcher;

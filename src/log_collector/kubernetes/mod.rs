//! The Kubernetes collector's building blocks: what a container log's path
//! says about its pod ([`names`]) and the runtime's line formats with the
//! joining of split lines ([`format`]).

pub mod format;
pub mod names;

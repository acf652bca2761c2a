//! Collectors turn log files into lines, with the checkpoints that let a
//! restart resume exactly after the last line handed on.
//!
//! - [`directory`]: every regular file under a root directory.
//! - [`checkpoint`]: what a checkpoint is and the file that keeps them while
//!   lines are only printed.
//! - [`kubernetes`]: container log names and formats (CRI, Docker json-file).
//! - [`status`]: what a running collector shows the API.

pub mod checkpoint;
pub mod clock;
pub mod directory;
pub mod kubernetes;
pub mod service_name;
pub mod status;

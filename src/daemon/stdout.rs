//! The debugging output: the directory collector's lines printed as JSON,
//! one object per line, with checkpoints in a file so a restart resumes.

use std::io::{self, BufWriter, Write};

use super::{DaemonConfig, DaemonError};
use crate::log_collector::checkpoint::CheckpointFile;
use crate::log_collector::directory::DirectoryCollector;
use crate::log_collector::directory::batch::Batch;
use crate::shutdown::Shutdown;
use crate::watcher;

/// Prints lines until `shutdown` (or until stdout's reader goes away).
pub(super) fn run(config: &DaemonConfig, shutdown: Shutdown) -> Result<(), DaemonError> {
    let checkpoint_file = CheckpointFile::in_directory(&config.data_directory)?;
    let mut checkpoints = checkpoint_file.load()?;
    let mut collector = DirectoryCollector::new(
        config.directory.clone(),
        watcher::platform_watcher()?,
        &checkpoints,
    )?;
    let waker = collector.waker();
    shutdown.on_trigger(move || waker.wake());

    let mut out = BufWriter::with_capacity(256 * 1024, io::stdout().lock());
    let mut batch = Batch::default();
    while !shutdown.is_triggered() {
        collector.next_batch(&mut batch, None)?;
        if batch.is_idle() {
            continue;
        }
        match print_batch(&mut out, &batch) {
            Ok(()) => {}
            // The reader went away (`| head`): stop without committing.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => break,
            Err(e) => return Err(DaemonError::Stdout(e)),
        }
        checkpoints.apply(&batch.checkpoints, &batch.forgotten);
        checkpoint_file.commit(&checkpoints)?;
    }
    tracing::info!(stats = ?collector.stats(), "Stopped.");
    Ok(())
}

fn print_batch(out: &mut impl Write, batch: &Batch) -> io::Result<()> {
    #[derive(serde::Serialize)]
    struct Printed<'a> {
        path: &'a str,
        line: std::borrow::Cow<'a, str>,
    }
    for line in batch.lines() {
        serde_json::to_writer(
            &mut *out,
            &Printed {
                path: line.source,
                line: String::from_utf8_lossy(line.bytes),
            },
        )?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

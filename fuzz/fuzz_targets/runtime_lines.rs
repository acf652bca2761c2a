//! Any bytes as container log lines (CRI and Docker json-file), decoded
//! and joined as the Kubernetes collector does, and their level found as
//! the store does. Nothing may panic, and the joiner never holds more than
//! its bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use monitoring_rs::log_collector::kubernetes::decode::{Format, parse_rfc3339};
use monitoring_rs::log_collector::kubernetes::join::Joiner;
use monitoring_rs::log_database::level::Level;

fuzz_target!(|data: &[u8]| {
    let mut joiner = Joiner::new(4096);
    for line in data.split(|&b| b == b'\n') {
        let _ = parse_rfc3339(line);
        let _ = Level::of_line(line);
        for format in [Format::detect(line), Format::Cri, Format::Docker] {
            if let Ok(record) = format.parse(line)
                && let Some(joined) = joiner.push("source", record)
            {
                assert!(joined.message.len() <= 4096 + line.len());
            }
        }
    }
    let _ = joiner.flush("source");
});

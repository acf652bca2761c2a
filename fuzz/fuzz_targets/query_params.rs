//! Any query string, as Loki's HTTP API reads it: parameters, times,
//! durations, numbers and time ranges. Nothing may panic or overflow.
#![no_main]

use libfuzzer_sys::fuzz_target;
use monitoring_rs::api::params::{Params, parse_duration, parse_time};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_time("t", text);
    let _ = parse_duration("d", text);
    if let Ok(params) = Params::parse(text) {
        let _ = params.range(3_600_000_000_000);
        for key in ["start", "end", "time", "since", "step", "limit", "interval"] {
            let _ = params.time(key);
            let _ = params.duration(key);
            let _ = params.number(key);
        }
    }
});

//! A Prometheus-compatible server's `/api/v1/query` answer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use redbridge::source::prometheus::query::parse_response;

fuzz_target!(|data: &[u8]| {
    if let Ok(samples) = parse_response(data) {
        for s in samples {
            let _ = s.value.is_finite();
        }
    }
});

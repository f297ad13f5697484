//! The NDJSON event parser on arbitrary bytes: never a panic; either one event per non-blank
//! line, or every bad line named, in order, with a reason.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let lines = data.split(|b| *b == b'\n').count();
    match retentiond::events::read_all(data) {
        Ok(events) => {
            let mut last = 0;
            for e in &events {
                assert!(
                    e.line > last && e.line <= lines,
                    "line {} of {lines}",
                    e.line
                );
                last = e.line;
            }
        }
        Err(errors) => {
            assert!(!errors.is_empty());
            let mut last = 0;
            for e in &errors {
                assert!(
                    e.line > last && e.line <= lines,
                    "line {} of {lines}",
                    e.line
                );
                assert!(!e.reason.trim().is_empty());
                last = e.line;
            }
        }
    }
});

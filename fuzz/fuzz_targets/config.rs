//! The config loader on arbitrary text: never a panic; a refusal names the file and says what
//! is wrong; an accepted config can be described.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match retentiond::config::Config::parse(text, "fuzz.toml") {
        Ok(config) => {
            let _ = config.describe();
        }
        Err(e) => {
            let message = e.to_string();
            assert!(message.contains("fuzz.toml"), "{message}");
        }
    }
});

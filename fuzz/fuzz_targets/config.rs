//! The configuration file: any text is a configuration or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use redbridge::model::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = Config::from_yaml(text, "fuzz.yaml") {
        for pool in &config.pools {
            // What `check` prints, and what the state builds from.
            let _ = pool.zones();
            assert!(pool.interval * 2 <= pool.window, "an accepted pool holds two scrapes");
        }
        let _ = redbridge::state::State::new(&config, redbridge::model::Clock::default());
    }
});

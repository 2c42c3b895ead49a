//! Fuzz target for a model package's model.toml
//! (`edgeseg::infer::model::ModelToml`, through the `toml` crate).
//! Any panic or abort is a finding; parse errors are the expected outcome.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = toml::from_str::<toml::Table>(text);
    if let Ok(m) = toml::from_str::<edgeseg::infer::model::ModelToml>(text) {
        // A parsed model.toml must serialise back (round trip of what we accept).
        let _ = toml::to_string(&m);
    }
});

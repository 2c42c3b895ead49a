//! Fuzz target for the daemon's configuration checker,
//! `edgeseg::config::check(path, text)`, which `edgeseg check-config` and the
//! daemon's start both use. Bytes are taken as text (invalid UTF-8 lossily
//! replaced, as an editor would show it). Any panic, abort or unbounded
//! allocation is a finding; diagnostics are the expected outcome, every
//! diagnostic's line must lie inside the text, and a text without a
//! configuration must have at least one diagnostic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (config, diagnostics) = edgeseg::config::check(Path::new("/etc/edgeseg/edgeseg.toml"), &text);
    let lines = text.lines().count().max(1);
    for d in &diagnostics {
        let _ = d.to_string();
        if let Some(l) = d.line {
            assert!(l >= 1 && l <= lines + 1, "diagnostic line {l} outside a {lines}-line text: {d}");
        }
    }
    // A refused text always says why.
    assert!(config.is_some() || !diagnostics.is_empty(), "no configuration and no diagnostic");
});

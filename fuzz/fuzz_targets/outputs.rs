//! What a task wrote to $WEIR_OUTPUTS.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir::engine::outputs;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let declared = ["k".to_string(), "rows".to_string()];
    if let Ok(map) = outputs::parse(text, &declared) {
        assert!(declared.iter().all(|d| map.contains_key(d)));
    }
});

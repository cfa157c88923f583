//! A duration as users write them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir::engine::duration;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(d) = duration::parse(text)
    {
        assert!(!duration::format(d).is_empty());
    }
});

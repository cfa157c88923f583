//! A template parsed and rendered; the first byte sets how long the values are.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use weir::engine::template::{self, Reference, Template, Values};

struct Echo(usize);

impl Values for Echo {
    fn get(&self, r: &Reference) -> Result<Value, String> {
        let name = r.to_string();
        Ok(match name.len() % 4 {
            0 => Value::String(name),
            1 => serde_json::json!(["a", 1, {"k": "v"}]),
            2 => Value::String("v".repeat(self.0)),
            _ => return Err(format!("no value for {name}")),
        })
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&size, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let values = Echo(usize::from(size) * 4096);
    if let Ok(t) = Template::parse(text) {
        assert!(t.references().count() <= text.matches("{{").count());
        if let Ok(out) = t.render(&values) {
            assert!(out.len() <= template::MAX_RENDERED_BYTES);
        }
    }
    let _ = template::render_value(text, &values);
});

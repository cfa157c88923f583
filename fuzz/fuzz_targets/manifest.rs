//! A manifest file as `weir validate` and `weir run` read it; valid pipelines are drawn.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir::manifest::{Manifest, Schemas, check_text};

thread_local! {
    static SCHEMAS: Schemas = Schemas::new();
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    SCHEMAS.with(|schemas| {
        let report = check_text(text, "fuzz.yaml", schemas);
        for p in &report.problems {
            assert!(!p.message.trim().is_empty(), "a problem without a message: {p}");
            assert!(p.message.len() <= 2_048 + text.len() / 8, "a long message: {p}");
        }
        for object in report.objects.iter().filter(|o| o.valid) {
            let spec = match &object.manifest {
                Some(Manifest::Pipeline(p)) => &p.spec,
                Some(Manifest::PipelineRun(r)) => match &r.spec.pipeline_spec {
                    Some(spec) => spec,
                    None => continue,
                },
                other => panic!("a valid object that was not read: {other:?}"),
            };
            let pipeline = weir::engine::validate(spec).expect("valid to weir validate, valid to the engine");
            let _ = weir::graph::text("fuzz", &pipeline);
        }
        let _ = report.select(None);
    });
});

//! Any bytes through load + validate: no panic, no hang, no unbounded memory.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use opsbook_engine::{Registry, Source, Validator};

fn validator() -> &'static Validator<'static> {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    static VALIDATOR: OnceLock<Validator<'static>> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        let registry = REGISTRY.get_or_init(|| {
            let mut r = Registry::new();
            opsbook_engine::builtins::register(&mut r);
            r
        });
        Validator::new(registry)
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let checked = validator().check(Source::new("fuzz.yaml", text.as_ref()), None);
    for d in &checked.diagnostics {
        // Rendering must not panic either, whatever the span.
        let _ = d.short();
        let _ = d.pretty(&checked.source, false);
    }
});

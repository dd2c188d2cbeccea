#![no_main]
//! Templates and filters written by operators run with a fuel limit: any text either fails
//! cleanly or renders, without panicking or running away.
use herald_core::template::TemplateEngine;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    static ENGINE: OnceLock<TemplateEngine> = OnceLock::new();
    let engine = ENGINE.get_or_init(|| {
        // Herald turns panics inside minijinja into errors (catch_unwind); libfuzzer-sys's
        // abort-on-panic hook would hide that. A panic that escapes still aborts: the
        // fuzz_target! wrapper aborts on any unwinding out of this closure.
        std::panic::set_hook(Box::new(|_| {}));
        TemplateEngine::new()
    });
    if let Ok(s) = std::str::from_utf8(data) {
        let ctx = serde_json::json!({"text": "파이프라인 완료", "severity": "error", "payload": {"rows": 3, "list": [1, 2]}});
        if engine.check_template(s).is_ok() {
            let _ = engine.render(s, &ctx);
        }
        if engine.check_expression(s).is_ok() {
            let _ = engine.eval_bool(s, &ctx);
        }
    }
});

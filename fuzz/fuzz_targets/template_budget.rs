#![no_main]
//! Templates assembled from the operations that grow values (`~`, `+`, `replace`, `join`,
//! `tojson`, `indent`, `format`, nesting, loops, macros, literal text) either render within
//! the byte and time budgets or stop with an error: never a panic, and never more memory
//! than the budget allows (the runner's `-rss_limit_mb` for this target is far below what
//! any of them builds unmetered).
use herald_core::template::{Limits, MAX_OUTPUT, TemplateEngine};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

/// Fragments that each grow the namespace value `ns.v` or the output, or open a loop.
const STEPS: &[&str] = &[
    "{% set ns.v = ns.v ~ ns.v %}",
    "{% set ns.v = ns.v + ns.v %}",
    "{% set ns.v = ns.v|string|replace('a', ns.v|string) %}",
    "{% set ns.v = ns.v|string|replace('', 'xyz') %}",
    "{% set ns.v = ns.v|tojson %}",
    "{% set ns.v = ns.v|string|indent(width=64, first=true, blank=true) %}",
    "{% set ns.v = '%512s|%s'|format(ns.v, ns.v) %}",
    "{% set ns.v = [ns.v, ns.v, ns.v] %}",
    "{% set ns.v = ns.l|join(ns.v|string) %}",
    "{% set ns.l = ns.l + ns.l %}",
    "{% set ns.l = [ns.v] + ns.l %}",
    "{% set ns.v = ns.v|list %}",
    "{% set ns.v = ns.v|string|upper %}",
    "{% set ns.v = (ns.v|string)[::-1] %}",
    "{% set ns.v = ns.v|pprint %}",
    "{{ ns.v }}",
    "{{ ns.l }}",
    "{{ ns.v in 'abc' }}",
    "literal text that repeats in loops, literal text that repeats in loops",
    "{% for i in range(1000) %}",
    "{% for i in ns.l %}",
    "{% endfor %}",
    "{% set ns.v = m(ns.v) %}",
    "{% set ns.v = ns.v|dictsort if ns.v is mapping else ns.v %}",
];

fuzz_target!(|data: &[u8]| {
    // Herald's budgets for one input in four; for the rest, smaller ones that stop sooner,
    // so that many more programs are tried in the same time.
    static ENGINES: OnceLock<[TemplateEngine; 2]> = OnceLock::new();
    let engines = ENGINES.get_or_init(|| {
        std::panic::set_hook(Box::new(|_| {}));
        let small = Limits {
            bytes: 1 << 20,
            time: std::time::Duration::from_millis(100),
        };
        [TemplateEngine::new(), TemplateEngine::with_limits(small)]
    });
    let Some((&init, steps)) = data.split_first() else {
        return;
    };
    let engine = &engines[usize::from(init % 4 != 0)];
    let mut src = String::from(
        "{% macro m(x) %}{{ x }}{{ x }}{% endmacro %}{% set ns = namespace(v='ab', l=['a', 'b']) %}",
    );
    if init % 2 == 1 {
        src.push_str("{% set ns.v = payload.text %}");
    }
    let mut open = 0usize;
    for &b in steps.iter().take(64) {
        let step = STEPS[usize::from(b) % STEPS.len()];
        match step {
            "{% endfor %}" if open == 0 => continue,
            "{% endfor %}" => open -= 1,
            s if s.starts_with("{% for") => open += 1,
            _ => {}
        }
        src.push_str(step);
    }
    src.push_str(&"{% endfor %}".repeat(open));
    let ctx = serde_json::json!({"payload": {"text": "파이프라인 a ".repeat(usize::from(init) * 64)}});
    match engine.render(&src, &ctx) {
        Ok(out) => assert!(out.len() <= MAX_OUTPUT),
        Err(e) => assert!(!e.message.is_empty()),
    }
    let _ = engine.check_template(&src);
});

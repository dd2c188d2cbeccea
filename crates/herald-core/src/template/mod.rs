//! Templates and filter expressions (minijinja), run with a fuel limit so that a template
//! cannot loop forever or starve the dispatcher, and with byte and time budgets
//! ([`budget`]) so that it cannot build gigabytes in a few instructions either.
//!
//! The context every template and filter sees is built by [`context`]: the message fields at
//! top level (`text`, `title`, `severity`, `event_type`, `payload`, `id`, `created_at`), and
//! `message`, `destination` (`name`, `kind`) and `attempt` (`number`) objects.

mod budget;

use crate::message::Message;
pub use budget::{BYTE_BUDGET, Limits, TIME_BUDGET};
use minijinja::machinery::{
    CodeGenerator, CompiledTemplate, Instructions, TemplateConfig, Vm, make_string_output,
    parse_expr,
};
use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Instructions a single render may spend.
pub const FUEL: u64 = 200_000;
/// Largest rendered output accepted.
pub const MAX_OUTPUT: usize = 1 << 20;

/// A template environment shared by everything that renders.
pub struct TemplateEngine {
    env: Environment<'static>,
    limits: Limits,
}

impl Default for TemplateEngine {
    fn default() -> Self {
        Self::new()
    }
}

/// Why a render or an evaluation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    pub message: String,
    /// It stopped on the byte or time budget (not on the data or the syntax).
    pub over_budget: bool,
}

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<String> for TemplateError {
    fn from(message: String) -> Self {
        TemplateError {
            message,
            over_budget: false,
        }
    }
}

impl From<TemplateError> for String {
    fn from(e: TemplateError) -> Self {
        e.message
    }
}

/// Compiled, instrumented code of one template or expression.
struct Code<'s> {
    root: Instructions<'s>,
    blocks: BTreeMap<&'s str, Instructions<'s>>,
}

impl TemplateEngine {
    pub fn new() -> Self {
        Self::with_limits(Limits::default())
    }

    /// An engine with other budgets than [`BYTE_BUDGET`] and [`TIME_BUDGET`].
    pub fn with_limits(limits: Limits) -> Self {
        let mut env = Environment::new();
        env.set_fuel(Some(FUEL));
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_undefined_behavior(UndefinedBehavior::Chainable);
        budget::install(&mut env);
        TemplateEngine { env, limits }
    }

    /// Compiles a template, reporting a syntax error as text; refuses a template that
    /// exceeds the byte or time budget when rendered for a sample message (it would for
    /// every message).
    pub fn check_template(&self, src: &str) -> Result<(), String> {
        reject_unbounded(src, false)?;
        guarded(|| compile_template(src).map(|_| ()))?;
        match self.render(src, &sample_context()) {
            Err(e) if e.over_budget => Err(format!("{e} (rendering it for a sample message)")),
            _ => Ok(()),
        }
    }

    /// Compiles a filter expression such as `severity == "critical"`; refuses one that
    /// exceeds the budget when evaluated for a sample message.
    pub fn check_expression(&self, src: &str) -> Result<(), String> {
        reject_unbounded(src, true)?;
        guarded(|| compile_expression(src).map(|_| ()))?;
        match self.eval_bool(src, &sample_context()) {
            Err(e) if e.over_budget => Err(format!("{e} (evaluating it for a sample message)")),
            _ => Ok(()),
        }
    }

    /// Renders a template against a context.
    pub fn render(&self, src: &str, ctx: &Value) -> Result<String, TemplateError> {
        let (out, meter) = budget::metered(self.limits, || {
            guarded(|| {
                let code = compile_template(src)?;
                let mut out = String::new();
                Vm::new(&self.env)
                    .eval(
                        &code.root,
                        minijinja::Value::from_serialize(ctx),
                        &code.blocks,
                        &mut make_string_output(&mut out),
                        AutoEscape::None,
                    )
                    .map_err(describe)?;
                Ok(out)
            })
        });
        let out = out.map_err(|message| TemplateError {
            message,
            over_budget: meter.exceeded,
        })?;
        if out.len() > MAX_OUTPUT {
            return Err(format!("rendered output exceeds {MAX_OUTPUT} bytes").into());
        }
        Ok(out)
    }

    /// Renders a template that must produce JSON.
    pub fn render_json(&self, src: &str, ctx: &Value) -> Result<Value, TemplateError> {
        let text = self.render(src, ctx)?;
        serde_json::from_str(&text)
            .map_err(|e| format!("template output is not valid JSON: {e}").into())
    }

    /// Evaluates a filter expression to a boolean (minijinja truthiness).
    pub fn eval_bool(&self, expr: &str, ctx: &Value) -> Result<bool, TemplateError> {
        let (value, meter) = budget::metered(self.limits, || {
            guarded(|| {
                let code = compile_expression(expr)?;
                let mut sink = String::new();
                let (value, _) = Vm::new(&self.env)
                    .eval(
                        &code.root,
                        minijinja::Value::from_serialize(ctx),
                        &code.blocks,
                        &mut make_string_output(&mut sink),
                        AutoEscape::None,
                    )
                    .map_err(describe)?;
                Ok(value.is_some_and(|v| v.is_true()))
            })
        });
        value.map_err(|message| TemplateError {
            message,
            over_budget: meter.exceeded,
        })
    }
}

/// Compiles a template as minijinja would, then instruments it ([`budget::instrument`]).
fn compile_template(src: &str) -> Result<Code<'_>, String> {
    let config = TemplateConfig {
        syntax_config: Default::default(),
        ws_config: Default::default(),
        default_auto_escape: Arc::new(|_| AutoEscape::None),
    };
    let compiled = CompiledTemplate::new("<string>", src, &config).map_err(describe)?;
    budget::refuse_splats(&compiled.instructions)?;
    for block in compiled.blocks.values() {
        budget::refuse_splats(block)?;
    }
    Ok(Code {
        root: budget::instrument(&compiled.instructions),
        blocks: compiled
            .blocks
            .iter()
            .map(|(name, code)| (*name, budget::instrument(code)))
            .collect(),
    })
}

/// Compiles an expression as minijinja's `compile_expression` does, then instruments it.
fn compile_expression(src: &str) -> Result<Code<'_>, String> {
    let ast = parse_expr(src).map_err(describe)?;
    let mut g = CodeGenerator::new("<expression>", src);
    g.compile_expr(&ast);
    let (root, _) = g.finish();
    budget::refuse_splats(&root)?;
    // The value the expression leaves on the stack is what the VM returns.
    Ok(Code {
        root: budget::instrument(&root),
        blocks: BTreeMap::new(),
    })
}

/// The context a save renders with to find templates that exceed the budget whatever the
/// message: the documented fields with plain values.
fn sample_context() -> Value {
    let m = json!({
        "id": "msg_sample", "created_at": "2026-01-01T00:00:00Z", "text": "sample text",
        "title": "sample title", "severity": "info", "event_type": "sample.event",
        "payload": {},
    });
    let mut ctx = m.as_object().cloned().unwrap_or_default();
    ctx.insert("message".into(), m);
    ctx.insert(
        "destination".into(),
        json!({"name": "sample", "kind": "http"}),
    );
    ctx.insert("attempt".into(), json!({"number": 1}));
    Value::Object(ctx)
}

/// Refuses the `*` operator. Fuel counts instructions, but one `*` can build a sequence of
/// quadrillions of items (`() * 6666666666666661`, found by the `template` fuzz target) and
/// hang the worker that iterates it; with message data as the factor, any sender could.
/// Multiplication has little use in a notification; compute such values in the payload.
fn reject_unbounded(src: &str, in_expr: bool) -> Result<(), String> {
    use minijinja::machinery::{Token, WhitespaceConfig, tokenize};
    guarded(|| {
        // The tokenizer repeats its error forever: stop at the first one (the compiler
        // reports syntax errors, with better messages).
        for t in tokenize(
            src,
            in_expr,
            Default::default(),
            WhitespaceConfig::default(),
        ) {
            match t {
                Ok((Token::Mul, span)) => {
                    return Err(format!(
                        "line {}: the `*` operator is not available in Herald templates (compute the value in the payload)",
                        span.start_line
                    ));
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        Ok(())
    })
}

/// Runs a minijinja call, turning a panic inside the engine into an error. (minijinja 2.24
/// panics with "empty lexer stack" on some malformed input, e.g. the expression `v}}de`,
/// found by the `template` fuzz target.)
fn guarded<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err("the template engine could not process this text".to_string()))
}

fn describe(e: minijinja::Error) -> String {
    let mut s = e.to_string();
    if let Some(detail) = e.detail()
        && !s.contains(detail)
    {
        s.push_str(": ");
        s.push_str(detail);
    }
    s
}

/// The template context for a message on its way to a destination.
pub fn context(message: &Message, destination: &str, kind: &str, attempt: u32) -> Value {
    let m = message.template_view();
    let mut ctx = m.as_object().cloned().unwrap_or_default();
    ctx.insert("message".into(), m);
    ctx.insert(
        "destination".into(),
        json!({"name": destination, "kind": kind}),
    );
    ctx.insert("attempt".into(), json!({"number": attempt}));
    Value::Object(ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_json_with_tojson() {
        let t = TemplateEngine::new();
        let ctx = json!({"text": "파이프라인 \"완료\"", "payload": {"room": "195878155435574272"}});
        let out = t
            .render_json(r#"{"chatroomId": {{ payload.room|tojson }}, "msgType": "TEXT", "chatMsg": {{ text|tojson }}}"#, &ctx)
            .unwrap();
        assert_eq!(
            out,
            json!({"chatroomId": "195878155435574272", "msgType": "TEXT", "chatMsg": "파이프라인 \"완료\""})
        );
    }

    #[test]
    fn syntax_errors_are_reported() {
        let t = TemplateEngine::new();
        assert!(t.check_template("{{ text ").is_err());
        assert!(t.check_template("{% for x in y %}").is_err());
        assert!(t.check_expression("severity ==").is_err());
        assert!(t.check_expression(r#"severity == "critical""#).is_ok());
    }

    #[test]
    fn filters_evaluate() {
        let t = TemplateEngine::new();
        assert!(
            t.eval_bool(
                r#"severity == "critical""#,
                &json!({"severity": "critical"})
            )
            .unwrap()
        );
        assert!(
            !t.eval_bool(r#"severity == "critical""#, &json!({"severity": "info"}))
                .unwrap()
        );
        assert!(
            !t.eval_bool("payload.missing.deeper", &json!({"payload": {}}))
                .unwrap()
        );
    }

    #[test]
    fn multiplication_is_refused() {
        let t = TemplateEngine::new();
        assert!(
            t.check_expression("0-()*6666666666666661")
                .unwrap_err()
                .contains("`*`")
        );
        assert!(t.check_template("{{ '-' * payload.width }}").is_err());
        assert!(
            t.check_template("{{ 2 ** 3 }} {{ '*' }}").is_ok(),
            "power and a literal star are fine"
        );
        assert!(
            t.check_expression("\n$").is_err(),
            "a lexer error ends the scan (found by the fuzzer)"
        );
    }

    #[test]
    fn engine_panics_become_errors() {
        let t = TemplateEngine::new();
        assert!(t.check_expression("v}}de").is_err());
        assert!(t.eval_bool("v}}de", &json!({})).is_err());
    }

    #[test]
    fn runaway_templates_run_out_of_fuel() {
        let t = TemplateEngine::new();
        let err = t
            .render(
                "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
                &json!({}),
            )
            .unwrap_err();
        assert!(err.message.contains("fuel"), "{err}");
    }

    /// Everything minijinja offers that Herald's documentation shows still works once the
    /// code is instrumented: jumps, loops (also recursive), macros, captures, blocks,
    /// keyword arguments.
    #[test]
    fn instrumented_templates_render_as_before() {
        let t = TemplateEngine::new();
        let ctx = json!({"text": "a\nb", "payload": {"n": [1, 2, 3], "tree": [{"name": "r", "children": [{"name": "c"}]}]}});
        for (src, want) in [
            (
                "{% for i in payload.n %}{{ loop.index }}{% if not loop.last %},{% endif %}{% endfor %}",
                "1,2,3",
            ),
            ("{% for i in [] %}x{% else %}empty{% endfor %}", "empty"),
            (
                "{% macro m(x, y=2) %}[{{ x }}{{ y }}]{% endmacro %}{{ m(1) }}{{ m(3, y=4) }}",
                "[12][34]",
            ),
            (
                "{% for i in payload.tree recursive %}{{ i.name }}{% if i.children %}({{ loop(i.children) }}){% endif %}{% endfor %}",
                "r(c)",
            ),
            ("{% set x %}cap{% endset %}{{ x|upper }}", "CAP"),
            ("{% filter upper %}abc{% endfilter %}", "ABC"),
            ("{% block b %}in a block{% endblock %}", "in a block"),
            ("{{ text|indent(width=2, first=true) }}", "  a\n  b"),
            ("{{ payload.n|tojson(indent=1) }}", "[\n 1,\n 2,\n 3\n]"),
            ("{{ '%3s|%-3s|'|format('a', 'b') }}", "  a|b  |"),
            ("{{ payload.n|join(', ') }}", "1, 2, 3"),
            (
                "{{ 'a' in 'abc' }} {{ 1 + 2 }} {{ 'a' + 'b' }} {{ [1] + [2] }} {{ 'x' ~ 1 }}",
                "True 3 ab [1, 2] x1",
            ),
            ("{{ text|replace('\n', ' / ') }}", "a / b"),
            (
                "{% if payload.n|length > 2 and text %}yes{% else %}no{% endif %}",
                "yes",
            ),
            ("{{ payload.missing or 'fallback' }}", "fallback"),
        ] {
            assert_eq!(t.render(src, &ctx).unwrap(), want, "{src}");
        }
        assert!(
            t.eval_bool("payload.n|length == 3 and 'a' in text", &ctx)
                .unwrap()
        );
        assert!(!t.eval_bool("payload.n|length == 4", &ctx).unwrap());
    }

    /// The issue's two cases: nine `replace` steps in a filter (21 s and 2.9 GB before), and
    /// a body template doubling a string (1 GiB before). Both decided at save time.
    #[test]
    fn templates_that_would_build_gigabytes_are_refused_at_save_time() {
        let t = TemplateEngine::new();
        let nine = format!("'x'{}|length > 0", "|replace('x', 'xxxxxxxxxx')".repeat(9));
        let err = t.check_expression(&nine).unwrap_err();
        assert!(err.contains("byte budget"), "{err}");
        // `set` inside a loop is scoped to one iteration: a namespace carries the value on.
        let doubling = "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}";
        let err = t.check_template(doubling).unwrap_err();
        assert!(
            err.contains("byte budget") && err.contains("<string>:1"),
            "{err}"
        );
        let grow = |init: &str, step: &str| {
            format!(
                "{{% set ns = namespace(v={init}) %}}{{% for i in range(40) %}}{{% set ns.v = {step} %}}{{% endfor %}}{{{{ ns.v|length }}}}"
            )
        };
        let nested = "{% set ns = namespace(v=['ab']) %}{% for i in range(40) %}{% set ns.v = [ns.v, ns.v] %}{% endfor %}";
        for src in [
            grow("[1]", "ns.v + ns.v"),
            grow("'ab'", "ns.v|tojson"),
            grow("'ab'", "ns.v|replace('', ns.v)"),
            grow("'ab'", "ns.v ~ ns.v ~ ns.v"),
            // Straight-line code doubles too.
            format!("{{% set s = 'x' %}}{}{{{{ s|length }}}}", "{% set s = s ~ s %}".repeat(40)),
            format!("{nested}{{{{ ns.v }}}}"),
            format!("{nested}{{{{ '' ~ ns.v }}}}"),
            format!("{nested}{{{{ ns.v|lower }}}}"),
            format!("{nested}{{{{ ns.v in 'abc' }}}}"),
            format!("{nested}{{{{ ns.v|join('-') }}}}"),
            format!("{{% for i in range(100000) %}}{{{{ 'x' }}}}{}{{% endfor %}}", "some literal text ".repeat(1000)),
            "{% macro d(s, n) %}{% if n %}{{ d(s ~ s, n - 1) }}{% else %}{{ s|length }}{% endif %}{% endmacro %}{{ d('x', 40) }}".to_string(),
        ] {
            let Err(err) = t.check_template(&src) else {
                panic!("{src}: accepted, renders {:?}", t.render(&src, &sample_context()).map(|s| s.len()));
            };
            assert!(err.contains("budget"), "{src}: {err}");
        }
    }

    /// Single calls that would allocate far more than their input before returning.
    #[test]
    fn padding_widths_are_bounded() {
        let t = TemplateEngine::new();
        for src in [
            "{{ text|indent(1000000000000) }}",
            "{{ text|indent(width=100000) }}",
            "{{ payload|tojson(indent=100000000) }}",
            "{{ '%999999999s'|format(text) }}",
            "{{ '%.999999999f'|format(1.5) }}",
        ] {
            let err = t
                .render(src, &json!({"text": "a", "payload": {"a": 1}}))
                .unwrap_err();
            assert!(err.message.contains("larger than"), "{src}: {err}");
        }
    }

    /// What depends on the data is decided when it runs: the one render fails, naming the
    /// budget; the next message renders.
    #[test]
    fn data_that_would_exceed_the_budget_fails_that_render_only() {
        let t = TemplateEngine::new();
        let src = "{{ text|replace('x', text) }}";
        t.check_template(src).unwrap();
        let big = json!({"text": "x".repeat(10_000)});
        let err = t.render(src, &big).unwrap_err();
        assert!(
            err.over_budget && err.message.contains("byte budget"),
            "{err:?}"
        );
        assert_eq!(t.render(src, &json!({"text": "axb"})).unwrap(), "aaxbb");
        let err = t
            .eval_bool("(text|replace('x', text))|length > 1", &big)
            .unwrap_err();
        assert!(err.over_budget, "{err:?}");
        // Within the budget, a large message renders whole.
        let text = "파이프라인 ".repeat(20_000);
        let out = t
            .render("{{ text|tojson }}", &json!({"text": text}))
            .unwrap();
        assert_eq!(out.len(), text.len() + 2);
    }

    /// The time budget stops a render that loops over costly comparisons; a smaller budget
    /// shows it without a slow test.
    #[test]
    fn the_time_budget_stops_a_long_render() {
        let t = TemplateEngine::with_limits(Limits {
            bytes: BYTE_BUDGET,
            time: std::time::Duration::from_millis(1),
        });
        let big = json!({"payload": {"a": "x".repeat(100_000), "b": "x".repeat(100_000)}});
        let err = t
            .render(
                "{% for i in range(100000) %}{% if payload.a == payload.b %}{% endif %}{% endfor %}",
                &big,
            )
            .unwrap_err();
        assert!(
            err.over_budget && err.message.contains("time budget"),
            "{err:?}"
        );
    }

    #[test]
    fn argument_splats_are_refused() {
        let t = TemplateEngine::new();
        for src in [
            "{{ range(*payload.args) }}",
            "{{ text|replace(*payload.args) }}",
        ] {
            let err = t.check_template(src).unwrap_err();
            assert!(err.contains("splats") || err.contains("`*`"), "{err}");
        }
    }
}

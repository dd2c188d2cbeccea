//! Templates and filter expressions (minijinja), run with a fuel limit so that a template
//! cannot loop forever or starve the dispatcher.
//!
//! The context every template and filter sees is built by [`context`]: the message fields at
//! top level (`text`, `title`, `severity`, `event_type`, `payload`, `id`, `created_at`), and
//! `message`, `destination` (`name`, `kind`) and `attempt` (`number`) objects.

use crate::message::Message;
use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde_json::{Value, json};

/// Instructions a single render may spend.
pub const FUEL: u64 = 200_000;
/// Largest rendered output accepted.
pub const MAX_OUTPUT: usize = 1 << 20;

/// A template environment shared by everything that renders.
pub struct TemplateEngine {
    env: Environment<'static>,
}

impl Default for TemplateEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl TemplateEngine {
    pub fn new() -> Self {
        let mut env = Environment::new();
        env.set_fuel(Some(FUEL));
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_undefined_behavior(UndefinedBehavior::Chainable);
        TemplateEngine { env }
    }

    /// Compiles a template, reporting a syntax error as text.
    pub fn check_template(&self, src: &str) -> Result<(), String> {
        reject_unbounded(src, false)?;
        guarded(|| {
            self.env
                .template_from_str(src)
                .map(|_| ())
                .map_err(describe)
        })
    }

    /// Compiles a filter expression such as `severity == "critical"`.
    pub fn check_expression(&self, src: &str) -> Result<(), String> {
        reject_unbounded(src, true)?;
        guarded(|| {
            self.env
                .compile_expression(src)
                .map(|_| ())
                .map_err(describe)
        })
    }

    /// Renders a template against a context.
    pub fn render(&self, src: &str, ctx: &Value) -> Result<String, String> {
        let out = guarded(|| self.env.render_str(src, ctx).map_err(describe))?;
        if out.len() > MAX_OUTPUT {
            return Err(format!("rendered output exceeds {MAX_OUTPUT} bytes"));
        }
        Ok(out)
    }

    /// Renders a template that must produce JSON.
    pub fn render_json(&self, src: &str, ctx: &Value) -> Result<Value, String> {
        let text = self.render(src, ctx)?;
        serde_json::from_str(&text).map_err(|e| format!("template output is not valid JSON: {e}"))
    }

    /// Evaluates a filter expression to a boolean (minijinja truthiness).
    pub fn eval_bool(&self, expr: &str, ctx: &Value) -> Result<bool, String> {
        guarded(|| {
            let compiled = self.env.compile_expression(expr).map_err(describe)?;
            compiled.eval(ctx).map(|v| v.is_true()).map_err(describe)
        })
    }
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
        assert!(err.contains("fuel"), "{err}");
    }
}

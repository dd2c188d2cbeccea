//! Byte and time budgets for one render or one filter evaluation.
//!
//! Fuel counts instructions, not bytes: nine `|replace("x", "xxxxxxxxxx")` steps, or a
//! string doubled by `~` in a loop, build gigabytes in a handful of instructions. minijinja
//! has no hook on its operators, so Herald instruments the compiled code instead: after
//! compiling, [`instrument`] rewrites the instruction list so that
//!
//! - every `~`, `+` and `in` first hands its operands to a check that refuses a result the
//!   budget cannot hold (before anything is allocated) and charges what it will build;
//! - every filter call first checks its arguments (a filter that turns a value into text
//!   must not be handed a value whose text would not fit; `replace`, `join`, `indent`,
//!   `tojson` and `format` are checked for what they will build), and every filter,
//!   function and method result, slice and captured block is charged for its size;
//! - every piece of literal text and every `{{ … }}` output is charged as it is written;
//! - every loop iteration looks at the clock.
//!
//! The budget is cumulative: the bytes of every string, list and output a render builds
//! count, freed or not, so a render never holds more than [`BYTE_BUDGET`] (plus the one
//! value being checked) however it loops. A render that would exceed a budget stops with an
//! error naming the budget and the template line; [`Meter::exceeded`] tells it from a data
//! error, so a save can refuse a template that exceeds it on a sample message.
//!
//! The hooks are functions named `__herald_*` in the environment. A template may call them
//! itself: they only ever check, charge and hand back their arguments, so that gains
//! nothing.

use minijinja::machinery::{Instruction, Instructions};
use minijinja::value::{Rest, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind, Output, State};
use std::cell::RefCell;
use std::time::{Duration, Instant};

/// Bytes one render (or one filter evaluation) may build in all: strings, lists, output.
pub const BYTE_BUDGET: usize = 16 << 20;
/// Wall-clock time one render (or one filter evaluation) may take.
pub const TIME_BUDGET: Duration = Duration::from_secs(1);
/// Largest `indent` width, `tojson` indent and `format` width or precision.
const MAX_PAD: usize = 1024;
/// What one item of a list or map is charged (a minijinja `Value`).
const ITEM: usize = std::mem::size_of::<Value>();

struct Budget {
    limits: Limits,
    left: usize,
    deadline: Instant,
    exceeded: bool,
}

thread_local! {
    static BUDGET: RefCell<Option<Budget>> = const { RefCell::new(None) };
}

/// The budgets of one render or evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub bytes: usize,
    pub time: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            bytes: BYTE_BUDGET,
            time: TIME_BUDGET,
        }
    }
}

/// The outcome of a metered evaluation: whether it stopped on a budget.
pub(super) struct Meter {
    pub exceeded: bool,
}

/// Runs `f` (one render or evaluation, on this thread) under fresh budgets.
pub(super) fn metered<T>(limits: Limits, f: impl FnOnce() -> T) -> (T, Meter) {
    struct Reset(Option<Budget>);
    impl Drop for Reset {
        fn drop(&mut self) {
            BUDGET.with(|b| *b.borrow_mut() = self.0.take());
        }
    }
    let outer = BUDGET.with(|b| {
        b.borrow_mut().replace(Budget {
            left: limits.bytes,
            limits,
            deadline: Instant::now() + limits.time,
            exceeded: false,
        })
    });
    let reset = Reset(outer);
    let out = f();
    let exceeded = BUDGET.with(|b| b.borrow().as_ref().is_some_and(|b| b.exceeded));
    drop(reset);
    (out, Meter { exceeded })
}

/// Charges `bytes` and looks at the clock. Outside [`metered`] nothing is limited.
fn charge(bytes: usize) -> Result<(), Error> {
    BUDGET.with(|b| {
        let mut b = b.borrow_mut();
        let Some(b) = b.as_mut() else {
            return Ok(());
        };
        if b.exceeded {
            return Err(over_bytes(b.limits));
        }
        if Instant::now() > b.deadline {
            b.exceeded = true;
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!(
                    "the template ran longer than its time budget ({} ms)",
                    b.limits.time.as_millis()
                ),
            ));
        }
        match b.left.checked_sub(bytes) {
            Some(left) => {
                b.left = left;
                Ok(())
            }
            None => {
                b.exceeded = true;
                Err(over_bytes(b.limits))
            }
        }
    })
}

/// Refuses (without charging) work on values whose text is larger than what is left.
fn fits(bytes: usize) -> Result<(), Error> {
    let left = BUDGET.with(|b| b.borrow().as_ref().map(|b| b.left));
    match left {
        Some(left) if bytes > left => BUDGET.with(|b| {
            let mut b = b.borrow_mut();
            let b = b.as_mut().expect("a budget is set");
            b.exceeded = true;
            Err(over_bytes(b.limits))
        }),
        _ => charge(0),
    }
}

fn left() -> usize {
    BUDGET.with(|b| b.borrow().as_ref().map_or(usize::MAX, |b| b.left))
}

fn over_bytes(limits: Limits) -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        format!(
            "the template would build more than its byte budget ({} bytes)",
            limits.bytes
        ),
    )
}

/// The length of `v` as text (what `~`, `{{ }}` or a string filter would make of it),
/// counted until it passes `limit`: a list holding itself a thousand times over is not
/// walked to the end. Iterative, so depth costs no stack.
fn text_size(v: &Value, limit: usize) -> usize {
    let mut total = 0usize;
    let mut stack = vec![(v.clone(), true)];
    while let Some((v, top)) = stack.pop() {
        total = total.saturating_add(match v.kind() {
            ValueKind::String => v.as_str().map_or(0, str::len) + if top { 0 } else { 2 },
            ValueKind::Bytes => v.as_bytes().map_or(0, |b| b.len() * 4),
            ValueKind::Seq | ValueKind::Map | ValueKind::Iterable => {
                let is_map = v.kind() == ValueKind::Map;
                if let Ok(items) = v.try_iter() {
                    for key in items {
                        if is_map {
                            let value = v.get_item(&key).unwrap_or_default();
                            stack.push((value, false));
                        }
                        stack.push((key, false));
                        total = total.saturating_add(2);
                        if total > limit {
                            return total;
                        }
                    }
                }
                2
            }
            _ => 24,
        });
        if total > limit {
            return total;
        }
    }
    total
}

/// What keeping `v` costs: its bytes if it is text, its items if it is a container.
fn held_size(v: &Value) -> usize {
    match v.kind() {
        ValueKind::String => v.as_str().map_or(0, str::len),
        ValueKind::Bytes => v.as_bytes().map_or(0, <[u8]>::len),
        ValueKind::Seq | ValueKind::Iterable => v.len().unwrap_or(0).saturating_mul(ITEM),
        ValueKind::Map => v.len().unwrap_or(0).saturating_mul(2 * ITEM),
        _ => 0,
    }
}

/// Hands the arguments back so that `UnpackList` restores the stack as it was.
fn restored(args: Vec<Value>) -> Value {
    Value::from(args.into_iter().rev().collect::<Vec<_>>())
}

/// Before `~`: the text of both sides is what it builds.
fn pre_concat(args: Rest<Value>) -> Result<Value, Error> {
    let limit = left();
    let size = args
        .iter()
        .fold(0usize, |n, v| n.saturating_add(text_size(v, limit)));
    charge(size)?;
    Ok(restored(args.0))
}

/// Before `+`: two strings or two lists are joined; numbers cost nothing.
fn pre_add(args: Rest<Value>) -> Result<Value, Error> {
    let size = match (args.first(), args.get(1)) {
        (Some(a), Some(b)) if a.kind() == b.kind() => held_size(a).saturating_add(held_size(b)),
        _ => 0,
    };
    charge(size)?;
    Ok(restored(args.0))
}

/// Before `in` and before filters that make text of their input: the text must fit.
fn pre_text(args: Rest<Value>) -> Result<Value, Error> {
    let limit = left();
    let size = args
        .iter()
        .fold(0usize, |n, v| n.saturating_add(text_size(v, limit)));
    fits(size)?;
    Ok(restored(args.0))
}

/// A keyword argument (`indent(width=…)`), or the positional one at `pos`.
fn arg(args: &[Value], pos: usize, name: &str) -> Option<Value> {
    let kwargs = args.last().filter(|v| v.is_kwargs());
    let positional = args.len() - usize::from(kwargs.is_some());
    if pos < positional {
        return Some(args[pos].clone());
    }
    kwargs.and_then(|k| k.get_attr(name).ok().filter(|v| !v.is_undefined()))
}

fn pad(v: Option<Value>, what: &str) -> Result<usize, Error> {
    let n = v
        .and_then(|v| {
            if v.kind() == ValueKind::Bool {
                Some(if v.is_true() { 2 } else { 0 })
            } else {
                usize::try_from(v).ok()
            }
        })
        .unwrap_or(0);
    if n > MAX_PAD {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("{what} {n} is larger than {MAX_PAD}"),
        ));
    }
    Ok(n)
}

/// Before `replace`: the result's length is known before it is built.
fn pre_replace(args: Rest<Value>) -> Result<Value, Error> {
    let text = |i: usize| args.get(i).map(|v| v.to_string()).unwrap_or_default();
    let limit = left();
    let size = args.first().map_or(0, |v| text_size(v, limit));
    fits(size)?;
    let (value, from, to) = (text(0), text(1), text(2));
    let hits = if from.is_empty() {
        value.chars().count() + 1
    } else {
        value.matches(from.as_str()).count()
    };
    let grown = value
        .len()
        .saturating_add(hits.saturating_mul(to.len().saturating_sub(from.len())));
    fits(grown)?;
    Ok(restored(args.0))
}

/// Before `join`: the parts and the separators.
fn pre_join(args: Rest<Value>) -> Result<Value, Error> {
    let limit = left();
    let mut size = 0usize;
    if let Some(items) = args.first() {
        let sep = arg(&args, 1, "d").map_or(0, |s| s.to_string().len());
        if let Ok(iter) = items.try_iter() {
            for item in iter {
                size = size
                    .saturating_add(text_size(&item, limit))
                    .saturating_add(sep);
                if size > limit {
                    break;
                }
            }
        }
    }
    fits(size)?;
    Ok(restored(args.0))
}

/// Before `indent`: every line grows by the width.
fn pre_indent(args: Rest<Value>) -> Result<Value, Error> {
    let width = pad(arg(&args, 1, "width"), "indent width")?;
    let limit = left();
    let size = args.first().map_or(0, |v| text_size(v, limit));
    fits(size)?;
    let lines = args
        .first()
        .map_or(0, |v| v.to_string().matches('\n').count() + 1);
    fits(size.saturating_add(lines.saturating_mul(width)))?;
    Ok(restored(args.0))
}

/// Before `tojson`: every nesting level of every line is indented.
fn pre_tojson(args: Rest<Value>) -> Result<Value, Error> {
    let indent = pad(arg(&args, 1, "indent"), "tojson indent")?;
    let limit = left();
    let size = args.first().map_or(0, |v| text_size(v, limit));
    // Escaping can make six bytes of one; indentation adds a line per item.
    fits(
        size.saturating_mul(6)
            .saturating_add(size.saturating_mul(indent)),
    )?;
    Ok(restored(args.0))
}

/// Before `format`: the arguments' text, and no width or precision over [`MAX_PAD`].
fn pre_format(args: Rest<Value>) -> Result<Value, Error> {
    if let Some(spec) = args.first().and_then(|f| f.as_str().map(str::to_owned)) {
        let mut rest = spec.as_str();
        while let Some(i) = rest.find('%') {
            rest = &rest[i + 1..];
            let flags = rest
                .find(|c: char| !(c.is_ascii_digit() || "#0- +'.*".contains(c)))
                .unwrap_or(rest.len());
            for n in rest[..flags].split(|c: char| !c.is_ascii_digit()) {
                if !n.is_empty() {
                    pad(
                        Some(Value::from(n.parse::<u64>().unwrap_or(u64::MAX))),
                        "format width",
                    )?;
                }
            }
            rest = &rest[flags.min(rest.len())..];
            rest = rest.get(1..).unwrap_or("");
        }
    }
    pre_text(args)
}

/// After a value is made: charge what it holds.
fn post(value: Value) -> Result<Value, Error> {
    charge(held_size(&value))?;
    Ok(value)
}

/// Before literal text is written.
fn raw(len: usize) -> Result<(), Error> {
    charge(len)
}

/// On every loop iteration.
fn tick() -> Result<(), Error> {
    charge(0)
}

/// Registers the hooks and the metered output on `env`.
pub(super) fn install(env: &mut Environment<'_>) {
    env.add_function("__herald_pre_concat", pre_concat);
    env.add_function("__herald_pre_add", pre_add);
    env.add_function("__herald_pre_text", pre_text);
    env.add_function("__herald_pre_replace", pre_replace);
    env.add_function("__herald_pre_join", pre_join);
    env.add_function("__herald_pre_indent", pre_indent);
    env.add_function("__herald_pre_tojson", pre_tojson);
    env.add_function("__herald_pre_format", pre_format);
    env.add_function("__herald_post", post);
    env.add_function("__herald_raw", raw);
    env.add_function("__herald_tick", tick);
    env.set_formatter(|out: &mut Output, state: &State, value: &Value| {
        let size = text_size(value, left());
        fits(size)?;
        charge(size)?;
        minijinja::escape_formatter(out, state, value)
    });
}

/// The check to run before a filter: `None` for filters that only look at or rearrange
/// their input (their results are charged afterwards all the same).
fn filter_check(name: &str) -> Option<&'static str> {
    Some(match name {
        "length" | "count" | "first" | "last" | "default" | "d" | "attr" | "items" | "dictsort"
        | "reverse" | "sort" | "unique" | "select" | "reject" | "selectattr" | "rejectattr"
        | "map" | "groupby" | "batch" | "slice" | "chain" | "zip" | "min" | "max" | "sum"
        | "abs" | "int" | "float" | "round" | "bool" | "list" => return None,
        "replace" => "__herald_pre_replace",
        "join" => "__herald_pre_join",
        "indent" => "__herald_pre_indent",
        "tojson" => "__herald_pre_tojson",
        "format" => "__herald_pre_format",
        _ => "__herald_pre_text",
    })
}

/// Calls (filters, functions) whose argument count is only known at run time — a splat
/// (`f(*args)`, `f(**kwargs)`) — cannot be checked before they run: refused.
pub(super) fn refuse_splats(code: &Instructions<'_>) -> Result<(), String> {
    for i in 0..code.len() as u32 {
        let splat = matches!(
            code.get(i),
            Some(
                Instruction::ApplyFilter(_, None, _)
                    | Instruction::CallFunction(_, None)
                    | Instruction::CallMethod(_, None)
                    | Instruction::CallObject(None)
                    | Instruction::PerformTest(_, None, _)
            )
        );
        if splat {
            let line = code.get_line(i).unwrap_or(0);
            return Err(format!(
                "line {line}: argument splats (`*args`, `**kwargs`) are not available in Herald templates"
            ));
        }
    }
    Ok(())
}

/// The metered copy of compiled code: hooks inserted as described in the module
/// documentation, every jump and macro offset moved to where its instruction went.
pub(super) fn instrument<'s>(code: &Instructions<'s>) -> Instructions<'s> {
    let n = code.len() as u32;
    let before = |i: &Instruction<'s>| -> Vec<Instruction<'s>> {
        let check = |name: &'static str, args: u16| {
            vec![
                Instruction::CallFunction(name, Some(args)),
                Instruction::UnpackList(usize::from(args)),
            ]
        };
        match i {
            Instruction::StringConcat => check("__herald_pre_concat", 2),
            Instruction::Add => check("__herald_pre_add", 2),
            Instruction::In => check("__herald_pre_text", 2),
            Instruction::ApplyFilter(name, Some(args), _) => {
                filter_check(name).map_or_else(Vec::new, |hook| check(hook, *args))
            }
            Instruction::EmitRaw(text) => vec![
                Instruction::LoadConst(Value::from(text.len())),
                Instruction::CallFunction("__herald_raw", Some(1)),
                Instruction::DiscardTop,
            ],
            _ => Vec::new(),
        }
    };
    let after = |i: &Instruction<'s>| -> Vec<Instruction<'s>> {
        match i {
            Instruction::ApplyFilter(..)
            | Instruction::CallFunction(..)
            | Instruction::CallMethod(..)
            | Instruction::CallObject(..)
            | Instruction::Slice
            | Instruction::EndCapture => {
                vec![Instruction::CallFunction("__herald_post", Some(1))]
            }
            Instruction::Iterate(_) => vec![
                Instruction::CallFunction("__herald_tick", Some(0)),
                Instruction::DiscardTop,
            ],
            _ => Vec::new(),
        }
    };
    // Where each old instruction (and the end) lands: its first inserted check.
    let mut starts = Vec::with_capacity(n as usize + 1);
    let mut at = 0u32;
    for i in 0..n {
        starts.push(at);
        let instr = code.get(i).expect("in range");
        at += (before(instr).len() + 1 + after(instr).len()) as u32;
    }
    starts.push(at);
    let moved = |t: &u32| starts[*t as usize];
    let mut out = Instructions::new(code.name(), code.source());
    let push = |out: &mut Instructions<'s>, instr: Instruction<'s>, line: Option<usize>| {
        match line {
            Some(line) => out.add_with_line(instr, line as u16),
            None => out.add(instr),
        };
    };
    for i in 0..n {
        let instr = code.get(i).expect("in range");
        let line = code.get_line(i);
        for pre in before(instr) {
            push(&mut out, pre, line);
        }
        let relocated = match instr {
            Instruction::Iterate(t) => Instruction::Iterate(moved(t)),
            Instruction::Jump(t) => Instruction::Jump(moved(t)),
            Instruction::JumpIfFalse(t) => Instruction::JumpIfFalse(moved(t)),
            Instruction::JumpIfFalseOrPop(t) => Instruction::JumpIfFalseOrPop(moved(t)),
            Instruction::JumpIfTrueOrPop(t) => Instruction::JumpIfTrueOrPop(moved(t)),
            Instruction::BuildMacro(name, t, flags) => {
                Instruction::BuildMacro(name, moved(t), *flags)
            }
            other => other.clone(),
        };
        push(&mut out, relocated, line);
        for post in after(instr) {
            push(&mut out, post, line);
        }
    }
    out
}

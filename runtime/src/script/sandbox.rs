//! The one constructor of `rhai::Engine`: a raw engine plus only what runbooks may use.
//!
//! Rhai's defaults are unsafe for scripts from outside the engine's authors: no limit on
//! operations or sizes, `eval`, and `import` from the file system. Keeping every setting here,
//! in one function used for compiling and running alike, means the limits cannot diverge
//! between copies.

use super::{ScriptLimits, host};
use rhai::module_resolvers::DummyModuleResolver;
use rhai::packages::{Package, StandardPackage};
use rhai::{Dynamic, Engine, EvalAltResult, FnPtr, Module, Position, Shared};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// The name under which too-deep nesting is reported (`outcome` words the message).
pub(super) const NESTING: &str = "Nesting depth";

/// Rhai's standard library, built once: `Engine::new()` rebuilds it every time (≈ 325 µs).
static STANDARD: LazyLock<Shared<Module>> =
    LazyLock::new(|| StandardPackage::new().as_shared_module());

/// The host functions, built once; they find their run through the engine's tag.
static HOST: LazyLock<Shared<Module>> = LazyLock::new(host::module);

/// Nesting of expressions and statements, checked while parsing: deep enough for any
/// runbook, and it bounds how much nesting one variable read can add to data (see
/// [`NESTING_WATCH`]).
const MAX_EXPR_DEPTH: usize = 32;
/// The same inside function bodies and closures.
const MAX_FUNCTION_EXPR_DEPTH: usize = 32;

/// Every this many variable reads, the data in scope is measured (see
/// [`check_data_in_scope`]). Between two checks a script does at most this many index
/// assignments, so a container can outgrow its limit by at most this many values.
const DATA_CHECK_INTERVAL: u32 = 16;

/// Deepest nesting of arrays, maps and closures a script may build. Rhai's own routines (size
/// checks, clone, drop) recurse once per level on the script's stack, and a few
/// thousand levels overflow a 2 MiB stack, which aborts the whole process.
pub(super) const MAX_NESTING: usize = 128;

/// Once data in scope is nested deeper than this, it is measured on every read. Nesting
/// grows by at most [`MAX_EXPR_DEPTH`] levels per read, so data reaches at most
/// 32 + 16 × 32 = 544 levels before a check refuses it: Rhai handles that depth safely.
const NESTING_WATCH: usize = 32;

/// A sandboxed engine with `limits`: the standard library, the host functions, every limit
/// set, `eval`, `import` and `curry` refused at parse time and, should an AST reach it
/// anyway, no module can be loaded. Run-specific state (the run, its deadline, the log) is attached by
/// `host::attach`.
pub(super) fn engine(limits: &ScriptLimits) -> Engine {
    let mut engine = Engine::new_raw();
    engine.register_global_module(STANDARD.clone());
    // Registered later, so searched first: the host's `sleep`, `parse_json`, `to_json`, `log`
    // and `debug` replace the standard library's (its `sleep` would block the thread,
    // uncancellable).
    engine.register_global_module(HOST.clone());
    host::register_call_syntax(&mut engine);

    engine.set_max_operations(limits.max_operations);
    engine.set_max_call_levels(limits.max_call_levels);
    engine.set_max_expr_depths(MAX_EXPR_DEPTH, MAX_FUNCTION_EXPR_DEPTH);
    engine.set_max_string_size(limits.max_string_size);
    engine.set_max_array_size(limits.max_array_size);
    engine.set_max_map_size(limits.max_map_size);
    engine.set_max_modules(0);
    check_data_in_scope(&mut engine);

    engine.disable_symbol("eval");
    engine.disable_symbol("import");
    // `f.curry(f)` doubles a function pointer's data per call, and Rhai's size checks do not
    // look inside function pointers. Closures capture variables without it.
    engine.disable_symbol("curry");
    engine.set_module_resolver(DummyModuleResolver::new());
    engine.set_strict_variables(true);
    engine
}

/// Enforce the size limits on containers that grow by index assignment, and a nesting limit.
///
/// Rhai checks sizes after function calls, `+=` and property assignment, but `m[key] = value`
/// and `a[i] = value` check only the new element, never the container: a loop inserting into
/// a map, or replacing array elements with large strings, would grow without bound (until
/// `max_operations`, which at one operation per megabyte string is far too late). Rhai has
/// no nesting limit at all, and `let a = []; loop { a = [a]; }` overflows the stack. The
/// variable-access hook is the only place that sees the scope, so every
/// [`DATA_CHECK_INTERVAL`] reads it measures each variable in the current scope (and
/// `this`). Containers of callers cannot change meanwhile: Rhai passes arguments by value.
fn check_data_in_scope(engine: &mut Engine) {
    let reads = AtomicU32::new(0);
    let deep = AtomicBool::new(false);
    // `on_var` is marked deprecated only to flag it as an API that may change; it is the
    // documented way to observe variable access.
    #[allow(deprecated)]
    engine.on_var(move |_, _, context| {
        let due = reads
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(DATA_CHECK_INTERVAL);
        if !due && !deep.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let engine = context.engine();
        let mut deepest = 0;
        for (_, _, value) in context.scope().iter_raw() {
            deepest = deepest.max(check_data(engine, value)?);
        }
        if let Some(this) = context.this_ptr() {
            deepest = deepest.max(check_data(engine, this)?);
        }
        deep.store(deepest > NESTING_WATCH, Ordering::Relaxed);
        Ok(None)
    });
}

/// What one value holds, counted as Rhai's own size checks count it.
#[derive(Default)]
struct DataSize {
    array_elements: usize,
    map_properties: usize,
    string_bytes: usize,
}

/// Measure `value` against the engine's limits; returns how deeply it is nested.
fn check_data(engine: &Engine, value: &Dynamic) -> Result<usize, Box<EvalAltResult>> {
    let mut size = DataSize::default();
    let depth = measure(value, 0, &mut size, &mut Vec::new())?;
    let over = |limit: usize, actual: usize| limit != 0 && actual > limit;
    let what = if over(engine.max_string_size(), size.string_bytes) {
        "Length of string"
    } else if over(engine.max_array_size(), size.array_elements) {
        "Size of array/BLOB"
    } else if over(engine.max_map_size(), size.map_properties) {
        "Size of object map"
    } else {
        return Ok(depth);
    };
    Err(EvalAltResult::ErrorDataTooLarge(what.to_string(), Position::NONE).into())
}

/// Add up `value` into `size`, refusing nesting deeper than [`MAX_NESTING`] before the walk
/// itself could run out of stack. Returns the depth reached.
///
/// Function pointers count as nesting too: a closure holds the variables it captured, so
/// `loop { let h = f; f = || h; }` builds a chain whose drop would overflow the stack.
/// Captured variables are shared and may refer back to the closure (a recursive closure
/// captures itself); `shared` remembers those already walked, so cycles end.
fn measure(
    value: &Dynamic,
    depth: usize,
    size: &mut DataSize,
    shared: &mut Vec<*const Dynamic>,
) -> Result<usize, Box<EvalAltResult>> {
    if depth > MAX_NESTING {
        return Err(EvalAltResult::ErrorDataTooLarge(NESTING.to_string(), Position::NONE).into());
    }
    if value.is_shared() {
        // Locked only while this very script is inside a method call on it; skip it this
        // time (the patched Rhai answers at once instead of sleeping: vendor/README.md).
        let Some(inner) = value.read_lock::<Dynamic>() else {
            return Ok(depth);
        };
        let address: *const Dynamic = &*inner;
        if shared.contains(&address) {
            return Ok(depth);
        }
        shared.push(address);
        return measure(&inner, depth, size, shared);
    }
    let mut deepest = depth;
    if let Ok(text) = value.as_immutable_string_ref() {
        size.string_bytes += text.len();
    } else if let Ok(items) = value.as_array_ref() {
        for item in items.iter() {
            size.array_elements += 1;
            deepest = deepest.max(measure(item, depth + 1, size, shared)?);
        }
    } else if let Ok(bytes) = value.as_blob_ref() {
        size.array_elements += bytes.len();
    } else if let Ok(fields) = value.as_map_ref() {
        for field in fields.values() {
            size.map_properties += 1;
            deepest = deepest.max(measure(field, depth + 1, size, shared)?);
        }
    } else if let Some(function) = value.read_lock::<FnPtr>() {
        for captured in function.iter_curry() {
            deepest = deepest.max(measure(captured, depth + 1, size, shared)?);
        }
    }
    Ok(deepest)
}

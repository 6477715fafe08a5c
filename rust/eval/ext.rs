//! Bridge to Cedar's own extension functions (decimal, ipaddr, datetime).
//!
//! Extension values keep Cedar's representation and every extension function
//! is Cedar's own implementation, called through `ExtensionFunction::call`, so
//! parsing rules and overflow behaviour are Cedar's by construction. Calls with
//! literal arguments are folded at compile time; only calls on request data pay
//! for the conversion below.

use std::sync::Arc;

use cedar_policy_core::ast::{Literal, Value as CoreValue, ValueKind};

use crate::value::{Interner, Sym, Value};

/// Convert one of our values into a Cedar value, for an extension call argument.
/// Only scalars and extension values can be arguments; anything else returns
/// `None`, which the caller reports as a type error (no extension function takes
/// a set, record or entity).
pub fn value_to_core(v: &Value, resolve: impl Fn(Sym) -> Option<String>) -> Option<CoreValue> {
    Some(match v {
        Value::Bool(b) => CoreValue::from(*b),
        Value::Long(i) => CoreValue::from(*i),
        Value::Str(s) => CoreValue::from(smol_str::SmolStr::from(resolve(*s)?)),
        Value::Ext(e) => (**e).clone(),
        _ => return None,
    })
}

/// Convert an extension function's result back into our value.
pub fn core_to_value(v: &CoreValue, interner: &mut Interner) -> Option<Value> {
    Some(match &v.value {
        ValueKind::Lit(Literal::Bool(b)) => Value::Bool(*b),
        ValueKind::Lit(Literal::Long(i)) => Value::Long(*i),
        ValueKind::Lit(Literal::String(s)) => Value::Str(interner.intern(s)),
        ValueKind::ExtensionValue(_) => Value::Ext(Arc::new(v.clone())),
        _ => return None,
    })
}

/// Like `core_to_value` but never interns: used at request time, where the
/// snapshot's interner is read-only (extension functions never return strings).
pub fn core_result_to_value(v: CoreValue) -> Option<Value> {
    Some(match &v.value {
        ValueKind::Lit(Literal::Bool(b)) => Value::Bool(*b),
        ValueKind::Lit(Literal::Long(i)) => Value::Long(*i),
        ValueKind::ExtensionValue(_) => Value::Ext(Arc::new(v)),
        _ => return None,
    })
}

/// The extension type's name, when `v` is an extension value.
pub fn ext_type(v: &CoreValue) -> Option<String> {
    match &v.value {
        ValueKind::ExtensionValue(e) => Some(e.typename().to_string()),
        _ => None,
    }
}

/// Cedar's `<`/`<=` on extension values: defined only for two values of the same
/// type that support operator overloading (datetime, duration; not decimal or ip).
pub fn ext_less(a: &CoreValue, b: &CoreValue, or_equal: bool) -> Option<bool> {
    match (&a.value, &b.value) {
        (ValueKind::ExtensionValue(x), ValueKind::ExtensionValue(y)) => {
            let tx = x.typename().to_string();
            if tx != y.typename().to_string() || !(tx == "datetime" || tx == "duration") {
                return None;
            }
            Some(if or_equal { x <= y } else { x < y })
        }
        _ => None,
    }
}

/// Whether this extension value's type supports `<` (for choosing the error).
pub fn ext_is_ordered(a: &CoreValue) -> bool {
    matches!(ext_type(a).as_deref(), Some("datetime" | "duration"))
}

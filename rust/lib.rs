//! tether's core: Cedar policies compiled to an indexed IR and evaluated with Cedar's
//! semantics, entity store, task state. The Python bindings live in `py/`, behind the
//! `python` feature, so `cargo test --no-default-features` proves the core needs no Python.

pub mod authorize;
pub mod compile;
pub mod engine;
pub mod entities;
pub mod entities_json;
pub mod error;
pub mod eval;
pub mod explain;
pub mod plan_deps;
pub mod pmap;
pub mod request;
pub mod request_schema;
pub mod state;
pub mod task_decide;
pub mod templates;
pub mod value;

#[cfg(feature = "python")]
mod py;

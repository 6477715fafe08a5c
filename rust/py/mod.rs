//! `tether._core`: the Python bindings. Conversion of Python objects into requests
//! lives here; all decision logic lives in the core modules, which know nothing of Python.

mod convert;
mod decision;
mod engine;
mod errors;
mod explain;
mod str_cache;
mod task;

use pyo3::prelude::*;

use convert::Entity;
use decision::{Decision, DenialKind};
use engine::Engine;
use errors::{EntityError, PolicyError, RequestError, SchemaError, TetherError};
use task::TaskHandle;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<Engine>()?;
    m.add_class::<Decision>()?;
    m.add_class::<Entity>()?;
    m.add_class::<TaskHandle>()?;
    m.add_function(wrap_pyfunction!(explain::explain_json, m)?)?;
    m.add_class::<DenialKind>()?;
    m.add("TetherError", py.get_type::<TetherError>())?;
    m.add("PolicyError", py.get_type::<PolicyError>())?;
    m.add("SchemaError", py.get_type::<SchemaError>())?;
    m.add("EntityError", py.get_type::<EntityError>())?;
    m.add("RequestError", py.get_type::<RequestError>())?;
    Ok(())
}

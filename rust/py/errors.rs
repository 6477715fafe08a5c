//! The Python exception types and the one conversion from core errors into them.

use pyo3::prelude::*;
use pyo3::{create_exception, import_exception};

use crate::error::TetherError as CoreError;

// The root of the one exception tree is pure Python (`tether.errors`), so code
// that never loads the native module can still catch every tether error.
import_exception!(tether.errors, TetherError);
create_exception!(
    _core,
    PolicyError,
    TetherError,
    "A policy failed to parse, validate or compile."
);
create_exception!(_core, SchemaError, TetherError, "A schema failed to parse.");
create_exception!(
    _core,
    EntityError,
    TetherError,
    "Entity data is malformed or invalid."
);
create_exception!(
    _core,
    RequestError,
    TetherError,
    "An authorization request is malformed."
);
impl From<CoreError> for PyErr {
    fn from(e: CoreError) -> PyErr {
        match e {
            CoreError::Policy {
                ref location,
                ref feature,
                ..
            } => Python::with_gil(|py| {
                let (location, feature) = ((**location).clone(), feature.clone());
                let err = PolicyError::new_err(e.to_string());
                let v = err.value(py);
                // Attributes on the instance so callers can point at the source.
                let _ = v.setattr("policy_id", location.policy_id);
                let _ = v.setattr("file", location.file);
                let _ = v.setattr("line", location.line);
                let _ = v.setattr("column", location.column);
                let _ = v.setattr("feature", feature);
                err
            }),
            CoreError::Schema(m) => SchemaError::new_err(m),
            CoreError::Entity(m) => EntityError::new_err(m),
            CoreError::Request(m) => RequestError::new_err(m),
        }
    }
}

//! The Python `Decision`: the answer to one request.

use pyo3::prelude::*;

/// The answer to one request.
#[pyclass(frozen, module = "tether._core")]
pub(crate) struct Decision {
    #[pyo3(get)]
    pub(crate) allowed: bool,
    #[pyo3(get)]
    pub(crate) reasons: Vec<String>,
    /// Ids of the policies whose evaluation errored.
    #[pyo3(get)]
    pub(crate) errors: Vec<String>,
    /// `policy id: message` for each error, in the same order.
    #[pyo3(get)]
    pub(crate) error_messages: Vec<String>,
    /// Why tether denied beyond the policies: revoked task, scope, budget, delegation.
    #[pyo3(get)]
    pub(crate) message: Option<String>,
    /// Obligations (from `@obligation`) still to discharge; the action is held until then.
    #[pyo3(get)]
    pub(crate) obligations: Vec<String>,
    /// Set when this very decision revoked the task (monitor, scope, deadline).
    #[pyo3(get)]
    pub(crate) revoked: Option<String>,
}

#[pymethods]
impl Decision {
    fn __bool__(&self) -> bool {
        self.allowed
    }
    fn __repr__(&self) -> String {
        format!(
            "Decision(allowed={}, reasons={:?}, errors={:?}{}{})",
            if self.allowed { "True" } else { "False" },
            self.reasons,
            self.errors,
            self.message
                .as_ref()
                .map(|m| format!(", message={m:?}"))
                .unwrap_or_default(),
            if self.obligations.is_empty() {
                String::new()
            } else {
                format!(", obligations={:?}", self.obligations)
            }
        )
    }
}

//! The Python `Decision`: the answer to one request.

use pyo3::prelude::*;

use crate::task_decide::DenyKind;

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
    /// Why it was denied, as a kind (`None` when allowed).
    #[pyo3(get)]
    pub(crate) kind: Option<DenialKind>,
}

/// The kind of a denial: match on this, never on message text.
#[pyclass(eq, eq_int, hash, frozen, module = "tether._core")]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum DenialKind {
    #[pyo3(name = "POLICY")]
    Policy,
    #[pyo3(name = "SCOPE")]
    Scope,
    #[pyo3(name = "DEADLINE")]
    Deadline,
    #[pyo3(name = "REVOKED")]
    Revoked,
    #[pyo3(name = "BUDGET")]
    Budget,
    #[pyo3(name = "MONITOR")]
    Monitor,
    #[pyo3(name = "OBLIGATION")]
    Obligation,
    #[pyo3(name = "ERROR")]
    Error,
}

impl From<DenyKind> for DenialKind {
    fn from(k: DenyKind) -> Self {
        match k {
            DenyKind::Policy => DenialKind::Policy,
            DenyKind::Scope => DenialKind::Scope,
            DenyKind::Deadline => DenialKind::Deadline,
            DenyKind::Revoked => DenialKind::Revoked,
            DenyKind::Budget => DenialKind::Budget,
            DenyKind::Monitor => DenialKind::Monitor,
            DenyKind::Obligation => DenialKind::Obligation,
            DenyKind::Error => DenialKind::Error,
        }
    }
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

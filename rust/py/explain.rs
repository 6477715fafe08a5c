//! `explain_json`: the binding of `crate::explain` (Cedar's own evaluator, GIL released).

use pyo3::prelude::*;

use super::errors::RequestError;

/// Explain one request: JSON with the decision, the determining policies and, per policy,
/// whether its scope matched and each condition's value or error.
#[pyfunction]
#[pyo3(signature = (policies, schema, entities, principal, action, resource, context))]
#[allow(clippy::too_many_arguments)]
pub fn explain_json(
    py: Python<'_>,
    policies: &str,
    schema: Option<&str>,
    entities: &str,
    principal: &str,
    action: &str,
    resource: &str,
    context: &str,
) -> PyResult<String> {
    py.allow_threads(|| {
        crate::explain::explain_json(
            policies, schema, entities, principal, action, resource, context,
        )
    })
    .map_err(RequestError::new_err)
}

/// `Engine.explain_json`: explain against the engine's own snapshot (policies, schema and
/// entity store), with Cedar's evaluator; the GIL is released.
pub(crate) fn engine_explain_json(
    py: Python<'_>,
    engine: &super::engine::Engine,
    principal: &str,
    action: &str,
    resource: &str,
    context: &str,
) -> PyResult<String> {
    let snap = engine.core.current.load_full();
    py.allow_threads(|| {
        crate::explain::explain_snapshot(&snap, principal, action, resource, context)
            .and_then(|ex| serde_json::to_string(&ex).map_err(|e| e.to_string()))
    })
    .map_err(RequestError::new_err)
}

/// `Engine.entities_json`: the engine's entity store as Cedar JSON text.
pub(crate) fn engine_entities_json(
    py: Python<'_>,
    engine: &super::engine::Engine,
    actions: bool,
) -> PyResult<String> {
    let snap = engine.core.current.load_full();
    py.allow_threads(|| crate::explain::snapshot_entities(&snap, actions).map(|j| j.to_string()))
        .map_err(RequestError::new_err)
}

//! `explain_json`: the binding of `crate::explain` (Cedar's own evaluator, GIL released).

use pyo3::prelude::*;

use super::errors::RequestError;

/// Explain one request: JSON with the decision, the determining policies and, per policy,
/// whether its scope matched and each condition's value or error. `links`: the
/// engine's template-linked policies (`Engine.links()`).
#[pyfunction]
#[pyo3(signature = (policies, schema, entities, principal, action, resource, context, links=Vec::new()))]
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
    links: Vec<crate::explain::Link>,
) -> PyResult<String> {
    py.allow_threads(|| {
        crate::explain::explain_json(
            policies, &links, schema, entities, principal, action, resource, context,
        )
    })
    .map_err(RequestError::new_err)
}

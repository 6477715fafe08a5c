//! Cedar text -> compiled, indexed policy set.

pub mod guard;
pub mod index;
pub mod ir;
pub mod lower;
pub mod special;

use std::str::FromStr;

use cedar_policy::{PolicySet, Schema, ValidationMode, Validator};

use crate::error::{first_offset, line_col, render_diag, Location, TetherError};
use crate::value::Interner;
use index::Index;
use ir::{Clause, CompiledPolicy, Effect, Node};

#[derive(Debug)]
pub struct CompiledSet {
    pub nodes: Vec<Node>,
    pub policies: Vec<CompiledPolicy>,
    pub index: Index,
    pub text: String,
    /// Cedar validator warnings from the last validation (empty when not validated).
    pub warnings: Vec<String>,
    /// Whether any policy carries `@obligation(..)`: task decisions then need every permit.
    pub has_obligations: bool,
    /// Entity uids named in policy scopes (indexed for fast request parsing).
    pub named_uids: Vec<crate::value::Euid>,
    /// Height of the deepest clause tree: bounds the evaluator's recursion.
    pub max_height: usize,
    /// The task state file compiled against the same interner.
    pub state: Option<crate::state::CompiledState>,
}

/// Order policy ids as Cedar names them (`policy2` before `policy10`).
fn natural_key(id: &str) -> (u64, String) {
    let n = id
        .strip_prefix("policy")
        .and_then(|d| d.parse::<u64>().ok())
        .unwrap_or(u64::MAX);
    (n, id.to_owned())
}

fn location_of(text: &str, offset: Option<usize>, policy_id: Option<String>) -> Location {
    let (line, column) = match offset {
        Some(o) => {
            let (l, c) = line_col(text, o);
            (Some(l), Some(c))
        }
        None => (None, None),
    };
    Location {
        policy_id,
        line,
        column,
    }
}

/// Byte offset where each policy starts, from Cedar's own parser (error path only).
fn policy_offsets(text: &str) -> Vec<(String, usize)> {
    match cedar_policy_core::parser::parse_policyset(text) {
        Ok(ps) => ps
            .policies()
            .map(|p| {
                (
                    p.id().to_string(),
                    p.loc().map(|l| l.span.offset()).unwrap_or(0),
                )
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

pub fn parse(text: &str) -> Result<PolicySet, TetherError> {
    guard::check(text)?;
    PolicySet::from_str(text).map_err(|e| {
        let loc = location_of(text, first_offset(&e), None);
        let at = match (loc.line, loc.column) {
            (Some(l), Some(c)) => format!(" at line {l}, column {c}"),
            _ => String::new(),
        };
        TetherError::Policy {
            message: format!("cannot parse policies{at}: {}", render_diag(&e)),
            location: loc,
            feature: None,
        }
    })
}

/// Validate against a schema (strict mode); the first error is reported with its
/// location. Cedar's warnings (e.g. a policy that can never apply) are returned.
pub fn validate(pset: &PolicySet, schema: &Schema, text: &str) -> Result<Vec<String>, TetherError> {
    let res = Validator::new(schema.clone()).validate(pset, ValidationMode::Strict);
    if res.validation_passed() {
        return Ok(res.validation_warnings().map(|w| render_diag(w)).collect());
    }
    let errs: Vec<String> = res.validation_errors().map(|e| render_diag(e)).collect();
    let first = res.validation_errors().next();
    let loc = location_of(
        text,
        first.and_then(|e| first_offset(e)),
        first.map(|e| e.policy_id().to_string()),
    );
    Err(TetherError::Policy {
        message: format!(
            "policies do not validate against the schema ({} error{}): {}",
            errs.len(),
            if errs.len() == 1 { "" } else { "s" },
            errs.join("; ")
        ),
        location: loc,
        feature: None,
    })
}

pub fn compile(
    text: &str,
    pset: &PolicySet,
    interner: &mut Interner,
) -> Result<CompiledSet, TetherError> {
    // Templates are not policies until linked, and linking is not supported yet: a
    // template must not load silently as nothing.
    if let Some(t) = pset.templates().next() {
        let id = t.id().to_string();
        let off = cedar_policy_core::parser::parse_policyset(text)
            .ok()
            .and_then(|ps| {
                ps.templates()
                    .find(|t| t.id().to_string() == id)
                    .and_then(|t| t.loc().map(|l| l.span.offset()))
            });
        let loc = location_of(text, off, Some(id.clone()));
        return Err(TetherError::Policy {
            message: format!(
                "policy `{id}`{} is a template (?principal/?resource slots); tether does not \
                 support templates or template-linked policies yet",
                match (loc.line, loc.column) {
                    (Some(l), Some(c)) => format!(" (line {l}, column {c})"),
                    _ => String::new(),
                }
            ),
            location: loc,
            feature: Some("templates (?principal/?resource slots)".into()),
        });
    }
    let mut policies: Vec<&cedar_policy::Policy> = pset.policies().collect();
    policies.sort_by_key(|p| natural_key(p.id().as_ref()));
    let mut nodes = Vec::new();
    let mut out = Vec::with_capacity(policies.len());
    for p in policies {
        let id = p.id().to_string();
        let unsupported = |feature: String| {
            let offs = policy_offsets(text);
            let off = offs.iter().find(|(pid, _)| *pid == id).map(|(_, o)| *o);
            let loc = location_of(text, off, Some(id.clone()));
            TetherError::Policy {
                message: format!(
                    "policy `{id}`{} uses a Cedar feature tether does not support: {feature}",
                    match (loc.line, loc.column) {
                        (Some(l), Some(c)) => format!(" (line {l}, column {c})"),
                        _ => String::new(),
                    }
                ),
                location: loc,
                feature: Some(feature),
            }
        };
        let pst = p
            .to_pst()
            .map_err(|e| unsupported(format!("policy form: {e}")))?;
        let body = pst.body();
        let mut lw = lower::Lowerer {
            nodes: &mut nodes,
            interner,
            depth: 0,
        };
        let principal = lw
            .principal(&body.principal)
            .map_err(|u| unsupported(u.0))?;
        let resource = lw.resource(&body.resource).map_err(|u| unsupported(u.0))?;
        let action = lw.action(&body.action);
        let mut clauses = Vec::new();
        for c in body.clauses() {
            let (e, unless) = match c {
                cedar_policy::pst::Clause::When(e) => (e, false),
                cedar_policy::pst::Clause::Unless(e) => (e, true),
            };
            let node = lw.expr(e).map_err(|u| unsupported(u.0))?;
            clauses.push(Clause { node, unless });
        }
        out.push(CompiledPolicy {
            id,
            effect: match body.effect {
                cedar_policy::pst::Effect::Permit => Effect::Permit,
                cedar_policy::pst::Effect::Forbid => Effect::Forbid,
            },
            principal,
            action,
            resource,
            clauses: clauses.into(),
            obligations: body
                .annotations
                .get("obligation")
                .map(|v| {
                    v.split(',')
                        .map(|o| o.trim().to_owned())
                        .filter(|o| !o.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            annotations: body
                .annotations
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect(),
        });
    }
    let index = Index::build(&out);
    let mut named_uids: Vec<crate::value::Euid> = Vec::new();
    for p in &out {
        for s in [&p.principal, &p.resource] {
            if let ir::EntityScope::Eq(u) | ir::EntityScope::In(u) | ir::EntityScope::IsIn(_, u) = s
            {
                named_uids.push(*u);
            }
        }
        match &p.action {
            ir::ActionScope::Eq(a) => named_uids.push(*a),
            ir::ActionScope::In(list) => named_uids.extend(list.iter().copied()),
            ir::ActionScope::Any => {}
        }
    }
    named_uids.sort();
    named_uids.dedup();
    let has_obligations = out.iter().any(|p| !p.obligations.is_empty());
    let h = ir::heights(&nodes);
    let max_height = out
        .iter()
        .flat_map(|p| p.clauses.iter())
        .map(|c| h[c.node as usize] as usize)
        .max()
        .unwrap_or(0);
    Ok(CompiledSet {
        nodes,
        policies: out,
        index,
        has_obligations,
        max_height,
        named_uids,
        state: None,
        text: text.to_owned(),
        warnings: Vec::new(),
    })
}

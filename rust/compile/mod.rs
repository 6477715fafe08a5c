//! Cedar text -> compiled, indexed policy set.

#[cfg(test)]
mod compile_tests;
pub mod guard;
pub mod index;
#[cfg(test)]
mod index_tests;
pub mod ir;
pub mod layout;
pub mod lower;
pub mod parse;
pub mod special;
#[cfg(test)]
mod special_tests;
#[cfg(test)]
pub(crate) mod test_oracle;

use std::str::FromStr;

use cedar_policy::{PolicySet, Schema, ValidationMode, Validator};

use crate::error::{first_offset, render_diag, Location, TetherError};
use crate::value::Interner;
use index::Index;
use ir::{Clause, CompiledPolicy, Effect, Node};
pub use parse::{parse, parse_with_psts, Psts};

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
    /// Whether the set was validated against the schema (links are validated alike).
    pub validated: bool,
    /// Policies removed (`without_policy`) since the last full compile: their nodes
    /// are still in `nodes`.
    pub unlinked: usize,
}

/// Order policy ids as Cedar names them (`policy2` before `policy10`).
fn natural_key(id: &str) -> (u64, String) {
    let n = id
        .strip_prefix("policy")
        .and_then(|d| d.parse::<u64>().ok())
        .unwrap_or(u64::MAX);
    (n, id.to_owned())
}

pub(crate) fn location_of(
    text: &str,
    offset: Option<usize>,
    policy_id: Option<String>,
) -> Location {
    Location::at(text, offset, policy_id)
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

/// The name a policy goes by: its `@id("...")` annotation when it has one (as the
/// Cedar CLI names policies), else Cedar's own `policyN`. A template-linked policy
/// carries its template's annotations, so it goes by its own id, the one given to
/// `link`.
pub fn policy_name(p: &cedar_policy::Policy) -> String {
    if !p.is_static() {
        return p.id().to_string();
    }
    p.annotation("id")
        .map(str::to_owned)
        .unwrap_or_else(|| p.id().to_string())
}

/// The name a template goes by: its `@id` annotation, else Cedar's `policyN`.
pub fn template_name(t: &cedar_policy::Template) -> String {
    t.annotation("id")
        .map(str::to_owned)
        .unwrap_or_else(|| t.id().to_string())
}

/// Templates share the policies' name space (`link` and reasons name them), so a
/// template named like another template or a policy is a load error.
fn check_template_names(
    text: &str,
    pset: &PolicySet,
    policy_names: &[String],
) -> Result<(), TetherError> {
    let mut seen: rustc_hash::FxHashSet<&str> = policy_names.iter().map(String::as_str).collect();
    let mut templates: Vec<&cedar_policy::Template> = pset.templates().collect();
    templates.sort_by_key(|t| natural_key(t.id().as_ref()));
    for t in templates {
        let name = template_name(t);
        if seen.contains(name.as_str()) {
            let off = template_offset(text, t.id().as_ref());
            return Err(TetherError::Policy {
                message: format!(
                    "two policies are named `{name}` (one of them a template); a template's \
                     name is its @id annotation, or policyN without one; names must be unique"
                ),
                location: Box::new(location_of(text, off, Some(name))),
                feature: None,
            });
        }
        seen.insert(t.annotation("id").unwrap_or(t.id().as_ref()));
    }
    Ok(())
}

/// Byte offset where template `id` starts, from Cedar's own parser (error path only).
fn template_offset(text: &str, id: &str) -> Option<usize> {
    cedar_policy_core::parser::parse_policyset(text)
        .ok()
        .and_then(|ps| {
            ps.templates()
                .find(|t| t.id().to_string() == id)
                .and_then(|t| t.loc().map(|l| l.span.offset()))
        })
}

/// The name each policy goes by, in order (see `policy_name`). Two policies
/// with one name would make reasons ambiguous, so that is a load error naming both.
fn policy_names(
    text: &str,
    policies: &[&cedar_policy::Policy],
    psts: &Psts,
) -> Result<Vec<String>, TetherError> {
    let names: Vec<String> = policies
        .iter()
        .map(|p| {
            // A static policy's name from its PST when there is one
            // (`Policy::annotation` parses its key again).
            match psts.get(AsRef::<str>::as_ref(p.id())) {
                Some(Ok(pst)) if p.is_static() => pst
                    .body()
                    .annotations
                    .get("id")
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| p.id().to_string()),
                _ => policy_name(p),
            }
        })
        .collect();
    let mut seen: rustc_hash::FxHashMap<&str, usize> = Default::default();
    for (i, n) in names.iter().enumerate() {
        if let Some(&j) = seen.get(n.as_str()) {
            let offs = policy_offsets(text);
            let at = |k: usize| {
                let cedar_id = policies[k].id().to_string();
                let off = offs
                    .iter()
                    .find(|(pid, _)| *pid == cedar_id)
                    .map(|(_, o)| *o);
                location_of(text, off, Some(names[k].clone()))
            };
            let (first, second) = (at(j), at(i));
            let show = |l: &Location| {
                l.describe()
                    .unwrap_or_else(|| "an unknown position".to_owned())
            };
            return Err(TetherError::Policy {
                message: format!(
                    "two policies are named `{n}`: at {} and at {} (a policy's name is its \
                     @id annotation, or policyN without one; names must be unique)",
                    show(&first),
                    show(&second)
                ),
                location: Box::new(second),
                feature: None,
            });
        }
        seen.insert(n, i);
    }
    Ok(names)
}

/// Validate against a schema (strict mode); the first error is reported with its
/// location. Cedar's warnings (e.g. a policy that can never apply) are returned.
pub fn validate(pset: &PolicySet, schema: &Schema, text: &str) -> Result<Vec<String>, TetherError> {
    let res = Validator::new(schema.clone()).validate(pset, ValidationMode::Strict);
    if res.validation_passed() {
        return Ok(res.validation_warnings().map(|w| render_diag(w)).collect());
    }
    // Name policies as the user did (`@id`, a link's own id), not by Cedar's `policyN`.
    let name_of = |id: &cedar_policy::PolicyId| match (pset.policy(id), pset.template(id)) {
        (Some(p), _) => policy_name(p),
        (None, Some(t)) => template_name(t),
        (None, None) => id.to_string(),
    };
    let errs: Vec<String> = res
        .validation_errors()
        .map(|e| {
            let name = name_of(e.policy_id());
            let msg = render_diag(e).replace(&format!("for policy `{}`, ", e.policy_id()), "");
            let at = location_of(text, first_offset(e), None)
                .describe()
                .map(|w| format!(" at {w}"))
                .unwrap_or_default();
            format!("policy `{name}`{at}: {msg}")
        })
        .collect();
    let first = res.validation_errors().next();
    let name = first.map(|e| name_of(e.policy_id()));
    let loc = location_of(text, first.and_then(|e| first_offset(e)), name);
    Err(TetherError::Policy {
        message: format!(
            "policies do not validate against the schema ({} error{}): {}",
            errs.len(),
            if errs.len() == 1 { "" } else { "s" },
            errs.join("; ")
        ),
        location: Box::new(loc),
        feature: None,
    })
}

fn unsupported_feature(
    text: &str,
    offset: Option<usize>,
    name: &str,
    feature: String,
) -> TetherError {
    TetherError::Policy {
        message: format!("policy `{name}` uses a Cedar feature tether does not support: {feature}"),
        location: Box::new(location_of(text, offset, Some(name.to_owned()))),
        feature: Some(feature),
    }
}

/// Lower one policy body (static, or a template with its slots filled) into `nodes`.
fn lower_policy(
    body: &cedar_policy::pst::Template,
    name: String,
    nodes: &mut Vec<Node>,
    interner: &mut Interner,
) -> Result<CompiledPolicy, String> {
    let mut lw = lower::Lowerer {
        nodes,
        interner,
        depth: 0,
    };
    let principal = lw.principal(&body.principal).map_err(|u| u.0)?;
    let resource = lw.resource(&body.resource).map_err(|u| u.0)?;
    let action = lw.action(&body.action);
    let mut clauses = Vec::new();
    for c in body.clauses() {
        let (e, unless) = match c {
            cedar_policy::pst::Clause::When(e) => (e, false),
            cedar_policy::pst::Clause::Unless(e) => (e, true),
        };
        let node = lw.expr(e).map_err(|u| u.0)?;
        clauses.push(Clause { node, unless });
    }
    Ok(CompiledPolicy {
        id: name,
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
    })
}

/// A template authorizes nothing until linked, but a template tether cannot compile
/// must fail at load, not at its first `link`: each one is lowered (and thrown away)
/// with its slots filled by a placeholder entity.
fn check_templates_lower(
    text: &str,
    pset: &PolicySet,
    interner: &mut Interner,
) -> Result<(), TetherError> {
    let placeholder = cedar_policy::EntityUid::from_type_name_and_id(
        cedar_policy::EntityTypeName::from_str("TetherTemplateSlot")
            .map_err(|e| TetherError::policy(e.to_string()))?,
        cedar_policy::EntityId::new("slot"),
    );
    for t in pset.templates() {
        let name = template_name(t);
        let unsupported =
            |f: String| unsupported_feature(text, template_offset(text, t.id().as_ref()), &name, f);
        let mut probe = PolicySet::new();
        let link_id = cedar_policy::PolicyId::new(format!("{}\u{0}probe", t.id()));
        let vals = t
            .slots()
            .map(|s| (s.clone(), placeholder.clone()))
            .collect();
        let form = |e: cedar_policy::PolicySetError| {
            unsupported(format!("template form: {}", render_diag(&e)))
        };
        probe.add_template(t.clone()).map_err(form)?;
        probe
            .link(t.id().clone(), link_id.clone(), vals)
            .map_err(form)?;
        let pst = probe
            .policy(&link_id)
            .ok_or_else(|| unsupported("template form: cannot link".into()))?
            .to_pst()
            .map_err(|e| unsupported(format!("template form: {e}")))?;
        lower_policy(pst.body(), name.clone(), &mut Vec::new(), interner).map_err(unsupported)?;
    }
    Ok(())
}

/// The compiled set over `out` (policies lowered into `nodes`): index, named uids,
/// evaluation bound. Warnings, state and Cedar's set are the caller's to add.
fn assemble(text: String, nodes: Vec<Node>, out: Vec<CompiledPolicy>) -> CompiledSet {
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
    CompiledSet {
        nodes,
        policies: out,
        index,
        has_obligations,
        max_height,
        named_uids,
        state: None,
        text,
        warnings: Vec::new(),
        validated: false,
        unlinked: 0,
    }
}

/// `set` (`statics` static policies, then links) with the linked policies `added`
/// compiled and put in place, the policies
/// already compiled kept as they are: a link costs its own compile (Cedar parses
/// each policy again to give its syntax tree, which dominates a full compile) and
/// an index rebuild.
pub fn with_links(
    set: &CompiledSet,
    statics: usize,
    added: &[&cedar_policy::Policy],
    interner: &mut Interner,
) -> Result<CompiledSet, TetherError> {
    let mut nodes = set.nodes.clone();
    let mut out = set.policies.clone();
    for p in added {
        let name = policy_name(p);
        let unsupported = |feature: String| unsupported_feature(&set.text, None, &name, feature);
        let pst = p
            .to_pst()
            .map_err(|e| unsupported(format!("policy form: {e}")))?;
        let compiled =
            lower_policy(pst.body(), name.clone(), &mut nodes, interner).map_err(unsupported)?;
        // Where a full compile puts it: after the static policies (Cedar's `policyN`
        // ids, which link ids cannot take), links by id.
        let links = &out[statics..];
        let at = statics + links.partition_point(|q| q.id.as_str() <= name.as_str());
        out.insert(at, compiled);
    }
    let mut next = assemble(set.text.clone(), nodes, out);
    next.unlinked = set.unlinked;
    Ok(next)
}

/// `set` without the policy named `name` (an unlinked link). Its nodes stay until
/// the next full compile; `unlinked` counts them so the caller can compact.
pub fn without_policy(set: &CompiledSet, name: &str) -> CompiledSet {
    let out: Vec<CompiledPolicy> = set
        .policies
        .iter()
        .filter(|p| p.id != name)
        .cloned()
        .collect();
    let mut next = assemble(set.text.clone(), set.nodes.clone(), out);
    next.unlinked = set.unlinked + 1;
    next
}

pub fn compile(
    text: &str,
    pset: &PolicySet,
    interner: &mut Interner,
) -> Result<CompiledSet, TetherError> {
    compile_parsed(text, pset, parse::static_psts(text), interner)
}

/// `compile` with the PSTs already built (`parse_with_psts`).
pub fn compile_parsed(
    text: &str,
    pset: &PolicySet,
    mut psts: Psts,
    interner: &mut Interner,
) -> Result<CompiledSet, TetherError> {
    let mut policies: Vec<&cedar_policy::Policy> = pset.policies().collect();
    policies.sort_by_key(|p| natural_key(p.id().as_ref()));
    let mut nodes = Vec::new();
    let mut out = Vec::with_capacity(policies.len());
    let names = policy_names(text, &policies, &psts)?;
    check_template_names(text, pset, &names)?;
    for (p, name) in policies.into_iter().zip(names) {
        let id = p.id().to_string();
        let unsupported = |feature: String| {
            let offs = policy_offsets(text);
            let off = offs.iter().find(|(pid, _)| *pid == id).map(|(_, o)| *o);
            unsupported_feature(text, off, &name, feature)
        };
        // Links are not in the text: Cedar builds theirs.
        let from_text = if p.is_static() {
            psts.remove(AsRef::<str>::as_ref(p.id()))
        } else {
            None
        };
        let pst = match from_text {
            Some(pst) => pst,
            None => p.to_pst(),
        }
        .map_err(|e| unsupported(format!("policy form: {e}")))?;
        out.push(
            lower_policy(pst.body(), name.clone(), &mut nodes, interner).map_err(unsupported)?,
        );
    }
    check_templates_lower(text, pset, interner)?;
    Ok(assemble(text.to_owned(), nodes, out))
}

/// Validate the task state file's conditions against the schema, each as the
/// condition of an unscoped policy (strict mode), so a typo such as
/// `resource.sensitivty` fails at load and names the label, counter or budget.
pub fn validate_state(spec: &crate::state::StateSpec, schema: &Schema) -> Result<(), TetherError> {
    let mut checks: Vec<(String, String)> = Vec::new();
    for (name, l) in &spec.labels {
        checks.push((format!("label `{name}` (set_when)"), l.set_when.clone()));
    }
    for (name, c) in &spec.counters {
        checks.push((
            format!("counter `{name}` (count_when)"),
            c.count_when.clone(),
        ));
    }
    for (name, b) in &spec.budgets {
        // `add` must be a Long; guarded by `when`, as the budget evaluates it.
        let add = format!("(({}) + 0 == 0)", b.add);
        let cond = match &b.when {
            Some(w) => {
                checks.push((format!("budget `{name}` (when)"), w.clone()));
                format!("({w}) && {add}")
            }
            None => add,
        };
        checks.push((format!("budget `{name}` (add)"), cond));
    }
    for (what, cond) in checks {
        let text = format!("permit (principal, action, resource) when {{ {cond} }};");
        let err = |m: String| TetherError::Policy {
            message: format!("state file, {what}: {m}"),
            location: Box::default(),
            feature: None,
        };
        let pset = PolicySet::from_str(&text).map_err(|e| err(render_diag(&e)))?;
        let res = Validator::new(schema.clone()).validate(&pset, ValidationMode::Strict);
        if !res.validation_passed() {
            let errs: Vec<String> = res.validation_errors().map(|e| render_diag(e)).collect();
            return Err(err(format!(
                "does not validate against the schema: {}",
                errs.join("; ")
            )));
        }
    }
    Ok(())
}

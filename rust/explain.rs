//! Explain one decision with Cedar's own authorizer and evaluator (not tether's compiled
//! evaluator), so the explanation is exact by construction: for every policy, whether
//! its scope matched (the policy with its conditions removed, authorized alone), and for
//! each `when`/`unless` condition its value or error (the condition evaluated alone), plus
//! the value of every `context.task...` path the condition reads.

use std::str::FromStr;

use cedar_policy::{
    eval_expression, Authorizer, Context, Decision, Entities, EntityUid, Expression, Policy,
    PolicyId, PolicySet, Request, Schema,
};
use cedar_policy_core::entities::json::CedarValueJson;
use serde::Serialize;
use serde_json::{json, Value as Json};

use crate::engine::Snapshot;
use crate::value::{Euid, Interner, Record, Sym, Value};

#[derive(Debug, Serialize, PartialEq)]
pub struct Condition {
    /// "when" or "unless".
    pub kind: &'static str,
    /// The condition as Cedar text.
    pub text: String,
    /// Its value (Cedar text), when it evaluated.
    pub value: Option<String>,
    /// Its evaluation error, when it failed.
    pub error: Option<String>,
    /// `context.task...` paths it reads, with their values (or the error reading them).
    pub task_reads: Vec<(String, String)>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct PolicyExplanation {
    /// The `@id` annotation, else Cedar's `policyN`.
    pub id: String,
    pub effect: &'static str,
    pub scope_matched: bool,
    /// Evaluated only when the scope matched.
    pub conditions: Vec<Condition>,
    /// The policy applied: scope matched and every condition held (Cedar's verdict).
    pub satisfied: bool,
    /// The policy errored during the full authorization (Cedar skips it).
    pub error: Option<String>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Explanation {
    pub allowed: bool,
    /// Policies that determined the decision (Cedar's diagnostics reason).
    pub reasons: Vec<String>,
    pub errors: Vec<String>,
    pub policies: Vec<PolicyExplanation>,
}

fn display_id(p: &Policy) -> String {
    p.annotation("id")
        .map(str::to_owned)
        .unwrap_or_else(|| p.id().to_string())
}

fn uid(text: &str, role: &str) -> Result<EntityUid, String> {
    EntityUid::from_str(text).map_err(|e| format!("{role} `{text}` is not an entity uid: {e}"))
}

/// A policy built from `est`: the given conditions only, effect permit, same scope
/// (or every scope open when `open_scope`). Authorizing it alone tells whether it applies.
fn probe(est: &Json, conditions: Json, open_scope: bool) -> Result<PolicySet, String> {
    let mut p = est.clone();
    p["effect"] = json!("permit");
    p["conditions"] = conditions;
    p["annotations"] = json!({});
    if open_scope {
        p["principal"] = json!({"op": "All"});
        p["action"] = json!({"op": "All"});
        p["resource"] = json!({"op": "All"});
    }
    let policy = Policy::from_json(Some(PolicyId::new("probe")), p).map_err(|e| e.to_string())?;
    PolicySet::from_policies([policy]).map_err(|e| e.to_string())
}

/// The Cedar text of one condition body: a probe policy printed, its `when` body cut out.
fn condition_text(body: &Json) -> Result<String, String> {
    let set = probe(&json!({}), json!([{"kind": "when", "body": body}]), true)?;
    let text = set
        .policies()
        .next()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let start = text
        .find("when {")
        .map(|i| i + "when {".len())
        .ok_or("no condition in probe")?;
    let end = text.rfind('}').ok_or("no condition end in probe")?;
    Ok(text[start..end].trim().to_owned())
}

/// `context.task.a.b` chains read by an expression (JSON EST), deepest first kept.
fn task_paths(e: &Json, out: &mut Vec<String>) {
    fn chain(e: &Json) -> Option<Vec<String>> {
        if e.get("Var").and_then(Json::as_str) == Some("context") {
            return Some(vec!["context".into()]);
        }
        let dot = e.get(".")?;
        let mut c = chain(dot.get("left")?)?;
        c.push(dot.get("attr")?.as_str()?.to_owned());
        Some(c)
    }
    if let Some(c) = chain(e) {
        if c.len() >= 3 && c[1] == "task" {
            let path = c.join(".");
            if !out.iter().any(|p| p.starts_with(&path)) {
                out.retain(|p| !path.starts_with(p.as_str()));
                out.push(path);
            }
            return;
        }
    }
    match e {
        Json::Object(m) => m.values().for_each(|v| task_paths(v, out)),
        Json::Array(a) => a.iter().for_each(|v| task_paths(v, out)),
        _ => {}
    }
}

fn eval_text(text: &str, req: &Request, entities: &Entities) -> Result<String, String> {
    let expr = Expression::from_str(text).map_err(|e| e.to_string())?;
    eval_expression(req, entities, &expr)
        .map(|v| v.to_string())
        .map_err(|e| e.to_string())
}

fn condition(
    kind: &'static str,
    body: &Json,
    req: &Request,
    entities: &Entities,
) -> Result<Condition, String> {
    let text = condition_text(body)?;
    let (value, error) = match eval_text(&text, req, entities) {
        Ok(v) => (Some(v), None),
        Err(e) => (None, Some(e)),
    };
    let mut paths = Vec::new();
    task_paths(body, &mut paths);
    let task_reads = paths
        .into_iter()
        .map(|p| {
            let v = eval_text(&p, req, entities).unwrap_or_else(|e| format!("error: {e}"));
            (p, v)
        })
        .collect();
    Ok(Condition {
        kind,
        text,
        value,
        error,
        task_reads,
    })
}

/// Explain one request against `policies` (Cedar text) and `entities` (Cedar JSON).
pub fn explain(
    policies: &str,
    schema: Option<&str>,
    entities: &str,
    principal: &str,
    action: &str,
    resource: &str,
    context: &str,
) -> Result<Explanation, String> {
    let schema = schema
        .map(crate::engine::parse_schema)
        .transpose()
        .map_err(|e| format!("schema: {e}"))?;
    let set = PolicySet::from_str(policies).map_err(|e| format!("policies: {e}"))?;
    let entities =
        Entities::from_json_str(entities, schema.as_ref()).map_err(|e| format!("entities: {e}"))?;
    explain_parsed(
        &set,
        schema.as_ref(),
        &entities,
        principal,
        action,
        resource,
        context,
    )
}

/// Explain one request against an engine snapshot: its policy text, schema and entity
/// store (exported to Cedar JSON for Cedar's evaluator).
pub fn explain_snapshot(
    snap: &Snapshot,
    principal: &str,
    action: &str,
    resource: &str,
    context: &str,
) -> Result<Explanation, String> {
    let set = PolicySet::from_str(&snap.set.text).map_err(|e| format!("policies: {e}"))?;
    let schema = snap.schema.as_deref();
    let entities = Entities::from_json_value(snapshot_entities(snap, false)?, schema)
        .map_err(|e| format!("entities: {e}"))?;
    explain_parsed(
        &set, schema, &entities, principal, action, resource, context,
    )
}

fn value_json(v: &Value, names: &Interner) -> Result<Json, String> {
    let name = |s: Sym| {
        names
            .get(s)
            .map(str::to_owned)
            .ok_or_else(|| format!("symbol {s} is not in the snapshot"))
    };
    Ok(match v {
        Value::Bool(b) => json!(b),
        Value::Long(n) => json!(n),
        Value::Str(s) => json!(name(*s)?),
        Value::Entity(u) => json!({"__entity": {"type": name(u.ty)?, "id": name(u.id)?}}),
        Value::Set(items) => Json::Array(
            items
                .iter()
                .map(|i| value_json(i, names))
                .collect::<Result<_, _>>()?,
        ),
        Value::Record(r) => record_json(r, names)?,
        Value::Ext(x) => {
            let j = CedarValueJson::from_value(x.as_ref().clone()).map_err(|e| e.to_string())?;
            serde_json::to_value(j).map_err(|e| e.to_string())?
        }
    })
}

fn record_json(r: &Record, names: &Interner) -> Result<Json, String> {
    let mut m = serde_json::Map::with_capacity(r.fields.len());
    for (k, v) in &r.fields {
        let k = names.get(*k).ok_or("record key is not in the snapshot")?;
        m.insert(k.to_owned(), value_json(v, names)?);
    }
    Ok(Json::Object(m))
}

/// The snapshot's entity store as Cedar JSON (direct parents, attributes, tags). With a
/// schema, its action entities are left out unless `schema_actions`: Cedar adds them
/// from the schema itself when the JSON is read with that schema.
pub fn snapshot_entities(snap: &Snapshot, schema_actions: bool) -> Result<Json, String> {
    let names = &snap.interner;
    let mut uids: Vec<Euid> = snap.store.uids().collect();
    uids.sort_unstable();
    let mut out = Vec::with_capacity(uids.len());
    for u in uids {
        let ty = names.get(u.ty).unwrap_or_default();
        if !schema_actions && snap.schema.is_some() && (ty == "Action" || ty.ends_with("::Action"))
        {
            continue;
        }
        let Some(data) = snap.store.get(&u) else {
            continue;
        };
        let uid_json =
            |e: &Euid| value_json(&Value::Entity(*e), names).map(|j| j["__entity"].clone());
        out.push(json!({
            "uid": uid_json(&u)?,
            "attrs": record_json(&data.attrs, names)?,
            "tags": record_json(&data.tags, names)?,
            "parents": data.parents.iter().map(uid_json).collect::<Result<Vec<_>, _>>()?,
        }));
    }
    Ok(Json::Array(out))
}

/// Explain one request against parsed policies, schema and entities.
pub fn explain_parsed(
    set: &PolicySet,
    schema: Option<&Schema>,
    entities: &Entities,
    principal: &str,
    action: &str,
    resource: &str,
    context: &str,
) -> Result<Explanation, String> {
    let action_uid = uid(action, "action")?;
    let ctx_json: Json =
        serde_json::from_str(context).map_err(|e| format!("context is not JSON: {e}"))?;
    let ctx = Context::from_json_value(ctx_json, schema.map(|s| (s, &action_uid)))
        .map_err(|e| format!("context: {e}"))?;
    let req = Request::new(
        uid(principal, "principal")?,
        action_uid,
        uid(resource, "resource")?,
        ctx,
        None,
    )
    .map_err(|e| e.to_string())?;
    let auth = Authorizer::new();
    let full = auth.is_authorized(&req, set, entities);
    let name = |id: &PolicyId| {
        set.policy(id)
            .map(display_id)
            .unwrap_or_else(|| id.to_string())
    };
    // Cedar's reasons are a set: listed here in policy-set order, so output is stable.
    let decisive: std::collections::HashSet<&PolicyId> = full.diagnostics().reason().collect();
    let reasons: Vec<String> = set
        .policies()
        .filter(|p| decisive.contains(p.id()))
        .map(display_id)
        .collect();
    let errored: Vec<(String, String)> = full
        .diagnostics()
        .errors()
        .map(|e| match e {
            cedar_policy::AuthorizationError::PolicyEvaluationError(pe) => {
                (name(pe.policy_id()), pe.inner().to_string())
            }
        })
        .collect();
    let mut out = Vec::new();
    for p in set.policies() {
        let id = display_id(p);
        let est = p.to_json().map_err(|e| e.to_string())?;
        let scope_matched = auth
            .is_authorized(&req, &probe(&est, json!([]), false)?, entities)
            .decision()
            == Decision::Allow;
        let mut conditions = Vec::new();
        if scope_matched {
            for c in est["conditions"].as_array().into_iter().flatten() {
                let kind = if c["kind"] == "unless" {
                    "unless"
                } else {
                    "when"
                };
                conditions.push(condition(kind, &c["body"], &req, entities)?);
            }
        }
        let error = errored
            .iter()
            .find(|(pid, _)| *pid == id)
            .map(|(_, e)| e.clone());
        let satisfied = scope_matched
            && error.is_none()
            && conditions.iter().all(|c| {
                let v = c.value.as_deref();
                (c.kind == "when" && v == Some("true"))
                    || (c.kind == "unless" && v == Some("false"))
            });
        out.push(PolicyExplanation {
            id,
            effect: match p.effect() {
                cedar_policy::Effect::Permit => "permit",
                cedar_policy::Effect::Forbid => "forbid",
            },
            scope_matched,
            conditions,
            satisfied,
            error,
        });
    }
    Ok(Explanation {
        allowed: full.decision() == Decision::Allow,
        reasons,
        errors: errored
            .into_iter()
            .map(|(id, e)| format!("{id}: {e}"))
            .collect(),
        policies: out,
    })
}

/// `explain` as a JSON document (what the Python binding returns).
pub fn explain_json(
    policies: &str,
    schema: Option<&str>,
    entities: &str,
    principal: &str,
    action: &str,
    resource: &str,
    context: &str,
) -> Result<String, String> {
    let ex = explain(
        policies, schema, entities, principal, action, resource, context,
    )?;
    serde_json::to_string(&ex).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICIES: &str = r#"
@id("tools-granted")
permit (principal is Agent, action == Action::"call_tool", resource is Tool)
when { principal.tools.contains(resource) && resource.risk <= 5 };

@id("no-exfiltration")
forbid (principal, action == Action::"egress", resource)
when { context has task && context.task.labels.contains("restricted") }
unless { resource in Domain::"corp.internal" };

permit (principal, action == Action::"egress", resource);
"#;

    const ENTITIES: &str = r#"[
 {"uid": {"type": "Agent", "id": "a"}, "attrs": {"tools": [{"__entity": {"type": "Tool", "id": "shell"}}]}, "parents": []},
 {"uid": {"type": "Tool", "id": "shell"}, "attrs": {"risk": 9}, "parents": []},
 {"uid": {"type": "Domain", "id": "corp.internal"}, "attrs": {}, "parents": []},
 {"uid": {"type": "Domain", "id": "x.com"}, "attrs": {}, "parents": []}
]"#;

    fn run(action: &str, resource: &str, ctx: &str) -> Explanation {
        explain(
            POLICIES,
            None,
            ENTITIES,
            r#"Agent::"a""#,
            action,
            resource,
            ctx,
        )
        .unwrap()
    }

    #[test]
    fn a_failed_condition_is_named_with_its_value() {
        let ex = run(r#"Action::"call_tool""#, r#"Tool::"shell""#, "{}");
        assert!(!ex.allowed);
        let p = &ex.policies[0];
        assert_eq!(p.id, "tools-granted");
        assert!(p.scope_matched && !p.satisfied);
        assert_eq!(p.conditions[0].value.as_deref(), Some("false"));
        assert!(p.conditions[0].text.contains("resource.risk <= 5"));
        // The egress policies' scopes do not match a call_tool request.
        assert!(!ex.policies[1].scope_matched && ex.policies[1].conditions.is_empty());
        assert_eq!(ex.policies[2].id, "policy2");
    }

    #[test]
    fn a_forbid_shows_the_task_values_it_read() {
        let ctx = r#"{"task": {"labels": ["restricted"]}}"#;
        let ex = run(r#"Action::"egress""#, r#"Domain::"x.com""#, ctx);
        assert!(!ex.allowed);
        assert_eq!(ex.reasons, vec!["no-exfiltration"]);
        let f = &ex.policies[1];
        assert!(f.satisfied);
        assert_eq!(f.conditions[0].kind, "when");
        assert_eq!(
            f.conditions[0].task_reads,
            vec![(
                "context.task.labels".to_owned(),
                r#"["restricted"]"#.to_owned()
            )]
        );
        assert_eq!(f.conditions[1].kind, "unless");
        assert_eq!(f.conditions[1].value.as_deref(), Some("false"));
        // The benign twin: an untainted task is allowed by the catch-all permit.
        let ex = run(
            r#"Action::"egress""#,
            r#"Domain::"x.com""#,
            r#"{"task": {"labels": []}}"#,
        );
        assert!(ex.allowed && !ex.policies[1].satisfied);
        assert_eq!(ex.reasons, vec!["policy2"]);
    }

    #[test]
    fn an_erroring_condition_reports_the_error() {
        // Agent "b" is not in the entities: reading `principal.tools` fails.
        let ex = explain(
            POLICIES,
            None,
            ENTITIES,
            r#"Agent::"b""#,
            r#"Action::"call_tool""#,
            r#"Tool::"shell""#,
            "{}",
        )
        .unwrap();
        let p = &ex.policies[0];
        assert!(p.scope_matched);
        assert!(p.conditions[0].error.is_some(), "{p:?}");
        assert!(p.error.is_some() && !ex.errors.is_empty());
    }

    #[test]
    fn the_store_exports_as_the_entities_it_was_loaded_from() {
        let ents = r#"[
 {"uid": {"type": "Host", "id": "h"}, "parents": [{"type": "Net", "id": "corp"}],
  "attrs": {"ip": {"__extn": {"fn": "ip", "arg": "10.0.0.1"}}, "n": 3, "ok": true,
            "tags": ["a", "b"], "owner": {"__entity": {"type": "User", "id": "u"}},
            "rec": {"d": {"__extn": {"fn": "decimal", "arg": "1.25"}}}},
  "tags": {"t": "x"}},
 {"uid": {"type": "Net", "id": "corp"}, "attrs": {}, "parents": []}
]"#;
        let core = crate::engine::Core::new(
            POLICIES,
            None,
            Some(ents),
            None,
            false,
            crate::engine::OnError::Skip,
            false,
        )
        .unwrap();
        let exported = snapshot_entities(&core.current.load(), false).unwrap();
        // Cedar lists entities in no fixed order: compare sorted by uid.
        let sorted = |e: Entities| {
            let mut v = e.to_json_value().unwrap().as_array().unwrap().clone();
            v.sort_by_key(|x| x["uid"].to_string());
            v
        };
        assert_eq!(
            sorted(Entities::from_json_value(exported, None).unwrap()),
            sorted(Entities::from_json_str(ents, None).unwrap()),
            "the export reads back as the same entities"
        );
        // And explaining over a snapshot matches explaining over its entity text.
        let core = crate::engine::Core::new(
            POLICIES,
            None,
            Some(ENTITIES),
            None,
            false,
            crate::engine::OnError::Skip,
            false,
        )
        .unwrap();
        let ex = explain_snapshot(
            &core.current.load(),
            r#"Agent::"a""#,
            r#"Action::"call_tool""#,
            r#"Tool::"shell""#,
            "{}",
        )
        .unwrap();
        assert_eq!(ex, run(r#"Action::"call_tool""#, r#"Tool::"shell""#, "{}"));
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert!(explain("permit(", None, "[]", "A::\"a\"", "A::\"b\"", "A::\"c\"", "{}").is_err());
        assert!(explain(POLICIES, None, "[]", "nope", "A::\"b\"", "A::\"c\"", "{}").is_err());
        assert!(explain(POLICIES, None, "[]", "A::\"a\"", "A::\"b\"", "A::\"c\"", "[").is_err());
    }
}

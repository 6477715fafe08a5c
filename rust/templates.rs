//! Templates and template-linked policies, kept in Cedar's own policy set.
//!
//! Linking is Cedar's (`PolicySet::link`): the linked policy is the template with
//! its slots filled, a static policy as far as the compiler is concerned, so it
//! goes through the same compile pipeline and the hot path never sees a slot.
//! Names follow tether's convention: a template goes by its `@id` (else Cedar's
//! `policyN`); a linked policy by the id given to `link`, which is also its Cedar id.

use std::collections::HashMap;
use std::str::FromStr;

use cedar_policy::{
    EntityId, EntityTypeName, EntityUid, PolicyId, PolicySet, Schema, SlotId, Template,
};

use crate::compile::{self, policy_name, template_name};
use crate::error::{render_diag, Location, TetherError};

/// One template-linked policy: its id, its template's name and the slot values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub policy_id: String,
    pub template: String,
    /// `Type::"id"` text of the `?principal` value, if the template has that slot.
    pub principal: Option<String>,
    pub resource: Option<String>,
}

/// A `(type, id)` slot value as given by a caller.
pub type SlotValue<'a> = (&'a str, &'a str);

/// One link to make: template (by name), the new policy's id, the slot values.
#[derive(Debug, Clone, Copy)]
pub struct LinkRequest<'a> {
    pub template: &'a str,
    pub policy_id: &'a str,
    pub principal: Option<SlotValue<'a>>,
    pub resource: Option<SlotValue<'a>>,
}

fn err(policy_id: &str, message: String) -> TetherError {
    TetherError::Policy {
        message,
        location: Box::new(Location {
            policy_id: Some(policy_id.to_owned()),
            ..Location::default()
        }),
        feature: None,
    }
}

/// Cedar's auto names (`policy0`, `policy1`, ...) depend on a policy's position in
/// the text, so a link named like one could collide with a later reload.
fn is_auto_name(id: &str) -> bool {
    id.strip_prefix("policy")
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
}

/// Template names, in text order.
pub fn templates(pset: &PolicySet) -> Vec<String> {
    let mut ts: Vec<&Template> = pset.templates().collect();
    ts.sort_by_key(|t| natural_order(t.id().as_ref()));
    ts.into_iter().map(template_name).collect()
}

fn natural_order(id: &str) -> (u64, String) {
    let n = id
        .strip_prefix("policy")
        .and_then(|d| d.parse::<u64>().ok())
        .unwrap_or(u64::MAX);
    (n, id.to_owned())
}

/// Every template-linked policy, by id.
pub fn links(pset: &PolicySet) -> Vec<LinkInfo> {
    let mut out: Vec<LinkInfo> = pset
        .policies()
        .filter(|p| !p.is_static())
        .map(|p| {
            let vals = p.template_links().unwrap_or_default();
            let template = p
                .template_id()
                .and_then(|t| pset.template(t))
                .map(template_name)
                .unwrap_or_default();
            LinkInfo {
                policy_id: p.id().to_string(),
                template,
                principal: vals.get(&SlotId::principal()).map(ToString::to_string),
                resource: vals.get(&SlotId::resource()).map(ToString::to_string),
            }
        })
        .collect();
    out.sort_by(|a, b| a.policy_id.cmp(&b.policy_id));
    out
}

fn find_template<'a>(pset: &'a PolicySet, name: &str) -> Option<&'a Template> {
    pset.templates().find(|t| template_name(t) == name)
}

fn entity_uid(role: &str, (ty, id): SlotValue<'_>) -> Result<EntityUid, TetherError> {
    let ty = EntityTypeName::from_str(ty).map_err(|_| {
        TetherError::Request(format!(
            "{role}: {ty:?} is not a valid Cedar entity type name"
        ))
    })?;
    Ok(EntityUid::from_type_name_and_id(ty, EntityId::new(id)))
}

/// The slot values for `template`, exactly its slots: a missing or extra value is
/// an error naming what the template expects.
fn slot_values(
    template: &Template,
    name: &str,
    policy_id: &str,
    principal: Option<SlotValue<'_>>,
    resource: Option<SlotValue<'_>>,
) -> Result<HashMap<SlotId, EntityUid>, TetherError> {
    let has = |s: SlotId| template.slots().any(|x| *x == s);
    let mut vals = HashMap::new();
    for (slot, role, value) in [
        (SlotId::principal(), "principal", principal),
        (SlotId::resource(), "resource", resource),
    ] {
        match (has(slot.clone()), value) {
            (true, Some(v)) => {
                vals.insert(slot, entity_uid(role, v)?);
            }
            (false, None) => {}
            (true, None) => {
                return Err(err(
                    policy_id,
                    format!("template `{name}` has the slot {slot}: give {role}=..."),
                ))
            }
            (false, Some(_)) => {
                return Err(err(
                    policy_id,
                    format!("template `{name}` has no {slot} slot: {role}= does not apply"),
                ))
            }
        }
    }
    Ok(vals)
}

/// Why `policy_id` cannot name a new linked policy, if it cannot.
fn taken(pset: &PolicySet, names: &[&str], policy_id: &str) -> Option<String> {
    if policy_id.is_empty() {
        return Some("a policy id must not be empty".into());
    }
    if is_auto_name(policy_id) {
        return Some(format!(
            "`{policy_id}` is reserved: Cedar names policies without @id policy0, policy1, ..."
        ));
    }
    let cedar_id = PolicyId::new(policy_id);
    if names.contains(&policy_id)
        || pset.policy(&cedar_id).is_some()
        || pset.template(&cedar_id).is_some()
        || pset.templates().any(|t| template_name(t) == policy_id)
    {
        return Some(format!("a policy named `{policy_id}` already exists"));
    }
    None
}

/// Link `template` as `policy_id` into `pset` (unchanged on error). `names`: the
/// names of the policies compiled from `pset` (static and linked).
pub fn link(
    pset: &mut PolicySet,
    names: &[&str],
    template: &str,
    policy_id: &str,
    principal: Option<SlotValue<'_>>,
    resource: Option<SlotValue<'_>>,
) -> Result<(), TetherError> {
    let Some(t) = find_template(pset, template) else {
        let what = if names.contains(&template) {
            format!("`{template}` is a static policy, not a template")
        } else {
            format!("no template named `{template}`")
        };
        return Err(err(policy_id, format!("cannot link `{policy_id}`: {what}")));
    };
    if let Some(why) = taken(pset, names, policy_id) {
        return Err(err(policy_id, format!("cannot link `{policy_id}`: {why}")));
    }
    let vals = slot_values(t, template, policy_id, principal, resource)?;
    let tid = t.id().clone();
    pset.link(tid, PolicyId::new(policy_id), vals).map_err(|e| {
        err(
            policy_id,
            format!("cannot link `{policy_id}`: {}", render_diag(&e)),
        )
    })
}

/// Schema validation of one link (its template was validated at load): Cedar's
/// validator over a set holding just the template and the link. Returns the
/// validator's warnings.
pub fn validate_link(
    pset: &PolicySet,
    policy_id: &str,
    schema: &Schema,
    text: &str,
) -> Result<Vec<String>, TetherError> {
    let id = PolicyId::new(policy_id);
    let p = pset
        .policy(&id)
        .ok_or_else(|| err(policy_id, format!("no linked policy `{policy_id}`")))?;
    let (Some(tid), Some(vals)) = (p.template_id(), p.template_links()) else {
        return Err(err(
            policy_id,
            format!("`{policy_id}` is not a linked policy"),
        ));
    };
    let mut one = PolicySet::new();
    if let Some(t) = pset.template(tid) {
        one.add_template(t.clone())
            .map_err(|e| err(policy_id, render_diag(&e)))?;
    }
    one.link(tid.clone(), id, vals)
        .map_err(|e| err(policy_id, render_diag(&e)))?;
    compile::validate(&one, schema, text).map_err(|e| match e {
        TetherError::Policy {
            message,
            location,
            feature,
        } => TetherError::Policy {
            message: format!("cannot link `{policy_id}`: {message}"),
            location,
            feature,
        },
        other => other,
    })
}

/// Whether `policy_id` can be unlinked: a template-linked policy. Static policies
/// and templates are not (they are edited in the text and reloaded).
pub fn check_unlink(pset: &PolicySet, policy_id: &str) -> Result<(), TetherError> {
    let id = PolicyId::new(policy_id);
    if pset.policy(&id).is_some_and(|p| !p.is_static()) {
        return Ok(());
    }
    let what = if pset
        .policies()
        .any(|p| p.is_static() && policy_name(p) == policy_id)
    {
        format!("`{policy_id}` is a static policy (edit the policy text and reload)")
    } else if find_template(pset, policy_id).is_some() {
        format!("`{policy_id}` is a template (edit the policy text and reload)")
    } else {
        format!("no linked policy named `{policy_id}`")
    };
    Err(err(policy_id, format!("cannot unlink: {what}")))
}

/// Remove the linked policy `policy_id` from `pset` (unchanged on error).
pub fn unlink(pset: &mut PolicySet, policy_id: &str) -> Result<(), TetherError> {
    check_unlink(pset, policy_id)?;
    pset.unlink(PolicyId::new(policy_id))
        .map(|_| ())
        .map_err(|e| err(policy_id, format!("cannot unlink: {}", render_diag(&e))))
}

/// Carry the links of `old` over to `new` (a reload): each link is made again from
/// the template of the same name in `new`, so an edited template changes its links.
/// A link whose template is gone is dropped (returned), as Amazon Verified
/// Permissions deletes a deleted template's links; a link its template no longer
/// accepts (its slots changed) fails the reload.
pub fn relink(old: &PolicySet, new: &mut PolicySet) -> Result<Vec<String>, TetherError> {
    let mut dropped = Vec::new();
    for l in links(old) {
        let Some(t) = find_template(new, &l.template) else {
            dropped.push(l.policy_id);
            continue;
        };
        let id = PolicyId::new(&l.policy_id);
        let vals = old
            .policy(&id)
            .and_then(|p| p.template_links())
            .unwrap_or_default();
        let slots: Vec<&SlotId> = t.slots().collect();
        if slots.len() != vals.len() || !vals.keys().all(|s| slots.contains(&s)) {
            return Err(err(
                &l.policy_id,
                format!(
                    "linked policy `{}` no longer fits template `{}`: the template's slots \
                     changed (unlink it first, or keep the slots)",
                    l.policy_id, l.template
                ),
            ));
        }
        new.link(t.id().clone(), id, vals).map_err(|e| {
            err(
                &l.policy_id,
                format!(
                    "cannot link `{}` to template `{}` again: {}",
                    l.policy_id,
                    l.template,
                    render_diag(&e)
                ),
            )
        })?;
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    //! Differential: tether's decisions on linked policies against Cedar's own
    //! `Authorizer` on the same linked `PolicySet`, for generated templates, links
    //! and requests: decision, reasons and erroring policies must be identical,
    //! and a link must fail in tether exactly when it fails in Cedar.

    use std::collections::BTreeSet;

    use cedar_policy::{Authorizer, Context, Decision, Entities, Request};

    use super::*;
    use crate::engine::{Core, Mode, OnError, ResolvedRequest};
    use crate::eval::Locals;

    fn link1(
        core: &Core,
        template: &str,
        policy_id: &str,
        principal: Option<SlotValue<'_>>,
        resource: Option<SlotValue<'_>>,
    ) -> Result<(), TetherError> {
        core.link(&[LinkRequest {
            template,
            policy_id,
            principal,
            resource,
        }])
    }

    /// xorshift64*: deterministic, dependency-free.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
            &xs[self.below(xs.len())]
        }
    }

    const USERS: [&str; 5] = ["alice", "bob", "carol", "dan", "ghost"];
    const GROUPS: [&str; 3] = ["admins", "staff", "nobody"];
    const DOCS: [&str; 5] = ["d0", "d1", "d2", "d3", "missing"];
    const FOLDERS: [&str; 3] = ["f0", "f1", "f2"];

    /// Users in groups, docs in folders; some lack `level` (errors), `ghost` and
    /// `missing` do not exist at all.
    fn entities_json() -> String {
        let mut es = Vec::new();
        for (i, u) in USERS[..4].iter().enumerate() {
            let parents: Vec<_> = GROUPS[..2]
                .iter()
                .enumerate()
                .filter(|(g, _)| (i + g) % 2 == 0)
                .map(|(_, g)| serde_json::json!({"type": "Group", "id": g}))
                .collect();
            let attrs = if i == 3 {
                serde_json::json!({})
            } else {
                serde_json::json!({"level": i as i64 + 1})
            };
            es.push(serde_json::json!({"uid": {"type": "User", "id": u}, "attrs": attrs, "parents": parents}));
        }
        for g in GROUPS[..2].iter() {
            es.push(
                serde_json::json!({"uid": {"type": "Group", "id": g}, "attrs": {}, "parents": []}),
            );
        }
        for (i, d) in DOCS[..4].iter().enumerate() {
            es.push(serde_json::json!({
                "uid": {"type": "Doc", "id": d},
                "attrs": {"level": i as i64, "owner": {"__entity": {"type": "User", "id": USERS[i]}}},
                "parents": [{"type": "Folder", "id": FOLDERS[i % 3]}],
            }));
        }
        for f in FOLDERS {
            es.push(
                serde_json::json!({"uid": {"type": "Folder", "id": f}, "attrs": {}, "parents": []}),
            );
        }
        serde_json::Value::Array(es).to_string()
    }

    /// Template shapes: (scope with slots, condition or "").
    const SHAPES: [(&str, &str); 8] = [
        (
            "principal == ?principal, action == Action::\"read\", resource in ?resource",
            "",
        ),
        (
            "principal in ?principal, action, resource",
            "when { resource.level <= principal.level }",
        ),
        (
            "principal == ?principal, action == Action::\"write\", resource",
            "",
        ),
        (
            "principal is User in ?principal, action in [Action::\"read\"], resource == ?resource",
            "unless { principal.level < 2 }",
        ),
        (
            "principal, action, resource is Doc in ?resource",
            "when { resource.owner == principal }",
        ),
        (
            "principal in ?principal, action, resource == ?resource",
            "when { context.flag }",
        ),
        ("principal == ?principal, action, resource is Folder", ""),
        (
            "principal, action == Action::\"write\", resource in ?resource",
            "when { principal.level > 1 }",
        ),
    ];

    fn gen_text(rng: &mut Rng) -> String {
        let mut text = String::from(
            "@id(\"no-write-top\")\nforbid (principal, action == Action::\"write\", resource) when { resource.level > 2 };\n\
             permit (principal == User::\"carol\", action, resource);\n",
        );
        for i in 0..2 + rng.below(4) {
            let (scope, cond) = rng.pick(&SHAPES);
            let effect = if rng.below(4) == 0 {
                "forbid"
            } else {
                "permit"
            };
            // Half the templates go by @id, the others by Cedar's policyN.
            let id = if rng.below(2) == 0 {
                format!("@id(\"t{i}\")\n")
            } else {
                String::new()
            };
            text.push_str(&format!("{id}{effect} ({scope}) {cond};\n"));
        }
        text
    }

    fn slot_value(rng: &mut Rng, slot: &SlotId) -> (String, String) {
        let principal = *slot == SlotId::principal();
        let (ty, ids): (&str, &[&str]) = match (principal, rng.below(3)) {
            (true, 0) => ("Group", &GROUPS),
            (true, _) => ("User", &USERS),
            (false, 0) => ("Folder", &FOLDERS),
            (false, _) => ("Doc", &DOCS),
        };
        (ty.to_owned(), rng.pick(ids).to_string())
    }

    /// Cedar's answer: (allowed, reasons, erroring policies), named as tether names them.
    fn cedar_decides(
        pset: &PolicySet,
        ents: &Entities,
        p: &EntityUid,
        a: &EntityUid,
        r: &EntityUid,
    ) -> (bool, BTreeSet<String>, BTreeSet<String>) {
        let req = Request::new(p.clone(), a.clone(), r.clone(), Context::empty(), None).unwrap();
        let resp = Authorizer::new().is_authorized(&req, pset, ents);
        let name = |id: &PolicyId| policy_name(pset.policy(id).unwrap());
        let reasons = resp.diagnostics().reason().map(name).collect();
        let errors = resp
            .diagnostics()
            .errors()
            .map(|e| match e {
                cedar_policy::AuthorizationError::PolicyEvaluationError(e) => name(e.policy_id()),
            })
            .collect();
        (resp.decision() == Decision::Allow, reasons, errors)
    }

    fn uid(ty: &str, id: &str) -> EntityUid {
        EntityUid::from_type_name_and_id(ty.parse().unwrap(), EntityId::new(id))
    }

    /// What the compared requests exercised: requests, allowed, decided by a link
    /// (a link among the reasons), a link erroring.
    #[derive(Default, Debug)]
    struct Seen {
        requests: usize,
        allowed: usize,
        by_link: usize,
        link_errors: usize,
    }

    /// Every request of the small universe through tether and Cedar.
    fn compare_all(core: &Core, pset: &PolicySet, ents: &Entities, what: &str, seen: &mut Seen) {
        let principals: Vec<(&str, &str)> = USERS
            .iter()
            .map(|u| ("User", *u))
            .chain(GROUPS.iter().map(|g| ("Group", *g)))
            .collect();
        let resources: Vec<(&str, &str)> = DOCS
            .iter()
            .map(|d| ("Doc", *d))
            .chain(FOLDERS.iter().map(|f| ("Folder", *f)))
            .collect();
        for &(pt, pi) in &principals {
            for act in ["read", "write"] {
                for &(rt, ri) in &resources {
                    let expected =
                        cedar_decides(pset, ents, &uid(pt, pi), &uid("Action", act), &uid(rt, ri));
                    let snap = core.current.load_full();
                    let req = ResolvedRequest {
                        principal: core.intern_uid(pt, pi).unwrap(),
                        action: core.intern_uid("Action", act).unwrap(),
                        resource: core.intern_uid(rt, ri).unwrap(),
                        context: None,
                        fields: Default::default(),
                        locals: Locals::new(&snap.interner),
                    };
                    let snap = core.current.load_full();
                    let out = snap.evaluate(&req, Mode::Full, OnError::Skip);
                    let name = |i: &u32| snap.set.policies[*i as usize].id.clone();
                    let got = (
                        out.allowed,
                        out.reasons.iter().map(name).collect(),
                        out.errors.iter().map(|(i, _)| name(i)).collect(),
                    );
                    assert_eq!(
                        got, expected,
                        "{what}: {pt}::{pi:?} {act} {rt}::{ri:?}\n{}",
                        snap.set.text
                    );
                    let fast = snap.evaluate(&req, Mode::Fast, OnError::Skip);
                    assert_eq!(
                        fast.allowed, expected.0,
                        "{what} (fast): {pt}::{pi:?} {act} {rt}::{ri:?}"
                    );
                    let linked = |ids: &BTreeSet<String>| ids.iter().any(|i| i.starts_with("link"));
                    seen.requests += 1;
                    seen.allowed += usize::from(expected.0);
                    seen.by_link += usize::from(linked(&expected.1));
                    seen.link_errors += usize::from(linked(&expected.2));
                }
            }
        }
    }

    #[test]
    fn linked_policies_decide_as_cedars_authorizer() {
        let ents_json = entities_json();
        let ents = Entities::from_json_str(&ents_json, None).unwrap();
        let (mut seen, mut links_made, mut link_errors) = (Seen::default(), 0, 0);
        for seed in 1..=40u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let text = gen_text(&mut rng);
            let mut cedar = PolicySet::from_str(&text).unwrap();
            let core = Core::new(
                &text,
                None,
                Some(&ents_json),
                None,
                false,
                OnError::Skip,
                false,
            )
            .unwrap();
            let names = templates(&cedar);
            for k in 0..rng.below(7) {
                let tname = rng.pick(&names).clone();
                let t = find_template(&cedar, &tname).unwrap().clone();
                // Now and then a wrong slot set or a reused id: both must fail alike.
                let mut vals: Vec<(SlotId, (String, String))> = t
                    .slots()
                    .map(|s| (s.clone(), slot_value(&mut rng, s)))
                    .collect();
                if rng.below(6) == 0 {
                    vals.pop();
                }
                let id = format!("link{}", if rng.below(5) == 0 { 0 } else { k });
                let get = |s: SlotId| {
                    vals.iter()
                        .find(|(x, _)| *x == s)
                        .map(|(_, (t, i))| (t.as_str(), i.as_str()))
                };
                let ours = link1(
                    &core,
                    &tname,
                    &id,
                    get(SlotId::principal()),
                    get(SlotId::resource()),
                );
                let cedar_vals: HashMap<SlotId, EntityUid> = vals
                    .iter()
                    .map(|(s, (t, i))| (s.clone(), uid(t, i)))
                    .collect();
                let theirs = cedar.link(t.id().clone(), PolicyId::new(&id), cedar_vals);
                assert_eq!(
                    ours.is_ok(),
                    theirs.is_ok(),
                    "link {id} to {tname}: tether {ours:?}, Cedar {theirs:?}"
                );
                if ours.is_ok() {
                    links_made += 1;
                } else {
                    link_errors += 1;
                }
            }
            compare_all(&core, &cedar, &ents, "linked", &mut seen);
            // Links survive a reload of the same text, compiled afresh in the order
            // the incremental links kept.
            let order = |c: &Core| -> Vec<String> {
                let snap = c.current.load();
                snap.set.policies.iter().map(|p| p.id.clone()).collect()
            };
            let before = order(&core);
            core.reload(&text, None, false).unwrap();
            assert_eq!(order(&core), before);
            compare_all(&core, &cedar, &ents, "after reload", &mut seen);
            // Unlink about half: the rest still decide as Cedar's.
            for l in links(&cedar) {
                if rng.below(2) == 0 {
                    core.unlink(&l.policy_id).unwrap();
                    cedar.unlink(PolicyId::new(&l.policy_id)).unwrap();
                }
            }
            compare_all(&core, &cedar, &ents, "after unlink", &mut seen);
        }
        eprintln!("{seen:?}; {links_made} links made, {link_errors} refused alike");
        assert!(
            links_made >= 40
                && link_errors >= 3
                && seen.by_link >= 200
                && seen.link_errors >= 20
                && seen.allowed * 10 >= seen.requests,
            "generator too weak: {seen:?}, {links_made} links, {link_errors} refusals"
        );
    }

    const GRANT: &str = "@id(\"grant\")\npermit (principal == ?principal, action == Action::\"read\", resource in ?resource);\n\
                         @id(\"base\")\npermit (principal, action == Action::\"list\", resource);\n";

    const GRANT_ENTITIES: &str = r#"[{"uid": {"type": "Folder", "id": "f"}, "attrs": {}, "parents": []},
        {"uid": {"type": "Doc", "id": "d"}, "attrs": {}, "parents": [{"type": "Folder", "id": "f"}]}]"#;

    fn grant_core() -> Core {
        Core::new(
            GRANT,
            None,
            Some(GRANT_ENTITIES),
            None,
            false,
            OnError::Skip,
            false,
        )
        .unwrap()
    }

    fn allowed(core: &Core, who: &str) -> bool {
        let snap = core.current.load_full();
        let req = ResolvedRequest {
            principal: core.intern_uid("User", who).unwrap(),
            action: core.intern_uid("Action", "read").unwrap(),
            resource: core.intern_uid("Doc", "d").unwrap(),
            context: None,
            fields: Default::default(),
            locals: Locals::new(&snap.interner),
        };
        core.current
            .load()
            .evaluate(&req, Mode::Full, OnError::Skip)
            .allowed
    }

    #[test]
    fn errors_are_typed_and_lose_nothing() {
        let core = grant_core();
        link1(
            &core,
            "grant",
            "alice-grant",
            Some(("User", "alice")),
            Some(("Folder", "f")),
        )
        .unwrap();
        let before = core.current.load().version;
        let msg = |r: Result<(), TetherError>| r.unwrap_err().to_string();
        let (bob, f) = (Some(("User", "b")), Some(("Folder", "f")));
        for (template, id, p, r, want) in [
            ("nope", "x", bob, f, "no template named `nope`"),
            ("base", "x", None, None, "is a static policy"),
            ("grant", "alice-grant", bob, f, "already exists"),
            ("grant", "base", bob, f, "already exists"),
            ("grant", "grant", bob, f, "already exists"),
            ("grant", "policy7", bob, f, "reserved"),
            ("grant", "x", bob, None, "give resource="),
            ("grant", "x", None, f, "give principal="),
        ] {
            let m = msg(link1(&core, template, id, p, r));
            assert!(m.contains(want), "{template} as {id}: {m}");
        }
        assert!(msg(core.unlink("base")).contains("is a static policy"));
        assert!(msg(core.unlink("grant")).contains("is a template"));
        assert!(msg(core.unlink("nobody")).contains("no linked policy named `nobody`"));
        assert!(matches!(
            link1(
                &core,
                "grant",
                "x",
                Some(("Us er", "b")),
                Some(("Folder", "f"))
            ),
            Err(TetherError::Request(_))
        ));
        assert_eq!(
            core.current.load().version,
            before,
            "a failed call published a snapshot"
        );
        assert!(allowed(&core, "alice"));
        assert!(!allowed(&core, "bob"));
    }

    #[test]
    fn reload_keeps_links_whose_template_remains() {
        let core = grant_core();
        link1(
            &core,
            "grant",
            "alice-grant",
            Some(("User", "alice")),
            Some(("Folder", "f")),
        )
        .unwrap();
        // The template edited (same slots): the link follows the new text.
        let narrowed = GRANT.replace(
            "resource in ?resource)",
            "resource in ?resource) when { false }",
        );
        core.reload(&narrowed, None, false).unwrap();
        assert_eq!(core.links().len(), 1);
        assert!(!allowed(&core, "alice"));
        core.reload(GRANT, None, false).unwrap();
        assert!(allowed(&core, "alice"));
        // Slots changed: the reload fails and the old set stays.
        let reslotted = GRANT.replace("resource in ?resource", "resource");
        let e = core
            .reload(&reslotted, None, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no longer fits template `grant`"), "{e}");
        assert!(allowed(&core, "alice"));
        // The template gone: its links go with it.
        core.reload(
            "@id(\"base\")\npermit (principal, action == Action::\"list\", resource);",
            None,
            false,
        )
        .unwrap();
        assert!(core.links().is_empty());
        assert!(!allowed(&core, "alice"));
    }

    #[test]
    fn a_template_tether_cannot_compile_fails_at_load() {
        let text = "@id(\"odd\")\npermit (principal == ?principal, action, resource) when { ip(\"1.2.3.4\", \"x\") };";
        let e = match Core::new(text, None, None, None, false, OnError::Skip, false) {
            Err(e) => e,
            Ok(_) => panic!("a template with a wrong-arity call loaded"),
        };
        match e {
            TetherError::Policy {
                feature, location, ..
            } => {
                assert!(feature.is_some_and(|f| f.contains("`ip`")));
                assert_eq!(location.policy_id.as_deref(), Some("odd"));
                assert_eq!(location.line, Some(1));
            }
            other => panic!("expected a policy error, got {other}"),
        }
    }

    #[test]
    fn templates_share_the_name_space() {
        let text = "@id(\"x\")\npermit (principal == ?principal, action, resource);\n@id(\"x\")\npermit (principal, action, resource);";
        let e = Core::new(text, None, None, None, false, OnError::Skip, false)
            .err()
            .unwrap();
        assert!(e.to_string().contains("two policies are named `x`"), "{e}");
    }

    #[test]
    fn a_batch_of_links_is_all_or_nothing() {
        let core = grant_core();
        let grant = |policy_id, who| LinkRequest {
            template: "grant",
            policy_id,
            principal: Some(("User", who)),
            resource: Some(("Folder", "f")),
        };
        // The second link reuses the first one's id: neither is made.
        let e = core
            .link(&[grant("a", "alice"), grant("a", "bob")])
            .unwrap_err();
        assert!(
            e.to_string().contains("a policy named `a` already exists"),
            "{e}"
        );
        assert!(core.links().is_empty());
        assert!(!allowed(&core, "alice"));
        let v = core.current.load().version;
        core.link(&[grant("a", "alice"), grant("b", "bob")])
            .unwrap();
        assert_eq!(
            core.current.load().version,
            v + 1,
            "one batch, one snapshot"
        );
        assert!(allowed(&core, "alice") && allowed(&core, "bob"));
    }

    #[test]
    fn many_link_unlink_cycles_stay_correct_and_bounded() {
        // A condition, so each link has nodes of its own (`has` on an absent entity is false).
        let text = GRANT.replace(
            "resource in ?resource);",
            "resource in ?resource) unless { principal has banned };",
        );
        let core = Core::new(
            &text,
            None,
            Some(GRANT_ENTITIES),
            None,
            false,
            OnError::Skip,
            false,
        )
        .unwrap();
        let mut cedar = PolicySet::from_str(&text).unwrap();
        let tid = find_template(&cedar, "grant").unwrap().id().clone();
        let base = core.current.load().set.nodes.len();
        let (mut max_nodes, mut per_link, mut compactions) = (0, 0, 0);
        for k in 0..400 {
            let id = format!("g{}", k % 7);
            let before = core.current.load().set.nodes.len();
            if links(&cedar).iter().any(|l| l.policy_id == id) {
                core.unlink(&id).unwrap();
                cedar.unlink(PolicyId::new(&id)).unwrap();
                compactions += usize::from(core.current.load().set.nodes.len() < before);
            } else {
                let who = ["alice", "bob", "carol"][k % 3];
                link1(
                    &core,
                    "grant",
                    &id,
                    Some(("User", who)),
                    Some(("Folder", "f")),
                )
                .unwrap();
                per_link = core.current.load().set.nodes.len() - before;
                let vals = HashMap::from([
                    (SlotId::principal(), uid("User", who)),
                    (SlotId::resource(), uid("Folder", "f")),
                ]);
                cedar.link(tid.clone(), PolicyId::new(&id), vals).unwrap();
            }
            let live: BTreeSet<String> = links(&cedar).into_iter().map(|l| l.policy_id).collect();
            let ours: BTreeSet<String> = core.links().into_iter().map(|l| l.policy_id).collect();
            assert_eq!(ours, live);
            for who in ["alice", "bob", "carol", "dan"] {
                let expect = links(&cedar)
                    .iter()
                    .any(|l| l.principal.as_deref() == Some(&format!("User::\"{who}\"")));
                assert_eq!(allowed(&core, who), expect, "step {k}: {who}");
            }
            max_nodes = max_nodes.max(core.current.load().set.nodes.len());
        }
        // Dead nodes of unlinked policies are compacted away now and then: at most
        // ~64 dead links' worth plus the 7 live ones, never the 200 made.
        assert!(
            per_link > 0 && compactions >= 2,
            "{per_link} nodes a link, {compactions} compactions"
        );
        assert!(
            max_nodes <= base + (64 + 8) * per_link,
            "nodes grew to {max_nodes}"
        );
    }
}

//! Which entities the per-action plans were specialised with.
//!
//! Specialising folds `action.*` reads and constant subtrees against the store,
//! so a plan can depend on action entities, on entities the policies name, and
//! on any entity reachable from those through attributes or tags (`action.owner.team`).
//! A change to any other entity (the common case: agents, resources) leaves the
//! plans valid, and an upsert need not re-specialise the policy set.

use rustc_hash::FxHashSet;

use crate::compile::ir::Node;
use crate::entities::EntityStore;
use crate::value::{Euid, Interner, Value};

#[derive(Debug, Default)]
pub struct PlanDeps {
    uids: FxHashSet<Euid>,
}

fn is_action_type(ty: &str) -> bool {
    ty == "Action" || ty.ends_with("::Action")
}

fn entities_in(v: &Value, out: &mut Vec<Euid>) {
    match v {
        Value::Entity(u) => out.push(*u),
        Value::Set(items) => items.iter().for_each(|i| entities_in(i, out)),
        Value::Record(r) => r.fields.iter().for_each(|(_, f)| entities_in(f, out)),
        _ => {}
    }
}

impl PlanDeps {
    pub fn of(nodes: &[Node], named: &[Euid], store: &EntityStore) -> Self {
        let mut work: Vec<Euid> = named.to_vec();
        work.extend(store.action_uids());
        for n in nodes {
            if let Node::Lit(v) = n {
                entities_in(v, &mut work);
            }
        }
        let mut uids = FxHashSet::default();
        while let Some(u) = work.pop() {
            if !uids.insert(u) {
                continue;
            }
            if let Some(e) = store.get(&u) {
                for (_, v) in e.attrs.fields.iter().chain(e.tags.fields.iter()) {
                    entities_in(v, &mut work);
                }
            }
        }
        PlanDeps { uids }
    }

    /// Whether a change to `touched` (data or ancestors) can change the plans:
    /// one of them was read while specialising, or is a (new) action.
    pub fn affected_by(&self, touched: &[Euid], interner: &Interner) -> bool {
        touched
            .iter()
            .any(|u| self.uids.contains(u) || interner.get(u.ty).is_some_and(is_action_type))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Core, OnError};

    fn core(policies: &str, entities: &str) -> Core {
        Core::new(
            policies,
            None,
            Some(entities),
            None,
            false,
            OnError::Skip,
            true,
        )
        .unwrap()
    }

    #[test]
    fn reaches_through_action_attributes() {
        let c = core(
            r#"permit (principal, action, resource) when { action.owner.level > 2 };"#,
            r#"[{"uid": {"type": "Action", "id": "a"}, "parents": [],
                 "attrs": {"owner": {"__entity": {"type": "User", "id": "o"}}}},
                {"uid": {"type": "User", "id": "o"}, "parents": [], "attrs": {"level": 3}},
                {"uid": {"type": "User", "id": "x"}, "parents": [], "attrs": {}}]"#,
        );
        let snap = c.current.load();
        let i = &snap.interner;
        let uid = |t: &str, d: &str| Euid {
            ty: i.lookup(t).unwrap(),
            id: i.lookup(d).unwrap(),
        };
        let deps = &snap.plan_deps;
        assert!(deps.affected_by(&[uid("User", "o")], i));
        assert!(deps.affected_by(&[uid("Action", "a")], i));
        assert!(!deps.affected_by(&[uid("User", "x")], i));
    }

    #[test]
    fn a_change_to_an_owner_re_specialises() {
        let pol = r#"permit (principal, action == Action::"a", resource) when { action.owner.level > 2 };"#;
        let ents = r#"[{"uid": {"type": "Action", "id": "a"}, "parents": [],
                 "attrs": {"owner": {"__entity": {"type": "User", "id": "o"}}}},
                {"uid": {"type": "User", "id": "o"}, "parents": [], "attrs": {"level": 3}}]"#;
        let c = core(pol, ents);
        let decide = |c: &Core| {
            let s = c.current.load_full();
            let u = c.intern_uid("User", "o").unwrap();
            let a = c.intern_uid("Action", "a").unwrap();
            let req = crate::engine::ResolvedRequest {
                fields: Default::default(),
                principal: u,
                action: a,
                resource: u,
                context: None,
                locals: crate::eval::Locals::new(&c.current.load().interner),
            };
            let s2 = c.current.load_full();
            drop(s);
            s2.evaluate(&req, crate::engine::Mode::Fast, OnError::Skip)
                .allowed
        };
        assert!(decide(&c));
        c.upsert_entities(
            r#"[{"uid": {"type": "User", "id": "o"}, "parents": [], "attrs": {"level": 1}}]"#,
        )
        .unwrap();
        assert!(!decide(&c));
    }
}

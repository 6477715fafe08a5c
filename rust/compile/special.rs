//! Per-action specialisation: Cedar actions are static, so each known action gets
//! its own candidate list, built once per snapshot (policies x entity store).
//!
//! For action A, every policy whose action scope holds for A is rewritten with
//! `action` replaced by the literal A, and every subtree whose operands are all
//! literals evaluated at load (`action.egress`, `["a", "b"].contains(action.group)`,
//! constant arithmetic). A subtree whose load-time evaluation errors is kept, so
//! the error still happens only if and when a request reaches it. A policy whose
//! first undecided clause folds to "never" is dropped for A. What remains is filed
//! by principal (exact uid, `in` target, or neither), forbids first.
//!
//! Exactness: only Cedar-equivalent rewrites are made. `false && x` is `false`,
//! `true || x` is `true`, and `true && x` / `false || x` is `x` only when `x`
//! always yields a boolean when it does not error; `x && false` is never folded
//! (x may error first).

use rustc_hash::{FxHashMap, FxHashSet};

use super::ir::{
    ActionScope, BinOp, Clause, CompiledPolicy, Effect, EntityScope, Node, NodeId, Var,
};
use crate::entities::EntityStore;
use crate::eval::{Evaluator, Locals};
use crate::value::{Euid, Interner, Value};

/// One policy as it applies to one action.
#[derive(Debug)]
pub struct Cand {
    pub policy: u32,
    pub principal: EntityScope,
    pub resource: EntityScope,
    /// Remaining clauses, rewritten into `Plans::nodes`.
    pub clauses: Box<[Clause]>,
}

/// Candidates under one principal key: `forbids` first, then `permits`.
#[derive(Debug, Default)]
pub struct Bucket {
    pub forbids: Vec<Cand>,
    pub permits: Vec<Cand>,
}

impl Bucket {
    fn push(&mut self, c: Cand, e: Effect) {
        match e {
            Effect::Forbid => self.forbids.push(c),
            Effect::Permit => self.permits.push(c),
        }
    }

    #[inline]
    pub fn part(&self, e: Effect) -> &[Cand] {
        match e {
            Effect::Forbid => &self.forbids,
            Effect::Permit => &self.permits,
        }
    }
}

/// The candidates of one action, filed by principal scope.
#[derive(Debug, Default)]
pub struct ActionPlan {
    /// `principal == U`, by U.
    pub eq: FxHashMap<Euid, Bucket>,
    /// `principal in U` / `principal is T in U`, by U.
    pub within: FxHashMap<Euid, Bucket>,
    /// Unscoped principals and `principal is T`.
    pub rest: Bucket,
}

#[derive(Debug, Default)]
pub struct Plans {
    /// The policy set's nodes followed by the rewritten ones.
    pub nodes: Vec<Node>,
    pub by_action: FxHashMap<Euid, ActionPlan>,
}

/// Whether an action type name: `Action` or `NS::Action`.
fn is_action_type(ty: &str) -> bool {
    ty == "Action" || ty.ends_with("::Action")
}

/// Whether the node, when it does not error, always yields a boolean.
fn yields_bool(n: &Node) -> bool {
    match n {
        Node::Lit(v) => matches!(v, Value::Bool(_)),
        Node::Not(_)
        | Node::And(..)
        | Node::Or(..)
        | Node::NotEq(..)
        | Node::HasAttr(..)
        | Node::Like(..)
        | Node::Is(..) => true,
        Node::Bin(op, ..) => matches!(
            op,
            BinOp::Eq
                | BinOp::Less
                | BinOp::LessEq
                | BinOp::In
                | BinOp::Contains
                | BinOp::ContainsAll
                | BinOp::ContainsAny
                | BinOp::HasTag
        ),
        _ => false,
    }
}

fn clone_node(n: &Node) -> Node {
    match n {
        Node::Lit(v) => Node::Lit(v.clone()),
        Node::Var(v) => Node::Var(*v),
        Node::Not(a) => Node::Not(*a),
        Node::Neg(a) => Node::Neg(*a),
        Node::IsEmpty(a) => Node::IsEmpty(*a),
        Node::And(a, b) => Node::And(*a, *b),
        Node::Or(a, b) => Node::Or(*a, *b),
        Node::If(a, b, c) => Node::If(*a, *b, *c),
        Node::NotEq(a, b) => Node::NotEq(*a, *b),
        Node::Bin(op, a, b) => Node::Bin(*op, *a, *b),
        Node::GetAttr(a, s) => Node::GetAttr(*a, *s),
        Node::HasAttr(a, s) => Node::HasAttr(*a, *s),
        Node::Like(a, p) => Node::Like(*a, p.clone()),
        Node::Is(a, t) => Node::Is(*a, *t),
        Node::Set(xs) => Node::Set(xs.clone()),
        Node::Record(fs) => Node::Record(fs.clone()),
        Node::Ext(f, xs) => Node::Ext(f, xs.clone()),
    }
}

/// Rebuild `n` with children mapped by `f`.
fn map_children(n: &Node, mut f: impl FnMut(NodeId) -> NodeId) -> Node {
    match n {
        Node::Lit(_) | Node::Var(_) => clone_node(n),
        Node::Not(a) => Node::Not(f(*a)),
        Node::Neg(a) => Node::Neg(f(*a)),
        Node::IsEmpty(a) => Node::IsEmpty(f(*a)),
        Node::And(a, b) => Node::And(f(*a), f(*b)),
        Node::Or(a, b) => Node::Or(f(*a), f(*b)),
        Node::If(a, b, c) => Node::If(f(*a), f(*b), f(*c)),
        Node::NotEq(a, b) => Node::NotEq(f(*a), f(*b)),
        Node::Bin(op, a, b) => Node::Bin(*op, f(*a), f(*b)),
        Node::GetAttr(a, s) => Node::GetAttr(f(*a), *s),
        Node::HasAttr(a, s) => Node::HasAttr(f(*a), *s),
        Node::Like(a, p) => Node::Like(f(*a), p.clone()),
        Node::Is(a, t) => Node::Is(f(*a), *t),
        Node::Set(xs) => Node::Set(xs.iter().map(|x| f(*x)).collect()),
        Node::Record(fs) => Node::Record(fs.iter().map(|(k, x)| (*k, f(*x))).collect()),
        Node::Ext(fun, xs) => Node::Ext(fun, xs.iter().map(|x| f(*x)).collect()),
    }
}

struct Folder<'a> {
    nodes: Vec<Node>,
    /// Whether each base node's subtree reads `action`.
    reads_action: Vec<bool>,
    store: &'a EntityStore,
    interner: &'a Interner,
    locals: Locals,
    empty: Value,
    action: Euid,
    memo: FxHashMap<NodeId, NodeId>,
}

impl Folder<'_> {
    fn lit(&self, n: NodeId) -> Option<&Value> {
        match &self.nodes[n as usize] {
            Node::Lit(v) => Some(v),
            _ => None,
        }
    }

    fn push(&mut self, n: Node) -> NodeId {
        self.nodes.push(n);
        (self.nodes.len() - 1) as NodeId
    }

    fn rewrite(&mut self, n: NodeId) -> NodeId {
        if !self.reads_action[n as usize] {
            return n;
        }
        if let Some(&m) = self.memo.get(&n) {
            return m;
        }
        // Trees are at most `lower::MAX_EXPR_DEPTH` deep; grow the stack if needed.
        let out = stacker::maybe_grow(64 << 10, 1 << 20, || self.rewrite_node(n));
        self.memo.insert(n, out);
        out
    }

    fn rewrite_node(&mut self, n: NodeId) -> NodeId {
        let base = clone_node(&self.nodes[n as usize]);
        if let Node::Var(Var::Action) = base {
            return self.push(Node::Lit(Value::Entity(self.action)));
        }
        let node = map_children(&base, |c| self.rewrite(c));
        let b = |v: bool| Some(Node::Lit(Value::Bool(v)));
        // Short-circuits decided by a literal left operand.
        let short = match &node {
            Node::And(a, r) => match self.lit(*a) {
                Some(Value::Bool(false)) => b(false),
                Some(Value::Bool(true)) if yields_bool(&self.nodes[*r as usize]) => {
                    return *r;
                }
                _ => None,
            },
            Node::Or(a, r) => match self.lit(*a) {
                Some(Value::Bool(true)) => b(true),
                Some(Value::Bool(false)) if yields_bool(&self.nodes[*r as usize]) => {
                    return *r;
                }
                _ => None,
            },
            Node::If(c, t, f) => match self.lit(*c) {
                Some(Value::Bool(true)) => return *t,
                Some(Value::Bool(false)) => return *f,
                _ => None,
            },
            _ => None,
        };
        if let Some(s) = short {
            return self.push(s);
        }
        let mut all_lit = true;
        node.for_each_child(|c| all_lit &= matches!(self.nodes[c as usize], Node::Lit(_)));
        let id = self.push(node);
        if all_lit {
            let ev = Evaluator::new(
                &self.nodes,
                self.store,
                self.interner,
                &self.locals,
                self.action,
                self.action,
                self.action,
                &self.empty,
            );
            if let Ok(v) = ev.eval(id) {
                let v = v.into_owned();
                self.nodes.pop();
                return self.push(Node::Lit(v));
            }
        }
        id
    }
}

/// Whether `action` (with its ancestors) satisfies a policy's action scope.
fn action_applies(scope: &ActionScope, a: &Euid, anc: Option<&FxHashSet<Euid>>) -> bool {
    let within = |t: &Euid| a == t || anc.is_some_and(|s| s.contains(t));
    match scope {
        ActionScope::Any => true,
        ActionScope::Eq(t) => a == t,
        ActionScope::In(list) => list.iter().any(within),
    }
}

/// Build the per-action plans for every action the store or the policies name.
pub fn build(
    base: &[Node],
    policies: &[CompiledPolicy],
    named: &[Euid],
    store: &EntityStore,
    interner: &Interner,
) -> Plans {
    let mut actions: Vec<Euid> = store
        .action_uids()
        .chain(named.iter().copied())
        .filter(|u| interner.get(u.ty).is_some_and(is_action_type))
        .collect();
    actions.sort();
    actions.dedup();
    let mut reads_action = vec![false; base.len()];
    for (i, n) in base.iter().enumerate() {
        let mut r = matches!(n, Node::Var(Var::Action));
        n.for_each_child(|c| r |= reads_action[c as usize]);
        reads_action[i] = r;
    }
    let mut f = Folder {
        nodes: base.iter().map(clone_node).collect(),
        reads_action,
        store,
        interner,
        locals: Locals::new(interner),
        empty: Value::Record(Default::default()),
        action: Euid { ty: 0, id: 0 },
        memo: FxHashMap::default(),
    };
    let mut by_action = FxHashMap::default();
    // Forbids first, so buckets fill in evaluation order.
    let order: Vec<usize> = (0..policies.len())
        .filter(|i| policies[*i].effect == Effect::Forbid)
        .chain((0..policies.len()).filter(|i| policies[*i].effect == Effect::Permit))
        .collect();
    for a in actions {
        f.action = a;
        f.memo.clear();
        let anc = store.ancestors(&a);
        let mut plan = ActionPlan::default();
        for &i in &order {
            let p = &policies[i];
            if !action_applies(&p.action, &a, anc) {
                continue;
            }
            let Some(clauses) = specialise_clauses(&mut f, &p.clauses) else {
                continue;
            };
            let cand = Cand {
                policy: i as u32,
                principal: p.principal,
                resource: p.resource,
                clauses,
            };
            match p.principal {
                EntityScope::Eq(u) => plan.eq.entry(u).or_default().push(cand, p.effect),
                EntityScope::In(u) | EntityScope::IsIn(_, u) => {
                    plan.within.entry(u).or_default().push(cand, p.effect)
                }
                EntityScope::Any | EntityScope::Is(_) => plan.rest.push(cand, p.effect),
            }
        }
        by_action.insert(a, plan);
    }
    Plans {
        nodes: f.nodes,
        by_action,
    }
}

/// The clauses left once `action` is known, or None if the policy can never hold.
fn specialise_clauses(f: &mut Folder<'_>, clauses: &[Clause]) -> Option<Box<[Clause]>> {
    let mut out = Vec::with_capacity(clauses.len());
    for c in clauses {
        let mut node = f.rewrite(c.node);
        // At a clause root any value must be a boolean anyway (the clause's own check
        // raises the same type error), so `true && x` and `false || x` are `x` here.
        while let Node::And(a, r) | Node::Or(a, r) = &f.nodes[node as usize] {
            let neutral = matches!(f.nodes[node as usize], Node::And(..));
            match f.lit(*a) {
                Some(Value::Bool(v)) if *v == neutral => node = *r,
                _ => break,
            }
        }
        match f.lit(node) {
            // Satisfied: drop the clause.
            Some(Value::Bool(v)) if *v != c.unless => {}
            // Never satisfied, and nothing before it can error: drop the policy.
            Some(Value::Bool(_)) if out.is_empty() => return None,
            _ => out.push(Clause {
                node,
                unless: c.unless,
            }),
        }
    }
    Some(out.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile;

    fn plans(policies: &str, entities: &str) -> (Plans, Interner, compile::CompiledSet) {
        let mut interner = Interner::default();
        let pset = compile::parse(policies).unwrap();
        let set = compile::compile(policies, &pset, &mut interner).unwrap();
        let mut store = EntityStore::default();
        let parsed = crate::entities::parse_entities(entities, None, &mut interner).unwrap();
        store.apply(parsed, &[], &interner).unwrap();
        store.set_named(&interner, &set.named_uids);
        let p = build(
            &set.nodes,
            &set.policies,
            &set.named_uids,
            &store,
            &interner,
        );
        (p, interner, set)
    }

    fn uid(i: &Interner, ty: &str, id: &str) -> Euid {
        Euid {
            ty: i.lookup(ty).unwrap(),
            id: i.lookup(id).unwrap(),
        }
    }

    const ENTS: &str = r#"[
        {"uid": {"type": "Action", "id": "g"}, "attrs": {}, "parents": []},
        {"uid": {"type": "Action", "id": "send"}, "attrs": {"egress": true, "risk": 3},
         "parents": [{"type": "Action", "id": "g"}]},
        {"uid": {"type": "Action", "id": "read"}, "attrs": {"egress": false, "risk": 0},
         "parents": []}
    ]"#;

    #[test]
    fn guardrails_fold_away_for_actions_they_cannot_hit() {
        let text = r#"
            forbid (principal, action, resource) when { action.egress && context.bad };
            forbid (principal, action, resource) when { action.risk == 3 && !context.mfa };
            permit (principal in Role::"r", action in Action::"g", resource) when { true };
            permit (principal == User::"u", action == Action::"read", resource);
        "#;
        let (p, i, _) = plans(text, ENTS);
        let send = &p.by_action[&uid(&i, "Action", "send")];
        let read = &p.by_action[&uid(&i, "Action", "read")];
        // `send` keeps both guardrails, each reduced to its context test.
        assert_eq!(send.rest.forbids.len(), 2);
        for c in &send.rest.forbids {
            assert_eq!(c.clauses.len(), 1);
            assert!(!matches!(
                p.nodes[c.clauses[0].node as usize],
                Node::And(..)
            ));
        }
        assert_eq!(send.within[&uid(&i, "Role", "r")].permits.len(), 1);
        // The always-true clause is gone.
        assert!(send.within[&uid(&i, "Role", "r")].permits[0]
            .clauses
            .is_empty());
        // `read` drops both guardrails and the group permit.
        assert!(read.rest.forbids.is_empty());
        assert!(read.within.is_empty());
        assert_eq!(read.eq[&uid(&i, "User", "u")].permits.len(), 1);
    }

    #[test]
    fn errors_are_kept_where_cedar_would_raise_them() {
        let text = r#"
            forbid (principal, action, resource) when { action.missing && context.x };
            forbid (principal, action, resource) when { context.y } when { action.egress == false };
            forbid (principal, action, resource) when { true && action.risk };
        "#;
        let (p, i, _) = plans(text, ENTS);
        let send = &p.by_action[&uid(&i, "Action", "send")];
        // policy0: `action.missing` errors at load: kept, evaluated at request time.
        // policy1: its second clause is false, but the first may error first: kept.
        // policy2: `true && <long>` is a type error at request time: kept.
        let kept: Vec<u32> = send.rest.forbids.iter().map(|c| c.policy).collect();
        assert_eq!(kept, vec![0, 1, 2]);
    }
}

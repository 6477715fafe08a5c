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
    ActionScope, BinOp, Clause, CmpLong, CompiledPolicy, Effect, EntityScope, Node, NodeId, Scalar,
    Var,
};
use crate::entities::EntityStore;
use crate::eval::{Evaluator, Locals};
use crate::value::{Euid, Interner, Sym, Value};

/// One policy as it applies to one action.
#[derive(Debug)]
pub struct Cand {
    pub policy: u32,
    /// What of the principal scope is left to check once the candidate's
    /// bucket was reached: `Any` or a type test.
    pub principal: EntityScope,
    pub resource: EntityScope,
    /// Remaining clauses, rewritten into `Plans::nodes`. Inline: nearly every
    /// candidate keeps one or two, and a walk over a bucket then reads each
    /// candidate's one cache line instead of chasing a heap pointer per candidate
    /// (with 10,000 policies, most of the extra cache misses per decision).
    pub clauses: Clauses,
    /// Some clause can never be satisfied (`x && false` is kept so that `x` may
    /// still error): the policy can error but never apply, so a decision that
    /// ignores errors (fast mode, errors skipped) need not evaluate it.
    pub never: bool,
}

pub type Clauses = smallvec::SmallVec<[Clause; 2]>;

/// Candidates under one principal key: forbids first, then permits, in one list
/// (one allocation, walked front to back: with 10,000 policies, two lists per
/// bucket were two cache misses where one does).
#[derive(Debug, Default)]
pub struct Bucket {
    cands: Vec<Cand>,
    forbids: usize,
}

impl Bucket {
    pub(crate) fn push(&mut self, c: Cand, e: Effect) {
        match e {
            Effect::Forbid => {
                self.cands.insert(self.forbids, c);
                self.forbids += 1;
            }
            Effect::Permit => self.cands.push(c),
        }
    }

    #[inline]
    pub fn part(&self, e: Effect) -> &[Cand] {
        match e {
            Effect::Forbid => &self.cands[..self.forbids],
            Effect::Permit => &self.cands[self.forbids..],
        }
    }

    #[inline]
    pub fn forbids(&self) -> &[Cand] {
        self.part(Effect::Forbid)
    }

    #[inline]
    pub fn permits(&self) -> &[Cand] {
        self.part(Effect::Permit)
    }

    /// Every candidate, forbids first.
    #[inline]
    pub fn all(&self) -> &[Cand] {
        &self.cands
    }

    pub(crate) fn all_mut(&mut self) -> &mut [Cand] {
        &mut self.cands
    }

    pub fn is_empty(&self) -> bool {
        self.cands.is_empty()
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
    /// The context attributes this action's candidates read (`context.k`,
    /// `context has k`), sorted by symbol, with their text: a request for this
    /// action needs only these converted.
    pub ctx_keys: Vec<(Sym, Box<str>)>,
    /// Whether some candidate uses `context` as a whole value, so the request
    /// must carry all of it.
    pub whole_context: bool,
    /// Room for the bindings to keep objects made once per plan (the Python
    /// key strings for `ctx_keys`), so the core needs no knowledge of them.
    pub binding_cache: std::sync::OnceLock<Box<dyn std::any::Any + Send + Sync>>,
}

#[derive(Debug, Default)]
pub struct Plans {
    /// The policy set's nodes followed by the rewritten ones.
    pub nodes: Vec<Node>,
    pub by_action: FxHashMap<Euid, ActionPlan>,
    /// Candidates the same for every action (unscoped action, conditions that do not
    /// read `action`), filed once and walked beside the request's action plan: a
    /// per-agent guardrail repeated into each of 200 action plans was most of a
    /// 100,000-policy load and its memory. Each action plan's `ctx_keys` and
    /// `whole_context` include what these read.
    pub shared: ActionPlan,
}

impl ActionPlan {
    /// Whether it has no candidates at all.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty() && self.eq.is_empty() && self.within.is_empty()
    }
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
        | Node::Is(..)
        | Node::CtxHas(_)
        | Node::EqLit(..)
        | Node::InLitSet(..)
        | Node::ContainsLit(..)
        | Node::CmpLong(..) => true,
        Node::Bin(op, ..) => matches!(
            op,
            BinOp::Eq
                | BinOp::Less
                | BinOp::LessEq
                | BinOp::Greater
                | BinOp::GreaterEq
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
        Node::CtxAttr(k) => Node::CtxAttr(*k),
        Node::CtxHas(k) => Node::CtxHas(*k),
        Node::PrincipalAttr(k) => Node::PrincipalAttr(*k),
        Node::ResourceAttr(k) => Node::ResourceAttr(*k),
        Node::EqLit(a, v, neg) => Node::EqLit(*a, v.clone(), *neg),
        Node::InLitSet(set, a) => Node::InLitSet(set.clone(), *a),
        Node::ContainsLit(a, v) => Node::ContainsLit(*a, *v),
        Node::CmpLong(a, c, n) => Node::CmpLong(*a, *c, *n),
    }
}

/// Rebuild `n` with children mapped by `f`.
pub(crate) fn map_children(n: &Node, mut f: impl FnMut(NodeId) -> NodeId) -> Node {
    match n {
        Node::Lit(_)
        | Node::Var(_)
        | Node::CtxAttr(_)
        | Node::CtxHas(_)
        | Node::PrincipalAttr(_)
        | Node::ResourceAttr(_) => clone_node(n),
        Node::EqLit(a, v, neg) => Node::EqLit(f(*a), v.clone(), *neg),
        Node::InLitSet(set, a) => Node::InLitSet(set.clone(), f(*a)),
        Node::ContainsLit(a, v) => Node::ContainsLit(f(*a), *v),
        Node::CmpLong(a, c, k) => Node::CmpLong(f(*a), *c, *k),
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
            Node::And(a, r) => match (self.lit(*a), self.lit(*r)) {
                (Some(Value::Bool(false)), _) => b(false),
                (Some(Value::Bool(true)), _) if yields_bool(&self.nodes[*r as usize]) => {
                    return *r;
                }
                // `x && true` is `x` when x is boolean-valued (its errors stay).
                (_, Some(Value::Bool(true))) if yields_bool(&self.nodes[*a as usize]) => {
                    return *a;
                }
                _ => None,
            },
            Node::Or(a, r) => match (self.lit(*a), self.lit(*r)) {
                (Some(Value::Bool(true)), _) => b(true),
                (Some(Value::Bool(false)), _) if yields_bool(&self.nodes[*r as usize]) => {
                    return *r;
                }
                (_, Some(Value::Bool(false))) if yields_bool(&self.nodes[*a as usize]) => {
                    return *a;
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

/// Policies the same for every action go to the shared plan once repeating them
/// into each action's would make more candidates than this.
const SHARE_ABOVE_COPIES: usize = 1 << 16;

/// Build the per-action plans for every action the store or the policies name.
pub fn build(
    base: &[Node],
    policies: &[CompiledPolicy],
    named: &[Euid],
    store: &EntityStore,
    interner: &Interner,
) -> Plans {
    build_sharing(base, policies, named, store, interner, SHARE_ABOVE_COPIES)
}

/// `build`, with the policies the same for every action shared once repeating
/// them would make more than `share_above` candidates.
fn build_sharing(
    base: &[Node],
    policies: &[CompiledPolicy],
    named: &[Euid],
    store: &EntityStore,
    interner: &Interner,
    share_above: usize,
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
    let mut nodes: Vec<Node> = base.iter().map(clone_node).collect();
    fuse_var_reads(&mut nodes);
    let mut f = Folder {
        nodes,
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
    let same_for_all = |p: &CompiledPolicy, f: &Folder<'_>| {
        matches!(p.action, ActionScope::Any)
            && p.clauses.iter().all(|c| !f.reads_action[c.node as usize])
    };
    let mut shared = ActionPlan::default();
    let (mut common, mut per_action): (Vec<usize>, Vec<usize>) =
        order.iter().partition(|&&i| same_for_all(&policies[i], &f));
    // A few such policies are cheaper repeated (one walk per request, not two:
    // +2% instructions per decision on the realistic workload when shared).
    if common.len().saturating_mul(actions.len()) <= share_above {
        common.clear();
        per_action = order;
    }
    for i in common {
        file(&mut shared, &mut f, i, &policies[i]);
    }
    for a in actions {
        f.action = a;
        f.memo.clear();
        let anc = store.ancestors(&a);
        let mut plan = ActionPlan::default();
        for &i in &per_action {
            let p = &policies[i];
            if action_applies(&p.action, &a, anc) {
                file(&mut plan, &mut f, i, p);
            }
        }
        by_action.insert(a, plan);
    }
    let mut nodes = f.nodes;
    fuse_literals(&mut nodes);
    // Actions in order, so a group's tools (usually named alike) sit together.
    let mut plans: Vec<(&Euid, &mut ActionPlan)> = by_action.iter_mut().collect();
    plans.sort_unstable_by_key(|(a, _)| **a);
    let nodes = super::layout::relayout(
        nodes,
        std::iter::once(&mut shared).chain(plans.into_iter().map(|(_, p)| p)),
    );
    let (shared_keys, shared_whole) = context_use(&nodes, &shared);
    for plan in by_action.values_mut() {
        let (mut keys, whole) = context_use(&nodes, plan);
        keys.extend(&shared_keys);
        keys.sort_unstable();
        keys.dedup();
        plan.ctx_keys = keys
            .into_iter()
            .map(|k| (k, interner.get(k).unwrap_or("").into()))
            .collect();
        plan.whole_context = whole || shared_whole;
    }
    Plans {
        nodes,
        by_action,
        shared,
    }
}

/// Specialise policy `i` for the folder's action and file it in `plan` under its
/// principal scope (dropped if it can never hold).
fn file(plan: &mut ActionPlan, f: &mut Folder<'_>, i: usize, p: &CompiledPolicy) {
    let Some(clauses) = specialise_clauses(f, &p.clauses) else {
        return;
    };
    let never = clauses.iter().any(|c| unsatisfiable(&f.nodes, c));
    // The bucket a candidate is filed under already establishes `principal
    // == U` / `principal in U`; only a type test can remain to check.
    let residual = match p.principal {
        EntityScope::IsIn(t, _) | EntityScope::Is(t) => EntityScope::Is(t),
        EntityScope::Any | EntityScope::Eq(_) | EntityScope::In(_) => EntityScope::Any,
    };
    let cand = Cand {
        policy: i as u32,
        principal: residual,
        resource: p.resource,
        clauses,
        never,
    };
    match p.principal {
        EntityScope::Eq(u) => plan.eq.entry(u).or_default().push(cand, p.effect),
        EntityScope::In(u) | EntityScope::IsIn(_, u) => {
            plan.within.entry(u).or_default().push(cand, p.effect)
        }
        EntityScope::Any | EntityScope::Is(_) => plan.rest.push(cand, p.effect),
    }
}

/// Whether a clause can never be satisfied, whatever the request: its body can
/// only be the value that fails it, or an error.
fn unsatisfiable(nodes: &[Node], c: &Clause) -> bool {
    // A budget bounds the walk (and its recursion) on any tree; past it, the
    // answer is the safe "may be satisfied".
    let mut budget = 64;
    never(nodes, c.node, !c.unless, &mut budget)
}

/// Whether node `n` can never evaluate to `want`.
fn never(nodes: &[Node], n: NodeId, want: bool, budget: &mut u32) -> bool {
    if *budget == 0 {
        return false;
    }
    *budget -= 1;
    match &nodes[n as usize] {
        Node::Lit(Value::Bool(b)) => *b != want,
        Node::Not(a) => never(nodes, *a, !want, budget),
        // `a && b` is true only if both are; false if either is (or an error).
        Node::And(a, b) if want => never(nodes, *a, true, budget) || never(nodes, *b, true, budget),
        Node::And(a, b) => never(nodes, *a, false, budget) && never(nodes, *b, false, budget),
        Node::Or(a, b) if want => never(nodes, *a, true, budget) && never(nodes, *b, true, budget),
        Node::Or(a, b) => never(nodes, *a, false, budget) || never(nodes, *b, false, budget),
        _ => false,
    }
}

/// `context.k`, `context has k`, `principal.k`, `resource.k` as single nodes.
/// In place: ids stay valid, and only the variable read is replaced.
fn fuse_var_reads(nodes: &mut [Node]) {
    for i in 0..nodes.len() {
        let fused = match &nodes[i] {
            Node::GetAttr(a, k) => match nodes[*a as usize] {
                Node::Var(Var::Context) => Node::CtxAttr(*k),
                Node::Var(Var::Principal) => Node::PrincipalAttr(*k),
                Node::Var(Var::Resource) => Node::ResourceAttr(*k),
                _ => continue,
            },
            Node::HasAttr(a, k) => match nodes[*a as usize] {
                Node::Var(Var::Context) => Node::CtxHas(*k),
                _ => continue,
            },
            _ => continue,
        };
        nodes[i] = fused;
    }
}

/// A comparison operator as a fused test of its non-literal operand: with the
/// literal on the right (`x < n`), and on the left (`n < x` is `x > n`).
fn cmp_forms(op: BinOp) -> Option<(CmpLong, CmpLong)> {
    match op {
        BinOp::Less => Some((CmpLong::Lt, CmpLong::Gt)),
        BinOp::LessEq => Some((CmpLong::Le, CmpLong::Ge)),
        BinOp::Greater => Some((CmpLong::Gt, CmpLong::Lt)),
        BinOp::GreaterEq => Some((CmpLong::Ge, CmpLong::Le)),
        _ => None,
    }
}

/// Comparisons with a literal operand as single nodes, and constant sets of
/// scalars as hash sets. Exact: each fused node evaluates its one non-literal
/// operand exactly where Cedar would, and falls back to the general operation
/// (same result, same error) whenever that operand is not of the fast kind.
fn fuse_literals(nodes: &mut [Node]) {
    let lit = |nodes: &[Node], n: NodeId| match &nodes[n as usize] {
        Node::Lit(v) => Some(v.clone()),
        _ => None,
    };
    for i in 0..nodes.len() {
        let fused = match &nodes[i] {
            Node::Bin(BinOp::Eq, a, b) | Node::NotEq(a, b) => {
                let neg = matches!(nodes[i], Node::NotEq(..));
                match (lit(nodes, *a), lit(nodes, *b)) {
                    (_, Some(v)) => Node::EqLit(*a, v, neg),
                    (Some(v), None) => Node::EqLit(*b, v, neg),
                    _ => continue,
                }
            }
            Node::Bin(op, a, b) if cmp_forms(*op).is_some() => {
                // `x op n` keeps its direction; `n op x` is read from `x`'s side.
                let Some((as_is, flipped)) = cmp_forms(*op) else {
                    continue;
                };
                match (lit(nodes, *a), lit(nodes, *b)) {
                    (_, Some(Value::Long(n))) => Node::CmpLong(*a, as_is, n),
                    (Some(Value::Long(n)), None) => Node::CmpLong(*b, flipped, n),
                    _ => continue,
                }
            }
            Node::Bin(BinOp::Contains, a, b) => match (&nodes[*a as usize], &nodes[*b as usize]) {
                (Node::Lit(Value::Set(items)), _) => {
                    let set: Option<FxHashSet<Scalar>> = items.iter().map(Scalar::of).collect();
                    match set {
                        Some(set) => Node::InLitSet(Box::new(set), *b),
                        None => continue,
                    }
                }
                (_, Node::Lit(v)) => match Scalar::of(v) {
                    Some(s) => Node::ContainsLit(*a, s),
                    None => continue,
                },
                _ => continue,
            },
            _ => continue,
        };
        nodes[i] = fused;
    }
}

/// The context attributes a plan's candidates read, and whether any reads the
/// whole context. Iterative: node trees can be deep.
fn context_use(nodes: &[Node], plan: &ActionPlan) -> (Vec<Sym>, bool) {
    let mut keys = Vec::new();
    let mut whole = false;
    let mut seen: FxHashSet<NodeId> = FxHashSet::default();
    let mut stack: Vec<NodeId> = Vec::new();
    let buckets = std::iter::once(&plan.rest)
        .chain(plan.eq.values())
        .chain(plan.within.values());
    for b in buckets {
        for c in b.all() {
            stack.extend(c.clauses.iter().map(|cl| cl.node));
        }
    }
    while let Some(n) = stack.pop() {
        if !seen.insert(n) {
            continue;
        }
        match &nodes[n as usize] {
            Node::CtxAttr(k) | Node::CtxHas(k) => keys.push(*k),
            Node::Var(Var::Context) => whole = true,
            other => other.for_each_child(|c| stack.push(c)),
        }
    }
    keys.sort_unstable();
    keys.dedup();
    (keys, whole)
}

/// The clauses left once `action` is known, or None if the policy can never hold.
fn specialise_clauses(f: &mut Folder<'_>, clauses: &[Clause]) -> Option<Clauses> {
    let mut out = Clauses::new();
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
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile;

    fn plans(policies: &str, entities: &str) -> (Plans, Interner, compile::CompiledSet) {
        plans_sharing(policies, entities, SHARE_ABOVE_COPIES)
    }

    fn plans_sharing(
        policies: &str,
        entities: &str,
        share_above: usize,
    ) -> (Plans, Interner, compile::CompiledSet) {
        let mut interner = Interner::default();
        let pset = compile::parse(policies).unwrap();
        let set = compile::compile(policies, &pset, &mut interner).unwrap();
        let mut store = EntityStore::default();
        let parsed = crate::entities::parse_entities(entities, None, &mut interner).unwrap();
        store.apply(parsed, &[], &interner).unwrap();
        store.set_named(&interner, &set.named_uids);
        let p = build_sharing(
            &set.nodes,
            &set.policies,
            &set.named_uids,
            &store,
            &interner,
            share_above,
        );
        (p, interner, set)
    }

    /// The context keys `a`'s plan reads, as text.
    fn ctx_key_texts(p: &Plans, i: &Interner, a: &str) -> Vec<String> {
        p.by_action[&uid(i, "Action", a)]
            .ctx_keys
            .iter()
            .map(|(_, t)| t.to_string())
            .collect()
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
        assert_eq!(send.rest.forbids().len(), 2);
        for c in send.rest.forbids() {
            assert_eq!(c.clauses.len(), 1);
            assert!(!matches!(
                p.nodes[c.clauses[0].node as usize],
                Node::And(..)
            ));
        }
        assert_eq!(send.within[&uid(&i, "Role", "r")].permits().len(), 1);
        // The always-true clause is gone.
        assert!(send.within[&uid(&i, "Role", "r")].permits()[0]
            .clauses
            .is_empty());
        // `read` drops both guardrails and the group permit.
        assert!(read.rest.forbids().is_empty());
        assert!(read.within.is_empty());
        assert_eq!(read.eq[&uid(&i, "User", "u")].permits().len(), 1);
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
        let kept: Vec<u32> = send.rest.forbids().iter().map(|c| c.policy).collect();
        assert_eq!(kept, vec![0, 1, 2]);
    }

    #[test]
    fn context_keys_are_the_ones_the_candidates_read() {
        let text = r#"
            forbid (principal, action, resource) when { action.egress && context.dest == "x" };
            permit (principal, action == Action::"read", resource) when { context has mfa };
            permit (principal, action == Action::"g", resource) when { context == {} };
        "#;
        let (p, i, _) = plans(text, ENTS);
        let keys = |a: &str| ctx_key_texts(&p, &i, a);
        // `send` is egress: the guardrail reads `dest`; `read` only its permit's key.
        assert_eq!(keys("send"), vec!["dest"]);
        assert_eq!(keys("read"), vec!["mfa"]);
        assert!(!p.by_action[&uid(&i, "Action", "read")].whole_context);
        // A policy comparing the whole context makes its action read all of it.
        assert!(p.by_action[&uid(&i, "Action", "g")].whole_context);
    }

    #[test]
    fn literal_comparisons_are_fused_and_dead_guards_marked() {
        let text = r#"
            forbid (principal, action, resource) when { resource.level > 2 && action.egress };
            forbid (principal, action, resource) when { ["a", "b"].contains(context.k) };
            permit (principal, action, resource) when { principal.tags.contains("t") };
        "#;
        let (p, i, _) = plans(text, ENTS);
        let read = &p.by_action[&uid(&i, "Action", "read")];
        let send = &p.by_action[&uid(&i, "Action", "send")];
        // `read` is not egress: `x && false` is kept (x may error) but can never apply.
        assert!(read.rest.forbids()[0].never);
        assert!(!send.rest.forbids()[0].never);
        let node = |c: &Cand| &p.nodes[c.clauses[0].node as usize];
        assert!(matches!(
            node(&send.rest.forbids()[0]),
            Node::CmpLong(_, CmpLong::Gt, 2)
        ));
        // The two that do not read `action` are repeated into each plan (too few
        // to share).
        assert!(matches!(node(&send.rest.forbids()[1]), Node::InLitSet(..)));
        assert!(matches!(
            node(&send.rest.permits()[0]),
            Node::ContainsLit(..)
        ));
        assert!(p.shared.is_empty());
    }

    #[test]
    fn policies_the_same_for_every_action_are_filed_once_and_their_keys_reach_each_plan() {
        let text = r#"
            forbid (principal == User::"u", action, resource) when { context.risk > 2 };
            forbid (principal, action, resource) when { action.egress && context.dest == "x" };
            permit (principal in Role::"r", action, resource) when { context has mfa };
            permit (principal, action == Action::"read", resource) when { context.n < 1 };
            permit (principal, action, resource) when { context == {} };
        "#;
        // Shared whatever their number (a large set's threshold, lowered).
        let (p, i, _) = plans_sharing(text, ENTS, 0);
        let user = uid(&i, "User", "u");
        let role = uid(&i, "Role", "r");
        assert_eq!(p.shared.eq[&user].forbids().len(), 1);
        assert_eq!(p.shared.within[&role].permits().len(), 1);
        assert_eq!(p.shared.rest.permits().len(), 1);
        for a in ["send", "read", "g"] {
            let plan = &p.by_action[&uid(&i, "Action", a)];
            // Not repeated into the action's own plan...
            assert!(plan.eq.is_empty() && plan.within.is_empty(), "{a}");
            // ...but what they read is read for every action.
            let keys: Vec<&str> = plan.ctx_keys.iter().map(|(_, t)| &**t).collect();
            assert!(
                keys.contains(&"risk") && keys.contains(&"mfa"),
                "{a}: {keys:?}"
            );
            assert!(plan.whole_context, "{a}");
        }
        let keys = |a: &str| ctx_key_texts(&p, &i, a);
        assert!(keys("send").contains(&"dest".to_owned()));
        assert!(!keys("read").contains(&"dest".to_owned()));
        assert!(keys("read").contains(&"n".to_owned()));
    }
}

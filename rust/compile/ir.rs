//! The compiled form of a policy set: a flat arena of typed expression nodes
//! addressed by `u32`, scope constraints folded into index keys, and one entry
//! per policy.

use cedar_policy_core::ast::ExtensionFunction;
use rustc_hash::FxHashSet;

use crate::value::{Euid, Sym, Value};

pub type NodeId = u32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Var {
    Principal,
    Action,
    Resource,
    Context,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Eq,
    Less,
    LessEq,
    /// `a > b`: `b < a`, with `a` evaluated first.
    Greater,
    /// `a >= b`: `b <= a`, with `a` evaluated first.
    GreaterEq,
    Add,
    Sub,
    Mul,
    In,
    Contains,
    ContainsAll,
    ContainsAny,
    GetTag,
    HasTag,
}

/// One segment of a `like` pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PatElem {
    Char(char),
    Wildcard,
}

#[derive(Clone, Debug)]
pub enum Node {
    Lit(Value),
    Var(Var),
    Not(NodeId),
    Neg(NodeId),
    IsEmpty(NodeId),
    And(NodeId, NodeId),
    Or(NodeId, NodeId),
    If(NodeId, NodeId, NodeId),
    /// `a != b` is `!(a == b)`; kept as one node to skip a hop.
    NotEq(NodeId, NodeId),
    Bin(BinOp, NodeId, NodeId),
    GetAttr(NodeId, Sym),
    HasAttr(NodeId, Sym),
    Like(NodeId, Box<[PatElem]>),
    Is(NodeId, Sym),
    Set(Box<[NodeId]>),
    Record(Box<[(Sym, NodeId)]>),
    /// An extension function call; constant calls are folded at compile time.
    Ext(&'static ExtensionFunction, Box<[NodeId]>),
    // Fused forms, made only in the per-action plans (`special::fuse`): one
    // dispatch instead of two or three for the shapes agent policies repeat.
    /// `context.k`, read from the request's context fields.
    CtxAttr(Sym),
    /// `context has k`.
    CtxHas(Sym),
    /// `principal.k`.
    PrincipalAttr(Sym),
    /// `resource.k`.
    ResourceAttr(Sym),
    /// `x == lit` (either side), or `x != lit` when the flag is set.
    EqLit(NodeId, Value, bool),
    /// `[scalar literals].contains(x)`, as a hash set.
    InLitSet(Box<FxHashSet<Scalar>>, NodeId),
    /// `x.contains(lit)` with a scalar literal.
    ContainsLit(NodeId, Scalar),
    /// `x < n`, `x <= n`, `n < x`, `n <= x` with `n` a literal long.
    CmpLong(NodeId, CmpLong, i64),
}

/// A literal that hashes by value: what a constant set is made of. Cedar
/// equality on these is structural equality (no two kinds are ever equal).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scalar {
    Bool(bool),
    Long(i64),
    Str(Sym),
    Entity(Euid),
}

impl Scalar {
    #[inline]
    pub fn of(v: &Value) -> Option<Scalar> {
        match v {
            Value::Bool(b) => Some(Scalar::Bool(*b)),
            Value::Long(i) => Some(Scalar::Long(*i)),
            Value::Str(s) => Some(Scalar::Str(*s)),
            Value::Entity(e) => Some(Scalar::Entity(*e)),
            _ => None,
        }
    }

    #[inline]
    pub fn value(self) -> Value {
        match self {
            Scalar::Bool(b) => Value::Bool(b),
            Scalar::Long(i) => Value::Long(i),
            Scalar::Str(s) => Value::Str(s),
            Scalar::Entity(e) => Value::Entity(e),
        }
    }

    /// Whether `items`, sorted by `canonical_cmp`, holds this scalar. A string
    /// (what sets of names, groups and hosts hold) is searched with its kind
    /// settled once, outside the search: each probe is then one compare of symbols.
    #[inline]
    pub fn in_sorted(self, items: &[Value]) -> bool {
        match self {
            Scalar::Str(s) => items
                .binary_search_by(|v| match v {
                    Value::Str(x) => x.cmp(&s),
                    other => crate::value::rank(other).cmp(&crate::value::rank(&Value::Str(s))),
                })
                .is_ok(),
            _ => items.binary_search_by(|v| self.cmp_from(v)).is_ok(),
        }
    }

    /// `canonical_cmp(v, &self.value())`, without building the value: the
    /// order sets are kept in, so a binary search can use it.
    #[inline]
    pub fn cmp_from(&self, v: &Value) -> std::cmp::Ordering {
        match (v, self) {
            (Value::Bool(x), Scalar::Bool(y)) => x.cmp(y),
            (Value::Long(x), Scalar::Long(y)) => x.cmp(y),
            (Value::Str(x), Scalar::Str(y)) => x.cmp(y),
            (Value::Entity(x), Scalar::Entity(y)) => x.cmp(y),
            // Kinds differ: `canonical_cmp` orders by kind first. Kept this small so
            // the binary search inlines it (a call per probe was a third of it).
            _ => crate::value::rank(v).cmp(&crate::value::rank(&self.value())),
        }
    }
}

/// Which comparison `Node::CmpLong` makes, `x` being the evaluated operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpLong {
    /// `x < n`
    Lt,
    /// `x <= n`
    Le,
    /// `n < x`
    Gt,
    /// `n <= x`
    Ge,
}

impl Node {
    /// Call `f` on each direct child.
    pub fn for_each_child(&self, mut f: impl FnMut(NodeId)) {
        match self {
            Node::Lit(_)
            | Node::Var(_)
            | Node::CtxAttr(_)
            | Node::CtxHas(_)
            | Node::PrincipalAttr(_)
            | Node::ResourceAttr(_) => {}
            Node::EqLit(a, ..)
            | Node::InLitSet(_, a)
            | Node::ContainsLit(a, _)
            | Node::CmpLong(a, ..) => f(*a),
            Node::Not(a)
            | Node::Neg(a)
            | Node::IsEmpty(a)
            | Node::GetAttr(a, _)
            | Node::HasAttr(a, _)
            | Node::Like(a, _)
            | Node::Is(a, _) => f(*a),
            Node::And(a, b) | Node::Or(a, b) | Node::NotEq(a, b) | Node::Bin(_, a, b) => {
                f(*a);
                f(*b)
            }
            Node::If(a, b, c) => {
                f(*a);
                f(*b);
                f(*c)
            }
            Node::Set(items) | Node::Ext(_, items) => items.iter().for_each(|i| f(*i)),
            Node::Record(fields) => fields.iter().for_each(|(_, i)| f(*i)),
        }
    }
}

/// Height of every node's subtree (a leaf is 1). Children are always pushed before
/// their parent, so one forward pass suffices: no recursion on input-shaped trees.
pub fn heights(nodes: &[Node]) -> Vec<u32> {
    let mut h = vec![0u32; nodes.len()];
    for (i, n) in nodes.iter().enumerate() {
        let mut m = 0;
        n.for_each_child(|c| m = m.max(h[c as usize]));
        h[i] = m + 1;
    }
    h
}

/// A scope constraint on the principal or the resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntityScope {
    Any,
    Eq(Euid),
    In(Euid),
    Is(Sym),
    IsIn(Sym, Euid),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ActionScope {
    Any,
    Eq(Euid),
    In(Box<[Euid]>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    Permit,
    Forbid,
}

/// A `when` (must be true) or `unless` (must be false) clause.
#[derive(Clone, Copy, Debug)]
pub struct Clause {
    pub node: NodeId,
    pub unless: bool,
}

#[derive(Clone, Debug)]
pub struct CompiledPolicy {
    pub id: String,
    pub effect: Effect,
    pub principal: EntityScope,
    pub action: ActionScope,
    pub resource: EntityScope,
    pub clauses: Box<[Clause]>,
    /// `@obligation("a, b")`: what must happen before this permit may take effect.
    pub obligations: Vec<String>,
    /// All annotations, kept for the layers above (`@id`, explanations).
    pub annotations: Vec<(String, String)>,
}

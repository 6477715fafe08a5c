//! The compiled form of a policy set: a flat arena of typed expression nodes
//! addressed by `u32`, scope constraints folded into index keys, and one entry
//! per policy.

use cedar_policy_core::ast::ExtensionFunction;

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

#[derive(Debug)]
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

#[derive(Debug)]
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

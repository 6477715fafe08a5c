//! The evaluator: walks the flat IR with Cedar's exact semantics.
//!
//! Values are borrowed from the snapshot (policy literals, entity attributes) or
//! the request (context) wherever possible, so the common path allocates
//! nothing. Any error makes the enclosing policy "errored", exactly as in Cedar;
//! which error it was only matters for the message, rendered lazily.

pub mod ext;
pub mod like;
pub mod stack;

use std::borrow::Cow;

use smallvec::SmallVec;
use smol_str::SmolStr;

use crate::compile::ir::{BinOp, CmpLong, Node, NodeId, Scalar, Var};
use crate::entities::{EntityData, EntityStore};
use crate::value::{value_eq, Euid, Interner, Sym, Value};

/// Why an expression failed. Rendering to text happens only when asked.
#[derive(Clone, Debug)]
pub enum EvalErr {
    Type {
        expected: &'static str,
        got: &'static str,
    },
    Overflow,
    NoEntity(Euid),
    NoAttr(Sym),
    NoTag(Sym),
    Ext(String),
}

pub type EResult<'a> = Result<Cow<'a, Value>, EvalErr>;

/// An error not kept: `Evaluator::holds` reports only that the expression failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failed;

impl From<EvalErr> for Failed {
    #[inline(always)]
    fn from(_: EvalErr) -> Self {
        Failed
    }
}

/// Strings first seen in this request, numbered above the snapshot's interner.
#[derive(Default, Debug, Clone)]
pub struct Locals {
    pub base: u32,
    /// Kept inline (short strings in place, the first two without a list): a
    /// request's few unknown strings cost no allocation.
    pub strs: SmallVec<[SmolStr; 2]>,
}

impl Locals {
    pub fn new(interner: &Interner) -> Self {
        Locals {
            base: interner.len() as u32,
            strs: SmallVec::new(),
        }
    }

    /// Whether `id` is a symbol of the snapshot these locals extend (not a local one,
    /// nor one interned after the snapshot was taken).
    #[inline]
    pub fn from_snapshot(&self, id: Sym) -> bool {
        id < self.base
    }

    pub fn sym(&mut self, interner: &Interner, s: &str) -> Sym {
        match interner.lookup(s) {
            Some(id) => id,
            None => self.local(s),
        }
    }

    /// The symbol of `s`, known not to be in the snapshot's interner.
    pub fn local(&mut self, s: &str) -> Sym {
        if let Some(i) = self.strs.iter().position(|x| x == s) {
            return self.base + i as u32;
        }
        self.strs.push(SmolStr::new(s));
        self.base + (self.strs.len() - 1) as u32
    }

    pub fn resolve<'s>(&'s self, interner: &'s Interner, id: Sym) -> Option<&'s str> {
        if id < self.base {
            interner.get(id)
        } else {
            self.strs.get((id - self.base) as usize).map(|s| s.as_str())
        }
    }
}

pub struct Evaluator<'a> {
    pub nodes: &'a [Node],
    pub store: &'a EntityStore,
    pub interner: &'a Interner,
    pub locals: &'a Locals,
    pub principal: Euid,
    pub action: Euid,
    pub resource: Euid,
    pub context: &'a Value,
    /// The context's fields, sorted by key: all of them, or (for a request
    /// converted for one action's plan) only the ones that plan reads.
    ctx_fields: &'a [(Sym, Value)],
    /// The principal's and resource's entries, looked up once per request.
    principal_data: Option<&'a EntityData>,
    resource_data: Option<&'a EntityData>,
}

#[inline]
fn type_err<T>(expected: &'static str, got: &Value) -> Result<T, EvalErr> {
    Err(EvalErr::Type {
        expected,
        got: got.type_name(),
    })
}

#[inline]
fn as_bool(v: &Value) -> Result<bool, EvalErr> {
    match v {
        Value::Bool(b) => Ok(*b),
        other => type_err("bool", other),
    }
}

#[inline]
fn as_long(v: &Value) -> Result<i64, EvalErr> {
    match v {
        Value::Long(i) => Ok(*i),
        other => type_err("long", other),
    }
}

impl<'a> Evaluator<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        nodes: &'a [Node],
        store: &'a EntityStore,
        interner: &'a Interner,
        locals: &'a Locals,
        principal: Euid,
        action: Euid,
        resource: Euid,
        context: &'a Value,
    ) -> Self {
        Self::with_data(
            nodes,
            store,
            interner,
            locals,
            (principal, store.get(&principal)),
            action,
            (resource, store.get(&resource)),
            context,
        )
    }

    /// As `new`, with the principal's and resource's entries already looked up.
    #[allow(clippy::too_many_arguments)]
    pub fn with_data(
        nodes: &'a [Node],
        store: &'a EntityStore,
        interner: &'a Interner,
        locals: &'a Locals,
        (principal, principal_data): (Euid, Option<&'a EntityData>),
        action: Euid,
        (resource, resource_data): (Euid, Option<&'a EntityData>),
        context: &'a Value,
    ) -> Self {
        let ctx_fields: &'a [(Sym, Value)] = match context {
            Value::Record(r) => &r.fields,
            _ => &[],
        };
        Evaluator {
            nodes,
            store,
            interner,
            locals,
            principal,
            action,
            resource,
            context,
            ctx_fields,
            principal_data,
            resource_data,
        }
    }

    /// Read context attributes from `fields` (sorted by key) instead of `context`,
    /// which then stands only for uses of the whole context.
    pub fn with_fields(mut self, fields: &'a [(Sym, Value)]) -> Self {
        self.ctx_fields = fields;
        self
    }

    #[inline]
    fn ctx_get(&self, k: Sym) -> Option<&'a Value> {
        let fields: &'a [(Sym, Value)] = self.ctx_fields;
        if fields.len() <= 16 {
            fields.iter().find(|(f, _)| *f == k).map(|(_, v)| v)
        } else {
            fields
                .binary_search_by_key(&k, |(f, _)| *f)
                .ok()
                .map(|i| &fields[i].1)
        }
    }

    #[inline]
    fn attr_of(&self, data: Option<&'a EntityData>, uid: Euid, k: Sym) -> EResult<'a> {
        match data {
            None => Err(EvalErr::NoEntity(uid)),
            Some(e) => match e.attrs.get(k) {
                Some(v) => Ok(Cow::Borrowed(v)),
                None => Err(EvalErr::NoAttr(k)),
            },
        }
    }

    /// The value of a node that is stored somewhere (a literal, a context field, a
    /// principal or resource attribute), by reference; None for any other node and
    /// for one that would error, whose value (or error) `eval` then gives. The
    /// fused comparisons read their operand here: no call into `eval`, no `Cow`.
    #[inline(always)]
    fn stored(&self, n: NodeId) -> Option<&'a Value> {
        let nodes: &'a [Node] = self.nodes;
        match &nodes[n as usize] {
            Node::Lit(v) => Some(v),
            Node::CtxAttr(k) => self.ctx_get(*k),
            Node::PrincipalAttr(k) => self.principal_data?.attrs.get(*k),
            Node::ResourceAttr(k) => self.resource_data?.attrs.get(*k),
            _ => None,
        }
    }

    /// A stored value or a request variable: the comparisons' fast path reads
    /// both operands this way, when it can, instead of evaluating them.
    #[inline(always)]
    fn leaf(&self, n: NodeId) -> Option<Cow<'a, Value>> {
        let nodes: &'a [Node] = self.nodes;
        match &nodes[n as usize] {
            Node::Var(Var::Principal) => Some(Cow::Owned(Value::Entity(self.principal))),
            Node::Var(Var::Resource) => Some(Cow::Owned(Value::Entity(self.resource))),
            Node::Var(Var::Action) => Some(Cow::Owned(Value::Entity(self.action))),
            _ => self.stored(n).map(Cow::Borrowed),
        }
    }

    /// `a == b`, `a < b`, `a <= b`, `a > b`, `a >= b` on two leaves (which cannot
    /// error), when the answer needs no error: equality, or two longs. None sends
    /// the node down the general path, which gives every other answer and error.
    #[inline]
    fn leaf_cmp(&self, op: BinOp, a: NodeId, b: NodeId) -> Option<bool> {
        let x = self.leaf(a)?;
        let y = self.leaf(b)?;
        match (op, &*x, &*y) {
            (BinOp::Eq, x, y) => Some(value_eq(x, y)),
            (BinOp::Less, Value::Long(p), Value::Long(q)) => Some(p < q),
            (BinOp::LessEq, Value::Long(p), Value::Long(q)) => Some(p <= q),
            (BinOp::Greater, Value::Long(p), Value::Long(q)) => Some(p > q),
            (BinOp::GreaterEq, Value::Long(p), Value::Long(q)) => Some(p >= q),
            _ => None,
        }
    }

    /// `eval`, borrowing a stored value without the call (see `stored`).
    #[inline]
    fn operand(&self, n: NodeId) -> EResult<'a> {
        match self.stored(n) {
            Some(v) => Ok(Cow::Borrowed(v)),
            None => self.eval(n),
        }
    }

    /// An entity's entry, without a hash lookup for the request's principal and resource.
    #[inline]
    fn data(&self, uid: &Euid) -> Option<&'a EntityData> {
        if *uid == self.principal {
            self.principal_data
        } else if *uid == self.resource {
            self.resource_data
        } else {
            let store: &'a EntityStore = self.store;
            store.get(uid)
        }
    }

    /// Evaluate to a boolean. The boolean-valued nodes are answered here
    /// directly, without building a value; everything else goes through `eval`.
    pub fn eval_bool(&self, n: NodeId) -> Result<bool, EvalErr> {
        self.eval_bool_as(n)
    }

    /// Whether `n` evaluates to true; false when it is false or errors. For the
    /// decisions that skip erroring policies without reporting why: no error is
    /// kept, so the one-byte result comes back in a register.
    #[inline]
    pub fn holds(&self, n: NodeId) -> Result<bool, Failed> {
        self.eval_bool_as(n)
    }

    /// `eval_bool`, with errors turned into `E` where they arise.
    fn eval_bool_as<E: From<EvalErr>>(&self, n: NodeId) -> Result<bool, E> {
        let nodes: &'a [Node] = self.nodes;
        match &nodes[n as usize] {
            Node::Lit(Value::Bool(b)) => Ok(*b),
            Node::Not(a) => Ok(!self.eval_bool_as::<E>(*a)?),
            Node::And(a, b) => Ok(self.eval_bool_as::<E>(*a)? && self.eval_bool_as::<E>(*b)?),
            Node::Or(a, b) => Ok(self.eval_bool_as::<E>(*a)? || self.eval_bool_as::<E>(*b)?),
            Node::EqLit(a, v, neg) => Ok(value_eq(&*self.operand(*a)?, v) != *neg),
            Node::NotEq(a, b) => {
                let x = self.operand(*a)?;
                let y = self.operand(*b)?;
                Ok(!value_eq(&x, &y))
            }
            Node::InLitSet(set, a) => {
                // A set of scalars holds nothing that is not a scalar.
                Ok(Scalar::of(&*self.operand(*a)?).is_some_and(|s| set.contains(&s)))
            }
            Node::CmpLong(a, c, k) => {
                let x = self.operand(*a)?;
                match (&*x, c) {
                    (Value::Long(x), CmpLong::Lt) => Ok(*x < *k),
                    (Value::Long(x), CmpLong::Le) => Ok(*x <= *k),
                    (Value::Long(x), CmpLong::Gt) => Ok(*k < *x),
                    (Value::Long(x), CmpLong::Ge) => Ok(*k <= *x),
                    // The general comparison, operands in Cedar's order, for its error.
                    (other, _) => {
                        let k = Value::Long(*k);
                        let (op, l, r) = match c {
                            CmpLong::Lt => (BinOp::Less, other, &k),
                            CmpLong::Le => (BinOp::LessEq, other, &k),
                            CmpLong::Gt => (BinOp::Less, &k, other),
                            CmpLong::Ge => (BinOp::LessEq, &k, other),
                        };
                        Ok(as_bool(&*self.binary(op, l, r)?)?)
                    }
                }
            }
            Node::ContainsLit(a, needle) => match &*self.operand(*a)? {
                // A few items are scanned (an attribute like `allowed_groups`): cheaper
                // than the probes of a search. Larger sets are sorted by `canonical_cmp`,
                // which `cmp_from` follows.
                Value::Set(items) if items.len() <= 16 => {
                    Ok(items.iter().any(|v| Scalar::of(v) == Some(*needle)))
                }
                Value::Set(items) => Ok(needle.in_sorted(items)),
                other => Ok(as_bool(&*self.binary(
                    BinOp::Contains,
                    other,
                    &needle.value(),
                )?)?),
            },
            Node::CtxHas(k) => Ok(self.ctx_get(*k).is_some()),
            Node::CtxAttr(k) => match self.ctx_get(*k) {
                Some(v) => Ok(as_bool(v)?),
                None => Err(EvalErr::NoAttr(*k).into()),
            },
            Node::PrincipalAttr(k) => Ok(as_bool(&*self.attr_of(
                self.principal_data,
                self.principal,
                *k,
            )?)?),
            Node::Bin(
                op @ (BinOp::Eq | BinOp::Less | BinOp::LessEq | BinOp::Greater | BinOp::GreaterEq),
                a,
                b,
            ) => match self.leaf_cmp(*op, *a, *b) {
                Some(v) => Ok(v),
                None => Ok(as_bool(&*self.eval(n)?)?),
            },
            Node::ResourceAttr(k) => Ok(as_bool(&*self.attr_of(
                self.resource_data,
                self.resource,
                *k,
            )?)?),
            _ => Ok(as_bool(&*self.eval(n)?)?),
        }
    }

    pub fn eval(&self, n: NodeId) -> EResult<'a> {
        #[cfg(test)]
        stack::probe::record();
        let nodes: &'a [Node] = self.nodes;
        match &nodes[n as usize] {
            Node::Lit(v) => Ok(Cow::Borrowed(v)),
            Node::Var(v) => Ok(match v {
                Var::Principal => Cow::Owned(Value::Entity(self.principal)),
                Var::Action => Cow::Owned(Value::Entity(self.action)),
                Var::Resource => Cow::Owned(Value::Entity(self.resource)),
                Var::Context => Cow::Borrowed(self.context),
            }),
            Node::Not(_)
            | Node::EqLit(..)
            | Node::InLitSet(..)
            | Node::ContainsLit(..)
            | Node::CmpLong(..)
            | Node::CtxHas(_) => Ok(Cow::Owned(Value::Bool(self.eval_bool(n)?))),
            Node::CtxAttr(k) => match self.ctx_get(*k) {
                Some(v) => Ok(Cow::Borrowed(v)),
                None => Err(EvalErr::NoAttr(*k)),
            },
            Node::PrincipalAttr(k) => self.attr_of(self.principal_data, self.principal, *k),
            Node::ResourceAttr(k) => self.attr_of(self.resource_data, self.resource, *k),
            Node::Neg(a) => {
                let x = as_long(&*self.eval(*a)?)?;
                x.checked_neg()
                    .map(|v| Cow::Owned(Value::Long(v)))
                    .ok_or(EvalErr::Overflow)
            }
            Node::IsEmpty(a) => match &*self.eval(*a)? {
                Value::Set(s) => Ok(Cow::Owned(Value::Bool(s.is_empty()))),
                other => type_err("set", other),
            },
            Node::And(a, b) => {
                if !self.eval_bool(*a)? {
                    return Ok(Cow::Owned(Value::Bool(false)));
                }
                Ok(Cow::Owned(Value::Bool(self.eval_bool(*b)?)))
            }
            Node::Or(a, b) => {
                if self.eval_bool(*a)? {
                    return Ok(Cow::Owned(Value::Bool(true)));
                }
                Ok(Cow::Owned(Value::Bool(self.eval_bool(*b)?)))
            }
            Node::If(c, t, f) => {
                if self.eval_bool(*c)? {
                    self.eval(*t)
                } else {
                    self.eval(*f)
                }
            }
            Node::NotEq(a, b) => {
                let x = self.eval(*a)?;
                let y = self.eval(*b)?;
                Ok(Cow::Owned(Value::Bool(!value_eq(&x, &y))))
            }
            Node::Bin(op, a, b) => {
                let x = self.eval(*a)?;
                let y = self.eval(*b)?;
                self.binary(*op, &x, &y)
            }
            Node::GetAttr(a, attr) => self.get_attr(self.eval(*a)?, *attr),
            Node::HasAttr(a, attr) => {
                let has = match &*self.eval(*a)? {
                    Value::Record(r) => r.get(*attr).is_some(),
                    Value::Entity(uid) => {
                        self.data(uid).is_some_and(|e| e.attrs.get(*attr).is_some())
                    }
                    other => return type_err("record or entity", other),
                };
                Ok(Cow::Owned(Value::Bool(has)))
            }
            Node::Like(a, pat) => match &*self.eval(*a)? {
                Value::Str(s) => {
                    let text = self.locals.resolve(self.interner, *s).unwrap_or("");
                    Ok(Cow::Owned(Value::Bool(like::matches(pat, text))))
                }
                other => type_err("string", other),
            },
            Node::Is(a, ty) => match &*self.eval(*a)? {
                Value::Entity(uid) => Ok(Cow::Owned(Value::Bool(uid.ty == *ty))),
                other => type_err("entity", other),
            },
            Node::Set(items) => {
                let mut vals = Vec::with_capacity(items.len());
                for i in items.iter() {
                    vals.push(self.eval(*i)?.into_owned());
                }
                Ok(Cow::Owned(Value::set_from(vals)))
            }
            Node::Record(fields) => {
                let mut vals = Vec::with_capacity(fields.len());
                for (k, i) in fields.iter() {
                    vals.push((*k, self.eval(*i)?.into_owned()));
                }
                Ok(Cow::Owned(Value::Record(std::sync::Arc::new(
                    crate::value::Record::from_unsorted(vals),
                ))))
            }
            Node::Ext(f, args) => {
                let mut core_args = Vec::with_capacity(args.len());
                for a in args.iter() {
                    let v = self.eval(*a)?;
                    match ext::value_to_core(&v, |s| {
                        self.locals.resolve(self.interner, s).map(str::to_owned)
                    }) {
                        Some(c) => core_args.push(c),
                        None => return type_err("extension argument", &v),
                    }
                }
                match f.call(&core_args) {
                    Ok(cedar_policy_core::ast::PartialValue::Value(v)) => {
                        ext::core_result_to_value(v)
                            .map(Cow::Owned)
                            .ok_or_else(|| EvalErr::Ext("unexpected extension result".into()))
                    }
                    Ok(_) => Err(EvalErr::Ext("residual extension result".into())),
                    Err(e) => Err(EvalErr::Ext(e.to_string())),
                }
            }
        }
    }

    fn get_attr(&self, base: Cow<'a, Value>, attr: Sym) -> EResult<'a> {
        match base {
            Cow::Borrowed(Value::Record(r)) => match r.get(attr) {
                Some(v) => Ok(Cow::Borrowed(v)),
                None => Err(EvalErr::NoAttr(attr)),
            },
            Cow::Owned(Value::Record(r)) => match r.get(attr) {
                Some(v) => Ok(Cow::Owned(v.clone())),
                None => Err(EvalErr::NoAttr(attr)),
            },
            Cow::Borrowed(Value::Entity(uid)) => self.entity_attr(uid, attr),
            Cow::Owned(Value::Entity(uid)) => self.entity_attr(&uid, attr),
            other => type_err("record or entity", &other),
        }
    }

    fn entity_attr(&self, uid: &Euid, attr: Sym) -> EResult<'a> {
        match self.data(uid) {
            None => Err(EvalErr::NoEntity(*uid)),
            Some(e) => match e.attrs.get(attr) {
                Some(v) => Ok(Cow::Borrowed(v)),
                None => Err(EvalErr::NoAttr(attr)),
            },
        }
    }

    /// `uid in target`: equal, or target among uid's ancestors.
    #[inline]
    pub fn entity_in(&self, uid: &Euid, target: &Euid) -> bool {
        uid == target || self.data(uid).is_some_and(|e| e.ancestors.contains(target))
    }

    fn binary(&self, op: BinOp, x: &Value, y: &Value) -> EResult<'a> {
        let b = |v: bool| Ok(Cow::Owned(Value::Bool(v)));
        match op {
            BinOp::Eq => b(value_eq(x, y)),
            BinOp::Greater => self.binary(BinOp::Less, y, x),
            BinOp::GreaterEq => self.binary(BinOp::LessEq, y, x),
            BinOp::Less | BinOp::LessEq => {
                let or_eq = op == BinOp::LessEq;
                match (x, y) {
                    (Value::Long(p), Value::Long(q)) => b(if or_eq { p <= q } else { p < q }),
                    (Value::Ext(p), Value::Ext(q)) => match ext::ext_less(p, q, or_eq) {
                        Some(r) => b(r),
                        None => Err(EvalErr::Type {
                            expected: "long, datetime or duration of the same type",
                            got: if ext::ext_is_ordered(p) {
                                y.type_name()
                            } else {
                                x.type_name()
                            },
                        }),
                    },
                    (Value::Long(_), other) | (other, _) => type_err("long", other),
                }
            }
            BinOp::Add | BinOp::Sub | BinOp::Mul => {
                let p = as_long(x)?;
                let q = as_long(y)?;
                let r = match op {
                    BinOp::Add => p.checked_add(q),
                    BinOp::Sub => p.checked_sub(q),
                    _ => p.checked_mul(q),
                };
                r.map(|v| Cow::Owned(Value::Long(v)))
                    .ok_or(EvalErr::Overflow)
            }
            BinOp::In => {
                let uid = match x {
                    Value::Entity(u) => u,
                    other => return type_err("entity", other),
                };
                match y {
                    Value::Entity(t) => b(self.entity_in(uid, t)),
                    Value::Set(items) => {
                        // Cedar checks the whole set is entities before answering.
                        let mut found = false;
                        for it in items.iter() {
                            match it {
                                Value::Entity(t) => found = found || self.entity_in(uid, t),
                                other => return type_err("set of entities", other),
                            }
                        }
                        b(found)
                    }
                    other => type_err("entity or set", other),
                }
            }
            BinOp::Contains => match x {
                // Sets are kept sorted by `canonical_cmp`, whose equality is Cedar's.
                Value::Set(items) => b(items
                    .binary_search_by(|v| crate::value::canonical_cmp(v, y))
                    .is_ok()),
                other => type_err("set", other),
            },
            BinOp::ContainsAll | BinOp::ContainsAny => {
                let (p, q) = match (x, y) {
                    (Value::Set(p), Value::Set(q)) => (p, q),
                    (Value::Set(_), other) | (other, _) => return type_err("set", other),
                };
                let has = |v: &Value| {
                    p.binary_search_by(|w| crate::value::canonical_cmp(w, v))
                        .is_ok()
                };
                if op == BinOp::ContainsAll {
                    b(q.iter().all(has))
                } else {
                    b(q.iter().any(has))
                }
            }
            BinOp::GetTag | BinOp::HasTag => {
                let uid = match x {
                    Value::Entity(u) => u,
                    other => return type_err("entity", other),
                };
                let tag = match y {
                    Value::Str(s) => *s,
                    other => return type_err("string", other),
                };
                let store: &'a EntityStore = self.store;
                match (op, store.get(uid)) {
                    (BinOp::HasTag, None) => b(false),
                    (BinOp::HasTag, Some(e)) => b(e.tags.get(tag).is_some()),
                    (_, None) => Err(EvalErr::NoEntity(*uid)),
                    (_, Some(e)) => match e.tags.get(tag) {
                        Some(v) => Ok(Cow::Borrowed(v)),
                        None => Err(EvalErr::NoTag(tag)),
                    },
                }
            }
        }
    }
}

impl EvalErr {
    /// A message that names what went wrong, with symbols resolved.
    pub fn render(&self, interner: &Interner, locals: &Locals) -> String {
        let s = |id: Sym| locals.resolve(interner, id).unwrap_or("?").to_owned();
        match self {
            EvalErr::Type { expected, got } => {
                format!("type error: expected {expected}, got {got}")
            }
            EvalErr::Overflow => "integer overflow".to_owned(),
            // The id escaped as Cedar prints it, so the message names the entity exactly.
            EvalErr::NoEntity(u) => format!(
                "entity `{}::\"{}\"` does not exist",
                s(u.ty),
                s(u.id).escape_debug()
            ),
            EvalErr::NoAttr(a) => format!("attribute `{}` does not exist", s(*a)),
            EvalErr::NoTag(t) => format!("tag `{}` does not exist", s(*t)),
            EvalErr::Ext(m) => format!("extension error: {m}"),
        }
    }
}

#[cfg(test)]
mod tests;

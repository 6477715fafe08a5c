//! Lowering of Cedar's public syntax tree (PST) into our IR.
//!
//! Cedar's own crate parses and validates; this module only translates. Every
//! construct either has an exact counterpart in the IR or is rejected with the
//! feature named, so nothing is ever evaluated approximately.

use std::sync::Arc;

use cedar_policy::pst;
use cedar_policy_core::ast::{ExtensionFunction, Name};
use cedar_policy_core::extensions::Extensions;

use super::ir::*;
use crate::eval::ext::{core_to_value, value_to_core};
use crate::value::{Euid, Interner, Record, Value};

/// Why a policy could not be lowered.
pub struct Unsupported(pub String);

pub struct Lowerer<'a> {
    pub nodes: &'a mut Vec<Node>,
    pub interner: &'a mut Interner,
    /// Current nesting, bounded so evaluation can never exhaust the stack.
    pub depth: usize,
}

/// Deepest expression nesting accepted; far beyond hand-written policies.
pub const MAX_EXPR_DEPTH: usize = 1000;

impl Lowerer<'_> {
    fn push(&mut self, n: Node) -> NodeId {
        self.nodes.push(n);
        (self.nodes.len() - 1) as NodeId
    }

    pub fn euid(&mut self, uid: &pst::EntityUID) -> Euid {
        Euid {
            ty: self.interner.intern(&uid.ty.to_string()),
            id: self.interner.intern(&uid.eid),
        }
    }

    fn entity_scope(
        &mut self,
        eos: Option<&pst::EntityOrSlot>,
        ty: Option<&pst::EntityType>,
        kind: u8,
    ) -> Result<EntityScope, Unsupported> {
        let uid = match eos {
            Some(pst::EntityOrSlot::Entity(uid)) => Some(self.euid(uid)),
            Some(_) => return Err(Unsupported("template slots (?principal/?resource)".into())),
            None => None,
        };
        let ty = ty.map(|t| self.interner.intern(&t.to_string()));
        Ok(match (kind, uid, ty) {
            (0, Some(u), _) => EntityScope::Eq(u),
            (1, Some(u), None) => EntityScope::In(u),
            (2, None, Some(t)) => EntityScope::Is(t),
            (3, Some(u), Some(t)) => EntityScope::IsIn(t, u),
            _ => EntityScope::Any,
        })
    }

    pub fn principal(&mut self, c: &pst::PrincipalConstraint) -> Result<EntityScope, Unsupported> {
        use pst::PrincipalConstraint as P;
        match c {
            P::Any => Ok(EntityScope::Any),
            P::Eq(e) => self.entity_scope(Some(e), None, 0),
            P::In(e) => self.entity_scope(Some(e), None, 1),
            P::Is(t) => self.entity_scope(None, Some(t), 2),
            P::IsIn(t, e) => self.entity_scope(Some(e), Some(t), 3),
        }
    }

    pub fn resource(&mut self, c: &pst::ResourceConstraint) -> Result<EntityScope, Unsupported> {
        use pst::ResourceConstraint as R;
        match c {
            R::Any => Ok(EntityScope::Any),
            R::Eq(e) => self.entity_scope(Some(e), None, 0),
            R::In(e) => self.entity_scope(Some(e), None, 1),
            R::Is(t) => self.entity_scope(None, Some(t), 2),
            R::IsIn(t, e) => self.entity_scope(Some(e), Some(t), 3),
        }
    }

    pub fn action(&mut self, c: &pst::ActionConstraint) -> ActionScope {
        use pst::ActionConstraint as A;
        match c {
            A::Any => ActionScope::Any,
            A::Eq(u) => ActionScope::Eq(self.euid(u)),
            A::In(us) => ActionScope::In(us.iter().map(|u| self.euid(u)).collect()),
        }
    }

    fn ext_fn(name: &str) -> Result<&'static ExtensionFunction, Unsupported> {
        let n: Name = name
            .parse()
            .map_err(|_| Unsupported(format!("extension function `{name}`")))?;
        Extensions::all_available()
            .func(&n)
            .map_err(|_| Unsupported(format!("extension function `{name}`")))
    }

    /// Lower an extension call, folding it when every argument is a literal and
    /// the call succeeds (a failing constant call stays a runtime call so the
    /// error surfaces only if evaluation reaches it, as in Cedar).
    fn ext_call(&mut self, name: &str, args: Vec<NodeId>) -> Result<NodeId, Unsupported> {
        let f = Self::ext_fn(name)?;
        let consts: Option<Vec<_>> = args
            .iter()
            .map(|a| match &self.nodes[*a as usize] {
                Node::Lit(v) => value_to_core(v, |s| self.interner.get(s).map(str::to_owned)),
                _ => None,
            })
            .collect();
        if let Some(consts) = consts {
            if let Ok(cedar_policy_core::ast::PartialValue::Value(v)) = f.call(&consts) {
                if let Some(v) = core_to_value(&v, self.interner) {
                    return Ok(self.push(Node::Lit(v)));
                }
            }
        }
        Ok(self.push(Node::Ext(f, args.into())))
    }

    pub fn expr(&mut self, e: &pst::Expr) -> Result<NodeId, Unsupported> {
        self.depth += 1;
        if self.depth > MAX_EXPR_DEPTH {
            return Err(Unsupported(format!(
                "expressions nested deeper than {MAX_EXPR_DEPTH} levels"
            )));
        }
        let r = self.expr_inner(e);
        self.depth -= 1;
        r
    }

    fn expr_inner(&mut self, e: &pst::Expr) -> Result<NodeId, Unsupported> {
        use pst::Expr as E;
        Ok(match e {
            E::Literal(l) => {
                let v = match l {
                    pst::Literal::Bool(b) => Value::Bool(*b),
                    pst::Literal::Long(i) => Value::Long(*i),
                    pst::Literal::String(s) => Value::Str(self.interner.intern(s)),
                    pst::Literal::EntityUID(u) => Value::Entity(self.euid(u)),
                    #[allow(unreachable_patterns)]
                    _ => return Err(Unsupported("literal kind".into())),
                };
                self.push(Node::Lit(v))
            }
            E::Var(v) => self.push(Node::Var(match v {
                pst::Var::Principal => Var::Principal,
                pst::Var::Action => Var::Action,
                pst::Var::Resource => Var::Resource,
                pst::Var::Context => Var::Context,
            })),
            E::Slot(_) => return Err(Unsupported("template slots".into())),
            E::Unknown { .. } => return Err(Unsupported("partial-evaluation unknowns".into())),
            E::UnaryOp { op, expr } => {
                let a = self.expr(expr)?;
                match op {
                    pst::UnaryOp::Not => self.push(Node::Not(a)),
                    pst::UnaryOp::Neg => self.push(Node::Neg(a)),
                    pst::UnaryOp::IsEmpty => self.push(Node::IsEmpty(a)),
                    other => {
                        let name = ext_unary_name(*other)?;
                        self.ext_call(name, vec![a])?
                    }
                }
            }
            E::BinaryOp { op, left, right } => {
                let a = self.expr(left)?;
                let b = self.expr(right)?;
                use pst::BinaryOp as B;
                let bin = |op| Node::Bin(op, a, b);
                match op {
                    B::Eq => self.push(bin(BinOp::Eq)),
                    B::NotEq => self.push(Node::NotEq(a, b)),
                    B::Less => self.push(bin(BinOp::Less)),
                    B::LessEq => self.push(bin(BinOp::LessEq)),
                    // Kept as written (not as `b < a`): Cedar evaluates `a` first, and
                    // when both operands fail, the error reported is `a`'s.
                    B::Greater => self.push(bin(BinOp::Greater)),
                    B::GreaterEq => self.push(bin(BinOp::GreaterEq)),
                    B::And => self.push(Node::And(a, b)),
                    B::Or => self.push(Node::Or(a, b)),
                    B::Add => self.push(bin(BinOp::Add)),
                    B::Sub => self.push(bin(BinOp::Sub)),
                    B::Mul => self.push(bin(BinOp::Mul)),
                    B::In => self.push(bin(BinOp::In)),
                    B::Contains => self.push(bin(BinOp::Contains)),
                    B::ContainsAll => self.push(bin(BinOp::ContainsAll)),
                    B::ContainsAny => self.push(bin(BinOp::ContainsAny)),
                    B::GetTag => self.push(bin(BinOp::GetTag)),
                    B::HasTag => self.push(bin(BinOp::HasTag)),
                    other => {
                        let name = ext_binary_name(*other)?;
                        self.ext_call(name, vec![a, b])?
                    }
                }
            }
            E::GetAttr { expr, attr } => {
                let a = self.expr(expr)?;
                let s = self.interner.intern(attr);
                self.push(Node::GetAttr(a, s))
            }
            E::HasAttr { expr, attrs } => {
                // `e has a.b.c` is `e has a && e.a has b && e.a.b has c`: a tree as
                // deep as the path is long, so the path counts towards the depth bound.
                if self.depth + attrs.len() > MAX_EXPR_DEPTH {
                    return Err(Unsupported(format!(
                        "expressions nested deeper than {MAX_EXPR_DEPTH} levels"
                    )));
                }
                let base = self.expr(expr)?;
                let mut path = base;
                let mut acc: Option<NodeId> = None;
                for attr in attrs.iter() {
                    let s = self.interner.intern(attr);
                    let has = self.push(Node::HasAttr(path, s));
                    acc = Some(match acc {
                        None => has,
                        Some(prev) => self.push(Node::And(prev, has)),
                    });
                    path = self.push(Node::GetAttr(path, s));
                }
                acc.ok_or_else(|| Unsupported("empty `has` path".into()))?
            }
            E::Like { expr, pattern } => {
                let a = self.expr(expr)?;
                let pat = pattern
                    .iter()
                    .map(|p| match p {
                        pst::PatternElem::Char(c) => PatElem::Char(*c),
                        pst::PatternElem::Wildcard => PatElem::Wildcard,
                    })
                    .collect();
                self.push(Node::Like(a, pat))
            }
            E::Is {
                expr,
                entity_type,
                in_expr,
            } => {
                let a = self.expr(expr)?;
                let t = self.interner.intern(&entity_type.to_string());
                let is = self.push(Node::Is(a, t));
                match in_expr {
                    None => is,
                    Some(rhs) => {
                        // `e is T in x` is `e is T && e in x`.
                        let b = self.expr(rhs)?;
                        let inn = self.push(Node::Bin(BinOp::In, a, b));
                        self.push(Node::And(is, inn))
                    }
                }
            }
            E::IfThenElse {
                cond,
                then_expr,
                else_expr,
            } => {
                let c = self.expr(cond)?;
                let t = self.expr(then_expr)?;
                let f = self.expr(else_expr)?;
                self.push(Node::If(c, t, f))
            }
            E::Set(items) => {
                let ids = items
                    .iter()
                    .map(|i| self.expr(i))
                    .collect::<Result<Vec<_>, _>>()?;
                self.fold_set(ids)
            }
            E::Record(fields) => {
                let mut ids = Vec::with_capacity(fields.len());
                for (k, v) in fields {
                    let s = self.interner.intern(k);
                    ids.push((s, self.expr(v)?));
                }
                self.fold_record(ids)
            }
            #[allow(unreachable_patterns)]
            _ => {
                return Err(Unsupported(
                    "expression kind not in tether's supported subset".into(),
                ))
            }
        })
    }

    /// A set of literals becomes one literal set value (the common `[A, B, C]` case).
    fn fold_set(&mut self, ids: Vec<NodeId>) -> NodeId {
        let lits: Option<Vec<Value>> = ids
            .iter()
            .map(|i| match &self.nodes[*i as usize] {
                Node::Lit(v) => Some(v.clone()),
                _ => None,
            })
            .collect();
        match lits {
            Some(vals) => self.push(Node::Lit(Value::set_from(vals))),
            None => self.push(Node::Set(ids.into())),
        }
    }

    fn fold_record(&mut self, ids: Vec<(crate::value::Sym, NodeId)>) -> NodeId {
        let lits: Option<Vec<_>> = ids
            .iter()
            .map(|(k, i)| match &self.nodes[*i as usize] {
                Node::Lit(v) => Some((*k, v.clone())),
                _ => None,
            })
            .collect();
        match lits {
            Some(fields) => self.push(Node::Lit(Value::Record(Arc::new(Record::from_unsorted(
                fields,
            ))))),
            None => self.push(Node::Record(ids.into())),
        }
    }
}

fn ext_unary_name(op: pst::UnaryOp) -> Result<&'static str, Unsupported> {
    use pst::UnaryOp as U;
    Ok(match op {
        U::Decimal => "decimal",
        U::Datetime => "datetime",
        U::Duration => "duration",
        U::Ip => "ip",
        U::IsIPv4 => "isIpv4",
        U::IsIPV6 => "isIpv6",
        U::IsLoopback => "isLoopback",
        U::IsMulticast => "isMulticast",
        U::ToDate => "toDate",
        U::ToTime => "toTime",
        U::ToMilliseconds => "toMilliseconds",
        U::ToSeconds => "toSeconds",
        U::ToMinutes => "toMinutes",
        U::ToHours => "toHours",
        U::ToDays => "toDays",
        _ => return Err(Unsupported(format!("unary operator `{op}`"))),
    })
}

fn ext_binary_name(op: pst::BinaryOp) -> Result<&'static str, Unsupported> {
    use pst::BinaryOp as B;
    Ok(match op {
        B::IsInRange => "isInRange",
        B::Offset => "offset",
        B::DurationSince => "durationSince",
        B::DecimalLessThan => "lessThan",
        B::DecimalLessEq => "lessThanOrEqual",
        B::DecimalGreater => "greaterThan",
        B::DecimalGreaterEq => "greaterThanOrEqual",
        _ => return Err(Unsupported(format!("binary operator `{op}`"))),
    })
}

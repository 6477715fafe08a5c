//! Request validation against the schema, compiled at load.
//!
//! Cedar validates a request (with a schema) by checking the action is declared,
//! the principal and resource types are in its `appliesTo`, and the context has the
//! action's declared context type. Calling Cedar for that would mean converting
//! every request to Cedar's own values (microseconds); instead each action's
//! expectations are compiled once into interned symbols, and a request is checked
//! by walking the already converted context: a few comparisons per key.

use rustc_hash::{FxHashMap, FxHashSet};

use cedar_policy::Schema;
use cedar_policy_core::ast::StaticallyTyped;
use cedar_policy_core::validator::types::{BoolType, EntityKind, OpenTag, Type};

use crate::value::{Euid, Interner, Sym, Value};

/// The expected type of a context value.
#[derive(Debug)]
enum Shape {
    /// No value has this type (Cedar's `Never`).
    Never,
    Bool(Option<bool>),
    Long,
    Str,
    /// An entity of one of these types; `None`: any entity type.
    Entity(Option<Sym>),
    Set(Option<Box<Shape>>),
    Record {
        /// Sorted by symbol, as records are.
        attrs: Vec<(Sym, Shape, bool)>,
        open: bool,
    },
    /// An extension type, by Cedar's name (`decimal`, `ipaddr`, ...).
    Ext(String),
}

#[derive(Debug)]
struct ActionShape {
    principals: FxHashSet<Sym>,
    resources: FxHashSet<Sym>,
    context: Shape,
    display: String,
}

/// Every declared action's expectations, keyed by the action's uid.
#[derive(Debug, Default)]
pub struct RequestShapes {
    actions: FxHashMap<Euid, ActionShape>,
}

/// Deep schema types are rare; past this the check gives up and rejects, which is
/// the fail-closed direction (the schema itself had to nest this deep).
const MAX_SHAPE_DEPTH: usize = 64;

fn shape_of(ty: &Type, interner: &mut Interner, depth: usize) -> Shape {
    if depth > MAX_SHAPE_DEPTH {
        return Shape::Never;
    }
    match ty {
        Type::Never => Shape::Never,
        Type::Bool(BoolType::AnyBool) => Shape::Bool(None),
        Type::Bool(BoolType::True) => Shape::Bool(Some(true)),
        Type::Bool(BoolType::False) => Shape::Bool(Some(false)),
        Type::Long => Shape::Long,
        Type::String => Shape::Str,
        Type::Entity(EntityKind::AnyEntity) => Shape::Entity(None),
        Type::Entity(EntityKind::Entity(lub)) => match lub.get_single_entity() {
            Some(t) => Shape::Entity(Some(interner.intern(&t.to_string()))),
            // A union of entity types only arises from type inference, never from a
            // declared context type; accept any entity rather than guess.
            None => Shape::Entity(None),
        },
        Type::Set { element_type } => Shape::Set(
            element_type
                .as_ref()
                .map(|t| Box::new(shape_of(t, interner, depth + 1))),
        ),
        Type::Record {
            attrs,
            open_attributes,
        } => {
            let mut v: Vec<(Sym, Shape, bool)> = attrs
                .iter()
                .map(|(k, a)| {
                    (
                        interner.intern(k),
                        shape_of(&a.attr_type, interner, depth + 1),
                        a.is_required,
                    )
                })
                .collect();
            v.sort_by_key(|(k, _, _)| *k);
            Shape::Record {
                attrs: v,
                open: matches!(open_attributes, OpenTag::OpenAttributes),
            }
        }
        Type::ExtensionType { name } => Shape::Ext(name.to_string()),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Bool(_) => "a bool",
        Value::Long(_) => "a long",
        Value::Str(_) => "a string",
        Value::Entity(_) => "an entity",
        Value::Set(_) => "a set",
        Value::Record(_) => "a record",
        Value::Ext(_) => "an extension value",
    }
}

/// Why a value does not have its shape, with the path to it (built while unwinding).
struct Mismatch {
    path: String,
    msg: String,
}

fn check(shape: &Shape, v: &Value, name: &dyn Fn(Sym) -> String) -> Result<(), Mismatch> {
    let bad = |msg: String| {
        Err(Mismatch {
            path: String::new(),
            msg,
        })
    };
    match (shape, v) {
        (Shape::Bool(None), Value::Bool(_)) | (Shape::Long, Value::Long(_)) => Ok(()),
        (Shape::Str, Value::Str(_)) => Ok(()),
        (Shape::Bool(Some(b)), Value::Bool(x)) if b == x => Ok(()),
        (Shape::Entity(None), Value::Entity(_)) => Ok(()),
        (Shape::Entity(Some(t)), Value::Entity(e)) => {
            if e.ty == *t {
                Ok(())
            } else {
                bad(format!(
                    "expected an entity of type {}, got one of type {}",
                    name(*t),
                    name(e.ty)
                ))
            }
        }
        (Shape::Set(el), Value::Set(items)) => {
            if let Some(el) = el {
                for (i, it) in items.iter().enumerate() {
                    check(el, it, name).map_err(|mut m| {
                        m.path.insert_str(0, &format!("[{i}]"));
                        m
                    })?;
                }
            }
            Ok(())
        }
        (Shape::Record { attrs, open }, Value::Record(r)) => {
            check_record(attrs, *open, r, None, name)
        }
        (Shape::Ext(n), Value::Ext(x)) => {
            let actual = match x.type_of() {
                cedar_policy_core::ast::Type::Extension { name } => name.to_string(),
                _ => String::new(),
            };
            if &actual == n {
                Ok(())
            } else {
                bad(format!("expected a {n} value, got a {actual} value"))
            }
        }
        (Shape::Never, _) => bad("no value is allowed here".into()),
        (s, v) => bad(format!("expected {}, got {}", shape_name(s), type_name(v))),
    }
}

fn shape_name(s: &Shape) -> String {
    match s {
        Shape::Never => "nothing".into(),
        Shape::Bool(_) => "a bool".into(),
        Shape::Long => "a long".into(),
        Shape::Str => "a string".into(),
        Shape::Entity(_) => "an entity".into(),
        Shape::Set(_) => "a set".into(),
        Shape::Record { .. } => "a record".into(),
        Shape::Ext(n) => format!("a {n} value"),
    }
}

impl RequestShapes {
    pub fn build(schema: &Schema, interner: &mut Interner) -> Self {
        let vs: &cedar_policy_core::validator::ValidatorSchema = schema.as_ref();
        let mut actions = FxHashMap::default();
        for a in vs.action_ids() {
            // External actions (declared elsewhere) cannot be used in a request.
            let Some(ctx) = a.context_type() else {
                continue;
            };
            let uid = a.name();
            let euid = Euid {
                ty: interner.intern(&uid.entity_type().to_string()),
                id: interner.intern(uid.eid().as_ref()),
            };
            let principals = a
                .applies_to_principals()
                .map(|t| interner.intern(&t.to_string()))
                .collect();
            let resources = a
                .applies_to_resources()
                .map(|t| interner.intern(&t.to_string()))
                .collect();
            let context = shape_of(ctx, interner, 0);
            actions.insert(
                euid,
                ActionShape {
                    principals,
                    resources,
                    context,
                    display: uid.to_string(),
                },
            );
        }
        RequestShapes { actions }
    }

    /// Check a request as Cedar's request validation would; the error says what is
    /// wrong and where. `skip_key` is a context attribute that tether itself supplies
    /// (`task`), which the caller's context may leave out even when required.
    pub fn check(
        &self,
        principal: Euid,
        action: Euid,
        resource: Euid,
        context: Option<&Value>,
        skip_key: Option<Sym>,
        name: &dyn Fn(Sym) -> String,
    ) -> Result<(), String> {
        let shown = |e: Euid| format!("{}::{:?}", name(e.ty), name(e.id));
        let Some(a) = self.actions.get(&action) else {
            return Err(format!(
                "request's action {} is not declared in the schema",
                shown(action)
            ));
        };
        if !a.principals.contains(&principal.ty) {
            return Err(format!(
                "principal type `{}` is not valid for {}",
                name(principal.ty),
                a.display
            ));
        }
        if !a.resources.contains(&resource.ty) {
            return Err(format!(
                "resource type `{}` is not valid for {}",
                name(resource.ty),
                a.display
            ));
        }
        // No context is the empty record; checked without building one (no allocation).
        let empty = crate::value::Record::default();
        let res = match (&a.context, context) {
            (Shape::Record { attrs, open }, None) => {
                check_record(attrs, *open, &empty, skip_key, name)
            }
            (Shape::Record { attrs, open }, Some(Value::Record(r))) => {
                check_record(attrs, *open, r, skip_key, name)
            }
            (shape, Some(v)) => check(shape, v, name),
            (shape, None) => Err(Mismatch {
                path: String::new(),
                msg: format!("expected {}, got no context", shape_name(shape)),
            }),
        };
        res.map_err(|m| {
            format!(
                "context is not valid for {}: context{}: {}",
                a.display,
                if m.path.is_empty() {
                    String::new()
                } else {
                    m.path
                },
                m.msg
            )
        })
    }
}

/// `skip`: an attribute tether supplies itself, which may be absent even if required.
fn check_record(
    attrs: &[(Sym, Shape, bool)],
    open: bool,
    r: &crate::value::Record,
    skip: Option<Sym>,
    name: &dyn Fn(Sym) -> String,
) -> Result<(), Mismatch> {
    for (k, fv) in &r.fields {
        match attrs.binary_search_by_key(k, |(s, _, _)| *s) {
            Ok(i) => check(&attrs[i].1, fv, name).map_err(|mut m| {
                m.path.insert_str(0, &format!(".{}", name(*k)));
                m
            })?,
            Err(_) if open => {}
            Err(_) => {
                return Err(Mismatch {
                    path: String::new(),
                    msg: format!("unexpected attribute `{}`", name(*k)),
                })
            }
        }
    }
    for (k, _, required) in attrs {
        if *required && Some(*k) != skip && r.get(*k).is_none() {
            return Err(Mismatch {
                path: String::new(),
                msg: format!("missing required attribute `{}`", name(*k)),
            });
        }
    }
    Ok(())
}

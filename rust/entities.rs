//! The entity store: attributes as typed values, ancestor sets precomputed.
//!
//! Cedar's crate parses and validates entity JSON (against the schema when one
//! is given, which also adds the schema's action entities); we then convert the
//! canonical JSON it emits into our values and compute each entity's transitive
//! ancestors once, so `in` is a hash probe at request time.

use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};
use serde_json::Value as Json;

use crate::error::TetherError;
use crate::eval::ext;
use crate::value::{Euid, Interner, Record, Sym, Value};

/// Where strings get their symbols: the snapshot interner while building, or
/// request-local symbols while converting a request.
pub trait SymSink {
    fn sym(&mut self, s: &str) -> Sym;
    fn resolve(&self, s: Sym) -> Option<String>;
}

impl SymSink for Interner {
    fn sym(&mut self, s: &str) -> Sym {
        self.intern(s)
    }
    fn resolve(&self, s: Sym) -> Option<String> {
        self.get(s).map(str::to_owned)
    }
}

#[derive(Debug, Clone)]
pub struct EntityData {
    pub attrs: Arc<Record>,
    pub tags: Arc<Record>,
    /// Direct parents as given; ancestors are derived from these.
    pub parents: Vec<Euid>,
    pub ancestors: FxHashSet<Euid>,
}

#[derive(Debug, Clone, Default)]
pub struct EntityStore {
    map: FxHashMap<Euid, EntityData>,
    /// `Type::"id"` text of every stored entity whose id needs no escaping, so a
    /// request naming an entity by string costs one hash probe.
    by_text: FxHashMap<Box<str>, Euid>,
}

impl EntityStore {
    #[inline]
    pub fn get(&self, uid: &Euid) -> Option<&EntityData> {
        self.map.get(uid)
    }

    #[inline]
    pub fn is_ancestor(&self, uid: &Euid, anc: &Euid) -> bool {
        self.map.get(uid).is_some_and(|e| e.ancestors.contains(anc))
    }

    pub fn ancestors(&self, uid: &Euid) -> Option<&FxHashSet<Euid>> {
        self.map.get(uid).map(|e| &e.ancestors)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// How many stored entities satisfy `f` (e.g. the schema's action entities).
    pub fn count_where(&self, f: impl Fn(&Euid) -> bool) -> usize {
        self.map.keys().filter(|u| f(u)).count()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn upsert(&mut self, uid: Euid, data: EntityData) {
        self.map.insert(uid, data);
    }

    pub fn remove(&mut self, uid: &Euid) -> bool {
        self.map.remove(uid).is_some()
    }

    #[inline]
    pub fn uid_by_text(&self, text: &str) -> Option<Euid> {
        self.by_text.get(text).copied()
    }

    /// Derive ancestors and the text index after a change.
    /// `named` are uids the policies mention (actions, mostly), indexed too.
    pub fn finish(&mut self, interner: &Interner, named: &[Euid]) {
        self.recompute_ancestors();
        self.by_text = self
            .map
            .keys()
            .chain(named)
            .filter_map(|u| {
                let (ty, id) = (interner.get(u.ty)?, interner.get(u.id)?);
                (!id.contains(['"', '\\'])).then(|| (format!("{ty}::\"{id}\"").into(), *u))
            })
            .collect();
    }

    /// Recompute every entity's transitive ancestors from direct parents.
    /// Parents absent from the store still count as ancestors (as in Cedar).
    pub fn recompute_ancestors(&mut self) {
        let parents: FxHashMap<Euid, Vec<Euid>> = self
            .map
            .iter()
            .map(|(k, v)| (*k, v.parents.clone()))
            .collect();
        for (uid, data) in self.map.iter_mut() {
            let mut seen = FxHashSet::default();
            let mut stack: Vec<Euid> = parents.get(uid).cloned().unwrap_or_default();
            while let Some(p) = stack.pop() {
                if seen.insert(p) {
                    if let Some(pp) = parents.get(&p) {
                        stack.extend(pp.iter().copied());
                    }
                }
            }
            data.ancestors = seen;
        }
    }
}

const MAX_DEPTH: usize = 512;

fn uid_from_json(j: &Json, sink: &mut dyn SymSink) -> Result<Euid, String> {
    let obj = j.as_object().ok_or("entity reference must be an object")?;
    let obj = match obj.get("__entity") {
        Some(inner) => inner.as_object().ok_or("`__entity` must be an object")?,
        None => obj,
    };
    let ty = obj
        .get("type")
        .and_then(Json::as_str)
        .ok_or("entity reference needs a string `type`")?;
    let id = obj
        .get("id")
        .and_then(Json::as_str)
        .ok_or("entity reference needs a string `id`")?;
    Ok(Euid {
        ty: sink.sym(ty),
        id: sink.sym(id),
    })
}

/// Convert Cedar JSON (with explicit `__entity` / `__extn` escapes) to a value.
pub fn value_from_json(j: &Json, sink: &mut dyn SymSink, depth: usize) -> Result<Value, String> {
    if depth > MAX_DEPTH {
        return Err(format!("value nested deeper than {MAX_DEPTH} levels"));
    }
    Ok(match j {
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => Value::Long(
            n.as_i64()
                .ok_or_else(|| format!("number {n} is not a 64-bit integer"))?,
        ),
        Json::String(s) => Value::Str(sink.sym(s)),
        Json::Array(items) => Value::set_from(
            items
                .iter()
                .map(|i| value_from_json(i, sink, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        Json::Object(obj) => {
            if obj.len() == 1 {
                if let Some(e) = obj.get("__entity") {
                    return Ok(Value::Entity(uid_from_json(e, sink)?));
                }
                if let Some(x) = obj.get("__extn") {
                    return extn_from_json(x, sink, depth);
                }
            }
            let mut fields = Vec::with_capacity(obj.len());
            for (k, v) in obj {
                fields.push((sink.sym(k), value_from_json(v, sink, depth + 1)?));
            }
            Value::Record(Arc::new(Record::from_unsorted(fields)))
        }
        Json::Null => return Err("null is not a Cedar value".into()),
    })
}

fn extn_from_json(x: &Json, sink: &mut dyn SymSink, depth: usize) -> Result<Value, String> {
    let fname = x
        .get("fn")
        .and_then(Json::as_str)
        .ok_or("`__extn` needs a string `fn`")?;
    let args: Vec<&Json> = match (x.get("arg"), x.get("args")) {
        (Some(a), None) => vec![a],
        (None, Some(Json::Array(a))) => a.iter().collect(),
        _ => return Err("`__extn` needs `arg` or an `args` list".into()),
    };
    let mut core_args = Vec::with_capacity(args.len());
    for a in args {
        let v = value_from_json(a, sink, depth + 1)?;
        let c = ext::value_to_core(&v, |s| sink.resolve(s))
            .ok_or_else(|| format!("bad argument to extension function `{fname}`"))?;
        core_args.push(c);
    }
    let name: cedar_policy_core::ast::Name = fname
        .parse()
        .map_err(|_| format!("unknown extension function `{fname}`"))?;
    let f = cedar_policy_core::extensions::Extensions::all_available()
        .func(&name)
        .map_err(|_| format!("unknown extension function `{fname}`"))?;
    match f.call(&core_args) {
        Ok(cedar_policy_core::ast::PartialValue::Value(v)) => ext::core_result_to_value(v)
            .ok_or_else(|| format!("extension function `{fname}` gave no value")),
        Ok(_) => Err(format!("extension function `{fname}` gave no value")),
        Err(e) => Err(format!("{fname}: {e}")),
    }
}

fn record_from_json(j: Option<&Json>, sink: &mut dyn SymSink) -> Result<Record, String> {
    match j {
        None | Some(Json::Null) => Ok(Record::default()),
        Some(Json::Object(_)) => match value_from_json(j.unwrap_or(&Json::Null), sink, 0)? {
            Value::Record(r) => Ok(Arc::try_unwrap(r).unwrap_or_else(|r| Record {
                fields: r.fields.clone(),
            })),
            _ => Err("expected an object".into()),
        },
        Some(_) => Err("expected an object".into()),
    }
}

/// Parse Cedar entity JSON through Cedar (validation, schema actions), then
/// convert to our store entries. `parents` are taken from the input as given
/// (direct parents) so later upserts recompute ancestry correctly.
pub fn parse_entities(
    text: &str,
    schema: Option<&cedar_policy::Schema>,
    interner: &mut Interner,
) -> Result<Vec<(Euid, EntityData)>, TetherError> {
    // Cedar parses the text itself (it rejects duplicate keys, which a JSON value hides).
    let parsed = cedar_policy::Entities::from_json_str(text, schema)
        .map_err(|e| TetherError::Entity(crate::error::render_diag(&e)))?;
    let json: Json = serde_json::from_str(text).map_err(|e| {
        TetherError::Entity(format!(
            "entities JSON at line {}, column {}: {e}",
            e.line(),
            e.column()
        ))
    })?;
    let json = &json;
    let canon = parsed
        .to_json_value()
        .map_err(|e| TetherError::Entity(e.to_string()))?;
    let mut direct: FxHashMap<Euid, Vec<Euid>> = FxHashMap::default();
    if let Json::Array(items) = json {
        for it in items {
            if let (Some(uid), Some(Json::Array(ps))) = (it.get("uid"), it.get("parents")) {
                let uid = uid_from_json(uid, interner).map_err(TetherError::Entity)?;
                let ps = ps
                    .iter()
                    .map(|p| uid_from_json(p, interner))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(TetherError::Entity)?;
                direct.insert(uid, ps);
            }
        }
    }
    let items = canon
        .as_array()
        .ok_or_else(|| TetherError::Entity("entities must be a JSON list".into()))?;
    let mut out = Vec::with_capacity(items.len());
    for (i, it) in items.iter().enumerate() {
        let at = |m: String| TetherError::Entity(format!("entity #{i}: {m}"));
        let uid = uid_from_json(it.get("uid").unwrap_or(&Json::Null), interner).map_err(at)?;
        let attrs = record_from_json(it.get("attrs"), interner).map_err(at)?;
        let tags = record_from_json(it.get("tags"), interner).map_err(at)?;
        let parents = match direct.remove(&uid) {
            Some(p) => p,
            None => match it.get("parents") {
                Some(Json::Array(ps)) => ps
                    .iter()
                    .map(|p| uid_from_json(p, interner))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(at)?,
                _ => Vec::new(),
            },
        };
        out.push((
            uid,
            EntityData {
                attrs: Arc::new(attrs),
                tags: Arc::new(tags),
                parents,
                ancestors: FxHashSet::default(),
            },
        ));
    }
    Ok(out)
}

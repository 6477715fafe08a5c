//! The entity store: attributes as typed values, ancestor sets precomputed.
//!
//! Cedar's crate parses and validates entity JSON (against the schema when one
//! is given, which also adds the schema's action entities); we convert its
//! entities into our values and keep each entity's transitive ancestors, so `in`
//! is a hash probe at request time.
//!
//! The store is persistent (`PMap`): a snapshot's store is shared with the next,
//! and a change copies only what it touches. Ancestor sets are maintained
//! incrementally: a change recomputes the changed entities and their
//! descendants, each once, parents before children, from its parents' sets.

use std::collections::BTreeSet;
use std::sync::Arc;

use cedar_policy_core::ast::{
    Entity as CoreEntity, EntityType, EntityUID, Literal, PartialValue, Value as CoreValue,
    ValueKind,
};
use cedar_policy_core::entities::{EntityJsonParser, TCComputation};
use cedar_policy_core::extensions::Extensions;
use cedar_policy_core::validator::CoreSchema;
use rustc_hash::{FxHashMap, FxHashSet};

use crate::error::TetherError;
use crate::pmap::PMap;
use crate::value::{Euid, Interner, Record, Value};

#[derive(Debug, Clone)]
pub struct EntityData {
    pub attrs: Arc<Record>,
    pub tags: Arc<Record>,
    /// Direct parents as given (sorted, no duplicates); ancestors derive from these.
    pub parents: Vec<Euid>,
    pub ancestors: FxHashSet<Euid>,
}

/// What a change touched: entities whose data or ancestor set changed.
#[derive(Debug, Default)]
pub struct Touched {
    pub uids: Vec<Euid>,
}

#[derive(Debug, Clone, Default)]
pub struct EntityStore {
    map: PMap<Euid, Arc<EntityData>>,
    /// `Type::"id"` text of every stored entity whose id needs no escaping, so a
    /// request naming an entity by string costs one hash probe.
    by_text: PMap<Arc<str>, Euid>,
    /// The same for uids the policies name (they need not be stored).
    named_text: Arc<FxHashMap<Box<str>, Euid>>,
    /// Direct children of each parent (stored or not): who to revisit when a
    /// parent's ancestry changes.
    children: PMap<Euid, Arc<Vec<Euid>>>,
    /// Stored entities of an action type.
    actions: Arc<BTreeSet<Euid>>,
}

fn is_action_type(ty: &str) -> bool {
    ty == "Action" || ty.ends_with("::Action")
}

fn uid_text(interner: &Interner, u: &Euid) -> Option<String> {
    let (ty, id) = (interner.get(u.ty)?, interner.get(u.id)?);
    (!id.contains(['"', '\\'])).then(|| format!("{ty}::\"{id}\""))
}

impl EntityStore {
    #[inline]
    pub fn get(&self, uid: &Euid) -> Option<&EntityData> {
        self.map.get(uid).map(|e| &**e)
    }

    #[inline]
    pub fn is_ancestor(&self, uid: &Euid, anc: &Euid) -> bool {
        self.get(uid).is_some_and(|e| e.ancestors.contains(anc))
    }

    pub fn ancestors(&self, uid: &Euid) -> Option<&FxHashSet<Euid>> {
        self.get(uid).map(|e| &e.ancestors)
    }

    pub fn uids(&self) -> impl Iterator<Item = Euid> + '_ {
        self.map.keys().copied()
    }

    /// Stored entities of an action type (`Action`, `NS::Action`), in order.
    pub fn action_uids(&self) -> impl Iterator<Item = Euid> + '_ {
        self.actions.iter().copied()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    #[inline]
    pub fn uid_by_text(&self, text: &str) -> Option<Euid> {
        self.by_text
            .get(text)
            .or_else(|| self.named_text.get(text))
            .copied()
    }

    /// Index the uids the policies name, so requests can name them by text too.
    pub fn set_named(&mut self, interner: &Interner, named: &[Euid]) {
        self.named_text = Arc::new(
            named
                .iter()
                .filter_map(|u| Some((uid_text(interner, u)?.into(), *u)))
                .collect(),
        );
    }

    fn link(&mut self, parent: Euid, child: Euid) {
        match self.children.get_mut(&parent) {
            Some(list) => Arc::make_mut(list).push(child),
            None => {
                self.children.insert(parent, Arc::new(vec![child]));
            }
        }
    }

    fn unlink(&mut self, parent: Euid, child: Euid) {
        let Some(list) = self.children.get_mut(&parent) else {
            return;
        };
        let list = Arc::make_mut(list);
        if let Some(i) = list.iter().position(|c| *c == child) {
            list.swap_remove(i);
        }
        if list.is_empty() {
            self.children.remove(&parent);
        }
    }

    /// Add or replace `upserts` and drop `removes`, then bring the ancestor sets
    /// of every affected entity up to date. Fails (the store is then unusable:
    /// callers work on a copy) if the change makes the hierarchy cyclic, which
    /// Cedar rejects too.
    pub fn apply(
        &mut self,
        upserts: Vec<(Euid, EntityData)>,
        removes: &[Euid],
        interner: &Interner,
    ) -> Result<Touched, TetherError> {
        let mut touched = Vec::with_capacity(upserts.len() + removes.len());
        // Entities whose ancestry may have changed: their descendants follow.
        let mut roots: Vec<Euid> = Vec::new();
        let mut actions_changed = false;
        self.map.reserve(upserts.len());
        self.by_text.reserve(upserts.len());
        for (uid, mut data) in upserts {
            data.parents.sort_unstable();
            data.parents.dedup();
            touched.push(uid);
            let old = self.map.get(&uid).cloned();
            let old_parents: &[Euid] = old.as_deref().map_or(&[], |o| &o.parents);
            if old_parents != data.parents.as_slice() {
                for p in old_parents {
                    if data.parents.binary_search(p).is_err() {
                        self.unlink(*p, uid);
                    }
                }
                for p in &data.parents {
                    if old_parents.binary_search(p).is_err() {
                        self.link(*p, uid);
                    }
                }
                roots.push(uid);
            } else if let Some(o) = &old {
                // Same parents: the ancestor set carries over.
                data.ancestors = o.ancestors.clone();
            }
            if old.is_none() {
                if let Some(t) = uid_text(interner, &uid) {
                    self.by_text.insert(t.into(), uid);
                }
                if interner.get(uid.ty).is_some_and(is_action_type) {
                    actions_changed = true;
                }
            }
            self.map.insert(uid, Arc::new(data));
        }
        for uid in removes {
            let Some(old) = self.map.remove(uid) else {
                continue;
            };
            touched.push(*uid);
            for p in &old.parents {
                self.unlink(*p, *uid);
            }
            if !old.parents.is_empty() {
                roots.push(*uid);
            }
            if let Some(t) = uid_text(interner, uid) {
                self.by_text.remove(t.as_str());
            }
            actions_changed |= self.actions.contains(uid);
        }
        if actions_changed {
            self.actions = Arc::new(
                self.map
                    .keys()
                    .filter(|u| interner.get(u.ty).is_some_and(is_action_type))
                    .copied()
                    .collect(),
            );
        }
        let dirty = self.descendants_of(&roots);
        self.recompute(&dirty, interner)?;
        touched.extend(dirty.iter().copied());
        Ok(Touched { uids: touched })
    }

    /// `roots` and everything below them, as far as it is stored.
    fn descendants_of(&self, roots: &[Euid]) -> FxHashSet<Euid> {
        let mut seen: FxHashSet<Euid> = FxHashSet::default();
        let mut stack: Vec<Euid> = roots.to_vec();
        while let Some(u) = stack.pop() {
            if !seen.insert(u) {
                continue;
            }
            if let Some(kids) = self.children.get(&u) {
                stack.extend(kids.iter().filter(|k| !seen.contains(*k)).copied());
            }
        }
        seen.retain(|u| self.map.contains_key(u));
        seen
    }

    /// Recompute the ancestor sets of `dirty` (every other entity's set is
    /// current): depth-first over parents, without recursion, so each set is
    /// built once from its parents' finished sets; a parent met again while
    /// still open is a cycle.
    fn recompute(
        &mut self,
        dirty: &FxHashSet<Euid>,
        interner: &Interner,
    ) -> Result<(), TetherError> {
        // 1: open, 2: done; absent: not visited (or not dirty).
        let mut state: FxHashMap<Euid, u8> = FxHashMap::default();
        state.reserve(dirty.len());
        let mut stack: Vec<(Euid, usize)> = Vec::new();
        for &start in dirty {
            if state.contains_key(&start) {
                continue;
            }
            state.insert(start, 1);
            stack.push((start, 0));
            while let Some(top) = stack.last_mut() {
                let (u, i) = *top;
                let parent = self.get(&u).and_then(|e| e.parents.get(i).copied());
                if let Some(p) = parent {
                    top.1 += 1;
                    if !dirty.contains(&p) {
                        continue;
                    }
                    match state.get(&p) {
                        None => {
                            state.insert(p, 1);
                            stack.push((p, 0));
                        }
                        Some(1) => return Err(cycle_error(&stack, p, interner)),
                        _ => {}
                    }
                    continue;
                }
                stack.pop();
                let anc = self.union_of_parents(&u);
                if let Some(e) = self.map.get_mut(&u) {
                    if e.ancestors != anc {
                        Arc::make_mut(e).ancestors = anc;
                    }
                }
                state.insert(u, 2);
            }
        }
        Ok(())
    }

    /// The parents of `u` and all their ancestors (their sets are current).
    fn union_of_parents(&self, u: &Euid) -> FxHashSet<Euid> {
        let parents: &[Euid] = self.get(u).map_or(&[], |e| &e.parents);
        let sets: Vec<Option<&FxHashSet<Euid>>> =
            parents.iter().map(|p| self.ancestors(p)).collect();
        // Start from the largest parent set (a copy of a table, not a rebuild).
        let largest = (0..parents.len()).max_by_key(|&i| sets[i].map_or(0, |s| s.len()));
        let mut out = largest.and_then(|i| sets[i].cloned()).unwrap_or_default();
        for (i, p) in parents.iter().enumerate() {
            out.insert(*p);
            if Some(i) != largest {
                if let Some(s) = sets[i] {
                    out.extend(s.iter().copied());
                }
            }
        }
        out
    }
}

/// Cedar rejects a cyclic hierarchy; name the entities on the cycle.
fn cycle_error(stack: &[(Euid, usize)], back_to: Euid, interner: &Interner) -> TetherError {
    let name = |u: &Euid| {
        format!(
            "{}::{:?}",
            interner.get(u.ty).unwrap_or("?"),
            interner.get(u.id).unwrap_or("?")
        )
    };
    let from = stack.iter().position(|(u, _)| *u == back_to).unwrap_or(0);
    let mut path: Vec<String> = stack[from..].iter().map(|(u, _)| name(u)).collect();
    path.push(name(&back_to));
    TetherError::Entity(format!(
        "entity hierarchy has a cycle: {} (each is a parent of the one before)",
        path.join(" -> ")
    ))
}

const MAX_DEPTH: usize = 512;

/// Symbols for Cedar uids, caching the rendered type name per entity type.
struct UidSyms<'a> {
    interner: &'a mut Interner,
    types: FxHashMap<EntityType, u32>,
}

impl UidSyms<'_> {
    fn euid(&mut self, u: &EntityUID) -> Euid {
        let ty = match self.types.get(u.entity_type()) {
            Some(t) => *t,
            None => {
                let t = self.interner.intern(&u.entity_type().to_string());
                self.types.insert(u.entity_type().clone(), t);
                t
            }
        };
        Euid {
            ty,
            id: self.interner.intern(u.eid().as_ref()),
        }
    }

    fn value(&mut self, v: &CoreValue, depth: usize) -> Result<Value, String> {
        if depth > MAX_DEPTH {
            return Err(format!("value nested deeper than {MAX_DEPTH} levels"));
        }
        Ok(match &v.value {
            ValueKind::Lit(Literal::Bool(b)) => Value::Bool(*b),
            ValueKind::Lit(Literal::Long(i)) => Value::Long(*i),
            ValueKind::Lit(Literal::String(s)) => Value::Str(self.interner.intern(s)),
            ValueKind::Lit(Literal::EntityUID(u)) => Value::Entity(self.euid(u)),
            ValueKind::Set(set) => Value::set_from(
                set.iter()
                    .map(|i| self.value(i, depth + 1))
                    .collect::<Result<_, _>>()?,
            ),
            ValueKind::Record(r) => {
                let mut fields = Vec::with_capacity(r.len());
                for (k, v) in r.iter() {
                    fields.push((self.interner.intern(k), self.value(v, depth + 1)?));
                }
                Value::Record(Arc::new(Record::from_unsorted(fields)))
            }
            ValueKind::ExtensionValue(_) => Value::Ext(Arc::new(v.clone())),
        })
    }

    fn record<'v>(
        &mut self,
        fields: impl Iterator<Item = (&'v smol_str::SmolStr, &'v PartialValue)>,
    ) -> Result<Record, String> {
        let mut out = Vec::new();
        for (k, v) in fields {
            let PartialValue::Value(v) = v else {
                return Err(format!("attribute `{k}` has no concrete value"));
            };
            out.push((self.interner.intern(k), self.value(v, 1)?));
        }
        Ok(Record::from_unsorted(out))
    }

    fn entity(&mut self, e: &CoreEntity) -> Result<(Euid, EntityData), String> {
        let uid = self.euid(e.uid());
        let attrs = self.record(e.attrs())?;
        let tags = self.record(e.tags())?;
        let parents = e.parents().map(|p| self.euid(p)).collect();
        Ok((
            uid,
            EntityData {
                attrs: attrs.shared(),
                tags: tags.shared(),
                parents,
                ancestors: FxHashSet::default(),
            },
        ))
    }
}

/// Parse Cedar entity JSON through Cedar (validation, schema actions) and
/// convert to store entries with their direct parents (ancestors are ours to
/// compute: `EntityStore::apply`).
pub fn parse_entities(
    text: &str,
    schema: Option<&cedar_policy::Schema>,
    interner: &mut Interner,
) -> Result<Vec<(Euid, EntityData)>, TetherError> {
    if schema.is_none() {
        if let Some(plain) = crate::entities_json::read_plain(text, interner) {
            return Ok(plain);
        }
    }
    let core_schema = schema.map(|s| CoreSchema::new(s.as_ref()));
    let parse = |tc| {
        EntityJsonParser::new(core_schema.as_ref(), Extensions::all_available(), tc)
            .from_json_str(text)
            .map_err(|e| TetherError::Entity(crate::error::render_diag(&e)))
    };
    // Cedar's own closure is quadratic on deep hierarchies; ours is not, so Cedar
    // is told the closure is done. Only a schema's check of action entities reads
    // the closure: if that fails, parse again the way Cedar does by default.
    let parsed = match parse(TCComputation::AssumeAlreadyComputed) {
        Ok(p) => p,
        Err(first) => match schema {
            Some(_) => parse(TCComputation::ComputeNow)?,
            None => return Err(first),
        },
    };
    convert_core(&parsed, interner)
}

/// Cedar's entities as store entries (direct parents; ancestors are ours).
pub fn convert_core(
    parsed: &cedar_policy_core::entities::Entities,
    interner: &mut Interner,
) -> Result<Vec<(Euid, EntityData)>, TetherError> {
    let mut syms = UidSyms {
        interner,
        types: FxHashMap::default(),
    };
    parsed
        .iter()
        .enumerate()
        .map(|(i, e)| {
            syms.entity(e)
                .map_err(|m| TetherError::Entity(format!("entity #{i} ({}): {m}", e.uid())))
        })
        .collect()
}

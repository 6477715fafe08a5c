//! Runtime values and the string interner.
//!
//! Every string the engine sees (entity types and ids, attribute names, string
//! constants and attribute values) is interned to a dense `Sym` when a snapshot
//! is built, so equality is an integer compare and cloning a value never
//! touches a refcount for scalars. Strings that first appear in a request (an
//! unknown context value, say) get request-local symbols above the snapshot's
//! range; see `eval::Request`.

use std::cmp::Ordering;
use std::sync::Arc;

use rustc_hash::FxHashMap;

/// An interned string.
pub type Sym = u32;

/// An entity uid: interned type name and interned id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Euid {
    pub ty: Sym,
    pub id: Sym,
}

/// A Cedar value.
///
/// Sets and records are kept in canonical order (sorted by `canonical_cmp`,
/// deduplicated) so structural equality is Cedar's set/record equality.
#[derive(Clone, Debug)]
pub enum Value {
    Bool(bool),
    Long(i64),
    Str(Sym),
    Entity(Euid),
    Set(Arc<[Value]>),
    Record(Arc<Record>),
    /// Extension values (decimal, ipaddr, datetime, duration) stay in Cedar's own
    /// representation so every extension function is Cedar's own code.
    Ext(Arc<cedar_policy_core::ast::Value>),
}

/// A record: fields sorted by key symbol.
#[derive(Debug, Default)]
pub struct Record {
    pub fields: Vec<(Sym, Value)>,
}

impl Record {
    /// Behind an `Arc`, sharing one allocation for every empty record (most
    /// entities have no tags, many no attributes).
    pub fn shared(self) -> Arc<Record> {
        static EMPTY: std::sync::OnceLock<Arc<Record>> = std::sync::OnceLock::new();
        if self.fields.is_empty() {
            EMPTY.get_or_init(Default::default).clone()
        } else {
            Arc::new(self)
        }
    }

    pub fn from_unsorted(mut fields: Vec<(Sym, Value)>) -> Self {
        fields.sort_by_key(|(k, _)| *k);
        fields.dedup_by_key(|(k, _)| *k);
        Record { fields }
    }

    #[inline]
    pub fn get(&self, key: Sym) -> Option<&Value> {
        // Records are small; a linear scan beats binary search below ~16 fields.
        if self.fields.len() <= 16 {
            self.fields.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
        } else {
            self.fields
                .binary_search_by_key(&key, |(k, _)| *k)
                .ok()
                .map(|i| &self.fields[i].1)
        }
    }
}

impl Value {
    pub fn set_from(mut items: Vec<Value>) -> Value {
        items.sort_by(canonical_cmp);
        items.dedup_by(|a, b| canonical_cmp(a, b) == Ordering::Equal);
        Value::Set(items.into())
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Bool(_) => "bool",
            Value::Long(_) => "long",
            Value::Str(_) => "string",
            Value::Entity(_) => "entity",
            Value::Set(_) => "set",
            Value::Record(_) => "record",
            Value::Ext(v) => match &v.value {
                cedar_policy_core::ast::ValueKind::ExtensionValue(e) => ext_type_name(e.typename()),
                _ => "extension",
            },
        }
    }
}

fn ext_type_name(name: cedar_policy_core::ast::Name) -> &'static str {
    match name.to_string().as_str() {
        "decimal" => "decimal",
        "ipaddr" => "ipaddr",
        "datetime" => "datetime",
        "duration" => "duration",
        _ => "extension",
    }
}

#[inline]
pub(crate) fn rank(v: &Value) -> u8 {
    match v {
        Value::Bool(_) => 0,
        Value::Long(_) => 1,
        Value::Str(_) => 2,
        Value::Entity(_) => 3,
        Value::Set(_) => 4,
        Value::Record(_) => 5,
        Value::Ext(_) => 6,
    }
}

/// A total order used only to canonicalise sets; equality under it is Cedar equality.
pub fn canonical_cmp(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Long(x), Value::Long(y)) => x.cmp(y),
        (Value::Str(x), Value::Str(y)) => x.cmp(y),
        (Value::Entity(x), Value::Entity(y)) => x.cmp(y),
        (Value::Set(x), Value::Set(y)) => x.len().cmp(&y.len()).then_with(|| {
            for (p, q) in x.iter().zip(y.iter()) {
                let o = canonical_cmp(p, q);
                if o != Ordering::Equal {
                    return o;
                }
            }
            Ordering::Equal
        }),
        (Value::Record(x), Value::Record(y)) => {
            x.fields.len().cmp(&y.fields.len()).then_with(|| {
                for ((kp, p), (kq, q)) in x.fields.iter().zip(y.fields.iter()) {
                    let o = kp.cmp(kq).then_with(|| canonical_cmp(p, q));
                    if o != Ordering::Equal {
                        return o;
                    }
                }
                Ordering::Equal
            })
        }
        (Value::Ext(x), Value::Ext(y)) => x.as_ref().cmp(y.as_ref()),
        _ => rank(a).cmp(&rank(b)),
    }
}

#[inline]
pub fn value_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Long(x), Value::Long(y)) => x == y,
        (Value::Str(x), Value::Str(y)) => x == y,
        (Value::Entity(x), Value::Entity(y)) => x == y,
        _ => canonical_cmp(a, b) == Ordering::Equal && rank(a) == rank(b),
    }
}

/// Interns strings to dense symbols. Read-only inside a snapshot; a writer clones
/// it and appends. A clone is cheap: the bulk lives in a shared, frozen `base`, and
/// only the recent `delta` is copied, until it grows to about sqrt(n) and is
/// folded in (amortised O(sqrt n) an intern, as is a clone).
#[derive(Clone, Default, Debug)]
pub struct Interner {
    base: Arc<InternTable>,
    delta: InternTable,
}

#[derive(Clone, Default, Debug)]
struct InternTable {
    map: FxHashMap<Arc<str>, Sym>,
    strs: Vec<Arc<str>>,
}

impl Interner {
    pub fn intern(&mut self, s: &str) -> Sym {
        if let Some(id) = self.lookup(s) {
            return id;
        }
        let id = self.len() as Sym;
        let a: Arc<str> = Arc::from(s);
        self.delta.strs.push(a.clone());
        self.delta.map.insert(a, id);
        // About sqrt(n) strings in the delta: a clone copies O(sqrt n), and a fold
        // (O(n)) comes once every O(sqrt n) interns.
        let limit = 4 * (self.base.strs.len() as f64).sqrt() as usize;
        if self.delta.strs.len() > limit.max(1024) {
            self.compact();
        }
        id
    }

    /// Fold the delta into the base (after a bulk load, so later clones are cheap).
    pub fn compact(&mut self) {
        if self.delta.strs.is_empty() {
            return;
        }
        let base = Arc::make_mut(&mut self.base);
        let delta = std::mem::take(&mut self.delta);
        base.map.extend(delta.map);
        base.strs.extend(delta.strs);
    }

    #[inline]
    pub fn lookup(&self, s: &str) -> Option<Sym> {
        match self.base.map.get(s) {
            Some(id) => Some(*id),
            None if self.delta.strs.is_empty() => None,
            None => self.delta.map.get(s).copied(),
        }
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.base.strs.len() + self.delta.strs.len()
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline]
    pub fn get(&self, id: Sym) -> Option<&str> {
        let i = id as usize;
        let b = self.base.strs.len();
        if i < b {
            Some(&self.base.strs[i])
        } else {
            self.delta.strs.get(i - b).map(|s| &**s)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_are_canonical() {
        let a = Value::set_from(vec![Value::Long(3), Value::Long(1), Value::Long(3)]);
        let b = Value::set_from(vec![Value::Long(1), Value::Long(3)]);
        assert!(value_eq(&a, &b));
        let c = Value::set_from(vec![Value::Long(1)]);
        assert!(!value_eq(&a, &c));
    }

    #[test]
    fn different_types_are_unequal() {
        assert!(!value_eq(&Value::Long(1), &Value::Bool(true)));
        assert!(!value_eq(&Value::Str(1), &Value::Long(1)));
    }

    #[test]
    fn interner_is_stable() {
        let mut i = Interner::default();
        let a = i.intern("a");
        let b = i.intern("b");
        assert_ne!(a, b);
        assert_eq!(i.intern("a"), a);
        assert_eq!(i.get(b), Some("b"));
        assert_eq!(i.lookup("zz"), None);
    }

    #[test]
    fn interner_clones_are_independent_across_folds() {
        let mut a = Interner::default();
        let ids: Vec<Sym> = (0..5000).map(|n| a.intern(&n.to_string())).collect();
        let b = a.clone();
        let more: Vec<Sym> = (5000..9000).map(|n| a.intern(&n.to_string())).collect();
        for (n, id) in ids.iter().enumerate() {
            assert_eq!(a.get(*id), Some(n.to_string().as_str()));
            assert_eq!(b.lookup(&n.to_string()), Some(*id));
        }
        for (n, id) in more.iter().enumerate() {
            assert_eq!(a.lookup(&(n + 5000).to_string()), Some(*id));
            assert_eq!(b.lookup(&(n + 5000).to_string()), None);
            assert_eq!(b.get(*id), None);
        }
        assert_eq!((a.len(), b.len()), (9000, 5000));
    }

    /// `Scalar::cmp_from` is the set order `canonical_cmp`, for every kind of
    /// set element against every kind of needle (a binary search relies on it).
    #[test]
    fn scalar_cmp_from_is_canonical_order() {
        use crate::compile::ir::Scalar;
        let e = |t, i| Euid { ty: t, id: i };
        let values = [
            Value::Bool(false),
            Value::Bool(true),
            Value::Long(-4),
            Value::Long(7),
            Value::Str(2),
            Value::Str(9),
            Value::Entity(e(1, 2)),
            Value::Entity(e(3, 0)),
            Value::set_from(vec![Value::Long(1)]),
            Value::Record(Arc::new(Record::from_unsorted(vec![(1, Value::Long(1))]))),
        ];
        let needles = [
            Scalar::Bool(true),
            Scalar::Long(7),
            Scalar::Long(0),
            Scalar::Str(2),
            Scalar::Str(5),
            Scalar::Entity(e(1, 2)),
            Scalar::Entity(e(2, 2)),
        ];
        for n in needles {
            for v in &values {
                assert_eq!(
                    n.cmp_from(v),
                    canonical_cmp(v, &n.value()),
                    "{v:?} vs {n:?}"
                );
            }
        }
    }
}

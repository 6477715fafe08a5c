//! A fast reader for the plain subset of Cedar entity JSON (no schema).
//!
//! Cedar's parser builds a JSON tree per attribute, then an expression, then
//! evaluates it: most of a large load. Without a schema, the common shape
//! (`uid`/`attrs`/`parents`/`tags`; booleans, longs, strings, sets, records and
//! `__entity` references) has one meaning, which this reader produces in one
//! streaming pass. Anything else (an extension value, an unknown key, a `__`
//! key, a duplicate key or entity, a number that is not a 64-bit integer, an
//! invalid type name) makes it give up, and the caller parses the text with
//! Cedar instead, so every error and every unusual input is Cedar's. A
//! differential test compares both readers on Cedar's corpus.

use std::borrow::Cow;
use std::fmt;

use rustc_hash::FxHashSet;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::entities::EntityData;
use crate::value::{Euid, Interner, Record, Value};

const MAX_DEPTH: usize = 128;

/// Entities from `text`, or None if the text is outside the plain subset (or invalid).
pub fn read_plain(text: &str, interner: &mut Interner) -> Option<Vec<(Euid, EntityData)>> {
    let mut de = serde_json::Deserializer::from_str(text);
    let mut list = List {
        interner,
        out: Vec::new(),
        seen: FxHashSet::default(),
    };
    de.deserialize_seq(&mut list).ok()?;
    de.end().ok()?;
    Some(list.out)
}

struct List<'i> {
    interner: &'i mut Interner,
    out: Vec<(Euid, EntityData)>,
    seen: FxHashSet<Euid>,
}

impl<'de> Visitor<'de> for &mut List<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of entities")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(e) = seq.next_element::<PlainEntity<'de>>()? {
            let (uid, data) = convert(e, self.interner)
                .ok_or_else(|| de::Error::custom("outside the plain subset"))?;
            // Cedar accepts an identical duplicate and rejects a different one: leave both to Cedar.
            if !self.seen.insert(uid) {
                return Err(de::Error::custom("duplicate entity"));
            }
            self.out.push((uid, data));
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlainEntity<'a> {
    #[serde(borrow)]
    uid: PlainUid<'a>,
    #[serde(borrow)]
    attrs: PlainRecord<'a>,
    #[serde(borrow)]
    parents: Vec<PlainUid<'a>>,
    #[serde(borrow, default)]
    tags: PlainRecord<'a>,
}

struct PlainUid<'a> {
    ty: Cow<'a, str>,
    id: Cow<'a, str>,
}

#[derive(Default)]
struct PlainRecord<'a>(Vec<(Cow<'a, str>, PlainValue<'a>)>);

enum PlainValue<'a> {
    Bool(bool),
    Long(i64),
    Str(Cow<'a, str>),
    Set(Vec<PlainValue<'a>>),
    Record(PlainRecord<'a>),
    Entity(PlainUid<'a>),
}

/// A JSON string, borrowed from the text when it has no escapes.
struct Str<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(s)))
            }
        }
        d.deserialize_str(V)
    }
}

/// `{"type": .., "id": ..}` with exactly those keys; `inner`: no `__entity` wrapper allowed.
fn uid_from_map<'de, A: MapAccess<'de>>(
    mut map: A,
    inner: bool,
) -> Result<PlainUid<'de>, A::Error> {
    let (mut ty, mut id) = (None, None);
    while let Some(Str(k)) = map.next_key::<Str>()? {
        match &*k {
            "type" if ty.is_none() => ty = Some(map.next_value::<Str>()?.0),
            "id" if id.is_none() => id = Some(map.next_value::<Str>()?.0),
            "__entity" if !inner && ty.is_none() && id.is_none() => {
                let u = map.next_value_seed(UidSeed { inner: true })?;
                if map.next_key::<de::IgnoredAny>()?.is_some() {
                    return Err(de::Error::custom("extra key beside __entity"));
                }
                return Ok(u);
            }
            _ => return Err(de::Error::custom("unexpected key in entity reference")),
        }
    }
    match (ty, id) {
        (Some(ty), Some(id)) => Ok(PlainUid { ty, id }),
        _ => Err(de::Error::custom("entity reference needs type and id")),
    }
}

struct UidSeed {
    inner: bool,
}

impl<'de> DeserializeSeed<'de> for UidSeed {
    type Value = PlainUid<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for UidSeed {
    type Value = PlainUid<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an entity reference")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        uid_from_map(map, self.inner)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for PlainUid<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        UidSeed { inner: false }.deserialize(d)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for PlainRecord<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match (ValueSeed { depth: 0 }).deserialize(d)? {
            PlainValue::Record(r) => Ok(r),
            _ => Err(de::Error::custom("expected a record")),
        }
    }
}

struct ValueSeed {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = PlainValue<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        if self.depth > MAX_DEPTH {
            return Err(de::Error::custom("nested too deep"));
        }
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed {
    type Value = PlainValue<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a Cedar value")
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Self::Value, E> {
        Ok(PlainValue::Bool(b))
    }
    fn visit_i64<E: de::Error>(self, i: i64) -> Result<Self::Value, E> {
        Ok(PlainValue::Long(i))
    }
    fn visit_u64<E: de::Error>(self, u: u64) -> Result<Self::Value, E> {
        i64::try_from(u)
            .map(PlainValue::Long)
            .map_err(|_| E::custom("not a 64-bit integer"))
    }
    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(PlainValue::Str(Cow::Borrowed(s)))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Ok(PlainValue::Str(Cow::Owned(s.to_owned())))
    }
    fn visit_string<E: de::Error>(self, s: String) -> Result<Self::Value, E> {
        Ok(PlainValue::Str(Cow::Owned(s)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(ValueSeed {
            depth: self.depth + 1,
        })? {
            items.push(v);
        }
        Ok(PlainValue::Set(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = Vec::new();
        while let Some(Str(k)) = map.next_key::<Str>()? {
            if k.starts_with("__") {
                // `__entity` alone is a reference; any other escape is Cedar's to read.
                if k == "__entity" && fields.is_empty() {
                    let u = map.next_value_seed(UidSeed { inner: true })?;
                    if map.next_key::<de::IgnoredAny>()?.is_some() {
                        return Err(de::Error::custom("extra key beside __entity"));
                    }
                    return Ok(PlainValue::Entity(u));
                }
                return Err(de::Error::custom("escape outside the plain subset"));
            }
            let v = map.next_value_seed(ValueSeed {
                depth: self.depth + 1,
            })?;
            fields.push((k, v));
        }
        Ok(PlainValue::Record(PlainRecord(fields)))
    }
}

fn uid(u: &PlainUid<'_>, interner: &mut Interner) -> Option<Euid> {
    crate::request::valid_type(&u.ty).then(|| Euid {
        ty: interner.intern(&u.ty),
        id: interner.intern(&u.id),
    })
}

fn record(r: &PlainRecord<'_>, interner: &mut Interner) -> Option<Record> {
    let mut keys: Vec<&str> = r.0.iter().map(|(k, _)| &**k).collect();
    keys.sort_unstable();
    if keys.windows(2).any(|w| w[0] == w[1]) {
        return None;
    }
    let fields =
        r.0.iter()
            .map(|(k, v)| Some((interner.intern(k), value(v, interner)?)))
            .collect::<Option<Vec<_>>>()?;
    Some(Record::from_unsorted(fields))
}

fn value(v: &PlainValue<'_>, interner: &mut Interner) -> Option<Value> {
    Some(match v {
        PlainValue::Bool(b) => Value::Bool(*b),
        PlainValue::Long(i) => Value::Long(*i),
        PlainValue::Str(s) => Value::Str(interner.intern(s)),
        PlainValue::Entity(u) => Value::Entity(uid(u, interner)?),
        PlainValue::Set(items) => Value::set_from(
            items
                .iter()
                .map(|i| value(i, interner))
                .collect::<Option<_>>()?,
        ),
        PlainValue::Record(r) => Value::Record(std::sync::Arc::new(record(r, interner)?)),
    })
}

fn convert(e: PlainEntity<'_>, interner: &mut Interner) -> Option<(Euid, EntityData)> {
    let id = uid(&e.uid, interner)?;
    let attrs = record(&e.attrs, interner)?;
    let tags = record(&e.tags, interner)?;
    let parents = e
        .parents
        .iter()
        .map(|p| uid(p, interner))
        .collect::<Option<Vec<_>>>()?;
    Some((
        id,
        EntityData {
            attrs: attrs.shared(),
            tags: tags.shared(),
            parents,
            ancestors: FxHashSet::default(),
        },
    ))
}

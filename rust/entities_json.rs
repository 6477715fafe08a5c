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

#[cfg(test)]
mod tests {
    use super::*;

    /// Cedar's reading of `text` (no schema), converted, in our interner.
    fn cedar(text: &str, interner: &mut Interner) -> Result<Vec<(Euid, EntityData)>, String> {
        let parsed = cedar_policy_core::entities::EntityJsonParser::new(
            None::<&cedar_policy_core::entities::NoEntitiesSchema>,
            cedar_policy_core::extensions::Extensions::all_available(),
            cedar_policy_core::entities::TCComputation::AssumeAlreadyComputed,
        )
        .from_json_str(text)
        .map_err(|e| e.to_string())?;
        crate::entities::convert_core(&parsed, interner).map_err(|e| e.to_string())
    }

    fn canonical(mut v: Vec<(Euid, EntityData)>) -> Vec<String> {
        v.sort_by_key(|(u, _)| *u);
        v.into_iter()
            .map(|(u, mut d)| {
                d.parents.sort_unstable();
                d.parents.dedup();
                format!("{u:?} {:?} {:?} {:?}", d.attrs, d.tags, d.parents)
            })
            .collect()
    }

    /// The plain reader either gives up or reads exactly what Cedar reads (and
    /// never accepts what Cedar rejects).
    fn agrees(text: &str) -> Option<bool> {
        let mut interner = Interner::default();
        let theirs = cedar(text, &mut interner);
        let ours = read_plain(text, &mut interner)?;
        match theirs {
            Ok(t) => assert_eq!(canonical(ours), canonical(t), "differs on {text}"),
            Err(e) => panic!("plain reader accepted what Cedar rejects ({e}): {text}"),
        }
        Some(true)
    }

    #[test]
    fn edge_cases_agree_or_fall_back() {
        let uid = r#"{"type": "User", "id": "a"}"#;
        let one = |attrs: &str| format!(r#"[{{"uid": {uid}, "attrs": {attrs}, "parents": []}}]"#);
        // Read by the plain reader, identically to Cedar.
        for attrs in [
            r#"{}"#,
            r#"{"b": true, "n": -9223372036854775808, "s": "\u00e9\n", "x": 9223372036854775807}"#,
            r#"{"set": [1, 1, "a", true, [], {}], "r": {"type": "User", "id": "a"}}"#,
            r#"{"e": {"__entity": {"type": "NS::User", "id": ""}}, "deep": {"a": {"b": [{"c": 1}]}}}"#,
        ] {
            assert_eq!(agrees(&one(attrs)), Some(true), "{attrs}");
        }
        let with_parents = format!(
            r#"[{{"uid": {{"__entity": {uid}}}, "attrs": {{}}, "parents": [{uid}, {{"__entity": {{"type": "G", "id": "g"}}}}], "tags": {{"t": 1}}}}]"#
        );
        assert_eq!(agrees(&with_parents), Some(true));
        // Left to Cedar (accepted or rejected there).
        for attrs in [
            r#"{"a": 1, "a": 2}"#,
            r#"{"r": {"k": 1, "k": 1}}"#,
            r#"{"d": {"__extn": {"fn": "decimal", "arg": "1.5"}}}"#,
            r#"{"f": 1.5}"#,
            r#"{"big": 9223372036854775808}"#,
            r#"{"n": null}"#,
            r#"{"e": {"__entity": {"type": "User", "id": "a"}, "x": 1}}"#,
            r#"{"e": {"__entity": {"type": "if", "id": "a"}}}"#,
            r#"{"__entity": {"type": "User", "id": "a"}}"#,
            r#"{"e": {"__expr": "1"}}"#,
        ] {
            assert_eq!(agrees(&one(attrs)), None, "{attrs}");
        }
        for text in [
            r#"[{"uid": {"type": "User", "id": "a"}, "parents": []}]"#,
            r#"[{"uid": {"type": "User", "id": "a"}, "attrs": {}, "parents": [], "x": 1}]"#,
            r#"[{"uid": {"type": "Us er", "id": "a"}, "attrs": {}, "parents": []}]"#,
            r#"[{"uid": {"type": "User", "id": "a"}, "attrs": {}, "parents": []},
                {"uid": {"type": "User", "id": "a"}, "attrs": {}, "parents": []}]"#,
            r#"{"uid": {"type": "User", "id": "a"}, "attrs": {}, "parents": []}"#,
            r#"[] []"#,
        ] {
            assert_eq!(agrees(text), None, "{text}");
        }
    }

    /// Every entity file of Cedar's corpus: the plain reader agrees with Cedar
    /// wherever it reads at all, and reads most of them.
    #[test]
    fn corpus_entities_agree_with_cedar() {
        let Some(root) = std::env::var_os("TETHER_CEDAR_CORPUS") else {
            eprintln!("skipped: set TETHER_CEDAR_CORPUS to Cedar's integration tests");
            return;
        };
        let root = std::path::PathBuf::from(root);
        let mut texts = Vec::new();
        let file = std::fs::File::open(root.join("corpus-tests.tar.gz")).expect("corpus tarball");
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            if entry
                .path()
                .unwrap()
                .to_string_lossy()
                .ends_with(".entities.json")
            {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut entry, &mut s).unwrap();
                texts.push(s);
            }
        }
        for sample in ["sandbox_a", "sandbox_b"] {
            let p = root.join("sample-data").join(sample).join("entities.json");
            texts.push(std::fs::read_to_string(p).unwrap());
        }
        assert!(texts.len() > 1000, "only {} entity files", texts.len());
        let read = texts.iter().filter(|t| agrees(t).is_some()).count();
        eprintln!(
            "plain reader read {read} of {} corpus entity files",
            texts.len()
        );
        assert!(
            read * 2 > texts.len(),
            "read only {read} of {}",
            texts.len()
        );
    }
}

//! Python objects into core requests: entity arguments, context values, texts.

use std::sync::Arc;

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFrozenSet, PyInt, PyList, PySet, PyString, PyTuple};

use super::str_cache::{Seen, StrCache};
use crate::authorize::ContextFields;
use crate::compile::special::ActionPlan;
use crate::engine::{ResolvedRequest, Snapshot};
use crate::error::TetherError as CoreError;
use crate::eval::{self, Locals};
use crate::request;
use crate::value::{Euid, Record, Sym, Value};

/// A handle to an entity uid, resolved once; the fastest way to name an entity.
#[pyclass(frozen, module = "tether._core")]
pub(crate) struct Entity {
    pub(crate) uid: Euid,
    #[pyo3(get, name = "type")]
    pub(crate) ty: String,
    #[pyo3(get)]
    pub(crate) id: String,
    pub(crate) engine_id: usize,
}

#[pymethods]
impl Entity {
    pub(crate) fn __repr__(&self) -> String {
        format!("{}::{:?}", self.ty, self.id)
    }
    fn __str__(&self) -> String {
        self.__repr__()
    }
}
const MAX_DEPTH: usize = 256;

/// A context conversion error and the path (`.a.b[2]`) to the offending value.
struct PathErr {
    path: String,
    msg: String,
}

impl PathErr {
    fn new(msg: impl Into<String>) -> Self {
        PathErr {
            path: String::new(),
            msg: msg.into(),
        }
    }

    fn under(mut self, step: &str) -> Self {
        self.path.insert_str(0, step);
        self
    }
}

pub(crate) struct Converter<'s> {
    snap: &'s Snapshot,
    pub(crate) locals: Locals,
    engine_id: usize,
    /// The engine's string cache, when this thread could take it (see `StrCache`).
    strs: Option<&'s mut StrCache>,
}

impl<'s> Converter<'s> {
    pub(crate) fn new(snap: &'s Snapshot, engine_id: usize) -> Self {
        Converter {
            snap,
            locals: Locals::new(&snap.interner),
            engine_id,
            strs: None,
        }
    }

    /// Use `cache` for context strings: a caller takes the engine's cache with
    /// `try_lock` while it converts (with the GIL held, so all but never
    /// contended; when it is, because Python code run by a conversion let another
    /// thread in, that caller goes without).
    pub(crate) fn cached(mut self, cache: Option<&'s mut StrCache>) -> Self {
        self.strs = cache;
        self
    }

    fn sym(&mut self, s: &str) -> u32 {
        self.locals.sym(&self.snap.interner, s)
    }

    fn uid_parts(&mut self, ty: &str, id: &str) -> Result<Euid, CoreError> {
        request::check_type(ty)?;
        Ok(Euid {
            ty: self.sym(ty),
            id: self.sym(id),
        })
    }

    /// A stored entity named by its text: the common case, kept apart from the
    /// error-building general path so it stays small.
    #[inline(always)]
    fn known_uid(&self, s: &Bound<'_, PyString>) -> Option<Euid> {
        self.snap.store.uid_by_text(utf8(s)?)
    }

    /// `entity`, with the common case (a stored entity's text) tried first
    /// without building the general path's large result.
    #[inline(always)]
    fn entity_arg(&mut self, obj: &Bound<'_, PyAny>, role: &str) -> Result<Euid, CoreError> {
        if let Ok(s) = obj.downcast::<PyString>() {
            if let Some(uid) = self.known_uid(s) {
                return Ok(uid);
            }
        } else if let Some(h) = exact_handle(obj) {
            if h.engine_id == self.engine_id
                && self.locals.from_snapshot(h.uid.ty)
                && self.locals.from_snapshot(h.uid.id)
            {
                return Ok(h.uid);
            }
        }
        // Unknown names, other forms, another engine's handle, or one made after
        // the snapshot: the general path.
        self.entity(obj, role)
    }

    pub(crate) fn entity(&mut self, obj: &Bound<'_, PyAny>, role: &str) -> Result<Euid, CoreError> {
        if let Ok(s) = obj.downcast::<PyString>() {
            if let Some(uid) = self.known_uid(s) {
                return Ok(uid);
            }
            let s = s
                .to_str()
                .map_err(|_| CoreError::Request(format!("{role}: not valid UTF-8")))?;
            // `parse_uid` has validated the type name already.
            let (ty, id) =
                request::parse_uid(s).map_err(|e| CoreError::Request(format!("{role}: {e}")))?;
            return Ok(Euid {
                ty: self.sym(ty),
                id: self.sym(&id),
            });
        }
        if let Ok(h) = obj.downcast::<Entity>() {
            let h = h.get();
            if h.engine_id != self.engine_id {
                return Err(CoreError::Request(format!(
                    "{role}: entity handle {} belongs to another engine",
                    h.__repr__()
                )));
            }
            // A handle made after this snapshot was taken carries symbols the snapshot
            // has never seen, which could equal this request's local symbols; such a
            // handle is resolved by its text like any other name.
            if self.locals.from_snapshot(h.uid.ty) && self.locals.from_snapshot(h.uid.id) {
                return Ok(h.uid);
            }
            return Ok(Euid {
                ty: self.sym(&h.ty),
                id: self.sym(&h.id),
            });
        }
        if let Ok(t) = obj.downcast::<PyTuple>() {
            if t.len() == 2 {
                if let (Ok(ty), Ok(id)) = (
                    t.get_item(0).and_then(|x| x.extract::<String>()),
                    t.get_item(1).and_then(|x| x.extract::<String>()),
                ) {
                    return self.uid_parts(&ty, &id);
                }
            }
        }
        if let Ok(d) = obj.downcast::<PyDict>() {
            let inner = match d.get_item(intern!(d.py(), "__entity")).ok().flatten() {
                Some(i) => i,
                None => d.clone().into_any(),
            };
            if let Ok(d) = inner.downcast::<PyDict>() {
                let ty = d
                    .get_item(intern!(d.py(), "type"))
                    .ok()
                    .flatten()
                    .and_then(|x| x.extract::<String>().ok());
                let id = d
                    .get_item(intern!(d.py(), "id"))
                    .ok()
                    .flatten()
                    .and_then(|x| x.extract::<String>().ok());
                if let (Some(ty), Some(id)) = (ty, id) {
                    return self.uid_parts(&ty, &id);
                }
            }
        }
        Err(CoreError::Request(format!(
            "{role}: expected 'Type::\"id\"', a (type, id) tuple, an engine.entity() handle or \
             {{\"type\": .., \"id\": ..}}, got {}",
            obj.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        )))
    }

    /// The common context values (exact `bool`, `int` within 64 bits, `str`);
    /// None for anything else, which `value_general` converts (or rejects with
    /// its message).
    #[inline(always)]
    fn scalar(&mut self, obj: &Bound<'_, PyAny>) -> Option<Value> {
        let p = obj.as_ptr();
        // SAFETY: `obj` is a live object; these read its type and, for an exact
        // int, its value (with overflow reported, not wrapped).
        unsafe {
            if p == pyo3::ffi::Py_True() {
                return Some(Value::Bool(true));
            }
            if p == pyo3::ffi::Py_False() {
                return Some(Value::Bool(false));
            }
            if pyo3::ffi::PyLong_CheckExact(p) != 0 {
                let mut overflow = 0;
                let v = pyo3::ffi::PyLong_AsLongLongAndOverflow(p, &mut overflow);
                let failed = v == -1 && !pyo3::ffi::PyErr_Occurred().is_null();
                return (overflow == 0 && !failed).then_some(Value::Long(v));
            }
        }
        let s = obj.downcast_exact::<PyString>().ok()?;
        match self.strs.as_ref().and_then(|c| c.get(s)) {
            Some(Seen::Sym(sym)) if self.locals.from_snapshot(sym) => {
                return Some(Value::Str(sym));
            }
            Some(Seen::AbsentBelow(n)) if self.locals.base <= n => {
                return Some(Value::Str(self.locals.local(utf8(s)?)));
            }
            _ => {}
        }
        let sym = self.sym(utf8(s)?);
        if let Some(c) = self.strs.as_mut() {
            c.put(
                s,
                if self.locals.from_snapshot(sym) {
                    Seen::Sym(sym)
                } else {
                    Seen::AbsentBelow(self.locals.base)
                },
            );
        }
        Some(Value::Str(sym))
    }

    /// Convert one context value. Errors carry the path to the bad value, built
    /// only while unwinding so the success path formats nothing. The common
    /// scalars are converted here, inline; the rest (and every error) by
    /// `value_general`, so most values cost no call and no large result.
    #[inline(always)]
    fn value(&mut self, obj: &Bound<'_, PyAny>, depth: usize) -> Result<Value, PathErr> {
        match self.scalar(obj) {
            Some(v) => Ok(v),
            None => self.value_general(obj, depth),
        }
    }

    #[inline(never)]
    fn value_general(&mut self, obj: &Bound<'_, PyAny>, depth: usize) -> Result<Value, PathErr> {
        if depth > MAX_DEPTH {
            return Err(PathErr::new(format!(
                "nested deeper than {MAX_DEPTH} levels"
            )));
        }
        if obj.is_instance_of::<PyBool>() {
            return Ok(Value::Bool(obj.is_truthy().unwrap_or(false)));
        }
        if obj.is_instance_of::<PyInt>() {
            return obj
                .extract::<i64>()
                .map(Value::Long)
                .map_err(|_| PathErr::new("integer does not fit in 64 bits"));
        }
        if let Ok(s) = obj.downcast::<PyString>() {
            let s = s
                .to_str()
                .map_err(|_| PathErr::new("string is not valid UTF-8"))?;
            return Ok(Value::Str(self.sym(s)));
        }
        if let Ok(d) = obj.downcast::<PyDict>() {
            // Escapes are read from plain dicts only: a dict subclass is always a record
            // (how wire JSON, e.g. AuthZEN's, passes `{"__entity": ..}` as mere data).
            if d.len() == 1 && d.is_exact_instance_of::<PyDict>() {
                if let Some(e) = d.get_item(intern!(d.py(), "__entity")).ok().flatten() {
                    return self
                        .entity(&e, "entity")
                        .map(Value::Entity)
                        .map_err(|e| PathErr::new(e.to_string()));
                }
                if let Some(x) = d.get_item(intern!(d.py(), "__extn")).ok().flatten() {
                    return self.extension(&x, depth);
                }
            }
            let mut fields = Vec::with_capacity(d.len());
            for (k, v) in d.iter() {
                let key = k
                    .downcast::<PyString>()
                    .map_err(|_| PathErr::new("record keys must be strings"))?
                    .to_str()
                    .map_err(|_| PathErr::new("key is not valid UTF-8"))?;
                let val = self
                    .value(&v, depth + 1)
                    .map_err(|e| e.under(&format!(".{key}")))?;
                fields.push((self.sym(key), val));
            }
            return Ok(Value::Record(Arc::new(Record::from_unsorted(fields))));
        }
        if obj.is_instance_of::<PyList>()
            || obj.is_instance_of::<PyTuple>()
            || obj.is_instance_of::<PySet>()
            || obj.is_instance_of::<PyFrozenSet>()
        {
            let mut items = Vec::new();
            let iter = obj.try_iter().map_err(|_| PathErr::new("not iterable"))?;
            for (i, it) in iter.enumerate() {
                let it = it.map_err(|_| PathErr::new("iteration failed"))?;
                items.push(
                    self.value(&it, depth + 1)
                        .map_err(|e| e.under(&format!("[{i}]")))?,
                );
            }
            return Ok(Value::set_from(items));
        }
        if obj.downcast::<Entity>().is_ok() {
            return self
                .entity(obj, "entity")
                .map(Value::Entity)
                .map_err(|e| PathErr::new(e.to_string()));
        }
        let tn = obj
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_default();
        Err(PathErr::new(format!(
            "a {tn} is not a Cedar value (use bool, int, str, list/set, dict, an entity or \
             {{\"__extn\": ..}}; floats must be written as decimal)"
        )))
    }

    fn extension(&mut self, x: &Bound<'_, PyAny>, depth: usize) -> Result<Value, PathErr> {
        let bad = PathErr::new;
        let d = x
            .downcast::<PyDict>()
            .map_err(|_| bad("`__extn` must be a dict".into()))?;
        let fname: String = d
            .get_item(intern!(d.py(), "fn"))
            .ok()
            .flatten()
            .and_then(|f| f.extract().ok())
            .ok_or_else(|| bad("`__extn` needs a string `fn`".into()))?;
        let args: Vec<Bound<'_, PyAny>> = match (
            d.get_item(intern!(d.py(), "arg")).ok().flatten(),
            d.get_item(intern!(d.py(), "args")).ok().flatten(),
        ) {
            (Some(a), None) => vec![a],
            (None, Some(a)) => a
                .try_iter()
                .map_err(|_| bad("`args` must be a list".into()))?
                .filter_map(Result::ok)
                .collect(),
            _ => return Err(bad("`__extn` needs `arg` or `args`".into())),
        };
        let mut core_args = Vec::new();
        for a in &args {
            let v = self.value(a, depth + 1)?;
            let c = eval::ext::value_to_core(&v, |s| {
                self.locals
                    .resolve(&self.snap.interner, s)
                    .map(str::to_owned)
            })
            .ok_or_else(|| bad(format!("bad argument to `{fname}`")))?;
            core_args.push(c);
        }
        let name: cedar_policy_core::ast::Name = fname
            .parse()
            .map_err(|_| bad(format!("unknown extension function `{fname}`")))?;
        let f = cedar_policy_core::extensions::Extensions::all_available()
            .func(&name)
            .map_err(|_| bad(format!("unknown extension function `{fname}`")))?;
        match f.call(&core_args) {
            Ok(cedar_policy_core::ast::PartialValue::Value(v)) => {
                eval::ext::core_result_to_value(v)
                    .ok_or_else(|| bad(format!("`{fname}` gave no value")))
            }
            Ok(_) => Err(bad(format!("`{fname}` gave no value"))),
            Err(e) => Err(bad(format!("{fname}: {e}"))),
        }
    }

    pub(crate) fn context(
        &mut self,
        context: Option<&Bound<'_, PyAny>>,
    ) -> Result<Option<Value>, CoreError> {
        match context {
            None => Ok(None),
            Some(c) if c.is_none() => Ok(None),
            Some(c) => {
                if !c.is_instance_of::<PyDict>() {
                    return Err(CoreError::Request(format!(
                        "context must be a dict, got {}",
                        c.get_type()
                            .name()
                            .map(|n| n.to_string())
                            .unwrap_or_default()
                    )));
                }
                Ok(Some(self.value(c, 0).map_err(|e| {
                    CoreError::Request(format!("context{}: {}", e.path, e.msg))
                })?))
            }
        }
    }

    pub(crate) fn request(
        self,
        principal: &Bound<'_, PyAny>,
        action: &Bound<'_, PyAny>,
        resource: &Bound<'_, PyAny>,
        context: Option<&Bound<'_, PyAny>>,
    ) -> Result<ResolvedRequest, CoreError> {
        let mut out = ResolvedRequest::blank();
        self.request_into(&mut out, principal, action, resource, context)?;
        Ok(out)
    }

    /// `request`, written into `out` (a batch's buffer slot) instead of returned:
    /// the request is a few hundred bytes, and each move of it was a `memcpy`.
    /// Every field of `out` is written, so a slot is refilled in place, keeping
    /// its storage.
    pub(crate) fn request_into(
        mut self,
        out: &mut ResolvedRequest,
        principal: &Bound<'_, PyAny>,
        action: &Bound<'_, PyAny>,
        resource: &Bound<'_, PyAny>,
        context: Option<&Bound<'_, PyAny>>,
    ) -> Result<(), CoreError> {
        out.context = None;
        out.fields.clear();
        out.principal = self.entity_arg(principal, "principal")?;
        out.action = self.entity_arg(action, "action")?;
        out.resource = self.entity_arg(resource, "resource")?;
        let snap = self.snap;
        // Request validation walks the whole context, and so does a policy that
        // uses `context` as a value; otherwise only the keys the plan reads.
        let plan = snap
            .plans
            .by_action
            .get(&out.action)
            .filter(|p| !p.whole_context && snap.shapes.is_none());
        let dict = context.and_then(|c| c.downcast_exact::<PyDict>().ok());
        let keys = dict.zip(plan).and_then(|(d, p)| plan_keys(d.py(), p));
        match (dict, keys) {
            (Some(d), Some(keys)) => {
                let n = d.len();
                if is_escape(d, n) {
                    out.context = self.context(context)?;
                } else {
                    self.plan_fields(d, n, keys, &mut out.fields)?;
                }
            }
            _ => out.context = self.context(context)?,
        }
        out.locals = self.locals;
        Ok(())
    }

    /// The context attributes `plan` reads, converted. Keys no candidate policy
    /// reads are not looked at: they cannot change the decision.
    fn plan_fields(
        &mut self,
        d: &Bound<'_, PyDict>,
        len: usize,
        keys: &[(Sym, Py<PyString>)],
        fields: &mut ContextFields,
    ) -> Result<(), CoreError> {
        let py = d.py();
        let mut found: [Option<Bound<'_, PyAny>>; SCAN_KEYS] = Default::default();
        let scanned = scan_keys(d, len, keys, &mut found);
        for (i, (sym, key)) in keys.iter().enumerate() {
            let v = match found.get_mut(i).and_then(Option::take) {
                Some(v) => Some(v),
                None if scanned => None,
                None => d.get_item(key.bind(py)).ok().flatten(),
            };
            let Some(v) = v else { continue };
            match self.value(&v, 1) {
                Ok(val) => fields.push((*sym, val)),
                Err(e) => return Err(field_error(e, &key.bind(py).to_string())),
            }
        }
        Ok(())
    }
}

/// A context field's conversion error, named by its key. Kept out of line: the
/// loop that converts fields stays small.
#[cold]
fn field_error(e: PathErr, key: &str) -> CoreError {
    let e = e.under(&format!(".{key}"));
    CoreError::Request(format!("context{}: {}", e.path, e.msg))
}

/// Plans reading at most this many context keys have them found by one scan.
const SCAN_KEYS: usize = 8;

/// Find `keys` in a small dict by one pass over its entries comparing key
/// pointers: a context dict written in Python source holds the very key objects
/// `keys` holds (both interned). Returns whether that settled every key, i.e.
/// every entry matched one of `keys` (an entry equal to a key not found would
/// have been that key); otherwise the keys left are looked up as usual.
/// Measured by callgrind on the realistic workload (5-key contexts, plans reading
/// 3-5 of them): ~100 instructions per request fewer than a lookup per key.
fn scan_keys<'py>(
    d: &Bound<'py, PyDict>,
    len: usize,
    keys: &[(Sym, Py<PyString>)],
    found: &mut [Option<Bound<'py, PyAny>>; SCAN_KEYS],
) -> bool {
    if keys.len() > SCAN_KEYS || len > 2 * keys.len() + 2 {
        return false;
    }
    let mut all = true;
    let mut pos: pyo3::ffi::Py_ssize_t = 0;
    let mut k: *mut pyo3::ffi::PyObject = std::ptr::null_mut();
    let mut v: *mut pyo3::ffi::PyObject = std::ptr::null_mut();
    // SAFETY: `d` is alive for the whole loop and nothing in it runs Python code,
    // so each borrowed entry is valid until its value is taken as an owned reference.
    while unsafe { pyo3::ffi::PyDict_Next(d.as_ptr(), &mut pos, &mut k, &mut v) } != 0 {
        match keys.iter().position(|(_, key)| key.as_ptr() == k) {
            Some(i) => found[i] = Some(unsafe { Bound::from_borrowed_ptr(d.py(), v) }),
            None => all = false,
        }
    }
    all
}

/// A string's UTF-8 text (cached in the string by CPython after the first
/// call); None for one that is not valid UTF-8 (a lone surrogate). The API
/// called directly: pyo3's `to_str` wraps it in a `PyErr` round trip that cost
/// ~10 instructions a call here, three or more times a request.
#[inline(always)]
fn utf8<'a>(s: &'a Bound<'_, PyString>) -> Option<&'a str> {
    let mut n: pyo3::ffi::Py_ssize_t = 0;
    // SAFETY: `s` is a live str; on success the buffer is owned by `s` and lives
    // as long as it, and CPython guarantees it is valid UTF-8.
    unsafe {
        let p = pyo3::ffi::PyUnicode_AsUTF8AndSize(s.as_ptr(), &mut n);
        if p.is_null() {
            pyo3::ffi::PyErr_Clear();
            return None;
        }
        Some(std::str::from_utf8_unchecked(std::slice::from_raw_parts(
            p.cast::<u8>(),
            n as usize,
        )))
    }
}

/// `obj` as an entity handle, known by one comparison of its type pointer
/// (`Entity` cannot be subclassed, so this is `downcast`'s answer) instead of
/// `downcast`'s fetch of the lazily made type object: a third of a handle's cost.
#[inline]
fn exact_handle<'a>(obj: &'a Bound<'_, PyAny>) -> Option<&'a Entity> {
    use pyo3::type_object::PyTypeInfo;
    use std::sync::atomic::{AtomicPtr, Ordering::Relaxed};
    static TYPE: AtomicPtr<pyo3::ffi::PyTypeObject> = AtomicPtr::new(std::ptr::null_mut());
    let mut ty = TYPE.load(Relaxed);
    if ty.is_null() {
        ty = Entity::type_object_raw(obj.py());
        TYPE.store(ty, Relaxed);
    }
    // SAFETY: `obj` is a live object; its type is `Entity`'s exactly when the pointers match.
    if unsafe { pyo3::ffi::Py_TYPE(obj.as_ptr()) } == ty {
        Some(unsafe { obj.downcast_unchecked::<Entity>() }.get())
    } else {
        None
    }
}

/// `plan.ctx_keys` as interned Python strings (so a dict lookup usually
/// compares pointers), made the first time the plan is used.
struct PlanKeys(Vec<(Sym, Py<PyString>)>);

fn plan_keys<'p>(py: Python<'_>, plan: &'p ActionPlan) -> Option<&'p [(Sym, Py<PyString>)]> {
    let cached = plan.binding_cache.get_or_init(|| {
        let keys = plan
            .ctx_keys
            .iter()
            .map(|(s, text)| (*s, PyString::intern(py, text).unbind()))
            .collect();
        Box::new(PlanKeys(keys))
    });
    cached.downcast_ref::<PlanKeys>().map(|k| &k.0[..])
}

/// A one-key dict that is one of Cedar JSON's escapes rather than a record.
fn is_escape(d: &Bound<'_, PyDict>, len: usize) -> bool {
    len == 1
        && (d.contains(intern!(d.py(), "__entity")).unwrap_or(true)
            || d.contains(intern!(d.py(), "__extn")).unwrap_or(true))
}
/// The (type, id) strings of an entity argument, for interning.
pub(crate) fn uid_strings(
    obj: &Bound<'_, PyAny>,
    role: &str,
) -> Result<(String, String), CoreError> {
    if let Ok(h) = obj.downcast::<Entity>() {
        let h = h.get();
        return Ok((h.ty.clone(), h.id.clone()));
    }
    if let Ok(s) = obj.downcast::<PyString>() {
        let s = s
            .to_str()
            .map_err(|_| CoreError::Request(format!("{role}: not valid UTF-8")))?;
        let (t, i) =
            request::parse_uid(s).map_err(|e| CoreError::Request(format!("{role}: {e}")))?;
        return Ok((t.to_owned(), i.into_owned()));
    }
    let (t, i) = obj.extract::<(String, String)>().map_err(|_| {
        CoreError::Request(format!(
            "{role}: expected 'Type::\"id\"', (type, id) or a handle"
        ))
    })?;
    request::check_type(&t).map_err(|e| CoreError::Request(format!("{role}: {e}")))?;
    Ok((t, i))
}
pub(crate) fn text_arg(obj: &Bound<'_, PyAny>, what: &str) -> Result<String, CoreError> {
    if let Ok(s) = obj.downcast::<PyString>() {
        return s
            .to_str()
            .map(str::to_owned)
            .map_err(|_| CoreError::policy(format!("{what} text is not valid UTF-8")));
    }
    if let Ok(b) = obj.downcast::<PyBytes>() {
        return std::str::from_utf8(b.as_bytes())
            .map(str::to_owned)
            .map_err(|e| {
                CoreError::policy(format!(
                    "{what} bytes are not valid UTF-8 (first bad byte at offset {})",
                    e.valid_up_to()
                ))
            });
    }
    Err(CoreError::policy(format!("{what} must be str or bytes")))
}
pub(crate) fn entities_json(py: Python<'_>, obj: &Bound<'_, PyAny>) -> Result<String, CoreError> {
    if let Ok(s) = obj.downcast::<PyString>() {
        return s
            .to_str()
            .map(str::to_owned)
            .map_err(|_| CoreError::Entity("entities text is not valid UTF-8".into()));
    }
    // Lists and dicts go through Python's json module: exact, and handles any nesting
    // of plain Python data that a JSON document could hold.
    let json = py
        .import("json")
        .and_then(|m| m.call_method1("dumps", (obj,)))
        .map_err(|e| CoreError::Entity(format!("entities are not JSON-serialisable: {e}")))?;
    json.extract()
        .map_err(|_| CoreError::Entity("entities are not JSON-serialisable".into()))
}

/// Policy text as given: one string, or named sources (`[(name, text), ...]`, e.g.
/// one per file) whose errors are then located per source.
pub(crate) enum PolicyText {
    Plain(String),
    Sources(Vec<(String, String)>),
}

impl PolicyText {
    pub(crate) fn from_py(obj: &Bound<'_, PyAny>) -> Result<Self, CoreError> {
        if obj.is_instance_of::<PyString>() || obj.is_instance_of::<PyBytes>() {
            return text_arg(obj, "policy").map(PolicyText::Plain);
        }
        let bad = || {
            CoreError::policy(
                "policies must be str, bytes, or a list of (name, text) pairs".to_owned(),
            )
        };
        let mut out = Vec::new();
        for item in obj.try_iter().map_err(|_| bad())? {
            let item = item.map_err(|_| bad())?;
            let t = item.downcast::<PyTuple>().map_err(|_| bad())?;
            if t.len() != 2 {
                return Err(bad());
            }
            let name: String = t.get_item(0).and_then(|n| n.extract()).map_err(|_| bad())?;
            let text = text_arg(&t.get_item(1).map_err(|_| bad())?, "policy")?;
            out.push((name, text));
        }
        Ok(PolicyText::Sources(out))
    }

    /// Run `f` on the whole text, with error locations per source.
    pub(crate) fn with<T>(&self, f: impl FnOnce(&str) -> T) -> T {
        match self {
            PolicyText::Plain(t) => f(t),
            PolicyText::Sources(s) => crate::error::with_sources(s, f),
        }
    }
}

//! `tether._core`: the Python-facing classes. Conversion of Python objects into
//! requests lives here; all decision logic lives in the modules below.

pub mod compile;
pub mod engine;
pub mod entities;
pub mod error;
pub mod eval;
pub mod explain;
pub mod request;
pub mod state;
pub mod task_decide;
pub mod value;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFrozenSet, PyInt, PyList, PySet, PyString, PyTuple};

use engine::{Core, Mode, OnError, ResolvedRequest, Snapshot};
use error::TetherError as CoreError;
use eval::Locals;
use task_decide::TaskOutcome;
use value::{Euid, Record, Value};

create_exception!(
    _core,
    TetherError,
    PyException,
    "Base of every tether error."
);
create_exception!(
    _core,
    PolicyError,
    TetherError,
    "A policy failed to parse, validate or compile."
);
create_exception!(_core, SchemaError, TetherError, "A schema failed to parse.");
create_exception!(
    _core,
    EntityError,
    TetherError,
    "Entity data is malformed or invalid."
);
create_exception!(
    _core,
    RequestError,
    TetherError,
    "An authorization request is malformed."
);

fn to_py(py: Python<'_>, e: CoreError) -> PyErr {
    match e {
        CoreError::Policy {
            message,
            location,
            feature,
        } => {
            let err = PolicyError::new_err(message);
            let v = err.value(py);
            // Attributes on the instance so callers can point at the source.
            let _ = v.setattr("policy_id", location.policy_id);
            let _ = v.setattr("line", location.line);
            let _ = v.setattr("column", location.column);
            let _ = v.setattr("feature", feature);
            err
        }
        CoreError::Schema(m) => SchemaError::new_err(m),
        CoreError::Entity(m) => EntityError::new_err(m),
        CoreError::Request(m) => RequestError::new_err(m),
    }
}

/// A handle to an entity uid, resolved once; the fastest way to name an entity.
#[pyclass(frozen, module = "tether._core")]
struct Entity {
    uid: Euid,
    #[pyo3(get, name = "type")]
    ty: String,
    #[pyo3(get)]
    id: String,
    engine_id: usize,
}

#[pymethods]
impl Entity {
    fn __repr__(&self) -> String {
        format!("{}::{:?}", self.ty, self.id)
    }
    fn __str__(&self) -> String {
        self.__repr__()
    }
}

/// The answer to one request.
#[pyclass(frozen, module = "tether._core")]
struct Decision {
    #[pyo3(get)]
    allowed: bool,
    #[pyo3(get)]
    reasons: Vec<String>,
    /// Ids of the policies whose evaluation errored.
    #[pyo3(get)]
    errors: Vec<String>,
    /// `policy id: message` for each error, in the same order.
    #[pyo3(get)]
    error_messages: Vec<String>,
    /// Why tether denied beyond the policies: revoked task, scope, budget, delegation.
    #[pyo3(get)]
    message: Option<String>,
    /// Obligations (from `@obligation`) still to discharge; the action is held until then.
    #[pyo3(get)]
    obligations: Vec<String>,
    /// Set when this very decision revoked the task (monitor, scope, deadline).
    #[pyo3(get)]
    revoked: Option<String>,
}

#[pymethods]
impl Decision {
    fn __bool__(&self) -> bool {
        self.allowed
    }
    fn __repr__(&self) -> String {
        format!(
            "Decision(allowed={}, reasons={:?}, errors={:?}{}{})",
            if self.allowed { "True" } else { "False" },
            self.reasons,
            self.errors,
            self.message
                .as_ref()
                .map(|m| format!(", message={m:?}"))
                .unwrap_or_default(),
            if self.obligations.is_empty() {
                String::new()
            } else {
                format!(", obligations={:?}", self.obligations)
            }
        )
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

struct Converter<'s> {
    snap: &'s Snapshot,
    locals: Locals,
    engine_id: usize,
}

impl<'s> Converter<'s> {
    fn new(snap: &'s Snapshot, engine_id: usize) -> Self {
        Converter {
            snap,
            locals: Locals::new(&snap.interner),
            engine_id,
        }
    }

    fn sym(&mut self, s: &str) -> u32 {
        self.locals.sym(&self.snap.interner, s)
    }

    fn uid_parts(&mut self, ty: &str, id: &str) -> Result<Euid, CoreError> {
        if !request::valid_type(ty) {
            return Err(CoreError::Request(format!(
                "{ty:?} is not a valid Cedar entity type name"
            )));
        }
        Ok(Euid {
            ty: self.sym(ty),
            id: self.sym(id),
        })
    }

    fn entity(&mut self, obj: &Bound<'_, PyAny>, role: &str) -> Result<Euid, CoreError> {
        if let Ok(s) = obj.downcast::<PyString>() {
            let s = s
                .to_str()
                .map_err(|_| CoreError::Request(format!("{role}: not valid UTF-8")))?;
            if let Some(uid) = self.snap.store.uid_by_text(s) {
                return Ok(uid);
            }
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
            return Ok(h.uid);
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

    /// Convert one context value. Errors carry the path to the bad value, built
    /// only while unwinding so the success path formats nothing.
    fn value(&mut self, obj: &Bound<'_, PyAny>, depth: usize) -> Result<Value, PathErr> {
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
            if d.len() == 1 {
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

    fn context(&mut self, context: Option<&Bound<'_, PyAny>>) -> Result<Option<Value>, CoreError> {
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

    fn request(
        mut self,
        principal: &Bound<'_, PyAny>,
        action: &Bound<'_, PyAny>,
        resource: &Bound<'_, PyAny>,
        context: Option<&Bound<'_, PyAny>>,
    ) -> Result<ResolvedRequest, CoreError> {
        let principal = self.entity(principal, "principal")?;
        let action = self.entity(action, "action")?;
        let resource = self.entity(resource, "resource")?;
        let context = self.context(context)?;
        Ok(ResolvedRequest {
            principal,
            action,
            resource,
            context,
            locals: self.locals,
        })
    }
}

/// A compiled Cedar policy set with its entities: the authorization engine.
#[pyclass(frozen, subclass, module = "tether._core")]
struct Engine {
    core: Core,
    allow: Py<Decision>,
    deny: Py<Decision>,
    next_task: AtomicU64,
    /// Identifies this engine to its handles. A counter, not the address: a freed
    /// engine's address can be reused, and a stale handle must never match.
    serial: usize,
}

static ENGINE_SERIAL: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);

/// A task's state handle: labels, counters, budgets and its revocation flag, in Rust.
#[pyclass(frozen, module = "tether._core")]
struct TaskHandle {
    slot: Arc<state::TaskSlot>,
    engine_id: usize,
}

#[pymethods]
impl TaskHandle {
    #[getter]
    fn id(&self) -> u64 {
        self.slot.id
    }

    #[getter]
    fn depth(&self) -> u32 {
        self.slot.depth
    }

    /// Why this task (or an ancestor) is revoked, or None while it is live.
    #[getter]
    fn revoked(&self) -> Option<String> {
        self.slot.revoked_reason()
    }

    /// Revoke now; every later decision on this task and its descendants denies.
    /// Returns False if it was already revoked (the first reason is kept).
    fn revoke(&self, reason: &str) -> bool {
        self.slot.revoke(reason)
    }

    fn __repr__(&self) -> String {
        format!("TaskHandle(id={}, depth={})", self.slot.id, self.slot.depth)
    }
}

fn now_ms(now: Option<f64>) -> u64 {
    let secs = now.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    });
    (secs.max(0.0) * 1000.0) as u64
}

/// The (type, id) strings of an entity argument, for interning.
fn uid_strings(obj: &Bound<'_, PyAny>, role: &str) -> Result<(String, String), CoreError> {
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
    obj.extract::<(String, String)>().map_err(|_| {
        CoreError::Request(format!(
            "{role}: expected 'Type::\"id\"', (type, id) or a handle"
        ))
    })
}

/// Run `f` on a thread with a large stack: Cedar's parser recurses on nesting,
/// and a deep policy must give an error, never overflow the caller's stack.
fn with_big_stack<T: Send>(
    f: impl FnOnce() -> Result<T, CoreError> + Send,
) -> Result<T, CoreError> {
    std::thread::scope(|s| {
        let h = std::thread::Builder::new()
            .stack_size(512 << 20)
            .spawn_scoped(s, f)
            .map_err(|e| CoreError::policy(format!("cannot start the compiler thread: {e}")))?;
        h.join()
            .unwrap_or_else(|_| Err(CoreError::policy("internal error while compiling policies")))
    })
}

fn text_arg(obj: &Bound<'_, PyAny>, what: &str) -> Result<String, CoreError> {
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

fn entities_json(py: Python<'_>, obj: &Bound<'_, PyAny>) -> Result<String, CoreError> {
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

fn on_error_arg(s: &str) -> PyResult<OnError> {
    match s {
        "skip" => Ok(OnError::Skip),
        "deny" => Ok(OnError::Deny),
        other => Err(pyo3::exceptions::PyValueError::new_err(format!(
            "on_error must be \"skip\" or \"deny\", not {other:?}"
        ))),
    }
}

impl Engine {
    fn id(&self) -> usize {
        self.serial
    }

    /// The Python `Decision` for an outcome; the shared allow/deny objects when
    /// there is nothing else to report (no allocation on the common path).
    fn decision(
        &self,
        py: Python<'_>,
        snap: &Snapshot,
        req: &ResolvedRequest,
        t: TaskOutcome,
    ) -> PyResult<Py<Decision>> {
        let out = t.outcome;
        if t.message.is_none()
            && t.obligations.is_empty()
            && t.revoked_now.is_none()
            && out.reasons.is_empty()
            && out.errors.is_empty()
        {
            return Ok(if out.allowed {
                self.allow.clone_ref(py)
            } else {
                self.deny.clone_ref(py)
            });
        }
        let id = |i: u32| snap.set.policies[i as usize].id.clone();
        let d = Decision {
            allowed: out.allowed,
            reasons: out.reasons.iter().map(|i| id(*i)).collect(),
            errors: out.errors.iter().map(|(i, _)| id(*i)).collect(),
            error_messages: out
                .errors
                .iter()
                .map(|(i, e)| format!("{}: {}", id(*i), e.render(&snap.interner, &req.locals)))
                .collect(),
            message: t.message,
            obligations: t.obligations,
            revoked: t.revoked_now,
        };
        Py::new(py, d)
    }
}

#[pymethods]
impl Engine {
    #[new]
    #[pyo3(signature = (policies, schema=None, entities=None, *, state=None, on_error="skip", validate=true))]
    fn new(
        py: Python<'_>,
        policies: &Bound<'_, PyAny>,
        schema: Option<&Bound<'_, PyAny>>,
        entities: Option<&Bound<'_, PyAny>>,
        state: Option<&str>,
        on_error: &str,
        validate: bool,
    ) -> PyResult<Self> {
        let on_error = on_error_arg(on_error)?;
        let text = text_arg(policies, "policy").map_err(|e| to_py(py, e))?;
        let schema = schema
            .filter(|s| !s.is_none())
            .map(|s| text_arg(s, "schema"))
            .transpose()
            .map_err(|e| to_py(py, e))?;
        let ents = entities
            .filter(|e| !e.is_none())
            .map(|e| entities_json(py, e))
            .transpose()
            .map_err(|e| to_py(py, e))?;
        let core = py
            .allow_threads(|| {
                with_big_stack(|| {
                    Core::new(
                        &text,
                        schema.as_deref(),
                        ents.as_deref(),
                        state,
                        validate,
                        on_error,
                    )
                })
            })
            .map_err(|e| to_py(py, e))?;
        let mk = |allowed| {
            Py::new(
                py,
                Decision {
                    allowed,
                    reasons: Vec::new(),
                    errors: Vec::new(),
                    error_messages: Vec::new(),
                    message: None,
                    obligations: Vec::new(),
                    revoked: None,
                },
            )
        };
        Ok(Engine {
            core,
            allow: mk(true)?,
            deny: mk(false)?,
            next_task: AtomicU64::new(1),
            serial: ENGINE_SERIAL.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// Decide one request. `reasons=True` evaluates every candidate policy and
    /// reports Cedar's full diagnostics; otherwise evaluation stops at the first
    /// decisive policy and `errors` lists only the errors met on the way.
    #[pyo3(signature = (principal, action, resource, context=None, *, reasons=false))]
    fn authorize(
        &self,
        py: Python<'_>,
        principal: &Bound<'_, PyAny>,
        action: &Bound<'_, PyAny>,
        resource: &Bound<'_, PyAny>,
        context: Option<&Bound<'_, PyAny>>,
        reasons: bool,
    ) -> PyResult<Py<Decision>> {
        let snap = self.core.current.load();
        let req = Converter::new(&snap, self.id())
            .request(principal, action, resource, context)
            .map_err(|e| to_py(py, e))?;
        let mode = if reasons { Mode::Full } else { Mode::Fast };
        let outcome = snap.evaluate(&req, mode, self.core.on_error);
        self.decision(
            py,
            &snap,
            &req,
            TaskOutcome {
                outcome,
                ..TaskOutcome::default()
            },
        )
    }

    /// The decision alone: the fastest call.
    #[pyo3(signature = (principal, action, resource, context=None))]
    fn is_allowed(
        &self,
        py: Python<'_>,
        principal: &Bound<'_, PyAny>,
        action: &Bound<'_, PyAny>,
        resource: &Bound<'_, PyAny>,
        context: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let snap = self.core.current.load();
        let req = Converter::new(&snap, self.id())
            .request(principal, action, resource, context)
            .map_err(|e| to_py(py, e))?;
        Ok(snap.evaluate(&req, Mode::Fast, self.core.on_error).allowed)
    }

    /// Decide many `(principal, action, resource[, context])` requests; the
    /// evaluation runs with the GIL released. Returns one bool per request.
    /// `context`, when given, is shared by every 3-tuple request and converted once.
    #[pyo3(signature = (requests, context=None))]
    fn authorize_batch(
        &self,
        py: Python<'_>,
        requests: &Bound<'_, PyAny>,
        context: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<bool>> {
        let snap = self.core.current.load_full();
        let shared = {
            let mut conv = Converter::new(&snap, self.id());
            let v = conv.context(context).map_err(|e| to_py(py, e))?;
            v.map(|v| (v, conv.locals))
        };
        // Convert and evaluate in chunks: the buffer stays cache-sized and is
        // reused, instead of one allocation the size of the whole batch.
        const CHUNK: usize = 512;
        let on_error = self.core.on_error;
        let mut reqs: Vec<ResolvedRequest> = Vec::with_capacity(CHUNK);
        let mut out: Vec<bool> = Vec::new();
        let flush = |reqs: &mut Vec<ResolvedRequest>, out: &mut Vec<bool>| {
            let snap = &snap;
            py.allow_threads(|| {
                out.extend(
                    reqs.iter()
                        .map(|r| snap.evaluate(r, Mode::Fast, on_error).allowed),
                )
            });
            reqs.clear();
        };
        for (i, r) in requests.try_iter()?.enumerate() {
            let r = r?;
            let bad = |m: &str| to_py(py, CoreError::Request(format!("request #{i}: {m}")));
            let t = r
                .downcast::<PyTuple>()
                .map_err(|_| bad("expected a tuple"))?;
            let n = t.len();
            if !(3..=4).contains(&n) || (n == 4 && shared.is_some()) {
                return Err(bad(if shared.is_some() {
                    "expected (principal, action, resource) with a shared context"
                } else {
                    "expected (principal, action, resource[, context])"
                }));
            }
            let mut conv = Converter::new(&snap, self.id());
            if let Some((_, locals)) = &shared {
                // Request-local symbols continue after the shared context's.
                conv.locals = locals.clone();
            }
            let ctx = if n == 4 { Some(t.get_item(3)?) } else { None };
            let mut req = conv
                .request(
                    &t.get_item(0)?,
                    &t.get_item(1)?,
                    &t.get_item(2)?,
                    ctx.as_ref(),
                )
                .map_err(|e| bad(&e.to_string()))?;
            if let Some((v, _)) = &shared {
                req.context = Some(v.clone());
            }
            reqs.push(req);
            if reqs.len() == CHUNK {
                flush(&mut reqs, &mut out);
            }
        }
        flush(&mut reqs, &mut out);
        Ok(out)
    }

    /// A handle for an entity uid; the fastest way to pass an entity.
    #[pyo3(name = "entity")]
    fn entity_handle(&self, py: Python<'_>, r#type: &str, id: &str) -> PyResult<Entity> {
        let euid = self.core.intern_uid(r#type, id).map_err(|e| to_py(py, e))?;
        Ok(Entity {
            uid: euid,
            ty: r#type.to_owned(),
            id: id.to_owned(),
            engine_id: self.id(),
        })
    }

    /// Add or replace entities (Cedar JSON: text or a list of dicts). Atomic.
    fn upsert_entities(&self, py: Python<'_>, entities: &Bound<'_, PyAny>) -> PyResult<usize> {
        let json = entities_json(py, entities).map_err(|e| to_py(py, e))?;
        py.allow_threads(|| with_big_stack(|| self.core.upsert_entities(&json)))
            .map_err(|e| to_py(py, e))
    }

    /// Remove entities by uid (strings, tuples or handles). Returns how many existed.
    fn remove_entities(&self, py: Python<'_>, uids: &Bound<'_, PyAny>) -> PyResult<usize> {
        let mut parts = Vec::new();
        for u in uids.try_iter()? {
            let u = u?;
            if let Ok(h) = u.downcast::<Entity>() {
                let h = h.get();
                parts.push((h.ty.clone(), h.id.clone()));
            } else if let Ok(s) = u.downcast::<PyString>() {
                let (t, i) = request::parse_uid(s.to_str()?).map_err(|e| to_py(py, e))?;
                parts.push((t.to_owned(), i.into_owned()));
            } else {
                let (t, i): (String, String) = u.extract().map_err(|_| {
                    to_py(
                        py,
                        CoreError::Request(
                            "entity uids must be 'Type::\"id\"', (type, id) or handles".into(),
                        ),
                    )
                })?;
                parts.push((t, i));
            }
        }
        self.core.remove_entities(&parts).map_err(|e| to_py(py, e))
    }

    /// Replace the policy set (and optionally the schema) atomically; entities stay.
    #[pyo3(signature = (policies, schema=None, *, validate=true))]
    fn reload(
        &self,
        py: Python<'_>,
        policies: &Bound<'_, PyAny>,
        schema: Option<&Bound<'_, PyAny>>,
        validate: bool,
    ) -> PyResult<()> {
        let text = text_arg(policies, "policy").map_err(|e| to_py(py, e))?;
        let schema = schema
            .filter(|s| !s.is_none())
            .map(|s| text_arg(s, "schema"))
            .transpose()
            .map_err(|e| to_py(py, e))?;
        py.allow_threads(|| with_big_stack(|| self.core.reload(&text, schema.as_deref(), validate)))
            .map_err(|e| to_py(py, e))
    }

    /// Check a Cedar JSON context against the schema's context type for `action`
    /// and return it in canonical form (explicit `__entity`/`__extn` escapes), as a
    /// JSON string. Without a schema (or with `validate=False`) it is only
    /// parsed and canonicalised.
    #[pyo3(signature = (action, context_json, *, validate=true))]
    fn normalize_context(
        &self,
        py: Python<'_>,
        action: &Bound<'_, PyAny>,
        context_json: &str,
        validate: bool,
    ) -> PyResult<String> {
        let (ty, id): (String, String) = if let Ok(s) = action.downcast::<PyString>() {
            let (t, i) = request::parse_uid(s.to_str()?).map_err(|e| to_py(py, e))?;
            (t.to_owned(), i.into_owned())
        } else {
            action.extract()?
        };
        self.core
            .normalize_context(&ty, &id, context_json, validate)
            .map_err(|e| to_py(py, e))
    }

    /// Open a task for `agent`. `scope`: the actions it may take (None: any);
    /// `deadline`: epoch seconds; `parent`: the delegating task (labels are
    /// inherited, the actor chain extended, and every decision must also be
    /// permitted for each ancestor and within each ancestor's scope).
    #[pyo3(signature = (agent, *, scope=None, deadline=None, parent=None, max_deny_streak=0, max_rate=0, rate_window=1.0, revoke_on_budget_exhausted=true))]
    #[allow(clippy::too_many_arguments)]
    fn open_task(
        &self,
        py: Python<'_>,
        agent: &Bound<'_, PyAny>,
        scope: Option<&Bound<'_, PyAny>>,
        deadline: Option<f64>,
        parent: Option<&TaskHandle>,
        max_deny_streak: u32,
        max_rate: u32,
        rate_window: f64,
        revoke_on_budget_exhausted: bool,
    ) -> PyResult<TaskHandle> {
        let perr = |e: CoreError| to_py(py, e);
        let stable = |obj: &Bound<'_, PyAny>, role: &str| -> Result<Euid, CoreError> {
            let (t, i) = uid_strings(obj, role)?;
            self.core.intern_uid(&t, &i)
        };
        let agent = stable(agent, "agent").map_err(perr)?;
        let scope = match scope.filter(|s| !s.is_none()) {
            None => None,
            Some(s) => {
                let mut set = rustc_hash::FxHashSet::default();
                for a in s.try_iter()? {
                    set.insert(stable(&a?, "scope action").map_err(perr)?);
                }
                Some(set)
            }
        };
        if let Some(p) = parent {
            if p.engine_id != self.id() {
                return Err(perr(CoreError::Request(
                    "parent task belongs to another engine".into(),
                )));
            }
        }
        let snap = self.core.current.load();
        let st = snap.set.state.as_ref();
        let windows: Vec<u64> = st
            .map(|s| s.counters.iter().map(|c| c.1).collect())
            .unwrap_or_default();
        let n_budgets = st.map_or(0, |s| s.budgets.len());
        let parent_slot = parent.map(|p| p.slot.clone());
        let mut deadline_ms = deadline.map(|d| now_ms(Some(d)));
        if let Some(p) = &parent_slot {
            // A child never outlives its parent.
            deadline_ms = match (deadline_ms, p.deadline_ms) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        let slot = state::TaskSlot::new(
            self.next_task.fetch_add(1, Ordering::Relaxed),
            agent,
            parent_slot,
            scope,
            deadline_ms,
            state::Limits {
                max_deny_streak,
                max_rate,
                rate_window_ms: (rate_window.max(0.001) * 1000.0) as u64,
                revoke_on_budget_exhausted,
            },
            &windows,
            n_budgets,
        )
        .map_err(|m| perr(CoreError::Request(m)))?;
        Ok(TaskHandle {
            slot: Arc::new(slot),
            engine_id: self.id(),
        })
    }

    /// Decide an action inside a task; a permit commits the task's state
    /// effects atomically. `now` (epoch seconds) is for tests and replays.
    #[pyo3(signature = (task, action, resource, context=None, *, reasons=false, now=None, approved=Vec::new()))]
    #[allow(clippy::too_many_arguments)]
    fn authorize_task(
        &self,
        py: Python<'_>,
        task: &TaskHandle,
        action: &Bound<'_, PyAny>,
        resource: &Bound<'_, PyAny>,
        context: Option<&Bound<'_, PyAny>>,
        reasons: bool,
        now: Option<f64>,
        approved: Vec<String>,
    ) -> PyResult<Py<Decision>> {
        if task.engine_id != self.id() {
            return Err(to_py(
                py,
                CoreError::Request("task belongs to another engine".into()),
            ));
        }
        let snap = self.core.current.load();
        let mut conv = Converter::new(&snap, self.id());
        let action = conv.entity(action, "action").map_err(|e| to_py(py, e))?;
        let resource = conv
            .entity(resource, "resource")
            .map_err(|e| to_py(py, e))?;
        let context = conv.context(context).map_err(|e| to_py(py, e))?;
        let mut req = ResolvedRequest {
            principal: task.slot.agent,
            action,
            resource,
            context,
            locals: conv.locals,
        };
        let t = snap.authorize_task(
            &task.slot,
            &mut req,
            reasons,
            self.core.on_error,
            now_ms(now),
            &approved,
        );
        self.decision(py, &snap, &req, t)
    }

    /// The task's `context.task` value now, as JSON (to replay a decision elsewhere).
    #[pyo3(signature = (task, *, now=None))]
    fn task_context(&self, task: &TaskHandle, now: Option<f64>) -> String {
        let snap = self.core.current.load();
        let inner = task.slot.lock();
        match snap.set.state.as_ref() {
            Some(st) => {
                state::task_json(st, &task.slot, &inner, now_ms(now), &snap.interner).to_string()
            }
            None => "{}".to_owned(),
        }
    }

    /// Ids of the policies, in file order.
    fn policy_ids(&self) -> Vec<String> {
        self.core
            .current
            .load()
            .set
            .policies
            .iter()
            .map(|p| p.id.clone())
            .collect()
    }

    /// Annotations of one policy, e.g. `{"obligation": "approval"}`.
    fn annotations(&self, py: Python<'_>, policy_id: &str) -> PyResult<Vec<(String, String)>> {
        let snap = self.core.current.load();
        snap.set
            .policies
            .iter()
            .find(|p| p.id == policy_id)
            .map(|p| p.annotations.clone())
            .ok_or_else(|| to_py(py, CoreError::Request(format!("no policy `{policy_id}`"))))
    }

    /// Cedar validator warnings for the current set (e.g. a policy that can never apply).
    fn warnings(&self) -> Vec<String> {
        self.core.current.load().set.warnings.clone()
    }

    /// Policy text of the current set.
    fn policy_text(&self) -> String {
        self.core.current.load().set.text.clone()
    }

    #[getter]
    fn version(&self) -> u64 {
        self.core.current.load().version
    }

    #[getter]
    fn entity_count(&self) -> usize {
        self.core.current.load().store.len()
    }

    #[getter]
    fn policy_count(&self) -> usize {
        self.core.current.load().set.policies.len()
    }
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<Engine>()?;
    m.add_class::<Decision>()?;
    m.add_class::<Entity>()?;
    m.add_class::<TaskHandle>()?;
    m.add("TetherError", py.get_type::<TetherError>())?;
    m.add("PolicyError", py.get_type::<PolicyError>())?;
    m.add("SchemaError", py.get_type::<SchemaError>())?;
    m.add("EntityError", py.get_type::<EntityError>())?;
    m.add("RequestError", py.get_type::<RequestError>())?;
    Ok(())
}

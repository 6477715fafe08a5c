//! The Python `Engine`: loading, deciding, entities and reloads.

use std::sync::atomic::{AtomicU64, Ordering};

use pyo3::prelude::*;
use pyo3::types::PyTuple;

use super::convert::{entities_json, text_arg, uid_strings, Converter, Entity, PolicyText};
use super::decision::{Decision, DenialKind};
use super::task::{TaskHandle, TaskOptions};
use crate::engine::{Core, Mode, OnError, ResolvedRequest, Snapshot};
use crate::error::TetherError as CoreError;
use crate::task_decide::TaskOutcome;
use crate::templates::LinkRequest;

/// A compiled Cedar policy set with its entities: the authorization engine.
#[pyclass(frozen, subclass, module = "tether._core")]
pub(crate) struct Engine {
    pub(crate) core: Core,
    allow: Py<Decision>,
    deny: Py<Decision>,
    pub(crate) next_task: AtomicU64,
    /// Agent-scoped labels, remembered across this engine's tasks.
    pub(crate) memory: std::sync::Arc<crate::state::AgentMemory>,
    /// Context string values already resolved (see `StrCache`).
    pub(crate) strs: std::sync::Mutex<super::str_cache::StrCache>,
    /// Identifies this engine to its handles. A counter, not the address: a freed
    /// engine's address can be reused, and a stale handle must never match.
    serial: usize,
}

static ENGINE_SERIAL: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);
/// Run `f` on a thread with a large stack: Cedar's parser recurses on nesting,
/// and a deep policy must give an error, never overflow the caller's stack.
pub(crate) fn with_big_stack<T: Send>(
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
/// A link's slot value: None (or Python None) when not given.
fn slot_arg(
    v: Option<&Bound<'_, PyAny>>,
    role: &str,
) -> Result<Option<(String, String)>, CoreError> {
    v.filter(|v| !v.is_none())
        .map(|v| uid_strings(v, role))
        .transpose()
}
fn action_count(snap: &Snapshot) -> usize {
    snap.store.action_uids().count()
}

pub(crate) fn on_error_arg(s: &str) -> PyResult<OnError> {
    match s {
        "skip" => Ok(OnError::Skip),
        "deny" => Ok(OnError::Deny),
        other => Err(pyo3::exceptions::PyValueError::new_err(format!(
            "on_error must be \"skip\" or \"deny\", not {other:?}"
        ))),
    }
}
impl Engine {
    pub(crate) fn id(&self) -> usize {
        self.serial
    }

    /// The Python `Decision` for an outcome; the shared allow/deny objects when
    /// there is nothing else to report (no allocation on the common path).
    pub(crate) fn decision(
        &self,
        py: Python<'_>,
        snap: &Snapshot,
        req: &ResolvedRequest,
        t: TaskOutcome,
    ) -> PyResult<Py<Decision>> {
        let out = t.outcome;
        let kind = match t.kind {
            _ if out.allowed => None,
            Some(k) => Some(k.into()),
            None if self.core.on_error == OnError::Deny && !out.errors.is_empty() => {
                Some(DenialKind::Error)
            }
            None => Some(DenialKind::Policy),
        };
        if t.message.is_none()
            && t.obligations.is_empty()
            && t.revoked_now.is_none()
            && out.reasons.is_empty()
            && out.errors.is_empty()
            && (out.allowed || kind == Some(DenialKind::Policy))
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
            kind,
        };
        Py::new(py, d)
    }
}
#[pymethods]
impl Engine {
    #[new]
    #[pyo3(signature = (policies, schema=None, entities=None, *, state=None, on_error="skip", validate=true, validate_requests=true))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        policies: &Bound<'_, PyAny>,
        schema: Option<&Bound<'_, PyAny>>,
        entities: Option<&Bound<'_, PyAny>>,
        state: Option<&str>,
        on_error: &str,
        validate: bool,
        validate_requests: bool,
    ) -> PyResult<Self> {
        let on_error = on_error_arg(on_error)?;
        let text = PolicyText::from_py(policies)?;
        let schema = schema
            .filter(|s| !s.is_none())
            .map(|s| text_arg(s, "schema"))
            .transpose()
            .map_err(PyErr::from)?;
        let ents = entities
            .filter(|e| !e.is_none())
            .map(|e| entities_json(py, e))
            .transpose()
            .map_err(PyErr::from)?;
        let core = py
            .allow_threads(|| {
                with_big_stack(|| {
                    text.with(|text| {
                        Core::new(
                            text,
                            schema.as_deref(),
                            ents.as_deref(),
                            state,
                            validate,
                            on_error,
                            validate_requests,
                        )
                    })
                })
            })
            .map_err(PyErr::from)?;
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
                    kind: (!allowed).then_some(DenialKind::Policy),
                },
            )
        };
        Ok(Engine {
            core,
            allow: mk(true)?,
            deny: mk(false)?,
            next_task: AtomicU64::new(1),
            memory: Default::default(),
            serial: ENGINE_SERIAL.fetch_add(1, Ordering::Relaxed),
            strs: Default::default(),
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
        let mut strs = self.strs.try_lock().ok();
        let req = Converter::new(&snap, self.id())
            .cached(strs.as_deref_mut())
            .request(principal, action, resource, context)
            .map_err(PyErr::from)?;
        snap.check_request(&req, false)?;
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
        principal: &Bound<'_, PyAny>,
        action: &Bound<'_, PyAny>,
        resource: &Bound<'_, PyAny>,
        context: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let snap = self.core.current.load();
        let mut req = ResolvedRequest::blank();
        let mut strs = self.strs.try_lock().ok();
        Converter::new(&snap, self.id())
            .cached(strs.as_deref_mut())
            .request_into(&mut req, principal, action, resource, context)
            .map_err(PyErr::from)?;
        // A request the schema rejects has no decision in Cedar: deny it.
        if snap.check_request(&req, false).is_err() {
            return Ok(false);
        }
        Ok(snap
            .evaluate(&req, Mode::DecisionOnly, self.core.on_error)
            .allowed)
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
            let v = conv.context(context).map_err(PyErr::from)?;
            v.map(|v| (v, conv.locals))
        };
        // Convert and evaluate in chunks: the buffer stays cache-sized and is
        // reused, instead of one allocation the size of the whole batch.
        const CHUNK: usize = 512;
        let on_error = self.core.on_error;
        let mut reqs: Vec<ResolvedRequest> = Vec::with_capacity(CHUNK);
        let mut strs = self.strs.try_lock().ok();
        let mut out: Vec<bool> = Vec::new();
        let flush = |reqs: &[ResolvedRequest], out: &mut Vec<bool>| {
            let snap = &snap;
            py.allow_threads(|| {
                snap.stack_guarded(|| {
                    out.extend(reqs.iter().map(|r| {
                        snap.check_request(r, false).is_ok()
                            && snap
                                .evaluate_within(r, Mode::DecisionOnly, on_error)
                                .allowed
                    }))
                })
            });
        };
        // Requests in `reqs[..filled]` are this chunk's; the buffer's requests are
        // refilled in place, chunk after chunk.
        let mut filled = 0;
        for (i, r) in requests.try_iter()?.enumerate() {
            let r = r?;
            let bad = |m: &str| PyErr::from(CoreError::Request(format!("request #{i}: {m}")));
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
            let mut conv = Converter::new(&snap, self.id()).cached(strs.as_deref_mut());
            if let Some((_, locals)) = &shared {
                // Request-local symbols continue after the shared context's (both
                // start at the same snapshot, so with none there is nothing to copy).
                if !locals.strs.is_empty() {
                    conv.locals = locals.clone();
                }
            }
            // Borrowed items: the tuple holds them, no reference counting per item.
            let ctx = if n == 4 {
                Some(t.get_borrowed_item(3)?)
            } else {
                None
            };
            if filled == reqs.len() {
                reqs.push(ResolvedRequest::blank());
            }
            let req = &mut reqs[filled];
            filled += 1;
            conv.request_into(
                req,
                &*t.get_borrowed_item(0)?,
                &*t.get_borrowed_item(1)?,
                &*t.get_borrowed_item(2)?,
                ctx.as_deref(),
            )
            .map_err(|e| bad(&e.to_string()))?;
            if let Some((v, _)) = &shared {
                req.context = Some(v.clone());
            }
            if filled == CHUNK {
                // Released while this thread evaluates: another converts meanwhile.
                drop(strs.take());
                flush(&reqs, &mut out);
                filled = 0;
                strs = self.strs.try_lock().ok();
            }
        }
        drop(strs);
        flush(&reqs[..filled], &mut out);
        Ok(out)
    }

    /// A handle for an entity uid; the fastest way to pass an entity.
    #[pyo3(name = "entity")]
    fn entity_handle(&self, py: Python<'_>, r#type: &str, id: &str) -> PyResult<Entity> {
        // A new uid waits for the write lock: let other threads run meanwhile.
        let euid = py
            .allow_threads(|| self.core.intern_uid(r#type, id))
            .map_err(PyErr::from)?;
        Ok(Entity {
            uid: euid,
            ty: r#type.to_owned(),
            id: id.to_owned(),
            engine_id: self.id(),
        })
    }

    /// Add or replace entities (Cedar JSON: text or a list of dicts). Atomic.
    fn upsert_entities(&self, py: Python<'_>, entities: &Bound<'_, PyAny>) -> PyResult<usize> {
        let json = entities_json(py, entities).map_err(PyErr::from)?;
        py.allow_threads(|| with_big_stack(|| self.core.upsert_entities(&json)))
            .map_err(PyErr::from)
    }

    /// Remove entities by uid (strings, tuples or handles). Returns how many existed.
    fn remove_entities(&self, py: Python<'_>, uids: &Bound<'_, PyAny>) -> PyResult<usize> {
        let parts = uids
            .try_iter()?
            .enumerate()
            .map(|(i, u)| Ok(uid_strings(&u?, &format!("entity #{i}"))?))
            .collect::<PyResult<Vec<_>>>()?;
        py.allow_threads(|| self.core.remove_entities(&parts))
            .map_err(PyErr::from)
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
        let text = PolicyText::from_py(policies)?;
        let schema = schema
            .filter(|s| !s.is_none())
            .map(|s| text_arg(s, "schema"))
            .transpose()
            .map_err(PyErr::from)?;
        py.allow_threads(|| {
            with_big_stack(|| text.with(|text| self.core.reload(text, schema.as_deref(), validate)))
        })
        .map_err(PyErr::from)
    }

    /// Link template `template_id` (by name) as the policy `policy_id`, filling its
    /// `?principal`/`?resource` slots; atomic (on error nothing changes).
    #[pyo3(signature = (template_id, policy_id, *, principal=None, resource=None))]
    fn link(
        &self,
        py: Python<'_>,
        template_id: &str,
        policy_id: &str,
        principal: Option<&Bound<'_, PyAny>>,
        resource: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let (p, r) = (
            slot_arg(principal, "principal")?,
            slot_arg(resource, "resource")?,
        );
        let req = LinkRequest {
            template: template_id,
            policy_id,
            principal: p.as_ref().map(|(t, i)| (t.as_str(), i.as_str())),
            resource: r.as_ref().map(|(t, i)| (t.as_str(), i.as_str())),
        };
        py.allow_threads(|| with_big_stack(|| self.core.link(&[req])))
            .map_err(PyErr::from)
    }

    /// Make many links at once: `(template_id, policy_id, principal, resource)` tuples
    /// (the form `links()` returns). All or nothing, and one recompile.
    fn link_all(&self, py: Python<'_>, links: &Bound<'_, PyAny>) -> PyResult<()> {
        type Owned = (
            String,
            String,
            Option<(String, String)>,
            Option<(String, String)>,
        );
        let mut owned: Vec<Owned> = Vec::new();
        for (i, l) in links.try_iter()?.enumerate() {
            let l = l?;
            let bad = || {
                PyErr::from(CoreError::Request(format!(
                    "link #{i}: expected (template_id, policy_id, principal, resource)"
                )))
            };
            let t = l.downcast::<PyTuple>().map_err(|_| bad())?;
            if t.len() != 4 {
                return Err(bad());
            }
            owned.push((
                t.get_item(0)?.extract().map_err(|_| bad())?,
                t.get_item(1)?.extract().map_err(|_| bad())?,
                slot_arg(Some(&t.get_item(2)?), "principal")?,
                slot_arg(Some(&t.get_item(3)?), "resource")?,
            ));
        }
        let reqs: Vec<LinkRequest<'_>> = owned
            .iter()
            .map(|(t, p, pr, r)| LinkRequest {
                template: t,
                policy_id: p,
                principal: pr.as_ref().map(|(t, i)| (t.as_str(), i.as_str())),
                resource: r.as_ref().map(|(t, i)| (t.as_str(), i.as_str())),
            })
            .collect();
        py.allow_threads(|| with_big_stack(|| self.core.link(&reqs)))
            .map_err(PyErr::from)
    }

    /// Remove the template-linked policy `policy_id`; atomic.
    fn unlink(&self, py: Python<'_>, policy_id: &str) -> PyResult<()> {
        py.allow_threads(|| with_big_stack(|| self.core.unlink(policy_id)))
            .map_err(PyErr::from)
    }

    /// Names of the templates, in file order.
    fn templates(&self, py: Python<'_>) -> Vec<String> {
        py.allow_threads(|| self.core.templates())
    }

    /// The template-linked policies, by id: `(template_id, policy_id, principal,
    /// resource)` (`link`'s arguments, and what `link_all` takes), each slot value as
    /// `Type::"id"` text (None if the template has no such slot).
    fn links(&self, py: Python<'_>) -> Vec<(String, String, Option<String>, Option<String>)> {
        py.allow_threads(|| self.core.links())
            .into_iter()
            .map(|l| (l.template, l.policy_id, l.principal, l.resource))
            .collect()
    }

    /// Check a Cedar JSON context against the schema's context type for `action`
    /// and return it in canonical form (explicit `__entity`/`__extn` escapes), as a
    /// JSON string. Without a schema (or with `validate=False`) it is only
    /// parsed and canonicalised.
    #[pyo3(signature = (action, context_json, *, validate=true))]
    fn normalize_context(
        &self,
        action: &Bound<'_, PyAny>,
        context_json: &str,
        validate: bool,
    ) -> PyResult<String> {
        let (ty, id) = uid_strings(action, "action")?;
        self.core
            .normalize_context(&ty, &id, context_json, validate)
            .map_err(PyErr::from)
    }

    /// Open a task for `agent` (see `open_task_impl`).
    #[pyo3(signature = (agent, *, scope=None, deadline=None, parent=None, intent="", on_error=None, now=None, max_deny_streak=0, max_rate=0, rate_window=1.0, max_deny_ratio=0.0, min_denials=0, revoke_on_budget_exhausted=true, labels=None))]
    #[allow(clippy::too_many_arguments)]
    fn open_task(
        &self,
        py: Python<'_>,
        agent: &Bound<'_, PyAny>,
        scope: Option<&Bound<'_, PyAny>>,
        deadline: Option<f64>,
        parent: Option<&TaskHandle>,
        intent: &str,
        on_error: Option<&str>,
        now: Option<f64>,
        max_deny_streak: u32,
        max_rate: u32,
        rate_window: f64,
        max_deny_ratio: f64,
        min_denials: u32,
        revoke_on_budget_exhausted: bool,
        labels: Option<Vec<String>>,
    ) -> PyResult<TaskHandle> {
        let opts = TaskOptions {
            scope,
            deadline,
            parent,
            intent,
            on_error: on_error.map(on_error_arg).transpose()?,
            now,
            limits: crate::state::Limits {
                max_deny_streak,
                max_rate,
                rate_window_ms: (super::task::finite(rate_window, "rate_window")?.max(0.001)
                    * 1000.0) as u64,
                revoke_on_budget_exhausted,
                max_deny_ratio,
                min_denials,
            },
            labels,
        };
        self.open_task_impl(py, agent, opts)
    }

    /// Decide an action inside a task (see `authorize_task_impl`).
    #[pyo3(signature = (task, action, resource, context=None, now=None, *, reasons=false, approved=Vec::new()))]
    #[allow(clippy::too_many_arguments)]
    fn authorize_task(
        &self,
        py: Python<'_>,
        task: &TaskHandle,
        action: &Bound<'_, PyAny>,
        resource: &Bound<'_, PyAny>,
        context: Option<&Bound<'_, PyAny>>,
        now: Option<f64>,
        reasons: bool,
        approved: Vec<String>,
    ) -> PyResult<Py<Decision>> {
        self.authorize_task_impl(py, task, action, resource, context, reasons, now, approved)
    }

    /// Widen a task's own scope by `actions` until `until` (task-clock seconds).
    fn escalate_task(
        &self,
        task: &TaskHandle,
        actions: &Bound<'_, PyAny>,
        until: f64,
    ) -> PyResult<()> {
        self.escalate_task_impl(task, actions, until)
    }

    /// The task's `context.task` value now, as JSON (to replay a decision elsewhere).
    #[pyo3(signature = (task, *, now=None))]
    fn task_context(
        &self,
        py: Python<'_>,
        task: &TaskHandle,
        now: Option<f64>,
    ) -> PyResult<String> {
        self.task_context_impl(py, task, now)
    }

    /// Explain one request with Cedar's own evaluator against this engine's policies,
    /// schema and entities (uids as text, context as Cedar JSON); JSON out.
    #[pyo3(signature = (principal, action, resource, context="{}"))]
    fn explain_json(
        &self,
        py: Python<'_>,
        principal: &str,
        action: &str,
        resource: &str,
        context: &str,
    ) -> PyResult<String> {
        super::explain::engine_explain_json(py, self, principal, action, resource, context)
    }

    /// The entity store as Cedar JSON text; the schema's action entities only with
    /// `actions=True` (for a consumer that reads it without the schema).
    #[pyo3(signature = (*, actions=false))]
    fn entities_json(&self, py: Python<'_>, actions: bool) -> PyResult<String> {
        super::explain::engine_entities_json(py, self, actions)
    }

    /// Ids of the entities of type `type`: those stored and those the policies name,
    /// sorted (the candidates an AuthZEN search decides one by one).
    fn entity_ids(&self, r#type: &str) -> Vec<String> {
        let snap = self.core.current.load();
        let Some(ty) = snap.interner.lookup(r#type) else {
            return Vec::new();
        };
        let mut ids: Vec<String> = snap
            .store
            .uids()
            .chain(snap.set.named_uids.iter().copied())
            .filter(|u| u.ty == ty)
            .filter_map(|u| snap.interner.get(u.id).map(str::to_owned))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Ids of the policies, in file order; template-linked policies after them.
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

    /// Annotations of one policy as a list of (key, value) pairs, in source order,
    /// e.g. `[("id", "deny-egress"), ("obligation", "human")]`.
    fn annotations(&self, policy_id: &str) -> PyResult<Vec<(String, String)>> {
        let snap = self.core.current.load();
        snap.set
            .policies
            .iter()
            .find(|p| p.id == policy_id)
            .map(|p| p.annotations.clone())
            .ok_or_else(|| PyErr::from(CoreError::Request(format!("no policy `{policy_id}`"))))
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

    /// Whether an entity with this uid is registered (e.g. to resolve a host to
    /// its closest registered domain).
    fn has_entity(&self, r#type: &str, id: &str) -> bool {
        let snap = self.core.current.load();
        match (snap.interner.lookup(r#type), snap.interner.lookup(id)) {
            (Some(ty), Some(id)) => snap.store.get(&crate::value::Euid { ty, id }).is_some(),
            _ => false,
        }
    }

    /// Entities you registered (Cedar JSON, upserts); the schema's action entities
    /// are counted apart, in `action_count`.
    #[getter]
    fn entity_count(&self) -> usize {
        let snap = self.core.current.load();
        snap.store.len() - action_count(&snap)
    }

    /// Action entities (declared by the schema, or given as entities).
    #[getter]
    fn action_count(&self) -> usize {
        action_count(&self.core.current.load())
    }

    #[getter]
    fn policy_count(&self) -> usize {
        self.core.current.load().set.policies.len()
    }

    /// Agent-scoped labels a task acquired since the last call (see `take_task_labels_impl`).
    fn take_task_labels(&self, task: &TaskHandle) -> PyResult<Vec<String>> {
        self.take_task_labels_impl(task)
    }

    /// Undo a permit whose action did not happen (see `revert_permit_impl`).
    #[pyo3(signature = (task, spent, *, message, kind=DenialKind::Budget, counts=true))]
    fn revert_permit(
        &self,
        task: &TaskHandle,
        spent: std::collections::HashMap<String, i64>,
        message: String,
        kind: DenialKind,
        counts: bool,
    ) -> PyResult<Decision> {
        self.revert_permit_impl(task, spent, message, kind, counts)
    }

    /// The state file's labels: name to scope (`"task"` or `"agent"`), in file order.
    #[getter]
    fn state_labels(&self) -> Vec<(String, &'static str)> {
        self.state_labels_impl()
    }
}

//! Task handles and the task entry points of the engine (open, decide, context).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;

use super::convert::{uid_strings, Converter};
use super::decision::Decision;
use super::engine::Engine;
use crate::engine::{OnError, ResolvedRequest};
use crate::error::TetherError as CoreError;
use crate::state;

/// A task's state handle: labels, counters, budgets and its revocation flag, in Rust.
#[pyclass(frozen, module = "tether._core")]
pub(crate) struct TaskHandle {
    pub(crate) slot: Arc<state::TaskSlot>,
    pub(crate) engine_id: usize,
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

    /// Count a denial made outside a decision (a refused approval) on this task's
    /// and its ancestors' monitors. Returns the reason if a monitor revoked a task.
    fn record_denial(&self) -> Option<String> {
        crate::task_decide::record_denial(&self.slot)
    }

    fn __repr__(&self) -> String {
        format!("TaskHandle(id={}, depth={})", self.slot.id, self.slot.depth)
    }
}
/// NaN and infinities are rejected: NaN would compare as "never expired" for one
/// check and "expired" for another.
fn ms_of(secs: f64, what: &str) -> PyResult<u64> {
    Ok((finite(secs, what)?.max(0.0) * 1000.0) as u64)
}

pub(crate) fn finite(x: f64, what: &str) -> PyResult<f64> {
    if x.is_finite() {
        Ok(x)
    } else {
        Err(pyo3::exceptions::PyValueError::new_err(format!(
            "{what} must be a finite number of seconds, not {x}"
        )))
    }
}

/// Task time in ms on the caller's clock. Deadlines and windows never read the
/// wall clock: without `now`, Python's `time.monotonic()` (a wall-clock step must
/// not freeze a window or move a deadline).
pub(crate) fn now_ms(py: Python<'_>, now: Option<f64>) -> PyResult<u64> {
    static MONOTONIC: GILOnceCell<Py<PyAny>> = GILOnceCell::new();
    let secs = match now {
        Some(s) => s,
        None => MONOTONIC
            .get_or_try_init(py, || -> PyResult<Py<PyAny>> {
                Ok(py.import("time")?.getattr("monotonic")?.unbind())
            })?
            .call0(py)?
            .extract::<f64>(py)?,
    };
    ms_of(secs, "now")
}

/// How a task is opened, besides its agent.
pub(crate) struct TaskOptions<'a, 'py> {
    pub(crate) scope: Option<&'a Bound<'py, PyAny>>,
    pub(crate) deadline: Option<f64>,
    pub(crate) parent: Option<&'a TaskHandle>,
    pub(crate) intent: &'a str,
    pub(crate) on_error: Option<OnError>,
    pub(crate) now: Option<f64>,
    pub(crate) limits: state::Limits,
    /// Label names the task starts with (e.g. agent-scoped labels from a store).
    pub(crate) labels: Option<Vec<String>>,
}

impl Engine {
    /// Open a task for `agent`. `scope`: the actions it may take (None: any);
    /// `deadline` and `now`: seconds on the caller's monotonic clock (the one
    /// every `authorize_task(now=...)` of this task uses; default
    /// `time.monotonic()`); `parent`: the delegating task (labels are inherited,
    /// the actor chain extended, and every decision must also be permitted for
    /// each ancestor, within each ancestor's scope, budgets and counters).
    /// `intent` is what rules read as `context.task.intent`; `on_error`
    /// overrides the engine's for this task's decisions.
    pub(crate) fn open_task_impl(
        &self,
        py: Python<'_>,
        agent: &Bound<'_, PyAny>,
        opts: TaskOptions<'_, '_>,
    ) -> PyResult<TaskHandle> {
        let (agent_ty, agent_id) = uid_strings(agent, "agent")?;
        let scope_names = match opts.scope.filter(|s| !s.is_none()) {
            None => None,
            Some(s) => Some(
                s.try_iter()?
                    .map(|a| Ok(uid_strings(&a?, "scope action")?))
                    .collect::<PyResult<Vec<_>>>()?,
            ),
        };
        // The intent is interned for good, like the agent uid (`intern_uids` is the
        // core's only stable interning entry; the type is known, so only the id is new).
        let mut names: Vec<(&str, &str)> = vec![(&agent_ty, &agent_id), (&agent_ty, opts.intent)];
        for (t, i) in scope_names.iter().flatten() {
            names.push((t, i));
        }
        // New names wait for the write lock: let other threads run meanwhile.
        let uids = py.allow_threads(|| self.core.intern_uids(&names))?;
        let (agent, intent) = (uids[0], uids[1].id);
        let scope = scope_names.map(|_| uids[2..].iter().copied().collect());
        if let Some(p) = opts.parent {
            if p.engine_id != self.id() {
                return Err(
                    CoreError::Request("parent task belongs to another engine".into()).into(),
                );
            }
        }
        if !(0.0..=1.0).contains(&opts.limits.max_deny_ratio) {
            return Err(CoreError::Request("max_deny_ratio must be between 0 and 1".into()).into());
        }
        let now_ms = now_ms(py, opts.now)?;
        let snap = self.core.current.load();
        let st = snap.set.state.as_ref();
        let windows: Vec<u64> = st
            .map(|s| s.counters.iter().map(|c| c.1).collect())
            .unwrap_or_default();
        let n_budgets = st.map_or(0, |s| s.budgets.len());
        let seeded = match (&opts.labels, st) {
            (None, _) => 0,
            (Some(l), _) if l.is_empty() => 0,
            (Some(_), None) => {
                return Err(CoreError::Request(
                    "labels given but the engine has no task state file".into(),
                )
                .into())
            }
            (Some(l), Some(st)) => st.label_bits(l).map_err(CoreError::Request)?,
        };
        let parent_slot = opts.parent.map(|p| p.slot.clone());
        let mut deadline_ms = opts.deadline.map(|d| ms_of(d, "deadline")).transpose()?;
        if let Some(p) = &parent_slot {
            // A child never outlives its parent.
            deadline_ms = match (deadline_ms, p.deadline_ms) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        let init = state::TaskInit {
            id: self.next_task.fetch_add(1, Ordering::Relaxed),
            agent,
            scope,
            deadline_ms,
            limits: opts.limits,
            on_error: opts.on_error,
            intent,
            memory: Some(self.memory.clone()),
            labels: self.memory.recall(&agent, now_ms) | seeded,
        };
        let slot = state::TaskSlot::new(init, parent_slot, &windows, n_budgets)
            .map_err(CoreError::Request)?;
        Ok(TaskHandle {
            slot: Arc::new(slot),
            engine_id: self.id(),
        })
    }

    /// Decide an action inside a task; a permit commits the state effects on
    /// the task and every ancestor atomically. `now`: the task clock's seconds.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn authorize_task_impl(
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
            return Err(PyErr::from(CoreError::Request(
                "task belongs to another engine".into(),
            )));
        }
        let now_ms = now_ms(py, now)?;
        let snap = self.core.current.load();
        let mut strs = self.strs.try_lock().ok();
        let mut conv = Converter::new(&snap, self.id()).cached(strs.as_deref_mut());
        let action = conv.entity(action, "action").map_err(PyErr::from)?;
        let resource = conv.entity(resource, "resource").map_err(PyErr::from)?;
        let context = conv.context(context).map_err(PyErr::from)?;
        let mut req = ResolvedRequest {
            fields: Default::default(),
            principal: task.slot.agent,
            action,
            resource,
            context,
            locals: conv.locals,
        };
        snap.check_request(&req, true)?;
        let t = snap.authorize_task(
            &task.slot,
            &mut req,
            reasons,
            self.core.on_error,
            now_ms,
            &approved,
        );
        self.decision(py, &snap, &req, t)
    }

    /// Widen the task's own scope by `actions` until `until` (task-clock seconds).
    /// The escalation's authorization and approval happen before this call.
    pub(crate) fn escalate_task_impl(
        &self,
        task: &TaskHandle,
        actions: &Bound<'_, PyAny>,
        until: f64,
    ) -> PyResult<()> {
        if task.engine_id != self.id() {
            return Err(CoreError::Request("task belongs to another engine".into()).into());
        }
        let until = ms_of(until, "until")?;
        let mut granted = Vec::new();
        for a in actions.try_iter()? {
            let (t, i) = uid_strings(&a?, "escalated action")?;
            granted.push(self.core.intern_uid(&t, &i)?);
        }
        let mut inner = task.slot.lock();
        if let Some(r) = &inner.revoked {
            return Err(CoreError::Request(format!("task revoked: {r}")).into());
        }
        for a in granted {
            match inner.escalated.iter_mut().find(|(x, _)| *x == a) {
                Some(e) => e.1 = e.1.max(until),
                None => inner.escalated.push((a, until)),
            }
        }
        Ok(())
    }

    /// The task's `context.task` value now, as JSON (to replay a decision elsewhere).
    pub(crate) fn task_context_impl(
        &self,
        py: Python<'_>,
        task: &TaskHandle,
        now: Option<f64>,
    ) -> PyResult<String> {
        let now = now_ms(py, now)?;
        let snap = self.core.current.load();
        let inner = task.slot.lock();
        Ok(match snap.set.state.as_ref() {
            Some(st) => state::task_json(st, &task.slot, &inner, now, &snap.interner).to_string(),
            None => "{}".to_owned(),
        })
    }

    /// Agent-scoped labels the task's decisions acquired since the last call
    /// (taken: each is returned once), for sharing beyond this engine.
    pub(crate) fn take_task_labels_impl(&self, task: &TaskHandle) -> PyResult<Vec<String>> {
        if task.engine_id != self.id() {
            return Err(CoreError::Request("task belongs to another engine".into()).into());
        }
        let bits = std::mem::take(&mut task.slot.lock().unshared_agent_labels);
        let snap = self.core.current.load();
        Ok(match (bits, snap.set.state.as_ref()) {
            (0, _) | (_, None) => Vec::new(),
            (b, Some(st)) => st.label_names_of(b),
        })
    }

    /// Undo a permit whose action did not happen (see `task_decide::revert_permit`):
    /// `spent` maps budget names to what the permit spent. Returns the denial that
    /// stands in its place (for receipts), with `revoked` set if a monitor tripped.
    pub(crate) fn revert_permit_impl(
        &self,
        task: &TaskHandle,
        spent: std::collections::HashMap<String, i64>,
        message: String,
        kind: super::decision::DenialKind,
        counts: bool,
    ) -> PyResult<Decision> {
        if task.engine_id != self.id() {
            return Err(CoreError::Request("task belongs to another engine".into()).into());
        }
        let snap = self.core.current.load();
        let names: &[String] = snap.set.state.as_ref().map_or(&[], |s| &s.budget_names);
        let mut spend = vec![0i64; names.len()];
        for (name, amount) in spent {
            let Some(b) = names.iter().position(|n| *n == name) else {
                return Err(CoreError::Request(format!(
                    "unknown budget `{name}` (the state file declares: {})",
                    names.join(", ")
                ))
                .into());
            };
            if amount < 0 {
                return Err(CoreError::Request(format!(
                    "budget `{name}`: a refund must not be negative, got {amount}"
                ))
                .into());
            }
            spend[b] = amount;
        }
        let revoked = crate::task_decide::revert_permit(&task.slot, &spend, counts);
        Ok(Decision {
            allowed: false,
            reasons: Vec::new(),
            errors: Vec::new(),
            error_messages: Vec::new(),
            message: Some(message),
            obligations: Vec::new(),
            revoked,
            kind: Some(kind),
        })
    }

    /// The state file's labels and their scopes (`"task"` or `"agent"`).
    pub(crate) fn state_labels_impl(&self) -> Vec<(String, &'static str)> {
        let snap = self.core.current.load();
        let Some(st) = snap.set.state.as_ref() else {
            return Vec::new();
        };
        st.label_names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let agent = st.agent_labels & (1u64 << i) != 0;
                (n.clone(), if agent { "agent" } else { "task" })
            })
            .collect()
    }
}

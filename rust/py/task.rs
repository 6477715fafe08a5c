//! Task handles and the task entry points of the engine (open, decide, context).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use pyo3::prelude::*;

use super::convert::{uid_strings, Converter};
use super::decision::Decision;
use super::engine::Engine;
use crate::engine::ResolvedRequest;
use crate::error::TetherError as CoreError;
use crate::state;
use crate::value::Euid;

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

    fn __repr__(&self) -> String {
        format!("TaskHandle(id={}, depth={})", self.slot.id, self.slot.depth)
    }
}
pub(crate) fn now_ms(now: Option<f64>) -> u64 {
    let secs = now.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    });
    (secs.max(0.0) * 1000.0) as u64
}

impl Engine {
    /// Open a task for `agent`. `scope`: the actions it may take (None: any);
    /// `deadline`: epoch seconds; `parent`: the delegating task (labels are
    /// inherited, the actor chain extended, and every decision must also be
    /// permitted for each ancestor and within each ancestor's scope).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn open_task_impl(
        &self,
        agent: &Bound<'_, PyAny>,
        scope: Option<&Bound<'_, PyAny>>,
        deadline: Option<f64>,
        parent: Option<&TaskHandle>,
        max_deny_streak: u32,
        max_rate: u32,
        rate_window: f64,
        revoke_on_budget_exhausted: bool,
    ) -> PyResult<TaskHandle> {
        let perr = |e: CoreError| PyErr::from(e);
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
        let snap = self.core.current.load();
        let mut conv = Converter::new(&snap, self.id());
        let action = conv.entity(action, "action").map_err(PyErr::from)?;
        let resource = conv.entity(resource, "resource").map_err(PyErr::from)?;
        let context = conv.context(context).map_err(PyErr::from)?;
        let mut req = ResolvedRequest {
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
            now_ms(now),
            &approved,
        );
        self.decision(py, &snap, &req, t)
    }

    /// The task's `context.task` value now, as JSON (to replay a decision elsewhere).
    pub(crate) fn task_context_impl(&self, task: &TaskHandle, now: Option<f64>) -> String {
        let snap = self.core.current.load();
        let inner = task.slot.lock();
        match snap.set.state.as_ref() {
            Some(st) => {
                state::task_json(st, &task.slot, &inner, now_ms(now), &snap.interner).to_string()
            }
            None => "{}".to_owned(),
        }
    }
}

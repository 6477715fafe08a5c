//! Per-task state: labels (taint), windowed counters and budgets, exposed to
//! rules as `context.task`, and committed atomically with a permit.
//!
//! Each task lives in a `TaskSlot` shared by `Arc` with its Python handle and
//! its children, so a decision reaches its state with no lookup. A slot's
//! mutable part sits behind one mutex: a decision holds the mutexes of the task
//! and all its ancestors (taken leaf to root, see `task_decide::Chain`) from
//! reading the state through evaluation to committing the effects on every one
//! of them, which is what makes check-and-reserve atomic for the whole tree (two
//! concurrent actions, in the same task or in sibling sub-tasks, can never both
//! spend the last of a budget). Atomics per field could not give that across
//! several budgets, counters and tasks at once.

use std::sync::{Arc, Mutex, MutexGuard};

use rustc_hash::FxHashSet;
use serde::Deserialize;

use crate::compile::ir::{Node, NodeId};
use crate::compile::lower::Lowerer;
use crate::error::TetherError;
use crate::value::{Euid, Interner, Record, Sym, Value};

/// The state file, as JSON (the Python side reads the TOML).
#[derive(Deserialize, Default, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct StateSpec {
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, LabelSpec>,
    #[serde(default)]
    pub counters: std::collections::BTreeMap<String, CounterSpec>,
    #[serde(default)]
    pub budgets: std::collections::BTreeMap<String, BudgetSpec>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct LabelSpec {
    pub set_when: String,
    /// `"task"` (default): the label lives as long as the task. `"agent"`: it
    /// sticks to the agent across tasks (for `ttl_ms`, or for the engine's life),
    /// so taint cannot be laundered by opening a new task.
    #[serde(default)]
    pub scope: LabelScope,
    #[serde(default)]
    pub ttl_ms: Option<u64>,
}

#[derive(Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LabelScope {
    #[default]
    Task,
    Agent,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct CounterSpec {
    pub window_ms: u64,
    pub count_when: String,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct BudgetSpec {
    pub add: String,
    pub limit: i64,
    #[serde(default)]
    pub when: Option<String>,
}

pub const MAX_LABELS: usize = 64;

/// The state spec compiled against one snapshot's interner.
#[derive(Debug, Default)]
pub struct CompiledState {
    pub nodes: Vec<Node>,
    pub labels: Vec<(Sym, NodeId)>,
    pub counters: Vec<(Sym, u64, NodeId)>,
    pub budgets: Vec<(Sym, NodeId, Option<NodeId>, i64)>,
    pub label_names: Vec<String>,
    pub counter_names: Vec<String>,
    pub budget_names: Vec<String>,
    /// Bits of the agent-scoped labels, and each label's ttl (`None`: no expiry).
    pub agent_labels: u64,
    pub label_ttls: Vec<Option<u64>>,
    pub keys: Keys,
    /// Height of the tallest expression in `nodes`: the stack its evaluation may
    /// need (see `eval::stack`).
    pub max_height: usize,
}

/// Interned attribute names of the `context.task` record.
#[derive(Debug, Default, Clone, Copy)]
pub struct Keys {
    pub task: Sym,
    pub labels: Sym,
    pub counters: Sym,
    pub budgets: Sym,
    pub depth: Sym,
    pub actors: Sym,
    pub spent: Sym,
    pub limit: Sym,
    pub remaining: Sym,
    pub intent: Sym,
    pub id: Sym,
    pub agent: Sym,
    pub escalated: Sym,
    pub escalated_until: Sym,
}

fn compile_expr(
    where_: &str,
    src: &str,
    nodes: &mut Vec<Node>,
    interner: &mut Interner,
) -> Result<NodeId, TetherError> {
    let err = |m: String| TetherError::policy(format!("state file, {where_}: {m}"));
    // A standalone expression is parsed by Cedar as the condition of a policy.
    let text = format!("permit (principal, action, resource) when {{ {src} }};");
    let pset = crate::compile::parse(&text).map_err(|e| err(e.to_string()))?;
    let policy = pset
        .policies()
        .next()
        .ok_or_else(|| err("empty expression".into()))?;
    if pset.policies().count() != 1 {
        return Err(err("must be a single expression".into()));
    }
    let pst = policy.to_pst().map_err(|e| err(e.to_string()))?;
    let clause = pst
        .body()
        .clauses()
        .first()
        .cloned()
        .ok_or_else(|| err("empty expression".into()))?;
    let expr = match clause {
        cedar_policy::pst::Clause::When(e) | cedar_policy::pst::Clause::Unless(e) => e,
    };
    let mut lw = Lowerer {
        nodes,
        interner,
        depth: 0,
    };
    lw.expr(&expr)
        .map_err(|u| err(format!("unsupported Cedar feature: {}", u.0)))
}

impl CompiledState {
    /// The label bits of `names` (labels a task is opened with); an undeclared
    /// name is an error that lists the declared ones.
    pub fn label_bits<S: AsRef<str>>(&self, names: &[S]) -> Result<u64, String> {
        let mut bits = 0u64;
        for name in names {
            let name = name.as_ref();
            match self.label_names.iter().position(|n| n == name) {
                Some(i) => bits |= 1u64 << i,
                None => {
                    return Err(format!(
                        "unknown label `{name}`: the state file declares {}",
                        if self.label_names.is_empty() {
                            "no labels".to_owned()
                        } else {
                            self.label_names.join(", ")
                        }
                    ))
                }
            }
        }
        Ok(bits)
    }

    /// The names of the labels among `bits`, in state-file order.
    pub fn label_names_of(&self, bits: u64) -> Vec<String> {
        self.label_names
            .iter()
            .enumerate()
            .filter(|(i, _)| bits & (1u64 << i) != 0)
            .map(|(_, n)| n.clone())
            .collect()
    }

    pub fn compile(spec: &StateSpec, interner: &mut Interner) -> Result<Self, TetherError> {
        if spec.labels.len() > MAX_LABELS {
            return Err(TetherError::policy(format!(
                "state file: at most {MAX_LABELS} labels are supported, got {}",
                spec.labels.len()
            )));
        }
        let mut st = CompiledState::default();
        for (i, (name, l)) in spec.labels.iter().enumerate() {
            if l.scope == LabelScope::Agent {
                st.agent_labels |= 1u64 << i;
            }
            if l.ttl_ms == Some(0) {
                return Err(TetherError::policy(format!(
                    "state file, labels.{name}: ttl must be positive"
                )));
            }
            st.label_ttls.push(l.ttl_ms);
            let n = compile_expr(
                &format!("labels.{name}.set_when"),
                &l.set_when,
                &mut st.nodes,
                interner,
            )?;
            st.labels.push((interner.intern(name), n));
            st.label_names.push(name.clone());
        }
        for (name, c) in &spec.counters {
            if c.window_ms == 0 {
                return Err(TetherError::policy(format!(
                    "state file, counters.{name}: window must be positive"
                )));
            }
            let n = compile_expr(
                &format!("counters.{name}.count_when"),
                &c.count_when,
                &mut st.nodes,
                interner,
            )?;
            st.counters.push((interner.intern(name), c.window_ms, n));
            st.counter_names.push(name.clone());
        }
        for (name, b) in &spec.budgets {
            if b.limit < 0 {
                return Err(TetherError::policy(format!(
                    "state file, budgets.{name}: limit must not be negative"
                )));
            }
            let add = compile_expr(
                &format!("budgets.{name}.add"),
                &b.add,
                &mut st.nodes,
                interner,
            )?;
            let when = b
                .when
                .as_ref()
                .map(|w| compile_expr(&format!("budgets.{name}.when"), w, &mut st.nodes, interner))
                .transpose()?;
            st.budgets.push((interner.intern(name), add, when, b.limit));
            st.budget_names.push(name.clone());
        }
        st.max_height = crate::compile::ir::heights(&st.nodes)
            .into_iter()
            .max()
            .unwrap_or(0) as usize;
        st.keys = Keys {
            task: interner.intern("task"),
            labels: interner.intern("labels"),
            counters: interner.intern("counters"),
            budgets: interner.intern("budgets"),
            depth: interner.intern("depth"),
            actors: interner.intern("actors"),
            spent: interner.intern("spent"),
            limit: interner.intern("limit"),
            remaining: interner.intern("remaining"),
            intent: interner.intern("intent"),
            id: interner.intern("id"),
            agent: interner.intern("agent"),
            escalated: interner.intern("escalated"),
            escalated_until: interner.intern("escalated_until"),
        };
        Ok(st)
    }
}

const BUCKETS: usize = 16;

/// A sliding-window event count in 16 buckets: memory and time are constant,
/// and the count is exact to within one bucket (window / 16) of the edge.
#[derive(Debug, Clone)]
pub struct Window {
    width_ms: u64,
    buckets: [(u64, u32); BUCKETS],
}

impl Window {
    pub fn new(window_ms: u64) -> Self {
        Window {
            width_ms: (window_ms / BUCKETS as u64).max(1),
            buckets: [(u64::MAX, 0); BUCKETS],
        }
    }

    pub fn count(&self, now_ms: u64) -> u32 {
        let cur = now_ms / self.width_ms;
        self.buckets
            .iter()
            .filter(|(epoch, _)| *epoch != u64::MAX && *epoch + BUCKETS as u64 > cur)
            .map(|(_, c)| *c)
            .sum()
    }

    pub fn add(&mut self, now_ms: u64) {
        let cur = now_ms / self.width_ms;
        let slot = &mut self.buckets[(cur % BUCKETS as u64) as usize];
        if slot.0 != cur {
            *slot = (cur, 0);
        }
        slot.1 = slot.1.saturating_add(1);
    }
}

/// Monitor thresholds; zero disables a monitor.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    pub max_deny_streak: u32,
    pub max_rate: u32,
    pub rate_window_ms: u64,
    pub revoke_on_budget_exhausted: bool,
    /// Revoke when more than this share of decisions is denied (0: off), once
    /// at least `min_denials` were: interleaving probes with benign calls resets
    /// a deny streak but not the ratio.
    pub max_deny_ratio: f64,
    pub min_denials: u32,
}

/// Agent-scoped labels, per agent: when each one expires (`u64::MAX`: never).
/// Shared by every task of one engine; locked only after a task chain's locks.
#[derive(Debug, Default)]
pub struct AgentMemory {
    labels: Mutex<rustc_hash::FxHashMap<Euid, Vec<(u32, u64)>>>,
}

impl AgentMemory {
    /// Record that `agent` now holds the agent-scoped labels among `bits`.
    pub fn remember(&self, st: &CompiledState, agent: Euid, bits: u64, now_ms: u64) {
        let mut map = self.labels.lock().unwrap_or_else(|p| p.into_inner());
        let held = map.entry(agent).or_default();
        for (i, ttl) in st.label_ttls.iter().enumerate() {
            if bits & st.agent_labels & (1u64 << i) == 0 {
                continue;
            }
            let until = ttl.map_or(u64::MAX, |t| now_ms.saturating_add(t));
            match held.iter_mut().find(|(b, _)| *b as usize == i) {
                Some(e) => e.1 = e.1.max(until),
                None => held.push((i as u32, until)),
            }
        }
    }

    /// The agent-scoped labels `agent` still holds at `now_ms`, as label bits.
    pub fn recall(&self, agent: &Euid, now_ms: u64) -> u64 {
        let mut map = self.labels.lock().unwrap_or_else(|p| p.into_inner());
        let Some(held) = map.get_mut(agent) else {
            return 0;
        };
        held.retain(|(_, until)| *until > now_ms);
        held.iter().fold(0, |acc, (b, _)| acc | (1u64 << b))
    }
}

#[derive(Debug)]
pub struct TaskInner {
    pub revoked: Option<String>,
    pub labels: u64,
    pub counters: Vec<Window>,
    pub spent: Vec<i64>,
    pub deny_streak: u32,
    /// Decisions over the task's life (its own and its descendants'), for the deny ratio.
    pub allowed_total: u32,
    pub denied_total: u32,
    pub rate: Window,
    pub ctx_cache: Option<CtxCache>,
    /// Actions granted by an escalation, each until a time (ms on the task clock).
    /// Only this task's own scope widens; ancestors' scopes and children are unchanged.
    pub escalated: Vec<(Euid, u64)>,
    /// Agent-scoped labels this task's decisions acquired that the caller has not
    /// yet taken (to share them beyond this engine, e.g. through a store).
    pub unshared_agent_labels: u64,
    /// The deny streak the last permit reset, so a permit undone afterwards
    /// (a shared budget refused it) does not break the streak.
    pub streak_before_permit: u32,
}

impl TaskInner {
    /// Drop expired escalations; whether any is still in force.
    pub fn prune_escalations(&mut self, now_ms: u64) -> bool {
        self.escalated.retain(|(_, until)| *until > now_ms);
        !self.escalated.is_empty()
    }

    fn escalated_until(&self) -> u64 {
        self.escalated.iter().map(|(_, u)| *u).max().unwrap_or(0)
    }
}

#[derive(Debug)]
pub struct TaskSlot {
    pub id: u64,
    pub agent: Euid,
    pub parent: Option<Arc<TaskSlot>>,
    /// Actions this task may take (`None`: unrestricted).
    pub scope: Option<FxHashSet<Euid>>,
    pub depth: u32,
    /// The actor chain, root first, ending with this task's agent.
    pub actors: Vec<Euid>,
    /// `context.task.actors`, built once.
    pub actors_value: Value,
    pub deadline_ms: Option<u64>,
    pub limits: Limits,
    /// Overrides the engine's `on_error` for this task's decisions.
    pub on_error: Option<crate::engine::OnError>,
    /// The intent the task declared (interned), readable as `context.task.intent`.
    pub intent: Sym,
    /// Where agent-scoped labels are remembered.
    pub memory: Option<Arc<AgentMemory>>,
    pub inner: Mutex<TaskInner>,
}

/// What a task is opened with besides its parent (all fixed for its life).
#[derive(Debug)]
pub struct TaskInit {
    pub id: u64,
    pub agent: Euid,
    pub scope: Option<FxHashSet<Euid>>,
    pub deadline_ms: Option<u64>,
    pub limits: Limits,
    pub on_error: Option<crate::engine::OnError>,
    pub intent: Sym,
    pub memory: Option<Arc<AgentMemory>>,
    /// Labels the task starts with besides its parent's (recalled agent labels).
    pub labels: u64,
}

impl TaskSlot {
    pub fn new(
        init: TaskInit,
        parent: Option<Arc<TaskSlot>>,
        counter_windows: &[u64],
        n_budgets: usize,
    ) -> Result<Self, String> {
        let (labels, depth, mut actors) = match &parent {
            Some(p) => {
                let inner = p.lock();
                if let Some(r) = &inner.revoked {
                    return Err(format!("parent task is revoked: {r}"));
                }
                (inner.labels, p.depth + 1, p.actors.clone())
            }
            None => (0, 0, Vec::new()),
        };
        actors.push(init.agent);
        let actors_value = Value::set_from(actors.iter().map(|a| Value::Str(a.id)).collect());
        let limits = init.limits;
        Ok(TaskSlot {
            actors_value,
            id: init.id,
            agent: init.agent,
            parent,
            scope: init.scope,
            depth,
            actors,
            deadline_ms: init.deadline_ms,
            limits,
            on_error: init.on_error,
            intent: init.intent,
            memory: init.memory,
            inner: Mutex::new(TaskInner {
                revoked: None,
                labels: labels | init.labels,
                counters: counter_windows.iter().map(|w| Window::new(*w)).collect(),
                spent: vec![0; n_budgets],
                deny_streak: 0,
                allowed_total: 0,
                denied_total: 0,
                rate: Window::new(limits.rate_window_ms.max(1)),
                ctx_cache: None,
                escalated: Vec::new(),
                unshared_agent_labels: 0,
                streak_before_permit: 0,
            }),
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, TaskInner> {
        // State updates never leave a half-written slot, so a poisoned lock is still whole.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Revoke this task (descendants see it through their parent chain). The
    /// first reason sticks; returns whether this call revoked it.
    pub fn revoke(&self, reason: &str) -> bool {
        let mut inner = self.lock();
        if inner.revoked.is_some() {
            return false;
        }
        inner.revoked = Some(reason.to_owned());
        true
    }

    /// Why this task, or the nearest revoked ancestor, is revoked.
    pub fn revoked_reason(&self) -> Option<String> {
        if let Some(r) = &self.lock().revoked {
            return Some(r.clone());
        }
        self.ancestor_revoked()
    }

    /// Why the nearest revoked ancestor is revoked (locks ancestors one at a time).
    pub fn ancestor_revoked(&self) -> Option<String> {
        let mut cur = self.parent.as_ref();
        while let Some(p) = cur {
            if let Some(r) = &p.lock().revoked {
                return Some(format!("ancestor task {} revoked: {r}", p.id));
            }
            cur = p.parent.as_ref();
        }
        None
    }

    /// The first task on the chain (self, then ancestors) whose scope excludes
    /// `action`; `escalated`: this task's own escalations in force (ancestors'
    /// escalations never widen what a descendant may do).
    pub fn scope_violation(&self, action: &Euid, escalated: &[(Euid, u64)]) -> Option<u64> {
        let mut cur: Option<&TaskSlot> = Some(self);
        while let Some(t) = cur {
            if let Some(s) = &t.scope {
                let widened = t.id == self.id && escalated.iter().any(|(a, _)| a == action);
                if !s.contains(action) && !widened {
                    return Some(t.id);
                }
            }
            cur = t.parent.as_deref();
        }
        None
    }
}

/// The last `context.task` value built for a task. Between decisions the task
/// holds the only reference to it, so the next decision updates its counters and
/// budgets in place instead of allocating a new tree.
#[derive(Debug)]
pub struct CtxCache {
    labels: u64,
    value: Value,
}

fn field_mut(r: &mut Record, key: Sym) -> Option<&mut Value> {
    r.fields.iter_mut().find(|(k, _)| *k == key).map(|(_, v)| v)
}

fn record_mut(v: &mut Value) -> Option<&mut Record> {
    match v {
        Value::Record(r) => Arc::get_mut(r),
        _ => None,
    }
}

/// Refresh counters and budgets in `value` in place; `None` when it is shared.
fn refresh(st: &CompiledState, inner: &TaskInner, value: &mut Value, now_ms: u64) -> Option<()> {
    let k = st.keys;
    let outer = record_mut(value)?;
    let counters = record_mut(field_mut(outer, k.counters)?)?;
    for ((name, _, _), w) in st.counters.iter().zip(&inner.counters) {
        *field_mut(counters, *name)? = Value::Long(i64::from(w.count(now_ms)));
    }
    let budgets = record_mut(field_mut(outer, k.budgets)?)?;
    for ((name, _, _, limit), spent) in st.budgets.iter().zip(&inner.spent) {
        let b = record_mut(field_mut(budgets, *name)?)?;
        *field_mut(b, k.spent)? = Value::Long(*spent);
        *field_mut(b, k.remaining)? = Value::Long(limit - spent);
    }
    Some(())
}

/// `context.task` for the current state, reusing the last one where possible.
pub fn task_value_cached(
    st: &CompiledState,
    slot: &TaskSlot,
    inner: &mut TaskInner,
    now_ms: u64,
) -> Value {
    if inner.prune_escalations(now_ms) {
        // Rare: rebuilt each time rather than kept in step with a changing set.
        return task_value(st, slot, inner, inner.labels, now_ms);
    }
    if let Some(mut c) = inner.ctx_cache.take() {
        if c.labels == inner.labels && refresh(st, inner, &mut c.value, now_ms).is_some() {
            let v = c.value.clone();
            inner.ctx_cache = Some(c);
            return v;
        }
    }
    let value = task_value(st, slot, inner, inner.labels, now_ms);
    inner.ctx_cache = Some(CtxCache {
        labels: inner.labels,
        value: value.clone(),
    });
    value
}

/// Build the `context.task` record for a task's state, with `labels` as its labels.
pub fn task_value(
    st: &CompiledState,
    slot: &TaskSlot,
    inner: &TaskInner,
    labels: u64,
    now_ms: u64,
) -> Value {
    let k = st.keys;
    let labels: Vec<Value> = st
        .labels
        .iter()
        .enumerate()
        .filter(|(i, _)| labels & (1u64 << i) != 0)
        .map(|(_, (name, _))| Value::Str(*name))
        .collect();
    let counters: Vec<(Sym, Value)> = st
        .counters
        .iter()
        .zip(&inner.counters)
        .map(|((name, _, _), w)| (*name, Value::Long(i64::from(w.count(now_ms)))))
        .collect();
    let budgets: Vec<(Sym, Value)> = st
        .budgets
        .iter()
        .zip(&inner.spent)
        .map(|((name, _, _, limit), spent)| {
            let rec = Record::from_unsorted(vec![
                (k.spent, Value::Long(*spent)),
                (k.limit, Value::Long(*limit)),
                (k.remaining, Value::Long(limit - spent)),
            ]);
            (*name, Value::Record(Arc::new(rec)))
        })
        .collect();
    Value::Record(Arc::new(Record::from_unsorted(vec![
        (k.labels, Value::set_from(labels)),
        (
            k.counters,
            Value::Record(Arc::new(Record::from_unsorted(counters))),
        ),
        (
            k.budgets,
            Value::Record(Arc::new(Record::from_unsorted(budgets))),
        ),
        (k.depth, Value::Long(i64::from(slot.depth))),
        (k.actors, slot.actors_value.clone()),
        (k.intent, Value::Str(slot.intent)),
        (k.id, Value::Long(slot.id as i64)),
        (k.agent, Value::Entity(slot.agent)),
        (
            k.escalated,
            Value::set_from(
                inner
                    .escalated
                    .iter()
                    .filter(|(_, u)| *u > now_ms)
                    .map(|(a, _)| Value::Str(a.id))
                    .collect(),
            ),
        ),
        (
            k.escalated_until,
            Value::Long(i64::try_from(inner.escalated_until()).unwrap_or(i64::MAX)),
        ),
    ])))
}

/// `context.task` as JSON, for replaying a decision in another Cedar engine.
pub fn task_json(
    st: &CompiledState,
    slot: &TaskSlot,
    inner: &TaskInner,
    now_ms: u64,
    interner: &Interner,
) -> serde_json::Value {
    use serde_json::json;
    let labels: Vec<&str> = st
        .label_names
        .iter()
        .enumerate()
        .filter(|(i, _)| inner.labels & (1u64 << i) != 0)
        .map(|(_, n)| n.as_str())
        .collect();
    let counters: serde_json::Map<String, serde_json::Value> = st
        .counter_names
        .iter()
        .zip(&inner.counters)
        .map(|(n, w)| (n.clone(), json!(w.count(now_ms))))
        .collect();
    let budgets: serde_json::Map<String, serde_json::Value> = st
        .budget_names
        .iter()
        .zip(st.budgets.iter().zip(&inner.spent))
        .map(|(n, ((_, _, _, limit), spent))| {
            (
                n.clone(),
                json!({"spent": spent, "limit": limit, "remaining": limit - spent}),
            )
        })
        .collect();
    let actors: Vec<&str> = slot
        .actors
        .iter()
        .map(|a| interner.get(a.id).unwrap_or(""))
        .collect();
    let name = |s: crate::value::Sym| interner.get(s).unwrap_or("");
    json!({
        "labels": labels,
        "counters": counters,
        "budgets": budgets,
        "depth": slot.depth,
        "actors": actors,
        "intent": name(slot.intent),
        "id": slot.id,
        "agent": {"__entity": {"type": name(slot.agent.ty), "id": name(slot.agent.id)}},
        "escalated": inner
            .escalated
            .iter()
            .filter(|(_, u)| *u > now_ms)
            .map(|(a, _)| name(a.id))
            .collect::<Vec<_>>(),
        "escalated_until": inner.escalated_until(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_counts_and_slides() {
        let mut w = Window::new(1600);
        w.add(0);
        w.add(50);
        w.add(150);
        assert_eq!(w.count(150), 3);
        assert_eq!(w.count(1599), 3);
        // The first bucket (0..100) has left the window at t=1600.
        assert_eq!(w.count(1650), 1);
        assert_eq!(w.count(10_000), 0);
    }
}

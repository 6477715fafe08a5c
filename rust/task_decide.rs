//! One decision inside a task: revocation and scope checks, policy evaluation
//! for the agent and every ancestor it acts for, then the state effects and
//! monitors, all under the locks of the whole delegation chain
//! (check-and-reserve for the tree, not only the task).
//!
//! A delegation tree is one unit of accounting: what a child spends or counts
//! is reserved against every ancestor in the same step, the obligations of every
//! ancestor's deciding permits hold the child's action too, and the monitors of
//! every ancestor see the child's decisions.

use std::sync::{Arc, MutexGuard};

use crate::engine::{Mode, OnError, Outcome, ResolvedRequest, Snapshot};
use crate::eval::Evaluator;
use crate::state::{task_value_cached, CompiledState, TaskInner, TaskSlot};
use crate::value::{Record, Value};

/// Why tether denied: a typed kind, so nobody matches on message text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyKind {
    /// No policy permits it, a forbid holds, or an ancestor is not permitted it.
    Policy,
    /// The action is outside the task's (or an ancestor's) scope.
    Scope,
    /// The task's deadline passed.
    Deadline,
    /// The task or an ancestor was revoked before this decision.
    Revoked,
    /// A budget of the task or an ancestor would be exceeded.
    Budget,
    /// A monitor (rate, deny streak, deny ratio) tripped on this decision.
    Monitor,
    /// Permitted once the obligations are discharged (approval).
    Obligation,
    /// An evaluation error (fail closed), or the engine has no task state.
    Error,
}

#[derive(Debug, Default)]
pub struct TaskOutcome {
    pub outcome: Outcome,
    /// Why tether denied beyond the policies (revoked, scope, budget, delegation...).
    pub message: Option<String>,
    /// The kind of denial; `None` when allowed.
    pub kind: Option<DenyKind>,
    /// Obligations still to discharge before the permit takes effect.
    pub obligations: Vec<String>,
    /// Set when this decision revoked the task or an ancestor (monitor, scope, deadline).
    pub revoked_now: Option<String>,
}

fn deny(kind: DenyKind, message: String) -> TaskOutcome {
    TaskOutcome {
        message: Some(message),
        kind: Some(kind),
        ..TaskOutcome::default()
    }
}

/// The request context with `task` set to the task's state (tether's value wins
/// over any caller-supplied `task` key, so state cannot be spoofed).
fn with_task(ctx: Option<&Value>, task_key: u32, task: Value) -> Value {
    let mut fields = vec![(task_key, task)];
    if let Some(Value::Record(r)) = ctx {
        fields.extend(r.fields.iter().filter(|(k, _)| *k != task_key).cloned());
    }
    Value::Record(Arc::new(Record::from_unsorted(fields)))
}

struct Effects {
    labels: u64,
    counters: Vec<bool>,
    spend: Vec<i64>,
}

/// Evaluate the state file's conditions for a permitted action. Any error fails closed.
fn effects(
    st: &CompiledState,
    snap: &Snapshot,
    req: &ResolvedRequest,
    ctx: &Value,
    labels: u64,
) -> Result<Effects, String> {
    let ev = Evaluator::new(
        &st.nodes,
        &snap.store,
        &snap.interner,
        &req.locals,
        req.principal,
        req.action,
        req.resource,
        ctx,
    );
    let render = |e: crate::eval::EvalErr| e.render(&snap.interner, &req.locals);
    let mut labels = labels;
    for (i, (_, node)) in st.labels.iter().enumerate() {
        if ev.eval_bool(*node).map_err(|e| {
            format!(
                "state: label `{}` condition: {}",
                st.label_names[i],
                render(e)
            )
        })? {
            labels |= 1u64 << i;
        }
    }
    let mut counters = Vec::with_capacity(st.counters.len());
    for (i, (_, _, node)) in st.counters.iter().enumerate() {
        counters.push(ev.eval_bool(*node).map_err(|e| {
            format!(
                "state: counter `{}` condition: {}",
                st.counter_names[i],
                render(e)
            )
        })?);
    }
    let mut spend = Vec::with_capacity(st.budgets.len());
    for (i, (_, add, when, _)) in st.budgets.iter().enumerate() {
        let name = &st.budget_names[i];
        let applies = match when {
            Some(w) => ev
                .eval_bool(*w)
                .map_err(|e| format!("state: budget `{name}` condition: {}", render(e)))?,
            None => true,
        };
        if !applies {
            spend.push(0);
            continue;
        }
        let amount = match &*ev
            .eval(*add)
            .map_err(|e| format!("state: budget `{name}` amount: {}", render(e)))?
        {
            Value::Long(v) if *v >= 0 => *v,
            Value::Long(v) => return Err(format!("state: budget `{name}` amount {v} is negative")),
            other => {
                return Err(format!(
                    "state: budget `{name}` amount is a {}, not a long",
                    other.type_name()
                ))
            }
        };
        spend.push(amount);
    }
    Ok(Effects {
        labels,
        counters,
        spend,
    })
}

/// The task and its ancestors, leaf first, each with its state locked.
///
/// Every decision locks a chain from the leaf towards the root, so locks are
/// always taken in order of strictly decreasing depth and no two decisions can
/// wait on each other in a cycle; label propagation and `TaskSlot::new` follow
/// the same order.
struct Chain<'a> {
    slots: Vec<&'a TaskSlot>,
    inner: Vec<MutexGuard<'a, TaskInner>>,
}

impl<'a> Chain<'a> {
    fn lock(slot: &'a TaskSlot) -> Self {
        let mut slots = Vec::with_capacity(slot.depth as usize + 1);
        let mut cur = Some(slot);
        while let Some(t) = cur {
            slots.push(t);
            cur = t.parent.as_deref();
        }
        let inner = slots.iter().map(|t| t.lock()).collect();
        Chain { slots, inner }
    }

    /// Why the task or an ancestor is revoked.
    fn revoked(&self) -> Option<String> {
        self.slots
            .iter()
            .zip(&self.inner)
            .enumerate()
            .find_map(|(i, (t, g))| {
                g.revoked.as_ref().map(|r| {
                    if i == 0 {
                        r.clone()
                    } else {
                        format!("ancestor task {} revoked: {r}", t.id)
                    }
                })
            })
    }

    /// Revoke member `i` (0: the deciding task) and report it as this decision's doing.
    /// The member keeps its own reason; the deciding task is told whose it was.
    fn revoke(&mut self, i: usize, kind: DenyKind, why: String) -> TaskOutcome {
        if self.inner[i].revoked.is_none() {
            self.inner[i].revoked = Some(why.clone());
        }
        let seen = if i == 0 {
            why
        } else {
            format!("ancestor task {} revoked: {why}", self.slots[i].id)
        };
        let mut out = deny(kind, format!("task revoked: {seen}"));
        out.revoked_now = Some(seen);
        out
    }

    /// Record a denial (`allowed == false`) or a permit on every member's deny
    /// monitors; the first member whose monitor trips is revoked.
    fn monitor_outcome(&mut self, allowed: bool, from: usize) -> Option<(usize, String)> {
        let mut tripped = None;
        let members = self.slots.iter().zip(self.inner.iter_mut()).enumerate();
        for (i, (t, g)) in members.skip(from) {
            let lim = t.limits;
            if allowed {
                g.streak_before_permit = g.deny_streak;
                g.deny_streak = 0;
                g.allowed_total = g.allowed_total.saturating_add(1);
                continue;
            }
            g.deny_streak = g.deny_streak.saturating_add(1);
            g.denied_total = g.denied_total.saturating_add(1);
            if tripped.is_some() || g.revoked.is_some() {
                continue;
            }
            if lim.max_deny_streak > 0 && g.deny_streak >= lim.max_deny_streak {
                tripped = Some((i, format!("monitor: {} denials in a row", g.deny_streak)));
            } else if lim.max_deny_ratio > 0.0 && g.denied_total >= lim.min_denials.max(1) {
                let total = f64::from(g.denied_total) + f64::from(g.allowed_total);
                let ratio = f64::from(g.denied_total) / total;
                if ratio > lim.max_deny_ratio {
                    tripped = Some((
                        i,
                        format!(
                            "monitor: deny ratio {:.2} ({} of {} decisions denied, limit {:.2})",
                            ratio, g.denied_total, total, lim.max_deny_ratio
                        ),
                    ));
                }
            }
        }
        tripped
    }
}

impl Snapshot {
    /// Decide `req` inside task `slot`. `req.principal` is replaced by the
    /// task's agent (and by each ancestor's, for the delegation checks).
    pub fn authorize_task(
        &self,
        slot: &TaskSlot,
        req: &mut ResolvedRequest,
        reasons: bool,
        on_error: OnError,
        now_ms: u64,
        approved: &[String],
    ) -> TaskOutcome {
        // One set of locks for the whole decision: checks, evaluation and commit.
        let mut chain = Chain::lock(slot);
        let on_error = slot.on_error.unwrap_or(on_error);
        let mut result = self.decide_locked(&mut chain, req, reasons, on_error, now_ms, approved);
        match result.kind {
            // Neither a permit nor a denial yet; or nothing new to count.
            Some(DenyKind::Obligation | DenyKind::Revoked | DenyKind::Deadline) => {}
            // A task revoked for a violation is a denial for its ancestors.
            _ if result.revoked_now.is_some() => {
                if let Some((i, why)) = chain.monitor_outcome(false, 1) {
                    chain.revoke(i, DenyKind::Monitor, why);
                }
            }
            _ => {
                if let Some((i, why)) = chain.monitor_outcome(result.outcome.allowed, 0) {
                    let r = chain.revoke(i, DenyKind::Monitor, why);
                    result.outcome.allowed = false;
                    result.outcome.reasons.clear();
                    result.revoked_now = r.revoked_now;
                    if i == 0 || result.kind.is_none() {
                        result.message = r.message;
                        result.kind = r.kind;
                    }
                }
            }
        }
        result
    }

    fn decide_locked(
        &self,
        chain: &mut Chain<'_>,
        req: &mut ResolvedRequest,
        reasons: bool,
        on_error: OnError,
        now_ms: u64,
        approved: &[String],
    ) -> TaskOutcome {
        let slot = chain.slots[0];
        if let Some(r) = chain.revoked() {
            return deny(DenyKind::Revoked, format!("task revoked: {r}"));
        }
        // Labels a child holds (inherited, recalled from its agent) its ancestors hold
        // too, so each ancestor is checked in a state that includes the child's taint.
        let own = chain.inner[0].labels;
        for g in chain.inner.iter_mut().skip(1) {
            g.labels |= own;
        }
        if slot.deadline_ms.is_some_and(|d| now_ms >= d) {
            return chain.revoke(0, DenyKind::Deadline, "deadline passed".to_owned());
        }
        chain.inner[0].prune_escalations(now_ms);
        if let Some(tid) = slot.scope_violation(&req.action, &chain.inner[0].escalated) {
            let action = self.interner.get(req.action.id).unwrap_or("?");
            let why = if tid == slot.id {
                format!("scope violation: action `{action}` is outside the task's scope")
            } else {
                format!("scope violation: action `{action}` is outside ancestor task {tid}'s scope")
            };
            return chain.revoke(0, DenyKind::Scope, why);
        }
        // Rate: every decision in a subtree counts for each of its ancestors.
        for i in 0..chain.slots.len() {
            let lim = chain.slots[i].limits;
            if lim.max_rate == 0 {
                continue;
            }
            let g = &mut chain.inner[i];
            g.rate.add(now_ms);
            let n = g.rate.count(now_ms);
            if n > lim.max_rate {
                let why = format!(
                    "monitor: rate spike ({n} decisions within {} ms, limit {})",
                    lim.rate_window_ms, lim.max_rate
                );
                return chain.revoke(i, DenyKind::Monitor, why);
            }
        }
        let Some(st) = self.set.state.as_ref() else {
            return deny(DenyKind::Error, "engine has no compiled task state".into());
        };
        let mode = if reasons {
            Mode::Full
        } else if self.set.has_obligations {
            Mode::FastUnlessObligations
        } else {
            Mode::Fast
        };
        let user_ctx = req.context.take();
        let mut obl: Vec<String> = Vec::new();
        let mut result = TaskOutcome::default();
        let mut child_ctx = None;
        // The task first, then every ancestor as itself, in its own task state:
        // a child can never do what an ancestor could not, and the obligations of
        // every deciding permit on the chain hold the action.
        for i in 0..chain.slots.len() {
            let t = chain.slots[i];
            let tv = task_value_cached(st, t, &mut chain.inner[i], now_ms);
            req.context = Some(with_task(user_ctx.as_ref(), st.keys.task, tv));
            req.principal = t.agent;
            let o = self.evaluate(
                req,
                if i == 0 {
                    mode
                } else {
                    mode_for_ancestor(mode)
                },
                on_error,
            );
            let allowed = o.allowed;
            obl.extend(
                o.reasons
                    .iter()
                    .filter(|_| allowed)
                    .flat_map(|p| self.set.policies[*p as usize].obligations.iter().cloned()),
            );
            if i == 0 {
                result.outcome = o;
                child_ctx = req.context.take();
                if !allowed {
                    let failed = on_error == OnError::Deny && !result.outcome.errors.is_empty();
                    result.kind = Some(if failed {
                        DenyKind::Error
                    } else {
                        DenyKind::Policy
                    });
                    break;
                }
            } else if !allowed {
                let who = self.interner.get(t.agent.id).unwrap_or("?");
                let failed = on_error == OnError::Deny && !o.errors.is_empty();
                result.outcome.allowed = false;
                result.outcome.reasons.clear();
                result.kind = Some(if failed {
                    DenyKind::Error
                } else {
                    DenyKind::Policy
                });
                result.message = Some(format!(
                    "delegation: ancestor `{who}` (task {}) is not permitted this action",
                    t.id
                ));
                break;
            }
        }
        req.principal = slot.agent;
        req.context = child_ctx;
        if !result.outcome.allowed {
            return result;
        }
        obl.sort();
        obl.dedup();
        obl.retain(|o| !approved.contains(o));
        if !reasons {
            result.outcome.reasons.clear();
        }
        if !obl.is_empty() {
            result.outcome.allowed = false;
            result.kind = Some(DenyKind::Obligation);
            result.message = Some(format!("requires {}", obl.join(", ")));
            result.obligations = obl;
            return result;
        }
        self.commit(chain, st, req, now_ms, result)
    }

    /// Evaluate the state effects in the task's context and reserve them on
    /// every member of the chain, or on none.
    fn commit(
        &self,
        chain: &mut Chain<'_>,
        st: &CompiledState,
        req: &ResolvedRequest,
        now_ms: u64,
        mut result: TaskOutcome,
    ) -> TaskOutcome {
        let ctx = req.context.clone().unwrap_or(Value::Bool(false));
        // The state file's expressions are as deep as policies may be: evaluate
        // them with the same stack guard.
        let labels = chain.inner[0].labels;
        let fx = match crate::eval::stack::guarded(st.max_height, || {
            effects(st, self, req, &ctx, labels)
        }) {
            Ok(fx) => fx,
            Err(msg) => {
                result.outcome.allowed = false;
                result.outcome.reasons.clear();
                result.kind = Some(DenyKind::Error);
                result.message = Some(msg);
                return result;
            }
        };
        for (i, g) in chain.inner.iter().enumerate() {
            for (b, amount) in fx.spend.iter().enumerate() {
                let spent = g.spent[b];
                let limit = st.budgets[b].3;
                if spent.checked_add(*amount).is_none_or(|t| t > limit) {
                    let name = &st.budget_names[b];
                    let whose = if i == 0 {
                        String::new()
                    } else {
                        format!(" of ancestor task {}", chain.slots[i].id)
                    };
                    let msg = format!(
                        "budget `{name}`{whose} exhausted: spent {spent} + {amount} would exceed limit {limit}"
                    );
                    result.outcome.allowed = false;
                    result.outcome.reasons.clear();
                    result.kind = Some(DenyKind::Budget);
                    result.message = Some(msg.clone());
                    if chain.slots[0].limits.revoke_on_budget_exhausted {
                        chain.inner[0].revoked = Some(msg.clone());
                        result.revoked_now = Some(msg);
                    }
                    return result;
                }
            }
        }
        // Taint flows up the chain: what a sub-agent read, the agents it reports to now hold.
        let new_labels = fx.labels & !chain.inner[0].labels;
        for g in chain.inner.iter_mut() {
            g.labels |= new_labels;
            for (w, hit) in g.counters.iter_mut().zip(&fx.counters) {
                if *hit {
                    w.add(now_ms);
                }
            }
            for (s, amount) in g.spent.iter_mut().zip(&fx.spend) {
                *s += amount;
            }
        }
        if new_labels & st.agent_labels != 0 {
            chain.inner[0].unshared_agent_labels |= new_labels & st.agent_labels;
            for t in &chain.slots {
                if let Some(m) = &t.memory {
                    m.remember(st, t.agent, new_labels, now_ms);
                }
            }
        }
        result
    }
}

/// Ancestors need reasons only to collect obligations.
fn mode_for_ancestor(mode: Mode) -> Mode {
    match mode {
        Mode::Full => Mode::FastUnlessObligations,
        m => m,
    }
}

/// Count a denial made outside a decision (a refused approval) on the monitors
/// of the task and its ancestors; returns why a monitor revoked, if one did.
pub fn record_denial(slot: &TaskSlot) -> Option<String> {
    let mut chain = Chain::lock(slot);
    if chain.revoked().is_some() {
        return None;
    }
    let (i, why) = chain.monitor_outcome(false, 0)?;
    chain.revoke(i, DenyKind::Monitor, why).revoked_now
}

/// Undo a permit whose action did not happen after all (a budget shared beyond
/// this engine refused it): `spend[b]` (per budget, as the permit spent it) goes
/// back on the task and every ancestor, and the permit no longer counts for the
/// monitors: its streak reset is undone, and with `counts` it is a denial instead
/// (which may trip a monitor: returns why it revoked, if it did). Counter windows
/// and labels keep the permit's effects: they only ever over-count.
pub fn revert_permit(slot: &TaskSlot, spend: &[i64], counts: bool) -> Option<String> {
    let mut chain = Chain::lock(slot);
    for g in chain.inner.iter_mut() {
        for (s, amount) in g.spent.iter_mut().zip(spend) {
            *s = s.saturating_sub(*amount).max(0);
        }
        g.allowed_total = g.allowed_total.saturating_sub(1);
        // Denials since the permit stay counted on top of the streak it reset.
        g.deny_streak = g.streak_before_permit.saturating_add(g.deny_streak);
        g.streak_before_permit = 0;
    }
    if !counts || chain.revoked().is_some() {
        return None;
    }
    let (i, why) = chain.monitor_outcome(false, 0)?;
    chain.revoke(i, DenyKind::Monitor, why).revoked_now
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier};

    use crate::engine::{Core, OnError, ResolvedRequest};
    use crate::eval::Locals;
    use crate::state::{Limits, TaskInit, TaskSlot};
    use crate::value::Euid;

    const POLICIES: &str = r#"
        permit (principal, action == Action::"spend", resource);
    "#;
    const STATE: &str = r#"{"budgets": {"risk": {"add": "1", "limit": 41}}, "counters": {"n": {"window_ms": 60000, "count_when": "true"}}}"#;

    fn open(core: &Core, id: u64, parent: Option<Arc<TaskSlot>>) -> Arc<TaskSlot> {
        open_with(core, id, parent, Limits::default())
    }

    fn open_with(
        core: &Core,
        id: u64,
        parent: Option<Arc<TaskSlot>>,
        limits: Limits,
    ) -> Arc<TaskSlot> {
        let snap = core.current.load();
        let st = snap.set.state.as_ref().unwrap();
        let windows: Vec<u64> = st.counters.iter().map(|c| c.1).collect();
        let init = TaskInit {
            id,
            agent: core.intern_uid("Agent", &format!("a{id}")).unwrap(),
            scope: None,
            deadline_ms: None,
            limits,
            on_error: None,
            intent: core.intern_uid("Agent", "x").unwrap().id,
            memory: None,
            labels: 0,
        };
        Arc::new(TaskSlot::new(init, parent, &windows, st.budgets.len()).unwrap())
    }

    fn core() -> Core {
        Core::new(
            POLICIES,
            None,
            None,
            Some(STATE),
            false,
            OnError::Skip,
            false,
        )
        .unwrap()
    }

    fn spent(slot: &TaskSlot) -> i64 {
        slot.lock().spent[0]
    }

    /// Children and grandchildren spend from many threads at once: no ancestor
    /// is ever charged past its limit, and each is charged exactly its subtree's spend.
    #[test]
    fn tree_budget_race_in_threads() {
        let core = core();
        let action = core.intern_uid("Action", "spend").unwrap();
        let thing = core.intern_uid("Thing", "t").unwrap();
        for round in 0..50 {
            let root = open(&core, 1, None);
            let kids: Vec<_> = (0..2)
                .map(|i| open(&core, 2 + i, Some(root.clone())))
                .collect();
            let leaves: Vec<_> = (0..4)
                .map(|i| open(&core, 10 + i, Some(kids[(i / 2) as usize].clone())))
                .collect();
            let workers: Vec<Arc<TaskSlot>> = kids.iter().chain(&leaves).cloned().collect();
            let barrier = Arc::new(Barrier::new(workers.len()));
            let snap = core.current.load_full();
            let handles: Vec<_> = workers
                .iter()
                .cloned()
                .map(|w| {
                    let barrier = barrier.clone();
                    let snap = snap.clone();
                    std::thread::spawn(move || {
                        barrier.wait();
                        let mut allowed = 0i64;
                        for _ in 0..41 {
                            let mut req = ResolvedRequest {
                                fields: Default::default(),
                                principal: w.agent,
                                action,
                                resource: Euid { ..thing },
                                context: None,
                                locals: Locals::new(&snap.interner),
                            };
                            let o = snap.authorize_task(&w, &mut req, false, OnError::Skip, 1, &[]);
                            allowed += i64::from(o.outcome.allowed);
                        }
                        allowed
                    })
                })
                .collect();
            let allowed: Vec<i64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
            assert_eq!(allowed.iter().sum::<i64>(), 41, "round {round}");
            assert_eq!(spent(&root), 41);
            assert_eq!(spent(&kids[0]), allowed[0] + allowed[2] + allowed[3]);
            assert_eq!(spent(&kids[1]), allowed[1] + allowed[4] + allowed[5]);
            let counted = root.lock().counters[0].count(1);
            assert_eq!(counted, 41, "every permitted decision counted on the root");
        }
    }

    fn decide(core: &Core, slot: &TaskSlot, action: &str) -> bool {
        let snap = core.current.load_full();
        let mut req = ResolvedRequest {
            fields: Default::default(),
            principal: slot.agent,
            action: core.intern_uid("Action", action).unwrap(),
            resource: core.intern_uid("Thing", "t").unwrap(),
            context: None,
            locals: Locals::new(&snap.interner),
        };
        snap.authorize_task(slot, &mut req, false, OnError::Skip, 1, &[])
            .outcome
            .allowed
    }

    /// A permit undone as a denial gives its spend back on the whole chain and
    /// extends the deny streak it had reset (so refusals in a row trip the
    /// monitor); undone as "not the agent's doing" it only restores the streak.
    #[test]
    fn revert_permit_refunds_and_counts_as_denial() {
        let core = core();
        let limits = Limits {
            max_deny_streak: 3,
            ..Limits::default()
        };
        for counts in [true, false] {
            let root = open_with(&core, 1, None, limits);
            let child = open_with(&core, 2, Some(root.clone()), limits);
            assert!(!decide(&core, &child, "other"));
            assert!(!decide(&core, &child, "other"));
            assert!(decide(&core, &child, "spend"));
            assert_eq!((spent(&child), spent(&root)), (1, 1));
            let revoked = super::revert_permit(&child, &[1], counts);
            assert_eq!((spent(&child), spent(&root)), (0, 0));
            let g = child.lock();
            if counts {
                assert_eq!(g.deny_streak, 3);
                assert_eq!(revoked.as_deref(), Some("monitor: 3 denials in a row"));
                assert!(g.revoked.is_some());
            } else {
                assert_eq!(g.deny_streak, 2);
                assert_eq!(revoked, None);
                assert!(g.revoked.is_none());
            }
            assert_eq!(g.allowed_total, 0);
        }
    }
}

#[cfg(test)]
#[path = "task_decide_tests.rs"]
mod behaviour_tests;

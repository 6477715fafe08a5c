//! One decision inside a task: revocation and scope checks, policy evaluation
//! for the agent and every ancestor it acts for, then the state effects and
//! monitors, all under the task's lock (check-and-reserve).

use std::sync::Arc;

use crate::engine::{Mode, OnError, Outcome, ResolvedRequest, Snapshot};
use crate::eval::Evaluator;
use crate::state::{task_value, task_value_cached, CompiledState, TaskInner, TaskSlot};
use crate::value::{Record, Value};

#[derive(Debug, Default)]
pub struct TaskOutcome {
    pub outcome: Outcome,
    /// Why tether denied beyond the policies (revoked, scope, budget, delegation...).
    pub message: Option<String>,
    /// Obligations still to discharge before the permit takes effect.
    pub obligations: Vec<String>,
    /// Set when this decision revoked the task (a monitor tripped, scope violated).
    pub revoked_now: Option<String>,
}

fn deny(message: String) -> TaskOutcome {
    TaskOutcome {
        message: Some(message),
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
    inner: &TaskInner,
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
    let mut labels = inner.labels;
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
    for (i, (_, add, when, limit)) in st.budgets.iter().enumerate() {
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
        let spent = inner.spent[i];
        if spent.checked_add(amount).is_none_or(|t| t > *limit) {
            return Err(format!(
                "budget `{name}` exhausted: spent {spent} + {amount} would exceed limit {limit}"
            ));
        }
        spend.push(amount);
    }
    Ok(Effects {
        labels,
        counters,
        spend,
    })
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
        // One lock for the whole decision: checks, evaluation and commit.
        let mut inner = slot.lock();
        if let Some(r) = &inner.revoked {
            return deny(format!("task revoked: {r}"));
        }
        if let Some(r) = slot.ancestor_revoked() {
            return deny(format!("task revoked: {r}"));
        }
        let revoke_now = |inner: &mut TaskInner, why: String| {
            inner.revoked = Some(why.clone());
            let mut out = deny(format!("task revoked: {why}"));
            out.revoked_now = Some(why);
            out
        };
        if slot.deadline_ms.is_some_and(|d| now_ms >= d) {
            return revoke_now(&mut inner, "deadline passed".to_owned());
        }
        if let Some(tid) = slot.scope_violation(&req.action) {
            let action = self.interner.get(req.action.id).unwrap_or("?");
            let why = if tid == slot.id {
                format!("scope violation: action `{action}` is outside the task's scope")
            } else {
                format!("scope violation: action `{action}` is outside ancestor task {tid}'s scope")
            };
            return revoke_now(&mut inner, why);
        }
        let lim = slot.limits;
        if lim.max_rate > 0 {
            inner.rate.add(now_ms);
            let n = inner.rate.count(now_ms);
            if n > lim.max_rate {
                let why = format!(
                    "monitor: rate spike ({n} decisions within {} ms, limit {})",
                    lim.rate_window_ms, lim.max_rate
                );
                return revoke_now(&mut inner, why);
            }
        }
        let Some(st) = self.set.state.as_ref() else {
            return deny("engine has no compiled task state".into());
        };
        let user_ctx = req.context.take();
        let ctx = with_task(
            user_ctx.as_ref(),
            st.keys.task,
            task_value_cached(st, slot, &mut inner, now_ms),
        );
        req.context = Some(ctx);
        req.principal = slot.agent;

        let mode = if reasons {
            Mode::Full
        } else if self.set.has_obligations {
            Mode::FastUnlessObligations
        } else {
            Mode::Fast
        };
        let mut result = TaskOutcome {
            outcome: self.evaluate(req, mode, on_error),
            ..TaskOutcome::default()
        };

        if result.outcome.allowed {
            // Obligations: union over the permits that allowed it (fail closed).
            let mut obl: Vec<String> = result
                .outcome
                .reasons
                .iter()
                .flat_map(|i| self.set.policies[*i as usize].obligations.iter().cloned())
                .collect();
            obl.sort();
            obl.dedup();
            obl.retain(|o| !approved.contains(o));
            if !reasons {
                result.outcome.reasons.clear();
            }
            if !obl.is_empty() {
                result.outcome.allowed = false;
                result.message = Some(format!("requires {}", obl.join(", ")));
                result.obligations = obl;
            }
        }

        // Delegation: every ancestor must be permitted the same action, as itself
        // and in its own task state (with the child's taint added), so a rule on
        // `context.task` cannot let a child do what its parent could not.
        if result.outcome.allowed && slot.parent.is_some() {
            let child_ctx = req.context.take();
            let mut cur = slot.parent.as_deref();
            while let Some(anc) = cur {
                req.principal = anc.agent;
                let tv = {
                    let ai = anc.lock();
                    task_value(st, anc, &ai, ai.labels | inner.labels, now_ms)
                };
                req.context = Some(with_task(user_ctx.as_ref(), st.keys.task, tv));
                let o = self.evaluate(req, Mode::Fast, on_error);
                if !o.allowed {
                    let who = self.interner.get(anc.agent.id).unwrap_or("?");
                    result.outcome.allowed = false;
                    result.outcome.reasons.clear();
                    result.message = Some(format!(
                        "delegation: ancestor `{who}` (task {}) is not permitted this action",
                        anc.id
                    ));
                    break;
                }
                cur = anc.parent.as_deref();
            }
            req.principal = slot.agent;
            req.context = child_ctx;
        }

        if result.outcome.allowed {
            {
                let ctx = req.context.clone().unwrap_or(Value::Bool(false));
                match effects(st, self, req, &ctx, &inner) {
                    Ok(fx) => {
                        let new_labels = fx.labels & !inner.labels;
                        inner.labels = fx.labels;
                        // Taint flows up the chain too: what a sub-agent read, the agents
                        // it reports to now hold. (Locks are only ever taken child to
                        // parent, so this cannot deadlock.)
                        if new_labels != 0 {
                            let mut cur = slot.parent.as_deref();
                            while let Some(anc) = cur {
                                anc.lock().labels |= new_labels;
                                cur = anc.parent.as_deref();
                            }
                        }
                        for (w, hit) in inner.counters.iter_mut().zip(fx.counters) {
                            if hit {
                                w.add(now_ms);
                            }
                        }
                        for (s, amount) in inner.spent.iter_mut().zip(fx.spend) {
                            *s += amount;
                        }
                    }
                    Err(msg) => {
                        let exhausted = msg.starts_with("budget ");
                        result.outcome.allowed = false;
                        result.outcome.reasons.clear();
                        result.message = Some(msg.clone());
                        if exhausted && slot.limits.revoke_on_budget_exhausted {
                            inner.revoked = Some(msg.clone());
                            result.revoked_now = Some(msg);
                        }
                    }
                }
            }
        }

        // Deny-streak monitor.
        if result.outcome.allowed {
            inner.deny_streak = 0;
        } else if result.obligations.is_empty() {
            inner.deny_streak += 1;
            if lim.max_deny_streak > 0
                && inner.deny_streak >= lim.max_deny_streak
                && inner.revoked.is_none()
            {
                let why = format!("monitor: {} denials in a row", inner.deny_streak);
                inner.revoked = Some(why.clone());
                result.revoked_now = Some(why);
            }
        }
        result
    }
}

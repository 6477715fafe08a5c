//! The decision loop: a resolved request against one snapshot.
//!
//! A known action walks its specialised candidate buckets (`compile::special`),
//! forbids first; any other action goes through the scope index. Either way the
//! result is Cedar's: forbid overrides permit, errors skip the erroring policy
//! (or deny, with `OnError::Deny`).

use std::cell::RefCell;
use std::sync::Arc;

use crate::compile::index::{entity_scope_holds, Lists, ScopeFacts};
use crate::compile::ir::{Effect, Node};
use crate::compile::special::{self, ActionPlan, Bucket};
use crate::engine::Snapshot;
use crate::entities::EntityStore;
use crate::eval::{EvalErr, Evaluator, Locals};
use crate::value::{Euid, Sym, Value};
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnError {
    /// Cedar's semantics: an erroring policy is skipped (and reported).
    Skip,
    /// Fail closed: any error while evaluating a candidate policy denies.
    Deny,
}

/// What a caller wants back: only the decision, or Cedar's full diagnostics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Fast,
    Full,
    /// Fast, unless a candidate permit carries an `@obligation` (then Full).
    FastUnlessObligations,
    /// Only `allowed` is wanted: with errors skipped, no error is recorded and
    /// policies that can only error are not evaluated (otherwise as Fast).
    DecisionOnly,
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub allowed: bool,
    /// Indexes of the policies that determined the decision (Full mode).
    pub reasons: Vec<u32>,
    /// Policies whose evaluation errored, with the error.
    pub errors: Vec<(u32, EvalErr)>,
}

/// A few context attributes, kept inline (no allocation for the usual handful).
pub type ContextFields = smallvec::SmallVec<[(Sym, Value); 6]>;

/// A request with entities resolved to symbols of one snapshot.
pub struct ResolvedRequest {
    pub principal: Euid,
    pub action: Euid,
    pub resource: Euid,
    /// The whole context; `None` is the empty record, or, when `fields` is not
    /// empty, a context of which only `fields` was converted.
    pub context: Option<Value>,
    /// Context attributes converted for one action's plan (`ActionPlan::ctx_keys`),
    /// sorted by key: a request reads only what its candidate policies use.
    pub fields: ContextFields,
    pub locals: Locals,
}

impl ResolvedRequest {
    /// A request to be filled in: no entities, no context, no local symbols.
    pub fn blank() -> Self {
        let nobody = Euid { ty: 0, id: 0 };
        ResolvedRequest {
            principal: nobody,
            action: nobody,
            resource: nobody,
            context: None,
            fields: ContextFields::new(),
            locals: Locals {
                base: 0,
                strs: Default::default(),
            },
        }
    }
}

/// Cedar's decision from the scans of forbids, then permits. `short`: stop at the
/// first decisive policy (no reasons wanted, errors skipped).
fn decide(
    out: &mut Outcome,
    on_error: OnError,
    short: bool,
    mut scan: impl FnMut(Effect, &mut Outcome) -> bool,
) {
    let forbid_hit = scan(Effect::Forbid, out);
    if forbid_hit && short {
        return;
    }
    if on_error == OnError::Deny && !out.errors.is_empty() {
        out.reasons.clear();
        return;
    }
    let forbid_reasons = out.reasons.len();
    let permit_hit = scan(Effect::Permit, out);
    if forbid_hit {
        out.reasons.truncate(forbid_reasons);
        out.allowed = false;
    } else if on_error == OnError::Deny && !out.errors.is_empty() {
        out.reasons.clear();
        out.allowed = false;
    } else {
        out.allowed = permit_hit;
    }
}

/// The buckets one request reaches: a handful, kept inline (no allocation).
#[derive(Default)]
struct SmallBuckets<'a> {
    inline: [Option<&'a Bucket>; 8],
    n: usize,
    more: Vec<&'a Bucket>,
}

impl<'a> SmallBuckets<'a> {
    #[inline]
    fn push(&mut self, b: &'a Bucket) {
        if b.is_empty() {
            return;
        }
        if self.n < self.inline.len() {
            self.inline[self.n] = Some(b);
            self.n += 1;
        } else {
            self.more.push(b);
        }
    }

    #[inline]
    fn iter(&self) -> impl Iterator<Item = &'a Bucket> + '_ {
        self.inline[..self.n]
            .iter()
            .flatten()
            .copied()
            .chain(self.more.iter().copied())
    }
}

static EMPTY_CONTEXT: std::sync::LazyLock<Value> =
    std::sync::LazyLock::new(|| Value::Record(Arc::new(crate::value::Record::default())));

thread_local! {
    /// Per-thread stamps for deduplicating candidates; reused, so no allocation per call.
    static SEEN: RefCell<(u32, Vec<u32>)> = const { RefCell::new((0, Vec::new())) };
}

impl Snapshot {
    pub fn evaluate(&self, req: &ResolvedRequest, mode: Mode, on_error: OnError) -> Outcome {
        crate::eval::stack::guarded(self.set.max_height, || {
            self.evaluate_here(req, mode, on_error)
        })
    }

    /// Run `f`, which may call `evaluate_within`, where the stack fits this
    /// snapshot's deepest policy: a batch checks once, not once per request (the
    /// check reads a thread-local, ~50 instructions a request).
    pub fn stack_guarded<R>(&self, f: impl FnOnce() -> R) -> R {
        crate::eval::stack::guarded(self.set.max_height, f)
    }

    /// `evaluate`, without the stack check: only inside `stack_guarded`.
    pub fn evaluate_within(&self, req: &ResolvedRequest, mode: Mode, on_error: OnError) -> Outcome {
        self.evaluate_here(req, mode, on_error)
    }

    fn evaluate_here(&self, req: &ResolvedRequest, mode: Mode, on_error: OnError) -> Outcome {
        let mode = match (mode, on_error) {
            (Mode::DecisionOnly, OnError::Deny) => Mode::Fast,
            (m, _) => m,
        };
        if let Some(plan) = self.plans.by_action.get(&req.action) {
            if mode == Mode::DecisionOnly {
                return Outcome {
                    allowed: self.allowed_planned(plan, req),
                    ..Outcome::default()
                };
            }
            return self.evaluate_planned(plan, req, mode, on_error);
        }
        let mode = if mode == Mode::DecisionOnly {
            Mode::Fast
        } else {
            mode
        };
        let store: &EntityStore = &self.store;
        let facts = ScopeFacts {
            principal: req.principal,
            principal_anc: store.ancestors(&req.principal),
            action: req.action,
            action_anc: store.ancestors(&req.action),
            resource: req.resource,
            resource_anc: store.ancestors(&req.resource),
        };
        let mut out = Outcome::default();
        let mut lists = Lists::new();
        let multi = self.set.index.candidates(&facts, &mut lists);
        if lists.total == 0 {
            return out;
        }
        let ev = self.evaluator(&self.set.nodes, req);
        // Obligations are the union over every satisfied permit, so a candidate
        // permit carrying one means all permits must be evaluated.
        let mode = if mode == Mode::FastUnlessObligations {
            let pols = &self.set.policies;
            let needs_all = lists.iter(Effect::Permit).any(|pi| {
                !pols[pi as usize].obligations.is_empty() && self.set.index.holds(pi, pols, &facts)
            });
            if needs_all {
                Mode::Full
            } else {
                Mode::Fast
            }
        } else {
            mode
        };
        // Whether evaluation may stop at the first decisive policy.
        let short = mode == Mode::Fast && on_error == OnError::Skip;
        decide(&mut out, on_error, short, |e, out| {
            self.scan(e, &lists, multi, &facts, &ev, out, short)
        });
        out
    }

    /// An evaluator over `nodes` for one request against this snapshot.
    fn evaluator<'a>(&'a self, nodes: &'a [Node], req: &'a ResolvedRequest) -> Evaluator<'a> {
        Evaluator::new(
            nodes,
            &self.store,
            &self.interner,
            &req.locals,
            req.principal,
            req.action,
            req.resource,
            req.context.as_ref().unwrap_or(&EMPTY_CONTEXT),
        )
    }

    /// The evaluator for a planned request: context attributes from `fields`
    /// when only those were converted.
    fn plan_evaluator<'a>(&'a self, req: &'a ResolvedRequest) -> Evaluator<'a> {
        let ev = self.evaluator(&self.plans.nodes, req);
        if req.context.is_none() {
            ev.with_fields(&req.fields)
        } else {
            ev
        }
    }

    /// Cedar's decision for a known action when errors are skipped and only the
    /// decision is wanted: forbids first, each pass stopping at the first
    /// satisfied policy; policies that can only error are passed over.
    fn allowed_planned(&self, plan: &ActionPlan, req: &ResolvedRequest) -> bool {
        let store: &EntityStore = &self.store;
        let p_data = store.get(&req.principal);
        let r_data = store.get(&req.resource);
        let p_anc = p_data.map(|d| &d.ancestors);
        let r_anc = r_data.map(|d| &d.ancestors);
        let mut ev = Evaluator::with_data(
            &self.plans.nodes,
            store,
            &self.interner,
            &req.locals,
            (req.principal, p_data),
            req.action,
            (req.resource, r_data),
            req.context.as_ref().unwrap_or(&EMPTY_CONTEXT),
        );
        if req.context.is_none() {
            ev = ev.with_fields(&req.fields);
        }
        let applies = |c: &special::Cand| {
            !c.never
                && entity_scope_holds(&c.principal, &req.principal, p_anc)
                && entity_scope_holds(&c.resource, &req.resource, r_anc)
                && c.clauses
                    .iter()
                    .all(|cl| matches!(ev.holds(cl.node), Ok(v) if v != cl.unless))
        };
        // Buckets looked up lazily: a forbid in the first one ends the decision
        // before the others are looked up (measured: collecting them first, as the
        // full path does, costs more here than the second lookups it saves).
        let in_plan = |plan: &ActionPlan, eq: Option<&Bucket>, e: Effect| {
            plan.rest.part(e).iter().any(applies)
                || eq.is_some_and(|b| b.part(e).iter().any(applies))
                || (!plan.within.is_empty()
                    && std::iter::once(&req.principal)
                        .chain(p_anc.into_iter().flatten())
                        .any(|u| {
                            plan.within
                                .get(u)
                                .is_some_and(|b| b.part(e).iter().any(applies))
                        }))
        };
        let eq = plan.eq.get(&req.principal);
        let shared = &self.plans.shared;
        // Most sets have no shared plan (see `special::SHARE_ABOVE_COPIES`).
        let shared_eq = shared.eq.get(&req.principal);
        let has_shared = !shared.is_empty();
        let any = |e: Effect| (has_shared && in_plan(shared, shared_eq, e)) || in_plan(plan, eq, e);
        !any(Effect::Forbid) && any(Effect::Permit)
    }

    /// The buckets of the shared plan and of `plan` that `principal` (with its
    /// ancestors `p_anc`) reaches: each policy is in exactly one bucket of one of
    /// them, and each bucket is reached through one key, so nothing repeats.
    #[inline]
    fn reached<'a>(
        &'a self,
        plan: &'a ActionPlan,
        principal: Euid,
        p_anc: Option<&'a rustc_hash::FxHashSet<Euid>>,
    ) -> SmallBuckets<'a> {
        let mut buckets = SmallBuckets::default();
        for plan in [&self.plans.shared, plan] {
            buckets.push(&plan.rest);
            if !plan.eq.is_empty() {
                if let Some(b) = plan.eq.get(&principal) {
                    buckets.push(b);
                }
            }
            if !plan.within.is_empty() {
                if let Some(b) = plan.within.get(&principal) {
                    buckets.push(b);
                }
                for a in p_anc.into_iter().flatten() {
                    if let Some(b) = plan.within.get(a) {
                        buckets.push(b);
                    }
                }
            }
        }
        buckets
    }

    /// The decision for a known action, from its specialised candidate lists.
    fn evaluate_planned(
        &self,
        plan: &ActionPlan,
        req: &ResolvedRequest,
        mode: Mode,
        on_error: OnError,
    ) -> Outcome {
        let store: &EntityStore = &self.store;
        let p_anc = store.ancestors(&req.principal);
        let r_anc = store.ancestors(&req.resource);
        let buckets = self.reached(plan, req.principal, p_anc);
        let mut out = Outcome::default();
        let ev = self.plan_evaluator(req);
        let in_scope = |c: &special::Cand| {
            entity_scope_holds(&c.principal, &req.principal, p_anc)
                && entity_scope_holds(&c.resource, &req.resource, r_anc)
        };
        let mode = if mode == Mode::FastUnlessObligations {
            let pols = &self.set.policies;
            let needs_all = buckets.iter().any(|b| {
                b.permits()
                    .iter()
                    .any(|c| !pols[c.policy as usize].obligations.is_empty() && in_scope(c))
            });
            if needs_all {
                Mode::Full
            } else {
                Mode::Fast
            }
        } else {
            mode
        };
        let short = mode == Mode::Fast && on_error == OnError::Skip;
        let scan = |effect: Effect, out: &mut Outcome| -> bool {
            let mut hit = false;
            for b in buckets.iter() {
                'cand: for c in b.part(effect) {
                    if !in_scope(c) {
                        continue;
                    }
                    for cl in c.clauses.iter() {
                        match ev.eval_bool(cl.node) {
                            Ok(v) if v != cl.unless => {}
                            Ok(_) => continue 'cand,
                            Err(e) => {
                                out.errors.push((c.policy, e));
                                continue 'cand;
                            }
                        }
                    }
                    hit = true;
                    if short {
                        return true;
                    }
                    out.reasons.push(c.policy);
                }
            }
            hit
        };
        decide(&mut out, on_error, short, scan);
        out
    }

    /// Evaluate the candidate policies of one effect; true if any is satisfied.
    #[allow(clippy::too_many_arguments)]
    fn scan(
        &self,
        effect: Effect,
        lists: &Lists<'_>,
        multi: bool,
        facts: &ScopeFacts<'_>,
        ev: &Evaluator<'_>,
        out: &mut Outcome,
        short: bool,
    ) -> bool {
        let mut hit = false;
        let mut visit = |pi: u32, out: &mut Outcome| -> bool {
            let p = &self.set.policies[pi as usize];
            if !self.set.index.holds(pi, &self.set.policies, facts) {
                return false;
            }
            for c in p.clauses.iter() {
                match ev.eval_bool(c.node) {
                    Ok(b) if b != c.unless => {}
                    Ok(_) => return false,
                    Err(e) => {
                        out.errors.push((pi, e));
                        return false;
                    }
                }
            }
            hit = true;
            if !short {
                out.reasons.push(pi);
            }
            short
        };
        if multi {
            SEEN.with(|cell| {
                let mut guard = cell.borrow_mut();
                let (gen, stamps) = &mut *guard;
                *gen = gen.wrapping_add(1);
                if *gen == 0 {
                    stamps.iter_mut().for_each(|s| *s = 0);
                    *gen = 1;
                }
                if stamps.len() < self.set.policies.len() {
                    stamps.resize(self.set.policies.len(), 0);
                }
                for pi in lists.iter(effect) {
                    if stamps[pi as usize] == *gen {
                        continue;
                    }
                    stamps[pi as usize] = *gen;
                    if visit(pi, out) {
                        break;
                    }
                }
            });
        } else {
            for pi in lists.iter(effect) {
                if visit(pi, out) {
                    break;
                }
            }
        }
        hit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Core;
    use crate::eval::stack;
    use crate::value::Record;

    /// A policy whose clause is a left-deep `||` chain `n` terms long, and a request
    /// under which every term is false (so evaluation walks the whole chain).
    fn deep(n: usize) -> (Core, ResolvedRequest) {
        let chain = vec!["context.x == 1"; n].join(" || ");
        let text = format!("permit (principal, action, resource) when {{ {chain} }};");
        // Cedar's parser recurses on the chain: give it the stack the bindings give it.
        let core = std::thread::Builder::new()
            .stack_size(256 << 20)
            .spawn(move || Core::new(&text, None, None, None, false, OnError::Skip, true).unwrap())
            .unwrap()
            .join()
            .unwrap();
        let u = core.intern_uid("User", "u").unwrap();
        let snap = core.current.load();
        let x = snap.interner.lookup("x").unwrap();
        let req = ResolvedRequest {
            fields: Default::default(),
            principal: u,
            action: u,
            resource: u,
            context: Some(Value::Record(Arc::new(Record::from_unsorted(vec![(
                x,
                Value::Long(2),
            )])))),
            locals: Locals::new(&snap.interner),
        };
        drop(snap);
        (core, req)
    }

    #[test]
    fn frame_fits_budget() {
        let (core, req) = deep(400);
        let snap = core.current.load_full();
        assert!(snap.set.max_height >= 400, "{}", snap.set.max_height);
        let per_level = std::thread::Builder::new()
            .stack_size(256 << 20)
            .spawn(move || {
                let before = stacker::remaining_stack().unwrap();
                stack::probe::LOWEST.with(|l| l.set(usize::MAX));
                let out = snap.evaluate_here(&req, Mode::Fast, OnError::Skip);
                assert!(!out.allowed);
                let lowest = stack::probe::LOWEST.with(|l| l.get());
                (before - lowest) / snap.set.max_height
            })
            .unwrap()
            .join()
            .unwrap();
        eprintln!("eval uses {per_level} bytes of stack a level");
        assert!(
            per_level * 2 <= stack::FRAME_BYTES,
            "eval uses {per_level} bytes a level; budget {} (keep 2x headroom)",
            stack::FRAME_BYTES
        );
    }

    #[test]
    fn deep_policy_on_a_small_thread_stack() {
        let (core, req) = deep(900);
        let snap = core.current.load_full();
        let out = std::thread::Builder::new()
            .stack_size(64 << 10)
            .spawn(move || snap.evaluate(&req, Mode::Full, OnError::Skip).allowed)
            .unwrap()
            .join()
            .unwrap();
        assert!(!out);
    }
}

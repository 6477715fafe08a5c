//! Snapshots and the authorization loop.
//!
//! A `Snapshot` is immutable: compiled policies, entity store, interner. The
//! engine publishes snapshots through an `ArcSwap`, so a reload or entity
//! upsert builds a new snapshot off to the side and swaps it in atomically;
//! readers never block and never see a half-built set.

use std::cell::RefCell;
use std::sync::Arc;

use arc_swap::ArcSwap;
use cedar_policy::Schema;
use serde_json::Value as Json;

use crate::compile::index::{entity_scope_holds, Lists, ScopeFacts};
use crate::compile::ir::{Effect, Node};
use crate::compile::special::{self, ActionPlan, Bucket, Plans};
use crate::compile::{self, CompiledSet};
use crate::entities::{parse_entities, EntityData, EntityStore};
use crate::error::TetherError;
use crate::eval::{EvalErr, Evaluator, Locals};
use crate::plan_deps::PlanDeps;
use crate::request_schema::RequestShapes;
use crate::state::{CompiledState, StateSpec};
use crate::value::{Euid, Interner, Value};

pub struct Snapshot {
    pub interner: Interner,
    pub set: Arc<CompiledSet>,
    pub store: Arc<EntityStore>,
    /// Per-action candidate lists, specialised to this policy set and entity store.
    pub plans: Arc<Plans>,
    /// The entities the plans were specialised with: a change to any other
    /// entity leaves the plans valid.
    pub plan_deps: Arc<PlanDeps>,
    pub schema: Option<Arc<Schema>>,
    /// Each declared action's expected request (None: no schema, or request
    /// validation turned off).
    pub shapes: Option<Arc<RequestShapes>>,
    /// The task state file; recompiled with every policy reload.
    pub state_spec: Option<Arc<StateSpec>>,
    pub version: u64,
}

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
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub allowed: bool,
    /// Indexes of the policies that determined the decision (Full mode).
    pub reasons: Vec<u32>,
    /// Policies whose evaluation errored, with the error.
    pub errors: Vec<(u32, EvalErr)>,
}

/// A request with entities resolved to symbols of one snapshot.
pub struct ResolvedRequest {
    pub principal: Euid,
    pub action: Euid,
    pub resource: Euid,
    /// `None` is the empty record (no allocation for context-free requests).
    pub context: Option<Value>,
    pub locals: Locals,
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
        if b.forbids.is_empty() && b.permits.is_empty() {
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

    fn evaluate_here(&self, req: &ResolvedRequest, mode: Mode, on_error: OnError) -> Outcome {
        if let Some(plan) = self.plans.by_action.get(&req.action) {
            return self.evaluate_planned(plan, req, mode, on_error);
        }
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
        // The buckets this principal can match; each policy is in exactly one bucket,
        // and each bucket is reached through one key, so nothing repeats.
        let mut buckets: SmallBuckets<'_> = SmallBuckets::default();
        buckets.push(&plan.rest);
        if let Some(b) = plan.eq.get(&req.principal) {
            buckets.push(b);
        }
        if !plan.within.is_empty() {
            if let Some(b) = plan.within.get(&req.principal) {
                buckets.push(b);
            }
            for a in p_anc.into_iter().flatten() {
                if let Some(b) = plan.within.get(a) {
                    buckets.push(b);
                }
            }
        }
        let mut out = Outcome::default();
        let ev = self.evaluator(&self.plans.nodes, req);
        let in_scope = |c: &special::Cand| {
            entity_scope_holds(&c.principal, &req.principal, p_anc)
                && entity_scope_holds(&c.resource, &req.resource, r_anc)
        };
        let mode = if mode == Mode::FastUnlessObligations {
            let pols = &self.set.policies;
            let needs_all = buckets.iter().any(|b| {
                b.permits
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

/// The mutable face: holds the current snapshot and builds new ones.
pub struct Core {
    pub current: ArcSwap<Snapshot>,
    /// Serialises writers; readers never take it.
    write: std::sync::Mutex<()>,
    pub on_error: OnError,
    /// Check each request against the schema, as Cedar does (on by default).
    pub validate_requests: bool,
}

pub fn parse_schema(text: &str) -> Result<Schema, TetherError> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        let j: Json = serde_json::from_str(text)
            .map_err(|e| TetherError::Schema(format!("schema JSON: {e}")))?;
        Schema::from_json_value(j).map_err(|e| TetherError::Schema(crate::error::render_diag(&e)))
    } else {
        Schema::from_cedarschema_str(text)
            .map(|(s, _warnings)| s)
            .map_err(|e| {
                let at = crate::error::first_offset(&e)
                    .map(|o| {
                        let (l, c) = crate::error::line_col(text, o);
                        format!("line {l}, column {c}: ")
                    })
                    .unwrap_or_default();
                TetherError::Schema(format!("{at}{}", crate::error::render_diag(&e)))
            })
    }
}

impl Core {
    pub fn new(
        policies: &str,
        schema: Option<&str>,
        entities: Option<&str>,
        state: Option<&str>,
        validate: bool,
        on_error: OnError,
        validate_requests: bool,
    ) -> Result<Self, TetherError> {
        let schema = schema.map(parse_schema).transpose()?.map(Arc::new);
        let state_spec = state
            .map(|s| {
                serde_json::from_str::<StateSpec>(s)
                    .map_err(|e| TetherError::policy(format!("state file: {e}")))
            })
            .transpose()?
            .map(Arc::new);
        let snap = build(
            policies,
            schema,
            entities,
            state_spec,
            validate,
            validate_requests,
        )?;
        Ok(Core {
            current: ArcSwap::from_pointee(snap),
            write: std::sync::Mutex::new(()),
            on_error,
            validate_requests,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        // A poisoned lock only means another writer panicked before swapping; the
        // published snapshot is still whole, so carry on.
        self.write.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replace policies (and optionally the schema); entities are kept.
    pub fn reload(
        &self,
        policies: &str,
        schema: Option<&str>,
        validate: bool,
    ) -> Result<(), TetherError> {
        let _w = self.lock();
        let cur = self.current.load_full();
        let schema = match schema {
            Some(s) => Some(Arc::new(parse_schema(s)?)),
            None => cur.schema.clone(),
        };
        let pset = compile::parse(policies)?;
        let warnings = match (&schema, validate) {
            (Some(s), true) => compile::validate(&pset, s, policies)?,
            _ => Vec::new(),
        };
        if let (Some(s), true, Some(spec)) = (&schema, validate, cur.state_spec.as_deref()) {
            compile::validate_state(spec, s)?;
        }
        let mut interner = cur.interner.clone();
        let mut set = compile::compile(policies, &pset, &mut interner)?;
        set.warnings = warnings;
        set.state = Some(CompiledState::compile(
            cur.state_spec.as_deref().unwrap_or(&StateSpec::default()),
            &mut interner,
        )?);
        let shapes = request_shapes(schema.as_deref(), self.validate_requests, &mut interner);
        let mut store = (*cur.store).clone();
        store.set_named(&interner, &set.named_uids);
        let (plans, plan_deps) = plan(&set, &store, &interner);
        self.current.store(Arc::new(Snapshot {
            interner,
            set: Arc::new(set),
            store: Arc::new(store),
            plans,
            plan_deps,
            schema,
            shapes,
            state_spec: cur.state_spec.clone(),
            version: cur.version + 1,
        }));
        Ok(())
    }

    pub fn upsert_entities(&self, json: &str) -> Result<usize, TetherError> {
        let _w = self.lock();
        let cur = self.current.load_full();
        let mut interner = cur.interner.clone();
        let parsed = parse_entities(json, cur.schema.as_deref(), &mut interner)?;
        let n = parsed.len();
        self.change(&cur, interner, parsed, &[])?;
        Ok(n)
    }

    pub fn remove_entities(&self, uids: &[(String, String)]) -> Result<usize, TetherError> {
        let _w = self.lock();
        let cur = self.current.load_full();
        let gone: Vec<Euid> = uids
            .iter()
            .filter_map(|(t, i)| {
                Some(Euid {
                    ty: cur.interner.lookup(t)?,
                    id: cur.interner.lookup(i)?,
                })
            })
            .filter(|u| cur.store.get(u).is_some())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let n = gone.len();
        self.change(&cur, cur.interner.clone(), Vec::new(), &gone)?;
        Ok(n)
    }

    /// Publish `cur` with entities upserted and removed: O(entities changed and
    /// their descendants), re-specialising the plans only when an entity they
    /// were specialised with changed. Holds the write lock (the caller's).
    fn change(
        &self,
        cur: &Snapshot,
        interner: Interner,
        upserts: Vec<(Euid, EntityData)>,
        removes: &[Euid],
    ) -> Result<(), TetherError> {
        let mut store = (*cur.store).clone();
        let touched = store.apply(upserts, removes, &interner)?;
        let (plans, plan_deps) = if cur.plan_deps.affected_by(&touched.uids, &interner) {
            plan(&cur.set, &store, &interner)
        } else {
            (cur.plans.clone(), cur.plan_deps.clone())
        };
        self.publish(cur, interner, Arc::new(store), plans, plan_deps);
        Ok(())
    }

    /// Symbols for an entity uid, interning (and publishing) them if new, so a
    /// handle made now stays valid for every later snapshot (interning only appends).
    pub fn intern_uid(&self, ty: &str, id: &str) -> Result<Euid, TetherError> {
        Ok(self.intern_uids(&[(ty, id)])?[0])
    }

    /// `intern_uid` for several uids, publishing at most one snapshot.
    pub fn intern_uids(&self, uids: &[(&str, &str)]) -> Result<Vec<Euid>, TetherError> {
        for (ty, _) in uids {
            crate::request::check_type(ty)?;
        }
        let known = |i: &Interner| -> Option<Vec<Euid>> {
            uids.iter()
                .map(|(t, d)| {
                    Some(Euid {
                        ty: i.lookup(t)?,
                        id: i.lookup(d)?,
                    })
                })
                .collect()
        };
        if let Some(found) = known(&self.current.load().interner) {
            return Ok(found);
        }
        let _w = self.lock();
        let cur = self.current.load_full();
        if let Some(found) = known(&cur.interner) {
            return Ok(found);
        }
        let mut interner = cur.interner.clone();
        let out = uids
            .iter()
            .map(|(t, d)| Euid {
                ty: interner.intern(t),
                id: interner.intern(d),
            })
            .collect();
        // Interning only appends: the store and the plans stay valid as they are.
        self.publish(
            &cur,
            interner,
            cur.store.clone(),
            cur.plans.clone(),
            cur.plan_deps.clone(),
        );
        Ok(out)
    }

    pub fn normalize_context(
        &self,
        action_type: &str,
        action_id: &str,
        context_json: &str,
        validate: bool,
    ) -> Result<String, TetherError> {
        let cur = self.current.load();
        let json: Json = serde_json::from_str(context_json)
            .map_err(|e| TetherError::Request(format!("context JSON: {e}")))?;
        let uid = cedar_policy::EntityUid::from_type_name_and_id(
            action_type
                .parse()
                .map_err(|_| TetherError::Request(format!("bad action type `{action_type}`")))?,
            cedar_policy::EntityId::new(action_id),
        );
        let schema = cur.schema.as_deref().filter(|_| validate);
        let ctx = cedar_policy::Context::from_json_value(json, schema.map(|s| (s, &uid)))
            .map_err(|e| TetherError::Request(crate::error::render_diag(&e)))?;
        let out = ctx
            .to_json_value()
            .map_err(|e| TetherError::Request(e.to_string()))?;
        Ok(out.to_string())
    }

    fn publish(
        &self,
        cur: &Snapshot,
        interner: Interner,
        store: Arc<EntityStore>,
        plans: Arc<Plans>,
        plan_deps: Arc<PlanDeps>,
    ) {
        self.current.store(Arc::new(Snapshot {
            interner,
            set: cur.set.clone(),
            store,
            plans,
            plan_deps,
            schema: cur.schema.clone(),
            shapes: cur.shapes.clone(),
            state_spec: cur.state_spec.clone(),
            version: cur.version + 1,
        }));
    }
}

fn plan(
    set: &CompiledSet,
    store: &EntityStore,
    interner: &Interner,
) -> (Arc<Plans>, Arc<PlanDeps>) {
    let plans = special::build(&set.nodes, &set.policies, &set.named_uids, store, interner);
    let deps = PlanDeps::of(&set.nodes, &set.named_uids, store);
    (Arc::new(plans), Arc::new(deps))
}

fn build(
    policies: &str,
    schema: Option<Arc<Schema>>,
    entities: Option<&str>,
    state_spec: Option<Arc<StateSpec>>,
    validate: bool,
    validate_requests: bool,
) -> Result<Snapshot, TetherError> {
    let mut interner = Interner::default();
    let pset = compile::parse(policies)?;
    let warnings = match (&schema, validate) {
        (Some(s), true) => compile::validate(&pset, s, policies)?,
        _ => Vec::new(),
    };
    if let (Some(s), true, Some(spec)) = (&schema, validate, state_spec.as_deref()) {
        compile::validate_state(spec, s)?;
    }
    let mut set = compile::compile(policies, &pset, &mut interner)?;
    set.warnings = warnings;
    // Always compiled (an empty spec still gives `context.task.depth` and `.actors`).
    set.state = Some(CompiledState::compile(
        state_spec.as_deref().unwrap_or(&StateSpec::default()),
        &mut interner,
    )?);
    let mut store = EntityStore::default();
    // Always parse (even an empty list) so a schema's action entities are present.
    let parsed = parse_entities(entities.unwrap_or("[]"), schema.as_deref(), &mut interner)?;
    let shapes = request_shapes(schema.as_deref(), validate_requests, &mut interner);
    store.apply(parsed, &[], &interner)?;
    interner.compact();
    store.set_named(&interner, &set.named_uids);
    let (plans, plan_deps) = plan(&set, &store, &interner);
    Ok(Snapshot {
        interner,
        set: Arc::new(set),
        store: Arc::new(store),
        plans,
        plan_deps,
        schema,
        shapes,
        state_spec,
        version: 0,
    })
}

fn request_shapes(
    schema: Option<&Schema>,
    validate_requests: bool,
    interner: &mut Interner,
) -> Option<Arc<RequestShapes>> {
    schema
        .filter(|_| validate_requests)
        .map(|s| Arc::new(RequestShapes::build(s, interner)))
}

impl Snapshot {
    /// Cedar's request validation, when there is a schema: the action declared, the
    /// principal and resource types it applies to, the context of its type.
    /// `task_path`: the caller's context on the task path, where tether adds `task`.
    pub fn check_request(&self, req: &ResolvedRequest, task_path: bool) -> Result<(), TetherError> {
        let Some(shapes) = &self.shapes else {
            return Ok(());
        };
        let name = |s| {
            req.locals
                .resolve(&self.interner, s)
                .unwrap_or("?")
                .to_owned()
        };
        let skip = if task_path {
            self.set.state.as_ref().map(|st| st.keys.task)
        } else {
            None
        };
        shapes
            .check(
                req.principal,
                req.action,
                req.resource,
                req.context.as_ref(),
                skip,
                &name,
            )
            .map_err(TetherError::Request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

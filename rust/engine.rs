//! Snapshots: building, reloading and publishing them (the decision loop is in
//! `authorize`).
//!
//! A `Snapshot` is immutable: compiled policies, entity store, interner. The
//! engine publishes snapshots through an `ArcSwap`, so a reload or entity
//! upsert builds a new snapshot off to the side and swaps it in atomically;
//! readers never block and never see a half-built set.

use std::sync::Arc;

use arc_swap::ArcSwap;
use cedar_policy::Schema;
use serde_json::Value as Json;

pub use crate::authorize::{Mode, OnError, Outcome, ResolvedRequest};
use crate::compile::special::{self, Plans};
use crate::compile::{self, CompiledSet};
use crate::entities::{parse_entities, EntityData, EntityStore};
use crate::error::TetherError;
use crate::plan_deps::PlanDeps;
use crate::request_schema::RequestShapes;
use crate::state::{CompiledState, StateSpec};
use crate::templates;
use crate::value::{Euid, Interner};

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

/// The mutable face: holds the current snapshot and builds new ones.
pub struct Core {
    pub current: ArcSwap<Snapshot>,
    /// Serialises writers; readers never take it. It guards Cedar's own policy set
    /// (static policies, templates, links), which `link`, `unlink` and `reload`
    /// change in place: it is never cloned for a link.
    write: std::sync::Mutex<cedar_policy::PolicySet>,
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
        let (snap, cedar) = build(
            policies,
            schema,
            entities,
            state_spec,
            validate,
            validate_requests,
        )?;
        Ok(Core {
            current: ArcSwap::from_pointee(snap),
            write: std::sync::Mutex::new(cedar),
            on_error,
            validate_requests,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, cedar_policy::PolicySet> {
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
        let mut w = self.lock();
        let cur = self.current.load_full();
        let schema = match schema {
            Some(s) => Some(Arc::new(parse_schema(s)?)),
            None => cur.schema.clone(),
        };
        let (mut pset, psts) = compile::parse_with_psts(policies)?;
        // Links are part of the policy set: they follow their template into the new text.
        templates::relink(&w, &mut pset)?;
        let warnings = validate_set(
            &pset,
            policies,
            schema.as_deref(),
            validate,
            cur.state_spec.as_deref(),
        )?;
        let mut interner = cur.interner.clone();
        let validated = schema.is_some() && validate;
        let set = compile_set(
            policies,
            &pset,
            psts,
            &mut interner,
            warnings,
            validated,
            cur.state_spec.as_deref(),
        )?;
        let shapes = request_shapes(schema.as_deref(), self.validate_requests, &mut interner);
        self.publish_set(&cur, interner, set, schema, shapes);
        *w = pset;
        Ok(())
    }

    /// Link templates (by name) as new policies, with the slot values given;
    /// validated against the schema when the set was. All or nothing, and one
    /// index rebuild however many links.
    pub fn link(&self, links: &[templates::LinkRequest<'_>]) -> Result<(), TetherError> {
        let mut w = self.lock();
        let cur = self.current.load_full();
        let mut made: Vec<&str> = Vec::new();
        let out = self.link_into(&cur, &mut w, links, &mut made);
        if out.is_err() {
            // Cedar's set changes only on success: take back the links made so far.
            for id in made {
                let _ = w.unlink(cedar_policy::PolicyId::new(id));
            }
        }
        out
    }

    fn link_into<'a>(
        &self,
        cur: &Snapshot,
        pset: &mut cedar_policy::PolicySet,
        links: &[templates::LinkRequest<'a>],
        made: &mut Vec<&'a str>,
    ) -> Result<(), TetherError> {
        let mut names: Vec<&str> = cur.set.policies.iter().map(|p| p.id.as_str()).collect();
        let mut warnings = cur.set.warnings.clone();
        for l in links {
            templates::link(
                pset,
                &names,
                l.template,
                l.policy_id,
                l.principal,
                l.resource,
            )?;
            made.push(l.policy_id);
            names.push(l.policy_id);
            if let (Some(schema), true) = (&cur.schema, cur.set.validated) {
                for w in templates::validate_link(pset, l.policy_id, schema, &cur.set.text)? {
                    if !warnings.contains(&w) {
                        warnings.push(w);
                    }
                }
            }
        }
        let mut interner = cur.interner.clone();
        let added: Vec<&cedar_policy::Policy> = links
            .iter()
            .filter_map(|l| pset.policy(&cedar_policy::PolicyId::new(l.policy_id)))
            .collect();
        let statics = pset.policies().filter(|p| p.is_static()).count();
        let set = compile::with_links(&cur.set, statics, &added, &mut interner)?;
        self.publish_linked(cur, interner, set, warnings)
    }

    /// Remove the template-linked policy `policy_id`. Atomic.
    pub fn unlink(&self, policy_id: &str) -> Result<(), TetherError> {
        let mut w = self.lock();
        let cur = self.current.load_full();
        templates::check_unlink(&w, policy_id)?;
        // Cedar's validator names the policy in backquotes; the link's warnings go with it.
        let mention = format!("`{policy_id}`");
        let warnings = cur
            .set
            .warnings
            .iter()
            .filter(|w| !w.contains(&mention))
            .cloned()
            .collect();
        let mut interner = cur.interner.clone();
        let id = cedar_policy::PolicyId::new(policy_id);
        // An unlinked policy's nodes stay behind until a full compile; once they
        // could outweigh the live set, compile afresh (amortised over the unlinks).
        if cur.set.unlinked < 64 + cur.set.policies.len() / 2 {
            let set = compile::without_policy(&cur.set, policy_id);
            self.publish_linked(&cur, interner, set, warnings)?;
            templates::unlink(&mut w, policy_id)?;
        } else {
            let mut pset = w.clone();
            templates::unlink(&mut pset, policy_id)?;
            let set = compile::compile(&cur.set.text, &pset, &mut interner)?;
            self.publish_linked(&cur, interner, set, warnings)?;
            *w = pset;
        }
        debug_assert!(w.policy(&id).is_none());
        Ok(())
    }

    /// Names of the templates, in text order.
    pub fn templates(&self) -> Vec<String> {
        templates::templates(&self.lock())
    }

    /// The template-linked policies, by id.
    pub fn links(&self) -> Vec<templates::LinkInfo> {
        templates::links(&self.lock())
    }

    /// The links and the snapshot compiled with exactly those links.
    pub fn links_and_snapshot(&self) -> (Vec<templates::LinkInfo>, Arc<Snapshot>) {
        let w = self.lock();
        (templates::links(&w), self.current.load_full())
    }

    /// Publish `set` (the current text's policies with the links) with the
    /// current schema and state.
    fn publish_linked(
        &self,
        cur: &Snapshot,
        mut interner: Interner,
        set: CompiledSet,
        warnings: Vec<String>,
    ) -> Result<(), TetherError> {
        let set = finish_set(
            set,
            &mut interner,
            warnings,
            cur.set.validated,
            cur.state_spec.as_deref(),
        )?;
        self.publish_set(cur, interner, set, cur.schema.clone(), cur.shapes.clone());
        Ok(())
    }

    /// Publish a new compiled set over the current entities.
    fn publish_set(
        &self,
        cur: &Snapshot,
        interner: Interner,
        set: CompiledSet,
        schema: Option<Arc<Schema>>,
        shapes: Option<Arc<RequestShapes>>,
    ) {
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

/// Validate a policy set (and the state file's conditions) against the schema, when
/// there is one and `validate` is on; returns Cedar's warnings.
fn validate_set(
    pset: &cedar_policy::PolicySet,
    text: &str,
    schema: Option<&Schema>,
    validate: bool,
    state_spec: Option<&StateSpec>,
) -> Result<Vec<String>, TetherError> {
    let Some(s) = schema.filter(|_| validate) else {
        return Ok(Vec::new());
    };
    let warnings = compile::validate(pset, s, text)?;
    if let Some(spec) = state_spec {
        compile::validate_state(spec, s)?;
    }
    Ok(warnings)
}

/// Compile Cedar's set `pset` (parsed from `text`, plus any links) into a set to publish.
fn compile_set(
    text: &str,
    pset: &cedar_policy::PolicySet,
    psts: compile::Psts,
    interner: &mut Interner,
    warnings: Vec<String>,
    validated: bool,
    state_spec: Option<&StateSpec>,
) -> Result<CompiledSet, TetherError> {
    let set = compile::compile_parsed(text, pset, psts, interner)?;
    finish_set(set, interner, warnings, validated, state_spec)
}

/// A compiled set made ready to publish: warnings, state.
fn finish_set(
    mut set: CompiledSet,
    interner: &mut Interner,
    warnings: Vec<String>,
    validated: bool,
    state_spec: Option<&StateSpec>,
) -> Result<CompiledSet, TetherError> {
    set.warnings = warnings;
    // Always compiled (an empty spec still gives `context.task.depth` and `.actors`).
    set.state = Some(CompiledState::compile(
        state_spec.unwrap_or(&StateSpec::default()),
        interner,
    )?);
    set.validated = validated;
    Ok(set)
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
) -> Result<(Snapshot, cedar_policy::PolicySet), TetherError> {
    let mut interner = Interner::default();
    let (pset, psts) = compile::parse_with_psts(policies)?;
    let warnings = validate_set(
        &pset,
        policies,
        schema.as_deref(),
        validate,
        state_spec.as_deref(),
    )?;
    let validated = schema.is_some() && validate;
    let set = compile_set(
        policies,
        &pset,
        psts,
        &mut interner,
        warnings,
        validated,
        state_spec.as_deref(),
    )?;
    let mut store = EntityStore::default();
    // Always parse (even an empty list) so a schema's action entities are present.
    let parsed = parse_entities(entities.unwrap_or("[]"), schema.as_deref(), &mut interner)?;
    let shapes = request_shapes(schema.as_deref(), validate_requests, &mut interner);
    store.apply(parsed, &[], &interner)?;
    interner.compact();
    store.set_named(&interner, &set.named_uids);
    let (plans, plan_deps) = plan(&set, &store, &interner);
    let snap = Snapshot {
        interner,
        set: Arc::new(set),
        store: Arc::new(store),
        plans,
        plan_deps,
        schema,
        shapes,
        state_spec,
        version: 0,
    };
    if policies.len() + entities.map_or(0, str::len) > TRIM_ABOVE_BYTES {
        trim_heap();
    }
    Ok((snap, pset))
}

/// Builds from inputs larger than this return the allocator's free pages after.
const TRIM_ABOVE_BYTES: usize = 4 << 20;

/// Hand the heap's free pages back to the OS. A large build frees most of what it
/// allocates (Cedar's syntax trees, the compiler's intermediates), and glibc keeps
/// freed pages for reuse: measured on 100,000 policies (12 MB of text), ~0.5 GB of
/// the 1.23 GB left resident, returned by this in ~0.2 s. The callers run builds
/// without the GIL, so the pause is the building thread's alone.
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::os::raw::c_int;
        }
        // SAFETY: glibc's `malloc_trim` takes no pointers and may be called at any time.
        unsafe {
            malloc_trim(0);
        }
    }
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

//! Test oracle for the compiler, the index and the specialiser: a policy text and
//! entities loaded into a `Core`, each request decided in every mode tether has and
//! compared with Cedar's own `Authorizer` on the same text, entities and context.
//!
//! What must match Cedar exactly: with errors skipped and full diagnostics, the
//! decision, the deciding policies (as a list, so a policy counted twice shows) and
//! the erroring policies; in every other mode the decision, where `OnError::Deny`
//! means Cedar's decision and "deny if any policy errored". A known action is also
//! decided with only the context attributes its plan reads converted, as the
//! bindings do.

use std::collections::BTreeSet;

use cedar_policy::{Authorizer, Context, Decision, Entities, EntityId, EntityUid, PolicySet};

use crate::authorize::{ContextFields, Mode, OnError, ResolvedRequest};
use crate::compile::policy_name;
use crate::engine::{Core, Snapshot};
use crate::eval::Locals;
use crate::value::{Interner, Record, Value};

/// xorshift64*: deterministic, dependency-free.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

/// One request: `(type, id)` of principal, action and resource, and context JSON.
#[derive(Clone, Debug)]
pub struct Req {
    pub principal: (&'static str, &'static str),
    pub action: (&'static str, &'static str),
    pub resource: (&'static str, &'static str),
    pub context: &'static str,
}

/// (allowed, deciding policies sorted, erroring policies sorted), by tether's names.
pub type Answer = (bool, Vec<String>, Vec<String>);

/// Both engines loaded with one policy text and one entity set.
pub struct Both {
    pub core: Core,
    pub pset: PolicySet,
    pub entities: Entities,
    pub text: String,
}

impl Both {
    pub fn new(policies: &str, entities: &str) -> Self {
        let core = Core::new(
            policies,
            None,
            Some(entities),
            None,
            false,
            OnError::Skip,
            false,
        )
        .unwrap_or_else(|e| panic!("tether loads:\n{policies}\n{e}"));
        let pset: PolicySet = policies.parse().expect("Cedar parses");
        let entities = Entities::from_json_str(entities, None).expect("Cedar entities");
        Both {
            core,
            pset,
            entities,
            text: policies.to_owned(),
        }
    }

    /// Cedar's answer, policies named as tether names them.
    pub fn cedar(&self, r: &Req) -> Answer {
        let uid = |(t, i): (&str, &str)| {
            EntityUid::from_type_name_and_id(t.parse().unwrap(), EntityId::new(i))
        };
        let ctx = Context::from_json_str(r.context, None).expect("context JSON");
        let req =
            cedar_policy::Request::new(uid(r.principal), uid(r.action), uid(r.resource), ctx, None)
                .unwrap();
        let resp = Authorizer::new().is_authorized(&req, &self.pset, &self.entities);
        let name = |id: &cedar_policy::PolicyId| policy_name(self.pset.policy(id).unwrap());
        let reasons: BTreeSet<String> = resp.diagnostics().reason().map(name).collect();
        let errors: BTreeSet<String> = resp
            .diagnostics()
            .errors()
            .map(|e| match e {
                cedar_policy::AuthorizationError::PolicyEvaluationError(e) => name(e.policy_id()),
            })
            .collect();
        (
            resp.decision() == Decision::Allow,
            reasons.into_iter().collect(),
            errors.into_iter().collect(),
        )
    }

    /// The request resolved against the current snapshot; `fields_only`: the
    /// context converted only for the keys the action's plan reads.
    fn resolve(&self, r: &Req, fields_only: bool) -> (std::sync::Arc<Snapshot>, ResolvedRequest) {
        let p = self.core.intern_uid(r.principal.0, r.principal.1).unwrap();
        let a = self.core.intern_uid(r.action.0, r.action.1).unwrap();
        let res = self.core.intern_uid(r.resource.0, r.resource.1).unwrap();
        let snap = self.core.current.load_full();
        let mut locals = Locals::new(&snap.interner);
        let json: serde_json::Value = serde_json::from_str(r.context).unwrap();
        let ctx = json_value(&json, &snap.interner, &mut locals);
        let mut fields = ContextFields::new();
        let mut context = Some(ctx);
        if fields_only {
            let plan = &snap.plans.by_action[&a];
            if let Some(Value::Record(rec)) = &context {
                for (k, _) in &plan.ctx_keys {
                    if let Some(v) = rec.get(*k) {
                        fields.push((*k, v.clone()));
                    }
                }
            }
            context = None;
        }
        let req = ResolvedRequest {
            principal: p,
            action: a,
            resource: res,
            context,
            fields,
            locals,
        };
        (snap, req)
    }

    /// Tether's answer in `mode`, policies by name.
    pub fn tether(&self, r: &Req, mode: Mode, on_error: OnError, fields_only: bool) -> Answer {
        let (snap, req) = self.resolve(r, fields_only);
        let out = snap.evaluate(&req, mode, on_error);
        let name = |i: &u32| snap.set.policies[*i as usize].id.clone();
        let mut reasons: Vec<String> = out.reasons.iter().map(name).collect();
        reasons.sort();
        let mut errors: Vec<String> = out.errors.iter().map(|(i, _)| name(i)).collect();
        errors.sort();
        (out.allowed, reasons, errors)
    }

    /// Whether the action has a specialised plan (else the index decides).
    pub fn planned(&self, r: &Req) -> bool {
        let a = self.core.intern_uid(r.action.0, r.action.1).unwrap();
        self.core.current.load().plans.by_action.contains_key(&a)
    }

    /// Compare every mode with Cedar on `r`; returns Cedar's answer.
    pub fn check(&self, r: &Req) -> Answer {
        let want = self.cedar(r);
        let what = || format!("{r:?}\n{}", self.text);
        let mut variants = vec![false];
        let a = self.core.intern_uid(r.action.0, r.action.1).unwrap();
        if let Some(plan) = self.core.current.load().plans.by_action.get(&a) {
            if !plan.whole_context {
                variants.push(true);
            }
        }
        for fields_only in variants {
            let got = self.tether(r, Mode::Full, OnError::Skip, fields_only);
            assert_eq!(
                got,
                want,
                "full, skip (fields only: {fields_only}): {}",
                what()
            );
            let deny = want.0 && want.2.is_empty();
            for mode in [Mode::Fast, Mode::DecisionOnly, Mode::FastUnlessObligations] {
                let got = self.tether(r, mode, OnError::Skip, fields_only);
                assert_eq!(got.0, want.0, "{mode:?}, skip: {}", what());
                let got = self.tether(r, mode, OnError::Deny, fields_only);
                assert_eq!(got.0, deny, "{mode:?}, deny: {}", what());
            }
            let got = self.tether(r, Mode::Full, OnError::Deny, fields_only);
            assert_eq!(got.0, deny, "full, deny: {}", what());
            // An error found denies; without one the reasons are Cedar's.
            assert_eq!(
                got.2.is_empty(),
                want.2.is_empty(),
                "full, deny: {}",
                what()
            );
            if want.2.is_empty() {
                assert_eq!(got.1, want.1, "full, deny: {}", what());
            }
        }
        want
    }
}

/// A context value from JSON: booleans, longs, strings, sets (arrays), records.
pub fn json_value(j: &serde_json::Value, interner: &Interner, locals: &mut Locals) -> Value {
    match j {
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => Value::Long(n.as_i64().expect("a long")),
        serde_json::Value::String(s) => Value::Str(locals.sym(interner, s)),
        serde_json::Value::Array(xs) => {
            Value::set_from(xs.iter().map(|x| json_value(x, interner, locals)).collect())
        }
        serde_json::Value::Object(m) => {
            let fields = m
                .iter()
                .map(|(k, v)| (locals.sym(interner, k), json_value(v, interner, locals)))
                .collect();
            Value::Record(Record::from_unsorted(fields).shared())
        }
        serde_json::Value::Null => panic!("no null in Cedar"),
    }
}

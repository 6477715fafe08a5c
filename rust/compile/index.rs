//! Candidate-policy index over the three scope dimensions.
//!
//! Each policy is filed under exactly one key per dimension (its scope
//! constraint). A request gathers only the posting lists its principal, action
//! and resource can match, picks the dimension with the fewest candidates, and
//! checks the other two scope constraints directly. Cost is proportional to the
//! smallest matching list, not to the size of the policy set.
//!
//! Every posting list holds forbids first, then permits, with the split point
//! stored, so one lookup serves both passes (forbids are evaluated first).

use rustc_hash::{FxHashMap, FxHashSet};

use super::ir::{ActionScope, CompiledPolicy, Effect, EntityScope};
use crate::value::{Euid, Sym};

/// Policy indexes under one key: `ids[..forbids]` are forbids, the rest permits.
///
/// A long list is split once more by a second key (the principal's exact uid for
/// action and resource lists, the action's for principal lists), so per-agent
/// grants under a busy action or a shared resource group stay O(1) to find.
#[derive(Default, Debug)]
pub struct Posting {
    ids: Vec<u32>,
    forbids: usize,
    split: Option<Box<Split>>,
}

/// Which exact uid a long list is split by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SplitKey {
    Principal,
    Action,
}

#[derive(Debug)]
struct Split {
    key: SplitKey,
    by: FxHashMap<Euid, Posting>,
    rest: Posting,
}

type KeyFn<'k> = &'k dyn Fn(u32) -> Option<Euid>;

/// Lists longer than this are split by the second key.
const SPLIT_OVER: usize = 16;

impl Posting {
    /// Add a policy; callers add every forbid before any permit, so this appends
    /// (an insert would still be correct, just quadratic).
    fn push(&mut self, p: u32, effect: Effect) {
        match effect {
            Effect::Forbid if self.forbids == self.ids.len() => {
                self.ids.push(p);
                self.forbids += 1;
            }
            Effect::Forbid => {
                self.ids.insert(self.forbids, p);
                self.forbids += 1;
            }
            Effect::Permit => self.ids.push(p),
        }
    }

    /// Split by whichever of `keys` (a policy's exact uid in another dimension)
    /// leaves the fewest policies unsplit.
    fn split_best(&mut self, keys: &[(SplitKey, KeyFn<'_>)]) {
        if self.ids.len() <= SPLIT_OVER {
            return;
        }
        let best = keys
            .iter()
            .map(|(k, f)| (*k, *f, self.ids.iter().filter(|p| f(**p).is_none()).count()))
            .min_by_key(|(_, _, rest)| *rest);
        let Some((key, f, rest)) = best else { return };
        // Only worth it if it actually spreads the list out.
        if rest == self.ids.len() {
            return;
        }
        let mut sp = Split {
            key,
            by: FxHashMap::default(),
            rest: Posting::default(),
        };
        for (i, p) in self.ids.iter().enumerate() {
            let effect = if i < self.forbids {
                Effect::Forbid
            } else {
                Effect::Permit
            };
            match f(*p) {
                Some(k) => sp.by.entry(k).or_default().push(*p, effect),
                None => sp.rest.push(*p, effect),
            }
        }
        self.split = Some(Box::new(sp));
    }

    #[inline]
    pub fn part(&self, effect: Effect) -> &[u32] {
        match effect {
            Effect::Forbid => &self.ids[..self.forbids],
            Effect::Permit => &self.ids[self.forbids..],
        }
    }
}

#[derive(Default, Debug)]
pub struct EntityDim {
    eq: FxHashMap<Euid, Posting>,
    /// `in E` and `is T in E`, filed under E.
    within: FxHashMap<Euid, Posting>,
    is: FxHashMap<Sym, Posting>,
    any: Posting,
}

impl EntityDim {
    fn add(&mut self, scope: &EntityScope, p: u32, e: Effect) {
        match scope {
            EntityScope::Any => self.any.push(p, e),
            EntityScope::Eq(u) => self.eq.entry(*u).or_default().push(p, e),
            EntityScope::In(u) | EntityScope::IsIn(_, u) => {
                self.within.entry(*u).or_default().push(p, e)
            }
            EntityScope::Is(t) => self.is.entry(*t).or_default().push(p, e),
        }
    }

    fn split_best(&mut self, keys: &[(SplitKey, KeyFn<'_>)]) {
        self.any.split_best(keys);
        for p in self
            .eq
            .values_mut()
            .chain(self.within.values_mut())
            .chain(self.is.values_mut())
        {
            p.split_best(keys);
        }
    }

    fn lists<'a>(
        &'a self,
        uid: &Euid,
        ancestors: Option<&FxHashSet<Euid>>,
        probe: Probe,
        out: &mut Lists<'a>,
    ) {
        out.push(&self.any, probe);
        if let Some(l) = self.eq.get(uid) {
            out.push(l, probe);
        }
        if !self.within.is_empty() {
            if let Some(l) = self.within.get(uid) {
                out.push(l, probe);
            }
            if let Some(anc) = ancestors {
                for a in anc {
                    if let Some(l) = self.within.get(a) {
                        out.push(l, probe);
                    }
                }
            }
        }
        if let Some(l) = self.is.get(&uid.ty) {
            out.push(l, probe);
        }
    }
}

#[derive(Default, Debug)]
pub struct ActionDim {
    /// `action == A` and `action in [.., A, ..]`, filed under each A.
    keyed: FxHashMap<Euid, Posting>,
    any: Posting,
}

/// The request's exact principal and action, to look up split lists.
#[derive(Clone, Copy)]
struct Probe {
    principal: Euid,
    action: Euid,
}

const INLINE: usize = 6;

/// The posting lists one request matches in one dimension. Inline storage
/// keeps the common case (a handful of lists) free of allocation.
pub struct Lists<'a> {
    inline: [Option<&'a Posting>; INLINE],
    n: usize,
    overflow: Vec<&'a Posting>,
    pub total: usize,
}

impl<'a> Lists<'a> {
    pub fn new() -> Self {
        Lists {
            inline: [None; INLINE],
            n: 0,
            overflow: Vec::new(),
            total: 0,
        }
    }

    #[inline]
    fn push(&mut self, l: &'a Posting, probe: Probe) {
        if let Some(sp) = &l.split {
            let key = match sp.key {
                SplitKey::Principal => &probe.principal,
                SplitKey::Action => &probe.action,
            };
            if let Some(sub) = sp.by.get(key) {
                self.push_one(sub);
            }
            self.push_one(&sp.rest);
        } else {
            self.push_one(l);
        }
    }

    #[inline]
    fn push_one(&mut self, l: &'a Posting) {
        if l.ids.is_empty() {
            return;
        }
        self.total += l.ids.len();
        if self.n < INLINE {
            self.inline[self.n] = Some(l);
            self.n += 1;
        } else {
            self.overflow.push(l);
        }
    }

    /// Number of non-empty lists.
    pub fn count(&self) -> usize {
        self.n + self.overflow.len()
    }

    /// Policy indexes of one effect across all lists.
    pub fn iter(&self, effect: Effect) -> impl Iterator<Item = u32> + '_ {
        self.inline[..self.n]
            .iter()
            .flatten()
            .chain(self.overflow.iter())
            .flat_map(move |l| l.part(effect).iter().copied())
    }
}

impl Default for Lists<'_> {
    fn default() -> Self {
        Self::new()
    }
}

/// A policy's scope, packed densely so candidate checks touch one cache line
/// instead of chasing into the policy. `action_in` defers to the policy.
#[derive(Clone, Copy, Debug)]
struct PackedScope {
    principal: EntityScope,
    resource: EntityScope,
    action: Option<Euid>,
    action_any: bool,
}

impl PackedScope {
    fn of(p: &CompiledPolicy) -> Self {
        PackedScope {
            principal: p.principal,
            resource: p.resource,
            action: match &p.action {
                ActionScope::Eq(a) => Some(*a),
                _ => None,
            },
            action_any: p.action == ActionScope::Any,
        }
    }
}

#[derive(Default, Debug)]
pub struct Index {
    principal: EntityDim,
    action: ActionDim,
    resource: EntityDim,
    scopes: Vec<PackedScope>,
}

/// The request's scope-relevant facts, looked up once per request.
pub struct ScopeFacts<'a> {
    pub principal: Euid,
    pub principal_anc: Option<&'a FxHashSet<Euid>>,
    pub action: Euid,
    pub action_anc: Option<&'a FxHashSet<Euid>>,
    pub resource: Euid,
    pub resource_anc: Option<&'a FxHashSet<Euid>>,
}

#[inline]
fn within(uid: &Euid, anc: Option<&FxHashSet<Euid>>, target: &Euid) -> bool {
    uid == target || anc.is_some_and(|a| a.contains(target))
}

#[inline]
pub fn entity_scope_holds(s: &EntityScope, uid: &Euid, anc: Option<&FxHashSet<Euid>>) -> bool {
    match s {
        EntityScope::Any => true,
        EntityScope::Eq(u) => uid == u,
        EntityScope::In(u) => within(uid, anc, u),
        EntityScope::Is(t) => uid.ty == *t,
        EntityScope::IsIn(t, u) => uid.ty == *t && within(uid, anc, u),
    }
}

#[inline]
fn action_holds(a: &ActionScope, f: &ScopeFacts<'_>) -> bool {
    match a {
        ActionScope::Any => true,
        ActionScope::Eq(a) => *a == f.action,
        ActionScope::In(list) => list.iter().any(|a| within(&f.action, f.action_anc, a)),
    }
}

impl Index {
    /// Whether policy `i`'s whole scope holds for the request (scope never errors),
    /// read from its packed copy.
    #[inline]
    pub fn holds(&self, i: u32, policies: &[CompiledPolicy], f: &ScopeFacts<'_>) -> bool {
        let s = &self.scopes[i as usize];
        entity_scope_holds(&s.principal, &f.principal, f.principal_anc)
            && match s.action {
                Some(a) => a == f.action,
                None => s.action_any || action_holds(&policies[i as usize].action, f),
            }
            && entity_scope_holds(&s.resource, &f.resource, f.resource_anc)
    }

    pub fn build(policies: &[CompiledPolicy]) -> Self {
        let mut idx = Index {
            scopes: policies.iter().map(PackedScope::of).collect(),
            ..Index::default()
        };
        // Forbids first, so every posting list is built by appending (no inserts).
        let ordered = policies
            .iter()
            .enumerate()
            .filter(|(_, p)| p.effect == Effect::Forbid)
            .chain(
                policies
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.effect == Effect::Permit),
            );
        for (i, p) in ordered {
            let i = i as u32;
            idx.principal.add(&p.principal, i, p.effect);
            idx.resource.add(&p.resource, i, p.effect);
            match &p.action {
                ActionScope::Any => idx.action.any.push(i, p.effect),
                ActionScope::Eq(a) => idx.action.keyed.entry(*a).or_default().push(i, p.effect),
                ActionScope::In(list) => {
                    let uniq: FxHashSet<Euid> = list.iter().copied().collect();
                    for a in uniq {
                        idx.action.keyed.entry(a).or_default().push(i, p.effect);
                    }
                }
            }
        }
        let principal_eq = |i: u32| match policies[i as usize].principal {
            EntityScope::Eq(u) => Some(u),
            _ => None,
        };
        let action_eq = |i: u32| match policies[i as usize].action {
            ActionScope::Eq(a) => Some(a),
            _ => None,
        };
        let by_principal: (SplitKey, KeyFn<'_>) = (SplitKey::Principal, &principal_eq);
        let by_action: (SplitKey, KeyFn<'_>) = (SplitKey::Action, &action_eq);
        idx.action.any.split_best(&[by_principal]);
        for p in idx.action.keyed.values_mut() {
            p.split_best(&[by_principal]);
        }
        idx.resource.split_best(&[by_principal, by_action]);
        idx.principal.split_best(&[by_action]);
        idx
    }

    /// Candidate lists from the most selective dimension. A policy can appear
    /// in two of the returned lists only through `action in [..]` naming two of
    /// the request action's ancestors; the flag tells the caller to dedupe.
    pub fn candidates<'a>(&'a self, f: &ScopeFacts<'_>, out: &mut Lists<'a>) -> bool {
        let probe = Probe {
            principal: f.principal,
            action: f.action,
        };
        let mut a = Lists::new();
        a.push(&self.action.any, probe);
        if let Some(l) = self.action.keyed.get(&f.action) {
            a.push(l, probe);
        }
        if let Some(anc) = f.action_anc {
            for x in anc {
                if let Some(l) = self.action.keyed.get(x) {
                    a.push(l, probe);
                }
            }
        }
        let mut p = Lists::new();
        self.principal
            .lists(&f.principal, f.principal_anc, probe, &mut p);
        if p.total < a.total {
            std::mem::swap(&mut a, &mut p);
        }
        let mut r = Lists::new();
        self.resource
            .lists(&f.resource, f.resource_anc, probe, &mut r);
        if r.total < a.total {
            std::mem::swap(&mut a, &mut r);
        }
        // `a` now holds the smallest dimension; only the action dimension can repeat
        // a policy (an `action in [..]` naming two of the action's ancestors).
        let multi = a.count() > 1 && f.action_anc.is_some_and(|s| !s.is_empty());
        *out = a;
        multi
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile;
    use crate::value::Interner;

    fn set(text: &str) -> (compile::CompiledSet, Interner) {
        let mut i = Interner::default();
        let pset = compile::parse(text).unwrap();
        let s = compile::compile(text, &pset, &mut i).unwrap();
        (s, i)
    }

    fn uid(i: &mut Interner, ty: &str, id: &str) -> Euid {
        Euid {
            ty: i.intern(ty),
            id: i.intern(id),
        }
    }

    #[test]
    fn candidates_are_forbids_first_and_cover_every_matching_scope() {
        let mut text = String::new();
        // Many per-agent grants on one action (forces a split), two forbids.
        for a in 0..40 {
            text += &format!(
                "permit (principal == Agent::\"a{a}\", action == Action::\"x\", resource);\n"
            );
        }
        text += "forbid (principal, action, resource is Doc);\n";
        text += "permit (principal in Role::\"r\", action in [Action::\"x\"], resource);\n";
        text += "forbid (principal, action == Action::\"y\", resource);\n";
        let (s, mut i) = set(&text);
        let a7 = uid(&mut i, "Agent", "a7");
        let x = uid(&mut i, "Action", "x");
        let doc = uid(&mut i, "Doc", "d");
        let role = uid(&mut i, "Role", "r");
        let anc: FxHashSet<Euid> = [role].into_iter().collect();
        let facts = ScopeFacts {
            principal: a7,
            principal_anc: Some(&anc),
            action: x,
            action_anc: None,
            resource: doc,
            resource_anc: None,
        };
        let mut lists = Lists::new();
        s.index.candidates(&facts, &mut lists);
        let holding = |e: Effect| -> Vec<u32> {
            let mut v: Vec<u32> = lists
                .iter(e)
                .filter(|p| s.index.holds(*p, &s.policies, &facts))
                .collect();
            v.sort();
            v
        };
        // policy40 (forbid on Doc) holds; policy42 (forbid on action y) does not.
        assert_eq!(holding(Effect::Forbid), vec![40]);
        // a7's own grant and the role grant, nothing else.
        assert_eq!(holding(Effect::Permit), vec![7, 41]);
        // The split keeps the other agents' grants out of the candidate lists.
        assert!(lists.total < 20, "{}", lists.total);
    }
}

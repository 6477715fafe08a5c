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
#[derive(Default, Debug)]
pub struct Posting {
    ids: Vec<u32>,
    forbids: usize,
}

impl Posting {
    fn push(&mut self, p: u32, effect: Effect) {
        match effect {
            Effect::Forbid => {
                self.ids.insert(self.forbids, p);
                self.forbids += 1;
            }
            Effect::Permit => self.ids.push(p),
        }
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

    fn lists<'a>(&'a self, uid: &Euid, ancestors: Option<&FxHashSet<Euid>>, out: &mut Lists<'a>) {
        out.push(&self.any);
        if let Some(l) = self.eq.get(uid) {
            out.push(l);
        }
        if !self.within.is_empty() {
            if let Some(l) = self.within.get(uid) {
                out.push(l);
            }
            if let Some(anc) = ancestors {
                for a in anc {
                    if let Some(l) = self.within.get(a) {
                        out.push(l);
                    }
                }
            }
        }
        if let Some(l) = self.is.get(&uid.ty) {
            out.push(l);
        }
    }
}

#[derive(Default, Debug)]
pub struct ActionDim {
    /// `action == A` and `action in [.., A, ..]`, filed under each A.
    keyed: FxHashMap<Euid, Posting>,
    any: Posting,
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
    fn push(&mut self, l: &'a Posting) {
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

#[derive(Default, Debug)]
pub struct Index {
    principal: EntityDim,
    action: ActionDim,
    resource: EntityDim,
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
fn entity_scope_holds(s: &EntityScope, uid: &Euid, anc: Option<&FxHashSet<Euid>>) -> bool {
    match s {
        EntityScope::Any => true,
        EntityScope::Eq(u) => uid == u,
        EntityScope::In(u) => within(uid, anc, u),
        EntityScope::Is(t) => uid.ty == *t,
        EntityScope::IsIn(t, u) => uid.ty == *t && within(uid, anc, u),
    }
}

/// Whether a policy's whole scope holds for the request (scope never errors).
#[inline]
pub fn scope_holds(p: &CompiledPolicy, f: &ScopeFacts<'_>) -> bool {
    entity_scope_holds(&p.principal, &f.principal, f.principal_anc)
        && match &p.action {
            ActionScope::Any => true,
            ActionScope::Eq(a) => *a == f.action,
            ActionScope::In(list) => list.iter().any(|a| within(&f.action, f.action_anc, a)),
        }
        && entity_scope_holds(&p.resource, &f.resource, f.resource_anc)
}

impl Index {
    pub fn build(policies: &[CompiledPolicy]) -> Self {
        let mut idx = Index::default();
        for (i, p) in policies.iter().enumerate() {
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
        idx
    }

    /// Candidate lists from the most selective dimension. A policy can appear
    /// in two of the returned lists only through `action in [..]` naming two of
    /// the request action's ancestors; the flag tells the caller to dedupe.
    pub fn candidates<'a>(&'a self, f: &ScopeFacts<'_>, out: &mut Lists<'a>) -> bool {
        let mut a = Lists::new();
        a.push(&self.action.any);
        if let Some(l) = self.action.keyed.get(&f.action) {
            a.push(l);
        }
        if let Some(anc) = f.action_anc {
            for x in anc {
                if let Some(l) = self.action.keyed.get(x) {
                    a.push(l);
                }
            }
        }
        let mut p = Lists::new();
        self.principal.lists(&f.principal, f.principal_anc, &mut p);
        if p.total < a.total {
            std::mem::swap(&mut a, &mut p);
        }
        let mut r = Lists::new();
        self.resource.lists(&f.resource, f.resource_anc, &mut r);
        if r.total < a.total {
            std::mem::swap(&mut a, &mut r);
        }
        // `a` now holds the smallest dimension; only the action dimension can repeat.
        let multi = a.count() > 1 && f.action_anc.is_some_and(|s| !s.is_empty());
        *out = a;
        multi
    }
}

//! Candidate-policy index over the three scope dimensions.
//!
//! Each policy is filed under exactly one key per dimension (its scope
//! constraint). A request walks only the lists its principal, action and
//! resource can match, choosing the dimension with the fewest candidates, and
//! checks the other two scope constraints directly. Cost is proportional to
//! the smallest matching list, not to the size of the policy set.

use rustc_hash::{FxHashMap, FxHashSet};

use super::ir::{ActionScope, CompiledPolicy, EntityScope};
use crate::value::{Euid, Sym};

#[derive(Default, Debug)]
pub struct EntityDim {
    eq: FxHashMap<Euid, Vec<u32>>,
    /// `in E` and `is T in E`, filed under E.
    within: FxHashMap<Euid, Vec<u32>>,
    is: FxHashMap<Sym, Vec<u32>>,
    any: Vec<u32>,
}

impl EntityDim {
    fn add(&mut self, scope: &EntityScope, p: u32) {
        match scope {
            EntityScope::Any => self.any.push(p),
            EntityScope::Eq(u) => self.eq.entry(*u).or_default().push(p),
            EntityScope::In(u) | EntityScope::IsIn(_, u) => {
                self.within.entry(*u).or_default().push(p)
            }
            EntityScope::Is(t) => self.is.entry(*t).or_default().push(p),
        }
    }

    /// The lists a request entity can match, and their total length.
    fn lists<'a>(
        &'a self,
        uid: &Euid,
        ancestors: Option<&FxHashSet<Euid>>,
        out: &mut Lists<'a>,
    ) {
        out.push(&self.any);
        if let Some(l) = self.eq.get(uid) {
            out.push(l);
        }
        if let Some(l) = self.within.get(uid) {
            out.push(l);
        }
        if let Some(l) = self.is.get(&uid.ty) {
            out.push(l);
        }
        if !self.within.is_empty() {
            if let Some(anc) = ancestors {
                for a in anc {
                    if let Some(l) = self.within.get(a) {
                        out.push(l);
                    }
                }
            }
        }
    }
}

#[derive(Default, Debug)]
pub struct ActionDim {
    /// `action == A` and `action in [.., A, ..]`, filed under each A.
    keyed: FxHashMap<Euid, Vec<u32>>,
    any: Vec<u32>,
}

/// A small stack-allocated collection of posting lists.
pub struct Lists<'a> {
    pub lists: [&'a [u32]; 16],
    pub n: usize,
    pub overflow: Vec<&'a [u32]>,
    pub total: usize,
}

impl<'a> Lists<'a> {
    pub fn new() -> Self {
        Lists {
            lists: [&[]; 16],
            n: 0,
            overflow: Vec::new(),
            total: 0,
        }
    }

    #[inline]
    fn push(&mut self, l: &'a [u32]) {
        if l.is_empty() {
            return;
        }
        self.total += l.len();
        if self.n < self.lists.len() {
            self.lists[self.n] = l;
            self.n += 1;
        } else {
            self.overflow.push(l);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.lists[..self.n]
            .iter()
            .chain(self.overflow.iter())
            .flat_map(|l| l.iter().copied())
    }
}

/// Index of the policies of one effect.
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
    pub fn build(policies: &[CompiledPolicy], pick: impl Fn(&CompiledPolicy) -> bool) -> Self {
        let mut idx = Index::default();
        for (i, p) in policies.iter().enumerate() {
            if !pick(p) {
                continue;
            }
            let i = i as u32;
            idx.principal.add(&p.principal, i);
            idx.resource.add(&p.resource, i);
            match &p.action {
                ActionScope::Any => idx.action.any.push(i),
                ActionScope::Eq(a) => idx.action.keyed.entry(*a).or_default().push(i),
                ActionScope::In(list) => {
                    let uniq: FxHashSet<Euid> = list.iter().copied().collect();
                    for a in uniq {
                        idx.action.keyed.entry(a).or_default().push(i);
                    }
                }
            }
        }
        idx
    }

    /// Candidate lists from the most selective dimension. A policy may appear
    /// in more than one of the returned lists only through `action in [..]`
    /// naming several of the request action's ancestors; callers dedupe with
    /// `first_action_key`.
    pub fn candidates<'a>(&'a self, f: &ScopeFacts<'_>) -> (Lists<'a>, bool) {
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
        let mut r = Lists::new();
        self.resource.lists(&f.resource, f.resource_anc, &mut r);
        if a.total <= p.total && a.total <= r.total {
            let multi = a.n + a.overflow.len() > 1;
            (a, multi)
        } else if p.total <= r.total {
            (p, false)
        } else {
            (r, false)
        }
    }
}

//! The scope index against Cedar. Actions with no specialised plan (not of an
//! `Action` type, or named by neither the entities nor the policies) are decided
//! through the index: candidates from the smallest of the three dimensions, the
//! other two scope constraints checked per candidate. Requests here take that path
//! (checked), with action groups, principals in many groups and long lists that
//! the index splits, and are decided as Cedar decides them in every mode.

use super::index::{Lists, ScopeFacts};
use super::ir::Effect;
use super::test_oracle::{Both, Req, Rng};
use crate::value::Euid;

/// `alice` is in groups g0..g7; `Op::"x"` is in action groups g1 and g2, `Op::"y"`
/// in g2; `Doc::"d"` is in `Folder::"f"`.
fn entities() -> String {
    let mut es = Vec::new();
    let groups: Vec<_> = (0..8)
        .map(|g| serde_json::json!({"type": "Group", "id": format!("g{g}")}))
        .collect();
    es.push(serde_json::json!({"uid": {"type": "User", "id": "alice"},
        "attrs": {"level": 2}, "parents": groups}));
    es.push(serde_json::json!({"uid": {"type": "User", "id": "bob"}, "attrs": {}, "parents": []}));
    for g in 0..8 {
        es.push(
            serde_json::json!({"uid": {"type": "Group", "id": format!("g{g}")},
            "attrs": {}, "parents": []}),
        );
    }
    let act = |id: &str| serde_json::json!({"type": "Action", "id": id});
    es.push(
        serde_json::json!({"uid": {"type": "Op", "id": "x"}, "attrs": {},
        "parents": [act("g1"), act("g2")]}),
    );
    es.push(
        serde_json::json!({"uid": {"type": "Op", "id": "y"}, "attrs": {},
        "parents": [act("g2")]}),
    );
    es.push(serde_json::json!({"uid": {"type": "Op", "id": "z"}, "attrs": {}, "parents": []}));
    es.push(
        serde_json::json!({"uid": {"type": "Doc", "id": "d"}, "attrs": {"level": 1},
        "parents": [{"type": "Folder", "id": "f"}]}),
    );
    es.push(serde_json::json!({"uid": {"type": "Doc", "id": "e"}, "attrs": {}, "parents": []}));
    es.push(serde_json::json!({"uid": {"type": "Folder", "id": "f"}, "attrs": {}, "parents": []}));
    serde_json::Value::Array(es).to_string()
}

const PRINCIPALS: [(&str, &str); 3] = [("User", "alice"), ("User", "bob"), ("Group", "g0")];
const ACTIONS: [(&str, &str); 4] = [("Op", "x"), ("Op", "y"), ("Op", "z"), ("Action", "unnamed")];
const RESOURCES: [(&str, &str); 3] = [("Doc", "d"), ("Doc", "e"), ("Folder", "f")];
const CONTEXTS: [&str; 2] = ["{}", r#"{"flag": true}"#];

/// Every request of the universe, each checked to take the index path; returns
/// how many Cedar allowed.
fn check_all(both: &Both) -> usize {
    let mut allowed = 0;
    for &principal in &PRINCIPALS {
        for &action in &ACTIONS {
            for &resource in &RESOURCES {
                for &context in &CONTEXTS {
                    let r = Req {
                        principal,
                        action,
                        resource,
                        context,
                    };
                    assert!(!both.planned(&r), "{r:?} must take the index path");
                    allowed += usize::from(both.check(&r).0);
                }
            }
        }
    }
    allowed
}

fn policy(rng: &mut Rng) -> String {
    let effect = if rng.below(4) == 0 {
        "forbid"
    } else {
        "permit"
    };
    let g = rng.below(8);
    let principal = match rng.below(6) {
        0 | 1 => "principal".to_owned(),
        2 => "principal == User::\"alice\"".to_owned(),
        3 => format!("principal in Group::\"g{g}\""),
        4 => "principal is User".to_owned(),
        _ => format!("principal is User in Group::\"g{g}\""),
    };
    let action = rng.pick(&[
        "action",
        "action",
        "action == Action::\"g1\"",
        "action in [Action::\"g1\", Action::\"g2\"]",
        "action in Action::\"g2\"",
        "action in [Action::\"g3\"]",
    ]);
    let resource = rng.pick(&[
        "resource",
        "resource",
        "resource == Doc::\"d\"",
        "resource in Folder::\"f\"",
        "resource is Doc",
        "resource is Doc in Folder::\"f\"",
    ]);
    let cond = rng.pick(&[
        "",
        "",
        "when { context.flag }",
        "when { principal.level > 1 }",
        "unless { resource.level == 1 }",
    ]);
    format!("{effect} ({principal}, {action}, {resource}) {cond};\n")
}

#[test]
fn generated_scopes_decide_as_cedar_through_the_index() {
    let mut rng = Rng(0x1dec_5c0b_e5ed_0001);
    let ents = entities();
    let (mut allowed, mut requests) = (0, 0);
    for round in 0..30 {
        // Some sets long enough that the index splits its lists (over 16).
        let n = if round % 5 == 0 { 40 } else { 3 + rng.below(8) };
        let text: String = (0..n).map(|_| policy(&mut rng)).collect();
        let both = Both::new(&text, &ents);
        allowed += check_all(&both);
        requests += PRINCIPALS.len() * ACTIONS.len() * RESOURCES.len() * CONTEXTS.len();
    }
    assert!(allowed * 10 > requests, "{allowed} of {requests} allowed");
    assert!(
        allowed * 10 < requests * 9,
        "{allowed} of {requests} allowed"
    );
}

/// Many policies that a request of `Op::"x"` cannot match through the principal
/// or resource dimensions' shared lists, so the action dimension is the smallest.
fn filler(n: usize) -> String {
    (0..n)
        .map(|i| format!("permit (principal, action == Action::\"other{i}\", resource);\n"))
        .collect()
}

#[test]
fn a_policy_naming_two_ancestors_of_the_action_counts_once() {
    let text = format!(
        "@id(\"both\") permit (principal, action in [Action::\"g1\", Action::\"g2\"], resource);\n\
         @id(\"deny-both\") forbid (principal == User::\"bob\", action in [Action::\"g2\", Action::\"g1\"], resource);\n{}",
        filler(20)
    );
    let both = Both::new(&text, &entities());
    check_all(&both);
    let r = |p: &'static str| Req {
        principal: ("User", p),
        action: ("Op", "x"),
        resource: ("Doc", "d"),
        context: "{}",
    };
    assert_eq!(both.check(&r("alice")), (true, vec!["both".into()], vec![]));
    assert_eq!(
        both.check(&r("bob")),
        (false, vec!["deny-both".into()], vec![])
    );
}

#[test]
fn a_principal_in_many_groups_reaches_every_group_list() {
    // One grant per group of alice's: eight lists in the principal dimension,
    // which is the smallest (each action and resource list holds the filler too).
    let mut text: String = (0..8)
        .map(|g| {
            format!("@id(\"via-g{g}\") permit (principal in Group::\"g{g}\", action, resource);\n")
        })
        .collect();
    text += &(0..40)
        .map(|i| format!("permit (principal == User::\"u{i}\", action, resource);\n"))
        .collect::<String>();
    let both = Both::new(&text, &entities());
    check_all(&both);
    let (ok, reasons, _) = both.check(&Req {
        principal: ("User", "alice"),
        action: ("Op", "z"),
        resource: ("Doc", "e"),
        context: "{}",
    });
    assert!(ok);
    assert_eq!(reasons.len(), 8, "{reasons:?}");
}

/// The index over a compiled set, probed directly.
struct Probe {
    both: Both,
}

impl Probe {
    fn uid(&self, t: &str, i: &str) -> Euid {
        self.both.core.intern_uid(t, i).unwrap()
    }

    /// (candidate count, sorted candidates of each effect) for a request.
    fn candidates(&self, p: Euid, a: Euid, r: Euid) -> (usize, Vec<u32>, Vec<u32>) {
        let snap = self.both.core.current.load_full();
        let store = &snap.store;
        let facts = ScopeFacts {
            principal: p,
            principal_anc: store.ancestors(&p),
            action: a,
            action_anc: store.ancestors(&a),
            resource: r,
            resource_anc: store.ancestors(&r),
        };
        let mut lists = Lists::new();
        snap.set.index.candidates(&facts, &mut lists);
        let mut forbids: Vec<u32> = lists.iter(Effect::Forbid).collect();
        let mut permits: Vec<u32> = lists.iter(Effect::Permit).collect();
        forbids.sort();
        permits.sort();
        (lists.total, forbids, permits)
    }
}

#[test]
fn candidates_come_from_the_smallest_dimension() {
    // Three per-principal grants for alice, five per-action ones for Op y's group,
    // seven per-resource ones for Doc e: each request gets the smallest list.
    let mut text = String::new();
    for i in 0..3 {
        text += &format!("permit (principal == User::\"alice\", action == Action::\"a{i}\", resource == Doc::\"r{i}\");\n");
    }
    for i in 0..5 {
        text += &format!("permit (principal == User::\"p{i}\", action in Action::\"g2\", resource == Doc::\"s{i}\");\n");
    }
    for i in 0..7 {
        text += &format!(
            "forbid (principal == User::\"q{i}\", action == Action::\"b{i}\", resource == Doc::\"e\");\n"
        );
    }
    let probe = Probe {
        both: Both::new(&text, &entities()),
    };
    check_all(&probe.both);
    let alice = probe.uid("User", "alice");
    let bob = probe.uid("User", "bob");
    let y = probe.uid("Op", "y");
    let z = probe.uid("Op", "z");
    let e = probe.uid("Doc", "e");
    let d = probe.uid("Doc", "d");
    // alice, Op y, Doc e: principal 3 < action 5 < resource 7.
    assert_eq!(probe.candidates(alice, y, e), (3, vec![], vec![0, 1, 2]));
    // bob, Op y, Doc e: principal 0.
    assert_eq!(probe.candidates(bob, y, e).0, 0);
    // alice, Op z, Doc e: action 0.
    assert_eq!(probe.candidates(alice, z, e).0, 0);
    // alice, Op y, Doc d: resource 0.
    assert_eq!(probe.candidates(alice, y, d).0, 0);
    // A principal in no list: the action's five, not the resource's seven.
    let text2 = format!("{text}permit (principal, action, resource == Doc::\"zz\");\n");
    let probe2 = Probe {
        both: Both::new(&text2, &entities()),
    };
    let (total, forbids, permits) = probe2.candidates(
        probe2.uid("User", "carol"),
        probe2.uid("Op", "y"),
        probe2.uid("Doc", "e"),
    );
    // principal: the unscoped policy (1) is smallest.
    assert_eq!((total, forbids, permits), (1, vec![], vec![15]));
    let (total, _, permits) = probe2.candidates(
        probe2.uid("User", "p1"),
        probe2.uid("Op", "y"),
        probe2.uid("Doc", "e"),
    );
    // principal: p1's grant and the unscoped one (2) against action 5, resource 7+1.
    assert_eq!((total, permits), (2, vec![4, 15]));
}

#[test]
fn long_lists_are_split_by_the_requests_principal_or_action() {
    // 40 per-agent grants under one action and one resource group, and forbids in
    // the same lists: a request finds its own grant without the other 39.
    let mut text = String::new();
    for i in 0..3 {
        text += &format!("forbid (principal == User::\"a{i}\", action in Action::\"g2\", resource) when {{ context.flag }};\n");
    }
    for i in 0..40 {
        text += &format!(
            "permit (principal == User::\"a{i}\", action in Action::\"g2\", resource in Folder::\"f\");\n"
        );
    }
    for i in 0..20 {
        text += &format!(
            "permit (principal, action == Action::\"c{i}\", resource in Folder::\"f\");\n"
        );
    }
    let probe = Probe {
        both: Both::new(&text, &entities()),
    };
    let y = probe.uid("Op", "y");
    let d = probe.uid("Doc", "d");
    let a1 = probe.uid("User", "a1");
    let a7 = probe.uid("User", "a7");
    let (total, forbids, permits) = probe.candidates(a1, y, d);
    assert_eq!((forbids, permits), (vec![1], vec![3 + 1]));
    assert_eq!(total, 2);
    let (total, forbids, permits) = probe.candidates(a7, y, d);
    assert_eq!((total, forbids, permits), (1, vec![], vec![3 + 7]));
    // Every request still decides as Cedar does, forbids included.
    for p in ["a0", "a1", "a7", "a39"] {
        for context in CONTEXTS {
            for action in ["x", "y", "z"] {
                let r = Req {
                    principal: ("User", p),
                    action: ("Op", action),
                    resource: ("Doc", "d"),
                    context,
                };
                let want = probe.both.check(&r);
                let forbidden = ["a0", "a1"].contains(&p) && context != "{}";
                let granted = action != "z" && !forbidden;
                assert_eq!(want.0, granted, "{r:?}");
            }
        }
    }
}

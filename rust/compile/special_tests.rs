//! The specialiser against Cedar: policies that read `action` (folded at load for
//! each known action), mixed with context, principal and constant subterms, decided
//! by tether in every mode and by Cedar's `Authorizer`. The folds are exact only if
//! each one keeps Cedar's errors and short-circuits, so the generated conditions
//! put non-boolean and erroring operands exactly where a wrong fold shows.

use super::test_oracle::{Both, Req, Rng};

/// `send` and `read` carry attributes (`send` is in group `g`), `bare` has none.
const ENTS: &str = r#"[
    {"uid": {"type": "Action", "id": "g"}, "attrs": {}, "parents": []},
    {"uid": {"type": "Action", "id": "send"},
     "attrs": {"egress": true, "risk": 3, "name": "send", "tags": ["x", "y"]},
     "parents": [{"type": "Action", "id": "g"}]},
    {"uid": {"type": "Action", "id": "read"},
     "attrs": {"egress": false, "risk": 0, "name": "read", "tags": []}, "parents": []},
    {"uid": {"type": "Action", "id": "bare"}, "attrs": {}, "parents": []},
    {"uid": {"type": "User", "id": "alice"}, "attrs": {"level": 2},
     "parents": [{"type": "Group", "id": "staff"}]},
    {"uid": {"type": "User", "id": "bob"}, "attrs": {}, "parents": []},
    {"uid": {"type": "Group", "id": "staff"}, "attrs": {}, "parents": []},
    {"uid": {"type": "Doc", "id": "d"}, "attrs": {"level": 1},
     "parents": [{"type": "Folder", "id": "f"}]},
    {"uid": {"type": "Doc", "id": "e"}, "attrs": {}, "parents": []},
    {"uid": {"type": "Folder", "id": "f"}, "attrs": {}, "parents": []}
]"#;

const CONTEXTS: [&str; 4] = [
    "{}",
    r#"{"flag": true, "n": 3, "s": "x"}"#,
    r#"{"flag": false, "n": -1, "s": "send"}"#,
    r#"{"flag": 1, "n": "3", "s": true}"#,
];

const ACTIONS: [&str; 5] = ["send", "read", "bare", "g", "never-named"];
const PRINCIPALS: [(&str, &str); 3] = [("User", "alice"), ("User", "bob"), ("Group", "staff")];
const RESOURCES: [(&str, &str); 2] = [("Doc", "d"), ("Doc", "e")];

/// Every principal, action, resource and context; returns how many requests
/// Cedar allowed and how many had an erroring policy.
fn check_all(both: &Both) -> (usize, usize) {
    check_some(both, &PRINCIPALS, &ACTIONS, &CONTEXTS)
}

fn check_some(
    both: &Both,
    principals: &[(&'static str, &'static str)],
    actions: &[&'static str],
    contexts: &[&'static str],
) -> (usize, usize) {
    let (mut allowed, mut errored) = (0, 0);
    for &principal in principals {
        for &a in actions {
            for &resource in &RESOURCES {
                for &context in contexts {
                    let r = Req {
                        principal,
                        action: ("Action", a),
                        resource,
                        context,
                    };
                    let (ok, _, errors) = both.check(&r);
                    allowed += usize::from(ok);
                    errored += usize::from(!errors.is_empty());
                }
            }
        }
    }
    (allowed, errored)
}

/// A boolean-position term: mostly boolean, sometimes a long or string (a type
/// error where Cedar evaluates it, nothing where it short-circuits past it).
fn boolean(rng: &mut Rng, depth: u32) -> String {
    let leaf = [
        "true",
        "false",
        "action.egress",
        "context.flag",
        "action has egress",
        "context has flag",
        "action in Action::\"g\"",
        "action == Action::\"send\"",
        "action.tags.contains(\"x\")",
        "[\"send\", \"g\"].contains(action.name)",
        "action.tags.contains(context.s)",
        "action.risk",
        "context.n",
    ];
    if depth == 0 || rng.below(4) == 0 {
        return rng.pick(&leaf).to_string();
    }
    let d = depth - 1;
    match rng.below(8) {
        0 => format!("!({})", boolean(rng, d)),
        1 | 2 => format!("({} && {})", boolean(rng, d), boolean(rng, d)),
        3 | 4 => format!("({} || {})", boolean(rng, d), boolean(rng, d)),
        5 => format!(
            "(if {} then {} else {})",
            boolean(rng, d),
            boolean(rng, d),
            boolean(rng, d)
        ),
        6 => {
            let op = rng.pick(&["<", "<=", ">", ">=", "==", "!="]);
            format!("({} {op} {})", long(rng, d), long(rng, d))
        }
        // A short-circuit result used as a value: `(true && 3) == 3` is an error in
        // Cedar, so it must not fold to `3 == 3`.
        _ => format!("(({} && {}) == 3)", boolean(rng, d), long(rng, d)),
    }
}

fn long(rng: &mut Rng, depth: u32) -> String {
    let leaf = [
        "0",
        "3",
        "-2",
        "9223372036854775807",
        "action.risk",
        "context.n",
        "principal.level",
        "resource.level",
    ];
    if depth == 0 || rng.below(3) == 0 {
        return rng.pick(&leaf).to_string();
    }
    let d = depth - 1;
    match rng.below(5) {
        0 => format!("({} + {})", long(rng, d), long(rng, d)),
        1 => format!("({} - {})", long(rng, d), long(rng, d)),
        2 => format!("({} * {})", long(rng, d), long(rng, d)),
        3 => format!("(-{})", long(rng, d)),
        _ => format!(
            "(if {} then {} else {})",
            boolean(rng, d),
            long(rng, d),
            long(rng, d)
        ),
    }
}

fn policy(rng: &mut Rng) -> String {
    let effect = if rng.below(3) == 0 {
        "forbid"
    } else {
        "permit"
    };
    let principal = rng.pick(&[
        "principal",
        "principal",
        "principal == User::\"alice\"",
        "principal in Group::\"staff\"",
        "principal is User",
        "principal is User in Group::\"staff\"",
    ]);
    let action = rng.pick(&[
        "action",
        "action",
        "action == Action::\"send\"",
        "action in [Action::\"send\", Action::\"read\"]",
        "action in Action::\"g\"",
        "action == Action::\"bare\"",
    ]);
    let resource = rng.pick(&[
        "resource",
        "resource",
        "resource == Doc::\"d\"",
        "resource in Folder::\"f\"",
        "resource is Doc",
        "resource is Doc in Folder::\"f\"",
        "resource is Folder",
    ]);
    let mut text = format!("{effect} ({principal}, {action}, {resource})");
    for _ in 0..rng.below(3) {
        let kw = if rng.below(3) == 0 { "unless" } else { "when" };
        text += &format!(" {kw} {{ {} }}", boolean(rng, 3));
    }
    text + ";\n"
}

#[test]
fn generated_policies_reading_the_action_decide_as_cedar() {
    let mut rng = Rng(0x005e_ed0f_5bec_1a15);
    let (mut allowed, mut errored, mut requests) = (0, 0, 0);
    for _ in 0..30 {
        let text: String = (0..2 + rng.below(4)).map(|_| policy(&mut rng)).collect();
        let both = Both::new(&text, ENTS);
        let (a, e) = check_all(&both);
        allowed += a;
        errored += e;
        requests += PRINCIPALS.len() * ACTIONS.len() * RESOURCES.len() * CONTEXTS.len();
    }
    // The generator must exercise both outcomes and errors, not only denials.
    assert!(allowed * 10 > requests, "{allowed} of {requests} allowed");
    assert!(
        allowed * 10 < requests * 9,
        "{allowed} of {requests} allowed"
    );
    assert!(errored * 10 > requests, "{errored} of {requests} errored");
}

/// One permit with condition `cond`, one forbid with `unless { cond }`, checked on
/// every request; returns the permit's and the forbid's answer for `send` with the
/// full context.
fn check_cond(cond: &str) -> (bool, Vec<String>) {
    let text = format!(
        "@id(\"p\") permit (principal, action, resource) when {{ {cond} }};\n\
         @id(\"f\") forbid (principal == User::\"bob\", action, resource) unless {{ {cond} }};"
    );
    let both = Both::new(&text, ENTS);
    check_some(
        &both,
        &PRINCIPALS[..2],
        &["send", "read", "never-named"],
        &CONTEXTS[1..],
    );
    let (ok, _, errors) = both.check(&Req {
        principal: ("User", "alice"),
        action: ("Action", "send"),
        resource: ("Doc", "d"),
        context: CONTEXTS[1],
    });
    (ok, errors)
}

#[test]
fn short_circuits_fold_only_when_cedar_would_give_the_same_value() {
    // Each line: a condition, whether it holds for `send` with `CONTEXTS[1]`, and
    // whether it errors there. The literal operand comes from folding `action.*`.
    let cases: [(&str, bool, bool); 24] = [
        // Literal operands written in the policy, at the clause root.
        ("false && context.flag", false, false),
        ("true || context.n", true, false),
        ("true && context.flag", true, false),
        // The load-time evaluator binds no principal or context: a node with a
        // non-literal operand must never be evaluated there.
        ("principal == action", false, false),
        ("(context has flag) == action.egress", true, false),
        // Conditions no literal decides, in both polarities (`when` in the
        // permit, `unless` in the forbid): a policy that may apply is never
        // passed over as "cannot apply".
        ("context.flag && (context.n > 100 && false)", false, false),
        ("context.flag || (context.n > 100 && false)", true, false),
        ("!(context.flag && false)", true, false),
        ("(context.flag && false) || context.flag", true, false),
        ("!(context.n > 100 || !context.flag)", true, false),
        ("action.egress && context.flag", true, false),
        ("(action.egress && context.n) == 3", false, true),
        ("(context.n && action.egress) == 3", false, true),
        ("(!action.egress || context.n) == 3", false, true),
        ("(context.n || !action.egress) == 3", false, true),
        ("(action.egress || context.n) == true", true, false),
        ("(!action.egress && context.n) == false", true, false),
        ("(if action.egress then context.n else 0) == 3", true, false),
        (
            "(if !action.egress then 0 else context.n) == 3",
            true,
            false,
        ),
        ("(action.risk + 9223372036854775807) > 0", false, true),
        ("-(action.risk) == -3", true, false),
        ("action.missing || true", false, true),
        ("context.flag && action.egress", true, false),
        ("context.n > 2 && action.risk == 3", true, false),
    ];
    for (cond, holds, errors) in cases {
        let (ok, errs) = check_cond(cond);
        assert_eq!(ok, holds, "`{cond}` holds");
        assert_eq!(!errs.is_empty(), errors, "`{cond}` errors: {errs:?}");
    }
}

#[test]
fn comparisons_with_a_literal_keep_their_direction_and_bound() {
    // `CONTEXTS[1]`: n = 3, s = "x", flag = true; principal alice (level 2).
    let cases: [(&str, bool); 24] = [
        ("context.n > 3", false),
        ("context.n >= 3", true),
        ("context.n < 3", false),
        ("context.n <= 3", true),
        ("3 > context.n", false),
        ("3 >= context.n", true),
        ("3 < context.n", false),
        ("3 <= context.n", true),
        ("context.n > 2", true),
        ("4 > context.n", true),
        ("context.n == 3", true),
        ("3 == context.n", true),
        ("3 != context.n", false),
        ("\"x\" != context.s", false),
        ("context.s == \"y\"", false),
        ("[1, 3].contains(context.n)", true),
        ("[1, 2].contains(context.n)", false),
        ("[\"x\", \"z\"].contains(context.s)", true),
        ("[true].contains(context.flag)", true),
        ("[false].contains(context.flag)", false),
        ("[User::\"alice\"].contains(principal)", true),
        ("[User::\"bob\"].contains(principal)", false),
        ("[context.n, 4].contains(3)", true),
        ("action.tags.contains(\"y\")", true),
    ];
    for (cond, holds) in cases {
        let (ok, errs) = check_cond(cond);
        assert_eq!((ok, errs.is_empty()), (holds, true), "`{cond}`");
    }
}

/// The specialised clauses of `send`'s one candidate for `cond`.
fn send_clause_nodes(cond: &str) -> Vec<super::ir::Node> {
    let text = format!("permit (principal, action, resource) when {{ {cond} }};");
    let both = Both::new(&text, ENTS);
    let snap = both.core.current.load_full();
    let send = both.core.intern_uid("Action", "send").unwrap();
    let plan = &snap.plans.by_action[&send];
    let cand = &plan.rest.permits()[0];
    let mut out = Vec::new();
    let mut stack: Vec<u32> = cand.clauses.iter().map(|c| c.node).collect();
    while let Some(n) = stack.pop() {
        let node = &snap.plans.nodes[n as usize];
        node.for_each_child(|c| stack.push(c));
        out.push(node.clone());
    }
    out
}

#[test]
fn a_true_operand_from_the_action_folds_away_below_the_clause_root() {
    // `action.egress` is true for `send`: `(true && x)` is `x` whenever x is
    // boolean-valued, so no `&&` / `||` is left; a long stays (a type error).
    for x in [
        "!context.flag",
        "(context.flag && context.b)",
        "(context.flag || context.b)",
        "context.n != 1",
        "principal has level",
        "context.s like \"a*\"",
        "principal is User",
        "context has flag",
        "context.n == 1",
        "[1, 2].contains(context.n)",
        "context.set.contains(1)",
        "context.n > 1",
        "context.n < context.m",
        "context.n >= context.m",
        "principal in resource",
        "context.set.containsAll(context.set)",
        "context.set.containsAny(context.set)",
        "principal.hasTag(\"t\")",
    ] {
        for cond in [
            format!("!(action.egress && {x})"),
            format!("!({x} && action.egress)"),
            format!("!(!action.egress || {x})"),
            format!("!({x} || !action.egress)"),
        ] {
            let nodes = send_clause_nodes(&cond);
            let left = nodes
                .iter()
                .filter(|n| matches!(n, super::ir::Node::And(..) | super::ir::Node::Or(..)))
                .count();
            let inner = usize::from(x.contains("&&") || x.contains("||"));
            assert_eq!(left, inner, "`{cond}`: {nodes:?}");
        }
    }
    for cond in [
        "!(action.egress && context.n)",
        "!(context.n || !action.egress)",
    ] {
        let nodes = send_clause_nodes(cond);
        assert!(
            nodes
                .iter()
                .any(|n| matches!(n, super::ir::Node::And(..) | super::ir::Node::Or(..))),
            "`{cond}` must keep its type error: {nodes:?}"
        );
    }
}

#[test]
fn policies_are_filed_under_the_actions_their_scope_names() {
    let text = r#"
        @id("grp") permit (principal, action in Action::"g", resource);
        @id("list") forbid (principal == User::"bob", action in [Action::"read", Action::"bare"], resource);
        @id("one") permit (principal in Group::"staff", action == Action::"read", resource);
        @id("typed") permit (principal is User in Group::"staff", action == Action::"bare", resource);
    "#;
    let both = Both::new(text, ENTS);
    let (allowed, _) = check_all(&both);
    // grp: 3 principals x 4 contexts for send and g; one: alice, staff for read;
    // typed: alice for bare; each for both resources.
    assert_eq!(allowed, (3 * 4 * 2 + 2 * 4 + 4) * 2);
    for a in ["send", "read", "bare", "g"] {
        let r = Req {
            principal: ("User", "bob"),
            action: ("Action", a),
            resource: ("Doc", "d"),
            context: "{}",
        };
        assert!(both.planned(&r), "{a} is planned");
    }
}

#[test]
fn an_action_known_only_from_the_policies_is_planned_too() {
    // `Action::"solo"` is in no entity: its plan comes from the policy naming it.
    let text = r#"permit (principal, action == Action::"solo", resource) when { context.flag };"#;
    let both = Both::new(text, ENTS);
    let r = Req {
        principal: ("User", "alice"),
        action: ("Action", "solo"),
        resource: ("Doc", "d"),
        context: CONTEXTS[1],
    };
    assert!(both.planned(&r));
    assert!(both.check(&r).0);
}

#[test]
fn a_clause_that_folds_to_never_still_reports_an_earlier_error() {
    // For `read`, the second clause folds to false; the first still errors on
    // `context.n` being a string (Cedar evaluates clauses in order).
    let text = r#"
        @id("f") forbid (principal, action, resource)
            when { context.n > 0 } when { action.egress };
        @id("p") permit (principal, action, resource);
    "#;
    let both = Both::new(text, ENTS);
    check_all(&both);
    let r = Req {
        principal: ("User", "alice"),
        action: ("Action", "read"),
        resource: ("Doc", "d"),
        context: CONTEXTS[3],
    };
    assert_eq!(both.check(&r), (true, vec!["p".into()], vec!["f".into()]));
}

/// Policies the same for every action, too many to repeat into each action's plan
/// (`special::SHARE_ABOVE_COPIES`), are filed once in the shared plan: decisions,
/// reasons and errors must still be Cedar's, mixed with per-action policies.
#[test]
fn a_shared_plan_decides_as_cedar() {
    let n_actions = 300;
    let mut ents: Vec<String> = (0..n_actions)
        .map(|k| {
            format!(
                r#"{{"uid": {{"type": "Action", "id": "t{k}"}}, "attrs": {{"risk": {}}},
                    "parents": [{{"type": "Action", "id": "g"}}]}}"#,
                k % 4
            )
        })
        .collect();
    let base = ENTS.trim().trim_start_matches('[').trim_end_matches(']');
    ents.push(base.to_owned());
    let ents = format!("[{}]", ents.join(","));
    let mut rng = Rng(0x5ba7_ed00_c0ff_ee11);
    let shared_kinds = [
        r#"forbid (principal == User::"bob", action, resource) when { context.n > 5 };"#,
        r#"permit (principal in Group::"staff", action, resource is Doc) when { context.flag };"#,
        r#"permit (principal, action, resource) when { principal.level > resource.level };"#,
        r#"forbid (principal, action, resource in Folder::"f") unless { context.s == "x" };"#,
        r#"permit (principal == User::"bob", action, resource) when { context.n < 0 };"#,
    ];
    let mut text = String::new();
    for k in 0..400 {
        text.push_str(shared_kinds[rng.below(shared_kinds.len())]);
        if k % 40 == 0 {
            // Per-action policies between them, reading `action`.
            text.push_str(&format!(
                r#"permit (principal, action == Action::"t{}", resource) when {{ action.risk == {} }};"#,
                rng.below(n_actions),
                rng.below(4)
            ));
        }
        text.push('\n');
    }
    let both = Both::new(&text, &ents);
    let snap = both.core.current.load_full();
    assert!(!snap.plans.shared.is_empty(), "expected a shared plan");
    let actions: Vec<&'static str> = ["t0", "t7", "t150", "t299", "send", "read", "never-named"]
        .into_iter()
        .collect();
    let (allowed, errored) = check_some(&both, &PRINCIPALS, &actions, &CONTEXTS);
    let requests = PRINCIPALS.len() * actions.len() * RESOURCES.len() * CONTEXTS.len();
    assert!(allowed > 0 && allowed < requests, "{allowed} of {requests}");
    assert!(errored > 0, "no request had an erroring policy");
}

//! The evaluator's error cases, through the engine's public face: a snapshot built
//! from policy text and entities, a request evaluated, the decision and the
//! erroring policies (with their rendered messages) checked. Each error has a
//! benign twin that differs in the one thing that makes it an error, so a test
//! passes only if the error is raised exactly where Cedar raises it.

use crate::engine::{Core, Mode, OnError, ResolvedRequest};
use crate::eval::Locals;

/// The principal `User::"a"` with these attributes (JSON) and tags, plus the
/// entities in `more` (JSON objects, comma-separated).
fn entities(attrs: &str, tags: &str, more: &str) -> String {
    let sep = if more.is_empty() { "" } else { "," };
    format!(
        r#"[{{"uid": {{"type": "User", "id": "a"}}, "attrs": {attrs}, "parents": [], "tags": {tags}}}{sep}{more}]"#
    )
}

/// What the engine decided: allowed, the deciding policies' ids and the erroring
/// policies' ids with their messages (Full mode); the fast path must agree.
#[derive(Debug, PartialEq)]
struct Seen {
    allowed: bool,
    reasons: Vec<String>,
    errors: Vec<(String, String)>,
}

fn decide_with(policies: &str, ents: &str, on_error: OnError) -> Seen {
    let core = Core::new(policies, None, Some(ents), None, false, on_error, false)
        .unwrap_or_else(|e| panic!("policies load: {e}"));
    let principal = core.intern_uid("User", "a").unwrap();
    let action = core.intern_uid("Action", "go").unwrap();
    let resource = core.intern_uid("Thing", "t").unwrap();
    let snap = core.current.load();
    let req = ResolvedRequest {
        fields: Default::default(),
        principal,
        action,
        resource,
        context: None,
        locals: Locals::new(&snap.interner),
    };
    let full = snap.evaluate(&req, Mode::Full, on_error);
    let fast = snap.evaluate(&req, Mode::Fast, on_error);
    assert_eq!(full.allowed, fast.allowed, "fast and full modes disagree");
    let id = |i: u32| snap.set.policies[i as usize].id.clone();
    Seen {
        allowed: full.allowed,
        reasons: full.reasons.iter().map(|i| id(*i)).collect(),
        errors: full
            .errors
            .iter()
            .map(|(i, e)| (id(*i), e.render(&snap.interner, &req.locals)))
            .collect(),
    }
}

fn decide(policies: &str, ents: &str) -> Seen {
    decide_with(policies, ents, OnError::Skip)
}

/// One permit `p` whose condition is `cond`: either it errors with `message`, or
/// (the twin) it holds without error.
fn assert_errors(cond: &str, ents: &str, message: &str) {
    let policy = format!("@id(\"p\") permit (principal, action, resource) when {{ {cond} }};");
    let seen = decide(&policy, ents);
    assert_eq!(
        seen,
        Seen {
            allowed: false,
            reasons: vec![],
            errors: vec![("p".into(), message.into())],
        },
        "condition `{cond}`"
    );
}

fn assert_holds(cond: &str, ents: &str) {
    let policy = format!("@id(\"p\") permit (principal, action, resource) when {{ {cond} }};");
    let seen = decide(&policy, ents);
    assert_eq!(
        seen,
        Seen {
            allowed: true,
            reasons: vec!["p".into()],
            errors: vec![],
        },
        "condition `{cond}`"
    );
}

const MAX: i64 = i64::MAX;
const MIN: i64 = i64::MIN;

fn longs() -> String {
    entities(
        &format!(r#"{{"max": {MAX}, "min": {MIN}, "one": 1, "two": 2, "s": "x"}}"#),
        "{}",
        "",
    )
}

#[test]
fn arithmetic_overflow_is_an_error() {
    let e = longs();
    for cond in [
        "principal.max + principal.one > 0",
        "principal.min - principal.one < 0",
        "principal.max * principal.two > 0",
        "principal.min * -1 > 0",
        "-principal.min > 0",
        "principal.one - principal.min > 0",
    ] {
        assert_errors(cond, &e, "integer overflow");
    }
    // The twins: one step short of the edge.
    for cond in [
        "principal.max - principal.one + principal.one == principal.max",
        "principal.min + principal.one - principal.one == principal.min",
        "(principal.max - principal.one) * principal.one > 0",
        "-(principal.min + principal.one) == principal.max",
        "principal.min * principal.one == principal.min",
    ] {
        assert_holds(cond, &e);
    }
}

#[test]
fn wrong_operand_types_are_errors() {
    let e = longs();
    for (cond, message) in [
        (
            "principal.s + 1 > 0",
            "type error: expected long, got string",
        ),
        (
            "principal.one * principal.s > 0",
            "type error: expected long, got string",
        ),
        ("-principal.s > 0", "type error: expected long, got string"),
        ("principal.s < 3", "type error: expected long, got string"),
        (
            "principal.one && true",
            "type error: expected bool, got long",
        ),
        (
            "true && principal.one",
            "type error: expected bool, got long",
        ),
        (
            "false || principal.s",
            "type error: expected bool, got string",
        ),
        ("!principal.s", "type error: expected bool, got string"),
        (
            "if principal.one then true else false",
            "type error: expected bool, got long",
        ),
        (
            "principal.one like \"1\"",
            "type error: expected string, got long",
        ),
        (
            "principal.s.contains(1)",
            "type error: expected set, got string",
        ),
        (
            "[1].containsAll(principal.one)",
            "type error: expected set, got long",
        ),
        (
            "principal.one.isEmpty()",
            "type error: expected set, got long",
        ),
    ] {
        assert_errors(cond, &e, message);
    }
    // The right types, and short-circuits that never reach the wrong one.
    for cond in [
        "principal.one + 1 > 1",
        "principal.s like \"x\"",
        "false || true",
        "!(principal.one == principal.two)",
        "true || principal.s",
        "!(false && principal.s)",
        "if true then true else principal.s",
        "[1].containsAll([principal.one])",
        "principal.s == \"x\" && principal.one == 1",
    ] {
        assert_holds(cond, &e);
    }
}

#[test]
fn ordering_across_kinds_is_an_error() {
    let e = longs();
    // `==` never errors across types (it is false); ordering does.
    assert_holds("!(principal.s == principal.one)", &e);
    assert_errors(
        "principal.s <= principal.one",
        &e,
        "type error: expected long, got string",
    );
}

#[test]
fn missing_attributes_are_errors_unless_guarded_by_has() {
    let e = entities(r#"{"rec": {"x": 1}, "n": 1}"#, "{}", "");
    assert_errors("principal.nope == 1", &e, "attribute `nope` does not exist");
    assert_errors("principal.rec.y == 1", &e, "attribute `y` does not exist");
    assert_errors("context.x == 1", &e, "attribute `x` does not exist");
    assert_holds("!(principal has nope) && principal.rec.x == 1", &e);
    assert_holds("principal has rec.x && !(principal has rec.y)", &e);
    assert_holds("!(context has x)", &e);
    // `has` guards the access that follows it.
    let guarded = decide(
        r#"@id("p") permit (principal, action, resource) when { principal has nope && principal.nope == 1 };"#,
        &e,
    );
    assert_eq!((guarded.allowed, guarded.errors), (false, vec![]));
}

#[test]
fn has_on_a_value_that_is_not_a_record_is_an_error() {
    let e = entities(
        r#"{"n": 1, "s": "x", "set": [1], "rec": {"x": 1}}"#,
        "{}",
        "",
    );
    for (cond, got) in [
        ("principal.n has x", "long"),
        ("principal.s has x", "string"),
        ("principal.set has x", "set"),
    ] {
        assert_errors(
            cond,
            &e,
            &format!("type error: expected record or entity, got {got}"),
        );
        // Attribute access on the same values errors the same way.
        let access = cond.replace(" has x", ".x == 1");
        assert_errors(
            &access,
            &e,
            &format!("type error: expected record or entity, got {got}"),
        );
    }
    assert_holds("principal.rec has x", &e);
}

#[test]
fn entities_that_do_not_exist() {
    let e = entities(
        r#"{"friend": {"__entity": {"type": "User", "id": "ghost"}}}"#,
        "{}",
        "",
    );
    // Reading an attribute of an entity not in the store is an error...
    assert_errors(
        "User::\"ghost\".n == 1",
        &e,
        "entity `User::\"ghost\"` does not exist",
    );
    assert_errors(
        "principal.friend.n == 1",
        &e,
        "entity `User::\"ghost\"` does not exist",
    );
    assert_errors(
        "resource.n == 1",
        &e,
        "entity `Thing::\"t\"` does not exist",
    );
    // ...but comparing it, testing `has` on it, or `in` with it is not (as in Cedar).
    assert_holds("principal.friend == User::\"ghost\"", &e);
    assert_holds("!(User::\"ghost\" has n)", &e);
    assert_holds("!(User::\"ghost\" in principal) && !(resource has n)", &e);
}

#[test]
fn tags_that_do_not_exist() {
    let e = entities("{}", r#"{"team": "blue"}"#, "");
    assert_errors(
        "principal.getTag(\"owner\") == \"x\"",
        &e,
        "tag `owner` does not exist",
    );
    assert_holds("principal.getTag(\"team\") == \"blue\"", &e);
    assert_holds(
        "!principal.hasTag(\"owner\") && principal.hasTag(\"team\")",
        &e,
    );
    assert_errors(
        "User::\"ghost\".getTag(\"team\") == \"blue\"",
        &e,
        "entity `User::\"ghost\"` does not exist",
    );
}

#[test]
fn extension_errors() {
    let e = entities(
        r#"{"bad": "not a number", "good": "1.5", "addr": "10.0.0.1", "noaddr": "10.0.0.300"}"#,
        "{}",
        "",
    );
    for cond in [
        "decimal(principal.bad) == decimal(\"1.5\")",
        "ip(principal.noaddr).isIpv4()",
        "datetime(principal.bad) < datetime(\"2024-01-01\")",
        "duration(principal.bad) < duration(\"1h\")",
    ] {
        let seen = decide(
            &format!("@id(\"p\") permit (principal, action, resource) when {{ {cond} }};"),
            &e,
        );
        assert!(!seen.allowed, "{cond}");
        assert_eq!(seen.errors.len(), 1, "{cond}: {seen:?}");
        assert!(
            seen.errors[0].1.starts_with("extension error: "),
            "{cond}: {seen:?}"
        );
    }
    assert_holds("decimal(principal.good) == decimal(\"1.5\")", &e);
    assert_holds("ip(principal.addr).isIpv4()", &e);
    assert_holds("decimal(principal.good).lessThan(decimal(\"2.0\"))", &e);
    // A method of one extension type on another is a type error, not an extension one.
    let seen = decide(
        r#"@id("p") permit (principal, action, resource) when { decimal(principal.good).isIpv4() };"#,
        &e,
    );
    assert!(!seen.allowed && seen.errors.len() == 1, "{seen:?}");
}

#[test]
fn a_constant_call_that_fails_errors_at_evaluation_not_at_load() {
    let e = entities("{}", "{}", "");
    let seen = decide(
        r#"@id("p") permit (principal, action, resource) when { decimal("1.2.3") == decimal("1.0") };
           @id("q") permit (principal, action, resource) when { decimal("1.5") == decimal("1.50") };"#,
        &e,
    );
    assert!(seen.allowed);
    assert_eq!(seen.reasons, vec!["q".to_owned()]);
    assert_eq!(seen.errors.len(), 1);
    assert_eq!(seen.errors[0].0, "p");
    assert!(seen.errors[0].1.starts_with("extension error: "));
}

#[test]
fn in_and_is_with_non_entities() {
    let e = entities(r#"{"n": 1}"#, "{}", "");
    assert_errors(
        "principal.n in User::\"a\"",
        &e,
        "type error: expected entity, got long",
    );
    assert_errors(
        "principal in principal.n",
        &e,
        "type error: expected entity or set, got long",
    );
    assert_holds("principal in User::\"a\" && principal in [User::\"a\"]", &e);
}

/// Which policies error and what that does to the decision, under both `on_error`s.
#[test]
fn erroring_policies_skip_or_deny() {
    let e = longs();
    let policies = r#"
        @id("permit-ok") permit (principal, action, resource);
        @id("permit-err") permit (principal, action, resource) when { principal.max + 1 > 0 };
    "#;
    let skip = decide_with(policies, &e, OnError::Skip);
    assert_eq!(
        skip,
        Seen {
            allowed: true,
            reasons: vec!["permit-ok".into()],
            errors: vec![("permit-err".into(), "integer overflow".into())],
        }
    );
    let deny = decide_with(policies, &e, OnError::Deny);
    assert!(!deny.allowed, "{deny:?}");
    assert_eq!(deny.reasons, Vec::<String>::new());
    assert_eq!(
        deny.errors,
        vec![("permit-err".into(), "integer overflow".into())]
    );
    // An erroring forbid is skipped (Cedar): the permit decides; fail closed denies.
    let forbid = r#"
        @id("permit-ok") permit (principal, action, resource);
        @id("forbid-err") forbid (principal, action, resource) when { principal.nope };
    "#;
    let skip = decide_with(forbid, &e, OnError::Skip);
    assert!(skip.allowed);
    assert_eq!(
        skip.errors,
        vec![(
            "forbid-err".into(),
            "attribute `nope` does not exist".into()
        )]
    );
    assert!(!decide_with(forbid, &e, OnError::Deny).allowed);
    // The twin: no error anywhere, fail closed allows.
    let clean = r#"@id("permit-ok") permit (principal, action, resource);"#;
    assert!(decide_with(clean, &e, OnError::Deny).allowed);
}

#[test]
fn a_forbid_that_holds_wins_and_is_the_reason() {
    let e = longs();
    let seen = decide(
        r#"
        @id("permit-all") permit (principal, action, resource);
        @id("forbid-one") forbid (principal, action, resource) when { principal.one == 1 };
        @id("forbid-two") forbid (principal, action, resource) when { principal.one == 2 };
        "#,
        &e,
    );
    assert_eq!(
        seen,
        Seen {
            allowed: false,
            reasons: vec!["forbid-one".into()],
            errors: vec![],
        }
    );
}

#[test]
fn comparing_extension_values_of_different_types_names_the_unordered_one() {
    let e = entities(
        r#"{"d": "1.5", "t": "2024-01-01", "p": "10.0.0.1"}"#,
        "{}",
        "",
    );
    // The left operand cannot be ordered at all: it is the one named.
    assert_errors(
        "decimal(principal.d) < datetime(principal.t)",
        &e,
        "type error: expected long, datetime or duration of the same type, got decimal",
    );
    // The left one can (a datetime), so the right one is what is wrong.
    assert_errors(
        "datetime(principal.t) < ip(principal.p)",
        &e,
        "type error: expected long, datetime or duration of the same type, got ipaddr",
    );
    assert_holds("datetime(principal.t) < datetime(\"2024-01-02\")", &e);
}

/// Policy text that ends inside a string or right after a word is refused, never a panic.
#[test]
fn truncated_policy_text_is_an_error() {
    for text in [
        "permit (principal, action, resource) when { \"abc",
        "permit (principal, action, resource) when { \"abc\\",
        "permit",
        "permit (principal, action, resource) when { principal.x",
    ] {
        let r = Core::new(text, None, None, None, false, OnError::Skip, false);
        assert!(r.is_err(), "{text:?} loaded");
    }
}

#[test]
fn has_paths_count_towards_the_depth_bound() {
    let path = |n: usize| {
        (0..n)
            .map(|i| format!("a{i}"))
            .collect::<Vec<_>>()
            .join(".")
    };
    let load = |n: usize| {
        let text = format!(
            "permit (principal, action, resource) when {{ principal has {} }};",
            path(n)
        );
        Core::new(&text, None, None, None, false, OnError::Skip, false)
    };
    match load(1001) {
        Err(e) => assert!(
            e.to_string().contains("nested deeper than 1000 levels"),
            "{e}"
        ),
        Ok(_) => panic!("a 1,001-segment `has` path loaded"),
    }
    assert!(load(900).is_ok());
}

/// Decide with another request than the default one: `(type, id)` for each entity.
fn decide_request(policies: &str, ents: &str, p: (&str, &str), a: &str, r: (&str, &str)) -> bool {
    let core = Core::new(
        policies,
        None,
        Some(ents),
        None,
        false,
        OnError::Skip,
        false,
    )
    .unwrap();
    let principal = core.intern_uid(p.0, p.1).unwrap();
    let action = core.intern_uid("Action", a).unwrap();
    let resource = core.intern_uid(r.0, r.1).unwrap();
    let snap = core.current.load();
    let req = ResolvedRequest {
        fields: Default::default(),
        principal,
        action,
        resource,
        context: None,
        locals: Locals::new(&snap.interner),
    };
    let full = snap.evaluate(&req, Mode::Full, OnError::Skip);
    let fast = snap.evaluate(&req, Mode::Fast, OnError::Skip);
    assert_eq!(full.allowed, fast.allowed, "fast and full modes disagree");
    full.allowed
}

/// A scope, a request (principal, action id, resource) and whether the scope holds for it.
type Case<'a> = (
    &'a str,
    (&'a str, &'a str),
    &'a str,
    (&'a str, &'a str),
    bool,
);

/// Scope constraints decide who a policy applies to: each is checked with a request it
/// holds for and one it does not.
#[test]
fn scope_constraints_hold_only_for_what_they_name() {
    let ents = r#"[
        {"uid": {"type": "User", "id": "a"}, "attrs": {}, "parents": [{"type": "Group", "id": "g"}]},
        {"uid": {"type": "User", "id": "b"}, "attrs": {}, "parents": []},
        {"uid": {"type": "Group", "id": "g"}, "attrs": {}, "parents": []},
        {"uid": {"type": "Doc", "id": "d"}, "attrs": {}, "parents": [{"type": "Folder", "id": "f"}]},
        {"uid": {"type": "Doc", "id": "e"}, "attrs": {}, "parents": []}
    ]"#;
    let cases: [Case; 12] = [
        (
            "principal == User::\"a\", action, resource",
            ("User", "a"),
            "go",
            ("Doc", "d"),
            true,
        ),
        (
            "principal == User::\"a\", action, resource",
            ("User", "b"),
            "go",
            ("Doc", "d"),
            false,
        ),
        (
            "principal in Group::\"g\", action, resource",
            ("User", "a"),
            "go",
            ("Doc", "d"),
            true,
        ),
        (
            "principal in Group::\"g\", action, resource",
            ("User", "b"),
            "go",
            ("Doc", "d"),
            false,
        ),
        (
            "principal is User, action, resource",
            ("User", "b"),
            "go",
            ("Doc", "d"),
            true,
        ),
        (
            "principal is User, action, resource",
            ("Group", "g"),
            "go",
            ("Doc", "d"),
            false,
        ),
        (
            "principal, action == Action::\"go\", resource",
            ("User", "b"),
            "go",
            ("Doc", "d"),
            true,
        ),
        (
            "principal, action == Action::\"go\", resource",
            ("User", "b"),
            "stop",
            ("Doc", "d"),
            false,
        ),
        (
            "principal, action in [Action::\"x\", Action::\"go\"], resource",
            ("User", "b"),
            "go",
            ("Doc", "e"),
            true,
        ),
        (
            "principal, action in [Action::\"x\", Action::\"go\"], resource",
            ("User", "b"),
            "y",
            ("Doc", "e"),
            false,
        ),
        (
            "principal, action, resource is Doc in Folder::\"f\"",
            ("User", "b"),
            "go",
            ("Doc", "d"),
            true,
        ),
        (
            "principal, action, resource is Doc in Folder::\"f\"",
            ("User", "b"),
            "go",
            ("Doc", "e"),
            false,
        ),
    ];
    for (scope, p, a, r, want) in cases {
        let policy = format!("permit ({scope});");
        assert_eq!(
            decide_request(&policy, ents, p, a, r),
            want,
            "{scope} for {p:?} {a} {r:?}"
        );
        // The same scope on a forbid next to a permit-all flips the decision.
        let both = format!("permit (principal, action, resource); forbid ({scope});");
        assert_eq!(
            decide_request(&both, ents, p, a, r),
            !want,
            "forbid {scope}"
        );
    }
}

#[test]
fn datetime_order_and_methods() {
    let e = entities(r#"{"t": "2024-01-01T10:00:00Z"}"#, "{}", "");
    assert_holds("!(datetime(principal.t) < datetime(principal.t))", &e);
    assert_holds("datetime(principal.t) <= datetime(principal.t)", &e);
    assert_holds(
        "datetime(principal.t).toDate() == datetime(\"2024-01-01\")",
        &e,
    );
    assert_holds("datetime(principal.t).toTime() == duration(\"10h\")", &e);
}

/// Strings a request brings that the snapshot has never seen get request-local
/// symbols: two different strings must never share one (a context comparing them
/// would find them equal), and the same string must get the same one.
#[test]
fn request_local_strings_keep_distinct_symbols() {
    let interner = crate::value::Interner::default();
    let mut locals = Locals::new(&interner);
    let a = locals.sym(&interner, "first-unknown");
    let b = locals.sym(&interner, "second-unknown");
    let c = locals.sym(&interner, "third-unknown");
    assert!(a != b && b != c && a != c, "{a} {b} {c}");
    assert_eq!(locals.sym(&interner, "second-unknown"), b);
    assert_eq!(locals.sym(&interner, "first-unknown"), a);
    assert_eq!(locals.resolve(&interner, c), Some("third-unknown"));
    assert!(!locals.from_snapshot(a));
}

/// Extension values stored in entity attributes (read through Cedar's entity
/// parser) keep their kind: an address in range holds, its twin out of range does
/// not, and comparing it with a string is not equality.
#[test]
fn extension_values_in_entity_attributes_keep_their_kind() {
    let inside = entities(
        r#"{"addr": {"__extn": {"fn": "ip", "arg": "10.1.2.3"}}}"#,
        "{}",
        "",
    );
    let outside = entities(
        r#"{"addr": {"__extn": {"fn": "ip", "arg": "192.168.0.1"}}}"#,
        "{}",
        "",
    );
    assert_holds(r#"principal.addr.isInRange(ip("10.0.0.0/8"))"#, &inside);
    let policy = r#"@id("p") permit (principal, action, resource)
        when { principal.addr.isInRange(ip("10.0.0.0/8")) };"#;
    assert!(!decide(policy, &outside).allowed);
    assert_holds(r#"principal.addr != "10.1.2.3""#, &inside);
}

/// The comparison fast paths (`leaf_cmp`, the small-set scan) against Cedar: leaves
/// of every kind on each side (entity variables, attributes, context fields,
/// literals), mixed kinds, missing attributes and entities, small and large sets
/// holding several kinds, each policy alone so each error is Cedar's own.
#[test]
fn leaf_comparisons_and_set_scans_decide_as_cedar() {
    use crate::compile::test_oracle::{Both, Req};
    let ents = r#"[
        {"uid": {"type": "User", "id": "alice"},
         "attrs": {"level": 2, "name": "a", "tags": ["x", 1, true, {"__entity": {"type": "User", "id": "bob"}}],
                   "big": [0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,"x",false],
                   "hosts": ["h00","h01","h02","h03","h04","h05","h06","h07","h08","h09",
                             "h10","h11","h12","h13","h14","h15","h16","h17","h18","h19"]}, "parents": []},
        {"uid": {"type": "User", "id": "bob"}, "attrs": {"level": "2", "tags": [], "big": "no"}, "parents": []},
        {"uid": {"type": "Doc", "id": "d"},
         "attrs": {"owner": {"__entity": {"type": "User", "id": "alice"}}, "level": 3}, "parents": []},
        {"uid": {"type": "Doc", "id": "e"}, "attrs": {"owner": "alice", "level": 2}, "parents": []},
        {"uid": {"type": "Action", "id": "go"}, "attrs": {}, "parents": []}
    ]"#;
    let conds = [
        "resource.owner == principal",
        "principal == resource.owner",
        "resource.owner != principal",
        "principal.level < resource.level",
        "principal.level <= resource.level",
        "resource.level > principal.level",
        "resource.level >= principal.level",
        "principal.level == resource.level",
        "context.n < principal.level",
        "context.s == principal.name",
        "context.s <= 3",
        "principal.level == 2",
        "action == resource.owner",
        "principal.tags.contains(\"x\")",
        "principal.tags.contains(1)",
        "principal.tags.contains(true)",
        "principal.tags.contains(false)",
        "principal.tags.contains(User::\"bob\")",
        "principal.tags.contains(\"y\")",
        "principal.big.contains(17)",
        "principal.big.contains(\"x\")",
        "principal.big.contains(false)",
        "principal.big.contains(18)",
        "principal.big.contains(\"y\")",
        "principal.hosts.contains(\"h00\")",
        "principal.hosts.contains(\"h07\")",
        "principal.hosts.contains(\"h19\")",
        "principal.hosts.contains(\"h1\")",
        "principal.hosts.contains(\"zz\")",
        "principal.hosts.contains(7)",
        "principal.hosts.contains(context.s)",
    ];
    let contexts = [r#"{"n": 1, "s": "a"}"#, r#"{"n": "1", "s": 2}"#, "{}"];
    let mut decided = (0, 0);
    for c in conds {
        for effect in ["permit", "forbid"] {
            let text = format!(
                "{effect} (principal, action, resource) when {{ {c} }};\n\
                 permit (principal, action, resource) when {{ context has n }};"
            );
            let both = Both::new(&text, ents);
            for p in ["alice", "bob", "carol"] {
                for r in ["d", "e", "f"] {
                    for ctx in contexts {
                        let req = Req {
                            principal: ("User", p),
                            action: ("Action", "go"),
                            resource: ("Doc", r),
                            context: ctx,
                        };
                        let (ok, _, errors) = both.check(&req);
                        decided.0 += usize::from(ok);
                        decided.1 += usize::from(!errors.is_empty());
                    }
                }
            }
        }
    }
    // Both answers and errors occur, so neither side of a fast path goes untested.
    assert!(decided.0 > 100 && decided.1 > 100, "{decided:?}");
}

//! The compiler through its public functions: policy order and names, load errors
//! and where they point, the text guard's exact bounds, the expression depth bound,
//! extension functions (decided against Cedar), obligations and the facts a compiled
//! set carries for the engine.

use super::test_oracle::{Both, Req};
use super::{compile, guard, lower, parse, validate, CompiledSet};
use crate::error::{Location, TetherError};
use crate::value::Interner;

fn compiled(text: &str) -> Result<CompiledSet, TetherError> {
    let pset = parse(text)?;
    compile(text, &pset, &mut Interner::default())
}

/// The message and location of a policy error (panics on anything else).
fn policy_error(r: Result<impl std::fmt::Debug, TetherError>) -> (String, Location) {
    match r {
        Err(TetherError::Policy {
            message, location, ..
        }) => (message, *location),
        other => panic!("expected a policy error, got {other:?}"),
    }
}

/// Run `f` on a thread with the stack the bindings give a load (`with_big_stack`):
/// Cedar's own parser recurses on deep expressions.
fn big_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

fn at(line: usize, column: usize, policy: Option<&str>) -> Location {
    Location {
        policy_id: policy.map(str::to_owned),
        file: None,
        line: Some(line),
        column: Some(column),
    }
}

#[test]
fn policies_keep_cedars_natural_order() {
    let text: String = (0..12)
        .map(|i| format!("permit (principal == User::\"u{i}\", action, resource);\n"))
        .collect();
    let mut i = Interner::default();
    let set = compile(&text, &parse(&text).unwrap(), &mut i).unwrap();
    let ids: Vec<&str> = set.policies.iter().map(|p| p.id.as_str()).collect();
    let want: Vec<String> = (0..12).map(|i| format!("policy{i}")).collect();
    assert_eq!(ids, want);
    // The n-th policy is the one written n-th (its scope names u<n>).
    for (n, p) in set.policies.iter().enumerate() {
        let crate::compile::ir::EntityScope::Eq(u) = p.principal else {
            panic!("{p:?}")
        };
        assert_eq!(i.get(u.id), Some(format!("u{n}").as_str()));
    }
}

#[test]
fn annotated_names_are_used_and_sorted_after_cedars_own() {
    let text = r#"
        @id("zeta") permit (principal, action, resource);
        permit (principal, action, resource);
        @id("alpha") forbid (principal, action, resource);
    "#;
    let set = compiled(text).unwrap();
    let ids: Vec<&str> = set.policies.iter().map(|p| p.id.as_str()).collect();
    // Cedar's ids are policy0..2 in text order; the names are the annotations.
    assert_eq!(ids, ["zeta", "policy1", "alpha"]);
}

#[test]
fn two_policies_with_one_name_are_an_error_naming_both_places() {
    let text = "@id(\"a\") permit (principal, action, resource);\n\
                permit (principal, action, resource);\n  \
                @id(\"a\") forbid (principal, action, resource);";
    let (message, location) = policy_error(compiled(text));
    assert_eq!(
        message,
        "two policies are named `a`: at line 1, column 1 and at line 3, column 3 (a policy's \
         name is its @id annotation, or policyN without one; names must be unique)"
    );
    assert_eq!(location, at(3, 3, Some("a")));
}

#[test]
fn a_template_named_like_a_policy_is_an_error_at_the_template() {
    let text = "@id(\"t\") permit (principal, action, resource);\n\
                @id(\"t\") permit (principal == ?principal, action, resource);";
    let (message, location) = policy_error(compiled(text));
    assert!(message.starts_with("two policies are named `t` (one of them a template)"));
    assert_eq!(location, at(2, 1, Some("t")));
    // Two templates with one name, too.
    let text = "permit (principal, action, resource);\n\
                @id(\"t\") permit (principal == ?principal, action, resource);\n\
                @id(\"t\") permit (principal, action, resource in ?resource);";
    let (_, location) = policy_error(compiled(text));
    assert_eq!(location, at(3, 1, Some("t")));
    // Distinct names load.
    let text = "@id(\"p\") permit (principal, action, resource);\n\
                @id(\"t\") permit (principal == ?principal, action, resource);\n\
                @id(\"u\") permit (principal, action, resource in ?resource);";
    assert_eq!(compiled(text).unwrap().policies.len(), 1);
}

#[test]
fn a_parse_error_points_at_the_bad_token() {
    let text =
        "permit (principal, action, resource);\npermit (principal, action, resource) when { 1 + };";
    let (message, location) = policy_error(compiled(text));
    assert!(message.starts_with("cannot parse policies: "), "{message}");
    assert_eq!(location.line, Some(2));
    assert_eq!(location.policy_id, None);
}

#[test]
fn an_unsupported_construct_names_its_policy_and_place() {
    // An expression deeper than the evaluator's bound, in the second policy.
    let deep = format!("context{} == 1", ".a".repeat(1100));
    let text = format!(
        "permit (principal, action, resource);\n  @id(\"deep\") permit (principal, action, resource) when {{ {deep} }};"
    );
    match big_stack(move || compiled(&text)) {
        Err(TetherError::Policy {
            message,
            location,
            feature,
        }) => {
            let f = format!(
                "expressions nested deeper than {} levels",
                lower::MAX_EXPR_DEPTH
            );
            assert_eq!(
                message,
                format!("policy `deep` uses a Cedar feature tether does not support: {f}")
            );
            assert_eq!(feature.as_deref(), Some(f.as_str()));
            assert_eq!(*location, at(2, 3, Some("deep")));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_template_tether_cannot_lower_fails_at_load_at_the_template() {
    let deep = ".a".repeat(1100);
    let text = format!(
        "permit (principal, action, resource);\n@id(\"t\") permit (principal == ?principal, action, resource) when {{ context{deep} }};"
    );
    let (message, location) = policy_error(big_stack(move || compiled(&text)));
    assert!(
        message.starts_with("policy `t` uses a Cedar feature"),
        "{message}"
    );
    assert_eq!(location, at(2, 1, Some("t")));
}

#[test]
fn the_has_path_counts_towards_the_depth_bound_exactly() {
    // `context has a.a.a...`: the deepest accepted path, and one more.
    let path = |n: usize| vec!["a"; n].join(".");
    let text = |n: usize| {
        format!(
            "permit (principal, action, resource) when {{ context has {} }};",
            path(n)
        )
    };
    let deepest = (900..=lower::MAX_EXPR_DEPTH)
        .rev()
        .find(|n| compiled(&text(*n)).is_ok())
        .expect("some path loads");
    // The root expression and the `has` itself take a level each.
    assert_eq!(deepest, lower::MAX_EXPR_DEPTH - 1);
    for n in [deepest + 1, deepest + 2] {
        let (message, _) = policy_error(compiled(&text(n)));
        assert!(message.contains("nested deeper than"), "{n}: {message}");
    }
}

#[test]
fn the_expression_depth_bound_is_exact_and_wide_expressions_pass() {
    // `context.a.a...`: each `.a` one level below the root.
    let text = |n: usize| {
        format!(
            "permit (principal, action, resource) when {{ context{} }};",
            ".a".repeat(n)
        )
    };
    let results = big_stack(move || {
        (lower::MAX_EXPR_DEPTH - 2..=lower::MAX_EXPR_DEPTH + 1)
            .map(|n| (n, compiled(&text(n)).is_ok()))
            .collect::<Vec<_>>()
    });
    let m = lower::MAX_EXPR_DEPTH;
    assert_eq!(
        results,
        [(m - 2, true), (m - 1, true), (m, false), (m + 1, false)]
    );
    // Many siblings are not depth: a 3,000-element set and a long record.
    let items: Vec<String> = (0..3000).map(|i| i.to_string()).collect();
    let fields: Vec<String> = (0..1500).map(|i| format!("f{i}: {i}")).collect();
    let text = format!(
        "permit (principal, action, resource) when {{ [{}].contains(3) && {{{}}} has f1 }};",
        items.join(", "),
        fields.join(", ")
    );
    big_stack(move || compiled(&text)).unwrap();
}

#[test]
fn obligations_are_the_annotations_comma_separated_parts() {
    let text = r#"
        @obligation(" log , notify,, ") permit (principal, action, resource);
        @obligation("") permit (principal, action, resource);
        @other("x") permit (principal, action, resource);
    "#;
    let set = compiled(text).unwrap();
    assert_eq!(set.policies[0].obligations, ["log", "notify"]);
    assert!(set.policies[1].obligations.is_empty());
    assert!(set.policies[2].obligations.is_empty());
    assert_eq!(
        set.policies[2].annotations,
        [("other".to_owned(), "x".to_owned())]
    );
    assert!(set.has_obligations);
    let plain = compiled("@other(\"x\") permit (principal, action, resource);").unwrap();
    assert!(!plain.has_obligations);
    let empty = compiled("@obligation(\"\") permit (principal, action, resource);").unwrap();
    assert!(!empty.has_obligations);
}

#[test]
fn named_uids_are_every_scope_entity_once_sorted() {
    let text = r#"
        permit (principal == User::"a", action == Action::"x", resource in Folder::"f");
        permit (principal in Group::"g", action in [Action::"x", Action::"y"], resource is Doc in Folder::"f");
        permit (principal is User, action, resource == Doc::"d");
    "#;
    let mut i = Interner::default();
    let pset = parse(text).unwrap();
    let set = compile(text, &pset, &mut i).unwrap();
    let uid = |t: &str, d: &str| crate::value::Euid {
        ty: i.lookup(t).unwrap(),
        id: i.lookup(d).unwrap(),
    };
    let mut want = vec![
        uid("User", "a"),
        uid("Action", "x"),
        uid("Folder", "f"),
        uid("Group", "g"),
        uid("Action", "y"),
        uid("Doc", "d"),
    ];
    want.sort();
    assert_eq!(set.named_uids, want);
}

#[test]
fn max_height_is_the_deepest_clause() {
    let shallow = compiled("permit (principal, action, resource) when { context.a };").unwrap();
    let deep = compiled(
        "permit (principal, action, resource) when { context.a } unless { !!!context.b };",
    )
    .unwrap();
    let none = compiled("permit (principal, action, resource);").unwrap();
    assert_eq!(none.max_height, 0);
    assert!(shallow.max_height >= 1);
    assert_eq!(deep.max_height, shallow.max_height + 3);
}

#[test]
fn validation_errors_name_each_policy_and_place() {
    let schema = crate::engine::parse_schema(
        "entity User { level: Long }; entity Doc; action read appliesTo { principal: User, resource: Doc };",
    )
    .unwrap();
    let text = "@id(\"ok\") permit (principal, action == Action::\"read\", resource) when { principal.level > 1 };\n\
                @id(\"bad\") permit (principal, action == Action::\"read\", resource)\n  when { principal.levle > 1 };\n\
                permit (principal, action == Action::\"read\", resource) when { principal.level == \"x\" };";
    let pset = parse(text).unwrap();
    let (message, location) = policy_error(validate(&pset, &schema, text));
    assert!(
        message.starts_with("policies do not validate against the schema (2 errors): "),
        "{message}"
    );
    assert!(
        message.contains("policy `bad` at line 3, column "),
        "{message}"
    );
    assert!(
        message.contains("policy `policy2` at line 4, column "),
        "{message}"
    );
    assert!(location.policy_id.is_some());
    assert!(matches!(location.line, Some(3) | Some(4)), "{location:?}");
    // One error: singular.
    let one = "permit (principal, action == Action::\"read\", resource) when { principal.nope };";
    let pset = parse(one).unwrap();
    let (message, location) = policy_error(validate(&pset, &schema, one));
    assert!(message.starts_with("policies do not validate against the schema (1 error): policy `policy0` at line 1, column "), "{message}");
    assert_eq!(location.line, Some(1));
    assert_eq!(location.policy_id.as_deref(), Some("policy0"));
    // A valid set passes, with Cedar's warnings (none here).
    let good =
        "permit (principal, action == Action::\"read\", resource) when { principal.level > 1 };";
    let pset = parse(good).unwrap();
    assert_eq!(
        validate(&pset, &schema, good).unwrap(),
        Vec::<String>::new()
    );
}

#[test]
fn state_conditions_are_validated_with_their_name() {
    let schema = crate::engine::parse_schema(
        "entity User; entity Doc { sensitivity: Long }; action read appliesTo { principal: User, resource: Doc };",
    )
    .unwrap();
    let spec = |json: &str| -> crate::state::StateSpec { serde_json::from_str(json).unwrap() };
    let good = spec(
        r#"{"labels": {"secret": {"set_when": "resource.sensitivity > 2"}},
            "counters": {"reads": {"window_ms": 1000, "count_when": "action == Action::\"read\""}},
            "budgets": {"cost": {"add": "resource.sensitivity", "when": "true", "limit": 10}}}"#,
    );
    super::validate_state(&good, &schema).unwrap();
    for (json, what) in [
        (
            r#"{"labels": {"secret": {"set_when": "resource.sensitivty > 2"}}}"#,
            "state file, label `secret` (set_when): does not validate",
        ),
        (
            r#"{"counters": {"reads": {"window_ms": 1000, "count_when": "resource.nope"}}}"#,
            "state file, counter `reads` (count_when): does not validate",
        ),
        (
            r#"{"budgets": {"cost": {"add": "\"x\"", "limit": 10}}}"#,
            "state file, budget `cost` (add): does not validate",
        ),
        (
            r#"{"budgets": {"cost": {"add": "1", "when": "resource.nope", "limit": 10}}}"#,
            "state file, budget `cost` (when): does not validate",
        ),
        (
            r#"{"labels": {"secret": {"set_when": "resource.sensitivity >"}}}"#,
            "state file, label `secret` (set_when): ",
        ),
    ] {
        let (message, _) = policy_error(super::validate_state(&spec(json), &schema));
        assert!(message.starts_with(what), "{message}");
    }
}

#[test]
fn guard_bounds_are_exact() {
    let nested = |n: usize| {
        format!(
            "permit (principal, action, resource) when {{ {}true{} }};",
            "(".repeat(n - 1),
            ")".repeat(n - 1)
        )
    };
    // The `{` of `when` is one level.
    assert!(guard::check(&nested(guard::MAX_NESTING)).is_ok());
    let (message, location) = policy_error(guard::check(&nested(guard::MAX_NESTING + 1)));
    assert!(message.contains("nested deeper than 128"), "{message}");
    // At the bracket that went one level too deep.
    let col = "permit (principal, action, resource) when { ".len() + guard::MAX_NESTING;
    assert_eq!(location, at(1, col, None));
    // `context has a && ...`: each `has` and each `&&` is one operator.
    let ops = |n: usize| {
        let k = n.div_ceil(2);
        let mut body = vec!["context has a"; k].join(" && ");
        if n.is_multiple_of(2) {
            body += " && true";
        }
        format!("permit (principal, action, resource);\npermit (principal, action, resource) when {{ {body} }};")
    };
    assert!(guard::check(&ops(guard::MAX_OPERATORS)).is_ok());
    assert!(guard::check(&ops(guard::MAX_OPERATORS - 1)).is_ok());
    let (message, location) = policy_error(guard::check(&ops(guard::MAX_OPERATORS + 1)));
    assert!(message.contains("more than 4096 operators"), "{message}");
    // At the end of the previous policy (where the long one starts).
    assert_eq!(location, at(1, 38, None));
    // An identifier that merely contains a keyword is not an operator.
    let idents = vec!["context.has_x"; 2100].join(" == ");
    let text = format!("permit (principal, action, resource) when {{ {idents} }};");
    // 2,099 `==` and 2,100 `.`: over the bound only if `has_x` counted too.
    assert!(guard::check(&text).is_err());
    let idents = vec!["context.has_x"; 1400].join(" == ");
    let text = format!("permit (principal, action, resource) when {{ {idents} }};");
    assert!(guard::check(&text).is_ok());
}

#[test]
fn guard_bounds_the_text_size_exactly() {
    let fits = " ".repeat(guard::MAX_TEXT_BYTES);
    assert!(guard::check(&fits).is_ok());
    let (message, _) = policy_error(guard::check(&(fits + " ")));
    assert_eq!(
        message,
        format!(
            "policy text is {} bytes; at most {} are accepted",
            guard::MAX_TEXT_BYTES + 1,
            guard::MAX_TEXT_BYTES
        )
    );
}

#[test]
fn guard_counts_what_follows_a_string_and_does_not_reset_inside_brackets() {
    let deep = format!("{}true{}", "(".repeat(140), ")".repeat(140));
    // Strings of odd and even length, with and without escapes, then deep nesting.
    for s in ["", "a", "ab", "abc", "a\\\"b", "\\\\"] {
        let text = format!(
            "permit (principal, action, resource) when {{ context.a == \"{s}\" && {deep} }};"
        );
        assert!(guard::check(&text).is_err(), "{text}");
    }
    // A `;` inside brackets does not end a policy: its operators still add up.
    let half = vec!["context.a"; 1500].join(" && ");
    let text = format!("permit (principal, action, resource) when {{ {half}; {half} }};");
    assert!(guard::check(&text).is_err());
}

#[test]
fn guard_skips_comments_and_strings_and_survives_unterminated_ones() {
    let parens = "(".repeat(300);
    let text = format!("// {parens}\npermit (principal, action, resource) when {{ \"{parens}\\\"{parens}\" == \"\" }};");
    assert!(guard::check(&text).is_ok());
    // A lone `/` is not a comment: the brackets after it count.
    let text = format!("permit (principal, action, resource) / {parens}");
    assert!(guard::check(&text).is_err());
    // Text ending inside a comment, a string, an escape or an identifier.
    for text in ["permit \"abc", "permit \"abc\\", "permit", "x"] {
        assert!(guard::check(text).is_ok(), "{text}");
        assert!(parse(text).is_err(), "{text}");
    }
    assert!(guard::check("// comment").is_ok());
}

/// Every extension function and method tether lowers, decided against Cedar.
#[test]
fn extension_functions_decide_as_cedar() {
    let conds = [
        r#"decimal("1.50").lessThan(decimal("2.0"))"#,
        r#"decimal("1.50").lessThanOrEqual(decimal("1.5"))"#,
        r#"decimal("1.50").greaterThan(decimal("1.4999"))"#,
        r#"decimal("1.50").greaterThanOrEqual(decimal("1.5"))"#,
        r#"decimal("2.50").greaterThanOrEqual(decimal("3.5"))"#,
        r#"ip("10.0.0.1").isInRange(ip("10.0.0.0/8"))"#,
        r#"ip("10.0.0.1").isIpv4()"#,
        r#"ip("::1").isIpv6()"#,
        r#"ip("127.0.0.1").isLoopback()"#,
        r#"ip("224.0.0.1").isMulticast()"#,
        r#"datetime("2024-10-15T11:38:02Z").toDate() == datetime("2024-10-15")"#,
        r#"datetime("2024-10-15T11:38:02Z").toTime() == duration("11h38m2s")"#,
        r#"datetime("2024-10-15").offset(duration("1d")) == datetime("2024-10-16")"#,
        r#"datetime("2024-10-16").durationSince(datetime("2024-10-15")) == duration("1d")"#,
        r#"duration("1500ms").toMilliseconds() == 1500"#,
        r#"duration("90s").toSeconds() == 90"#,
        r#"duration("2h").toMinutes() == 120"#,
        r#"duration("3d").toHours() == 72"#,
        r#"duration("49h").toDays() == 2"#,
        r#"context.d.toSeconds() == 1"#,
        r#"decimal(context.s).lessThan(decimal("1.0"))"#,
    ];
    let ents = r#"[{"uid": {"type": "User", "id": "u"}, "attrs": {}, "parents": []}]"#;
    for cond in conds {
        let text = format!("@id(\"p\") permit (principal, action, resource) when {{ {cond} }};");
        let both = Both::new(&text, ents);
        let r = Req {
            principal: ("User", "u"),
            action: ("Action", "a"),
            resource: ("User", "u"),
            context: r#"{"s": "0.5"}"#,
        };
        let answer = both.check(&r);
        // Only the conditions reading a missing `context.d` are not allowed.
        let false_one = cond.contains("2.50") || cond.contains("context.d");
        assert_eq!(answer.0, !false_one, "{cond}");
    }
}

#[test]
fn links_go_after_the_static_policies_in_id_order() {
    let text = r#"
        permit (principal == User::"s", action, resource);
        @id("t") permit (principal == ?principal, action, resource);
    "#;
    let mut i = Interner::default();
    let mut pset = parse(text).unwrap();
    let set = compile(text, &pset, &mut i).unwrap();
    let mut added = Vec::new();
    for id in ["m", "b", "z", "m2"] {
        let vals = [(
            cedar_policy::SlotId::principal(),
            cedar_policy::EntityUid::from_type_name_and_id(
                "User".parse().unwrap(),
                cedar_policy::EntityId::new(id),
            ),
        )]
        .into_iter()
        .collect();
        pset.link(
            cedar_policy::PolicyId::new("policy1"),
            cedar_policy::PolicyId::new(id),
            vals,
        )
        .unwrap();
        added.push(cedar_policy::PolicyId::new(id));
    }
    let links: Vec<&cedar_policy::Policy> =
        added.iter().map(|id| pset.policy(id).unwrap()).collect();
    let next = super::with_links(&set, 1, &links, &mut i).unwrap();
    let ids: Vec<&str> = next.policies.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["policy0", "b", "m", "m2", "z"]);
    // The same as a full compile of the linked set.
    let full = compile(text, &pset, &mut i).unwrap();
    let full_ids: Vec<&str> = full.policies.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, full_ids);
    assert_eq!(next.unlinked, 0);
    // Unlinking one keeps the others and counts the dead nodes.
    let less = super::without_policy(&next, "m");
    let ids: Vec<&str> = less.policies.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["policy0", "b", "m2", "z"]);
    assert_eq!(less.unlinked, 1);
    assert_eq!(super::without_policy(&less, "z").unlinked, 2);
    // The linked principals are named uids (requests may name them by text).
    assert_eq!(next.named_uids.len(), 5);
    assert_eq!(less.named_uids.len(), 4);
}

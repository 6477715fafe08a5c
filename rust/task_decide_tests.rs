//! Task decisions through `Snapshot::authorize_task`: budgets checked and reserved
//! on the whole chain or not at all, counters and labels committed only by a
//! permit, and the denial kinds (deadline, scope, revoked, obligation, policy,
//! error, monitor) with their messages. Each limit is tested at its edge: the last
//! request it lets through, then the first it stops.

use std::sync::Arc;

use crate::engine::{Core, OnError, ResolvedRequest};
use crate::eval::Locals;
use crate::state::{Limits, TaskInit, TaskSlot};
use crate::task_decide::{record_denial, DenyKind, TaskOutcome};
use crate::value::Euid;

const POLICIES: &str = r#"
    @id("use") permit (principal, action == Action::"use", resource);
    @id("read") permit (principal, action == Action::"read", resource);
    @id("read-limit") forbid (principal, action == Action::"read", resource)
        when { context.task.counters.reads >= 2 };
    @id("no-send-when-tainted") forbid (principal, action == Action::"send", resource)
        when { context.task.labels.contains("tainted") };
    @id("send") permit (principal, action == Action::"send", resource);
    @id("deploy") @obligation("approval")
        permit (principal, action == Action::"deploy", resource);
    @id("boss-only") forbid (principal == Agent::"worker", action == Action::"fire", resource);
    @id("fire") permit (principal, action == Action::"fire", resource);
    @id("broken") permit (principal, action == Action::"break", resource)
        when { resource.nope == 1 };
    @id("ranked") permit (principal, action == Action::"rank", resource)
        when { principal.rank > 1 };
"#;

const STATE: &str = r#"{
    "labels": {"tainted": {"set_when": "resource has secret && resource.secret"}},
    "counters": {"reads": {"window_ms": 1000, "count_when": "action == Action::\"read\""}},
    "budgets": {"cost": {"add": "resource.cost", "limit": 5, "when": "action == Action::\"use\""}}
}"#;

const ENTITIES: &str = r#"[
    {"uid": {"type": "Thing", "id": "one"}, "attrs": {"cost": 1}, "parents": []},
    {"uid": {"type": "Thing", "id": "two"}, "attrs": {"cost": 2}, "parents": []},
    {"uid": {"type": "Thing", "id": "minus"}, "attrs": {"cost": -1}, "parents": []},
    {"uid": {"type": "Thing", "id": "word"}, "attrs": {"cost": "x"}, "parents": []},
    {"uid": {"type": "Thing", "id": "secret"}, "attrs": {"cost": 0, "secret": true}, "parents": []},
    {"uid": {"type": "Thing", "id": "plain"}, "attrs": {"cost": 0, "secret": false}, "parents": []},
    {"uid": {"type": "Agent", "id": "ranked"}, "attrs": {"rank": 2}, "parents": []}
]"#;

struct World {
    core: Core,
}

impl World {
    fn new() -> Self {
        let core = Core::new(
            POLICIES,
            None,
            Some(ENTITIES),
            Some(STATE),
            false,
            OnError::Skip,
            false,
        )
        .unwrap();
        World { core }
    }

    fn uid(&self, ty: &str, id: &str) -> Euid {
        self.core.intern_uid(ty, id).unwrap()
    }

    fn open(
        &self,
        id: u64,
        agent: &str,
        parent: Option<&Arc<TaskSlot>>,
        opts: Opts,
    ) -> Arc<TaskSlot> {
        let snap = self.core.current.load();
        let st = snap.set.state.as_ref().unwrap();
        let windows: Vec<u64> = st.counters.iter().map(|c| c.1).collect();
        let init = TaskInit {
            id,
            agent: self.uid("Agent", agent),
            scope: opts
                .scope
                .map(|s| s.iter().map(|a| self.uid("Action", a)).collect()),
            deadline_ms: opts.deadline_ms,
            limits: opts.limits,
            on_error: opts.on_error,
            intent: self.uid("Agent", "intent").id,
            memory: None,
            labels: 0,
        };
        Arc::new(TaskSlot::new(init, parent.cloned(), &windows, st.budgets.len()).unwrap())
    }

    fn decide_at(
        &self,
        slot: &TaskSlot,
        action: &str,
        thing: &str,
        now_ms: u64,
        approved: &[String],
    ) -> TaskOutcome {
        let action = self.uid("Action", action);
        let resource = self.uid("Thing", thing);
        let snap = self.core.current.load();
        let mut req = ResolvedRequest {
            fields: Default::default(),
            principal: slot.agent,
            action,
            resource,
            context: None,
            locals: Locals::new(&snap.interner),
        };
        snap.authorize_task(slot, &mut req, true, OnError::Skip, now_ms, approved)
    }

    /// A root task of agent `a` with `limits` and nothing else set.
    fn open_limited(&self, id: u64, limits: Limits) -> Arc<TaskSlot> {
        self.open(
            id,
            "a",
            None,
            Opts {
                limits,
                ..Opts::default()
            },
        )
    }

    fn decide(&self, slot: &TaskSlot, action: &str, thing: &str) -> TaskOutcome {
        self.decide_at(slot, action, thing, 10, &[])
    }
}

#[derive(Default)]
struct Opts {
    scope: Option<&'static [&'static str]>,
    deadline_ms: Option<u64>,
    limits: Limits,
    on_error: Option<OnError>,
}

fn allowed(o: &TaskOutcome) -> bool {
    o.outcome.allowed && o.kind.is_none() && o.message.is_none()
}

fn spent(slot: &TaskSlot) -> i64 {
    slot.lock().spent[0]
}

#[test]
fn budget_is_checked_then_reserved_up_to_its_limit() {
    let w = World::new();
    let t = w.open(1, "a", None, Opts::default());
    assert!(allowed(&w.decide(&t, "use", "two")));
    assert!(allowed(&w.decide(&t, "use", "two")));
    assert_eq!(spent(&t), 4);
    let over = w.decide(&t, "use", "two");
    assert!(!over.outcome.allowed);
    assert_eq!(over.kind, Some(DenyKind::Budget));
    assert_eq!(
        over.message.as_deref(),
        Some("budget `cost` exhausted: spent 4 + 2 would exceed limit 5")
    );
    assert!(over.outcome.reasons.is_empty());
    assert_eq!(spent(&t), 4, "a refused spend reserves nothing");
    assert_eq!(over.revoked_now, None, "revoking on exhaustion is off here");
    // The limit itself is reachable: 4 + 1 == 5.
    assert!(allowed(&w.decide(&t, "use", "one")));
    assert_eq!(spent(&t), 5);
    assert_eq!(w.decide(&t, "use", "one").kind, Some(DenyKind::Budget));
    // Actions the budget's `when` does not cover spend nothing and pass.
    assert!(allowed(&w.decide(&t, "read", "two")));
    assert_eq!(spent(&t), 5);
}

#[test]
fn budget_exhaustion_revokes_when_asked() {
    let w = World::new();
    let limits = Limits {
        revoke_on_budget_exhausted: true,
        ..Limits::default()
    };
    let t = w.open_limited(1, limits);
    for _ in 0..5 {
        assert!(allowed(&w.decide(&t, "use", "one")));
    }
    let over = w.decide(&t, "use", "one");
    let msg = "budget `cost` exhausted: spent 5 + 1 would exceed limit 5";
    assert_eq!(over.kind, Some(DenyKind::Budget));
    assert_eq!(over.revoked_now.as_deref(), Some(msg));
    let after = w.decide(&t, "read", "one");
    assert_eq!(after.kind, Some(DenyKind::Revoked));
    assert_eq!(after.message, Some(format!("task revoked: {msg}")));
}

#[test]
fn bad_budget_amounts_fail_closed() {
    let w = World::new();
    let t = w.open(1, "a", None, Opts::default());
    let neg = w.decide(&t, "use", "minus");
    assert!(!neg.outcome.allowed);
    assert_eq!(neg.kind, Some(DenyKind::Error));
    assert_eq!(
        neg.message.as_deref(),
        Some("state: budget `cost` amount -1 is negative")
    );
    let word = w.decide(&t, "use", "word");
    assert_eq!(word.kind, Some(DenyKind::Error));
    assert_eq!(
        word.message.as_deref(),
        Some("state: budget `cost` amount is a string, not a long")
    );
    assert_eq!(spent(&t), 0);
    // An amount that errors (no such entity) names the budget too.
    let ghost = w.decide(&t, "use", "ghost");
    assert_eq!(ghost.kind, Some(DenyKind::Error));
    assert!(ghost
        .message
        .as_deref()
        .is_some_and(|m| m.starts_with("state: budget `cost` amount: ")));
    assert!(allowed(&w.decide(&t, "use", "one")));
}

#[test]
fn a_child_spends_from_every_ancestor_or_not_at_all() {
    let w = World::new();
    let root = w.open(1, "a", None, Opts::default());
    let child = w.open(2, "b", Some(&root), Opts::default());
    let grandchild = w.open(3, "c", Some(&child), Opts::default());
    assert!(allowed(&w.decide(&root, "use", "two")));
    assert!(allowed(&w.decide(&grandchild, "use", "two")));
    assert_eq!((spent(&root), spent(&child), spent(&grandchild)), (4, 2, 2));
    // The grandchild has 3 left of its own, but the root only 1.
    let over = w.decide(&grandchild, "use", "two");
    assert_eq!(over.kind, Some(DenyKind::Budget));
    assert_eq!(
        over.message.as_deref(),
        Some("budget `cost` of ancestor task 1 exhausted: spent 4 + 2 would exceed limit 5")
    );
    assert_eq!((spent(&root), spent(&child), spent(&grandchild)), (4, 2, 2));
    assert!(allowed(&w.decide(&grandchild, "use", "one")));
    assert_eq!((spent(&root), spent(&child), spent(&grandchild)), (5, 3, 3));
}

#[test]
fn counters_count_permits_within_their_window() {
    let w = World::new();
    let t = w.open(1, "a", None, Opts::default());
    // `read-limit` forbids a third read within the 1 s window (16 buckets of 62 ms).
    assert!(allowed(&w.decide_at(&t, "read", "one", 0, &[])));
    assert!(allowed(&w.decide_at(&t, "use", "one", 100, &[]))); // not counted
    assert!(allowed(&w.decide_at(&t, "read", "one", 500, &[])));
    let third = w.decide_at(&t, "read", "one", 900, &[]);
    assert!(!third.outcome.allowed);
    assert_eq!(third.kind, Some(DenyKind::Policy));
    assert_eq!(third.outcome.reasons.len(), 1);
    // A denial is not counted: once the first read leaves the window, one more fits.
    assert!(allowed(&w.decide_at(&t, "read", "one", 1100, &[])));
    assert!(!w.decide_at(&t, "read", "one", 1101, &[]).outcome.allowed);
    assert_eq!(t.lock().counters[0].count(1101), 2);
}

#[test]
fn labels_are_set_by_permits_and_flow_up_the_chain() {
    let w = World::new();
    let root = w.open(1, "a", None, Opts::default());
    let child = w.open(2, "b", Some(&root), Opts::default());
    let sibling = w.open(3, "c", Some(&root), Opts::default());
    assert!(allowed(&w.decide(&child, "send", "one")));
    assert!(allowed(&w.decide(&child, "read", "plain")));
    assert!(
        allowed(&w.decide(&child, "send", "one")),
        "a plain read taints nothing"
    );
    assert!(allowed(&w.decide(&child, "read", "secret")));
    let sent = w.decide(&child, "send", "one");
    assert_eq!(sent.kind, Some(DenyKind::Policy));
    // The parent now holds the taint; a sibling does not, but acts for the parent,
    // which may no longer send.
    assert_eq!(w.decide(&root, "send", "one").kind, Some(DenyKind::Policy));
    assert!(sibling.lock().labels == 0);
    let out = w.decide(&sibling, "send", "one");
    assert_eq!(out.kind, Some(DenyKind::Policy));
    assert_eq!(
        out.message.as_deref(),
        Some("delegation: ancestor `a` (task 1) is not permitted this action")
    );
}

#[test]
fn a_denied_read_taints_nothing() {
    let w = World::new();
    let t = w.open(1, "a", None, Opts::default());
    // Two reads fill the counter; the third (of the secret) is forbidden...
    assert!(allowed(&w.decide(&t, "read", "one")));
    assert!(allowed(&w.decide(&t, "read", "one")));
    assert!(!w.decide(&t, "read", "secret").outcome.allowed);
    // ...so it set no label.
    assert!(allowed(&w.decide(&t, "send", "one")));
}

#[test]
fn deadline_is_the_last_instant_of_a_task() {
    let w = World::new();
    let opts = Opts {
        deadline_ms: Some(1000),
        ..Opts::default()
    };
    let t = w.open(1, "a", None, opts);
    assert!(allowed(&w.decide_at(&t, "use", "one", 999, &[])));
    let late = w.decide_at(&t, "use", "one", 1000, &[]);
    assert_eq!(late.kind, Some(DenyKind::Deadline));
    assert_eq!(
        late.message.as_deref(),
        Some("task revoked: deadline passed")
    );
    assert_eq!(late.revoked_now.as_deref(), Some("deadline passed"));
    assert_eq!(spent(&t), 1);
    let after = w.decide_at(&t, "use", "one", 10, &[]);
    assert_eq!(after.kind, Some(DenyKind::Revoked));
}

#[test]
fn scope_violations_revoke_and_name_whose_scope() {
    let w = World::new();
    let scope: &'static [&'static str] = &["use", "read"];
    let root = w.open(
        1,
        "a",
        None,
        Opts {
            scope: Some(scope),
            ..Opts::default()
        },
    );
    let child = w.open(2, "b", Some(&root), Opts::default());
    assert!(allowed(&w.decide(&child, "use", "one")));
    let out = w.decide(&child, "send", "one");
    assert_eq!(out.kind, Some(DenyKind::Scope));
    assert_eq!(
        out.message.as_deref(),
        Some("task revoked: scope violation: action `send` is outside ancestor task 1's scope")
    );
    assert_eq!(w.decide(&child, "use", "one").kind, Some(DenyKind::Revoked));
    // The violation was the child's: the root lives on (its monitors are off here).
    assert!(allowed(&w.decide(&root, "use", "one")));
    let own = w.decide(&root, "send", "one");
    assert_eq!(
        own.message.as_deref(),
        Some("task revoked: scope violation: action `send` is outside the task's scope")
    );
}

#[test]
fn revocation_is_seen_by_every_descendant() {
    let w = World::new();
    let root = w.open(1, "a", None, Opts::default());
    let child = w.open(2, "b", Some(&root), Opts::default());
    assert!(root.revoke("operator"));
    assert!(!root.revoke("again"), "the first reason sticks");
    let own = w.decide(&root, "use", "one");
    assert_eq!(own.kind, Some(DenyKind::Revoked));
    assert_eq!(own.message.as_deref(), Some("task revoked: operator"));
    assert_eq!(own.revoked_now, None, "not this decision's doing");
    let theirs = w.decide(&child, "use", "one");
    assert_eq!(
        theirs.message.as_deref(),
        Some("task revoked: ancestor task 1 revoked: operator")
    );
    assert_eq!(spent(&root), 0);
}

#[test]
fn obligations_hold_the_permit_until_approved() {
    let w = World::new();
    let t = w.open(1, "a", None, Opts::default());
    let first = w.decide(&t, "deploy", "one");
    assert!(!first.outcome.allowed);
    assert_eq!(first.kind, Some(DenyKind::Obligation));
    assert_eq!(first.obligations, vec!["approval".to_owned()]);
    assert_eq!(first.message.as_deref(), Some("requires approval"));
    let other = w.decide_at(&t, "deploy", "one", 10, &["something else".to_owned()]);
    assert_eq!(other.kind, Some(DenyKind::Obligation));
    let approved = w.decide_at(&t, "deploy", "one", 10, &["approval".to_owned()]);
    assert!(allowed(&approved));
    assert_eq!(approved.outcome.reasons.len(), 1);
}

#[test]
fn a_child_may_not_do_what_an_ancestor_may_not() {
    let w = World::new();
    let boss = w.open(1, "boss", None, Opts::default());
    assert!(allowed(&w.decide(&boss, "fire", "one")));
    let worker = w.open(2, "worker", None, Opts::default());
    let boss_under_worker = w.open(3, "boss", Some(&worker), Opts::default());
    let out = w.decide(&boss_under_worker, "fire", "one");
    assert_eq!(out.kind, Some(DenyKind::Policy));
    assert_eq!(
        out.message.as_deref(),
        Some("delegation: ancestor `worker` (task 2) is not permitted this action")
    );
    assert!(out.outcome.reasons.is_empty());
    let worker_under_boss = w.open(4, "worker", Some(&boss), Opts::default());
    assert_eq!(
        w.decide(&worker_under_boss, "fire", "one").kind,
        Some(DenyKind::Policy)
    );
    assert!(allowed(&w.decide(
        &w.open(5, "boss", Some(&boss), Opts::default()),
        "fire",
        "one"
    )));
}

#[test]
fn evaluation_errors_deny_as_errors_only_when_failing_closed() {
    let w = World::new();
    let skip = w.open(1, "a", None, Opts::default());
    let out = w.decide(&skip, "break", "one");
    assert_eq!(out.kind, Some(DenyKind::Policy));
    assert_eq!(out.outcome.errors.len(), 1);
    let closed = w.open(
        2,
        "a",
        None,
        Opts {
            on_error: Some(OnError::Deny),
            ..Opts::default()
        },
    );
    let out = w.decide(&closed, "break", "one");
    assert_eq!(out.kind, Some(DenyKind::Error));
    assert_eq!(out.outcome.errors.len(), 1);
    assert!(allowed(&w.decide(&closed, "use", "one")));
}

#[test]
fn deny_streak_counts_the_whole_tree_and_resets_on_a_permit() {
    let w = World::new();
    let limits = Limits {
        max_deny_streak: 3,
        ..Limits::default()
    };
    let root = w.open_limited(1, limits);
    let child = w.open(2, "b", Some(&root), Opts::default());
    assert!(!w.decide(&root, "nothing", "one").outcome.allowed);
    assert!(!w.decide(&child, "nothing", "one").outcome.allowed);
    assert!(allowed(&w.decide(&root, "use", "one"))); // resets the streak
    assert!(!w.decide(&child, "nothing", "one").outcome.allowed);
    assert!(!w.decide(&root, "nothing", "one").outcome.allowed);
    assert_eq!(root.lock().revoked, None);
    let third = w.decide(&child, "nothing", "one");
    assert_eq!(third.kind, Some(DenyKind::Policy), "the child's own denial");
    assert_eq!(
        root.lock().revoked.as_deref(),
        Some("monitor: 3 denials in a row"),
        "the root keeps its own reason"
    );
    assert_eq!(
        third.revoked_now.as_deref(),
        Some("ancestor task 1 revoked: monitor: 3 denials in a row")
    );
    assert_eq!(
        w.decide(&child, "use", "one").message.as_deref(),
        Some("task revoked: ancestor task 1 revoked: monitor: 3 denials in a row")
    );
    // A refused approval counts as a denial too, on a fresh tree.
    let t = w.open_limited(3, limits);
    assert_eq!(record_denial(&t), None);
    assert_eq!(record_denial(&t), None);
    assert_eq!(
        record_denial(&t).as_deref(),
        Some("monitor: 3 denials in a row")
    );
    assert_eq!(record_denial(&t), None, "already revoked: nothing new");
}

#[test]
fn rate_monitor_counts_decisions_in_its_window() {
    let w = World::new();
    let limits = Limits {
        max_rate: 2,
        rate_window_ms: 100,
        ..Limits::default()
    };
    let t = w.open_limited(1, limits);
    assert!(allowed(&w.decide_at(&t, "use", "one", 0, &[])));
    assert!(allowed(&w.decide_at(&t, "use", "one", 99, &[])));
    assert!(
        allowed(&w.decide_at(&t, "use", "one", 100, &[])),
        "the first left the window"
    );
    let spike = w.decide_at(&t, "use", "one", 150, &[]);
    assert_eq!(spike.kind, Some(DenyKind::Monitor));
    assert_eq!(
        spike.revoked_now.as_deref(),
        Some("monitor: rate spike (3 decisions within 100 ms, limit 2)")
    );
    assert_eq!(spent(&t), 3);
}

#[test]
fn deny_ratio_counts_the_share_of_denials_once_enough_were_denied() {
    let w = World::new();
    let limits = Limits {
        max_deny_ratio: 0.5,
        min_denials: 3,
        ..Limits::default()
    };
    let t = w.open_limited(1, limits);
    assert!(allowed(&w.decide(&t, "use", "one")));
    assert!(!w.decide(&t, "nothing", "one").outcome.allowed);
    assert!(!w.decide(&t, "nothing", "one").outcome.allowed);
    assert_eq!(t.lock().revoked, None, "two denials: under the minimum");
    let third = w.decide(&t, "nothing", "one");
    assert_eq!(third.kind, Some(DenyKind::Monitor));
    assert_eq!(
        third.revoked_now.as_deref(),
        Some("monitor: deny ratio 0.75 (3 of 4 decisions denied, limit 0.50)")
    );
    // The benign twin: as many permits as denials never exceeds one half.
    let u = w.open_limited(2, limits);
    for _ in 0..4 {
        assert!(allowed(&w.decide(&u, "use", "one")));
        assert!(!w.decide(&u, "nothing", "one").outcome.allowed);
    }
    assert_eq!(u.lock().revoked, None);
}

#[test]
fn an_ancestor_whose_policy_errors_is_a_policy_denial_unless_failing_closed() {
    let w = World::new();
    // `Agent::"ranked"` has a rank; the root's agent is not in the store, so reading
    // its rank errors: the root is not permitted, so neither is the child.
    for (on_error, kind) in [
        (None, DenyKind::Policy),
        (Some(OnError::Deny), DenyKind::Error),
    ] {
        let opts = || Opts {
            on_error,
            ..Opts::default()
        };
        let root = w.open(1, "unranked", None, opts());
        let child = w.open(2, "ranked", Some(&root), opts());
        let out = w.decide(&child, "rank", "one");
        assert_eq!(out.kind, Some(kind));
        assert_eq!(
            out.message.as_deref(),
            Some("delegation: ancestor `unranked` (task 1) is not permitted this action")
        );
        let alone = w.open(3, "ranked", None, opts());
        assert!(allowed(&w.decide(&alone, "rank", "one")));
    }
}

/// An agent-scoped label a permit sets is kept for the bindings to share beyond
/// this engine (`unshared_agent_labels` of the deciding task); a task-scoped label,
/// the benign twin, is not.
#[test]
fn agent_scoped_labels_wait_to_be_shared_task_scoped_ones_do_not() {
    let state = r#"{
        "labels": {
            "tainted": {"set_when": "resource has secret && resource.secret"},
            "saw-secret": {"set_when": "resource has secret && resource.secret", "scope": "agent"},
            "saw-cost": {"set_when": "resource has cost && resource.cost == 2"}
        }
    }"#;
    let core = Core::new(
        POLICIES,
        None,
        Some(ENTITIES),
        Some(state),
        false,
        OnError::Skip,
        false,
    )
    .unwrap();
    let w = World { core };
    let root = w.open(1, "a", None, Opts::default());
    let child = w.open(2, "b", Some(&root), Opts::default());
    assert!(allowed(&w.decide(&child, "read", "two")));
    assert!(child.lock().labels != 0, "the task-scoped label is set");
    assert_eq!(child.lock().unshared_agent_labels, 0);
    assert!(allowed(&w.decide(&child, "read", "secret")));
    let agent_bits = child.lock().unshared_agent_labels;
    assert_eq!(
        agent_bits.count_ones(),
        1,
        "only `saw-secret`: {agent_bits:b}"
    );
    // The label itself flowed up to the parent as well.
    assert_eq!(agent_bits & root.lock().labels, agent_bits);
}

//! Rust-side decision latency, without Python: `cargo bench --bench engine_bench`.
//!
//! The same synthetic workload shape as `benches/workload.py` (per-agent grants over
//! dataset groups plus a few broad forbids), at 100, 1,000 and 10,000 policies.

use std::fmt::Write;

use tether_core::engine::{Core, Mode, OnError, ResolvedRequest};
use tether_core::eval::Locals;
use tether_core::value::{Euid, Record, Value};

fn main() {
    divan::main();
}

fn workload(n: usize) -> (String, String) {
    let agents = (n / 4).max(5);
    let datasets = (n / 8).max(5);
    let groups = (datasets / 10).max(2);
    let mut pol = String::new();
    for i in 0..n.min(10) {
        let _ = writeln!(
            pol,
            "forbid (principal, action == Action::\"act{}\", resource is Dataset) when {{ context.risk > 8 }};",
            i % 20
        );
    }
    for i in 0..n.saturating_sub(10) {
        let _ = writeln!(
            pol,
            "permit (principal == Agent::\"a{}\", action == Action::\"act{}\", resource in Group::\"g{}\") \
             when {{ resource.sensitivity <= principal.clearance && context.risk < 8 }};",
            (i * 7) % agents,
            (i * 3) % 20,
            (i * 5) % groups
        );
    }
    let mut ents = vec![];
    for g in 0..groups {
        ents.push(format!(
            r#"{{"uid":{{"type":"Group","id":"g{g}"}},"attrs":{{}},"parents":[]}}"#
        ));
    }
    for d in 0..datasets {
        ents.push(format!(
            r#"{{"uid":{{"type":"Dataset","id":"d{d}"}},"attrs":{{"sensitivity":{}}},"parents":[{{"type":"Group","id":"g{}"}}]}}"#,
            d % 5,
            d % groups
        ));
    }
    for a in 0..agents {
        ents.push(format!(
            r#"{{"uid":{{"type":"Agent","id":"a{a}"}},"attrs":{{"clearance":{}}},"parents":[]}}"#,
            a % 5
        ));
    }
    (pol, format!("[{}]", ents.join(",")))
}

#[divan::bench(args = [100, 1000, 10000], sample_count = 200, sample_size = 200)]
fn evaluate(bencher: divan::Bencher, n: usize) {
    let (pol, ents) = workload(n);
    let core =
        Core::new(&pol, None, Some(&ents), None, false, OnError::Skip, true).expect("builds");
    let snap = core.current.load_full();
    let sym = |s: &str| snap.interner.lookup(s).expect("interned");
    let risk = sym("risk");
    let reqs: Vec<ResolvedRequest> = (0..64)
        .map(|i| ResolvedRequest {
            fields: Default::default(),
            principal: Euid {
                ty: sym("Agent"),
                id: sym(&format!("a{}", (i * 7) % (n / 4).max(5))),
            },
            action: Euid {
                ty: sym("Action"),
                id: sym(&format!("act{}", (i * 3) % 20)),
            },
            resource: Euid {
                ty: sym("Dataset"),
                id: sym(&format!("d{}", i % (n / 8).max(5))),
            },
            context: Some(Value::Record(std::sync::Arc::new(Record::from_unsorted(
                vec![(risk, Value::Long(i as i64 % 10))],
            )))),
            locals: Locals::new(&snap.interner),
        })
        .collect();
    let mut i = 0usize;
    bencher.bench_local(|| {
        i = (i + 1) % reqs.len();
        snap.evaluate(&reqs[i], Mode::Fast, OnError::Skip).allowed
    });
}

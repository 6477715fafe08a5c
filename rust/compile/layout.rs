//! The plans' nodes laid out in the order requests walk them.
//!
//! Specialising leaves a candidate's clause nodes wherever they were made: the
//! policy set's own nodes in policy order, rewritten ones appended action by
//! action. With thousands of policies a request then reads one cache line per
//! node from all over a multi-megabyte array. Relaid, the nodes of each plan's
//! buckets follow one another (each subtree children first, as the other passes
//! expect), shared subtrees stay single, and nodes no plan reaches are dropped.

use crate::compile::ir::{Node, NodeId};
use crate::compile::special::{map_children, ActionPlan};

const UNPLACED: NodeId = NodeId::MAX;

/// Relay `nodes` for `plans` (walked in the order given) and renumber the
/// candidates' clauses to match.
pub(crate) fn relayout<'p>(
    nodes: Vec<Node>,
    plans: impl IntoIterator<Item = &'p mut ActionPlan>,
) -> Vec<Node> {
    let mut placer = Placer {
        at: vec![UNPLACED; nodes.len()],
        out: Vec::with_capacity(nodes.len()),
        nodes,
        stack: Vec::new(),
        kids: Vec::new(),
    };
    for plan in plans {
        let buckets = std::iter::once(&mut plan.rest)
            .chain(plan.eq.values_mut())
            .chain(plan.within.values_mut());
        for b in buckets {
            for cand in b.all_mut() {
                for cl in cand.clauses.iter_mut() {
                    cl.node = placer.place(cl.node);
                }
            }
        }
    }
    placer.out
}

/// The old nodes, where each was placed (`at`), the new array, and the walk's
/// reused buffers.
struct Placer {
    nodes: Vec<Node>,
    at: Vec<NodeId>,
    out: Vec<Node>,
    stack: Vec<(NodeId, bool)>,
    kids: Vec<NodeId>,
}

impl Placer {
    /// Place `root`'s subtree (children before parents, first child first) and
    /// return its new id. Iterative: trees may be deep.
    fn place(&mut self, root: NodeId) -> NodeId {
        self.stack.push((root, false));
        while let Some((n, expanded)) = self.stack.pop() {
            if self.at[n as usize] != UNPLACED {
                continue;
            }
            let node = &self.nodes[n as usize];
            if expanded {
                let at = &self.at;
                let moved = map_children(node, |c| at[c as usize]);
                self.at[n as usize] = self.out.len() as NodeId;
                self.out.push(moved);
            } else {
                self.stack.push((n, true));
                self.kids.clear();
                node.for_each_child(|c| self.kids.push(c));
                self.stack
                    .extend(self.kids.iter().rev().map(|&c| (c, false)));
            }
        }
        self.at[root as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::ir::{Clause, Effect, EntityScope, Node};
    use crate::compile::special::Cand;
    use crate::value::{Euid, Value};

    fn cand(node: NodeId) -> Cand {
        Cand {
            policy: 0,
            principal: EntityScope::Any,
            resource: EntityScope::Any,
            clauses: [Clause {
                node,
                unless: false,
            }]
            .into_iter()
            .collect(),
            never: false,
        }
    }

    /// The node's own kind and payload, children left out.
    fn shape(n: &Node) -> String {
        format!("{:?}", map_children(n, |_| 0))
    }

    /// Whether `a` in `xs` and `b` in `ys` are the same tree.
    fn same(xs: &[Node], a: NodeId, ys: &[Node], b: NodeId) -> bool {
        let (x, y) = (&xs[a as usize], &ys[b as usize]);
        let (mut ka, mut kb) = (Vec::new(), Vec::new());
        x.for_each_child(|c| ka.push(c));
        y.for_each_child(|c| kb.push(c));
        shape(x) == shape(y)
            && ka.len() == kb.len()
            && ka.iter().zip(&kb).all(|(&p, &q)| same(xs, p, ys, q))
    }

    #[test]
    fn relaid_plans_keep_their_trees_children_first_and_drop_the_rest() {
        let nodes = vec![
            Node::Lit(Value::Bool(true)), // 0: reached by nothing
            Node::CtxAttr(7),             // 1
            Node::EqLit(1, Value::Long(3), false),
            Node::Lit(Value::Long(9)), // 3: reached by nothing
            Node::Not(2),
            Node::And(4, 2), // 5: shares 2 with the permit below
            Node::PrincipalAttr(8),
            Node::Or(6, 1), // 7: shares 1
        ];
        let mut a = ActionPlan::default();
        a.rest.push(cand(5), Effect::Forbid);
        let u = Euid { ty: 1, id: 2 };
        a.eq.entry(u).or_default().push(cand(2), Effect::Permit);
        let mut b = ActionPlan::default();
        b.within.entry(u).or_default().push(cand(7), Effect::Permit);
        let before = [5, 2, 7];
        let out = relayout(nodes.clone(), [&mut a, &mut b]);
        let after = [
            a.rest.forbids()[0].clauses[0].node,
            a.eq[&u].permits()[0].clauses[0].node,
            b.within[&u].permits()[0].clauses[0].node,
        ];
        for (x, y) in before.iter().zip(after) {
            assert!(
                same(&nodes, *x, &out, y),
                "clause {x} moved to {y} changed its tree"
            );
        }
        // Shared subtrees placed once; the two unreached literals dropped.
        assert_eq!(out.len(), nodes.len() - 2);
        for (i, n) in out.iter().enumerate() {
            n.for_each_child(|c| assert!((c as usize) < i, "node {i} has a later child {c}"));
        }
        // The first plan's nodes come first, in the order its buckets are walked.
        assert_eq!(after[0] as usize, 3, "{out:?}");
    }
}

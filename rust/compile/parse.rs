//! Policy text -> Cedar's policy set and the syntax trees we compile, from one parse.
//!
//! `PolicySet::from_str` and a second parse for the lossless syntax trees (PSTs) were
//! most of a large set's load. Here the text is parsed into Cedar's concrete syntax
//! tree once, and both Cedar's AST (what validation, linking and templates use, with
//! the same source locations) and the PSTs are built from it. A large text is cut at
//! policy boundaries into one piece per core, parsed in parallel, and the pieces are
//! joined in order with the ids Cedar would give them (`policyN` by position).
//! Whenever anything fails, the text goes through `PolicySet::from_str` itself, so
//! every error is exactly Cedar's.

use std::str::FromStr;

use cedar_policy::PolicySet;
use cedar_policy_core::ast;
use cedar_policy_core::parser::{cst, text_to_cst, Node};

use super::{guard, location_of};
use crate::error::{first_offset, render_diag, TetherError};

/// The PST of every static policy, by Cedar's policy id. A policy whose PST cannot
/// be built maps to its error (the compiler reports it, naming the policy); one
/// missing from the map is asked of Cedar (`Policy::to_pst`, which parses again).
pub type Psts = rustc_hash::FxHashMap<
    String,
    Result<cedar_policy::pst::Policy, cedar_policy::pst::PstConstructionError>,
>;

type Cst = Node<Option<cst::Policies>>;

/// Stack of each parsing thread: Cedar's conversions recurse on nesting, which
/// `guard::check` bounds; the same size as the compiler thread's.
const PARSE_THREAD_STACK: usize = 512 << 20;
/// Below this size a text is parsed whole: threads would cost more than they save.
const SPLIT_MIN_BYTES: usize = 1 << 20;
/// At most this many pieces (each one is a thread and a copy of the text).
const MAX_PIECES: usize = 8;

/// Cedar's policy set, as `PolicySet::from_str` gives it.
pub fn parse(text: &str) -> Result<PolicySet, TetherError> {
    guard::check(text)?;
    PolicySet::from_str(text).map_err(|e| parse_error(text, &e))
}

fn parse_error(text: &str, e: &cedar_policy::ParseErrors) -> TetherError {
    TetherError::Policy {
        message: format!("cannot parse policies: {}", render_diag(e)),
        location: Box::new(location_of(text, first_offset(e), None)),
        feature: None,
    }
}

/// Cedar's policy set and the PST of each static policy, from one parse of `text`.
pub fn parse_with_psts(text: &str) -> Result<(PolicySet, Psts), TetherError> {
    guard::check(text)?;
    parse_in_pieces(text, pieces_for(text.len()))
}

fn parse_in_pieces(text: &str, pieces: usize) -> Result<(PolicySet, Psts), TetherError> {
    let pieces = piece_bounds(text, pieces);
    let ran: Vec<Option<Option<Piece>>> = std::thread::scope(|s| {
        let handles: Vec<_> = pieces
            .iter()
            .map(|&(start, end, first)| {
                std::thread::Builder::new()
                    .stack_size(PARSE_THREAD_STACK)
                    .spawn_scoped(s, move || parse_piece(text, start, end, first))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.ok().and_then(|h| h.join().ok()))
            .collect()
    });
    // A thread that could not start (a tight address-space limit) or did not finish:
    // one parse of the whole text on this thread instead.
    let Some(parsed) = ran.into_iter().collect::<Option<Vec<Option<Piece>>>>() else {
        return parse_whole(text);
    };
    // A piece that does not parse: the text has an error, which Cedar's own parser
    // reports as Cedar words it.
    let Some(parsed) = parsed.into_iter().collect::<Option<Vec<Piece>>>() else {
        return cedars_own(text);
    };
    match join(text, parsed) {
        Some(out) => Ok(out),
        // The pieces were not cut where policies end (a text the scan reads
        // differently from Cedar's lexer): parse it whole.
        None => parse_whole(text),
    }
}

fn parse_whole(text: &str) -> Result<(PolicySet, Psts), TetherError> {
    match parse_piece(text, 0, text.len(), 0).and_then(|p| join(text, vec![p])) {
        Some(out) => Ok(out),
        None => cedars_own(text),
    }
}

/// `PolicySet::from_str`: its error, or, should it accept what the pieces did not, its
/// set with no PSTs (the compiler then asks Cedar for each policy's: slower, as exact).
fn cedars_own(text: &str) -> Result<(PolicySet, Psts), TetherError> {
    parse(text).map(|pset| (pset, Psts::default()))
}

/// One piece's share: its items in text order (policy or template, with its span)
/// and its PSTs.
struct Piece {
    /// The position (so the `policyN` id) of its first policy in the whole text.
    first: usize,
    items: Vec<(Item, usize, usize)>,
    psts: Vec<Option<Result<cedar_policy::pst::Policy, cedar_policy::pst::PstConstructionError>>>,
}

enum Item {
    Static(ast::StaticPolicy),
    Template(ast::Template),
}

/// Parse `text[start..end]` as if it were in place: the text before it is blanked
/// (newlines kept), so Cedar's source locations are offsets and lines in `text`.
fn parse_piece(text: &str, start: usize, end: usize, first: usize) -> Option<Piece> {
    let own;
    let src = if start == 0 {
        &text[..end]
    } else {
        // One ASCII byte per byte blanked, so offsets after it are unchanged.
        let mut s = String::with_capacity(end);
        s.extend(
            text.as_bytes()[..start]
                .iter()
                .map(|&b| if b == b'\n' { '\n' } else { ' ' }),
        );
        s.push_str(&text[start..end]);
        own = s;
        own.as_str()
    };
    let cst: Cst = text_to_cst::parse_policies(src).ok()?;
    // Taken apart policy by policy, each one's concrete tree dropped once converted:
    // the trees of a large text are several times its own size.
    let nodes = cst.node?.0;
    let mut items = Vec::with_capacity(nodes.len());
    let mut psts = Vec::with_capacity(nodes.len());
    for (k, mut node) in nodes.into_iter().enumerate() {
        let id = ast::PolicyID::from_string(format!("policy{}", first + k));
        let item = node
            .to_policy_or_template(id)
            .ok()?
            .either(Item::Static, Item::Template);
        let (lo, hi) = node.loc.as_ref().map_or((0, 0), |l| (l.start(), l.end()));
        psts.push(match item {
            Item::Static(_) => node.node.take().and_then(pst_of),
            Item::Template(_) => None,
        });
        items.push((item, lo, hi));
    }
    Some(Piece { first, items, psts })
}

fn pst_of(
    policy: cst::Policy,
) -> Option<Result<cedar_policy::pst::Policy, cedar_policy::pst::PstConstructionError>> {
    let est: cedar_policy_core::est::Policy = policy.try_into().ok()?;
    Some(
        cedar_policy::pst::Template::try_from(est)
            .and_then(|t| cedar_policy::pst::StaticPolicy::try_from(t).map_err(Into::into))
            .map(cedar_policy::pst::Policy::Static),
    )
}

/// The pieces joined in order; None when a piece's first policy is not where the
/// pieces before it end (its ids would be wrong).
fn join(text: &str, pieces: Vec<Piece>) -> Option<(PolicySet, Psts)> {
    let mut ast_set = ast::PolicySet::new();
    let mut psts = Psts::default();
    let mut templates = Vec::new();
    let mut n = 0usize;
    for piece in pieces {
        if piece.first != n {
            return None;
        }
        for ((item, lo, hi), pst) in piece.items.into_iter().zip(piece.psts) {
            let id = format!("policy{n}");
            n += 1;
            match item {
                Item::Static(p) => {
                    ast_set.add_static(p).ok()?;
                    if let Some(pst) = pst {
                        psts.insert(id, pst);
                    }
                }
                Item::Template(t) => {
                    ast_set.add_template(t).ok()?;
                    templates.push((id, lo, hi));
                }
            }
        }
    }
    let mut pset = PolicySet::from(ast_set);
    keep_template_text(text, &templates, &mut pset)?;
    Some((pset, psts))
}

/// A set built from Cedar's AST keeps each template as an EST derived from the AST,
/// not from its text as `PolicySet::from_str` does, and links take their syntax from
/// it. Each template (there are few) is parsed again from its own text, so links are
/// built exactly as `from_str` builds them.
fn keep_template_text(
    text: &str,
    templates: &[(String, usize, usize)],
    pset: &mut PolicySet,
) -> Option<()> {
    for (id, lo, hi) in templates {
        let id = cedar_policy::PolicyId::new(id);
        let t = cedar_policy::Template::parse(Some(id.clone()), text.get(*lo..*hi)?).ok()?;
        pset.remove_template(id).ok()?;
        pset.add_template(t).ok()?;
    }
    Some(())
}

/// The PSTs of `text` alone (a recompile of a text already known to parse).
pub fn static_psts(text: &str) -> Psts {
    match parse_with_psts(text) {
        Ok((_, psts)) => psts,
        Err(_) => Psts::default(),
    }
}

fn pieces_for(len: usize) -> usize {
    if len < SPLIT_MIN_BYTES {
        return 1;
    }
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_PIECES)
}

/// `pieces` spans covering `text` (start, end, index of its first policy), cut
/// just after a top-level `;` (outside strings, comments and brackets: the end of a
/// policy), each about the same size.
fn piece_bounds(text: &str, pieces: usize) -> Vec<(usize, usize, usize)> {
    if pieces <= 1 {
        return vec![(0, text.len(), 0)];
    }
    let ends = guard::policy_ends(text);
    let mut out = Vec::with_capacity(pieces);
    let (mut start, mut first) = (0, 0);
    for k in 1..pieces {
        let want = text.len() * k / pieces;
        let cut = ends.partition_point(|&e| e < want);
        if let Some(&e) = ends.get(cut).filter(|&&e| e > start && e < text.len()) {
            out.push((start, e, first));
            (start, first) = (e, cut + 1);
        }
    }
    out.push((start, text.len(), first));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Policies with `;` in strings and comments, multi-byte text, annotations,
    /// templates and a trailing comment: the cuts must fall only where policies end.
    fn tricky_text(n: usize) -> String {
        let mut t = String::new();
        for i in 0..n {
            match i % 5 {
                0 => t.push_str(&format!(
                    "// policy {i}; a comment; with \"quotes;\n\
                     @id(\"p{i}\") permit (principal == User::\"ü{i};\", action, resource)\n\
                     when {{ context.s == \"a;b\\\";c\" }};\n"
                )),
                1 => t.push_str(&format!(
                    "forbid (principal, action == Action::\"a{i}\", resource) \
                     unless {{ [1, {{x: \";\"}}].contains({i}) }};\n"
                )),
                2 => t.push_str(&format!(
                    "permit (principal == ?principal, action, resource in Folder::\"f{i}\");\n"
                )),
                _ => t.push_str(&format!(
                    "permit (principal, action, resource) when {{ context.n > {i} }};\n"
                )),
            }
        }
        t.push_str("// the end; nothing after\n");
        t
    }

    fn policy_ids(p: &PolicySet) -> Vec<String> {
        let mut v: Vec<String> = p
            .policies()
            .map(|p| p.id().to_string())
            .chain(p.templates().map(|t| format!("template {}", t.id())))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn pieces_give_cedars_own_policy_set() {
        let text = tricky_text(200);
        let cedar = PolicySet::from_str(&text).unwrap();
        for pieces in [1, 2, 3, 7] {
            let (ours, psts) = parse_in_pieces(&text, pieces).unwrap();
            assert_eq!(policy_ids(&ours), policy_ids(&cedar), "{pieces} pieces");
            for p in cedar.policies() {
                let q = ours.policy(p.id()).unwrap();
                // Same AST (so same validation and linking), same source position.
                assert_eq!(q.as_ref(), p.as_ref(), "{} in {pieces} pieces", p.id());
                assert_eq!(
                    q.as_ref().loc().map(|l| l.start()),
                    p.as_ref().loc().map(|l| l.start())
                );
                // Same syntax tree as Cedar's own `to_pst` (ids aside).
                let same_id = |q: &cedar_policy::pst::Policy| {
                    q.new_id(ast::PolicyID::from_string("x").into())
                };
                let pst = psts[&p.id().to_string()].as_ref().unwrap();
                assert_eq!(same_id(pst), same_id(&p.to_pst().unwrap()));
            }
            for t in cedar.templates() {
                let u = ours.template(t.id()).unwrap();
                assert_eq!(u.to_pst().unwrap(), t.to_pst().unwrap());
            }
        }
    }

    #[test]
    fn cuts_fall_where_policies_end() {
        let text = tricky_text(50);
        let cuts = piece_bounds(&text, 4);
        assert_eq!(cuts.len(), 4);
        assert_eq!(cuts[0].0, 0);
        assert_eq!(cuts.last().unwrap().1, text.len());
        for w in cuts.windows(2) {
            assert_eq!(w[0].1, w[1].0);
            assert!(
                text[..w[0].1].ends_with(";"),
                "cut after {:?}",
                &text[..w[0].1]
            );
            // The first policy of the next piece is numbered by the `;`s before it.
            let n = PolicySet::from_str(&text[..w[0].1]).unwrap();
            assert_eq!(w[1].2, n.policies().count() + n.templates().count());
        }
    }

    #[test]
    fn an_error_in_a_later_piece_is_cedars_error_at_its_place() {
        let mut text = tricky_text(40);
        text.push_str("permit (principal, action, resource) when { context.x == };\n");
        text.push_str(&tricky_text(5));
        let want = parse(&text).unwrap_err().to_string();
        let got = parse_in_pieces(&text, 3).unwrap_err().to_string();
        assert_eq!(got, want);
        assert!(want.contains("line"), "{want}");
    }

    #[test]
    fn a_piece_numbered_wrongly_is_refused_and_cedars_parse_taken() {
        let text = tricky_text(20);
        let piece = parse_piece(&text, 0, text.len(), 3).unwrap();
        // Its ids would start at policy3: the join refuses it rather than misname.
        assert!(join(&text, vec![piece]).is_none());
        let (pset, psts) = cedars_own(&text).unwrap();
        assert!(psts.is_empty());
        assert_eq!(
            policy_ids(&pset),
            policy_ids(&PolicySet::from_str(&text).unwrap())
        );
    }
}

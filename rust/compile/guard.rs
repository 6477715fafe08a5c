//! Size and nesting bounds checked on the raw text before Cedar's parser sees it.
//!
//! Cedar's parser and its syntax-tree conversions recurse on nesting and on operator
//! chains (`a || b || ...` becomes a left-deep tree), so text deep or long enough
//! overflows any stack. A linear lexical scan (strings and comments skipped) rejects
//! such text with a `PolicyError` first; what passes is shallow enough for every
//! recursive pass, including ours (`lower.rs` then enforces the exact expression depth).

use crate::error::{Location, TetherError};

/// Largest policy text accepted (bytes): far beyond 100k hand-written policies.
pub const MAX_TEXT_BYTES: usize = 64 << 20;
/// Deepest bracket nesting (`(`, `[`, `{` together) accepted.
pub const MAX_NESTING: usize = 128;
/// Most operators in one policy. A chain of N binary operators is a tree N deep, and
/// `lower::MAX_EXPR_DEPTH` rejects anything deeper than 1,000 anyway; this bound only
/// keeps Cedar's own recursion far from any stack limit.
pub const MAX_OPERATORS: usize = 4096;

fn reject(text: &str, offset: usize, message: String) -> TetherError {
    TetherError::Policy {
        message,
        location: Box::new(Location::at(text, Some(offset), None)),
        feature: None,
    }
}

/// Check `text` against the bounds above. Linear time, no allocation.
pub fn check(text: &str) -> Result<(), TetherError> {
    scan(text, |_| {})
}

/// Where each policy ends: just after every `;` outside strings, comments and
/// brackets (the parser cuts a large text there to parse its pieces in parallel).
pub fn policy_ends(text: &str) -> Vec<usize> {
    let mut ends = Vec::new();
    // A text over the bounds has no pieces to offer (the check reports it).
    let _ = scan(text, |e| ends.push(e));
    ends
}

/// The bounds check, calling `on_end` with the offset after each top-level `;`.
fn scan(text: &str, mut on_end: impl FnMut(usize)) -> Result<(), TetherError> {
    if text.len() > MAX_TEXT_BYTES {
        return Err(TetherError::policy(format!(
            "policy text is {} bytes; at most {MAX_TEXT_BYTES} are accepted",
            text.len()
        )));
    }
    let b = text.as_bytes();
    let mut depth = 0usize;
    let mut ops = 0usize;
    let mut policy_start = 0usize;
    let mut i = 0usize;
    while i < b.len() {
        let c = b[i];
        match c {
            b'"' => {
                // Skip the string literal, honouring backslash escapes.
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(reject(
                        text,
                        i,
                        format!("brackets nested deeper than {MAX_NESTING} levels"),
                    ));
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            b';' if depth == 0 => {
                ops = 0;
                policy_start = i + 1;
                on_end(i + 1);
            }
            b'|' | b'&' | b'=' | b'!' | b'<' | b'>' | b'+' | b'-' | b'*' | b'.' => {
                // `||`, `&&`, `==`, `!=`, `<=`, `>=` count once.
                let two = matches!(
                    (c, b.get(i + 1)),
                    (b'|', Some(b'|'))
                        | (b'&', Some(b'&'))
                        | (b'=', Some(b'='))
                        | (b'!', Some(b'='))
                        | (b'<', Some(b'='))
                        | (b'>', Some(b'='))
                );
                ops += 1;
                if two {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i + 1 < b.len() && (b[i + 1].is_ascii_alphanumeric() || b[i + 1] == b'_') {
                    i += 1;
                }
                if matches!(&b[start..=i], b"has" | b"like" | b"in" | b"is" | b"if") {
                    ops += 1;
                }
            }
            _ => {}
        }
        if ops > MAX_OPERATORS {
            return Err(reject(
                text,
                policy_start.min(b.len().saturating_sub(1)),
                format!("a policy has more than {MAX_OPERATORS} operators"),
            ));
        }
        i += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_policies_pass() {
        let text = r#"
            // a comment with ((((( and ||||
            permit (principal in Role::"a", action == Action::"x", resource)
            when { context.a.b == "((((" && [1, [2, {x: 3}]].contains(1) || !(context has c) };
        "#;
        assert!(check(text).is_ok());
    }

    #[test]
    fn deep_nesting_is_rejected_with_location() {
        let text = format!(
            "permit (principal, action, resource) when {{ {}true{} }};",
            "(".repeat(200),
            ")".repeat(200)
        );
        match check(&text) {
            Err(TetherError::Policy {
                message, location, ..
            }) => {
                assert!(message.contains("nested deeper"), "{message}");
                assert_eq!(location.line, Some(1));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn long_chains_are_rejected_per_policy() {
        let chain = vec!["context.a"; 3000].join(" || ");
        let text = format!("permit (principal, action, resource) when {{ {chain} }};");
        assert!(check(&text).is_err());
        // The same number of operators spread over many policies is fine.
        let one = "permit (principal, action, resource) when { context.a || context.b };\n";
        assert!(check(&one.repeat(5000)).is_ok());
    }

    #[test]
    fn strings_do_not_count() {
        let s = "(".repeat(10_000);
        let text =
            format!(r#"permit (principal, action, resource) when {{ context.a == "{s}\"" }};"#);
        assert!(check(&text).is_ok());
    }
}

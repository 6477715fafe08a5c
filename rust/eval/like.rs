//! Cedar `like`: `*` matches any run of characters; everything else is literal.

use crate::compile::ir::PatElem;

/// Iterative wildcard match with single-star backtracking: linear in practice,
/// O(n*m) worst case, never recursive (so no stack growth on long inputs).
pub fn matches(pat: &[PatElem], text: &str) -> bool {
    // Cedar matches on Unicode scalar values, so index by char, not byte.
    let t: Vec<char> = text.chars().collect();
    let (mut p, mut s) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while s < t.len() {
        match pat.get(p) {
            Some(PatElem::Wildcard) => {
                star = Some((p, s));
                p += 1;
            }
            Some(PatElem::Char(c)) if *c == t[s] => {
                p += 1;
                s += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    p = sp + 1;
                    s = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    pat[p..].iter().all(|e| *e == PatElem::Wildcard)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pat(s: &str) -> Vec<PatElem> {
        s.chars()
            .map(|c| {
                if c == '*' {
                    PatElem::Wildcard
                } else {
                    PatElem::Char(c)
                }
            })
            .collect()
    }

    #[test]
    fn wildcard_cases() {
        assert!(matches(&pat("a*c"), "abbbc"));
        assert!(matches(&pat("*"), ""));
        assert!(matches(&pat("a**"), "a"));
        assert!(!matches(&pat("a*c"), "abd"));
        assert!(matches(&pat("*.github.com"), "api.github.com"));
        assert!(!matches(&pat("abc"), "ab"));
        assert!(matches(&pat("*a*b"), "xxaxxb"));
        assert!(matches(&pat("é*"), "été"));
    }

    /// A star that must give back characters more than once: each retry resumes one
    /// character further on, so the match ends (and is found) rather than retrying
    /// the same place.
    #[test]
    fn a_star_backtracks_more_than_once() {
        assert!(matches(&pat("*ab"), "aaab"));
        assert!(matches(&pat("*aab"), "aaaaab"));
        assert!(matches(&pat("x*yz"), "xyyyyz"));
        assert!(!matches(&pat("*ab"), "aaaa"));
        assert!(!matches(&pat("x*yz"), "xyyyy"));
    }
}

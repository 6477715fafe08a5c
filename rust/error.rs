//! Error types of the core. `lib.rs` maps each variant to a typed Python exception.

use miette::Diagnostic;

/// Where in a policy text something went wrong (1-based line and column).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Location {
    pub policy_id: Option<String>,
    pub line: Option<usize>,
    pub column: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum TetherError {
    #[error("{message}")]
    Policy {
        message: String,
        location: Location,
        /// The unsupported Cedar feature, when that is the cause.
        feature: Option<String>,
    },
    #[error("{0}")]
    Schema(String),
    #[error("{0}")]
    Entity(String),
    #[error("{0}")]
    Request(String),
}

impl TetherError {
    pub fn policy(message: impl Into<String>) -> Self {
        TetherError::Policy {
            message: message.into(),
            location: Location::default(),
            feature: None,
        }
    }
}

/// 1-based (line, column) of a byte offset in `src`.
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = &src[..src.floor_char_boundary_compat(offset)];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

trait FloorCharBoundary {
    fn floor_char_boundary_compat(&self, i: usize) -> usize;
}

impl FloorCharBoundary for str {
    fn floor_char_boundary_compat(&self, mut i: usize) -> usize {
        while i > 0 && !self.is_char_boundary(i) {
            i -= 1;
        }
        i
    }
}

/// Render a Cedar diagnostic with its causes and help in one line.
pub fn render_diag(d: &dyn Diagnostic) -> String {
    let mut msg = d.to_string();
    let mut src = std::error::Error::source(d);
    while let Some(s) = src {
        let t = s.to_string();
        if !msg.contains(&t) {
            msg.push_str(": ");
            msg.push_str(&t);
        }
        src = s.source();
    }
    if let Some(rel) = d.related() {
        for r in rel {
            let t = r.to_string();
            if !msg.contains(&t) {
                msg.push_str("; ");
                msg.push_str(&t);
            }
        }
    }
    if let Some(h) = d.help() {
        msg.push_str(" (help: ");
        msg.push_str(&h.to_string());
        msg.push(')');
    }
    msg
}

/// First labelled byte offset of a diagnostic, looking into related diagnostics.
pub fn first_offset(d: &dyn Diagnostic) -> Option<usize> {
    if let Some(mut labels) = d.labels() {
        if let Some(l) = labels.next() {
            return Some(l.offset());
        }
    }
    if let Some(rel) = d.related() {
        for r in rel {
            if let Some(o) = first_offset(r) {
                return Some(o);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("é\nx", 3), (2, 1));
    }
}

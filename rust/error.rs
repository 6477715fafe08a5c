//! Error types of the core. `lib.rs` maps each variant to a typed Python exception.

use miette::Diagnostic;

/// Where in a policy text something went wrong (1-based line and column, in
/// `file` when the text came from several named sources).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Location {
    pub policy_id: Option<String>,
    pub file: Option<String>,
    pub line: Option<usize>,
    pub column: Option<usize>,
}

impl Location {
    /// `file:line:col` (as compilers print it), `line L, column C`, or None.
    pub fn describe(&self) -> Option<String> {
        match (&self.file, self.line, self.column) {
            (Some(f), Some(l), Some(c)) => Some(format!("{f}:{l}:{c}")),
            (None, Some(l), Some(c)) => Some(format!("line {l}, column {c}")),
            (Some(f), _, _) => Some(f.clone()),
            _ => None,
        }
    }

    /// The location of byte `offset` in `text` (the concatenation of the sources
    /// registered with `with_sources`, if any).
    pub fn at(text: &str, offset: Option<usize>, policy_id: Option<String>) -> Location {
        let Some(o) = offset else {
            return Location {
                policy_id,
                ..Location::default()
            };
        };
        let (line, column) = line_col(text, o);
        let (file, line) = SOURCES.with(|s| {
            let s = s.borrow();
            // The last source starting at or before this line holds it.
            match s.iter().rev().find(|(_, first)| *first <= line) {
                Some((name, first)) => (Some(name.clone()), line - first + 1),
                None => (None, line),
            }
        });
        Location {
            policy_id,
            file,
            line: Some(line),
            column: Some(column),
        }
    }
}

thread_local! {
    /// Named sources of the policy text being compiled on this thread: (name, first
    /// line in the concatenated text). Thread-local so every error site can place
    /// itself without threading a source map through each compiler pass.
    static SOURCES: std::cell::RefCell<Vec<(String, usize)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Join named sources into one text (separated by a newline) and run `f` on it with
/// error locations reported per source.
pub fn with_sources<T>(sources: &[(String, String)], f: impl FnOnce(&str) -> T) -> T {
    let mut text = String::new();
    let mut map = Vec::with_capacity(sources.len());
    for (name, src) in sources {
        if !text.is_empty() {
            text.push('\n');
        }
        map.push((name.clone(), text.matches('\n').count() + 1));
        text.push_str(src);
    }
    SOURCES.with(|s| *s.borrow_mut() = map);
    let out = f(&text);
    SOURCES.with(|s| s.borrow_mut().clear());
    out
}

fn policy_message(message: &str, location: &Location) -> String {
    match location.describe() {
        Some(w) => format!("{w}: {message}"),
        None => message.to_owned(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TetherError {
    #[error("{}", policy_message(message, location))]
    Policy {
        message: String,
        location: Box<Location>,
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
            location: Box::default(),
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

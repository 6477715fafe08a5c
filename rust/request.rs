//! Parsing entity references written as Cedar text: `Type::"id"`, `A::B::"id"`.
//!
//! Hand-written rather than calling Cedar's parser because this runs on every
//! request: the common case (no escapes) borrows slices of the input and
//! allocates nothing.

use std::borrow::Cow;

use crate::error::TetherError;

/// Cedar's reserved words cannot name an entity type.
const RESERVED: [&str; 12] = [
    "true", "false", "if", "then", "else", "in", "is", "like", "has", "__cedar", "permit", "forbid",
];

fn valid_ident(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
        && !RESERVED[..9].contains(&s)
        && s != "__cedar"
}

/// Whether `t` is a valid (possibly namespaced) entity type name.
pub fn valid_type(t: &str) -> bool {
    !t.is_empty() && t.split("::").all(valid_ident)
}

/// Split `Type::"id"` into its type and (unescaped) id.
pub fn parse_uid(s: &str) -> Result<(&str, Cow<'_, str>), TetherError> {
    let bad = |why: &str| {
        TetherError::Request(format!(
            "entity reference {:?} is not of the form Type::\"id\": {why}",
            truncate(s)
        ))
    };
    let sep = s.find("::\"").ok_or_else(|| bad("missing ::\"id\""))?;
    let ty = &s[..sep];
    if !valid_type(ty) {
        return Err(bad("invalid entity type name"));
    }
    let rest = &s[sep + 3..];
    let body = rest
        .strip_suffix('"')
        .ok_or_else(|| bad("missing closing quote"))?;
    if !body.contains('\\') {
        if body.contains('"') {
            return Err(bad("unescaped quote in id"));
        }
        return Ok((ty, Cow::Borrowed(body)));
    }
    Ok((ty, Cow::Owned(unescape(body).map_err(|e| bad(&e))?)))
}

fn truncate(s: &str) -> String {
    if s.len() <= 80 {
        s.to_owned()
    } else {
        let mut end = 80;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &s[..end])
    }
}

/// Cedar string escapes: \n \r \t \\ \0 \' \" \u{XXXX}.
fn unescape(body: &str) -> Result<String, String> {
    let mut out = String::with_capacity(body.len());
    let mut it = body.chars();
    while let Some(c) = it.next() {
        if c == '"' {
            return Err("unescaped quote in id".into());
        }
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('0') => out.push('\0'),
            Some('\\') => out.push('\\'),
            Some('\'') => out.push('\''),
            Some('"') => out.push('"'),
            Some('u') => {
                if it.next() != Some('{') {
                    return Err("bad \\u escape".into());
                }
                let mut hex = String::new();
                loop {
                    match it.next() {
                        Some('}') => break,
                        Some(h) if h.is_ascii_hexdigit() && hex.len() < 6 => hex.push(h),
                        _ => return Err("bad \\u escape".into()),
                    }
                }
                let cp = u32::from_str_radix(&hex, 16).map_err(|_| "bad \\u escape")?;
                out.push(char::from_u32(cp).ok_or("bad \\u escape")?);
            }
            _ => return Err("unknown escape".into()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_namespaced() {
        let (t, i) = parse_uid(r#"User::"alice""#).unwrap();
        assert_eq!((t, &*i), ("User", "alice"));
        let (t, i) = parse_uid(r#"A::B::"x y""#).unwrap();
        assert_eq!((t, &*i), ("A::B", "x y"));
        let (_, i) = parse_uid(r#"User::"""#).unwrap();
        assert_eq!(&*i, "");
    }

    #[test]
    fn unescapes() {
        let (_, i) = parse_uid(r#"User::"a\"b\\c\u{e9}""#).unwrap();
        assert_eq!(&*i, "a\"b\\cé");
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            r#"User::alice"#,
            r#"::"a""#,
            r#"1User::"a""#,
            r#"User::"a"#,
            r#"User::"a"b""#,
        ] {
            assert!(parse_uid(bad).is_err(), "{bad}");
        }
    }
}

//! Parsing entity references written as Cedar text: `Type::"id"`, `A::B::"id"`.
//!
//! Hand-written rather than calling Cedar's parser because this runs on every
//! request: the common case (no escapes) borrows slices of the input and
//! allocates nothing.

use std::borrow::Cow;

use crate::error::TetherError;

/// Cedar's reserved words cannot name an entity type.
const RESERVED: [&[u8]; 10] = [
    b"true", b"false", b"if", b"then", b"else", b"in", b"is", b"like", b"has", b"__cedar",
];

fn valid_ident(s: &[u8]) -> bool {
    match s.first() {
        Some(c) if *c == b'_' || c.is_ascii_alphabetic() => {}
        _ => return false,
    }
    s.iter().all(|c| *c == b'_' || c.is_ascii_alphanumeric())
        && (s.len() > 7 || !RESERVED.contains(&s))
}

/// Whether `t` is a valid (possibly namespaced) entity type name.
pub fn valid_type(t: &str) -> bool {
    // Byte scan rather than `split("::")`: this runs for every entity argument.
    let b = t.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < b.len() {
        if b[i] == b':' {
            if b.get(i + 1) != Some(&b':') || !valid_ident(&b[start..i]) {
                return false;
            }
            i += 2;
            start = i;
        } else {
            i += 1;
        }
    }
    valid_ident(&b[start..])
}

/// `valid_type`, as the error every entry point reports.
pub fn check_type(ty: &str) -> Result<(), TetherError> {
    if valid_type(ty) {
        Ok(())
    } else {
        Err(TetherError::Request(format!(
            "{ty:?} is not a valid Cedar entity type name"
        )))
    }
}

/// Split `Type::"id"` into its type and (unescaped) id.
pub fn parse_uid(s: &str) -> Result<(&str, Cow<'_, str>), TetherError> {
    let bad = |why: &str| {
        TetherError::Request(format!(
            "entity reference {:?} is not of the form Type::\"id\": {why}",
            truncate(s)
        ))
    };
    let bytes = s.as_bytes();
    // Type names cannot contain a quote, so the first quote opens the id.
    let q = bytes
        .iter()
        .position(|b| *b == b'"')
        .filter(|q| *q >= 2 && &bytes[q - 2..*q] == b"::")
        .ok_or_else(|| bad("missing ::\"id\""))?;
    let ty = &s[..q - 2];
    if !valid_type(ty) {
        return Err(bad("invalid entity type name"));
    }
    if bytes.len() < q + 2 || bytes[bytes.len() - 1] != b'"' {
        return Err(bad("missing closing quote"));
    }
    let body = &s[q + 1..s.len() - 1];
    match body.bytes().position(|b| b == b'\\' || b == b'"') {
        None => Ok((ty, Cow::Borrowed(body))),
        Some(i) if body.as_bytes()[i] == b'"' => Err(bad("unescaped quote in id")),
        Some(_) => Ok((ty, Cow::Owned(unescape(body).map_err(|e| bad(&e))?))),
    }
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
    fn type_names() {
        for good in ["User", "A::B", "_x::y1", "ifx", "__cedarx"] {
            assert!(valid_type(good), "{good}");
        }
        for bad in [
            "", "if", "A::if", "A:B", "A::", "::A", "A::::B", "1A", "Us er",
        ] {
            assert!(!valid_type(bad), "{bad}");
        }
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

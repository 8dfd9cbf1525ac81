//! The tag=value list shared by DKIM signatures, DKIM key records and DMARC records
//! (RFC 6376 3.2, RFC 7489 6.4).

/// Why a tag list did not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TagError {
    /// A tag spec has no `=`.
    #[error("tag without '=': {0:?}")]
    MissingEquals(String),
    /// A tag name is empty or has characters outside ALPHA / DIGIT / `_`.
    #[error("bad tag name {0:?}")]
    BadName(String),
    /// A tag value has a character outside VALCHAR and whitespace.
    #[error("bad character in value of tag {0:?}")]
    BadValue(String),
    /// The same tag appears twice.
    #[error("duplicate tag {0:?}")]
    Duplicate(String),
}

fn is_fws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// Splits a tag list into (name, value) pairs in order. Names keep their case; values are
/// trimmed of surrounding folding whitespace but keep inner whitespace. An empty final
/// spec (trailing `;`) is allowed.
pub(crate) fn parse_tags(s: &str) -> Result<Vec<(&str, &str)>, TagError> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    let parts: Vec<&str> = s.split(';').collect();
    let last = parts.len().saturating_sub(1);
    for (i, part) in parts.into_iter().enumerate() {
        if part.trim_matches(is_fws).is_empty() {
            if i == last {
                break;
            }
            return Err(TagError::MissingEquals(String::new()));
        }
        let Some((name, value)) = part.split_once('=') else {
            return Err(TagError::MissingEquals(
                part.trim_matches(is_fws).to_string(),
            ));
        };
        let name = name.trim_matches(is_fws);
        let value = value.trim_matches(is_fws);
        let mut chars = name.chars();
        let ok_name = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok_name {
            return Err(TagError::BadName(name.to_string()));
        }
        // VALCHAR is %x21-3A / %x3C-7E; RFC 8616 and RFC 6532 allow UTF-8 as well.
        if value
            .chars()
            .any(|c| c.is_ascii_control() && !is_fws(c) || c == ';')
        {
            return Err(TagError::BadValue(name.to_string()));
        }
        if out.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
            return Err(TagError::Duplicate(name.to_string()));
        }
        out.push((name, value));
    }
    Ok(out)
}

/// `s` without any folding whitespace (for base64 values and colon lists).
pub(crate) fn strip_fws(s: &str) -> String {
    s.chars().filter(|c| !is_fws(*c)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let ok: &[(&str, &[(&str, &str)])] = &[
            ("a=b", &[("a", "b")]),
            ("a=b;", &[("a", "b")]),
            (" a = b ; c=\r\n d e ;", &[("a", "b"), ("c", "d e")]),
            ("v=1; x_1=", &[("v", "1"), ("x_1", "")]),
            ("", &[]),
        ];
        for (input, want) in ok {
            assert_eq!(parse_tags(input).unwrap(), want.to_vec(), "{input:?}");
        }
        let bad: &[(&str, TagError)] = &[
            ("a", TagError::MissingEquals("a".into())),
            ("a=b;;c=d", TagError::MissingEquals(String::new())),
            ("1a=b", TagError::BadName("1a".into())),
            ("=b", TagError::BadName(String::new())),
            ("a=b;A=c", TagError::Duplicate("A".into())),
            ("a=b\u{0}", TagError::BadValue("a".into())),
        ];
        for (input, want) in bad {
            assert_eq!(parse_tags(input).unwrap_err(), *want, "{input:?}");
        }
        assert_eq!(strip_fws(" a b\r\n\tc "), "abc");
    }
}

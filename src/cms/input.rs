//! Request bodies are hostile: nesting is bounded before parsing, nothing may follow the JSON
//! value, and error messages never repeat a value that was sent (it may be a credential).

use super::error::CmsError;
use crate::model::SpecError;
use axum::body::Bytes;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// Deepest nesting of arrays and objects a body may have. Stored documents add a few levels of
/// their own, and everything stored must load again at the next start.
pub const MAX_DEPTH: usize = 32;

/// The nesting depth of a JSON text, counted without parsing it (strings are skipped).
pub fn json_depth(raw: &[u8]) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &b in raw {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

fn check_depth(raw: &[u8]) -> Result<(), CmsError> {
    if json_depth(raw) > MAX_DEPTH {
        return Err(CmsError::BadRequest(format!(
            "the body is nested more than {MAX_DEPTH} levels deep"
        )));
    }
    Ok(())
}

/// Parses a JSON body into `T`, naming the field that is wrong.
pub fn body<T: DeserializeOwned>(raw: &Bytes) -> Result<T, CmsError> {
    check_depth(raw)?;
    let mut de = serde_json::Deserializer::from_slice(raw);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        // Malformed JSON is a bad request; well-formed JSON with a wrong field is a 422.
        let not_json = inner.is_syntax() || inner.is_eof();
        let inner = redact(&inner.to_string());
        if path == "." || not_json {
            CmsError::BadRequest(format!("the body is not valid: {inner}"))
        } else {
            CmsError::Invalid(SpecError::new(path, inner))
        }
    })?;
    de.end().map_err(|e| {
        CmsError::BadRequest(format!(
            "the body has more after its JSON value: {}",
            redact(&e.to_string())
        ))
    })?;
    Ok(value)
}

/// A content body: one JSON object of fields.
pub fn fields(raw: &Bytes) -> Result<Map<String, Value>, CmsError> {
    check_depth(raw)?;
    match serde_json::from_slice::<Value>(raw) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(CmsError::BadRequest(
            "the body must be a JSON object of fields".into(),
        )),
        Err(e) => Err(CmsError::BadRequest(format!(
            "the body is not JSON: {}",
            redact(&e.to_string())
        ))),
    }
}

/// Removes the values serde quotes back (`invalid type: string "..."`, `` unknown variant `...` ``):
/// what a client sent may be a key. Expected names (the part after "expected") stay, and so
/// does a field's name (`` unknown field `scope` ``, `` duplicate field `environment` ``) when it
/// looks like one: a name tells the caller what to fix.
pub fn redact(message: &str) -> String {
    let (sent, expected) = match message.find("expected") {
        Some(i) => message.split_at(i),
        None => (message, ""),
    };
    let mut out = String::with_capacity(message.len());
    let mut quote: Option<(char, String)> = None;
    for c in sent.chars() {
        match &mut quote {
            Some((q, inside)) if c == *q => {
                let named = out.ends_with("field `") && looks_like_a_name(inside);
                out.push_str(if named { inside.as_str() } else { "…" });
                out.push(c);
                quote = None;
            }
            Some((_, inside)) => inside.push(c),
            None => {
                out.push(c);
                if c == '"' || c == '`' {
                    quote = Some((c, String::new()));
                }
            }
        }
    }
    if let Some((q, _)) = quote {
        out.push('…');
        out.push(q);
    }
    out.push_str(expected);
    out
}

/// A field name, not a value: short, a letter then letters, digits or '_'.
fn looks_like_a_name(s: &str) -> bool {
    s.len() <= 32
        && s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_nesting_outside_strings() {
        assert_eq!(json_depth(b"1"), 0);
        assert_eq!(json_depth(br#"{"a": [1, {"b": 2}]}"#), 3);
        assert_eq!(json_depth(br#"{"a": "[[[[{{{{\"]]"}"#), 1);
        let deep = "[".repeat(127) + &"]".repeat(127);
        assert_eq!(json_depth(deep.as_bytes()), 127);
    }

    #[test]
    fn redaction_keeps_the_expected_names_only() {
        let m = redact(r#"invalid type: string "kw_0123_secret", expected a sequence"#);
        assert_eq!(m, r#"invalid type: string "…", expected a sequence"#);
        let m = redact("unknown variant `kw_secret`, expected one of `GET`, `POST`");
        assert_eq!(m, "unknown variant `…`, expected one of `GET`, `POST`");
        assert!(!redact("trailing \"unterminated kw_x").contains("kw_x"));
        let m = "unknown field `scope`, expected one of `scopes`";
        assert_eq!(redact(m), m);
        let m = "Failed to deserialize query string: duplicate field `environment`";
        assert_eq!(redact(m), m);
        let m = redact("unknown field `kw_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA`, expected `a`");
        assert!(!m.contains("kw_0123"), "{m}");
    }

    #[test]
    fn trailing_bytes_and_depth_are_refused() {
        #[derive(serde::Deserialize)]
        struct T {
            #[allow(dead_code)]
            a: u8,
        }
        assert!(body::<T>(&Bytes::from_static(br#"{"a": 1}"#)).is_ok());
        assert!(body::<T>(&Bytes::from_static(br#"{"a": 1} {"a": 2}"#)).is_err());
        let deep = format!("{{\"a\": 1, \"b\": {}{}}}", "[".repeat(40), "]".repeat(40));
        assert!(matches!(
            body::<Value>(&Bytes::from(deep)),
            Err(CmsError::BadRequest(_))
        ));
    }
}

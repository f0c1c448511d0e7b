//! Parameter values in canonical form, so that equal values hash equally
//! (`1e-4` and `0.0001` are the same float and hash the same).

use serde_json::Value;

/// Converts a TOML value to canonical JSON. Floats keep their shortest
/// round-trip form; tables become sorted maps. Datetimes become strings.
pub fn canonical(v: &toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map_or_else(|| Value::String(f.to_string()), Value::Number),
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
        toml::Value::Table(t) => {
            Value::Object(t.iter().map(|(k, v)| (k.clone(), canonical(v))).collect())
        }
    }
}

/// How a value reads when substituted into a command or a path.
pub fn display(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Quotes a value for `bash -c` only when it needs it.
pub fn shell_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./:=@%+,".contains(&b));
    if safe {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_floats_hash_the_same() {
        let a: toml::Value = toml::from_str::<toml::Table>("x = 1e-4").unwrap()["x"].clone();
        let b: toml::Value = toml::from_str::<toml::Table>("x = 0.0001").unwrap()["x"].clone();
        assert_eq!(canonical(&a).to_string(), canonical(&b).to_string());
    }

    #[test]
    fn quotes_only_when_needed() {
        assert_eq!(shell_quote("resnet20"), "resnet20");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}

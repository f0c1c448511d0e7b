//! `${params.X}` and `${matrix.X}` substitution in commands, paths, needs and env.
//! Other `${...}` forms are left alone, so shell variables such as `${HOME}` keep working.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use serde_json::Value;

use super::value::{display, shell_quote};

/// A reference found in a template, with its byte range within the template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub scope: Scope,
    pub name: String,
    pub range: Range<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Params,
    Matrix,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Params => "params",
            Scope::Matrix => "matrix",
        }
    }
}

/// Every `${params.X}` / `${matrix.X}` in `template`.
pub fn references(template: &str) -> Vec<Reference> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(pos) = template[i..].find("${") {
        let start = i + pos;
        let Some(close) = template[start..].find('}') else {
            break;
        };
        let end = start + close + 1;
        let inner = &template[start + 2..end - 1];
        let scoped = inner
            .strip_prefix("params.")
            .map(|n| (Scope::Params, n))
            .or_else(|| inner.strip_prefix("matrix.").map(|n| (Scope::Matrix, n)));
        if let Some((scope, name)) = scoped {
            out.push(Reference {
                scope,
                name: name.trim().to_string(),
                range: start..end,
            });
        }
        i = end;
    }
    out
}

/// Values available to a template.
pub struct Scope2<'a> {
    pub params: &'a BTreeMap<String, Value>,
    pub matrix: &'a BTreeMap<String, Value>,
}

/// Substitutes references; returns the first undefined one as an error.
/// With `quote`, values are shell-quoted (for `cmd`).
pub fn substitute(template: &str, scope: &Scope2<'_>, quote: bool) -> Result<String, Reference> {
    let mut out = String::with_capacity(template.len());
    let mut last = 0;
    for r in references(template) {
        let table = match r.scope {
            Scope::Params => scope.params,
            Scope::Matrix => scope.matrix,
        };
        let Some(v) = table.get(&r.name) else {
            return Err(r);
        };
        out.push_str(&template[last..r.range.start]);
        let text = display(v);
        out.push_str(&if quote { shell_quote(&text) } else { text });
        last = r.range.end;
    }
    out.push_str(&template[last..]);
    Ok(out)
}

/// Names of params a template uses (they enter the stage's key).
pub fn used_params(template: &str, into: &mut BTreeSet<String>) {
    into.extend(
        references(template)
            .into_iter()
            .filter(|r| r.scope == Scope::Params)
            .map(|r| r.name),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitutes_and_quotes() {
        let params = BTreeMap::from([
            ("seed".to_string(), Value::from(1)),
            ("msg".into(), Value::from("a b")),
        ]);
        let matrix = BTreeMap::from([("net".to_string(), Value::from("resnet20"))]);
        let s = Scope2 {
            params: &params,
            matrix: &matrix,
        };
        assert_eq!(
            substitute(
                "t --net ${matrix.net} --seed ${params.seed} ${HOME} ${params.msg}",
                &s,
                true
            )
            .unwrap(),
            "t --net resnet20 --seed 1 ${HOME} 'a b'"
        );
        let err = substitute("x ${params.nope}", &s, false).unwrap_err();
        assert_eq!((err.name.as_str(), err.range), ("nope", 2..16));
    }
}

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

/// The first `${...}` in a shell command that is not a reference and that no shell can expand
/// (`${train.n_est}`: a shell name has no `.`, so bash stops with "bad substitution" at run
/// time). Returns its byte range and its inner text.
pub fn bad_shell_expansion(template: &str) -> Option<(std::ops::Range<usize>, String)> {
    let mut i = 0;
    while let Some(pos) = template[i..].find("${") {
        let start = i + pos;
        let close = template[start..].find('}')?;
        let end = start + close + 1;
        let inner = &template[start + 2..end - 1];
        let scoped = inner.starts_with("params.") || inner.starts_with("matrix.");
        // `${!name}` and `${#name}` are indirection and length; then the name, then an
        // operator (`:-`, `#`, `%`, `/`, `[`, ...) or the end. A `.` right after it is none.
        let name = inner.trim_start_matches(['!', '#']);
        let len = name
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(name.len());
        if !scoped && len > 0 && name[len..].starts_with('.') {
            return Some((start..end, inner.to_string()));
        }
        i = end;
    }
    None
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
    fn a_dotted_name_outside_params_and_matrix_is_no_shell_expansion() {
        let bad = bad_shell_expansion;
        assert_eq!(
            bad("echo ${train.n_est}"),
            Some((5..19, "train.n_est".into()))
        );
        assert_eq!(bad("echo ${#a.b}"), Some((5..12, "#a.b".into())));
        for ok in [
            "echo ${params.x} ${matrix.y} ${HOME} ${X:-a.b} ${X%.txt} ${#X} ${!P} $1.5",
            "echo ${X/./_} ${A[1]} no braces $a.b",
        ] {
            assert_eq!(bad(ok), None, "{ok}");
        }
    }

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

//! Workspace paths: lexical normalisation, and the rule that outs stay inside.

use std::path::{Component, Path, PathBuf};

/// Where a path points, relative to the workspace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WPath {
    /// Inside the workspace, normalised and relative (never empty).
    Inside(PathBuf),
    /// Outside the workspace (only deps may be), absolute and normalised.
    Outside(PathBuf),
}

impl WPath {
    pub fn resolve(&self, workspace: &Path) -> PathBuf {
        match self {
            WPath::Inside(p) => workspace.join(p),
            WPath::Outside(p) => p.clone(),
        }
    }

    /// The form that enters keys: relative inside, absolute outside.
    pub fn key_form(&self) -> String {
        match self {
            WPath::Inside(p) | WPath::Outside(p) => p.to_string_lossy().into_owned(),
        }
    }

    pub fn inside(&self) -> Option<&Path> {
        match self {
            WPath::Inside(p) => Some(p),
            WPath::Outside(_) => None,
        }
    }

    /// `self` and every directory above it (inside the workspace, or up to the root).
    pub fn ancestors(&self) -> impl Iterator<Item = WPath> + '_ {
        let (p, inside) = match self {
            WPath::Inside(p) => (p, true),
            WPath::Outside(p) => (p, false),
        };
        p.ancestors()
            .filter(|a| !a.as_os_str().is_empty())
            .map(move |a| {
                if inside {
                    WPath::Inside(a.to_path_buf())
                } else {
                    WPath::Outside(a.to_path_buf())
                }
            })
    }

    /// True when `self` equals `other` or lies below it.
    pub fn within(&self, other: &WPath) -> bool {
        match (self, other) {
            (WPath::Inside(a), WPath::Inside(b)) | (WPath::Outside(a), WPath::Outside(b)) => {
                a.starts_with(b)
            }
            _ => false,
        }
    }
}

/// Normalises `raw` (relative to `workspace`, which must be absolute) without touching the disk.
pub fn classify(raw: &str, workspace: &Path) -> Option<WPath> {
    if raw.trim().is_empty() {
        return None;
    }
    let joined = workspace.join(raw);
    let mut norm = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                norm.pop();
            }
            Component::CurDir => {}
            other => norm.push(other),
        }
    }
    match norm.strip_prefix(workspace) {
        Ok(rel) if rel.as_os_str().is_empty() => None,
        Ok(rel) => Some(WPath::Inside(rel.to_path_buf())),
        Err(_) => Some(WPath::Outside(norm)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies() {
        let ws = Path::new("/w/s");
        assert_eq!(
            classify("a/./b/../c", ws),
            Some(WPath::Inside("a/c".into()))
        );
        assert_eq!(classify("../x", ws), Some(WPath::Outside("/w/x".into())));
        assert_eq!(
            classify("/etc/passwd", ws),
            Some(WPath::Outside("/etc/passwd".into()))
        );
        assert_eq!(classify(".", ws), None);
        assert!(WPath::Inside("a/b".into()).within(&WPath::Inside("a".into())));
        assert!(!WPath::Inside("ab".into()).within(&WPath::Inside("a".into())));
    }
}

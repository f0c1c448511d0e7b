//! A built-in kind's version is part of every key it produces. This test fails
//! when a kind's source changes while its version stays the same (results would
//! be reused wrongly), and when the record below is out of date. The source
//! hash does not depend on the build (CPU or CUDA), so keys agree across builds.
//!
//! After changing a kind: bump its `version()`, then refresh the record with
//! `INCRPIPE_UPDATE_KIND_VERSIONS=1 cargo test --test kind_versions`.

use std::collections::BTreeMap;

use incrpipe::registry::Registry;

const RECORD: &str = "tests/kind-versions.txt";

#[test]
fn kind_versions_follow_their_sources() {
    let reg = Registry::builtin();
    let mut now = BTreeMap::new();
    for name in reg.names() {
        let k = reg.get(name).unwrap();
        let mut h = blake3::Hasher::new();
        for s in k.sources() {
            h.update(s.as_bytes());
        }
        now.insert(
            name.to_string(),
            (k.version(), h.finalize().to_hex()[..16].to_string()),
        );
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(RECORD);
    let render = |m: &BTreeMap<String, (u32, String)>| {
        m.iter()
            .map(|(k, (v, h))| format!("{k} {v} {h}\n"))
            .collect::<String>()
    };
    if std::env::var_os("INCRPIPE_UPDATE_KIND_VERSIONS").is_some() {
        std::fs::write(&path, render(&now)).unwrap();
        return;
    }
    let recorded: BTreeMap<String, (u32, String)> = std::fs::read_to_string(&path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 3).then(|| (f[0].to_string(), (f[1].parse().unwrap(), f[2].to_string())))
        })
        .collect();
    let mut problems = Vec::new();
    for (name, (v, h)) in &now {
        match recorded.get(name) {
            Some((rv, rh)) if rv == v && rh != h => problems.push(format!(
                "kind `{name}` changed its source but not its version ({v}): bump version()"
            )),
            Some((rv, rh)) if rv != v || rh != h => {
                problems.push(format!("kind `{name}`: record says {rv}/{rh}, now {v}/{h}"))
            }
            None => problems.push(format!("kind `{name}` is not recorded")),
            _ => {}
        }
    }
    assert!(
        problems.is_empty(),
        "{}\nthen run INCRPIPE_UPDATE_KIND_VERSIONS=1 cargo test --test kind_versions\nexpected {RECORD}:\n{}",
        problems.join("\n"),
        render(&now)
    );
}

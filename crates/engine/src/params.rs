//! Every setting of a run, declared once: its name (a pipeline param, and the flag
//! `--name-with-dashes` of `incrpipe train`), its default and its help. The engine's configs
//! take their defaults from here, [`super::settings::RunSettings`] has one field per setting,
//! and the training stage kinds declare these as their params.

use serde::de::DeserializeOwned;

/// One setting.
#[derive(Debug, Clone, Copy)]
pub struct Decl {
    pub name: &'static str,
    /// The default as JSON; `None`: every run must give it.
    pub default: Option<&'static str>,
    pub help: &'static str,
    /// A data setting: also a param of the `augment` kind (the split and the policy).
    pub data: bool,
    /// Older flag names `incrpipe train` still accepts.
    pub aliases: &'static [&'static str],
}

const fn run(name: &'static str, default: Option<&'static str>, help: &'static str) -> Decl {
    Decl {
        name,
        default,
        help,
        data: false,
        aliases: &[],
    }
}

const fn data(name: &'static str, default: &'static str, help: &'static str) -> Decl {
    Decl {
        name,
        default: Some(default),
        help,
        data: true,
        aliases: &[],
    }
}

const fn alias(mut d: Decl, aliases: &'static [&'static str]) -> Decl {
    d.aliases = aliases;
    d
}

/// In the order of [`super::settings::RunSettings`]'s fields (a test checks both ways).
pub const DECLS: &[Decl] = &[
    run(
        "net",
        None,
        "network: resnet20/32/44/56, vgg16, or a narrow variant such as resnet8-w4",
    ),
    run("method", None, "baseline, random or lookahead"),
    run("seed", Some("1"), "training seed"),
    run(
        "partition",
        Some("\"\""),
        "unit indices where S1..SK start, e.g. \"0,4,7\"; empty = the paper's rule",
    ),
    alias(
        data(
            "train_per_class",
            "0",
            "training images per class (0 = all)",
        ),
        &["subset"],
    ),
    alias(
        data(
            "val_per_class",
            "0",
            "validation images per class (0 = all)",
        ),
        &["val-subset"],
    ),
    alias(
        data("test_per_class", "0", "test images per class (0 = all)"),
        &["test-subset"],
    ),
    data("val_fraction", "0.1", "held-out fraction of each class"),
    data("split_seed", "0", "seed of the train/validation split"),
    run(
        "batch",
        Some("0"),
        "batch size (0 = the paper's: 128 ResNets, 32 VGG)",
    ),
    run("lr", Some("0.0001"), "RMSProp learning rate"),
    run("rho", Some("0.9"), "RMSProp decay rate"),
    run("momentum", Some("0.0"), "RMSProp momentum"),
    run("epsilon", Some("1e-7"), "RMSProp epsilon"),
    run(
        "weight_decay",
        Some("0.0001"),
        "L2 on conv and dense kernels",
    ),
    run("ws", Some("5"), "termination window (epochs)"),
    run(
        "gamma",
        Some("0.5"),
        "stop a phase when alpha_i <= gamma * alpha_(i-1)",
    ),
    run("min_epochs", Some("5"), "minimum epochs per phase"),
    run("max_epochs", Some("100"), "maximum epochs per phase"),
    run(
        "epoch_budget",
        Some("0"),
        "total epochs over all phases (0 = none)",
    ),
    run(
        "lookahead_epochs",
        Some("3"),
        "epochs of each look-ahead phase",
    ),
    alias(
        run(
            "min_gain_points",
            Some("-1.0"),
            "stop growing when a sub-network gains fewer points (negative = never)",
        ),
        &["min-gain"],
    ),
    data("augment", "true", "random shifts and flips"),
    run(
        "eval_batch",
        Some("250"),
        "batch size of validation and test passes",
    ),
];

/// The declaration of `name`. Panics for a name that is not declared: a programming error,
/// caught by the tests of every config that reads a default.
pub fn decl(name: &str) -> &'static Decl {
    DECLS
        .iter()
        .find(|d| d.name == name)
        .unwrap_or_else(|| panic!("`{name}` is not a declared setting"))
}

/// The default of `name` as JSON (`None` for a setting without one).
pub fn default_json(name: &str) -> Option<serde_json::Value> {
    decl(name)
        .default
        .map(|d| serde_json::from_str(d).expect("declared defaults are JSON"))
}

/// The default of `name` as a `T`.
pub fn default<T: DeserializeOwned>(name: &str) -> T {
    let v = default_json(name).unwrap_or_else(|| panic!("`{name}` has no default"));
    serde_json::from_value(v).unwrap_or_else(|e| panic!("default of `{name}`: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_defaults_parse() {
        for (i, d) in DECLS.iter().enumerate() {
            assert!(
                DECLS[i + 1..].iter().all(|e| e.name != d.name),
                "{} twice",
                d.name
            );
            if let Some(text) = d.default {
                assert!(
                    serde_json::from_str::<serde_json::Value>(text).is_ok(),
                    "{}: {text}",
                    d.name
                );
            }
        }
    }
}

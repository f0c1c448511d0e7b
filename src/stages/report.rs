//! `report`: the results of a set of runs as Table 2 (CSV and Markdown),
//! judged claims, figures and an HTML page.
//!
//! Contract: `deps` are run directories (each holding the `evaluate` stage's
//! `result.json` and `metrics.csv`) or directories searched recursively for
//! them; the single out is the results directory, which receives table2.csv,
//! table2.md, index.html and the figures (PNG and SVG).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::registry::{KindMeta, ParamDecl, StageContext, StageKind};
use crate::report::claims::ClaimOptions;
use crate::report::{ReportOptions, write_report};

pub struct Report;

const PARAMS: &[ParamDecl] = &[
    ParamDecl {
        name: "title",
        default: Some("\"Incremental training: Table 2 reproduction\""),
        help: "heading of table2.md and index.html",
    },
    ParamDecl {
        name: "confidence",
        default: Some("0.95"),
        help: "confidence of the paired intervals that judge the claims (a's TOST runs at 1 - confidence)",
    },
    ParamDecl {
        name: "equivalence_margin",
        default: Some("1.0"),
        help: "claim (a): look-ahead and baseline are equivalent within this many accuracy points",
    },
];

impl StageKind for Report {
    fn meta(&self) -> KindMeta {
        KindMeta {
            name: "report",
            version: 3,
            params: PARAMS,
        }
    }
    fn run(&self, ctx: &StageContext) -> anyhow::Result<()> {
        let [out] = ctx.outs.as_slice() else {
            bail!(
                "report writes exactly one out (the results directory); declare outs = [\"results\"]"
            )
        };
        if ctx.deps.is_empty() {
            bail!("report needs deps: the run directories, or a directory that holds them")
        }
        let opts = options(&ctx.params)?;
        let deps: Vec<PathBuf> = ctx.deps.iter().map(PathBuf::from).collect();
        let s = write_report(&deps, std::path::Path::new(out), &opts)?;
        println!(
            "report: {} runs in {} rows, {} files written to {out}",
            s.runs,
            s.rows,
            s.files.len()
        );
        Ok(())
    }
}

/// The report's options from a report stage's params; absent ones take their defaults.
/// `incrpipe report` builds its options here too, so that it writes what the kind writes.
pub fn options(params: &BTreeMap<String, Value>) -> anyhow::Result<ReportOptions> {
    let defaults = ReportOptions::default();
    let title = match params.get("title") {
        None => defaults.title,
        Some(v) => v.as_str().context("title must be a string")?.to_string(),
    };
    let level = number(params, "confidence", defaults.claims.level, |x| {
        x > 0.5 && x < 1.0
    })
    .context("confidence must be a number in (0.5, 1), e.g. 0.95")?;
    let margin_pp = number(
        params,
        "equivalence_margin",
        defaults.claims.margin_pp,
        |x| x > 0.0,
    )
    .context("equivalence_margin must be a positive number of accuracy points")?;
    Ok(ReportOptions {
        title,
        claims: ClaimOptions {
            level,
            margin_pp,
            ..defaults.claims
        },
    })
}

/// A numeric param, its default when absent; None when it is not a number `ok` accepts.
fn number(
    params: &BTreeMap<String, Value>,
    name: &str,
    default: f64,
    ok: fn(f64) -> bool,
) -> Option<f64> {
    match params.get(name) {
        None => Some(default),
        Some(v) => v.as_f64().filter(|x| ok(*x)),
    }
}

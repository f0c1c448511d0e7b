//! Regression check of a results CSV against committed expected values.
//!
//! Rows are matched by (`network`, `method`), and by `seed` too where the expected file has
//! that column (`runs.csv`: per-seed values). Every cell of the expected file
//! that parses as a number is compared with the same column of the results,
//! within that column's tolerance: |got - expected| <= abs + rel x |expected|.
//! Cells that are not numbers (provenance: commit, device, keys) are not
//! compared, because they legitimately differ between machines.
//!
//! Tolerances live beside the expected file, `NAME.tolerances.toml` for
//! `NAME.csv`:
//!
//! ```toml
//! [default]            # columns not listed below (default: exact)
//! abs = 0.0
//! rel = 0.0
//! [columns.test_accuracy]
//! abs = 1.2            # percentage points
//! why = "3 x the largest seed standard deviation (0.4 pp)"
//! [columns.train_flops]
//! rel = 0.05
//! [columns.seconds]
//! ignore = true
//! ```
//!
//! [`write_expected`] makes both files from a results CSV: every column `X`
//! with a companion `X_std` gets abs = k x (the largest `X_std` over rows),
//! and `X_std` itself the same; columns derived from another (`diff_vs_paper`)
//! are ignored; the other numeric columns stay exact.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::error::ReportError;

/// Columns computed from another column: they move with it, so checking them
/// again (exactly) would fail whenever the source moves within its tolerance.
const DERIVED: [(&str, &str); 1] = [("diff_vs_paper", "test_accuracy")];

/// The columns that identify a row: the first two always, `seed` where the file has it.
pub const KEY: [&str; 3] = ["network", "method", "seed"];

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Tolerance {
    #[serde(default)]
    pub abs: f64,
    #[serde(default)]
    pub rel: f64,
    #[serde(default)]
    pub ignore: bool,
}

impl Tolerance {
    pub fn allowed(&self, expected: f64) -> f64 {
        self.abs + self.rel * expected.abs()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ColumnEntry {
    #[serde(flatten)]
    tol: Tolerance,
    /// How the number was made; for the reader, and for [`write_expected`], which keeps
    /// an entry whose `why` starts with [`HAND_EDITED`].
    why: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TolFile {
    #[serde(default)]
    default: Tolerance,
    #[serde(default)]
    columns: BTreeMap<String, ColumnEntry>,
}

#[derive(Debug, Clone, Default)]
pub struct Tolerances {
    pub default: Tolerance,
    pub columns: BTreeMap<String, Tolerance>,
}

impl Tolerances {
    pub fn for_column(&self, c: &str) -> Tolerance {
        self.columns.get(c).copied().unwrap_or(self.default)
    }

    pub fn load(path: &Path) -> Result<Tolerances, ReportError> {
        let text = std::fs::read_to_string(path).map_err(ReportError::io(path))?;
        let f: TolFile = toml::from_str(&text).map_err(|e| ReportError::Invalid {
            path: path.to_path_buf(),
            what: e.to_string(),
        })?;
        let bad = std::iter::once(("default", &f.default))
            .chain(f.columns.iter().map(|(k, v)| (k.as_str(), &v.tol)))
            .find(|(_, t)| !(t.abs >= 0.0 && t.rel >= 0.0));
        if let Some((c, _)) = bad {
            return Err(ReportError::Invalid {
                path: path.to_path_buf(),
                what: format!("tolerance of `{c}` must be non-negative"),
            });
        }
        Ok(Tolerances {
            default: f.default,
            columns: f.columns.into_iter().map(|(k, v)| (k, v.tol)).collect(),
        })
    }
}

/// The tolerance file that belongs to an expected CSV.
pub fn companion(expected: &Path) -> PathBuf {
    let stem = expected
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    expected.with_file_name(format!("{stem}.tolerances.toml"))
}

/// A row's key: its network and method, and its seed in a per-seed file.
pub type RowKey = Vec<String>;

/// `network/method[/seed N]`, for messages.
pub fn key_label(k: &RowKey) -> String {
    match k.as_slice() {
        [n, m, s] => format!("{n}/{m}/seed {s}"),
        other => other.join("/"),
    }
}

/// A CSV with a header, rows keyed by [`KEY`].
#[derive(Debug, Clone)]
pub struct Table {
    pub headers: Vec<String>,
    pub rows: Vec<(RowKey, Vec<String>)>,
}

impl Table {
    pub fn read(path: &Path) -> Result<Table, ReportError> {
        let mut rd = csv::Reader::from_path(path).map_err(ReportError::csv(path))?;
        let headers: Vec<String> = rd
            .headers()
            .map_err(ReportError::csv(path))?
            .iter()
            .map(String::from)
            .collect();
        let idx = |c: &str| {
            headers
                .iter()
                .position(|h| h == c)
                .ok_or_else(|| ReportError::Invalid {
                    path: path.to_path_buf(),
                    what: format!("no `{c}` column (rows are matched by network and method)"),
                })
        };
        let mut keys = vec![idx(KEY[0])?, idx(KEY[1])?];
        keys.extend(headers.iter().position(|h| h == KEY[2]));
        let mut rows: Vec<(RowKey, Vec<String>)> = Vec::new();
        for rec in rd.records() {
            let rec = rec.map_err(ReportError::csv(path))?;
            let cells: Vec<String> = rec.iter().map(String::from).collect();
            let key: RowKey = keys.iter().map(|&i| cells[i].clone()).collect();
            if rows.iter().any(|(k, _)| *k == key) {
                return Err(ReportError::Invalid {
                    path: path.to_path_buf(),
                    what: format!("two rows for {}", key_label(&key)),
                });
            }
            rows.push((key, cells));
        }
        Ok(Table { headers, rows })
    }

    fn col(&self, c: &str) -> Option<usize> {
        self.headers.iter().position(|h| h == c)
    }

    fn row(&self, key: &RowKey) -> Option<&[String]> {
        self.rows
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// The row, as [`key_label`] writes it.
    pub row: String,
    pub column: String,
    pub expected: f64,
    /// None when the results lack the column or its cell is not a number.
    pub got: Option<f64>,
    pub tolerance: f64,
    pub ok: bool,
}

impl Cell {
    pub fn delta(&self) -> Option<f64> {
        self.got.map(|g| g - self.expected)
    }
}

#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    pub cells: Vec<Cell>,
    pub missing_rows: Vec<RowKey>,
    /// Rows of the results that the expected file does not have (reported, not failed).
    pub extra_rows: Vec<RowKey>,
}

impl CheckReport {
    pub fn passed(&self) -> bool {
        self.missing_rows.is_empty() && self.cells.iter().all(|c| c.ok)
    }

    /// The cells that moved or failed, as a fixed-width table, then a summary.
    pub fn render(&self, all: bool) -> String {
        let mut s = String::new();
        let shown: Vec<&Cell> = self
            .cells
            .iter()
            .filter(|c| all || !c.ok || c.delta() != Some(0.0))
            .collect();
        let fmt = |x: f64| {
            format!("{x:.6}")
                .trim_end_matches('0')
                .trim_end_matches('.')
                .to_string()
        };
        let mut lines = vec![[
            "row".to_string(),
            "column".into(),
            "expected".into(),
            "got".into(),
            "delta".into(),
            "tolerance".into(),
            "".into(),
        ]];
        for c in &shown {
            lines.push([
                c.row.clone(),
                c.column.clone(),
                fmt(c.expected),
                c.got.map_or("(missing)".into(), fmt),
                c.delta().map_or("".into(), |d| {
                    format!("{}{}", if d > 0.0 { "+" } else { "" }, fmt(d))
                }),
                fmt(c.tolerance),
                if c.ok { "OK" } else { "FAIL" }.into(),
            ]);
        }
        if !shown.is_empty() {
            let w: Vec<usize> = (0..7)
                .map(|i| {
                    lines
                        .iter()
                        .map(|l| l[i].chars().count())
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            for l in &lines {
                let row: Vec<String> = l.iter().zip(&w).map(|(c, w)| format!("{c:<w$}")).collect();
                let _ = writeln!(s, "{}", row.join("  ").trim_end());
            }
        }
        for k in &self.missing_rows {
            let _ = writeln!(
                s,
                "FAIL missing row {}: expected, not in the results",
                key_label(k)
            );
        }
        for k in &self.extra_rows {
            let _ = writeln!(
                s,
                "note: row {} is in the results but not expected (not checked)",
                key_label(k)
            );
        }
        let failed = self.cells.iter().filter(|c| !c.ok).count();
        let moved = self.cells.iter().filter(|c| c.delta() != Some(0.0)).count();
        let _ = writeln!(
            s,
            "{}: {} cells compared, {moved} moved, {failed} out of tolerance, {} rows missing",
            if self.passed() { "PASS" } else { "FAIL" },
            self.cells.len(),
            self.missing_rows.len()
        );
        s
    }
}

fn number(s: &str) -> Option<f64> {
    let t = s.trim();
    if t.is_empty() {
        return None;
    }
    t.parse::<f64>().ok()
}

/// Compares `results` with `expected` under `tol`.
pub fn check(results: &Table, expected: &Table, tol: &Tolerances) -> CheckReport {
    let mut rep = CheckReport::default();
    for (key, exp) in &expected.rows {
        let Some(got) = results.row(key) else {
            rep.missing_rows.push(key.clone());
            continue;
        };
        for (i, column) in expected.headers.iter().enumerate() {
            let t = tol.for_column(column);
            if KEY.contains(&column.as_str()) || t.ignore {
                continue;
            }
            let Some(e) = exp.get(i).and_then(|c| number(c)) else {
                continue;
            };
            let g = results
                .col(column)
                .and_then(|j| got.get(j))
                .and_then(|c| number(c));
            let allowed = t.allowed(e);
            let ok = match g {
                // Equal spellings compare equal even when both are NaN.
                Some(g) => (g - e).abs() <= allowed || (g.is_nan() && e.is_nan()),
                None => false,
            };
            rep.cells.push(Cell {
                row: key_label(key),
                column: column.clone(),
                expected: e,
                got: g,
                tolerance: allowed,
                ok,
            });
        }
    }
    rep.extra_rows = results
        .rows
        .iter()
        .map(|(k, _)| k.clone())
        .filter(|k| expected.row(k).is_none())
        .collect();
    rep
}

/// Loads the files and compares. `tolerances` defaults to the expected file's companion.
pub fn check_files(
    results: &Path,
    expected: &Path,
    tolerances: Option<&Path>,
) -> Result<CheckReport, ReportError> {
    let tpath = tolerances.map_or_else(|| companion(expected), Path::to_path_buf);
    if !tpath.exists() {
        return Err(ReportError::Invalid {
            path: tpath,
            what: "no tolerance file: make one with `incrpipe check RESULTS.csv --expected EXPECTED.csv --write-expected`, or name one with --tolerances".into(),
        });
    }
    let tol = Tolerances::load(&tpath)?;
    Ok(check(&Table::read(results)?, &Table::read(expected)?, &tol))
}

/// The start of a tolerance's `why` that marks it as set by hand: `--write-expected`
/// keeps such entries as they are.
pub const HAND_EDITED: &str = "edited by hand";

/// The hand-edited entries of an existing tolerance file, rendered as they are; an
/// unreadable file is an error rather than something to overwrite.
fn hand_edited(tpath: &Path) -> Result<BTreeMap<String, String>, ReportError> {
    if !tpath.exists() {
        return Ok(BTreeMap::new());
    }
    let text = std::fs::read_to_string(tpath).map_err(ReportError::io(tpath))?;
    let f: TolFile = toml::from_str(&text).map_err(|e| ReportError::Invalid {
        path: tpath.to_path_buf(),
        what: format!("{e}; fix it or remove it before --write-expected rewrites it"),
    })?;
    Ok(f.columns
        .into_iter()
        .filter_map(|(c, e)| {
            let why = e.why.filter(|w| w.starts_with(HAND_EDITED))?;
            let mut t = format!("[columns.{c}]\n");
            if e.tol.ignore {
                t += "ignore = true\n";
            } else {
                t += &format!("abs = {:?}\nrel = {:?}\n", e.tol.abs, e.tol.rel);
            }
            t += &format!("why = {}\n", toml::Value::String(why));
            Some((c, t))
        })
        .collect())
}

/// Writes `expected` (a copy of `results`) and its companion tolerance file.
/// `command` is recorded in the tolerance file so that the numbers can be remade.
/// Entries of an existing tolerance file marked [`HAND_EDITED`] are kept unchanged.
pub fn write_expected(
    results: &Path,
    expected: &Path,
    sigmas: f64,
    command: &str,
) -> Result<PathBuf, ReportError> {
    let table = Table::read(results)?;
    let tpath = companion(expected);
    let kept = hand_edited(&tpath)?;
    let bytes = std::fs::read(results).map_err(ReportError::io(results))?;
    if let Some(dir) = expected.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(ReportError::io(dir))?;
    }
    std::fs::write(expected, bytes).map_err(ReportError::io(expected))?;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Tolerances of {} for `incrpipe check` (|got - expected| <= abs + rel x |expected|).\n\
         # Made by: {command}\n\
         # Each column X with a companion X_std: abs = {sigmas} x the largest X_std over the rows\n\
         # (the measured seed spread); X_std itself gets the same. Other numeric columns are exact\n\
         # ([default]); edit a column's entry by hand to loosen it, and say why in a `why` that\n\
         # starts with \"{HAND_EDITED}\": --write-expected keeps such entries.\n",
        expected
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    );
    let _ = writeln!(s, "[default]\nabs = 0.0\nrel = 0.0\n");
    for entry in kept.values() {
        let _ = writeln!(s, "{entry}");
    }
    for h in &table.headers {
        let std_col = format!("{h}_std");
        let Some(j) = table.col(&std_col) else {
            continue;
        };
        let max_std = table
            .rows
            .iter()
            .filter_map(|(_, r)| r.get(j).and_then(|c| number(c)))
            .filter(|v| v.is_finite())
            .fold(0.0f64, f64::max);
        let abs = sigmas * max_std;
        for c in [h.as_str(), std_col.as_str()]
            .into_iter()
            .filter(|c| !kept.contains_key(*c))
        {
            let _ = writeln!(
                s,
                "[columns.{c}]\nabs = {abs:?}\nwhy = \"{sigmas} x largest {std_col} ({max_std})\"\n"
            );
        }
    }
    for (c, of) in DERIVED {
        if table.col(c).is_some() && !kept.contains_key(c) {
            let _ = writeln!(
                s,
                "[columns.{c}]\nignore = true\nwhy = \"derived from {of}, which is checked\"\n"
            );
        }
    }
    std::fs::write(&tpath, s).map_err(ReportError::io(&tpath))?;
    Ok(tpath)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(csv: &str) -> Table {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("t.csv");
        std::fs::write(&p, csv).unwrap();
        Table::read(&p).unwrap()
    }

    #[test]
    fn write_expected_keeps_hand_edited_tolerances() {
        let d = tempfile::tempdir().unwrap();
        let results = d.path().join("r.csv");
        std::fs::write(
            &results,
            "network,method,seed,test_accuracy,test_accuracy_std\nn,baseline,1,50.0,2.0\nn,random,1,40.0,1.0\n",
        )
        .unwrap();
        let expected = d.path().join("e.csv");
        let tpath = write_expected(&results, &expected, 3.0, "cmd").unwrap();
        let t = Tolerances::load(&tpath).unwrap();
        assert_eq!(t.for_column("test_accuracy").abs, 6.0);
        let edited = std::fs::read_to_string(&tpath).unwrap().replace(
            "[columns.test_accuracy]\nabs = 6.0\nwhy = \"3 x largest test_accuracy_std (2)\"",
            "[columns.test_accuracy]\nabs = 0.25\nwhy = \"edited by hand: the kernel paths' spread\"",
        );
        assert!(edited.contains("abs = 0.25"), "{edited}");
        std::fs::write(&tpath, edited).unwrap();
        write_expected(&results, &expected, 3.0, "cmd").unwrap();
        let t = Tolerances::load(&tpath).unwrap();
        assert_eq!(t.for_column("test_accuracy").abs, 0.25);
        assert_eq!(t.for_column("test_accuracy_std").abs, 6.0);
        // Rows are keyed by seed too when the file has that column.
        let exp = Table::read(&expected).unwrap();
        assert_eq!(exp.rows[1].0, vec!["n", "random", "1"]);
    }

    #[test]
    fn within_and_beyond_tolerance() {
        let exp = table("network,method,test_accuracy,device\nn,baseline,50.0,cpu\n");
        let mut tol = Tolerances::default();
        tol.columns.insert(
            "test_accuracy".into(),
            Tolerance {
                abs: 1.0,
                rel: 0.0,
                ignore: false,
            },
        );
        let near = table("network,method,test_accuracy,device\nn,baseline,50.9,cuda\n");
        assert!(check(&near, &exp, &tol).passed());
        let far = table("network,method,test_accuracy,device\nn,baseline,51.1,cpu\n");
        let r = check(&far, &exp, &tol);
        assert!(!r.passed());
        assert!(r.render(false).contains("FAIL"), "{}", r.render(false));
        assert_eq!(
            companion(Path::new("a/b.csv")),
            Path::new("a/b.tolerances.toml")
        );
    }
}

//! `incrpipe check`: a results CSV against committed expected values (see
//! [`incrpipe::report::check`] for the rule and the tolerance file).

use std::path::PathBuf;
use std::process::ExitCode;

use incrpipe::report::check;

#[derive(clap::Args)]
pub struct CheckArgs {
    /// The results CSV (e.g. results/table2.csv).
    pub results: PathBuf,
    /// The expected CSV (e.g. tests/expected/table2-cpu-runs.csv).
    #[arg(long)]
    pub expected: PathBuf,
    /// Tolerance file (default: EXPECTED with `.csv` replaced by `.tolerances.toml`).
    #[arg(long)]
    pub tolerances: Option<PathBuf>,
    /// Instead of checking, write EXPECTED (a copy of RESULTS) and its tolerance
    /// file, tolerances being --sigmas x the seed spread measured in RESULTS.
    #[arg(long)]
    pub write_expected: bool,
    /// With --write-expected: how many seed standard deviations a number may move.
    #[arg(long, default_value_t = 3.0)]
    pub sigmas: f64,
    /// Print every compared cell, not only those that moved.
    #[arg(long)]
    pub all: bool,
}

/// 0: within tolerance; 1: something moved too far or a row is missing;
/// 2: a file could not be read.
pub fn run(a: CheckArgs) -> ExitCode {
    if a.write_expected {
        let command = format!(
            "incrpipe check {} --expected {} --write-expected --sigmas {}",
            a.results.display(),
            a.expected.display(),
            a.sigmas
        );
        return match check::write_expected(&a.results, &a.expected, a.sigmas, &command) {
            Ok(t) => {
                println!("wrote {} and {}", a.expected.display(), t.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        };
    }
    match check::check_files(&a.results, &a.expected, a.tolerances.as_deref()) {
        Ok(r) => {
            print!("{}", r.render(a.all));
            if r.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

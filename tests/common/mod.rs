//! A fluent test workspace: files in a temp dir, the real `incrpipe` binary run
//! in it, and assertions that print the whole output when they fail.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct Ws {
    pub dir: tempfile::TempDir,
}

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub args: String,
}

impl Out {
    fn context(&self) -> String {
        format!(
            "incrpipe {}\n--- exit {}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.args, self.code, self.stdout, self.stderr
        )
    }
    pub fn code(&self, want: i32) -> &Self {
        assert_eq!(self.code, want, "unexpected exit code\n{}", self.context());
        self
    }
    pub fn ok(&self) -> &Self {
        self.code(0)
    }
    pub fn stderr_has(&self, s: &str) -> &Self {
        assert!(
            self.stderr.contains(s),
            "stderr lacks {s:?}\n{}",
            self.context()
        );
        self
    }
    pub fn stdout_has(&self, s: &str) -> &Self {
        assert!(
            self.stdout.contains(s),
            "stdout lacks {s:?}\n{}",
            self.context()
        );
        self
    }
    /// (ran, cached, restored) from the run summary line.
    pub fn counts(&self) -> (usize, usize, usize) {
        let line = self
            .stderr
            .lines()
            .rev()
            .find(|l| l.contains(" ran, "))
            .unwrap_or_else(|| panic!("no summary\n{}", self.context()));
        let num = |w: &str| -> usize {
            let before = line.split(&format!(" {w}")).next().unwrap();
            before
                .rsplit([' ', ',', ':'])
                .find(|s| !s.is_empty())
                .unwrap()
                .parse()
                .unwrap()
        };
        (num("ran"), num("cached"), num("restored"))
    }
    pub fn ran(&self) -> usize {
        self.counts().0
    }
}

impl Ws {
    pub fn new() -> Ws {
        Ws {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn file(&self, rel: &str, content: &str) -> &Ws {
        let p = self.dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
        self
    }
    pub fn pipeline(&self, toml: &str) -> &Ws {
        self.file("p.toml", toml)
    }
    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(rel))
            .unwrap_or_else(|e| panic!("read {rel}: {e}"))
    }
    pub fn exists(&self, rel: &str) -> bool {
        self.dir.path().join(rel).exists()
    }
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.args(args)
            .current_dir(self.dir.path())
            .env_remove("INCRPIPE_CACHE")
            .env_remove("CUDA_VISIBLE_DEVICES")
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdin(Stdio::null());
        c
    }
    pub fn run(&self, args: &[&str]) -> Out {
        let o: Output = self.command(args).output().unwrap();
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            args: args.join(" "),
        }
    }
    /// Lines appended by stages to `runs.log` (not an out), i.e. which stages executed.
    pub fn runs(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("runs.log"))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }
    pub fn clear_runs(&self) {
        let _ = std::fs::remove_file(self.dir.path().join("runs.log"));
    }
}

/// CIFAR-10 for the tests: `$INCRPIPE_CIFAR10`, else the copy beside this repository.
pub fn cifar_dir() -> PathBuf {
    incrpipe::engine::data::cifar_dir_from_env().unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/cifar-10-batches-bin")
    })
}

/// [`cifar_dir`] as text, for pipeline files and command lines.
pub fn cifar_dir_str() -> String {
    cifar_dir().to_string_lossy().into_owned()
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_incrpipe"))
}

/// How `incrpipe dag` labels a built-in kind: `[kind: NAME vVERSION]`, with the version the
/// code has now (so tests do not repeat version numbers that a kind's change must bump).
#[allow(dead_code)]
pub fn kind_label(name: &str) -> String {
    let r = incrpipe::stages::registry();
    let kind = r
        .get(name)
        .unwrap_or_else(|| panic!("no built-in kind {name:?}"));
    format!("[kind: {name} v{}]", kind.version())
}

/// Width and height from a PNG's IHDR chunk.
pub fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    assert_eq!(&bytes[12..16], b"IHDR");
    let be = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap());
    (be(16), be(20))
}

// ---- a real headless browser ----

/// The headless browser the HTML tests use (scripts/test.sh installs it).
pub fn chromium() -> PathBuf {
    for name in ["chromium", "chromium-browser"] {
        if let Ok(o) = Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
        {
            let p = String::from_utf8_lossy(&o.stdout).trim().to_string();
            if o.status.success() && !p.is_empty() {
                return PathBuf::from(p);
            }
        }
    }
    panic!(
        "chromium is not installed, and this test needs a real browser: install it with \
         `apt-get update && apt-get install -y --no-install-recommends chromium` \
         (scripts/test.sh does this before cargo test)"
    );
}

/// The DOM of `page` after load (and after its scripts ran), from headless chromium.
pub fn dump_dom(page: &Path) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--allow-file-access-from-files",
            // Lets the load handler run before the DOM is dumped.
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("chromium did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success() && out.contains("</html>"),
        "chromium failed ({}):\n{}\n{out}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

//! Which kernel path the CPU backend takes: chosen once per process from
//! `INCRPIPE_KERNELS` (`auto`, the default: the best the CPU has), so that tests and
//! benchmarks can force each path in a child process, and a run records the one it used.

use std::cell::Cell;
use std::fmt;
use std::sync::OnceLock;

/// The variable that forces a path.
pub const ENV: &str = "INCRPIPE_KERNELS";

/// A kernel path. `portable` does not fuse multiply and add and `reference` is burn's own
/// ops, so each gives its own bits; `avx512` gives the bits of `avx2+fma` (it widens the
/// columns a micro-kernel and a row loop work on, never the order of any sum).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KernelPath {
    /// burn's own ops (the kernels off): the side the kernels are tested against.
    Reference,
    /// The kernels without FMA (any x86-64 or other CPU).
    Portable,
    /// The AVX2 + FMA micro-kernel.
    Avx2Fma,
    /// AVX-512F: 32-column micro-tiles and 16-lane row loops, the same sums as `Avx2Fma`.
    Avx512,
}

impl KernelPath {
    pub const ALL: [KernelPath; 4] = [
        KernelPath::Reference,
        KernelPath::Portable,
        KernelPath::Avx2Fma,
        KernelPath::Avx512,
    ];

    pub fn name(self) -> &'static str {
        match self {
            KernelPath::Reference => "reference",
            KernelPath::Portable => "portable",
            KernelPath::Avx2Fma => "avx2+fma",
            KernelPath::Avx512 => "avx512",
        }
    }

    /// Whether this CPU can run the path.
    pub fn available(self) -> bool {
        match self {
            KernelPath::Reference | KernelPath::Portable => true,
            KernelPath::Avx2Fma => cpu_has_avx2_fma(),
            KernelPath::Avx512 => cpu_has_avx2_fma() && cpu_has_avx512f(),
        }
    }

    /// Whether the path runs the FMA kernels (the AVX2 ones, and AVX-512's beside them).
    pub fn fuses(self) -> bool {
        matches!(self, KernelPath::Avx2Fma | KernelPath::Avx512)
    }

    /// The fastest path this CPU has.
    pub fn best() -> KernelPath {
        if KernelPath::Avx512.available() {
            KernelPath::Avx512
        } else if KernelPath::Avx2Fma.available() {
            KernelPath::Avx2Fma
        } else {
            KernelPath::Portable
        }
    }

    /// Every path this CPU can run.
    pub fn available_here() -> Vec<KernelPath> {
        KernelPath::ALL
            .into_iter()
            .filter(|p| p.available())
            .collect()
    }
}

impl fmt::Display for KernelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A value of `INCRPIPE_KERNELS` that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    #[error(
        "{ENV}={0:?} is not a kernel path: use auto, reference, portable, avx2+fma or avx512 (or unset it)"
    )]
    Unknown(String),
    #[error("{ENV}={0} asks for a path this CPU lacks (it has: {1}); use auto or one of those")]
    Unavailable(KernelPath, String),
    #[error("INCRPIPE_REFERENCE_OPS is no longer read: use {ENV}=reference instead")]
    Renamed,
}

/// The path a value of `INCRPIPE_KERNELS` asks for (`None`: unset).
pub fn parse(value: Option<&str>) -> Result<KernelPath, SelectError> {
    let path = match value.map(str::trim) {
        None | Some("") | Some("auto") => return Ok(KernelPath::best()),
        Some("reference") => KernelPath::Reference,
        Some("portable") => KernelPath::Portable,
        Some("avx2+fma") | Some("avx2") => KernelPath::Avx2Fma,
        Some("avx512") => KernelPath::Avx512,
        Some(other) => return Err(SelectError::Unknown(other.to_string())),
    };
    if !path.available() {
        let have: Vec<&str> = KernelPath::available_here()
            .into_iter()
            .map(KernelPath::name)
            .collect();
        return Err(SelectError::Unavailable(path, have.join(", ")));
    }
    Ok(path)
}

/// The process's path from the environment, or why it cannot be used. The binary calls
/// this first, so that a bad value stops a run before any stage starts.
pub fn from_env() -> Result<KernelPath, SelectError> {
    if std::env::var_os("INCRPIPE_REFERENCE_OPS").is_some() {
        return Err(SelectError::Renamed);
    }
    parse(std::env::var(ENV).ok().as_deref())
}

/// The process's path (read once).
///
/// # Panics
/// When `INCRPIPE_KERNELS` is invalid and the program did not check [`from_env`] first.
pub fn process() -> KernelPath {
    static PATH: OnceLock<KernelPath> = OnceLock::new();
    *PATH.get_or_init(|| from_env().unwrap_or_else(|e| panic!("{e}")))
}

thread_local! {
    static FORCED: Cell<Option<KernelPath>> = const { Cell::new(None) };
}

/// The path on this thread: [`with_path`]'s when inside one, otherwise the process's.
pub fn current() -> KernelPath {
    FORCED.with(Cell::get).unwrap_or_else(process)
}

/// Runs `f` with `path` on this thread, for side-by-side comparisons in one process. Only
/// this thread: work a kernel fans out to rayon's threads takes the process's path there,
/// so a whole training run on one path needs `INCRPIPE_KERNELS` in a child process.
///
/// # Panics
/// When the CPU lacks `path`.
pub fn with_path<R>(path: KernelPath, f: impl FnOnce() -> R) -> R {
    assert!(path.available(), "this CPU lacks the {path} kernel path");
    let before = FORCED.with(|c| c.replace(Some(path)));
    let r = f();
    FORCED.with(|c| c.set(before));
    r
}

fn cpu_has_avx512f() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

fn cpu_has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_name_a_path_or_say_what_is_accepted() {
        assert_eq!(parse(None), Ok(KernelPath::best()));
        assert_eq!(parse(Some("auto")), Ok(KernelPath::best()));
        assert_eq!(parse(Some(" portable ")), Ok(KernelPath::Portable));
        assert_eq!(parse(Some("reference")), Ok(KernelPath::Reference));
        let e = parse(Some("avx3")).unwrap_err().to_string();
        assert!(e.contains("\"avx3\" is not a kernel path"), "{e}");
        assert!(
            e.contains("auto, reference, portable, avx2+fma or avx512"),
            "{e}"
        );
        for (name, path) in [
            ("avx2+fma", KernelPath::Avx2Fma),
            ("avx512", KernelPath::Avx512),
        ] {
            if path.available() {
                assert_eq!(parse(Some(name)), Ok(path));
            } else {
                let e = parse(Some(name)).unwrap_err().to_string();
                assert!(e.contains("this CPU lacks"), "{e}");
            }
        }
        // The best path is the widest the CPU has.
        let best = KernelPath::best();
        assert!(KernelPath::available_here().iter().all(|&p| p <= best));
    }

    #[test]
    fn with_path_holds_on_this_thread_only_and_restores() {
        let outside = current();
        with_path(KernelPath::Reference, || {
            assert_eq!(current(), KernelPath::Reference);
            with_path(KernelPath::Portable, || {
                assert_eq!(current(), KernelPath::Portable)
            });
            assert_eq!(current(), KernelPath::Reference);
            let other = std::thread::spawn(current).join().unwrap();
            assert_eq!(other, process());
        });
        assert_eq!(current(), outside);
    }
}

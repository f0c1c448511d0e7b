//! What a run's numbers were computed on: the host CPU and the kernel path. Recorded in
//! every run's provenance, because another CPU's kernel path gives other bits (and so
//! other per-seed results), and a report must say which machine made it.

use std::sync::OnceLock;

/// The vector extensions that decide which kernel path can run, strongest first.
const VECTOR_FLAGS: [&str; 5] = ["avx512f", "avx512vl", "avx2", "fma", "sse4_2"];

/// One line: CPU model, family and vector extensions, then the kernel path, e.g.
/// `Intel(R) Xeon(R) Processor (x86_64 family 6: avx512f avx512vl avx2 fma sse4_2), kernels avx2+fma`.
/// No `;` in it: the report joins distinct values with `;`.
pub fn describe() -> String {
    format!("{}, kernels {}", cpu(), crate::kernels::path())
}

/// The host CPU as `/proc/cpuinfo` names it (read once per process).
pub fn cpu() -> &'static str {
    static CPU: OnceLock<String> = OnceLock::new();
    CPU.get_or_init(|| {
        let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        cpu_from(&info, std::env::consts::ARCH)
    })
}

fn cpu_from(cpuinfo: &str, arch: &str) -> String {
    let field = |name: &str| {
        cpuinfo.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim().to_string())
        })
    };
    let model = field("model name").unwrap_or_else(|| "unknown CPU".into());
    let family = field("cpu family").map_or(String::new(), |f| format!(" family {f}"));
    let flags = field("flags").unwrap_or_default();
    let have: Vec<&str> = VECTOR_FLAGS
        .into_iter()
        .filter(|f| flags.split_whitespace().any(|x| x == *f))
        .collect();
    let ext = if have.is_empty() {
        "no x86 vector extensions listed".to_string()
    } else {
        have.join(" ")
    };
    format!("{model} ({arch}{family}: {ext})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_model_family_and_vector_flags() {
        let info = "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\n\
                    model name\t: Intel(R) Xeon(R) Processor\n\
                    flags\t\t: fpu sse4_2 avx2 fma avx512f avx512vl avx512bw\n";
        assert_eq!(
            cpu_from(info, "x86_64"),
            "Intel(R) Xeon(R) Processor (x86_64 family 6: avx512f avx512vl avx2 fma sse4_2)"
        );
        assert_eq!(
            cpu_from("", "aarch64"),
            "unknown CPU (aarch64: no x86 vector extensions listed)"
        );
        assert!(describe().contains(", kernels "));
    }
}

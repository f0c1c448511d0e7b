//! `incrpipe bench peak`: the host's f32 multiply-add peak, per vector width and thread count,
//! from independent FMA chains that touch no memory. docs/performance.md quotes every kernel
//! and training step as a fraction of it.

use std::time::Instant;

/// Independent accumulators per thread: more than FMA latency x FMA units on any x86 core
/// we know (4 cycles x 2 units), so the chains never wait on each other.
const CHAINS: usize = 12;

/// One measured peak.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Peak {
    /// `xmm` (128 bits), `ymm` (256) or `zmm` (512).
    pub width: &'static str,
    pub lanes: usize,
    pub threads: usize,
    /// Median of the repeats, 2 flops per lane and multiply-add, all threads together.
    pub gflops: f64,
}

/// The vector widths with FMA this CPU has, narrowest first.
pub fn widths() -> Vec<(&'static str, usize)> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        let mut w = Vec::new();
        if has!("fma") && has!("avx") {
            w.push(("xmm", 4));
            w.push(("ymm", 8));
        }
        if has!("avx512f") {
            w.push(("zmm", 16));
        }
        w
    }
    #[cfg(not(target_arch = "x86_64"))]
    Vec::new()
}

/// `iters` (a multiple of 64) rounds of [`CHAINS`] multiply-adds of `lanes` floats on this thread. The result
/// is returned so that the work cannot be dropped.
fn chains(lanes: usize, iters: u64) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `widths` lists a width only when the CPU has its instructions.
        unsafe {
            match lanes {
                4 => return x86::xmm(iters),
                8 => return x86::ymm(iters),
                16 => return x86::zmm(iters),
                _ => {}
            }
        }
    }
    unreachable!("no FMA of {lanes} lanes on this CPU ({iters} rounds)")
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::CHAINS;
    use std::arch::x86_64::*;
    use std::hint::black_box;

    // Each chain is acc = acc * m + c with m just below 1: the values stay normal and bounded.
    macro_rules! chains {
        ($name:ident, $features:literal, $set1:ident, $fmadd:ident, $lane0:expr) => {
            #[target_feature(enable = $features)]
            pub unsafe fn $name(iters: u64) -> f32 {
                let (m, c) = ($set1(0.999_999), $set1(1e-6));
                let mut acc: [_; CHAINS] =
                    std::array::from_fn(|i| $set1(black_box(1.0 + i as f32)));
                for _ in 0..iters / 64 {
                    for _ in 0..64 {
                        for a in acc.iter_mut() {
                            *a = $fmadd(*a, m, c);
                        }
                    }
                    // Keeps the compiler from merging or shortening the chains.
                    black_box(&mut acc);
                }
                acc.into_iter().map($lane0).sum()
            }
        };
    }

    chains!(
        xmm,
        "avx,fma",
        _mm_set1_ps,
        _mm_fmadd_ps,
        |a| _mm_cvtss_f32(a)
    );
    chains!(ymm, "avx,fma", _mm256_set1_ps, _mm256_fmadd_ps, |a| {
        _mm256_cvtss_f32(a)
    });
    // zmm: the sum of the 16 lanes (the test checks both forms).
    chains!(zmm, "avx512f", _mm512_set1_ps, _mm512_fmadd_ps, |a| {
        _mm512_reduce_add_ps(a)
    });
}

/// GFLOP/s of `threads` threads each running the chains for `iters` rounds, once.
fn once(lanes: usize, threads: usize, iters: u64) -> f64 {
    let t0 = Instant::now();
    let sink: f32 = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|_| s.spawn(move || chains(lanes, iters)))
            .collect();
        hs.into_iter().map(|h| h.join().expect("peak thread")).sum()
    });
    std::hint::black_box(sink);
    let flops = 2.0 * (CHAINS * lanes * threads) as f64 * iters as f64;
    flops / t0.elapsed().as_secs_f64() / 1e9
}

/// The peak of every width this CPU has on each thread count: the median of `repeats`
/// runs of about `seconds` each (the round count is calibrated on the first run).
pub fn measure(threads: &[usize], repeats: usize, seconds: f64) -> Vec<Peak> {
    let mut out = Vec::new();
    for (width, lanes) in widths() {
        // Calibrate: rounds that take about `seconds` on one thread.
        let probe = 1 << 20;
        let rate = once(lanes, 1, probe); // GFLOP/s
        let per_round = 2.0 * (CHAINS * lanes) as f64;
        let iters = ((rate * 1e9 * seconds / per_round) as u64).max(1024) / 64 * 64;
        for &t in threads {
            let mut v: Vec<f64> = (0..repeats.max(1)).map(|_| once(lanes, t, iters)).collect();
            v.sort_by(f64::total_cmp);
            out.push(Peak {
                width,
                lanes,
                threads: t,
                gflops: v[v.len() / 2],
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_width_the_cpu_has_is_measured_and_positive() {
        let peaks = measure(&[1], 1, 0.005);
        assert_eq!(peaks.len(), widths().len());
        for p in &peaks {
            assert!(p.gflops > 0.1 && p.gflops.is_finite(), "{p:?}");
        }
    }

    #[test]
    fn the_chains_compute_what_they_say() {
        for (_, lanes) in widths() {
            // After 64 rounds chain i holds f^64(1 + i), f(x) = x m + c; zmm sums its lanes.
            let (m, c) = (0.999_999f32, 1e-6f32);
            let want: f32 = (0..CHAINS)
                .map(|i| (0..64).fold(1.0 + i as f32, |x, _| x.mul_add(m, c)))
                .sum::<f32>()
                * if lanes == 16 { 16.0 } else { 1.0 };
            let got = chains(lanes, 64);
            assert!((got - want).abs() < 1e-2, "{lanes} lanes: {got} vs {want}");
        }
    }
}

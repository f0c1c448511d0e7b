//! CPU slots and the GPU pool: which devices exist, and which stage holds which.

use std::process::Command;

/// The GPUs a run may use: `--gpus`, else CUDA_VISIBLE_DEVICES when already set
/// (inside a Slurm allocation the pool is exactly those), else `nvidia-smi -L`.
pub fn detect_gpus(flag: Option<&str>, cuda_visible: Option<&str>) -> Vec<String> {
    let split = |s: &str| {
        s.split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(String::from)
            .collect::<Vec<_>>()
    };
    if let Some(f) = flag {
        return split(f);
    }
    if let Some(v) = cuda_visible {
        return split(v);
    }
    match Command::new("nvidia-smi").arg("-L").output() {
        Ok(o) if o.status.success() => {
            let n = String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| l.starts_with("GPU "))
                .count();
            (0..n).map(|i| i.to_string()).collect()
        }
        _ => Vec::new(),
    }
}

/// Free CPU slots and free devices.
#[derive(Debug)]
pub struct Pool {
    pub cpus_total: u32,
    cpus_free: u32,
    gpus: Vec<(String, bool)>,
}

impl Pool {
    pub fn new(cpus: u32, gpus: Vec<String>) -> Pool {
        Pool {
            cpus_total: cpus,
            cpus_free: cpus,
            gpus: gpus.into_iter().map(|g| (g, false)).collect(),
        }
    }

    pub fn gpu_count(&self) -> usize {
        self.gpus.len()
    }

    /// A stage never asks for more CPUs than the run has.
    pub fn clamp_cpus(&self, cpus: u32) -> u32 {
        cpus.clamp(1, self.cpus_total)
    }

    /// Whether [`Pool::take`] would succeed now.
    pub fn fits(&self, cpus: u32, gpus: u32) -> bool {
        self.clamp_cpus(cpus) <= self.cpus_free
            && self.gpus.iter().filter(|g| !g.1).count() >= gpus as usize
    }

    /// Reserves `cpus` and `gpus` devices if both are free.
    pub fn take(&mut self, cpus: u32, gpus: u32) -> Option<Vec<String>> {
        let cpus = self.clamp_cpus(cpus);
        let free: Vec<usize> = self
            .gpus
            .iter()
            .enumerate()
            .filter(|(_, g)| !g.1)
            .map(|(i, _)| i)
            .collect();
        if cpus > self.cpus_free || free.len() < gpus as usize {
            return None;
        }
        self.cpus_free -= cpus;
        Some(
            free.into_iter()
                .take(gpus as usize)
                .map(|i| {
                    self.gpus[i].1 = true;
                    self.gpus[i].0.clone()
                })
                .collect(),
        )
    }

    pub fn give(&mut self, cpus: u32, devices: &[String]) {
        self.cpus_free += self.clamp_cpus(cpus);
        for d in devices {
            if let Some(g) = self.gpus.iter_mut().find(|g| &g.0 == d) {
                g.1 = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_are_never_shared() {
        let mut p = Pool::new(4, vec!["0".into(), "1".into()]);
        let a = p.take(1, 1).unwrap();
        let b = p.take(1, 1).unwrap();
        assert_ne!(a, b);
        assert!(p.take(1, 1).is_none());
        p.give(1, &a);
        assert_eq!(p.take(1, 1).unwrap(), a);
    }

    proptest::proptest! {
        /// Any interleaving of stages taking and giving back resources: no device is
        /// ever held twice, CPU slots never go negative, and all comes back in the end.
        #[test]
        fn no_device_is_ever_shared(ops in proptest::collection::vec((1u32..4, 0u32..3, proptest::bool::ANY), 1..60), gpus in 0usize..4, cpus in 1u32..5) {
            let mut p = Pool::new(cpus, (0..gpus).map(|i| i.to_string()).collect());
            let mut held: Vec<(u32, Vec<String>)> = Vec::new();
            for (c, g, give) in ops {
                if give && !held.is_empty() {
                    let (c, d) = held.remove(0);
                    p.give(c, &d);
                } else if let Some(d) = p.take(c, g) {
                    proptest::prop_assert_eq!(d.len(), g as usize);
                    held.push((c, d));
                }
                let mut all: Vec<&String> = held.iter().flat_map(|(_, d)| d).collect();
                let n = all.len();
                all.sort();
                all.dedup();
                proptest::prop_assert_eq!(all.len(), n, "a device is held twice");
                let used: u32 = held.iter().map(|(c, _)| p.clamp_cpus(*c)).sum();
                proptest::prop_assert!(used <= cpus);
            }
            for (c, d) in held.drain(..) {
                p.give(c, &d);
            }
            proptest::prop_assert!(p.take(cpus, gpus as u32).is_some(), "everything was given back");
        }
    }

    #[test]
    fn flag_beats_environment() {
        assert_eq!(detect_gpus(Some("0,1"), Some("3")), vec!["0", "1"]);
        assert_eq!(detect_gpus(None, Some("3")), vec!["3"]);
    }
}

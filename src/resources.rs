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

    #[test]
    fn flag_beats_environment() {
        assert_eq!(detect_gpus(Some("0,1"), Some("3")), vec!["0", "1"]);
        assert_eq!(detect_gpus(None, Some("3")), vec!["3"]);
    }
}

//! Run-time settings passed explicitly from the CLI (or a server) into the libraries.

/// Execution settings. There is deliberately no global default thread pool: whoever
/// builds an engine or a trainer decides how many threads it may use.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Worker threads for the compute kernels (including the calling thread).
    pub threads: usize,
}

impl Settings {
    /// Threads = the number of logical CPUs the process may use.
    pub fn detect() -> Self {
        Settings { threads: cpus() }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self::detect()
    }
}

/// The logical CPUs this process may use (at least 1).
pub fn cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// A requested worker count resolved against the CPUs: `0` means all of them, and more
/// threads than CPUs only make the workers wait on each other (a one-token run with
/// `--threads 1000` took 31 s instead of 0.4 s), so requests are capped at the CPU count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Threads {
    /// The threads to start.
    pub used: usize,
    /// What was asked for (0 = all CPUs).
    pub requested: usize,
    pub cpus: usize,
}

impl Threads {
    /// Resolves `requested` against this machine's CPUs.
    pub fn resolve(requested: usize) -> Self {
        Self::resolve_with(requested, cpus())
    }

    /// Resolves `requested` against `cpus` CPUs.
    pub fn resolve_with(requested: usize, cpus: usize) -> Self {
        let cpus = cpus.max(1);
        let used = if requested == 0 { cpus } else { requested.min(cpus) };
        Threads { used, requested, cpus }
    }

    /// Whether the request was lowered to the CPU count.
    pub fn capped(&self) -> bool {
        self.requested > self.cpus
    }

    /// The notice to show when the request was capped, naming the setting as the user
    /// wrote it (`--threads`, `threads =`).
    pub fn cap_notice(&self, setting: &str) -> Option<String> {
        self.capped().then(|| format!("warning: {setting} {} is more than the {} CPUs this process may use; using {}", self.requested, self.cpus, self.used))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_means_all_and_large_requests_are_capped() {
        assert_eq!(Threads::resolve_with(0, 8).used, 8);
        assert_eq!(Threads::resolve_with(3, 8).used, 3);
        let t = Threads::resolve_with(1000, 2);
        assert_eq!((t.used, t.capped()), (2, true));
        assert_eq!(t.cap_notice("--threads").unwrap(), "warning: --threads 1000 is more than the 2 CPUs this process may use; using 2");
        assert_eq!(Threads::resolve_with(2, 2).cap_notice("--threads"), None);
    }
}

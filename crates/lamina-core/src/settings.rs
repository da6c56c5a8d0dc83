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
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        Settings { threads }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self::detect()
    }
}

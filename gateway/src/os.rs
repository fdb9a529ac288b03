//! The few process-level settings that need libc.

/// Restores the default SIGPIPE action (terminate quietly). Rust ignores SIGPIPE, so a
/// command whose output is piped into `head` would otherwise fail, or panic in `println!`,
/// on the first write after the reader left. Only for the short-lived commands: the daemon
/// keeps ignoring it, so a closed log pipe can never kill the gateway.
pub fn default_sigpipe() {
    // SAFETY: setting a signal disposition to SIG_DFL has no memory effects.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Standard error for the log, where a failed write is dropped instead of reported.
/// tracing-subscriber reports a failed write with `eprintln!`, which panics when stderr itself
/// is the broken pipe (`gkgw run 2>&1 | head -2`); a panic in the task that handles SIGTERM
/// meant the gateway never shut down. A log line that cannot be written is lost, nothing else.
pub struct LogStderr;

impl std::io::Write for LogStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

/// Makes glibc return large allocations (argon2's 7 MiB per password check) to the kernel
/// when they are freed. By default glibc raises its mmap threshold after the first such free,
/// and later ones come from the heap and stay resident: on a 1 GB Pi that is memory we keep
/// for nothing between logins.
pub fn release_large_allocations() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning, and glibc serialises it with allocation.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

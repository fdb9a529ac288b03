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

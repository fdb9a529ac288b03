//! The few process-level settings and OS calls that need libc: signals, the allocator, who
//! runs a command, reading a password from the terminal without echo.

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

/// The heap as glibc's allocator sees it, summed over its arenas: bytes in use (small blocks
/// plus mmapped ones) and bytes it holds from the kernel. Unlike the RSS, this is the program's
/// own memory also under qemu-user, whose translator shares the process.
pub fn heap_bytes() -> Option<(u64, u64)> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads the allocator's statistics, under its arena locks.
        let m = unsafe { libc::mallinfo2() };
        Some(((m.uordblks + m.hblkhd) as u64, (m.arena + m.hblkhd) as u64))
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    None
}

/// The resident set size (`/proc/self/statm`, resident pages).
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

/// Who runs this command, for the audit line of a write: the login user (what `getlogin`
/// reports, from the session's audit login uid, which `sudo` and `su` keep), else the user
/// `sudo` was run by, else the name of the real uid. `$USER` is not used: it is often unset
/// (cron, systemd, `sudo -i` rewrites it) and says nothing `getlogin` does not.
pub fn operator() -> String {
    let sudo_user = || std::env::var("SUDO_USER").ok().filter(|u| !u.is_empty());
    if let Some(name) = login_name().or_else(sudo_user) {
        return name;
    }
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    user_name(uid).unwrap_or_else(|| format!("uid {uid}"))
}

/// `getlogin`: the user logged in on this session, if there is one.
fn login_name() -> Option<String> {
    // SAFETY: getlogin returns null or a NUL-terminated string in a static buffer, valid until
    // the next getlogin call; it is copied at once, and nothing else in gkgw calls getlogin.
    // (libc exposes no getlogin_r for every target.)
    let name = unsafe { libc::getlogin() };
    if name.is_null() {
        return None;
    }
    // SAFETY: non-null, so a NUL-terminated string (above).
    let name = unsafe { std::ffi::CStr::from_ptr(name) };
    Some(name.to_string_lossy().into_owned()).filter(|n| !n.is_empty())
}

/// The user name of `uid` from the passwd database (NSS: files, LDAP, ...).
fn user_name(uid: libc::uid_t) -> Option<String> {
    let mut size = 1024;
    while size <= 1 << 20 {
        let mut buf: Vec<libc::c_char> = vec![0; size];
        // SAFETY: an all-zero passwd is a valid value (null pointers, zero ids); it is only
        // read after getpwuid_r filled it in.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call; the strings in `pwd` point into `buf`,
        // which outlives their use below.
        let rc =
            unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut found) };
        match rc {
            libc::ERANGE => size *= 4,
            0 if !found.is_null() && !pwd.pw_name.is_null() => {
                // SAFETY: on success pw_name is a NUL-terminated string inside `buf`.
                let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
                return Some(name.to_string_lossy().into_owned()).filter(|n| !n.is_empty());
            }
            _ => return None,
        }
    }
    None
}

/// Reads a line from the terminal on standard input with echo off (a password), after writing
/// `prompt` to standard error. The terminal's settings are restored even if reading fails.
pub fn read_hidden(prompt: &str) -> std::io::Result<String> {
    use std::io::{BufRead, Write};
    let fd = libc::STDIN_FILENO;
    // SAFETY: an all-zero termios is a valid value to be filled in by tcgetattr.
    let mut old: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `old` is a valid termios to write into; fd 0 is open (or the call fails).
    if unsafe { libc::tcgetattr(fd, &mut old) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut quiet = old;
    quiet.c_lflag &= !libc::ECHO;
    quiet.c_lflag |= libc::ECHONL;
    /// Puts the terminal back when dropped.
    struct Restore(libc::termios);
    impl Drop for Restore {
        fn drop(&mut self) {
            // SAFETY: restores settings tcgetattr gave for the same descriptor.
            unsafe {
                libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.0);
            }
        }
    }
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    // SAFETY: `quiet` is a valid termios derived from the terminal's own.
    if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let _restore = Restore(old);
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

/// Free and total bytes of the filesystem holding `dir` (free: what an unprivileged process
/// may still use), or None when it cannot be asked.
pub fn disk_space(dir: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is plain data; zero is a valid value for every field.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a struct for statvfs to fill.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let f = st.f_frsize as u64;
    Some((st.f_bavail as u64 * f, st.f_blocks as u64 * f))
}

/// Bytes this process has caused to be written to storage (`write_bytes` of
/// `/proc/self/io`: what reaches the SD card, page cache write-back included), or None off
/// Linux or when the kernel does not account I/O.
pub fn written_bytes() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    #[test]
    fn memory_is_reported_and_grows_with_an_allocation() {
        // Other tests allocate and free meanwhile: the block is far larger than they are.
        const BLOCK: usize = 256 << 20;
        let (used, held) = super::heap_bytes().expect("glibc");
        assert!(used > 0 && held >= used, "{used} {held}");
        let block = vec![1u8; BLOCK];
        let (after, _) = super::heap_bytes().expect("glibc");
        assert!(after >= used + (BLOCK as u64) * 3 / 4, "{used} -> {after}");
        let rss = super::resident_bytes().expect("statm");
        assert!(rss >= (BLOCK as u64) * 3 / 4, "{rss}");
        assert_eq!(block[BLOCK - 1], 1);
    }

    #[test]
    fn the_operator_has_a_name() {
        assert_eq!(super::user_name(0).as_deref(), Some("root"));
        assert!(super::user_name(u32::MAX - 7).is_none());
        assert!(!super::operator().is_empty());
    }
}

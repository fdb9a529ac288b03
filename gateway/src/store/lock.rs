//! One gateway per state directory: a second `gkgw run` on the same store would interleave
//! ids and cursors. The lock is an advisory `flock` on the state directory itself, held for the
//! life of the process (the kernel releases it on any exit, kill -9 included; no file to delete
//! by mistake), with the holder's PID in `{state_dir}/gkgw.pid` so the refusal can name it.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("state directory {dir} is in use by another gkgw (pid {pid}); stop it first, or give this one another store.state_dir")]
    Held { dir: PathBuf, pid: String },
    #[error("cannot lock the state directory {dir}: {error}")]
    Io { dir: PathBuf, error: std::io::Error },
}

/// Held while the gateway runs; dropping it releases the lock.
pub struct StateLock {
    _dir: std::fs::File,
}

pub fn lock_state_dir(dir: &Path) -> Result<StateLock, Error> {
    let io = |error| Error::Io {
        dir: dir.to_owned(),
        error,
    };
    let d = std::fs::File::open(dir).map_err(io)?;
    let pid_file = dir.join("gkgw.pid");
    match d.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let pid = std::fs::read_to_string(&pid_file).unwrap_or_default();
            return Err(Error::Held {
                dir: dir.to_owned(),
                pid: match pid.trim() {
                    "" => "unknown".into(),
                    p => p.to_owned(),
                },
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
    }
    std::fs::write(&pid_file, format!("{}\n", std::process::id())).map_err(io)?;
    Ok(StateLock { _dir: d })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_second_lock_on_the_same_dir_names_the_holder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let held = super::lock_state_dir(dir.path()).expect("first");
        let err = super::lock_state_dir(dir.path())
            .err()
            .expect("second must fail")
            .to_string();
        assert!(
            err.contains(&format!(
                "in use by another gkgw (pid {})",
                std::process::id()
            )),
            "{err}"
        );
        drop(held);
        super::lock_state_dir(dir.path()).expect("free again");
    }
}

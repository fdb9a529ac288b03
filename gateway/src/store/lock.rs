//! One gateway per state directory: a second `gkgw run` on the same store would interleave
//! ids and cursors. The lock is an advisory `flock` on `{state_dir}/gkgw.lock`, held for the life
//! of the process (the kernel releases it on any exit, kill -9 included), with the holder's PID
//! written in the file so the refusal can name it.

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("state directory {dir} is in use by another gkgw (pid {pid}); stop it first, or give this one another store.state_dir")]
    Held { dir: PathBuf, pid: String },
    #[error("cannot lock the state directory {dir}: {source}")]
    Io {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// Held while the gateway runs; dropping it releases the lock.
pub struct StateLock {
    _file: std::fs::File,
}

pub fn lock_state_dir(dir: &Path) -> Result<StateLock, Error> {
    let io = |source| Error::Io {
        dir: dir.to_owned(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join("gkgw.lock"))
        .map_err(io)?;
    match f.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = f.read_to_string(&mut pid);
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
    f.set_len(0).map_err(io)?;
    f.rewind().map_err(io)?;
    writeln!(f, "{}", std::process::id()).map_err(io)?;
    Ok(StateLock { _file: f })
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
            err.contains(&format!("in use by another gkgw (pid {})", std::process::id())),
            "{err}"
        );
        drop(held);
        super::lock_state_dir(dir.path()).expect("free again");
    }
}

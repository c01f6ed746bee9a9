//! One writer per directory: an OS file lock (`flock`) on `DIR/keyward.lock`, which the kernel
//! releases when the holder exits, crashed or not, so a lock is never left stale. The holder's
//! pid is written into the file so that the loser can name it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const LOCK_FILE: &str = "keyward.lock";

/// A held lock; dropping it releases the directory.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    pub dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{what} {} is in use by {}", .dir.display(), holder(*.pid))]
    Busy {
        what: &'static str,
        dir: PathBuf,
        pid: Option<u32>,
    },
    // The cause is in the message, not a `source`: printed once whichever way it is shown.
    #[error("cannot lock {}: {cause}", .dir.display())]
    Io { dir: PathBuf, cause: std::io::Error },
}

fn holder(pid: Option<u32>) -> String {
    match pid {
        Some(p) => format!("pid {p}"),
        None => "another process".into(),
    }
}

/// Creates `dir` (mode 0700) if needed and locks it. A lock held by another process is waited
/// for up to `wait` (zero: refused at once), saying once what it waits for.
pub fn lock(dir: &Path, what: &'static str, wait: Duration) -> Result<DirLock, LockError> {
    let io = |cause| LockError::Io {
        dir: dir.to_path_buf(),
        cause,
    };
    create_private_dir(dir).map_err(io)?;
    let mut opts = OpenOptions::new();
    opts.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut file = opts.open(dir.join(LOCK_FILE)).map_err(io)?;
    let deadline = Instant::now() + wait;
    let mut said = false;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) => {
                let pid = holder_pid(&mut file);
                if Instant::now() >= deadline {
                    return Err(LockError::Busy {
                        what,
                        dir: dir.to_path_buf(),
                        pid,
                    });
                }
                if !said {
                    tracing::warn!(dir = %dir.display(), holder = %holder(pid), wait_seconds = wait.as_secs(), "waiting for the lock on the {what}");
                    said = true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
    }
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .and_then(|()| file.sync_all())
        .map_err(io)?;
    Ok(DirLock {
        _file: file,
        dir: dir.to_path_buf(),
    })
}

fn holder_pid(file: &mut File) -> Option<u32> {
    let mut s = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut s).ok()?;
    s.trim().parse().ok()
}

/// Creates a directory only its owner can enter (0700), with its parents; an existing one is
/// left as it is.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_pid_and_gets_it_after_release() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("data");
        let first = lock(&d, "data directory", Duration::ZERO).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&d).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        let err = lock(&d, "data directory", Duration::ZERO).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "data directory {} is in use by pid {}",
                d.display(),
                std::process::id()
            )
        );
        let waiter = std::thread::spawn({
            let d = d.clone();
            move || lock(&d, "data directory", Duration::from_secs(10)).map(drop)
        });
        std::thread::sleep(Duration::from_millis(300));
        drop(first);
        waiter.join().unwrap().unwrap();
    }
}

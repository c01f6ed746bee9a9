//! Reading the small files keyward is pointed at (TLS certificates and keys, a CA bundle, the
//! configuration, the admin token): only a regular file of a bounded size is read. A FIFO would
//! block the reader forever (a SIGHUP reload, `keyward config`), and `/dev/zero` or a huge file
//! would fill the memory.

use std::io::Read;
use std::path::Path;

/// The most any such file may hold: 1 MiB (a CA bundle of hundreds of certificates fits).
pub const MAX_SMALL_FILE: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{}: {cause}", .path.display())]
    Io {
        path: std::path::PathBuf,
        cause: std::io::Error,
    },
    #[error("{}: not a regular file", .path.display())]
    NotAFile { path: std::path::PathBuf },
    #[error("{}: larger than {max} bytes", .path.display())]
    TooLarge { path: std::path::PathBuf, max: u64 },
}

/// The contents of `path`, which must be a regular file of at most `max` bytes. It is opened
/// without blocking (a FIFO with no writer would otherwise hold the open) and judged by what
/// was opened, not by a name that could change in between.
pub fn read_small(path: &Path, max: u64) -> Result<Vec<u8>, ReadError> {
    let io = |cause| ReadError::Io {
        path: path.to_path_buf(),
        cause,
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut opts, libc::O_NONBLOCK);
    let file = opts.open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(ReadError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let too_large = || ReadError::TooLarge {
        path: path.to_path_buf(),
        max,
    };
    if meta.len() > max {
        return Err(too_large());
    }
    let mut out = Vec::new();
    // The length may have grown since: never read more than the limit.
    file.take(max.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(io)?;
    if out.len() as u64 > max {
        return Err(too_large());
    }
    Ok(out)
}

/// As [`read_small`], as UTF-8 text.
pub fn read_small_text(path: &Path, max: u64) -> Result<String, ReadError> {
    let bytes = read_small(path, max)?;
    String::from_utf8(bytes).map_err(|_| ReadError::Io {
        path: path.to_path_buf(),
        cause: std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_small_regular_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("ok.pem");
        std::fs::write(&ok, "pem").unwrap();
        assert_eq!(read_small(&ok, 10).unwrap(), b"pem");
        assert!(matches!(
            read_small(&ok, 2),
            Err(ReadError::TooLarge { max: 2, .. })
        ));
        assert!(matches!(
            read_small(dir.path(), 10),
            Err(ReadError::NotAFile { .. })
        ));
        assert!(matches!(
            read_small(Path::new("/dev/zero"), 10),
            Err(ReadError::NotAFile { .. })
        ));
        #[cfg(unix)]
        {
            let fifo = dir.path().join("fifo");
            let made = std::process::Command::new("mkfifo").arg(&fifo).status();
            assert!(made.is_ok_and(|s| s.success()), "mkfifo");
            // Would block forever without O_NONBLOCK: there is no writer.
            assert!(matches!(
                read_small(&fifo, 10),
                Err(ReadError::NotAFile { .. })
            ));
        }
    }
}

//! Output files that become visible only when complete: written under a temporary name
//! (`.{name}.tmp`, in the same directory so the rename is atomic) and renamed into place.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use eddy_engine::{ConnectorError, Fault};

/// A temporary file in `dir` that [`Staged::commit`] renames to its final name. Dropped without
/// a commit (a failed run), it removes the temporary file so no half-written output is left.
#[derive(Debug)]
pub(crate) struct Staged {
    tmp: PathBuf,
    dest: PathBuf,
    committed: bool,
}

impl Staged {
    /// Creates `dir` if missing and the temporary file for `{dir}/{name}`.
    pub(crate) fn create(dir: &Path, name: &str) -> Result<(Staged, File), ConnectorError> {
        fs::create_dir_all(dir).map_err(|e| {
            io_error(
                format!(
                    "could not create the output directory {}; check the path and its permissions",
                    dir.display()
                ),
                e,
            )
        })?;
        let dest = dir.join(name);
        let tmp = dir.join(format!(".{name}.tmp"));
        let file = File::create(&tmp).map_err(|e| {
            io_error(
                format!(
                    "could not create {} (the temporary file for {}); check the directory's permissions and free space",
                    tmp.display(),
                    dest.display()
                ),
                e,
            )
        })?;
        Ok((
            Staged {
                tmp,
                dest,
                committed: false,
            },
            file,
        ))
    }

    /// The final path.
    pub(crate) fn dest(&self) -> &Path {
        &self.dest
    }

    /// Renames the (closed, flushed) temporary file into place; returns the final path.
    pub(crate) fn commit(mut self) -> Result<PathBuf, ConnectorError> {
        fs::rename(&self.tmp, &self.dest).map_err(|e| {
            io_error(
                format!(
                    "could not rename {} to {}; check the directory's permissions",
                    self.tmp.display(),
                    self.dest.display()
                ),
                e,
            )
        })?;
        self.committed = true;
        Ok(self.dest.clone())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// An I/O error: the user's fault when the path or permissions are wrong, else external.
pub(crate) fn io_error(what: String, error: io::Error) -> ConnectorError {
    let fault = match error.kind() {
        io::ErrorKind::NotFound
        | io::ErrorKind::PermissionDenied
        | io::ErrorKind::NotADirectory
        | io::ErrorKind::IsADirectory
        | io::ErrorKind::AlreadyExists
        | io::ErrorKind::InvalidInput => Fault::User,
        _ => Fault::External,
    };
    ConnectorError {
        what,
        fault,
        source: Some(Box::new(error)),
    }
}

/// An error for a writer used after `finish` (a bug in the caller).
pub(crate) fn finished_twice(what: &str) -> ConnectorError {
    ConnectorError {
        what: format!("{what} was used after finish()"),
        fault: Fault::Internal,
        source: None,
    }
}

//! Where a command's output goes, and the overwrite rule every file a command writes obeys:
//!
//! - `-` means stdout.
//! - An existing file is never overwritten unless `--force` is given.
//! - The job's checkpoint (and its `-wal`, `-shm`, `-journal` and `.lock` companions) and the
//!   job's input are never overwritten, even with `--force`.
//! - A symlink is followed, never replaced: with `--force` the file it points to is written.
//!
//! A regular file is written under a temporary name beside its target and renamed into place
//! once complete, so a failure never leaves half a file behind (and, without `--force`, the
//! rename refuses a file that appeared meanwhile). Anything else (a device such as
//! `/dev/stdout`, a FIFO) is written in place.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// Why an output file was not written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("{path} already exists; pass --force to overwrite it")]
    Exists { path: PathBuf },
    #[error("{path} is {what}; it is never overwritten, even with --force")]
    Protected { path: PathBuf, what: String },
    #[error("{path} is a directory; name a file")]
    Directory { path: PathBuf },
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Files no output may replace, each with what it is (for the message).
#[derive(Debug, Clone, Default)]
pub struct Protected {
    files: Vec<(PathBuf, String)>,
}

impl Protected {
    /// The checkpoint at `db` with its SQLite and lock companions.
    pub fn checkpoint(db: &Path) -> Protected {
        let mut protected = Protected::default();
        protected.add(db, "the job's checkpoint");
        for suffix in ["-wal", "-shm", "-journal", ".lock"] {
            let mut name = db.as_os_str().to_owned();
            name.push(suffix);
            protected.add(Path::new(&name), &format!("the checkpoint's {suffix} file"));
        }
        protected
    }

    pub fn add(&mut self, path: &Path, what: &str) {
        self.files.push((path.to_path_buf(), what.to_string()));
    }

    /// What `target` is among the protected files, if it is one: the same file on disk (through
    /// any symlink or hard link) or the same path once its directory is resolved.
    fn find(&self, target: &Path) -> Option<&str> {
        let target_id = file_id(target);
        let target_path = resolved(target);
        self.files.iter().find_map(|(path, what)| {
            let same_file = target_id.is_some() && target_id == file_id(path);
            let same_path = target_path.is_some() && target_path == resolved(path);
            (same_file || same_path).then_some(what.as_str())
        })
    }
}

#[cfg(unix)]
fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn file_id(path: &Path) -> Option<(u64, u64)> {
    let _ = path;
    None
}

/// The path with symlinks resolved: the whole path when it exists, else its directory.
fn resolved(path: &Path) -> Option<PathBuf> {
    if let Ok(full) = std::fs::canonicalize(path) {
        return Some(full);
    }
    let name = path.file_name()?;
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    std::fs::canonicalize(dir).ok().map(|dir| dir.join(name))
}

/// An output destination as named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Stdout,
    File(PathBuf),
}

impl Destination {
    pub fn parse(path: &Path) -> Destination {
        if path.as_os_str() == "-" {
            Destination::Stdout
        } else {
            Destination::File(path.to_path_buf())
        }
    }
}

/// A file being written under the overwrite rule; [`OutputFile::finish`] puts it in place.
pub struct OutputFile {
    target: PathBuf,
    kind: Kind,
}

enum Kind {
    /// Written beside the target, renamed into place by `finish`.
    Staged {
        file: BufWriter<tempfile::NamedTempFile>,
        /// Where the rename goes (the symlink's target when `target` is a symlink).
        rename_to: PathBuf,
        replace: bool,
    },
    /// Written where it is (a device or FIFO that `--force` allowed).
    InPlace(BufWriter<File>),
}

impl OutputFile {
    /// Checks `target` against the rule and opens it for writing.
    pub fn create(
        target: &Path,
        force: bool,
        protected: &Protected,
    ) -> Result<OutputFile, OutputError> {
        let io_error = |source| OutputError::Io {
            path: target.to_path_buf(),
            source,
        };
        if let Some(what) = protected.find(target) {
            return Err(OutputError::Protected {
                path: target.to_path_buf(),
                what: what.to_string(),
            });
        }
        // symlink_metadata: a dangling symlink exists too, and is not ours to replace.
        let exists = std::fs::symlink_metadata(target).is_ok();
        if exists && !force {
            return Err(OutputError::Exists {
                path: target.to_path_buf(),
            });
        }
        // Through symlinks: the file a link names is what gets written.
        let kind = match std::fs::metadata(target) {
            Ok(metadata) if metadata.is_dir() => {
                return Err(OutputError::Directory {
                    path: target.to_path_buf(),
                })
            }
            Ok(metadata) if metadata.is_file() => {
                staged(std::fs::canonicalize(target).map_err(io_error)?, true).map_err(io_error)?
            }
            // A device or a FIFO (`/dev/stdout` included): written where it is.
            Ok(_) => Kind::InPlace(BufWriter::new(
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(target)
                    .map_err(io_error)?,
            )),
            Err(err) if err.kind() == io::ErrorKind::NotFound && !exists => {
                staged(target.to_path_buf(), false).map_err(io_error)?
            }
            // A symlink to nothing, or a file we may not read: not ours to guess about.
            Err(err) => return Err(io_error(err)),
        };
        Ok(OutputFile {
            target: target.to_path_buf(),
            kind,
        })
    }

    pub fn path(&self) -> &Path {
        &self.target
    }

    pub fn writer(&mut self) -> &mut dyn Write {
        match &mut self.kind {
            Kind::Staged { file, .. } => file,
            Kind::InPlace(file) => file,
        }
    }

    /// Flushes, syncs and puts the file in place.
    pub fn finish(self) -> Result<(), OutputError> {
        let target = self.target;
        let io_error = |source: io::Error| OutputError::Io {
            path: target.clone(),
            source,
        };
        match self.kind {
            Kind::Staged {
                file,
                rename_to,
                replace,
            } => {
                let file = file
                    .into_inner()
                    .map_err(|err| io_error(err.into_error()))?;
                file.as_file().sync_all().map_err(io_error)?;
                if replace {
                    file.persist(&rename_to)
                        .map_err(|err| io_error(err.error))?;
                } else {
                    // Refuses a file that appeared since the check, instead of replacing it.
                    file.persist_noclobber(&rename_to).map_err(|err| {
                        if err.error.kind() == io::ErrorKind::AlreadyExists {
                            OutputError::Exists {
                                path: target.clone(),
                            }
                        } else {
                            io_error(err.error)
                        }
                    })?;
                }
                Ok(())
            }
            Kind::InPlace(mut file) => file.flush().map_err(io_error),
        }
    }
}

/// A temporary file beside `rename_to`, renamed over it (or into place) by `finish`.
fn staged(rename_to: PathBuf, replace: bool) -> io::Result<Kind> {
    let dir = match rename_to.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file = tempfile::Builder::new()
        .prefix(".kustomer-import-output")
        .tempfile_in(dir)?;
    Ok(Kind::Staged {
        file: BufWriter::new(file),
        rename_to,
        replace,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(
        target: &Path,
        force: bool,
        protected: &Protected,
        text: &str,
    ) -> Result<(), OutputError> {
        let mut out = OutputFile::create(target, force, protected)?;
        out.writer().write_all(text.as_bytes()).unwrap();
        out.finish()
    }

    #[test]
    fn new_files_are_written_existing_ones_only_with_force() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.csv");
        let none = Protected::default();
        write(&target, false, &none, "one").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "one");
        let err = write(&target, false, &none, "two").unwrap_err();
        assert!(matches!(err, OutputError::Exists { .. }), "{err}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "one");
        write(&target, true, &none, "three").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "three");
        let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 1, "no temporary file left behind");
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_are_followed_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.csv");
        let link = dir.path().join("link.csv");
        std::fs::write(&real, "old").unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let none = Protected::default();
        assert!(matches!(
            write(&link, false, &none, "new"),
            Err(OutputError::Exists { .. })
        ));
        write(&link, true, &none, "new").unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read_to_string(&real).unwrap(), "new");

        // A device behind a symlink is written in place, never replaced by a file.
        let null_link = dir.path().join("null");
        std::os::unix::fs::symlink("/dev/null", &null_link).unwrap();
        write(&null_link, true, &none, "gone").unwrap();
        assert!(std::fs::symlink_metadata(&null_link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(!std::fs::metadata("/dev/null").unwrap().is_file());

        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
        assert!(matches!(
            write(&dangling, true, &none, "x"),
            Err(OutputError::Io { .. })
        ));
        assert!(!dir.path().join("nowhere").exists());
    }

    #[cfg(unix)]
    #[test]
    fn the_checkpoint_and_its_companions_are_never_written_even_with_force() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("job.sqlite");
        std::fs::write(&db, "database").unwrap();
        let protected = Protected::checkpoint(&db);
        for target in [db.clone(), dir.path().join("job.sqlite-wal")] {
            let err = write(&target, true, &protected, "x").unwrap_err();
            assert!(matches!(err, OutputError::Protected { .. }), "{err}");
        }
        let link = dir.path().join("innocent.csv");
        std::os::unix::fs::symlink(&db, &link).unwrap();
        assert!(matches!(
            write(&link, true, &protected, "x"),
            Err(OutputError::Protected { .. })
        ));
        let relative_dir = dir.path().join("sub");
        std::fs::create_dir(&relative_dir).unwrap();
        assert!(matches!(
            write(
                &relative_dir.join("../job.sqlite-shm"),
                true,
                &protected,
                "x"
            ),
            Err(OutputError::Protected { .. })
        ));
        assert_eq!(std::fs::read_to_string(&db).unwrap(), "database");
    }
}

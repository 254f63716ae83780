//! The files this capability owns, and the only code that writes or removes
//! them. Blocking: called from `spawn_blocking`.
//!
//! A change is a list of [`Wanted`] states (content and mode, or absence).
//! [`apply`] writes each one that differs from the disk, atomically (temp
//! file in the same directory, fsync, rename), and answers what it replaced,
//! so that [`restore`] can put back exactly the previous state.

use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use super::ProxyError;

/// Server files are read by nginx's master (root); nothing in them is secret.
pub const CONF_MODE: u32 = 0o644;
/// Certificates and keys: the key is secret, and the chain goes with it.
pub const TLS_MODE: u32 = 0o600;
/// The TLS directory: only its owner may even list the keys.
const TLS_DIR_MODE: u32 = 0o700;

/// The state one of our files should have after a change.
#[derive(Debug)]
pub struct Wanted {
    pub path: PathBuf,
    /// Sibling of `path` where the new content is written before the rename.
    pub temp: PathBuf,
    /// `None`: the file must not exist.
    pub content: Option<Vec<u8>>,
    pub mode: u32,
    /// Counted in a reconcile report (server files, not TLS files).
    pub counted: bool,
}

/// A file's content and permission bits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Content {
    pub bytes: Vec<u8>,
    pub mode: u32,
}

/// What [`apply`] replaced in one file.
#[derive(Debug)]
pub struct Replaced {
    pub path: PathBuf,
    pub temp: PathBuf,
    pub previous: Option<Content>,
    /// Whether the change wrote the file (else removed it).
    pub written: bool,
    pub counted: bool,
}

/// The directory, canonical (symlinks resolved), so that [`check_path`] can
/// compare prefixes. It must exist: it is the operator's (nginx includes it),
/// and creating it would write outside what this capability owns.
pub fn canonical_dir(dir: &Path) -> Result<PathBuf, ProxyError> {
    let canonical = fs::canonicalize(dir).map_err(|source| io_error("resolving", dir, source))?;
    if !canonical.is_dir() {
        return Err(ProxyError::Unsafe(format!(
            "{} is not a directory",
            canonical.display()
        )));
    }
    Ok(canonical)
}

/// The TLS directory, created (mode 0700) when missing, canonical.
pub fn private_dir(dir: &Path) -> Result<PathBuf, ProxyError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(TLS_DIR_MODE)
        .create(dir)
        .map_err(|source| io_error("creating", dir, source))?;
    let canonical = canonical_dir(dir)?;
    // An existing directory keeps its old mode through `create`: tighten it.
    fs::set_permissions(&canonical, fs::Permissions::from_mode(TLS_DIR_MODE))
        .map_err(|source| io_error("setting the mode of", &canonical, source))?;
    Ok(canonical)
}

/// The TLS directory when it exists, canonical; `None` when it does not (then
/// no TLS file of ours can exist either).
pub fn existing_dir(dir: &Path) -> Result<Option<PathBuf>, ProxyError> {
    match fs::symlink_metadata(dir) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(io_error("reading", dir, source)),
        Ok(_) => canonical_dir(dir).map(Some),
    }
}

/// The path of one of our files. `name` is computed from a site id only (never
/// from a string a plugin passes), and the result must lie directly in the
/// canonical directory: this is the one place a path is made, so no site can
/// ever name a file elsewhere (`..`, `/`, an absolute path).
pub fn check_path(canonical_dir: &Path, name: &str) -> Result<PathBuf, ProxyError> {
    let path = canonical_dir.join(name);
    // One normal component: `..` and `.` would pass a prefix test lexically.
    let one_name = matches!(
        Path::new(name).components().collect::<Vec<_>>().as_slice(),
        [Component::Normal(_)]
    );
    let inside =
        one_name && path.starts_with(canonical_dir) && path.parent() == Some(canonical_dir);
    if !inside {
        return Err(ProxyError::Unsafe(format!(
            "{} is not directly inside {}",
            path.display(),
            canonical_dir.display()
        )));
    }
    Ok(path)
}

/// A path written into a server file must stay one nginx word: no spaces,
/// `;`, braces, quotes, `#`, or `$` (`ssl_certificate` expands variables).
pub fn check_nginx_path(path: &Path) -> Result<(), ProxyError> {
    let text = path.to_str().unwrap_or_default();
    let safe = !text.is_empty()
        && text.bytes().all(|byte| {
            byte.is_ascii_alphanumeric()
                || matches!(
                    byte,
                    b'/' | b'.' | b'_' | b'-' | b'+' | b'@' | b',' | b':' | b'='
                )
        });
    if !safe {
        return Err(ProxyError::Unsafe(format!(
            "the path {:?} cannot be written into an nginx configuration (only letters, digits and /._-+@,:= are)",
            path.display().to_string()
        )));
    }
    Ok(())
}

/// The current state of one of our files: content and mode, or `None` when
/// it does not exist. Anything but a regular file (a symlink planted by
/// someone else, a directory) is refused rather than followed.
pub fn read(path: &Path) -> Result<Option<Content>, ProxyError> {
    let metadata = match fs::symlink_metadata(path) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(io_error("reading", path, source)),
        Ok(metadata) => metadata,
    };
    if !metadata.file_type().is_file() {
        return Err(ProxyError::Unsafe(format!(
            "{} is not a regular file; openidcs leaves it alone",
            path.display()
        )));
    }
    let bytes = fs::read(path).map_err(|source| io_error("reading", path, source))?;
    Ok(Some(Content {
        bytes,
        mode: metadata.permissions().mode() & 0o7777,
    }))
}

/// The names of the entries of `dir` (not recursive).
pub fn names(dir: &Path) -> Result<Vec<String>, ProxyError> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(|source| io_error("listing", dir, source))? {
        let entry = entry.map_err(|source| io_error("listing", dir, source))?;
        // A name that is not UTF-8 cannot be one of ours.
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    Ok(names)
}

/// Remove a leftover temp file of ours (a write interrupted by a crash).
pub fn remove_leftover(path: &Path) -> Result<(), ProxyError> {
    remove(path).map_err(|source| io_error("removing", path, source))
}

/// Bring every file to its wanted state; answer what was replaced (files
/// already in their wanted state are not touched and not listed). When a
/// write fails halfway, what was already changed is restored first.
pub fn apply(wanted: Vec<Wanted>) -> Result<Vec<Replaced>, ProxyError> {
    let mut replaced = Vec::new();
    for file in wanted {
        let outcome = read(&file.path).and_then(|previous| {
            let target = file.content.as_ref().map(|bytes| Content {
                bytes: bytes.clone(),
                mode: file.mode,
            });
            if previous == target {
                return Ok(None);
            }
            put(&file.path, &file.temp, target.as_ref())?;
            Ok(Some(previous))
        });
        match outcome {
            Ok(None) => {}
            Ok(Some(previous)) => replaced.push(Replaced {
                path: file.path,
                temp: file.temp,
                previous,
                written: file.content.is_some(),
                counted: file.counted,
            }),
            Err(error) => {
                if let Err(restore_error) = restore(&replaced) {
                    tracing::error!(%restore_error, "restoring proxy files after a failed write");
                }
                return Err(error);
            }
        }
    }
    Ok(replaced)
}

/// Put back what [`apply`] replaced, newest first. Every file is tried even
/// when one fails; the first error is answered.
pub fn restore(replaced: &[Replaced]) -> Result<(), ProxyError> {
    let mut first_error = None;
    for file in replaced.iter().rev() {
        if let Err(error) = put(&file.path, &file.temp, file.previous.as_ref()) {
            tracing::error!(path = %file.path.display(), %error, "restoring a proxy file");
            first_error.get_or_insert(error);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Give `path` this content (atomically) or remove it.
fn put(path: &Path, temp: &Path, content: Option<&Content>) -> Result<(), ProxyError> {
    match content {
        Some(content) => {
            write_atomic(path, temp, content).map_err(|source| io_error("writing", path, source))
        }
        None => remove(path).map_err(|source| io_error("removing", path, source)),
    }
}

/// Write to the temp sibling, fsync, set the mode, rename over `path`, fsync
/// the directory: a reader (nginx) sees the old file or the new one, never
/// half of one, even across a crash.
fn write_atomic(path: &Path, temp: &Path, content: &Content) -> io::Result<()> {
    // A temp file left by a crash would make `create_new` fail.
    remove(temp)?;
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(content.mode)
            .open(temp)?;
        file.write_all(&content.bytes)?;
        // The umask may have narrowed the mode `open` used; set it exactly.
        file.set_permissions(fs::Permissions::from_mode(content.mode))?;
        file.sync_all()?;
        fs::rename(temp, path)
    })();
    if let Err(error) = written {
        let _ = remove(temp);
        return Err(error);
    }
    if let Some(parent) = path.parent() {
        // Makes the rename durable; a filesystem that cannot fsync a
        // directory still has the rename, so a failure here is not an error.
        if let Err(error) = fs::File::open(parent).and_then(|dir| dir.sync_all()) {
            tracing::debug!(dir = %parent.display(), %error, "fsync of the proxy directory failed");
        }
    }
    Ok(())
}

/// Remove a file; an absent one is already removed.
fn remove(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        answer => answer,
    }
}

fn io_error(action: &'static str, path: &Path, source: io::Error) -> ProxyError {
    ProxyError::Io {
        action,
        path: path.display().to_string(),
        source,
    }
}

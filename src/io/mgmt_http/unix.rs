//! The management UNIX socket file: bind with mode 0600, remove on shutdown.
//!
//! Owns [`bind`] and [`SocketFile`]. Invariants:
//! - Never fails the start: a missing directory, a path that is not a socket, a socket some
//!   live process still serves, or any bind error is logged and the listener goes on without
//!   the socket.
//! - A stale socket file (nobody accepts on it) is replaced; anything else at the path is
//!   left alone.
//! - The socket is made mode 0600 right after bind (with the usual umask it is never
//!   connectable by others before: connecting needs write permission); if that fails it is
//!   not served.
//! - [`SocketFile`]'s drop removes the path only while it still is the socket we bound
//!   (same device and inode), so a successor's socket is never deleted.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// A socket file we created.
#[derive(Debug)]
pub(super) struct SocketFile {
    path: PathBuf,
    id: (u64, u64),
}

impl SocketFile {
    /// Its path.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Ok(m) = std::fs::symlink_metadata(&self.path)
            && (m.dev(), m.ino()) == self.id
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Bind `path` as a non-blocking listener with mode 0600, or log why not and give `None`.
pub(super) fn bind(path: &Path) -> Option<(UnixListener, SocketFile)> {
    let shown = path.display();
    let dir = match path.parent() {
        Some(d) if d.as_os_str().is_empty() => Path::new("."),
        Some(d) => d,
        None => Path::new("/"),
    };
    if !dir.is_dir() {
        tracing::warn!(path = %shown, "management socket directory {} does not exist; \
            serving without the UNIX socket", dir.display());
        return None;
    }
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if !m.file_type().is_socket() {
            tracing::error!(path = %shown, "management socket path exists and is not a \
                socket; serving without the UNIX socket");
            return None;
        }
        if UnixStream::connect(path).is_ok() {
            tracing::error!(path = %shown, "management socket is served by another process; \
                serving without the UNIX socket");
            return None;
        }
        if let Err(e) = std::fs::remove_file(path) {
            tracing::error!(path = %shown, error = %e, "cannot remove the stale management \
                socket; serving without the UNIX socket");
            return None;
        }
    }
    let listener = match UnixListener::bind(path) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(path = %shown, error = %e, "cannot bind the management socket; \
                serving without it");
            return None;
        }
    };
    let id = std::fs::symlink_metadata(path).map(|m| (m.dev(), m.ino()));
    let perms = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    let nonblocking = listener.set_nonblocking(true);
    match (id, perms, nonblocking) {
        (Ok(id), Ok(()), Ok(())) => Some((
            listener,
            SocketFile {
                path: path.to_path_buf(),
                id,
            },
        )),
        (id, perms, nb) => {
            let e = [id.err(), perms.err(), nb.err()]
                .into_iter()
                .flatten()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ");
            tracing::error!(path = %shown, error = %e, "cannot set up the management socket; \
                serving without it");
            drop(listener);
            let _ = std::fs::remove_file(path);
            None
        }
    }
}

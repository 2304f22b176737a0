//! Opening a requested file: only regular files that really live under the media
//! directory. The name was already checked (`commands::file_request`): relative,
//! normal components only. Here the file system has its say: the canonical path
//! (every symlink resolved) must still be under the canonical media directory, the
//! final component must not be a symlink when opened (`O_NOFOLLOW`), and the opened
//! file must be a regular file (no device, FIFO or directory).

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Resolves `relative` under `media_dir`; the reason is fit for the requester.
pub fn resolve(media_dir: &Path, relative: &str) -> Result<PathBuf, String> {
    let root = media_dir
        .canonicalize()
        .map_err(|e| format!("the media directory is unavailable: {e}"))?;
    let joined = root.join(relative);
    let real = joined
        .canonicalize()
        .map_err(|_| format!("{relative:?} does not exist in the media directory"))?;
    if !real.starts_with(&root) {
        return Err(format!("{relative:?} leads out of the media directory"));
    }
    let meta = std::fs::metadata(&real).map_err(|e| format!("{relative:?}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{relative:?} is not a regular file"));
    }
    Ok(real)
}

/// Opens a resolved file for reading without following a symlink swapped in since,
/// and checks again that it is a regular file.
pub fn open(path: &Path) -> std::io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_inside_the_media_directory_resolve() {
        let dir = tempfile::tempdir().unwrap();
        let media = dir.path().join("media");
        std::fs::create_dir_all(media.join("clips")).unwrap();
        std::fs::write(media.join("clips/a.mkv"), b"x").unwrap();
        std::fs::write(dir.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), media.join("out")).unwrap();
        std::os::unix::fs::symlink(media.join("clips/a.mkv"), media.join("in")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", media.join("dev")).unwrap();

        assert!(resolve(&media, "clips/a.mkv").is_ok());
        assert!(
            resolve(&media, "in").is_ok(),
            "a symlink that stays inside is fine"
        );
        assert!(resolve(&media, "out").unwrap_err().contains("leads out"));
        assert!(resolve(&media, "dev").unwrap_err().contains("leads out"));
        assert!(resolve(&media, "clips")
            .unwrap_err()
            .contains("not a regular file"));
        assert!(resolve(&media, "nope")
            .unwrap_err()
            .contains("does not exist"));
        assert!(open(&media.join("out")).is_err(), "O_NOFOLLOW");
    }
}

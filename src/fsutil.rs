//! File-system helpers that several stages share.

use std::io::Write;
use std::path::Path;

/// Replaces `path` with `bytes` atomically: they are written to `<path>.tmp`
/// beside it, which is then renamed over it, so a reader (or a crash) finds the
/// old content or the new, never half of it. With `durable`, the file and its
/// directory are also fsynced, so the new content survives a power cut.
pub fn write_atomically(path: &Path, bytes: &[u8], durable: bool) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    if durable {
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if durable {
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_replaced_whole_and_no_temp_file_stays() {
        let dir = std::env::temp_dir().join(format!("edgecam-fsutil-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        write_atomically(&path, b"old", false).unwrap();
        write_atomically(&path, b"new", true).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert!(!dir.join("state.json.tmp").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

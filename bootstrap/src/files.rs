//! Small filesystem helpers: private files, and the manifest that tells a
//! complete cached artifact from a partial or damaged one.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Written last into an artifact directory; its absence means "incomplete".
pub const MANIFEST: &str = ".ossature-manifest";

/// Opens `path` (made when absent) and waits for an exclusive lock on it,
/// held until the returned file is dropped: across processes.
pub async fn lock(path: &Path) -> Result<std::fs::File> {
    let file = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    tokio::task::spawn_blocking(move || file.lock().map(|_| file))
        .await?
        .with_context(|| format!("locking {}", path.display()))
}

/// Writes a file readable by its owner only (keys, tokens, passwords).
pub fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(contents)?;
    Ok(())
}

fn walk(root: &Path, dir: &Path, skip: &[&str], out: &mut Vec<(String, u64)>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        let rel = path
            .strip_prefix(root)
            .expect("walked paths are under the root")
            .to_string_lossy()
            .into_owned();
        if rel == MANIFEST
            || skip
                .iter()
                .any(|s| rel == *s || rel.starts_with(&format!("{s}/")))
        {
            continue;
        }
        let meta = entry.metadata()?;
        if meta.is_dir() {
            walk(root, &path, skip, out)?;
        } else if meta.is_file() {
            out.push((rel, meta.len()));
        }
    }
    Ok(())
}

/// Records every file's relative path and size, except under `skip`
/// (directories the component itself writes to at run time).
pub fn write_manifest(dir: &Path, skip: &[&str]) -> Result<()> {
    let mut files = Vec::new();
    walk(dir, dir, skip, &mut files)?;
    files.sort();
    let text: String = files
        .iter()
        .map(|(path, size)| format!("{size}\t{path}\n"))
        .collect();
    std::fs::write(dir.join(MANIFEST), text)?;
    Ok(())
}

/// Why a cached artifact cannot be used, or `None` when it is complete.
pub fn manifest_problem(dir: &Path) -> Option<String> {
    let text = match std::fs::read_to_string(dir.join(MANIFEST)) {
        Ok(text) => text,
        Err(_) => return Some("not built yet".into()),
    };
    let mut entries = 0;
    for line in text.lines() {
        let Some((size, rel)) = line.split_once('\t') else {
            return Some("manifest unreadable".into());
        };
        entries += 1;
        let path: PathBuf = dir.join(rel);
        match std::fs::metadata(&path) {
            Ok(meta) if size.parse::<u64>().ok() == Some(meta.len()) => {}
            Ok(_) => return Some(format!("{rel} has changed size")),
            Err(_) => return Some(format!("{rel} is missing")),
        }
    }
    (entries == 0).then(|| "manifest is empty".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_detects_missing_and_truncated_files_but_not_skipped_ones() {
        let dir = std::env::temp_dir().join(format!("ossature-manifest-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        std::fs::create_dir_all(dir.join("data")).unwrap();
        std::fs::write(dir.join("bin/tool"), b"0123456789").unwrap();
        std::fs::write(dir.join("data/scratch"), b"x").unwrap();
        assert_eq!(manifest_problem(&dir).as_deref(), Some("not built yet"));

        write_manifest(&dir, &["data"]).unwrap();
        assert_eq!(manifest_problem(&dir), None);
        std::fs::write(dir.join("data/scratch"), b"changes at run time").unwrap();
        assert_eq!(manifest_problem(&dir), None);

        std::fs::write(dir.join("bin/tool"), b"01234").unwrap();
        assert_eq!(
            manifest_problem(&dir).as_deref(),
            Some("bin/tool has changed size")
        );
        std::fs::remove_file(dir.join("bin/tool")).unwrap();
        assert_eq!(
            manifest_problem(&dir).as_deref(),
            Some("bin/tool is missing")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

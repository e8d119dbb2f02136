//! The version of a routing table set: a content hash, and the git commit when the
//! routing directory is a git work tree.
//!
//! The hash covers every table file's name and bytes, so two directories with the same
//! tables have the same version and a reload that changes nothing is recognised as such.
//! The commit is read from the `.git` files directly (no `git` process); when it cannot
//! be read it is simply absent.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

/// Identifies one set of routing tables.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct TableVersion {
    /// First 16 hex digits of the SHA-256 over the table files' names and contents.
    pub hash: String,
    /// The commit checked out in the routing directory's git work tree, if any.
    pub commit: Option<String>,
}

impl fmt::Display for TableVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.commit {
            Some(c) => write!(f, "{} (git {})", self.hash, c.get(..12).unwrap_or(c)),
            None => f.write_str(&self.hash),
        }
    }
}

/// Incremental hash of table files, in the order they are loaded.
pub(crate) struct VersionHasher(Sha256);

impl VersionHasher {
    pub(crate) fn new() -> Self {
        VersionHasher(Sha256::new())
    }

    pub(crate) fn add_file(&mut self, name: &str, bytes: &[u8]) {
        // Length-prefixed so that moving bytes between name and content changes the hash.
        self.0.update((name.len() as u64).to_le_bytes());
        self.0.update(name.as_bytes());
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
    }

    pub(crate) fn finish(self, dir: &Path) -> TableVersion {
        let digest = self.0.finalize();
        let hash = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        TableVersion {
            hash,
            commit: git_commit(dir),
        }
    }
}

/// The commit checked out in the git work tree that contains `dir`, if any.
pub fn git_commit(dir: &Path) -> Option<String> {
    let start = fs::canonicalize(dir).ok()?;
    let git = start
        .ancestors()
        .map(|d| d.join(".git"))
        .find(|p| p.exists())?;
    let git_dir = if git.is_file() {
        // A linked work tree or submodule: ".git" holds "gitdir: PATH".
        let text = fs::read_to_string(&git).ok()?;
        let path = PathBuf::from(text.strip_prefix("gitdir:")?.trim());
        if path.is_absolute() {
            path
        } else {
            git.parent()?.join(path)
        }
    } else {
        git
    };
    let head = read_small(&git_dir.join("HEAD"))?;
    let head = head.trim();
    let Some(reference) = head.strip_prefix("ref:") else {
        return is_hex_id(head).then(|| head.to_string());
    };
    let reference = reference.trim();
    if reference.contains("..") {
        return None;
    }
    // A linked work tree keeps shared refs in the common directory.
    let common = read_small(&git_dir.join("commondir"))
        .map(|c| git_dir.join(c.trim()))
        .unwrap_or_else(|| git_dir.clone());
    for base in [&git_dir, &common] {
        if let Some(id) = read_small(&base.join(reference)) {
            let id = id.trim();
            if is_hex_id(id) {
                return Some(id.to_string());
            }
        }
    }
    let packed = read_small(&common.join("packed-refs"))?;
    packed.lines().find_map(|line| {
        let (id, name) = line.split_once(' ')?;
        (name.trim() == reference && is_hex_id(id)).then(|| id.to_string())
    })
}

fn read_small(path: &Path) -> Option<String> {
    let meta = fs::metadata(path).ok()?;
    if meta.len() > 64 * 1024 * 1024 {
        return None;
    }
    fs::read_to_string(path).ok()
}

fn is_hex_id(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

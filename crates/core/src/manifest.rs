//! Manifests: the content-addressed description of a file tree.
//!
//! A manifest lists every entry of a tree (files with their chunk ids,
//! directories, symlinks) sorted by path. Its id is the BLAKE3 hash of its
//! canonical JSON form, so equal trees have equal ids. Code snapshots, dataset
//! versions and job outputs are all manifests.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::digest::{ChunkId, ManifestId};
use crate::error::{Error, invalid};
use crate::mount::check_relative;

/// The stored format version; readers accept every version listed here.
pub const MANIFEST_VERSION: u32 = 1;

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub entries: Vec<Entry>,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Entry {
    pub path: String,
    #[serde(flatten)]
    pub kind: EntryKind,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum EntryKind {
    File { mode: u32, size: u64, chunks: Vec<ChunkId> },
    Dir { mode: u32 },
    Symlink { target: String },
}

impl Manifest {
    /// Builds a manifest from entries in any order; sorts them by path.
    pub fn new(mut entries: Vec<Entry>) -> Self {
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Manifest { version: MANIFEST_VERSION, entries }
    }

    /// The canonical bytes that the id hashes.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("manifests serialize")
    }

    pub fn id(&self) -> ManifestId {
        ManifestId::of(&self.canonical_bytes())
    }

    /// The id of the manifest of an empty tree (no entries).
    pub fn empty_id() -> ManifestId {
        static ID: std::sync::OnceLock<ManifestId> = std::sync::OnceLock::new();
        *ID.get_or_init(|| Manifest::new(Vec::new()).id())
    }

    /// Total bytes of all files.
    pub fn total_size(&self) -> u64 {
        self.entries
            .iter()
            .map(|e| match &e.kind {
                EntryKind::File { size, .. } => *size,
                _ => 0,
            })
            .sum()
    }

    pub fn file_count(&self) -> usize {
        self.entries.iter().filter(|e| matches!(e.kind, EntryKind::File { .. })).count()
    }

    /// Every distinct chunk the manifest names.
    pub fn chunk_ids(&self) -> BTreeSet<ChunkId> {
        let mut out = BTreeSet::new();
        for e in &self.entries {
            if let EntryKind::File { chunks, .. } = &e.kind {
                out.extend(chunks.iter().copied());
            }
        }
        out
    }

    /// Checks that the manifest describes a safe tree: a known version;
    /// relative paths without `.` or `..`; no duplicates; sorted; parents
    /// that are directories; symlinks that stay inside the tree.
    pub fn validate(&self) -> Result<(), Error> {
        if self.version != MANIFEST_VERSION {
            return Err(invalid(format!(
                "manifest version {} is not supported (this server reads version {MANIFEST_VERSION})",
                self.version
            )));
        }
        let mut seen = BTreeSet::new();
        let mut dirs = BTreeSet::new();
        let mut prev: Option<&str> = None;
        for e in &self.entries {
            let norm = check_relative(&e.path).map_err(|err| invalid(format!("manifest entry: {err}")))?;
            if norm != e.path {
                return Err(invalid(format!("manifest entry '{}' is not normalized", e.path)));
            }
            if !seen.insert(e.path.as_str()) {
                return Err(invalid(format!("manifest lists '{}' twice", e.path)));
            }
            if let Some(p) = prev
                && p > e.path.as_str()
            {
                return Err(invalid(format!("manifest entries are not sorted at '{}'", e.path)));
            }
            prev = Some(&e.path);
            match &e.kind {
                EntryKind::Dir { .. } => {
                    dirs.insert(e.path.as_str());
                }
                EntryKind::Symlink { target } => check_symlink(&e.path, target)?,
                EntryKind::File { .. } => {}
            }
        }
        for e in &self.entries {
            if let Some((parent, _)) = e.path.rsplit_once('/')
                && seen.contains(parent)
                && !dirs.contains(parent)
            {
                return Err(invalid(format!(
                    "manifest entry '{}' lies under '{parent}', which is not a directory",
                    e.path
                )));
            }
        }
        Ok(())
    }

    /// The part of the tree under `prefix`, re-rooted there. Errors when
    /// nothing lies under it.
    pub fn subtree(&self, prefix: &str) -> Result<Manifest, Error> {
        let prefix = check_relative(prefix)?;
        let under = format!("{prefix}/");
        let entries: Vec<Entry> = self
            .entries
            .iter()
            .filter_map(|e| {
                e.path.strip_prefix(&under).map(|rest| Entry { path: rest.to_string(), kind: e.kind.clone() })
            })
            .collect();
        let is_dir = self.entries.iter().any(|e| e.path == prefix && matches!(e.kind, EntryKind::Dir { .. }));
        if entries.is_empty() && !is_dir {
            return Err(invalid(format!("there is no directory '{prefix}' in this tree")));
        }
        Ok(Manifest::new(entries))
    }
}

/// A symlink may point only inside the tree: a relative target whose `..`
/// steps never climb above the tree's root.
fn check_symlink(path: &str, target: &str) -> Result<(), Error> {
    if target.is_empty() || target.starts_with('/') {
        return Err(invalid(format!("symlink '{path}' points to '{target}', outside the tree")));
    }
    let mut depth: i64 = path.matches('/').count() as i64;
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return Err(invalid(format!("symlink '{path}' points to '{target}', outside the tree")));
                }
            }
            _ => depth += 1,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(p: &str) -> Entry {
        Entry { path: p.into(), kind: EntryKind::File { mode: 0o644, size: 0, chunks: vec![] } }
    }
    fn dir(p: &str) -> Entry {
        Entry { path: p.into(), kind: EntryKind::Dir { mode: 0o755 } }
    }
    fn link(p: &str, t: &str) -> Entry {
        Entry { path: p.into(), kind: EntryKind::Symlink { target: t.into() } }
    }

    #[test]
    fn valid_tree_and_stable_id() {
        let m = Manifest::new(vec![file("a/b"), dir("a"), link("a/l", "../c"), file("c")]);
        m.validate().unwrap();
        let again = Manifest::new(vec![file("c"), link("a/l", "../c"), file("a/b"), dir("a")]);
        assert_eq!(m.id(), again.id());
    }

    #[test]
    fn rejects_unsafe_trees() {
        for entries in [
            vec![file("/etc/passwd")],
            vec![file("a/../b")],
            vec![file("a"), file("a")],
            vec![link("l", "/etc")],
            vec![link("l", "../x")],
            vec![dir("a"), link("a/l", "../../x")],
            vec![file("a"), file("a/b")],
        ] {
            let m = Manifest { version: 1, entries };
            assert!(m.validate().is_err(), "{m:?}");
        }
        assert!(Manifest { version: 9, entries: vec![] }.validate().is_err());
    }

    #[test]
    fn subtrees() {
        let m = Manifest::new(vec![dir("ck"), file("ck/m.bin"), file("x")]);
        let s = m.subtree("ck").unwrap();
        assert_eq!(s.entries.len(), 1);
        assert_eq!(s.entries[0].path, "m.bin");
        assert!(m.subtree("nope").is_err());
    }
}

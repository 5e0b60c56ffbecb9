//! The walk half of scanning: which paths a tree holds, honoring ignore
//! files, and what each one is (with every reason one cannot be stored).

use std::fs::{self, FileType};
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use ignore::WalkBuilder;
use podder_core::{Entry, EntryKind};

use super::{DOWNLOAD_MARKER, IGNORE_FILE};
use crate::statcache::FileStat;

/// A regular file found by the walk, to be chunked.
pub(super) struct FileJob {
    pub(super) rel: String,
    pub(super) abs: PathBuf,
    pub(super) mode: u32,
    pub(super) size: u64,
    pub(super) stat: FileStat,
}

#[derive(Default)]
pub(super) struct Walked {
    pub(super) entries: Vec<Entry>,
    pub(super) files: Vec<FileJob>,
    pub(super) problems: Vec<String>,
}

pub(super) fn walk(root: &Path, respect_ignore: bool) -> Walked {
    let mut builder = WalkBuilder::new(root);
    builder
        .standard_filters(respect_ignore)
        .hidden(false)
        .ignore(false)
        .require_git(false)
        .follow_links(false)
        .filter_entry(move |e| {
            if e.depth() == 0 {
                return true;
            }
            let is_dir = e.file_type().is_some_and(|t| t.is_dir());
            if e.file_name() == ".git" || (!is_dir && e.file_name() == DOWNLOAD_MARKER) {
                return false;
            }
            // What podder itself downloaded into a project stays out of its code.
            !(respect_ignore && is_dir && e.path().join(DOWNLOAD_MARKER).is_file())
        });
    if respect_ignore {
        builder.add_custom_ignore_filename(IGNORE_FILE);
    }
    let mut out = Walked::default();
    let mut bad_dirs: Vec<PathBuf> = Vec::new();
    for item in builder.build() {
        let entry = match item {
            Ok(entry) => entry,
            Err(e) => {
                out.problems.push(relativize(root, &e.to_string()));
                continue;
            }
        };
        if let Some(e) = entry.error() {
            out.problems.push(relativize(root, &format!("ignore file: {e}")));
        }
        if entry.depth() == 0 || bad_dirs.iter().any(|d| entry.path().starts_with(d)) {
            continue;
        }
        let Some(rel) = rel_path(root, entry.path()) else {
            let shown = entry.path().strip_prefix(root).unwrap_or(entry.path()).display().to_string();
            out.problems.push(format!("{shown}: the name is not valid UTF-8; rename it"));
            if entry.file_type().is_some_and(|t| t.is_dir()) {
                bad_dirs.push(entry.path().to_path_buf());
            }
            continue;
        };
        if let Err(reason) = add_entry(root, &rel, entry.path(), &mut out) {
            out.problems.push(format!("{rel}: {reason}"));
        }
    }
    out
}

/// Adds one walked path to `out`, or says why it cannot be stored.
fn add_entry(root: &Path, rel: &str, abs: &Path, out: &mut Walked) -> Result<(), String> {
    let meta = fs::symlink_metadata(abs).map_err(|e| format!("cannot be read: {e}"))?;
    let mode = meta.permissions().mode() & 0o777;
    let ft = meta.file_type();
    if ft.is_dir() {
        out.entries.push(Entry { path: rel.to_string(), kind: EntryKind::Dir { mode } });
    } else if ft.is_file() {
        // Whether it can be opened is checked later, only for the files the
        // stat cache does not already know.
        let stat = FileStat::of(&meta);
        out.files.push(FileJob { rel: rel.to_string(), abs: abs.to_path_buf(), mode, size: meta.len(), stat });
    } else if ft.is_symlink() {
        let target = symlink_target(root, rel, abs)?;
        out.entries.push(Entry { path: rel.to_string(), kind: EntryKind::Symlink { target } });
    } else {
        return Err(format!("is a {}, which podder cannot store", special_kind(ft)));
    }
    Ok(())
}

/// A symlink's target, if it stays inside the tree both as written and as
/// resolved through other symlinks.
fn symlink_target(root: &Path, rel: &str, abs: &Path) -> Result<String, String> {
    let target = fs::read_link(abs).map_err(|e| format!("cannot be read: {e}"))?;
    let Some(target) = target.to_str() else {
        return Err("its target is not valid UTF-8".into());
    };
    if target.starts_with('/') {
        return Err(format!("is a symlink to '{target}', an absolute path; make it relative and inside the tree"));
    }
    let mut depth = rel.matches('/').count() as i64;
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => depth -= 1,
            _ => depth += 1,
        }
        if depth < 0 {
            return Err(format!("is a symlink to '{target}', outside the tree"));
        }
    }
    match fs::canonicalize(abs) {
        Ok(resolved) if !resolved.starts_with(root) => {
            Err(format!("is a symlink to '{target}', which leads outside the tree through another symlink"))
        }
        // A dangling link inside the tree is kept as it is; a loop is not.
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(format!("is a symlink to '{target}' that cannot be resolved: {e}"))
        }
        _ => Ok(target.to_string()),
    }
}

fn special_kind(ft: FileType) -> &'static str {
    if ft.is_fifo() {
        "named pipe"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_block_device() || ft.is_char_device() {
        "device"
    } else {
        "special file"
    }
}

/// `abs` relative to `root`, '/'-separated; None when a name is not UTF-8.
fn rel_path(root: &Path, abs: &Path) -> Option<String> {
    let rel = abs.strip_prefix(root).ok()?;
    let parts: Option<Vec<&str>> = rel
        .components()
        .map(|c| match c {
            Component::Normal(s) => s.to_str(),
            _ => None,
        })
        .collect();
    Some(parts?.join("/"))
}

/// Shortens absolute paths under `root` in a message to relative ones.
fn relativize(root: &Path, msg: &str) -> String {
    msg.replace(&format!("{}/", root.display()), "")
}

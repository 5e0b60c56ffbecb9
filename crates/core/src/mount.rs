//! Mount paths inside a job and relative paths inside a tree.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, invalid};

/// Paths a job owns itself; no input may be mounted at or under them.
pub const RESERVED: [&str; 2] = ["/code", "/output"];
/// System paths that the sandbox provides read-only (or as its own); mounting
/// over or under them breaks the job, or fails because the sandbox cannot
/// create a mount point inside a read-only directory.
const SYSTEM: [&str; 11] =
    ["/proc", "/dev", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc", "/opt", "/tmp"];

/// An absolute, normalized path inside a job where an input is mounted.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize)]
#[serde(transparent)]
pub struct MountPath(String);

impl MountPath {
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// True when one path is the other or contains it.
    pub fn overlaps(&self, other: &MountPath) -> bool {
        let (a, b) = (&self.0, &other.0);
        a == b || b.starts_with(&format!("{a}/")) || a.starts_with(&format!("{b}/"))
    }
    /// The path without its leading '/', for joining under a root directory.
    pub fn relative(&self) -> &str {
        &self.0[1..]
    }
    /// An environment-variable-safe form: `/data/mnist` → `DATA_MNIST`.
    pub fn env_suffix(&self) -> String {
        self.relative().chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect()
    }
}

impl FromStr for MountPath {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        if !s.starts_with('/') {
            return Err(invalid(format!("the mount path '{s}' is relative: give an absolute path such as /data/{s}")));
        }
        let parts: Vec<&str> = s.split('/').filter(|p| !p.is_empty()).collect();
        if parts.is_empty() {
            return Err(invalid("a mount path cannot be '/': give a directory such as /data/x"));
        }
        if let Some(p) = parts.iter().find(|p| **p == "." || **p == "..") {
            return Err(invalid(format!("the mount path '{s}' contains '{p}': give a plain absolute path")));
        }
        if let Some(p) = parts.iter().find(|p| p.contains('\0') || p.contains(':')) {
            return Err(invalid(format!("the mount path '{s}' has an invalid component '{p}'")));
        }
        let norm = format!("/{}", parts.join("/"));
        for r in RESERVED {
            if norm == r || norm.starts_with(&format!("{r}/")) {
                return Err(invalid(format!(
                    "cannot mount at '{norm}': {r} belongs to the job itself; choose another path such as /data/..."
                )));
            }
        }
        for r in SYSTEM {
            if norm == r || norm.starts_with(&format!("{r}/")) {
                return Err(invalid(format!(
                    "cannot mount at '{norm}': {r} is a system path; choose another path such as /data/..."
                )));
            }
        }
        Ok(MountPath(norm))
    }
}

impl<'de> Deserialize<'de> for MountPath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for MountPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a relative path inside a tree: non-empty, no leading '/', no '.',
/// '..' or empty components. Returns it normalized (no trailing '/').
pub fn check_relative(p: &str) -> Result<String, Error> {
    if p.is_empty() {
        return Err(invalid("a path inside a tree cannot be empty"));
    }
    if p.starts_with('/') {
        return Err(invalid(format!("'{p}' is absolute: paths inside a tree must be relative")));
    }
    let trimmed = p.trim_end_matches('/');
    for part in trimmed.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(invalid(format!(
                "'{p}' has a '{part}' component: paths inside a tree must not contain '.', '..' or '//'"
            )));
        }
        if part.contains('\0') {
            return Err(invalid(format!("'{p}' contains a NUL byte")));
        }
    }
    Ok(trimmed.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_paths() {
        assert_eq!("/data/x/".parse::<MountPath>().unwrap().as_str(), "/data/x");
        assert_eq!("//data//x".parse::<MountPath>().unwrap().as_str(), "/data/x");
        for bad in ["data", "/", "/code", "/code/x", "/output", "/a/../b", "/proc/x", "/a:b", "/opt/x", "/sbin"] {
            assert!(bad.parse::<MountPath>().is_err(), "{bad}");
        }
        assert!(!"/codex".parse::<MountPath>().unwrap().overlaps(&"/code2".parse().unwrap()));
        let a: MountPath = "/data/a".parse().unwrap();
        assert!(a.overlaps(&"/data/a/b".parse().unwrap()));
        assert!(!a.overlaps(&"/data/ab".parse().unwrap()));
        assert_eq!(a.env_suffix(), "DATA_A");
    }

    #[test]
    fn relative_paths() {
        assert_eq!(check_relative("a/b/").unwrap(), "a/b");
        for bad in ["", "/a", "a/../b", "./a", "a//b", ".."] {
            assert!(check_relative(bad).is_err(), "{bad}");
        }
    }
}

//! Environments (where a job runs), the resources a job asks for, and the
//! inventory an agent offers.
//!
//! An environment is named `owner/name`; the stock ones belong to the owner
//! [`STOCK_OWNER`] and every user may use them. At submit the server resolves
//! the name the user gave into an [`EnvSpec`], which the job's spec keeps, so
//! a job runs the environment as it was when it was submitted.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::digest::ManifestId;
use crate::error::{Error, invalid};
use crate::names::Name;

/// The owner of the environments that ship with podder.
pub const STOCK_OWNER: &str = "podder";

/// `NAME` (your own, else the stock one) or `OWNER/NAME`.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct EnvRef {
    pub owner: Option<Name>,
    pub name: Name,
}

impl FromStr for EnvRef {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |e: Error| invalid(format!("'{s}' is not an environment name ({e}); use NAME or OWNER/NAME"));
        match s.split_once('/') {
            Some((o, n)) => Ok(EnvRef { owner: Some(o.parse().map_err(bad)?), name: n.parse().map_err(bad)? }),
            None => Ok(EnvRef { owner: None, name: s.parse().map_err(bad)? }),
        }
    }
}

impl fmt::Display for EnvRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.owner {
            Some(o) => write!(f, "{o}/{}", self.name),
            None => write!(f, "{}", self.name),
        }
    }
}

/// How to build an image on the agent's Docker engine. The image's tag is
/// derived from [`ImageBuild::tag`], so the same build is made once per
/// engine and found again by every later job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageBuild {
    /// The Dockerfile's text. Without a context it may not COPY or ADD.
    /// None: the context's own `Dockerfile`.
    #[serde(default)]
    pub dockerfile: Option<String>,
    /// The build context: a committed tree (a task directory).
    #[serde(default)]
    pub context: Option<ManifestId>,
    /// Or a Git repository to clone on the building side (file://, http(s)://).
    #[serde(default)]
    pub git: Option<GitSource>,
    /// Ship compiled Python bytecode only: sources removed, docstrings
    /// stripped, and the build fails if any `.py` of the context is left.
    #[serde(default)]
    pub obfuscate: bool,
}

impl ImageBuild {
    /// A content hash of everything that defines the image (hex, 64 chars).
    /// A Git source counts only once its commit is known.
    pub fn hash(&self) -> String {
        let mut h = blake3::Hasher::new();
        h.update(b"podder-image-build-v1\0");
        h.update(self.dockerfile.as_deref().unwrap_or("<context>").as_bytes());
        h.update(b"\0");
        if let Some(c) = &self.context {
            h.update(c.to_string().as_bytes());
        }
        h.update(b"\0");
        if let Some(g) = &self.git {
            h.update(g.url.as_bytes());
            h.update(b"\0");
            h.update(g.commit.as_deref().unwrap_or(&g.reference).as_bytes());
        }
        h.update(if self.obfuscate { b"\0o" } else { b"\0-" });
        h.finalize().to_hex().to_string()
    }
    /// The local image tag for this build: `podder-build:<first 20 hex>`.
    pub fn tag(&self) -> String {
        format!("podder-build:{}", &self.hash()[..20])
    }
}

/// A Git source: a URL and a branch, tag or commit (`URL#REF`; default `HEAD`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitSource {
    pub url: String,
    pub reference: String,
    /// The commit the reference pointed at when it was built.
    #[serde(default)]
    pub commit: Option<String>,
}

impl FromStr for GitSource {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let (url, reference) = match s.rsplit_once('#') {
            Some((u, r)) if !r.is_empty() => (u, r),
            Some((u, _)) => (u, "HEAD"),
            None => (s, "HEAD"),
        };
        let ok_scheme = ["file://", "http://", "https://", "git://", "ssh://"].iter().any(|p| url.starts_with(p));
        if !ok_scheme || url.len() < 8 {
            return Err(invalid(format!(
                "'{s}' is not a Git URL: use file://, http(s)://, git:// or ssh:// with an optional #BRANCH, #TAG or #COMMIT"
            )));
        }
        if reference.starts_with('-') || reference.contains(char::is_whitespace) {
            return Err(invalid(format!("'{reference}' is not a Git reference")));
        }
        Ok(GitSource { url: url.to_string(), reference: reference.to_string(), commit: None })
    }
}

/// An environment resolved for one job: what the agent needs to realize it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvSpec {
    /// `owner/name`, for the record (`task:owner/project/name` for a task).
    pub name: String,
    /// A Docker image to run in (docker executor).
    #[serde(default)]
    pub image: Option<String>,
    /// The image for jobs that ask for GPUs, when it differs.
    #[serde(default)]
    pub gpu_image: Option<String>,
    /// Build the image instead of taking `image` (a Dockerfile environment,
    /// a built task). The docker executor builds it when missing.
    #[serde(default)]
    pub build: Option<ImageBuild>,
    /// A pip requirements file's text: the process executor realizes it as a
    /// virtual environment cached by [`EnvSpec::requirements_hash`].
    #[serde(default)]
    pub requirements: Option<String>,
    /// The working directory inside the image, when not `/code` (a task's).
    #[serde(default)]
    pub workdir: Option<String>,
}

impl EnvSpec {
    /// Whether only the docker executor can run it (it has no Python
    /// requirement set for the process executor).
    pub fn needs_docker(&self) -> bool {
        self.requirements.is_none() && (self.image.is_some() || self.build.is_some())
    }
    /// The hash of the requirement set (hex), the venv cache key.
    pub fn requirements_hash(&self) -> Option<String> {
        self.requirements.as_ref().map(|r| {
            let mut h = blake3::Hasher::new();
            h.update(b"podder-venv-v1\0");
            h.update(r.as_bytes());
            h.finalize().to_hex().to_string()
        })
    }
    /// The image a job runs in: the build's tag, else the GPU image when the
    /// job has GPUs and one is set, else `image`.
    pub fn image_for(&self, gpus: u32) -> Option<String> {
        if let Some(b) = &self.build {
            return Some(b.tag());
        }
        if gpus > 0
            && let Some(g) = &self.gpu_image
        {
            return Some(g.clone());
        }
        self.image.clone()
    }
}

/// What a job asks for besides its environment.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    /// Whole GPUs; the server assigns concrete indices at lease time.
    #[serde(default)]
    pub gpus: u32,
    /// CPU limit in cores (docker: NanoCpus). None: no limit.
    #[serde(default)]
    pub cpus: Option<f64>,
    /// Memory limit in bytes. None: no limit.
    #[serde(default)]
    pub memory_bytes: Option<u64>,
    /// Run without a network.
    #[serde(default)]
    pub no_network: bool,
}

impl Eq for Resources {}

impl Resources {
    pub fn check(&self) -> Result<(), Error> {
        if let Some(c) = self.cpus
            && !(c.is_finite() && c > 0.0 && c <= 1024.0)
        {
            return Err(invalid(format!("--cpus {c} is out of range: give a number of cores such as 2 or 0.5")));
        }
        if let Some(m) = self.memory_bytes
            && m < 6 * 1024 * 1024
        {
            return Err(invalid(format!("--memory {m} bytes is too small: give at least 6M (e.g. 512M, 4G)")));
        }
        if self.gpus > 64 {
            return Err(invalid(format!("--gpu {} is more GPUs than any machine has", self.gpus)));
        }
        Ok(())
    }
}

/// Parses a size such as `512M`, `4G`, `1.5GiB` or `1000000` (bytes).
pub fn parse_bytes(s: &str) -> Result<u64, Error> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| invalid(format!("'{s}' is not a size: use e.g. 512M, 4G or 1073741824")))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024.0f64.powi(4),
        u => return Err(invalid(format!("'{s}' has an unknown unit '{u}': use K, M, G or T"))),
    };
    Ok((n * mult) as u64)
}

/// Which executors an agent has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutorKind {
    Process,
    Docker,
}

impl FromStr for ExecutorKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "process" => Ok(ExecutorKind::Process),
            "docker" => Ok(ExecutorKind::Docker),
            _ => Err(invalid(format!("unknown executor '{s}': use process or docker"))),
        }
    }
}

/// One GPU of an agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gpu {
    pub index: u32,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub memory_bytes: u64,
}

/// What an agent offers, sent with every lease request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    pub executor: Option<ExecutorKind>,
    #[serde(default)]
    pub gpus: Vec<Gpu>,
    /// Job slots (how many jobs at once).
    #[serde(default)]
    pub slots: u32,
    #[serde(default)]
    pub cpus: u32,
    #[serde(default)]
    pub memory_bytes: u64,
}

/// The pure placement rule: can an agent with `inv`, whose leased jobs hold
/// `held` GPU indices, take a job needing `res` (and docker when
/// `needs_docker`)? Answers the GPU indices to assign (lowest free first).
pub fn place(inv: &Inventory, held: &[u32], res: &Resources, needs_docker: bool) -> Option<Vec<u32>> {
    if needs_docker && inv.executor != Some(ExecutorKind::Docker) {
        return None;
    }
    if let Some(m) = res.memory_bytes
        && inv.memory_bytes > 0
        && m > inv.memory_bytes
    {
        return None;
    }
    let free: Vec<u32> = inv.gpus.iter().map(|g| g.index).filter(|i| !held.contains(i)).collect();
    if (res.gpus as usize) > free.len() {
        return None;
    }
    let mut take = free;
    take.sort_unstable();
    take.truncate(res.gpus as usize);
    Some(take)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv(gpus: &[u32], docker: bool) -> Inventory {
        Inventory {
            executor: Some(if docker { ExecutorKind::Docker } else { ExecutorKind::Process }),
            gpus: gpus.iter().map(|&index| Gpu { index, name: String::new(), memory_bytes: 0 }).collect(),
            slots: 4,
            cpus: 2,
            memory_bytes: 1 << 30,
        }
    }

    #[test]
    fn placement_takes_lowest_free_gpus_and_never_held_ones() {
        let r2 = Resources { gpus: 2, ..Default::default() };
        assert_eq!(place(&inv(&[0, 1, 2], false), &[], &r2, false), Some(vec![0, 1]));
        assert_eq!(place(&inv(&[0, 1, 2], false), &[0], &r2, false), Some(vec![1, 2]));
        assert_eq!(place(&inv(&[0, 1, 2], false), &[1, 2], &r2, false), None);
        assert_eq!(place(&inv(&[], false), &[], &Resources::default(), false), Some(vec![]));
        assert_eq!(place(&inv(&[0], false), &[], &Resources::default(), true), None);
        let big = Resources { memory_bytes: Some(2 << 30), ..Default::default() };
        assert_eq!(place(&inv(&[], true), &[], &big, true), None);
    }

    #[test]
    fn build_tags_follow_content() {
        let a = ImageBuild { dockerfile: Some("FROM x".into()), context: None, git: None, obfuscate: false };
        let mut b = a.clone();
        assert_eq!(a.tag(), b.tag());
        b.obfuscate = true;
        assert_ne!(a.tag(), b.tag());
        assert!(a.tag().starts_with("podder-build:"));
    }

    #[test]
    fn parses_refs_sizes_and_git_sources() {
        let r: EnvRef = "bob/torch".parse().unwrap();
        assert_eq!(r.to_string(), "bob/torch");
        assert!("Bad Env".parse::<EnvRef>().is_err());
        assert_eq!(parse_bytes("512M").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("4G").unwrap(), 4 << 30);
        assert!(parse_bytes("4X").is_err());
        let g: GitSource = "file:///tmp/repo#v1".parse().unwrap();
        assert_eq!((g.url.as_str(), g.reference.as_str()), ("file:///tmp/repo", "v1"));
        assert_eq!("https://h/r.git".parse::<GitSource>().unwrap().reference, "HEAD");
        assert!("/tmp/repo".parse::<GitSource>().is_err());
    }
}

//! References users type: jobs (`alice/mnist#12`), datasets (`cifar@3`),
//! job outputs used as sources (`mnist#12/checkpoints`), and `--data` specs.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, invalid};
use crate::mount::{MountPath, check_relative};
use crate::names::Name;

/// A job: `[owner/]project#number`. Without an owner it means the caller's own.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct JobRef {
    pub owner: Option<Name>,
    pub project: Name,
    pub number: u64,
}

impl JobRef {
    pub fn with_owner(&self, owner: &Name) -> JobRef {
        JobRef { owner: Some(self.owner.clone().unwrap_or_else(|| owner.clone())), ..self.clone() }
    }
}

fn split_owner(s: &str, what: &str) -> Result<(Option<Name>, Name), Error> {
    let parts: Vec<&str> = s.split('/').collect();
    match parts.as_slice() {
        [name] => Ok((None, name.parse().map_err(|e| ctx(what, s, e))?)),
        [owner, name] => {
            Ok((Some(owner.parse().map_err(|e| ctx(what, s, e))?), name.parse().map_err(|e| ctx(what, s, e))?))
        }
        _ => Err(invalid(format!("'{s}' is not a {what}: expected [owner/]name"))),
    }
}

fn ctx(what: &str, s: &str, e: Error) -> Error {
    invalid(format!("'{s}' is not a valid {what}: {e}"))
}

fn parse_number(s: &str, full: &str) -> Result<u64, Error> {
    match s.parse::<u64>() {
        Ok(n) if n > 0 && !s.starts_with('+') => Ok(n),
        _ => Err(invalid(format!(
            "'{full}' is not a job reference: the part after '#' must be a job number such as mnist#12"
        ))),
    }
}

impl FromStr for JobRef {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let Some((head, num)) = s.split_once('#') else {
            return Err(invalid(format!(
                "'{s}' is not a job reference: write it as [owner/]project#N, for example mnist#12"
            )));
        };
        let (owner, project) = split_owner(head, "job reference")?;
        Ok(JobRef { owner, project, number: parse_number(num, s)? })
    }
}

impl fmt::Display for JobRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.owner {
            Some(o) => write!(f, "{o}/{}#{}", self.project, self.number),
            None => write!(f, "{}#{}", self.project, self.number),
        }
    }
}

impl Serialize for JobRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}
impl<'de> Deserialize<'de> for JobRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// Which version of a dataset.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Version {
    Latest,
    Number(u32),
}

/// Something a job can mount: a dataset version or a job's output (or a
/// directory inside it).
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum SourceRef {
    Dataset { owner: Option<Name>, name: Name, version: Version },
    Output { job: JobRef, path: Option<String> },
}

impl SourceRef {
    /// Where the source is mounted when the user names no path.
    pub fn default_mount(&self) -> MountPath {
        let p = match self {
            SourceRef::Dataset { name, .. } => format!("/data/{name}"),
            SourceRef::Output { job, .. } => format!("/data/{}-{}", job.project, job.number),
        };
        p.parse().expect("names make valid mount paths")
    }
}

impl FromStr for SourceRef {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        if s.is_empty() {
            return Err(invalid(
                "a data source cannot be empty: give a dataset such as cifar@3 or a job output such as mnist#12",
            ));
        }
        if let Some((head, rest)) = s.split_once('#') {
            let (num, path) = match rest.split_once('/') {
                Some((n, p)) => (n, Some(check_relative(p).map_err(|e| ctx("job output", s, e))?)),
                None => (rest, None),
            };
            let (owner, project) = split_owner(head, "job output")?;
            return Ok(SourceRef::Output { job: JobRef { owner, project, number: parse_number(num, s)? }, path });
        }
        let (head, version) = match s.split_once('@') {
            None => (s, Version::Latest),
            Some((h, "latest")) => (h, Version::Latest),
            Some((h, v)) => {
                let digits = v.strip_prefix('v').unwrap_or(v);
                match digits.parse::<u32>() {
                    Ok(n) if n > 0 && !digits.starts_with('+') => (h, Version::Number(n)),
                    _ => {
                        return Err(invalid(format!(
                            "'{s}' has a bad version '{v}': use NAME@3, NAME@v3 or NAME@latest"
                        )));
                    }
                }
            }
        };
        let (owner, name) = split_owner(head, "dataset")?;
        Ok(SourceRef::Dataset { owner, name, version })
    }
}

impl fmt::Display for SourceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceRef::Dataset { owner, name, version } => {
                if let Some(o) = owner {
                    write!(f, "{o}/")?;
                }
                write!(f, "{name}")?;
                match version {
                    Version::Latest => Ok(()),
                    Version::Number(n) => write!(f, "@{n}"),
                }
            }
            SourceRef::Output { job, path } => match path {
                Some(p) => write!(f, "{job}/{p}"),
                None => write!(f, "{job}"),
            },
        }
    }
}

/// One `--data SRC[:MOUNT]` argument.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct DataSpec {
    pub source: SourceRef,
    pub mount: MountPath,
}

impl FromStr for DataSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let (src, mount) = match s.split_once(':') {
            Some((src, m)) => (src, Some(m)),
            None => (s, None),
        };
        let source: SourceRef = src.parse()?;
        let mount = match mount {
            Some(m) => m.parse()?,
            None => source.default_mount(),
        };
        Ok(DataSpec { source, mount })
    }
}

/// Checks a set of mounts: no two at one path or nested in each other.
pub fn check_mounts<'a>(mounts: impl IntoIterator<Item = &'a MountPath>) -> Result<(), Error> {
    let all: Vec<&MountPath> = mounts.into_iter().collect();
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            if a.overlaps(b) {
                return Err(invalid(format!(
                    "two inputs are mounted at '{a}' and '{b}', which overlap: give each --data its own path with SRC:/path"
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_refs() {
        let r: JobRef = "alice/mnist#12".parse().unwrap();
        assert_eq!(r.owner.as_ref().unwrap().as_str(), "alice");
        assert_eq!(r.number, 12);
        assert_eq!(r.to_string(), "alice/mnist#12");
        assert_eq!("mnist#3".parse::<JobRef>().unwrap().to_string(), "mnist#3");
        for bad in ["mnist#x", "mnist", "#3", "mnist#0", "mnist#-1", "a/b/c#1", "../x#1", "mnist#+1"] {
            assert!(bad.parse::<JobRef>().is_err(), "{bad}");
        }
    }

    #[test]
    fn sources() {
        assert_eq!(
            "cifar@3".parse::<SourceRef>().unwrap(),
            SourceRef::Dataset { owner: None, name: "cifar".parse().unwrap(), version: Version::Number(3) }
        );
        assert_eq!("cifar@v3".parse::<SourceRef>().unwrap().to_string(), "cifar@3");
        let out: SourceRef = "alice/mnist#12/checkpoints/best".parse().unwrap();
        assert_eq!(out.to_string(), "alice/mnist#12/checkpoints/best");
        for bad in ["", "../x", "cifar@x", "cifar@0", "mnist#12/../x", "mnist#x"] {
            assert!(bad.parse::<SourceRef>().is_err(), "{bad}");
        }
    }

    #[test]
    fn data_specs() {
        let d: DataSpec = "mnist#12/sub:/model".parse().unwrap();
        assert_eq!(d.mount.as_str(), "/model");
        assert_eq!("cifar".parse::<DataSpec>().unwrap().mount.as_str(), "/data/cifar");
        assert_eq!("mnist#2".parse::<DataSpec>().unwrap().mount.as_str(), "/data/mnist-2");
        assert!("cifar:data".parse::<DataSpec>().is_err());
        assert!("cifar:/code".parse::<DataSpec>().is_err());
        let a: DataSpec = "a:/x".parse().unwrap();
        let b: DataSpec = "b:/x".parse().unwrap();
        assert!(check_mounts([&a.mount, &b.mount]).is_err());
    }
}

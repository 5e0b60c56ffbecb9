//! Client settings: `~/.config/podder/config.toml`, overridden by
//! `PODDER_SERVER` and `PODDER_TOKEN`; and the project file `podder.yaml`.
//! Read in one place; the token is redacted in `Debug`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

#[derive(Clone, Default, Serialize, Deserialize)]
pub struct ClientConfig {
    pub server: Option<String>,
    pub token: Option<String>,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig").field("server", &self.server).field("token", &"<redacted>").finish()
    }
}

fn home() -> PathBuf {
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/"))
}

pub fn config_path() -> PathBuf {
    if let Some(p) = std::env::var_os("PODDER_CONFIG") {
        return PathBuf::from(p);
    }
    let base = std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from).unwrap_or_else(|| home().join(".config"));
    base.join("podder").join("config.toml")
}

pub fn default_data_dir() -> PathBuf {
    let base = std::env::var_os("XDG_DATA_HOME").map(PathBuf::from).unwrap_or_else(|| home().join(".local/share"));
    base.join("podder")
}

pub fn cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from).unwrap_or_else(|| home().join(".cache"));
    base.join("podder")
}

impl ClientConfig {
    /// The file's values, then the environment's.
    pub fn load() -> Result<ClientConfig> {
        let path = config_path();
        let mut cfg = match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).with_context(|| format!("reading {}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ClientConfig::default(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        if let Ok(s) = std::env::var("PODDER_SERVER") {
            cfg.server = Some(s);
        }
        if let Ok(t) = std::env::var("PODDER_TOKEN") {
            cfg.token = Some(t);
        }
        Ok(cfg)
    }

    /// Writes the file (mode 0600: it holds a token).
    pub fn save(&self) -> Result<PathBuf> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = config_path();
        std::fs::create_dir_all(path.parent().expect("config has a parent"))?;
        let tmp = path.with_extension("toml.tmp");
        let mut f = std::fs::OpenOptions::new().create(true).write(true).truncate(true).mode(0o600).open(&tmp)?;
        std::io::Write::write_all(&mut f, toml::to_string(self)?.as_bytes())?;
        std::fs::rename(&tmp, &path)?;
        Ok(path)
    }
}

pub const PROJECT_FILE: &str = "podder.yaml";

/// `podder.yaml`: links a code directory to a project.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectFile {
    /// `name` or `owner/name`
    pub project: String,
    /// Default environment for `run` (used from issue 4 on)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
}

impl ProjectFile {
    /// Finds `podder.yaml` in `dir` or a parent; returns it and its directory.
    pub fn find(dir: &Path) -> Result<Option<(ProjectFile, PathBuf)>> {
        let mut cur = Some(dir);
        while let Some(d) = cur {
            let p = d.join(PROJECT_FILE);
            if p.is_file() {
                let text = std::fs::read_to_string(&p)?;
                let pf: ProjectFile = yaml_serde::from_str(&text)
                    .with_context(|| format!("{} is not a valid project file", p.display()))?;
                return Ok(Some((pf, d.to_path_buf())));
            }
            cur = d.parent();
        }
        Ok(None)
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        let p = dir.join(PROJECT_FILE);
        if p.exists() {
            bail!("{} already exists: edit it, or remove it first", p.display());
        }
        std::fs::write(&p, yaml_serde::to_string(self)?)?;
        Ok(())
    }
}

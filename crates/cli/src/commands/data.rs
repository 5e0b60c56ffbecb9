//! `podder data ...`: dispatch, the small dataset commands (create, list,
//! versions, from-output), and the helpers the others share: parsing
//! `[owner/]name[@N]` and resolving a version with errors that say what exists.

use anyhow::{Result, anyhow, bail};
use podder_core::api::{Dataset, DatasetVersion};
use podder_core::refs::Version;
use podder_core::{Name, SourceRef};

use crate::args::DataCmd;
use crate::ctx::Ctx;
use crate::display;

pub async fn run(ctx: &Ctx, cmd: DataCmd) -> Result<i32> {
    match cmd {
        DataCmd::Create { name, description } => create(ctx, &name, &description).await,
        DataCmd::Upload { name, dir, message, rehash, over_http, json } => {
            super::data_upload::run(ctx, &name, dir, message, rehash, over_http, json).await
        }
        DataCmd::List { json } => list(ctx, json).await,
        DataCmd::Versions { name, json } => versions(ctx, &name, json).await,
        DataCmd::Ls { dataset, path, json } => super::data_ls::run(ctx, &dataset, path.as_deref(), json).await,
        DataCmd::Download { dataset, dir, path } => {
            super::data_download::run(ctx, &dataset, dir, path.as_deref()).await
        }
        DataCmd::Delete { dataset, yes } => super::data_delete::run(ctx, &dataset, yes).await,
        DataCmd::FromOutput { job, name, message, project } => {
            from_output(ctx, &job, &name, message, project.as_deref()).await
        }
    }
}

/// A dataset as the user named it, with the owner filled in.
#[derive(Clone, Debug)]
pub struct DatasetArg {
    pub owner: Name,
    pub name: Name,
    pub version: Version,
    /// Whether the user wrote `@...` (`cifar@latest` counts).
    pub has_version: bool,
}

impl DatasetArg {
    /// `[owner/]name[@N|@vN|@latest]`.
    pub fn parse(ctx: &Ctx, s: &str) -> Result<DatasetArg> {
        match s.parse::<SourceRef>()? {
            SourceRef::Dataset { owner, name, version } => Ok(DatasetArg {
                owner: owner.unwrap_or_else(|| ctx.me.clone()),
                name,
                version,
                has_version: s.contains('@'),
            }),
            SourceRef::Output { .. } => {
                bail!("'{s}' is a job output, not a dataset: name a dataset as NAME, NAME@N or OWNER/NAME@N")
            }
        }
    }

    /// `[owner/]name`, refusing a version.
    pub fn parse_name(ctx: &Ctx, s: &str) -> Result<DatasetArg> {
        let d = DatasetArg::parse(ctx, s)?;
        if d.has_version {
            bail!("'{s}' names a version; give only the dataset's name here (e.g. {})", d.short(ctx));
        }
        Ok(d)
    }

    /// `name` for the caller's own datasets, `owner/name` for others'.
    pub fn short(&self, ctx: &Ctx) -> String {
        short_name(ctx, &self.owner, &self.name)
    }
}

pub fn short_name(ctx: &Ctx, owner: &Name, name: &Name) -> String {
    if *owner == ctx.me { name.to_string() } else { format!("{owner}/{name}") }
}

/// `cifar@3` (or `bob/cifar@3`).
pub fn version_name(ctx: &Ctx, v: &DatasetVersion) -> String {
    format!("{}@{}", short_name(ctx, &v.owner, &v.dataset), v.version)
}

/// The version the user named, with an error listing what exists when it does not.
pub async fn resolve(ctx: &Ctx, d: &DatasetArg) -> Result<DatasetVersion> {
    match ctx.client.dataset_version(&d.owner, &d.name, d.version).await {
        Ok(v) => Ok(v),
        Err(e) if e.status() == Some(404) => Err(explain_missing(ctx, d).await),
        Err(e) => Err(e.into()),
    }
}

async fn explain_missing(ctx: &Ctx, d: &DatasetArg) -> anyhow::Error {
    let short = d.short(ctx);
    match ctx.client.dataset_versions(&d.owner, &d.name).await {
        Err(e) if e.status() == Some(404) => no_dataset(ctx, d),
        Err(e) => e.into(),
        Ok(vs) if vs.is_empty() => {
            anyhow!("dataset {short} has no versions yet: upload one with `podder data upload {short} DIR`")
        }
        Ok(vs) => {
            let have: Vec<String> = vs.iter().map(|v| v.version.to_string()).collect();
            let asked = match d.version {
                Version::Number(n) => format!("no version {n}"),
                Version::Latest => "no latest version".into(),
            };
            anyhow!("dataset {short} has {asked}; its versions are {}", have.join(", "))
        }
    }
}

pub fn no_dataset(ctx: &Ctx, d: &DatasetArg) -> anyhow::Error {
    let short = d.short(ctx);
    anyhow!("there is no dataset {short}: see `podder data list`, or create it with `podder data upload {short} DIR`")
}

/// The dataset, or None when it does not exist.
pub async fn find(ctx: &Ctx, d: &DatasetArg) -> Result<Option<Dataset>> {
    match ctx.client.dataset(&d.owner, &d.name).await {
        Ok(ds) => Ok(Some(ds)),
        Err(e) if e.status() == Some(404) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Creates the caller's dataset `d` when `existing` is None.
pub async fn ensure(ctx: &Ctx, d: &DatasetArg, existing: Option<Dataset>) -> Result<Dataset> {
    if let Some(ds) = existing {
        return Ok(ds);
    }
    if d.owner != ctx.me {
        return Err(no_dataset(ctx, d));
    }
    match ctx.client.create_dataset(&d.name, "").await {
        Ok(ds) => {
            eprintln!("created dataset {}/{}", ds.owner, ds.name);
            Ok(ds)
        }
        // Created by someone else in the meantime: use it.
        Err(e) if e.status() == Some(409) => Ok(ctx.client.dataset(&d.owner, &d.name).await?),
        Err(e) => Err(e.into()),
    }
}

async fn create(ctx: &Ctx, name: &str, description: &str) -> Result<i32> {
    let d = DatasetArg::parse_name(ctx, name)?;
    if d.owner != ctx.me {
        bail!("you can create datasets only under your own name ({}): use `podder data create {}`", ctx.me, d.name);
    }
    let ds = ctx.client.create_dataset(&d.name, description).await.map_err(|e| match e.status() {
        Some(409) => {
            anyhow!("dataset {}/{} already exists: upload a new version with `podder data upload`", d.owner, d.name)
        }
        _ => e.into(),
    })?;
    println!("created dataset {}/{}", ds.owner, ds.name);
    Ok(0)
}

async fn list(ctx: &Ctx, json: bool) -> Result<i32> {
    let list = ctx.client.datasets().await?;
    if json {
        display::json(&list)?;
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|d| {
            vec![
                format!("{}/{}", d.owner, d.name),
                d.latest.map_or("-".into(), |n| format!("@{n}")),
                d.versions.to_string(),
                if d.latest.is_some() { display::bytes(d.bytes) } else { "-".into() },
                display::ago(d.created_at),
                d.description.clone(),
            ]
        })
        .collect();
    display::table(&["DATASET", "LATEST", "VERSIONS", "SIZE", "CREATED", "DESCRIPTION"], &rows);
    Ok(0)
}

async fn versions(ctx: &Ctx, name: &str, json: bool) -> Result<i32> {
    let d = DatasetArg::parse_name(ctx, name)?;
    let list = ctx.client.dataset_versions(&d.owner, &d.name).await.map_err(|e| match e.status() {
        Some(404) => no_dataset(ctx, &d),
        _ => e.into(),
    })?;
    if json {
        display::json(&list)?;
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|v| {
            vec![
                version_name(ctx, v),
                v.files.to_string(),
                display::bytes(v.bytes),
                display::ago(v.created_at),
                v.manifest.short(),
                match (&v.source, &v.message) {
                    (Some(s), Some(m)) => format!("{m} (from {s})"),
                    (Some(s), None) => format!("from {s}"),
                    (None, Some(m)) => m.clone(),
                    (None, None) => String::new(),
                },
            ]
        })
        .collect();
    display::table(&["VERSION", "FILES", "SIZE", "CREATED", "MANIFEST", "MESSAGE"], &rows);
    Ok(0)
}

async fn from_output(ctx: &Ctx, job: &str, name: &str, message: Option<String>, project: Option<&str>) -> Result<i32> {
    let d = DatasetArg::parse_name(ctx, name)?;
    let r = ctx.job_ref(job, project)?;
    // Checked first, so that a bad job creates no dataset.
    let j = ctx.client.job(&r, &ctx.me).await?;
    if j.output.is_none() {
        bail!("{} has no output yet (it is {}): wait until it ends", j.job_ref, j.state);
    }
    let existing = find(ctx, &d).await?;
    ensure(ctx, &d, existing).await?;
    let v = ctx.client.version_from_output(&d.owner, &d.name, &j.job_ref, message).await?;
    println!(
        "created {} from {}: {}, {}",
        version_name(ctx, &v),
        j.job_ref,
        display::count(v.files as u64, "file"),
        display::bytes(v.bytes)
    );
    Ok(0)
}

//! Dataset routes (`/datasets/...`) and garbage collection (`/admin/gc`):
//! one method per route, like the rest of [`Client`].

use podder_core::api::{CreateDataset, CreateVersion, Dataset, DatasetVersion, FromOutput, GcReport, GcRequest};
use podder_core::refs::Version;
use podder_core::{JobRef, ManifestId, Name};
use reqwest::Method;

use crate::{Client, Result};

/// The path segment naming a version: `latest` or its number.
fn version_segment(v: Version) -> String {
    match v {
        Version::Latest => "latest".to_string(),
        Version::Number(n) => n.to_string(),
    }
}

impl Client {
    pub(crate) async fn delete(&self, path: &str) -> Result<()> {
        self.send(self.req(Method::DELETE, path)).await.map(drop)
    }

    /// Creates a dataset owned by the caller (409 when it exists).
    pub async fn create_dataset(&self, name: &Name, description: &str) -> Result<Dataset> {
        self.post("/datasets", &CreateDataset { name: name.clone(), description: description.into() }).await
    }

    /// The datasets the caller can see.
    pub async fn datasets(&self) -> Result<Vec<Dataset>> {
        self.get("/datasets").await
    }

    pub async fn dataset(&self, owner: &Name, name: &Name) -> Result<Dataset> {
        self.get(&format!("/datasets/{owner}/{name}")).await
    }

    /// Deletes a dataset and all its versions (409 while a queued or running
    /// job mounts one of them).
    pub async fn delete_dataset(&self, owner: &Name, name: &Name) -> Result<()> {
        self.delete(&format!("/datasets/{owner}/{name}")).await
    }

    pub async fn dataset_versions(&self, owner: &Name, name: &Name) -> Result<Vec<DatasetVersion>> {
        self.get(&format!("/datasets/{owner}/{name}/versions")).await
    }

    /// Makes a committed manifest the dataset's next version.
    pub async fn create_version(
        &self,
        owner: &Name,
        name: &Name,
        manifest: ManifestId,
        message: Option<String>,
    ) -> Result<DatasetVersion> {
        self.post(&format!("/datasets/{owner}/{name}/versions"), &CreateVersion { manifest, message }).await
    }

    pub async fn dataset_version(&self, owner: &Name, name: &Name, version: Version) -> Result<DatasetVersion> {
        self.get(&format!("/datasets/{owner}/{name}/versions/{}", version_segment(version))).await
    }

    /// Deletes one version (409 while a queued or running job mounts it).
    pub async fn delete_version(&self, owner: &Name, name: &Name, version: u32) -> Result<()> {
        self.delete(&format!("/datasets/{owner}/{name}/versions/{version}")).await
    }

    /// Makes a job's output the dataset's next version, without moving a byte.
    pub async fn version_from_output(
        &self,
        owner: &Name,
        name: &Name,
        job: &JobRef,
        message: Option<String>,
    ) -> Result<DatasetVersion> {
        self.post(&format!("/datasets/{owner}/{name}/from-output"), &FromOutput { job: job.clone(), message }).await
    }

    /// Removes chunks and manifests nothing refers to (admin only).
    pub async fn gc(&self, dry_run: bool) -> Result<GcReport> {
        self.post("/admin/gc", &GcRequest { dry_run }).await
    }
}

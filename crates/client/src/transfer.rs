//! The transfer protocols: upload a scanned tree (ask which chunks the server
//! lacks, send only those in framed batches, commit the manifest) and
//! download a manifest's chunks into a local chunk cache.
//!
//! Every step is idempotent, so an interrupted transfer resumes by running
//! again: chunks that arrived are not sent twice.

use std::sync::Arc;

use podder_core::api::frames;
use podder_core::{ChunkId, Manifest, ManifestId};
use podder_store::BlobStore;
use podder_store::scan::{ScannedTree, read_chunk};

use crate::{Client, ClientError, Result};

/// How many chunk ids one `missing` request asks about.
const ASK_BATCH: usize = 20_000;
/// The target size of one upload request body.
const SEND_BATCH_BYTES: usize = 16 * 1024 * 1024;

/// Progress of a transfer, in bytes. The CLI draws a bar; others ignore it.
pub trait Progress: Send + Sync {
    fn start(&self, _total_bytes: u64) {}
    fn advance(&self, _bytes: u64) {}
    fn finish(&self) {}
}

/// Reports nothing.
pub struct NoProgress;
impl Progress for NoProgress {}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct UploadReport {
    pub manifest: Option<ManifestId>,
    pub files: usize,
    pub bytes_total: u64,
    pub chunks_total: usize,
    pub chunks_sent: usize,
    pub bytes_sent: u64,
}

/// Uploads what the server lacks of `tree` and commits its manifest.
pub async fn upload_tree(client: &Client, tree: &ScannedTree, progress: &dyn Progress) -> Result<UploadReport> {
    let all: Vec<ChunkId> = tree.manifest.chunk_ids().into_iter().collect();
    let mut missing = Vec::new();
    for batch in all.chunks(ASK_BATCH) {
        missing.extend(client.missing_chunks(batch.to_vec()).await?);
    }
    let mut report = UploadReport {
        files: tree.manifest.file_count(),
        bytes_total: tree.manifest.total_size(),
        chunks_total: all.len(),
        ..Default::default()
    };
    let mut sources = Vec::with_capacity(missing.len());
    for id in &missing {
        let src = tree.sources.get(id).ok_or_else(|| {
            ClientError::Protocol(format!("the server asked for chunk {id}, which this tree does not hold"))
        })?;
        sources.push((*id, src.clone()));
    }
    progress.start(sources.iter().map(|(_, s)| s.len as u64).sum());

    // A reader thread fills batches while the previous one is on the wire.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<(Vec<u8>, usize, u64)>>(2);
    let reader = tokio::task::spawn_blocking(move || {
        let mut body = Vec::with_capacity(SEND_BATCH_BYTES + frames::MAX_CHUNK);
        let (mut n, mut bytes) = (0usize, 0u64);
        for (id, src) in sources {
            let data = match read_chunk(&src) {
                Ok(d) => d,
                Err(e) => {
                    let _ = tx.blocking_send(Err(std::io::Error::new(
                        e.kind(),
                        format!("reading {}: {e} (did the file change during the upload?)", src.path.display()),
                    )));
                    return;
                }
            };
            if ChunkId::of(&data) != id {
                let _ = tx.blocking_send(Err(std::io::Error::other(format!(
                    "{} changed during the upload; run the command again",
                    src.path.display()
                ))));
                return;
            }
            body.extend_from_slice(&frames::header(&id, data.len()));
            body.extend_from_slice(&data);
            n += 1;
            bytes += data.len() as u64;
            if body.len() >= SEND_BATCH_BYTES {
                let full = std::mem::replace(&mut body, Vec::with_capacity(SEND_BATCH_BYTES + frames::MAX_CHUNK));
                if tx.blocking_send(Ok((full, n, bytes))).is_err() {
                    return;
                }
                (n, bytes) = (0, 0);
            }
        }
        if n > 0 {
            let _ = tx.blocking_send(Ok((body, n, bytes)));
        }
    });
    while let Some(batch) = rx.recv().await {
        let (body, n, bytes) = batch?;
        client.upload_frames(body).await?;
        report.chunks_sent += n;
        report.bytes_sent += bytes;
        progress.advance(bytes);
    }
    reader.await.map_err(|e| ClientError::Protocol(e.to_string()))?;
    let committed = client.commit_manifest(&tree.manifest).await?;
    progress.finish();
    report.manifest = Some(committed.id);
    Ok(report)
}

/// Fetches every chunk of `manifest` that `cache` lacks into it. Returns the
/// number of bytes fetched.
pub async fn fetch_into(
    client: &Client,
    manifest: &Manifest,
    cache: &Arc<dyn BlobStore>,
    progress: &dyn Progress,
) -> Result<u64> {
    let mut missing = Vec::new();
    for id in manifest.chunk_ids() {
        if !cache.has_chunk(id).await? {
            missing.push(id);
        }
    }
    let total: u64 = chunk_sizes(manifest, &missing);
    progress.start(total);
    let mut fetched = 0;
    for batch in missing.chunks(4096) {
        let mut reader = client.fetch_chunks(batch.to_vec()).await?;
        while let Some((id, data)) = reader.next().await? {
            let n = data.len() as u64;
            cache.put_chunk(id, data).await?;
            fetched += n;
            progress.advance(n);
        }
    }
    progress.finish();
    Ok(fetched)
}

/// Approximate bytes of the given chunks, from the file sizes that hold them.
fn chunk_sizes(manifest: &Manifest, ids: &[ChunkId]) -> u64 {
    if ids.is_empty() {
        return 0;
    }
    let want: std::collections::HashSet<&ChunkId> = ids.iter().collect();
    let mut sum = 0;
    for e in &manifest.entries {
        if let podder_core::EntryKind::File { size, chunks, .. } = &e.kind
            && !chunks.is_empty()
        {
            let per = size / chunks.len() as u64;
            sum += chunks.iter().filter(|c| want.contains(c)).count() as u64 * per;
        }
    }
    sum
}

/// Downloads a manifest's tree into `dest` through the chunk cache.
pub async fn download_tree(
    client: &Client,
    id: &ManifestId,
    cache: &Arc<dyn BlobStore>,
    dest: &std::path::Path,
    progress: &dyn Progress,
) -> Result<Manifest> {
    let manifest = client.manifest(id).await?;
    fetch_into(client, &manifest, cache, progress).await?;
    podder_store::materialize::materialize(cache.as_ref(), &manifest, dest).await?;
    Ok(manifest)
}

//! [`MemoryStore`]: a [`BlobStore`] held in memory, for tests and tools.
//!
//! Same semantics as the other backends (hashes checked on put, idempotent,
//! absent deletes are fine); chunks are kept uncompressed.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use bytes::Bytes;
use podder_core::{ChunkId, ManifestId};

use crate::blob::{BlobStore, StoreError, check_chunk, check_manifest};

#[derive(Debug, Default)]
pub struct MemoryStore {
    chunks: Mutex<HashMap<ChunkId, Bytes>>,
    manifests: Mutex<HashMap<ManifestId, Bytes>>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn chunks(&self) -> MutexGuard<'_, HashMap<ChunkId, Bytes>> {
        // A panic while holding the lock cannot leave a map half-updated.
        self.chunks.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn manifests(&self) -> MutexGuard<'_, HashMap<ManifestId, Bytes>> {
        self.manifests.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl BlobStore for MemoryStore {
    async fn put_chunk(&self, id: ChunkId, data: Bytes) -> Result<bool, StoreError> {
        check_chunk(id, &data)?;
        let mut chunks = self.chunks();
        if chunks.contains_key(&id) {
            return Ok(false);
        }
        chunks.insert(id, data);
        Ok(true)
    }
    async fn get_chunk(&self, id: ChunkId) -> Result<Bytes, StoreError> {
        self.chunks().get(&id).cloned().ok_or_else(|| StoreError::NotFound(format!("chunk {id}")))
    }
    async fn has_chunk(&self, id: ChunkId) -> Result<bool, StoreError> {
        Ok(self.chunks().contains_key(&id))
    }
    async fn delete_chunk(&self, id: ChunkId) -> Result<(), StoreError> {
        self.chunks().remove(&id);
        Ok(())
    }
    async fn list_chunks(&self) -> Result<Vec<ChunkId>, StoreError> {
        let mut ids: Vec<ChunkId> = self.chunks().keys().copied().collect();
        ids.sort();
        Ok(ids)
    }
    async fn put_manifest(&self, id: ManifestId, bytes: Bytes) -> Result<(), StoreError> {
        check_manifest(id, &bytes)?;
        self.manifests().entry(id).or_insert(bytes);
        Ok(())
    }
    async fn get_manifest(&self, id: ManifestId) -> Result<Bytes, StoreError> {
        self.manifests().get(&id).cloned().ok_or_else(|| StoreError::NotFound(format!("manifest {id}")))
    }
    async fn has_manifest(&self, id: ManifestId) -> Result<bool, StoreError> {
        Ok(self.manifests().contains_key(&id))
    }
    async fn list_manifests(&self) -> Result<Vec<ManifestId>, StoreError> {
        let mut ids: Vec<ManifestId> = self.manifests().keys().copied().collect();
        ids.sort();
        Ok(ids)
    }
    async fn delete_manifest(&self, id: ManifestId) -> Result<(), StoreError> {
        self.manifests().remove(&id);
        Ok(())
    }
    async fn chunk_size(&self, id: ChunkId) -> Result<u64, StoreError> {
        self.chunks().get(&id).map(|c| c.len() as u64).ok_or_else(|| StoreError::NotFound(format!("chunk {id}")))
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn passes_the_shared_suite() {
        crate::suite::suite(&super::MemoryStore::new()).await;
    }
}

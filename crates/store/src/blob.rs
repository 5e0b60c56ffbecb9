//! The storage trait every backend implements.

use async_trait::async_trait;
use bytes::Bytes;
use podder_core::{ChunkId, ManifestId};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(String),
    /// The bytes do not hash to the id they were sent under.
    #[error("chunk {expected} does not match its bytes (they hash to {actual})")]
    Corrupt { expected: String, actual: String },
    /// Manifest bytes that do not hash to the id they were sent under.
    #[error("manifest {expected} does not match its bytes (they hash to {actual})")]
    CorruptManifest { expected: String, actual: String },
    /// A request that can never succeed as given (an invalid manifest, a
    /// destination that is not empty, ...); the message says what to do.
    #[error("{0}")]
    Invalid(String),
    #[error("storage I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// A content-addressed blob store. Every method is idempotent: putting a
/// chunk twice stores it once. Writes are atomic: a reader never sees a
/// partly written chunk or manifest.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Stores uncompressed chunk bytes under `id` after checking that they
    /// hash to it. Returns true if the chunk was new.
    async fn put_chunk(&self, id: ChunkId, data: Bytes) -> Result<bool, StoreError>;
    /// [`BlobStore::put_chunk`] for bytes the caller itself hashed into
    /// `id` (the server, chunking a file it read): backends may skip the
    /// check. Never for bytes that arrived with their id from elsewhere.
    async fn put_hashed(&self, id: ChunkId, data: Bytes) -> Result<bool, StoreError> {
        self.put_chunk(id, data).await
    }
    /// Stores a chunk of `len` bytes that `fill` copies into the store's own
    /// write buffer and names (by hashing that copy, so the id names the
    /// bytes stored even if their source changes meanwhile); returns the id
    /// and whether the chunk was new. On the calling thread, for backends
    /// whose writes are plain file I/O; `None` from the others (then copy,
    /// hash and call `put_hashed`).
    fn put_copied_blocking(
        &self,
        _len: usize,
        _fill: &mut dyn FnMut(&mut [u8]) -> ChunkId,
    ) -> Option<Result<(ChunkId, bool), StoreError>> {
        None
    }
    /// The uncompressed bytes of a chunk.
    async fn get_chunk(&self, id: ChunkId) -> Result<Bytes, StoreError>;
    async fn has_chunk(&self, id: ChunkId) -> Result<bool, StoreError>;
    /// Removes a chunk; removing an absent one is not an error.
    async fn delete_chunk(&self, id: ChunkId) -> Result<(), StoreError>;
    /// Every stored chunk id (for garbage collection).
    async fn list_chunks(&self) -> Result<Vec<ChunkId>, StoreError>;
    /// Stores a manifest's canonical bytes under its id (checked).
    async fn put_manifest(&self, id: ManifestId, bytes: Bytes) -> Result<(), StoreError>;
    async fn get_manifest(&self, id: ManifestId) -> Result<Bytes, StoreError>;
    async fn has_manifest(&self, id: ManifestId) -> Result<bool, StoreError>;

    /// Every stored manifest id (for garbage collection). Backends that
    /// cannot list answer [`StoreError::Invalid`].
    async fn list_manifests(&self) -> Result<Vec<ManifestId>, StoreError> {
        Err(StoreError::Invalid("this store cannot list its manifests".into()))
    }
    /// Removes a manifest; removing an absent one is not an error. Like
    /// [`BlobStore::delete_chunk`], a delete is not ordered against a
    /// concurrent put of the same object: whoever deletes (the server's
    /// garbage collector) must keep writers out meanwhile.
    async fn delete_manifest(&self, _id: ManifestId) -> Result<(), StoreError> {
        Err(StoreError::Invalid("this store cannot delete manifests".into()))
    }
    /// The bytes a chunk takes in the store (compressed, where the backend
    /// compresses); [`StoreError::NotFound`] when it is absent.
    async fn chunk_size(&self, id: ChunkId) -> Result<u64, StoreError> {
        Ok(self.get_chunk(id).await?.len() as u64)
    }
    /// Gives the space of deleted chunks back to the file system, where the
    /// backend does not do so at delete (the pack store rewrites the packs
    /// that hold deleted records). Like deletes, it must not race writers
    /// that the caller cares about: the server runs it at the end of a
    /// garbage collection, under its exclusive lock. The default does
    /// nothing.
    async fn compact(&self) -> Result<CompactReport, StoreError> {
        Ok(CompactReport::default())
    }
}

/// What a [`BlobStore::compact`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompactReport {
    /// Files (packs) rewritten without their dead records, or removed when
    /// nothing in them was alive.
    pub packs_rewritten: u64,
    /// Files written in their place.
    pub packs_written: u64,
    /// Bytes the store's files shrank by.
    pub bytes_reclaimed: u64,
}

/// Checks that chunk bytes hash to their id.
pub(crate) fn check_chunk(id: ChunkId, data: &[u8]) -> Result<(), StoreError> {
    let actual = ChunkId::of(data);
    if actual != id {
        return Err(StoreError::Corrupt { expected: id.to_hex(), actual: actual.to_hex() });
    }
    Ok(())
}

/// Checks that manifest bytes hash to their id.
pub(crate) fn check_manifest(id: ManifestId, bytes: &[u8]) -> Result<(), StoreError> {
    let actual = ManifestId::of(bytes);
    if actual != id {
        return Err(StoreError::CorruptManifest { expected: id.to_hex(), actual: actual.to_hex() });
    }
    Ok(())
}

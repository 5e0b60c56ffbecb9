//! The content-addressed object store: chunks and manifests.
//!
//! Files are cut into content-defined chunks (FastCDC), each named by the
//! BLAKE3 hash of its bytes and stored zstd-compressed where that pays
//! (raw otherwise: see [`local`]). Manifests (see
//! `podder_core::manifest`) are stored by their id. This crate owns the
//! storage backends (the [`BlobStore`] trait: the server's pack files
//! ([`pack`]), a directory of one file per object ([`local`]: the agent's
//! and the CLI's caches, shared by processes) and an in-memory one; S3 comes
//! later), chunking and tree scanning on the client side, and materializing
//! a manifest back into a directory.
//!
//! It must not know about HTTP, jobs or the metadata database.

pub mod blob;
pub mod chunker;
pub mod ingest;
pub mod local;
pub mod mapped;
pub mod materialize;
pub mod memory;
pub mod pack;
pub mod pool;
pub mod scan;
pub mod statcache;

#[cfg(test)]
mod suite;

pub use blob::{BlobStore, CompactReport, StoreError};
pub use local::LocalStore;
pub use memory::MemoryStore;
pub use pack::{PackOptions, PackStore};

/// Runs CPU or blocking file work on tokio's blocking pool. A panic in `f`
/// resumes on the caller; a cancelled task becomes an I/O error.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(res) => res,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(StoreError::Io(std::io::Error::other(format!("storage task was cancelled: {e}")))),
    }
}

/// Adds a path to an I/O error's message, keeping its kind.
pub(crate) fn at(path: &std::path::Path, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

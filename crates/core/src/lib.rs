//! podder's pure domain: names, refs and their parsing, digests, manifests,
//! job states and transitions, and the wire types of the HTTP API.
//!
//! This crate must not do I/O: no async runtime, database, filesystem or HTTP.
//! Everything here is plain data and functions that cannot fail except by
//! returning [`Error`].

pub mod api;
pub mod digest;
pub mod duration;
pub mod env;
pub mod error;
pub mod job;
pub mod manifest;
pub mod mount;
pub mod names;
pub mod refs;
pub mod task;

pub use digest::{ChunkId, Digest, ManifestId};
pub use env::{EnvRef, EnvSpec, ExecutorKind, Gpu, ImageBuild, Inventory, Resources};
pub use error::Error;
pub use job::{JobState, Outcome};
pub use manifest::{Entry, EntryKind, Manifest};
pub use mount::MountPath;
pub use names::Name;
pub use refs::{DataSpec, JobRef, SourceRef};

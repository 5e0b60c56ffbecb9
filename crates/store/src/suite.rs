//! The behaviour every [`BlobStore`] backend must show; each backend's tests
//! call [`suite`] on a fresh, empty store.

use bytes::Bytes;
use podder_core::{ChunkId, Manifest, ManifestId};

use crate::blob::{BlobStore, StoreError};

pub(crate) async fn suite(store: &dyn BlobStore) {
    let a = Bytes::from_static(b"alpha chunk");
    let b = Bytes::from(vec![7u8; 300_000]);
    let (ida, idb) = (ChunkId::of(&a), ChunkId::of(&b));

    // Missing things are NotFound / false.
    assert!(!store.has_chunk(ida).await.unwrap());
    assert!(matches!(store.get_chunk(ida).await, Err(StoreError::NotFound(_))));
    assert!(store.list_chunks().await.unwrap().is_empty());

    // Put is idempotent and round-trips.
    assert!(store.put_chunk(ida, a.clone()).await.unwrap());
    assert!(!store.put_chunk(ida, a.clone()).await.unwrap());
    assert!(store.put_chunk(idb, b.clone()).await.unwrap());
    assert!(store.has_chunk(ida).await.unwrap());
    assert_eq!(store.get_chunk(ida).await.unwrap(), a);
    assert_eq!(store.get_chunk(idb).await.unwrap(), b);
    let empty = ChunkId::of(b"");
    assert!(store.put_chunk(empty, Bytes::new()).await.unwrap());
    assert!(store.get_chunk(empty).await.unwrap().is_empty());

    // Bytes that do not match their id are refused and not stored.
    let bogus = ChunkId::of(b"something else");
    let err = store.put_chunk(bogus, a.clone()).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { ref expected, .. } if *expected == bogus.to_hex()), "{err}");
    assert!(!store.has_chunk(bogus).await.unwrap());

    // List, delete, delete again.
    let mut want = vec![ida, idb, empty];
    want.sort();
    let mut got = store.list_chunks().await.unwrap();
    got.sort();
    assert_eq!(got, want);
    store.delete_chunk(idb).await.unwrap();
    store.delete_chunk(idb).await.unwrap();
    assert!(!store.has_chunk(idb).await.unwrap());
    assert!(matches!(store.get_chunk(idb).await, Err(StoreError::NotFound(_))));
    assert_eq!(store.list_chunks().await.unwrap().len(), 2);

    // Manifests: checked, idempotent, round-trip.
    let m = Manifest::new(vec![]);
    let bytes = Bytes::from(m.canonical_bytes());
    let mid = m.id();
    assert!(!store.has_manifest(mid).await.unwrap());
    assert!(matches!(store.get_manifest(mid).await, Err(StoreError::NotFound(_))));
    store.put_manifest(mid, bytes.clone()).await.unwrap();
    store.put_manifest(mid, bytes.clone()).await.unwrap();
    assert!(store.has_manifest(mid).await.unwrap());
    assert_eq!(store.get_manifest(mid).await.unwrap(), bytes);
    let other = ManifestId::of(b"{}");
    assert!(matches!(store.put_manifest(other, bytes).await, Err(StoreError::CorruptManifest { .. })));
    assert!(!store.has_manifest(other).await.unwrap());

    // Listing and deleting manifests (garbage collection).
    let m2 = Manifest::new(vec![podder_core::Entry {
        path: "a".into(),
        kind: podder_core::EntryKind::File { mode: 0o644, size: a.len() as u64, chunks: vec![ida] },
    }]);
    store.put_manifest(m2.id(), Bytes::from(m2.canonical_bytes())).await.unwrap();
    let mut want = vec![mid, m2.id()];
    want.sort();
    assert_eq!(store.list_manifests().await.unwrap(), want);
    store.delete_manifest(mid).await.unwrap();
    store.delete_manifest(mid).await.unwrap();
    assert!(!store.has_manifest(mid).await.unwrap());
    assert!(matches!(store.get_manifest(mid).await, Err(StoreError::NotFound(_))));
    assert_eq!(store.list_manifests().await.unwrap(), vec![m2.id()]);
    assert!(store.has_manifest(m2.id()).await.unwrap());

    // Sizes: what a chunk takes in the store, at most a little over its bytes.
    let size = store.chunk_size(ida).await.unwrap();
    assert!(size > 0 && size <= a.len() as u64 + 64, "{size}");
    assert!(matches!(store.chunk_size(idb).await, Err(StoreError::NotFound(_))), "a deleted chunk has no size");
}

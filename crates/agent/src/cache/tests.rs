//! Tests of the cache index: LRU order, pins, chunk eviction, restarts.
use std::time::Duration;

use super::*;

fn id(n: u8) -> ManifestId {
    ManifestId::of(&[n])
}

/// A ready tree of `bytes` bytes for `id(n)`, published and pinned.
fn put_tree(c: &Cache, n: u8, bytes: usize) -> TreePin {
    let dir = c.tree_path(&id(n));
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("sub/f"), vec![n; bytes]).unwrap();
    c.publish(&id(n), bytes as u64)
}

/// A chunk file of `bytes` bytes in the chunk cache, last used `age` ago.
fn put_chunk(c: &Cache, n: u8, bytes: usize, age: Duration) -> PathBuf {
    let cid = ChunkId::of(&[n, 0xc]);
    let path = c.chunk_path(&cid);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, vec![n; bytes]).unwrap();
    c.chunks_used(&[cid], &[cid]);
    let f = std::fs::File::options().write(true).open(&path).unwrap();
    f.set_modified(SystemTime::now() - age).unwrap();
    path
}

fn open(dir: &Path, limit: u64) -> Cache {
    Cache::open(dir, limit).unwrap()
}

fn trash_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir.join("trash")).unwrap().next().is_none()
}

#[test]
fn evicts_the_least_recently_used_trees_first() {
    let t = tempfile::tempdir().unwrap();
    let c = open(t.path(), 300);
    for n in 1..=3 {
        drop(put_tree(&c, n, 100));
    }
    drop(c.pin_ready(&id(1)).unwrap());
    assert_eq!(c.usage().trees, [id(2), id(3), id(1)]);
    // Room for a 100-byte tree: the least recently used one goes.
    c.enforce(100);
    assert_eq!(c.usage().trees, [id(3), id(1)]);
    assert!(!c.tree_path(&id(2)).exists());
    assert!(c.tree_path(&id(3)).join("sub/f").exists());
    drop(put_tree(&c, 4, 100));
    c.enforce(150);
    assert_eq!(c.usage(), Usage { tree_bytes: 100, chunk_bytes: 0, trees: vec![id(4)] });
    assert!(c.pin_ready(&id(2)).is_none() && c.pin_ready(&id(3)).is_none());
    assert!(trash_empty(t.path()));
    // Under the limit, nothing goes.
    c.enforce(0);
    assert_eq!(c.usage().trees, [id(4)]);
}

#[test]
fn pinned_trees_are_never_evicted() {
    let t = tempfile::tempdir().unwrap();
    let c = open(t.path(), 100);
    let a = put_tree(&c, 1, 100);
    c.enforce(100);
    let b = put_tree(&c, 2, 100);
    c.enforce(0);
    // Over its limit, with both trees in use: both stay.
    assert_eq!(c.usage().tree_bytes, 200);
    assert!(c.over_limit());
    assert_eq!(std::fs::read(a.path().join("sub/f")).unwrap(), [1; 100]);
    // A second pin of the same tree keeps it after the first goes.
    let a2 = c.pin_ready(&id(1)).unwrap();
    drop(a);
    c.enforce(0);
    assert_eq!(c.usage().trees, [id(2), id(1)]);
    drop(a2);
    c.enforce(0);
    assert_eq!(c.usage().trees, [id(2)]);
    assert!(!c.tree_path(&id(1)).exists());
    assert!(b.path().join("sub/f").exists());
    drop(b);
    c.enforce(1);
    assert!(c.usage().trees.is_empty());
}

#[tokio::test]
async fn chunks_are_evicted_after_trees_oldest_first() {
    let t = tempfile::tempdir().unwrap();
    let c = open(t.path(), 1000);
    let old = put_chunk(&c, 1, 100, Duration::from_secs(60));
    let new = put_chunk(&c, 2, 100, Duration::from_secs(1));
    drop(put_tree(&c, 1, 300));
    drop(put_tree(&c, 2, 300));
    assert_eq!(c.usage().chunk_bytes, 200);
    c.enforce(400);
    assert_eq!((c.usage().trees, c.usage().chunk_bytes), (vec![id(2)], 200));
    c.enforce(700);
    assert_eq!((c.usage().trees, c.usage().chunk_bytes), (vec![], 200));
    // Chunks a download relies on stay until it is done.
    let in_use = c.chunks_in_use().await;
    c.enforce(850);
    assert!(old.exists() && new.exists());
    drop(in_use);
    c.enforce(850);
    assert!(!old.exists() && new.exists());
    assert_eq!(c.usage().chunk_bytes, 100);
    // Using a chunk makes it the most recent.
    let old = put_chunk(&c, 1, 100, Duration::from_secs(60));
    c.chunks_used(&[ChunkId::of(&[1, 0xc])], &[]);
    c.enforce(850);
    assert!(old.exists() && !new.exists());
}

#[test]
fn the_cache_survives_a_restart() {
    let t = tempfile::tempdir().unwrap();
    let c = open(t.path(), 1000);
    for n in 1..=4 {
        drop(put_tree(&c, n, 100));
    }
    drop(c.pin_ready(&id(1)).unwrap());
    drop(c);
    // What a crash leaves: a tree being built, staged chunks, an evicted
    // tree not yet deleted, a ready tree the index missed, an indexed
    // tree that is gone.
    let dir = t.path();
    for leftover in ["trees/.tmp-abc-1/x", "staging/abc-1/chunks/x", "trash/abc-1/x"] {
        std::fs::create_dir_all(dir.join(leftover)).unwrap();
    }
    std::fs::set_permissions(dir.join("trees/.tmp-abc-1"), std::os::unix::fs::PermissionsExt::from_mode(0o555))
        .unwrap();
    // (File times lag the clock by up to a tick: the adopted tree must
    // be the newest.)
    std::thread::sleep(Duration::from_millis(50));
    std::fs::create_dir_all(dir.join("trees").join(id(9).to_hex()).join("d")).unwrap();
    std::fs::write(dir.join("trees").join(id(9).to_hex()).join("d/f"), [0; 50]).unwrap();
    crate::prepare::remove_tree(&dir.join("trees").join(id(4).to_hex())).unwrap();

    let c = open(dir, 1000);
    let u = c.usage();
    assert_eq!(u.tree_bytes, 350);
    assert_eq!(u.trees[..2], [id(2), id(3)], "{u:?}");
    assert!(u.trees.contains(&id(1)) && u.trees.contains(&id(9)));
    assert!(!dir.join("trees/.tmp-abc-1").exists());
    for d in ["staging", "trash"] {
        assert!(std::fs::read_dir(dir.join(d)).unwrap().next().is_none(), "{d}");
    }
    drop(c);
    // The LRU order was kept: a smaller limit evicts the oldest first.
    let c = open(dir, 150);
    assert_eq!(c.usage().tree_bytes, 150);
    assert!(c.pin_ready(&id(2)).is_none() && c.pin_ready(&id(3)).is_none());
    drop(c.pin_ready(&id(1)).unwrap());
    drop(c);
    // A damaged index is rebuilt from the trees.
    std::fs::write(dir.join("index.json"), b"{not json").unwrap();
    let c = open(dir, 1000);
    assert_eq!(c.usage().tree_bytes, 150);
    assert!(c.pin_ready(&id(9)).is_some());
}

#[test]
fn the_default_limit_is_bounded() {
    let t = tempfile::tempdir().unwrap();
    let limit = default_cache_bytes(t.path());
    assert!(limit > 0 && limit <= DEFAULT_CACHE_MAX, "{limit}");
    assert!(default_cache_bytes(&t.path().join("not/yet")) == limit);
}

/// A tree given to an unsandboxed job is dropped once no job uses it, and
/// at the next start when the agent died while the job ran: a later job
/// never mounts a tree that job could have changed.
#[test]
fn exposed_trees_are_never_served_again() {
    let t = tempfile::tempdir().unwrap();
    let c = open(t.path(), 1 << 30);
    let (a, b) = (put_tree(&c, 1, 10), put_tree(&c, 2, 10));
    let b2 = c.pin_ready(&id(2)).unwrap();
    a.expose();
    b.expose();
    drop(a);
    assert!(!c.has_tree(&id(1)) && !c.tree_path(&id(1)).exists(), "dropped with its last pin");
    assert!(trash_empty(t.path()));
    drop(b);
    assert!(c.has_tree(&id(2)), "still used by another job");
    // The agent dies while the job runs: the next start drops the tree.
    std::mem::forget(b2);
    drop(c);
    let c = open(t.path(), 1 << 30);
    assert!(!c.has_tree(&id(2)) && !c.tree_path(&id(2)).exists());
    let p = put_tree(&c, 3, 10);
    drop(p);
    assert!(c.has_tree(&id(3)), "an unexposed tree stays");
}

//! The SQLite backend against the shared suite, plus what only it has.

use podder_meta::{MetaStore, SqliteStore, testsuite};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_passes_the_shared_suite() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("meta.db")).await.unwrap();
    testsuite::run_all(&store).await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_keeps_data_and_migrates_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    let alice = "alice".parse().unwrap();
    {
        let store = SqliteStore::open(&path).await.unwrap();
        store.ensure_owner(&alice, true, 1).await.unwrap();
        store.close().await;
    }
    let store = SqliteStore::open(&path).await.unwrap();
    assert!(store.has_admin().await.unwrap());
    assert!(store.ensure_owner(&alice, false, 2).await.unwrap().admin);
    store.close().await;
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_the_first_schema_is_upgraded_with_its_jobs() {
    use podder_core::ManifestId;
    use podder_core::refs::Version;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    let (code, output) = (ManifestId::of(b"old code"), ManifestId::of(b"old output"));
    let input = ManifestId::of(b"old input");
    {
        // What a server of the first release left behind: schema 1, one finished job.
        let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(&path).create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
        sqlx::raw_sql(include_str!("../src/sqlite/migrations/0001_init.sql")).execute(&pool).await.unwrap();
        let spec = serde_json::json!({
            "code": code, "command": ["true"], "setup": [], "params": {}, "env": null,
            "inputs": [{ "source": "old/p#0", "manifest": input, "mount": "/data/old" }],
            "timeout_secs": null, "retries": 0, "queue": "default"
        });
        sqlx::raw_sql(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, description TEXT NOT NULL,
                                             applied_at INTEGER NOT NULL);
             INSERT INTO schema_migrations VALUES (1, 'initial schema', 1);
             INSERT INTO owners (id, name, admin, created_at) VALUES (1, 'old', TRUE, 1);
             INSERT INTO projects (id, owner_id, name, last_job, created_at) VALUES (1, 1, 'p', 1, 1);",
        )
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO jobs (project_id, number, state, queue, spec, output, created_at)
             VALUES (1, 1, 'succeeded', 'default', $1, $2, 1)",
        )
        .bind(spec.to_string())
        .bind(output.to_hex())
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    }
    let store = SqliteStore::open(&path).await.unwrap();
    let old = "old".parse().unwrap();
    let job = store.get_job(&old, &"p".parse().unwrap(), 1).await.unwrap();
    assert_eq!(job.job.output, Some(output));
    let refs = store.referenced_manifests().await.unwrap();
    assert!(refs.contains(&code) && refs.contains(&output));
    assert!(store.may_read_manifest(&old, code).await.unwrap(), "the upgrade grants a job's code to its owner");
    assert!(store.may_read_manifest(&old, output).await.unwrap(), "and its output");
    assert!(store.may_read_manifest(&old, input).await.unwrap(), "and its inputs");
    assert_eq!(store.usage(&old).await.unwrap(), 0, "outputs of the first schema have no recorded size");
    store.create_dataset(&old, &"d".parse().unwrap(), "", 2).await.unwrap();
    let v = podder_meta::NewVersion {
        owner: old.clone(),
        dataset: "d".parse().unwrap(),
        manifest: output,
        files: 1,
        bytes: 5,
        message: None,
        source: Some("old/p#1".into()),
        quota: Some(5),
        now: 3,
    };
    assert_eq!(store.create_version(v).await.unwrap().version, 1);
    assert_eq!(store.get_version(&old, &"d".parse().unwrap(), Version::Latest).await.unwrap().manifest, output);
    store.close().await;
}

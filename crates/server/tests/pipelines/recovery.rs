//! Runs carried on across a server restart.

use super::*;

#[tokio::test]
async fn a_restarted_server_finishes_the_run_with_every_step_run_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = "\
name: chain
steps:
  - {name: a, command: [python, a.py]}
  - {name: b, needs: [a], command: [python, b.py]}
  - {name: c, needs: [b], command: [python, c.py]}
  - {name: d, needs: [b], command: [python, d.py]}
";
    let (admin, alice, b_lease) = {
        let mut ts = TestServer::open(ServerConfig::new(&data), None, None).await;
        let alice = setup(&ts).await;
        apply(&ts, &alice, file).await;
        start(&ts, &alice, "chain").await;
        let a = lease(&ts).await;
        finish(&ts, &a, Outcome::Succeeded, None).await;
        let b = lease(&ts).await;
        assert_eq!(step_of(&b), "b");
        ts.shutdown().await;
        (ts.admin.clone(), alice, b)
    };
    let ts = TestServer::open(ServerConfig::new(&data), Some(admin), None).await;
    let run = get_run(&ts, &alice, "chain", 1, None, 0).await;
    assert_eq!((step(&run, "a").state.as_str(), step(&run, "b").state.as_str()), ("succeeded", "running"));
    // The agent kept its lease across the restart and finishes the job.
    finish(&ts, &b_lease, Outcome::Succeeded, None).await;
    let mut rest = [step_of(&lease(&ts).await), step_of(&lease(&ts).await)];
    rest.sort();
    assert_eq!(rest, ["c", "d"]);
    let leases = [ts.lease(&ts.admin, "default", 100).await];
    assert!(leases[0].is_none());
    let all = jobs(&ts, &alice).await;
    assert_eq!(all.len(), 4, "every step's job was created exactly once");
    let mut steps: Vec<String> = all.iter().map(|j| j.message.clone().unwrap()).collect();
    steps.sort();
    steps.dedup();
    assert_eq!(steps.len(), 4);
}

#[tokio::test]
async fn a_run_whose_job_ended_while_the_server_was_down_carries_on_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (admin, alice) = {
        let mut ts = TestServer::open(ServerConfig::new(&data), None, None).await;
        let alice = setup(&ts).await;
        apply(&ts, &alice, DIAMOND).await;
        start(&ts, &alice, "diamond").await;
        let a = lease(&ts).await;
        ts.shutdown().await;
        // The job ends while no server schedules: only the store knows.
        let f = podder_meta::FinishJob {
            outcome: Outcome::Succeeded,
            exit_code: Some(0),
            output: None,
            output_bytes: 0,
            reason: None,
            quota: None,
            build: None,
            started_at: None,
            now: 1,
        };
        let meta = podder_meta::SqliteStore::open(&data.join("meta.db")).await.unwrap();
        podder_meta::MetaStore::finish_job(&meta, &a.lease_id, &f).await.unwrap();
        meta.close().await;
        (ts.admin.clone(), alice)
    };
    let ts = TestServer::open(ServerConfig::new(&data), Some(admin), None).await;
    let mut middle = [step_of(&lease(&ts).await), step_of(&lease(&ts).await)];
    middle.sort();
    assert_eq!(middle, ["b", "c"], "recovery saw a's end and started what follows");
    assert_eq!(jobs(&ts, &alice).await.len(), 3);
}

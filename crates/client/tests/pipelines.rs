//! The client's pipeline methods against a real server, with the client's
//! agent methods playing the agent.

use podder_client::Client;
use podder_core::api::{ApplyPipeline, Finish, LeaseRequest, RetryRun, StartRun};
use podder_core::{Manifest, Name, Outcome};
use podder_server::{Server, ServerConfig};

fn name(s: &str) -> Name {
    s.parse().unwrap()
}

const FILE: &str = "\
name: nightly
params:
  lr: {type: float, default: 0.1}
schedule: {cron: '0 3 * * *'}
steps:
  - {name: prep, command: [python, prep.py]}
  - {name: train, needs: [prep], command: [python, train.py, '${params.lr}']}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_and_runs_through_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::open(ServerConfig::new(dir.path())).await.unwrap();
    let admin = server.ensure_admin("admin").await.unwrap().unwrap();
    let token = server.create_token("alice", false).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(listener, async {
        let _ = stopped.await;
    }));
    let (alice, agent) = (Client::new(&base, &token).unwrap(), Client::new(&base, &admin).unwrap());
    let (me, p, nightly) = (name("alice"), name("p"), name("nightly"));
    alice.create_project(&p, "").await.unwrap();
    let code = alice.commit_manifest(&Manifest::new(vec![])).await.unwrap().id;

    // Apply, list, show, pause and resume.
    let bad = ApplyPipeline { file: "name: x\nsteps: []\nbogus: 1\n".into(), file_name: "x.yaml".into(), code: None };
    let err = alice.apply_pipeline(&me, &p, &bad).await.unwrap_err();
    assert_eq!(err.status(), Some(400));
    assert!(err.to_string().contains("x.yaml:"), "{err}");
    let req = ApplyPipeline { file: FILE.into(), file_name: "nightly.yaml".into(), code: Some(code) };
    let applied = alice.apply_pipeline(&me, &p, &req).await.unwrap();
    assert_eq!((applied.version, applied.code, applied.paused), (1, Some(code), false));
    assert!(applied.next_run_at.is_some());
    assert_eq!(alice.apply_pipeline(&me, &p, &req).await.unwrap().version, 1, "unchanged: no new version");
    assert_eq!(alice.list_pipelines(&me, &p).await.unwrap().len(), 1);
    assert_eq!(alice.get_pipeline(&me, &p, &nightly).await.unwrap().description, "");
    assert_eq!(alice.get_pipeline(&me, &p, &name("nope")).await.unwrap_err().status(), Some(404));
    let paused = alice.pause_pipeline(&me, &p, &nightly, true).await.unwrap();
    assert!(paused.paused && paused.next_run_at.is_none());
    let err = alice.start_run(&me, &p, &nightly, &StartRun::default()).await.unwrap_err();
    assert_eq!(err.status(), Some(409));
    assert!(!alice.pause_pipeline(&me, &p, &nightly, false).await.unwrap().paused);

    // A run: follow it while the agent runs its steps.
    let mut req = StartRun::default();
    req.params.insert("lr".into(), "0.5".into());
    let run = alice.start_run(&me, &p, &nightly, &req).await.unwrap();
    assert_eq!((run.number, run.state.as_str(), run.params["lr"].as_str()), (1, "running", "0.5"));
    let lease_req =
        LeaseRequest { agent: "box".into(), queue: "default".into(), wait_ms: 5000, inventory: Default::default() };
    let ok = Finish { outcome: Outcome::Succeeded, exit_code: Some(0), output: None, reason: None, build: None };
    let failed = Finish { outcome: Outcome::Failed, exit_code: Some(1), ..ok.clone() };
    let prep = agent.lease(&lease_req).await.unwrap().unwrap();
    let seen = alice.get_run(&me, &p, &nightly, 1, None, 0).await.unwrap();
    agent.finish(&prep.lease_id, &ok).await.unwrap();
    let moved = alice.get_run(&me, &p, &nightly, 1, Some(seen.revision), 5000).await.unwrap();
    assert!(moved.revision > seen.revision);
    let train = agent.lease(&lease_req).await.unwrap().unwrap();
    assert_eq!(train.job.spec.command, ["python", "train.py", "0.5"]);
    agent.finish(&train.lease_id, &failed).await.unwrap();
    let mut run = moved;
    while run.state == "running" {
        run = alice.get_run(&me, &p, &nightly, 1, Some(run.revision), 5000).await.unwrap();
    }
    assert_eq!(run.state, "failed");
    assert_eq!(alice.list_runs(&me, &p, &nightly).await.unwrap().len(), 1);

    // Retry from the failed step, then cancel the retry.
    let err = alice.retry_run(&me, &p, &nightly, 1, &RetryRun { from: Some("nope".into()) }).await.unwrap_err();
    assert_eq!(err.status(), Some(400));
    let retry = alice.retry_run(&me, &p, &nightly, 1, &RetryRun::default()).await.unwrap();
    assert_eq!((retry.number, retry.retry_of, retry.trigger.as_str()), (2, Some(1), "retry"));
    let again = agent.lease(&lease_req).await.unwrap().unwrap();
    assert!(again.job.message.unwrap().ends_with("step train"), "prep is kept");
    let cancelled = alice.cancel_run(&me, &p, &nightly, 2).await.unwrap();
    assert_eq!(cancelled.state, "cancelled");
    assert_eq!(alice.cancel_run(&me, &p, &nightly, 2).await.unwrap_err().status(), Some(409));
    assert_eq!(alice.list_runs(&me, &p, &nightly).await.unwrap().len(), 2);

    let _ = stop.send(());
    serving.await.unwrap().unwrap();
}

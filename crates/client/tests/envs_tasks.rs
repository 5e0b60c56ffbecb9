//! The client's environment, agent and task methods against a real server.

use podder_client::Client;
use podder_core::api::{BuildRequest, BuildResult, CreateEnv, DeployTask, Finish, LeaseRequest, RunTask, SubmitJob};
use podder_core::env::ExecutorKind;
use podder_core::{Inventory, Manifest, Name, Outcome};
use podder_server::{Server, ServerConfig};

fn name(s: &str) -> Name {
    s.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envs_agents_and_tasks_through_the_client() {
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
    let me = name("alice");

    // Environments.
    assert_eq!(alice.list_envs().await.unwrap().len(), 4);
    let req = CreateEnv {
        name: name("mine"),
        description: "d".into(),
        image: Some("my/image:1".into()),
        gpu_image: None,
        dockerfile: None,
        requirements: None,
        stock: false,
        replace: false,
    };
    let e = alice.create_env(&req).await.unwrap();
    assert_eq!((e.owner.as_str(), e.spec.image.as_deref()), ("alice", Some("my/image:1")));
    assert_eq!(alice.create_env(&req).await.unwrap_err().status(), Some(409));
    assert_eq!(alice.get_env(&me, &name("mine")).await.unwrap().description, "d");
    alice.delete_env(&me, &name("mine")).await.unwrap();
    let err = alice.get_env(&me, &name("mine")).await.unwrap_err();
    assert_eq!(err.status(), Some(404));
    assert!(err.to_string().contains("podder env list"), "{err}");

    // Agents: a docker agent announces itself with its lease request.
    let inventory = Inventory { executor: Some(ExecutorKind::Docker), slots: 1, ..Inventory::default() };
    let lease = LeaseRequest { agent: "box".into(), queue: "default".into(), wait_ms: 0, inventory };
    assert!(agent.lease(&lease).await.unwrap().is_none());
    let agents = alice.list_agents().await.unwrap();
    assert_eq!((agents.len(), agents[0].name.as_str()), (1, "box"));

    // Tasks: build, deploy, run.
    alice.create_project(&name("t"), "").await.unwrap();
    let t = name("t");
    let err = alice.deploy_task(&me, &t, &DeployTask::default()).await.unwrap_err();
    assert_eq!(err.status(), Some(400));
    assert!(alice.list_tasks(&me, &t).await.unwrap().is_empty());
    let empty = alice.commit_manifest(&Manifest::new(vec![])).await.unwrap().id;
    let build = SubmitJob {
        code: Some(empty),
        build: Some(BuildRequest { git: None, obfuscate: false }),
        ..SubmitJob::default()
    };
    alice.submit(&me, &t, &build).await.unwrap();
    let leased = agent.lease(&lease).await.unwrap().unwrap();
    let b = leased.job.spec.build.clone().unwrap();
    let result = BuildResult {
        image: b.tag(),
        image_id: "sha256:1".into(),
        build: b,
        task_yaml: "name: hello\ncommand: [echo, hi]\n".into(),
    };
    let finish =
        Finish { outcome: Outcome::Succeeded, exit_code: Some(0), output: None, reason: None, build: Some(result) };
    agent.finish(&leased.lease_id, &finish).await.unwrap();
    let task = alice.deploy_task(&me, &t, &DeployTask::default()).await.unwrap();
    assert_eq!((task.name.as_str(), task.version), ("hello", 1));
    assert_eq!(alice.get_task(&me, &t, &name("hello")).await.unwrap().version, 1);
    assert_eq!(alice.list_tasks(&me, &t).await.unwrap().len(), 1);
    let job = alice.run_task(&me, &t, &name("hello"), &RunTask::default()).await.unwrap();
    assert_eq!(job.spec.command, ["echo", "hi"]);
    assert_eq!(alice.run_task(&me, &t, &name("nope"), &RunTask::default()).await.unwrap_err().status(), Some(404));

    let _ = stop.send(());
    serving.await.unwrap().unwrap();
}

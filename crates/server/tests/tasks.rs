//! Build jobs and tasks over HTTP: a build job needs a docker agent and no
//! command; its finish carries what it built; deploying registers the task
//! it built; running a task is an ordinary job in the task's image.

mod common;

use common::{TestServer, assert_error, assert_invalid, inventory, job};
use podder_core::api::{BuildRequest, BuildResult, DeployTask, Finish, Job, Lease, RunTask, SubmitJob, Task};
use podder_core::{ImageBuild, Manifest, ManifestId, Outcome};
use reqwest::StatusCode;

const TASK_YAML: &str = "name: train\ncommand: [python, -m, main]\ninputs:\n  - name: dataset\n    mount: /data/input\n  - name: extra\n    mount: /data/extra\n    optional: true\nparams:\n  epochs: {type: int, default: 3}\n  lr: {type: float}\n";

fn build_job(code: ManifestId, git: Option<&str>) -> SubmitJob {
    SubmitJob {
        code: Some(code),
        command: vec![],
        build: Some(BuildRequest { git: git.map(Into::into), obfuscate: true }),
        ..SubmitJob::default()
    }
}

async fn finish(ts: &TestServer, lease: &Lease, outcome: Outcome, build: Option<BuildResult>) -> reqwest::Response {
    let f = Finish { outcome, exit_code: Some(0), output: None, reason: None, build };
    ts.post(&ts.admin, &format!("/agent/leases/{}/finish", lease.lease_id)).json(&f).send().await.unwrap()
}

fn result_of(build: &ImageBuild, yaml: &str) -> BuildResult {
    BuildResult { image: build.tag(), image_id: "sha256:0123".into(), build: build.clone(), task_yaml: yaml.into() }
}

async fn deploy(ts: &TestServer, token: &str, build_job: Option<u64>) -> reqwest::Response {
    ts.post(token, "/projects/alice/t/tasks").json(&DeployTask { build_job }).send().await.unwrap()
}

async fn run(ts: &TestServer, token: &str, req: &RunTask) -> reqwest::Response {
    ts.post(token, "/projects/alice/t/tasks/train/runs").json(req).send().await.unwrap()
}

/// Submits a build job, leases it as a docker agent and finishes it.
async fn built(ts: &TestServer, alice: &str, req: &SubmitJob, yaml: &str, commit: Option<&str>) -> Job {
    let r = ts.submit(alice, "alice", "t", req).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let job: Job = r.json().await.unwrap();
    let lease = ts.lease_as(&ts.admin, "docker", "default", inventory(&[], true), 0).await.unwrap();
    assert_eq!(lease.job.job_ref, job.job_ref);
    let mut b = lease.job.spec.build.clone().unwrap();
    if let Some(g) = b.git.as_mut() {
        g.commit = commit.map(Into::into);
    }
    let r = finish(ts, &lease, Outcome::Succeeded, Some(result_of(&b, yaml))).await;
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    r.json().await.unwrap()
}

#[tokio::test]
async fn build_jobs_need_docker_and_no_command_and_only_they_report_a_build() {
    let ts = TestServer::start().await;
    let alice = ts.token("alice").await;
    ts.create_project(&alice, "t").await;
    let code = ts.commit_tree(&alice, &[("task.yaml", TASK_YAML.as_bytes()), ("main.py", b"print(1)\n")]).await;
    assert_invalid(ts.submit(&alice, "alice", "t", &build_job(code, None)).await, "--executor docker").await;
    assert!(ts.lease_as(&ts.admin, "docker", "default", inventory(&[], true), 0).await.is_none());
    let with_command = SubmitJob { command: vec!["make".into()], ..build_job(code, None) };
    assert_invalid(ts.submit(&alice, "alice", "t", &with_command).await, "runs no command").await;
    assert_invalid(ts.submit(&alice, "alice", "t", &build_job(code, Some("/tmp/x"))).await, "not a Git URL").await;

    let r = ts.submit(&alice, "alice", "t", &build_job(code, None)).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let j: Job = r.json().await.unwrap();
    let b = j.spec.build.as_ref().unwrap();
    assert_eq!((b.context, b.git.is_none(), b.obfuscate, b.dockerfile.is_none()), (Some(code), true, true, true));
    assert!(j.spec.command.is_empty() && j.spec.needs_docker());
    assert!(ts.lease_as(&ts.admin, "proc", "default", inventory(&[], false), 0).await.is_none());
    let lease = ts.lease_as(&ts.admin, "docker", "default", inventory(&[], true), 0).await.unwrap();
    let result = result_of(b, TASK_YAML);
    assert_invalid(finish(&ts, &lease, Outcome::Failed, Some(result.clone())).await, "succeeded build").await;
    let done: Job = finish(&ts, &lease, Outcome::Succeeded, Some(result.clone())).await.json().await.unwrap();
    assert_eq!(done.build_result, Some(result.clone()));

    // A plain job may not report one.
    ts.submit(&alice, "alice", "t", &job(code)).await;
    let lease = ts.lease_as(&ts.admin, "docker", "default", inventory(&[], true), 0).await.unwrap();
    assert_invalid(finish(&ts, &lease, Outcome::Succeeded, Some(result)).await, "not a build job").await;

    // From Git: no context, and the code may be left out.
    let git = SubmitJob { code: None, ..build_job(code, Some("file:///srv/task.git#v1")) };
    let j: Job = ts.submit(&alice, "alice", "t", &git).await.json().await.unwrap();
    let b = j.spec.build.unwrap();
    assert_eq!((b.context, b.git.unwrap().reference.as_str()), (None, "v1"));
    assert_eq!(j.spec.code, Manifest::new(vec![]).id());
    let plain = SubmitJob { code: None, ..build_job(code, None) };
    assert_invalid(ts.submit(&alice, "alice", "t", &plain).await, "no code snapshot").await;
}

#[tokio::test]
async fn a_built_task_is_deployed_and_runs_as_a_job_in_its_image() {
    let ts = TestServer::start().await;
    let (alice, bob) = (ts.token("alice").await, ts.token("bob").await);
    ts.create_project(&alice, "t").await;
    let code = ts.commit_tree(&alice, &[("task.yaml", TASK_YAML.as_bytes())]).await;
    assert!(ts.lease_as(&ts.admin, "docker", "default", inventory(&[], true), 0).await.is_none());
    assert_invalid(deploy(&ts, &alice, None).await, "no succeeded build job").await;

    let b1 = built(&ts, &alice, &build_job(code, None), TASK_YAML, None).await;
    // A job that is not a build cannot be deployed; nor one that failed.
    let plain: Job = ts.submit(&alice, "alice", "t", &job(code)).await.json().await.unwrap();
    assert_invalid(deploy(&ts, &alice, Some(plain.job_ref.number)).await, "not a build job").await;
    let lease = ts.lease_as(&ts.admin, "proc", "default", inventory(&[], false), 0).await.unwrap();
    assert_eq!(finish(&ts, &lease, Outcome::Failed, None).await.status(), StatusCode::OK);
    assert_error(deploy(&ts, &alice, Some(99)).await, StatusCode::NOT_FOUND, "no job").await;
    assert_error(deploy(&ts, &bob, None).await, StatusCode::NOT_FOUND, "no project").await;

    let r = deploy(&ts, &alice, None).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let t: Task = r.json().await.unwrap();
    let result = b1.build_result.clone().unwrap();
    assert_eq!((t.name.as_str(), t.version, t.obfuscated, t.commit.as_deref()), ("train", 1, true, None));
    assert_eq!(t.build_job, b1.job_ref);
    assert_eq!(t.environment.name, "task:alice/t/train");
    assert_eq!(t.environment.image.as_deref(), Some(result.image.as_str()));
    assert_eq!((t.environment.build.as_ref(), t.environment.workdir.as_deref()), (Some(&result.build), Some("/task")));
    assert!(t.environment.needs_docker());

    // Built again from Git: the commit is recorded, the version goes up.
    let git = build_job(code, Some("file:///srv/task.git#main"));
    let b2 = built(&ts, &alice, &git, TASK_YAML, Some("0123abcd")).await;
    let t2: Task = deploy(&ts, &alice, Some(b2.job_ref.number)).await.json().await.unwrap();
    assert_eq!((t2.version, t2.commit.as_deref()), (2, Some("0123abcd")));
    let listed: Vec<Task> = ts.get(&alice, "/projects/alice/t/tasks").send().await.unwrap().json().await.unwrap();
    assert_eq!(listed.len(), 1);
    let shown: Task = ts.get(&alice, "/projects/alice/t/tasks/train").send().await.unwrap().json().await.unwrap();
    assert_eq!(shown.version, 2);
    assert_error(
        ts.get(&alice, "/projects/alice/t/tasks/nope").send().await.unwrap(),
        StatusCode::NOT_FOUND,
        "task deploy",
    )
    .await;
    assert_error(ts.get(&bob, "/projects/alice/t/tasks").send().await.unwrap(), StatusCode::NOT_FOUND, "no project")
        .await;

    // A bad task.yaml is refused at deploy, naming the file and line.
    let bad =
        built(&ts, &alice, &build_job(code, None), "name: x\ncommand: [a]\nparams:\n  n: {type: integer}\n", None)
            .await;
    assert_invalid(deploy(&ts, &alice, Some(bad.job_ref.number)).await, "task.yaml:4").await;

    // A failed build is not deployed.
    let r = ts.submit(&alice, "alice", "t", &build_job(code, None)).await;
    let failed: Job = r.json().await.unwrap();
    let lease = ts.lease_as(&ts.admin, "docker", "default", inventory(&[], true), 0).await.unwrap();
    assert_eq!(finish(&ts, &lease, Outcome::Failed, None).await.status(), StatusCode::OK);
    assert_invalid(deploy(&ts, &alice, Some(failed.job_ref.number)).await, "is failed, not succeeded").await;

    // Runs: every problem at once.
    ts.create_dataset(&alice, "mnist").await;
    let data = ts.commit_tree(&alice, &[("train.csv", b"1,2\n")]).await;
    ts.version(&alice, "alice", "mnist", data).await;
    let wrong = RunTask {
        params: [("epochs".to_string(), "many".to_string()), ("nope".to_string(), "1".to_string())].into(),
        data: vec!["other=mnist".into()],
        ..RunTask::default()
    };
    let (status, body) = common::error(run(&ts, &alice, &wrong).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    for needle in [
        "'many' is not an int",
        "no parameter 'nope'",
        "'lr' has no default",
        "no input 'other'",
        "--data dataset=SOURCE",
    ] {
        assert!(body.error.contains(needle), "'{}' does not mention '{needle}'", body.error);
    }
    assert_error(run(&ts, &bob, &RunTask::default()).await, StatusCode::NOT_FOUND, "no project").await;

    let ok = RunTask {
        params: [("lr".to_string(), "0.5".to_string())].into(),
        data: vec!["dataset=mnist".into(), "mnist@1:/data/more".into()],
        message: Some("first run".into()),
        ..RunTask::default()
    };
    let r = run(&ts, &alice, &ok).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let j: Job = r.json().await.unwrap();
    assert_eq!(j.spec.command, ["python", "-m", "main"]);
    assert_eq!((j.spec.params["epochs"].as_str(), j.spec.params["lr"].as_str()), ("3", "0.5"));
    let mounts: Vec<(&str, &str)> = j.spec.inputs.iter().map(|i| (i.source.as_str(), i.mount.as_str())).collect();
    assert_eq!(mounts, [("alice/mnist@1", "/data/input"), ("alice/mnist@1", "/data/more")]);
    assert_eq!(j.spec.environment.as_ref(), Some(&t2.environment));
    assert_eq!(j.spec.code, Manifest::new(vec![]).id());
    assert_eq!(j.message.as_deref(), Some("first run"));
    assert!(j.spec.needs_docker());
    let lease = ts.lease_as(&ts.admin, "docker", "default", inventory(&[], true), 0).await.unwrap();
    assert_eq!(lease.job.job_ref, j.job_ref);
    let empty = ts.get(&alice, &format!("/manifests/{}", j.spec.code)).send().await.unwrap();
    assert_eq!(empty.status(), StatusCode::OK, "the job's owner may read its (empty) code");
    // The input may also be bound by mounting at its declared path.
    let by_mount = RunTask { params: ok.params.clone(), data: vec!["mnist:/data/input".into()], ..RunTask::default() };
    assert_eq!(run(&ts, &alice, &by_mount).await.status(), StatusCode::CREATED);
}

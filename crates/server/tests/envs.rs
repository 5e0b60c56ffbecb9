//! Environments over HTTP: the stock ones, custom ones, who may see and
//! change what, and how a submit resolves `--env`.

mod common;

use common::{TestServer, assert_error, assert_invalid, inventory, job};
use podder_core::api::{Environment, Job, SubmitJob};
use reqwest::StatusCode;
use serde_json::json;

async fn envs(ts: &TestServer, token: &str) -> Vec<Environment> {
    let r = ts.get(token, "/envs").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

async fn create(ts: &TestServer, token: &str, body: serde_json::Value) -> reqwest::Response {
    ts.post(token, "/envs").json(&body).send().await.unwrap()
}

#[tokio::test]
async fn stock_environments_are_seeded_and_an_admin_replacement_survives_seeding() {
    let ts = TestServer::start().await;
    let alice = ts.token("alice").await;
    let stock = envs(&ts, &alice).await;
    let names: Vec<String> = stock.iter().map(|e| format!("{}/{}", e.owner, e.name)).collect();
    assert_eq!(names, ["podder/python-3.11", "podder/pytorch", "podder/sklearn", "podder/tensorflow"]);
    assert!(stock.iter().all(|e| e.stock));
    let py = &stock[0].spec;
    assert_eq!((py.image.as_deref(), py.requirements.as_deref()), (Some("python:3.11-slim"), Some("")));
    assert!(!py.needs_docker(), "a stock environment runs on the process executor too");
    let torch = &stock[1].spec;
    assert_eq!(torch.image.as_deref(), Some("pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime"));
    assert_eq!(torch.requirements.as_deref(), Some("torch"));
    let tf = &stock[3].spec;
    assert_eq!(tf.image_for(1).as_deref(), Some("tensorflow/tensorflow:2.17.0-gpu"));
    assert_eq!(tf.image_for(0).as_deref(), Some("tensorflow/tensorflow:2.17.0"));
    assert_eq!(stock[2].spec.requirements.as_deref(), Some("scikit-learn"));

    // Only an admin changes a stock environment; seeding again keeps it.
    let body = json!({ "name": "python-3.11", "image": "python:3.11-bookworm", "requirements": "", "stock": true, "replace": true });
    assert_error(create(&ts, &alice, body.clone()).await, StatusCode::FORBIDDEN, "only an admin").await;
    let r = create(&ts, &ts.admin, body).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let e: Environment = r.json().await.unwrap();
    assert_eq!((e.owner.as_str(), e.stock), ("podder", true));
    ts.server.seed().await.unwrap();
    let again: Environment = ts.get(&alice, "/envs/podder/python-3.11").send().await.unwrap().json().await.unwrap();
    assert_eq!(again.spec.image.as_deref(), Some("python:3.11-bookworm"));

    assert_error(
        ts.delete(&alice, "/envs/podder/sklearn").send().await.unwrap(),
        StatusCode::FORBIDDEN,
        "only an admin",
    )
    .await;
    assert_eq!(ts.delete(&ts.admin, "/envs/podder/sklearn").send().await.unwrap().status(), StatusCode::NO_CONTENT);
    assert_eq!(envs(&ts, &alice).await.len(), 3);
}

#[tokio::test]
async fn custom_environments_belong_to_their_owner() {
    let ts = TestServer::start().await;
    let (alice, bob) = (ts.token("alice").await, ts.token("bob").await);
    let r = create(&ts, &alice, json!({ "name": "torch", "description": "mine", "image": "my/torch:1" })).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let e: Environment = r.json().await.unwrap();
    assert_eq!((e.owner.as_str(), e.spec.name.as_str(), e.stock), ("alice", "alice/torch", false));
    assert!(e.spec.needs_docker());

    let clash = create(&ts, &alice, json!({ "name": "torch", "image": "my/torch:2" })).await;
    assert_error(clash, StatusCode::CONFLICT, "already exists").await;
    let r = create(&ts, &alice, json!({ "name": "torch", "image": "my/torch:2", "replace": true })).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let got: Environment = ts.get(&alice, "/envs/alice/torch").send().await.unwrap().json().await.unwrap();
    assert_eq!(got.spec.image.as_deref(), Some("my/torch:2"));
    assert_eq!(envs(&ts, &alice).await.len(), 5);
    assert_eq!(envs(&ts, &bob).await.len(), 4, "bob sees the stock ones only");
    assert_error(ts.get(&bob, "/envs/alice/torch").send().await.unwrap(), StatusCode::NOT_FOUND, "that you can see")
        .await;
    assert_error(ts.delete(&bob, "/envs/alice/torch").send().await.unwrap(), StatusCode::NOT_FOUND, "that you can see")
        .await;
    assert_error(ts.get(&bob, "/envs/alice/nope").send().await.unwrap(), StatusCode::NOT_FOUND, "that you can see")
        .await;

    // A Dockerfile environment is built on the agent; it may not COPY.
    let df = "FROM python:3.11-slim\nRUN pip install numpy\n";
    let r = create(&ts, &alice, json!({ "name": "np", "dockerfile": df })).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let np: Environment = r.json().await.unwrap();
    let build = np.spec.build.as_ref().unwrap();
    assert_eq!((build.dockerfile.as_deref(), build.context, build.git.is_none()), (Some(df), None, true));
    assert_eq!(np.spec.image, None);
    let copy = create(&ts, &alice, json!({ "name": "bad", "dockerfile": "FROM x\nCOPY . /app\n" })).await;
    assert_invalid(copy, "COPY (line 2)").await;
    assert_invalid(create(&ts, &alice, json!({ "name": "empty" })).await, "names nothing to run in").await;
    let both = create(&ts, &alice, json!({ "name": "b", "image": "x", "dockerfile": "FROM x" })).await;
    assert_invalid(both, "not both").await;
    let req = create(&ts, &alice, json!({ "name": "reqs", "requirements": "numpy==2.0\n" })).await;
    assert_eq!(req.status(), StatusCode::CREATED);

    assert_eq!(ts.delete(&alice, "/envs/alice/torch").send().await.unwrap().status(), StatusCode::NO_CONTENT);
    assert_error(ts.get(&alice, "/envs/alice/torch").send().await.unwrap(), StatusCode::NOT_FOUND, "env list").await;
}

#[tokio::test]
async fn a_submit_resolves_its_environment_and_needs_a_docker_agent_for_an_image_only_one() {
    let ts = TestServer::start().await;
    let (alice, bob) = (ts.token("alice").await, ts.token("bob").await);
    ts.create_project(&alice, "p").await;
    let code = ts.code(&alice).await;
    let with_env = |e: &str| SubmitJob { env: Some(e.into()), ..job(code) };

    let r = ts.submit(&alice, "alice", "p", &with_env("pytorch")).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let j: Job = r.json().await.unwrap();
    let env = j.spec.environment.unwrap();
    assert_eq!((env.name.as_str(), env.requirements.as_deref()), ("podder/pytorch", Some("torch")));
    assert_eq!(j.spec.env.as_deref(), Some("pytorch"));
    let j: Job = ts.submit(&alice, "alice", "p", &with_env("podder/sklearn")).await.json().await.unwrap();
    assert_eq!(j.spec.environment.unwrap().name, "podder/sklearn");
    assert_invalid(
        ts.submit(&alice, "alice", "p", &with_env("nope")).await,
        "unknown environment 'nope': see `podder env list`",
    )
    .await;
    assert_invalid(ts.submit(&alice, "alice", "p", &with_env("Bad Name")).await, "not an environment name").await;

    // Her own shadows the stock one of the same name; bob's is not hers to use.
    let body = json!({ "name": "pytorch", "image": "alice/torch:nightly" });
    assert_eq!(create(&ts, &alice, body).await.status(), StatusCode::CREATED);
    assert_eq!(create(&ts, &bob, json!({ "name": "secret", "requirements": "" })).await.status(), StatusCode::CREATED);
    assert_invalid(ts.submit(&alice, "alice", "p", &with_env("bob/secret")).await, "unknown environment 'bob/secret'")
        .await;

    // alice/pytorch has only an image: only a docker agent runs it.
    let r = ts.submit(&alice, "alice", "p", &with_env("pytorch")).await;
    assert_invalid(r, "--executor docker").await;
    let agent = ts.admin.clone();
    // Drain the queued jobs with a process agent; none needs docker.
    for _ in 0..2 {
        ts.lease_as(&agent, "proc", "default", inventory(&[], false), 0).await.expect("a process job");
    }
    assert!(ts.lease_as(&agent, "docker", "default", inventory(&[], true), 0).await.is_none());
    let j: Job = ts.submit(&alice, "alice", "p", &with_env("pytorch")).await.json().await.unwrap();
    assert_eq!(j.spec.environment.as_ref().unwrap().image.as_deref(), Some("alice/torch:nightly"));
    assert!(j.spec.needs_docker());
    assert!(
        ts.lease_as(&agent, "proc", "default", inventory(&[], false), 0).await.is_none(),
        "not for a process agent"
    );
    let lease =
        ts.lease_as(&agent, "docker", "default", inventory(&[], true), 0).await.expect("the docker agent takes it");
    assert_eq!(lease.job.job_ref, j.job_ref);
    // A docker agent on another queue does not count.
    let other = SubmitJob { queue: Some("other".into()), ..with_env("pytorch") };
    assert_invalid(ts.submit(&alice, "alice", "p", &other).await, "queue 'other'").await;
}

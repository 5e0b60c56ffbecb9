//! Checks of environments, agents, GPU placement, build results and tasks.

use podder_core::api::{BuildResult, Environment};
use podder_core::env::{EnvSpec, ExecutorKind, Gpu, ImageBuild, Inventory, Resources, STOCK_OWNER};
use podder_core::task::TaskSpec;

use super::*;
use crate::{EnvWrite, NewTask};

fn env(owner: &str, n: &str, image: &str, now: i64) -> Environment {
    Environment {
        owner: name(owner),
        name: name(n),
        description: format!("{n} of {owner}"),
        spec: EnvSpec {
            name: format!("{owner}/{n}"),
            image: Some(image.into()),
            gpu_image: None,
            build: None,
            requirements: None,
            workdir: None,
        },
        stock: owner == STOCK_OWNER,
        created_at: now,
    }
}

pub(super) fn inventory(gpus: &[u32], docker: bool) -> Inventory {
    Inventory {
        executor: Some(if docker { ExecutorKind::Docker } else { ExecutorKind::Process }),
        gpus: gpus.iter().map(|&index| Gpu { index, name: "Fake GPU".into(), memory_bytes: 1 << 30 }).collect(),
        slots: 8,
        cpus: 4,
        memory_bytes: 8 << 30,
    }
}

fn gpu_spec(queue: &str, gpus: u32) -> JobSpec {
    let mut s = spec(queue, 0);
    s.resources = Resources { gpus, ..Default::default() };
    s
}

fn agent_claim(queue: &str, agent: &str, lease: &str, inv: &Inventory) -> Claim {
    Claim {
        queue: queue.into(),
        agent: agent.into(),
        lease_id: lease.into(),
        now: 2000,
        expires_at: 1_000_000,
        inventory: inv.clone(),
    }
}

pub(super) async fn environments(store: &dyn MetaStore) {
    let (stock, ivy) = (name(STOCK_OWNER), name("ivy"));
    store.ensure_owner(&stock, false, 1).await.unwrap();
    store.ensure_owner(&ivy, false, 1).await.unwrap();
    let py = env(STOCK_OWNER, "python-3.11", "python:3.11-slim", 10);
    assert_eq!(store.put_env(&py, EnvWrite::IfAbsent).await.unwrap().spec, py.spec);
    let mut replaced = env(STOCK_OWNER, "python-3.11", "python:3.11-admin", 20);
    store.put_env(&replaced, EnvWrite::Replace).await.unwrap();
    let again = store.put_env(&py, EnvWrite::IfAbsent).await.unwrap();
    assert_eq!(again.spec.image.as_deref(), Some("python:3.11-admin"), "seeding keeps a replacement");
    assert!(is_conflict(store.put_env(&py, EnvWrite::Create).await));
    replaced.owner = name("nobody");
    assert!(matches!(store.put_env(&replaced, EnvWrite::Create).await, Err(MetaError::NotFound(_))));

    let mine = env("ivy", "torch", "my/torch:1", 30);
    let got = store.put_env(&mine, EnvWrite::Create).await.unwrap();
    assert_eq!((got.stock, got.created_at, got.description.as_str()), (false, 30, "torch of ivy"));
    store.put_env(&env("ivy", "alpha", "my/alpha", 31), EnvWrite::Create).await.unwrap();
    let listed: Vec<String> =
        store.list_envs(&ivy).await.unwrap().iter().map(|e| format!("{}/{}", e.owner, e.name)).collect();
    assert_eq!(listed, ["podder/python-3.11", "ivy/alpha", "ivy/torch"], "stock first, then one's own by name");
    let others: Vec<String> =
        store.list_envs(&name("jack")).await.unwrap().iter().map(|e| e.name.to_string()).collect();
    assert_eq!(others, ["python-3.11"], "nobody sees another owner's environments");
    assert_eq!(store.get_env(&ivy, &name("torch")).await.unwrap().spec, mine.spec);
    store.delete_env(&ivy, &name("torch")).await.unwrap();
    assert!(matches!(store.get_env(&ivy, &name("torch")).await, Err(MetaError::NotFound(_))));
    assert!(matches!(store.delete_env(&ivy, &name("torch")).await, Err(MetaError::NotFound(_))));
}

pub(super) async fn agents(store: &dyn MetaStore) {
    project(store, "kate", "agents").await;
    let inv = inventory(&[0, 1], true);
    store.agent_seen("zz-agent", "q-agents", &inv, 100).await.unwrap();
    store.agent_seen("zz-agent", "q-agents", &inv, 50).await.unwrap();
    store.agent_alive("zz-agent", 70).await.unwrap();
    store.agent_alive("zz-unknown", 70).await.unwrap();
    let job = store.create_job(new_job("kate", "agents", gpu_spec("q-agents", 1))).await.unwrap();
    let rec = store.claim_job(&agent_claim("q-agents", "zz-agent", "ag-1", &inv)).await.unwrap().unwrap();
    assert_eq!((rec.id, rec.job.gpus.clone()), (job.id, vec![0]));
    store.agent_alive("zz-agent", 300).await.unwrap();
    let all = store.list_agents().await.unwrap();
    let me = all.iter().find(|a| a.name == "zz-agent").expect("listed");
    assert_eq!((me.queue.as_str(), me.last_seen, &me.inventory), ("q-agents", 300, &inv));
    assert_eq!(me.gpus_in_use, [0]);
    assert!(!all.iter().any(|a| a.name == "zz-unknown"), "a heartbeat does not invent an agent");
    store.finish_job("ag-1", &finish(Outcome::Succeeded)).await.unwrap();
    let all = store.list_agents().await.unwrap();
    assert!(all.iter().find(|a| a.name == "zz-agent").unwrap().gpus_in_use.is_empty());
    let done = store.get_job_by_id(job.id).await.unwrap();
    assert_eq!(done.job.gpus, [0], "a finished job keeps the record of its GPUs");
}

pub(super) async fn placement(store: &dyn MetaStore) {
    project(store, "lena", "gpus").await;
    let q = "q-gpus";
    let one = inventory(&[0], false);
    let two = inventory(&[0, 1], false);
    // Oldest first: a 2-GPU job, then two 1-GPU jobs, then a docker job.
    let big = store.create_job(new_job("lena", "gpus", gpu_spec(q, 2))).await.unwrap();
    let small_a = store.create_job(new_job("lena", "gpus", gpu_spec(q, 1))).await.unwrap();
    let small_b = store.create_job(new_job("lena", "gpus", gpu_spec(q, 1))).await.unwrap();
    let mut docker_spec = spec(q, 0);
    docker_spec.environment = Some(EnvSpec {
        name: "podder/x".into(),
        image: Some("x:1".into()),
        gpu_image: None,
        build: None,
        requirements: None,
        workdir: None,
    });
    let docker = store.create_job(new_job("lena", "gpus", docker_spec)).await.unwrap();

    // The 1-GPU agent skips the 2-GPU job and takes the oldest that fits.
    let a = store.claim_job(&agent_claim(q, "one-gpu", "p-1", &one)).await.unwrap().unwrap();
    assert_eq!((a.id, a.job.gpus.clone()), (small_a.id, vec![0]));
    let none = store.claim_job(&agent_claim(q, "one-gpu", "p-2", &one)).await.unwrap();
    assert_eq!(none.map(|r| r.id), None, "its only GPU is held: the GPU jobs wait; the docker job is not for it");

    let b = store.claim_job(&agent_claim(q, "two-gpu", "p-3", &two)).await.unwrap().unwrap();
    assert_eq!((b.id, b.job.gpus.clone()), (big.id, vec![0, 1]));
    assert!(store.claim_job(&agent_claim(q, "two-gpu", "p-4", &two)).await.unwrap().is_none());
    let got = store.get_job_by_id(big.id).await.unwrap();
    assert_eq!(got.job.gpus, [0, 1], "the assignment is stored");

    // A freed GPU is used again.
    store.finish_job("p-1", &finish(Outcome::Succeeded)).await.unwrap();
    let c = store.claim_job(&agent_claim(q, "one-gpu", "p-5", &one)).await.unwrap().unwrap();
    assert_eq!((c.id, c.job.gpus.clone()), (small_b.id, vec![0]));

    // Only a docker agent takes the docker job; it needs no GPU.
    assert!(store.claim_job(&agent_claim(q, "cpu-only", "p-6", &inventory(&[], false))).await.unwrap().is_none());
    let d = store.claim_job(&agent_claim(q, "docker", "p-7", &inventory(&[], true))).await.unwrap().unwrap();
    assert_eq!((d.id, d.job.gpus.clone()), (docker.id, vec![]));

    // Concurrent claims on one agent: never two jobs on one GPU.
    project(store, "lena", "race").await;
    let four = inventory(&[0, 1, 2, 3], false);
    for _ in 0..8 {
        store.create_job(new_job("lena", "race", gpu_spec("q-race", 1))).await.unwrap();
    }
    let claims: Vec<Claim> = (0..8).map(|i| agent_claim("q-race", "quad", &format!("r-{i}"), &four)).collect();
    let got = futures_util::future::join_all(claims.iter().map(|c| store.claim_job(c))).await;
    let mut held: Vec<u32> = got.into_iter().filter_map(|r| r.unwrap()).flat_map(|r| r.job.gpus).collect();
    held.sort_unstable();
    assert_eq!(held, [0, 1, 2, 3], "four jobs got one GPU each, none shared");

    // A requeued job (lost lease, retries left) gives its GPUs back.
    project(store, "lena", "requeue").await;
    let mut retry = gpu_spec("q-requeue", 1);
    retry.retries = 1;
    let job = store.create_job(new_job("lena", "requeue", retry)).await.unwrap();
    let mut claim = agent_claim("q-requeue", "solo", "rq-1", &one);
    claim.expires_at = 3000;
    store.claim_job(&claim).await.unwrap().unwrap();
    let changed = store.expire_leases(3001).await.unwrap();
    let rec = changed.iter().find(|r| r.id == job.id).unwrap();
    assert_eq!((rec.job.state, rec.job.gpus.clone()), (JobState::Queued, vec![]));
    let again = store.claim_job(&agent_claim("q-requeue", "solo", "rq-2", &one)).await.unwrap().unwrap();
    assert_eq!(again.job.gpus, [0]);
}

pub(super) async fn builds_and_tasks(store: &dyn MetaStore) {
    project(store, "mia", "tasks").await;
    let (mia, tasks) = (name("mia"), name("tasks"));
    let q = "q-build";
    let docker = inventory(&[], true);
    assert!(store.latest_build_job(&mia, &tasks).await.unwrap().is_none());

    // A plain job may not report a build result.
    store.create_job(new_job("mia", "tasks", spec(q, 0))).await.unwrap();
    store.claim_job(&agent_claim(q, "builder", "b-1", &docker)).await.unwrap().unwrap();
    let build = ImageBuild { dockerfile: None, context: Some(ManifestId::of(b"task dir")), git: None, obfuscate: true };
    let result = BuildResult {
        image: build.tag(),
        image_id: "sha256:abc".into(),
        build: build.clone(),
        task_yaml: "name: train\ncommand: [python, main.py]\n".into(),
    };
    let mut ok = finish(Outcome::Succeeded);
    ok.exit_code = Some(0);
    ok.build = Some(result.clone());
    assert!(matches!(store.finish_job("b-1", &ok).await, Err(MetaError::Invalid(_))));

    // A build job: a failure may not carry a result; a success keeps it.
    let mut build_spec = spec(q, 0);
    build_spec.command = vec![];
    build_spec.build = Some(build.clone());
    let job = store.create_job(new_job("mia", "tasks", build_spec.clone())).await.unwrap();
    assert!(store.claim_job(&agent_claim(q, "no-docker", "b-x", &inventory(&[], false))).await.unwrap().is_none());
    store.claim_job(&agent_claim(q, "builder", "b-2", &docker)).await.unwrap().unwrap();
    let mut bad = finish(Outcome::Failed);
    bad.build = Some(result.clone());
    assert!(matches!(store.finish_job("b-2", &bad).await, Err(MetaError::Invalid(_))));
    let done = store.finish_job("b-2", &ok).await.unwrap();
    assert_eq!((done.job.state, done.job.build_result.as_ref()), (JobState::Succeeded, Some(&result)));
    let latest = store.latest_build_job(&mia, &tasks).await.unwrap().unwrap();
    assert_eq!(latest.id, job.id);
    assert_eq!(store.get_job_by_id(job.id).await.unwrap().job.build_result, Some(result.clone()));

    let spec = TaskSpec::from_yaml(&result.task_yaml, "task.yaml").unwrap();
    let environment = EnvSpec {
        name: "task:mia/tasks/train".into(),
        image: Some(result.image.clone()),
        gpu_image: None,
        build: Some(build),
        requirements: None,
        workdir: Some(spec.workdir.clone()),
    };
    let new = NewTask {
        owner: mia.clone(),
        project: tasks.clone(),
        spec: spec.clone(),
        environment: environment.clone(),
        build_job: job.job.job_ref.number,
        commit: None,
        obfuscated: true,
        now: 7000,
    };
    let t = store.deploy_task(new.clone()).await.unwrap();
    assert_eq!((t.version, t.name.as_str(), t.obfuscated, t.deployed_at), (1, "train", true, 7000));
    assert_eq!(t.build_job.to_string(), format!("mia/tasks#{}", job.job.job_ref.number));
    assert_eq!((t.spec.clone(), t.environment.clone()), (spec.clone(), environment.clone()));
    let t2 = store.deploy_task(NewTask { commit: Some("abc123".into()), now: 8000, ..new.clone() }).await.unwrap();
    assert_eq!((t2.version, t2.commit.as_deref(), t2.deployed_at), (2, Some("abc123"), 8000));
    let mut other = new.clone();
    other.spec.name = name("eval");
    store.deploy_task(other).await.unwrap();
    let names: Vec<(String, u32)> =
        store.list_tasks(&mia, &tasks).await.unwrap().iter().map(|t| (t.name.to_string(), t.version)).collect();
    assert_eq!(names, [("eval".to_string(), 1), ("train".to_string(), 2)]);
    assert_eq!(store.get_task(&mia, &tasks, &name("train")).await.unwrap().version, 2);
    assert!(matches!(store.get_task(&mia, &tasks, &name("nope")).await, Err(MetaError::NotFound(_))));
    let missing = store.deploy_task(NewTask { project: name("nope"), ..new }).await;
    assert!(matches!(missing, Err(MetaError::NotFound(_))));
}

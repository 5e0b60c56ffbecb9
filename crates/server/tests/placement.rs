//! GPU placement over HTTP with fake agent inventories: jobs land on agents
//! that have what they ask for, get concrete GPU indices, never share one
//! (even under concurrent lease requests), and a freed GPU is used again.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{TestServer, assert_invalid, inventory, job};
use podder_core::Outcome;
use podder_core::api::{AgentInfo, Finish, Job, Lease, SubmitJob};
use podder_core::env::Resources;
use reqwest::StatusCode;

fn gpus(code: podder_core::ManifestId, n: u32, queue: &str) -> SubmitJob {
    SubmitJob { resources: Resources { gpus: n, ..Default::default() }, queue: Some(queue.into()), ..job(code) }
}

async fn finish_ok(ts: &TestServer, lease: &Lease) {
    let f = Finish { outcome: Outcome::Succeeded, exit_code: Some(0), output: None, reason: None, build: None };
    let r = ts.post(&ts.admin, &format!("/agent/leases/{}/finish", lease.lease_id)).json(&f).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
}

async fn submit_ok(ts: &TestServer, token: &str, req: &SubmitJob) -> Job {
    let r = ts.submit(token, "alice", "gpu", req).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    r.json().await.unwrap()
}

#[tokio::test]
async fn gpu_jobs_need_a_gpu_agent_big_enough() {
    let ts = TestServer::start().await;
    let alice = ts.token("alice").await;
    ts.create_project(&alice, "gpu").await;
    let code = ts.code(&alice).await;
    assert_invalid(ts.submit(&alice, "alice", "gpu", &gpus(code, 1, "g")).await, "no GPU agent is registered").await;
    assert_invalid(ts.submit(&alice, "alice", "gpu", &gpus(code, 1, "g")).await, "--gpus").await;
    // A CPU agent on the queue does not help.
    assert!(ts.lease_as(&ts.admin, "cpu", "g", inventory(&[], false), 0).await.is_none());
    assert_invalid(ts.submit(&alice, "alice", "gpu", &gpus(code, 1, "g")).await, "no GPU agent").await;
    assert!(ts.lease_as(&ts.admin, "two", "g", inventory(&[0, 1], false), 0).await.is_none());
    assert!(ts.lease_as(&ts.admin, "one", "g", inventory(&[0], false), 0).await.is_none());
    let r = ts.submit(&alice, "alice", "gpu", &gpus(code, 3, "g")).await;
    assert_invalid(r, "asks for 3 GPUs, but the largest agent on queue 'g' has 2").await;
    assert_invalid(ts.submit(&alice, "alice", "gpu", &gpus(code, 65, "g")).await, "--gpu 65").await;
    assert_eq!(ts.submit(&alice, "alice", "gpu", &gpus(code, 2, "g")).await.status(), StatusCode::CREATED);
    let mut big = gpus(code, 1, "g");
    big.resources.memory_bytes = Some(64 << 30);
    assert_invalid(ts.submit(&alice, "alice", "gpu", &big).await, "bytes of memory").await;

    let agents: Vec<AgentInfo> = ts.get(&alice, "/agents").send().await.unwrap().json().await.unwrap();
    let names: Vec<&str> = agents.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["cpu", "one", "two"]);
    assert_eq!(agents[2].inventory.gpus.len(), 2);
}

#[tokio::test]
async fn jobs_asking_for_one_and_two_gpus_land_right_and_never_share_one() {
    let ts = TestServer::start().await;
    let alice = ts.token("alice").await;
    let agent = ts.admin.clone();
    ts.create_project(&alice, "gpu").await;
    let code = ts.code(&alice).await;
    let (one, two) = (inventory(&[0], false), inventory(&[0, 1], false));
    assert!(ts.lease_as(&agent, "one", "g", one.clone(), 0).await.is_none());
    assert!(ts.lease_as(&agent, "two", "g", two.clone(), 0).await.is_none());

    // Oldest first: the 2-GPU job goes to the 2-GPU agent; the 1-GPU agent
    // skips it for the oldest job it can take.
    let j2 = submit_ok(&ts, &alice, &gpus(code, 2, "g")).await;
    let j1 = submit_ok(&ts, &alice, &gpus(code, 1, "g")).await;
    let l1 = ts.lease_as(&agent, "one", "g", one.clone(), 0).await.unwrap();
    assert_eq!((l1.job.job_ref.clone(), l1.job.gpus.clone()), (j1.job_ref.clone(), vec![0]));
    let l2 = ts.lease_as(&agent, "two", "g", two.clone(), 0).await.unwrap();
    assert_eq!((l2.job.job_ref.clone(), l2.job.gpus.clone()), (j2.job_ref.clone(), vec![0, 1]));
    let shown: Job =
        ts.get(&alice, &format!("/jobs/alice/gpu/{}", j2.job_ref.number)).send().await.unwrap().json().await.unwrap();
    assert_eq!(shown.gpus, [0, 1]);
    let agents: Vec<AgentInfo> = ts.get(&alice, "/agents").send().await.unwrap().json().await.unwrap();
    let in_use: HashMap<&str, &[u32]> = agents.iter().map(|a| (a.name.as_str(), a.gpus_in_use.as_slice())).collect();
    assert_eq!((in_use["one"], in_use["two"]), (&[0][..], &[0, 1][..]));

    // Both agents are full: a 1-GPU job waits (it fits later).
    let j3 = submit_ok(&ts, &alice, &gpus(code, 1, "g")).await;
    assert!(ts.lease_as(&agent, "one", "g", one.clone(), 0).await.is_none());
    assert!(ts.lease_as(&agent, "two", "g", two.clone(), 0).await.is_none());
    // A waiting lessee is woken when a finish frees a GPU.
    let waiter = {
        let (base, agent, one) = (ts.base.clone(), agent.clone(), one.clone());
        tokio::spawn(async move {
            let req = podder_core::api::LeaseRequest {
                agent: "one".into(),
                queue: "g".into(),
                wait_ms: 10_000,
                inventory: one,
            };
            let started = Instant::now();
            let r = reqwest::Client::new()
                .post(format!("{base}/api/v1/agent/lease"))
                .bearer_auth(agent)
                .json(&req)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            (r.json::<Lease>().await.unwrap(), started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    finish_ok(&ts, &l1).await;
    let (l3, waited) = waiter.await.unwrap();
    assert_eq!((l3.job.job_ref.clone(), l3.job.gpus.clone()), (j3.job_ref, vec![0]), "the freed GPU is used again");
    assert!(waited < Duration::from_secs(5), "woken by the finish, not the timeout ({waited:?})");
    finish_ok(&ts, &l2).await;
    finish_ok(&ts, &l3).await;
}

#[tokio::test]
async fn concurrent_leases_never_oversubscribe_a_gpu() {
    let ts = TestServer::start().await;
    let alice = ts.token("alice").await;
    let agent = ts.admin.clone();
    ts.create_project(&alice, "gpu").await;
    let code = ts.code(&alice).await;
    let (one, two) = (inventory(&[0], false), inventory(&[0, 1], false));
    assert!(ts.lease_as(&agent, "one", "c", one.clone(), 0).await.is_none());
    assert!(ts.lease_as(&agent, "two", "c", two.clone(), 0).await.is_none());
    let mut wanted = HashMap::new();
    for n in [2, 1, 1, 2, 1, 1, 1, 2, 1, 1] {
        let j = submit_ok(&ts, &alice, &gpus(code, n, "c")).await;
        wanted.insert(j.job_ref.number, n);
    }
    let mut done = 0;
    let mut rounds = 0;
    while done < wanted.len() {
        rounds += 1;
        assert!(rounds < 50, "every job is placed eventually");
        // Six lease requests at once, three per agent.
        let calls = (0..6).map(|i| {
            let (name, inv) = if i % 2 == 0 { ("one", one.clone()) } else { ("two", two.clone()) };
            let ts = &ts;
            let agent = agent.clone();
            async move { (name, ts.lease_as(&agent, name, "c", inv, 0).await) }
        });
        let got = futures_util::future::join_all(calls).await;
        let mut held: HashMap<&str, Vec<u32>> = HashMap::new();
        let mut leases = Vec::new();
        for (name, lease) in got {
            let Some(lease) = lease else { continue };
            assert_eq!(lease.job.gpus.len() as u32, wanted[&lease.job.job_ref.number], "as many GPUs as asked");
            held.entry(name).or_default().extend(&lease.job.gpus);
            leases.push(lease);
        }
        for (name, mut g) in held {
            let all = g.len();
            g.sort_unstable();
            g.dedup();
            assert_eq!(g.len(), all, "agent {name} got one GPU twice");
            let max = if name == "one" { 1 } else { 2 };
            assert!(g.len() <= max && g.iter().all(|&i| (i as usize) < max), "agent {name} holds {g:?}");
        }
        assert!(!leases.is_empty(), "free agents always take something");
        for l in &leases {
            finish_ok(&ts, l).await;
        }
        done += leases.len();
    }
}

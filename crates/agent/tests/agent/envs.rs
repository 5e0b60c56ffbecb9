//! Environments on the process executor: requirement environments as
//! cached venvs, GPU variables, and environments it cannot run.

use podder_core::{EnvSpec, ImageBuild, Outcome};

use super::{finished, lease, setup, shut_down, stdout, system};

fn env(requirements: Option<&str>) -> EnvSpec {
    EnvSpec {
        name: "alice/venv".into(),
        image: None,
        gpu_image: None,
        build: None,
        requirements: requirements.map(String::from),
        workdir: None,
    }
}

const SHOW: &str = "echo $VIRTUAL_ENV; python -c 'import sys; print(sys.prefix)'; command -v python";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requirements_venv_is_built_once_and_cached() {
    let s = setup(2).await;
    // pip itself: satisfied already, so pip needs no network.
    let reqs = "pip\n";
    for n in 1..=2 {
        let mut l = lease(&s, n, &[SHOW], false);
        l.job.spec.environment = Some(env(Some(reqs)));
        s.mock.enqueue(l);
    }
    let mut made = 0;
    let mut prefixes = Vec::new();
    for n in 1..=2 {
        let r = s.mock.wait_for(&format!("L{n}"), "finish", finished).await;
        assert_eq!(r.finish.as_ref().unwrap().outcome, Outcome::Succeeded, "{r:#?}");
        let out = stdout(&r);
        let venv = &out[1];
        assert!(venv.contains("/envs/"), "{out:?}");
        assert_eq!(&out[2], venv, "python is the venv's");
        assert_eq!(out[3], format!("{venv}/bin/python"));
        prefixes.push(venv.clone());
        made += system(&r).iter().filter(|l| l.starts_with("environment: making virtual environment")).count();
    }
    assert_eq!(made, 1, "two jobs at once made the venv once");
    assert_eq!(prefixes[0], prefixes[1]);
    // A later job finds it cached; the venv is read-only inside the sandbox.
    let mut l = lease(&s, 3, &["touch $VIRTUAL_ENV/x 2>/dev/null && echo writable || echo read-only"], false);
    l.job.spec.environment = Some(env(Some(reqs)));
    s.mock.enqueue(l);
    let r = s.mock.wait_for("L3", "finish", finished).await;
    assert!(system(&r).iter().any(|l| l.ends_with("(cached)")), "{r:#?}");
    if !system(&r).iter().any(|l| l.contains("unsandboxed")) {
        assert_eq!(stdout(&r).last().unwrap(), "read-only");
    }
    // Empty requirements: a plain venv.
    let mut l = lease(&s, 4, &[SHOW], false);
    l.job.spec.environment = Some(env(Some("# nothing\n")));
    s.mock.enqueue(l);
    let r = s.mock.wait_for("L4", "finish", finished).await;
    assert_eq!(r.finish.as_ref().unwrap().outcome, Outcome::Succeeded, "{r:#?}");
    assert_ne!(stdout(&r)[1], prefixes[0]);
    shut_down(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_pip_and_docker_only_environments_fail_clearly() {
    let s = setup(1).await;
    let mut l = lease(&s, 1, &["true"], false);
    l.job.spec.environment = Some(env(Some("this is not a requirement!!\n")));
    s.mock.enqueue(l);
    let r = s.mock.wait_for("L1", "finish", finished).await;
    let reason = r.finish.clone().unwrap().reason.unwrap();
    assert!(reason.starts_with("environment build failed:") && reason.contains("pip install"), "{reason}");
    assert!(system(&r).iter().any(|l| l.contains("ERROR")), "pip's output is in the log: {r:#?}");
    assert_eq!(s.work.path().join("envs").read_dir().unwrap().count(), 0, "nothing half-made is left");

    let mut l = lease(&s, 2, &["true"], false);
    l.job.spec.environment = Some(EnvSpec {
        build: Some(ImageBuild { dockerfile: Some("FROM x".into()), context: None, git: None, obfuscate: false }),
        ..env(None)
    });
    s.mock.enqueue(l);
    let r = s.mock.wait_for("L2", "finish", finished).await;
    let reason = r.finish.clone().unwrap().reason.unwrap();
    assert!(reason.contains("needs the docker executor"), "{reason}");
    shut_down(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_gpu_indices_reach_the_process_executor() {
    let s = setup(1).await;
    let show = "echo \"[$CUDA_VISIBLE_DEVICES] [$NVIDIA_VISIBLE_DEVICES]\"";
    let mut l = lease(&s, 1, &[show], false);
    l.job.gpus = vec![0, 2];
    l.job.spec.resources.gpus = 2;
    s.mock.enqueue(l);
    let r = s.mock.wait_for("L1", "finish", finished).await;
    assert_eq!(stdout(&r).last().unwrap(), "[0,2] [0,2]");
    s.mock.enqueue(lease(&s, 2, &[show], false));
    let r = s.mock.wait_for("L2", "finish", finished).await;
    assert_eq!(stdout(&r).last().unwrap(), "[] []", "a job without GPUs sees none");
    shut_down(s).await;
}

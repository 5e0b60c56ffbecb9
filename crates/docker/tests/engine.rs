//! The wrapper against the real Docker engine, with the local test image
//! `podder-test/busybox` (made by `scripts/test-images.sh`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use podder_docker::{Bind, BuildSpec, ContainerSpec, Context, DockerError, Dockerfile, Engine};
use tokio::io::AsyncReadExt;

const BUSYBOX: &str = "podder-test/busybox";

fn unique(what: &str) -> String {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{what}-{}-{n}", std::process::id())
}

fn spec(cmd: &str, label: &str) -> ContainerSpec {
    ContainerSpec {
        image: BUSYBOX.into(),
        cmd: vec!["sh".into(), "-c".into(), cmd.into()],
        labels: BTreeMap::from([("podder.test".to_string(), label.to_string())]),
        ..Default::default()
    }
}

#[tokio::test]
async fn connects_and_finds_images() {
    let e = Engine::connect().await.unwrap();
    assert!(podder_docker::api_at_least(e.api_version(), podder_docker::MIN_API));
    assert!(e.image_exists(BUSYBOX).await.unwrap());
    assert!(!e.image_exists("podder-test/no-such-image:1").await.unwrap());
    let err = e.pull("podder-test/no-such-image:1", |_| {}).await.unwrap_err();
    assert!(matches!(err, DockerError::Pull { .. }), "{err}");
    assert!(err.to_string().contains("podder-test/no-such-image:1"), "{err}");
}

#[tokio::test]
async fn runs_a_container_with_mounts_limits_and_separate_streams() {
    let e = Engine::connect().await.unwrap();
    let (input, output) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    std::fs::write(input.path().join("f"), "input bytes\n").unwrap();
    let label = unique("run");
    let mut s = spec(
        "echo out; echo err >&2; cat /in/f; touch /in/x 2>/dev/null || echo read-only; echo w > /out/w; \
         id -u; pwd; echo $GREETING; exit 3",
        &label,
    );
    s.binds = vec![
        Bind { host: input.path().into(), container: "/in".into(), read_only: true },
        Bind { host: output.path().into(), container: "/out".into(), read_only: false },
    ];
    s.env = vec![("GREETING".into(), "hello there".into())];
    s.workdir = Some("/out".into());
    s.nano_cpus = Some(500_000_000);
    s.memory = Some(64 << 20);
    s.network = Some("none".into());
    s.init = true;
    let id = e.create(&s).await.unwrap();
    e.start(&id).await.unwrap();
    let readers = e.output(&id);
    let code = e.wait(&id).await.unwrap();
    assert_eq!(code, 3);
    let (mut out, mut err) = (String::new(), String::new());
    let (mut so, mut se) = (readers.stdout, readers.stderr);
    so.read_to_string(&mut out).await.unwrap();
    se.read_to_string(&mut err).await.unwrap();
    assert_eq!(out, "out\ninput bytes\nread-only\n0\n/out\nhello there\n");
    assert_eq!(err, "err\n");
    assert_eq!(std::fs::read_to_string(output.path().join("w")).unwrap(), "w\n");
    let i = e.inspect(&id).await.unwrap();
    let host = i.host_config.unwrap();
    assert_eq!((host.nano_cpus, host.memory), (Some(500_000_000), Some(64 << 20)));
    assert_eq!(host.network_mode.as_deref(), Some("none"));
    assert_eq!(i.config.unwrap().labels.unwrap()["podder.test"], label);
    assert_eq!(e.list_by_label("podder.test", &label).await.unwrap().len(), 1);
    e.remove(&id).await.unwrap();
    assert!(e.list_by_label("podder.test", &label).await.unwrap().is_empty());
    e.remove(&id).await.unwrap();
}

#[tokio::test]
async fn a_user_and_gpu_device_requests_are_in_the_config() {
    let e = Engine::connect().await.unwrap();
    let label = unique("gpu");
    let mut s = spec("true", &label);
    s.user = Some("1000:1000".into());
    s.gpus = vec![0, 3];
    // No NVIDIA runtime here: created, never started.
    let id = e.create(&s).await.unwrap();
    let i = e.inspect(&id).await.unwrap();
    assert_eq!(i.config.unwrap().user.as_deref(), Some("1000:1000"));
    let reqs = i.host_config.unwrap().device_requests.unwrap();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].driver.as_deref(), Some("nvidia"));
    assert_eq!(reqs[0].device_ids, Some(vec!["0".to_string(), "3".to_string()]));
    assert_eq!(reqs[0].capabilities, Some(vec![vec!["gpu".to_string()]]));
    assert_eq!(e.remove_by_label("podder.test", &label).await.unwrap(), [id]);
}

#[tokio::test]
async fn stop_uses_the_grace_then_kills() {
    let e = Engine::connect().await.unwrap();
    let label = unique("stop");
    // Ignores SIGTERM: only SIGKILL after the grace ends it.
    let mut s = spec("trap '' TERM; echo up; while true; do sleep 0.1; done", &label);
    s.init = true;
    let id = e.create(&s).await.unwrap();
    e.start(&id).await.unwrap();
    let mut out = e.output(&id).stdout;
    let mut first = [0u8; 3];
    out.read_exact(&mut first).await.unwrap();
    let t0 = Instant::now();
    e.stop(&id, Duration::from_secs(1)).await.unwrap();
    let code = e.wait(&id).await.unwrap();
    let took = t0.elapsed();
    assert_eq!(code, 137);
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(10), "{took:?}");
    // A plain sleep dies of SIGTERM at once.
    let mut s = spec("sleep 1000", &label);
    s.init = true;
    let id2 = e.create(&s).await.unwrap();
    e.start(&id2).await.unwrap();
    let t0 = Instant::now();
    e.stop(&id2, Duration::from_secs(20)).await.unwrap();
    assert_eq!(e.wait(&id2).await.unwrap(), 143);
    assert!(t0.elapsed() < Duration::from_secs(10));
    e.stop(&id2, Duration::from_secs(1)).await.unwrap();
    e.kill(&id2).await.unwrap();
    let mut removed = e.remove_by_label("podder.test", &label).await.unwrap();
    removed.sort();
    let mut both = vec![id, id2];
    both.sort();
    assert_eq!(removed, both);
}

#[tokio::test]
async fn builds_images_and_keeps_the_log_of_failures() {
    let e = Engine::connect().await.unwrap();
    let tag = format!("podder-test/built:{}", unique("t"));
    let ctx = tempfile::tempdir().unwrap();
    std::fs::create_dir(ctx.path().join("sub")).unwrap();
    std::fs::write(ctx.path().join("sub/file.txt"), "from the context\n").unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), format!("FROM {BUSYBOX}\nCOPY sub /sub\nRUN echo building\n"))
        .unwrap();
    let mut lines = Vec::new();
    let build = BuildSpec {
        context: Context::Dir(ctx.path().into()),
        dockerfile: Dockerfile::Path("Dockerfile".into()),
        tag: tag.clone(),
        labels: BTreeMap::from([("podder.test".to_string(), "build".to_string())]),
    };
    let id = e.build_image(build, |l| lines.push(l.to_string())).await.unwrap();
    assert!(id.starts_with("sha256:"), "{id}");
    assert!(lines.iter().any(|l| l == "building"), "{lines:?}");
    assert_eq!(e.image_id(&tag).await.unwrap().as_deref(), Some(id.as_str()));
    assert_eq!(e.run_capture(&spec("cat /sub/file.txt", "build")).await.unwrap().0, 1, "the base has no /sub");
    let mut s = spec("cat /sub/file.txt", "build");
    s.image = tag.clone();
    assert_eq!(e.run_capture(&s).await.unwrap(), (0, "from the context\n".to_string()));

    // A text Dockerfile with no context.
    let text = BuildSpec {
        context: Context::Empty,
        dockerfile: Dockerfile::Text(format!("FROM {BUSYBOX}\nRUN echo step one && exit 7\n")),
        tag: format!("{tag}-bad"),
        labels: BTreeMap::new(),
    };
    let mut seen = Vec::new();
    let err = e.build_image(text, |l| seen.push(l.to_string())).await.unwrap_err();
    let DockerError::Build { log, message, .. } = &err else { panic!("{err}") };
    assert!(log.iter().any(|l| l == "step one"), "{log:?}");
    assert!(message.contains("non-zero code: 7"), "{message}");
    assert_eq!(&seen, log);
    assert!(!e.image_exists(&format!("{tag}-bad")).await.unwrap());
    e.remove_image(&tag).await.unwrap();
    assert!(!e.image_exists(&tag).await.unwrap());
}

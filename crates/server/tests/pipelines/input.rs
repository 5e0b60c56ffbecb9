//! Bad pipeline files and requests: refused, and nothing changes.

use super::*;

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let ts = TestServer::start().await;
    let alice = setup(&ts).await;
    let cyclic = "\
name: loop
steps:
  - {name: a, needs: [b], command: ['true']}
  - {name: b, needs: [a], command: ['true']}
";
    let r = apply_with(&ts, &alice, cyclic, None).await;
    let body = assert_error(r, StatusCode::BAD_REQUEST, "pipe.yaml:").await;
    assert!(body.error.contains("cycle"), "{}", body.error);
    let bad_cron = "name: c\nschedule: {cron: 'every day'}\nsteps:\n  - {name: a, command: ['true']}\n";
    let body =
        assert_error(apply_with(&ts, &alice, bad_cron, None).await, StatusCode::BAD_REQUEST, "pipe.yaml:2").await;
    assert!(body.error.to_lowercase().contains("cron"), "{}", body.error);
    let unknown_task = "name: t\nsteps:\n  - {name: a, task: nope}\n";
    assert_invalid(apply_with(&ts, &alice, unknown_task, None).await, "nope").await;
    let code = ManifestId::of(b"never committed");
    assert_invalid(apply_with(&ts, &alice, DIAMOND, Some(code)).await, "not committed").await;
    let listed: Vec<Pipeline> = ts.get(&alice, P).send().await.unwrap().json().await.unwrap();
    assert!(listed.is_empty(), "nothing was applied");

    let r = ts.get(&alice, &format!("{P}/nope")).send().await.unwrap();
    assert_error(r, StatusCode::NOT_FOUND, "no pipeline nope").await;
    assert_error(start_with(&ts, &alice, "nope", &StartRun::default()).await, StatusCode::NOT_FOUND, "apply").await;

    let file = "name: params\nparams:\n  lr: {type: float, default: 0.1}\nsteps:\n  - {name: a, command: ['true']}\n";
    apply(&ts, &alice, file).await;
    let again = apply_with(&ts, &alice, file, None).await;
    assert_eq!(again.status(), StatusCode::CREATED, "other code: a new version");
    let same = apply_with(&ts, &alice, file, None).await;
    assert_eq!(same.status(), StatusCode::OK, "the same file and code: no new version");
    assert_eq!(same.json::<Pipeline>().await.unwrap().version, 2);
    let undeclared = StartRun { params: BTreeMap::from([("epochs".into(), "3".into())]), only: None };
    assert_invalid(start_with(&ts, &alice, "params", &undeclared).await, "epochs").await;
    let wrong = StartRun { params: BTreeMap::from([("lr".into(), "fast".into())]), only: None };
    assert_invalid(start_with(&ts, &alice, "params", &wrong).await, "lr").await;
    let runs: Vec<PipelineRun> =
        ts.get(&alice, &format!("{P}/params/runs")).send().await.unwrap().json().await.unwrap();
    assert!(runs.is_empty());
    let r = ts.get(&alice, &format!("{P}/params/runs/7")).send().await.unwrap();
    assert_error(r, StatusCode::NOT_FOUND, "no run 7").await;

    // Another owner sees nothing.
    let bob = ts.token("bob").await;
    assert_error(ts.get(&bob, &format!("{P}/params")).send().await.unwrap(), StatusCode::NOT_FOUND, "no project").await;
    assert_error(start_with(&ts, &bob, "params", &StartRun::default()).await, StatusCode::NOT_FOUND, "no project")
        .await;
}
